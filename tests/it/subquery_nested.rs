//! Nested subqueries on the wire (issue 17, slice 3), real Postgres and
//! the real server: `project_id IN (SELECT project_id FROM members WHERE
//! team_id IN (SELECT team_id FROM team_members WHERE user_id = $1))`.
//! The outer client sees only the outer level (as with Electric, whose
//! middle level is a shape of its own): tags hash the outer row's tested
//! value, and a change at any level below reaches it as the middle
//! level's values entering (a `move-in` event, the rows as tagged move-in
//! inserts, `snapshot-end`) or leaving (a `move-out` event, no deletes).
//! Two and three levels, nesting under `AND`/`OR`/`NOT` at either level,
//! parameters inside the inner levels, and a churn of every table whose
//! folded stream ends equal to Postgres.

use serde_json::{json, Value};

use crate::harness::{database, url_encode, TestDb};
use crate::rng::Rng;
use crate::server::Server;
use crate::tag_fold::{ops, patterns, pg_rows, snapshot_end, value_hash, Stream};

fn definition(table: &str, sql: &str, params: &[&str]) -> String {
    let mut out = format!("table={table}&where={}", url_encode(sql));
    for (i, p) in params.iter().enumerate() {
        out.push_str(&format!("&params%5B{}%5D={}", i + 1, url_encode(p)));
    }
    out
}

/// Tasks 1..=12 in projects `g % 4`; teams 10 (projects 0, 1), 20 (2) and
/// 30 (3), in orgs 100 (teams 10, 20) and 200 (30); user 1 in team 10
/// and org 200, user 2 in team 30.
fn teams_db(name: &str) -> TestDb {
    let db = database(name);
    db.client()
        .batch_execute(
            "CREATE TABLE tasks (id int PRIMARY KEY, project_id int, title text);
             CREATE TABLE members (team_id int, project_id int, PRIMARY KEY (team_id, project_id));
             CREATE TABLE team_members (user_id int, team_id int, PRIMARY KEY (user_id, team_id));
             CREATE TABLE teams (team_id int PRIMARY KEY, org_id int);
             CREATE TABLE org_members (user_id int, org_id int, PRIMARY KEY (user_id, org_id));
             INSERT INTO tasks SELECT g, g % 4, 'task ' || g FROM generate_series(1, 12) g;
             INSERT INTO members VALUES (10, 0), (10, 1), (20, 2), (30, 3);
             INSERT INTO team_members VALUES (1, 10), (2, 30);
             INSERT INTO teams VALUES (10, 100), (20, 100), (30, 200);
             INSERT INTO org_members VALUES (1, 200);",
        )
        .unwrap();
    db
}

const TWO_LEVELS: &str = "project_id IN (SELECT project_id FROM members WHERE team_id IN (SELECT team_id FROM team_members WHERE user_id = $1))";

const THREE_LEVELS: &str = "project_id IN (SELECT project_id FROM members WHERE team_id IN (SELECT team_id FROM teams WHERE org_id IN (SELECT org_id FROM org_members WHERE user_id = $1)))";

const COLUMNS: [&str; 3] = ["id", "project_id", "title"];

/// Postgres' rows of `tasks` under `where_sql` (parameters written in).
fn pg_tasks(db: &TestDb, where_sql: &str) -> Vec<String> {
    pg_rows(
        db,
        &format!("SELECT id::text, project_id::text, title FROM tasks WHERE {where_sql}"),
    )
}

/// The ids of a splice's move-in rows (between the event and
/// `snapshot-end`), each checked to be a tagged move-in insert of one of
/// `hashes`.
fn move_in_ids(got: &[Value], hashes: &[String]) -> Vec<String> {
    assert_eq!(got[0]["headers"]["event"], "move-in", "{:?}", ops(got));
    assert_eq!(got.last().unwrap()["headers"]["control"], "snapshot-end");
    let mut ids: Vec<String> = got[1..got.len() - 1]
        .iter()
        .map(|m| {
            assert_eq!(m["headers"]["operation"], "insert", "{m}");
            assert_eq!(m["headers"]["is_move_in"], true, "{m}");
            let tag = m["headers"]["tags"][0].as_str().unwrap().to_string();
            assert!(hashes.contains(&tag), "{m}");
            assert_eq!(m["headers"]["active_conditions"], json!([true]));
            m["value"]["id"].as_str().unwrap().to_string()
        })
        .collect();
    ids.sort();
    ids
}

fn sorted(mut v: Vec<(usize, String)>) -> Vec<(usize, String)> {
    v.sort();
    v
}

