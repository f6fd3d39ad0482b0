//! The keys REST API under /tyk/keys: create, read, update, delete, hashed
//! addressing, listing, validation, and durability of the embedded store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{Value, json};
use tollgate_testkit::encoding::b64decode;
use tollgate_testkit::keys::*;
use tollgate_testkit::raw::{assert_tyk_error, request};
use tollgate_testkit::{Gateway, MockUpstream, gateway};

const API: &str = "keyed";

/// A gateway and the upstream its APIs proxy to.
struct Env {
    gw: Gateway,
    up: MockUpstream,
}

/// A gateway with the keyed API (`keyed` on /api/) and `other` on /other/
/// proxying to a new upstream, with `conf` merged into tyk.conf.
async fn start(conf: Value) -> Env {
    let up = MockUpstream::start().await;
    let keyed = with_keyed_api(gateway!().conf(conf), &up.url(), json!({}));
    let gw = with_other_api(keyed, &up.url()).start().await;
    Env { gw, up }
}

impl Env {
    /// An admin request (see [`admin`]).
    async fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> Admin {
        admin(&self.gw, method, path, body).await
    }

    /// An admin request that must answer 200.
    async fn admin_ok(&self, method: &str, path: &str, body: Option<&Value>) -> Admin {
        let a = self.admin(method, path, body).await;
        assert_eq!(a.status, 200, "{}", a.json);
        a
    }

    /// Asserts `method path` (with `body`) answers the admin error
    /// `status` / `message`.
    async fn admin_error(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        (status, message): (u16, &str),
    ) {
        assert_admin_error(&self.admin(method, path, body).await, status, message);
    }

    /// Asserts `method path` with `body` bytes answers 400 `Request
    /// malformed`.
    async fn malformed(&self, method: &str, path: &str, body: &[u8]) {
        let a = admin_bytes(&self.gw, method, path, body).await;
        let sent = String::from_utf8_lossy(body);
        assert_eq!(a.status, 400, "{method} {path} {sent:?}: {}", a.json);
        assert_admin_error(&a, MALFORMED_REQ.0, MALFORMED_REQ.1);
    }

    /// Creates a key with `my_custom_field: value`; returns the body, the key
    /// and its hash.
    async fn custom_field_key(&self, value: Value) -> (Value, String, String) {
        let body = session_with(&[API], json!({ "my_custom_field": value }));
        let (key, hash) = create_key(&self.gw, &body).await;
        (body, key, hash)
    }

    /// The session of `key` (see [`get_session`]).
    async fn session(&self, key: &str) -> Value {
        get_session(&self.gw, key).await
    }

    /// `GET /tyk/keys`: the listed keys, sorted (see [`listed`]).
    async fn listed(&self) -> Vec<String> {
        listed(&self.admin("GET", "/tyk/keys", None).await)
    }

    /// Asserts `key` authenticates on /api/ and the upstream got the
    /// request with the key in its Authorization header.
    async fn works(&self, key: &str) {
        assert_key_proxied(&self.gw, &self.up, "/api/ping", key, "/ping").await;
    }

    /// Asserts `key` is rejected with 403 and nothing reaches the upstream.
    async fn rejected(&self, key: &str) {
        assert_key_refused(&self.gw, &self.up, "/api/ping", key, 403, MSG_DISALLOWED).await;
    }
}

/// 404 for GET of an unknown key.
const NOT_FOUND: (u16, &str) = (404, "Key not found");
/// 404 for PUT of an unknown key.
const PUT_NOT_FOUND: (u16, &str) = (404, "Key is not found");
/// 404 for DELETE of an unknown key.
const NO_SUCH_KEY: (u16, &str) = (404, "There is no such key found");
/// 400 for a body that is not a session.
const MALFORMED_REQ: (u16, &str) = (400, "Request malformed");

/// Decodes a generated key into its JSON token.
fn decode_token(key: &str) -> Value {
    assert!(
        key.starts_with("ey"),
        "generated key {key:?} does not start with ey"
    );
    let bytes = b64decode(key).unwrap_or_else(|| panic!("key {key:?} is not base64"));
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("key {key:?} does not decode to JSON ({e}): {bytes:?}"))
}

