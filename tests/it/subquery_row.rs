//! The row form of subqueries on the wire (issue 17, slice 2), real
//! Postgres and the real server: `(a, b) IN (SELECT x, y FROM t ..)`
//! tagged with one hash per row (Electric's `hash_together`: each outer
//! column's name and namespaced value, in the order written), the move-in
//! splice and the move-out patterns of pairs, `NOT IN` with rows half
//! NULL (the patterns of the rows a pair decides besides its equals, a
//! pair with a NULL entering the set invalidating the shape), the row
//! form under `AND`/`OR`, and every stream folded by a tag tracker ending
//! equal to Postgres.

use serde_json::{json, Value};

use crate::harness::{database, TestDb};
use crate::server::Server;
use crate::tag_fold::{ops, patterns, pg_rows, snapshot_end, value_hash, Stream};

/// Electric's tag hash of an `(org_id, project_id)` pair for this shape,
/// computed by Postgres the way Electric's snapshot SQL does: md5 of the
/// stack id, the handle, and per column `<name>:` then `v:<text>` or
/// `NULL`.
fn pair_hash(db: &TestDb, handle: &str, org: Option<&str>, project: Option<&str>) -> String {
    db.client()
        .query_one(
            "SELECT md5('single_stack' || $1
                || 'org_id:' || CASE WHEN $2::text IS NULL THEN 'NULL' ELSE 'v:' || $2 END
                || 'project_id:' || CASE WHEN $3::text IS NULL THEN 'NULL' ELSE 'v:' || $3 END)",
            &[&handle, &org, &project],
        )
        .unwrap()
        .get(0)
}

/// Docs of (org, project) pairs, `g % 2` and `g % 3`, and user 1 a member
/// of (0, 0) and (1, 1), user 2 of (0, 1).
fn membership_db(name: &str) -> TestDb {
    let db = database(name);
    db.client()
        .batch_execute(
            "CREATE TABLE docs (id int PRIMARY KEY, org_id int, project_id int, title text, archived bool NOT NULL DEFAULT false);
             CREATE TABLE members (user_id int, org_id int, project_id int, PRIMARY KEY (user_id, org_id, project_id));
             INSERT INTO docs (id, org_id, project_id, title) SELECT g, g % 2, g % 3, 'doc ' || g FROM generate_series(1, 12) g;
             INSERT INTO members VALUES (1, 0, 0), (1, 1, 1), (2, 0, 1);",
        )
        .unwrap();
    db
}

const MEMBERSHIP: &str = "table=docs&where=(org_id%2C%20project_id)%20IN%20(SELECT%20org_id%2C%20project_id%20FROM%20members%20WHERE%20user_id%20%3D%20%241)&params%5B1%5D=1";

const PG_MEMBERSHIP: &str = "SELECT id::text, org_id::text, project_id::text, title FROM docs WHERE (org_id, project_id) IN (SELECT org_id, project_id FROM members WHERE user_id = 1)";

const COLUMNS: [&str; 4] = ["id", "org_id", "project_id", "title"];

