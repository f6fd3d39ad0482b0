//! The session map the gateway reads on every keyed request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use tollgate_session::{ActiveKey, KeyHashing, PolicyError, PolicySet, SessionState, custom_key};

use crate::StoreError;
use crate::counters::Counters;
use crate::embedded::EmbeddedStore;

/// One stored key, with its effective session compiled against the policies of `epoch`.
#[derive(Debug)]
pub struct KeyEntry {
    /// The id the key is stored under (its hash when `hash_keys`).
    pub storage_id: Box<str>,
    /// The session as stored.
    pub stored: SessionState,
    active: Result<Arc<ActiveKey>, PolicyError>,
    epoch: u64,
}

#[derive(Debug)]
struct Policies {
    epoch: u64,
    set: Arc<PolicySet>,
}

#[derive(Debug)]
enum Backend {
    Embedded(EmbeddedStore),
    /// Nothing persisted: for tests and throwaway gateways.
    Memory,
}

/// Sessions: a lock-free map of every key in front of the durable backend.
#[derive(Debug)]
pub struct Sessions {
    backend: Backend,
    hashing: KeyHashing,
    counters: Counters,
    map: papaya::HashMap<Box<str>, Arc<KeyEntry>>,
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
        let this = Self::with_backend(Backend::Embedded(store.clone()), hashing, Some(store));
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

    /// Sessions kept only in memory (lost on exit).
    pub fn in_memory(hashing: KeyHashing) -> Arc<Self> {
        Self::with_backend(Backend::Memory, hashing, None)
    }

    fn with_backend(
        backend: Backend,
        hashing: KeyHashing,
        persist: Option<EmbeddedStore>,
    ) -> Arc<Self> {
        Arc::new(Self {
            backend,
            hashing,
            counters: Counters::new(persist),
            map: papaya::HashMap::new(),
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
        }
    }

    /// The key stored under `id`, if any. Lock-free.
    pub fn get(&self, id: &str) -> Option<Arc<KeyEntry>> {
        self.map.pin().get(id).cloned()
    }

    /// Rate-limit and quota counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// How keys map to storage ids.
    pub fn hashing(&self) -> KeyHashing {
        self.hashing
    }

    /// The key a client presented to an API of `api_org`. Custom keys are stored as Tyk
    /// stores them (a token of org + id), so a client may present the custom id itself.
    pub fn find(&self, presented: &str, api_org: &str) -> Option<Arc<KeyEntry>> {
        if let Some(entry) = self.get(&self.hashing.storage_id(presented)) {
            return Some(entry);
        }
        if presented.starts_with("ey") {
            return None;
        }
        let token = custom_key(api_org, presented, self.hashing.algorithm);
        self.get(&self.hashing.storage_id(&token))
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

    /// Stores a key durably, then makes it visible.
    ///
    /// # Errors
    /// The backend refused the write; nothing changed.
    pub async fn put(&self, id: &str, session: SessionState) -> Result<Arc<KeyEntry>, StoreError> {
        let bytes = serde_json::to_vec(&session)?;
        let _guard = self.writes.lock().await;
        match &self.backend {
            Backend::Embedded(store) => store.put(id, bytes).await?,
            Backend::Memory => {}
        }
        let entry = Arc::new(self.entry(id, session));
        self.map.pin().insert(id.into(), Arc::clone(&entry));
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
            Backend::Memory => false,
        };
        let removed = self.map.pin().remove(id).is_some();
        Ok(existed || removed)
    }

    /// Every stored id.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.map.pin().keys().map(|k| k.to_string()).collect();
        ids.sort();
        ids
    }

    /// Every stored entry.
    pub fn entries(&self) -> Vec<Arc<KeyEntry>> {
        self.map.pin().values().cloned().collect()
    }

    /// The loaded policies.
    pub fn policy_set(&self) -> Arc<PolicySet> {
        Arc::clone(&self.policies.load().set)
    }

    /// Installs a new policy set and recompiles every key against it.
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
            map.insert(
                old.storage_id.clone(),
                Arc::new(self.entry(&old.storage_id, old.stored.clone())),
            );
        }
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
        assert!(s.get("h1").is_some());
        drop(s);
        let s = Sessions::open_embedded(dir.path(), HASHING).await.unwrap();
        let e = s.get("h1").unwrap();
        assert!(
            s.active(&e)
                .unwrap()
                .session
                .access_rights
                .contains_key("a")
        );
        assert!(s.delete("h1").await.unwrap());
        assert!(s.get("h1").is_none());
        assert_eq!(s.ids(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn policy_changes_reach_stored_keys() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sessions::open_embedded(dir.path(), HASHING).await.unwrap();
        let mut k = session("a");
        k.apply_policies = vec!["p".into()];
        s.put("h", k).await.unwrap();
        assert!(s.active(&s.get("h").unwrap()).is_err(), "unknown policy");
        s.set_policies(
            PolicySet::from_record_json(r#"{"p": {"access_rights": {"b": {"api_id": "b"}}}}"#)
                .unwrap(),
        )
        .await;
        let active = s.active(&s.get("h").unwrap()).unwrap();
        assert!(active.session.access_rights.contains_key("b"));
    }
}
