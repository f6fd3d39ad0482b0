//! Tyk's API-definition CORS: the first stage of the chain, before the IP lists and auth, as
//! Tyk's CORS handler wraps its whole middleware chain.
//!
//! The policy is compiled when the definition loads ([`tollgate_rules::cors::CorsPolicy`],
//! which also holds every decision); this stage only applies it:
//!
//! - A preflight (`OPTIONS` with `Access-Control-Request-Method`) is answered here with 204,
//!   so it never needs a key, an allowed IP or an upstream that understands `OPTIONS`, unless
//!   `options_passthrough` is on: then it goes on through the chain to the upstream like any
//!   request, and its response gets the preflight headers all the same (rs/cors sets them on
//!   the writer before passing the request on).
//! - Any other request goes on; the headers its origin earns are recorded in
//!   [`RequestCtx::cors`] and put on whatever response it gets: the upstream's, and the
//!   gateway's own refusals from the stages after this one (a 401 from auth, a 429), since Tyk
//!   sets them before the later middleware runs. Without them a browser could not even read
//!   why it was refused.
//!
//! With `debug` on, each decision is logged at INFO (`tollgate::cors`), as Tyk's `debug`
//! prints rs/cors's log.

use std::sync::Arc;

use http::StatusCode;
use tollgate_definitions::ApiSpec;
use tollgate_rules::cors::{self, CorsHeaders, CorsPolicy};

use crate::chain::{Flow, Reply};
use crate::ctx::{RequestCtx, StageRequest};

/// The CORS settings of one API.
#[derive(Debug)]
pub(crate) struct Cors {
    policy: Arc<CorsPolicy>,
}

impl Cors {
    /// The stage for `spec`, or `None` when CORS is off.
    pub(crate) fn compile(spec: &ApiSpec) -> Option<Self> {
        spec.cors.clone().map(|policy| Self { policy })
    }

    /// Records the request's CORS headers; answers a preflight itself unless it passes
    /// through.
    pub(crate) fn on_request(&self, req: &StageRequest<'_>, cx: &mut RequestCtx) -> Flow {
        let head = &*req.head;
        let preflight = cors::is_preflight(&head.method, &head.headers);
        let headers = if preflight {
            self.policy.preflight(&head.headers)
        } else {
            self.policy.actual(&head.method, &head.headers)
        };
        if self.policy.debug() {
            log(req, preflight, &headers);
        }
        cx.cors = Some(headers);
        if preflight && !self.policy.options_passthrough() {
            Flow::Reply(Reply {
                status: StatusCode::NO_CONTENT,
                mock: None,
            })
        } else {
            Flow::Continue
        }
    }
}

fn log(req: &StageRequest<'_>, preflight: bool, headers: &CorsHeaders) {
    let origin = req
        .head
        .headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info!(
        target: "tollgate::cors",
        api_id = &*req.api.api_id,
        preflight,
        origin,
        allowed = headers.denied().is_none(),
        reason = headers.denied().map_or("", |d| d.reason()),
        "CORS decision."
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_session::{HashAlgorithm, KeyHashing};
    use tollgate_storage::Sessions;

    fn stage(cors: serde_json::Value) -> (Cors, ApiSpec) {
        let spec = ApiSpec::from_json(&serde_json::json!({"api_id": "a", "use_keyless": true,
            "proxy": {"listen_path": "/a/", "target_url": "http://u"}, "CORS": cors}))
        .unwrap();
        (Cors::compile(&spec).unwrap(), spec)
    }

    fn run(stage: &Cors, spec: &ApiSpec, req: http::Request<()>) -> (Flow, RequestCtx) {
        let (mut head, ()) = req.into_parts();
        let sessions = Sessions::in_memory(KeyHashing {
            hash_keys: true,
            algorithm: HashAlgorithm::Sha256,
        });
        let req = StageRequest {
            head: &mut head,
            api: spec,
            sessions: &sessions,
            peer: std::net::Ipv4Addr::LOCALHOST.into(),
            client_cert: None,
        };
        let mut cx = RequestCtx::default();
        let flow = stage.on_request(&req, &mut cx);
        (flow, cx)
    }

    fn preflight(origin: &str) -> http::Request<()> {
        http::Request::options("/a/x")
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .body(())
            .unwrap()
    }

    #[test]
    fn preflight_is_answered_with_204_and_its_headers_recorded() {
        let (s, spec) = stage(serde_json::json!({"enable": true,
            "allowed_origins": ["https://app.example"], "allowed_methods": ["PUT"]}));
        let (flow, cx) = run(&s, &spec, preflight("https://app.example"));
        assert!(matches!(flow, Flow::Reply(Reply { status, .. }) if status == 204));
        let h = cx.cors.unwrap();
        assert_eq!(h.denied(), None);
        assert_eq!(h.allow_origin().unwrap(), "https://app.example");
        // A refused preflight is answered too, without Allow-* headers.
        let (flow, cx) = run(&s, &spec, preflight("https://evil.example"));
        assert!(matches!(flow, Flow::Reply(_)));
        assert!(cx.cors.unwrap().allow_origin().is_none());
    }

    #[test]
    fn passthrough_preflight_and_actual_requests_continue() {
        let (s, spec) = stage(
            serde_json::json!({"enable": true, "options_passthrough": true, "allowed_methods": ["PUT"]}),
        );
        let (flow, cx) = run(&s, &spec, preflight("https://app.example"));
        assert!(matches!(flow, Flow::Continue));
        assert_eq!(cx.cors.unwrap().allow_origin().unwrap(), "*");

        let (s, spec) = stage(serde_json::json!({"enable": true}));
        let get = http::Request::get("/a/x")
            .header("origin", "https://app.example")
            .body(())
            .unwrap();
        let (flow, cx) = run(&s, &spec, get);
        assert!(matches!(flow, Flow::Continue));
        assert_eq!(cx.cors.unwrap().allow_origin().unwrap(), "*");
        // An OPTIONS without Access-Control-Request-Method is not a preflight.
        let options = http::Request::options("/a/x")
            .header("origin", "https://app.example")
            .body(())
            .unwrap();
        assert!(matches!(run(&s, &spec, options).0, Flow::Continue));
    }

    #[test]
    fn off_means_no_stage() {
        let spec = ApiSpec::from_json(&serde_json::json!({"api_id": "a", "use_keyless": true,
            "proxy": {"listen_path": "/a/", "target_url": "http://u"},
            "CORS": {"enable": false}}))
        .unwrap();
        assert!(Cors::compile(&spec).is_none());
    }
}
