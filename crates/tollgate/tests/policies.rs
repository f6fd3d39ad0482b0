//! Policies from the `policies.policy_record_name` file: keys that apply
//! them, the /tyk/policies endpoints, and reloading an edited file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use serde_json::{Value, json};
use tempfile::TempDir;
use tollgate_testkit::keys::*;
use tollgate_testkit::{Gateway, MockUpstream, gateway};

const API: &str = "keyed";

fn policy(api_ids: &[&str], extra: Value) -> Value {
    let mut p = json!({
        "org_id": ORG,
        "rate": 100,
        "per": 1,
        "quota_max": 1000,
        "quota_renewal_rate": 3600,
        "access_rights": rights(api_ids),
        "tags": ["gold"],
    });
    tollgate_testkit::merge_json(&mut p, extra);
    p
}

fn gold(api_ids: &[&str]) -> Value {
    policy(api_ids, json!({}))
}

/// A policy file in its own temp folder next to the gateway's, named in
/// tyk.conf by a path relative to the gateway's config folder.
struct PolicyFile {
    dir: TempDir,
}

impl PolicyFile {
    fn new(policies: &Value) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tollgate-policies-")
            .tempdir_in(std::env::temp_dir())
            .unwrap();
        let f = Self { dir };
        f.write(policies);
        f
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("policies.json")
    }

    fn write(&self, policies: &Value) {
        std::fs::write(self.path(), serde_json::to_vec_pretty(policies).unwrap()).unwrap();
    }

    /// `../<folder>/policies.json`: the gateway's temp folder and this one
    /// share a parent.
    fn relative(&self) -> String {
        format!(
            "../{}/policies.json",
            self.dir.path().file_name().unwrap().to_string_lossy()
        )
    }
}

async fn start_with(up: &MockUpstream, pf: &PolicyFile, policies_conf: Value) -> Gateway {
    let mut policies = json!({"policy_record_name": pf.relative()});
    tollgate_testkit::merge_json(&mut policies, policies_conf);
    let keyed = with_keyed_api(
        gateway!().conf(json!({"policies": policies})),
        &up.url(),
        json!({}),
    );
    with_other_api(keyed, &up.url()).start().await
}

async fn start(up: &MockUpstream, pf: &PolicyFile) -> Gateway {
    start_with(up, pf, json!({})).await
}

/// [`start_with`] a new upstream and a policy file holding only `gold`
/// for `keyed`.
async fn start_gold(policies_conf: Value) -> (MockUpstream, PolicyFile, Gateway) {
    let up = MockUpstream::start().await;
    let pf = PolicyFile::new(&json!({"gold": gold(&[API])}));
    let gw = start_with(&up, &pf, policies_conf).await;
    (up, pf, gw)
}

/// Asserts `key` works on /api/ (`keyed`) and is refused on /other/.
async fn assert_only_keyed(gw: &Gateway, up: &MockUpstream, key: &str) {
    assert_key_proxied(gw, up, "/api/p", key, "/p").await;
    assert_key_refused(gw, up, "/other/p", key, 403, MSG_DISALLOWED).await;
}

async fn reload(gw: &Gateway) {
    let a = admin(gw, "GET", "/tyk/reload?block=true", None).await;
    assert_eq!(
        (a.status, &a.json),
        (200, &json!({"status": "ok", "message": ""}))
    );
}

/// A key body applying `policies` with no access rights of its own.
fn policy_key(policies: &[&str]) -> Value {
    let mut body = session_for(&[]);
    let fields = body.as_object_mut().unwrap();
    fields.remove("access_rights");
    fields.insert("apply_policies".to_owned(), json!(policies));
    body
}

#[tokio::test]
async fn key_with_only_a_policy_gets_the_policy_access() {
    let (up, _pf, gw) = start_gold(json!({})).await;
    let (key, hash) = create_key(&gw, &policy_key(&["gold"])).await;
    // The policy grants only its APIs.
    assert_only_keyed(&gw, &up, &key).await;

    let s = get_session(&gw, &key).await;
    assert_eq!(s["apply_policies"], json!(["gold"]), "{s}");
    assert_eq!(s["org_id"], ORG, "{s}");
    assert_eq!(get_session(&gw, &format!("{hash}?hashed=true")).await, s);

    // A custom key with a policy too.
    create_custom_key(&gw, "policy-custom", &policy_key(&["gold"]), Some(64)).await;
    assert_key_proxied(&gw, &up, "/api/p", "policy-custom", "/p").await;
}

