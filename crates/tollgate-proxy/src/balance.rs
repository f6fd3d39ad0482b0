//! Load balancing (`proxy.enable_load_balancing`): which of an API's `target_list` entries a
//! request goes to, and the host health the uptime checks report.
//!
//! The pick happens in the forward phase, after every stage passed (a refused request or a
//! mock answer never advances the round robin), and takes no lock and allocates nothing: each
//! worker has its own `Balancer` (routes are compiled per worker) whose position is a
//! relaxed atomic only that worker writes. With `check_host_against_uptime_tests` a target
//! whose host the checker found down is skipped; when every target is down the request gets
//! 503 `all hosts are down`, as from Tyk's stub.
//!
//! [`HostHealth`] is the one place the checker (off the request path, in the binary) and the
//! workers meet: one atomic flag per checked `host:port`, written on each check result and
//! read with one relaxed load per candidate target.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use http::uri::Authority;
use tollgate_definitions::{ApiSpec, Target};

/// Whether the uptime checks found a host down.
#[derive(Debug, Default)]
pub struct HostStatus {
    down: AtomicBool,
}

impl HostStatus {
    /// True when the host's checks failed enough to take it out.
    pub fn is_down(&self) -> bool {
        // A stale read only sends a request or two to the old state: no ordering is needed.
        self.down.load(Ordering::Relaxed)
    }
}

/// The hosts the uptime checks cover, by `host:port`, and whether each is down. The set of
/// hosts is fixed when it is made (on every load of the definitions); the flags change as
/// results come in.
#[derive(Debug, Default)]
pub struct HostHealth {
    hosts: HashMap<Box<str>, Arc<HostStatus>>,
}

/// Hosts compare by `host:port` ignoring case: a check and a target naming the same host in
/// another case are about the same host.
fn key(authority: &Authority) -> Box<str> {
    authority.as_str().to_ascii_lowercase().into()
}

impl HostHealth {
    /// A table of `authorities`, each up unless `previous` had it down: a reload keeps a host
    /// out until its checks bring it back.
    pub fn new<'a>(
        authorities: impl IntoIterator<Item = &'a Authority>,
        previous: Option<&HostHealth>,
    ) -> Self {
        let mut hosts = HashMap::new();
        for a in authorities {
            let k = key(a);
            let was_down = previous.is_some_and(|p| p.is_down(a));
            hosts.entry(k).or_insert_with(|| {
                Arc::new(HostStatus {
                    down: AtomicBool::new(was_down),
                })
            });
        }
        Self { hosts }
    }

    /// The flag of a checked host, `None` for a host no check covers.
    pub fn status(&self, authority: &Authority) -> Option<&Arc<HostStatus>> {
        self.hosts.get(&*key(authority))
    }

    /// True when a check covers the host and found it down.
    pub fn is_down(&self, authority: &Authority) -> bool {
        self.status(authority).is_some_and(|s| s.is_down())
    }

    /// Records the checks' verdict on a host; returns the previous one (`None` for a host not
    /// in the table).
    pub fn set_down(&self, authority: &Authority, down: bool) -> Option<bool> {
        let status = self.status(authority)?;
        Some(status.down.swap(down, Ordering::Relaxed))
    }

    /// How many hosts the table covers.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// True when no check covers any host.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

/// A `target_list` entry and, with `check_host_against_uptime_tests`, its host's flag.
#[derive(Debug)]
struct Entry {
    target: Target,
    status: Option<Arc<HostStatus>>,
}

impl Entry {
    fn is_down(&self) -> bool {
        self.status.as_deref().is_some_and(HostStatus::is_down)
    }
}

/// The round-robin position, alone on its cache line: the workers' balancers are built one
/// after another and may sit next to each other in memory, and a position another core writes
/// must not share a line with this one.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Position(AtomicUsize);

/// One worker's round robin over an API's (or version's) targets.
#[derive(Debug)]
pub(crate) struct Balancer {
    entries: Box<[Entry]>,
    next: Position,
}

