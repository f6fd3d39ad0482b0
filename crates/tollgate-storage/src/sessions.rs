//! The session map the gateway reads on every keyed request.
//!
//! With the embedded store the map holds every key (loaded at start) and is the read path's
//! only source. With Redis it is a cache: entries live [`CACHE_TTL`], unknown keys are
//! remembered for [`MISS_TTL`], and every node drops an entry as soon as any node announces a
//! change to that key on the notification channel. While Redis cannot be reached, cached
//! entries are still served (no key can change meanwhile: every write goes through Redis).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tollgate_session::{
    ActiveKey, HashAlgorithm, KeyHashing, KeyToken, PolicyError, PolicySet, SessionState,
    custom_key,
};

use crate::counters::Counters;
use crate::embedded::EmbeddedStore;
use crate::error::StoreError;
use crate::notification::Notification;
use crate::redis::RedisStore;

/// How long a cached session is trusted without a notification (Redis backend).
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// How long an unknown key is remembered as unknown (Redis backend).
const MISS_TTL: Duration = Duration::from_secs(2);
/// At most this many unknown keys are remembered; beyond it the memory starts over.
const MAX_MISSES: usize = 100_000;

/// One stored key, with its effective session compiled against the policies of `epoch`.
#[derive(Debug)]
pub struct KeyEntry {
    /// The id the key is stored under (its hash when `hash_keys`).
    pub storage_id: Box<str>,
    /// The session as stored.
    pub stored: SessionState,
    active: Result<Arc<ActiveKey>, PolicyError>,
    epoch: u64,
    fetched: Instant,
}

#[derive(Debug)]
struct Policies {
    epoch: u64,
    set: Arc<PolicySet>,
}

#[derive(Debug)]
enum Backend {
    Embedded(EmbeddedStore),
    Redis(Arc<RedisStore>),
    /// Nothing persisted: for tests and throwaway gateways.
    Memory,
}

/// Sessions: a lock-free map of keys in front of the durable backend.
#[derive(Debug)]
pub struct Sessions {
    backend: Backend,
    hashing: KeyHashing,
    counters: Counters,
    map: papaya::HashMap<Box<str>, Arc<KeyEntry>>,
    misses: papaya::HashMap<Box<str>, Instant>,
    policies: ArcSwap<Policies>,
    next_epoch: AtomicU64,
    // Admin writes are rare; serialising them keeps the map and the backend in the same order.
    writes: tokio::sync::Mutex<()>,
}

impl Sessions {
    /// Opens the embedded store in `dir` and loads every key into memory. A record that does
    /// not decode is logged and left out (and left in the store untouched).
    ///
    /// # Errors
    /// The store cannot be opened or read.
    pub async fn open_embedded(
        dir: &std::path::Path,
        hashing: KeyHashing,
    ) -> Result<Arc<Self>, StoreError> {
        let store = EmbeddedStore::open(dir).await?;
        let records = store.load_all().await?;
        let this = Self::with_backend(
            Backend::Embedded(store.clone()),
            hashing,
            Counters::new(Some(store), None),
        );
        let restored = this.counters.restore().await?;
        tracing::debug!(restored, "quota counters restored");
        let map = this.map.pin();
        for (id, bytes) in records {
            match serde_json::from_slice::<SessionState>(&bytes) {
                Ok(session) => {
                    map.insert(id.clone().into(), Arc::new(this.entry(&id, session)));
                }
                Err(e) => {
                    tracing::error!(error = %e, "skipping a stored session that does not decode")
                }
            }
        }
        drop(map);
        Ok(this)
    }

    /// Sessions and counters in Redis, cached here.
    pub fn redis(store: Arc<RedisStore>, hashing: KeyHashing) -> Arc<Self> {
        let counters = Counters::new(None, Some(Arc::clone(&store)));
        Self::with_backend(Backend::Redis(store), hashing, counters)
    }

    /// Sessions kept only in memory (lost on exit).
    pub fn in_memory(hashing: KeyHashing) -> Arc<Self> {
        Self::with_backend(Backend::Memory, hashing, Counters::new(None, None))
    }