#[tokio::test]
async fn policy_source_file_is_accepted() {
    let (up, _pf, gw) = start_gold(json!({"policy_source": "file"})).await;
    let (key, _) = create_key(&gw, &policy_key(&["gold"])).await;
    assert_key_proxied(&gw, &up, "/api/p", &key, "/p").await;
}

#[tokio::test]
async fn list_and_get_policies() {
    let up = MockUpstream::start().await;
    let silver = policy(&["other"], json!({"rate": 10, "tags": ["silver"]}));
    let pf = PolicyFile::new(&json!({"gold": gold(&[API]), "silver": silver}));
    let gw = start(&up, &pf).await;

    let a = admin(&gw, "GET", "/tyk/policies", None).await;
    assert_eq!(a.status, 200, "{}", a.json);
    let list = a
        .json
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {}", a.json));
    let mut ids: Vec<&str> = list
        .iter()
        .map(|p| p["id"].as_str().unwrap_or(""))
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["gold", "silver"], "{}", a.json);
    let g = list.iter().find(|p| p["id"] == "gold").unwrap();
    // Numbers compare by value (Tyk's floats print as `100`, serde's as
    // `100.0`; both are the JSON number 100).
    assert_eq!(g["rate"].as_f64(), Some(100.0), "{g}");
    assert_eq!(g["per"].as_f64(), Some(1.0), "{g}");
    assert_eq!(g["quota_max"].as_f64(), Some(1000.0), "{g}");
    assert_eq!(g["quota_renewal_rate"].as_f64(), Some(3600.0), "{g}");
    assert_eq!(g["tags"], json!(["gold"]), "{g}");
    assert_eq!(g["org_id"], ORG, "{g}");
    assert_eq!(g["access_rights"][API]["api_id"], API, "{g}");

    let a = admin(&gw, "GET", "/tyk/policies/gold", None).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(&a.json, g);
    let a = admin(&gw, "GET", "/tyk/policies/silver", None).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["id"], "silver");
    assert_eq!(a.json["rate"].as_f64(), Some(10.0), "{}", a.json);
    assert_eq!(a.json["tags"], json!(["silver"]));
    assert_eq!(a.json["access_rights"]["other"]["api_id"], "other");

    let a = admin(&gw, "GET", "/tyk/policies/bronze", None).await;
    assert_admin_error(&a, 404, "Policy not found");
}

#[tokio::test]
async fn policies_endpoints_require_the_secret() {
    let (_up, _pf, gw) = start_gold(json!({})).await;
    for path in ["/tyk/policies", "/tyk/policies/gold"] {
        let r = tollgate_testkit::raw::get(gw.addr(), path, &[]).await;
        assert_admin_denied(&r, path);
    }
}

#[tokio::test]
async fn unknown_policy_fails_creation() {
    let (up, _pf, gw) = start_gold(json!({})).await;
    for path in ["/tyk/keys/create", "/tyk/keys/unknown-policy-key"] {
        // Without access rights, and with access rights of its own.
        let own = session_with(&[API], json!({"apply_policies": ["nope"]}));
        for body in [policy_key(&["nope"]), own] {
            let a = admin(&gw, "POST", path, Some(&body)).await;
            assert_eq!(a.status, 500, "{path}: {}", a.json);
            assert_eq!(a.json["status"], "error", "{path}: {}", a.json);
            let msg = a.json["message"].as_str().unwrap_or_default();
            assert!(
                msg.starts_with("Failed to create key"),
                "{path}: {}",
                a.json
            );
        }
    }
    assert_key_absent(&gw, "unknown-policy-key").await;
    assert_key_refused(
        &gw,
        &up,
        "/api/p",
        "unknown-policy-key",
        403,
        MSG_DISALLOWED,
    )
    .await;
}

