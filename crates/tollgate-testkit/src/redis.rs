//! A private `redis-server` for tests that need Redis: started on a free port below the
//! ephemeral range (never the machine's Redis on 6379), without persistence, killed on drop.
//! Needs the `redis-server` and `redis-cli` binaries on `PATH`.

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
}

impl RedisServer {
    /// Starts a standalone redis-server (no persistence) on a free port.
    pub async fn start() -> Self {
        let dir = Arc::new(
            tempfile::Builder::new()
                .prefix("tollgate-redis-")
                .tempdir()
                .expect("create redis temp dir"),
        );
        Self::start_in(dir, false).await
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
            if ping(self.port).await {
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
    assert!(
        out.status.success(),
        "{shown} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    if s.ends_with('\n') {
        s.pop();
    }
    s
}
