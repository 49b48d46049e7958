//! Subquery shapes on the wire (issue 17, slice 1), real Postgres and the
//! real server: tags and `active_conditions` on snapshot rows and changes,
//! the move-in splice (`move-in` event, tagged inserts, `snapshot-end`),
//! move-outs as one `move-out` event with patterns (no per-row deletes),
//! `NOT IN`, `AND`/`OR`, parameters inside the subquery, and a membership
//! scenario whose stream, folded by a client tag tracker (Electric's
//! `TagTracker` rules), ends equal to Postgres.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{database, TestDb};
use crate::server::Server;
use crate::tag_fold::{ops, pg_rows, value_hash, Stream};

fn membership_db(name: &str) -> TestDb {
    let db = database(name);
    db.client()
        .batch_execute(
            "CREATE TABLE tasks (id int PRIMARY KEY, project_id int, title text, done bool NOT NULL DEFAULT false, owner text);
             CREATE TABLE members (user_id int, project_id int, PRIMARY KEY (user_id, project_id));
             INSERT INTO tasks (id, project_id, title) SELECT g, g % 4, 'task ' || g FROM generate_series(1, 12) g;
             INSERT INTO members VALUES (1, 1), (2, 2);",
        )
        .unwrap();
    db
}

const MEMBERSHIP: &str = "table=tasks&where=project_id%20IN%20(SELECT%20project_id%20FROM%20members%20WHERE%20user_id%20%3D%20%241)&params%5B1%5D=1";

const PG_MEMBERSHIP: &str = "SELECT id::text, project_id::text, title FROM tasks WHERE project_id IN (SELECT project_id FROM members WHERE user_id = 1)";

