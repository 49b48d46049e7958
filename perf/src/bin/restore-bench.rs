//! Restart cost: one shard restoring N idle `g = const` shapes (default
//! 100,000) from its LMDB metadata after a checkpoint — what a restart does
//! before the shard serves — and the memory each restored, idle shape
//! keeps (anonymous RSS growth over the restore, divided by N).
//!
//! `cargo run --release -p shapeshard-perf --bin restore-bench [SHAPES]`
//!
//! The records are what the server writes: the creation record from
//! `build_spec`, a completed snapshot and a one-chunk log per shape.

use std::sync::Arc;
use std::time::Instant;

use shapeshard::shapes::create::build_spec;
use shapeshard::shapes::recover::{recover, spec_loader};
use shapeshard_perf::fixture::{bench_table, g_equals};
use shapeshard_perf::report::Machine;
use shards::routes::RouteTable;
use shards::shape::definition::{definition_hash, ShapeHandle};
use shards::shape::encode::PgSnapshot;
use shards::shape::registry::Registry;
use shards::storage::meta::{
    Checkpoint, CheckpointBatch, ChunkRecord, LogRecord, MetaBatch, MetaStore, RegionRecord,
    ShapeRecord,
};

/// Anonymous resident memory of this process, in bytes.
fn rss_anon() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn chunk(start: u64, end: u64, first: (u64, u64), last: (u64, u64), sealed: bool) -> ChunkRecord {
    ChunkRecord {
        start,
        end,
        first,
        last,
        json_bytes: end - start,
        items: 10,
        sealed,
    }
}

fn main() {
    let shapes: usize = std::env::args()
        .nth(1)
        .map_or(100_000, |a| a.parse().expect("SHAPES must be a number"));
    let dir = std::env::temp_dir().join(format!("shapeshard-restore-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let meta = MetaStore::open(&dir.join("meta")).expect("metadata");
    let snapshot = PgSnapshot {
        xmin: 100,
        xmax: 100,
        xip: vec![],
    };
    let end = snapshot.end_message().into_bytes();
    let built = Instant::now();
    for batch in (0..shapes).collect::<Vec<_>>().chunks(10_000) {
        let mut records = MetaBatch::default();
        let mut logs = CheckpointBatch {
            logs: Vec::new(),
            at: Checkpoint::default(),
        };
        for &k in batch {
            let definition = g_equals(k);
            let handle = ShapeHandle::new(definition.hash(), k as u64);
            let (spec, _) = build_spec(handle, definition, bench_table())
                .unwrap_or_else(|_| panic!("shape {k}"));
            let id = k as u64 + 1;
            records.put.push(ShapeRecord {
                id,
                handle: spec.handle.as_str().to_string(),
                canonical: spec.canonical.clone(),
                definition_hash: definition_hash(&spec.canonical),
                relation_id: 16384,
                index_key: Some((1, vec![k.to_string()])),
                persisted: spec.persisted.clone(),
                snapshot_end: Some(end.clone()),
                created_ms: 1,
                last_read: id,
            });
            logs.logs.push((
                id,
                LogRecord {
                    snapshot: RegionRecord {
                        len: 4000,
                        chunks: vec![chunk(0, 4000, (0, 0), (0, 10), true)],
                    },
                    snapshot_end: Some(end.clone()),
                    main: RegionRecord {
                        len: 2000,
                        chunks: vec![chunk(0, 2000, (1000, 0), (1900, 0), false)],
                    },
                    last_lsn: 1900,
                },
            ));
        }
        meta.commit(&records).expect("commit");
        meta.checkpoint(&logs).expect("checkpoint");
    }
    eprintln!(
        "{shapes} records written in {:.1}s",
        built.elapsed().as_secs_f64()
    );

    let mut rows = String::new();
    let mut registry = Registry::new(
        0,
        Arc::new(RouteTable::new()),
        10 << 20,
        &dir.join("shapes"),
    );
    registry.set_loader(meta, spec_loader());
    let memory_before = rss_anon();
    let started = Instant::now();
    let recovery = recover(&dir.join("log"), &meta, &mut registry).expect("recover");
    let seconds = started.elapsed().as_secs_f64();
    let memory = rss_anon().saturating_sub(memory_before);
    assert_eq!(recovery.shapes, shapes, "every shape restored");
    assert_eq!(registry.len(), shapes);
    let per_shape = memory as f64 / shapes as f64;
    eprintln!("restored {shapes} shapes in {seconds:.3}s, {per_shape:.0} bytes each");
    // First use of a restored shape builds it (creation record from LMDB,
    // where clause compiled, log state restored): its cost, once per shape.
    let handles: Vec<String> = (0..1000)
        .map(|i| {
            let k = (i * 7919) % shapes;
            ShapeHandle::new(g_equals(k).hash(), k as u64)
                .as_str()
                .to_string()
        })
        .collect();
    let mut first_use = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    for handle in &handles {
        let at = Instant::now();
        let shape = registry.by_handle(handle).expect("restored shape");
        first_use
            .record(at.elapsed().as_nanos() as u64)
            .expect("record");
        assert!(shape.snapshot_done());
    }
    assert_eq!(registry.cold_count(), shapes - handles.len());
    rows.push_str(&format!(
        "| {shapes} | {seconds:.3} | {:.0} | {per_shape:.0} | {:.1} | {:.1} |\n",
        shapes as f64 / seconds,
        first_use.value_at_quantile(0.5) as f64 / 1000.0,
        first_use.value_at_quantile(0.99) as f64 / 1000.0,
    ));
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
    let report = format!(
        "# Restore: idle shapes back from LMDB after a checkpoint\n\n{}\n\nOne shard (one core) restores every shape from its LMDB records (rkyv, copied to aligned buffers) and checkpointed log states: creation record decoded, where clause compiled, shape registered and indexed, log state restored. No serving file is opened (they are cut lazily at their next write) and no segment is replayed (the checkpoint is at the log's end, as after a clean stop; after a crash only the records past the checkpoint are replayed). A server restores its shards in parallel, one per core. Shapes come back *cold*: handle, definition key, index key, read time and checkpointed log state only; a shape is built (creation record read from LMDB, where clause compiled) the first time a request or a change needs it. Memory is the growth of anonymous RSS over the restore, per shape: an idle shape's whole in-memory state. First use is the build of one cold shape (1000 sampled).\n\n| shapes | seconds | shapes/s | bytes per idle shape | first use p50 µs | first use p99 µs |\n|---|---|---|---|---|---|\n{rows}",
        Machine::describe()
    );
    println!("{report}");
    shapeshard_perf::report::write("restore", &report);
}
