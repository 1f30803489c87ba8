//! A small least-recently-used map shared by the format readers (L2 tables,
//! grain tables, decoded clusters). Entries are few (tens), so a linear
//! search over a vector beats a hash map and keeps memory exactly bounded
//! by `cap` entries.

/// At most `cap` entries; the least recently used one is evicted.
#[derive(Debug)]
pub(crate) struct Lru<K, V> {
    cap: usize,
    tick: u64,
    items: Vec<(K, V, u64)>,
}

impl<K: PartialEq, V: Clone> Lru<K, V> {
    /// An empty cache of at most `cap` (at least 1) entries.
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            tick: 0,
            items: Vec::new(),
        }
    }

    /// The value for `key`, marking it most recently used.
    pub(crate) fn get(&mut self, key: K) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        self.items.iter_mut().find(|(k, _, _)| *k == key).map(|e| {
            e.2 = tick;
            e.1.clone()
        })
    }

    /// True when `key` is cached (without marking it used).
    pub(crate) fn contains(&self, key: &K) -> bool {
        self.items.iter().any(|(k, _, _)| k == key)
    }

    /// Stores `v` under `key`, evicting the least recently used entry when
    /// full.
    pub(crate) fn put(&mut self, key: K, v: V) {
        self.tick += 1;
        if let Some(e) = self.items.iter_mut().find(|(k, _, _)| *k == key) {
            *e = (key, v, self.tick);
            return;
        }
        if self.items.len() >= self.cap
            && let Some(i) = self
                .items
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.2)
                .map(|(i, _)| i)
        {
            self.items.swap_remove(i);
        }
        self.items.push((key, v, self.tick));
    }
}

#[cfg(test)]
mod tests {
    use super::Lru;

    #[test]
    fn evicts_the_least_recently_used() {
        let mut c = Lru::new(2);
        c.put(1, "a");
        c.put(2, "b");
        assert_eq!(c.get(1), Some("a"));
        c.put(3, "c");
        assert_eq!(c.get(2), None);
        assert_eq!(c.get(1), Some("a"));
        assert_eq!(c.get(3), Some("c"));
        c.put(3, "d");
        assert_eq!(c.get(3), Some("d"));
    }
}
