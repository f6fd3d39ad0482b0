//! The listener's TLS: certificates picked by SNI, swapped on reload.
//!
//! Each handshake gets, from the current certificate set, the entry whose `domain_name` is
//! the requested name, then one whose `*.` wildcard covers it, then the first certificate whose own
//! names (SAN) cover it, else the first certificate configured (what Go, and so Tyk, answers a
//! client that sends no or an unknown name). A reload reads every file again and swaps the whole
//! set at once: connections already open keep the certificate they shook hands with, and a
//! reload that fails to read any file keeps the old set.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::client_auth::AnyClientCert;
use crate::{TlsError, pem, settings};

/// One certificate and its key, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSource {
    /// Where it is configured, for errors (`http_server_options.certificates[0]`).
    pub field: String,
    /// The name it answers (`domain_name`; `*.example.com` covers one label); `None` answers
    /// the names the certificate itself carries.
    pub domain: Option<String>,
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (may be `cert_file` when both are in one file).
    pub key_file: PathBuf,
}

/// What the listener's TLS is built from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerSettings {
    /// Certificates, the first being the default.
    pub certificates: Vec<CertSource>,
    /// Lowest version, Go's number (0 = TLS 1.2).
    pub min_version: u16,
    /// Highest version, Go's number (0 = TLS 1.3).
    pub max_version: u16,
    /// TLS 1.2 suites by Go's names (empty = all rustls offers).
    pub ciphers: Vec<String>,
    /// Offer HTTP/2 by ALPN.
    pub http2: bool,
}

/// The listener's TLS configuration and its swappable certificates.
#[derive(Debug)]
pub struct ServerTls {
    store: Arc<SniStore>,
    config: Arc<ServerConfig>,
    sources: Vec<CertSource>,
    client_auth: Arc<AnyClientCert>,
}

impl ServerTls {
    /// Reads every certificate and builds the configuration.
    ///
    /// # Errors
    /// No certificate configured, a file missing or unreadable, a key that does not match its
    /// certificate, or a version or cipher setting that is no TLS value.
    pub fn new(settings: &ServerSettings) -> Result<Self, TlsError> {
        let certs = Certs::load(&settings.certificates)?;
        let (suites, not_offered) = settings::cipher_suites(
            "http_server_options.ssl_ciphers",
            &settings.ciphers,
            &crate::provider(),
        )?;
        for name in not_offered {
            tracing::warn!(
                cipher = %name,
                "http_server_options.ssl_ciphers: this suite is not offered (rustls implements none of the CBC, RC4, 3DES or static-RSA suites)"
            );
        }
        if settings::below_tls12(settings.min_version) {
            tracing::warn!(
                "http_server_options.min_version asks for TLS below 1.2: such clients are refused; TLS 1.2 is the lowest version offered"
            );
        }
        let versions = settings::protocol_versions(
            "http_server_options.min_version",
            settings.min_version,
            "http_server_options.max_version",
            settings.max_version,
        )?;
        let store = Arc::new(SniStore {
            current: ArcSwap::from_pointee(certs),
        });
        let provider = Arc::new(settings::provider_with(suites));
        let client_auth = Arc::new(AnyClientCert::new(Arc::clone(&provider)));
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|source| TlsError::Rustls {
                field: "http_server_options.ssl_ciphers".into(),
                source,
            })?
            .with_client_cert_verifier(Arc::clone(&client_auth) as Arc<dyn ClientCertVerifier>)
            .with_cert_resolver(Arc::clone(&store) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = if settings.http2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        // Returning clients resume instead of paying for a full handshake.
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(16 * 1024);
        if let Ok(ticketer) = rustls::crypto::ring::Ticketer::new() {
            config.ticketer = ticketer;
        }
        Ok(Self {
            store,
            config: Arc::new(config),
            sources: settings.certificates.clone(),
            client_auth,
        })
    }

    /// Whether handshakes ask clients for a certificate (never requiring one): on while a
    /// loaded API uses mutual TLS, set again on every reload.
    pub fn ask_for_client_certs(&self, on: bool) {
        self.client_auth
            .asking
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The configuration a TLS acceptor is built from.
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }

    /// Reads every certificate file again and swaps them in; returns how many are served.
    ///
    /// # Errors
    /// A file could not be read or does not match: the certificates served so far stay.
    pub fn reload(&self) -> Result<usize, TlsError> {
        let certs = Certs::load(&self.sources)?;
        let n = certs.all.len();
        self.store.current.store(Arc::new(certs));
        Ok(n)
    }
}

/// The certificates of one load.
#[derive(Debug)]
struct Certs {
    /// By exact lower-case `domain_name`.
    named: HashMap<String, Arc<CertifiedKey>>,
    /// By the parent domain of a `*.` `domain_name`.
    wildcards: HashMap<String, Arc<CertifiedKey>>,
    /// Every certificate in configuration order, with its leaf for matching its own names.
    all: Vec<(CertificateDer<'static>, Arc<CertifiedKey>)>,
}

impl Certs {
    fn load(sources: &[CertSource]) -> Result<Self, TlsError> {
        if sources.is_empty() {
            return Err(TlsError::setting(
                "http_server_options.certificates",
                "use_ssl is on but no certificate is configured (certificates or ssl_certificates)",
            ));
        }
        let mut certs = Self {
            named: HashMap::new(),
            wildcards: HashMap::new(),
            all: Vec::with_capacity(sources.len()),
        };
        for src in sources {
            let key = load_pair(src)?;
            if let Some(domain) = src
                .domain
                .as_deref()
                .map(str::trim)
                .filter(|d| !d.is_empty())
            {
                let domain = domain.to_ascii_lowercase();
                match domain.strip_prefix("*.") {
                    Some(parent) => certs.wildcards.insert(parent.to_owned(), Arc::clone(&key)),
                    None => certs.named.insert(domain, Arc::clone(&key)),
                };
            }
            certs.all.push((key.cert[0].clone(), key));
        }
        Ok(certs)
    }

    fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        if let Some(name) = sni {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some(k) = self.named.get(&name) {
                return Arc::clone(k);
            }
            if let Some((_, parent)) = name.split_once('.')
                && let Some(k) = self.wildcards.get(parent)
            {
                return Arc::clone(k);
            }
            if let Ok(server_name) = ServerName::try_from(name.as_str()) {
                for (leaf, key) in &self.all {
                    let covers = webpki::EndEntityCert::try_from(leaf)
                        .is_ok_and(|c| c.verify_is_valid_for_subject_name(&server_name).is_ok());
                    if covers {
                        return Arc::clone(key);
                    }
                }
            }
        }
        Arc::clone(&self.all[0].1)
    }
}

fn load_pair(src: &CertSource) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_field = format!("{}.cert_file", src.field);
    let key_field = format!("{}.key_file", src.field);
    let chain = pem::certificates(&cert_field, &src.cert_file)?;
    let key = pem::private_key(&key_field, &src.key_file)?;
    let signing = crate::provider()
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::Rustls {
            field: key_field,
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| TlsError::KeyMismatch {
        field: src.field.clone(),
        cert: src.cert_file.clone(),
    })?;
    Ok(Arc::new(certified))
}

/// Chooses each handshake's certificate from the current set.
#[derive(Debug)]
struct SniStore {
    current: ArcSwap<Certs>,
}

