//! Where sessions live.
//!
//! [`Sessions`] is what the rest of the gateway uses: a lock-free in-process map of keys in
//! front of a durable backend. The request path only reads the map; admin writes go to the
//! backend first (durably) and then into the map, so an acknowledged write survives a crash
//! and a read never sees a key the backend does not have.
//!
//! Backends: the embedded store ([`embedded`], one redb file, the zero-setup default). Redis
//! joins the same enum for multi-node deployments.
//!
//! Modules depend downwards only:
//!
//! - shared types: [`keyspace`] (every key name), `error` ([`StoreError`]), `verdict`
//!   ([`Admitted`], [`Limited`]), `notification` (the cluster message format);
//! - backends: [`embedded`], [`redis`];
//! - counters: [`batching`] (group commit on Redis), then `counters` ([`Counters`]);
//! - the facade `sessions` ([`Sessions`]), and on top [`notify`], which feeds cluster
//!   notifications into it.

pub mod batching;
mod counters;
pub mod embedded;
mod error;
mod notification;
pub mod notify;
pub mod redis;
mod sessions;
mod verdict;

pub use counters::{Counters, FLUSH_INTERVAL};
pub use error::{RedisFailure, StoreError};
pub use sessions::{CACHE_TTL, KeyEntry, Sessions};
pub use tollgate_session::keyspace;
pub use verdict::{Admitted, Limited};
