//! The uptime checker (`uptime_tests`): sends every active API's checks each `time_wait`, off
//! the request path (one task on the control runtime), and tells the load balancers which
//! hosts are down through the lock-free [`HostHealth`] table the routes were built with.
//!
//! A host's state follows Tyk's host checker: failed checks are counted (a success does not
//! reset the count while the host is up) and at `failure_trigger_sample_size` the host is
//! down; then each success counts down, and the host is up again once the count is back to 0.
//! A check succeeds when it gets 200, as Tyk's does; any other status, a refused or reset
//! connection or no answer within its timeout is a failure. A host is down when any of its
//! checks says so.
//!
//! Each load of the definitions gives the checker a new [`Plan`] (its checks and the table the
//! new routes read); counts carry over for checks still listed, so a reload neither forgets a
//! down host nor restarts its recovery.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONNECTION, HOST, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tollgate_analytics::{Timestamp, UPTIME_REDIS_LIST, UptimeRecord};
use tollgate_config::{GatewayConfig, UptimeSettings};
use tollgate_definitions::{LoadedApi, Scheme, Target, UptimeCheck};
use tollgate_proxy::balance::HostHealth;
use tollgate_storage::redis::RedisStore;

/// Why a check got no HTTP answer.
type ProbeError = Box<dyn std::error::Error + Send + Sync>;

/// One check as the checker runs it.
#[derive(Debug)]
struct Job {
    check: UptimeCheck,
    api_id: Arc<str>,
    org_id: Arc<str>,
    analytics_expiry: Option<Duration>,
}

/// What the checker checks after one load of the definitions.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Every active API's checks, one per URL (a URL listed twice is checked once, as in Tyk).
    jobs: Arc<[Job]>,
    /// Each checked host and the indexes of its checks in `jobs`.
    hosts: Arc<[(Authority, Box<[usize]>)]>,
    /// The table the routes built from the same load read.
    health: Arc<HostHealth>,
}

impl Plan {
    /// The host table to build the routes with.
    pub(crate) fn health(&self) -> Arc<HostHealth> {
        Arc::clone(&self.health)
    }
}

/// The checker's handle, owned by whoever loads the definitions (start-up, then the reloader).
pub(crate) struct Uptime {
    settings: Option<UptimeSettings>,
    analytics: Option<Arc<RedisStore>>,
    /// The table of the routes now live.
    health: Arc<HostHealth>,
    /// Feeds the running checker; `None` until the first plan is committed.
    tx: Option<watch::Sender<Plan>>,
}

impl Uptime {
    /// The checker of a gateway.
    pub(crate) fn new(config: &GatewayConfig) -> Self {
        Self {
            settings: config.uptime.clone(),
            analytics: None,
            health: Arc::new(HostHealth::default()),
            tx: None,
        }
    }

    /// With `enable_uptime_analytics`, where results are recorded: Redis, when keys live
    /// there (before the first [`Uptime::commit`]).
    pub(crate) fn record_to(&mut self, redis: Option<&Arc<RedisStore>>) {
        if !self.settings.as_ref().is_some_and(|s| s.analytics) {
            return;
        }
        self.analytics = redis.cloned();
        if self.analytics.is_none() {
            tracing::info!("Uptime analytics need Redis storage: check results are not recorded.");
        }
    }

