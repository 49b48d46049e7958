//! Shapes on the edge that knows Postgres: catalog reads, snapshots, the
//! per-shard connection pool, and the owner-side request handling.

pub mod catalog;
pub mod chunk_cache;
pub mod create;
pub mod evict;
pub mod filter;
pub mod movein;
pub mod persist;
pub mod pool;
pub mod recover;
pub mod rehome;
pub mod reseed;
pub mod service;
pub mod subquery;
pub mod subset;