impl ResolvesServerCert for SniStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().pick(hello.server_name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(dir: &std::path::Path, name: &str, sans: &[&str]) -> CertSource {
        let ck = rcgen::generate_simple_self_signed(
            sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        let cert_file = dir.join(format!("{name}.crt"));
        let key_file = dir.join(format!("{name}.key"));
        std::fs::write(&cert_file, ck.cert.pem()).unwrap();
        std::fs::write(&key_file, ck.signing_key.serialize_pem()).unwrap();
        CertSource {
            field: format!("certificates[{name}]"),
            domain: None,
            cert_file,
            key_file,
        }
    }

    fn leaf_of(k: &CertifiedKey) -> Vec<u8> {
        k.cert[0].to_vec()
    }

    #[test]
    fn sni_picks_domain_wildcard_san_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let a = cert(dir.path(), "a", &["a.test"]);
        let mut b = cert(dir.path(), "b", &["b.test"]);
        b.domain = Some("B.Test".into());
        let mut w = cert(dir.path(), "w", &["x.wild.test"]);
        w.domain = Some("*.wild.test".into());
        let s = cert(dir.path(), "s", &["san.test", "other.test"]);
        let certs = Certs::load(&[a, b, w, s]).unwrap();
        let leaf = |i: usize| certs.all[i].0.to_vec();
        assert_eq!(leaf_of(&certs.pick(Some("b.test"))), leaf(1));
        assert_eq!(leaf_of(&certs.pick(Some("b.test."))), leaf(1));
        assert_eq!(leaf_of(&certs.pick(Some("api.wild.test"))), leaf(2));
        assert_eq!(leaf_of(&certs.pick(Some("other.test"))), leaf(3));
        assert_eq!(leaf_of(&certs.pick(Some("a.test"))), leaf(0));
        assert_eq!(leaf_of(&certs.pick(Some("unknown.test"))), leaf(0));
        assert_eq!(leaf_of(&certs.pick(None)), leaf(0));
        // A wildcard covers one label only.
        assert_eq!(leaf_of(&certs.pick(Some("a.b.wild.test"))), leaf(0));
    }

    #[test]
    fn bad_files_name_field_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = cert(dir.path(), "good", &["good.test"]);
        let other = cert(dir.path(), "other", &["other.test"]);

        let mut missing = good.clone();
        missing.cert_file = dir.path().join("nope.crt");
        let e = Certs::load(&[missing]).unwrap_err().to_string();
        assert!(
            e.starts_with("certificates[good].cert_file: cannot read "),
            "{e}"
        );
        assert!(e.contains("nope.crt"), "{e}");

        let mut mismatched = good.clone();
        mismatched.key_file = other.key_file;
        let e = Certs::load(&[mismatched]).unwrap_err().to_string();
        assert!(e.contains("does not belong"), "{e}");

        let mut no_key = good.clone();
        no_key.key_file = good.cert_file.clone();
        let e = Certs::load(&[no_key]).unwrap_err().to_string();
        assert!(e.contains("holds no PEM private key"), "{e}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not pem at all").unwrap();
        let mut no_cert = good;
        no_cert.cert_file = garbage;
        let e = Certs::load(&[no_cert]).unwrap_err().to_string();
        assert!(e.contains("holds no PEM certificate"), "{e}");

        let e = Certs::load(&[]).unwrap_err().to_string();
        assert!(e.contains("no certificate is configured"), "{e}");
    }

    #[test]
    fn one_file_with_cert_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let src = cert(dir.path(), "c", &["c.test"]);
        let combined = dir.path().join("combined.pem");
        let text = std::fs::read_to_string(&src.cert_file).unwrap()
            + &std::fs::read_to_string(&src.key_file).unwrap();
        std::fs::write(&combined, text).unwrap();
        let settings = ServerSettings {
            certificates: vec![CertSource {
                field: "ssl_certificates[0]".into(),
                domain: None,
                cert_file: combined.clone(),
                key_file: combined,
            }],
            http2: true,
            ..ServerSettings::default()
        };
        let tls = ServerTls::new(&settings).unwrap();
        assert_eq!(tls.config().alpn_protocols[0], b"h2");
        assert_eq!(tls.reload().unwrap(), 1);
    }

    #[test]
    fn failed_reload_keeps_the_served_set() {
        let dir = tempfile::tempdir().unwrap();
        let src = cert(dir.path(), "c", &["c.test"]);
        let settings = ServerSettings {
            certificates: vec![src.clone()],
            ..ServerSettings::default()
        };
        let tls = ServerTls::new(&settings).unwrap();
        let before = tls.store.current.load().all[0].0.to_vec();
        std::fs::write(&src.cert_file, "broken").unwrap();
        assert!(tls.reload().is_err());
        assert_eq!(tls.store.current.load().all[0].0.to_vec(), before);
        let fresh = cert(dir.path(), "c", &["c.test"]);
        assert_eq!(fresh.cert_file, src.cert_file);
        tls.reload().unwrap();
        assert_ne!(tls.store.current.load().all[0].0.to_vec(), before);
    }
}