/// Asserts the token is exactly `{"org": ORG, "id": <32 hex>, "h": h}`.
fn assert_token(key: &str, h: &str) {
    let tok = decode_token(key);
    let id = tok["id"].as_str().unwrap_or_default().to_owned();
    assert!(
        is_lower_hex(&id, 32),
        "token id {id:?} is not 32 hex: {tok}"
    );
    assert_eq!(tok, json!({"org": ORG, "id": id, "h": h}), "key {key}");
}

#[tokio::test]
async fn create_generates_token_key_with_sha256_hash() {
    let t = start(json!({})).await;
    let (key, hash) = create_key_hashed(&t.gw, &session_for(&[API]), Some(64)).await;
    assert_token(&key, "sha256");
    t.works(&key).await;

    // Two creations give two different keys and hashes.
    let (key2, hash2) = create_key(&t.gw, &session_for(&[API])).await;
    assert_ne!(key, key2);
    assert_ne!(hash, hash2);
    assert_token(&key2, "sha256");
}

#[tokio::test]
async fn post_tyk_keys_also_creates() {
    let t = start(json!({})).await;
    let a = t
        .admin("POST", "/tyk/keys", Some(&session_for(&[API])))
        .await;
    let (key, _) = assert_added(&a, Some(64));
    assert_token(&key, "sha256");
    t.works(&key).await;
    let s = t.session(&key).await;
    assert_eq!(s["org_id"], ORG);
}

/// Creates a key on a gateway with `hash_key_function: function`; checks
/// the token's `h`, the key_hash length, auth, and `?hashed=true` lookup.
async fn check_hash_function(function: &str, h: &str, hash_len: usize) {
    let t = start(json!({"hash_key_function": function})).await;
    let (key, hash) = create_key_hashed(&t.gw, &session_for(&[API]), Some(hash_len)).await;
    assert_token(&key, h);
    t.works(&key).await;
    let s = t.session(&key).await;
    let by_hash = t.session(&format!("{hash}?hashed=true")).await;
    assert_eq!(s, by_hash, "{function}: GET by key and by hash differ");

    // A custom key is hashed with the configured function too.
    let a = t
        .admin("POST", "/tyk/keys/custom-key-1", Some(&session_for(&[API])))
        .await;
    let (k, custom_hash) = assert_added(&a, Some(hash_len));
    assert_eq!(k, "custom-key-1");
    t.session(&format!("{custom_hash}?hashed=true")).await;
    t.works("custom-key-1").await;
}

/// One test per `hash_key_function`, each running [`check_hash_function`].
macro_rules! hash_function_tests {
    ($($name:ident: $function:literal => $h:literal, $hash_len:literal;)*) => {$(
        #[tokio::test]
        async fn $name() {
            check_hash_function($function, $h, $hash_len).await;
        }
    )*};
}

hash_function_tests! {
    hash_function_default_is_sha256: "" => "sha256", 64;
    hash_function_sha256: "sha256" => "sha256", 64;
    hash_function_murmur32: "murmur32" => "murmur32", 8;
    hash_function_murmur64: "murmur64" => "murmur64", 16;
    hash_function_murmur128: "murmur128" => "murmur128", 32;
}

#[tokio::test]
async fn create_without_hashing_has_no_key_hash() {
    let t = start(json!({"hash_keys": false})).await;
    let (key, _) = create_key_hashed(&t.gw, &session_for(&[API]), None).await;
    assert_token(&key, "sha256");
    t.works(&key).await;
    let a = t
        .admin("POST", "/tyk/keys/plainkey", Some(&session_for(&[API])))
        .await;
    let (k, _) = assert_added(&a, None);
    assert_eq!(k, "plainkey");
    t.works("plainkey").await;
}

