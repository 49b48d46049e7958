//! A shard's durable storage: the framed segment log written with direct
//! I/O and group commit, LMDB metadata, checkpoints into the shapes'
//! serving files, and the gauges operators read (see ARCHITECTURE.md).

pub mod commit;
pub mod gauges;
pub mod meta;
pub mod record;
pub mod segment;
pub mod serving;
