//! A least-recently-used map from text keys, bounded both in entries and in bytes: each
//! entry weighs what its `weigh` function says (the query text it holds, as its key or as
//! its value). The parsed documents (`documents`) and the persisted queries (`persisted`)
//! keep their text in one each. The `lru` crate bounds the entries; this adds the bytes.

use std::num::NonZeroUsize;

/// What one entry costs, in bytes, from its key and value.
pub(super) type Weigh<V> = fn(&str, &V) -> usize;

pub(super) struct WeighedLru<V> {
    entries: lru::LruCache<String, V>,
    bytes: usize,
    max_bytes: usize,
    weigh: Weigh<V>,
}

impl<V> WeighedLru<V> {
    /// At most `max_entries` entries weighing `max_bytes` together.
    pub(super) fn new(max_entries: NonZeroUsize, max_bytes: usize, weigh: Weigh<V>) -> Self {
        Self {
            entries: lru::LruCache::new(max_entries),
            bytes: 0,
            max_bytes,
            weigh,
        }
    }

    /// The value under `key`, which becomes the most recently used.
    pub(super) fn get(&mut self, key: &str) -> Option<&V> {
        self.entries.get(key)
    }

    /// Keeps `value` under `key` (replacing what was there), then lets the least recently
    /// used entries go until both bounds hold. An entry heavier than the whole store is
    /// not kept.
    pub(super) fn put(&mut self, key: String, value: V) {
        let weight = (self.weigh)(&key, &value);
        if weight > self.max_bytes {
            return;
        }
        self.bytes += weight;
        if let Some((old_key, old_value)) = self.entries.push(key, value) {
            self.bytes -= (self.weigh)(&old_key, &old_value);
        }
        while self.bytes > self.max_bytes {
            let Some((old_key, old_value)) = self.entries.pop_lru() else {
                break;
            };
            self.bytes -= (self.weigh)(&old_key, &old_value);
        }
    }

    /// Entries held now.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn by_value(_: &str, value: &Arc<str>) -> usize {
        value.len()
    }

    #[test]
    fn entries_and_bytes_are_both_bounded_least_recently_used_first_out() {
        let mut lru = WeighedLru::new(NonZeroUsize::new(3).unwrap(), 100, by_value);
        for i in 0..4 {
            lru.put(format!("k{i}"), Arc::from("x".repeat(10)));
        }
        assert_eq!(lru.len(), 3, "entries bounded");
        assert!(lru.get("k0").is_none() && lru.get("k1").is_some());
        // k1 was just used: a heavy entry pushes out k2 and k3 first.
        lru.put("heavy".into(), Arc::from("y".repeat(85)));
        assert!(lru.get("k2").is_none() && lru.get("k3").is_none());
        assert!(lru.get("k1").is_some() && lru.get("heavy").is_some());
        assert_eq!(lru.bytes, 95);
        // Replacing a key counts only the new value.
        lru.put("k1".into(), Arc::from("z".repeat(5)));
        assert_eq!(lru.bytes, 90);
        // Heavier than the whole store: not kept, nothing evicted.
        lru.put("huge".into(), Arc::from("w".repeat(101)));
        assert!(lru.get("huge").is_none());
        assert_eq!(lru.len(), 2);
    }
}
