//! Restart cost: one shard restoring N idle `g = const` shapes (default
//! 100,000) from its LMDB metadata after a checkpoint — what a restart does
//! before the shard serves — and the memory each restored, idle shape
//! keeps (anonymous RSS growth over the restore, divided by N).
//!
//! Then every shape is used (built) and left idle until the shard unloads
//! it back to cold (`Registry::unload_idle`, what a checkpoint does after
//! `SHAPESHARD_UNLOAD_IDLE_MS`): the heap a built shape holds, and what an
//! idle one is back to.
//!
//! `cargo run --release -p shapeshard-perf --bin restore-bench [SHAPES]`
//!
//! The records are what the server writes: the creation record from
//! `build_spec`, a completed snapshot and a one-chunk log per shape.

use std::sync::Arc;
use std::time::Instant;

use crate::fixture::{bench_table, g_equals};
use crate::report::Machine;
use shapeshard::shapes::create::build_spec;
use shapeshard::shapes::recover::{recover, spec_loader};
use shapeshard::shapes::service::ShapeConfig;
use shards::routes::RouteTable;
use shards::shape::definition::{definition_hash, ShapeHandle};
use shards::shape::encode::PgSnapshot;
use shards::shape::registry::Registry;
use shards::storage::meta::{
    CheckpointBatch, ChunkRecord, LogRecord, MetaBatch, MetaStore, RegionRecord, ShapeRecord,
};

/// Counts live heap bytes, so memory per shape is exact whatever the
/// allocator keeps cached.
struct Counting;

static LIVE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, std::sync::atomic::Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size() as i64, std::sync::atomic::Ordering::Relaxed);
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(
            new as i64 - layout.size() as i64,
            std::sync::atomic::Ordering::Relaxed,
        );
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn heap() -> i64 {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}

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

/// Restores `shapes` idle shapes (the binary's default was 100,000).
pub fn run(shapes: usize) -> String {
    let dir = std::env::temp_dir().join(format!("shapeshard-restore-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let meta = MetaStore::open(&dir.join("meta")).expect("metadata");
    let snapshot = PgSnapshot {
        xmin: 100,
        xmax: 100,
        xip: vec![],
        wal_lsn: None,
    };
    let end = snapshot.end_message().into_bytes();
    let built = Instant::now();
    for batch in (0..shapes).collect::<Vec<_>>().chunks(10_000) {
        let mut records = MetaBatch::default();
        let mut logs = CheckpointBatch::default();
        for &k in batch {
            let definition = g_equals(k);
            let handle = ShapeHandle::new(definition.hash(), k as u64);
            let (spec, _) = build_spec(handle, definition, bench_table())
                .unwrap_or_else(|_| panic!("shape {k}"));
            let id = k as u64 + 1;
            records.put.push(ShapeRecord {
                id,
                schema_fingerprint: 0,
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
    let shape_config = ShapeConfig::new("restore_bench".into());
    registry.set_loader(meta, spec_loader(&shape_config));
    let memory_before = rss_anon();
    let heap_before = heap();
    let started = Instant::now();
    let recovery =
        recover(&dir.join("log"), &meta, &mut registry, false, &shape_config).expect("recover");
    let seconds = started.elapsed().as_secs_f64();
    let memory = rss_anon().saturating_sub(memory_before);
    let heap_cold = (heap() - heap_before) as f64 / shapes as f64;
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
    // Use every shape, then let them idle past the unload threshold.
    for k in 0..shapes {
        let handle = ShapeHandle::new(g_equals(k).hash(), k as u64);
        registry.by_handle(handle.as_str()).expect("restored shape");
    }
    assert_eq!(registry.cold_count(), 0, "every shape built");
    let heap_built = (heap() - heap_before) as f64 / shapes as f64;
    // One call per checkpoint; each is a pause of the shard's executor.
    assert_eq!(registry.unload_idle(1), 0, "used in this checkpoint");
    let mut unload_ms: f64 = 0.0;
    let mut unload_total = 0.0;
    let mut checkpoints = 0;
    while registry.cold_count() < shapes {
        let pause = Instant::now();
        let unloaded = registry.unload_idle(1);
        let ms = pause.elapsed().as_secs_f64() * 1000.0;
        unload_ms = unload_ms.max(ms);
        unload_total += ms;
        assert!(unloaded > 0, "idle shapes left built");
        checkpoints += 1;
    }
    eprintln!("unloaded over {checkpoints} checkpoints, {unload_total:.1} ms in all");
    assert_eq!(registry.cold_count(), shapes);
    let heap_unloaded = (heap() - heap_before) as f64 / shapes as f64;
    eprintln!(
        "heap per shape: {heap_cold:.0} B restored, {heap_built:.0} B built, {heap_unloaded:.0} B unloaded ({unload_ms:.1} ms)"
    );
    crate::report::headline(crate::report::Headline {
        workload: "restore".into(),
        measure: format!("heap per restored (cold) idle shape, {shapes} shapes"),
        ours: heap_cold,
        unit: "bytes".into(),
        limit: None,
        target: "≤ 2 KB (Electric ~600 KB)".into(),
        lower_is_better: true,
        errors: 0,
    });
    crate::report::headline(crate::report::Headline {
        workload: "restore".into(),
        measure: format!("one shard restoring {shapes} shapes"),
        ours: seconds * 1000.0,
        unit: "ms".into(),
        limit: None,
        target: "≤ 1 s at 100k".into(),
        lower_is_better: true,
        errors: 0,
    });
    rows.push_str(&format!(
        "| {shapes} | {seconds:.3} | {:.0} | {per_shape:.0} | {heap_cold:.0} | {heap_built:.0} | {heap_unloaded:.0} | {unload_ms:.1} | {:.1} | {:.1} |\n",
        shapes as f64 / seconds,
        first_use.value_at_quantile(0.5) as f64 / 1000.0,
        first_use.value_at_quantile(0.99) as f64 / 1000.0,
    ));
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
    let report = format!(
        "# Restore: idle shapes back from LMDB after a checkpoint\n\n{}\n\nOne shard (one core) restores every shape from its LMDB records (rkyv, copied to aligned buffers) and checkpointed log states: creation record decoded, where clause compiled, shape registered and indexed, log state restored. No serving file is opened (they are cut lazily at their next write) and no segment is replayed (the checkpoint is at the log's end, as after a clean stop; after a crash only the records past the checkpoint are replayed). A server restores its shards in parallel, one per core. Shapes come back *cold*: handle, definition key, index key, read time and checkpointed log state only; a shape is built (creation record read from LMDB, where clause compiled) the first time a request or a change needs it. RSS is the growth of anonymous RSS over the restore, per shape. Heap columns count live heap bytes per shape (a counting allocator): after the restore (cold), after every shape was used once (built: spec, compiled where clause, log index, wake-up list), and after the shard unloaded them as idle (the checkpoint's `unload_idle`, at most `UNLOAD_PER_CHECKPOINT` per checkpoint; the longest such pause of the shard's executor is reported). First use is the build of one cold shape (1000 sampled).\n\n| shapes | seconds | shapes/s | RSS B/shape restored | heap B/shape restored | heap B/shape built | heap B/shape unloaded | longest unload pause ms | first use p50 µs | first use p99 µs |\n|---|---|---|---|---|---|---|---|---|---|\n{rows}",
        Machine::describe()
    );
    report
}
