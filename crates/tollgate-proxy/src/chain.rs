//! The per-API stage chain: every rule a request passes between routing and the upstream.
//!
//! The chain is compiled once per API (per version of a versioned API, whose version is picked
//! before the chain runs) when its definition loads; a feature the API does not
//! use is simply absent from it, so it costs nothing per request. Stages run in the order of
//! `Chain::compile`, which follows Tyk's middleware order because the first stage to refuse
//! decides which error a client sees:
//!
//! ```text
//! [version picked] -> expiry + endpoint lists -> CORS -> IP lists -> body size -> size limits -> auth -> key
//!     expiry / access rights -> key rate limit + quota -> API rate limit -> transforms
//!     (headers, URL rewrite, method) -> hard timeout -> mock response
//! ```
//!
//! An `ignored` endpoint skips auth, key checks and the limits, as in Tyk (its size limit,
//! hard timeout and mock still apply).
//!
//! A stage reads and rewrites the request through [`StageRequest`], writes what it learns to
//! [`RequestCtx`], and refuses with a typed [`Refusal`]; or it answers the request itself
//! with a [`Reply`] that is not an error (a CORS preflight, a mock), which skips the stages
//! after it and the upstream.

use std::sync::Arc;

use http::{HeaderValue, Response, StatusCode};
use tollgate_config::GatewayConfig;
use tollgate_definitions::{ApiSpec, AuthMode};
use tollgate_rules::endpoints::Mock;

use crate::auth::{BasicAuth, CredentialUse, KeyChecks, TokenAuth};
use crate::body::ProxyBody;
use crate::client_certs::{CertKeyAuth, ClientCertCheck};
use crate::cors::Cors;
use crate::ctx::{RequestCtx, StageRequest};
use crate::endpoint_rules::{HardTimeouts, MockResponses, SizeLimits};
use crate::endpoints::EndpointRules;
use crate::hmac::HmacAuth;
use crate::ip_rules::IpRules;
use crate::jwt::JwtAuth;
use crate::limits::{ApiRateLimit, KeyLimits};
use crate::refusal::{Refusal, RefusalKind};
use crate::transforms::Transforms;

/// What a stage decided.
#[derive(Debug)]
pub enum Flow {
    /// Go on to the next stage.
    Continue,
    /// The gateway answers the request itself, successfully: the stages after this one and
    /// the upstream are skipped.
    Reply(Reply),
}

/// A response a stage makes that is not an error (no `{"error": ...}` body, no refusal
/// counted). The headers the stages recorded in [`RequestCtx`] are added to it as to any
/// response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Status (of the mock, when there is one).
    pub status: StatusCode,
    /// A canned answer (`method_actions` reply, `mock_response`); `None` = an empty body.
    pub mock: Option<Arc<Mock>>,
}

impl Reply {
    /// The response a client gets.
    pub fn into_response(self) -> Response<ProxyBody> {
        match self.mock {
            Some(mock) => crate::endpoints::reply(&mock),
            None => {
                let mut resp = Response::new(ProxyBody::empty());
                *resp.status_mut() = self.status;
                resp
            }
        }
    }
}

/// One rule of the chain. An enum keeps dispatch static and the set of stages visible.
#[derive(Debug)]
pub(crate) enum Stage {
    /// API expiry and the endpoint lists.
    Endpoints(EndpointRules),
    /// CORS: preflights answered, response headers recorded.
    Cors(Cors),
    /// IP allow- and block-lists.
    IpRules(IpRules),
    /// Request body cap (per API, else gateway-wide).
    BodyLimit(BodyLimit),
    /// The version's `global_size_limit` and `size_limits`.
    SizeLimits(SizeLimits),
    /// Mutual TLS: the client's certificate must be allowed.
    ClientCerts(ClientCertCheck),
    /// Client certificate → its bound key.
    CertKeyAuth,
    /// Auth token → key.
    TokenAuth(TokenAuth),
    /// Basic auth → key.
    BasicAuth(BasicAuth),
    /// JWT → the identity's key.
    JwtAuth(JwtAuth),
    /// HMAC request signature → the signing key.
    HmacAuth(HmacAuth),
    /// Inactive, expired, access rights, allowed URLs.
    KeyChecks,
    /// The key's rate limit and quota.
    KeyLimits(KeyLimits),
    /// The API-wide rate limit.
    ApiRateLimit(ApiRateLimit),
    /// Header transforms (request edits now, response edits recorded).
    Transforms(Transforms),
    /// The endpoint's upstream timeout.
    HardTimeouts(HardTimeouts),
    /// The endpoint's canned answer.
    MockResponses(MockResponses),
}

