//! The validated API definition the proxy compiles routes from.

use std::borrow::Cow;
use std::sync::Arc;

use http::HeaderValue;
use http::header::HeaderName;
use http::uri::{Authority, Uri};
use tollgate_rules::cors::CorsPolicy;

use tollgate_rules::expiry::Expiry;
use tollgate_rules::rewrite::UrlRewrite;
use tollgate_rules::version::VersionRules;
use tollgate_tls::client::{ClientSettings, ServerName, UpstreamTls};

use crate::versioning::{ApiVersion, DefaultVersion, Versioning};

use crate::ip::IpList;
use crate::model::{ApiDefinition, AuthConf};
use crate::unsupported::is_set;
use crate::uptime::UptimeTests;
use crate::{DefinitionError, LoadOptions};

/// Where a request's credential is read from, in Tyk's order: header, then query parameter,
/// then cookie (each later source overrides when present and non-empty).
#[derive(Debug, Clone)]
pub struct CredentialSource {
    /// Header to read (`None` when `disable_header`).
    pub header: Option<HeaderName>,
    /// Query parameter to read.
    pub param: Option<String>,
    /// Cookie to read.
    pub cookie: Option<String>,
}

/// How an API authenticates requests.
#[derive(Debug, Clone)]
pub enum AuthMode {
    /// No authentication.
    Keyless,
    /// Auth token (Tyk's standard auth).
    Token(CredentialSource),
    /// Basic auth; the realm is the API name.
    Basic(CredentialSource),
    /// JWT (`enable_jwt`): the token's source and how it is verified.
    Jwt(CredentialSource, Arc<tollgate_auth::JwtSettings>),
    /// HMAC request signatures (`enable_signature_checking`).
    Hmac(CredentialSource, HmacRules),
    /// Mutual TLS alone (`use_mutual_tls_auth` with no other method): the client certificate,
    /// checked against [`ApiSpec::client_certs`], is the whole authentication; no key.
    Certificate,
    /// Certificate-bound keys (`auth.use_certificate` on an auth-token API): the client
    /// certificate's SHA-256 names the key; no token is read.
    CertificateKey,
}

/// What an HMAC-signed API accepts.
#[derive(Debug, Clone)]
pub struct HmacRules {
    /// `hmac_allowed_algorithms` (empty: every HMAC algorithm).
    pub algorithms: Vec<tollgate_auth::hmac::Algorithm>,
    /// `hmac_allowed_clock_skew` in milliseconds (≤ 0: any date).
    pub clock_skew_ms: f64,
}

/// Upstream scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
    /// HTTP/2 without TLS, spoken from the first byte (`h2c://`, Tyk's scheme for gRPC
    /// services that take no TLS).
    H2c,
}

impl Scheme {
    /// As written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
            Self::H2c => "h2c",
        }
    }
}

/// Where an API's traffic goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http`, `https` or `h2c`.
    pub scheme: Scheme,
    /// `host:port`, port always explicit, used as the upstream pool key.
    pub authority: Authority,
    /// The Host header the upstream expects (port omitted when it is the scheme's default).
    pub host_header: HeaderValue,
    /// Path prefix of `target_url`, without query; may be empty.
    pub base_path: String,
    /// Query of `target_url`, prepended to the request's.
    pub base_query: Option<String>,
    /// For `https`: the TLS configuration to connect with (the gateway's `proxy_ssl_*` under
    /// the API's `proxy.transport`), shared by every target with the same settings.
    pub tls: Option<Arc<UpstreamTls>>,
    /// For `https`: the name the certificate is checked against and sent as SNI (the
    /// target's host).
    pub server_name: Option<ServerName<'static>>,
}

impl Target {
    /// A copy that shares no buffer with `self`.
    pub fn detached(&self) -> Self {
        let mut copy = self.clone();
        if let Ok(h) = HeaderValue::from_bytes(self.host_header.as_bytes()) {
            copy.host_header = h;
        }
        if let Ok(a) = Authority::try_from(self.authority.as_str()) {
            copy.authority = a;
        }
        copy
    }
}

/// `proxy.enable_load_balancing`: the targets requests are spread over.
#[derive(Debug, Clone)]
pub struct LoadBalancing {
    /// `proxy.target_list`, in order; an entry listed n times gets n shares (Tyk's weights).
    pub targets: Box<[Target]>,
    /// `proxy.check_host_against_uptime_tests`: skip targets whose host the uptime checks
    /// found down.
    pub check_hosts: bool,
}

impl LoadBalancing {
    /// A copy that shares no buffer with `self`.
    pub fn detached(&self) -> Self {
        Self {
            targets: self.targets.iter().map(Target::detached).collect(),
            check_hosts: self.check_hosts,
        }
    }
}

