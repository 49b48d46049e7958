//! shapeshard: the edges of the server (config, HTTP, Postgres wire,
//! replication ingest, dev-mode Postgres). The per-core core is the `shards`
//! crate; dependencies point one way, from here to there.

pub mod pg;
