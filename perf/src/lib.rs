//! shapeshard perf harness: workloads against a real Postgres and the real
//! server, each beside a limit measured in the same run, with HDR
//! histograms, plots and flamegraphs in one report directory
//! (`cargo run -p perf --release -- run all`).

pub mod bench;
pub mod fixture;
pub mod flame;
pub mod loadgen;
pub mod plot;
pub mod psql;
pub mod report;
pub mod server;
pub mod shapes;
pub mod workloads;
