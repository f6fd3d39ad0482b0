//! Traffic for the multi-node and outage tests: requests that report a
//! missing answer instead of panicking, bursts, paced and closed-loop load
//! spread over several nodes ([`Load`]), and polling until a node answers as expected.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::Gateway;
use crate::keys::call;
use crate::raw::{RawClient, RawResponse, assert_tyk_error};

/// One proxied request's result.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Index of the node it went to.
    pub node: usize,
    /// When it was sent, relative to the start of the run.
    pub at: Duration,
    /// How long the answer took.
    pub took: Duration,
    /// The response, or why there was none.
    pub resp: Result<RawResponse, String>,
}

impl Sent {
    /// The status, 0 when there was no response.
    pub fn status(&self) -> u16 {
        self.resp.as_ref().map_or(0, |r| r.status)
    }

    /// Whether there was a response with `status` and exactly `body`.
    pub fn is(&self, status: u16, body: &str) -> bool {
        self.resp
            .as_ref()
            .is_ok_and(|r| r.status == status && r.text() == body)
    }

    /// A one-line description for failure messages.
    pub fn describe(&self) -> String {
        match &self.resp {
            Ok(r) => format!(
                "node {} at {:?} took {:?}: {}",
                self.node,
                self.at,
                self.took,
                r.dump()
            ),
            Err(e) => format!(
                "node {} at {:?} took {:?}: no response: {e}",
                self.node, self.at, self.took
            ),
        }
    }
}

/// `GET target` on a new connection (Connection: close), optionally with
/// `Authorization: key`; an error instead of a panic when there is no
/// complete response within `timeout`.
pub async fn try_get(
    addr: SocketAddr,
    target: &str,
    key: Option<&str>,
    timeout: Duration,
) -> Result<RawResponse, String> {
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n");
    if let Some(k) = key {
        req.push_str(&format!("Authorization: {k}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut c = tokio::time::timeout_at(deadline, RawClient::connect(addr))
        .await
        .map_err(|_| format!("connect to {addr} timed out"))?
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    c.send(req.as_bytes())
        .await
        .map_err(|e| format!("send to {addr}: {e}"))?;
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    c.read_response(left)
        .await
        .map_err(|e| format!("GET {target} on {addr}: {e}"))
}

/// Load on several nodes: GETs of one target, optionally with a key,
/// each on its own connection with its own timeout (see [`try_get`]).
#[derive(Debug, Clone)]
pub struct Load {
    target: Arc<str>,
    key: Option<Arc<str>>,
    timeout: Duration,
}

/// One run of a [`Load`]: when it started.
#[derive(Debug, Clone)]
struct Run {
    load: Load,
    start: Instant,
}

impl Run {
    /// One [`try_get`] to `addr` (node `node`), timed.
    async fn send(&self, node: usize, addr: SocketAddr) -> Sent {
        let at = self.start.elapsed();
        let t = Instant::now();
        let l = &self.load;
        let resp = try_get(addr, &l.target, l.key.as_deref(), l.timeout).await;
        Sent {
            node,
            at,
            took: t.elapsed(),
            resp,
        }
    }
}

/// Waits for every task and concatenates what they return.
async fn join_all<T>(tasks: Vec<tokio::task::JoinHandle<Vec<T>>>) -> Vec<T> {
    let mut out = Vec::new();
    for t in tasks {
        out.extend(t.await.expect("request task"));
    }
    out
}

impl Load {
    /// `GET target`, with `Authorization: key` when given, each request
    /// failing after `timeout`.
    pub fn new(target: &str, key: Option<&str>, timeout: Duration) -> Self {
        Self {
            target: target.into(),
            key: key.map(Into::into),
            timeout,
        }
    }

    fn run(&self) -> Run {
        Run {
            load: self.clone(),
            start: Instant::now(),
        }
    }

    /// Sends `n` requests spread round-robin over `addrs`, at most
    /// `concurrency` in flight.
    pub async fn burst(&self, addrs: &[SocketAddr], n: usize, concurrency: usize) -> Vec<Sent> {
        let sem = Arc::new(Semaphore::new(concurrency));
        let run = self.run();
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let node = i % addrs.len();
            let (addr, run, sem) = (addrs[node], run.clone(), Arc::clone(&sem));
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await.expect("semaphore");
                vec![run.send(node, addr).await]
            }));
        }
        join_all(tasks).await
    }

    /// Sends `per_sec` requests a second for `dur`, spread round-robin over
    /// `addrs`; each is sent at its scheduled time.
    pub async fn paced(&self, addrs: &[SocketAddr], per_sec: u32, dur: Duration) -> Vec<Sent> {
        let run = self.run();
        let total = (f64::from(per_sec) * dur.as_secs_f64()).round() as usize;
        let gap = Duration::from_secs_f64(1.0 / f64::from(per_sec));
        let mut tasks = Vec::with_capacity(total);
        for i in 0..total {
            let due = run.start + gap * u32::try_from(i).expect("request index");
            tokio::time::sleep_until(due.into()).await;
            let node = i % addrs.len();
            let (addr, run) = (addrs[node], run.clone());
            tasks.push(tokio::spawn(
                async move { vec![run.send(node, addr).await] },
            ));
        }
        join_all(tasks).await
    }

    /// `clients` clients, each sending requests back to back to
    /// `addrs[client % len]` until `dur` has passed.
    pub async fn closed_loop(
        &self,
        addrs: &[SocketAddr],
        clients: usize,
        dur: Duration,
    ) -> Vec<Sent> {
        let run = self.run();
        let mut tasks = Vec::with_capacity(clients);
        for c in 0..clients {
            let node = c % addrs.len();
            let (addr, run) = (addrs[node], run.clone());
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                while run.start.elapsed() < dur {
                    out.push(run.send(node, addr).await);
                }
                out
            }));
        }
        join_all(tasks).await
    }
}

