//! What a shard's storage reports to operators (`/metrics`): written by its
//! group commit once per tick, read by whichever shard renders the page.
//! Plain relaxed atomics: a scrape sees each value as of some recent tick.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::latency::ShardLatencies;

#[derive(Debug, Default)]
pub struct StorageGauges {
    /// The WAL position this shard has made durable (published to the
    /// fence).
    pub durable_lsn: AtomicU64,
    pub fdatasyncs: AtomicU64,
    pub segment_bytes_written: AtomicU64,
    /// LMDB write transactions of the ticks' metadata batches.
    pub meta_commits: AtomicU64,
    pub checkpoints: AtomicU64,
    /// Shapes in memory, built (used since their restore or creation).
    pub shapes_built: AtomicU64,
    /// Shapes kept in their small cold form (restored or unloaded).
    pub shapes_cold: AtomicU64,
    /// Built shapes unloaded to cold after being idle.
    pub shapes_unloaded: AtomicU64,
    /// Cold shapes built again (by a read, a change or a schema check).
    pub shapes_rebuilt: AtomicU64,
    /// Subquery dependencies' truths shared by definition, and the
    /// subquery shapes reading them.
    pub subquery_truths: AtomicU64,
    pub subquery_truth_readers: AtomicU64,
    /// Subquery shapes with too many values to be routed by them.
    pub subquery_broad: AtomicU64,
    /// Journal + memory tails now, and the budget they are held under.
    pub memory_bytes: AtomicU64,
    pub memory_budget_bytes: AtomicU64,
    /// The highest `memory_bytes` seen.
    pub memory_peak_bytes: AtomicU64,
    /// Times the feed or a snapshot waited for memory to be freed.
    pub budget_waits: AtomicU64,
    /// 1 while a storage step (segment log, LMDB, checkpoint) is failing
    /// and being retried: nothing new is confirmed to Postgres meanwhile.
    pub storage_failing: AtomicU64,
    /// Failed storage steps (each failed attempt counts).
    pub storage_errors: AtomicU64,
    /// HTTP connections the shard holds open now (set by its listener).
    pub http_connections: AtomicU64,
    /// The shard's latency histograms (requests, applies, ticks,
    /// checkpoints).
    pub latency: ShardLatencies,
}

impl StorageGauges {
    pub fn set(counter: &AtomicU64, value: u64) {
        counter.store(value, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