#[tokio::test]
async fn custom_key_is_used_verbatim() {
    let t = start(json!({})).await;
    create_custom_key(&t.gw, "my-custom-key", &session_for(&[API]), Some(64)).await;
    t.works("my-custom-key").await;
    let s = t.session("my-custom-key").await;
    assert_eq!(s["org_id"], ORG);
    // The entry as given (the gateway may add defaults such as
    // `allowed_urls: []`).
    let ar = &s["access_rights"];
    assert_eq!(ar.as_object().map(|o| o.len()), Some(1), "{s}");
    for (k, v) in rights(&[API])[API].as_object().unwrap() {
        assert_eq!(&ar[API][k], v, "access_rights.{API}.{k}: {s}");
    }
    // Exactly min_token_length characters is long enough.
    create_custom_key(&t.gw, "abc", &session_for(&[API]), Some(64)).await;
    t.works("abc").await;
}

/// Asserts the embedded store folder `name` exists in the gateway's
/// config folder.
fn assert_store_created(gw: &Gateway, name: &str, what: &str) {
    let path = gw.dir().join(name);
    assert!(path.exists(), "{what} embedded store {path:?} not created");
}

fn too_short(len: usize, min: usize) -> String {
    format!(
        "custom key ID length {len} is less than min_token_length ({min}); the key would be \
         unreachable at auth time. Use an ID of at least min_token_length characters, or lower \
         min_token_length in the gateway configuration."
    )
}

/// Asserts creating the custom key `id` fails with 400 [`too_short`]
/// (`min` = min_token_length) and stores nothing.
async fn assert_too_short(t: &Env, id: &str, min: usize) {
    let path = format!("/tyk/keys/{id}");
    let body = session_for(&[API]);
    let message = too_short(id.len(), min);
    t.admin_error("POST", &path, Some(&body), (400, &message))
        .await;
    assert_key_absent(&t.gw, id).await;
}

#[tokio::test]
async fn custom_key_shorter_than_min_token_length_is_rejected() {
    let t = start(json!({"hash_keys": false})).await;
    assert_too_short(&t, "ab", 3).await;
    let r = get_with_key(&t.gw, "/api/ping", "ab").await;
    assert_eq!(r.status / 100, 4, "{}{}", r.head, r.text());
    assert_eq!(t.up.request_count(), 0);
    let listed = t.admin("GET", "/tyk/keys", None).await;
    assert_eq!((listed.status, &listed.json), (200, &json!({"keys": []})));
}

#[tokio::test]
async fn custom_key_respects_configured_min_token_length() {
    let t = start(json!({"min_token_length": 10})).await;
    assert_too_short(&t, "shortkey", 10).await;
    create_custom_key(&t.gw, "tencharkey", &session_for(&[API]), Some(64)).await;
    t.works("tencharkey").await;
}

#[tokio::test]
async fn get_round_trips_session_fields() {
    let t = start(json!({})).await;
    let body = session_with(
        &[API],
        json!({
            "my_custom_field": {"a": [1]},
            "meta_data": {"team": "blue", "n": 7},
            "tags": ["t1", "t2"],
            "alias": "someone",
        }),
    );
    let (key, _) = create_key(&t.gw, &body).await;
    let s = t.session(&key).await;
    assert_eq!(s["my_custom_field"], json!({"a": [1]}), "{s}");
    assert_eq!(s["meta_data"], json!({"team": "blue", "n": 7}), "{s}");
    assert_eq!(s["tags"], json!(["t1", "t2"]), "{s}");
    assert_eq!(s["alias"], "someone", "{s}");
    assert_eq!(s["org_id"], ORG, "{s}");
    assert_eq!(s["rate"], 1000, "{s}");
    assert_eq!(s["per"], 1, "{s}");
    assert_eq!(s["quota_max"], -1, "{s}");
    assert_eq!(s["expires"], 0, "{s}");
    assert_eq!(s["access_rights"][API]["api_id"], API, "{s}");
    assert_eq!(
        s["access_rights"][API]["versions"],
        json!(["Default"]),
        "{s}"
    );
    let created = s["date_created"].as_str().unwrap_or_default();
    assert!(
        !created.is_empty() && !created.starts_with("0001-"),
        "date_created not set: {s}"
    );
    assert!(
        s["last_updated"].is_string(),
        "last_updated not a string: {s}"
    );
}