/// A validated API definition.
#[derive(Debug, Clone)]
pub struct ApiSpec {
    /// `api_id`.
    pub api_id: Arc<str>,
    /// `name`.
    pub name: Arc<str>,
    /// `org_id`.
    pub org_id: Arc<str>,
    /// `active` (absent = true).
    pub active: bool,
    /// `proxy.listen_path`, normalised to start with `/`.
    pub listen_path: String,
    /// `domain`, lower-cased, without port; `None` = any host.
    pub domain: Option<String>,
    /// `proxy.target_url` (or the version's `override_target`). With load balancing and an
    /// empty `target_url`, the first `target_list` entry: requests go to
    /// [`ApiSpec::load_balancing`]'s pick, this only names the upstream (analytics).
    pub target: Target,
    /// `proxy.enable_load_balancing` with its `target_list`; `None` when requests go to
    /// `target`, also for a version with its own `override_target`.
    pub load_balancing: Option<Arc<LoadBalancing>>,
    /// `uptime_tests`, when it lists checks.
    pub uptime: Option<Arc<UptimeTests>>,
    /// `proxy.strip_listen_path`.
    pub strip_listen_path: bool,
    /// `proxy.preserve_host_header`.
    pub preserve_host_header: bool,
    /// `proxy.disable_strip_slash`.
    pub disable_strip_slash: bool,
    /// Per-API body cap.
    pub max_request_body_size: Option<u64>,
    /// Authentication.
    pub auth: AuthMode,
    /// Remove the credential before proxying.
    pub strip_auth_data: bool,
    /// No analytics records.
    pub do_not_track: bool,
    /// `enable_context_vars`: `$tyk_context.*` variables have values.
    pub context_vars: bool,
    /// `global_rate_limit` as (rate, per) when on.
    pub global_rate_limit: Option<(f64, f64)>,
    /// Key rate limits off.
    pub disable_rate_limit: bool,
    /// Quotas off.
    pub disable_quota: bool,
    /// `allowed_ips`, when enforced (non-empty and `ip_access_control_disabled` not set).
    pub allowed_ips: Option<Arc<IpList>>,
    /// `blacklisted_ips`, when enforced (same rule).
    pub blacklisted_ips: Option<Arc<IpList>>,
    /// The rules of the version the API serves (empty when it has none); for a versioned
    /// API, of the version this copy serves (see [`ApiSpec::for_version`]).
    pub version: Arc<VersionRules>,
    /// How a versioned API picks the version; `None` = not versioned.
    pub versioning: Option<Arc<Versioning>>,
    /// `expiration`: after it the API answers 403.
    pub expiration: Option<Expiry>,
    /// `CORS`, when `CORS.enable` is true.
    pub cors: Option<Arc<CorsPolicy>>,
    /// `use_mutual_tls_auth`: the client certificates let in (before any other auth).
    pub client_certs: Option<Arc<crate::client_certs::ClientCertRules>>,
    /// The TLS configuration (the API's settings, as for an `https` target) for URL rewrites
    /// to an `https://` host; set when some version has one.
    pub rewrite_tls: Option<Arc<UpstreamTls>>,
}

impl ApiSpec {
    /// A copy that shares no reference-counted buffers with `self`: each worker thread gets
    /// its own, so cloning a header value on the request path never touches a counter another
    /// core is writing.
    pub fn detached(&self) -> Self {
        let mut copy = self.clone();
        copy.target = self.target.detached();
        copy.load_balancing = self
            .load_balancing
            .as_deref()
            .map(|lb| Arc::new(lb.detached()));
        copy.cors = self.cors.as_deref().map(|c| Arc::new(c.detached()));
        copy.version = Arc::new(self.version.detached());
        copy.versioning = self.versioning.as_deref().map(|v| {
            Arc::new(Versioning {
                versions: v
                    .versions
                    .iter()
                    .map(|av| ApiVersion {
                        rules: Arc::new(av.rules.detached()),
                        target: av.target.as_ref().map(Target::detached),
                    })
                    .collect(),
                ..v.clone()
            })
        });
        copy
    }

    /// The API as version `index` of [`ApiSpec::versioning`] serves it: that version's rules
    /// and, when it has one, its `override_target` (which then also replaces the load
    /// balancer: the version names its one upstream).
    pub fn for_version(&self, index: usize) -> Option<Self> {
        let v = self.versioning.as_ref()?.versions.get(index)?;
        let mut copy = self.clone();
        copy.version = Arc::clone(&v.rules);
        if let Some(t) = &v.target {
            copy.target = t.clone();
            copy.load_balancing = None;
        }
        Some(copy)
    }

    /// Validates a definition document.
    ///
    /// # Errors
    /// The first problem found, with its field path.
    pub fn from_json(raw: &serde_json::Value) -> Result<Self, DefinitionError> {
        Self::from_json_with(raw, &LoadOptions::default())
    }

