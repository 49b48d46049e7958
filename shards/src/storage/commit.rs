//! Group commit: once per tick (or sooner when enough bytes wait), the
//! shard's pending records go to its segment log in one write and one
//! fdatasync; only then does the shard publish the WAL position they cover,
//! which is what the fence confirms to Postgres. The tick's metadata
//! mutations then go to LMDB in one write transaction.
//!
//! Every checkpoint interval the tick also materialises the shapes' memory
//! tails into their serving files, syncs them, records the log states and
//! the segment position they cover in LMDB, and deletes the segments before
//! it. The checkpoint runs beside the ticks (its file work on its own
//! thread), so neither the feed, the group commit nor the readers wait for
//! it; one is in flight at a time, and the closing tick waits for it and
//! makes a last one.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fence::DurableProgress;
use crate::lsn::Lsn;
use crate::notify::Notify;
use crate::runtime;
use crate::runtime::dma::{blocking, on_thread};
use crate::shape::log::Captured;
use crate::shape::registry::Registry;
use crate::shape::registry::Shape;
use crate::storage::meta::LogRecord;

use super::gauges::StorageGauges;
use super::meta::{CheckpointBatch, MetaBatch, MetaStats, MetaStore};
use super::segment::{delete_segments_before, SegmentWriter};
use super::serving::ServingFiles;

/// Most serving-file descriptors a shard keeps open between checkpoints
/// (its most recently written shapes'); the server sizes
/// `CommitConfig::open_files` from its descriptor limit, up to this.
pub const MAX_OPEN_SERVING_FILES: usize = 16384;

#[derive(Clone, Copy, Debug)]
pub struct CommitConfig {
    pub interval: Duration,
    /// Pending bytes that trigger a flush before the tick.
    pub max_pending: usize,
    /// Time between checkpoints (materialised tails, retention).
    pub checkpoint_interval: Duration,
    /// Checkpoints a built shape may go unused before it is unloaded to
    /// cold (`Registry::unload_idle`); 0 keeps shapes built.
    pub unload_idle_checkpoints: u64,
    /// Serving files kept open between checkpoints (`storage::serving`).
    pub open_files: usize,
    /// Fault injection for tests only: each flush waits this long first
    /// (a slow disk), so what waits on durability piles up.
    pub fault_flush_delay: Duration,
}

impl CommitSignals {
    /// Whether the committer is due: the shard core should yield to it.
    pub fn commit_due(&self, interval: Duration) -> bool {
        self.last_commit
            .get()
            .is_none_or(|at| at.elapsed() >= interval)
    }
}

impl Default for CommitConfig {
    fn default() -> CommitConfig {
        CommitConfig {
            interval: Duration::from_millis(5),
            max_pending: 256 * 1024,
            checkpoint_interval: Duration::from_secs(1),
            unload_idle_checkpoints: 300,
            open_files: 4096,
            fault_flush_delay: Duration::ZERO,
        }
    }
}

/// What the shard core shares with its committer.
#[derive(Default)]
pub struct CommitSignals {
    /// The newest WAL position the shard has applied (all its records are
    /// in the journal by then).
    pub seen: Cell<Lsn>,
    /// Set when the feed has closed: one last flush, then stop.
    pub closing: Cell<bool>,
    /// Set when the committer gave up (a stop during a storage outage):
    /// the shard core stops too.
    pub failed: Cell<bool>,
    /// When the last commit started; the shard core yields to the committer
    /// once a tick has passed, so a busy feed cannot stretch the tick.
    pub last_commit: Cell<Option<std::time::Instant>>,
    pub wake: Rc<Notify>,
    /// The committer found nothing to do for a while and ticks slower: the
    /// feed wakes it on its next event (others' records wait a slow tick).
    pub idle: Cell<bool>,
}

pub struct GroupCommit {
    pub index: usize,
    pub config: CommitConfig,
    pub registry: Rc<RefCell<Registry>>,
    pub meta: MetaStore,
    pub meta_stats: Rc<MetaStats>,
    pub writer: SegmentWriter,
    pub progress: Arc<DurableProgress>,
    pub signals: Rc<CommitSignals>,
    pub gauges: Arc<StorageGauges>,
    /// A stop requested during a storage outage ends the retries.
    pub shutdown: runtime::Shutdown,
}

impl GroupCommit {
    /// Runs until the shard closes. A failing disk (ENOSPC, EIO) is an
    /// operating error, not the end: the failing step is retried with
    /// backoff (`Outage`) while nothing past the last durable position is
    /// published. Only a stop requested during an outage gives up: the error
    /// is returned and the next start recovers from what is durable.
    pub async fn run(self) -> std::io::Result<()> {
        let signals = self.signals.clone();
        let result = self.commit_loop().await;
        if result.is_err() {
            signals.failed.set(true);
        }
        result
    }

