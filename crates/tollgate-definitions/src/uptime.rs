//! `uptime_tests`: the requests the gateway sends to an API's upstream hosts to learn which
//! are down, validated at load. The checker itself runs in the binary, off the request path;
//! the load balancer skips the hosts it finds down when `proxy.check_host_against_uptime_tests`
//! is on.
//!
//! HTTP and HTTPS checks are built (an `https` check is verified like the API's upstream): Tyk's TCP/TLS checks (`protocol`, `commands`,
//! `enable_proxy_protocol`) and discovering the checks from a service are refused rather than
//! never run, as a check that never runs would never take a host out.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::{HeaderName, HeaderValue, Method};

use crate::DefinitionError;
use crate::model::{ApiDefinition, HostCheck};
use crate::spec::parse_target_at;
use crate::unsupported::is_set;
use crate::{Scheme, Target};

/// How long a check may take when its `timeout` is 0: Tyk's host checker client's timeout.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// The headers the checker sets itself; Go's client ignores them in a request's header map,
/// so Tyk never sends the check's own values either.
const SET_BY_CHECKER: [HeaderName; 4] = [
    http::header::HOST,
    http::header::CONNECTION,
    http::header::CONTENT_LENGTH,
    http::header::TRANSFER_ENCODING,
];

/// One validated `uptime_tests.check_list` entry.
#[derive(Debug, Clone)]
pub struct UptimeCheck {
    /// `url` as written: what identifies the check (two APIs listing the same URL share one
    /// check, as in Tyk) and what uptime analytics records carry.
    pub url: Arc<str>,
    /// Where the check goes; its authority is the host a result is about.
    pub target: Target,
    /// `method` (default `GET`).
    pub method: Method,
    /// `headers`, without the ones the checker sets itself.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `body`, decoded.
    pub body: Arc<[u8]>,
    /// `timeout`, or [`DEFAULT_CHECK_TIMEOUT`].
    pub timeout: Duration,
}

impl UptimeCheck {
    /// The URL without its query, for logs (a query may carry a credential).
    pub fn display_url(&self) -> String {
        let scheme = self.target.scheme.as_str();
        let path = if self.target.base_path.is_empty() {
            "/"
        } else {
            &self.target.base_path
        };
        format!("{scheme}://{}{path}", self.target.authority)
    }
}

/// An API's `uptime_tests`, when it lists any check.
#[derive(Debug, Clone)]
pub struct UptimeTests {
    /// The checks, in order.
    pub checks: Box<[UptimeCheck]>,
    /// `config.expire_utime_after`: how long an uptime analytics record is kept; `None` =
    /// Tyk's 100 years.
    pub analytics_expiry: Option<Duration>,
}

/// The API's `uptime_tests`, or `None` when it lists no check.
///
/// # Errors
/// A field naming a check Tollgate cannot send, or a value that is not what Tyk reads.
pub(crate) fn compile(def: &ApiDefinition) -> Result<Option<UptimeTests>, DefinitionError> {
    let tests = &def.uptime_tests;
    let sd = &tests.config.service_discovery;
    if sd.get("use_discovery_service").is_some_and(is_set) {
        return Err(DefinitionError::new(
            "uptime_tests.config.service_discovery.use_discovery_service",
            "service discovery is not supported yet",
        ));
    }
    if tests.check_list.is_empty() {
        return Ok(None);
    }
    let checks = tests
        .check_list
        .iter()
        .enumerate()
        .map(|(i, c)| check(&format!("uptime_tests.check_list[{i}]"), c))
        .collect::<Result<Box<[_]>, _>>()?;
    let expire = tests.config.expire_utime_after;
    Ok(Some(UptimeTests {
        checks,
        analytics_expiry: u64::try_from(expire)
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs),
    }))
}