    /// Like [`ApiSpec::from_json`], with the gateway's endpoint matching options.
    ///
    /// # Errors
    /// The first problem found, with its field path.
    pub fn from_json_with(
        raw: &serde_json::Value,
        opts: &LoadOptions,
    ) -> Result<Self, DefinitionError> {
        let def: ApiDefinition = serde_path_to_error::deserialize(raw).map_err(|err| {
            DefinitionError::new(err.path().to_string(), err.into_inner().to_string())
        })?;
        Self::from_definition_with(&def, opts)
    }

    /// Validates a parsed definition. A definition that turns on a rule Tollgate does not
    /// enforce yet (endpoint lists, versioning, ...) is refused, never served
    /// without the rule.
    ///
    /// # Errors
    /// The first problem found, with its field path.
    pub fn from_definition(def: &ApiDefinition) -> Result<Self, DefinitionError> {
        Self::from_definition_with(def, &LoadOptions::default())
    }

    /// Like [`ApiSpec::from_definition`], with the gateway's endpoint matching options.
    ///
    /// # Errors
    /// The first problem found, with its field path.
    pub fn from_definition_with(
        def: &ApiDefinition,
        opts: &LoadOptions,
    ) -> Result<Self, DefinitionError> {
        if def.api_id.trim().is_empty() {
            return Err(DefinitionError::new("api_id", "must not be empty"));
        }
        if def.api_id.contains(['/', '\\']) || def.api_id.contains("..") {
            return Err(DefinitionError::new(
                "api_id",
                "must not contain `/`, `\\` or `..`",
            ));
        }
        let lp = def.proxy.listen_path.trim();
        if lp.is_empty() {
            return Err(DefinitionError::new(
                "proxy.listen_path",
                "must not be empty",
            ));
        }
        if lp.contains(char::is_whitespace) {
            return Err(DefinitionError::new(
                "proxy.listen_path",
                "must not contain spaces",
            ));
        }
        let listen_path = if lp.starts_with('/') {
            lp.to_owned()
        } else {
            format!("/{lp}")
        };
        let upstream_tls = opts
            .upstream_tls
            .with_api(&crate::transport::read(&def.proxy.transport)?);
        let mut load_balancing = load_balancing(def)?;
        if let Some(lb) = &mut load_balancing {
            for t in &mut lb.targets {
                attach_tls(t, &upstream_tls)?;
            }
        }
        let mut target = match &load_balancing {
            // Tyk does not read `target_url` while it balances: an empty one is fine.
            Some(lb) if def.proxy.target_url.trim().is_empty() => lb.targets[0].clone(),
            _ => parse_target(&def.proxy.target_url)?,
        };
        attach_tls(&mut target, &upstream_tls)?;
        let domain = match def.domain.trim() {
            "" => None,
            d => Some(strip_port(d).to_ascii_lowercase()),
        };
        let auth = auth_mode(def, &upstream_tls)?;
        crate::unsupported::check(def, matches!(auth, AuthMode::CertificateKey))?;
        // Tyk's current rule: a non-empty list is enforced unless access control is off;
        // `enable_ip_whitelisting` / `enable_ip_blacklisting` are not consulted.
        let ip_list = |field: &str, raw: &serde_json::Value| {
            let on = !is_set(&def.ip_access_control_disabled) && is_set(raw);
            on.then(|| IpList::from_json(field, raw).map(Arc::new))
                .transpose()
        };
        let allowed_ips = ip_list("allowed_ips", &def.allowed_ips)?;
        let blacklisted_ips = ip_list("blacklisted_ips", &def.blacklisted_ips)?;
        let (version, versioning, target) = if crate::versioning::is_versioned(def) {
            let mut versioning = crate::versioning::compile(def, opts.matching)?;
            for v in &mut versioning.versions {
                if let Some(t) = &mut v.target {
                    attach_tls(t, &upstream_tls)?;
                }
            }
            // Requests always get one of `versioning.versions`; this one only stands for the
            // API where no request is involved.
            let first = match versioning.default {
                DefaultVersion::Index(i) => i,
                _ => 0,
            };
            let version = Arc::clone(&versioning.versions[first].rules);
            (version, Some(Arc::new(versioning)), target)
        } else {
            match crate::endpoints::served_version(def)? {
                Some((name, raw)) => {
                    let rules = crate::endpoints::compile(name, raw, opts.matching)?;
                    let target = match crate::versioning::override_target(name, raw)? {
                        // The version names its one upstream, as a versioned API's does.
                        Some(mut t) => {
                            attach_tls(&mut t, &upstream_tls)?;
                            load_balancing = None;
                            t
                        }
                        None => target,
                    };
                    (Arc::new(rules), None, target)
                }
                None => (Arc::new(VersionRules::default()), None, target),
            }
        };
        let expiration = match &def.expiration {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Expiry::parse("expiration", s)?,
            _ => {
                return Err(DefinitionError::new(
                    "expiration",
                    "must be a `YYYY-MM-DD HH:MM` string",
                ));
            }
        };
        let cors = CorsPolicy::from_json("CORS", &def.cors)?.map(Arc::new);
        let mut uptime = crate::uptime::compile(def)?;
        for c in uptime.iter_mut().flat_map(|u| u.checks.iter_mut()) {
            attach_tls(&mut c.target, &upstream_tls)?;
        }
        let uptime = uptime.map(Arc::new);
        let rewrites_to_https = std::iter::once(&version)
            .chain(
                versioning
                    .iter()
                    .flat_map(|v| v.versions.iter().map(|v| &v.rules)),
            )
            .any(|rules| rules.url_rewrites.values().any(UrlRewrite::reaches_https));
        let rewrite_tls = rewrites_to_https
            .then(|| UpstreamTls::get(&upstream_tls))
            .transpose()
            .map_err(|e| DefinitionError::new("proxy.transport", e.to_string()))?;
        let client_certs = if def.use_mutual_tls_auth {
            Some(Arc::new(crate::client_certs::compile(
                &def.client_certificates,
            )?))
        } else {
            None
        };
        Ok(Self {
            client_certs,
            rewrite_tls,
            load_balancing: load_balancing.map(Arc::new),
            uptime,
            version,
            versioning,
            expiration,
            allowed_ips,
            blacklisted_ips,
            cors,
            auth,
            strip_auth_data: def.strip_auth_data,
            do_not_track: def.do_not_track,
            context_vars: def.enable_context_vars,
            global_rate_limit: {
                let g = &def.global_rate_limit;
                (!g.disabled && !def.disable_rate_limit && g.rate > 0.0 && g.per > 0.0)
                    .then_some((g.rate, g.per))
            },
            disable_rate_limit: def.disable_rate_limit,
            disable_quota: def.disable_quota,
            api_id: def.api_id.as_str().into(),
            name: def.name.as_str().into(),
            org_id: def.org_id.as_str().into(),
            active: def.active.unwrap_or(true),
            listen_path,
            domain,
            target,
            strip_listen_path: def.proxy.strip_listen_path,
            preserve_host_header: def.proxy.preserve_host_header,
            disable_strip_slash: def.proxy.disable_strip_slash,
            max_request_body_size: def.max_request_body_size.filter(|n| *n > 0),
        })
    }
}