    async fn commit_loop(mut self) -> std::io::Result<()> {
        let mut durable = self.progress.durable(self.index);
        let journal = self.registry.borrow().journal().clone();
        let mut last_checkpoint = Instant::now();
        let in_flight = Rc::new(Cell::new(false));
        // Lent to the checkpoint in flight; back when it completes.
        let files: Rc<Cell<Option<ServingFiles>>> =
            Rc::new(Cell::new(Some(ServingFiles::new(self.config.open_files))));
        // The outcome of the checkpoint that ran beside the ticks.
        let finished: Rc<RefCell<Option<Result<(), CheckpointFailed>>>> = Rc::default();
        // Ticks' metadata batches not committed yet (LMDB failed), in
        // order; bounded by control-plane changes (creations, removals,
        // snapshot ends) during an outage.
        let mut pending_meta: Vec<MetaBatch> = Vec::new();
        let mut outage: Option<Outage> = None;
        let mut idle_ticks: u32 = 0;
        loop {
            let wake = self.signals.wake.listen();
            let closing = self.signals.closing.get();
            if closing {
                // The last checkpoint must cover everything: wait for the
                // one in flight first.
                while in_flight.get() {
                    runtime::sleep(Duration::from_millis(1)).await;
                }
            }
            if let Some(result) = finished.borrow_mut().take() {
                match result {
                    Ok(()) => self.succeeded(&mut outage, Part::Checkpoint),
                    Err(failed) => {
                        self.registry
                            .borrow_mut()
                            .requeue_checkpoint(failed.doomed, failed.stamps);
                        self.failed(&mut outage, Part::Checkpoint, &failed.error, durable);
                    }
                }
            }
            if let Some(current) = &outage {
                if closing || self.shutdown.is_triggered() {
                    // A stop during an outage: no clean stop is possible.
                    // Nothing undurable was published; the next start
                    // recovers from what is on disk.
                    return Err(std::io::Error::other(format!(
                        "storage still failing at shutdown ({} since {:.1} s): {}",
                        current.what(),
                        current.since.elapsed().as_secs_f64(),
                        current.error
                    )));
                }
                if current.failing(Part::SegmentLog) && Instant::now() < current.retry_at {
                    // Wait for the retry; what is applied meanwhile stays in
                    // the journal (under the byte budget). Short waits, so
                    // a stop is seen.
                    let left = current.retry_at.saturating_duration_since(Instant::now());
                    runtime::sleep(left.min(Duration::from_millis(50))).await;
                    continue;
                }
            }
            let retrying = outage.is_some();
            if !retrying && !closing && journal.borrow().len() < self.config.max_pending {
                // Idle ticks back off (up to 8 intervals): an idle server
                // should not wake 200 times a second per shard for nothing.
                let tick = self.config.interval * (1 << idle_ticks.min(3));
                self.signals.idle.set(idle_ticks > 0);
                runtime::timeout(tick, wake).await;
                self.signals.idle.set(false);
            } else if retrying && !closing {
                // Retries (and the ticks between them) keep the plain pace.
                runtime::timeout(self.config.interval, wake).await;
            }
            // Everything applied up to `seen` is in the journal, the
            // metadata batch and the shapes' tails now: take them together
            // (no await in between), so they describe the same position.
            self.signals.last_commit.set(Some(Instant::now()));
            let seen = self.signals.seen.get();
            // What may be published: not past a transaction a subquery
            // shape holds unapplied (a crash must have Postgres send it
            // again).
            let publishable = match self.registry.borrow().held_floor() {
                Some(floor) => seen.min(floor),
                None => seen,
            };
            // A checkpoint needs the ticks' metadata in LMDB first (its
            // records skip shapes LMDB does not know, and the segments it
            // frees hold their creations) and, after a failed one, its
            // retry time.
            let may_checkpoint = pending_meta.is_empty()
                && outage.as_ref().is_none_or(|o| {
                    !o.failing(Part::SegmentLog)
                        && !o.failing(Part::Metadata)
                        && Instant::now() >= o.retry_at
                });
            let checkpoint_due = closing
                || (!in_flight.get()
                    && may_checkpoint
                    && (last_checkpoint.elapsed() >= self.config.checkpoint_interval
                        || self.registry.borrow_mut().take_memory_pressure()));
            let idle = publishable <= durable && journal.borrow().is_empty() && !checkpoint_due;
            idle_ticks = if idle {
                idle_ticks.saturating_add(1)
            } else {
                0
            };
            let (records, batch, checkpoint, views, unpublished) = {
                let mut registry = self.registry.borrow_mut();
                let records = std::mem::take(&mut *journal.borrow_mut());
                let batch = registry.take_meta_batch();
                let unpublished = registry.take_unpublished();
                // The closing tick's subquery views, taken with its journal:
                // a move-in result arriving during the awaits below may
                // splice after it, and views taken then would describe
                // items this stop never makes durable.
                let views = closing.then(|| registry.closing_views());
                let checkpoint = checkpoint_due.then(|| {
                    if !closing {
                        // The previous checkpoint completed: shapes without
                        // a tail are wholly in their files and LMDB.
                        registry.unload_idle(self.config.unload_idle_checkpoints);
                    }
                    (
                        (registry.capture_logs(), registry.capture_client_views()),
                        registry.take_doomed_files(),
                        registry.take_read_stamps(),
                    )
                });
                (records, batch, checkpoint, views, unpublished)
            };
            self.writer.append_framed(&records);
            let wrote = !records.is_empty();
            drop(records);
            let position = self.writer.position();
            if wrote {
                // (`durable_views.rs`; a checkpoint keeps its own in LMDB)
                let mut marker = Vec::new();
                super::record::encode(&mut marker, seen.0, 0, super::record::Kind::Position, &[]);
                self.writer.append_framed(&marker);
            }
            if !self.config.fault_flush_delay.is_zero() {
                runtime::sleep(self.config.fault_flush_delay).await;
            }
            // The tick's metadata goes to LMDB only after this flush made
            // what it describes durable: queue it behind any that wait.
            if !batch.is_empty() {
                pending_meta.push(batch);
            }
            let flush_started = Instant::now();
            if let Err(e) = self.writer.flush().await {
                if closing {
                    return Err(e);
                }
                // The records stay in the writer for the retry: still
                // memory waiting for the disk.
                self.registry
                    .borrow_mut()
                    .set_unflushed(self.writer.pending());
                self.registry.borrow_mut().requeue_unpublished(&unpublished);
                if let Some((_, doomed, stamps)) = checkpoint {
                    self.registry
                        .borrow_mut()
                        .requeue_checkpoint(doomed, stamps);
                }
                self.failed(&mut outage, Part::SegmentLog, &e, durable);
                self.publish_gauges(durable);
                continue;
            }
            if wrote {
                self.gauges.latency.commit.record(flush_started.elapsed());
            }
            self.registry.borrow_mut().set_unflushed(0);
            self.succeeded(&mut outage, Part::SegmentLog);
            // The journal went to the segment log: its bytes are free.
            self.registry.borrow().freed().notify_all();
            for (shape, end) in &unpublished {
                shape.serve_through(*end);
            }
            drop(unpublished);
            if publishable > durable {
                assert!(
                    publishable <= self.signals.seen.get(),
                    "durable never passes what was applied"
                );
                durable = publishable;
                self.progress.publish(self.index, durable);
            }
            let metadata_due = outage
                .as_ref()
                .is_none_or(|o| !o.failing(Part::Metadata) || Instant::now() >= o.retry_at);
            if !pending_meta.is_empty() && (metadata_due || closing) {
                let meta = self.meta;
                let batches = std::mem::take(&mut pending_meta);
                let (mut batches, committed, result) = blocking(move || {
                    for (n, batch) in batches.iter().enumerate() {
                        if let Err(e) = meta.commit(batch) {
                            return (batches, n, Err(e));
                        }
                    }
                    let n = batches.len();
                    (batches, n, Ok(()))
                })
                .await;
                self.meta_stats
                    .commits
                    .set(self.meta_stats.commits.get() + committed as u64);
                batches.drain(..committed);
                pending_meta = batches;
                match result {
                    Ok(()) => self.succeeded(&mut outage, Part::Metadata),
                    Err(e) if closing => return Err(e),
                    Err(e) => self.failed(&mut outage, Part::Metadata, &e, durable),
                }
            }
            self.publish_gauges(durable);
            if let Some(((captures, client_views), doomed, stamps)) = checkpoint {
                if !pending_meta.is_empty() {
                    // LMDB failed this tick: not before its metadata.
                    self.registry
                        .borrow_mut()
                        .requeue_checkpoint(doomed, stamps);
                    continue;
                }
                last_checkpoint = Instant::now();
                let job = Checkpoint {
                    freed: self.registry.borrow().freed(),
                    captures,
                    client_views,
                    seen,
                    doomed,
                    stamps,
                    position,
                    meta: self.meta,
                    files_dir: self.registry.borrow().files_dir().to_path_buf(),
                    log_dir: self.writer.dir().to_path_buf(),
                    stats: self.meta_stats.clone(),
                    files: files.clone(),
                    open_files: self.config.open_files,
                };
                let gauges = self.gauges.clone();
                if closing {
                    job.run_timed(&gauges)
                        .await
                        .map_err(|failed| failed.error)?;
                    // Everything applied is durable and checkpointed: the
                    // subquery shapes at rest keep their views for the
                    // next start (`registry/kept_views.rs`). Failing here
                    // only costs those shapes a re-sync.
                    let views = views.unwrap_or_default();
                    if !views.is_empty() {
                        let meta = self.meta;
                        let kept = views.len();
                        match blocking(move || meta.put_views(&views)).await {
                            Ok(()) => tracing::debug!(shard = self.index, kept, "subquery views kept"),
                            Err(e) => tracing::warn!(
                                shard = self.index,
                                "cannot keep subquery views (those shapes re-sync after the restart): {e}"
                            ),
                        }
                    }
                    return Ok(());
                }
                in_flight.set(true);
                let in_flight = in_flight.clone();
                let finished = finished.clone();
                let signals = self.signals.clone();
                runtime::spawn_detached(async move {
                    *finished.borrow_mut() = Some(job.run_timed(&gauges).await);
                    in_flight.set(false);
                    signals.wake.notify_all();
                });
            }
            if closing {
                return Ok(());
            }
        }
    }

