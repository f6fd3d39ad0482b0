//! Test support for Tollgate's black-box tests.
//!
//! - [`Gateway`]: writes a temporary `tyk.conf` plus an `apps/` folder of API
//!   definitions, starts the real `tollgate` binary on a free port and waits
//!   until `GET /hello` answers.
//! - [`MockUpstream`]: an in-process HTTP/1.1 upstream that records every
//!   request it receives and answers as configured per path prefix.
//! - [`raw`]: a raw TCP client to send exact bytes and read exact responses.
//! - [`redis`]: a private `redis-server` (or Redis Cluster) per test, and
//!   gateway nodes sharing it.
//! - [`api_def`] / [`tyk_conf`]: JSON builders for Tyk-format configuration.
//! - [`keys`]: keyed APIs, sessions, the keys REST API and keyed requests.
//! - [`limits`]: rate-limit and quota sessions and refusals.
//! - [`traffic`]: load over several nodes and polling for an answer.
//! - [`pg`]: a private PostgreSQL database per test.
//! - [`encoding`]: base64, percent-encoding, query and cookie pairs.
//! - [`tls`]: a test CA issuing certificates, TLS configurations and HTTPS clients.
//!
//! Test support code: failing loudly (panicking with context) is the
//! intended way to report a broken precondition to the calling test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod defs;
pub mod encoding;
mod gateway;
pub mod jwt;
pub mod keys;
pub mod limits;
pub mod pg;
pub mod raw;
pub mod redis;
pub mod tls;
pub mod traffic;
mod upstream;

pub use defs::{api_def, api_with, extended_version, merge_json, tyk_conf};
pub use gateway::{Gateway, GatewayBuilder, READY_TIMEOUT, TEST_SECRET, free_port};
pub use raw::{
    Exchange, RawClient, RawResponse, assert_gateway_error_shape, assert_tyk_error, exchange,
};
pub use upstream::{MockUpstream, Recorded, Reply, checksum, pattern_bytes, refused_port};

/// A `GatewayBuilder` for the `tollgate` binary of the calling crate.
///
/// Expands to `Gateway::builder(env!("CARGO_BIN_EXE_tollgate"))`, so it only
/// works in integration tests of the crate that defines the `tollgate` binary.
#[macro_export]
macro_rules! gateway {
    () => {
        $crate::Gateway::builder(env!("CARGO_BIN_EXE_tollgate"))
    };
}

/// Starts (a future of) a gateway of the calling crate's `tollgate`
/// binary with one keyless API: `gateway!().with_api(api_id, listen_path,
/// target_url).start()` (see [`GatewayBuilder::with_api`]).
#[macro_export]
macro_rules! start_with_api {
    ($api_id:expr, $listen_path:expr, $target_url:expr $(,)?) => {
        $crate::gateway!()
            .with_api($api_id, $listen_path, $target_url)
            .start()
    };
}

/// A reqwest client for tests: no system proxy, no automatic redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("build reqwest client")
}

/// `GET url` through `client` with `headers`; returns the status (panics
/// when there is no response).
pub async fn get_status(client: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = client.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    resp.status().as_u16()
}

/// Asserts a finished command (`shown` as run) succeeded; returns its
/// stdout.
pub(crate) fn command_stdout(shown: &str, out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{shown} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The exact body Tyk (and Tollgate) generate for a gateway error.
pub fn tyk_error_body(message: &str) -> String {
    format!("{{\n    \"error\": \"{message}\"\n}}")
}