fn auth_mode(def: &ApiDefinition, tls: &ClientSettings) -> Result<AuthMode, DefinitionError> {
    if def.use_keyless {
        return Ok(AuthMode::Keyless);
    }
    let unsupported = [
        (def.use_oauth2, "use_oauth2", "OAuth 2"),
        (def.use_openid, "use_openid", "OpenID Connect"),
        (
            def.custom_plugin_auth_enabled,
            "custom_plugin_auth_enabled",
            "custom auth plugins",
        ),
        (
            def.use_go_plugin_auth,
            "use_go_plugin_auth",
            "Go plugin auth",
        ),
        (
            def.enable_coprocess_auth,
            "enable_coprocess_auth",
            "coprocess auth",
        ),
    ];
    // Serving such an API with another method would change who gets in: refuse it instead.
    if let Some((_, field, what)) = unsupported.iter().find(|(on, _, _)| *on) {
        return Err(DefinitionError::new(
            *field,
            format!("{what} is not supported yet"),
        ));
    }
    let conf = |method: &str| def.auth_configs.get(method).unwrap_or(&def.auth);
    let other_method = def.use_standard_auth
        || def.use_basic_auth
        || def.enable_jwt
        || def.enable_signature_checking;
    if def.use_mutual_tls_auth && !other_method {
        return Ok(AuthMode::Certificate);
    }
    if def.enable_signature_checking {
        if def.enable_jwt || def.use_basic_auth || def.use_standard_auth {
            return Err(DefinitionError::new(
                "enable_signature_checking",
                "combining HMAC signatures with other auth methods is not supported yet",
            ));
        }
        return Ok(AuthMode::Hmac(
            source(conf("hmac"), "auth_configs.hmac")?,
            hmac_rules(def)?,
        ));
    }
    if def.enable_jwt {
        if def.use_basic_auth || def.use_standard_auth {
            return Err(DefinitionError::new(
                "enable_jwt",
                "combining JWT with other auth methods is not supported yet",
            ));
        }
        let settings = crate::jwt::compile(&def.jwt, tls)?;
        return Ok(AuthMode::Jwt(
            source(conf("jwt"), "auth_configs.jwt")?,
            Arc::new(settings),
        ));
    }
    if def.use_basic_auth {
        if def.use_standard_auth {
            return Err(DefinitionError::new(
                "use_standard_auth",
                "combining basic auth with auth tokens is not supported yet",
            ));
        }
        return Ok(AuthMode::Basic(source(
            conf("basic"),
            "auth_configs.basic",
        )?));
    }
    if crate::unsupported::is_set(&conf("authToken").use_certificate) {
        return Ok(AuthMode::CertificateKey);
    }
    Ok(AuthMode::Token(source(conf("authToken"), "auth")?))
}