    /// The checks of `apis` (active ones only) and a new host table, each host down if the
    /// live table has it down. With `uptime_tests.disable` nothing is checked and no host is
    /// ever down.
    pub(crate) fn plan(&self, apis: &[LoadedApi]) -> Plan {
        let mut jobs: Vec<Job> = Vec::new();
        if self.settings.is_some() {
            for api in apis.iter().filter(|a| a.spec.active) {
                let Some(tests) = &api.spec.uptime else {
                    continue;
                };
                for check in &tests.checks {
                    if jobs.iter().any(|j| j.check.url == check.url) {
                        continue;
                    }
                    jobs.push(Job {
                        check: check.clone(),
                        api_id: Arc::clone(&api.spec.api_id),
                        org_id: Arc::clone(&api.spec.org_id),
                        analytics_expiry: tests.analytics_expiry,
                    });
                }
            }
        }
        let mut hosts: Vec<(Authority, Vec<usize>)> = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            let authority = &job.check.target.authority;
            match hosts.iter_mut().find(|(a, _)| a == authority) {
                Some((_, list)) => list.push(i),
                None => hosts.push((authority.clone(), vec![i])),
            }
        }
        let health = HostHealth::new(hosts.iter().map(|(a, _)| a), Some(&self.health));
        Plan {
            jobs: jobs.into(),
            hosts: hosts
                .into_iter()
                .map(|(a, list)| (a, list.into_boxed_slice()))
                .collect(),
            health: Arc::new(health),
        }
    }

    /// The routes built with `plan` are live: the checker checks its hosts from now on,
    /// starting on first use (inside the control runtime).
    pub(crate) fn commit(&mut self, plan: Plan) {
        self.health = plan.health();
        let Some(settings) = &self.settings else {
            return;
        };
        if !plan.jobs.is_empty() {
            tracing::info!(
                checks = plan.jobs.len(),
                hosts = plan.hosts.len(),
                "Uptime checks loaded."
            );
        }
        match &self.tx {
            Some(tx) => {
                // The checker stops only when this sender is dropped.
                let _ = tx.send(plan);
            }
            None => {
                let (tx, rx) = watch::channel(plan);
                tokio::spawn(run(rx, settings.clone(), self.analytics.clone()));
                self.tx = Some(tx);
            }
        }
    }
}

/// A check's count of failures, in Tyk's host checker's terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Sample {
    count: u32,
    down: bool,
}

impl Sample {
    /// Adds one result; returns the new state when it changed (`Some(true)` = now down).
    ///
    /// Tyk's rule (`HostReporter`): while up, failures add up and a success changes nothing;
    /// at `limit` failures the check is down. While down, a success counts one down (up again
    /// at 0) and a failure counts one up as long as that stays below `limit`.
    fn record(&mut self, ok: bool, limit: u32) -> Option<bool> {
        match (ok, self.down) {
            (true, false) => None,
            (true, true) => {
                self.count = self.count.saturating_sub(1);
                (self.count == 0).then(|| {
                    self.down = false;
                    false
                })
            }
            (false, down) => {
                let count = self.count.saturating_add(1);
                if count < limit {
                    self.count = count;
                    None
                } else if down {
                    None
                } else {
                    self.count = count;
                    self.down = true;
                    Some(true)
                }
            }
        }
    }
}

/// One check's result.
#[derive(Debug)]
struct Outcome {
    /// The upstream's status; `None` when it did not answer.
    status: Option<StatusCode>,
    at: Timestamp,
    latency: Duration,
}

impl Outcome {
    /// Only 200 passes, as in Tyk.
    fn ok(&self) -> bool {
        self.status == Some(StatusCode::OK)
    }
}

/// The checker: a round of checks every `time_wait`, a new plan whenever the definitions
/// load. Ends when the [`Uptime`] handle is dropped.
async fn run(
    mut rx: watch::Receiver<Plan>,
    settings: UptimeSettings,
    analytics: Option<Arc<RedisStore>>,
) {
    let mut plan = rx.borrow_and_update().clone();
    let mut samples: HashMap<Arc<str>, Sample> = HashMap::new();
    let mut tick = tokio::time::interval(staggered(settings.time_wait));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
                plan = rx.borrow_and_update().clone();
                samples.retain(|url, _| plan.jobs.iter().any(|j| j.check.url == *url));
                publish(&plan, &samples, None);
            }
            _ = tick.tick() => {
                let results = round(&plan.jobs, settings.checker_pool_size).await;
                let mut records = Vec::new();
                for (i, outcome) in &results {
                    let job = &plan.jobs[*i];
                    let sample = samples.entry(Arc::clone(&job.check.url)).or_default();
                    sample.record(outcome.ok(), settings.failure_trigger_sample_size);
                    if !outcome.ok() {
                        tracing::debug!(
                            check = %job.check.display_url(),
                            status = outcome.status.map(|s| s.as_u16()),
                            failures = sample.count,
                            "Uptime check failed."
                        );
                    }
                    if analytics.is_some() {
                        records.push(record(job, outcome));
                    }
                }
                publish(&plan, &samples, Some(&results));
                if let Some(redis) = &analytics
                    && !records.is_empty()
                    && let Err(e) = redis.push_analytics(UPTIME_REDIS_LIST, records, 0).await
                {
                    tracing::warn!(error = %e, "Writing uptime analytics failed.");
                }
            }
        }
    }
}

