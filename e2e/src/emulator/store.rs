//! The object store: objects per kind as JSON, one global monotonically increasing
//! resourceVersion, and a bounded event history that serves watches, consistent snapshots for
//! paginated lists and `410 Expired` for anything older than the retained window.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::watch;

/// Object key inside one kind: (namespace or empty, name).
pub type ObjKey = (String, String);

/// Watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

impl EventType {
    /// Wire name of the event type.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One retained change.
#[derive(Debug, Clone)]
pub struct HistoryEvent {
    /// resourceVersion of the change.
    pub rv: u64,
    /// Storage key of the kind.
    pub storage: &'static str,
    /// Key of the object.
    pub key: ObjKey,
    /// What happened.
    pub etype: EventType,
    /// Object after the change (for deletes: the object as deleted, with the delete's RV).
    pub object: Arc<Value>,
    /// Object before the change, if it existed.
    pub prev: Option<Arc<Value>>,
}

/// Why events or a snapshot cannot be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooOld {
    /// The oldest resourceVersion still served.
    pub oldest: u64,
}

/// All emulator state behind one lock.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    objects: HashMap<&'static str, BTreeMap<ObjKey, Arc<Value>>>,
    history: VecDeque<HistoryEvent>,
    retained: usize,
    /// Lists and new watches at an RV below this are expired.
    floor: u64,
    /// RV of the newest event dropped from history; running watches behind it are expired.
    last_dropped: u64,
    notify: watch::Sender<u64>,
    /// Counters for Service address allocation.
    pub next_cluster_ip: u32,
    /// Next NodePort to hand out.
    pub next_node_port: u16,
}

impl Store {
    /// An empty store retaining `retained` events.
    pub fn new(retained: usize) -> Self {
        let (notify, _) = watch::channel(1);
        Store {
            rv: 1,
            objects: HashMap::new(),
            history: VecDeque::new(),
            retained: retained.max(1),
            floor: 0,
            last_dropped: 0,
            notify,
            next_cluster_ip: 10,
            next_node_port: 30000,
        }
    }

    /// The current (latest issued) resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// A receiver that changes whenever the resourceVersion advances.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    /// Takes the next resourceVersion.
    pub fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// One object.
    pub fn get(&self, storage: &str, key: &ObjKey) -> Option<Arc<Value>> {
        self.objects.get(storage).and_then(|m| m.get(key)).cloned()
    }

