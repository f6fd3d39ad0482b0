//! Start the real `tollgate` binary against a temporary configuration.

use std::fs::{self, File, OpenOptions};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::defs::{DEFAULT_SECRET, merge_json, tyk_conf};
use crate::raw;
use crate::traffic::poll_until;

/// How long [`GatewayBuilder::start`] waits for `GET /hello` to answer 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The admin secret of a default test gateway.
pub const TEST_SECRET: &str = DEFAULT_SECRET;

/// Builds the temporary config folder and starts the gateway.
#[derive(Debug, Clone)]
pub struct GatewayBuilder {
    bin: PathBuf,
    secret: String,
    proxy_default_timeout: u64,
    port: Option<u16>,
    extra_conf: Vec<Value>,
    raw_conf: Option<String>,
    apps: Vec<(String, String)>,
    conf_equals: bool,
    env: Vec<(String, String)>,
    tls: bool,
}

impl GatewayBuilder {
    fn new(bin: impl Into<PathBuf>) -> Self {
        Self {
            bin: bin.into(),
            secret: DEFAULT_SECRET.to_owned(),
            proxy_default_timeout: 10,
            port: None,
            extra_conf: Vec::new(),
            raw_conf: None,
            apps: Vec::new(),
            conf_equals: false,
            env: Vec::new(),
            tls: false,
        }
    }

    /// The gateway serves HTTPS (`use_ssl` in the conf): readiness is checked over TLS,
    /// whatever certificate it presents.
    pub fn serves_tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Deep-merges `extra` into the generated tyk.conf (may be called repeatedly).
    pub fn conf(mut self, extra: Value) -> Self {
        self.extra_conf.push(extra);
        self
    }

    /// Writes `text` as tyk.conf verbatim instead of the generated one
    /// (the port is still chosen, see [`Gateway::port`], but is only used if
    /// the text mentions it).
    pub fn raw_conf(mut self, text: impl Into<String>) -> Self {
        self.raw_conf = Some(text.into());
        self
    }

    /// The admin secret (`""` for an empty secret). Default: `test-secret`.
    pub fn secret(mut self, secret: &str) -> Self {
        self.secret = secret.to_owned();
        self
    }

    /// `proxy_default_timeout` in seconds. Default: 10.
    pub fn proxy_default_timeout(mut self, secs: u64) -> Self {
        self.proxy_default_timeout = secs;
        self
    }

    /// Listen on this port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Adds `apps/<file_name>` with the given API definition.
    pub fn api(mut self, file_name: &str, def: Value) -> Self {
        let text = serde_json::to_string_pretty(&def).expect("serialize api def");
        self.apps.push((file_name.to_owned(), text));
        self
    }

    /// Adds `apps/<api_id>.json` with [`api_def`](crate::api_def)`(api_id,
    /// listen_path, target_url)`: a keyless API.
    pub fn with_api(self, api_id: &str, listen_path: &str, target_url: &str) -> Self {
        let def = crate::api_def(api_id, listen_path, target_url);
        self.api(&format!("{api_id}.json"), def)
    }

    /// Adds `apps/<api_id>.json` with [`api_with`](crate::api_with)`(api_id, listen_path,
    /// target_url, extra)`: a keyless API with `extra` merged in.
    pub fn with_api_extra(
        self,
        api_id: &str,
        listen_path: &str,
        target_url: &str,
        extra: Value,
    ) -> Self {
        let def = crate::api_with(api_id, listen_path, target_url, extra);
        self.api(&format!("{api_id}.json"), def)
    }

    /// [`with_api_extra`](Self::with_api_extra) for the usual test API: listen path
    /// `/<api_id>/`, forwarding to `upstream`.
    pub fn keyless_api(self, api_id: &str, upstream: &crate::MockUpstream, extra: Value) -> Self {
        self.with_api_extra(api_id, &format!("/{api_id}/"), &upstream.url(), extra)
    }

    /// Adds `apps/<file_name>` with exactly `text` (e.g. broken JSON).
    pub fn raw_app(mut self, file_name: &str, text: &str) -> Self {
        self.apps.push((file_name.to_owned(), text.to_owned()));
        self
    }

    /// Pass the config as `--conf=FILE` instead of `--conf FILE`.
    pub fn conf_equals_form(mut self) -> Self {
        self.conf_equals = true;
        self
    }