/// Writes each host's state into the plan's table (down when any of its checks is), logging
/// the hosts whose state changed. `results` (from a round) names the check behind a change.
fn publish(plan: &Plan, samples: &HashMap<Arc<str>, Sample>, results: Option<&[(usize, Outcome)]>) {
    for (authority, checks) in plan.hosts.iter() {
        let down_check = checks
            .iter()
            .find(|&&i| samples.get(&plan.jobs[i].check.url).is_some_and(|s| s.down));
        let down = down_check.is_some();
        let Some(was_down) = plan.health.set_down(authority, down) else {
            continue;
        };
        if was_down == down {
            continue;
        }
        if down {
            let job = down_check.map(|&i| &plan.jobs[i]);
            let status = results
                .and_then(|r| down_check.and_then(|&i| r.iter().find(|(j, _)| *j == i)))
                .and_then(|(_, o)| o.status.map(|s| s.as_u16()));
            tracing::warn!(
                host = %authority,
                check = job.map(|j| j.check.display_url()),
                api_id = job.map(|j| &*j.api_id),
                status,
                "Uptime checks failing: host is down; load balancers checking hosts skip it."
            );
        } else {
            tracing::info!(host = %authority, "Uptime checks passing: host is up again.");
        }
    }
}

/// Runs every check once, at most `pool` at a time.
async fn round(jobs: &Arc<[Job]>, pool: usize) -> Vec<(usize, Outcome)> {
    let permits = Arc::new(Semaphore::new(pool.max(1)));
    let mut set = JoinSet::new();
    for i in 0..jobs.len() {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break;
        };
        let jobs = Arc::clone(jobs);
        set.spawn(async move {
            let _permit = permit;
            (i, probe(&jobs[i].check).await)
        });
    }
    let mut results = Vec::with_capacity(jobs.len());
    while let Some(done) = set.join_next().await {
        if let Ok(r) = done {
            results.push(r);
        }
    }
    results.sort_by_key(|(i, _)| *i);
    results
}

/// Sends one check and times it.
async fn probe(check: &UptimeCheck) -> Outcome {
    let at = Timestamp::now();
    let started = Instant::now();
    let status = match tokio::time::timeout(check.timeout, send(check)).await {
        Ok(Ok(status)) => Some(status),
        Ok(Err(e)) => {
            tracing::debug!(check = %check.display_url(), error = %e, "Uptime check got no answer.");
            None
        }
        Err(_) => {
            tracing::debug!(check = %check.display_url(), timeout = ?check.timeout, "Uptime check timed out.");
            None
        }
    };
    Outcome {
        status,
        at,
        latency: started.elapsed(),
    }
}

/// One request on a connection of its own (`Connection: close`, as Tyk's checker sends).
async fn send(check: &UptimeCheck) -> Result<StatusCode, ProbeError> {
    let target = &check.target;
    let tcp = TcpStream::connect(target.authority.as_str()).await?;
    match target.scheme {
        Scheme::Http => exchange(check, tcp).await,
        // Refused when the definition loads.
        Scheme::H2c => Err(std::io::Error::other("h2c checks are not supported").into()),
        Scheme::Https => {
            let (Some(tls), Some(name)) = (&target.tls, &target.server_name) else {
                return Err(std::io::Error::other("https check without TLS settings").into());
            };
            // The check speaks HTTP/1.1 even where upstreams are offered HTTP/2.
            let connector = tokio_rustls::TlsConnector::from(Arc::clone(tls.http1_config()));
            let stream = connector.connect(name.clone(), tcp).await?;
            exchange(check, stream).await
        }
    }
}

