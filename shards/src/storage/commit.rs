//! Group commit: once per tick (or sooner when enough bytes wait), the
//! shard's pending records go to its segment log in one write and one
//! fdatasync; only then does the shard publish the WAL position they cover,
//! which is what the fence confirms to Postgres.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::fence::DurableProgress;
use crate::lsn::Lsn;
use crate::notify::Notify;
use crate::runtime;
use crate::shape::registry::Journal;

use super::segment::SegmentWriter;

#[derive(Clone, Copy, Debug)]
pub struct CommitConfig {
    pub interval: Duration,
    /// Pending bytes that trigger a flush before the tick.
    pub max_pending: usize,
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
}

pub struct GroupCommit {
    pub index: usize,
    pub config: CommitConfig,
    pub journal: Journal,
    pub writer: SegmentWriter,
    pub progress: Arc<DurableProgress>,
    pub signals: Rc<CommitSignals>,
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
        loop {
            let wake = self.signals.wake.listen();
            let closing = self.signals.closing.get();
            if !closing && self.journal.borrow().len() < self.config.max_pending {
                runtime::timeout(self.config.interval, wake).await;
            }
            // Everything applied up to `seen` is in the journal now: take
            // both together (no await in between).
            self.signals
                .last_commit
                .set(Some(std::time::Instant::now()));
            let seen = self.signals.seen.get();
            let records = std::mem::take(&mut *self.journal.borrow_mut());
            self.writer.append_framed(&records);
            self.writer.flush().await?;
            if seen > durable {
                assert!(
                    seen <= self.signals.seen.get(),
                    "durable never passes what was applied"
                );
                durable = seen;
                self.progress.publish(self.index, durable);
            }
            if closing {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::{Change, Datum, Transaction};
    use crate::routes::RouteTable;
    use crate::runtime::{dma::open_marker_first, spawn_thread};
    use crate::shape::encode::PgSnapshot;
    use crate::shape::registry::{Registry, RowFilter, ShapeSpec};
    use crate::shape::test_support::{id_relation, id_shape};

    /// `id = value`, indexed.
    struct IdIs(String);

    impl RowFilter for IdIs {
        fn matches<'v>(&self, value: &dyn Fn(usize) -> Option<&'v str>) -> bool {
            value(0) == Some(self.0.as_str())
        }
        fn index_key(&self) -> Option<(usize, Vec<String>)> {
            Some((0, vec![self.0.clone()]))
        }
    }

    fn spec(n: usize) -> ShapeSpec {
        let filter: Box<dyn RowFilter> = Box::new(IdIs(n.to_string()));
        id_shape(1, "items", Some((format!("id = {n}"), filter)), n as u64)
    }

    #[test]
    fn ten_thousand_shapes_changed_in_one_tick_cost_one_fdatasync() {
        const SHAPES: usize = 10_000;
        let dir = std::env::temp_dir().join(format!("shapeshard-commit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let d = dir.clone();
        let (syncs, durable_before, durable_after, entries) =
            spawn_thread("commit-test", move || async move {
                open_marker_first(&d).await.unwrap();
                let (mut writer, _) = SegmentWriter::open(&d.join("log"), 16 << 20).await.unwrap();
                let stats = writer.stats.clone();
                let routes = Arc::new(RouteTable::new());
                let progress = DurableProgress::new(1, Lsn::ZERO);
                let mut registry = Registry::new(0, routes, 1 << 20);
                for n in 0..SHAPES {
                    let shape = registry.insert(spec(n));
                    registry.snapshot_taken(
                        shape.id,
                        PgSnapshot {
                            xmin: 10,
                            xmax: 10,
                            xip: vec![],
                        },
                    );
                }
                // Shape creations are durable first, in their own commit.
                let created = std::mem::take(&mut *registry.journal().borrow_mut());
                writer.append_framed(&created);
                writer.flush().await.unwrap();
                let syncs_before = stats.fdatasyncs.get();

                let signals = Rc::new(CommitSignals::default());
                let commit = GroupCommit {
                    index: 0,
                    config: CommitConfig {
                        interval: Duration::from_millis(20),
                        max_pending: usize::MAX,
                    },
                    journal: registry.journal().clone(),
                    writer,
                    progress: progress.clone(),
                    signals: signals.clone(),
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
                registry.apply_transaction(&tx);
                signals.seen.set(tx.end_lsn);
                let durable_before = progress.durable(0);
                while progress.durable(0) < tx.end_lsn {
                    runtime::sleep(Duration::from_millis(1)).await;
                }
                let durable_after = progress.durable(0);
                signals.closing.set(true);
                signals.wake.notify_all();
                committer.join().await.unwrap();
                let entries: usize = registry
                    .shapes()
                    .filter(|s| s.last_offset().tx() == 1000)
                    .count();
                (
                    stats.fdatasyncs.get() - syncs_before,
                    durable_before,
                    durable_after,
                    entries,
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
        let _ = std::fs::remove_dir_all(&dir);
    }
}
