//! Per-shard latency histograms operators read at `/metrics` (as Prometheus
//! summaries) and the perf harness resets between workloads.
//!
//! Each histogram is written by one shard only (its HTTP handlers, its core,
//! its group commit) and read by whichever shard renders `/metrics`, so a
//! mutex is uncontended except for the moment of a scrape: a record costs a
//! lock and an array increment, nothing allocates after start-up.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Recorded in microseconds, 3 significant digits, up to a minute (longer
/// values count as a minute: no long-poll or tick lasts that long unless
/// something is badly wrong, and the max then says so). `u32` counts keep
/// each histogram near 64 KiB.
const HIGHEST_US: u64 = 60_000_000;
const SIGNIFICANT_DIGITS: u8 = 3;

/// One latency distribution, with the exact sum Prometheus summaries carry.
#[derive(Debug)]
pub struct Latency {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    histogram: Histogram<u32>,
    sum_us: u64,
}

/// What a scrape reads: quantiles in microseconds, count and sum.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySnapshot {
    pub count: u64,
    pub sum_us: u64,
    pub max_us: u64,
    /// `(quantile, value in µs)` for each of `QUANTILES`.
    pub quantiles: Vec<(f64, u64)>,
}

/// The quantiles every summary reports.
pub const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

impl Default for Latency {
    fn default() -> Latency {
        Latency {
            inner: Mutex::new(Inner {
                histogram: Histogram::new_with_bounds(1, HIGHEST_US, SIGNIFICANT_DIGITS)
                    .expect("constant histogram bounds are valid"),
                sum_us: 0,
            }),
        }
    }
}

impl Latency {
    pub fn record(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let mut inner = self.lock();
        inner.histogram.saturating_record(us.clamp(1, HIGHEST_US));
        inner.sum_us = inner.sum_us.saturating_add(us);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        let inner = self.lock();
        let h = &inner.histogram;
        LatencySnapshot {
            count: h.len(),
            sum_us: inner.sum_us,
            max_us: if h.is_empty() { 0 } else { h.max() },
            quantiles: QUANTILES
                .iter()
                .map(|&q| (q, if h.is_empty() { 0 } else { h.value_at_quantile(q) }))
                .collect(),
        }
    }

    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.histogram.reset();
        inner.sum_us = 0;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding it aborts the process (panic = abort), so
        // a poisoned lock cannot be observed; take the data regardless.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a request to `/v1/shape` was, for its latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// No handle yet (`offset=-1` or `now`): find or create, first chunk.
    Initial,
    /// A handle and an offset, not live: sealed chunks or the tail.
    CatchUp,
    /// A long-poll (its time includes the wait for a change).
    Live,
    /// A subset snapshot (its own query in Postgres).
    Subset,
}

impl RequestKind {
    pub const ALL: [RequestKind; 4] = [
        RequestKind::Initial,
        RequestKind::CatchUp,
        RequestKind::Live,
        RequestKind::Subset,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RequestKind::Initial => "initial",
            RequestKind::CatchUp => "catch_up",
            RequestKind::Live => "live",
            RequestKind::Subset => "subset",
        }
    }
}

/// Every latency one shard records.
#[derive(Debug, Default)]
pub struct ShardLatencies {
    /// `/v1/shape` answers by kind (indexed as `RequestKind::ALL`), from
    /// the request parsed to its response ready on the connection's shard.
    requests: [Latency; 4],
    /// One replication transaction applied to this shard's shapes.
    pub apply: Latency,
    /// One group-commit tick's segment write + fdatasync.
    pub commit: Latency,
    /// One checkpoint: tails into serving files, syncfs, LMDB.
    pub checkpoint: Latency,
}

impl ShardLatencies {
    pub fn request(&self, kind: RequestKind) -> &Latency {
        &self.requests[kind as usize]
    }

    pub fn reset(&self) {
        for latency in self.all() {
            latency.reset();
        }
    }

    fn all(&self) -> impl Iterator<Item = &Latency> {
        self.requests
            .iter()
            .chain([&self.apply, &self.commit, &self.checkpoint])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_count_and_sum_follow_what_was_recorded() {
        let latency = Latency::default();
        assert_eq!(latency.snapshot().count, 0);
        assert_eq!(latency.snapshot().quantiles[0], (0.5, 0));
        for ms in 1..=1000u64 {
            latency.record(Duration::from_micros(ms * 1000));
        }
        let s = latency.snapshot();
        assert_eq!(s.count, 1000);
        assert_eq!(s.sum_us, 500_500_000);
        let p50 = s.quantiles[0].1;
        assert!((499_000..=501_000).contains(&p50), "p50 {p50}");
        let p999 = s.quantiles[3].1;
        assert!((998_000..=1_000_500).contains(&p999), "p99.9 {p999}");
        assert!((999_000..=1_000_500).contains(&s.max_us), "max {}", s.max_us);
    }

    #[test]
    fn out_of_range_values_saturate_and_reset_empties() {
        let latency = Latency::default();
        latency.record(Duration::from_secs(3600));
        latency.record(Duration::ZERO);
        let s = latency.snapshot();
        assert_eq!(s.count, 2);
        assert!(s.max_us >= HIGHEST_US - HIGHEST_US / 1000, "{}", s.max_us);
        let shard = ShardLatencies::default();
        shard.request(RequestKind::Live).record(Duration::from_millis(5));
        shard.commit.record(Duration::from_millis(1));
        assert_eq!(shard.request(RequestKind::Live).snapshot().count, 1);
        assert_eq!(shard.request(RequestKind::Initial).snapshot().count, 0);
        shard.reset();
        assert_eq!(shard.request(RequestKind::Live).snapshot().count, 0);
        assert_eq!(shard.commit.snapshot().count, 0);
    }
}