#[tokio::test]
async fn get_unknown_key_is_404() {
    let t = start(json!({})).await;
    t.admin_error("GET", "/tyk/keys/doesnotexist", None, NOT_FOUND)
        .await;
    let (key, _) = create_key(&t.gw, &session_for(&[API])).await;
    for (variant, what) in key_variants(&key) {
        let a = t.admin("GET", &format!("/tyk/keys/{variant}"), None).await;
        assert_eq!(a.status, 404, "{what}: {}", a.json);
        assert_admin_error(&a, 404, "Key not found");
    }
}

#[tokio::test]
async fn put_modifies_and_keeps_date_created() {
    let t = start(json!({})).await;
    let (_, key, _) = t.custom_field_key(json!("before")).await;
    let before = t.session(&key).await;

    let update = session_with(&[API, "other"], json!({"my_custom_field": "after"}));
    let a = t
        .admin_ok("PUT", &format!("/tyk/keys/{key}"), Some(&update))
        .await;
    assert_eq!(a.json["key"], key.as_str(), "{}", a.json);
    assert_eq!(a.json["status"], "ok", "{}", a.json);
    assert_eq!(a.json["action"], "modified", "{}", a.json);

    let after = t.session(&key).await;
    assert_eq!(after["my_custom_field"], "after", "{after}");
    assert_eq!(
        after["access_rights"]["other"]["api_id"], "other",
        "{after}"
    );
    assert_eq!(
        after["date_created"], before["date_created"],
        "{before}\n{after}"
    );
    assert!(after["last_updated"].is_string(), "{after}");

    // The new access right is effective.
    let r = get_with_key(&t.gw, "/other/x", &key).await;
    assert_echo_ok(&r, "/x");
    assert_eq!(t.up.last().header("authorization"), Some(key.as_str()));
}

#[tokio::test]
async fn put_unknown_key_is_404_and_creates_nothing() {
    let t = start(json!({})).await;
    t.admin_error(
        "PUT",
        "/tyk/keys/nosuchkey",
        Some(&session_for(&[API])),
        PUT_NOT_FOUND,
    )
    .await;
    assert_key_absent(&t.gw, "nosuchkey").await;
    t.rejected("nosuchkey").await;
}

#[tokio::test]
async fn delete_removes_key() {
    let t = start(json!({})).await;
    let (key, _) = create_key(&t.gw, &session_for(&[API])).await;
    let (keep, _) = create_key(&t.gw, &session_for(&[API])).await;
    t.works(&key).await;

    let a = t.admin("DELETE", &format!("/tyk/keys/{key}"), None).await;
    assert_eq!(
        (a.status, &a.json),
        (
            200,
            &json!({"key": key, "status": "ok", "action": "deleted"})
        )
    );
    assert_key_absent(&t.gw, &key).await;
    t.rejected(&key).await;

    t.admin_error("DELETE", &format!("/tyk/keys/{key}"), None, NO_SUCH_KEY)
        .await;

    // Other keys are untouched.
    t.works(&keep).await;
}

#[tokio::test]
async fn delete_unknown_key_is_404() {
    let t = start(json!({})).await;
    t.admin_error("DELETE", "/tyk/keys/nosuchkey", None, NO_SUCH_KEY)
        .await;
}

