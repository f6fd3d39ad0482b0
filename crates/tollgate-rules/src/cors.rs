//! Tyk's API-definition CORS (`"CORS": {...}`), decided the way the rs/cors library Tyk runs
//! it decides (the 1.8+ line, which answers preflights with 204).
//!
//! [`CorsPolicy::from_json`] compiles the definition's object once, when it loads: origins
//! lower-cased and split into exact names and one-`*` patterns, methods upper-cased, header
//! names checked, and every constant response value (`Access-Control-Expose-Headers`,
//! `Access-Control-Max-Age`, the `Vary` lists) made a [`HeaderValue`] already. The request path
//! then only compares bytes and clones header values: [`CorsPolicy::preflight`] and
//! [`CorsPolicy::actual`] return the [`CorsHeaders`] a response gets, and
//! [`CorsHeaders::apply`] writes them.
//!
//! What rs/cors does, and so what this module does:
//!
//! - Empty lists mean the library defaults: any origin, methods `GET`, `POST`, `HEAD`, request
//!   headers `Origin`, `Accept`, `Content-Type`, `X-Requested-With`. A configured header list
//!   always allows `Origin` too; `*` in the origin or header list allows any.
//! - Origins match case-insensitively; an entry may hold one `*` standing for any run of
//!   characters (`https://*.example.com`).
//! - A preflight is an `OPTIONS` with a non-empty `Access-Control-Request-Method`. Its answer
//!   always carries `Vary: Origin, Access-Control-Request-Method,
//!   Access-Control-Request-Headers`; only when the origin, the method (`OPTIONS` is always
//!   allowed) and every requested header are allowed does it carry `Access-Control-Allow-*`:
//!   the origin (`*` when any origin is allowed), the requested method upper-cased, the
//!   requested headers as sent, `Credentials: true` when on, `Max-Age` when above 0.
//! - Any other request gets `Vary: Origin`, and, when its origin and method are allowed,
//!   `Access-Control-Allow-Origin`, `Access-Control-Expose-Headers` (when configured) and
//!   `Access-Control-Allow-Credentials` (when on).
//! - `*` with `allow_credentials` answers `Access-Control-Allow-Origin: *`, which browsers
//!   refuse for credentialed requests: rs/cors stopped reflecting the origin there (its issue
//!   55), since that lets every site read credentialed responses.
//!
//! Where Tollgate decides on its own, and why, see [`CorsHeaders::apply`] (the upstream's own
//! CORS headers) and [`CorsPolicy::from_json`] (values Tyk would load but that can never
//! match, or fail in Go's JSON decoding).

use http::Method;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};

use crate::RuleError;

/// Methods allowed when `allowed_methods` is empty.
pub const DEFAULT_METHODS: [&str; 3] = ["GET", "POST", "HEAD"];

/// Request headers allowed when `allowed_headers` is empty (lower-case).
pub const DEFAULT_HEADERS: [&str; 4] = ["origin", "accept", "content-type", "x-requested-with"];

/// The `Vary` value of every preflight answer.
const PREFLIGHT_VARY: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// `Access-Control-Allow-Private-Network`: not configurable in Tyk, but an upstream's is
/// removed with the other `Access-Control-Allow-*` headers.
const ALLOW_PRIVATE_NETWORK: HeaderName =
    HeaderName::from_static("access-control-allow-private-network");

/// The response headers the gateway owns once CORS is on (see [`CorsHeaders::apply`]).
const OWNED: [HeaderName; 6] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    ALLOW_PRIVATE_NETWORK,
    header::ACCESS_CONTROL_MAX_AGE,
];

/// One origin pattern with a single `*`: `prefix*suffix`, both lower-case.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wildcard {
    prefix: Box<str>,
    suffix: Box<str>,
}

impl Wildcard {
    /// True when `origin` starts with the prefix and ends with the suffix, the two not
    /// overlapping, ignoring ASCII case.
    fn matches(&self, origin: &[u8]) -> bool {
        let (p, s) = (self.prefix.as_bytes(), self.suffix.as_bytes());
        origin.len() >= p.len() + s.len()
            && origin
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p))
            && origin
                .get(origin.len() - s.len()..)
                .is_some_and(|tail| tail.eq_ignore_ascii_case(s))
    }
}