    /// Whether a namespace object exists.
    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.get("namespaces", &(String::new(), ns.to_string()))
            .is_some()
    }

    /// Current objects of a kind, optionally in one namespace, ordered by key.
    pub fn list_current(&self, storage: &str, ns: Option<&str>) -> Vec<(ObjKey, Arc<Value>)> {
        self.objects
            .get(storage)
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| ns.is_none_or(|n| k.0 == n))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Objects of a kind as they were at `rv` (rolled back through the history).
    pub fn snapshot(
        &self,
        storage: &str,
        ns: Option<&str>,
        rv: u64,
    ) -> Result<Vec<(ObjKey, Arc<Value>)>, TooOld> {
        if rv < self.floor {
            return Err(TooOld { oldest: self.floor });
        }
        let mut map: BTreeMap<ObjKey, Arc<Value>> =
            self.objects.get(storage).cloned().unwrap_or_default();
        for ev in self.history.iter().rev().take_while(|e| e.rv > rv) {
            if ev.storage != storage {
                continue;
            }
            match &ev.prev {
                Some(p) => {
                    map.insert(ev.key.clone(), p.clone());
                }
                None => {
                    map.remove(&ev.key);
                }
            }
        }
        Ok(map
            .into_iter()
            .filter(|(k, _)| ns.is_none_or(|n| k.0 == n))
            .collect())
    }

    /// Whether a new watch or exact list may start at `rv`.
    pub fn check_start(&self, rv: u64) -> Result<(), TooOld> {
        if rv < self.floor {
            Err(TooOld { oldest: self.floor })
        } else {
            Ok(())
        }
    }

    /// Events of a kind after `cursor`; `Err` when some were already dropped.
    pub fn events_after(&self, storage: &str, cursor: u64) -> Result<Vec<HistoryEvent>, TooOld> {
        if cursor < self.last_dropped {
            return Err(TooOld {
                oldest: self.floor.max(self.last_dropped),
            });
        }
        let start = self.history.partition_point(|e| e.rv <= cursor);
        Ok(self
            .history
            .iter()
            .skip(start)
            .filter(|e| e.storage == storage)
            .cloned()
            .collect())
    }

    /// Stores (or removes, for `Deleted`) an object at a fresh resourceVersion the caller
    /// already wrote into `object.metadata.resourceVersion`.
    pub fn commit(
        &mut self,
        storage: &'static str,
        key: ObjKey,
        etype: EventType,
        rv: u64,
        object: Value,
    ) -> Arc<Value> {
        let object = Arc::new(object);
        let map = self.objects.entry(storage).or_default();
        let prev = match etype {
            EventType::Deleted => map.remove(&key),
            _ => map.insert(key.clone(), object.clone()),
        };
        self.history.push_back(HistoryEvent {
            rv,
            storage,
            key,
            etype,
            object: object.clone(),
            prev,
        });
        self.trim();
        self.notify.send_replace(rv);
        object
    }

    fn trim(&mut self) {
        while self.history.len() > self.retained {
            if let Some(ev) = self.history.pop_front() {
                self.last_dropped = ev.rv;
                self.floor = self.floor.max(ev.rv);
            }
        }
    }

    /// Changes how many events are retained (dropping the oldest beyond it).
    pub fn set_retained(&mut self, n: usize) {
        self.retained = n.max(1);
        self.trim();
    }

    /// Drops the whole history: every resourceVersion issued so far becomes too old for new
    /// watches and exact lists (running watches that are caught up keep going).
    pub fn compact(&mut self) {
        let rv = self.next_rv();
        if let Some(last) = self.history.back() {
            self.last_dropped = last.rv;
        }
        self.history.clear();
        self.floor = rv;
        self.notify.send_replace(rv);
    }

    /// Every namespaced object key in a namespace, across kinds.
    pub fn keys_in_namespace(&self, ns: &str) -> Vec<(&'static str, ObjKey)> {
        let mut out = Vec::new();
        for (storage, map) in &self.objects {
            for k in map.keys().filter(|k| k.0 == ns) {
                out.push((*storage, k.clone()));
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(n: &str) -> ObjKey {
        ("ns".to_string(), n.to_string())
    }

    fn obj(n: &str, v: u64) -> Value {
        json!({"metadata": {"name": n, "namespace": "ns", "resourceVersion": v.to_string()}})
    }

    #[test]
    fn snapshot_rolls_back_history() {
        let mut s = Store::new(100);
        let r1 = s.next_rv();
        s.commit("configmaps", key("a"), EventType::Added, r1, obj("a", r1));
        let r2 = s.next_rv();
        s.commit("configmaps", key("b"), EventType::Added, r2, obj("b", r2));
        let r3 = s.next_rv();
        s.commit("configmaps", key("a"), EventType::Deleted, r3, obj("a", r3));
        let at1 = s.snapshot("configmaps", None, r1).unwrap_or_default();
        assert_eq!(at1.len(), 1);
        assert_eq!(at1[0].0, key("a"));
        let at2 = s.snapshot("configmaps", None, r2).unwrap_or_default();
        assert_eq!(at2.len(), 2);
        let now = s.snapshot("configmaps", None, r3).unwrap_or_default();
        assert_eq!(now.len(), 1);
        assert_eq!(now[0].0, key("b"));
    }

    #[test]
    fn window_and_compaction_expire_old_versions() {
        let mut s = Store::new(2);
        let mut rvs = Vec::new();
        for n in ["a", "b", "c"] {
            let rv = s.next_rv();
            s.commit("configmaps", key(n), EventType::Added, rv, obj(n, rv));
            rvs.push(rv);
        }
        assert!(s.events_after("configmaps", rvs[0] - 1).is_err());
        assert_eq!(s.events_after("configmaps", rvs[0]).map(|e| e.len()), Ok(2));
        assert!(s.check_start(rvs[0]).is_ok());
        s.compact();
        assert!(s.check_start(rvs[2]).is_err());
        assert!(s.check_start(s.current_rv()).is_ok());
        assert_eq!(s.events_after("configmaps", rvs[2]).map(|e| e.len()), Ok(0));
    }
}
