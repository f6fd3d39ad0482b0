//! Listening to cluster notifications on Redis pub/sub: the top of the crate, since a
//! notification acts on the session facade (dropping cached keys) and on the gateway (reloads).
//! The message format itself is [`Notification`].

use std::sync::Arc;
use std::time::Duration;

pub use crate::notification::Notification;
use crate::notification::{KEY_CHANGED, RELOAD_COMMANDS};
use crate::sessions::Sessions;

/// Listens to the notification channel until the process ends: key changes drop cached
/// sessions, reload commands call `on_reload`. Whenever the subscription breaks, every cached
/// session is dropped (changes may have been missed) and it resubscribes.
pub async fn listen(sessions: Arc<Sessions>, on_reload: impl Fn() + Send + 'static) {
    use futures_util::StreamExt as _;
    let Some(redis) = sessions.redis_store().cloned() else {
        return;
    };
    let secret = redis.node_secret().to_owned();
    let insecure = redis.settings().allow_insecure;
    loop {
        match redis.subscribe().await {
            Ok(pubsub) => {
                sessions.forget_all();
                tracing::info!("subscribed to cluster notifications");
                let mut messages = pubsub.into_on_message();
                while let Some(msg) = messages.next().await {
                    let Some(n) = Notification::verify(msg.get_payload_bytes(), &secret, insecure)
                    else {
                        tracing::warn!(
                            "dropped a cluster notification with a bad signature or format"
                        );
                        continue;
                    };
                    if n.command == KEY_CHANGED {
                        let ids: Vec<&str> = n
                            .payload
                            .split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .collect();
                        sessions.forget(&ids);
                    } else if RELOAD_COMMANDS.contains(&n.command.as_str()) {
                        on_reload();
                    }
                }
                sessions.forget_all();
                tracing::warn!("cluster notifications interrupted; resubscribing");
            }
            Err(e) => tracing::debug!(error = %e, "cannot subscribe to cluster notifications yet"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