#[tokio::test]
async fn hashed_flag_addresses_keys_by_hash() {
    let t = start(json!({})).await;
    let (body, key, hash) = t.custom_field_key(json!(1)).await;
    let raw_hash = format!("/tyk/keys/{hash}");
    let by_hash_path = format!("/tyk/keys/{hash}?hashed=true");

    // Without the flag the hash is just an unknown raw key.
    t.admin_error("GET", &raw_hash, None, NOT_FOUND).await;
    t.admin_error("PUT", &raw_hash, Some(&body), PUT_NOT_FOUND)
        .await;
    t.admin_error("DELETE", &raw_hash, None, NO_SUCH_KEY).await;
    // ... and the hash does not authenticate.
    t.rejected(&hash).await;

    // With the flag.
    let by_hash = t.session(&format!("{hash}?hashed=true")).await;
    assert_eq!(by_hash, t.session(&key).await);
    assert_eq!(by_hash["my_custom_field"], 1);

    let update = session_with(&[API], json!({"my_custom_field": 2}));
    let a = t.admin_ok("PUT", &by_hash_path, Some(&update)).await;
    assert_eq!(a.json["status"], "ok", "{}", a.json);
    assert_eq!(a.json["action"], "modified", "{}", a.json);
    assert_eq!(t.session(&key).await["my_custom_field"], 2);
    t.works(&key).await;

    // An update by hash takes effect on the very next request.
    let inactive = session_with(&[API], json!({"my_custom_field": 2, "is_inactive": true}));
    t.admin_ok("PUT", &by_hash_path, Some(&inactive)).await;
    let before = t.up.request_count();
    let r = get_with_key(&t.gw, "/api/ping", &key).await;
    assert_tyk_error(&r, 403, MSG_INACTIVE);
    assert_eq!(t.up.request_count(), before);
    t.admin_ok("PUT", &by_hash_path, Some(&update)).await;
    t.works(&key).await;

    // The raw key with the flag is not a hash.
    t.admin_error(
        "GET",
        &format!("/tyk/keys/{key}?hashed=true"),
        None,
        NOT_FOUND,
    )
    .await;

    let a = t.admin_ok("DELETE", &by_hash_path, None).await;
    assert_eq!(a.json["status"], "ok", "{}", a.json);
    assert_eq!(a.json["action"], "deleted", "{}", a.json);
    assert_key_absent(&t.gw, &key).await;
    t.rejected(&key).await;
    t.admin_error("GET", &by_hash_path, None, NOT_FOUND).await;
}

#[tokio::test]
async fn hashed_flag_without_hashing_is_400() {
    let t = start(json!({"hash_keys": false})).await;
    let (key, _) = create_key_hashed(&t.gw, &session_for(&[API]), None).await;
    const MSG: &str = "Key requested by hash but key hashing is not enabled";
    let body = session_with(&[API], json!({"is_inactive": true}));
    let path = format!("/tyk/keys/{key}?hashed=true");
    for (method, body) in [("GET", None), ("PUT", Some(&body)), ("DELETE", None)] {
        t.admin_error(method, &path, body, (400, MSG)).await;
    }
    // Nothing changed.
    let s = t.session(&key).await;
    assert_ne!(s["is_inactive"], json!(true), "{s}");
    t.works(&key).await;
}

#[tokio::test]
async fn hashed_listing_disabled_by_default() {
    let t = start(json!({})).await;
    create_key(&t.gw, &session_for(&[API])).await;
    let a = t.admin("GET", "/tyk/keys", None).await;
    assert_admin_error(
        &a,
        404,
        "Hashed key listing is disabled in config (enable_hashed_keys_listing)",
    );
}