fn hmac_rules(def: &ApiDefinition) -> Result<HmacRules, DefinitionError> {
    use tollgate_auth::hmac::Algorithm;
    let field = "hmac_allowed_algorithms";
    let names: Vec<String> = match &def.hmac_allowed_algorithms {
        serde_json::Value::Null => Vec::new(),
        raw => serde_json::from_value(raw.clone())
            .map_err(|_| DefinitionError::new(field, "must be a list of algorithm names"))?,
    };
    let algorithms = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            Algorithm::from_name(name.trim()).ok_or_else(|| {
                let why = if name.trim().starts_with("rsa-") {
                    format!("`{name}`: RSA signatures are not supported yet")
                } else {
                    format!("`{name}` is not hmac-sha1, hmac-sha256, hmac-sha384 or hmac-sha512")
                };
                DefinitionError::new(format!("{field}[{i}]"), why)
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(HmacRules {
        algorithms,
        clock_skew_ms: def.hmac_allowed_clock_skew,
    })
}

fn source(conf: &AuthConf, field: &str) -> Result<CredentialSource, DefinitionError> {
    let header_name = match conf.auth_header_name.trim() {
        "" => "Authorization",
        h => h,
    };
    let header = HeaderName::from_bytes(header_name.as_bytes()).map_err(|_| {
        DefinitionError::new(
            format!("{field}.auth_header_name"),
            format!("`{header_name}` is not a header name"),
        )
    })?;
    let or_header = |name: &str| match name.trim() {
        "" => header_name.to_owned(),
        n => n.to_owned(),
    };
    Ok(CredentialSource {
        header: (!conf.disable_header).then_some(header),
        param: conf.use_param.then(|| or_header(&conf.param_name)),
        cookie: conf.use_cookie.then(|| or_header(&conf.cookie_name)),
    })
}

/// `host` from `host:port` (IPv6 literals keep their brackets).
pub(crate) fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

fn parse_target(url: &str) -> Result<Target, DefinitionError> {
    parse_target_at("proxy.target_url", url)
}

/// `proxy.enable_load_balancing` and `proxy.target_list`. Off, the list is not read, as in
/// Tyk. Each entry is a target URL (`http://` added when it names no scheme) with the same
/// rules as `target_url`.
fn load_balancing(def: &ApiDefinition) -> Result<Option<LoadBalancing>, DefinitionError> {
    let p = &def.proxy;
    if !p.enable_load_balancing {
        return Ok(None);
    }
    if p.target_list.is_empty() {
        return Err(DefinitionError::tyk_rule(
            "proxy.target_list",
            "all load balancing targets have weight 0, at least one target must have weight > 0",
        ));
    }
    let targets = p
        .target_list
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let entry = entry.trim();
            let url = if entry.is_empty() || entry.contains("://") {
                Cow::Borrowed(entry)
            } else {
                Cow::Owned(format!("http://{entry}"))
            };
            parse_target_at(&format!("proxy.target_list[{i}]"), &url)
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(LoadBalancing {
        targets,
        check_hosts: p.check_host_against_uptime_tests,
    }))
}

/// A target URL read from `field`.
pub(crate) fn parse_target_at(field: &str, url: &str) -> Result<Target, DefinitionError> {
    let url = url.trim();
    if url.is_empty() {
        return Err(DefinitionError::new(field, "must not be empty"));
    }
    let uri: Uri = url
        .parse()
        .map_err(|e| DefinitionError::new(field, format!("`{url}` is not a URL: {e}")))?;
    let scheme = match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("http") => Scheme::Http,
        Some(s) if s.eq_ignore_ascii_case("https") => Scheme::Https,
        Some(s) if s.eq_ignore_ascii_case("h2c") => Scheme::H2c,
        Some(s) => {
            return Err(DefinitionError::new(
                field,
                format!("unsupported scheme `{s}`"),
            ));
        }
        None => {
            return Err(DefinitionError::new(
                field,
                format!("`{url}` has no http://, https:// or h2c:// scheme"),
            ));
        }
    };
    let Some(authority) = uri.authority() else {
        return Err(DefinitionError::new(field, format!("`{url}` has no host")));
    };
    if authority.as_str().contains('@') {
        return Err(DefinitionError::new(
            field,
            "credentials in the URL are not supported",
        ));
    }
    let host = authority.host();
    if host.is_empty() {
        return Err(DefinitionError::new(field, format!("`{url}` has no host")));
    }
    let default_port = match scheme {
        Scheme::Http | Scheme::H2c => 80,
        Scheme::Https => 443,
    };
    let server_name = match scheme {
        Scheme::Http | Scheme::H2c => None,
        Scheme::Https => Some(
            tollgate_tls::client::server_name(host)
                .map_err(|e| DefinitionError::new(field, format!("`{host}`: {e}")))?,
        ),
    };
    // `Authority::port` is silent about a port that is not a number: read the text.
    let written_port = authority
        .as_str()
        .rsplit_once(':')
        .map(|(_, p)| p)
        .filter(|p| !p.contains(']'));
    let port = match (written_port, authority.port_u16()) {
        (None, _) => default_port,
        (Some(_), Some(p)) => p,
        (Some(p), None) => {
            return Err(DefinitionError::new(
                field,
                format!("`{p}` is not a port number"),
            ));
        }
    };
    let authority: Authority = format!("{host}:{port}")
        .parse()
        .map_err(|e| DefinitionError::new(field, format!("bad host: {e}")))?;
    let host_header = if port == default_port {
        HeaderValue::from_str(host)
    } else {
        HeaderValue::from_str(&format!("{host}:{port}"))
    }
    .map_err(|e| DefinitionError::new(field, format!("bad host: {e}")))?;
    let base_path = match uri.path() {
        "/" => String::new(),
        p => p.to_owned(),
    };
    Ok(Target {
        scheme,
        authority,
        host_header,
        base_path,
        base_query: uri.query().filter(|q| !q.is_empty()).map(str::to_owned),
        tls: None,
        server_name,
    })
}

