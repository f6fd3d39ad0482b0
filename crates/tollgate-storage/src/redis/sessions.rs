//! Sessions in Redis, one string per key under Tyk's `apikey-` prefix.

use super::RedisStore;
use crate::error::StoreError;
use crate::keyspace::{self, SESSION_PREFIX};

impl RedisStore {
    /// A session's JSON, if stored.
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn get_session(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.query(redis::cmd("GET").arg(keyspace::session(id)))
            .await
    }

    /// Stores a session.
    ///
    /// # Errors
    /// Redis cannot be reached; nothing was written.
    pub async fn put_session(&self, id: &str, json: &[u8]) -> Result<(), StoreError> {
        self.query::<()>(redis::cmd("SET").arg(keyspace::session(id)).arg(json))
            .await
    }

    /// Deletes a session; true when it existed.
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn delete_session(&self, id: &str) -> Result<bool, StoreError> {
        let n: i64 = self
            .query(redis::cmd("DEL").arg(keyspace::session(id)))
            .await?;
        Ok(n > 0)
    }

    /// Every stored session id (SCAN, on every master in cluster mode).
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn session_ids(&self) -> Result<Vec<String>, StoreError> {
        let pattern = format!("{SESSION_PREFIX}*");
        let keys: Vec<String> = if self.settings.cluster {
            let mut conn = self.conn().await?;
            let mut cmd = redis::cmd("KEYS");
            cmd.arg(&pattern);
            // KEYS fans out to every master in cluster mode; SCAN cursors do not.
            self.deadline(cmd.query_async::<Vec<String>>(&mut conn))
                .await?
        } else {
            let mut out = Vec::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, batch): (u64, Vec<String>) = self
                    .query(
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(1000),
                    )
                    .await?;
                out.extend(batch);
                if next == 0 {
                    break out;
                }
                cursor = next;
            }
        };
        Ok(keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(SESSION_PREFIX).map(str::to_owned))
            .collect())
    }
}
