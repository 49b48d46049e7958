//! Relation messages (sent by pgoutput at every session start and after
//! cache invalidations) against cold shapes: an unchanged table builds no
//! shape, found through the per-relation index; a change still builds only
//! the shapes it concerns; a changed table drops its shapes, unbuilt.

use std::sync::Arc;

use crate::change::{Change, Column, Datum, Relation, Transaction};
use crate::lsn::Lsn;
use crate::routes::RouteTable;
use crate::shape::definition::definition_hash;
use crate::shape::encode::PgSnapshot;
use crate::shape::registry::{schema_fingerprint, Registry};
use crate::shape::test_support::{
    id_equals_loader, id_equals_shape, id_equals_shape_named, id_relation,
};
use crate::storage::meta::{LogRecord, MetaBatch, MetaStore, ShapeRecord};

const SHAPES: u64 = 100_000;

#[test]
fn a_relation_message_builds_no_cold_shape() {
    let dir = std::env::temp_dir().join(format!("shapeshard-relation-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let meta = MetaStore::open(&dir.join("meta")).expect("meta");
    let mut registry = Registry::new(0, Arc::new(RouteTable::new()), 1 << 16, &dir.join("shapes"));
    registry.set_loader(meta, id_equals_loader());
    let end = PgSnapshot {
        xmin: 10,
        xmax: 10,
        xip: vec![],
        wal_lsn: Some(100),
    }
    .stored_end();
    let fingerprint = schema_fingerprint([("id", 23u32)].into_iter());
    let records: Vec<ShapeRecord> = (0..SHAPES)
        .map(|n| {
            // Every tenth shape names its columns (`columns=id`).
            let spec = if n % 10 == 0 {
                id_equals_shape_named(n)
            } else {
                id_equals_shape(n)
            };
            ShapeRecord {
                id: n + 1,
                schema_fingerprint: fingerprint,
                handle: spec.handle.as_str().to_string(),
                canonical: spec.canonical.clone(),
                definition_hash: definition_hash(&spec.canonical),
                relation_id: 1,
                index_key: Some((0, vec![n.to_string()])),
                persisted: spec.persisted.clone(),
                snapshot_end: Some(end.clone()),
                created_ms: 1,
                last_read: 0,
            }
        })
        .collect();
    meta.commit(&MetaBatch {
        put: records.clone(),
        remove: Vec::new(),
    })
    .expect("commit");
    for record in &records {
        let log = LogRecord {
            snapshot_end: Some(end.clone()),
            ..Default::default()
        };
        assert!(registry.restore_cold(record, log));
    }
    assert_eq!(registry.cold_count() as u64, SHAPES);

    // A reconnect re-sends the table's Relation: nothing is built.
    registry.apply_relation(&id_relation(1, "items"));
    registry.apply_relation(&id_relation(1, "items"));
    assert_eq!(
        registry.built_count(),
        0,
        "a Relation message built cold shapes"
    );
    assert_eq!(registry.rebuilt_count(), 0);
    assert_eq!(registry.len() as u64, SHAPES);

    // One row changes: only the shape it concerns is built.
    registry.apply_transaction(&Arc::new(Transaction {
        xid: 20,
        commit_lsn: Lsn(1_000),
        end_lsn: Lsn(1_001),
        commit_time_micros: 0,
        changes: vec![Change::Insert {
            relation: id_relation(1, "items"),
            new: vec![Datum::Text("5".into())],
        }],
    }));
    assert_eq!(
        registry.rebuilt_count(),
        1,
        "only the shape of id = 5 was built"
    );
    assert_eq!(registry.built_count(), 1);

    // ADD COLUMN: shapes selecting every column would now have rows of
    // another shape, so they go (their clients re-sync); the ones naming
    // their columns keep every column they use where it was, so they stay.
    // Neither kind is built to find out.
    let mut altered = (*id_relation(1, "items")).clone();
    altered.columns.push(Column {
        name: "title".into(),
        type_oid: 25,
        type_modifier: -1,
        is_key: false,
    });
    let altered = Arc::new(altered);
    registry.apply_relation(&altered);
    assert_eq!(
        registry.len() as u64,
        SHAPES / 10,
        "exactly the select-all shapes go"
    );
    assert_eq!(registry.rebuilt_count(), 1, "none was built to find out");
    // A named-columns shape keeps receiving rows of the wider table.
    registry.apply_transaction(&Arc::new(Transaction {
        xid: 21,
        commit_lsn: Lsn(2_000),
        end_lsn: Lsn(2_001),
        commit_time_micros: 0,
        changes: vec![Change::Insert {
            relation: altered.clone(),
            new: vec![Datum::Text("20".into()), Datum::Text("t".into())],
        }],
    }));
    assert_eq!(
        registry.rebuilt_count(),
        2,
        "the shape of id = 20 was built"
    );
    assert_eq!(registry.len() as u64, SHAPES / 10, "and kept");
    let handle = id_equals_shape_named(20).handle;
    let shape = registry.by_handle(handle.as_str()).expect("kept");
    assert!(shape.log_memory_bytes() > 0, "the insert reached the shape");

    // Changing a column's type drops the rest.
    let mut retyped = (*altered).clone();
    retyped.columns[0].type_oid = 20;
    registry.apply_relation(&Arc::new(retyped));
    assert_eq!(registry.len(), 0, "a retyped key column drops every shape");
    // Another table's Relation is not this one's business.
    let _: &Relation = &id_relation(2, "other");
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
}