/// Gives an `https` target the TLS configuration of `settings`.
fn attach_tls(target: &mut Target, settings: &ClientSettings) -> Result<(), DefinitionError> {
    if target.scheme == Scheme::Https {
        let tls = UpstreamTls::get(settings)
            .map_err(|e| DefinitionError::new("proxy.transport", e.to_string()))?;
        target.tls = Some(tls);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(proxy: serde_json::Value) -> serde_json::Value {
        json!({"api_id": "a", "name": "A", "org_id": "o", "use_keyless": true, "proxy": proxy})
    }

    /// A keyless API on `/a/` forwarding to `target_url`.
    fn targeting(target_url: &str) -> Result<ApiSpec, DefinitionError> {
        ApiSpec::from_json(&def(
            json!({"listen_path": "/a/", "target_url": target_url}),
        ))
    }

    fn assert_target(s: &ApiSpec, scheme: Scheme, authority: &str, host_header: &str) {
        assert_eq!(s.target.scheme, scheme);
        assert_eq!(s.target.authority.as_str(), authority);
        assert_eq!(s.target.host_header, host_header);
    }

    #[test]
    fn target_parts() {
        let s = targeting("http://up:9000/base/?x=1").unwrap();
        assert_eq!(s.target.authority.as_str(), "up:9000");
        assert_eq!(s.target.host_header, "up:9000");
        assert_eq!(s.target.base_path, "/base/");
        assert_eq!(s.target.base_query.as_deref(), Some("x=1"));
        let s = ApiSpec::from_json(&def(json!({"listen_path": "a", "target_url": "http://up"})))
            .unwrap();
        assert_eq!(s.target.authority.as_str(), "up:80");
        assert_eq!(s.target.host_header, "up");
        assert_eq!(s.target.base_path, "");
        assert_eq!(s.listen_path, "/a");
        assert!(s.active);
        assert!(s.target.tls.is_none() && s.target.server_name.is_none());
    }

    #[test]
    fn bad_ports_are_refused() {
        for url in ["http://b:x/", "https://b:99999/", "http://b:/"] {
            let e = targeting(url);
            assert!(e.is_err(), "{url} loaded");
        }
    }

    #[test]
    fn h2c_targets_are_plain_http2() {
        let s = targeting("H2C://grpc.internal/svc").unwrap();
        assert_target(&s, Scheme::H2c, "grpc.internal:80", "grpc.internal");
        assert_eq!(s.target.base_path, "/svc");
        assert!(s.target.tls.is_none() && s.target.server_name.is_none());
        let e = targeting("ws://up/").unwrap_err();
        assert!(e.to_string().contains("unsupported scheme `ws`"), "{e}");
    }

    #[test]
    fn https_targets_get_tls_by_their_settings() {
        let s = targeting("https://Secure.Example:8443/v1").unwrap();
        assert_target(
            &s,
            Scheme::Https,
            "Secure.Example:8443",
            "Secure.Example:8443",
        );
        assert!(matches!(
            s.target.server_name,
            Some(tollgate_tls::client::ServerName::DnsName(_))
        ));
        let plain_tls = s.target.tls.unwrap();
        assert!(!plain_tls.skips_verification());
        let s = targeting("https://up").unwrap();
        assert_eq!(s.target.authority.as_str(), "up:443");
        assert_eq!(s.target.host_header, "up");
        // Same settings, same configuration (so connections pool together).
        assert_eq!(s.target.tls.as_ref().unwrap().id(), plain_tls.id());
        let mut raw = def(json!({"listen_path": "/b/", "target_url": "https://up"}));
        raw["proxy"]["transport"] = json!({"ssl_insecure_skip_verify": true});
        let s = ApiSpec::from_json(&raw).unwrap();
        assert!(s.target.tls.as_ref().unwrap().skips_verification());
        // The gateway's skip-verify applies to every API.
        let opts = LoadOptions {
            upstream_tls: tollgate_tls::ClientSettings {
                insecure_skip_verify: true,
                ..Default::default()
            },
            ..LoadOptions::default()
        };
        let raw = def(json!({"listen_path": "/c/", "target_url": "https://up"}));
        let s = ApiSpec::from_json_with(&raw, &opts).unwrap();
        assert!(s.target.tls.as_ref().unwrap().skips_verification());
        // A version's override target gets the same treatment.
        let mut raw = def(json!({"listen_path": "/d/", "target_url": "http://up"}));
        raw["version_data"] = json!({"not_versioned": true, "default_version": "Default",
            "versions": {"Default": {"name": "Default", "override_target": "https://other"}}});
        let s = ApiSpec::from_json(&raw).unwrap();
        assert_eq!(s.target.authority.as_str(), "other:443");
        assert!(s.target.tls.is_some());
    }

    #[test]
    fn field_errors() {
        let e = ApiSpec::from_json(&def(json!({"listen_path": 5, "target_url": "http://up"})))
            .unwrap_err();
        assert_eq!(e.field, "proxy.listen_path");
        let e = ApiSpec::from_json(&def(json!({"listen_path": "/a", "target_url": "ftp://up"})))
            .unwrap_err();
        assert_eq!(e.field, "proxy.target_url");
        let e = ApiSpec::from_json(&def(json!({"listen_path": "/a", "target_url": "up:80"})))
            .unwrap_err();
        assert_eq!(e.field, "proxy.target_url");
        let e = ApiSpec::from_json(&def(json!({"listen_path": "", "target_url": "http://up"})))
            .unwrap_err();
        assert_eq!(e.field, "proxy.listen_path");
        let e = ApiSpec::from_json(
            &json!({"api_id": "", "proxy": {"listen_path": "/a", "target_url": "http://up"}}),
        )
        .unwrap_err();
        assert_eq!(e.field, "api_id");
    }

    #[test]
    fn domain_is_lowercased_without_port() {
        let mut d = def(json!({"listen_path": "/a", "target_url": "http://up"}));
        d["domain"] = json!("API.Example.com:8080");
        assert_eq!(
            ApiSpec::from_json(&d).unwrap().domain.as_deref(),
            Some("api.example.com")
        );
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("host"), "host");
    }
}

