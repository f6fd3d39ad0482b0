//! API definitions stored in PostgreSQL (`use_db_app_configs`): the admin API
//! writes rows to `tollgate_api_definitions`, a group reload makes every node
//! that shares the database (and Redis) serve them, rows present at start are
//! served at once and broken rows are skipped.
//!
//! Needs PostgreSQL on 127.0.0.1:5432 (trust auth, user `postgres`, database
//! `test`) and `psql`; every test creates its own database and drops it at the
//! end (also on panic). An unreachable PostgreSQL fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_testkit::keys::*;
use tollgate_testkit::pg::{PgDb, sql_literal};
use tollgate_testkit::raw::assert_tyk_error;
use tollgate_testkit::redis::*;
use tollgate_testkit::traffic;
use tollgate_testkit::{Gateway, MockUpstream, api_def, gateway, merge_json};

const TABLE: &str = "tollgate_api_definitions";

/// How long a group reload may take to reach every node.
const RELOAD_DEADLINE: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------

/// The tyk.conf fragment that makes a gateway read definitions from `db`.
fn db_conf(db: &PgDb) -> Value {
    json!({
        "use_db_app_configs": true,
        "db_app_conf_options": {"connection_string": db.url()},
    })
}

/// The `api_id`s in the definitions table, in order, one per line.
async fn api_ids(db: &PgDb) -> String {
    db.sql(&format!("SELECT api_id FROM {TABLE} ORDER BY api_id"))
        .await
}

/// The stored `proxy.listen_path` of row `api_id`.
async fn stored_listen_path(db: &PgDb, api_id: &str) -> String {
    db.sql(&format!(
        "SELECT definition->'proxy'->>'listen_path' FROM {TABLE} WHERE api_id = {}",
        sql_literal(api_id)
    ))
    .await
}

// ---------------------------------------------------------------------------
// Gateway helpers
// ---------------------------------------------------------------------------

/// A definition proxying `listen` to `up`, stripping the listen path.
fn def(api_id: &str, listen: &str, up: &MockUpstream) -> Value {
    api_def(api_id, listen, &up.url())
}

/// `GET target` on `gw` answers 200 from the echo upstream, which received
/// exactly `upstream_uri` (the listen path stripped) as one new request.
async fn assert_proxied(gw: &Gateway, up: &MockUpstream, target: &str, upstream_uri: &str) {
    let before = up.request_count();
    let r = call(gw, "GET", target, &[]).await;
    let upstream_path = upstream_uri.split('?').next().unwrap_or_default();
    assert_echo_ok(&r, upstream_path);
    let recs = up.requests();
    assert_eq!(
        recs.len(),
        before + 1,
        "GET {target}: upstream request count; response {}{}",
        r.head,
        r.text()
    );
    let last = recs.last().unwrap();
    assert_eq!(last.method, "GET", "GET {target}");
    assert_eq!(last.uri, upstream_uri, "GET {target}: URI the upstream saw");
}

/// `GET target` on `gw` is the gateway's 404 and reaches no upstream.
async fn assert_not_served(gw: &Gateway, up: &MockUpstream, target: &str) {
    let before = up.request_count();
    let r = call(gw, "GET", target, &[]).await;
    assert_tyk_error(&r, 404, "Not Found");
    assert_eq!(
        up.request_count(),
        before,
        "GET {target} reached the upstream"
    );
}

/// Polls `GET target` on `gw` every 50 ms until it answers `status`, failing
/// after [`RELOAD_DEADLINE`] from `since`.
async fn status_within(gw: &Gateway, target: &str, status: u16, since: Instant, name: &str) {
    let what = format!("node {name} answering {status} to GET {target}");
    let (_, took) =
        traffic::status_within(gw, (target, None), status, (since, RELOAD_DEADLINE), &what).await;
    eprintln!("node {name}: GET {target} -> {status} after {took:?}");
}

/// `GET /tyk/reload/group` on `gw` answers 200 `status: ok`; returns when it
/// was sent.
async fn group_reload(gw: &Gateway) -> Instant {
    let since = Instant::now();
    let r = admin(gw, "GET", "/tyk/reload/group", None).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["status"], "ok", "{}", r.json);
    since
}

