//! What the ingest sends each shard, in WAL order, over a bounded channel.

use std::sync::Arc;

use crate::change::{Relation, Transaction};
use crate::lsn::Lsn;

/// Events per shard feed before the ingest waits: bounds memory held by a
/// slow shard and pushes back on the replication stream (Postgres then keeps
/// the WAL, which is where it belongs).
pub const FEED_CAPACITY: usize = 1024;

#[derive(Clone, Debug)]
pub enum FeedEvent {
    /// A committed transaction touching a relation this shard has shapes on.
    Transaction(Arc<Transaction>),
    /// A relation's (possibly new) definition, for schema-change detection.
    Relation(Arc<Relation>),
    /// Every transaction before this WAL position that concerns this shard
    /// has been sent; a shard with nothing pending is durable up to here.
    Progress(Lsn),
    /// The replication slot was gone and had to be created again: changes
    /// between the old slot's position and the new one's are lost, so every
    /// shape is dropped (its clients get a 409 and re-sync), as Electric does.
    SlotLost,
}