#[cfg(test)]
mod balancing_tests {
    use super::ip_tests::with;
    use serde_json::json;

    fn authorities(s: &super::ApiSpec) -> Vec<&str> {
        let lb = s.load_balancing.as_deref().expect("load balancing on");
        lb.targets.iter().map(|t| t.authority.as_str()).collect()
    }

    #[test]
    fn target_list_is_read_only_with_load_balancing() {
        let s = with(json!({"proxy": {"enable_load_balancing": true,
            "target_list": ["http://a:81/x", "b:82", "http://a:81/x"],
            "check_host_against_uptime_tests": true}}))
        .unwrap();
        assert_eq!(authorities(&s), ["a:81", "b:82", "a:81"]);
        let lb = s.load_balancing.as_deref().unwrap();
        assert!(lb.check_hosts);
        assert_eq!(lb.targets[0].base_path, "/x");
        // `target_url` still names the upstream.
        assert_eq!(s.target.authority.as_str(), "up:80");
        // Off: the list is not even parsed.
        let s = with(json!({"proxy": {"enable_load_balancing": false,
            "target_list": ["ftp://nope"]}}))
        .unwrap();
        assert!(s.load_balancing.is_none());
    }

    #[test]
    fn an_empty_target_url_is_fine_while_balancing() {
        let s = with(
            json!({"proxy": {"target_url": "", "enable_load_balancing": true,
            "target_list": ["http://first:90", "http://second:91"]}}),
        )
        .unwrap();
        assert_eq!(s.target.authority.as_str(), "first:90");
        assert_eq!(authorities(&s), ["first:90", "second:91"]);
        let e = with(json!({"proxy": {"target_url": ""}})).unwrap_err();
        assert_eq!(e.field, "proxy.target_url");
    }

    #[test]
    fn bad_lists_are_refused_naming_the_entry() {
        let e =
            with(json!({"proxy": {"enable_load_balancing": true, "target_list": []}})).unwrap_err();
        assert_eq!(e.field, "proxy.target_list");
        assert_eq!(
            e.reason(),
            "all load balancing targets have weight 0, at least one target must have weight > 0"
        );
        // Logs still name the field.
        assert!(
            e.to_string()
                .starts_with("field `proxy.target_list`: all load")
        );
        let e = with(json!({"proxy": {"enable_load_balancing": true, "target_list": null}}))
            .unwrap_err();
        assert_eq!(e.field, "proxy.target_list");
        for (list, field) in [
            (json!(["http://a", "ftp://b"]), "proxy.target_list[1]"),
            (json!(["http://a", ""]), "proxy.target_list[1]"),
            (json!(["http://user:pw@a"]), "proxy.target_list[0]"),
            (json!(["http://a", 5]), "proxy.target_list[1]"),
        ] {
            let e = with(json!({"proxy": {"enable_load_balancing": true, "target_list": list}}))
                .unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(!e.message.contains("weight"), "{e}");
        }
        let e = with(json!({"proxy": {"enable_load_balancing": "yes"}})).unwrap_err();
        assert_eq!(e.field, "proxy.enable_load_balancing");
    }

