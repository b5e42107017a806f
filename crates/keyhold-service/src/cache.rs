//! Generation-checked caches: a fill computed before an invalidation is
//! never inserted after it.

use parking_lot::RwLock;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};

/// A bounded map cleared as a whole on invalidation.
pub(crate) struct Cache<K, V> {
    map: RwLock<HashMap<K, V>>,
    generation: AtomicU64,
    capacity: usize,
}

impl<K: Eq + Hash + Clone, V: Clone> Cache<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            map: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            capacity,
        }
    }

    pub(crate) fn get<Q>(&self, k: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.map.read().get(k).cloned()
    }

    /// The generation to pass to [`Self::insert`]; read it *before* reading
    /// the value from storage.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn insert(&self, generation: u64, k: K, v: V) {
        let mut m = self.map.write();
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        self.make_room(&mut m, &k);
        m.insert(k, v);
    }

    /// Before inserting `k` into a full map: evicts a sixteenth of the
    /// entries, in hash order (effectively random), so a working set
    /// larger than the cache degrades gradually instead of emptying it at
    /// once.
    fn make_room(&self, m: &mut HashMap<K, V>, k: &K) {
        if m.len() < self.capacity || m.contains_key(k) {
            return;
        }
        let victims: Vec<K> = m
            .keys()
            .take((self.capacity / 16).max(1))
            .cloned()
            .collect();
        for k in victims {
            m.remove(&k);
        }
    }

    /// Puts a value just written to storage, unless the entry there is
    /// newer (`keep(existing, v)`); fills read from storage before this
    /// are dropped, as after [`Self::clear_key`].
    pub(crate) fn put_written(&self, k: K, v: V, keep: impl Fn(&V, &V) -> bool) {
        let mut m = self.map.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        if m.get(&k).is_some_and(|have| keep(have, &v)) {
            return;
        }
        self.make_room(&mut m, &k);
        m.insert(k, v);
    }

    pub(crate) fn clear(&self) {
        let mut m = self.map.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        m.clear();
    }

    /// Drops one entry (and keeps any fill computed before from landing).
    pub(crate) fn clear_key<Q>(&self, k: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let mut m = self.map.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        m.remove(k);
    }

    /// Drops the entries `f` picks (and keeps fills computed before from
    /// landing, as [`Self::clear_key`]).
    pub(crate) fn clear_where(&self, f: impl Fn(&K, &V) -> bool) {
        let mut m = self.map.write();
        self.generation.fetch_add(1, Ordering::AcqRel);
        m.retain(|k, v| !f(k, v));
    }

    pub(crate) fn len(&self) -> usize {
        self.map.read().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_fill_is_dropped() {
        let c: Cache<String, u32> = Cache::new(2);
        let g = c.generation();
        c.clear();
        c.insert(g, "a".into(), 1);
        assert_eq!(c.get("a"), None);
        let g = c.generation();
        c.insert(g, "a".into(), 1);
        c.insert(g, "b".into(), 2);
        c.insert(g, "c".into(), 3);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get("c"), Some(3));
        assert!(c.get("a").is_some() != c.get("b").is_some());
    }

    #[test]
    fn a_written_value_replaces_older_ones_only_and_stops_stale_fills() {
        let c: Cache<String, u32> = Cache::new(8);
        let newer = |have: &u32, v: &u32| have >= v;
        let g = c.generation();
        c.put_written("a".into(), 3, newer);
        c.insert(g, "a".into(), 1);
        assert_eq!(
            c.get("a"),
            Some(3),
            "a fill read before the write is dropped"
        );
        c.put_written("a".into(), 2, newer);
        assert_eq!(
            c.get("a"),
            Some(3),
            "an older write landing late is ignored"
        );
        c.put_written("a".into(), 4, newer);
        assert_eq!(c.get("a"), Some(4));
    }
}
