//! A shard's write path, single core: decoded transactions applied to 1k,
//! 10k and 100k `g = <const>` shapes (index lookup, conversion, encoding,
//! journaling) with the real group commit writing and fdatasyncing the
//! segment log. Reports changes/s until durable and fdatasyncs/s.
//!
//! `cargo run --release -p shapeshard-perf --bin shard-write-bench [CHANGES]`
//!
//! Decoding is measured by `decode-bench` (beside `pg_recvlogical`); this
//! starts from decoded transactions, so the two add up to the pipeline.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fixture::{bench_table, g_equals};
use crate::report::Machine;
use shapeshard::shapes::create::build_spec;
use shards::change::{Change, Column, Datum, Relation, ReplicaIdentity, Transaction};
use shards::fence::DurableProgress;
use shards::routes::RouteTable;
use shards::runtime::{self, dma::open_marker_first};
use shards::shape::definition::ShapeHandle;
use shards::shape::encode::PgSnapshot;
use shards::shape::registry::Registry;
use shards::storage::commit::{CommitConfig, CommitSignals, GroupCommit};
use shards::storage::meta::MetaStore;
use shards::storage::segment::SegmentWriter;
use shards::Lsn;

const ROWS_PER_TRANSACTION: usize = 100;

struct Run {
    shapes: usize,
    changes: usize,
    seconds: f64,
    fdatasyncs: u64,
    bytes: u64,
}

