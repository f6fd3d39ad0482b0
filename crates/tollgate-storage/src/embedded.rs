//! The embedded store: sessions in one redb file, durable on every acknowledged write.
//!
//! redb's API blocks, so every call here runs on tokio's blocking pool, never on a worker
//! thread. Each write commits with `Durability::Immediate` (fsync) before it returns.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};

use tollgate_limits::QuotaSnapshot;

use crate::error::StoreError;
use crate::keyspace;

const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new(keyspace::EMBEDDED_SESSIONS);
/// Quota counters: id → (used, renews_at in Unix ms), written behind.
const QUOTAS: TableDefinition<&str, (i64, i64)> = TableDefinition::new(keyspace::EMBEDDED_QUOTAS);

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
            if let Err(source) = std::fs::create_dir_all(&dir) {
                return Err(StoreError::CreateFolder { path, source });
            }
            let created = (|| -> Result<Database, redb::Error> {
                let db = Database::create(&path)?;
                // Make sure the tables exist so reads never fail on a fresh file.
                let tx = db.begin_write()?;
                tx.open_table(SESSIONS)?;
                tx.open_table(QUOTAS)?;
                tx.commit()?;
                Ok(db)
            })();
            match created {
                Ok(db) => Ok(Self {
                    db: Arc::new(db),
                    path: Arc::new(path),
                }),
                Err(source) => Err(StoreError::Embedded { path, source }),
            }
        })
        .await
    }

    /// Runs `f` on the database on the blocking pool, naming this file in its error.
    async fn with_db<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, redb::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let this = self.clone();
        run_blocking(move || {
            f(&this.db).map_err(|source| StoreError::Embedded {
                path: this.path.to_path_buf(),
                source,
            })
        })
        .await
    }

    /// Every stored record.
    ///
    /// # Errors
    /// The database cannot be read.
    pub async fn load_all(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.with_db(|db| read_all(db, SESSIONS, <[u8]>::to_vec))
            .await
    }

    /// Stores a record durably.
    ///
    /// # Errors
    /// The write did not commit; nothing changed.
    pub async fn put(&self, id: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.with_db(move |db| {
            let tx = db.begin_write()?;
            tx.open_table(SESSIONS)?
                .insert(id.as_str(), value.as_slice())?;
            Ok(tx.commit()?)
        })
        .await
    }

    /// Removes a record durably; false when it did not exist.
    ///
    /// # Errors
    /// The write did not commit; nothing changed.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.with_db(move |db| {
            let tx = db.begin_write()?;
            let existed = tx.open_table(SESSIONS)?.remove(id.as_str())?.is_some();
            tx.commit()?;
            Ok(existed)
        })
        .await
    }

    /// Every persisted quota counter.
    ///
    /// # Errors
    /// The database cannot be read.
    pub async fn load_quotas(&self) -> Result<Vec<(String, QuotaSnapshot)>, StoreError> {
        self.with_db(|db| {
            read_all(db, QUOTAS, |(used, renews_at_ms)| QuotaSnapshot {
                used,
                renews_at_ms,
            })
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
        self.with_db(move |db| {
            let tx = db.begin_write()?;
            {
                let mut table = tx.open_table(QUOTAS)?;
                for (id, snapshot) in &batch {
                    match snapshot {
                        Some(s) => {
                            table.insert(id.as_str(), (s.used, s.renews_at_ms))?;
                        }
                        None => {
                            table.remove(id.as_str())?;
                        }
                    }
                }
            }
            Ok(tx.commit()?)
        })
        .await
    }
}

/// Every row of a table keyed by id, its value decoded by `decode`.
fn read_all<V: redb::Value + 'static, T>(
    db: &Database,
    table: TableDefinition<'static, &'static str, V>,
    mut decode: impl FnMut(V::SelfType<'_>) -> T,
) -> Result<Vec<(String, T)>, redb::Error> {
    let tx = db.begin_read()?;
    let table = tx.open_table(table)?;
    let mut out = Vec::new();
    for item in table.iter()? {
        let (k, v) = item?;
        out.push((k.value().to_owned(), decode(v.value())));
    }
    Ok(out)
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await?
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
