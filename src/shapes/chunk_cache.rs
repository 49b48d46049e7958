//! A shard's cache of immutable response bodies. A sealed chunk's items
//! after a given offset never change, whether they sit in the memory tail
//! or the serving file, so the body answering "from offset X to that
//! chunk's end" is built (read, checksummed, joined) once and then shared
//! as `Bytes` by every request asking it again: a herd re-fetching a shape,
//! clients catching up through the same chunks.
//!
//! Bounded in bytes, least recently used out first. Keys carry the shard's
//! shape id, never reused within a run, so a removed shape's entries are
//! never served for another shape; they age out.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use bytes::Bytes;
use shards::shape::offset::LogOffset;

/// `(shape id, after, end)`.
pub type ChunkKey = (u64, LogOffset, LogOffset);

/// Bytes a cached value holds (what the budget counts).
pub trait Weigh {
    fn weight(&self) -> usize;
}

impl Weigh for Bytes {
    fn weight(&self) -> usize {
        self.len()
    }
}

pub struct ChunkCache<K = ChunkKey, V = Bytes> {
    budget: usize,
    bytes: usize,
    clock: u64,
    entries: HashMap<K, (V, u64)>,
    /// Entries by last use, oldest first.
    order: BTreeMap<u64, K>,
}

impl<K: Hash + Eq + Clone, V: Weigh + Clone> ChunkCache<K, V> {
    pub fn new(budget: usize) -> ChunkCache<K, V> {
        ChunkCache {
            budget,
            bytes: 0,
            clock: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    pub fn get(&mut self, key: &K) -> Option<V> {
        self.clock += 1;
        let (body, used) = self.entries.get_mut(key)?;
        self.order.remove(used);
        *used = self.clock;
        self.order.insert(self.clock, key.clone());
        Some(body.clone())
    }

    pub fn remove(&mut self, key: &K) {
        if let Some((gone, used)) = self.entries.remove(key) {
            self.order.remove(&used);
            self.bytes -= gone.weight();
        }
    }

    /// Keeps `body` unless it alone is over a quarter of the budget (one
    /// huge chunk must not flush everything else).
    pub fn put(&mut self, key: K, body: V) {
        let weight = body.weight();
        if weight > self.budget / 4 || self.entries.contains_key(&key) {
            return;
        }
        while self.bytes + weight > self.budget {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((gone, _)) = self.entries.remove(&oldest) {
                self.bytes -= gone.weight();
            }
        }
        self.clock += 1;
        self.bytes += weight;
        self.order.insert(self.clock, key.clone());
        self.entries.insert(key, (body, self.clock));
        debug_assert!(self.bytes <= self.budget, "the cache stays in its budget");
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> ChunkKey {
        (n, LogOffset::BeforeAll, LogOffset::snapshot_chunk(0))
    }

    #[test]
    fn keeps_within_its_budget_least_recently_used_out_first() {
        let mut cache: ChunkCache = ChunkCache::new(400);
        for n in 0..4 {
            cache.put(key(n), Bytes::from(vec![b'x'; 100]));
        }
        assert_eq!(cache.bytes(), 400);
        // Touch 0: 1 is now the oldest and goes first.
        assert!(cache.get(&key(0)).is_some());
        cache.put(key(4), Bytes::from(vec![b'y'; 100]));
        assert_eq!(cache.bytes(), 400);
        assert!(cache.get(&key(1)).is_none());
        assert!(cache.get(&key(0)).is_some());
        assert_eq!(cache.get(&key(4)).unwrap()[0], b'y');
        // Too big for a quarter of the budget: not kept, nothing evicted.
        cache.put(key(9), Bytes::from(vec![b'z'; 101]));
        assert!(cache.get(&key(9)).is_none());
        assert_eq!(cache.len(), 4);
    }
}
