//! The PostgreSQL analytics sink: one row per record in a table created on first use, written
//! in batches (one `INSERT ... SELECT FROM UNNEST` per batch, whatever its size).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use crate::{Record, Sink, SinkError};

/// The analytics table.
pub const TABLE: &str = "tollgate_analytics";

/// Writes records to PostgreSQL.
#[derive(Debug)]
pub struct PgSink {
    url: String,
    client: Mutex<Option<Arc<Client>>>,
}

impl PgSink {
    /// A sink for this connection string (connects, and creates the table, on first write).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            client: Mutex::new(None),
        }
    }

    async fn client(&self) -> Result<Arc<Client>, SinkError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(c));
        }
        let (client, connection) = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_postgres::connect(&self.url, NoTls),
        )
        .await
        .map_err(|_| SinkError::ConnectTimedOut)??;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "analytics database connection ended");
            }
        });
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (
                    id bigserial PRIMARY KEY,
                    ts timestamptz NOT NULL,
                    api_id text NOT NULL,
                    api_name text NOT NULL,
                    org_id text NOT NULL,
                    method text NOT NULL,
                    host text NOT NULL,
                    path text NOT NULL,
                    raw_path text NOT NULL,
                    response_code integer NOT NULL,
                    api_key text NOT NULL,
                    request_time_ms bigint NOT NULL,
                    upstream_ms bigint NOT NULL,
                    ip_address text NOT NULL,
                    user_agent text NOT NULL,
                    alias text NOT NULL,
                    tags text NOT NULL);
                 CREATE INDEX IF NOT EXISTS {TABLE}_api_ts ON {TABLE} (api_id, ts);"
            ))
            .await?;
        let client = Arc::new(client);
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }
}

impl Sink for PgSink {
    async fn write(&self, batch: &[Record]) -> Result<(), SinkError> {
        let client = self.client().await?;
        let col = |f: &dyn Fn(&Record) -> String| batch.iter().map(f).collect::<Vec<String>>();
        let ts: Vec<f64> = batch
            .iter()
            .map(|r| r.timestamp.secs as f64 + f64::from(r.timestamp.nanos) / 1e9)
            .collect();
        let codes: Vec<i32> = batch
            .iter()
            .map(|r| i32::try_from(r.response_code).unwrap_or(0))
            .collect();
        let total: Vec<i64> = batch.iter().map(|r| r.latency.total).collect();
        let upstream: Vec<i64> = batch.iter().map(|r| r.latency.upstream).collect();
        let sql = format!(
            "INSERT INTO {TABLE} (ts, api_id, api_name, org_id, method, host, path, raw_path,
                response_code, api_key, request_time_ms, upstream_ms, ip_address, user_agent, alias, tags)
             SELECT to_timestamp(t), a, n, o, m, h, p, rp, c, k, rt, u, ip, ua, al, tg
             FROM UNNEST($1::float8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                  $7::text[], $8::text[], $9::int4[], $10::text[], $11::int8[], $12::int8[],
                  $13::text[], $14::text[], $15::text[], $16::text[])
                  AS x(t, a, n, o, m, h, p, rp, c, k, rt, u, ip, ua, al, tg)"
        );
        client
            .execute(
                &sql,
                &[
                    &ts,
                    &col(&|r| r.api_id.to_string()),
                    &col(&|r| r.api_name.to_string()),
                    &col(&|r| r.org_id.to_string()),
                    &col(&|r| r.method.clone()),
                    &col(&|r| r.host.to_string()),
                    &col(&|r| r.path.clone()),
                    &col(&|r| r.raw_path.clone()),
                    &codes,
                    &col(&|r| r.api_key.clone()),
                    &total,
                    &upstream,
                    &col(&|r| r.ip_address.clone()),
                    &col(&|r| r.user_agent.clone()),
                    &col(&|r| r.alias.clone()),
                    &col(&|r| r.tags.iter().map(|t| &**t).collect::<Vec<_>>().join(",")),
                ],
            )
            .await?;
        Ok(())
    }
}
