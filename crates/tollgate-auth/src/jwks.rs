//! A JWKS URL's keys (`jwt_source` naming an `http(s)://` URL): fetched when the API loads,
//! kept for [`KEYS_TTL`] and then refreshed behind the requests that use them, and fetched
//! again early when a token names a `kid` the set does not hold (at most once per
//! [`REFETCH_AFTER_MISS`], so a stream of made-up `kid`s cannot turn into a stream of
//! fetches). Only the configured URL is ever fetched: nothing in a token (`jku`, `x5u`, a
//! `kid` shaped like a path) chooses where keys come from.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::net::TcpStream;
use tollgate_tls::UpstreamTls;
use tollgate_tls::client::ServerName;

use crate::jwt::{SigningMethod, unix_now};

/// How long a fetched key set is used before it is fetched again.
pub const KEYS_TTL: Duration = Duration::from_secs(300);
/// The least time between two fetches caused by an unknown `kid`.
pub const REFETCH_AFTER_MISS: Duration = Duration::from_secs(10);
/// How long one fetch may take, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A key set larger than this is refused.
const MAX_BODY: usize = 1 << 20;

/// One verification key of a set.
pub(crate) struct SetKey {
    pub(crate) kid: Option<String>,
    /// The key's own `alg`, when it names one: the key is then only used for it.
    pub(crate) alg: Option<Algorithm>,
    pub(crate) key: DecodingKey,
}

/// The keys of a JWKS URL.
pub struct Jwks {
    url: Uri,
    tls: Option<(Arc<UpstreamTls>, ServerName<'static>)>,
    method: SigningMethod,
    keys: ArcSwap<Vec<SetKey>>,
    /// Unix seconds of the last fetch that succeeded (0: none yet).
    fetched: AtomicU64,
    /// Unix seconds of the last fetch tried.
    attempted: AtomicU64,
    refreshing: AtomicBool,
    fetch_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.url)
            .field("keys", &self.keys.load().len())
            .finish_non_exhaustive()
    }
}

