//! Unloading idle built shapes back to cold: only shapes nothing holds and
//! whose items are all in their files go; a rebuilt shape serves the same
//! bytes and continues its log where it stopped.

use std::sync::Arc;

use crate::change::{Change, Datum, Transaction};
use crate::lsn::Lsn;
use crate::routes::RouteTable;
use crate::shape::encode::PgSnapshot;
use crate::shape::log::LogRead;
use crate::shape::offset::LogOffset;
use crate::shape::registry::{Registry, Shape};
use crate::shape::test_support::{checkpoint, id_equals_loader, id_equals_shape, id_relation};
use crate::storage::meta::MetaStore;

fn insert_tx(commit: u64, ids: &[u64]) -> Arc<Transaction> {
    let relation = id_relation(1, "items");
    Arc::new(Transaction {
        xid: 100 + commit as u32,
        commit_lsn: Lsn(commit),
        end_lsn: Lsn(commit + 1),
        commit_time_micros: 0,
        changes: ids
            .iter()
            .map(|id| Change::Insert {
                relation: relation.clone(),
                new: vec![Datum::Text(id.to_string().into())],
            })
            .collect(),
    })
}

/// Every response from the start to the end of the log, concatenated.
fn read_all(shape: &Shape) -> Vec<u8> {
    let mut out = Vec::new();
    let mut after = LogOffset::BeforeAll;
    loop {
        let LogRead::Items(view) = shape.read(after) else {
            panic!("{} not readable after {after:?}", shape.handle());
        };
        let end = view.end;
        out.extend_from_slice(&view.load_blocking().expect("read"));
        out.push(b'|');
        if end == after || end >= shape.last_offset() {
            return out;
        }
        after = end;
    }
}

