//! Cluster notifications over Redis pub/sub on Tyk's channel. This only moves the bytes: the
//! message format lives with the other shared types, the listener above the session facade.

use super::RedisStore;
use crate::error::{RedisFailure, StoreError};
use crate::keyspace::NOTIFICATION_CHANNEL;

impl RedisStore {
    /// Publishes a cluster notification.
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn publish(&self, message: &str) -> Result<(), StoreError> {
        self.query::<i64>(redis::cmd("PUBLISH").arg(NOTIFICATION_CHANNEL).arg(message))
            .await
            .map(|_| ())
    }

    /// A pub/sub connection subscribed to the notification channel.
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn subscribe(&self) -> Result<redis::aio::PubSub, StoreError> {
        // Cluster nodes relay published messages to each other, so any reachable node will
        // do; try them in turn.
        let mut last = RedisFailure::NoAddress;
        for url in &self.settings.urls {
            match self.subscribe_to(url).await {
                Ok(pubsub) => return Ok(pubsub),
                Err(e) => last = e,
            }
        }
        Err(last.into())
    }

    async fn subscribe_to(&self, url: &str) -> Result<redis::aio::PubSub, RedisFailure> {
        let client = self.settings.client(url)?;
        let mut pubsub = tokio::time::timeout(self.settings.timeout, client.get_async_pubsub())
            .await
            .map_err(|_| RedisFailure::ConnectTimedOut)??;
        pubsub.subscribe(NOTIFICATION_CHANNEL).await?;
        Ok(pubsub)
    }
}