/// The `api_id`s `GET /tyk/apis` lists on `gw`, sorted.
async fn listed_ids(gw: &Gateway) -> Vec<String> {
    let r = admin(gw, "GET", "/tyk/apis", None).await;
    assert_eq!(r.status, 200, "GET /tyk/apis: {}", r.json);
    let list = r
        .json
        .as_array()
        .unwrap_or_else(|| panic!("GET /tyk/apis is not an array: {}", r.json));
    let mut ids: Vec<String> = list
        .iter()
        .map(|d| {
            d["api_id"]
                .as_str()
                .unwrap_or_else(|| panic!("listed definition without api_id: {d}"))
                .to_owned()
        })
        .collect();
    ids.sort();
    ids
}

/// The definition `GET /tyk/apis` lists for `api_id` on `gw`.
async fn listed_def(gw: &Gateway, api_id: &str) -> Value {
    let r = admin(gw, "GET", "/tyk/apis", None).await;
    assert_eq!(r.status, 200, "GET /tyk/apis: {}", r.json);
    r.json
        .as_array()
        .and_then(|a| a.iter().find(|d| d["api_id"] == api_id).cloned())
        .unwrap_or_else(|| panic!("GET /tyk/apis does not list {api_id}: {}", r.json))
}

/// Asserts the admin reply `{"key": id, "status": "ok", "action": action}`.
fn assert_modified(r: &Admin, id: &str, action: &str) {
    let want = json!({"key": id, "status": "ok", "action": action});
    assert_eq!((r.status, &r.json), (200, &want), "{}", r.raw.text());
}

/// The table holds exactly the row `id`, with `listen_path`.
async fn assert_row(db: &PgDb, id: &str, listen_path: &str) {
    assert_eq!(api_ids(db).await, id);
    assert_eq!(stored_listen_path(db, id).await, listen_path);
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test]
async fn admin_writes_reach_every_node_through_the_database_and_group_reload() {
    let db = PgDb::create().await;
    let redis = RedisServer::start().await;
    let up = MockUpstream::start().await;
    let storage = redis_storage(redis.port());
    // A definition file in app_path: ignored when definitions come from the
    // database.
    let builder = node(gateway!(), &storage)
        .conf(db_conf(&db))
        .api("files.json", def("files", "/files/", &up));
    let gws = start_nodes(builder, 2).await;
    let (a, b) = (&gws[0], &gws[1]);
    let nodes = [(a, "A"), (b, "B")];

    // The gateway created the (empty) table on first start.
    assert_eq!(db.sql(&format!("SELECT count(*) FROM {TABLE}")).await, "0");
    for (gw, name) in nodes {
        assert_not_served(gw, &up, "/files/x").await;
        assert_eq!(listed_ids(gw).await, Vec::<String>::new(), "node {name}");
    }

    // POST on A: a row, not live before a reload.
    let id = "pgapi";
    let r = admin(a, "POST", "/tyk/apis", Some(&def(id, "/pg/", &up))).await;
    assert_modified(&r, id, "added");
    assert_row(&db, id, "/pg/").await;
    for (gw, _) in nodes {
        assert_not_served(gw, &up, "/pg/x").await;
    }

    // POST of an existing id: 409 on either node, the row unchanged.
    for (gw, name) in nodes {
        let r = admin(gw, "POST", "/tyk/apis", Some(&def(id, "/other/", &up))).await;
        assert_eq!(r.status, 409, "node {name}: {}", r.raw.text());
        assert_eq!(r.json["status"], "error", "node {name}: {}", r.json);
    }
    assert_row(&db, id, "/pg/").await;

    // Group reload on A: both nodes serve /pg/.
    let since = group_reload(a).await;
    for (gw, name) in nodes {
        status_within(gw, "/pg/x", 200, since, name).await;
    }
    for (gw, name) in nodes {
        assert_proxied(
            gw,
            &up,
            &format!("/pg/hello?node={name}"),
            &format!("/hello?node={name}"),
        )
        .await;
        assert_eq!(listed_ids(gw).await, [id], "node {name}");
        let d = listed_def(gw, id).await;
        assert_eq!(d["proxy"]["listen_path"], "/pg/", "node {name}: {d}");
        assert_not_served(gw, &up, "/files/x").await;
    }
    // Once loaded, a POST of the id is still a conflict.
    let r = admin(b, "POST", "/tyk/apis", Some(&def(id, "/pg/", &up))).await;
    assert_eq!(r.status, 409, "{}", r.raw.text());

    // PUT on B moves the listen path; live only after B's group reload.
    let r = admin(
        b,
        "PUT",
        &format!("/tyk/apis/{id}"),
        Some(&def(id, "/pg2/", &up)),
    )
    .await;
    assert_modified(&r, id, "modified");
    assert_row(&db, id, "/pg2/").await;
    for (gw, _) in nodes {
        assert_proxied(gw, &up, "/pg/still", "/still").await;
        assert_not_served(gw, &up, "/pg2/x").await;
    }
    let since = group_reload(b).await;
    for (gw, name) in nodes {
        status_within(gw, "/pg2/x", 200, since, name).await;
    }
    for (gw, name) in nodes {
        assert_proxied(gw, &up, "/pg2/moved/deep?a=1", "/moved/deep?a=1").await;
        assert_not_served(gw, &up, "/pg/x").await;
        let d = listed_def(gw, id).await;
        assert_eq!(d["proxy"]["listen_path"], "/pg2/", "node {name}: {d}");
    }

    // DELETE on A: the row goes at once, the route after the group reload.
    let r = admin(a, "DELETE", &format!("/tyk/apis/{id}"), None).await;
    assert_modified(&r, id, "deleted");
    assert_eq!(api_ids(&db).await, "");
    assert_eq!(db.sql(&format!("SELECT count(*) FROM {TABLE}")).await, "0");
    let since = group_reload(a).await;
    for (gw, name) in nodes {
        status_within(gw, "/pg2/x", 404, since, name).await;
    }
    for (gw, name) in nodes {
        assert_not_served(gw, &up, "/pg2/x").await;
        assert_not_served(gw, &up, "/pg/x").await;
        assert_eq!(listed_ids(gw).await, Vec::<String>::new(), "node {name}");
    }
}

