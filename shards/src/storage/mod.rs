//! A shard's durable storage: the framed segment log written with direct
//! I/O and group commit. (Recovery of shapes from it, the serving layout and
//! retention are still to come; see ARCHITECTURE.md.)

pub mod commit;
pub mod meta;
pub mod record;
pub mod segment;