/// Which origins may make cross-origin requests.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origins {
    /// `*`, or no list.
    Any,
    /// Exact origins and one-`*` patterns, lower-case.
    Listed {
        exact: Box<[Box<str>]>,
        wildcards: Box<[Wildcard]>,
    },
}

impl Origins {
    fn allows(&self, origin: &[u8]) -> bool {
        match self {
            Self::Any => true,
            Self::Listed { exact, wildcards } => {
                exact
                    .iter()
                    .any(|o| o.as_bytes().eq_ignore_ascii_case(origin))
                    || wildcards.iter().any(|w| w.matches(origin))
            }
        }
    }
}

/// An API's compiled `CORS` settings.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    origins: Origins,
    /// Upper-case.
    methods: Box<[Box<str>]>,
    /// `None` = any header (`*`); else lower-case names, `origin` included.
    headers: Option<Box<[HeaderName]>>,
    /// `Access-Control-Expose-Headers`, when configured.
    exposed: Option<HeaderValue>,
    credentials: bool,
    /// `Access-Control-Max-Age`, when above 0.
    max_age: Option<HeaderValue>,
    options_passthrough: bool,
    debug: bool,
}

/// Why a request gets no `Access-Control-Allow-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No (or an empty) `Origin` header: not a cross-origin request.
    NoOrigin,
    /// The origin is not allowed.
    Origin,
    /// The method (the requested one, for a preflight) is not allowed.
    Method,
    /// A requested header is not allowed (preflight only).
    Headers,
}

impl Denial {
    /// A short reason, for the `debug` log.
    pub fn reason(self) -> &'static str {
        match self {
            Self::NoOrigin => "no origin",
            Self::Origin => "origin not allowed",
            Self::Method => "method not allowed",
            Self::Headers => "requested headers not allowed",
        }
    }
}

/// Which `Vary` value a response gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vary {
    /// `Origin` (actual requests).
    Origin,
    /// `Origin, Access-Control-Request-Method, Access-Control-Request-Headers`.
    Preflight,
}

/// The CORS headers one response gets; the outcome of [`CorsPolicy::preflight`] or
/// [`CorsPolicy::actual`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsHeaders {
    vary: Vary,
    allow_origin: Option<HeaderValue>,
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    allow_credentials: bool,
    max_age: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    denied: Option<Denial>,
}

impl CorsHeaders {
    fn vary_only(vary: Vary, denied: Denial) -> Self {
        Self {
            vary,
            allow_origin: None,
            allow_methods: None,
            allow_headers: None,
            allow_credentials: false,
            max_age: None,
            expose_headers: None,
            denied: Some(denied),
        }
    }

    /// Why the request got no `Access-Control-Allow-*` headers; `None` when it got them.
    pub fn denied(&self) -> Option<Denial> {
        self.denied
    }

    /// `Access-Control-Allow-Origin`, when the request was allowed.
    pub fn allow_origin(&self) -> Option<&HeaderValue> {
        self.allow_origin.as_ref()
    }

    /// Writes these headers into a response's.
    ///
    /// With CORS on, the gateway alone decides who may read a response cross-origin: the
    /// `Access-Control-Allow-*` and `Access-Control-Max-Age` headers already there (an
    /// upstream's) are removed first, so an upstream answering `*` cannot widen what the
    /// definition allows, and a response never carries two `Access-Control-Allow-Origin`
    /// (which browsers reject; Tyk, merging Go headers, sends both). An upstream's
    /// `Access-Control-Expose-Headers` stays unless the definition sets its own (it only lets
    /// an allowed page read more of a response). `Vary` is appended to the upstream's, as
    /// Go's `Header.Add` does.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &OWNED {
            headers.remove(name);
        }
        let set = |headers: &mut HeaderMap, name: HeaderName, value: &Option<HeaderValue>| {
            if let Some(v) = value {
                headers.insert(name, v.clone());
            }
        };
        set(
            headers,
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            &self.allow_origin,
        );
        set(
            headers,
            header::ACCESS_CONTROL_ALLOW_METHODS,
            &self.allow_methods,
        );
        set(
            headers,
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            &self.allow_headers,
        );
        if self.allow_credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        set(headers, header::ACCESS_CONTROL_MAX_AGE, &self.max_age);
        set(
            headers,
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            &self.expose_headers,
        );
        headers.append(
            header::VARY,
            HeaderValue::from_static(match self.vary {
                Vary::Origin => "Origin",
                Vary::Preflight => PREFLIGHT_VARY,
            }),
        );
    }
}

