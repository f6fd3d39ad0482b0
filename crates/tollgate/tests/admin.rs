//! The Gateway REST API under /tyk/ (same port as the proxy).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tollgate_testkit::raw::{RawResponse, get, request};
use tollgate_testkit::{Gateway, MockUpstream, api_def, gateway, start_with_api};

const DENIED: &str = "Attempted administrative access with invalid or missing key!";

fn api_not_found() -> Value {
    json!({"status": "error", "message": "API not found"})
}

fn ok_reload() -> Value {
    json!({"status": "ok", "message": ""})
}

/// The API definition files in `dir` whose `api_id` is `id`.
fn files_with_api_id(dir: &Path, id: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if v["api_id"] == id {
            out.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    out
}

fn dir_listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A raw admin request; returns status and JSON body.
async fn raw_admin(
    gw: &Gateway,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &[u8],
) -> (u16, Value) {
    let mut headers = Vec::new();
    if let Some(a) = auth {
        headers.push(("x-tyk-authorization", a));
    }
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    let r = request(gw.addr(), method, path, &headers, body).await;
    let v = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
        panic!(
            "{method} {path}: body is not JSON ({e}):\n{}{}",
            r.head,
            r.text()
        )
    });
    (r.status, v)
}

/// `GET path` without the secret answers `status` with a JSON body;
/// returns the response and the body parsed.
async fn get_json(gw: &Gateway, path: &str, status: u16) -> (RawResponse, Value) {
    let r = get(gw.addr(), path, &[]).await;
    assert_eq!(r.status, status);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    (r, v)
}

async fn reload(gw: &Gateway) {
    let (status, body) = gw.admin_get("/tyk/reload?block=true").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, ok_reload());
}

#[tokio::test]
async fn hello_needs_no_secret() {
    let gw = gateway!().start().await;
    let (_, v) = get_json(&gw, "/hello", 200).await;
    assert_eq!(v["status"], "pass", "{v}");
}

#[tokio::test]
async fn admin_calls_without_the_right_secret_are_403() {
    let up = MockUpstream::start().await;
    let gw = start_with_api!("a", "/a/", &up.url()).await;
    let before = dir_listing(&gw.apps_dir());
    let new_def = api_def("sneaky", "/sneaky/", &up.url()).to_string();
    let calls: [(&str, &str, &[u8]); 7] = [
        ("GET", "/tyk/apis", b""),
        ("GET", "/tyk/apis/a", b""),
        ("POST", "/tyk/apis", new_def.as_bytes()),
        ("PUT", "/tyk/apis/a", b"{}"),
        ("DELETE", "/tyk/apis/a", b""),
        ("GET", "/tyk/reload", b""),
        ("GET", "/tyk/reload/group", b""),
    ];
    for (method, path, body) in calls {
        for auth in [None, Some("wrong-secret"), Some(""), Some("TEST-SECRET")] {
            let (status, v) = raw_admin(&gw, method, path, auth, body).await;
            assert_eq!(status, 403, "{method} {path} with {auth:?}: {v}");
            assert_eq!(
                v,
                json!({"status": "error", "message": DENIED}),
                "{method} {path}"
            );
        }
    }
    assert_eq!(
        dir_listing(&gw.apps_dir()),
        before,
        "a denied call changed app_path"
    );
    // Still serving the API that a denied DELETE targeted.
    gw.assert_get_ok("/a/x").await;
}

#[tokio::test]
async fn forbidden_body_is_exact_json_with_newline() {
    let gw = gateway!().start().await;
    let (r, v) = get_json(&gw, "/tyk/apis", 403).await;
    assert_eq!(v, json!({"status": "error", "message": DENIED}));
    assert!(r.body.ends_with(b"\n"), "{:?}", r.text());
}

