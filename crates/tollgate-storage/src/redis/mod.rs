//! The Redis backend: sessions, counters and cluster notifications in a Redis shared by every
//! gateway node (standalone or Redis Cluster), under Tyk's key names
//! ([`crate::keyspace`]) so a Tyk node and a Tollgate node can share one Redis.
//!
//! Every call has a deadline. After a failure the backend stays "down" for a moment and
//! fails at once instead of waiting again, so an unreachable Redis costs the request path
//! nothing but an error answer; the connection reconnects on its own.
//!
//! One file per concern, each adding methods to the one [`RedisStore`]: `connection`
//! (per-thread clients, deadlines, the down mark), `sessions` (key reads and writes),
//! `scripts` and `counters` (rate limits and quotas), `pubsub` (cluster notifications) and
//! `analytics` (Tyk Pump's list).

mod analytics;
mod connection;
mod counters;
mod pubsub;
mod scripts;
mod sessions;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::Script;

pub(crate) use counters::{CountParams, CountSpec, KeyCheck, WindowCache};
pub use scripts::{BUCKETS, EXACT_LOG_LIMIT};

use crate::error::{RedisFailure, StoreError};

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(0);

/// Connection settings, from tyk.conf's `storage`.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` URLs of the nodes (one for standalone).
    pub urls: Vec<String>,
    /// Redis Cluster mode.
    pub cluster: bool,
    /// Deadline for one call.
    pub timeout: Duration,
    /// Signs and verifies cluster notifications.
    pub node_secret: String,
    /// Accept unsigned notifications (`allow_insecure_configs`).
    pub allow_insecure: bool,
    /// With `rediss://` URLs: the CA certificates (PEM) the servers are verified against
    /// instead of the system's (`storage.ca_file`).
    pub ca_pem: Option<Vec<u8>>,
}

impl RedisSettings {
    /// A client for `url`, with the configured CA when there is one.
    pub(crate) fn client(&self, url: &str) -> Result<redis::Client, RedisFailure> {
        Ok(match self.certificates() {
            Some(certs) => redis::Client::build_with_tls(url, certs)?,
            None => redis::Client::open(url)?,
        })
    }

    pub(crate) fn certificates(&self) -> Option<redis::TlsCertificates> {
        self.ca_pem.as_ref().map(|ca| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.clone()),
        })
    }
}

/// The Redis backend.
pub struct RedisStore {
    settings: RedisSettings,
    /// Standalone: ready at once (reconnects by itself). Cluster: made on first use.
    /// Distinguishes stores in the per-thread connection table.
    id: u64,
    /// The standalone client (connections are made per thread from it).
    single: Option<redis::Client>,
    key_script: Script,
    api_script: Script,
    /// Process-relative millis until which the backend counts as down.
    down_until: AtomicU64,
    /// When the last probe of a recovering Redis started (process-relative millis).
    probe_started: AtomicU64,
    origin: Instant,
    salt: AtomicU64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Prepares the backend. Standalone connects lazily (a Redis that is down at start-up
    /// does not stop the gateway: keyless APIs still serve).
    ///
    /// # Errors
    /// The settings are unusable (bad address).
    pub fn new(settings: RedisSettings) -> Result<Arc<Self>, StoreError> {
        let single = if settings.cluster {
            None
        } else {
            let url = settings.urls.first().ok_or(RedisFailure::NoAddress)?;
            Some(settings.client(url)?)
        };
        Ok(Arc::new(Self {
            id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed),
            settings,
            single,
            key_script: Script::new(scripts::KEY_SCRIPT),
            api_script: Script::new(scripts::API_SCRIPT),
            down_until: AtomicU64::new(0),
            probe_started: AtomicU64::new(0),
            origin: Instant::now(),
            salt: AtomicU64::new(0),
        }))
    }

    /// The secret notifications are signed with.
    pub fn node_secret(&self) -> &str {
        &self.settings.node_secret
    }

    /// The settings in use.
    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}