#[test]
fn membership_pairs_move_in_and_out() {
    let db = membership_db("subquery_row_membership");
    let server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "1000")]);
    let mut stream = Stream::new(MEMBERSHIP);
    stream.until(&server, 0, |_| true);
    let handle = stream.handle.clone().unwrap();
    let h = |org: &str, project: &str| pair_hash(&db, &handle, Some(org), Some(project));

    // Snapshot: docs of (0, 0) and (1, 1), each tagged with its pair.
    let rows: Vec<&Value> = stream
        .messages
        .iter()
        .filter(|m| m["headers"]["operation"] == "insert")
        .collect();
    assert_eq!(rows.len(), 4, "{:#?}", stream.messages);
    for row in &rows {
        let org = row["value"]["org_id"].as_str().unwrap();
        let project = row["value"]["project_id"].as_str().unwrap();
        assert_eq!(org, project, "{row}");
        assert_eq!(row["headers"]["tags"], json!([h(org, project)]));
        assert_eq!(row["headers"]["active_conditions"], json!([true]));
    }
    assert_eq!(stream.view(&COLUMNS), pg_rows(&db, PG_MEMBERSHIP));

    // A new pair: the move-in event with its pattern, the pair's docs as
    // tagged move-in inserts, then snapshot-end. Same org, other
    // project, and same project, other org, are other pairs: not moved.
    let from = stream.messages.len();
    db.client()
        .batch_execute("INSERT INTO members VALUES (1, 0, 2)")
        .unwrap();
    stream.until(&server, from, snapshot_end);
    let got = &stream.messages[from..];
    assert_eq!(got[0]["headers"]["event"], "move-in", "{:?}", ops(got));
    assert_eq!(patterns(&got[0]), [(0, h("0", "2"))]);
    assert_eq!(got[0]["headers"]["txids"].as_array().unwrap().len(), 1);
    let mut moved: Vec<&str> = got[1..got.len() - 1]
        .iter()
        .map(|m| {
            assert_eq!(m["headers"]["operation"], "insert");
            assert_eq!(m["headers"]["is_move_in"], true);
            assert_eq!(m["headers"]["tags"], json!([h("0", "2")]));
            assert_eq!(m["headers"]["active_conditions"], json!([true]));
            m["value"]["id"].as_str().unwrap()
        })
        .collect();
    moved.sort();
    assert_eq!(moved, ["2", "8"], "docs with g % 2 = 0 and g % 3 = 2");
    assert_eq!(got.last().unwrap()["headers"]["control"], "snapshot-end");
    assert_eq!(stream.view(&COLUMNS), pg_rows(&db, PG_MEMBERSHIP));

    // A pair leaving: one move-out event with its pattern, no deletes.
    let from = stream.messages.len();
    db.client()
        .batch_execute("DELETE FROM members WHERE user_id = 1 AND org_id = 0 AND project_id = 0")
        .unwrap();
    stream.until(&server, from, |m| !m.is_empty());
    let got = &stream.messages[from..];
    assert_eq!(ops(got), ["move-out"], "{got:#?}");
    assert_eq!(patterns(&got[0]), [(0, h("0", "0"))]);
    assert_eq!(stream.view(&COLUMNS), pg_rows(&db, PG_MEMBERSHIP));

    // A membership changing one column of its pair: the old pair moves
    // out (first), the new one in.
    let from = stream.messages.len();
    db.client()
        .batch_execute(
            "UPDATE members SET org_id = 0 WHERE user_id = 1 AND org_id = 1 AND project_id = 1",
        )
        .unwrap();
    stream.until(&server, from, snapshot_end);
    let got = &stream.messages[from..];
    assert_eq!(got[0]["headers"]["event"], "move-out", "{:?}", ops(got));
    assert_eq!(patterns(&got[0]), [(0, h("1", "1"))]);
    assert_eq!(got[1]["headers"]["event"], "move-in", "{:?}", ops(got));
    assert_eq!(patterns(&got[1]), [(0, h("0", "1"))]);
    assert_eq!(stream.view(&COLUMNS), pg_rows(&db, PG_MEMBERSHIP));

    // A doc moving between held pairs: an update whose removed_tags are
    // the old pair's.
    let from = stream.messages.len();
    db.client()
        .batch_execute("UPDATE docs SET project_id = 1 WHERE id = 2")
        .unwrap();
    stream.until(&server, from, |m| !m.is_empty());
    let update = &stream.messages[from];
    assert_eq!(update["headers"]["operation"], "update", "{update}");
    assert_eq!(update["headers"]["tags"], json!([h("0", "1")]));
    assert_eq!(update["headers"]["removed_tags"], json!([h("0", "2")]));

    // Churn: pairs and docs, interleaved and in shared transactions; the
    // folded stream ends equal to Postgres.
    for sql in [
        "INSERT INTO members VALUES (1, 1, 0), (2, 1, 2)",
        "UPDATE docs SET org_id = 1 WHERE id IN (4, 6)",
        "BEGIN; DELETE FROM members WHERE user_id = 1 AND org_id = 0 AND project_id = 2; INSERT INTO docs VALUES (100, 0, 2, 'late'); COMMIT",
        "BEGIN; INSERT INTO docs VALUES (101, 1, 2, 'with its pair'); INSERT INTO members VALUES (1, 1, 2); COMMIT",
        "UPDATE members SET project_id = 2 WHERE user_id = 1 AND org_id = 0 AND project_id = 1",
        "UPDATE docs SET title = 'renamed' WHERE org_id = 1",
        "BEGIN; DELETE FROM members WHERE user_id = 1 AND org_id = 1 AND project_id = 0; INSERT INTO members VALUES (1, 1, 0); COMMIT",
        "UPDATE docs SET org_id = NULL WHERE id = 3",
        "DELETE FROM docs WHERE id = 1",
    ] {
        db.client().batch_execute(sql).unwrap();
    }
    stream.converge(&server, &COLUMNS, &pg_rows(&db, PG_MEMBERSHIP));
}

