//! The `tollgate` binary: command line, start-up, reload and shutdown wiring.
//!
//! Everything that needs every concrete type lives here; the crates below know only their own
//! part. Start-up errors end the process with one line naming the file, field or address.

mod metrics;
mod reload;
mod uptime;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tollgate_config::{GatewayConfig, StorageSettings};
use tollgate_definitions::pg::PgApiStore;
use tollgate_proxy::server::{self, Workers};
use tollgate_proxy::{Gateway, ReloadHandle};
use tollgate_session::{HashAlgorithm, KeyHashing};
use tollgate_storage::Sessions;

/// An API gateway that speaks Tyk's formats.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about)]
struct Cli {
    /// The gateway config file (tyk.conf JSON).
    #[arg(long, value_name = "FILE", default_value = "tyk.conf")]
    conf: PathBuf,
    /// Check the config and the API definitions, print what would load, and exit.
    #[arg(long)]
    validate: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // redis-rs builds its TLS configurations from the process-wide provider.
    tollgate_tls::install_default_provider();
    // Held until exit: dropping it flushes the log lines still queued.
    let _log_flush = init_logging();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tollgate: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr through a background writer, so a request never waits for the terminal
/// or a pipe (the access log writes a line per request). When the queue is full, lines are
/// dropped rather than blocking traffic.
fn init_logging() -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TOLLGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    if std::env::var("TOLLGATE_LOG_FORMAT").is_ok_and(|v| v == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
    guard
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let config = Arc::new(GatewayConfig::load(&cli.conf)?);
    if config.secret.is_empty() {
        tracing::warn!(
            file = %config.source.display(),
            "`secret` is empty: the admin API (/tyk/) is closed; set a secret to use it"
        );
    }
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the control runtime")?;
    let api_db = match &config.api_db_url {
        Some(url) => {
            let db = Arc::new(PgApiStore::new(url.expose()));
            control.block_on(db.ensure_table()).with_context(|| {
                format!(
                    "config file {}: field `db_app_conf_options.connection_string`",
                    config.source.display()
                )
            })?;
            tracing::info!(
                table = tollgate_definitions::pg::TABLE,
                "API definitions come from PostgreSQL"
            );
            Some(db)
        }
        None => None,
    };
    if cli.validate {
        return validate(&config, api_db.as_deref(), &control);
    }
    let tls = config
        .tls
        .as_ref()
        .map(|settings| {
            tollgate_tls::ServerTls::new(settings)
                .map(Arc::new)
                .with_context(|| format!("config file {}", config.source.display()))
        })
        .transpose()?;
    let mut uptime = uptime::Uptime::new(&config);
    let (routes, uptime_plan) = control
        .block_on(reload::load_routes(&config, api_db.as_deref(), &uptime))
        .context("loading API definitions")?;

    let listeners = server::bind(config.listen, config.worker_threads).with_context(|| {
        format!(
            "cannot listen on {} (listen_address/listen_port)",
            config.listen
        )
    })?;
    let local = listeners
        .first()
        .and_then(|l| l.local_addr().ok())
        .unwrap_or(config.listen);
    // The admin API on its own port (`control_api_port`): bound before anything is served,
    // so a port in use stops the start instead of leaving the admin API unreachable.
    let control_listeners = match config.control_listen {
        Some(addr) => server::bind(addr, config.worker_threads)
            .with_context(|| format!("cannot listen on {addr} (control_api_port)"))?,
        None => Vec::new(),
    };

    let policies = reload::load_policies(&config)?;
    let sessions = control.block_on(open_sessions(&config))?;
    let policy_count = policies.len();
    control.block_on(sessions.set_policies(policies));
    uptime.record_to(sessions.redis_store());

    let (reload_handle, reload_rx) = ReloadHandle::channel();
    let admin = tollgate_admin::Admin::new(reload_handle.clone());
    let (analytics, analytics_writer) = analytics_pipeline(&config, &sessions);
    let gateway = Gateway::new(
        Arc::clone(&config),
        routes,
        admin,
        sessions,
        api_db,
        analytics,
        tls,
    );
    // Signal handlers go in before the port serves, so an early SIGHUP/SIGTERM is never
    // taken by the default action (which would kill the process).
    let signals = {
        let _rt = control.enter();
        Signals::install()?
    };
    let metrics_listener = match (&config.prometheus, &gateway.metrics) {
        (Some((addr, path)), Some(metrics)) => {
            let listener = std::net::TcpListener::bind(addr).with_context(|| {
                format!("cannot listen on {addr} (prometheus.listen_address/listen_port)")
            })?;
            listener
                .set_nonblocking(true)
                .context("configuring the metrics listener")?;
            tracing::info!(address = %addr, path = %path, "Prometheus metrics");
            Some((listener, path.clone(), Arc::clone(metrics)))
        }
        _ => None,
    };
    let workers = Workers::start(&gateway, listeners, control_listeners)
        .context("starting worker threads")?;
    tracing::info!(
        address = %local,
        control_address = config.control_listen.map(|a| a.to_string()),
        tls = gateway.tls.is_some(),
        workers = config.worker_threads,
        apis = gateway.routes().apis().len(),
        policies = policy_count,
        cached_keys = gateway.sessions.cached_len(),
        "tollgate listening"
    );

    control.block_on(async {
        // The checker runs on this runtime, off the workers' threads.
        uptime.commit(uptime_plan);
        tokio::spawn(reload::reloader(Arc::clone(&gateway), reload_rx, uptime));
        tokio::spawn(flush_counters(Arc::clone(&gateway)));
        if let Some(writer) = analytics_writer {
            tokio::spawn(writer);
        }
        if let Some((listener, path, metrics)) = metrics_listener {
            tokio::spawn(metrics::serve(
                listener,
                path,
                metrics,
                gateway.analytics.clone(),
            ));
        }
        let on_group_reload = reload_handle.clone();
        tokio::spawn(tollgate_storage::notify::listen(
            Arc::clone(&gateway.sessions),
            move || {
                on_group_reload.request("cluster notification");
            },
        ));
        signals.wait_for_shutdown(&reload_handle).await
    })?;

    tracing::info!(grace = ?config.graceful_shutdown_timeout, "shutting down: draining in-flight requests");
    workers.shutdown_and_join();
    if let Err(e) = control.block_on(gateway.sessions.counters().flush()) {
        tracing::warn!(error = %e, "writing quota counters at shutdown failed");
    }
    tracing::info!("stopped");
    Ok(())
}

/// `--validate`: prints every definition that would be skipped (file or row, field, why) and
/// fails when there is one, so a deploy check catches a refused API before traffic does.
fn validate(
    config: &GatewayConfig,
    db: Option<&PgApiStore>,
    control: &tokio::runtime::Runtime,
) -> anyhow::Result<()> {
    let outcome = match db {
        Some(db) => tollgate_definitions::load_rows(
            control
                .block_on(db.load())
                .context("loading API definitions")?,
            &reload::load_options(config),
        ),
        None => tollgate_definitions::load_dir(&config.app_path, &reload::load_options(config))
            .with_context(|| format!("cannot read {}", config.app_path.display()))?,
    };
    for err in &outcome.errors {
        eprintln!("tollgate: would skip {err}");
    }
    if !outcome.errors.is_empty() {
        anyhow::bail!(
            "{} API definition(s) would be skipped, {} would load",
            outcome.errors.len(),
            outcome.apis.len()
        );
    }
    eprintln!(
        "config {} and {} API definition(s) are valid",
        config.source.display(),
        outcome.apis.len()
    );
    Ok(())
}

/// Analytics records go to Tyk's Redis list (where Tyk Pump reads them) when
/// `enable_analytics` is on and keys live in Redis; the embedded store has no sink yet.
fn analytics_pipeline(
    config: &GatewayConfig,
    sessions: &Sessions,
) -> (
    Option<Arc<tollgate_analytics::AnalyticsQueue>>,
    Option<impl std::future::Future<Output = ()> + Send + 'static>,
) {
    if !config.enable_analytics {
        return (None, None);
    }
    let opts = &config.file.analytics_config;
    let capacity = opts.records_buffer_size.unwrap_or(10_000).max(1000);
    let expire = opts
        .storage_expiration_time
        .filter(|s| *s > 0)
        .unwrap_or(60);
    let (queue, rx) = tollgate_analytics::AnalyticsQueue::new(capacity);
    let postgres = (opts.kind == "postgres").then(|| opts.connection_string.expose().to_owned());
    let sink = match (postgres, sessions.redis_store().cloned()) {
        (Some(url), _) => {
            tracing::info!(
                table = tollgate_analytics::pg::TABLE,
                "analytics records go to PostgreSQL"
            );
            AnalyticsSink::Postgres(tollgate_analytics::pg::PgSink::new(url))
        }
        (None, Some(redis)) => AnalyticsSink::Redis { redis, expire },
        (None, None) => {
            tracing::info!(
                "analytics: embedded store, records are kept as local hourly aggregates"
            );
            AnalyticsSink::Local
        }
    };
    let writer = tollgate_analytics::run_writer(Arc::clone(&queue), rx, sink);
    (Some(queue), Some(writer))
}

/// Where analytics batches go (the writer also keeps local aggregates of every record).
enum AnalyticsSink {
    /// Tyk's Redis list, for Tyk Pump.
    Redis {
        redis: Arc<tollgate_storage::redis::RedisStore>,
        expire: u64,
    },
    /// Rows in PostgreSQL (`analytics_config.type: "postgres"`).
    Postgres(tollgate_analytics::pg::PgSink),
    /// Nowhere else: the local aggregates are all (embedded store).
    Local,
}

impl tollgate_analytics::Sink for AnalyticsSink {
    async fn write(
        &self,
        batch: &[tollgate_analytics::Record],
    ) -> Result<(), tollgate_analytics::SinkError> {
        match self {
            Self::Redis { redis, expire } => redis
                .push_analytics(
                    tollgate_analytics::REDIS_LIST,
                    tollgate_analytics::encode_batch(batch),
                    *expire,
                )
                .await
                .map_err(|e| tollgate_analytics::SinkError::Other(Box::new(e))),
            Self::Postgres(pg) => pg.write(batch).await,
            Self::Local => Ok(()),
        }
    }
}

/// Opens the configured session store.
async fn open_sessions(config: &GatewayConfig) -> anyhow::Result<Arc<Sessions>> {
    let hashing = KeyHashing {
        hash_keys: config.keys.hash_keys,
        algorithm: HashAlgorithm::from_config(&config.keys.hash_key_function),
    };
    match &config.storage {
        StorageSettings::Embedded { path } => Sessions::open_embedded(path, hashing)
            .await
            .with_context(|| {
                format!(
                    "opening the embedded store (storage.path = {})",
                    path.display()
                )
            }),
        StorageSettings::Redis(conf) => {
            let settings = redis_settings(config, conf)?;
            tracing::info!(nodes = ?settings.urls.iter().map(|u| redact(u)).collect::<Vec<_>>(), cluster = settings.cluster, "using Redis for keys and counters");
            let store = tollgate_storage::redis::RedisStore::new(settings).with_context(|| {
                format!("config file {}: field `storage`", config.source.display())
            })?;
            Ok(Sessions::redis(store, hashing))
        }
    }
}

/// Redis connection settings from tyk.conf's `storage`.
fn redis_settings(
    config: &GatewayConfig,
    conf: &tollgate_config::StorageConf,
) -> anyhow::Result<tollgate_storage::redis::RedisSettings> {
    let mut hosts: Vec<String> = conf.addrs.clone();
    if hosts.is_empty() {
        let host = if conf.host.is_empty() {
            "localhost"
        } else {
            conf.host.as_str()
        };
        hosts.push(format!("{host}:{}", conf.port.unwrap_or(6379)));
    }
    let auth = match (conf.username.as_str(), conf.password.expose()) {
        (_, "") => String::new(),
        (user, pass) => format!("{}:{}@", percent(user), percent(pass)),
    };
    let db = if conf.enable_cluster || conf.database == 0 {
        String::new()
    } else {
        format!("/{}", conf.database)
    };
    // TLS: `rediss://`; `#insecure` is redis-rs' switch for not verifying the server.
    let (scheme, fragment) = match (conf.use_ssl, conf.ssl_insecure_skip_verify) {
        (false, _) => ("redis", ""),
        (true, false) => ("rediss", ""),
        (true, true) => ("rediss", "#insecure"),
    };
    let ca_pem = match conf.ca_file.trim() {
        "" => None,
        _ if !conf.use_ssl => None,
        file => {
            let path = config
                .source
                .parent()
                .map_or_else(|| std::path::PathBuf::from(file), |dir| dir.join(file));
            Some(std::fs::read(&path).with_context(|| {
                format!(
                    "config file {}: field `storage.ca_file`: cannot read {}",
                    config.source.display(),
                    path.display()
                )
            })?)
        }
    };
    Ok(tollgate_storage::redis::RedisSettings {
        urls: hosts
            .iter()
            .map(|h| format!("{scheme}://{auth}{h}{db}{fragment}"))
            .collect(),
        ca_pem,
        cluster: conf.enable_cluster,
        timeout: std::time::Duration::from_secs(conf.timeout.filter(|t| *t > 0).unwrap_or(2)),
        node_secret: config.file.node_secret.expose().to_owned(),
        allow_insecure: config.file.allow_insecure_configs,
    })
}

/// Percent-encodes a URL userinfo part.
fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A Redis URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

/// The process signals the gateway acts on.
struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers (inside a runtime context).
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// Serves SIGHUP as a reload until SIGTERM or SIGINT arrives.
    async fn wait_for_shutdown(mut self, reload: &ReloadHandle) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                _ = self.hup.recv() => reload.request("SIGHUP"),
                _ = self.term.recv() => return Ok(()),
                _ = self.int.recv() => return Ok(()),
            }
        }
    }
}

/// Writes quota counters behind to the store (embedded backend) until the process ends.
async fn flush_counters(gateway: Arc<Gateway>) {
    let mut tick = tokio::time::interval(tollgate_storage::FLUSH_INTERVAL);
    loop {
        tick.tick().await;
        if let Err(e) = gateway.sessions.counters().flush().await {
            tracing::warn!(error = %e, "writing quota counters failed; retrying");
        }
    }
}