#[test]
fn membership_tags_moves_and_fold() {
    let db = membership_db("subquery_wire_membership");
    let server = Server::start(
        &db,
        &[
            ("ELECTRIC_LONG_POLL_TIMEOUT", "1000"),
            ("ELECTRIC_LOG_LEVEL", "info"),
        ],
    );
    let mut stream = Stream::new(MEMBERSHIP);
    stream.until(&server, 0, |_| true);
    let handle = stream.handle.clone().unwrap();
    let h = |v: &str| value_hash(&db, &handle, Some(v));
    let columns = ["id", "project_id", "title"];

    // Snapshot: the member's project's rows, each tagged with its value.
    let rows: Vec<&Value> = stream
        .messages
        .iter()
        .filter(|m| m["headers"]["operation"] == "insert")
        .collect();
    assert_eq!(rows.len(), 3, "{:#?}", stream.messages);
    for row in &rows {
        assert_eq!(row["value"]["project_id"], "1");
        assert_eq!(row["headers"]["tags"], serde_json::json!([h("1")]));
        assert_eq!(
            row["headers"]["active_conditions"],
            serde_json::json!([true])
        );
    }
    assert_eq!(stream.view(&columns), pg_rows(&db, PG_MEMBERSHIP));

    // A change on the outer table carries its tags too.
    let from = stream.messages.len();
    db.client()
        .batch_execute("INSERT INTO tasks (id, project_id, title) VALUES (100, 1, 'new')")
        .unwrap();
    stream.until(&server, from, |m| !m.is_empty());
    let insert = &stream.messages[from];
    assert_eq!(insert["headers"]["operation"], "insert");
    assert_eq!(insert["headers"]["tags"], serde_json::json!([h("1")]));
    assert_eq!(
        insert["headers"]["active_conditions"],
        serde_json::json!([true])
    );
    // Not in the shape: nothing.
    db.client()
        .batch_execute("INSERT INTO tasks (id, project_id, title) VALUES (101, 3, 'other')")
        .unwrap();

    // Membership insert: the move-in event, the project's rows as tagged
    // move-in inserts, then snapshot-end.
    let from = stream.messages.len();
    db.client()
        .batch_execute("INSERT INTO members VALUES (1, 2)")
        .unwrap();
    stream.until(&server, from, |m| {
        m.iter().any(|m| m["headers"]["control"] == "snapshot-end")
    });
    let got = &stream.messages[from..];
    assert_eq!(got.len(), 5, "event, 3 rows, snapshot-end: {:?}", ops(got));
    assert_eq!(got[0]["headers"]["event"], "move-in");
    assert_eq!(
        got[0]["headers"]["patterns"],
        serde_json::json!([{"pos": 0, "value": h("2")}])
    );
    assert!(got[0]["headers"]["txids"].as_array().unwrap().len() == 1);
    let mut moved: Vec<String> = got[1..got.len() - 1]
        .iter()
        .map(|m| {
            assert_eq!(m["headers"]["operation"], "insert");
            assert_eq!(m["headers"]["is_move_in"], true);
            assert_eq!(m["headers"]["tags"], serde_json::json!([h("2")]));
            assert_eq!(m["headers"]["active_conditions"], serde_json::json!([true]));
            m["value"]["id"].as_str().unwrap().to_string()
        })
        .collect();
    moved.sort();
    assert_eq!(moved, ["10", "2", "6"]);
    let end = &got[got.len() - 1]["headers"];
    assert_eq!(end["control"], "snapshot-end");
    assert!(end["xmin"].is_string() && end["xmax"].is_string() && end["xip_list"].is_array());
    assert_eq!(stream.view(&columns), pg_rows(&db, PG_MEMBERSHIP));

    // Membership delete: one move-out event with the value's pattern, and
    // no per-row deletes.
    let from = stream.messages.len();
    db.client()
        .batch_execute("DELETE FROM members WHERE user_id = 1 AND project_id = 1")
        .unwrap();
    stream.until(&server, from, |m| !m.is_empty());
    let got = &stream.messages[from..];
    assert_eq!(ops(got), ["move-out"], "{got:#?}");
    assert_eq!(
        got[0]["headers"]["patterns"],
        serde_json::json!([{"pos": 0, "value": h("1")}])
    );
    assert_eq!(got[0]["headers"]["txids"].as_array().unwrap().len(), 1);
    assert_eq!(stream.view(&columns), pg_rows(&db, PG_MEMBERSHIP));

    // An update moving a row between values: out of the shape is a delete;
    // into it an insert; within it an update with removed_tags.
    db.client()
        .batch_execute(
            "INSERT INTO members VALUES (1, 3);
             UPDATE tasks SET project_id = 0 WHERE id = 2;",
        )
        .unwrap();
    stream.converge(&server, &columns, &pg_rows(&db, PG_MEMBERSHIP));
    let from = stream.messages.len();
    db.client()
        .batch_execute("UPDATE tasks SET project_id = 3 WHERE id = 6")
        .unwrap();
    stream.until(&server, from, |m| !m.is_empty());
    let update = &stream.messages[from];
    assert_eq!(update["headers"]["operation"], "update", "{update}");
    assert_eq!(update["headers"]["tags"], serde_json::json!([h("3")]));
    assert_eq!(
        update["headers"]["removed_tags"],
        serde_json::json!([h("2")])
    );

    // A membership and a row of its project in one transaction: the row
    // arrives once, through the move-in.
    let from = stream.messages.len();
    db.client()
        .batch_execute(
            "BEGIN;
             INSERT INTO tasks (id, project_id, title) VALUES (200, 7, 'seven');
             INSERT INTO members VALUES (1, 7);
             COMMIT;",
        )
        .unwrap();
    stream.until(&server, from, |m| {
        m.iter().any(|m| m["headers"]["control"] == "snapshot-end")
    });
    let inserts: Vec<&Value> = stream.messages[from..]
        .iter()
        .filter(|m| m["value"]["id"] == "200")
        .collect();
    assert_eq!(inserts.len(), 1, "{:#?}", &stream.messages[from..]);
    assert_eq!(inserts[0]["headers"]["is_move_in"], true);

    // Churn: memberships and rows, interleaved and in shared transactions;
    // the folded stream ends equal to Postgres.
    let churn = [
        "INSERT INTO members VALUES (1, 0)",
        "UPDATE tasks SET project_id = 1 WHERE id IN (3, 7)",
        "BEGIN; DELETE FROM members WHERE user_id = 1 AND project_id = 2; INSERT INTO tasks (id, project_id, title) VALUES (300, 2, 'late'); COMMIT",
        "INSERT INTO members VALUES (1, 1), (1, 2)",
        "DELETE FROM members WHERE user_id = 1 AND project_id = 3",
        "UPDATE members SET project_id = 3 WHERE user_id = 1 AND project_id = 0",
        "UPDATE tasks SET title = 'renamed' WHERE project_id = 3",
        "BEGIN; DELETE FROM members WHERE user_id = 1 AND project_id = 1; INSERT INTO members VALUES (1, 1); COMMIT",
        "INSERT INTO members VALUES (2, 3)",
        "DELETE FROM tasks WHERE id = 1",
    ];
    for sql in churn {
        db.client().batch_execute(sql).unwrap();
    }
    stream.converge(&server, &columns, &pg_rows(&db, PG_MEMBERSHIP));

    // A graceful restart resumes the shape with its handle: the same
    // stream carries on, and later moves (in and out) still fold to
    // Postgres.
    let mut server = server;
    let messages_before = stream.messages.len();
    server.graceful_restart();
    assert!(
        plain_log(&server).contains("subquery_resumed=1"),
        "{}",
        server.log_tail()
    );
    stream.poll(&server);
    assert_eq!(stream.handle.as_deref(), Some(handle.as_str()));
    db.client()
        .batch_execute(
            "DELETE FROM members WHERE user_id = 1 AND project_id = 1;
             INSERT INTO members VALUES (1, 0);",
        )
        .unwrap();
    stream.converge(&server, &columns, &pg_rows(&db, PG_MEMBERSHIP));
    assert_eq!(stream.handle.as_deref(), Some(handle.as_str()));
    let after: Vec<String> = ops(&stream.messages[messages_before..]);
    assert!(
        after.iter().any(|o| o == "move-out") && after.iter().any(|o| o == "move-in"),
        "moves after the restart: {after:?}"
    );
    // And through a rolling deploy (the old instance stops cleanly).
    db.client()
        .batch_execute("INSERT INTO members VALUES (1, 1)")
        .unwrap();
    stream.converge(&server, &columns, &pg_rows(&db, PG_MEMBERSHIP));
    server.rolling_restart();
    db.client()
        .batch_execute(
            "DELETE FROM members WHERE user_id = 1 AND project_id = 2;
             UPDATE tasks SET title = 'after rolling' WHERE project_id = 1;",
        )
        .unwrap();
    stream.converge(&server, &columns, &pg_rows(&db, PG_MEMBERSHIP));
    assert_eq!(stream.handle.as_deref(), Some(handle.as_str()));

    // A SIGKILL resumes it too: its client views are durable, its
    // memberships are read again; the same stream goes on through moves
    // made while it was down and after.
    db.client()
        .batch_execute("DELETE FROM members WHERE user_id = 1 AND project_id = 1")
        .unwrap();
    stream.converge(&server, &columns, &pg_rows(&db, PG_MEMBERSHIP));
    server.kill();
    db.client()
        .batch_execute("INSERT INTO members VALUES (1, 1); DELETE FROM members WHERE user_id = 1 AND project_id = 3")
        .unwrap();
    server.restart();
    assert!(
        plain_log(&server).contains("subquery_reseeding=1"),
        "{}",
        server.log_tail()
    );
    stream.converge(&server, &columns, &pg_rows(&db, PG_MEMBERSHIP));
    assert_eq!(stream.handle.as_deref(), Some(handle.as_str()));
    db.client()
        .batch_execute("INSERT INTO members VALUES (1, 3); UPDATE tasks SET title = 'after kill' WHERE project_id = 1")
        .unwrap();
    stream.converge(&server, &columns, &pg_rows(&db, PG_MEMBERSHIP));
    assert_eq!(stream.handle.as_deref(), Some(handle.as_str()));
    // And a clean stop after that keeps it at rest again.
    server.graceful_restart();
    db.client()
        .batch_execute("DELETE FROM members WHERE user_id = 1 AND project_id = 1")
        .unwrap();
    stream.converge(&server, &columns, &pg_rows(&db, PG_MEMBERSHIP));
    assert_eq!(stream.handle.as_deref(), Some(handle.as_str()));
}

/// The server's log without its colour escapes.
fn plain_log(server: &Server) -> String {
    server
        .log()
        .split('\u{1b}')
        .map(|part| part.split_once('m').map_or(part, |(_, rest)| rest))
        .collect()
}