#[tokio::test]
async fn empty_secret_disables_the_admin_api() {
    let up = MockUpstream::start().await;
    let gw = gateway!()
        .secret("")
        .with_api("a", "/a/", &up.url())
        .start()
        .await;
    let before = dir_listing(&gw.apps_dir());
    let new_def = api_def("sneaky", "/sneaky/", &up.url()).to_string();
    for auth in [None, Some(""), Some("anything")] {
        for (method, path, body) in [
            ("GET", "/tyk/apis", &b""[..]),
            ("GET", "/tyk/reload?block=true", b""),
            ("POST", "/tyk/apis", new_def.as_bytes()),
            ("DELETE", "/tyk/apis/a", b""),
        ] {
            let (status, v) = raw_admin(&gw, method, path, auth, body).await;
            assert_eq!(status, 403, "{method} {path} with {auth:?}: {v}");
            assert_eq!(v["status"], "error", "{v}");
        }
    }
    assert_eq!(dir_listing(&gw.apps_dir()), before);
    let r = get(gw.addr(), "/hello", &[]).await;
    assert_eq!(r.status, 200);
    gw.assert_get_ok("/a/x").await;
}

#[tokio::test]
async fn list_and_get_apis() {
    let up = MockUpstream::start().await;
    let empty = gateway!().start().await;
    let (status, v) = empty.admin(Method::GET, "/tyk/apis", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, json!([]));
    drop(empty);

    let gw = gateway!()
        .with_api("one", "/one/", &up.url())
        .with_api("two", "/two/", &up.url())
        .start()
        .await;
    for path in ["/tyk/apis", "/tyk/apis/"] {
        let (status, v) = gw.admin_get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let mut ids: Vec<&str> = v
            .as_array()
            .unwrap_or_else(|| panic!("{path}: not an array: {v}"))
            .iter()
            .map(|d| d["api_id"].as_str().unwrap())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, ["one", "two"], "{path}");
    }

    let (status, v) = gw.admin_get("/tyk/apis/one").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["api_id"], "one");
    assert_eq!(v["proxy"]["listen_path"], "/one/");
    assert_eq!(v["proxy"]["target_url"], up.url());

    let (status, v) = gw.admin_get("/tyk/apis/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v, api_not_found());
}

