//! shapeshard perf harness: workloads against a real Postgres and the real
//! server code, with reports that state the machine and compare against a
//! limit measured in the same run.

pub mod fixture;
pub mod psql;
pub mod report;
pub mod server;
pub mod shapes;