/// SIGKILL while a move-in is in flight (its query blocked by a lock, the
/// membership applied, nothing spliced): the shape resumes with its handle
/// (the move is redone from the re-read memberships) and the same stream
/// folds to Postgres, membership included.
#[test]
fn sigkill_between_membership_and_splice() {
    let db = membership_db("subquery_wire_kill_splice");
    let mut server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "500")]);
    let columns = ["id", "project_id", "title"];
    let mut stream = Stream::new(MEMBERSHIP);
    stream.converge(&server, &columns, &pg_rows(&db, PG_MEMBERSHIP));
    let mut locker = db.client();
    locker
        .batch_execute("BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    db.client()
        .batch_execute("INSERT INTO members VALUES (1, 2)")
        .unwrap();
    // Time for the membership to reach the shard (its move-in query then
    // waits for the lock): a live poll returns nothing of it.
    std::thread::sleep(Duration::from_millis(1500));
    stream.poll(&server);
    assert!(
        !stream
            .messages
            .iter()
            .any(|m| m["value"]["project_id"] == "2"),
        "nothing of project 2 before the splice"
    );
    server.kill();
    locker.batch_execute("COMMIT").unwrap();
    server.restart();
    let handle = stream.handle.clone();
    let want = pg_rows(&db, PG_MEMBERSHIP);
    assert!(want.iter().any(|r| r.contains("|2|")), "{want:?}");
    stream.converge(&server, &columns, &want);
    assert_eq!(stream.handle, handle);
}

/// A clean stop while a move-in is in flight keeps the shape: the
/// transactions it held were not confirmed to Postgres (the held floor),
/// so they come back, and the move is redone after its views are read
/// again; the same stream folds to Postgres.
#[test]
fn graceful_stop_during_a_move_in_keeps_the_shape() {
    let db = membership_db("subquery_wire_stop_moving");
    let mut server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "500")]);
    let columns = ["id", "project_id", "title"];
    let mut stream = Stream::new(MEMBERSHIP);
    stream.converge(&server, &columns, &pg_rows(&db, PG_MEMBERSHIP));
    let mut locker = db.client();
    locker
        .batch_execute("BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    db.client()
        .batch_execute("INSERT INTO members VALUES (1, 2)")
        .unwrap();
    db.client()
        .batch_execute("INSERT INTO members VALUES (1, 3)")
        .unwrap();
    // Time for both to reach the shard: the first's move-in waits for the
    // lock, the second is held behind it.
    std::thread::sleep(Duration::from_millis(1500));
    // A clean stop (SIGTERM, and it exits by itself), the lock still held;
    // released before the next start (whose setup would wait for it).
    server.signal_stop();
    crate::harness::wait_for("a clean exit", Duration::from_secs(10), || {
        (!server.is_running()).then_some(())
    });
    locker.batch_execute("COMMIT").unwrap();
    server.restart();
    let handle = stream.handle.clone();
    let want = pg_rows(&db, PG_MEMBERSHIP);
    assert!(want.iter().any(|r| r.contains("|3|")), "{want:?}");
    stream.converge(&server, &columns, &want);
    assert_eq!(stream.handle, handle);
}

/// SIGKILL after a move-out reached the stream and before an outer change
/// of a moved-out row: resumed with its handle; the same stream folds to
/// Postgres, the changed row absent, the membership added while down in.
#[test]
fn sigkill_between_move_out_and_outer_change() {
    let db = membership_db("subquery_wire_kill_move_out");
    let mut server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "500")]);
    let columns = ["id", "project_id", "title"];
    let mut stream = Stream::new(MEMBERSHIP);
    stream.converge(&server, &columns, &pg_rows(&db, PG_MEMBERSHIP));
    let from = stream.messages.len();
    db.client()
        .batch_execute("DELETE FROM members WHERE user_id = 1 AND project_id = 1")
        .unwrap();
    stream.until(&server, from, |m| {
        m.iter().any(|m| m["headers"]["event"] == "move-out")
    });
    assert!(stream.rows.is_empty(), "every row moved out");
    server.kill();
    db.client()
        .batch_execute(
            "UPDATE tasks SET title = 'while down' WHERE project_id = 1;
             INSERT INTO members VALUES (1, 3);",
        )
        .unwrap();
    server.restart();
    let handle = stream.handle.clone();
    let want = pg_rows(&db, PG_MEMBERSHIP);
    assert!(!want.iter().any(|r| r.contains("while down")), "{want:?}");
    stream.converge(&server, &columns, &want);
    assert_eq!(stream.handle, handle);
    assert!(
        !stream
            .messages
            .iter()
            .any(|m| m["value"]["title"] == "while down"),
        "a moved-out row's change never reaches the stream"
    );
}