    fn with_backend(backend: Backend, hashing: KeyHashing, counters: Counters) -> Arc<Self> {
        Arc::new(Self {
            backend,
            hashing,
            counters,
            map: papaya::HashMap::new(),
            misses: papaya::HashMap::new(),
            policies: ArcSwap::from_pointee(Policies {
                epoch: 0,
                set: Arc::new(PolicySet::default()),
            }),
            next_epoch: AtomicU64::new(1),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    fn entry(&self, id: &str, stored: SessionState) -> KeyEntry {
        let policies = self.policies.load();
        let active = policies
            .set
            .apply(&stored)
            .map(|s| Arc::new(ActiveKey::new(s, id)));
        KeyEntry {
            storage_id: id.into(),
            stored,
            active,
            epoch: policies.epoch,
            fetched: Instant::now(),
        }
    }

    /// The Redis backend, when that is the backend.
    pub fn redis_store(&self) -> Option<&Arc<RedisStore>> {
        match &self.backend {
            Backend::Redis(r) => Some(r),
            _ => None,
        }
    }

    /// Rate-limit and quota counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// How keys map to storage ids.
    pub fn hashing(&self) -> KeyHashing {
        self.hashing
    }

    /// The key stored under `id`, if any. Lock-free when the answer is in memory.
    ///
    /// # Errors
    /// The shared store cannot be reached and the key is not cached.
    pub async fn get(&self, id: &str) -> Result<Option<Arc<KeyEntry>>, StoreError> {
        let cached = self.map.pin().get(id).cloned();
        let Backend::Redis(redis) = &self.backend else {
            return Ok(cached);
        };
        if let Some(e) = &cached
            && e.fetched.elapsed() < CACHE_TTL
        {
            return Ok(cached);
        }
        if cached.is_none()
            && self
                .misses
                .pin()
                .get(id)
                .is_some_and(|t| t.elapsed() < MISS_TTL)
        {
            return Ok(None);
        }
        match redis.get_session(id).await {
            Ok(Some(bytes)) => match serde_json::from_slice::<SessionState>(&bytes) {
                Ok(session) => {
                    let entry = Arc::new(self.entry(id, session));
                    self.map.pin().insert(id.into(), Arc::clone(&entry));
                    Ok(Some(entry))
                }
                Err(e) => {
                    tracing::error!(error = %e, "a stored session does not decode; treating the key as unknown");
                    Ok(None)
                }
            },
            Ok(None) => {
                self.map.pin().remove(id);
                let misses = self.misses.pin();
                // Unknown keys are attacker-controlled: bound the memory they can take.
                if misses.len() >= MAX_MISSES {
                    misses.clear();
                }
                misses.insert(id.into(), Instant::now());
                Ok(None)
            }
            // Redis is down: a key seen before is still served (nothing can change it while
            // every write needs Redis); an unseen key cannot be checked.
            Err(e) => cached.map(Some).ok_or(e),
        }
    }

    /// The key a client presented to an API of `api_org`. Custom keys are stored as Tyk
    /// stores them (a token of org + id), so a client may present the custom id itself.
    ///
    /// # Errors
    /// The shared store cannot be reached and the key is not cached.
    pub async fn find(
        &self,
        presented: &str,
        api_org: &str,
    ) -> Result<Option<Arc<KeyEntry>>, StoreError> {
        let hashing = self.hashing;
        if !hashing.hash_keys {
            if let Some(entry) = self.get(presented).await? {
                return Ok(Some(entry));
            }
        } else {
            // Most keys are tokens naming the configured algorithm: hash once, without
            // decoding the token (this runs on every keyed request).
            if let Some(entry) = self
                .get(&hashing.algorithm.hash(presented.as_bytes()))
                .await?
            {
                return Ok(Some(entry));
            }
            if let Some(alg) = KeyToken::decode(presented)
                .and_then(|t| HashAlgorithm::from_name(&t.h))
                .filter(|alg| *alg != hashing.algorithm)
            {
                return self.get(&alg.hash(presented.as_bytes())).await;
            }
        }
        if presented.starts_with("ey") {
            return Ok(None);
        }
        let token = custom_key(api_org, presented, self.hashing.algorithm);
        self.get(&self.hashing.storage_id(&token)).await
    }

    /// The effective session of an entry under the current policies.
    ///
    /// # Errors
    /// The key's policies cannot be applied.
    pub fn active(&self, entry: &KeyEntry) -> Result<Arc<ActiveKey>, PolicyError> {
        let policies = self.policies.load();
        if entry.epoch == policies.epoch {
            return entry.active.clone();
        }
        // Policies changed and the background refresh has not reached this key yet.
        policies
            .set
            .apply(&entry.stored)
            .map(|s| Arc::new(ActiveKey::new(s, &entry.storage_id)))
    }

    /// Stores a key durably, then makes it visible (and tells the other nodes).
    ///
    /// # Errors
    /// The backend refused the write; nothing changed.
    pub async fn put(&self, id: &str, session: SessionState) -> Result<Arc<KeyEntry>, StoreError> {
        let bytes = serde_json::to_vec(&session)?;
        let _guard = self.writes.lock().await;
        match &self.backend {
            Backend::Embedded(store) => store.put(id, bytes).await?,
            Backend::Redis(redis) => {
                redis.put_session(id, &bytes).await?;
                announce_key_change(redis, id).await;
            }
            Backend::Memory => {}
        }
        let entry = Arc::new(self.entry(id, session));
        self.map.pin().insert(id.into(), Arc::clone(&entry));
        self.misses.pin().remove(id);
        Ok(entry)
    }

    /// Deletes a key durably; false when it did not exist.
    ///
    /// # Errors
    /// The backend refused the write; nothing changed.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let _guard = self.writes.lock().await;
        let existed = match &self.backend {
            Backend::Embedded(store) => store.delete(id).await?,
            Backend::Redis(redis) => {
                let existed = redis.delete_session(id).await?;
                announce_key_change(redis, id).await;
                existed
            }
            Backend::Memory => false,
        };
        let removed = self.map.pin().remove(id).is_some();
        Ok(existed || removed)
    }

    /// Drops cached copies of these keys (another node changed them).
    pub fn forget(&self, ids: &[&str]) {
        let map = self.map.pin();
        let misses = self.misses.pin();
        for id in ids {
            map.remove(*id);
            misses.remove(*id);
        }
    }

    /// Drops every cached key (the notification channel was interrupted, so changes may
    /// have been missed). No-op for the embedded store, where the map is the store.
    pub fn forget_all(&self) {
        if matches!(self.backend, Backend::Redis(_)) {
            self.map.pin().clear();
            self.misses.pin().clear();
        }
    }

    /// Every stored id.
    ///
    /// # Errors
    /// The shared store cannot be reached.
    pub async fn ids(&self) -> Result<Vec<String>, StoreError> {
        let mut ids: Vec<String> = match &self.backend {
            Backend::Redis(redis) => redis.session_ids().await?,
            _ => self.map.pin().keys().map(ToString::to_string).collect(),
        };
        ids.sort();
        Ok(ids)
    }

    /// Every stored entry.
    ///
    /// # Errors
    /// The shared store cannot be reached.
    pub async fn entries(&self) -> Result<Vec<Arc<KeyEntry>>, StoreError> {
        if !matches!(self.backend, Backend::Redis(_)) {
            return Ok(self.map.pin().values().cloned().collect());
        }
        let mut out = Vec::new();
        for id in self.ids().await? {
            if let Some(e) = self.get(&id).await? {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// The number of keys held in memory.
    pub fn cached_len(&self) -> usize {
        self.map.len()
    }

    /// The loaded policies.
    pub fn policy_set(&self) -> Arc<PolicySet> {
        Arc::clone(&self.policies.load().set)
    }

    /// Installs a new policy set and recompiles every key in memory against it.
    pub async fn set_policies(&self, set: PolicySet) {
        let epoch = self.next_epoch.fetch_add(1, Ordering::Relaxed);
        self.policies.store(Arc::new(Policies {
            epoch,
            set: Arc::new(set),
        }));
        let _guard = self.writes.lock().await;
        let map = self.map.pin();
        let stale: Vec<Arc<KeyEntry>> =
            map.values().filter(|e| e.epoch != epoch).cloned().collect();
        for old in stale {
            let mut fresh = self.entry(&old.storage_id, old.stored.clone());
            fresh.fetched = old.fetched;
            map.insert(old.storage_id.clone(), Arc::new(fresh));
        }
    }
}

/// Tells every node (this one included) that a key changed.
async fn announce_key_change(redis: &RedisStore, id: &str) {
    let message = Notification::key_changed(id);
    if let Err(e) = redis.publish(&message.to_json(redis.node_secret())).await {
        tracing::warn!(error = %e, "announcing a key change failed; other nodes see it within the cache TTL");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASHING: KeyHashing = KeyHashing {
        hash_keys: true,
        algorithm: tollgate_session::HashAlgorithm::Sha256,
    };

    fn session(api: &str) -> SessionState {
        serde_json::from_value(
            serde_json::json!({"org_id": "o", "access_rights": {api: {"api_id": api}}}),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn writes_are_durable_and_visible() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sessions::open_embedded(dir.path(), HASHING).await.unwrap();
        s.put("h1", session("a")).await.unwrap();
        assert!(s.get("h1").await.unwrap().is_some());
        drop(s);
        let s = Sessions::open_embedded(dir.path(), HASHING).await.unwrap();
        let e = s.get("h1").await.unwrap().unwrap();
        assert!(
            s.active(&e)
                .unwrap()
                .session
                .access_rights
                .contains_key("a")
        );
        assert!(s.delete("h1").await.unwrap());
        assert!(s.get("h1").await.unwrap().is_none());
        assert_eq!(s.ids().await.unwrap(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn policy_changes_reach_stored_keys() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sessions::open_embedded(dir.path(), HASHING).await.unwrap();
        let mut k = session("a");
        k.apply_policies = vec!["p".into()];
        s.put("h", k).await.unwrap();
        assert!(
            s.active(&s.get("h").await.unwrap().unwrap()).is_err(),
            "unknown policy"
        );
        s.set_policies(
            PolicySet::from_record_json(r#"{"p": {"access_rights": {"b": {"api_id": "b"}}}}"#)
                .unwrap(),
        )
        .await;
        let active = s.active(&s.get("h").await.unwrap().unwrap()).unwrap();
        assert!(active.session.access_rights.contains_key("b"));
    }
}
