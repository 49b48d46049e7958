//! A shard's core loop: it consumes its feed from the ingest in WAL order,
//! applies transactions to its shapes, and leaves publishing durability to
//! its group commit (`storage::commit`), which publishes a WAL position only
//! once every record up to it is on disk.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use crate::feed::FeedEvent;
use crate::fence::DurableProgress;
use crate::lsn::Lsn;
use crate::runtime::{self, channel::ConnectedReceiver};
use crate::shape::registry::Registry;
use crate::storage::commit::{CommitConfig, CommitSignals, GroupCommit};
use crate::storage::gauges::StorageGauges;
use crate::storage::meta::{MetaStats, MetaStore};
use crate::storage::segment::SegmentWriter;

pub struct ShardCore {
    index: usize,
    /// Highest WAL position seen on the feed; only grows.
    last_seen: Lsn,
    transactions_seen: u64,
    /// The shapes this shard owns, shared with its HTTP handlers.
    registry: Rc<RefCell<Registry>>,
    commit: Option<GroupCommit>,
    signals: Rc<CommitSignals>,
    meta_stats: Rc<MetaStats>,
    max_pending: usize,
    interval: std::time::Duration,
    gauges: Arc<StorageGauges>,
}

/// A shard's opened durable storage: its segment log (recovered) and its
/// LMDB metadata.
pub struct ShardStorage {
    pub writer: SegmentWriter,
    pub meta: MetaStore,
}

impl ShardCore {
    /// `shutdown`: a stop requested during a storage outage ends the
    /// committer's retries (and so the shard).
    pub fn new(
        index: usize,
        progress: Arc<DurableProgress>,
        registry: Rc<RefCell<Registry>>,
        storage: ShardStorage,
        config: CommitConfig,
        gauges: Arc<StorageGauges>,
        shutdown: runtime::Shutdown,
    ) -> ShardCore {
        let last_seen = progress.durable(index);
        let signals = Rc::new(CommitSignals::default());
        signals.seen.set(last_seen);
        registry.borrow_mut().set_flush_wake(signals.wake.clone());
        let meta_stats = Rc::new(MetaStats::default());
        let ShardStorage { writer, meta } = storage;
        ShardCore {
            index,
            last_seen,
            transactions_seen: 0,
            registry: registry.clone(),
            commit: Some(GroupCommit {
                index,
                config,
                registry,
                meta,
                meta_stats: meta_stats.clone(),
                writer,
                progress,
                signals: signals.clone(),
                gauges: gauges.clone(),
                shutdown,
            }),
            gauges,
            signals,
            meta_stats,
            max_pending: config.max_pending,
            interval: config.interval,
        }
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn transactions_seen(&self) -> u64 {
        self.transactions_seen
    }

    /// LMDB commits and checkpoints so far.
    pub fn meta_stats(&self) -> Rc<MetaStats> {
        self.meta_stats.clone()
    }

    pub fn apply(&mut self, event: FeedEvent) {
        match event {
            FeedEvent::Transaction(transaction) => {
                assert!(
                    transaction.end_lsn > self.last_seen,
                    "shard {}: transaction ending at {} after position {}: the feed went back",
                    self.index,
                    transaction.end_lsn,
                    self.last_seen
                );
                let started = std::time::Instant::now();
                self.registry.borrow_mut().apply_transaction(&transaction);
                self.gauges.latency.apply.record(started.elapsed());
                self.last_seen = transaction.end_lsn;
                self.transactions_seen += 1;
            }
            FeedEvent::Progress(lsn) => {
                self.last_seen = self.last_seen.max(lsn);
                self.registry.borrow_mut().advance(lsn);
            }
            FeedEvent::Relation(relation) => {
                self.registry.borrow_mut().apply_relation(&relation);
            }
            FeedEvent::SlotLost => {
                let mut registry = self.registry.borrow_mut();
                let all = registry.ids_where(|_| true);
                tracing::warn!(
                    shard = self.index,
                    shapes = all.len(),
                    "the replication slot was recreated: changes may be missing, dropping every shape (clients re-sync)"
                );
                for id in all {
                    registry.remove(id, "the replication slot was lost and recreated");
                }
            }
        }
        self.signals.seen.set(self.last_seen);
        if self.signals.idle.get()
            || self.registry.borrow().journal().borrow().len() >= self.max_pending
        {
            self.signals.wake.notify_all();
        }
    }

    /// Consumes the feed until the ingest closes it (on shutdown, after its
    /// last event: the shard drains everything it was sent), then makes it
    /// all durable. A failing disk does not stop it: the committer retries
    /// and publishes nothing undurable, the budget makes the feed wait.
    /// Only a stop during such an outage ends it with the error.
    pub async fn run(&mut self, feed: ConnectedReceiver<FeedEvent>) -> std::io::Result<()> {
        let commit = self.commit.take().expect("run once");
        let committer = runtime::spawn_local(commit.run());
        loop {
            // Over the memory budget, take nothing more from the feed: the
            // bounded feed then stops the ingest, and the backlog waits in
            // Postgres' slot, not in this process.
            crate::shape::registry::wait_for_memory(&self.registry, || self.signals.failed.get())
                .await;
            let Some(event) = feed.recv().await else {
                break;
            };
            if self.signals.failed.get() {
                break;
            }
            self.apply(event);
            self.gauges.memory_peak_bytes.fetch_max(
                self.registry.borrow().memory_bytes() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            if self.signals.commit_due(self.interval) {
                // Let the committer run its tick now, however busy the feed.
                futures_lite::future::yield_now().await;
            } else {
                runtime::yield_if_needed().await;
            }
        }
        self.signals.closing.set(true);
        self.signals.wake.notify_all();
        committer.join().await
    }
}