#[test]
fn not_in_pairs_half_null() {
    let db = database("subquery_row_not_in");
    db.client()
        .batch_execute(
            "CREATE TABLE docs (id int PRIMARY KEY, org_id int, project_id int, title text);
             CREATE TABLE blocked (id serial PRIMARY KEY, org_id int, project_id int);
             INSERT INTO docs SELECT g, g % 2, g % 3, 'doc ' || g FROM generate_series(1, 6) g;
             INSERT INTO docs VALUES (13, NULL, 1, 'no org'), (14, 1, NULL, 'no project'), (15, NULL, NULL, 'neither');
             INSERT INTO blocked (org_id, project_id) VALUES (0, 0);",
        )
        .unwrap();
    let server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "1000")]);
    let definition = "table=docs&where=(org_id%2C%20project_id)%20NOT%20IN%20(SELECT%20org_id%2C%20project_id%20FROM%20blocked)";
    let pg = "SELECT id::text, org_id::text, project_id::text, title FROM docs WHERE (org_id, project_id) NOT IN (SELECT org_id, project_id FROM blocked)";
    let mut stream = Stream::new(definition);
    stream.converge(&server, &COLUMNS, &pg_rows(&db, pg));
    let handle = stream.handle.clone().unwrap();
    let h = |org: Option<&str>, project: Option<&str>| pair_hash(&db, &handle, org, project);
    let sorted = |mut p: Vec<(usize, String)>| {
        p.sort();
        p
    };
    // (NULL, 1) and (1, NULL) surely differ from (0, 0): in the shape,
    // tagged with their NULLs; (NULL, NULL) does not: out.
    let no_org = stream
        .rows
        .get("\"public\".\"docs\"/\"13\"")
        .expect("doc 13");
    assert_eq!(no_org.tags, [h(None, Some("1"))]);
    assert_eq!(no_org.active, [true]);
    assert!(!stream.rows.contains_key("\"public\".\"docs\"/\"15\""));

    // (1, 1) entering the set takes out its equals and the rows half NULL
    // it leaves undecided, (NULL, 1) and (1, NULL): one pattern each.
    let from = stream.messages.len();
    db.client()
        .batch_execute("INSERT INTO blocked (org_id, project_id) VALUES (1, 1)")
        .unwrap();
    stream.until(&server, from, |m| !m.is_empty());
    let got = &stream.messages[from..];
    assert_eq!(ops(got), ["move-out"], "{got:#?}");
    assert_eq!(
        sorted(patterns(&got[0])),
        sorted(vec![
            (0, h(Some("1"), Some("1"))),
            (0, h(None, Some("1"))),
            (0, h(Some("1"), None)),
        ])
    );
    assert_eq!(stream.view(&COLUMNS), pg_rows(&db, pg));
    assert!(!stream.rows.contains_key("\"public\".\"docs\"/\"14\""));

    // (1, 1) leaving brings them back: rows equal to it, and rows half
    // NULL it alone kept out, in one move-in.
    let from = stream.messages.len();
    db.client()
        .batch_execute("DELETE FROM blocked WHERE org_id = 1")
        .unwrap();
    stream.until(&server, from, snapshot_end);
    let got = &stream.messages[from..];
    assert_eq!(got[0]["headers"]["event"], "move-in", "{:?}", ops(got));
    let mut ids: Vec<&str> = got
        .iter()
        .filter_map(|m| m["value"]["id"].as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, ["1", "13", "14"]);
    assert_eq!(stream.view(&COLUMNS), pg_rows(&db, pg));

    // The set emptying brings in (NULL, NULL) too: `NOT IN` nothing holds.
    let from = stream.messages.len();
    db.client().batch_execute("DELETE FROM blocked").unwrap();
    stream.until(&server, from, snapshot_end);
    let got = &stream.messages[from..];
    assert!(
        patterns(&got[0]).contains(&(0, h(None, None))),
        "{:#?}",
        got[0]
    );
    assert!(stream.rows.contains_key("\"public\".\"docs\"/\"15\""));
    assert_eq!(stream.view(&COLUMNS), pg_rows(&db, pg));

    for sql in [
        "INSERT INTO blocked (org_id, project_id) VALUES (0, 1), (1, 2)",
        "INSERT INTO docs VALUES (20, 0, 1, 'blocked'), (21, NULL, 2, 'half'), (22, 1, 0, 'open')",
        "BEGIN; DELETE FROM blocked WHERE org_id = 0; INSERT INTO blocked (org_id, project_id) VALUES (1, 0); COMMIT",
        "UPDATE docs SET org_id = 0 WHERE id = 22",
    ] {
        db.client().batch_execute(sql).unwrap();
    }
    stream.converge(&server, &COLUMNS, &pg_rows(&db, pg));

    // A pair with a NULL entering the set makes `NOT IN` unknown for rows
    // no pattern names (every (1, x)): the shape is invalidated (409),
    // never left wrong.
    db.client()
        .batch_execute("INSERT INTO blocked (org_id, project_id) VALUES (1, NULL)")
        .unwrap();
    crate::harness::wait_for(
        "the shape's 409",
        std::time::Duration::from_secs(30),
        || (stream.status(&server) == 409).then_some(()),
    );
    let mut fresh = Stream::new(definition);
    fresh.converge(&server, &COLUMNS, &pg_rows(&db, pg));
}