fn listed(a: &Admin) -> Vec<String> {
    assert_eq!(a.status, 200, "{}", a.json);
    let obj = a
        .json
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {}", a.json));
    assert_eq!(obj.len(), 1, "expected only \"keys\": {}", a.json);
    let mut v: Vec<String> = a.json["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("no keys array: {}", a.json))
        .iter()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn hashed_listing_lists_hashes_and_filters_by_api() {
    let t = start(json!({"enable_hashed_keys_listing": true})).await;
    assert_eq!(t.listed().await, Vec::<String>::new());

    let (_k1, h1) = create_key(&t.gw, &session_for(&[API])).await;
    let (_k2, h2) = create_key(&t.gw, &session_for(&["other"])).await;
    let (_k3, h3) = create_key(&t.gw, &session_for(&[API, "other"])).await;
    let a = t
        .admin(
            "POST",
            "/tyk/keys/custom-listed",
            Some(&session_for(&[API])),
        )
        .await;
    let (_, h4) = assert_added(&a, Some(64));

    let a = t.admin("GET", "/tyk/keys", None).await;
    assert_eq!(
        listed(&a),
        sorted(vec![h1.clone(), h2.clone(), h3.clone(), h4.clone()])
    );
    let a = t
        .admin("GET", &format!("/tyk/keys?api_id={API}"), None)
        .await;
    assert_eq!(listed(&a), sorted(vec![h1.clone(), h3.clone(), h4.clone()]));
    let a = t.admin("GET", "/tyk/keys?api_id=other", None).await;
    assert_eq!(listed(&a), sorted(vec![h2, h3.clone()]));
    let a = t.admin("GET", "/tyk/keys?api_id=nope", None).await;
    assert_eq!(listed(&a), Vec::<String>::new());

    t.admin_ok("DELETE", &format!("/tyk/keys/{h1}?hashed=true"), None)
        .await;
    let a = t
        .admin("GET", &format!("/tyk/keys?api_id={API}"), None)
        .await;
    assert_eq!(listed(&a), sorted(vec![h3, h4]));
}

#[tokio::test]
async fn unhashed_listing_lists_raw_keys_and_filters_by_api() {
    let t = start(json!({"hash_keys": false})).await;
    assert_eq!(t.listed().await, Vec::<String>::new());
    let (k1, _) = create_key_hashed(&t.gw, &session_for(&[API]), None).await;
    let (k2, _) = create_key_hashed(&t.gw, &session_for(&["other"]), None).await;
    let custom_body = session_with(&[API], json!({"my_custom_field": "rawcustom"}));
    let a = t
        .admin("POST", "/tyk/keys/rawcustom", Some(&custom_body))
        .await;
    assert_added(&a, None);

    // Custom keys are listed as stored: either the ID itself or, like
    // Tyk, the org-scoped token `{"org":"default","id":"rawcustom",...}`.
    // Whatever is listed must address the key.
    let custom_token = |listed: &[String]| -> String {
        let found: Vec<&String> = listed
            .iter()
            .filter(|k| {
                *k == "rawcustom"
                    || b64decode(k)
                        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                        .is_some_and(|t| t["org"] == ORG && t["id"] == "rawcustom")
            })
            .collect();
        assert_eq!(found.len(), 1, "custom key not listed once: {listed:?}");
        found[0].clone()
    };

    let a = t.admin("GET", "/tyk/keys", None).await;
    let all = listed(&a);
    let c = custom_token(&all);
    assert_eq!(all, sorted(vec![k1.clone(), k2.clone(), c.clone()]));
    assert_eq!(t.session(&c).await["my_custom_field"], "rawcustom");
    for k in [&k1, &k2] {
        assert_eq!(t.session(k).await["org_id"], ORG);
    }
    let a = t
        .admin("GET", &format!("/tyk/keys?api_id={API}"), None)
        .await;
    assert_eq!(listed(&a), sorted(vec![k1, c]));
    let a = t.admin("GET", "/tyk/keys?api_id=other", None).await;
    assert_eq!(listed(&a), vec![k2]);
}

const MALFORMED: &[&[u8]] = &[
    b"{",
    b"{\"org_id\": \"default\", \"access_rights\": ",
    b"not json at all",
    b"{\"org_id\": \"default\",}",
];

#[tokio::test]
async fn malformed_create_is_400_and_stores_nothing() {
    let t = start(json!({"hash_keys": false})).await;
    for body in MALFORMED {
        for path in [
            "/tyk/keys/create",
            "/tyk/keys",
            "/tyk/keys/malformed-custom",
        ] {
            t.malformed("POST", path, body).await;
        }
    }
    assert_eq!(t.listed().await, Vec::<String>::new());
    assert_key_absent(&t.gw, "malformed-custom").await;
    t.rejected("malformed-custom").await;
}

#[tokio::test]
async fn malformed_put_is_400_and_keeps_key() {
    let t = start(json!({})).await;
    let (_, key, hash) = t.custom_field_key(json!("kept")).await;
    let before = t.session(&key).await;
    for body in MALFORMED {
        t.malformed("PUT", &format!("/tyk/keys/{key}"), body).await;
        t.malformed("PUT", &format!("/tyk/keys/{hash}?hashed=true"), body)
            .await;
    }
    assert_eq!(t.session(&key).await, before);
    t.works(&key).await;
}

const NO_RIGHTS: &str =
    "Failed to create key, keys must have at least one Access Rights record set.";

#[tokio::test]
async fn empty_access_rights_rejected_without_master_keys() {
    let t = start(json!({"hash_keys": false})).await;
    let empty = session_for(&[]);
    let mut absent = empty.clone();
    absent.as_object_mut().unwrap().remove("access_rights");
    for (path, body) in [
        ("/tyk/keys/create", &empty),
        ("/tyk/keys/masterkey", &empty),
        ("/tyk/keys/create", &absent),
    ] {
        t.admin_error("POST", path, Some(body), (400, NO_RIGHTS))
            .await;
    }
    assert_eq!(t.listed().await, Vec::<String>::new());
    t.rejected("masterkey").await;
}

#[tokio::test]
async fn empty_access_rights_allowed_with_master_keys() {
    let t = start(json!({"allow_master_keys": true})).await;
    let (key, _) = create_key_hashed(&t.gw, &session_for(&[]), Some(64)).await;
    let s = t.session(&key).await;
    assert_eq!(s["org_id"], ORG);
}

#[tokio::test]
async fn key_endpoints_require_the_secret() {
    let t = start(json!({"hash_keys": false})).await;
    let body = serde_json::to_vec(&session_for(&[API])).unwrap();
    for (method, path) in [
        ("POST", "/tyk/keys/create"),
        ("POST", "/tyk/keys"),
        ("POST", "/tyk/keys/sneaky-key"),
        ("GET", "/tyk/keys"),
    ] {
        for auth in [None, Some("wrong-secret")] {
            let mut headers = vec![("Content-Type", "application/json")];
            if let Some(a) = auth {
                headers.push(("x-tyk-authorization", a));
            }
            let r = request(t.gw.addr(), method, path, &headers, &body).await;
            assert_admin_denied(&r, &format!("{method} {path} auth {auth:?}"));
        }
    }
    assert_eq!(t.listed().await, Vec::<String>::new());
    assert_key_absent(&t.gw, "sneaky-key").await;
}

#[tokio::test]
async fn keys_survive_sigkill_and_deletes_stay_deleted() {
    let mut t = start(json!({})).await;
    let body = session_with(&[API], json!({"my_custom_field": {"a": [1]}}));
    let (kept, kept_hash) = create_key(&t.gw, &body).await;
    let (deleted, _) = create_key(&t.gw, &body).await;
    create_custom_key(&t.gw, "custom-durable", &body, Some(64)).await;
    t.admin_ok("DELETE", &format!("/tyk/keys/{deleted}"), None)
        .await;
    let kept_before = t.session(&kept).await;
    assert_store_created(&t.gw, "data", "default");

    // `restart` kills the process with SIGKILL (no graceful shutdown).
    t.gw.restart().await;

    t.works(&kept).await;
    t.works("custom-durable").await;
    assert_eq!(t.session(&kept).await, kept_before);
    assert_eq!(
        t.session(&format!("{kept_hash}?hashed=true")).await,
        kept_before
    );
    assert_key_absent(&t.gw, &deleted).await;
    t.rejected(&deleted).await;
}

#[tokio::test]
async fn embedded_store_path_is_relative_to_config_folder() {
    let mut t = start(json!({"storage": {"type": "embedded", "path": "keystore"}})).await;
    let (key, _) = create_key(&t.gw, &session_for(&[API])).await;
    assert_store_created(&t.gw, "keystore", "configured");
    t.gw.restart().await;
    t.works(&key).await;
}

#[tokio::test]
async fn wrongly_typed_body_is_400_request_malformed() {
    let t = start(json!({"hash_keys": false})).await;
    let bodies: &[&[u8]] = &[
        b"[]",
        b"\"a string\"",
        b"{\"org_id\": \"default\", \"access_rights\": \"nope\"}",
        b"{\"org_id\": 5, \"access_rights\": {}}",
    ];
    for body in bodies {
        t.malformed("POST", "/tyk/keys/typed-custom", body).await;
    }
    assert_eq!(t.listed().await, Vec::<String>::new());
}

#[tokio::test]
async fn generated_key_carries_the_session_org() {
    let up = MockUpstream::start().await;
    let mut acme_api = keyed_api("acme-api", "/acme/", &up.url(), json!({}));
    acme_api["org_id"] = json!("acme");
    let gw = with_keyed_api(gateway!(), &up.url(), json!({}))
        .api("acme.json", acme_api)
        .start()
        .await;
    let t = Env { gw, up };
    let mut body = session_for(&["acme-api"]);
    body["org_id"] = json!("acme");
    let (key, _) = create_key(&t.gw, &body).await;
    let tok = decode_token(&key);
    assert_eq!(tok["org"], "acme", "{tok}");
    assert_eq!(tok["h"], "sha256", "{tok}");
    let r = get_with_key(&t.gw, "/acme/x", &key).await;
    assert_echo_ok(&r, "/x");
    assert_eq!(t.up.last().header("authorization"), Some(key.as_str()));
    assert_eq!(t.session(&key).await["org_id"], "acme");
}

#[tokio::test]
async fn concurrent_creates_are_distinct_and_usable() {
    let t = start(json!({"hash_keys": false})).await;
    let addr = t.gw.addr();
    let secret = t.gw.secret().to_owned();
    let body = serde_json::to_vec(&session_for(&[API])).unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let secret = secret.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let path = if i % 2 == 0 {
                "/tyk/keys/create".to_owned()
            } else {
                format!("/tyk/keys/concurrent-{i}")
            };
            let r = request(
                addr,
                "POST",
                &path,
                &[
                    ("x-tyk-authorization", secret.as_str()),
                    ("Content-Type", "application/json"),
                ],
                &body,
            )
            .await;
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(r.status, 200, "{path}: {v}");
            v["key"].as_str().unwrap().to_owned()
        }));
    }
    let mut keys = Vec::new();
    for t in tasks {
        keys.push(t.await.unwrap());
    }
    let mut distinct = keys.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 16, "{keys:?}");
    for k in &keys {
        t.works(k).await;
    }
    let a = t.admin("GET", "/tyk/keys", None).await;
    assert_eq!(listed(&a).len(), 16, "{}", a.json);
}

