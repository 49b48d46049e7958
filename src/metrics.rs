//! Counters operators read at `GET /metrics` (Prometheus text format).
//! Shared by every shard: plain relaxed atomics, bumped off the hot path.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use shards::latency::{LatencySnapshot, RequestKind, ShardLatencies};
use shards::storage::gauges::StorageGauges;

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
    /// SSE responses streaming now, and streamed in all.
    pub sse_streams_open: AtomicU64,
    pub sse_streams_total: AtomicU64,
    pub subset_snapshots: AtomicU64,
    /// Shapes dropped because a serving-file frame failed its checksum.
    pub serving_files_corrupt: AtomicU64,
    /// Live answers built from the log, and live answers that reused one
    /// built for another request waiting at the same offset.
    pub live_bodies_built: AtomicU64,
    pub live_bodies_shared: AtomicU64,
    /// Live requests that joined an identical one in flight from the same
    /// shard (one owner read answers all of them).
    pub live_reads_joined: AtomicU64,
    /// Sealed-chunk bodies served from the chunk cache, built for it, and
    /// the bytes it holds (all shards).
    pub chunk_cache_hits: AtomicU64,
    pub chunk_cache_misses: AtomicU64,
    pub chunk_cache_bytes: AtomicU64,
    /// Sealed-chunk replies a shard answered itself, kept from an earlier
    /// answer of the shape's owner.
    pub replies_reused: AtomicU64,
    /// Shapes some shard's SSE streams follow: one owner task each,
    /// however many streams.
    pub shapes_watched: AtomicU64,
    /// One per shard, written by its group commit.
    pub storage: Vec<Arc<StorageGauges>>,
}

impl Metrics {
    pub fn new(shards: usize) -> Metrics {
        Metrics {
            storage: (0..shards).map(|_| Arc::default()).collect(),
            ..Metrics::default()
        }
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected(&self, kind: Kind) {
        Metrics::inc(match kind {
            Kind::Initial => &self.rejected_initial,
            Kind::Existing => &self.rejected_existing,
        });
    }

    /// Shards whose storage is failing now (`/v1/health`).
    pub fn storage_failing(&self) -> Vec<usize> {
        self.storage
            .iter()
            .enumerate()
            .filter(|(_, g)| StorageGauges::get(&g.storage_failing) != 0)
            .map(|(shard, _)| shard)
            .collect()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |name: &str, kind: &str, help: &str, value: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        };
        let cap = AtomicU64::new(crate::http::MAX_CONNECTIONS_PER_SHARD as u64);
        line(
            "shapeshard_http_connections_max",
            "gauge",
            "HTTP connections a shard holds at most; past it, new ones wait in the listen backlog.",
            &cap,
        );
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
            "shapeshard_sse_streams_open",
            "gauge",
            "SSE live responses streaming now.",
            &self.sse_streams_open,
        );
        line(
            "shapeshard_sse_streams_total",
            "counter",
            "SSE live responses opened as streams.",
            &self.sse_streams_total,
        );
        line(
            "shapeshard_shapes_watched",
            "gauge",
            "Shapes followed by SSE streams (one owner task each, whatever the number of streams).",
            &self.shapes_watched,
        );
        line(
            "shapeshard_live_bodies_built_total",
            "counter",
            "Live answers read and encoded from a shape's log.",
            &self.live_bodies_built,
        );
        line(
            "shapeshard_live_bodies_shared_total",
            "counter",
            "Live answers that reused the body built for another request at the same offset (fan-out encodes once).",
            &self.live_bodies_shared,
        );
        line(
            "shapeshard_live_reads_joined_total",
            "counter",
            "Live requests (long-polls, SSE rounds) answered by an identical request already in flight from the same shard: one owner read per shard and offset.",
            &self.live_reads_joined,
        );
        line(
            "shapeshard_chunk_cache_hits_total",
            "counter",
            "Sealed-chunk responses served from the chunk cache.",
            &self.chunk_cache_hits,
        );
        line(
            "shapeshard_chunk_cache_misses_total",
            "counter",
            "Sealed-chunk responses built (read, checked, joined) for the chunk cache.",
            &self.chunk_cache_misses,
        );
        line(
            "shapeshard_replies_reused_total",
            "counter",
            "Sealed-chunk replies answered by the shard holding the connection, without asking the shape's owner.",
            &self.replies_reused,
        );
        line(
            "shapeshard_chunk_cache_bytes",
            "gauge",
            "Bytes of response bodies in the chunk caches (SHAPESHARD_CHUNK_CACHE_BYTES per shard).",
            &self.chunk_cache_bytes,
        );
        line(
            "shapeshard_serving_files_corrupt_total",
            "counter",
            "Shapes dropped (clients re-sync) because a serving-file frame failed its checksum.",
            &self.serving_files_corrupt,
        );
        line(
            "shapeshard_subset_snapshots_total",
            "counter",
            "Subset snapshot queries run.",
            &self.subset_snapshots,
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
        self.render_storage(&mut out);
        self.render_latency(&mut out);
        out
    }