async fn exchange<T>(check: &UptimeCheck, stream: T) -> Result<StatusCode, ProbeError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let conn = tokio::spawn(conn);
    let mut req = Request::builder()
        .method(check.method.clone())
        .uri(path_and_query(&check.target)?)
        .body(Full::new(Bytes::copy_from_slice(&check.body)))?;
    let headers = req.headers_mut();
    for (name, value) in &check.headers {
        headers.append(name, value.clone());
    }
    headers.insert(HOST, check.target.host_header.clone());
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    let result = sender.send_request(req).await.map(|resp| resp.status());
    // The status is all a check needs: the body is not read, the connection is closed.
    conn.abort();
    Ok(result?)
}

/// The check URL's path and query, as the request line carries them.
fn path_and_query(target: &Target) -> Result<PathAndQuery, http::uri::InvalidUri> {
    let path = if target.base_path.is_empty() {
        "/"
    } else {
        &target.base_path
    };
    match &target.base_query {
        Some(q) => PathAndQuery::try_from(format!("{path}?{q}")),
        None => PathAndQuery::try_from(path),
    }
}

/// The uptime analytics record of one result, msgpack-encoded.
fn record(job: &Job, outcome: &Outcome) -> Vec<u8> {
    UptimeRecord::new(
        &job.check.url,
        (&job.api_id, &job.org_id),
        outcome.status.map(|s| s.as_u16()),
        (outcome.at, outcome.latency),
        job.analytics_expiry,
    )
    .to_msgpack()
    .unwrap_or_default()
}

