//! The per-core core of shapeshard. Nothing here knows HTTP or Postgres wire
//! bytes: the edges (`src/`) hand it domain types.

pub mod change;
pub mod feed;
pub mod fence;
pub mod lsn;
pub mod owner;
pub mod routes;
pub mod runtime;
pub mod shape;
pub mod shard;

pub use lsn::Lsn;
