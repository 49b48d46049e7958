//! Every workload of the harness, one module each.

pub mod decode;
pub mod e2e_write;
pub mod fanout;
pub mod herd;
pub mod idle;
pub mod initial_sync;
pub mod large_shape;
pub mod restore;
pub mod shard_write;
pub mod shutdown;
pub mod subquery;
pub mod write_latency;