/// True for a CORS preflight: `OPTIONS` with a non-empty `Access-Control-Request-Method` (the
/// first one, as Go's `Header.Get` reads it).
pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .is_some_and(|v| !v.is_empty())
}

/// The request's `Origin` (the first, as Go reads it), when non-empty.
fn origin(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers.get(header::ORIGIN).filter(|v| !v.is_empty())
}

/// `value` upper-cased; the same value (no copy) when it has no lower-case letter.
fn upper(value: &HeaderValue) -> HeaderValue {
    if !value.as_bytes().iter().any(u8::is_ascii_lowercase) {
        return value.clone();
    }
    HeaderValue::from_bytes(&value.as_bytes().to_ascii_uppercase())
        .unwrap_or_else(|_| value.clone())
}

impl CorsPolicy {
    /// Compiles the definition's `CORS` object found at `field`; `Ok(None)` when CORS is off
    /// (`null`, absent, or `enable` not true). The other keys are only read when it is on.
    ///
    /// # Errors
    /// The offending key, as `field.key` or `field.key[i]`, for: a `CORS` that is not an
    /// object; a flag that is not `true`/`false` (Go's decoding fails there and Tyk does not
    /// load the definition); a list that is not a list of strings; an origin that is empty,
    /// contains white space or more than one `*` (rs/cors would keep it but it could never
    /// match what the operator meant); a method that is not an HTTP token; a header that is
    /// not a header name; a `max_age` that is negative or not a whole number.
    pub fn from_json(field: &str, raw: &Value) -> Result<Option<Self>, RuleError> {
        let obj = match raw {
            Value::Null => return Ok(None),
            Value::Object(o) => o,
            other => {
                return Err(RuleError::new(
                    field,
                    format!("must be an object, not {other}"),
                ));
            }
        };
        let at = |key: &str| format!("{field}.{key}");
        if !flag(obj, &at("enable"), "enable")? {
            return Ok(None);
        }
        let origins = origins(&at("allowed_origins"), obj.get("allowed_origins"))?;
        let methods = strings(&at("allowed_methods"), obj.get("allowed_methods"))?
            .into_iter()
            .map(|(path, m)| {
                Method::from_bytes(m.as_bytes())
                    .map(|_| m.to_ascii_uppercase().into_boxed_str())
                    .map_err(|_| RuleError::new(path, format!("`{m}` is not an HTTP method")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let methods = if methods.is_empty() {
            DEFAULT_METHODS.iter().map(|m| Box::from(*m)).collect()
        } else {
            methods.into_boxed_slice()
        };
        let headers = allowed_headers(&at("allowed_headers"), obj.get("allowed_headers"))?;
        let exposed = exposed_headers(&at("exposed_headers"), obj.get("exposed_headers"))?;
        let max_age = max_age(&at("max_age"), obj.get("max_age"))?;
        Ok(Some(Self {
            origins,
            methods,
            headers,
            exposed,
            credentials: flag(obj, &at("allow_credentials"), "allow_credentials")?,
            max_age,
            options_passthrough: flag(obj, &at("options_passthrough"), "options_passthrough")?,
            debug: flag(obj, &at("debug"), "debug")?,
        }))
    }

    /// A copy that shares no reference-counted buffer with `self` (one per worker thread, so
    /// cloning a header value on the request path never touches a counter another core uses).
    #[must_use]
    pub fn detached(&self) -> Self {
        let copy = |v: &Option<HeaderValue>| {
            v.as_ref()
                .map(|v| HeaderValue::from_bytes(v.as_bytes()).unwrap_or_else(|_| v.clone()))
        };
        Self {
            exposed: copy(&self.exposed),
            max_age: copy(&self.max_age),
            ..self.clone()
        }
    }

    /// `options_passthrough`: preflights go on through the chain to the upstream instead of
    /// being answered by the gateway.
    pub fn options_passthrough(&self) -> bool {
        self.options_passthrough
    }

    /// `debug`: log each CORS decision.
    pub fn debug(&self) -> bool {
        self.debug
    }

    fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        self.origins.allows(origin.as_bytes())
    }

    fn method_allowed(&self, method: &[u8]) -> bool {
        method.eq_ignore_ascii_case(b"OPTIONS")
            || self
                .methods
                .iter()
                .any(|m| m.as_bytes().eq_ignore_ascii_case(method))
    }

    fn header_allowed(&self, name: &str) -> bool {
        self.headers.as_ref().is_none_or(|allowed| {
            allowed
                .iter()
                .any(|h| h.as_str().eq_ignore_ascii_case(name))
        })
    }

    /// `Access-Control-Allow-Origin` for an allowed `origin`.
    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        match self.origins {
            Origins::Any => HeaderValue::from_static("*"),
            Origins::Listed { .. } => origin.clone(),
        }
    }

    /// The answer to a preflight (see [`is_preflight`]).
    pub fn preflight(&self, headers: &HeaderMap) -> CorsHeaders {
        let deny = |d| CorsHeaders::vary_only(Vary::Preflight, d);
        let Some(origin) = origin(headers) else {
            return deny(Denial::NoOrigin);
        };
        if !self.origin_allowed(origin) {
            return deny(Denial::Origin);
        }
        let Some(method) = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD) else {
            return deny(Denial::Method);
        };
        if !self.method_allowed(method.as_bytes()) {
            return deny(Denial::Method);
        }
        let requested = headers.get_all(header::ACCESS_CONTROL_REQUEST_HEADERS);
        let mut any_requested = false;
        for value in &requested {
            let Ok(text) = value.to_str() else {
                return deny(Denial::Headers);
            };
            for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if !self.header_allowed(name) {
                    return deny(Denial::Headers);
                }
                any_requested = true;
            }
        }
        // Echoed as sent; several header lines (some proxies split them) are joined.
        let allow_headers = if any_requested {
            let mut values = requested.iter();
            match (values.next(), values.next()) {
                (Some(only), None) => Some(only.clone()),
                _ => {
                    let joined: Vec<&str> =
                        requested.iter().filter_map(|v| v.to_str().ok()).collect();
                    HeaderValue::from_str(&joined.join(", ")).ok()
                }
            }
        } else {
            None
        };
        CorsHeaders {
            vary: Vary::Preflight,
            allow_origin: Some(self.allow_origin(origin)),
            allow_methods: Some(upper(method)),
            allow_headers,
            allow_credentials: self.credentials,
            max_age: self.max_age.clone(),
            expose_headers: None,
            denied: None,
        }
    }