#[tokio::test]
async fn editing_the_policy_file_and_reloading_revokes_access() {
    let (up, pf, gw) = start_gold(json!({})).await;
    let (key, _) = create_key(&gw, &policy_key(&["gold"])).await;
    assert_only_keyed(&gw, &up, &key).await;

    pf.write(&json!({"gold": gold(&["other"])}));
    reload(&gw).await;
    assert_key_refused(&gw, &up, "/api/p", &key, 403, MSG_DISALLOWED).await;
    assert_key_proxied(&gw, &up, "/other/p", &key, "/p").await;
    let a = admin(&gw, "GET", "/tyk/policies/gold", None).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(
        a.json["access_rights"]["other"]["api_id"], "other",
        "{}",
        a.json
    );
    assert!(a.json["access_rights"].get(API).is_none(), "{}", a.json);

    // And back.
    pf.write(&json!({"gold": gold(&[API])}));
    reload(&gw).await;
    assert_key_proxied(&gw, &up, "/api/p", &key, "/p").await;
}

#[tokio::test]
async fn inactive_policy_makes_its_keys_inactive() {
    let up = MockUpstream::start().await;
    let pf = PolicyFile::new(&json!({
        "gold": gold(&[API]),
        "off": policy(&[API], json!({"is_inactive": true})),
    }));
    let gw = start(&up, &pf).await;
    let (off_key, _) = create_key(&gw, &policy_key(&["off"])).await;
    assert_key_refused(&gw, &up, "/api/p", &off_key, 403, MSG_INACTIVE).await;

    let (key, _) = create_key(&gw, &policy_key(&["gold"])).await;
    assert_key_proxied(&gw, &up, "/api/p", &key, "/p").await;
    pf.write(&json!({
        "gold": policy(&[API], json!({"is_inactive": true})),
        "off": policy(&[API], json!({"is_inactive": true})),
    }));
    reload(&gw).await;
    assert_key_refused(&gw, &up, "/api/p", &key, 403, MSG_INACTIVE).await;
}

#[tokio::test]
async fn policy_keys_survive_restart() {
    let (up, _pf, mut gw) = start_gold(json!({})).await;
    let (key, _) = create_key(&gw, &policy_key(&["gold"])).await;
    gw.restart().await;
    assert_key_proxied(&gw, &up, "/api/p", &key, "/p").await;
    let a = admin(&gw, "GET", "/tyk/policies/gold", None).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json["id"], "gold");
}

/// Asserts an admin reply is `status` with Tyk's `{"status": "error", "message": ...}`.
fn assert_admin_error(a: &tollgate_testkit::keys::Admin, status: u16, message: &str) {
    assert_eq!(
        (a.status, &a.json),
        (status, &json!({"status": "error", "message": message})),
        "{}",
        a.raw.dump()
    );
}

