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
use std::sync::Arc;
use std::time::Duration;

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
use super::meta::{CheckpointBatch, MetaStats, MetaStore};
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
    /// Set when the segment log failed: the shard must stop.
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
}

impl GroupCommit {
    /// Runs until the shard closes. An I/O error is fatal for durability:
    /// it is returned and nothing past the last durable position is ever
    /// published.
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
        let mut last_checkpoint = std::time::Instant::now();
        let in_flight = Rc::new(Cell::new(false));
        // Lent to the checkpoint in flight; back when it completes.
        let files: Rc<Cell<Option<ServingFiles>>> =
            Rc::new(Cell::new(Some(ServingFiles::new(self.config.open_files))));
        let failure: Rc<RefCell<Option<std::io::Error>>> = Rc::default();
        let mut idle_ticks: u32 = 0;
        loop {
            let wake = self.signals.wake.listen();
            let closing = self.signals.closing.get();
            if let Some(e) = failure.borrow_mut().take() {
                return Err(e);
            }
            if closing {
                // The last checkpoint must cover everything: wait for the
                // one in flight first.
                while in_flight.get() {
                    runtime::sleep(Duration::from_millis(1)).await;
                }
                if let Some(e) = failure.borrow_mut().take() {
                    return Err(e);
                }
            }
            if !closing && journal.borrow().len() < self.config.max_pending {
                // Idle ticks back off (up to 8 intervals): an idle server
                // should not wake 200 times a second per shard for nothing.
                let tick = self.config.interval * (1 << idle_ticks.min(3));
                self.signals.idle.set(idle_ticks > 0);
                runtime::timeout(tick, wake).await;
                self.signals.idle.set(false);
            }
            // Everything applied up to `seen` is in the journal, the
            // metadata batch and the shapes' tails now: take them together
            // (no await in between), so they describe the same position.
            self.signals
                .last_commit
                .set(Some(std::time::Instant::now()));
            let seen = self.signals.seen.get();
            let checkpoint_due = closing
                || (!in_flight.get()
                    && (last_checkpoint.elapsed() >= self.config.checkpoint_interval
                        || self.registry.borrow_mut().take_memory_pressure()));
            let idle = seen <= durable && journal.borrow().is_empty() && !checkpoint_due;
            idle_ticks = if idle {
                idle_ticks.saturating_add(1)
            } else {
                0
            };
            let (records, batch, checkpoint) = {
                let mut registry = self.registry.borrow_mut();
                let records = std::mem::take(&mut *journal.borrow_mut());
                let batch = registry.take_meta_batch();
                let checkpoint = checkpoint_due.then(|| {
                    if !closing {
                        // The previous checkpoint completed: shapes without
                        // a tail are wholly in their files and LMDB.
                        registry.unload_idle(self.config.unload_idle_checkpoints);
                    }
                    (
                        registry.capture_logs(),
                        registry.take_doomed_files(),
                        registry.take_read_stamps(),
                    )
                });
                (records, batch, checkpoint)
            };
            self.writer.append_framed(&records);
            let position = self.writer.position();
            if !self.config.fault_flush_delay.is_zero() {
                runtime::sleep(self.config.fault_flush_delay).await;
            }
            let flush_started = std::time::Instant::now();
            self.writer.flush().await?;
            if !records.is_empty() {
                self.gauges.latency.commit.record(flush_started.elapsed());
            }
            // The journal went to the segment log: its bytes are free.
            self.registry.borrow().freed().notify_all();
            if seen > durable {
                assert!(
                    seen <= self.signals.seen.get(),
                    "durable never passes what was applied"
                );
                durable = seen;
                self.progress.publish(self.index, durable);
            }
            if !batch.is_empty() {
                let meta = self.meta;
                blocking(move || meta.commit(&batch)).await?;
                self.meta_stats
                    .commits
                    .set(self.meta_stats.commits.get() + 1);
            }
            self.publish_gauges(durable);
            if let Some((captures, doomed, stamps)) = checkpoint {
                last_checkpoint = std::time::Instant::now();
                let job = Checkpoint {
                    freed: self.registry.borrow().freed(),
                    captures,
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
                    job.run_timed(&gauges).await?;
                    return Ok(());
                }
                in_flight.set(true);
                let in_flight = in_flight.clone();
                let failure = failure.clone();
                let signals = self.signals.clone();
                runtime::spawn_detached(async move {
                    if let Err(e) = job.run_timed(&gauges).await {
                        *failure.borrow_mut() = Some(e);
                        signals.failed.set(true);
                        signals.wake.notify_all();
                    }
                    in_flight.set(false);
                });
            }
            if closing {
                return Ok(());
            }
        }
    }
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
struct Checkpoint {
    /// Pinged once the tails are trimmed (memory freed).
    freed: Rc<Notify>,
    captures: Vec<(Rc<Shape>, Captured, LogRecord)>,
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
    async fn run_timed(self, gauges: &StorageGauges) -> std::io::Result<()> {
        let started = std::time::Instant::now();
        let result = self.run().await;
        gauges.latency.checkpoint.record(started.elapsed());
        result
    }

    async fn run(mut self) -> std::io::Result<()> {
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
            at: self.position,
        };
        let (meta, files_dir, doomed) = (self.meta, self.files_dir, self.doomed);
        let mut files = self
            .files
            .take()
            .unwrap_or_else(|| ServingFiles::new(self.open_files));
        let (files, result) = on_thread("checkpoint", move || {
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
            (files, result)
        })
        .await?;
        self.files.set(Some(files));
        result?;
        for (shape, captured, _) in &self.captures {
            shape.written(captured);
        }
        self.freed.notify_all();
        self.stats.checkpoints.set(self.stats.checkpoints.get() + 1);
        delete_segments_before(&self.log_dir, self.position.segment)
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