/// The addresses of `gws`, for [`Load::burst`], [`Load::paced`] and [`Load::closed_loop`].
pub fn addrs(gws: &[Gateway]) -> Vec<SocketAddr> {
    gws.iter().map(Gateway::addr).collect()
}

/// Counts of each status (0 = no response), sorted by status.
pub fn status_counts(sent: &[Sent]) -> Vec<(u16, usize)> {
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for s in sent {
        *counts.entry(s.status()).or_default() += 1;
    }
    counts.into_iter().collect()
}

/// The first few results that do not satisfy `ok`, for failure messages.
pub fn first_bad(sent: &[Sent], ok: impl Fn(&Sent) -> bool) -> String {
    sent.iter()
        .filter(|s| !ok(s))
        .take(5)
        .map(Sent::describe)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Polls `poll` every 50 ms until it returns `Ok`, or panics after
/// `deadline` (measured from `since`) with the last error it saw. Returns
/// the value and the time since `since`.
pub async fn poll_until<T, F, Fut>(
    since: Instant,
    deadline: Duration,
    what: &str,
    mut poll: F,
) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    loop {
        let last = match poll().await {
            Ok(v) => return (v, since.elapsed()),
            Err(e) => e,
        };
        if since.elapsed() >= deadline {
            panic!(
                "{what}: not within {deadline:?} (waited {:?}); last: {last}",
                since.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`poll_until`] `GET target` on `gw` (with `Authorization: key` when
/// given) answers with `status`. Returns the response and the time since
/// `since`.
pub async fn status_within(
    gw: &Gateway,
    (target, key): (&str, Option<&str>),
    status: u16,
    (since, deadline): (Instant, Duration),
    what: &str,
) -> (RawResponse, Duration) {
    poll_until(since, deadline, what, || async {
        let auth: Vec<(&str, &str)> = key.map(|k| ("Authorization", k)).into_iter().collect();
        let r = call(gw, "GET", target, &auth).await;
        if r.status == status {
            Ok(r)
        } else {
            Err(r.dump())
        }
    })
    .await
}

/// [`poll_until`] `GET target` with `key` on `gw` is refused with 403 and
/// exactly `message`, within 1 s of `since`; asserts the refusal is the
/// gateway's error. Returns the time since `since`.
pub async fn refused_within_1s(
    gw: &Gateway,
    (target, key): (&str, &str),
    message: &str,
    since: Instant,
    what: &str,
) -> Duration {
    let want = crate::tyk_error_body(message);
    let (resp, took) = poll_until(since, Duration::from_secs(1), what, || async {
        let r = crate::keys::get_with_key(gw, target, key).await;
        if r.status == 403 && r.text() == want {
            Ok(r)
        } else {
            Err(r.dump())
        }
    })
    .await;
    assert_tyk_error(&resp, 403, message);
    took
}
