//! shapeshard: the edges of the server (config, HTTP, Postgres wire,
//! replication ingest, dev-mode Postgres). The per-core core is the `shards`
//! crate; dependencies point one way, from here to there.

pub mod check;
pub mod config;
pub mod devpg;
pub mod fuzzing;
pub mod http;
pub mod ingest;
pub mod logging;
pub mod metrics;
pub mod pg;
pub mod read_only;
pub mod server;
pub mod shapes;
pub mod status;