#[test]
fn pairs_under_and_or() {
    let db = membership_db("subquery_row_and_or");
    db.client()
        .batch_execute("UPDATE docs SET title = 'pinned' WHERE id IN (5, 6); UPDATE docs SET archived = true WHERE id = 1")
        .unwrap();
    let server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "1000")]);
    // ((org, project) IN (SQ $2) AND NOT archived) OR title = $1: two
    // disjuncts, positions 0 (the pair), 1 (archived), 2 (title).
    let definition = "table=docs&where=((org_id%2C%20project_id)%20IN%20(SELECT%20org_id%2C%20project_id%20FROM%20members%20WHERE%20user_id%20%3D%20%242)%20AND%20NOT%20archived)%20OR%20title%20%3D%20%241&params%5B1%5D=pinned&params%5B2%5D=1";
    let pg = "SELECT id::text, org_id::text, project_id::text, title FROM docs WHERE ((org_id, project_id) IN (SELECT org_id, project_id FROM members WHERE user_id = 1) AND NOT archived) OR title = 'pinned'";
    let mut stream = Stream::new(definition);
    stream.converge(&server, &COLUMNS, &pg_rows(&db, pg));
    let handle = stream.handle.clone().unwrap();
    let h = |org: &str, project: &str| pair_hash(&db, &handle, Some(org), Some(project));
    // Doc 7 is (1, 1): in through its pair.
    let doc7 = stream.rows.get("\"public\".\"docs\"/\"7\"").expect("doc 7");
    assert_eq!(
        doc7.tags,
        [format!("{}/1/", h("1", "1")), "//1".to_string()]
    );
    assert_eq!(doc7.active, [true, true, false]);
    // Doc 5 is (1, 2), pinned: in through its title only.
    let doc5 = stream.rows.get("\"public\".\"docs\"/\"5\"").expect("doc 5");
    assert_eq!(doc5.active, [false, true, true]);

    // (1, 2) moving in: doc 5 is held already (the exclusion), so only
    // doc 11 comes, and the event activates doc 5's position.
    let from = stream.messages.len();
    db.client()
        .batch_execute("INSERT INTO members VALUES (1, 1, 2)")
        .unwrap();
    stream.until(&server, from, snapshot_end);
    let got = &stream.messages[from..];
    let ids: Vec<&str> = got
        .iter()
        .filter_map(|m| m["value"]["id"].as_str())
        .collect();
    assert_eq!(ids, ["11"], "{:?}", ops(got));
    assert_eq!(patterns(&got[0]), [(0, h("1", "2"))]);
    assert_eq!(
        stream.rows["\"public\".\"docs\"/\"5\""].active,
        [true, true, true]
    );
    assert_eq!(stream.view(&COLUMNS), pg_rows(&db, pg));

    // (1, 2) moving out keeps doc 5 (pinned), drops doc 11.
    let from = stream.messages.len();
    db.client()
        .batch_execute("DELETE FROM members WHERE user_id = 1 AND org_id = 1 AND project_id = 2")
        .unwrap();
    stream.until(&server, from, |m| !m.is_empty());
    assert_eq!(ops(&stream.messages[from..]), ["move-out"]);
    assert!(stream.rows.contains_key("\"public\".\"docs\"/\"5\""));
    assert!(!stream.rows.contains_key("\"public\".\"docs\"/\"11\""));
    assert_eq!(stream.view(&COLUMNS), pg_rows(&db, pg));

    for sql in [
        "UPDATE docs SET archived = true WHERE id = 7",
        "UPDATE docs SET archived = false WHERE id IN (1, 7)",
        "INSERT INTO members VALUES (1, 1, 2), (1, 0, 2)",
        "UPDATE docs SET title = 'plain' WHERE id = 5",
        "BEGIN; DELETE FROM members WHERE user_id = 1; INSERT INTO members VALUES (1, 0, 1); COMMIT",
        "UPDATE docs SET title = 'pinned' WHERE id = 9",
    ] {
        db.client().batch_execute(sql).unwrap();
    }
    stream.converge(&server, &COLUMNS, &pg_rows(&db, pg));
}