/// Why a key set could not be had.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The URL cannot be used.
    #[error("`{url}`: {reason}")]
    BadUrl {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The fetch failed.
    #[error("fetching {url}: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}

impl Jwks {
    /// A key set to be fetched from `url`; `tls` is the configuration an `https` URL is
    /// fetched with (the API's upstream TLS settings).
    ///
    /// # Errors
    /// `url` is not an `http://` or `https://` URL with a host, or `https` without `tls`.
    pub fn new(
        url: &str,
        method: SigningMethod,
        tls: Option<Arc<UpstreamTls>>,
    ) -> Result<Self, JwksError> {
        let bad = |reason: &str| JwksError::BadUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.trim().parse().map_err(|_| bad("not a URL"))?;
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let tls = match uri.scheme_str() {
            Some("http") => None,
            Some("https") => {
                let tls = tls.ok_or_else(|| bad("no TLS configuration"))?;
                let name =
                    tollgate_tls::client::server_name(host).map_err(|e| bad(&e.to_string()))?;
                Some((tls, name))
            }
            _ => return Err(bad("only http:// and https:// URLs are fetched")),
        };
        Ok(Self {
            url: uri,
            tls,
            method,
            keys: ArcSwap::from_pointee(Vec::new()),
            fetched: AtomicU64::new(0),
            attempted: AtomicU64::new(0),
            refreshing: AtomicBool::new(false),
            fetch_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The keys to verify a token naming `kid` with: the cached set, fetched first when it
    /// does not hold `kid` (or nothing was fetched yet) and no fetch was tried in the last
    /// [`REFETCH_AFTER_MISS`]; a set older than [`KEYS_TTL`] is used while a background fetch
    /// replaces it.
    pub(crate) async fn keys(self: &Arc<Self>, kid: Option<&str>) -> Arc<Vec<SetKey>> {
        let now = unix_now();
        let keys = self.keys.load_full();
        let known = self.fetched.load(Ordering::Acquire) > 0
            && kid.is_none_or(|k| keys.iter().any(|s| s.kid.as_deref() == Some(k)));
        if known {
            if now.saturating_sub(self.fetched.load(Ordering::Relaxed)) >= KEYS_TTL.as_secs()
                && !self.refreshing.swap(true, Ordering::AcqRel)
            {
                let me = Arc::clone(self);
                tokio::spawn(async move {
                    me.refresh().await;
                    me.refreshing.store(false, Ordering::Release);
                });
            }
            return keys;
        }
        let _one_at_a_time = self.fetch_lock.lock().await;
        let attempted = self.attempted.load(Ordering::Acquire);
        if attempted == 0 || now.saturating_sub(attempted) >= REFETCH_AFTER_MISS.as_secs() {
            self.refresh().await;
        }
        self.keys.load_full()
    }

    /// Forgets the keys (`DELETE /tyk/cache/jwks`): the next token fetches the set again,
    /// and until it has, no key verifies.
    pub fn invalidate(&self) {
        self.keys.store(Arc::new(Vec::new()));
        self.fetched.store(0, Ordering::Release);
        self.attempted.store(0, Ordering::Release);
    }

    /// Fetches the set now (at load, and whenever a request needs it); a failure keeps
    /// the keys fetched before and is logged.
    pub async fn refresh(&self) {
        self.attempted.store(unix_now(), Ordering::Release);
        match tokio::time::timeout(FETCH_TIMEOUT, self.fetch()).await {
            Ok(Ok(set)) => {
                let keys = usable_keys(&set, self.method);
                tracing::debug!(url = %self.url, keys = keys.len(), "JWKS fetched");
                self.keys.store(Arc::new(keys));
                self.fetched.store(unix_now(), Ordering::Release);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "JWKS not refreshed; keeping the keys fetched before")
            }
            Err(_) => {
                tracing::warn!(url = %self.url, "JWKS fetch timed out; keeping the keys fetched before")
            }
        }
    }

    async fn fetch(&self) -> Result<JwkSet, JwksError> {
        let failed = |reason: String| JwksError::Fetch {
            url: self.url.to_string(),
            reason,
        };
        let port = self
            .url
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let host = self.url.host().unwrap_or_default();
        let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| failed(e.to_string()))?;
        let body = match &self.tls {
            None => self.get(tcp).await,
            Some((tls, name)) => {
                let connector = tokio_rustls::TlsConnector::from(Arc::clone(tls.http1_config()));
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| failed(format!("TLS: {e}")))?;
                self.get(stream).await
            }
        }
        .map_err(failed)?;
        serde_json::from_slice(&body).map_err(|e| failed(format!("not a JWK set: {e}")))
    }

    async fn get<T>(&self, io: T) -> Result<Bytes, String>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let path = self
            .url
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        let authority = self
            .url
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let req = http::Request::get(path)
            .header(http::header::HOST, authority)
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .map_err(|e| e.to_string())
    }
}

/// The keys of `set` that can verify tokens signed with `method` (an RSA key for `rsa`, an EC
/// key for `ecdsa`, an `oct` key for `hmac`); the others are left out with a log line.
pub(crate) fn usable_keys(set: &JwkSet, method: SigningMethod) -> Vec<SetKey> {
    set.keys
        .iter()
        .filter_map(|jwk| match usable_key(jwk, method) {
            Ok(key) => Some(key),
            Err(why) => {
                tracing::debug!(kid = ?jwk.common.key_id, why, "JWK left out");
                None
            }
        })
        .collect()
}

fn usable_key(jwk: &Jwk, method: SigningMethod) -> Result<SetKey, &'static str> {
    let fits = matches!(
        (&jwk.algorithm, method),
        (AlgorithmParameters::RSA(_), SigningMethod::Rsa)
            | (AlgorithmParameters::EllipticCurve(_), SigningMethod::Ecdsa)
            | (AlgorithmParameters::OctetKey(_), SigningMethod::Hmac)
    );
    if !fits {
        return Err("key type does not fit jwt_signing_method");
    }
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(a) => Some(
            a.to_string()
                .parse::<Algorithm>()
                .map_err(|_| "not a signing algorithm")?,
        ),
    };
    if alg.is_some_and(|a| !method.allows(a)) {
        return Err("alg does not fit jwt_signing_method");
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| "not a usable key")?;
    Ok(SetKey {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}