/// A subquery whose values do not fit one journal record (150,000 of
/// them, about 2 MB of client view): the view is journaled in bounded
/// records and, after a SIGKILL right after the shape was served (before
/// any checkpoint holds it), rebuilt from them; the same stream then
/// follows moves of those values.
#[test]
fn a_large_value_set_survives_a_sigkill() {
    let db = database("subquery_wire_large_set");
    db.client()
        .batch_execute(
            "CREATE TABLE tasks (id int PRIMARY KEY, project_id int, title text);
             CREATE TABLE big_set (v int PRIMARY KEY);
             INSERT INTO big_set SELECT g FROM generate_series(1, 150000) g;
             INSERT INTO tasks SELECT g, g * 1000, 'task ' || g FROM generate_series(1, 20) g;
             INSERT INTO tasks VALUES (100, 999999, 'outside');",
        )
        .unwrap();
    let mut server = Server::start(
        &db,
        &[
            ("ELECTRIC_LONG_POLL_TIMEOUT", "500"),
            ("SHAPESHARD_CHECKPOINT_INTERVAL_MS", "600000"),
        ],
    );
    let shape = "table=tasks&where=project_id%20IN%20(SELECT%20v%20FROM%20big_set)";
    let pg = "SELECT id::text, project_id::text, title FROM tasks WHERE project_id IN (SELECT v FROM big_set)";
    let columns = ["id", "project_id", "title"];
    let mut stream = Stream::new(shape);
    stream.converge(&server, &columns, &pg_rows(&db, pg));
    assert_eq!(stream.rows.len(), 20);
    server.kill();
    db.client()
        .batch_execute(
            "DELETE FROM big_set WHERE v IN (1000, 2000); INSERT INTO big_set VALUES (999999)",
        )
        .unwrap();
    server.restart();
    let handle = stream.handle.clone();
    stream.converge(&server, &columns, &pg_rows(&db, pg));
    assert_eq!(stream.handle, handle);
    assert_eq!(stream.rows.len(), 19);
    db.client()
        .batch_execute("INSERT INTO big_set VALUES (1000)")
        .unwrap();
    stream.converge(&server, &columns, &pg_rows(&db, pg));
    assert_eq!(stream.handle, handle);
    // 150k values are too many to route rows by: the shape takes every
    // row of `tasks` and its view decides. Once most values leave, it is
    // routed by them again; either way rows move as Postgres has them.
    let broad = |server: &Server, want: u64, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.metric("shapeshard_subquery_shapes_broad") != want {
            assert!(
                Instant::now() < deadline,
                "{what}: broad shapes never {want}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    broad(&server, 1, "150k values");
    db.client()
        .batch_execute(
            "INSERT INTO tasks VALUES (101, 120000, 'in'), (102, 0, 'out');
             UPDATE tasks SET project_id = 5000 WHERE id = 1;",
        )
        .unwrap();
    stream.converge(&server, &columns, &pg_rows(&db, pg));
    db.client()
        .batch_execute("DELETE FROM big_set WHERE v > 7000 AND v <> 120000")
        .unwrap();
    stream.converge(&server, &columns, &pg_rows(&db, pg));
    broad(&server, 0, "7001 values");
    db.client()
        .batch_execute(
            "INSERT INTO tasks VALUES (103, 6000, 'in'), (104, 8000, 'out');
             UPDATE tasks SET project_id = 120000 WHERE id = 2;
             INSERT INTO big_set VALUES (8000);",
        )
        .unwrap();
    stream.converge(&server, &columns, &pg_rows(&db, pg));
    assert_eq!(stream.handle, handle);
    let rows = pg_rows(&db, pg).len();
    assert_eq!(stream.rows.len(), rows);
    assert!(rows >= 8, "{rows} rows: moves in and out on both routings");
}

#[test]
fn not_in_moves_are_inverted() {
    let db = database("subquery_wire_not_in");
    db.client()
        .batch_execute(
            "CREATE TABLE tasks (id int PRIMARY KEY, project_id int, title text);
             CREATE TABLE blocked (project_id int PRIMARY KEY);
             INSERT INTO tasks SELECT g, g % 3, 'task ' || g FROM generate_series(1, 9) g;
             INSERT INTO blocked VALUES (0);",
        )
        .unwrap();
    let server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "1000")]);
    let definition =
        "table=tasks&where=project_id%20NOT%20IN%20(SELECT%20project_id%20FROM%20blocked)";
    let pg = "SELECT id::text, project_id::text, title FROM tasks WHERE project_id NOT IN (SELECT project_id FROM blocked)";
    let columns = ["id", "project_id", "title"];
    let mut stream = Stream::new(definition);
    stream.converge(&server, &columns, &pg_rows(&db, pg));
    let handle = stream.handle.clone().unwrap();
    let first = stream.messages[0].clone();
    assert_eq!(
        first["headers"]["active_conditions"],
        serde_json::json!([true])
    );
    let tag_value = first["value"]["project_id"].as_str().unwrap().to_string();
    assert_eq!(
        first["headers"]["tags"],
        serde_json::json!([value_hash(&db, &handle, Some(tag_value.as_str()))])
    );

    // A value entering the set moves its rows out.
    let from = stream.messages.len();
    db.client()
        .batch_execute("INSERT INTO blocked VALUES (1)")
        .unwrap();
    stream.until(&server, from, |m| !m.is_empty());
    let got = &stream.messages[from..];
    assert_eq!(ops(got), ["move-out"], "{got:#?}");
    assert_eq!(
        got[0]["headers"]["patterns"],
        serde_json::json!([{"pos": 0, "value": value_hash(&db, &handle, Some("1"))}])
    );
    assert_eq!(stream.view(&columns), pg_rows(&db, pg));

    // One leaving it moves its rows in.
    let from = stream.messages.len();
    db.client()
        .batch_execute("DELETE FROM blocked WHERE project_id = 0")
        .unwrap();
    stream.until(&server, from, |m| {
        m.iter().any(|m| m["headers"]["control"] == "snapshot-end")
    });
    let got = &stream.messages[from..];
    assert_eq!(got[0]["headers"]["event"], "move-in", "{got:#?}");
    assert_eq!(
        got[0]["headers"]["patterns"],
        serde_json::json!([{"pos": 0, "value": value_hash(&db, &handle, Some("0"))}])
    );
    assert_eq!(got.len(), 1 + 3 + 1, "{got:#?}");
    assert_eq!(stream.view(&columns), pg_rows(&db, pg));

    for sql in [
        "INSERT INTO tasks VALUES (50, 1, 'blocked'), (51, 2, 'open')",
        "BEGIN; DELETE FROM blocked WHERE project_id = 1; INSERT INTO blocked VALUES (2); COMMIT",
        "UPDATE tasks SET project_id = 1 WHERE id = 51",
    ] {
        db.client().batch_execute(sql).unwrap();
    }
    stream.converge(&server, &columns, &pg_rows(&db, pg));
}