    /// Empties every shard's latency histograms (`POST /metrics/reset`):
    /// the perf harness reads the server's own view of one workload.
    pub fn reset_latency(&self) {
        for shard in &self.storage {
            shard.latency.reset();
        }
    }

    /// Per-shard latency histograms as Prometheus summaries (seconds; the
    /// quantiles over everything since start or the last reset).
    fn render_latency(&self, out: &mut String) {
        let requests = RequestKind::ALL.map(|kind| {
            let label = format!("kind=\"{}\",", kind.label());
            (label, move |l: &ShardLatencies| l.request(kind).snapshot())
        });
        summary(
            out,
            "shapeshard_request_duration_seconds",
            "Shape requests from parsed to response ready, on the shard holding the connection, by kind (live includes the long-poll's wait).",
            &self.storage,
            &requests,
        );
        type Pick = fn(&ShardLatencies) -> LatencySnapshot;
        let single: [(&str, &str, Pick); 3] = [
            (
                "shapeshard_apply_duration_seconds",
                "One replication transaction applied to the shard's shapes.",
                |l| l.apply.snapshot(),
            ),
            (
                "shapeshard_commit_duration_seconds",
                "One group-commit tick's segment write and fdatasync.",
                |l| l.commit.snapshot(),
            ),
            (
                "shapeshard_checkpoint_duration_seconds",
                "One checkpoint: log tails into serving files, syncfs, LMDB.",
                |l| l.checkpoint.snapshot(),
            ),
        ];
        for (name, help, pick) in single {
            summary(out, name, help, &self.storage, &[(String::new(), pick)]);
        }
    }

