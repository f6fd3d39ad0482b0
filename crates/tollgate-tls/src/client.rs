//! The configurations the upstream pool connects to `https://` targets with.
//!
//! Certificates are verified against the system's roots (read once per process; the
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` variables point elsewhere, as for Go) plus the gateway's
//! `proxy_ssl_ca_cert` files, and the target's host name (SNI is that host). Each distinct
//! setting gets one configuration, built once and shared, with an id the pool keys connections
//! by: APIs with the same settings share connections and TLS session tickets.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
pub use rustls_pki_types::ServerName;
use rustls_pki_types::{CertificateDer, InvalidDnsNameError, UnixTime};

use crate::signatures::HandshakeSignatures;
use crate::{TlsError, pem, settings};

/// Gateway-wide upstream TLS settings (`proxy_ssl_*`), or their merge with an API's
/// `proxy.transport`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ClientSettings {
    /// Accept any certificate (`proxy_ssl_insecure_skip_verify`).
    pub insecure_skip_verify: bool,
    /// Lowest version, Go's number (0 = TLS 1.2).
    pub min_version: u16,
    /// Highest version, Go's number (0 = TLS 1.3).
    pub max_version: u16,
    /// TLS 1.2 suites by Go's names (empty = all rustls offers).
    pub ciphers: Vec<String>,
    /// Extra trusted CA files, PEM (`proxy_ssl_ca_cert`, a Tollgate extension).
    pub ca_files: Vec<PathBuf>,
    /// Offer `h2` by ALPN (`proxy_enable_http2`); an upstream that picks it gets HTTP/2.
    pub http2: bool,
}

/// An API's own `proxy.transport` TLS settings; unset parts fall back to the gateway's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiTransport {
    /// `ssl_insecure_skip_verify`: on here or gateway-wide skips verification (as in Tyk).
    pub insecure_skip_verify: bool,
    /// `ssl_min_version` (0 = the gateway's).
    pub min_version: u16,
    /// `ssl_max_version` (0 = the gateway's).
    pub max_version: u16,
    /// `ssl_ciphers` (empty = the gateway's).
    pub ciphers: Vec<String>,
}

impl ClientSettings {
    /// These settings with an API's own on top, as Tyk merges them.
    pub fn with_api(&self, api: &ApiTransport) -> Self {
        let pick = |own: u16, gw: u16| if own != 0 { own } else { gw };
        Self {
            insecure_skip_verify: self.insecure_skip_verify || api.insecure_skip_verify,
            min_version: pick(api.min_version, self.min_version),
            max_version: pick(api.max_version, self.max_version),
            ciphers: if api.ciphers.is_empty() {
                self.ciphers.clone()
            } else {
                api.ciphers.clone()
            },
            ca_files: self.ca_files.clone(),
            http2: self.http2,
        }
    }
}

/// One upstream TLS configuration.
#[derive(Debug)]
pub struct UpstreamTls {
    id: u64,
    config: Arc<ClientConfig>,
    /// The same, offering HTTP/1.1 only: a connection that may switch protocols (a WebSocket)
    /// must not end up speaking HTTP/2.
    http1_config: Arc<ClientConfig>,
    skips_verification: bool,
}

impl UpstreamTls {
    /// The configuration for `settings`, built on first use and shared afterwards.
    ///
    /// # Errors
    /// A CA file cannot be read or holds no certificate, or a version or cipher setting is no
    /// TLS value.
    pub fn get(settings: &ClientSettings) -> Result<Arc<Self>, TlsError> {
        static BUILT: OnceLock<Mutex<HashMap<ClientSettings, Arc<UpstreamTls>>>> = OnceLock::new();
        let built = BUILT.get_or_init(Mutex::default);
        // Only taken while definitions load, never on the request path.
        if let Some(found) = built
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(settings)
        {
            return Ok(Arc::clone(found));
        }
        let made = Arc::new(Self::build(settings)?);
        let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Arc::clone(
            built.entry(settings.clone()).or_insert_with(|| made),
        ))
    }

    fn build(settings: &ClientSettings) -> Result<Self, TlsError> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        let (suites, _) =
            settings::cipher_suites("proxy_ssl_ciphers", &settings.ciphers, &crate::provider())?;
        let versions = settings::protocol_versions(
            "proxy_ssl_min_version",
            settings.min_version,
            "proxy_ssl_max_version",
            settings.max_version,
        )?;
        let provider = Arc::new(settings::provider_with(suites));
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&versions)
            .map_err(|source| TlsError::Rustls {
                field: "proxy_ssl_ciphers".into(),
                source,
            })?;
        let mut config = if settings.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate {
                    signatures: HandshakeSignatures(provider),
                }))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(roots(&settings.ca_files)?)
                .with_no_client_auth()
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http1_config = Arc::new(config.clone());
        let config = if settings.http2 {
            config.alpn_protocols.insert(0, b"h2".to_vec());
            Arc::new(config)
        } else {
            Arc::clone(&http1_config)
        };
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            config,
            http1_config,
            skips_verification: settings.insecure_skip_verify,
        })
    }

    /// Tells configurations apart: connections made with one are pooled under its id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The rustls configuration to connect with (offering `h2` when the settings ask for it).
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// Whether connections offer `h2` (`proxy_enable_http2`).
    pub fn offers_http2(&self) -> bool {
        !Arc::ptr_eq(&self.config, &self.http1_config)
    }

    /// The configuration for a connection that must speak HTTP/1.1 (a protocol upgrade).
    pub fn http1_config(&self) -> &Arc<ClientConfig> {
        &self.http1_config
    }

    /// Whether certificates go unchecked (`insecure_skip_verify`).
    pub fn skips_verification(&self) -> bool {
        self.skips_verification
    }
}

/// The name to verify the upstream's certificate against and to send as SNI: the target's
/// host, an IP address included (`[::1]` without its brackets).
///
/// # Errors
/// The host is neither a DNS name nor an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, InvalidDnsNameError> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(bare.to_owned())
}

/// The system's trusted roots, read once per process.
fn system_roots() -> &'static [CertificateDer<'static>] {
    static SYSTEM: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    SYSTEM.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!(error = %e, "a system certificate could not be read");
        }
        if found.certs.is_empty() {
            tracing::warn!(
                "no system CA certificates found: https upstreams verify only against proxy_ssl_ca_cert"
            );
        }
        found.certs
    })
}

fn roots(ca_files: &[PathBuf]) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    // A system store often holds a few certificates webpki cannot use; skipping them is what
    // every other client does too.
    let (_, _ignored) = store.add_parsable_certificates(system_roots().iter().cloned());
    for (i, path) in ca_files.iter().enumerate() {
        let field = format!("proxy_ssl_ca_cert[{i}]");
        for cert in pem::certificates(&field, path)? {
            store.add(cert).map_err(|source| TlsError::Rustls {
                field: field.clone(),
                source,
            })?;
        }
    }
    Ok(store)
}

/// `insecure_skip_verify`: any certificate for any name is accepted. The handshake's own
/// signatures are still checked, so the peer at least holds the key it presented.
#[derive(Debug)]
struct AnyCertificate {
    signatures: HandshakeSignatures,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.signatures.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.signatures.schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_settings_on_top_of_the_gateway() {
        let gw = ClientSettings {
            insecure_skip_verify: false,
            min_version: 771,
            max_version: 0,
            ciphers: vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into()],
            ca_files: vec!["/ca.pem".into()],
            http2: true,
        };
        let merged = gw.with_api(&ApiTransport {
            insecure_skip_verify: true,
            min_version: 772,
            ..ApiTransport::default()
        });
        assert!(merged.insecure_skip_verify);
        assert_eq!(merged.min_version, 772);
        assert_eq!(merged.ciphers, gw.ciphers);
        assert_eq!(merged.ca_files, gw.ca_files);
        assert_eq!(gw.with_api(&ApiTransport::default()), gw);
    }

    #[test]
    fn same_settings_share_one_configuration() {
        let a = UpstreamTls::get(&ClientSettings::default()).unwrap();
        let b = UpstreamTls::get(&ClientSettings::default()).unwrap();
        assert_eq!(a.id(), b.id());
        let skip = UpstreamTls::get(&ClientSettings {
            insecure_skip_verify: true,
            ..ClientSettings::default()
        })
        .unwrap();
        assert_ne!(a.id(), skip.id());
        assert!(skip.skips_verification() && !a.skips_verification());
    }

    #[test]
    fn http2_is_offered_by_alpn_except_for_upgrades() {
        let plain = UpstreamTls::get(&ClientSettings::default()).unwrap();
        assert_eq!(plain.config().alpn_protocols, [b"http/1.1".to_vec()]);
        let h2 = UpstreamTls::get(&ClientSettings {
            http2: true,
            ..ClientSettings::default()
        })
        .unwrap();
        assert_ne!(plain.id(), h2.id());
        assert_eq!(
            h2.config().alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(h2.http1_config().alpn_protocols, [b"http/1.1".to_vec()]);
        assert!(h2.offers_http2() && !plain.offers_http2());
    }

    #[test]
    fn ca_file_errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = UpstreamTls::get(&ClientSettings {
            ca_files: vec![dir.path().join("missing.pem"), empty.clone()],
            ..ClientSettings::default()
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("proxy_ssl_ca_cert[0]: cannot read"),
            "{e}"
        );
        let e = UpstreamTls::get(&ClientSettings {
            ca_files: vec![empty],
            ..ClientSettings::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
    }

    #[test]
    fn server_names_from_hosts() {
        assert!(matches!(
            server_name("api.example.com").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(matches!(
            server_name("[::1]").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("127.0.0.1").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(server_name("bad host").is_err());
    }
}