#[test]
fn and_or_combination_with_params_inside_and_out() {
    let db = membership_db("subquery_wire_and_or");
    db.client()
        .batch_execute("UPDATE tasks SET owner = 'me' WHERE id IN (3, 4); UPDATE tasks SET done = true WHERE id = 5")
        .unwrap();
    let server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "1000")]);
    // (p IN (SQ $2) AND NOT done) OR owner = $1: two disjuncts, positions
    // 0 (subquery), 1 (done), 2 (owner).
    let definition = "table=tasks&where=(project_id%20IN%20(SELECT%20project_id%20FROM%20members%20WHERE%20user_id%20%3D%20%242)%20AND%20NOT%20done)%20OR%20owner%20%3D%20%241&params%5B1%5D=me&params%5B2%5D=1";
    let pg = "SELECT id::text, project_id::text, title FROM tasks WHERE (project_id IN (SELECT project_id FROM members WHERE user_id = 1) AND NOT done) OR owner = 'me'";
    let columns = ["id", "project_id", "title"];
    let mut stream = Stream::new(definition);
    stream.converge(&server, &columns, &pg_rows(&db, pg));
    let handle = stream.handle.clone().unwrap();
    let row1 = stream
        .messages
        .iter()
        .find(|m| m["value"]["id"] == "1")
        .expect("task 1 (project 1) in the snapshot");
    assert_eq!(
        row1["headers"]["tags"],
        serde_json::json!([format!("{}/1/", value_hash(&db, &handle, Some("1"))), "//1"])
    );
    assert_eq!(
        row1["headers"]["active_conditions"],
        serde_json::json!([true, true, false])
    );
    let row3 = stream
        .messages
        .iter()
        .find(|m| m["value"]["id"] == "3")
        .expect("task 3 (owner me) in the snapshot");
    assert_eq!(
        row3["headers"]["active_conditions"],
        serde_json::json!([false, true, true])
    );

    // Moving project 3 in: task 3 is already held through `owner`, so the
    // move-in sends only 7 and 11 (the exclusion), and re-activates 3.
    let from = stream.messages.len();
    db.client()
        .batch_execute("INSERT INTO members VALUES (1, 3)")
        .unwrap();
    stream.until(&server, from, |m| {
        m.iter().any(|m| m["headers"]["control"] == "snapshot-end")
    });
    let mut ids: Vec<&str> = stream.messages[from..]
        .iter()
        .filter_map(|m| m["value"]["id"].as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, ["11", "7"]);
    assert_eq!(stream.view(&columns), pg_rows(&db, pg));

    // Moving project 1 out keeps rows held through the other disjunct.
    db.client()
        .batch_execute("UPDATE tasks SET owner = 'me' WHERE id = 9")
        .unwrap();
    let from = stream.messages.len();
    db.client()
        .batch_execute("DELETE FROM members WHERE user_id = 1 AND project_id = 1")
        .unwrap();
    stream.until(&server, from, |m| {
        m.iter().any(|m| m["headers"]["event"] == "move-out")
    });
    assert!(stream.rows.contains_key("\"public\".\"tasks\"/\"9\""));
    assert_eq!(stream.view(&columns), pg_rows(&db, pg));

    for sql in [
        "UPDATE tasks SET done = true WHERE id = 7",
        "UPDATE tasks SET done = false WHERE id = 7",
        "INSERT INTO members VALUES (1, 1)",
        "UPDATE tasks SET owner = NULL WHERE id = 3",
        "BEGIN; DELETE FROM members WHERE user_id = 1; INSERT INTO members VALUES (1, 2); COMMIT",
    ] {
        db.client().batch_execute(sql).unwrap();
    }
    stream.converge(&server, &columns, &pg_rows(&db, pg));
}

/// Slice 1 refused nesting; since slice 3 it is served (on the wire in
/// `subquery_nested.rs`), here on this file's membership tables: a
/// subquery reading its own table one level down.
#[test]
fn nesting_once_refused_is_served() {
    let db = membership_db("subquery_wire_limits");
    let server = Server::start(&db, &[]);
    let definition = "table=tasks&where=project_id%20IN%20(SELECT%20project_id%20FROM%20members%20WHERE%20user_id%20IN%20(SELECT%20user_id%20FROM%20members))";
    let reply = server.get(&format!("/v1/shape?{definition}&offset=-1"));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let rows = reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["headers"]["operation"] == "insert")
        .count();
    let pg: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM tasks WHERE project_id IN (SELECT project_id FROM members WHERE user_id IN (SELECT user_id FROM members))",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(pg > 0);
    assert_eq!(rows as i64, pg, "{}", reply.body);
}

/// Random memberships and rows written from two connections while the
/// stream is read live: move-ins run while transactions arrive (some seen
/// by the move-in's snapshot, some not), moves queue behind each other, and
/// the folded stream still ends equal to Postgres. For both a plain
/// membership where and an `OR` with a plain condition.
#[test]
fn concurrent_churn_folds_to_postgres() {
    let db = membership_db("subquery_wire_churn");
    let server = Server::start(
        &db,
        &[
            ("ELECTRIC_LONG_POLL_TIMEOUT", "500"),
            ("ELECTRIC_LOG_LEVEL", "info"),
        ],
    );
    let either = "table=tasks&where=project_id%20IN%20(SELECT%20project_id%20FROM%20members%20WHERE%20user_id%20%3D%201)%20OR%20title%20LIKE%20%27%25x%27";
    let pg_either = "SELECT id::text, project_id::text, title FROM tasks WHERE project_id IN (SELECT project_id FROM members WHERE user_id = 1) OR title LIKE '%x'";
    let columns = ["id", "project_id", "title"];
    let mut plain = Stream::new(MEMBERSHIP);
    let mut or = Stream::new(either);
    plain.converge(&server, &columns, &pg_rows(&db, PG_MEMBERSHIP));
    or.converge(&server, &columns, &pg_rows(&db, pg_either));

    let writers = churn(&db, 6);
    // Read live meanwhile, so splices happen while the stream is followed.
    while writers.iter().any(|w| !w.is_finished()) {
        plain.poll(&server);
        or.poll(&server);
    }
    for writer in writers {
        writer.join().unwrap();
    }
    plain.converge(&server, &columns, &pg_rows(&db, PG_MEMBERSHIP));
    or.converge(&server, &columns, &pg_rows(&db, pg_either));
    let moves = |s: &Stream, e: &str| {
        s.messages
            .iter()
            .filter(|m| m["headers"]["event"] == e)
            .count()
    };
    assert!(moves(&plain, "move-in") > 3 && moves(&plain, "move-out") > 3);
    // Neither shape was invalidated on the way (a 409 would have panicked
    // in `poll`): both are still the ones first synced.
}

/// Two writers churning memberships of users 1 and 2 and tasks for `secs`
/// seconds (deadlocks and conflicts are simply not made).
fn churn(db: &TestDb, secs: u64) -> Vec<std::thread::JoinHandle<()>> {
    (0..2u64)
        .map(|w| {
            let mut client = db.client();
            std::thread::spawn(move || {
                let mut rng = crate::rng::Rng(0x5eed + w);
                let deadline = Instant::now() + Duration::from_secs(secs);
                while Instant::now() < deadline {
                    let project = rng.below(6);
                    let id = 1 + rng.below(40);
                    let user = 1 + rng.below(4) / 3;
                    let sql = match rng.below(7) {
                        0 => format!("INSERT INTO members VALUES ({user}, {project}) ON CONFLICT DO NOTHING"),
                        1 => format!("DELETE FROM members WHERE user_id = {user} AND project_id = {project}"),
                        2 => format!("UPDATE tasks SET project_id = {project} WHERE id = {id}"),
                        3 => format!("INSERT INTO tasks (id, project_id, title) VALUES ({id}, {project}, 'r{id}') ON CONFLICT (id) DO UPDATE SET title = tasks.title || 'x', done = NOT tasks.done"),
                        4 => format!("DELETE FROM tasks WHERE id = {id}"),
                        5 => format!(
                            "BEGIN; INSERT INTO members VALUES ({user}, {project}) ON CONFLICT DO NOTHING; UPDATE tasks SET project_id = {project}, title = 't' WHERE id = {id}; COMMIT"
                        ),
                        _ => format!(
                            "BEGIN; DELETE FROM members WHERE user_id = {user} AND project_id = {project}; INSERT INTO tasks (id, project_id, title) VALUES ({id}, {project}, 'y') ON CONFLICT (id) DO UPDATE SET project_id = {project}; COMMIT"
                        ),
                    };
                    if client.batch_execute(&sql).is_err() {
                        let _ = client.batch_execute("ROLLBACK");
                    }
                    // A busy but plausible rate (hundreds of transactions a
                    // second). Unthrottled, a debug server lags the
                    // database by thousands of transactions, and a move-in
                    // holds more than the buffer's 1000 (Electric's bound;
                    // then the shape is invalidated, tested below).
                    std::thread::sleep(Duration::from_millis(3));
                }
            })
        })
        .collect()
}

