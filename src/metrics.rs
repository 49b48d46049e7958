//! Counters operators read at `GET /metrics` (Prometheus text format).
//! Shared by every shard: plain relaxed atomics, bumped off the hot path.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::http::shape::admission::Kind;

#[derive(Debug, Default)]
pub struct Metrics {
    pub creations_started: AtomicU64,
    pub creations_joined: AtomicU64,
    pub creations_failed: AtomicU64,
    /// Creations in progress now (the owners' in-flight maps).
    pub creations_in_flight: AtomicU64,
    pub requests_coalesced: AtomicU64,
    pub rejected_initial: AtomicU64,
    pub rejected_existing: AtomicU64,
    pub snapshots_started: AtomicU64,
    pub shapes_evicted: AtomicU64,
}

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected(&self, kind: Kind) {
        Metrics::inc(match kind {
            Kind::Initial => &self.rejected_initial,
            Kind::Existing => &self.rejected_existing,
        });
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |name: &str, kind: &str, help: &str, value: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        };
        line(
            "shapeshard_shape_creations_started_total",
            "counter",
            "Shape creations started.",
            &self.creations_started,
        );
        line(
            "shapeshard_shape_creations_joined_total",
            "counter",
            "Requests that awaited a creation already in progress.",
            &self.creations_joined,
        );
        line(
            "shapeshard_shape_creations_failed_total",
            "counter",
            "Shape creations that failed.",
            &self.creations_failed,
        );
        line(
            "shapeshard_shape_creations_in_flight",
            "gauge",
            "Shape creations in progress.",
            &self.creations_in_flight,
        );
        line(
            "shapeshard_requests_coalesced_total",
            "counter",
            "Initial requests answered by another identical forwarded request.",
            &self.requests_coalesced,
        );
        line(
            "shapeshard_requests_rejected_initial_total",
            "counter",
            "Initial requests rejected by admission control.",
            &self.rejected_initial,
        );
        line(
            "shapeshard_requests_rejected_existing_total",
            "counter",
            "Existing-shape requests rejected by admission control.",
            &self.rejected_existing,
        );
        line(
            "shapeshard_snapshots_started_total",
            "counter",
            "Snapshot queries started.",
            &self.snapshots_started,
        );
        line(
            "shapeshard_shapes_evicted_total",
            "counter",
            "Shapes evicted as least recently read (ELECTRIC_MAX_SHAPES).",
            &self.shapes_evicted,
        );
        out
    }
}
