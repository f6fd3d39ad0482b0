//! API definitions in PostgreSQL (`use_db_app_configs` with a `postgres://` connection
//! string): one row per API in a table the gateway creates on first start. Every node reads
//! the same table, so a write on one node plus a group reload changes every node.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

/// The table holding definitions.
pub const TABLE: &str = "tollgate_api_definitions";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A database failure.
#[derive(Debug, thiserror::Error)]
#[error("API definitions database: {0}")]
pub struct PgError(String);

fn fail(e: impl std::fmt::Display) -> PgError {
    PgError(e.to_string())
}

/// The definitions table.
#[derive(Debug)]
pub struct PgApiStore {
    url: String,
    client: Mutex<Option<Arc<Client>>>,
}

impl PgApiStore {
    /// A store for this connection string (connects on first use).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            client: Mutex::new(None),
        }
    }

    async fn client(&self) -> Result<Arc<Client>, PgError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(c));
        }
        let (client, connection) =
            tokio::time::timeout(CONNECT_TIMEOUT, tokio_postgres::connect(&self.url, NoTls))
                .await
                .map_err(|_| fail("connecting timed out"))?
                .map_err(fail)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "API definitions database connection ended");
            }
        });
        let client = Arc::new(client);
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }

    /// Creates the table when missing.
    ///
    /// # Errors
    /// The database cannot be reached or refuses.
    pub async fn ensure_table(&self) -> Result<(), PgError> {
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {TABLE} (
                api_id text PRIMARY KEY,
                definition jsonb NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now())"
        );
        self.client().await?.batch_execute(&sql).await.map_err(fail)
    }

    /// Every row, by `api_id`.
    ///
    /// # Errors
    /// The database cannot be reached.
    pub async fn load(&self) -> Result<Vec<(String, serde_json::Value)>, PgError> {
        let rows = self
            .client()
            .await?
            .query(
                &format!("SELECT api_id, definition FROM {TABLE} ORDER BY api_id"),
                &[],
            )
            .await
            .map_err(fail)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Adds a definition; false when the id exists.
    ///
    /// # Errors
    /// The database cannot be reached.
    pub async fn insert(&self, api_id: &str, def: &serde_json::Value) -> Result<bool, PgError> {
        self.one_row(
            "INSERT INTO {TABLE} (api_id, definition) VALUES ($1, $2) ON CONFLICT (api_id) DO NOTHING",
            &[&api_id, def],
        )
        .await
    }

    /// Replaces a definition; false when the id does not exist.
    ///
    /// # Errors
    /// The database cannot be reached.
    pub async fn update(&self, api_id: &str, def: &serde_json::Value) -> Result<bool, PgError> {
        self.one_row(
            "UPDATE {TABLE} SET definition = $2, updated_at = now() WHERE api_id = $1",
            &[&api_id, def],
        )
        .await
    }

    /// Deletes a definition; false when the id does not exist.
    ///
    /// # Errors
    /// The database cannot be reached.
    pub async fn delete(&self, api_id: &str) -> Result<bool, PgError> {
        self.one_row("DELETE FROM {TABLE} WHERE api_id = $1", &[&api_id])
            .await
    }

    /// True when a row with this id exists.
    ///
    /// # Errors
    /// The database cannot be reached.
    pub async fn exists(&self, api_id: &str) -> Result<bool, PgError> {
        let rows = self
            .client()
            .await?
            .query(
                &with_table("SELECT 1 FROM {TABLE} WHERE api_id = $1"),
                &[&api_id],
            )
            .await
            .map_err(fail)?;
        Ok(!rows.is_empty())
    }

    /// Runs a statement on one row (`{TABLE}` in `sql` names the table): true when it changed it.
    async fn one_row(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<bool, PgError> {
        let n = self
            .client()
            .await?
            .execute(&with_table(sql), params)
            .await
            .map_err(fail)?;
        Ok(n == 1)
    }
}

fn with_table(sql: &str) -> String {
    sql.replace("{TABLE}", TABLE)
}