    /// A storage step failed: the outage starts (one error line for the
    /// process, with what to do) or goes on (the next retry waits longer).
    fn failed(
        &self,
        outage: &mut Option<Outage>,
        part: Part,
        error: &std::io::Error,
        durable: Lsn,
    ) {
        self.gauges.storage_errors.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        match outage {
            Some(current) => {
                current.failing[part as usize] = true;
                current.attempts += 1;
                current.backoff = (current.backoff * 2).min(RETRY_MAX);
                current.retry_at = now + current.backoff;
                current.error = format!("{}: {error}", part.what());
                tracing::debug!(
                    shard = self.index,
                    attempts = current.attempts,
                    "storage still failing: {}",
                    current.error
                );
            }
            None => {
                let mut failing = [false; PARTS];
                failing[part as usize] = true;
                *outage = Some(Outage {
                    since: now,
                    failing,
                    attempts: 1,
                    backoff: RETRY_INITIAL,
                    retry_at: now + RETRY_INITIAL,
                    error: format!("{}: {error}", part.what()),
                });
                StorageGauges::set(&self.gauges.storage_failing, 1);
                let shard_dir = self.writer.dir().parent().unwrap_or(self.writer.dir());
                if SHARDS_FAILING.fetch_add(1, Ordering::SeqCst) == 0 {
                    tracing::error!(
                        shard = self.index,
                        "storage failing: {} failed: {error}. Nothing past WAL position {durable} is confirmed to Postgres until it succeeds (the backlog waits in the replication slot); reads are still served. Retrying with backoff (every {RETRY_MAX:?} at most): free space on, or repair, the filesystem of {} and the server resumes by itself. /v1/health says storage_failing and shapeshard_storage_failing is 1 meanwhile",
                        part.what(),
                        shard_dir.display()
                    );
                } else {
                    tracing::debug!(
                        shard = self.index,
                        "storage failing too: {} failed: {error}",
                        part.what()
                    );
                }
            }
        }
    }