/// Tyk spreads rounds of more than 5 s over `time_wait` ± 3 s (whole seconds), so gateways
/// started together do not check together.
fn staggered(time_wait: Duration) -> Duration {
    let secs = time_wait.as_secs();
    if secs <= 5 {
        return time_wait;
    }
    // A randomly keyed hasher is random enough to spread gateways, without another crate.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(secs);
    Duration::from_secs(secs - 3 + h.finish() % 6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tollgate_testkit::{MockUpstream, Reply};

    fn results(sample: &mut Sample, limit: u32, seq: &str) -> Vec<Option<bool>> {
        seq.chars()
            .map(|c| sample.record(c == '+', limit))
            .collect()
    }

    #[test]
    fn tyks_counting_rule() {
        let mut s = Sample::default();
        // A success below the limit does not reset the count.
        assert_eq!(
            results(&mut s, 3, "-+-+-"),
            [None, None, None, None, Some(true)]
        );
        // Down: further failures stay at the limit; as many successes bring it back.
        assert_eq!(
            results(&mut s, 3, "--++-++"),
            [None, None, None, None, None, None, Some(false)]
        );
        assert_eq!(s, Sample::default());
        // A limit of 1: one failure takes it out, one success brings it back.
        let mut s = Sample::default();
        assert_eq!(results(&mut s, 1, "-+"), [Some(true), Some(false)]);
    }

    #[test]
    fn rounds_above_five_seconds_are_staggered() {
        assert_eq!(staggered(Duration::from_secs(1)), Duration::from_secs(1));
        assert_eq!(staggered(Duration::from_secs(5)), Duration::from_secs(5));
        for _ in 0..20 {
            let d = staggered(Duration::from_secs(10)).as_secs();
            assert!((7..13).contains(&d), "{d}");
        }
    }

    fn loaded(id: &str, extra: serde_json::Value) -> LoadedApi {
        let raw = tollgate_testkit::api_with(id, &format!("/{id}/"), "http://u", extra);
        LoadedApi {
            spec: tollgate_definitions::ApiSpec::from_json(&raw).unwrap(),
            raw,
            source: tollgate_definitions::ApiSource::File(format!("{id}.json").into()),
        }
    }

    fn config(extra: &str) -> GatewayConfig {
        GatewayConfig::from_json(std::path::Path::new("/t/tyk.conf"), extra).unwrap()
    }

    #[tokio::test]
    async fn probes_read_only_the_status() {
        let up = MockUpstream::start().await;
        up.on("/ok", Reply::fixed(200, "fine"));
        up.on("/bad", Reply::fixed(204, ""));
        let spec = |path: &str, extra: serde_json::Value| {
            let mut c = json!({"url": format!("{}{path}", up.url())});
            tollgate_testkit::merge_json(&mut c, extra);
            let api = loaded("a", json!({"uptime_tests": {"check_list": [c]}}));
            api.spec.uptime.unwrap().checks[0].clone()
        };
        let ok = probe(&spec(
            "/ok?x=1",
            json!({"method": "POST", "body": "aGk=",
            "headers": {"X-Probe": "yes"}}),
        ))
        .await;
        assert!(ok.ok());
        let rec = up.last();
        assert_eq!(rec.method, "POST");
        assert_eq!(rec.uri, "/ok?x=1");
        assert_eq!(rec.body, b"hi");
        assert_eq!(rec.header("x-probe"), Some("yes"));
        assert_eq!(rec.header("connection"), Some("close"));
        assert_eq!(rec.header("host"), Some(up.host().as_str()));
        // Only 200 passes, as in Tyk.
        let not_200 = probe(&spec("/bad", json!({}))).await;
        assert_eq!(not_200.status, Some(StatusCode::NO_CONTENT));
        assert!(!not_200.ok());
        up.on("/slow", Reply::fixed(200, "").delay(Duration::from_secs(2)));
        let slow = probe(&spec("/slow", json!({"timeout": 50_000_000}))).await;
        assert!(slow.status.is_none() && slow.latency < Duration::from_secs(1));
        let refused = tollgate_testkit::refused_port();
        let check = loaded(
            "r",
            json!({"uptime_tests": {"check_list": [
            {"url": format!("http://127.0.0.1:{refused}/")}]}}),
        );
        assert!(
            probe(&check.spec.uptime.unwrap().checks[0])
                .await
                .status
                .is_none()
        );
    }

    #[tokio::test]
    async fn plans_share_hosts_and_carry_state_over() {
        let apis = [
            loaded(
                "a",
                json!({"uptime_tests": {"check_list": [
                {"url": "http://h1:1/x"}, {"url": "http://h1:1/y"}, {"url": "http://h2:2/"}]}}),
            ),
            // The same URL in another API is one check.
            loaded(
                "b",
                json!({"uptime_tests": {"check_list": [{"url": "http://h2:2/"}]}}),
            ),
            loaded(
                "c",
                json!({"active": false,
                "uptime_tests": {"check_list": [{"url": "http://h3:3/"}]}}),
            ),
        ];
        let mut uptime = Uptime::new(&config("{}"));
        let plan = uptime.plan(&apis);
        assert_eq!(plan.jobs.len(), 3);
        assert_eq!(plan.hosts.len(), 2);
        assert_eq!(plan.health.len(), 2);
        let h1: Authority = "h1:1".parse().unwrap();
        // One failing check of two is enough to take the host out.
        let mut samples = HashMap::new();
        samples.insert(
            Arc::clone(&plan.jobs[1].check.url),
            Sample {
                count: 3,
                down: true,
            },
        );
        publish(&plan, &samples, None);
        assert!(plan.health.is_down(&h1));
        uptime.commit(plan);
        // The next load starts from the live table.
        let next = uptime.plan(&apis);
        assert!(next.health.is_down(&h1));
        // Disabled: nothing is checked, nothing is ever down.
        let off = Uptime::new(&config(r#"{"uptime_tests": {"disable": true}}"#));
        let plan = off.plan(&apis);
        assert!(plan.jobs.is_empty() && plan.health.is_empty());
    }
}
