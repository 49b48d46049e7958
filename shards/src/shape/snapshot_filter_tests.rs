//! A shape's snapshot filter across rebuilds: it is re-armed whenever a
//! shape is rebuilt (unload → use, restart), and must then pass every
//! transaction after the snapshot however far xids have moved on (32-bit
//! xids compared relative to an old `xmin` wrap after 2^31), while still
//! dropping exactly the transactions the snapshot holds when Postgres
//! re-sends them after a crash.

use std::sync::Arc;

use crate::change::{Change, Datum, Transaction};
use crate::lsn::Lsn;
use crate::routes::RouteTable;
use crate::shape::encode::PgSnapshot;
use crate::shape::registry::Registry;
use crate::shape::test_support::{checkpoint, id_equals_loader, id_equals_shape, id_relation};
use crate::storage::meta::MetaStore;

/// The snapshot's WAL position; transactions below it committed before.
const SNAPSHOT_LSN: u64 = 50_000;

fn tx(xid: u32, commit: u64, id: u64) -> Arc<Transaction> {
    Arc::new(Transaction {
        xid,
        commit_lsn: Lsn(commit),
        end_lsn: Lsn(commit + 1),
        commit_time_micros: 0,
        changes: vec![Change::Insert {
            relation: id_relation(1, "items"),
            new: vec![Datum::Text(id.to_string().into())],
        }],
    })
}