#[test]
fn two_levels_move_with_memberships_middle_rows_and_outer_rows() {
    let db = teams_db("subquery_nested_two");
    let server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "1000")]);
    let pg_where = TWO_LEVELS.replace("$1", "1");
    let mut stream = Stream::new(&definition("tasks", TWO_LEVELS, &["1"]));
    stream.until(&server, 0, |_| true);
    let handle = stream.handle.clone().unwrap();
    let h = |v: &str| value_hash(&db, &handle, Some(v));

    // Snapshot: the tasks of team 10's projects, tagged by project.
    let rows: Vec<&Value> = stream
        .messages
        .iter()
        .filter(|m| m["headers"]["operation"] == "insert")
        .collect();
    assert_eq!(rows.len(), 6, "{:#?}", stream.messages);
    for row in &rows {
        let project = row["value"]["project_id"].as_str().unwrap();
        assert_eq!(row["headers"]["tags"], json!([h(project)]), "{row}");
        assert_eq!(row["headers"]["active_conditions"], json!([true]));
    }
    assert_eq!(stream.view(&COLUMNS), pg_tasks(&db, &pg_where));

    // Innermost: user 1 joins team 20, so project 2 enters the middle
    // level's values: a move-in of project 2's tasks.
    let from = stream.messages.len();
    db.client()
        .batch_execute("INSERT INTO team_members VALUES (1, 20)")
        .unwrap();
    stream.until(&server, from, snapshot_end);
    let got = &stream.messages[from..];
    assert_eq!(patterns(&got[0]), [(0, h("2"))]);
    assert_eq!(got[0]["headers"]["txids"].as_array().unwrap().len(), 1);
    assert_eq!(move_in_ids(got, &[h("2")]), ["10", "2", "6"]);
    assert_eq!(stream.view(&COLUMNS), pg_tasks(&db, &pg_where));

    // Middle row: team 20 takes project 3 on.
    let from = stream.messages.len();
    db.client()
        .batch_execute("INSERT INTO members VALUES (20, 3)")
        .unwrap();
    stream.until(&server, from, snapshot_end);
    let got = &stream.messages[from..];
    assert_eq!(patterns(&got[0]), [(0, h("3"))]);
    assert_eq!(move_in_ids(got, &[h("3")]), ["11", "3", "7"]);

    // Middle row leaving: one move-out, no deletes.
    let from = stream.messages.len();
    db.client()
        .batch_execute("DELETE FROM members WHERE team_id = 20 AND project_id = 3")
        .unwrap();
    stream.until(&server, from, |m| !m.is_empty());
    let got = &stream.messages[from..];
    assert_eq!(ops(got), ["move-out"], "{got:#?}");
    assert_eq!(patterns(&got[0]), [(0, h("3"))]);
    assert_eq!(stream.view(&COLUMNS), pg_tasks(&db, &pg_where));

    // A project kept through two teams stays when one team goes: team 20
    // also has project 1; user 1 leaving team 10 moves only project 0 out.
    db.client()
        .batch_execute("INSERT INTO members VALUES (20, 1)")
        .unwrap();
    let from = stream.messages.len();
    db.client()
        .batch_execute("DELETE FROM team_members WHERE user_id = 1 AND team_id = 10")
        .unwrap();
    stream.until(&server, from, |m| {
        m.iter().any(|m| m["headers"]["event"] == "move-out")
    });
    let got = &stream.messages[from..];
    assert_eq!(ops(got), ["move-out"], "{got:#?}");
    assert_eq!(patterns(&got[0]), [(0, h("0"))]);
    assert_eq!(stream.view(&COLUMNS), pg_tasks(&db, &pg_where));

    // Innermost leaving with both of its projects: one event, two patterns.
    let from = stream.messages.len();
    db.client()
        .batch_execute("DELETE FROM team_members WHERE user_id = 1 AND team_id = 20")
        .unwrap();
    stream.until(&server, from, |m| !m.is_empty());
    let got = &stream.messages[from..];
    assert_eq!(ops(got), ["move-out"], "{got:#?}");
    assert_eq!(
        sorted(patterns(&got[0])),
        sorted(vec![(0, h("1")), (0, h("2"))])
    );
    assert_eq!(stream.view(&COLUMNS), Vec::<String>::new());

    // Outer rows against the middle values: user 1 back in team 10; a
    // task inserted in project 0 is an insert tagged by project, one
    // moved to project 3 (not a value) is deleted.
    db.client()
        .batch_execute("INSERT INTO team_members VALUES (1, 10)")
        .unwrap();
    stream.converge(&server, &COLUMNS, &pg_tasks(&db, &pg_where));
    let from = stream.messages.len();
    db.client()
        .batch_execute("INSERT INTO tasks VALUES (100, 0, 'new')")
        .unwrap();
    stream.until(&server, from, |m| !m.is_empty());
    let got = &stream.messages[from..];
    assert_eq!(ops(got), ["insert:\"100\""], "{got:#?}");
    assert_eq!(got[0]["headers"]["tags"], json!([h("0")]));
    let from = stream.messages.len();
    db.client()
        .batch_execute("UPDATE tasks SET project_id = 3 WHERE id = 100")
        .unwrap();
    stream.until(&server, from, |m| !m.is_empty());
    assert_eq!(ops(&stream.messages[from..]), ["delete:\"100\""]);
    assert_eq!(stream.view(&COLUMNS), pg_tasks(&db, &pg_where));
}