    /// Sets an environment variable for the gateway process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Writes the config folder and starts the process without waiting for
    /// it to become ready (for tests of start-up failures).
    pub fn spawn(self) -> Gateway {
        let port = self.port.unwrap_or_else(free_port);
        let dir = tempfile::Builder::new()
            .prefix("tollgate-test-")
            .tempdir()
            .expect("create temp dir");
        let apps = dir.path().join("apps");
        fs::create_dir_all(&apps).expect("create apps dir");
        for (name, text) in &self.apps {
            fs::write(apps.join(name), text).expect("write api definition");
        }
        let conf_path = dir.path().join("tyk.conf");
        let conf_text = match &self.raw_conf {
            Some(text) => text.clone(),
            None => {
                let mut conf = tyk_conf(port, &self.secret, self.proxy_default_timeout);
                for extra in &self.extra_conf {
                    merge_json(&mut conf, extra.clone());
                }
                serde_json::to_string_pretty(&conf).expect("serialize tyk.conf")
            }
        };
        fs::write(&conf_path, conf_text).expect("write tyk.conf");
        let mut gw = Gateway {
            dir,
            conf_path,
            port,
            secret: self.secret.clone(),
            child: None,
            builder: self,
        };
        gw.spawn_child();
        gw
    }

    /// Writes the config folder, starts the gateway and waits until
    /// `GET /hello` answers 200. Panics (printing the log) if the process
    /// exits or is not ready within [`READY_TIMEOUT`].
    ///
    /// When the port was chosen automatically and the gateway fails because
    /// another process grabbed it in the meantime, it retries on a new port.
    ///
    /// The waiting is boxed, so awaiting this keeps the caller's future
    /// small (debug builds of large tests overflow the test thread's stack
    /// otherwise).
    pub async fn start(self) -> Gateway {
        Box::pin(self.start_unboxed()).await
    }

    async fn start_unboxed(self) -> Gateway {
        let auto_port = self.port.is_none();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut gw = self.clone().spawn();
            match gw.wait_ready(READY_TIMEOUT).await {
                Ok(()) => return gw,
                Err(e) => {
                    let log = gw.log();
                    let lower = log.to_lowercase();
                    if auto_port && attempt < 3 && lower.contains("in use") {
                        continue;
                    }
                    gw.kill();
                    panic!("gateway did not become ready: {e}\n{log}");
                }
            }
        }
    }
}

/// A running (or exited) `tollgate` process and its temporary config folder.
///
/// Dropping it kills the process (SIGKILL); if the current thread is
/// panicking the gateway's log is printed to stderr first.
#[derive(Debug)]
pub struct Gateway {
    dir: TempDir,
    conf_path: PathBuf,
    port: u16,
    secret: String,
    child: Option<Child>,
    builder: GatewayBuilder,
}

impl Gateway {
    /// A builder for the binary at `bin` (use `env!("CARGO_BIN_EXE_tollgate")`
    /// or the [`gateway!`](crate::gateway) macro).
    pub fn builder(bin: impl Into<PathBuf>) -> GatewayBuilder {
        GatewayBuilder::new(bin)
    }