#[tokio::test]
async fn created_api_goes_live_only_after_reload() {
    let up = MockUpstream::start().await;
    let gw = gateway!().start().await;
    let def = api_def("new1", "/new1/", &up.url());

    let (status, v) = gw.admin(Method::POST, "/tyk/apis", Some(&def)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, json!({"key": "new1", "status": "ok", "action": "added"}));
    let files = files_with_api_id(&gw.apps_dir(), "new1");
    assert_eq!(
        files.len(),
        1,
        "app_path: {:?}",
        dir_listing(&gw.apps_dir())
    );
    assert!(files[0].ends_with(".json"), "{files:?}");

    // Not live yet.
    let (status, v) = gw.admin_get("/tyk/apis/new1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v, api_not_found());
    let (status, v) = gw.admin_get("/tyk/apis").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, json!([]), "the list shows an API that is not loaded yet");
    gw.assert_not_found("/new1/x", &[]).await;
    assert_eq!(up.request_count(), 0);

    reload(&gw).await;

    let (status, v) = gw.admin_get("/tyk/apis/new1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["api_id"], "new1");
    assert_eq!(v["proxy"]["listen_path"], "/new1/");
    let (_, v) = gw.admin_get("/tyk/apis").await;
    assert_eq!(v.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v[0]["api_id"], "new1");
    gw.assert_routed(&up, "/new1/x?y=1", &[], "/x?y=1").await;
}

#[tokio::test]
async fn create_without_api_id_generates_one() {
    let up = MockUpstream::start().await;
    let gw = gateway!().start().await;
    let mut def = api_def("unused", "/gen/", &up.url());
    def.as_object_mut().unwrap().remove("api_id");

    let (status, v) = gw.admin(Method::POST, "/tyk/apis/", Some(&def)).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "ok");
    assert_eq!(v["action"], "added");
    let key = v["key"].as_str().expect("key is a string").to_owned();
    assert!(!key.is_empty());
    assert_eq!(files_with_api_id(&gw.apps_dir(), &key).len(), 1);

    reload(&gw).await;
    let (status, v) = gw.admin_get(&format!("/tyk/apis/{key}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["api_id"], key.as_str());
    gw.assert_routed(&up, "/gen/z", &[], "/z").await;
}

#[tokio::test]
async fn update_api() {
    let old = MockUpstream::start().await;
    let new = MockUpstream::start().await;
    let gw = start_with_api!("p1", "/p1/", &old.url()).await;

    // Mismatched id: rejected, nothing changes.
    let other = api_def("other", "/p1/", &new.url());
    let (status, v) = gw.admin(Method::PUT, "/tyk/apis/p1", Some(&other)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        v,
        json!({"status": "error", "message": "Request APIID does not match that in Definition! For Update operations these must match."})
    );
    assert!(files_with_api_id(&gw.apps_dir(), "other").is_empty());

    // Unknown id.
    let unknown = api_def("nope", "/nope/", &new.url());
    let (status, v) = gw
        .admin(Method::PUT, "/tyk/apis/nope", Some(&unknown))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v, api_not_found());
    assert!(files_with_api_id(&gw.apps_dir(), "nope").is_empty());

    let updated = api_def("p1", "/p1/", &new.url());
    let (status, v) = gw.admin(Method::PUT, "/tyk/apis/p1", Some(&updated)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        v,
        json!({"key": "p1", "status": "ok", "action": "modified"})
    );

    // Not live until reload.
    gw.assert_routed(&old, "/p1/before", &[], "/before").await;
    assert_eq!(new.request_count(), 0);

    reload(&gw).await;
    gw.assert_routed(&new, "/p1/after", &[], "/after").await;
    assert_eq!(old.request_count(), 1);
    let (status, v) = gw.admin_get("/tyk/apis/p1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["proxy"]["target_url"], new.url());
    assert_eq!(files_with_api_id(&gw.apps_dir(), "p1").len(), 1);
}

#[tokio::test]
async fn delete_api() {
    let up = MockUpstream::start().await;
    let gw = gateway!()
        .with_api("d1", "/d1/", &up.url())
        .with_api("keep", "/keep/", &up.url())
        .start()
        .await;

    let (status, v) = gw.admin(Method::DELETE, "/tyk/apis/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v, api_not_found());

    let (status, v) = gw.admin(Method::DELETE, "/tyk/apis/d1", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, json!({"key": "d1", "status": "ok", "action": "deleted"}));
    assert!(
        files_with_api_id(&gw.apps_dir(), "d1").is_empty(),
        "file not removed: {:?}",
        dir_listing(&gw.apps_dir())
    );

    reload(&gw).await;
    gw.assert_not_found("/d1/x", &[]).await;
    let (status, v) = gw.admin_get("/tyk/apis/d1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v, api_not_found());
    gw.assert_get_ok("/keep/x").await;
    assert_eq!(up.request_count(), 1);
}

#[tokio::test]
async fn malformed_json_body_is_400() {
    let up = MockUpstream::start().await;
    let gw = start_with_api!("m", "/m/", &up.url()).await;
    let before = dir_listing(&gw.apps_dir());
    let malformed = json!({"status": "error", "message": "Request malformed"});
    for (method, path) in [("POST", "/tyk/apis"), ("PUT", "/tyk/apis/m")] {
        for body in [&b"{not json"[..], b"[1,2"] {
            let (status, v) = raw_admin(&gw, method, path, Some(gw.secret()), body).await;
            assert_eq!(
                status,
                400,
                "{method} {path} {:?}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(v, malformed);
        }
    }
    assert_eq!(dir_listing(&gw.apps_dir()), before);
    reload(&gw).await;
    gw.assert_get_ok("/m/x").await;
}

#[tokio::test]
async fn reload_endpoints() {
    let gw = gateway!().start().await;
    for path in ["/tyk/reload/group", "/tyk/reload?block=true"] {
        let (status, v) = gw.admin_get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(v, ok_reload(), "{path}");
    }
    let (status, _) = gw.admin_get("/tyk/reload").await;
    assert_eq!(status, StatusCode::OK);
}