    /// A storage step succeeded: once every failing one has, the outage is
    /// over.
    fn succeeded(&self, outage: &mut Option<Outage>, part: Part) {
        let Some(current) = outage else {
            return;
        };
        current.failing[part as usize] = false;
        if current.failing.iter().any(|&f| f) {
            return;
        }
        StorageGauges::set(&self.gauges.storage_failing, 0);
        if SHARDS_FAILING.fetch_sub(1, Ordering::SeqCst) == 1 {
            tracing::warn!(
                shard = self.index,
                failed_attempts = current.attempts,
                "storage recovered after {:.1} s: confirming to Postgres again",
                current.since.elapsed().as_secs_f64()
            );
        }
        *outage = None;
    }
}

/// First wait before retrying a failed storage step; it doubles with each
/// failure up to `RETRY_MAX`. Each retry of the segment log rewrites its
/// unflushed blocks, so retries stay a few per second at most.
pub const RETRY_INITIAL: Duration = Duration::from_millis(100);
pub const RETRY_MAX: Duration = Duration::from_secs(5);

/// Shards whose storage is failing now (process-wide): the first logs the
/// outage's one error line, the last to recover says so.
static SHARDS_FAILING: AtomicUsize = AtomicUsize::new(0);

/// The storage steps a tick runs, each of which can fail on its own.
#[derive(Clone, Copy, Debug)]
enum Part {
    SegmentLog,
    Metadata,
    Checkpoint,
}
const PARTS: usize = 3;

impl Part {
    fn what(self) -> &'static str {
        match self {
            Part::SegmentLog => "the segment log write (or its fdatasync)",
            Part::Metadata => "the metadata (LMDB) commit",
            Part::Checkpoint => "a checkpoint (serving files, LMDB)",
        }
    }
}

/// A storage outage of one shard: which steps fail and when to try again.
struct Outage {
    since: Instant,
    failing: [bool; PARTS],
    /// Failed attempts so far.
    attempts: u64,
    backoff: Duration,
    retry_at: Instant,
    /// The latest failure, for the stop that gives up.
    error: String,
}

impl Outage {
    fn failing(&self, part: Part) -> bool {
        self.failing[part as usize]
    }

    fn what(&self) -> &'static str {
        [Part::SegmentLog, Part::Metadata, Part::Checkpoint]
            .into_iter()
            .find(|&p| self.failing(p))
            .map_or("nothing", Part::what)
    }
}

