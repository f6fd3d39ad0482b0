//! A private PostgreSQL database per test, on the machine's PostgreSQL at
//! 127.0.0.1:5432 (trust auth, user `postgres`, admin database `test`),
//! driven through `psql`. The database is dropped (`WITH (FORCE)`) when the
//! [`PgDb`] is dropped, also while panicking. An unreachable PostgreSQL
//! fails the test with a message saying what is needed.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// The PostgreSQL host the tests use.
pub const PG_HOST: &str = "127.0.0.1";
/// Its port.
pub const PG_PORT: &str = "5432";
/// The user (trust auth).
pub const PG_USER: &str = "postgres";
/// The database `CREATE DATABASE` / `DROP DATABASE` run in.
pub const PG_ADMIN_DB: &str = "test";

/// Runs `psql` against `db` with `sql` (unaligned, tuples only, stopping
/// at the first error); returns the raw output (no panic).
pub fn psql_output(db: &str, sql: &str) -> std::io::Result<Output> {
    Command::new("psql")
        .args([
            "-h",
            PG_HOST,
            "-p",
            PG_PORT,
            "-U",
            PG_USER,
            "-d",
            db,
            "-X",
            "-w",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .output()
}

/// [`psql_output`] on a blocking thread.
async fn psql_async(db: &str, sql: &str) -> std::io::Result<Output> {
    let (db, sql) = (db.to_owned(), sql.to_owned());
    tokio::task::spawn_blocking(move || psql_output(&db, &sql))
        .await
        .expect("join psql")
}

/// A random lower-case hex string (per call and per process).
fn random_hex() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = RandomState::new().build_hasher();
    h.write_u128(nanos);
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// `text` as a single-quoted SQL string literal.
pub fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A private database for one test, dropped when the value is dropped.
#[derive(Debug)]
pub struct PgDb {
    name: String,
}

impl PgDb {
    /// Creates `tg_<random hex>`; fails the test with a clear message when
    /// PostgreSQL is not reachable.
    pub async fn create() -> Self {
        let name = format!("tg_{}", random_hex());
        let out = psql_async(PG_ADMIN_DB, &format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("cannot run `psql` (needed for the PostgreSQL tests): {e}"));
        assert!(
            out.status.success(),
            "PostgreSQL is not reachable or refused CREATE DATABASE {name} \
             (these tests need PostgreSQL on {PG_HOST}:{PG_PORT}, trust auth, user \
             `{PG_USER}`, database `{PG_ADMIN_DB}`): psql exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Self { name }
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `postgres://postgres@127.0.0.1:5432/<name>`.
    pub fn url(&self) -> String {
        format!("postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{}", self.name)
    }

    /// Runs `sql` in this database; returns the unaligned, tuples-only output
    /// without the final newline. Panics (with stderr) if psql fails.
    pub async fn sql(&self, sql: &str) -> String {
        let out = psql_async(&self.name, sql)
            .await
            .unwrap_or_else(|e| panic!("run psql: {e}"));
        let shown = format!("psql -d {} -c {sql:?}", self.name);
        let mut s = crate::command_stdout(&shown, &out);
        while s.ends_with('\n') {
            s.pop();
        }
        s
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        match psql_output(PG_ADMIN_DB, &sql) {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "warning: {sql} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("warning: {sql}: cannot run psql: {e}"),
        }
    }
}