/// Shapes with the same subquery (same table, where and parameters) read
/// one copy of its values per shard, applied once per transaction: while
/// memberships and tasks churn, with move-ins holding transactions in some
/// shapes and not others, every shape's folded stream ends equal to
/// Postgres, and the shards report fewer shared dependencies than shapes
/// reading them.
#[test]
fn shapes_with_one_subquery_share_its_values() {
    let db = membership_db("subquery_wire_shared");
    let server = Server::start(
        &db,
        &[
            ("ELECTRIC_LONG_POLL_TIMEOUT", "500"),
            ("ELECTRIC_LOG_LEVEL", "info"),
        ],
    );
    let sub = |user: u32| {
        format!("project_id%20IN%20(SELECT%20project_id%20FROM%20members%20WHERE%20user_id%20%3D%20%241)&params%5B1%5D={user}")
    };
    let pg_sub = |user: u32| {
        format!("project_id IN (SELECT project_id FROM members WHERE user_id = {user})")
    };
    let cases = [
        (
            format!("table=tasks&where={}", sub(1)),
            format!(
                "SELECT id::text, project_id::text, title FROM tasks WHERE {}",
                pg_sub(1)
            ),
        ),
        (
            format!("table=tasks&columns=id,project_id,title&where={}", sub(1)),
            format!(
                "SELECT id::text, project_id::text, title FROM tasks WHERE {}",
                pg_sub(1)
            ),
        ),
        (
            format!("table=tasks&where=done%20%3D%20false%20AND%20{}", sub(1)),
            format!(
                "SELECT id::text, project_id::text, title FROM tasks WHERE done = false AND {}",
                pg_sub(1)
            ),
        ),
        (
            format!(
                "table=tasks&where=title%20LIKE%20%27%25x%27%20OR%20{}",
                sub(1)
            ),
            format!(
                "SELECT id::text, project_id::text, title FROM tasks WHERE title LIKE '%x' OR {}",
                pg_sub(1)
            ),
        ),
        (
            format!("table=tasks&where={}", sub(2)),
            format!(
                "SELECT id::text, project_id::text, title FROM tasks WHERE {}",
                pg_sub(2)
            ),
        ),
    ];
    let columns = ["id", "project_id", "title"];
    let mut streams: Vec<Stream> = cases.iter().map(|(q, _)| Stream::new(q)).collect();
    for (stream, (_, pg)) in streams.iter_mut().zip(&cases) {
        stream.converge(&server, &columns, &pg_rows(&db, pg));
    }
    let writers = churn(&db, 6);
    while writers.iter().any(|w| !w.is_finished()) {
        for stream in &mut streams {
            stream.poll(&server);
        }
    }
    for writer in writers {
        writer.join().unwrap();
    }
    for (stream, (_, pg)) in streams.iter_mut().zip(&cases) {
        stream.converge(&server, &columns, &pg_rows(&db, pg));
    }
    let moves: usize = streams[..4]
        .iter()
        .map(|s| {
            s.messages
                .iter()
                .filter(|m| m["headers"]["event"] == "move-in")
                .count()
        })
        .sum();
    assert!(
        moves > 4,
        "the churn moved user 1's shapes ({moves} move-ins)"
    );
    // Every shape reads a shared truth once at the shard's position; four
    // shapes of user 1 on two shards share at most two, user 2's one more.
    // After a SIGKILL (truths read again) and a clean stop (kept views)
    // each shape keeps a private truth until the shard is past its
    // position again, then joins again; the streams go on.
    let mut server = server;
    for restart in ["first run", "SIGKILL", "graceful"] {
        match restart {
            "SIGKILL" => server.crash_and_restart(),
            "graceful" => server.graceful_restart(),
            _ => {}
        }
        db.client()
            .batch_execute("INSERT INTO members VALUES (1, 5), (2, 5) ON CONFLICT DO NOTHING")
            .unwrap();
        for (stream, (_, pg)) in streams.iter_mut().zip(&cases) {
            stream.converge(&server, &columns, &pg_rows(&db, pg));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let readers = server.metric("shapeshard_subquery_dependency_readers");
            let shared = server.metric("shapeshard_subquery_dependencies_shared");
            if readers == 5 {
                assert!(
                    shared <= 3,
                    "{restart}: {shared} shared truths for 5 readers"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{restart}: {readers} of 5 shapes read shared truths"
            );
            db.client()
                .batch_execute("UPDATE tasks SET title = title WHERE id = 1")
                .unwrap();
            std::thread::sleep(Duration::from_millis(200));
        }
        db.client()
            .batch_execute("DELETE FROM members WHERE project_id = 5")
            .unwrap();
        for (stream, (_, pg)) in streams.iter_mut().zip(&cases) {
            stream.converge(&server, &columns, &pg_rows(&db, pg));
        }
    }
}

/// While a move-in query cannot finish (its table is locked), transactions
/// routed to the shape are held; past `ELECTRIC_SUBQUERY_BUFFER_MAX_TRANSACTIONS`
/// the shape is invalidated (409), never approximated.
#[test]
fn buffer_overflow_invalidates_the_shape() {
    let db = membership_db("subquery_wire_overflow");
    let server = Server::start(
        &db,
        &[
            ("ELECTRIC_LONG_POLL_TIMEOUT", "500"),
            ("ELECTRIC_SUBQUERY_BUFFER_MAX_TRANSACTIONS", "3"),
            ("ELECTRIC_LOG_LEVEL", "info"),
        ],
    );
    let mut stream = Stream::new(MEMBERSHIP);
    stream.converge(
        &server,
        &["id"],
        &pg_rows(&db, "SELECT id::text FROM tasks WHERE project_id = 1"),
    );
    let mut locker = db.client();
    locker
        .batch_execute("BEGIN; LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    db.client()
        .batch_execute("INSERT INTO members VALUES (1, 2)")
        .unwrap();
    // More memberships of the user: routed to the shape (another user's
    // are not: the inner where indexes it) and held behind the blocked
    // move-in.
    for project in 10..16 {
        db.client()
            .batch_execute(&format!("INSERT INTO members VALUES (1, {project})"))
            .unwrap();
    }
    let url = format!(
        "/v1/shape?{MEMBERSHIP}&offset={}&handle={}",
        stream.offset,
        stream.handle.as_deref().unwrap()
    );
    // A 409 names the shape that replaces it, whose snapshot would wait
    // for the lock: watch the log, then release it.
    crate::harness::wait_for("the overflow", Duration::from_secs(30), || {
        server
            .log()
            .contains("shape removed: subquery buffer overflow")
            .then_some(())
    });
    locker.batch_execute("COMMIT").unwrap();
    assert_eq!(server.get(&url).status, 409);
    let mut fresh = Stream::new(MEMBERSHIP);
    fresh.converge(
        &server,
        &["id", "project_id", "title"],
        &pg_rows(&db, PG_MEMBERSHIP),
    );
}

/// The tested column need not be selected (tags come from it all the
/// same, in the snapshot, move-ins and changes); a primary-key change is a
/// tagged delete and insert; `replica=full` folds the same.
#[test]
fn unselected_tested_column_key_changes_and_replica_full() {
    let db = membership_db("subquery_wire_columns");
    let server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "1000")]);
    let narrow = format!("{MEMBERSHIP}&columns=id,title");
    let full = format!("{MEMBERSHIP}&replica=full");
    let pg = "SELECT id::text, title FROM tasks WHERE project_id IN (SELECT project_id FROM members WHERE user_id = 1)";
    let mut stream = Stream::new(&narrow);
    let mut whole = Stream::new(&full);
    stream.converge(&server, &["id", "title"], &pg_rows(&db, pg));
    whole.converge(&server, &["id", "title"], &pg_rows(&db, pg));
    let handle = stream.handle.clone().unwrap();
    let row = &stream.messages[0];
    assert!(row["value"].get("project_id").is_none(), "{row}");
    assert_eq!(
        row["headers"]["tags"],
        serde_json::json!([value_hash(&db, &handle, Some("1"))])
    );

    let from = stream.messages.len();
    db.client()
        .batch_execute("INSERT INTO members VALUES (1, 2)")
        .unwrap();
    stream.until(&server, from, |m| {
        m.iter().any(|m| m["headers"]["control"] == "snapshot-end")
    });
    for m in &stream.messages[from + 1..stream.messages.len() - 1] {
        assert!(m["value"].get("project_id").is_none(), "{m}");
        assert_eq!(
            m["headers"]["tags"],
            serde_json::json!([value_hash(&db, &handle, Some("2"))])
        );
    }

    let from = stream.messages.len();
    db.client()
        .batch_execute("UPDATE tasks SET id = 500, project_id = 2 WHERE id = 1")
        .unwrap();
    stream.until(&server, from, |m| m.len() >= 2);
    let got = &stream.messages[from..];
    assert_eq!(got[0]["headers"]["operation"], "delete", "{got:#?}");
    assert_eq!(got[1]["headers"]["operation"], "insert", "{got:#?}");
    assert_eq!(
        got[1]["headers"]["tags"],
        serde_json::json!([value_hash(&db, &handle, Some("2"))])
    );
    for sql in [
        "DELETE FROM members WHERE user_id = 1 AND project_id = 1",
        "UPDATE tasks SET title = 'moved' WHERE project_id = 2",
        "INSERT INTO members VALUES (1, 3)",
        "UPDATE tasks SET id = id + 1000 WHERE project_id = 3",
    ] {
        db.client().batch_execute(sql).unwrap();
    }
    stream.converge(&server, &["id", "title"], &pg_rows(&db, pg));
    whole.converge(&server, &["id", "title"], &pg_rows(&db, pg));
}