/// The same NULL rule for a single column: a NULL row is in a `NOT IN`
/// shape only while the set is empty, so the first value entering takes
/// it out by its NULL pattern, and the set emptying brings it back. Under
/// `IN`, a pair with a NULL equals no row: its move activates nothing.
#[test]
fn null_rows_follow_sql() {
    let db = database("subquery_row_nulls");
    db.client()
        .batch_execute(
            "CREATE TABLE docs (id int PRIMARY KEY, org_id int, project_id int, title text);
             CREATE TABLE blocked (id serial PRIMARY KEY, project_id int);
             CREATE TABLE grants (id serial PRIMARY KEY, org_id int, project_id int);
             INSERT INTO docs VALUES (1, 0, 1, 'a'), (2, 1, NULL, 'pinned'), (3, 1, 2, 'b'), (4, NULL, NULL, 'c');",
        )
        .unwrap();
    let server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "1000")]);
    let not_in = "table=docs&where=project_id%20NOT%20IN%20(SELECT%20project_id%20FROM%20blocked)";
    let pg_not_in = "SELECT id::text, org_id::text, project_id::text, title FROM docs WHERE project_id NOT IN (SELECT project_id FROM blocked)";
    let mut stream = Stream::new(not_in);
    stream.converge(&server, &COLUMNS, &pg_rows(&db, pg_not_in));
    assert_eq!(stream.rows.len(), 4, "NOT IN nothing holds for NULLs too");
    let handle = stream.handle.clone().unwrap();
    let h = |v: Option<&str>| value_hash(&db, &handle, v);
    let from = stream.messages.len();
    db.client()
        .batch_execute("INSERT INTO blocked (project_id) VALUES (1)")
        .unwrap();
    stream.until(&server, from, |m| !m.is_empty());
    let got = &stream.messages[from..];
    assert_eq!(ops(got), ["move-out"], "{got:#?}");
    let mut expected = vec![(0, h(Some("1"))), (0, h(None))];
    expected.sort();
    assert_eq!(patterns(&got[0]), expected);
    assert_eq!(stream.view(&COLUMNS), pg_rows(&db, pg_not_in));
    let from = stream.messages.len();
    db.client().batch_execute("DELETE FROM blocked").unwrap();
    stream.until(&server, from, snapshot_end);
    assert!(patterns(&stream.messages[from]).contains(&(0, h(None))));
    assert_eq!(stream.view(&COLUMNS), pg_rows(&db, pg_not_in));
    assert_eq!(stream.rows.len(), 4);

    // (org, project) IN grants OR title = 'pinned': doc 2, (1, NULL), is
    // in through its title only; the pair (1, NULL) arriving does not
    // make its pair position active (NULL = NULL is unknown).
    let pairs = "table=docs&where=(org_id%2C%20project_id)%20IN%20(SELECT%20org_id%2C%20project_id%20FROM%20grants)%20OR%20title%20%3D%20%27pinned%27";
    let pg_pairs = "SELECT id::text, org_id::text, project_id::text, title FROM docs WHERE (org_id, project_id) IN (SELECT org_id, project_id FROM grants) OR title = 'pinned'";
    let mut stream = Stream::new(pairs);
    stream.converge(&server, &COLUMNS, &pg_rows(&db, pg_pairs));
    let pinned = "\"public\".\"docs\"/\"2\"";
    assert_eq!(stream.rows[pinned].active, [false, true]);
    let from = stream.messages.len();
    db.client()
        .batch_execute("INSERT INTO grants (org_id, project_id) VALUES (1, NULL)")
        .unwrap();
    stream.until(&server, from, |m| !m.is_empty());
    let got = &stream.messages[from..];
    assert_eq!(ops(got), ["move-in"], "no row equals a pair with a NULL");
    assert!(patterns(&got[0]).is_empty(), "{:#?}", got[0]);
    assert_eq!(stream.rows[pinned].active, [false, true]);
    for sql in [
        "UPDATE docs SET title = 'unpinned' WHERE id = 2",
        "INSERT INTO grants (org_id, project_id) VALUES (1, 2)",
        "DELETE FROM grants WHERE project_id IS NULL",
    ] {
        db.client().batch_execute(sql).unwrap();
    }
    stream.converge(&server, &COLUMNS, &pg_rows(&db, pg_pairs));
}