/// A checkpoint that failed, with what it took that a later one must do.
struct CheckpointFailed {
    error: std::io::Error,
    doomed: Vec<std::path::PathBuf>,
    stamps: Vec<(u64, u64)>,
}

impl GroupCommit {
    fn publish_gauges(&self, durable: Lsn) {
        let g = &self.gauges;
        let registry = self.registry.borrow();
        StorageGauges::set(&g.durable_lsn, durable.0);
        StorageGauges::set(&g.fdatasyncs, self.writer.stats.fdatasyncs.get());
        StorageGauges::set(
            &g.segment_bytes_written,
            self.writer.stats.bytes_written.get(),
        );
        StorageGauges::set(&g.meta_commits, self.meta_stats.commits.get());
        StorageGauges::set(&g.checkpoints, self.meta_stats.checkpoints.get());
        StorageGauges::set(&g.shapes_built, registry.built_count() as u64);
        StorageGauges::set(&g.shapes_cold, registry.cold_count() as u64);
        StorageGauges::set(&g.shapes_unloaded, registry.unloaded_count());
        StorageGauges::set(&g.shapes_rebuilt, registry.rebuilt_count());
        let (truths, readers) = registry.shared_truths();
        StorageGauges::set(&g.subquery_truths, truths as u64);
        StorageGauges::set(&g.subquery_truth_readers, readers as u64);
        StorageGauges::set(&g.subquery_broad, registry.broad_subquery_shapes() as u64);
        StorageGauges::set(&g.memory_bytes, registry.memory_bytes() as u64);
        g.memory_peak_bytes.fetch_max(
            registry.memory_bytes() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        StorageGauges::set(&g.memory_budget_bytes, registry.memory_budget() as u64);
        StorageGauges::set(&g.budget_waits, registry.memory_waits());
    }
}

/// One checkpoint: the captured tails go to the serving files, which are
/// synced; then LMDB records their state and the segment position they
/// cover; then the tails are trimmed and older segments deleted.
type ClientViews = Vec<(Rc<Shape>, (u64, Lsn), Vec<u8>)>;

struct Checkpoint {
    /// Pinged once the tails are trimmed (memory freed).
    freed: Rc<Notify>,
    captures: Vec<(Rc<Shape>, Captured, LogRecord)>,
    /// Subquery shapes' client views (`durable_views.rs`), as of the
    /// same position.
    client_views: ClientViews,
    /// The shard's processed position at the capture.
    seen: Lsn,
    doomed: Vec<std::path::PathBuf>,
    stamps: Vec<(u64, u64)>,
    position: super::meta::Checkpoint,
    meta: MetaStore,
    files_dir: std::path::PathBuf,
    log_dir: std::path::PathBuf,
    stats: Rc<MetaStats>,
    files: Rc<Cell<Option<ServingFiles>>>,
    open_files: usize,
}

impl Checkpoint {
    async fn run_timed(self, gauges: &StorageGauges) -> Result<(), CheckpointFailed> {
        let started = Instant::now();
        let result = self.run().await;
        gauges.latency.checkpoint.record(started.elapsed());
        result
    }

