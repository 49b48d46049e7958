//! Integration tests: one binary (links once), one private Postgres cluster
//! for the whole run, each test in its own database.

mod auth;
mod chunk_cache;
mod client_compat;
mod conn_options;
mod decode;
mod dev_mode;
mod harness;
mod identity_upgrade;
mod live_fanout;
mod memory_budget;
mod nginx;
mod oracle;
mod pg_tls;
mod proxy_cache;
mod reconnect;
mod replay;
mod rig;
mod rng;
mod rolling_deploy;
mod scale_out;
mod server;
mod serving_checksum;
mod shape_api;
mod shape_client;
mod shape_consistency;
mod shape_evict;
mod shape_herd;
mod shape_rehome;
mod shape_restart;
mod shape_sse;
mod shape_subset;
mod shape_unload;
mod standby;
mod torn_write;
mod where_differential;