#[tokio::test]
async fn deleted_custom_key_can_be_created_again() {
    let t = start(json!({})).await;
    create_custom_key(&t.gw, "again-key", &session_for(&[API]), Some(64)).await;
    t.works("again-key").await;
    let a = t.admin("DELETE", "/tyk/keys/again-key", None).await;
    assert_eq!(
        (a.status, &a.json),
        (
            200,
            &json!({"key": "again-key", "status": "ok", "action": "deleted"})
        )
    );
    t.rejected("again-key").await;
    let body = session_with(&[API], json!({"my_custom_field": "second"}));
    create_custom_key(&t.gw, "again-key", &body, Some(64)).await;
    t.works("again-key").await;
    assert_eq!(t.session("again-key").await["my_custom_field"], "second");
}

#[tokio::test]
async fn updates_survive_sigkill() {
    let mut t = start(json!({"hash_keys": false})).await;
    let (key, _) = create_key_hashed(&t.gw, &session_for(&[API]), None).await;
    let mut s = t.session(&key).await;
    s["is_inactive"] = json!(true);
    s["my_custom_field"] = json!("updated");
    t.admin_ok("PUT", &format!("/tyk/keys/{key}"), Some(&s))
        .await;
    let updated = t.session(&key).await;

    t.gw.restart().await;

    assert_eq!(t.session(&key).await, updated);
    let before = t.up.request_count();
    let r = get_with_key(&t.gw, "/api/ping", &key).await;
    assert_tyk_error(&r, 403, MSG_INACTIVE);
    assert_eq!(t.up.request_count(), before);
    assert_eq!(t.listed().await, vec![key]);
}
