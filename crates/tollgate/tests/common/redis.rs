//! Shared helpers for the multi-node, Redis outage and Redis Cluster tests.
//!
//! Every test starts its own `redis-server` (or three, for a cluster) on a free
//! port below the ephemeral range, never the machine's Redis on 6379, and kills
//! it on drop. Gateway nodes of one test share that storage and `node_secret`.
#![allow(dead_code, unreachable_pub)]

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::sync::Semaphore;
use tollgate_testkit::raw::{RawClient, RawResponse};
use tollgate_testkit::{Gateway, GatewayBuilder, gateway};

/// The `node_secret` every node of a test shares.
pub const NODE_SECRET: &str = "ns";

pub use tollgate_testkit::redis::{RedisServer, redis_cli};

// ---------------------------------------------------------------------------
// Redis Cluster
// ---------------------------------------------------------------------------

/// Three redis-servers in cluster mode, no replicas, all slots assigned.
#[derive(Debug)]
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, joins them with
    /// `redis-cli --cluster create` and waits until every node reports
    /// `cluster_state:ok`.
    pub async fn start() -> Self {
        let dir = Arc::new(
            tempfile::Builder::new()
                .prefix("tollgate-redis-cluster-")
                .tempdir()
                .expect("create redis temp dir"),
        );
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(RedisServer::start_in(Arc::clone(&dir), true).await);
        }
        let addrs: Vec<String> = nodes.iter().map(RedisServer::addr).collect();
        let mut args: Vec<&str> = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        redis_cli(nodes[0].port(), false, &args).await;
        let cluster = Self { nodes };
        let deadline = Instant::now() + Duration::from_secs(15);
        for node in &cluster.nodes {
            loop {
                let info = node.cli(&["cluster", "info"]).await;
                if info.lines().any(|l| l.trim() == "cluster_state:ok") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "cluster not ok on {}:\n{info}",
                    node.addr()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        cluster
    }

    /// `host:port` of every node.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::addr).collect()
    }

    /// `redis-cli -c -p <first node> <args>` (follows redirects).
    pub async fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.nodes[0].port(), true, args).await
    }
}

// ---------------------------------------------------------------------------
// Gateway nodes
// ---------------------------------------------------------------------------

/// tyk.conf `storage` for a standalone Redis.
pub fn redis_storage(port: u16) -> Value {
    json!({"type": "redis", "host": "127.0.0.1", "port": port, "timeout": 1})
}

/// tyk.conf `storage` for a Redis Cluster.
pub fn cluster_storage(addrs: &[String]) -> Value {
    json!({"type": "redis", "enable_cluster": true, "addrs": addrs})
}

/// A gateway builder using `storage` and the shared node secret.
pub fn node(storage: &Value) -> GatewayBuilder {
    gateway!().conf(json!({"storage": storage, "node_secret": NODE_SECRET}))
}

/// Starts the builders one after the other (boxed: keeps test futures small).
pub async fn start_nodes(builders: Vec<GatewayBuilder>) -> Vec<Gateway> {
    let mut out = Vec::new();
    for b in builders {
        out.push(Box::pin(b.start()).await);
    }
    out
}

/// A folder of API definitions shared by several nodes (`app_path`).
pub struct SharedApps {
    dir: TempDir,
}

impl SharedApps {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("tollgate-shared-apps-")
                .tempdir()
                .expect("create shared apps dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `<file>` with `def`, atomically (temp file + rename), so a
    /// node reloading meanwhile never reads half a file.
    pub fn write(&self, file: &str, def: &Value) {
        let tmp = self.dir.path().join(format!(".{file}.tmp"));
        fs::write(
            &tmp,
            serde_json::to_string_pretty(def).expect("serialize api definition"),
        )
        .expect("write api definition");
        fs::rename(&tmp, self.dir.path().join(file)).expect("rename api definition");
    }

    /// The tyk.conf fragment pointing `app_path` here (absolute).
    pub fn conf(&self) -> Value {
        json!({"app_path": self.dir.path().display().to_string()})
    }
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

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

    /// A one-line description for failure messages.
    pub fn describe(&self) -> String {
        match &self.resp {
            Ok(r) => format!(
                "node {} at {:?} took {:?}: {}{}",
                self.node,
                self.at,
                self.took,
                r.head,
                r.text()
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

/// Sends `n` GETs of `target` spread round-robin over `addrs`, at most
/// `concurrency` in flight, each with `timeout`.
pub async fn burst(
    addrs: &[SocketAddr],
    target: &str,
    key: Option<&str>,
    n: usize,
    concurrency: usize,
    timeout: Duration,
) -> Vec<Sent> {
    let sem = Arc::new(Semaphore::new(concurrency));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let node = i % addrs.len();
        let addr = addrs[node];
        let target = target.to_owned();
        let key = key.map(str::to_owned);
        let sem = Arc::clone(&sem);
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.expect("semaphore");
            let at = start.elapsed();
            let t = Instant::now();
            let resp = try_get(addr, &target, key.as_deref(), timeout).await;
            Sent {
                node,
                at,
                took: t.elapsed(),
                resp,
            }
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

/// Sends GETs at `per_sec` for `dur`, spread round-robin over `addrs`;
/// each request is sent at its scheduled time on its own connection.
pub async fn paced(
    addrs: &[SocketAddr],
    target: &str,
    key: Option<&str>,
    per_sec: u32,
    dur: Duration,
    timeout: Duration,
) -> Vec<Sent> {
    let start = Instant::now();
    let total = (f64::from(per_sec) * dur.as_secs_f64()).round() as usize;
    let gap = Duration::from_secs_f64(1.0 / f64::from(per_sec));
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + gap * u32::try_from(i).expect("request index");
        tokio::time::sleep_until(due.into()).await;
        let node = i % addrs.len();
        let addr = addrs[node];
        let target = target.to_owned();
        let key = key.map(str::to_owned);
        tasks.push(tokio::spawn(async move {
            let at = start.elapsed();
            let t = Instant::now();
            let resp = try_get(addr, &target, key.as_deref(), timeout).await;
            Sent {
                node,
                at,
                took: t.elapsed(),
                resp,
            }
        }));
    }
    let mut out = Vec::with_capacity(total);
    for t in tasks {
        out.push(t.await.expect("request task"));
    }
    out
}

/// `n` clients, each sending GETs back to back (one connection per request)
/// to `addrs[client % len]` until `dur` has passed.
pub async fn closed_loop(
    addrs: &[SocketAddr],
    target: &str,
    key: Option<&str>,
    clients: usize,
    dur: Duration,
    timeout: Duration,
) -> Vec<Sent> {
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let node = c % addrs.len();
        let addr = addrs[node];
        let target = target.to_owned();
        let key = key.map(str::to_owned);
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            while start.elapsed() < dur {
                let at = start.elapsed();
                let t = Instant::now();
                let resp = try_get(addr, &target, key.as_deref(), timeout).await;
                out.push(Sent {
                    node,
                    at,
                    took: t.elapsed(),
                    resp,
                });
            }
            out
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.extend(t.await.expect("client task"));
    }
    out
}

/// Counts of each status (0 = no response), sorted by status.
pub fn status_counts(sent: &[Sent]) -> Vec<(u16, usize)> {
    let mut counts: std::collections::BTreeMap<u16, usize> = std::collections::BTreeMap::new();
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

/// Polls `poll` every 50 ms until it returns `Some`, or panics after
/// `deadline` (measured from `since`) with the last value it saw.
pub async fn poll_until<T, F, Fut>(
    since: Instant,
    deadline: Duration,
    what: &str,
    mut poll: F,
) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
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