    fn spawn_child(&mut self) {
        let stdout = log_file(&self.dir.path().join("stdout.log"));
        let stderr = log_file(&self.dir.path().join("stderr.log"));
        let mut cmd = Command::new(&self.builder.bin);
        if self.builder.conf_equals {
            cmd.arg(format!("--conf={}", self.conf_path.display()));
        } else {
            cmd.arg("--conf").arg(&self.conf_path);
        }
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (k, v) in &self.builder.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.builder.bin.display()));
        self.child = Some(child);
    }

    /// Polls `GET /hello` until it answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Err(format!("gateway exited before it was ready: {status}"));
            }
            if self.builder.tls {
                if self.hello_over_tls().await {
                    return Ok(());
                }
            } else {
                let req = format!(
                    "GET /hello HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
                    self.port
                );
                if let Ok(ex) =
                    raw::exchange(self.addr(), req.as_bytes(), Duration::from_secs(2)).await
                    && ex.responses.first().is_some_and(|r| r.status == 200)
                {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("GET /hello did not answer 200 within {timeout:?}"));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn hello_over_tls(&self) -> bool {
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let url = format!("https://127.0.0.1:{}/hello", self.port);
        client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    }

    /// The port the gateway listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `base_url() + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// The temporary folder holding tyk.conf, apps/ and the logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The path of tyk.conf.
    pub fn conf_path(&self) -> &Path {
        &self.conf_path
    }

    /// The app_path folder (`<dir>/apps`).
    pub fn apps_dir(&self) -> PathBuf {
        self.dir.path().join("apps")
    }

    /// The admin secret written into tyk.conf.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The child's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Polls stderr until it contains every one of `needles` (5 s) and returns it; panics
    /// naming the ones missing, with [`Gateway::log`].
    pub async fn wait_stderr<S: AsRef<str>>(&self, needles: &[S]) -> String {
        let since = Instant::now();
        let (log, _) = poll_until(since, Duration::from_secs(5), "stderr", || async move {
            let log = self.stderr();
            let missing: Vec<&str> = needles
                .iter()
                .map(AsRef::as_ref)
                .filter(|n| !log.contains(n))
                .collect();
            if missing.is_empty() {
                Ok(log)
            } else {
                Err(format!("lacks {missing:?}:\n{}", self.log()))
            }
        })
        .await;
        log
    }

    /// Everything the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    /// stdout and stderr, labelled, for failure messages.
    pub fn log(&self) -> String {
        format!(
            "----- tollgate stdout ({}) -----\n{}\n----- tollgate stderr -----\n{}\n-----",
            self.dir.path().display(),
            self.stdout(),
            self.stderr()
        )
    }

    fn signal(&self, sig: rustix::process::Signal) {
        let child = self.child.as_ref().expect("gateway process not running");
        let pid = rustix::process::Pid::from_child(child);
        rustix::process::kill_process(pid, sig).expect("send signal to gateway");
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        self.signal(rustix::process::Signal::TERM);
    }

    /// Sends SIGHUP.
    pub fn sighup(&self) {
        self.signal(rustix::process::Signal::HUP);
    }

    /// The exit status if the process has exited (reaps it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait on gateway"))
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the process and starts it again with the same folder and port,
    /// waiting until it is ready (boxed, like [`GatewayBuilder::start`]).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn_child();
        if let Err(e) = Box::pin(self.wait_ready(READY_TIMEOUT)).await {
            panic!(
                "gateway did not become ready after restart: {e}\n{}",
                self.log()
            );
        }
    }

    /// `GET target` (with `headers`) answers 200 and `up`'s last request
    /// was for `upstream_uri`.
    pub async fn assert_routed(
        &self,
        up: &crate::MockUpstream,
        target: &str,
        headers: &[(&str, &str)],
        upstream_uri: &str,
    ) {
        let r = raw::get(self.addr(), target, headers).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(up.last().uri, upstream_uri);
    }

    /// `GET target` answers 200.
    pub async fn assert_get_ok(&self, target: &str) {
        let r = raw::get(self.addr(), target, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }

    /// `GET target` (with `headers`) is the gateway's 404 `Not Found`.
    pub async fn assert_not_found(&self, target: &str, headers: &[(&str, &str)]) {
        let r = raw::get(self.addr(), target, headers).await;
        raw::assert_tyk_error(&r, 404, "Not Found");
    }

    /// Sends `method target` with `headers` and `body` and asserts the gateway answered Tyk's
    /// error `status` / `message` itself, without a request to `up`.
    pub async fn assert_refused(
        &self,
        up: &crate::MockUpstream,
        (method, target): (&str, &str),
        headers: &[(&str, &str)],
        body: &[u8],
        (status, message): (u16, &str),
    ) {
        let before = up.request_count();
        let r = Box::pin(raw::request(self.addr(), method, target, headers, body)).await;
        raw::assert_tyk_error(&r, status, message);
        assert_eq!(
            up.request_count(),
            before,
            "{method} {target} reached the upstream"
        );
    }

    /// Each `GET` of `targets` is the gateway's 404 `Not Found` and none reaches `up`: what
    /// a definition refused at load looks like to a client.
    pub async fn assert_unserved<S: AsRef<str>>(&self, up: &crate::MockUpstream, targets: &[S]) {
        for target in targets {
            let target = ("GET", target.as_ref());
            self.assert_refused(up, target, &[], b"", (404, "Not Found"))
                .await;
        }
    }

    /// [`Gateway::admin`] `GET path`.
    pub async fn admin_get(&self, path: &str) -> (reqwest::StatusCode, Value) {
        self.admin(reqwest::Method::GET, path, None).await
    }

    /// Sends an admin API request with the `x-tyk-authorization` header set
    /// to the secret; returns status and body parsed as JSON (`Value::Null`
    /// for an empty body; panics if the body is not JSON).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (reqwest::StatusCode, Value) {
        let mut req = crate::client()
            .request(method, self.url(path))
            .header("x-tyk-authorization", &self.secret);
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(serde_json::to_vec(b).expect("serialize body"));
        }
        let resp = req.send().await.expect("admin request");
        let status = resp.status();
        let bytes = resp.bytes().await.expect("admin response body");
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "admin response is not JSON ({e}): {:?}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, json)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log());
        }
        self.kill();
    }
}

fn log_file(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log file")
}

/// A currently free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}