/// A subquery on the shape's own table: one transaction both moves values
/// (through the inner where) and changes rows of the shape.
#[test]
fn subquery_on_its_own_table() {
    let db = database("subquery_wire_self");
    db.client()
        .batch_execute(
            "CREATE TABLE nodes (id int PRIMARY KEY, parent int, done bool NOT NULL DEFAULT false);
             INSERT INTO nodes SELECT g, g / 3, g % 4 = 0 FROM generate_series(1, 30) g;",
        )
        .unwrap();
    let server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "1000")]);
    let definition = "table=nodes&where=parent%20IN%20(SELECT%20id%20FROM%20nodes%20WHERE%20done)";
    // `bool::text` prints `true`, the wire `t`: compared as t/f.
    let pg = "SELECT id::text, parent::text, CASE WHEN done THEN 't' ELSE 'f' END FROM nodes WHERE parent IN (SELECT id FROM nodes WHERE done)";
    let columns = ["id", "parent", "done"];
    let mut stream = Stream::new(definition);
    stream.converge(&server, &columns, &pg_rows(&db, pg));
    for sql in [
        "UPDATE nodes SET done = true WHERE id = 3",
        "UPDATE nodes SET done = NOT done WHERE id IN (4, 5)",
        "BEGIN; UPDATE nodes SET done = false WHERE id = 8; INSERT INTO nodes VALUES (100, 8, true), (101, 100, false); COMMIT",
        "UPDATE nodes SET parent = 5 WHERE id < 10",
        "DELETE FROM nodes WHERE id = 5",
        "INSERT INTO nodes VALUES (5, 1, true)",
    ] {
        db.client().batch_execute(sql).unwrap();
        stream.converge(&server, &columns, &pg_rows(&db, pg));
    }
}

