//! Redis for the tests that need it, and gateway nodes sharing it.
//!
//! Every test starts its own [`RedisServer`] (or three, as a
//! [`RedisCluster`]) on a free port below the ephemeral range (never the
//! machine's Redis on 6379), without persistence, killed on drop. Gateway
//! nodes of one test share that storage ([`redis_storage`] /
//! [`cluster_storage`]) and [`NODE_SECRET`] (see [`node`] and
//! [`start_nodes`]). Needs the `redis-server` and `redis-cli` binaries on
//! `PATH`.

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Gateway, GatewayBuilder};

/// How long a freshly spawned redis-server may take to answer PING.
const REDIS_READY: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

static PORT_SEQ: AtomicU64 = AtomicU64::new(0);

/// A pseudo-random number, different per call and per process.
fn pseudo_random() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let seq = PORT_SEQ.fetch_add(1, Ordering::Relaxed);
    let mut x =
        nanos ^ (u64::from(std::process::id()) << 32) ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // xorshift64*
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A free port in 10000..22000: below the ephemeral range (so outgoing
/// connections do not take it while Redis is stopped) and, with `bus`, with
/// the cluster bus port `port + 10000` free as well (also below 32768).
pub fn pick_redis_port(bus: bool) -> u16 {
    for _ in 0..1000 {
        let port = 10_000 + (pseudo_random() % 12_000) as u16;
        if bindable(port) && (!bus || bindable(port + 10_000)) {
            return port;
        }
    }
    panic!("no free port for redis-server found");
}

// ---------------------------------------------------------------------------
// redis-server
// ---------------------------------------------------------------------------

/// A private `redis-server` child process.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: Arc<TempDir>,
    extra: Vec<String>,
    child: Option<Child>,
    starts: u32,
    /// For a TLS-only server: the CA file its certificate chains to.
    tls_ca: Option<PathBuf>,
}

impl RedisServer {
    /// Starts a standalone redis-server (no persistence) on a free port.
    pub async fn start() -> Self {
        Self::start_in(Arc::new(temp_dir("tollgate-redis-")), false).await
    }