impl Stage {
    async fn on_request(
        &self,
        req: &mut StageRequest<'_>,
        cx: &mut RequestCtx,
    ) -> Result<Flow, Refusal> {
        if cx.ignored && self.skipped_when_ignored() {
            return Ok(Flow::Continue);
        }
        match self {
            Self::Endpoints(s) => return s.on_request(req, cx),
            Self::Cors(s) => return Ok(s.on_request(req, cx)),
            Self::IpRules(s) => s.on_request(req)?,
            Self::BodyLimit(s) => s.on_request(req, cx)?,
            Self::SizeLimits(s) => s.on_request(req)?,
            Self::ClientCerts(s) => s.on_request(req)?,
            Self::CertKeyAuth => CertKeyAuth::on_request(req, cx).await?,
            Self::TokenAuth(s) => s.on_request(req, cx).await?,
            Self::BasicAuth(s) => s.on_request(req, cx).await?,
            Self::JwtAuth(s) => s.on_request(req, cx).await?,
            Self::HmacAuth(s) => s.on_request(req, cx).await?,
            Self::KeyChecks => KeyChecks::on_request(req, cx)?,
            Self::KeyLimits(s) => s.on_request(req, cx).await?,
            Self::ApiRateLimit(s) => s.on_request(req, cx).await?,
            Self::Transforms(s) => s.on_request(req, cx),
            Self::HardTimeouts(s) => s.on_request(req, cx),
            Self::MockResponses(s) => return Ok(s.on_request(req)),
        }
        Ok(Flow::Continue)
    }

    /// Auth and everything keyed on it, and the limits (Tyk's `StatusOkAndIgnore`).
    const fn skipped_when_ignored(&self) -> bool {
        matches!(
            self,
            Self::TokenAuth(_)
                | Self::CertKeyAuth
                | Self::BasicAuth(_)
                | Self::JwtAuth(_)
                | Self::HmacAuth(_)
                | Self::KeyChecks
                | Self::KeyLimits(_)
                | Self::ApiRateLimit(_)
        )
    }
}

/// The compiled, ordered stages of one API.
#[derive(Debug, Default)]
pub(crate) struct Chain {
    stages: Box<[Stage]>,
}

