//! shapeshard perf harness.
