//! The per-core core of shapeshard. Nothing here knows HTTP or Postgres wire
//! bytes: the edges (`src/`) hand it domain types.

pub mod change;
pub mod feed;
pub mod fence;
pub mod latency;
pub mod lsn;
pub mod notify;
pub mod owner;
pub mod routes;
pub mod runtime;
pub mod shape;
pub mod shard;
pub mod storage;

pub use lsn::Lsn;