#[test]
fn three_levels_move_with_every_level() {
    let db = teams_db("subquery_nested_three");
    let server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "1000")]);
    let pg_where = THREE_LEVELS.replace("$1", "1");
    let mut stream = Stream::new(&definition("tasks", THREE_LEVELS, &["1"]));
    stream.until(&server, 0, |_| true);
    let handle = stream.handle.clone().unwrap();
    let h = |v: &str| value_hash(&db, &handle, Some(v));
    // Org 200 has team 30, which has project 3.
    assert_eq!(stream.view(&COLUMNS), pg_tasks(&db, &pg_where));
    assert_eq!(stream.view(&COLUMNS).len(), 3);

    // Innermost: user 1 joins org 100 (teams 10 and 20: projects 0, 1, 2).
    let from = stream.messages.len();
    db.client()
        .batch_execute("INSERT INTO org_members VALUES (1, 100)")
        .unwrap();
    stream.until(&server, from, snapshot_end);
    let got = &stream.messages[from..];
    let want = [h("0"), h("1"), h("2")];
    assert_eq!(
        sorted(patterns(&got[0])),
        sorted(want.iter().map(|h| (0, h.clone())).collect())
    );
    assert_eq!(move_in_ids(got, &want).len(), 9);
    assert_eq!(stream.view(&COLUMNS), pg_tasks(&db, &pg_where));

    // Middle level: team 20 moves to org 200 (still the user's): nothing
    // moves; then out of every org of the user: project 2 moves out.
    db.client()
        .batch_execute("UPDATE teams SET org_id = 200 WHERE team_id = 20")
        .unwrap();
    let from = stream.messages.len();
    db.client()
        .batch_execute("UPDATE teams SET org_id = 300 WHERE team_id = 20")
        .unwrap();
    stream.until(&server, from, |m| !m.is_empty());
    let got = &stream.messages[from..];
    assert_eq!(ops(got), ["move-out"], "{got:#?}");
    assert_eq!(patterns(&got[0]), [(0, h("2"))]);

    // Second level rows: a new team in org 200 with project 2 brings it back.
    let from = stream.messages.len();
    db.client()
        .batch_execute(
            "BEGIN; INSERT INTO teams VALUES (40, 200); INSERT INTO members VALUES (40, 2); COMMIT",
        )
        .unwrap();
    stream.until(&server, from, snapshot_end);
    let got = &stream.messages[from..];
    assert_eq!(patterns(&got[0]), [(0, h("2"))]);
    assert_eq!(move_in_ids(got, &[h("2")]), ["10", "2", "6"]);

    // Innermost leaving org 100: projects 0 and 1 go (2 stays via team 40).
    let from = stream.messages.len();
    db.client()
        .batch_execute("DELETE FROM org_members WHERE user_id = 1 AND org_id = 100")
        .unwrap();
    stream.until(&server, from, |m| !m.is_empty());
    let got = &stream.messages[from..];
    assert_eq!(ops(got), ["move-out"], "{got:#?}");
    assert_eq!(
        sorted(patterns(&got[0])),
        sorted(vec![(0, h("0")), (0, h("1"))])
    );
    assert_eq!(stream.view(&COLUMNS), pg_tasks(&db, &pg_where));
}

/// Follows `sql` (parameters `params`) through `changes`, checking the
/// fold against Postgres after each.
fn follow(db: &TestDb, server: &Server, sql: &str, params: &[&str], changes: &[&str]) {
    let mut pg_where = sql.to_string();
    for (i, p) in params.iter().enumerate().rev() {
        pg_where = pg_where.replace(&format!("${}", i + 1), &format!("'{p}'"));
    }
    let mut stream = Stream::new(&definition("tasks", sql, params));
    stream.until(server, 0, |_| true);
    assert_eq!(stream.view(&COLUMNS), pg_tasks(db, &pg_where), "{sql}");
    for change in changes {
        db.client().batch_execute(change).unwrap();
        stream.converge(server, &COLUMNS, &pg_tasks(db, &pg_where));
    }
}