#[tokio::test]
async fn rows_present_at_start_are_served_and_broken_rows_skipped() {
    let db = PgDb::create().await;
    let up = MockUpstream::start().await;
    db.sql(&format!(
        "CREATE TABLE {TABLE} (api_id text PRIMARY KEY, definition jsonb NOT NULL, \
         updated_at timestamptz NOT NULL DEFAULT now())"
    ))
    .await;
    let mut bad = def("pre-bad", "/bad/", &up);
    merge_json(&mut bad, json!({"proxy": {"listen_path": 5}}));
    for (id, d) in [("pre", def("pre", "/pre/", &up)), ("pre-bad", bad)] {
        db.sql(&format!(
            "INSERT INTO {TABLE} (api_id, definition) VALUES ({}, {}::jsonb)",
            sql_literal(id),
            sql_literal(&d.to_string())
        ))
        .await;
    }

    let gw = gateway!().conf(db_conf(&db)).start().await;

    assert_proxied(&gw, &up, "/pre/x?y=1", "/x?y=1").await;
    assert_not_served(&gw, &up, "/bad/x").await;
    let log = gw.log();
    assert!(
        log.contains("pre-bad") || log.contains("database row"),
        "the log does not name the skipped row:\n{log}"
    );
    assert_eq!(listed_ids(&gw).await, ["pre"]);
    let d = listed_def(&gw, "pre").await;
    assert_eq!(d["proxy"]["listen_path"], "/pre/", "{d}");
    assert_eq!(d["proxy"]["target_url"], up.url(), "{d}");
    // Skipping is not deleting: both rows remain.
    assert_eq!(api_ids(&db).await, "pre\npre-bad");

    // A row inserted behind the gateway's back is served after a reload.
    db.sql(&format!(
        "INSERT INTO {TABLE} (api_id, definition) VALUES ('pre2', {}::jsonb)",
        sql_literal(&def("pre2", "/pre2/", &up).to_string())
    ))
    .await;
    assert_not_served(&gw, &up, "/pre2/x").await;
    let r = admin(&gw, "GET", "/tyk/reload?block=true", None).await;
    assert_eq!(r.status, 200, "{}", r.json);
    assert_eq!(r.json["status"], "ok", "{}", r.json);
    assert_proxied(&gw, &up, "/pre2/a/b", "/a/b").await;
    assert_proxied(&gw, &up, "/pre/x", "/x").await;
    assert_eq!(listed_ids(&gw).await, ["pre", "pre2"]);
}