    /// The headers of the response to any other request.
    pub fn actual(&self, method: &Method, headers: &HeaderMap) -> CorsHeaders {
        let deny = |d| CorsHeaders::vary_only(Vary::Origin, d);
        let Some(origin) = origin(headers) else {
            return deny(Denial::NoOrigin);
        };
        if !self.origin_allowed(origin) {
            return deny(Denial::Origin);
        }
        if !self.method_allowed(method.as_str().as_bytes()) {
            return deny(Denial::Method);
        }
        CorsHeaders {
            vary: Vary::Origin,
            allow_origin: Some(self.allow_origin(origin)),
            allow_methods: None,
            allow_headers: None,
            allow_credentials: self.credentials,
            max_age: None,
            expose_headers: self.exposed.clone(),
            denied: None,
        }
    }
}

/// A boolean key: absent or `null` is false.
fn flag(obj: &Map<String, Value>, path: &str, key: &str) -> Result<bool, RuleError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(RuleError::new(
            path,
            format!("must be true or false, not {other}"),
        )),
    }
}

/// A list of strings with each entry's path; absent or `null` is empty.
fn strings<'a>(path: &str, raw: Option<&'a Value>) -> Result<Vec<(String, &'a str)>, RuleError> {
    match raw {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let at = format!("{path}[{i}]");
                v.as_str()
                    .map(|s| (at.clone(), s))
                    .ok_or_else(|| RuleError::new(at, format!("must be a string, not {v}")))
            })
            .collect(),
        Some(other) => Err(RuleError::new(
            path,
            format!("must be a list of strings, not {other}"),
        )),
    }
}