impl Chain {
    /// Builds the chain for one API; order matters (see the module docs).
    pub(crate) fn compile(spec: &ApiSpec, config: &GatewayConfig) -> Self {
        let mut stages = Vec::new();
        // Tyk's version check comes first: an expired API or a forbidden endpoint is refused
        // before anything else, an ignored one marks the request for the stages below.
        if let Some(rules) = EndpointRules::compile(spec) {
            stages.push(Stage::Endpoints(rules));
        }
        // First of all: who may talk to this API at all (Tyk's IP middleware runs before
        // Then CORS. Tyk's CORS handler wraps the whole chain, so a browser's preflight is
        // answered without a key or an allowed IP, and every later refusal still carries the
        // headers that let the page read it.
        if let Some(cors) = Cors::compile(spec) {
            stages.push(Stage::Cors(cors));
        }
        // Then: who may talk to this API at all (Tyk's IP middleware runs before
        // everything else, so a refused address learns nothing about keys or limits).
        if let Some(ip) = IpRules::compile(spec, config.xff_depth) {
            stages.push(Stage::IpRules(ip));
        }
        // Then Tyk's certificate check: a client without an allowed certificate is refused
        // before anything is spent on it.
        if let Some(rules) = &spec.client_certs {
            stages.push(Stage::ClientCerts(ClientCertCheck {
                rules: Arc::clone(rules),
            }));
        }
        // Then: refusing an oversized body needs nothing else and must happen before any
        // work (or storage access) is spent on the request.
        if let Some(limit) = spec
            .max_request_body_size
            .or(config.edge.max_request_body_bytes)
        {
            stages.push(Stage::BodyLimit(BodyLimit { limit }));
        }
        // Then Tyk's request size limit, which sits just after the IP checks and before
        // authentication: a body the version refuses costs no key lookup, and an ignored
        // endpoint is limited too.
        if let Some(s) = SizeLimits::compile(spec) {
            stages.push(Stage::SizeLimits(s));
        }
        // Then exactly one auth method (Tyk runs auth before any key-based rule).
        let credential = |source: &tollgate_definitions::CredentialSource| CredentialUse {
            source: source.clone(),
            strip: spec.strip_auth_data,
        };
        let authenticated = match &spec.auth {
            // The certificate stage above is the whole authentication.
            AuthMode::Keyless | AuthMode::Certificate => false,
            AuthMode::CertificateKey => {
                stages.push(Stage::CertKeyAuth);
                true
            }
            AuthMode::Token(source) => {
                stages.push(Stage::TokenAuth(TokenAuth {
                    credential: credential(source),
                    min_token_length: config.keys.min_token_length,
                }));
                true
            }
            AuthMode::Basic(source) => {
                let realm = format!("Basic realm=\"{}\"", spec.name.replace('"', "'"));
                stages.push(Stage::BasicAuth(BasicAuth {
                    credential: credential(source),
                    challenge: HeaderValue::from_str(&realm)
                        .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"tollgate\"")),
                    verified: papaya::HashMap::new(),
                }));
                true
            }
            AuthMode::Jwt(source, settings) => {
                stages.push(Stage::JwtAuth(JwtAuth {
                    credential: credential(source),
                    settings: Arc::clone(settings),
                }));
                true
            }
            AuthMode::Hmac(source, rules) => {
                stages.push(Stage::HmacAuth(HmacAuth {
                    credential: credential(source),
                    rules: rules.clone(),
                }));
                true
            }
        };
        // Key state before rights: an inactive or expired key is told so even where it has
        // no rights (Tyk's KeyExpired runs before AccessRights).
        if authenticated {
            stages.push(Stage::KeyChecks);
            // The key's own limits come before the API's shared one, so one key over its
            // limit cannot use up the allowance of every other caller.
            if !spec.disable_rate_limit || !spec.disable_quota {
                stages.push(Stage::KeyLimits(KeyLimits {
                    rate_on: !spec.disable_rate_limit,
                    quota_on: !spec.disable_quota,
                    rate_headers: config.rate_limit_headers,
                }));
            }
        }
        if let Some((rate, per)) = spec.global_rate_limit {
            stages.push(Stage::ApiRateLimit(ApiRateLimit {
                counter_id: tollgate_storage::keyspace::api_limiter(&spec.org_id, &spec.api_id)
                    .into(),
                rate,
                per,
                rate_headers: config.rate_limit_headers,
            }));
        }
        // Then Tyk's step 9: what the upstream receives is changed only for a request that
        // passed every check, and the transforms can read the key found above.
        if let Some(t) = Transforms::compile(spec, config.xff_depth) {
            stages.push(Stage::Transforms(t));
        }
        // Only a request that will be forwarded needs its upstream timeout; it is read when
        // forwarding, so its place among the stages matters only in coming after refusals.
        if let Some(s) = HardTimeouts::compile(spec) {
            stages.push(Stage::HardTimeouts(s));
        }
        // Last: Tyk's mock response (step 9) answers after authentication, key checks and
        // every limit and quota, so a mock on a keyed API still needs a valid key and counts.
        if let Some(s) = MockResponses::compile(spec) {
            stages.push(Stage::MockResponses(s));
        }
        Self {
            stages: stages.into_boxed_slice(),
        }
    }

    /// Runs every stage in order; the first refusal or reply ends the request.
    /// [`Flow::Continue`] means every stage let the request through to the upstream.
    ///
    /// # Errors
    /// The refusal of the first stage that refuses.
    pub(crate) async fn run(
        &self,
        req: &mut StageRequest<'_>,
        cx: &mut RequestCtx,
    ) -> Result<Flow, Refusal> {
        for stage in &self.stages {
            match stage.on_request(req, cx).await? {
                Flow::Continue => {}
                reply @ Flow::Reply(_) => return Ok(reply),
            }
        }
        Ok(Flow::Continue)
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }
}

