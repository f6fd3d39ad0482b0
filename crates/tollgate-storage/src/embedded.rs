//! The embedded store: sessions in one redb file, durable on every acknowledged write.
//!
//! redb's API blocks, so every call here runs on tokio's blocking pool, never on a worker
//! thread. Each write commits with `Durability::Immediate` (fsync) before it returns.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};

use tollgate_limits::QuotaSnapshot;

use crate::StoreError;

const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// Quota counters: id → (used, renews_at in Unix ms), written behind.
const QUOTAS: TableDefinition<&str, (i64, i64)> = TableDefinition::new("quotas");

/// The embedded session store.
#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: Arc<PathBuf>,
}

impl EmbeddedStore {
    /// Opens (or creates) `dir/tollgate.redb`, creating `dir` when missing.
    ///
    /// # Errors
    /// The folder or file cannot be created, is not a redb database, or another process has it
    /// open.
    pub async fn open(dir: &Path) -> Result<Self, StoreError> {
        let dir = dir.to_path_buf();
        run_blocking(move || {
            let path = dir.join("tollgate.redb");
            let fail = |message: String| StoreError::Embedded {
                path: path.display().to_string(),
                message,
            };
            std::fs::create_dir_all(&dir)
                .map_err(|e| fail(format!("cannot create folder: {e}")))?;
            let db = Database::create(&path).map_err(|e| fail(e.to_string()))?;
            // Make sure the table exists so reads never fail on a fresh file.
            let tx = db.begin_write().map_err(|e| fail(e.to_string()))?;
            tx.open_table(SESSIONS).map_err(|e| fail(e.to_string()))?;
            tx.open_table(QUOTAS).map_err(|e| fail(e.to_string()))?;
            tx.commit().map_err(|e| fail(e.to_string()))?;
            Ok(Self {
                db: Arc::new(db),
                path: Arc::new(path),
            })
        })
        .await
    }

    fn error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Embedded {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    /// Every stored record.
    ///
    /// # Errors
    /// The database cannot be read.
    pub async fn load_all(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let this = self.clone();
        run_blocking(move || {
            let tx = this.db.begin_read().map_err(|e| this.error(e))?;
            let table = tx.open_table(SESSIONS).map_err(|e| this.error(e))?;
            let mut out = Vec::new();
            for item in table.iter().map_err(|e| this.error(e))? {
                let (k, v) = item.map_err(|e| this.error(e))?;
                out.push((k.value().to_owned(), v.value().to_vec()));
            }
            Ok(out)
        })
        .await
    }

    /// Stores a record durably.
    ///
    /// # Errors
    /// The write did not commit; nothing changed.
    pub async fn put(&self, id: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let this = self.clone();
        let id = id.to_owned();
        run_blocking(move || {
            let tx = this.db.begin_write().map_err(|e| this.error(e))?;
            {
                let mut table = tx.open_table(SESSIONS).map_err(|e| this.error(e))?;
                table
                    .insert(id.as_str(), value.as_slice())
                    .map_err(|e| this.error(e))?;
            }
            tx.commit().map_err(|e| this.error(e))
        })
        .await
    }

    /// Removes a record durably; false when it did not exist.
    ///
    /// # Errors
    /// The write did not commit; nothing changed.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let this = self.clone();
        let id = id.to_owned();
        run_blocking(move || {
            let tx = this.db.begin_write().map_err(|e| this.error(e))?;
            let existed = {
                let mut table = tx.open_table(SESSIONS).map_err(|e| this.error(e))?;
                table
                    .remove(id.as_str())
                    .map_err(|e| this.error(e))?
                    .is_some()
            };
            tx.commit().map_err(|e| this.error(e))?;
            Ok(existed)
        })
        .await
    }
}

impl EmbeddedStore {
    /// Every persisted quota counter.
    ///
    /// # Errors
    /// The database cannot be read.
    pub async fn load_quotas(&self) -> Result<Vec<(String, QuotaSnapshot)>, StoreError> {
        let this = self.clone();
        run_blocking(move || {
            let tx = this.db.begin_read().map_err(|e| this.error(e))?;
            let table = tx.open_table(QUOTAS).map_err(|e| this.error(e))?;
            let mut out = Vec::new();
            for item in table.iter().map_err(|e| this.error(e))? {
                let (k, v) = item.map_err(|e| this.error(e))?;
                let (used, renews_at_ms) = v.value();
                out.push((k.value().to_owned(), QuotaSnapshot { used, renews_at_ms }));
            }
            Ok(out)
        })
        .await
    }

    /// Writes quota counters in one transaction; `None` removes a counter.
    ///
    /// # Errors
    /// The write did not commit.
    pub async fn put_quotas(
        &self,
        batch: Vec<(String, Option<QuotaSnapshot>)>,
    ) -> Result<(), StoreError> {
        let this = self.clone();
        run_blocking(move || {
            let tx = this.db.begin_write().map_err(|e| this.error(e))?;
            {
                let mut table = tx.open_table(QUOTAS).map_err(|e| this.error(e))?;
                for (id, snapshot) in &batch {
                    match snapshot {
                        Some(s) => {
                            table
                                .insert(id.as_str(), (s.used, s.renews_at_ms))
                                .map_err(|e| this.error(e))?;
                        }
                        None => {
                            table.remove(id.as_str()).map_err(|e| this.error(e))?;
                        }
                    }
                }
            }
            tx.commit().map_err(|e| this.error(e))
        })
        .await
    }
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_load_delete_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        store.put("a", b"1".to_vec()).await.unwrap();
        store.put("b", b"2".to_vec()).await.unwrap();
        assert!(store.delete("b").await.unwrap());
        assert!(!store.delete("b").await.unwrap());
        drop(store);
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        assert_eq!(
            store.load_all().await.unwrap(),
            vec![("a".to_owned(), b"1".to_vec())]
        );
    }
}
