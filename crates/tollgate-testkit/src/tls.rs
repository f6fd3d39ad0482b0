//! Certificates made in the test: a CA that issues leaf certificates for given names, written
//! as PEM files for the gateway and turned into rustls configurations for mock upstreams.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A certificate authority of the test's own.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A leaf certificate and its key.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// PEM certificate.
    pub cert_pem: String,
    /// PEM private key (PKCS#8).
    pub key_pem: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new("Tollgate Test CA")
    }
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Issues a certificate for `names` (DNS names or IP addresses).
    pub fn issue(&self, names: &[&str]) -> Leaf {
        self.issue_with(names, |_| {})
    }

    /// Issues a certificate for `names` that expired in 2021.
    pub fn issue_expired(&self, names: &[&str]) -> Leaf {
        self.issue_with(names, |params| {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
    }

    fn issue_with(&self, names: &[&str], edit: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        edit(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// Writes the CA certificate to `dir/name` and returns the path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.pem).unwrap();
        path
    }

    /// An HTTPS client that trusts this CA only (HTTP/1.1 and HTTP/2 by ALPN).
    pub fn client(&self) -> reqwest::Client {
        self.client_builder().build().unwrap()
    }

    /// A raw TLS connection to `addr` asking for `name` (SNI), trusting this CA only and
    /// offering HTTP/1.1 alone: for exact bytes over TLS (upgrades, tunnels).
    pub async fn connect(
        &self,
        addr: std::net::SocketAddr,
        name: &str,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        let ca: CertificateDer<'static> =
            rustls::pki_types::pem::PemObject::from_pem_slice(self.pem.as_bytes()).unwrap();
        roots.add(ca).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap()
    }

    /// A client builder that trusts this CA only, for more settings.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.pem.as_bytes()).unwrap())
            .tls_built_in_root_certs(false)
            .timeout(std::time::Duration::from_secs(10))
    }
}

impl Leaf {
    /// Writes `<name>.crt` and `<name>.key` into `dir`; returns both paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }

    /// A server configuration presenting this certificate (for [`crate::MockUpstream::start_tls`]).
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let cert = CertificateDer::from(self.der.clone());
        let key = rustls::pki_types::pem::PemObject::from_pem_slice(self.key_pem.as_bytes())
            .map(|k: PrivatePkcs8KeyDer<'static>| PrivateKeyDer::from(k))
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
        Arc::new(config)
    }

    /// [`Leaf::server_config`] offering HTTP/2 by ALPN (`h2`, then `http/1.1`).
    pub fn server_config_h2(&self) -> Arc<rustls::ServerConfig> {
        let mut config = (*self.server_config()).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}