/// A registry on `dir` (LMDB opens once per process: `meta` is shared by
/// the registries of one test, as by a shard's restarts).
fn registry(dir: &std::path::Path, meta: MetaStore) -> Registry {
    let mut registry = Registry::new(0, Arc::new(RouteTable::new()), 1 << 16, &dir.join("shapes"));
    registry.set_loader(meta, id_equals_loader());
    registry
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("shapeshard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// 2^31 + 5 transactions after the snapshot's xmin: as 32-bit xids
/// compared relative to xmin, "before the snapshot".
const FAR_XID: u32 = 100u32.wrapping_add((1u32 << 31) + 5);

#[test]
fn an_old_snapshot_passes_new_transactions_after_unload_and_restart() {
    let dir = scratch("filter-old");
    let meta = MetaStore::open(&dir.join("meta")).expect("meta");
    let handle;
    {
        let mut registry = registry(&dir, meta);
        let shape = registry.insert(id_equals_shape(1));
        let snapshot = PgSnapshot {
            xmin: 100,
            xmax: 100,
            xip: vec![],
            wal_lsn: Some(SNAPSHOT_LSN),
        };
        registry.snapshot_taken(shape.id, snapshot.clone());
        shape.finish_snapshot(&snapshot);
        handle = shape.handle().to_string();
        registry.apply_transaction(&tx(150, 60_000, 1));
        assert_eq!(shape.last_offset().tx(), 60_000);
        drop(shape);
        checkpoint(&mut registry, &meta);
        registry.unload_idle(1);
        registry.unload_idle(1);
        assert_eq!(registry.cold_count(), 1, "the idle shape went cold");

        // Rebuilt by a change from 2^31 transactions later: kept.
        registry.apply_transaction(&tx(FAR_XID, 70_000, 1));
        let shape = registry.by_handle(&handle).expect("rebuilt");
        assert_eq!(
            shape.last_offset().tx(),
            70_000,
            "a change 2^31 xids after an old snapshot was dropped after an unload"
        );
        checkpoint(&mut registry, &meta);
    }

    // A restart: cold from LMDB, rebuilt by the next change.
    let mut registry = registry(&dir, meta);
    let loaded = meta.load().expect("load");
    for record in &loaded.shapes {
        let log = loaded.logs.get(&record.id).cloned().unwrap_or_default();
        assert!(registry.restore_cold(record, log));
    }
    registry.apply_transaction(&tx(FAR_XID.wrapping_add(3), 80_000, 1));
    let shape = registry.by_handle(&handle).expect("restored");
    assert_eq!(
        shape.last_offset().tx(),
        80_000,
        "a change 2^31 xids after an old snapshot was dropped after a restart"
    );
    drop((shape, registry));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_re_sent_stream_still_drops_exactly_what_the_snapshot_holds() {
    let dir = scratch("filter-resent");
    let mut registry = registry(&dir, MetaStore::open(&dir.join("meta")).expect("meta"));
    let shape = registry.insert(id_equals_shape(1));
    // xid 202 was running at the snapshot; 201 and 204 had committed.
    let snapshot = PgSnapshot {
        xmin: 201,
        xmax: 205,
        xip: vec![202, 203],
        wal_lsn: Some(SNAPSHOT_LSN),
    };
    // As recovery restores it after a crash before the gate opened: from
    // the stored end record.
    shape.restore_snapshot_end(&snapshot.stored_end());
    registry.snapshot_taken(shape.id, snapshot);
    let sent = [
        (201, 40_000, false), // committed before: in the rows
        (204, 41_000, false), // committed before: in the rows
        (202, 52_000, true),  // running at the snapshot, committed after
        (203, 53_000, true),
        (206, 54_000, true), // started after the snapshot
    ];
    for (xid, commit, _) in sent {
        registry.apply_transaction(&tx(xid, commit, 1));
    }
    let kept: Vec<u64> = sent
        .iter()
        .filter(|(_, _, kept)| *kept)
        .map(|(_, commit, _)| *commit)
        .collect();
    assert_eq!(shape.last_offset().tx(), *kept.last().unwrap());
    let log = {
        let crate::shape::log::LogRead::Items(view) =
            shape.read(crate::shape::offset::LogOffset::SNAPSHOT_END)
        else {
            panic!("log not readable");
        };
        String::from_utf8(view.load_blocking().unwrap().to_vec()).unwrap()
    };
    for (xid, commit, keep) in sent {
        assert_eq!(
            log.contains(&format!("\"lsn\":\"{commit}\"")),
            keep,
            "xid {xid} committed at {commit}: {log}"
        );
    }
    // Clients never see the WAL position.
    let stored = PgSnapshot {
        xmin: 1,
        xmax: 2,
        xip: vec![],
        wal_lsn: Some(7),
    }
    .stored_end();
    assert!(!PgSnapshot::served_end(&stored).contains(&b'7'));
    assert_eq!(
        PgSnapshot::from_stored_end(&stored).unwrap().wal_lsn,
        Some(7)
    );
    drop((shape, registry));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Transactions held while a snapshot has not started count against the
/// shard's memory budget, and stop counting once replayed or dropped.
#[test]
fn held_transactions_count_against_the_memory_budget() {
    let dir = scratch("held-bytes");
    let meta = MetaStore::open(&dir.join("meta")).expect("meta");
    let mut registry = registry(&dir, meta);
    let shape = registry.insert(id_equals_shape(1));
    let before = registry.memory_bytes();
    let big = "x".repeat(4_000);
    for n in 0..100u64 {
        registry.apply_transaction(&Arc::new(Transaction {
            xid: 200 + n as u32,
            commit_lsn: Lsn(1_000 + n),
            end_lsn: Lsn(1_001 + n),
            commit_time_micros: 0,
            changes: vec![Change::Insert {
                relation: id_relation(1, "items"),
                new: vec![Datum::Text(big.clone().into())],
            }],
        }));
    }
    let holding = registry.memory_bytes() - before;
    assert!(
        holding >= 100 * 4_000,
        "100 held transactions of 4 kB counted as {holding} bytes"
    );
    // The snapshot saw all of them: each is dropped, nothing stays counted.
    registry.snapshot_taken(
        shape.id,
        PgSnapshot {
            xmin: 1_000,
            xmax: 1_000,
            xip: vec![],
            wal_lsn: Some(SNAPSHOT_LSN),
        },
    );
    assert_eq!(registry.memory_bytes(), before);
    let _ = std::fs::remove_dir_all(&dir);
}