impl Balancer {
    /// The balancer of `spec`, when it balances (a version with its own `override_target`
    /// does not). Targets are linked to their host's flag in `health` when the API checks
    /// hosts against the uptime tests.
    pub(crate) fn compile(spec: &ApiSpec, health: Option<&HostHealth>) -> Option<Self> {
        let lb = spec.load_balancing.as_deref()?;
        let health = health.filter(|_| lb.check_hosts);
        let entries = lb
            .targets
            .iter()
            .map(|t| Entry {
                target: t.clone(),
                status: health.and_then(|h| h.status(&t.authority)).cloned(),
            })
            .collect::<Box<[_]>>();
        (!entries.is_empty()).then(|| Self {
            entries,
            next: Position::default(),
        })
    }

    /// The next target, skipping down hosts from the round robin's position on, as Tyk's
    /// `nextTarget` does; `None` when every target is down.
    pub(crate) fn pick(&self) -> Option<&Target> {
        let n = self.entries.len();
        let start = self.next.0.fetch_add(1, Ordering::Relaxed) % n;
        (0..n)
            .map(|i| &self.entries[(start + i) % n])
            .find(|e| !e.is_down())
            .map(|e| &e.target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(list: &[&str], check_hosts: bool) -> ApiSpec {
        ApiSpec::from_json(&json!({"api_id": "a", "use_keyless": true,
            "proxy": {"listen_path": "/a/", "target_url": "http://up",
                "enable_load_balancing": true, "target_list": list,
                "check_host_against_uptime_tests": check_hosts}}))
        .unwrap()
    }

    fn authority(s: &str) -> Authority {
        s.parse().unwrap()
    }

    fn picks(b: &Balancer, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| b.pick().map_or("-".into(), |t| t.authority.to_string()))
            .collect()
    }

    #[test]
    fn round_robin_weights_by_repetition() {
        let b = Balancer::compile(&spec(&["a:1", "b:2", "a:1"], false), None).unwrap();
        assert_eq!(picks(&b, 6), ["a:1", "b:2", "a:1", "a:1", "b:2", "a:1"]);
        let single = ApiSpec::from_json(&json!({"api_id": "a",
            "proxy": {"listen_path": "/a/", "target_url": "http://up"}}))
        .unwrap();
        assert!(Balancer::compile(&single, None).is_none());
    }

    #[test]
    fn down_hosts_are_skipped_only_when_asked() {
        let hosts = [authority("a:1"), authority("B:2")];
        let health = HostHealth::new(&hosts, None);
        assert_eq!(health.set_down(&authority("b:2"), true), Some(false));
        let checked =
            Balancer::compile(&spec(&["a:1", "b:2", "c:3"], true), Some(&health)).unwrap();
        assert_eq!(picks(&checked, 4), ["a:1", "c:3", "c:3", "a:1"]);
        let unchecked =
            Balancer::compile(&spec(&["a:1", "b:2", "c:3"], false), Some(&health)).unwrap();
        assert_eq!(picks(&unchecked, 3), ["a:1", "b:2", "c:3"]);
        // Every target down: no pick; back up: picked again.
        health.set_down(&authority("a:1"), true);
        let both = Balancer::compile(&spec(&["a:1", "b:2"], true), Some(&health)).unwrap();
        assert_eq!(picks(&both, 2), ["-", "-"]);
        health.set_down(&authority("b:2"), false);
        assert_eq!(picks(&both, 2), ["b:2", "b:2"]);
    }

    #[test]
    fn a_new_table_keeps_hosts_that_were_down() {
        let old = HostHealth::new(&[authority("a:1"), authority("b:2")], None);
        old.set_down(&authority("a:1"), true);
        let new = HostHealth::new(&[authority("A:1"), authority("c:3")], Some(&old));
        assert!(new.is_down(&authority("a:1")));
        assert!(!new.is_down(&authority("c:3")));
        assert_eq!(new.len(), 2);
        assert_eq!(new.set_down(&authority("b:2"), true), None);
        assert!(HostHealth::default().is_empty());
    }
}
