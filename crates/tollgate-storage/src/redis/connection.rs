//! Connections to standalone Redis or a Redis Cluster, one per worker thread, and the
//! deadline and "down" mark every call goes through.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::sync::atomic::Ordering;

use super::RedisStore;
use crate::error::{RedisFailure, StoreError};

/// How long a failure keeps the backend marked down.
const DOWN_FOR: Duration = Duration::from_millis(500);

/// A connection to standalone Redis or to a Redis Cluster.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

thread_local! {
    /// Per-thread connections, by store id.
    static THREAD_CONNS: std::cell::RefCell<Vec<(u64, Conn)>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl RedisStore {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// False while a recent failure marks Redis as down.
    pub fn is_up(&self) -> bool {
        self.now_ms() >= self.down_until.load(Ordering::Relaxed)
    }

    /// This thread's connection. Each worker thread keeps its own multiplexed connection,
    /// driven by its own runtime, so a Redis call never wakes another thread.
    pub(super) async fn conn(&self) -> Result<Conn, StoreError> {
        let now = self.now_ms();
        let down_until = self.down_until.load(Ordering::Relaxed);
        if now < down_until {
            return Err(RedisFailure::MarkedDown.into());
        }
        if down_until != 0 {
            // Recovering: one request at a time probes Redis (each probe may take the whole
            // timeout); the others keep failing fast until it answers. A probe that is
            // abandoned mid-way stops counting once the timeout has passed.
            let started = self.probe_started.load(Ordering::Relaxed);
            let timeout_ms = u64::try_from(self.settings.timeout.as_millis()).unwrap_or(u64::MAX);
            if now < started.saturating_add(timeout_ms)
                || self
                    .probe_started
                    .compare_exchange(started, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                return Err(RedisFailure::MarkedDown.into());
            }
        }
        let cached = THREAD_CONNS.with(|conns| {
            conns
                .borrow()
                .iter()
                .find(|(id, _)| *id == self.id)
                .map(|(_, c)| c.clone())
        });
        if let Some(c) = cached {
            return Ok(c);
        }
        let conn = match &self.single {
            Some(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.settings.timeout))
                    .set_response_timeout(Some(self.settings.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Conn::Single(
                    ConnectionManager::new_lazy_with_config(client.clone(), config)
                        .map_err(RedisFailure::from)?,
                )
            }
            None => {
                let mut builder =
                    redis::cluster::ClusterClientBuilder::new(self.settings.urls.clone())
                        .connection_timeout(self.settings.timeout)
                        .response_timeout(self.settings.timeout);
                if let Some(certs) = self.settings.certificates() {
                    builder = builder.certs(certs);
                }
                let client = builder.build().map_err(RedisFailure::from)?;
                match tokio::time::timeout(self.settings.timeout, client.get_async_connection())
                    .await
                {
                    Ok(Ok(c)) => Conn::Cluster(c),
                    Ok(Err(e)) => return Err(self.failed(e.into())),
                    Err(_) => return Err(self.failed(RedisFailure::ConnectTimedOut)),
                }
            }
        };
        THREAD_CONNS.with(|conns| conns.borrow_mut().push((self.id, conn.clone())));
        Ok(conn)
    }

    /// Marks Redis down for [`DOWN_FOR`] after a failed call.
    fn failed(&self, e: RedisFailure) -> StoreError {
        self.down_until.store(
            self.now_ms() + u64::try_from(DOWN_FOR.as_millis()).unwrap_or(500),
            Ordering::Relaxed,
        );
        tracing::warn!(error = %e, "Redis call failed; treating Redis as down for a moment");
        e.into()
    }

    /// Redis answered: it is up again.
    fn answered(&self) {
        if self.down_until.load(Ordering::Relaxed) != 0 {
            self.down_until.store(0, Ordering::Relaxed);
            tracing::info!("Redis answers again");
        }
    }

    /// The outcome of one call awaited with the deadline (`None`: it timed out): an answer
    /// marks Redis up, a failure marks it down.
    fn settle<T>(&self, outcome: Option<redis::RedisResult<T>>) -> Result<T, StoreError> {
        match outcome {
            Some(Ok(v)) => {
                self.answered();
                Ok(v)
            }
            Some(Err(e)) => Err(self.failed(e.into())),
            None => Err(self.failed(RedisFailure::TimedOut)),
        }
    }

    /// Awaits one Redis call with the deadline; a failure marks Redis down.
    pub(super) async fn deadline<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        self.settle(tokio::time::timeout(self.settings.timeout, call).await.ok())
    }

    /// Runs one command with the deadline.
    ///
    /// Used for session reads and writes, which are safe to send twice: when a thread's
    /// connection turns out to be stale (Redis restarted since it was last used) the command
    /// is retried once on the fresh connection before Redis is treated as down.
    pub(super) async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn().await?;
        let mut retried = false;
        loop {
            let outcome =
                tokio::time::timeout(self.settings.timeout, cmd.query_async::<T>(&mut conn))
                    .await
                    .ok();
            match outcome {
                Some(Err(e)) if !retried && e.is_connection_dropped() && !e.is_timeout() => {
                    retried = true;
                }
                outcome => return self.settle(outcome),
            }
        }
    }

    /// A liveness probe for `/hello`: answers within 250 ms whatever Redis does (a health
    /// check must never hang), and at once while Redis is known to be down.
    ///
    /// # Errors
    /// Redis is down or did not answer in time.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let limit = self.settings.timeout.min(Duration::from_millis(250));
        match tokio::time::timeout(limit, self.query::<String>(&redis::cmd("PING"))).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(RedisFailure::PingTimedOut.into()),
        }
    }
}