    /// Starts a redis-server in `dir`; `cluster` enables cluster mode (with
    /// `nodes-<port>.conf` in `dir`). Retries on a new port if the chosen one
    /// was taken in the meantime.
    pub async fn start_in(dir: Arc<TempDir>, cluster: bool) -> Self {
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = pick_redis_port(cluster);
            let mut extra = Vec::new();
            if cluster {
                let conf = dir.path().join(format!("nodes-{port}.conf"));
                extra.extend([
                    "--cluster-enabled".to_owned(),
                    "yes".to_owned(),
                    "--cluster-config-file".to_owned(),
                    conf.display().to_string(),
                ]);
            }
            let mut server = Self {
                port,
                dir: Arc::clone(&dir),
                extra,
                child: None,
                starts: 0,
                tls_ca: None,
            };
            match server.spawn_and_wait().await {
                Ok(()) => return server,
                Err(e) => {
                    last_err = e;
                    server.kill();
                }
            }
        }
        panic!("redis-server did not start: {last_err}");
    }

    /// Starts a standalone redis-server that speaks only TLS, with a certificate for
    /// `127.0.0.1` and `localhost` issued by `ca` (clients are not asked for certificates).
    /// Returns the server and the CA file to trust.
    pub async fn start_tls(ca: &crate::tls::TestCa) -> (Self, PathBuf) {
        let dir = Arc::new(temp_dir("tollgate-redis-tls-"));
        let leaf = ca.issue(&["127.0.0.1", "localhost"]);
        let (cert, key) = leaf.write(dir.path(), "redis");
        let ca_file = ca.write(dir.path(), "ca.pem");
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = pick_redis_port(false);
            let path = |p: &Path| p.display().to_string();
            let mut server = Self {
                port,
                dir: Arc::clone(&dir),
                extra: vec![
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port.to_string(),
                    "--tls-cert-file".into(),
                    path(&cert),
                    "--tls-key-file".into(),
                    path(&key),
                    "--tls-ca-cert-file".into(),
                    path(&ca_file),
                    "--tls-auth-clients".into(),
                    "no".into(),
                ],
                child: None,
                starts: 0,
                tls_ca: Some(ca_file.clone()),
            };
            match server.spawn_and_wait().await {
                Ok(()) => return (server, ca_file),
                Err(e) => {
                    last_err = e;
                    server.kill();
                }
            }
        }
        panic!("redis-server (TLS) did not start: {last_err}");
    }

    /// PING over TLS with redis-cli.
    async fn ping_tls(&self, ca: &Path) -> bool {
        let (ca, port) = (ca.to_owned(), self.port.to_string());
        let out = tokio::task::spawn_blocking(move || {
            Command::new("redis-cli")
                .args(["--tls", "--cacert"])
                .arg(ca)
                .args(["-h", "127.0.0.1", "-p", &port, "PING"])
                .stdin(Stdio::null())
                .output()
        });
        matches!(
            tokio::time::timeout(Duration::from_secs(2), out).await,
            Ok(Ok(Ok(o))) if String::from_utf8_lossy(&o.stdout).trim() == "PONG"
        )
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("redis-{}.log", self.port))
    }

    fn spawn_child(&mut self) {
        self.starts += 1;
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open redis log");
        let log2 = log.try_clone().expect("clone redis log handle");
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
            ])
            .arg(self.dir.path())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn redis-server: {e}"));
        self.child = Some(child);
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        self.spawn_child();
        let deadline = Instant::now() + REDIS_READY;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!(
                    "redis-server on port {} exited ({status}):\n{}",
                    self.port,
                    self.log()
                ));
            }
            let up = match &self.tls_ca {
                Some(ca) => self.ping_tls(ca).await,
                None => ping(self.port).await,
            };
            if up {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "redis-server on port {} did not answer PING within {REDIS_READY:?}:\n{}",
                    self.port,
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The redis-server log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The port Redis listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills redis-server (SIGKILL) and waits until its port refuses
    /// connections.
    pub async fn stop(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "port {} still accepts connections after killing redis-server",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Starts redis-server again on the same port (empty: it keeps no
    /// data) and waits until it answers PING.
    pub async fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.spawn_and_wait().await {
            panic!("redis-server restart failed: {e}");
        }
    }

    /// Sends `SIGSTOP` (`freeze = true`) or `SIGCONT` to redis-server: a
    /// frozen Redis keeps its connections open but answers nothing.
    pub fn freeze(&self, freeze: bool) {
        let child = self.child.as_ref().expect("redis-server not running");
        let sig = if freeze { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {sig} redis-server: {status}");
    }

    /// Whether the server process is running.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Runs `redis-cli -p <port> <args>` and returns its stdout (trimmed of
    /// the final newline). Panics if redis-cli fails.
    pub async fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, false, args).await
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() && self.starts > 0 {
            eprintln!(
                "----- redis-server {} log -----\n{}\n-----",
                self.port,
                self.log()
            );
        }
        self.kill();
    }
}

/// Whether something on `port` answers a RESP `PING` with `+PONG`.
pub async fn ping(port: u16) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n") {
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            got.extend_from_slice(&buf[..n]);
        }
        Some(got.starts_with(b"+PONG"))
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), attempt).await,
        Ok(Some(true))
    )
}

/// `redis-cli -h 127.0.0.1 -p <port> [-c] <args>`; stdout without the final
/// newline. Panics (with stderr) if it fails.
pub async fn redis_cli(port: u16, cluster: bool, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if cluster {
        cmd.arg("-c");
    }
    cmd.args(args).stdin(Stdio::null());
    let shown = format!("redis-cli -p {port} {}", args.join(" "));
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join redis-cli")
        .unwrap_or_else(|e| panic!("{shown}: {e}"));
    let mut s = crate::command_stdout(&shown, &out);
    if s.ends_with('\n') {
        s.pop();
    }
    s
}

