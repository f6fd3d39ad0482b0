//! Storage failures, shared by every backend and the session facade.

use std::path::PathBuf;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded store's folder could not be created.
    #[error("embedded store {path}: cannot create folder: {source}")]
    CreateFolder {
        /// The database file.
        path: PathBuf,
        /// Why the folder could not be made.
        #[source]
        source: std::io::Error,
    },
    /// The embedded database failed.
    #[error("embedded store {path}: {source}")]
    Embedded {
        /// The database file.
        path: PathBuf,
        /// What redb reported.
        #[source]
        source: redb::Error,
    },
    /// A stored record could not be encoded.
    #[error("cannot encode session: {0}")]
    Encode(#[from] serde_json::Error),
    /// A blocking task failed to run (it panicked, or the runtime is shutting down).
    #[error("storage task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The shared store (Redis) cannot be reached.
    #[error("key store unavailable: {0}")]
    Unavailable(#[from] RedisFailure),
}

/// Why a Redis call gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum RedisFailure {
    /// The settings name no Redis node.
    #[error("no Redis address configured")]
    NoAddress,
    /// A recent failure marks Redis as down: the call fails at once instead of waiting.
    #[error("Redis is unreachable")]
    MarkedDown,
    /// No answer within the deadline.
    #[error("timed out")]
    TimedOut,
    /// No connection within the deadline.
    #[error("connecting timed out")]
    ConnectTimedOut,
    /// The liveness probe got no answer in time.
    #[error("no answer to PING in time")]
    PingTimedOut,
    /// Redis answered a command with something of the wrong shape.
    #[error("unexpected {0} reply")]
    UnexpectedReply(&'static str),
    /// The client or the server reported an error.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
}
