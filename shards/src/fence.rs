//! The persisted-offset fence: each shard publishes the WAL position up to
//! which everything it was sent is durable; the ingest confirms the minimum
//! over all shards to Postgres. A shard with nothing pending publishes the
//! latest position it was told about, so idle shards never hold the fence back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::lsn::Lsn;

/// Shared between the shards (writers, one slot each) and the ingest (reader).
#[derive(Debug)]
pub struct DurableProgress {
    per_shard: Box<[AtomicU64]>,
}

impl DurableProgress {
    /// Every shard starts at `start`: the position Postgres already confirmed.
    pub fn new(shards: usize, start: Lsn) -> Arc<DurableProgress> {
        assert!(shards > 0, "a server has at least one shard");
        Arc::new(DurableProgress {
            per_shard: (0..shards).map(|_| AtomicU64::new(start.0)).collect(),
        })
    }

    pub fn shards(&self) -> usize {
        self.per_shard.len()
    }

    /// Shard `shard` made everything before `lsn` durable. Only the shard
    /// itself calls this, so positions only grow.
    pub fn publish(&self, shard: usize, lsn: Lsn) {
        // fetch_max: a late, lower report never moves a shard back.
        self.per_shard[shard].fetch_max(lsn.0, Ordering::Release);
    }

    pub fn durable(&self, shard: usize) -> Lsn {
        Lsn(self.per_shard[shard].load(Ordering::Acquire))
    }

    /// The fence: everything before it is durable on every shard.
    pub fn fence(&self) -> Lsn {
        let fence = self
            .per_shard
            .iter()
            .map(|slot| slot.load(Ordering::Acquire))
            .min()
            .unwrap_or(0);
        // Positions only grow, so a re-read can only be at or above the
        // fence: the fence is never ahead of any shard's durable position.
        debug_assert!((0..self.shards()).all(|s| self.durable(s).0 >= fence));
        Lsn(fence)
    }

    /// Resets every shard to `lsn` (on start-up, before shards run).
    pub fn reset(&self, lsn: Lsn) {
        for slot in self.per_shard.iter() {
            slot.store(lsn.0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_is_the_minimum_and_never_moves_back() {
        let progress = DurableProgress::new(3, Lsn(100));
        assert_eq!(progress.fence(), Lsn(100));
        progress.publish(0, Lsn(300));
        progress.publish(1, Lsn(200));
        assert_eq!(progress.fence(), Lsn(100));
        progress.publish(2, Lsn(250));
        assert_eq!(progress.fence(), Lsn(200));
        // A stale, lower report does not move a shard back.
        progress.publish(1, Lsn(150));
        assert_eq!(progress.durable(1), Lsn(200));
        assert_eq!(progress.fence(), Lsn(200));
        for s in 0..3 {
            assert!(progress.fence() <= progress.durable(s));
        }
    }
}