fn check(field: &str, c: &HostCheck) -> Result<UptimeCheck, DefinitionError> {
    let at = |key: &str| format!("{field}.{key}");
    match c.protocol.trim().to_ascii_lowercase().as_str() {
        "" | "http" | "https" => {}
        "tcp" | "tls" => {
            return Err(DefinitionError::new(
                at("protocol"),
                "TCP and TLS uptime checks are not supported yet (only HTTP checks)",
            ));
        }
        other => {
            return Err(DefinitionError::new(
                at("protocol"),
                format!("`{other}` is not a protocol uptime checks use (only http)"),
            ));
        }
    }
    if is_set(&c.commands) {
        return Err(DefinitionError::new(
            at("commands"),
            "TCP uptime check commands are not supported yet",
        ));
    }
    if is_set(&c.enable_proxy_protocol) {
        return Err(DefinitionError::new(
            at("enable_proxy_protocol"),
            "PROXY protocol uptime checks are not supported yet",
        ));
    }
    let target = parse_target_at(&at("url"), &c.url)?;
    if target.scheme == Scheme::H2c {
        // The checker speaks HTTP/1.1 (plain or over TLS); a check it cannot make would
        // report a healthy host down.
        return Err(DefinitionError::new(
            at("url"),
            "h2c:// uptime checks are not supported; check the host over http:// or https://",
        ));
    }
    let method = match c.method.trim() {
        "" => Method::GET,
        m => Method::from_bytes(m.as_bytes()).map_err(|_| {
            DefinitionError::new(at("method"), format!("`{m}` is not an HTTP method"))
        })?,
    };
    let mut headers = Vec::with_capacity(c.headers.len());
    for (name, value) in &c.headers {
        let invalid = || DefinitionError::new(at(&format!("headers.{name}")), "not a valid header");
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let value = HeaderValue::from_str(value).map_err(|_| invalid())?;
        if !SET_BY_CHECKER.contains(&name) {
            headers.push((name, value));
        }
    }
    let body = base64::engine::general_purpose::STANDARD
        .decode(c.body.trim())
        .map_err(|e| DefinitionError::new(at("body"), format!("not base64 ({e})")))?;
    Ok(UptimeCheck {
        url: c.url.trim().into(),
        target,
        method,
        headers,
        body: body.into(),
        timeout: match c.timeout {
            0 => DEFAULT_CHECK_TIMEOUT,
            ns => Duration::from_nanos(ns),
        },
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::{ApiSpec, DefinitionError};

    fn spec(uptime: Value) -> Result<ApiSpec, DefinitionError> {
        ApiSpec::from_json(&json!({"api_id": "a", "use_keyless": true,
            "proxy": {"listen_path": "/a/", "target_url": "http://up"},
            "uptime_tests": uptime}))
    }

    #[test]
    fn checks_are_read_as_tyk_writes_them() {
        let s = spec(json!({"check_list": [
            {"url": "http://up:8080/health?probe=1"},
            {"url": "http://other/post", "method": "POST", "timeout": 2_000_000_000u64,
             "headers": {"this": "that", "Host": "ignored.example"},
             "body": "VEhJUyBJUyBBIEJPRFk="}],
            "config": {"expire_utime_after": 3600, "recheck_wait": 12}}))
        .unwrap();
        let u = s.uptime.as_deref().unwrap();
        let [a, b] = &*u.checks else {
            panic!("two checks expected: {u:?}")
        };
        assert_eq!(a.target.authority.as_str(), "up:8080");
        assert_eq!(a.method, http::Method::GET);
        assert_eq!(a.timeout, super::DEFAULT_CHECK_TIMEOUT);
        assert_eq!(&*a.url, "http://up:8080/health?probe=1");
        assert_eq!(a.display_url(), "http://up:8080/health");
        assert_eq!(b.target.authority.as_str(), "other:80");
        assert_eq!(b.method, http::Method::POST);
        assert_eq!(b.timeout, std::time::Duration::from_secs(2));
        assert_eq!(&*b.body, b"THIS IS A BODY");
        // The Host header is the URL's, as with Go's client.
        assert_eq!(b.headers.len(), 1);
        assert_eq!(b.headers[0].0, "this");
        assert_eq!(
            u.analytics_expiry,
            Some(std::time::Duration::from_secs(3600))
        );
    }

    #[test]
    fn no_checks_is_none_and_tyks_skeleton_loads() {
        assert!(spec(json!(null)).unwrap().uptime.is_none());
        let skeleton = json!({"check_list": null, "config": {"expire_utime_after": 0,
            "service_discovery": {"use_discovery_service": false, "query_endpoint": ""},
            "recheck_wait": 0}});
        assert!(spec(skeleton).unwrap().uptime.is_none());
    }

    #[test]
    fn checks_that_cannot_run_are_refused_naming_the_field() {
        let table = [
            (json!({"check_list": [{"url": "up:80"}]}), "url"),
            (json!({"check_list": [{"url": "ftp://up/"}]}), "url"),
            (json!({"check_list": [{"url": ""}]}), "url"),
            (
                json!({"check_list": [{"url": "http://up/", "protocol": "tcp"}]}),
                "protocol",
            ),
            (
                json!({"check_list": [{"url": "http://up/", "protocol": "gopher"}]}),
                "protocol",
            ),
            (
                json!({"check_list": [{"url": "http://up/", "commands": [{"name": "send", "message": "x"}]}]}),
                "commands",
            ),
            (
                json!({"check_list": [{"url": "http://up/", "enable_proxy_protocol": true}]}),
                "enable_proxy_protocol",
            ),
            (
                json!({"check_list": [{"url": "http://up/", "method": "GE T"}]}),
                "method",
            ),
            (
                json!({"check_list": [{"url": "http://up/", "headers": {"a b": "c"}}]}),
                "headers.a b",
            ),
            (
                json!({"check_list": [{"url": "http://up/", "body": "not base64!"}]}),
                "body",
            ),
            (
                json!({"check_list": [{"url": "http://up/", "timeout": -1}]}),
                "timeout",
            ),
        ];
        for (uptime, key) in table {
            let err = spec(uptime.clone()).expect_err(&uptime.to_string());
            assert_eq!(
                err.field,
                format!("uptime_tests.check_list[0].{key}"),
                "{uptime}: {err}"
            );
        }
        let err = spec(json!({"check_list": [{"url": "http://a/"}, {"url": "http://b c/"}]}))
            .unwrap_err();
        assert_eq!(err.field, "uptime_tests.check_list[1].url");
        let err = spec(json!({"config": {"service_discovery": {"use_discovery_service": true}}}))
            .unwrap_err();
        assert_eq!(
            err.field,
            "uptime_tests.config.service_discovery.use_discovery_service"
        );
        let err = spec(json!({"check_list": {"url": "http://a/"}})).unwrap_err();
        assert_eq!(err.field, "uptime_tests.check_list");
    }
}