#[tokio::test]
async fn the_policies_api_writes_the_policy_folder_live_after_reload() {
    let up = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gold.json"),
        serde_json::to_vec(&gold(&[API])).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("broken.json"), b"{not json").unwrap();
    let gw = with_keyed_api(
        gateway!().conf(json!({"policies": {"policy_path": dir.path()}})),
        &up.url(),
        json!({}),
    )
    .start()
    .await;
    // The folder's policies are loaded (the file name stands for a missing id); a broken file
    // is skipped with a log line.
    let a = admin(&gw, "GET", "/tyk/policies/gold", None).await;
    assert_eq!(
        (a.status, &a.json["rate"]),
        (200, &json!(100)),
        "{}",
        a.json
    );
    gw.wait_stderr(&["broken.json"]).await;

    let silver = policy(&[API], json!({"rate": 5}));
    assert_admin_error(
        &admin(&gw, "POST", "/tyk/policies", Some(&silver)).await,
        400,
        "Unable to create policy without id.",
    );
    let a = admin(&gw, "POST", "/tyk/policies/silver", Some(&silver)).await;
    assert_eq!(
        (a.status, &a.json),
        (
            200,
            &json!({"key": "silver", "status": "ok", "action": "added"})
        )
    );
    // Not live until a reload, as in Tyk.
    assert_eq!(
        admin(&gw, "GET", "/tyk/policies/silver", None).await.status,
        404
    );
    reload(&gw).await;
    let a = admin(&gw, "GET", "/tyk/policies/silver", None).await;
    assert_eq!((a.status, &a.json["rate"]), (200, &json!(5)), "{}", a.json);
    let (key, _) = create_key(&gw, &policy_key(&["silver"])).await;
    assert_key_proxied(&gw, &up, "/api/p", &key, "/p").await;

    let mut other_id = silver.clone();
    other_id["id"] = json!("bronze");
    assert_admin_error(
        &admin(&gw, "PUT", "/tyk/policies/silver", Some(&other_id)).await,
        400,
        "Request ID does not match that in policy! For Update operations these must match.",
    );
    let mut inactive = silver.clone();
    inactive["is_inactive"] = json!(true);
    let a = admin(&gw, "PUT", "/tyk/policies/silver", Some(&inactive)).await;
    assert_eq!(a.json["action"], "modified", "{}", a.json);
    reload(&gw).await;
    assert_key_refused(&gw, &up, "/api/p", &key, 403, MSG_INACTIVE).await;

    // Bad bodies and ids change nothing on disk.
    let before = std::fs::read(dir.path().join("silver.json")).unwrap();
    let malformed = admin_bytes(&gw, "PUT", "/tyk/policies/silver", b"{\"rate\": ").await;
    assert_admin_error(&malformed, 400, "Request malformed");
    let wrong_type = admin(
        &gw,
        "PUT",
        "/tyk/policies/silver",
        Some(&json!({"rate": "fast"})),
    )
    .await;
    assert_admin_error(&wrong_type, 400, "Request malformed");
    let unsafe_id = admin(&gw, "POST", "/tyk/policies/..%2Fescape", Some(&silver)).await;
    assert_admin_error(&unsafe_id, 400, "Invalid Policy ID");
    assert_eq!(
        std::fs::read(dir.path().join("silver.json")).unwrap(),
        before
    );
    assert!(!dir.path().parent().unwrap().join("escape.json").exists());

    let a = admin(&gw, "DELETE", "/tyk/policies/silver", None).await;
    assert_eq!(a.json["action"], "deleted", "{}", a.json);
    assert_admin_error(
        &admin(&gw, "DELETE", "/tyk/policies/silver", None).await,
        500,
        "Delete failed",
    );
    reload(&gw).await;
    assert_eq!(
        admin(&gw, "GET", "/tyk/policies/silver", None).await.status,
        404
    );
}

#[tokio::test]
async fn without_a_policy_folder_writes_are_refused() {
    let (_up, _pf, gw) = start_gold(json!({})).await;
    assert_admin_error(
        &admin(&gw, "POST", "/tyk/policies/x", Some(&gold(&[API]))).await,
        500,
        "Unable to access policy storage.",
    );
}

#[tokio::test]
async fn a_keys_policies_are_set_by_its_hash() {
    let up = MockUpstream::start().await;
    let pf = PolicyFile::new(&json!({"gold": gold(&[API]), "elsewhere": gold(&["other"])}));
    let gw = start(&up, &pf).await;
    let (key, hash) = create_key(&gw, &policy_key(&["gold"])).await;
    assert_only_keyed(&gw, &up, &key).await;

    let path = format!("/tyk/keys/policy/{hash}");
    let a = admin(
        &gw,
        "POST",
        &path,
        Some(&json!({"apply_policies": ["elsewhere"]})),
    )
    .await;
    assert_eq!(
        (a.status, &a.json),
        (
            200,
            &json!({"key": hash, "status": "ok", "action": "updated"})
        ),
        "{}",
        a.raw.dump()
    );
    assert_key_proxied(&gw, &up, "/other/p", &key, "/p").await;
    assert_key_refused(&gw, &up, "/api/p", &key, 403, MSG_DISALLOWED).await;
    assert_eq!(
        get_session(&gw, &key).await["apply_policies"],
        json!(["elsewhere"])
    );

    // The legacy single-policy form; an unknown policy changes nothing.
    let a = admin(&gw, "POST", &path, Some(&json!({"policy": "gold"}))).await;
    assert_eq!(a.status, 200, "{}", a.json);
    let a = admin(
        &gw,
        "POST",
        &path,
        Some(&json!({"apply_policies": ["platinum"]})),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.json);
    assert_eq!(
        get_session(&gw, &key).await["apply_policies"],
        json!(["gold"])
    );
    assert_only_keyed(&gw, &up, &key).await;
    let a = admin(
        &gw,
        "POST",
        "/tyk/keys/policy/no-such-hash",
        Some(&json!({"policy": "gold"})),
    )
    .await;
    assert_admin_error(&a, 404, "Key not found");
}