/// Changes at every level that move projects in and out of user 1's.
const CHANGES: [&str; 8] = [
    "INSERT INTO team_members VALUES (1, 20)",
    "INSERT INTO members VALUES (20, 3)",
    "UPDATE tasks SET title = 'pinned' WHERE id = 3",
    "DELETE FROM team_members WHERE user_id = 1 AND team_id = 10",
    "UPDATE members SET team_id = 10 WHERE team_id = 20 AND project_id = 2",
    "BEGIN; INSERT INTO team_members VALUES (1, 10); DELETE FROM members WHERE project_id = 0; COMMIT",
    "UPDATE tasks SET project_id = 1 WHERE id = 4",
    "DELETE FROM team_members WHERE user_id = 1",
];

#[test]
fn nested_under_and_or_not_at_either_level() {
    let db = teams_db("subquery_nested_logic");
    let server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "1000")]);
    for sql in [
        // The outer level: OR, AND, NOT around the nested subquery.
        "project_id IN (SELECT project_id FROM members WHERE team_id IN (SELECT team_id FROM team_members WHERE user_id = $1)) OR title = 'pinned'",
        "project_id IN (SELECT project_id FROM members WHERE team_id IN (SELECT team_id FROM team_members WHERE user_id = $1)) AND id <> 5",
        "NOT project_id IN (SELECT project_id FROM members WHERE team_id IN (SELECT team_id FROM team_members WHERE user_id = $1))",
        // The middle level: NOT IN, AND, OR around the innermost one.
        "project_id IN (SELECT project_id FROM members WHERE team_id NOT IN (SELECT team_id FROM team_members WHERE user_id = $1))",
        "project_id IN (SELECT project_id FROM members WHERE team_id IN (SELECT team_id FROM team_members WHERE user_id = $1) AND project_id <> 1)",
        "project_id IN (SELECT project_id FROM members WHERE team_id IN (SELECT team_id FROM team_members WHERE user_id = $1) OR team_id = 30)",
        // Row forms (plain columns on both sides): a pair at the outer
        // level, a pair at the middle one.
        "(project_id, project_id) IN (SELECT project_id, project_id FROM members WHERE team_id IN (SELECT team_id FROM team_members WHERE user_id = $1))",
        "project_id IN (SELECT project_id FROM members WHERE (team_id, team_id) IN (SELECT team_id, team_id FROM team_members WHERE user_id = $1))",
    ] {
        db.client()
            .batch_execute(
                "TRUNCATE members, team_members;
                 INSERT INTO members VALUES (10, 0), (10, 1), (20, 2), (30, 3);
                 INSERT INTO team_members VALUES (1, 10), (2, 30);
                 UPDATE tasks SET title = 'task ' || id, project_id = id % 4 WHERE id <= 12;",
            )
            .unwrap();
        follow(&db, &server, sql, &["1"], &CHANGES);
    }
}

#[test]
fn params_inside_the_inner_levels() {
    let db = teams_db("subquery_nested_params");
    let server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "1000")]);
    // $1 at the innermost level, $2 at the middle one, $3 outside.
    let sql = "project_id IN (SELECT project_id FROM members WHERE team_id IN (SELECT team_id FROM team_members WHERE user_id = $1) AND project_id <> $2) AND title <> $3";
    follow(&db, &server, sql, &["1", "0", "task 5"], &CHANGES[..4]);
    // Another user's shape is another shape, moved by its own memberships.
    let other = definition("tasks", sql, &["2", "0", "task 5"]);
    let mut stream = Stream::new(&other);
    stream.until(&server, 0, |_| true);
    let pg_where = sql
        .replace("$1", "2")
        .replace("$2", "0")
        .replace("$3", "'task 5'");
    assert_eq!(stream.view(&COLUMNS), pg_tasks(&db, &pg_where));
    assert!(!stream.view(&COLUMNS).is_empty());
    db.client()
        .batch_execute("INSERT INTO team_members VALUES (2, 10)")
        .unwrap();
    stream.converge(&server, &COLUMNS, &pg_tasks(&db, &pg_where));
}