/// The records in the Redis list `list` on `port` (Tyk Pump's analytics or uptime list),
/// decoded from msgpack.
pub async fn pump_records(port: u16, list: &str) -> Vec<rmpv::Value> {
    let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    let raw: Vec<Vec<u8>> = ::redis::cmd("LRANGE")
        .arg(list)
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .expect("LRANGE");
    raw.iter()
        .map(|b| rmpv::decode::read_value(&mut &b[..]).expect("record is msgpack"))
        .collect()
}

/// Field `name` of a record [`pump_records`] returned; panics naming it when absent.
pub fn record_field<'a>(rec: &'a rmpv::Value, name: &str) -> &'a rmpv::Value {
    rec.as_map()
        .expect("record is a map")
        .iter()
        .find(|(k, _)| k.as_str() == Some(name))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("record has no field {name}: {rec}"))
}

/// A new temporary folder named `<prefix>...`.
fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap_or_else(|e| panic!("create temp dir {prefix}*: {e}"))
}

// ---------------------------------------------------------------------------
// Redis Cluster
// ---------------------------------------------------------------------------

/// Three redis-servers in cluster mode, no replicas, all slots assigned.
#[derive(Debug)]
pub struct RedisCluster {
    /// The three servers.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, joins them with
    /// `redis-cli --cluster create` and waits until every node reports
    /// `cluster_state:ok`.
    pub async fn start() -> Self {
        let dir = Arc::new(temp_dir("tollgate-redis-cluster-"));
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

/// The `node_secret` every node of a test shares.
pub const NODE_SECRET: &str = "ns";

/// tyk.conf `storage` for a standalone Redis.
pub fn redis_storage(port: u16) -> Value {
    json!({"type": "redis", "host": "127.0.0.1", "port": port, "timeout": 1})
}

/// tyk.conf `storage` for a Redis Cluster.
pub fn cluster_storage(addrs: &[String]) -> Value {
    json!({"type": "redis", "enable_cluster": true, "addrs": addrs})
}

/// `builder` (usually `gateway!()`) using `storage` and the shared
/// [`NODE_SECRET`].
pub fn node(builder: GatewayBuilder, storage: &Value) -> GatewayBuilder {
    builder.conf(json!({"storage": storage, "node_secret": NODE_SECRET}))
}

/// Starts `n` gateways from `builder`, one after the other (each on its own
/// free port and config folder).
pub async fn start_nodes(builder: GatewayBuilder, n: usize) -> Vec<Gateway> {
    start_all((0..n).map(|_| builder.clone())).await
}

/// Starts `n` nodes from `builder` (usually `gateway!()`) on `storage`,
/// each with the keyed API of [`crate::keys::with_keyed_api`] proxying to
/// `target`.
pub async fn keyed_nodes(
    builder: GatewayBuilder,
    storage: &Value,
    target: &str,
    n: usize,
) -> Vec<Gateway> {
    let keyed = crate::keys::with_keyed_api(node(builder, storage), target, json!({}));
    start_nodes(keyed, n).await
}

/// Starts the builders one after the other.
pub async fn start_all(builders: impl IntoIterator<Item = GatewayBuilder>) -> Vec<Gateway> {
    let mut out = Vec::new();
    for b in builders {
        out.push(b.start().await);
    }
    out
}

/// A folder of API definitions shared by several nodes (`app_path`).
#[derive(Debug)]
pub struct SharedApps {
    dir: TempDir,
}

impl Default for SharedApps {
    fn default() -> Self {
        Self::new()
    }
}

impl SharedApps {
    /// A new, empty folder.
    pub fn new() -> Self {
        Self {
            dir: temp_dir("tollgate-shared-apps-"),
        }
    }

    /// The folder.
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
