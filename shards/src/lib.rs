//! The per-core core of shapeshard. Nothing here knows HTTP or Postgres wire
//! bytes: the edges (`src/`) hand it domain types.

pub mod change;
pub mod lsn;

pub use lsn::Lsn;