    /// Per-shard storage series (label `shard`), and the fence.
    fn render_storage(&self, out: &mut String) {
        type Field = fn(&StorageGauges) -> &AtomicU64;
        let series: [(&str, &str, &str, Field); 19] = [
            (
                "shapeshard_storage_failing",
                "gauge",
                "1 while the shard's storage (segment log, LMDB, checkpoint) fails and is retried: nothing new is confirmed to Postgres meanwhile.",
                |g| &g.storage_failing,
            ),
            (
                "shapeshard_storage_errors_total",
                "counter",
                "Failed storage attempts (ENOSPC, EIO, ...) of the shard, each retry counted.",
                |g| &g.storage_errors,
            ),
            (
                "shapeshard_durable_lsn",
                "gauge",
                "WAL position the shard has made durable (fdatasync).",
                |g| &g.durable_lsn,
            ),
            (
                "shapeshard_fdatasyncs_total",
                "counter",
                "fdatasync calls of the shard's segment log.",
                |g| &g.fdatasyncs,
            ),
            (
                "shapeshard_segment_bytes_written_total",
                "counter",
                "Bytes written to the shard's segment log.",
                |g| &g.segment_bytes_written,
            ),
            (
                "shapeshard_metadata_commits_total",
                "counter",
                "LMDB write transactions of metadata batches.",
                |g| &g.meta_commits,
            ),
            (
                "shapeshard_checkpoints_total",
                "counter",
                "Checkpoints (tails into serving files, LMDB log states).",
                |g| &g.checkpoints,
            ),
            (
                "shapeshard_shapes_built",
                "gauge",
                "Shapes held built in memory.",
                |g| &g.shapes_built,
            ),
            (
                "shapeshard_shapes_cold",
                "gauge",
                "Shapes held in their small cold form (restored or unloaded).",
                |g| &g.shapes_cold,
            ),
            (
                "shapeshard_shapes_unloaded_total",
                "counter",
                "Idle built shapes unloaded to cold (SHAPESHARD_UNLOAD_IDLE_MS).",
                |g| &g.shapes_unloaded,
            ),
            (
                "shapeshard_shapes_rebuilt_total",
                "counter",
                "Cold shapes built again (by a read, a change or a schema check).",
                |g| &g.shapes_rebuilt,
            ),
            (
                "shapeshard_subquery_dependencies_shared",
                "gauge",
                "Subquery dependencies whose values the shard keeps once for every shape with that subquery.",
                |g| &g.subquery_truths,
            ),
            (
                "shapeshard_subquery_dependency_readers",
                "gauge",
                "Subquery shapes reading a shared dependency (one per shape and subquery).",
                |g| &g.subquery_truth_readers,
            ),
            (
                "shapeshard_subquery_shapes_broad",
                "gauge",
                "Subquery shapes with too many values to be routed by them: they evaluate every row of their table.",
                |g| &g.subquery_broad,
            ),
            (
                "shapeshard_shard_memory_bytes",
                "gauge",
                "Journal and log tails waiting in memory for durability or a checkpoint.",
                |g| &g.memory_bytes,
            ),
            (
                "shapeshard_shard_memory_peak_bytes",
                "gauge",
                "The highest shapeshard_shard_memory_bytes seen.",
                |g| &g.memory_peak_bytes,
            ),
            (
                "shapeshard_http_connections",
                "gauge",
                "HTTP connections the shard holds open (at most shapeshard_http_connections_max).",
                |g| &g.http_connections,
            ),
            (
                "shapeshard_shard_memory_budget_bytes",
                "gauge",
                "SHAPESHARD_SHARD_MEMORY_BYTES: past it the feed and snapshots wait.",
                |g| &g.memory_budget_bytes,
            ),
            (
                "shapeshard_shard_memory_waits_total",
                "counter",
                "Times the feed or a snapshot waited for memory to be written out.",
                |g| &g.budget_waits,
            ),
        ];
        for (name, kind, help, field) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (shard, gauges) in self.storage.iter().enumerate() {
                let value = StorageGauges::get(field(gauges));
                let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {value}");
            }
        }
        let fence = self
            .storage
            .iter()
            .map(|g| StorageGauges::get(&g.durable_lsn))
            .min()
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "# HELP shapeshard_fence_lsn WAL position durable on every shard (what Postgres is confirmed).\n# TYPE shapeshard_fence_lsn gauge\nshapeshard_fence_lsn {fence}"
        );
    }
}

/// One summary family: for each shard and each labelled series, its
/// quantiles, sum and count.
fn summary<F: Fn(&ShardLatencies) -> LatencySnapshot>(
    out: &mut String,
    name: &str,
    help: &str,
    shards: &[Arc<StorageGauges>],
    series: &[(String, F)],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} summary");
    for (shard, gauges) in shards.iter().enumerate() {
        for (labels, pick) in series {
            let s = pick(&gauges.latency);
            for (q, us) in &s.quantiles {
                let seconds = *us as f64 / 1e6;
                let _ = writeln!(
                    out,
                    "{name}{{shard=\"{shard}\",{labels}quantile=\"{q}\"}} {seconds}"
                );
            }
            let labels = labels.trim_end_matches(',');
            let sep = if labels.is_empty() { "" } else { "," };
            let sum = s.sum_us as f64 / 1e6;
            let _ = writeln!(out, "{name}_sum{{shard=\"{shard}\"{sep}{labels}}} {sum}");
            let _ = writeln!(
                out,
                "{name}_count{{shard=\"{shard}\"{sep}{labels}}} {}",
                s.count
            );
        }
    }
}