    /// On an error nothing it covers is trimmed or deleted (the segment log
    /// stays the copy) and what it took comes back, so a later checkpoint
    /// redoes it: captures start at the files' checkpointed lengths, and
    /// bytes a failed one wrote past them are cut by the next write.
    async fn run(mut self) -> Result<(), CheckpointFailed> {
        let writes: Vec<_> = self
            .captures
            .iter_mut()
            .flat_map(|(_, captured, _)| std::mem::take(&mut captured.writes))
            .collect();
        let batch = CheckpointBatch {
            logs: self
                .captures
                .iter()
                .map(|(shape, _, record)| (shape.id, record.clone()))
                .collect(),
            stamps: std::mem::take(&mut self.stamps),
            client_views: self
                .client_views
                .iter_mut()
                .map(|(shape, _, bytes)| (shape.id, std::mem::take(bytes)))
                .collect(),
            at: self.position,
            seen: self.seen.0,
        };
        let (meta, files_dir, doomed) = (self.meta, self.files_dir, self.doomed);
        let mut files = self
            .files
            .take()
            .unwrap_or_else(|| ServingFiles::new(self.open_files));
        let (files, result, stamps, doomed) = on_thread("checkpoint", move || {
            let result = (|| -> std::io::Result<()> {
                files.open_sync(&files_dir)?;
                for write in &writes {
                    files.write(write)?;
                }
                // An error here stops the checkpoint: no LMDB record, no
                // segment deleted (the segments stay the copy).
                if !writes.is_empty() {
                    files.sync(&files_dir)?;
                }
                meta.checkpoint(&batch)?;
                for path in &doomed {
                    files.remove(path)?;
                }
                Ok(())
            })();
            (files, result, batch.stamps, doomed)
        })
        .await
        .map_err(|error| CheckpointFailed {
            error,
            doomed: Vec::new(),
            stamps: Vec::new(),
        })?;
        self.files.set(Some(files));
        if let Err(error) = result {
            return Err(CheckpointFailed {
                error,
                doomed,
                stamps,
            });
        }
        for (shape, captured, _) in &self.captures {
            shape.written(captured);
        }
        for (shape, saved, _) in &self.client_views {
            shape.views_saved(*saved);
        }
        self.freed.notify_all();
        self.stats.checkpoints.set(self.stats.checkpoints.get() + 1);
        // Failing here leaves old segments for the next checkpoint.
        delete_segments_before(&self.log_dir, self.position.segment).map_err(|error| {
            CheckpointFailed {
                error,
                doomed: Vec::new(),
                stamps: Vec::new(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Change, Datum, Transaction};
    use crate::routes::RouteTable;
    use crate::runtime::{dma::open_marker_first, spawn_thread};
    use crate::shape::encode::PgSnapshot;
    use crate::shape::registry::Registry;
    use crate::shape::test_support::{id_equals_shape, id_relation};

    /// fdatasync fails (EIO) three times under a transaction: nothing is
    /// published while it fails, the outage shows in the gauges, the
    /// retries back off, and once a sync succeeds the position is published
    /// and the closing checkpoint holds the change.
    #[test]
    fn a_failing_fdatasync_publishes_nothing_until_a_retry_succeeds() {
        let dir =
            std::env::temp_dir().join(format!("shapeshard-commit-eio-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let d = dir.clone();
        let (failing_seen, durable_during, errors, failed_flushes, waited, entries) =
            spawn_thread("commit-eio-test", move || async move {
                open_marker_first(&d).await.unwrap();
                let (mut writer, _) = SegmentWriter::open(&d.join("log"), 1 << 20).await.unwrap();
                let flush_stats = writer.stats.clone();
                let routes = Arc::new(RouteTable::new());
                let progress = DurableProgress::new(1, Lsn::ZERO);
                let mut registry = Registry::new(0, routes, 1 << 20, &d.join("shapes"));
                let shape = registry.insert(id_equals_shape(7));
                registry.snapshot_taken(
                    shape.id,
                    PgSnapshot {
                        xmin: 10,
                        xmax: 10,
                        xip: vec![],
                        wal_lsn: None,
                    },
                );
                let created = std::mem::take(&mut *registry.journal().borrow_mut());
                writer.append_framed(&created);
                writer.flush().await.unwrap();
                let signals = Rc::new(CommitSignals::default());
                let gauges: Arc<StorageGauges> = Arc::default();
                let registry = Rc::new(RefCell::new(registry));
                let commit = GroupCommit {
                    index: 0,
                    config: CommitConfig {
                        checkpoint_interval: Duration::from_secs(3600),
                        open_files: 16,
                        ..CommitConfig::default()
                    },
                    registry: registry.clone(),
                    meta: MetaStore::open(&d.join("meta")).unwrap(),
                    meta_stats: Rc::default(),
                    writer,
                    progress: progress.clone(),
                    signals: signals.clone(),
                    gauges: gauges.clone(),
                    shutdown: runtime::Shutdown::default(),
                };
                // The committer runs on this executor, so on this thread.
                crate::runtime::dma::fault::fail_next_syncs(3);
                let committer = runtime::spawn_local(commit.run());
                let relation = id_relation(1, "items");
                let tx = Arc::new(Transaction {
                    xid: 20,
                    commit_lsn: Lsn(1000),
                    end_lsn: Lsn(1001),
                    commit_time_micros: 0,
                    changes: vec![Change::Insert {
                        relation,
                        new: vec![Datum::Text("7".into())],
                    }],
                });
                registry.borrow_mut().apply_transaction(&tx);
                signals.seen.set(tx.end_lsn);
                let started = std::time::Instant::now();
                let mut failing_seen = false;
                let mut durable_during = Lsn::ZERO;
                while progress.durable(0) < tx.end_lsn {
                    if StorageGauges::get(&gauges.storage_failing) == 1 {
                        failing_seen = true;
                        durable_during = durable_during.max(progress.durable(0));
                    }
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "no retry succeeded"
                    );
                    runtime::sleep(Duration::from_millis(1)).await;
                }
                let waited = started.elapsed();
                assert_eq!(StorageGauges::get(&gauges.storage_failing), 0, "recovered");
                signals.closing.set(true);
                signals.wake.notify_all();
                committer.join().await.unwrap();
                let entries = registry
                    .borrow()
                    .shapes()
                    .filter(|s| s.last_offset().tx() == 1000)
                    .count();
                (
                    failing_seen,
                    durable_during,
                    StorageGauges::get(&gauges.storage_errors),
                    flush_stats.failed_flushes.get(),
                    waited,
                    entries,
                )
            })
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        assert!(failing_seen, "the outage showed in the gauge");
        assert!(
            durable_during < Lsn(1001),
            "nothing published while failing"
        );
        assert_eq!(errors, 3);
        assert_eq!(failed_flushes, 3);
        // Backoff: 100 + 200 + 400 ms before the fourth attempt.
        assert!(waited >= RETRY_INITIAL * 7, "{waited:?}");
        assert_eq!(entries, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    async fn wait_until(what: &str, done: impl Fn() -> bool) {
        let started = std::time::Instant::now();
        while !done() {
            assert!(started.elapsed() < Duration::from_secs(10), "{what}");
            runtime::sleep(Duration::from_millis(1)).await;
        }
    }

    /// A checkpoint fails (here the shape's serving file cannot be opened;
    /// on a full disk, its write fails): the segment log still works, so
    /// durability is still published, the tail stays in memory and nothing
    /// is recorded in LMDB; the retry redoes it whole once it can.
    #[test]
    fn a_failed_checkpoint_is_redone_and_confirming_goes_on() {
        let dir =
            std::env::temp_dir().join(format!("shapeshard-commit-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let d = dir.clone();
        let (failing_seen, published_while_failing, checkpoints, logs, in_memory) =
            spawn_thread("commit-ckpt-test", move || async move {
                open_marker_first(&d).await.unwrap();
                let (mut writer, _) = SegmentWriter::open(&d.join("log"), 1 << 20).await.unwrap();
                let progress = DurableProgress::new(1, Lsn::ZERO);
                let mut registry =
                    Registry::new(0, Arc::new(RouteTable::new()), 1 << 20, &d.join("shapes"));
                let shape = registry.insert(id_equals_shape(7));
                registry.snapshot_taken(
                    shape.id,
                    PgSnapshot {
                        xmin: 10,
                        xmax: 10,
                        xip: vec![],
                        wal_lsn: None,
                    },
                );
                let created = std::mem::take(&mut *registry.journal().borrow_mut());
                writer.append_framed(&created);
                writer.flush().await.unwrap();
                let meta = MetaStore::open(&d.join("meta")).unwrap();
                meta.commit(&registry.take_meta_batch()).unwrap();
                // Its serving files' paths are taken: every write fails.
                let blocked = shape.file_paths();
                for path in &blocked {
                    std::fs::create_dir_all(path).unwrap();
                }
                let signals = Rc::new(CommitSignals::default());
                let gauges: Arc<StorageGauges> = Arc::default();
                let meta_stats: Rc<MetaStats> = Rc::default();
                let registry = Rc::new(RefCell::new(registry));
                let commit = GroupCommit {
                    index: 0,
                    config: CommitConfig {
                        checkpoint_interval: Duration::from_millis(20),
                        open_files: 16,
                        ..CommitConfig::default()
                    },
                    registry: registry.clone(),
                    meta,
                    meta_stats: meta_stats.clone(),
                    writer,
                    progress: progress.clone(),
                    signals: signals.clone(),
                    gauges: gauges.clone(),
                    shutdown: runtime::Shutdown::default(),
                };
                let committer = runtime::spawn_local(commit.run());
                let relation = id_relation(1, "items");
                let apply = |n: u64| {
                    let tx = Arc::new(Transaction {
                        xid: 20 + n as crate::change::Xid,
                        commit_lsn: Lsn(1000 * n),
                        end_lsn: Lsn(1000 * n + 1),
                        commit_time_micros: 0,
                        changes: vec![Change::Insert {
                            relation: relation.clone(),
                            new: vec![Datum::Text("7".into())],
                        }],
                    });
                    registry.borrow_mut().apply_transaction(&tx);
                    signals.seen.set(tx.end_lsn);
                    tx.end_lsn
                };
                let first = apply(1);
                wait_until("the checkpoint to fail", || {
                    StorageGauges::get(&gauges.storage_failing) == 1
                })
                .await;
                let failing_seen = meta_stats.checkpoints.get() == 0;
                // The segment log works: a change made during the
                // checkpoint outage is still confirmed.
                let second = apply(2);
                wait_until("durability to be published", || {
                    progress.durable(0) >= second
                })
                .await;
                let published_while_failing = StorageGauges::get(&gauges.storage_failing) == 1
                    && progress.durable(0) >= first;
                for path in &blocked {
                    std::fs::remove_dir(path).unwrap();
                }
                wait_until("the checkpoint to be redone", || {
                    StorageGauges::get(&gauges.storage_failing) == 0
                        && meta_stats.checkpoints.get() > 0
                })
                .await;
                let in_memory = registry.borrow().memory_bytes();
                signals.closing.set(true);
                signals.wake.notify_all();
                committer.join().await.unwrap();
                let logs = meta.load().unwrap().logs.len();
                (
                    failing_seen,
                    published_while_failing,
                    meta_stats.checkpoints.get(),
                    logs,
                    in_memory,
                )
            })
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        assert!(failing_seen, "no checkpoint counted while failing");
        assert!(published_while_failing);
        assert!(checkpoints >= 1);
        assert_eq!(logs, 1, "the shape's log state is in LMDB");
        assert_eq!(in_memory, 0, "the redone checkpoint trimmed the tail");
        let file = std::fs::read_dir(dir.join("shapes"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .map(|e| e.metadata().unwrap().len())
            .sum::<u64>();
        assert!(file > 0, "the serving file holds the changes");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Also: the 10,000 creations' metadata is one LMDB commit, and the
    /// closing checkpoint moves every log tail to the serving files.
    #[test]
    fn ten_thousand_shapes_changed_in_one_tick_cost_one_fdatasync() {
        const SHAPES: usize = 10_000;
        let dir = std::env::temp_dir().join(format!("shapeshard-commit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let d = dir.clone();
        let (syncs, durable_before, durable_after, entries, meta_commits, checkpoints, in_memory) =
            spawn_thread("commit-test", move || async move {
                open_marker_first(&d).await.unwrap();
                let (mut writer, _) = SegmentWriter::open(&d.join("log"), 16 << 20).await.unwrap();
                let stats = writer.stats.clone();
                let routes = Arc::new(RouteTable::new());
                let progress = DurableProgress::new(1, Lsn::ZERO);
                let mut registry = Registry::new(0, routes, 1 << 20, &d.join("shapes"));
                for n in 0..SHAPES {
                    let shape = registry.insert(id_equals_shape(n as u64));
                    registry.snapshot_taken(
                        shape.id,
                        PgSnapshot {
                            xmin: 10,
                            xmax: 10,
                            xip: vec![],
                            wal_lsn: None,
                        },
                    );
                }
                // Shape creations are durable first, in their own commit.
                let created = std::mem::take(&mut *registry.journal().borrow_mut());
                writer.append_framed(&created);
                writer.flush().await.unwrap();
                let syncs_before = stats.fdatasyncs.get();

                let signals = Rc::new(CommitSignals::default());
                let meta = MetaStore::open(&d.join("meta")).unwrap();
                let meta_stats = Rc::new(MetaStats::default());
                let registry = Rc::new(RefCell::new(registry));
                let commit = GroupCommit {
                    index: 0,
                    config: CommitConfig {
                        interval: Duration::from_millis(20),
                        max_pending: usize::MAX,
                        checkpoint_interval: Duration::from_secs(3600),
                        unload_idle_checkpoints: 0,
                        open_files: 64,
                        ..CommitConfig::default()
                    },
                    registry: registry.clone(),
                    meta,
                    meta_stats: meta_stats.clone(),
                    writer,
                    progress: progress.clone(),
                    signals: signals.clone(),
                    gauges: Arc::default(),
                    shutdown: runtime::Shutdown::default(),
                };
                let committer = runtime::spawn_local(commit.run());
                let relation = id_relation(1, "items");
                let tx = Arc::new(Transaction {
                    xid: 20,
                    commit_lsn: Lsn(1000),
                    end_lsn: Lsn(1001),
                    commit_time_micros: 0,
                    changes: (0..SHAPES)
                        .map(|n| Change::Insert {
                            relation: relation.clone(),
                            new: vec![Datum::Text(n.to_string().into())],
                        })
                        .collect(),
                });
                registry.borrow_mut().apply_transaction(&tx);
                signals.seen.set(tx.end_lsn);
                let durable_before = progress.durable(0);
                while progress.durable(0) < tx.end_lsn {
                    runtime::sleep(Duration::from_millis(1)).await;
                }
                let durable_after = progress.durable(0);
                signals.closing.set(true);
                signals.wake.notify_all();
                committer.join().await.unwrap();
                let meta_commits = meta_stats.commits.get();
                let registry = registry.borrow();
                let entries: usize = registry
                    .shapes()
                    .filter(|s| s.last_offset().tx() == 1000)
                    .count();
                let in_memory: usize = registry.shapes().map(|s| s.log_memory_bytes()).sum();
                let loaded = meta.load().unwrap();
                assert_eq!(loaded.shapes.len(), SHAPES, "every creation is in LMDB");
                assert_eq!(loaded.logs.len(), SHAPES, "every log is checkpointed");
                (
                    stats.fdatasyncs.get() - syncs_before,
                    durable_before,
                    durable_after,
                    entries,
                    meta_commits,
                    meta_stats.checkpoints.get(),
                    in_memory,
                )
            })
            .unwrap()
            .join()
            .unwrap()
            .unwrap();
        assert_eq!(entries, SHAPES, "every shape got its change");
        assert_eq!(syncs, 1, "one fdatasync for the whole tick");
        assert!(durable_before < Lsn(1001), "not durable before the commit");
        assert_eq!(durable_after, Lsn(1001));
        assert_eq!(
            meta_commits, 1,
            "10,000 creations: one LMDB write transaction"
        );
        assert_eq!(checkpoints, 1, "the closing checkpoint");
        assert_eq!(
            in_memory, 0,
            "checkpointed shapes keep no log bytes in memory"
        );
        let files = std::fs::read_dir(dir.join("shapes"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().unwrap() == "log")
            .count();
        assert_eq!(files, SHAPES, "a log file per shape");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
