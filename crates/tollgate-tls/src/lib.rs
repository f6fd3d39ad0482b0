//! TLS for the gateway, on rustls with the `ring` provider (no OpenSSL).
//!
//! - [`server`]: the listener's certificates (`http_server_options.certificates` /
//!   `ssl_certificates`), chosen per handshake by SNI and swapped on reload without touching
//!   open connections.
//! - [`client`]: the configurations the upstream pool connects with (system roots plus CA
//!   files, skip-verify, versions, ciphers), one per distinct setting, shared by every API that
//!   uses it so their connections and sessions pool together.
//! - [`client_auth`]: client certificates for mutual-TLS APIs (asked for while one is
//!   loaded, judged per API by their SHA-256).
//! - [`settings`]: Tyk's TLS values (versions as Go's numbers, Go cipher names) read into
//!   rustls terms, so a wrong value is refused where it is written.
//!
//! Everything here runs at start, at load or during a handshake; nothing on the request path.

pub mod client;
pub mod client_auth;
mod error;
mod pem;
pub mod server;
pub mod settings;
mod signatures;

pub use client::{ClientSettings, UpstreamTls};
pub use error::TlsError;
pub use server::{CertSource, ServerSettings, ServerTls};

/// Makes the gateway's provider the process default, for libraries that build their own
/// rustls configurations (redis-rs for `rediss://`). Idempotent.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The one crypto provider every configuration here is built with.
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: std::sync::OnceLock<std::sync::Arc<rustls::crypto::CryptoProvider>> =
        std::sync::OnceLock::new();
    std::sync::Arc::clone(
        PROVIDER.get_or_init(|| std::sync::Arc::new(rustls::crypto::ring::default_provider())),
    )
}
