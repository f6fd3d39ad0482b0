//! Where sessions live.
//!
//! [`Sessions`] is what the rest of the gateway uses: a lock-free in-process map of keys in
//! front of a durable backend. The request path only reads the map; admin writes go to the
//! backend first (durably) and then into the map, so an acknowledged write survives a crash
//! and a read never sees a key the backend does not have.
//!
//! Backends: the embedded store ([`embedded`], one redb file, the zero-setup default). Redis
//! joins the same enum for multi-node deployments.

pub mod batching;
mod counters;
pub mod embedded;
pub mod notify;
pub mod redis;
mod sessions;

pub use counters::{Admitted, Counters, FLUSH_INTERVAL, Limited};
pub use sessions::{CACHE_TTL, KeyEntry, Sessions};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded database failed.
    #[error("embedded store {path}: {message}")]
    Embedded {
        /// The database file.
        path: String,
        /// What failed.
        message: String,
    },
    /// A stored record could not be encoded.
    #[error("cannot encode session: {0}")]
    Encode(#[from] serde_json::Error),
    /// A blocking task failed to run.
    #[error("storage task failed: {0}")]
    Task(String),
    /// The shared store (Redis) cannot be reached.
    #[error("key store unavailable: {0}")]
    Unavailable(String),
}