/// Refuses bodies over the cap: at once when `Content-Length` says so (nothing is forwarded),
/// else while streaming (the upstream request is aborted before its body completes).
#[derive(Debug)]
pub(crate) struct BodyLimit {
    limit: u64,
}

impl BodyLimit {
    fn on_request(&self, req: &StageRequest<'_>, cx: &mut RequestCtx) -> Result<(), Refusal> {
        let declared = req
            .head
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.limit) {
            return Err(RefusalKind::BodyTooLarge.into());
        }
        cx.body_limit = Some(cx.body_limit.map_or(self.limit, |l| l.min(self.limit)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::Arc;
    use tollgate_session::{HashAlgorithm, KeyHashing};
    use tollgate_storage::Sessions;

    fn spec(extra: serde_json::Value) -> ApiSpec {
        let mut raw = serde_json::json!({"api_id": "a", "use_keyless": true,
            "proxy": {"listen_path": "/a/", "target_url": "http://u"}});
        if let (Some(o), Some(e)) = (raw.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        ApiSpec::from_json(&raw).unwrap()
    }

    fn config(text: &str) -> GatewayConfig {
        GatewayConfig::from_json(Path::new("/t/tyk.conf"), text).unwrap()
    }

    fn sessions() -> Arc<Sessions> {
        Sessions::in_memory(KeyHashing {
            hash_keys: true,
            algorithm: HashAlgorithm::Sha256,
        })
    }

    async fn run(
        chain: &Chain,
        spec: &ApiSpec,
        req: http::Request<()>,
    ) -> (Result<Flow, Refusal>, RequestCtx) {
        let (mut head, ()) = req.into_parts();
        let sessions = sessions();
        let mut req = StageRequest {
            head: &mut head,
            api: spec,
            sessions: &sessions,
            peer: std::net::Ipv4Addr::LOCALHOST.into(),
            client_cert: None,
        };
        let mut cx = RequestCtx::default();
        let r = chain.run(&mut req, &mut cx).await;
        (r, cx)
    }

    /// A POST declaring `len` body bytes is refused as too large before anything is read.
    async fn assert_refuses_length(chain: &Chain, spec: &ApiSpec, len: u64) {
        let req = http::Request::post("/a/")
            .header("content-length", len)
            .body(())
            .unwrap();
        let refused = run(chain, spec, req).await.0.unwrap_err();
        assert_eq!(refused.kind, RefusalKind::BodyTooLarge);
    }

    #[tokio::test]
    async fn keyless_api_without_limits_has_no_stages() {
        assert!(Chain::compile(&spec(serde_json::json!({})), &config("{}")).is_empty());
    }

    #[tokio::test]
    async fn body_limit_refuses_declared_length_and_sets_streaming_cap() {
        let s = spec(serde_json::json!({"max_request_body_size": 10}));
        let chain = Chain::compile(&s, &config("{}"));
        assert_refuses_length(&chain, &s, 11).await;
        let (r, cx) = run(&chain, &s, http::Request::post("/a/").body(()).unwrap()).await;
        r.unwrap();
        assert_eq!(cx.body_limit, Some(10));
    }

    #[tokio::test]
    async fn gateway_limit_applies_when_api_has_none() {
        let s = spec(serde_json::json!({}));
        let chain = Chain::compile(
            &s,
            &config(r#"{"http_server_options": {"max_request_body_size": 5}}"#),
        );
        assert_refuses_length(&chain, &s, 6).await;
    }

    #[tokio::test]
    async fn keyed_api_needs_a_key() {
        let s = spec(serde_json::json!({"use_keyless": false}));
        let chain = Chain::compile(&s, &config("{}"));
        assert_eq!(chain.stages.len(), 3);
        let (r, _) = run(&chain, &s, http::Request::get("/a/").body(()).unwrap()).await;
        let kind = r.unwrap_err().kind;
        assert_eq!(kind.status_and_message().1, "Authorization field missing");
    }

    #[tokio::test]
    async fn ip_rules_run_first_and_only_when_on() {
        // Peer 127.0.0.1 (see `run`), outside the list, with a too-large body and no key:
        // the IP refusal wins.
        let s = spec(
            serde_json::json!({"use_keyless": false, "max_request_body_size": 1,
            "allowed_ips": ["10.0.0.0/8"]}),
        );
        let chain = Chain::compile(&s, &config("{}"));
        assert!(matches!(chain.stages.first(), Some(Stage::IpRules(_))));
        let req = http::Request::post("/a/")
            .header("content-length", 5)
            .body(())
            .unwrap();
        let (r, _) = run(&chain, &s, req).await;
        assert_eq!(r.unwrap_err().kind, RefusalKind::IpDisallowed);
        // Allowed through X-Forwarded-For; the next stage decides.
        let req = http::Request::post("/a/")
            .header("content-length", 5)
            .header("x-forwarded-for", "10.1.2.3")
            .body(())
            .unwrap();
        let (r, _) = run(&chain, &s, req).await;
        assert_eq!(r.unwrap_err().kind, RefusalKind::BodyTooLarge);
        // Block-list on the peer.
        let s = spec(serde_json::json!({"blacklisted_ips": ["127.0.0.0/24"]}));
        let chain = Chain::compile(&s, &config("{}"));
        let (r, _) = run(&chain, &s, http::Request::get("/a/").body(()).unwrap()).await;
        assert_eq!(r.unwrap_err().kind, RefusalKind::IpDisallowed);
        // Switched off: no stage.
        let s = spec(serde_json::json!({"ip_access_control_disabled": true,
            "allowed_ips": ["10.0.0.0/8"], "blacklisted_ips": ["127.0.0.1"]}));
        assert!(Chain::compile(&s, &config("{}")).is_empty());
    }

    #[tokio::test]
    async fn cors_runs_first_and_a_preflight_ends_the_chain() {
        // Keyed, IP-restricted (the peer 127.0.0.1 is outside), CORS on.
        let s = spec(
            serde_json::json!({"use_keyless": false, "allowed_ips": ["10.0.0.0/8"],
            "CORS": {"enable": true, "allowed_origins": ["https://app.example"]}}),
        );
        let chain = Chain::compile(&s, &config("{}"));
        assert!(matches!(chain.stages.first(), Some(Stage::Cors(_))));
        // A preflight needs neither an allowed IP nor a key.
        let pre = http::Request::options("/a/")
            .header("origin", "https://app.example")
            .header("access-control-request-method", "GET")
            .body(())
            .unwrap();
        let (r, cx) = run(&chain, &s, pre).await;
        assert!(matches!(r, Ok(Flow::Reply(Reply { status, .. })) if status == 204));
        assert!(cx.cors.unwrap().allow_origin().is_some());
        // A GET is refused by the IP list, with its CORS headers already recorded.
        let get = http::Request::get("/a/")
            .header("origin", "https://app.example")
            .body(())
            .unwrap();
        let (r, cx) = run(&chain, &s, get).await;
        assert_eq!(r.unwrap_err().kind, RefusalKind::IpDisallowed);
        assert!(cx.cors.unwrap().allow_origin().is_some());
    }

    fn version(v: serde_json::Value) -> serde_json::Value {
        let mut d = serde_json::json!({"name": "Default", "use_extended_paths": true});
        if let (Some(o), Some(e)) = (d.as_object_mut(), v.as_object()) {
            o.extend(e.clone());
        }
        serde_json::json!({"version_data": {"not_versioned": true,
            "versions": {"Default": d}}})
    }

    fn with_body(method: &str, path: &str, len: Option<u64>) -> http::Request<()> {
        let b = http::Request::builder().method(method).uri(path);
        match len {
            Some(n) => b.header("content-length", n),
            None => b.header("transfer-encoding", "chunked"),
        }
        .body(())
        .unwrap()
    }

    #[tokio::test]
    async fn size_limits_check_declared_lengths_of_body_methods_only() {
        let s = spec(version(serde_json::json!({"global_size_limit": 1024,
            "extended_paths": {"size_limits": [
                {"path": "/post", "method": "POST", "size_limit": 512}]}})));
        let chain = Chain::compile(&s, &config("{}"));
        let kind = |r: Result<Flow, Refusal>| r.err().map(|r| r.kind);
        for (method, path, len, want) in [
            ("POST", "/a/x", Some(1024), None),
            (
                "POST",
                "/a/x",
                Some(1025),
                Some(RefusalKind::RequestTooLarge),
            ),
            (
                "PUT",
                "/a/x",
                Some(1025),
                Some(RefusalKind::RequestTooLarge),
            ),
            (
                "PATCH",
                "/a/x",
                None,
                Some(RefusalKind::ContentLengthRequired),
            ),
            ("POST", "/a/post", Some(512), None),
            (
                "POST",
                "/a/post",
                Some(513),
                Some(RefusalKind::RequestTooLarge),
            ),
            // The endpoint entry is POST only; the global limit still holds.
            ("PUT", "/a/post", Some(513), None),
            ("GET", "/a/x", Some(5000), None),
            ("DELETE", "/a/post", Some(5000), None),
            ("OPTIONS", "/a/x", None, None),
            ("HEAD", "/a/x", None, None),
            ("TRACE", "/a/x", None, None),
        ] {
            let (r, _) = run(&chain, &s, with_body(method, path, len)).await;
            assert_eq!(kind(r), want, "{method} {path} {len:?}");
        }
        let refused = run(&chain, &s, with_body("POST", "/a/x", Some(2000)))
            .await
            .0
            .unwrap_err();
        assert_eq!(
            refused.kind.status_and_message(),
            (StatusCode::BAD_REQUEST, "Request is too large")
        );
        assert!(refused.kind.closes_connection());
        // Without a global limit, a length is required only where an entry applies.
        let s = spec(version(
            serde_json::json!({"extended_paths": {"size_limits": [
            {"path": "/post", "method": "POST", "size_limit": 512}]}}),
        ));
        let chain = Chain::compile(&s, &config("{}"));
        run(&chain, &s, with_body("POST", "/a/other", None))
            .await
            .0
            .unwrap();
        let (r, _) = run(&chain, &s, with_body("POST", "/a/post", None)).await;
        assert_eq!(kind(r), Some(RefusalKind::ContentLengthRequired));
    }

    #[tokio::test]
    async fn size_limits_come_before_auth_and_apply_to_ignored_endpoints() {
        let mut d = version(serde_json::json!({"global_size_limit": 10,
            "extended_paths": {"ignored": [{"path": "/open", "method": "POST"}]}}));
        d["use_keyless"] = serde_json::json!(false);
        let raw = spec(d);
        let chain = Chain::compile(&raw, &config("{}"));
        for path in ["/a/open", "/a/closed"] {
            let (r, _) = run(&chain, &raw, with_body("POST", path, Some(11))).await;
            assert_eq!(r.unwrap_err().kind, RefusalKind::RequestTooLarge, "{path}");
        }
        let (r, _) = run(&chain, &raw, with_body("POST", "/a/closed", Some(10))).await;
        assert_eq!(r.unwrap_err().kind, RefusalKind::AuthFieldMissing);
        run(&chain, &raw, with_body("POST", "/a/open", Some(10)))
            .await
            .0
            .unwrap();
    }

    #[tokio::test]
    async fn hard_timeouts_are_recorded_for_the_endpoint() {
        let s = spec(version(
            serde_json::json!({"extended_paths": {"hard_timeouts": [
            {"path": "/slow", "method": "GET", "timeout": 1},
            {"path": "/long", "method": "GET", "timeout": 300},
            {"path": "/off", "method": "GET", "timeout": 1, "disabled": true}]}}),
        ));
        let chain = Chain::compile(&s, &config("{}"));
        for (path, want) in [
            ("/a/slow", Some(1)),
            ("/a/long", Some(300)),
            ("/a/off", None),
            ("/a/other", None),
        ] {
            let (r, cx) = run(&chain, &s, http::Request::get(path).body(()).unwrap()).await;
            assert!(matches!(r, Ok(Flow::Continue)));
            assert_eq!(
                cx.upstream_timeout,
                want.map(std::time::Duration::from_secs),
                "{path}"
            );
        }
    }

    #[tokio::test]
    async fn mocks_answer_last_after_auth() {
        let v = version(serde_json::json!({"extended_paths": {"mock_response": [
            {"path": "/mock", "method": "GET", "code": 201, "body": "m",
                "headers": {"x-m": "1"}}]}}));
        let s = spec(v.clone());
        let chain = Chain::compile(&s, &config("{}"));
        assert!(matches!(chain.stages.last(), Some(Stage::MockResponses(_))));
        let (r, _) = run(&chain, &s, http::Request::get("/a/mock").body(()).unwrap()).await;
        let Ok(Flow::Reply(reply)) = r else {
            panic!("no mock: {r:?}");
        };
        assert_eq!(reply.status, StatusCode::CREATED);
        let resp = reply.into_response();
        assert_eq!(resp.headers()["x-m"], "1");
        let (r, _) = run(&chain, &s, http::Request::post("/a/mock").body(()).unwrap()).await;
        assert!(matches!(r, Ok(Flow::Continue)));
        // On a keyed API, no key: refused before the mock.
        let mut keyed = v;
        keyed["use_keyless"] = serde_json::json!(false);
        let s = spec(keyed);
        let chain = Chain::compile(&s, &config("{}"));
        let (r, _) = run(&chain, &s, http::Request::get("/a/mock").body(()).unwrap()).await;
        assert_eq!(r.unwrap_err().kind, RefusalKind::AuthFieldMissing);
    }

    #[tokio::test]
    async fn xff_depth_comes_from_the_config() {
        let s = spec(serde_json::json!({"allowed_ips": ["10.0.0.2"]}));
        let req = || {
            http::Request::get("/a/")
                .header("x-forwarded-for", "10.0.0.1, 10.0.0.2")
                .body(())
                .unwrap()
        };
        let chain = Chain::compile(&s, &config("{}"));
        assert_eq!(
            run(&chain, &s, req()).await.0.unwrap_err().kind,
            RefusalKind::IpDisallowed
        );
        let chain = Chain::compile(&s, &config(r#"{"http_server_options": {"xff_depth": 1}}"#));
        run(&chain, &s, req()).await.0.unwrap();
    }
}