fn origins(path: &str, raw: Option<&Value>) -> Result<Origins, RuleError> {
    let entries = strings(path, raw)?;
    let mut any = entries.is_empty();
    let mut exact = Vec::new();
    let mut wildcards = Vec::new();
    for (at, origin) in entries {
        if origin.is_empty() {
            return Err(RuleError::new(at, "an origin must not be empty"));
        }
        if origin.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(RuleError::new(
                at,
                format!("`{origin}` contains white space; an origin never does"),
            ));
        }
        let lower = origin.to_lowercase();
        match lower.split_once('*') {
            None => exact.push(lower.into_boxed_str()),
            Some(("", "")) => any = true,
            Some((_, rest)) if rest.contains('*') => {
                return Err(RuleError::new(
                    at,
                    format!("`{origin}` has more than one `*`; one wildcard is allowed per origin"),
                ));
            }
            Some((prefix, suffix)) => wildcards.push(Wildcard {
                prefix: prefix.into(),
                suffix: suffix.into(),
            }),
        }
    }
    // `*` anywhere in the list allows every origin, whatever else it names (as in rs/cors).
    Ok(if any {
        Origins::Any
    } else {
        Origins::Listed {
            exact: exact.into_boxed_slice(),
            wildcards: wildcards.into_boxed_slice(),
        }
    })
}

fn header_name(at: String, name: &str) -> Result<HeaderName, RuleError> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| RuleError::new(at, format!("`{name}` is not a header name")))
}

fn allowed_headers(
    path: &str,
    raw: Option<&Value>,
) -> Result<Option<Box<[HeaderName]>>, RuleError> {
    let entries = strings(path, raw)?;
    if entries.is_empty() {
        return Ok(Some(
            DEFAULT_HEADERS
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect(),
        ));
    }
    let mut any = false;
    let mut names = Vec::with_capacity(entries.len() + 1);
    for (at, name) in entries {
        if name == "*" {
            any = true;
        } else {
            names.push(header_name(at, name)?);
        }
    }
    // Some browsers always ask for `Origin` in a preflight: rs/cors always allows it.
    names.push(header::ORIGIN);
    Ok((!any).then(|| names.into_boxed_slice()))
}

/// Go's `http.CanonicalHeaderKey` for a valid name: upper-case after each `-` and at the start.
fn canonical(name: &HeaderName) -> String {
    let mut out = String::with_capacity(name.as_str().len());
    let mut up = true;
    for c in name.as_str().chars() {
        out.push(if up { c.to_ascii_uppercase() } else { c });
        up = c == '-';
    }
    out
}

fn exposed_headers(path: &str, raw: Option<&Value>) -> Result<Option<HeaderValue>, RuleError> {
    let names = strings(path, raw)?
        .into_iter()
        .map(|(at, name)| header_name(at, name).map(|n| canonical(&n)))
        .collect::<Result<Vec<_>, _>>()?;
    if names.is_empty() {
        return Ok(None);
    }
    HeaderValue::from_str(&names.join(", "))
        .map(Some)
        .map_err(|e| RuleError::new(path, e.to_string()))
}

fn max_age(path: &str, raw: Option<&Value>) -> Result<Option<HeaderValue>, RuleError> {
    let secs = match raw {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(s) if s >= 0 => s,
            Some(s) => {
                return Err(RuleError::new(
                    path,
                    format!("must not be negative, not {s}"),
                ));
            }
            None => {
                return Err(RuleError::new(
                    path,
                    format!("must be a whole number of seconds, not {n}"),
                ));
            }
        },
        Some(other) => {
            return Err(RuleError::new(
                path,
                format!("must be a number of seconds, not {other}"),
            ));
        }
    };
    Ok((secs > 0).then(|| HeaderValue::from(secs)))
}

#[cfg(test)]
mod tests;