/// The subquery's table gains a column: the shape keeps moving. It loses
/// one: the shape's mirror reads columns by position, so it is invalidated.
#[test]
fn subquery_table_schema_changes() {
    let db = membership_db("subquery_wire_schema");
    db.client()
        .batch_execute("ALTER TABLE members ADD COLUMN role text")
        .unwrap();
    let server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "500")]);
    let columns = ["id", "project_id", "title"];
    let mut stream = Stream::new(MEMBERSHIP);
    stream.converge(&server, &columns, &pg_rows(&db, PG_MEMBERSHIP));
    db.client()
        .batch_execute(
            "ALTER TABLE members ADD COLUMN since date;
             INSERT INTO members VALUES (1, 2, 'admin', '2024-01-01');",
        )
        .unwrap();
    stream.converge(&server, &columns, &pg_rows(&db, PG_MEMBERSHIP));
    db.client()
        .batch_execute(
            "ALTER TABLE members DROP COLUMN role;
             INSERT INTO members VALUES (1, 3, '2024-01-02');",
        )
        .unwrap();
    let url = format!(
        "/v1/shape?{MEMBERSHIP}&offset={}&handle={}&live=true",
        stream.offset,
        stream.handle.as_deref().unwrap()
    );
    crate::harness::wait_for("the shape's 409", Duration::from_secs(30), || {
        (server.get(&url).status == 409).then_some(())
    });
    let mut fresh = Stream::new(MEMBERSHIP);
    fresh.converge(&server, &columns, &pg_rows(&db, PG_MEMBERSHIP));
}

/// Two subqueries in one where: moves of both in one transaction queue
/// behind each other (one move-in at a time), and a row held through one
/// stays when the other moves out.
#[test]
fn two_subqueries_move_in_turn() {
    let db = membership_db("subquery_wire_two");
    db.client()
        .batch_execute(
            "CREATE TABLE stars (task_id int PRIMARY KEY); INSERT INTO stars VALUES (2), (3);",
        )
        .unwrap();
    let server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "500")]);
    let definition = "table=tasks&where=project_id%20IN%20(SELECT%20project_id%20FROM%20members%20WHERE%20user_id%20%3D%201)%20OR%20id%20IN%20(SELECT%20task_id%20FROM%20stars)";
    let pg = "SELECT id::text, project_id::text, title FROM tasks WHERE project_id IN (SELECT project_id FROM members WHERE user_id = 1) OR id IN (SELECT task_id FROM stars)";
    let columns = ["id", "project_id", "title"];
    let mut stream = Stream::new(definition);
    stream.converge(&server, &columns, &pg_rows(&db, pg));
    let row = stream
        .messages
        .iter()
        .find(|m| m["value"]["id"] == "2")
        .unwrap();
    assert_eq!(
        row["headers"]["active_conditions"],
        serde_json::json!([false, true])
    );
    for sql in [
        "BEGIN; INSERT INTO members VALUES (1, 2); INSERT INTO stars VALUES (4), (8); COMMIT",
        "BEGIN; DELETE FROM members WHERE user_id = 1 AND project_id = 1; INSERT INTO stars VALUES (5); COMMIT",
        "DELETE FROM stars WHERE task_id IN (2, 3)",
        "BEGIN; INSERT INTO members VALUES (1, 3); DELETE FROM stars; INSERT INTO stars VALUES (1); COMMIT",
        "UPDATE tasks SET project_id = 1 WHERE id = 1",
    ] {
        db.client().batch_execute(sql).unwrap();
        stream.converge(&server, &columns, &pg_rows(&db, pg));
    }
    let events = stream
        .messages
        .iter()
        .filter(|m| m["headers"]["event"] == "move-in")
        .count();
    assert!(events >= 4, "{events} move-ins");
}

/// Moves while a large snapshot's rows still stream: the rows carry the
/// active conditions of the snapshot's time (the views as seeded, copied
/// at the first move), the moves follow them, and the folded stream ends
/// equal to Postgres for a shape whose rows an `OR` arm can also hold.
#[test]
fn moves_while_the_snapshot_streams() {
    let db = membership_db("subquery_wire_streaming_moves");
    db.client()
        .batch_execute(
            "INSERT INTO tasks (id, project_id, title) SELECT g, 1 + g % 3, 'bulk ' || g FROM generate_series(100, 40099) g;
             INSERT INTO members VALUES (1, 2), (1, 3);",
        )
        .unwrap();
    let server = Server::start(
        &db,
        &[
            ("ELECTRIC_LONG_POLL_TIMEOUT", "500"),
            ("ELECTRIC_SHAPE_CHUNK_BYTES_THRESHOLD", "1048576"),
        ],
    );
    let either = "table=tasks&where=project_id%20IN%20(SELECT%20project_id%20FROM%20members%20WHERE%20user_id%20%3D%201)%20OR%20title%20LIKE%20%27%257%27";
    let pg_either = "SELECT id::text, project_id::text, title FROM tasks WHERE project_id IN (SELECT project_id FROM members WHERE user_id = 1) OR title LIKE '%7'";
    let columns = ["id", "project_id", "title"];
    let writer = {
        let mut client = db.client();
        std::thread::spawn(move || {
            // Over about a second and a half, from before the snapshot
            // is taken to after its rows are written.
            for round in 0..12 {
                std::thread::sleep(Duration::from_millis(60));
                let sql = match round % 3 {
                    0 => "DELETE FROM members WHERE user_id = 1 AND project_id = 2",
                    1 => "INSERT INTO members VALUES (1, 2)",
                    _ => "UPDATE tasks SET title = title || '7' WHERE id = 101",
                };
                client.batch_execute(sql).unwrap();
            }
            std::thread::sleep(Duration::from_millis(60));
            client
                .batch_execute("DELETE FROM members WHERE user_id = 1 AND project_id = 3")
                .unwrap();
        })
    };
    let mut stream = Stream::new(either);
    stream.poll(&server);
    writer.join().unwrap();
    stream.converge(&server, &columns, &pg_rows(&db, pg_either));
    let moves = stream
        .messages
        .iter()
        .filter(|m| m["headers"]["event"] == "move-out")
        .count();
    assert!(moves >= 1, "the deletes moved rows out");
    // A snapshot row (no txids, not from a move-in) not matching the
    // `LIKE` arm is in the snapshot through the subquery arm alone: its
    // active conditions are the snapshot's, whatever moved since.
    let mut snapshot_rows = 0;
    for m in &stream.messages {
        let headers = &m["headers"];
        if headers["operation"] != "insert"
            || headers.get("txids").is_some()
            || headers.get("is_move_in").is_some()
        {
            continue;
        }
        snapshot_rows += 1;
        let like = m["value"]["title"]
            .as_str()
            .is_some_and(|t| t.ends_with('7'));
        let active = &headers["active_conditions"];
        assert_eq!(active[1], like, "{m}");
        if !like {
            assert_eq!(active[0], true, "a snapshot row held by its subquery: {m}");
        }
    }
    assert!(snapshot_rows > 10_000, "{snapshot_rows} snapshot rows");
}