/// Random writes to every level's table, alone or several per transaction,
/// while a two- and a three-level shape are followed live: both folds end
/// equal to Postgres.
#[test]
fn churn_at_every_level_folds_to_postgres() {
    let db = teams_db("subquery_nested_churn");
    let server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "500")]);
    let mut streams: Vec<(Stream, String)> = [TWO_LEVELS, THREE_LEVELS]
        .iter()
        .map(|sql| {
            let mut s = Stream::new(&definition("tasks", sql, &["1"]));
            s.until(&server, 0, |_| true);
            (s, sql.replace("$1", "1"))
        })
        .collect();
    let seed = 17;
    let mut rng = Rng(seed);
    let statement = |rng: &mut Rng| -> String {
        let a = rng.below(5);
        let b = rng.below(5);
        match rng.below(9) {
            0 => format!("INSERT INTO team_members VALUES (1, {}0) ON CONFLICT DO NOTHING", a + 1),
            1 => format!("DELETE FROM team_members WHERE team_id = {}0", a + 1),
            2 => format!("INSERT INTO members VALUES ({}0, {b}) ON CONFLICT DO NOTHING", a + 1),
            3 => format!("DELETE FROM members WHERE team_id = {}0 AND project_id = {b}", a + 1),
            4 => format!(
                "UPDATE members SET project_id = {b} WHERE team_id = {t}0 AND project_id = {} \
                 AND NOT EXISTS (SELECT 1 FROM members WHERE team_id = {t}0 AND project_id = {b})",
                (b + 1) % 5,
                t = a + 1
            ),
            5 => format!("INSERT INTO teams VALUES ({}0, {}00) ON CONFLICT (team_id) DO UPDATE SET org_id = EXCLUDED.org_id", a + 1, b % 3 + 1),
            6 => format!("INSERT INTO org_members VALUES (1, {}00) ON CONFLICT DO NOTHING", a % 3 + 1),
            7 => format!("DELETE FROM org_members WHERE org_id = {}00", a % 3 + 1),
            _ => format!("UPDATE tasks SET project_id = {b} WHERE id = {}", a * 2 + 1),
        }
    };
    for round in 0..60 {
        let n = 1 + rng.below(3);
        let body: Vec<String> = (0..n).map(|_| statement(&mut rng)).collect();
        db.client()
            .batch_execute(&format!("BEGIN; {}; COMMIT", body.join("; ")))
            .unwrap_or_else(|e| panic!("seed {seed} round {round}: {e:?}"));
        if round % 7 == 0 {
            for (stream, _) in &mut streams {
                stream.poll(&server);
            }
        }
    }
    for (stream, pg_where) in &mut streams {
        stream.converge(&server, &COLUMNS, &pg_tasks(&db, pg_where));
        assert!(
            stream
                .messages
                .iter()
                .any(|m| m["headers"]["event"] == "move-in"),
            "the churn moved nothing in: seed {seed}"
        );
    }
}

/// Restarts keep nested shapes too: a clean stop and a SIGKILL both
/// resume them with their handle (their middle levels' rows are read
/// again), beside a one-level shape; moves from every level made while
/// the server was down and after fold to Postgres on the same streams.
#[test]
fn restarts_keep_nested_and_one_level_shapes() {
    let db = teams_db("subquery_nested_restart");
    let mut server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "1000")]);
    let nested_sql = "project_id IN (SELECT project_id FROM members WHERE team_id IN (SELECT team_id FROM team_members WHERE user_id = $1))";
    let flat_sql = "project_id IN (SELECT project_id FROM members WHERE team_id = $1)";
    let mut nested = Stream::new(&definition("tasks", nested_sql, &["1"]));
    nested.until(&server, 0, |_| true);
    let mut flat = Stream::new(&definition("tasks", flat_sql, &["10"]));
    flat.until(&server, 0, |_| true);
    let handles = (nested.handle.clone(), flat.handle.clone());
    let converge = |nested: &mut Stream, flat: &mut Stream, server: &Server| {
        nested.converge(
            server,
            &COLUMNS,
            &pg_tasks(&db, &nested_sql.replace("$1", "1")),
        );
        flat.converge(
            server,
            &COLUMNS,
            &pg_tasks(&db, &flat_sql.replace("$1", "10")),
        );
        assert_eq!((nested.handle.clone(), flat.handle.clone()), handles);
    };
    server.graceful_restart();
    db.client()
        .batch_execute("INSERT INTO members VALUES (10, 2)")
        .unwrap();
    converge(&mut nested, &mut flat, &server);
    // SIGKILL, with moves at both levels while it is down.
    server.kill();
    db.client()
        .batch_execute(
            "INSERT INTO team_members VALUES (1, 20);
             DELETE FROM members WHERE team_id = 10 AND project_id = 2;",
        )
        .unwrap();
    server.restart();
    converge(&mut nested, &mut flat, &server);
    db.client()
        .batch_execute("INSERT INTO members VALUES (10, 2)")
        .unwrap();
    converge(&mut nested, &mut flat, &server);
}
