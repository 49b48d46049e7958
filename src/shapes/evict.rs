//! LRU eviction across shards (`ELECTRIC_MAX_SHAPES`): every shard publishes
//! how many shapes it holds and the read stamp of its least recently read
//! one; after a creation pushes the total over the limit, the shard holding
//! the globally oldest shape is asked (over the mesh) to evict it. Its
//! clients get 409 and re-sync. Reads stamp shapes from one server-wide
//! clock, so stamps compare across shards.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use shards::shape::registry::Registry;

#[derive(Debug)]
pub struct Eviction {
    /// 0: unlimited.
    pub max: usize,
    clock: AtomicU64,
    sizes: Vec<AtomicUsize>,
    oldest: Vec<AtomicU64>,
}

impl Eviction {
    pub fn new(max: usize, shards: usize) -> Eviction {
        Eviction {
            max,
            // Stamps persist (LMDB) across restarts: starting from the wall
            // clock in microseconds keeps new reads newer than any stamp a
            // previous run handed out (it advanced by one per read).
            clock: AtomicU64::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_micros() as u64),
            ),
            sizes: (0..shards).map(|_| AtomicUsize::new(0)).collect(),
            oldest: (0..shards).map(|_| AtomicU64::new(u64::MAX)).collect(),
        }
    }

    /// The next read stamp.
    pub fn stamp(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// Publishes `shard`'s count and oldest read after a change.
    pub fn publish(&self, shard: usize, registry: &Registry) {
        self.sizes[shard].store(registry.len(), Ordering::Relaxed);
        let oldest = registry.oldest_read().map_or(u64::MAX, |(stamp, _)| stamp);
        self.oldest[shard].store(oldest, Ordering::Relaxed);
    }

    pub fn over_limit(&self) -> bool {
        self.max > 0
            && self
                .sizes
                .iter()
                .map(|s| s.load(Ordering::Relaxed))
                .sum::<usize>()
                > self.max
    }

    /// The shard holding the least recently read shape.
    pub fn victim_shard(&self) -> Option<usize> {
        self.oldest
            .iter()
            .enumerate()
            .map(|(i, o)| (o.load(Ordering::Relaxed), i))
            .filter(|&(o, _)| o != u64::MAX)
            .min()
            .map(|(_, i)| i)
    }
}
