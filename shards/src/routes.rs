//! Which shards own shapes on which relation. Shards register when they
//! create a shape on a relation; the ingest reads it once per transaction to
//! send the transaction only where it matters.

use std::collections::HashMap;
use std::sync::RwLock;

use crate::change::{RelationId, Transaction};

/// The most shards a server runs; one bit each in a route mask.
pub const MAX_SHARDS: usize = 64;

/// Bit `i` set: shard `i` owns at least one shape on the relation.
pub type ShardMask = u64;

#[derive(Debug, Default)]
pub struct RouteTable {
    // Per relation: per shard, how many shapes it owns there. Written only on
    // shape creation and removal (control plane), read per transaction.
    by_relation: RwLock<HashMap<RelationId, [u32; MAX_SHARDS]>>,
}

impl RouteTable {
    pub fn new() -> RouteTable {
        RouteTable::default()
    }

    /// Shard `shard` now owns one more shape on `relation`.
    pub fn subscribe(&self, relation: RelationId, shard: usize) {
        assert!(shard < MAX_SHARDS, "shard index {shard} out of range");
        let mut map = self.by_relation.write().unwrap_or_else(|e| e.into_inner());
        map.entry(relation).or_insert([0; MAX_SHARDS])[shard] += 1;
    }

    /// Shard `shard` owns one shape fewer on `relation`.
    pub fn unsubscribe(&self, relation: RelationId, shard: usize) {
        let mut map = self.by_relation.write().unwrap_or_else(|e| e.into_inner());
        if let Some(counts) = map.get_mut(&relation) {
            assert!(counts[shard] > 0, "unsubscribe without subscribe");
            counts[shard] -= 1;
            if counts.iter().all(|&c| c == 0) {
                map.remove(&relation);
            }
        }
    }

    /// Whether no shard owns any shape.
    pub fn is_empty(&self) -> bool {
        self.by_relation
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    pub fn mask_for_relation(&self, relation: RelationId) -> ShardMask {
        let map = self.by_relation.read().unwrap_or_else(|e| e.into_inner());
        map.get(&relation).map_or(0, mask_of)
    }

    /// The shards that own a shape on any relation the transaction touches.
    pub fn mask_for(&self, transaction: &Transaction) -> ShardMask {
        let map = self.by_relation.read().unwrap_or_else(|e| e.into_inner());
        let mut mask = 0;
        for change in &transaction.changes {
            for relation in change.relation_ids() {
                if let Some(counts) = map.get(&relation) {
                    mask |= mask_of(counts);
                }
            }
        }
        mask
    }
}

fn mask_of(counts: &[u32; MAX_SHARDS]) -> ShardMask {
    counts
        .iter()
        .enumerate()
        .filter(|(_, &c)| c > 0)
        .fold(0, |mask, (i, _)| mask | (1 << i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_follow_subscriptions() {
        let routes = RouteTable::new();
        assert_eq!(routes.mask_for_relation(7), 0);
        routes.subscribe(7, 1);
        routes.subscribe(7, 1);
        routes.subscribe(7, 3);
        assert_eq!(routes.mask_for_relation(7), 0b1010);
        routes.unsubscribe(7, 1);
        assert_eq!(routes.mask_for_relation(7), 0b1010);
        routes.unsubscribe(7, 1);
        assert_eq!(routes.mask_for_relation(7), 0b1000);
        routes.unsubscribe(7, 3);
        assert_eq!(routes.mask_for_relation(7), 0);
    }
}