#[test]
fn idle_shapes_unload_to_cold_and_come_back_with_the_same_log() {
    let dir = std::env::temp_dir().join(format!("shapeshard-unload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let meta = MetaStore::open(&dir.join("meta")).expect("meta");
    let mut registry = Registry::new(0, Arc::new(RouteTable::new()), 256, &dir.join("shapes"));
    registry.set_loader(meta, id_equals_loader());
    let mut handles = Vec::new();
    for n in 0..3 {
        let shape = registry.insert(id_equals_shape(n));
        let snapshot = PgSnapshot {
            xmin: 50,
            xmax: 50,
            xip: vec![],
            wal_lsn: None,
        };
        shape.push_snapshot_row(&[Some(n.to_string().as_str())], &mut Vec::new());
        shape.finish_snapshot(&snapshot);
        registry.snapshot_taken(shape.id, snapshot);
        handles.push(shape.handle().to_string());
    }
    // Enough changes to seal a few chunks of 256 bytes.
    for commit in (1000..1200).step_by(10) {
        registry.apply_transaction(&insert_tx(commit, &[0, 1, 2]));
    }
    checkpoint(&mut registry, &meta);
    let before: Vec<Vec<u8>> = handles
        .iter()
        .map(|h| read_all(&registry.by_handle(h).unwrap()))
        .collect();
    let held = registry.by_handle(&handles[2]).unwrap();

    // Used in this epoch: nothing goes yet.
    assert_eq!(registry.unload_idle(1), 0);
    assert_eq!(registry.unload_idle(1), 2, "two idle shapes unloaded");
    assert_eq!(registry.cold_count(), 2);
    assert_eq!(registry.built_count(), 1, "a held shape stays built");
    assert_eq!(registry.len(), 3);

    // A change rebuilds shape 0 (the index routes it there); with a tail it
    // is not unloaded, however idle, until a checkpoint wrote it.
    registry.apply_transaction(&insert_tx(2000, &[0]));
    assert_eq!(registry.cold_count(), 1, "the change rebuilt its shape");
    for _ in 0..3 {
        registry.unload_idle(1);
    }
    assert_eq!(registry.cold_count(), 1, "a shape with a tail stays built");
    checkpoint(&mut registry, &meta);
    registry.unload_idle(1);
    assert_eq!(registry.cold_count(), 2, "written, it goes cold");

    // Rebuilt: the same responses, byte for byte, and a replayed
    // transaction is still skipped.
    let shape1 = registry.by_handle(&handles[1]).expect("rebuilt");
    assert_eq!(
        read_all(&shape1),
        before[1],
        "shape 1 rebuilt byte-identical"
    );
    let end1 = shape1.last_offset();
    registry.apply_transaction(&insert_tx(1190, &[1]));
    assert_eq!(shape1.last_offset(), end1, "a held transaction is skipped");
    registry.apply_transaction(&insert_tx(3000, &[1]));
    assert_eq!(shape1.last_offset().tx(), 3000, "new changes append");

    let shape0 = registry.by_handle(&handles[0]).expect("rebuilt");
    let now = read_all(&shape0);
    assert!(
        now.len() > before[0].len() && shape0.last_offset().tx() == 2000,
        "shape 0 keeps the change that rebuilt it"
    );
    assert_eq!(read_all(&held), before[2]);
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_metadata_read_never_deletes_a_cold_shape() {
    let dir = std::env::temp_dir().join(format!("shapeshard-warm-fail-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let meta = MetaStore::open(&dir.join("meta")).expect("meta");
    let mut registry = Registry::new(0, Arc::new(RouteTable::new()), 256, &dir.join("shapes"));
    registry.set_loader(meta, id_equals_loader());
    let shape = registry.insert(id_equals_shape(4));
    let snapshot = PgSnapshot {
        xmin: 50,
        xmax: 50,
        xip: vec![],
        wal_lsn: None,
    };
    shape.finish_snapshot(&snapshot);
    registry.snapshot_taken(shape.id, snapshot);
    let handle = shape.handle().to_string();
    drop(shape);
    checkpoint(&mut registry, &meta);
    registry.unload_idle(1);
    registry.unload_idle(1);
    assert_eq!(registry.cold_count(), 1);

    // A read that fails and then works: retried, the shape is rebuilt.
    crate::storage::meta::fault::fail_reads(2);
    assert!(
        registry.by_handle(&handle).is_some(),
        "rebuilt after retries"
    );
    checkpoint(&mut registry, &meta);
    registry.unload_idle(1);
    registry.unload_idle(1);
    assert_eq!(registry.cold_count(), 1);

    // A read that keeps failing stops the shard (a panic aborts the
    // process); the shape is still there for recovery, not deleted.
    crate::storage::meta::fault::fail_reads(100);
    let stopped =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| registry.by_handle(&handle)));
    assert!(stopped.is_err(), "an unreadable record must stop the shard");
    crate::storage::meta::fault::fail_reads(0);
    assert_eq!(registry.len(), 1, "the shape was not deleted");
    assert!(
        registry.take_meta_batch().remove.is_empty(),
        "no removal journaled"
    );
    assert!(registry.by_handle(&handle).is_some());
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reads_write_no_metadata_record_and_their_stamps_reach_lmdb_at_checkpoints() {
    let dir = std::env::temp_dir().join(format!("shapeshard-stamps-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let meta = MetaStore::open(&dir.join("meta")).expect("meta");
    let mut registry = Registry::new(0, Arc::new(RouteTable::new()), 256, &dir.join("shapes"));
    let shape = registry.insert(id_equals_shape(9));
    let id = shape.id;
    drop(shape);
    checkpoint(&mut registry, &meta);
    for stamp in 1..=100 {
        registry.touch(id, stamp);
    }
    assert!(
        registry.take_meta_batch().is_empty(),
        "a read rewrote the shape's metadata record"
    );
    checkpoint(&mut registry, &meta);
    let loaded = meta.load().expect("load");
    assert_eq!(loaded.shapes.len(), 1);
    assert_eq!(loaded.shapes[0].last_read, 100, "the newest stamp is kept");
    assert!(registry.take_read_stamps().is_empty(), "taken once");
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
}