fn run_one(shapes: usize, changes: usize) -> Run {
    runtime::spawn_thread("bench-shard", move || async move {
        let dir = std::env::temp_dir().join(format!(
            "shapeshard-write-bench-{}-{shapes}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        open_marker_first(&dir).await.expect("marker");
        let (writer, _) = SegmentWriter::open(&dir.join("log"), 128 << 20)
            .await
            .expect("segment log");
        let stats = writer.stats.clone();
        let progress = DurableProgress::new(1, Lsn::ZERO);
        let registry = Rc::new(RefCell::new(Registry::new(
            0,
            Arc::new(RouteTable::new()),
            10 << 20,
            &dir.join("shapes"),
        )));
        for k in 0..shapes {
            let definition = g_equals(k);
            let handle = ShapeHandle::new(definition.hash(), k as u64);
            let (spec, _) = build_spec(handle, definition, bench_table())
                .unwrap_or_else(|_| panic!("shape {k}"));
            let shape = registry.borrow_mut().insert(spec);
            registry.borrow_mut().snapshot_taken(
                shape.id,
                PgSnapshot {
                    xmin: 1,
                    xmax: 1,
                    xip: vec![],
                    wal_lsn: None,
                },
            );
        }
        let signals = Rc::new(CommitSignals::default());
        let meta = MetaStore::open(&dir.join("meta")).expect("metadata");
        let committer = runtime::spawn_local(
            GroupCommit {
                index: 0,
                config: CommitConfig::default(),
                registry: registry.clone(),
                meta,
                meta_stats: Default::default(),
                writer,
                progress: progress.clone(),
                signals: signals.clone(),
                gauges: Default::default(),
                shutdown: runtime::Shutdown::default(),
            }
            .run(),
        );
        let relation = Arc::new(Relation {
            id: 16384,
            schema: "public".into(),
            name: "bench".into(),
            replica_identity: ReplicaIdentity::Full,
            columns: ["id:20", "g:23", "note:25"]
                .iter()
                .map(|c| {
                    let (name, oid) = c.split_once(':').unwrap();
                    Column {
                        name: name.into(),
                        type_oid: oid.parse().unwrap(),
                        type_modifier: -1,
                        is_key: name == "id",
                    }
                })
                .collect(),
        });
        // Built before the clock starts: decoding is not what is measured.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let transactions: Vec<Arc<Transaction>> = (0..changes.div_ceil(ROWS_PER_TRANSACTION))
            .map(|t| {
                let lsn = 1_000_000 + t as u64 * 1000;
                Arc::new(Transaction {
                    xid: 10 + t as u32,
                    commit_lsn: Lsn(lsn),
                    end_lsn: Lsn(lsn + 1),
                    commit_time_micros: 0,
                    changes: (0..ROWS_PER_TRANSACTION)
                        .map(|r| {
                            seed ^= seed << 13;
                            seed ^= seed >> 7;
                            seed ^= seed << 17;
                            let id = t * ROWS_PER_TRANSACTION + r;
                            Change::Insert {
                                relation: relation.clone(),
                                new: vec![
                                    Datum::Text(id.to_string().into()),
                                    Datum::Text((seed % shapes as u64).to_string().into()),
                                    Datum::Text("a note of some forty bytes, give or take".into()),
                                ],
                            }
                        })
                        .collect(),
                })
            })
            .collect();
        let last = transactions.last().map_or(Lsn::ZERO, |t| t.end_lsn);
        let syncs_before = stats.fdatasyncs.get();
        let bytes_before = stats.bytes_written.get();
        let started = Instant::now();
        for tx in &transactions {
            registry.borrow_mut().apply_transaction(tx);
            signals.seen.set(tx.end_lsn);
            if registry.borrow().journal().borrow().len() >= CommitConfig::default().max_pending {
                signals.wake.notify_all();
            }
            // As the shard core does: the committer's tick is not stretched.
            if signals.commit_due(CommitConfig::default().interval) {
                futures_lite::future::yield_now().await;
            } else {
                runtime::yield_if_needed().await;
            }
        }
        // A committer that failed or stopped ticking must end the run with
        // its reason, not look like a slow disk.
        let mut progress_seen = (progress.durable(0), Instant::now());
        while progress.durable(0) < last {
            if signals.failed.get() {
                let error = committer.join().await.err();
                panic!("the group commit failed: {error:?}");
            }
            let durable = progress.durable(0);
            if durable != progress_seen.0 {
                progress_seen = (durable, Instant::now());
            }
            assert!(
                progress_seen.1.elapsed() < Duration::from_secs(60),
                "no durable progress for 60 s: durable {durable}, last {last}, {} journal records pending",
                registry.borrow().journal().borrow().len()
            );
            runtime::sleep(Duration::from_micros(200)).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        signals.closing.set(true);
        signals.wake.notify_all();
        committer.join().await.expect("commit");
        let _ = std::fs::remove_dir_all(&dir);
        Run {
            shapes,
            changes: transactions.len() * ROWS_PER_TRANSACTION,
            seconds,
            fdatasyncs: stats.fdatasyncs.get() - syncs_before,
            bytes: stats.bytes_written.get() - bytes_before,
        }
    })
    .expect("bench thread")
    .join()
    .expect("join")
    .expect("run")
}

/// `changes` per shape count (the binary's default was 500,000 into
/// 1k, 10k and 100k shapes).
pub fn run(changes: usize, counts: &[usize]) -> String {
    let mut rows = String::new();
    for &shapes in counts {
        let r = run_one(shapes, changes);
        if shapes == *counts.iter().max().unwrap() {
            crate::report::headline(crate::report::Headline::rate(
                "shard-write",
                &format!("one shard, {shapes} shapes, changes/s durable"),
                r.changes as f64 / r.seconds,
                "changes/s",
                None,
                "≥ 50k per core",
            ));
        }
        eprintln!(
            "{shapes} shapes: {:.0} changes/s",
            r.changes as f64 / r.seconds
        );
        rows.push_str(&format!(
            "| {} | {} | {:.2} | {:.0} | {:.0} | {:.1} |\n",
            r.shapes,
            r.changes,
            r.seconds,
            r.changes as f64 / r.seconds,
            r.fdatasyncs as f64 / r.seconds,
            r.bytes as f64 / r.seconds / 1e6,
        ));
    }
    let report = format!(
        "# Shard write path: changes into `g = const` shapes, durable\n\n{}\n\nOne shard (one core): decoded insert transactions of {ROWS_PER_TRANSACTION} rows, each row in exactly one shape (found through the where-clause index), converted, encoded, journaled, and made durable by the group commit (5 ms / 256 KiB ticks, one fdatasync each, direct I/O), with checkpoints every second moving the shapes' log tails to their serving files (on their own thread, sharing the two cores). Timed until the shard's durable LSN reaches the last transaction.\n\n| shapes | changes | seconds | changes/s | fdatasyncs/s | MB/s written |\n|---|---|---|---|---|---|\n{rows}\nDecoding (not included here) runs at millions of rows/s on one core and the replication drain beside `pg_recvlogical` is in the `decode` reports; end to end through Postgres is `e2e-write-bench`.\n",
        Machine::describe()
    );
    report
}
