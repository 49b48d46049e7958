//! Replication decode round trip: real writes in Postgres, through the
//! replication connection and the pgoutput decoder, compared value by value.

use shards::change::{Change, Datum, OldTupleKind, ReplicaIdentity, Transaction};

use crate::harness::database;
use crate::rig::IngestRig;

const COLUMNS: &str = "
    id int4 PRIMARY KEY,
    c_int2 int2, c_int8 int8, c_numeric numeric, c_float8 float8,
    c_text text, c_varchar varchar(10), c_bool bool, c_uuid uuid,
    c_date date, c_timestamp timestamp, c_timestamptz timestamptz,
    c_interval interval, c_jsonb jsonb, c_json json, c_bytea bytea,
    c_int4_array int4[], c_text_array text[], c_mood mood, c_big text";

const INSERT_VALUES: &str = "1, -2, 9223372036854775807, 12345.678900, 0.1,
    'hello \"world\"', 'abc', true, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
    '2024-01-15', '2024-01-15 10:30:00.5', '2024-01-15 10:30:00+02',
    '1 day 2 hours 3 minutes 4 seconds', '{\"b\":[1,2],\"a\":1}', '{\"x\" : 1}',
    '\\xdeadbeef', '{1,2,3}', ARRAY['a','b c',NULL], 'happy', repeat('abcdefgh', 4000)";

/// Row 1 as Postgres' text output under the display settings.
fn row_one() -> Vec<Option<String>> {
    [
        Some("1"),
        Some("-2"),
        Some("9223372036854775807"),
        Some("12345.678900"),
        Some("0.1"),
        Some("hello \"world\""),
        Some("abc"),
        Some("t"),
        Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        Some("2024-01-15"),
        Some("2024-01-15 10:30:00.5"),
        Some("2024-01-15 08:30:00+00"),
        Some("P1DT2H3M4S"),
        Some("{\"a\": 1, \"b\": [1, 2]}"),
        Some("{\"x\" : 1}"),
        Some("\\xdeadbeef"),
        Some("{1,2,3}"),
        Some("{a,\"b c\",NULL}"),
        Some("happy"),
        None, // c_big, filled in below
    ]
    .into_iter()
    .map(|v| v.map(str::to_string))
    .enumerate()
    .map(|(i, v)| {
        if i == 19 {
            Some("abcdefgh".repeat(4000))
        } else {
            v
        }
    })
    .collect()
}

fn nulls_with_id(id: &str) -> Vec<Option<String>> {
    let mut row = vec![None; 20];
    row[0] = Some(id.to_string());
    row
}

const TOAST: &str = "<unchanged-toast>";

fn text(tuple: &[Datum]) -> Vec<Option<String>> {
    tuple
        .iter()
        .map(|d| match d {
            Datum::Null => None,
            Datum::UnchangedToast => Some(TOAST.to_string()),
            Datum::Text(_) => Some(d.as_str().expect("UTF-8 value").to_string()),
        })
        .collect()
}

/// A change as (operation, table, old tuple kind and values, new values).
type Flat = (
    &'static str,
    String,
    Option<(OldTupleKind, Vec<Option<String>>)>,
    Option<Vec<Option<String>>>,
);

fn flatten(transaction: &Transaction) -> Vec<Flat> {
    transaction
        .changes
        .iter()
        .map(|change| match change {
            Change::Insert { relation, new } => {
                ("insert", relation.name.clone(), None, Some(text(new)))
            }
            Change::Update { relation, old, new } => (
                "update",
                relation.name.clone(),
                old.as_ref().map(|(k, t)| (*k, text(t))),
                Some(text(new)),
            ),
            Change::Delete { relation, old } => (
                "delete",
                relation.name.clone(),
                Some((old.0, text(&old.1))),
                None,
            ),
            Change::Truncate { relations, .. } => (
                "truncate",
                relations
                    .iter()
                    .map(|r| r.name.clone())
                    .collect::<Vec<_>>()
                    .join(","),
                None,
                None,
            ),
        })
        .collect()
}

/// The five transactions each table receives, and what must decode from them.
fn expected(table: &str, full: bool) -> Vec<Vec<Flat>> {
    let t = table.to_string();
    let one = row_one();
    let mut one_changed = one.clone();
    one_changed[5] = Some("changed".into());
    // The update leaves the TOASTed column alone: pgoutput sends it as
    // "unchanged"; with a FULL old row the decoder restores it.
    let mut one_changed_new = one_changed.clone();
    if !full {
        one_changed_new[19] = Some(TOAST.into());
    }
    let key_only = |id: &str| (OldTupleKind::Key, nulls_with_id(id));
    vec![
        vec![
            ("insert", t.clone(), None, Some(one.clone())),
            ("insert", t.clone(), None, Some(nulls_with_id("2"))),
        ],
        vec![(
            "update",
            t.clone(),
            full.then(|| (OldTupleKind::Full, one.clone())),
            Some(one_changed_new),
        )],
        vec![(
            "update",
            t.clone(),
            Some(if full {
                (OldTupleKind::Full, nulls_with_id("2"))
            } else {
                key_only("2")
            }),
            Some(nulls_with_id("3")),
        )],
        vec![(
            "delete",
            t.clone(),
            Some(if full {
                (OldTupleKind::Full, one_changed)
            } else {
                key_only("1")
            }),
            None,
        )],
        vec![("truncate", t.clone(), None, None)],
    ]
}