    #[test]
    fn an_override_target_replaces_the_balancer() {
        let lb = json!({"enable_load_balancing": true, "target_list": ["http://a", "http://b"]});
        let s = with(
            json!({"proxy": lb, "version_data": {"not_versioned": true, "versions": {
            "Default": {"name": "Default", "override_target": "http://only:70"}}}}),
        )
        .unwrap();
        assert!(s.load_balancing.is_none());
        assert_eq!(s.target.authority.as_str(), "only:70");
        let s = with(json!({"proxy": lb, "version_data": {"not_versioned": false,
            "default_version": "v1", "versions": {"v1": {"name": "v1"},
            "v2": {"name": "v2", "override_target": "http://v2:71"}}}}))
        .unwrap();
        let v = s.versioning.as_deref().unwrap();
        let v1 = s.for_version(v.find("v1").unwrap()).unwrap();
        let v2 = s.for_version(v.find("v2").unwrap()).unwrap();
        assert_eq!(authorities(&v1), ["a:80", "b:80"]);
        assert!(v2.load_balancing.is_none());
        assert_eq!(v2.target.authority.as_str(), "v2:71");
        // Each worker's copy has its own targets.
        let d = s.detached();
        assert!(!std::sync::Arc::ptr_eq(
            s.load_balancing.as_ref().unwrap(),
            d.load_balancing.as_ref().unwrap()
        ));
    }
}

#[cfg(test)]
mod ip_tests {
    use super::*;
    use serde_json::json;

    pub(super) fn with(extra: serde_json::Value) -> Result<ApiSpec, DefinitionError> {
        let mut d = json!({"api_id": "a", "use_keyless": true,
            "proxy": {"listen_path": "/a/", "target_url": "http://up"}});
        tollgate_testkit::merge_json(&mut d, extra);
        ApiSpec::from_json(&d)
    }

    #[test]
    fn ip_lists_follow_tyks_on_rule() {
        let s =
            with(json!({"allowed_ips": ["10.0.0.0/8"], "blacklisted_ips": ["1.2.3.4"]})).unwrap();
        assert!(s.allowed_ips.is_some() && s.blacklisted_ips.is_some());
        // The enable_* flags are not what switches them on or off.
        let s =
            with(json!({"enable_ip_whitelisting": false, "allowed_ips": ["10.0.0.0/8"]})).unwrap();
        assert!(s.allowed_ips.is_some());
        for off in [
            json!({"enable_ip_whitelisting": true, "allowed_ips": []}),
            json!({"allowed_ips": null, "blacklisted_ips": []}),
            json!({"ip_access_control_disabled": true, "allowed_ips": ["bob"],
                "blacklisted_ips": ["10.0.0.1"]}),
        ] {
            let s = with(off.clone()).unwrap();
            assert!(
                s.allowed_ips.is_none() && s.blacklisted_ips.is_none(),
                "{off}"
            );
        }
    }

    #[test]
    fn a_bad_ip_entry_refuses_the_definition() {
        let e = with(json!({"allowed_ips": ["127.0.0.1", "127.0.0.1/24", "bob"]})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "field `allowed_ips[2]`: not an IP address or CIDR: bob"
        );
        let e = with(json!({"blacklisted_ips": ["10.0.0.0/99"]})).unwrap_err();
        assert_eq!(e.field, "blacklisted_ips[0]");
    }
}

#[cfg(test)]
mod cors_tests {
    use super::ip_tests::with;
    use super::*;
    use serde_json::json;

    #[test]
    fn cors_is_compiled_when_enabled() {
        assert!(with(json!({})).unwrap().cors.is_none());
        assert!(
            with(json!({"CORS": {"enable": false}}))
                .unwrap()
                .cors
                .is_none()
        );
        let s = with(json!({"CORS": {"enable": true, "options_passthrough": true}})).unwrap();
        assert!(s.cors.as_ref().unwrap().options_passthrough());
        // Each worker's copy has its own policy.
        let d = s.detached();
        assert!(!Arc::ptr_eq(
            s.cors.as_ref().unwrap(),
            d.cors.as_ref().unwrap()
        ));
    }

    #[test]
    fn a_bad_cors_value_refuses_the_definition() {
        let e = with(json!({"CORS": {"enable": true, "max_age": -5}})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "field `CORS.max_age`: must not be negative, not -5"
        );
        let e = with(json!({"CORS": {"enable": true, "allowed_headers": ["a b"]}})).unwrap_err();
        assert_eq!(e.field, "CORS.allowed_headers[0]");
    }
}