fn write_workload(client: &mut postgres::Client, table: &str) {
    // Each statement is sent on its own: a multi-statement simple query runs
    // as one implicit transaction, and the test needs five separate commits.
    let statements = [
        format!(
            "BEGIN; INSERT INTO {table} VALUES ({INSERT_VALUES}); \
             INSERT INTO {table} (id) VALUES (2); COMMIT;"
        ),
        format!("UPDATE {table} SET c_text = 'changed' WHERE id = 1"),
        format!("UPDATE {table} SET id = 3 WHERE id = 2"),
        format!("DELETE FROM {table} WHERE id = 1"),
        format!("TRUNCATE {table}"),
    ];
    for statement in &statements {
        client.batch_execute(statement).unwrap();
    }
}

#[test]
fn replication_decode_round_trip() {
    let db = database("decode");
    let mut client = db.client();
    client
        .batch_execute(&format!(
            "CREATE TYPE mood AS ENUM ('sad', 'happy');
             CREATE TABLE t_default ({COLUMNS});
             CREATE TABLE t_full ({COLUMNS});
             -- stored out of line and uncompressed: a real TOAST pointer.
             ALTER TABLE t_default ALTER COLUMN c_big SET STORAGE EXTERNAL;
             ALTER TABLE t_full ALTER COLUMN c_big SET STORAGE EXTERNAL;"
        ))
        .unwrap();
    let rig = IngestRig::start(&db, 1);
    // t_full goes through the publication manager, which makes its replica
    // identity FULL; t_default keeps the primary key as identity.
    rig.follow(&db, &["t_full"], 0);
    client
        .batch_execute(&format!(
            "ALTER PUBLICATION {} ADD TABLE t_default",
            rig.publication_name
        ))
        .unwrap();
    let oid: u32 = client
        .query_one("SELECT 't_default'::regclass::oid", &[])
        .unwrap()
        .get(0);
    rig.routes.subscribe(oid, 0);

    write_workload(&mut client, "t_default");
    write_workload(&mut client, "t_full");

    let transactions = rig.wait_transactions(0, 10);
    assert_eq!(
        transactions.len(),
        10,
        "exactly the ten committed transactions"
    );
    let mut want = expected("t_default", false);
    want.extend(expected("t_full", true));
    for (i, (got, want)) in transactions.iter().zip(&want).enumerate() {
        assert_eq!(&flatten(got), want, "transaction {i}");
    }
    for pair in transactions.windows(2) {
        assert!(
            pair[0].commit_lsn < pair[1].commit_lsn,
            "commit LSNs increase"
        );
        assert!(pair[0].end_lsn <= pair[1].commit_lsn);
    }
    for t in &transactions {
        assert!(t.commit_lsn < t.end_lsn);
        assert!(t.xid > 0);
    }

    // Relation metadata as Postgres described it.
    let Change::Insert { relation, .. } = &transactions[0].changes[0] else {
        panic!("first change is an insert");
    };
    assert_eq!(relation.schema, "public");
    assert_eq!(relation.replica_identity, ReplicaIdentity::Default);
    assert_eq!(relation.columns.len(), 20);
    assert_eq!(relation.columns[0].name, "id");
    assert!(relation.columns[0].is_key);
    assert!(!relation.columns[1].is_key);
    let oids: Vec<u32> = relation.columns.iter().map(|c| c.type_oid).collect();
    assert_eq!(
        &oids[..18],
        &[
            23, 21, 20, 1700, 701, 25, 1043, 16, 2950, 1082, 1114, 1184, 1186, 3802, 114, 17, 1007,
            1009
        ]
    );
    assert_eq!(
        relation.columns[6].type_modifier,
        10 + 4,
        "varchar(10) typmod"
    );
    let Change::Insert { relation, .. } = &transactions[5].changes[0] else {
        panic!("first change of t_full is an insert");
    };
    assert_eq!(relation.replica_identity, ReplicaIdentity::Full);
    assert!(
        relation.columns.iter().all(|c| c.is_key),
        "FULL identity keys every column"
    );
    rig.stop();
}
