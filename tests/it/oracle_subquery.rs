//! The oracle property test for subquery shapes (issue 17): link tables
//! (`users`, `memberships`, `projects`, `org_members`, `tasks`), shapes
//! with generated subqueries one to three levels deep through them (`IN`,
//! `NOT IN`, the row form, `AND`/`OR`/`NOT` with plain conditions,
//! parameters inside and outside), random multi-statement transactions on
//! every table (memberships churning, tasks moving between projects,
//! projects changing org, key changes; some overlapping an older
//! transaction that commits after them), and server restarts (graceful,
//! rolling, SIGKILL) between batches. Each shape is followed by a
//! tag-folding client (`tag_fold::Stream`); after every batch, and again
//! right after every restart, each fold must equal Postgres' `SELECT ..
//! WHERE <clause>`.
//!
//! 409s are counted per restart kind and shape kind. What is asserted is
//! what the server promises (docs/design/subqueries-next.md, Status):
//! every shape, plain, one-level or nested, keeps its handle across
//! graceful, rolling and SIGKILL restarts (0 × 409), and no shape answers
//! 409 between restarts. With RESTART_AT_REST=0 a SIGKILL may drop a
//! shape created during that batch's writes before it was durable (its
//! client never saw its snapshot end); its client then re-syncs with a
//! fresh stream that must fold to Postgres.
//!
//! Knobs (environment): SEED, SHAPE_COUNT, BATCH_COUNT, TXNS_PER_BATCH,
//! MUTATIONS_PER_TXN, NEW_SHAPES_PER_BATCH (shapes created in the middle
//! of a batch's writes), RESTART_SERVER_EVERY, RESTART_TYPE
//! (graceful|brutal|rolling|alternate: graceful, rolling, brutal in turn),
//! RESTART_AT_REST (1: restart once every stream equals Postgres, so no
//! move is in flight; 0: right after the batch's writes, while the server
//! still applies them and moves are in flight).
//! Defaults are the CI run: 12 shapes (and one more per batch) × 8
//! batches × 8 transactions × 8 statements, a restart after every batch. Any failure prints the line
//! that replays it (the test prints it first, so a panic deep in a client
//! shows it too).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::harness::{database, knob, knob_text, url_encode};
use crate::rng::Rng;
use crate::server::Server;
use crate::tag_fold::{joined_rows, Diverged, Stream};

const USERS: u64 = 10;
const ORGS: u64 = 4;
const PROJECTS: u64 = 12;
const TEAMS: u64 = 3;
const TASKS: u64 = 80;
const TAGS: &[&str] = &["a", "b", "c", "d"];
const ROLES: &[&str] = &["admin", "member"];

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum ShapeKind {
    Plain,
    OneLevel,
    Nested,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Phase {
    /// Between restarts (after a batch of transactions).
    Running,
    Graceful,
    Rolling,
    Brutal,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Running => "no restart",
            Phase::Graceful => "graceful",
            Phase::Rolling => "rolling",
            Phase::Brutal => "SIGKILL",
        })
    }
}

struct Shape {
    table: &'static str,
    /// The where clause as sent, `$n` for `params[n]`.
    clause: String,
    params: Vec<String>,
    kind: ShapeKind,
}

impl Shape {
    /// The shape's query string.
    fn definition(&self) -> String {
        let mut out = format!("table={}&where={}", self.table, url_encode(&self.clause));
        for (i, p) in self.params.iter().enumerate() {
            out.push_str(&format!("&params%5B{}%5D={}", i + 1, url_encode(p)));
        }
        out
    }

    /// The same rows through another outer where with the same
    /// subqueries and parameters.
    fn twin(&self) -> Shape {
        Shape {
            table: self.table,
            clause: format!("({}) AND id > 0", self.clause),
            params: self.params.clone(),
            kind: self.kind,
        }
    }

    /// The where clause with its parameters written in (all integers), for
    /// Postgres.
    fn oracle_clause(&self) -> String {
        let mut clause = self.clause.clone();
        // Highest first: `$1` is a prefix of `$10`.
        for (i, p) in self.params.iter().enumerate().rev() {
            clause = clause.replace(&format!("${}", i + 1), p);
        }
        clause
    }

    fn columns(&self) -> &'static [&'static str] {
        match self.table {
            "tasks" => &["id", "project_id", "owner_id", "v", "tag"],
            _ => &["id", "org_id", "archived"],
        }
    }

    /// Postgres' rows of the shape, joined like `Stream::view`.
    fn oracle_rows(&self, pg: &mut postgres::Client) -> Vec<String> {
        let select = match self.table {
            "tasks" => "id::text, project_id::text, owner_id::text, v::text, tag",
            _ => "id::text, org_id::text, CASE WHEN archived THEN 't' ELSE 'f' END",
        };
        let sql = format!(
            "SELECT {select} FROM {} WHERE {}",
            self.table,
            self.oracle_clause()
        );
        joined_rows(pg, &sql)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {} WHERE {}", self.kind, self.table, self.clause)?;
        if !self.params.is_empty() {
            write!(f, " params {:?}", self.params)?;
        }
        Ok(())
    }
}

/// Builds one where clause, collecting its parameters.
struct Gen<'a> {
    rng: &'a mut Rng,
    params: Vec<String>,
}

impl Gen<'_> {
    /// A literal integer `1..=n`, or (one time in three) a parameter
    /// bound to it.
    fn int(&mut self, n: u64) -> String {
        let value = (1 + self.rng.below(n)).to_string();
        if self.rng.below(3) == 0 {
            self.params.push(value);
            format!("${}", self.params.len())
        } else {
            value
        }
    }

    fn polarity(&mut self) -> &'static str {
        if self.rng.below(3) == 0 {
            "NOT IN"
        } else {
            "IN"
        }
    }

    /// A plain condition on `tasks`.
    fn plain_task(&mut self) -> String {
        match self.rng.below(5) {
            0 => format!("v > {}", self.int(30)),
            1 => format!("tag = '{}'", self.rng.pick(TAGS)),
            2 => "v IS NULL".into(),
            3 => format!(
                "tag IN ('{}', '{}')",
                self.rng.pick(TAGS),
                self.rng.pick(TAGS)
            ),
            _ => {
                let k = self.rng.below(25);
                format!("v BETWEEN {k} AND {}", k + 8)
            }
        }
    }

    /// A one-level subquery test on `tasks` with `polarity`.
    fn one_level_task(&mut self, polarity: &str) -> String {
        match self.rng.below(6) {
            0 | 1 => format!(
                "project_id {polarity} (SELECT project_id FROM memberships WHERE user_id = {})",
                self.int(USERS)
            ),
            2 => format!(
                "project_id {polarity} (SELECT id FROM projects WHERE org_id = {})",
                self.int(ORGS)
            ),
            3 => format!(
                "project_id {polarity} (SELECT id FROM projects WHERE org_id = {} AND archived = false)",
                self.int(ORGS)
            ),
            4 => format!(
                "owner_id {polarity} (SELECT user_id FROM org_members WHERE org_id = {})",
                self.int(ORGS)
            ),
            _ => format!(
                "project_id {polarity} (SELECT project_id FROM memberships WHERE role = '{}')",
                self.rng.pick(ROLES)
            ),
        }
    }

    /// A row-form subquery test on `tasks` (`(project_id, owner_id)`
    /// against memberships).
    fn row_task(&mut self, polarity: &str) -> String {
        if self.rng.below(2) == 0 {
            format!(
                "(project_id, owner_id) {polarity} (SELECT project_id, user_id FROM memberships WHERE role = '{}')",
                self.rng.pick(ROLES)
            )
        } else {
            format!(
                "(project_id, owner_id) {polarity} (SELECT project_id, user_id FROM memberships WHERE project_id > {})",
                self.int(PROJECTS / 2)
            )
        }
    }

    /// A nested (2 or 3 levels) subquery test on `tasks` with `polarity`
    /// at the outer level.
    fn nested_task(&mut self, polarity: &str) -> String {
        match self.rng.below(7) {
            0 => format!(
                "project_id {polarity} (SELECT id FROM projects WHERE org_id IN (SELECT org_id FROM org_members WHERE user_id = {}))",
                self.int(USERS)
            ),
            1 => format!(
                "project_id {polarity} (SELECT project_id FROM memberships WHERE user_id IN (SELECT id FROM users WHERE team = {}))",
                self.int(TEAMS)
            ),
            2 => format!(
                "project_id {polarity} (SELECT id FROM projects WHERE org_id NOT IN (SELECT org_id FROM org_members WHERE user_id = {}))",
                self.int(USERS)
            ),
            3 => format!(
                "project_id {polarity} (SELECT id FROM projects WHERE archived = false AND org_id IN (SELECT org_id FROM org_members WHERE user_id = {}))",
                self.int(USERS)
            ),
            4 => format!(
                "(project_id, owner_id) {polarity} (SELECT project_id, user_id FROM memberships WHERE user_id IN (SELECT id FROM users WHERE team = {}))",
                self.int(TEAMS)
            ),
            5 => format!(
                "project_id {polarity} (SELECT id FROM projects WHERE org_id IN (SELECT org_id FROM org_members WHERE user_id IN (SELECT id FROM users WHERE team = {})))",
                self.int(TEAMS)
            ),
            _ => format!(
                "owner_id {polarity} (SELECT user_id FROM org_members WHERE org_id IN (SELECT org_id FROM projects WHERE id IN (SELECT project_id FROM memberships WHERE user_id = {})))",
                self.int(USERS)
            ),
        }
    }

    /// Two different one-level tests (the same sublink under both
    /// polarities is refused).
    fn two_one_level(&mut self, first: &str, second: &str) -> (String, String) {
        let a = self.one_level_task(first);
        loop {
            let b = self.one_level_task(second);
            if strip_polarity(&a) != strip_polarity(&b) {
                return (a, b);
            }
        }
    }
}

fn strip_polarity(test: &str) -> String {
    test.replace(" NOT IN ", " IN ")
}

/// Shape `n`'s kind goes round plain, one-level (twice as often) and
/// nested, so every run has each.
fn generate_shape(rng: &mut Rng, n: usize) -> Shape {
    let mut g = Gen {
        rng,
        params: Vec::new(),
    };
    let (table, clause, kind) = match n % 5 {
        0 => {
            let clause = match g.rng.below(2) {
                0 => format!("{} OR project_id = {}", g.plain_task(), g.int(PROJECTS)),
                _ => format!("owner_id = {} AND {}", g.int(USERS), g.plain_task()),
            };
            ("tasks", clause, ShapeKind::Plain)
        }
        1 | 3 => {
            let clause = match g.rng.below(10) {
                0 => {
                    let p = g.polarity();
                    g.one_level_task(p)
                }
                1 => format!("{} AND {}", g.one_level_task("IN"), g.plain_task()),
                2 => format!("{} OR {}", g.one_level_task("IN"), g.plain_task()),
                3 => {
                    let (a, b) = g.two_one_level("IN", "IN");
                    format!("{a} OR {b}")
                }
                4 => {
                    let (a, b) = g.two_one_level("IN", "NOT IN");
                    format!("{a} AND {b}")
                }
                5 => format!("NOT ({})", g.one_level_task("IN")),
                6 => {
                    let p = g.polarity();
                    g.row_task(p)
                }
                7 => format!(
                    "({} OR {}) AND {}",
                    g.row_task("IN"),
                    g.plain_task(),
                    g.plain_task()
                ),
                8 => {
                    return Shape {
                        table: "projects",
                        clause: match g.rng.below(2) {
                            0 => format!(
                                "id IN (SELECT project_id FROM memberships WHERE user_id = {})",
                                g.int(USERS)
                            ),
                            _ => format!(
                                "org_id IN (SELECT org_id FROM org_members WHERE user_id = {}) AND archived = false",
                                g.int(USERS)
                            ),
                        },
                        params: g.params,
                        kind: ShapeKind::OneLevel,
                    };
                }
                _ => format!(
                    "({} OR {}) AND {}",
                    g.one_level_task("IN"),
                    g.plain_task(),
                    g.plain_task()
                ),
            };
            ("tasks", clause, ShapeKind::OneLevel)
        }
        _ => {
            let clause = match g.rng.below(6) {
                0 | 1 => {
                    let p = g.polarity();
                    g.nested_task(p)
                }
                2 => format!("{} AND {}", g.nested_task("IN"), g.plain_task()),
                3 => format!("{} OR {}", g.nested_task("IN"), g.plain_task()),
                4 => format!("{} OR {}", g.nested_task("IN"), g.one_level_task("IN")),
                _ => {
                    return Shape {
                        table: "projects",
                        clause: format!(
                            "id IN (SELECT project_id FROM memberships WHERE user_id IN (SELECT id FROM users WHERE team = {}))",
                            g.int(TEAMS)
                        ),
                        params: g.params,
                        kind: ShapeKind::Nested,
                    };
                }
            };
            ("tasks", clause, ShapeKind::Nested)
        }
    };
    Shape {
        table,
        clause,
        params: g.params,
        kind,
    }
}

/// One statement of a transaction; memberships churn most, then tasks
/// moving between projects.
fn mutation(rng: &mut Rng) -> String {
    let user = 1 + rng.below(USERS);
    let project = 1 + rng.below(PROJECTS);
    let org = 1 + rng.below(ORGS);
    let task = 1 + rng.below(TASKS);
    match rng.below(24) {
        0..=3 => format!(
            "INSERT INTO memberships VALUES ({user}, {project}, '{}') ON CONFLICT DO NOTHING",
            rng.pick(ROLES)
        ),
        4..=6 => format!("DELETE FROM memberships WHERE user_id = {user} AND project_id = {project}"),
        7 => format!(
            "UPDATE memberships SET role = '{}' WHERE user_id = {user}",
            rng.pick(ROLES)
        ),
        // Key changes of a link row.
        8 => {
            let to = 1 + rng.below(PROJECTS);
            format!(
                "UPDATE memberships SET project_id = {to} WHERE user_id = {user} AND project_id = {project} \
                 AND NOT EXISTS (SELECT 1 FROM memberships WHERE user_id = {user} AND project_id = {to})"
            )
        }
        9 => format!("INSERT INTO org_members VALUES ({user}, {org}) ON CONFLICT DO NOTHING"),
        10 => format!("DELETE FROM org_members WHERE user_id = {user} AND org_id = {org}"),
        11 => {
            let to = 1 + rng.below(ORGS);
            format!(
                "UPDATE org_members SET org_id = {to} WHERE user_id = {user} AND org_id = {org} \
                 AND NOT EXISTS (SELECT 1 FROM org_members WHERE user_id = {user} AND org_id = {to})"
            )
        }
        12 | 13 => format!("UPDATE projects SET org_id = {org} WHERE id = {project}"),
        14 => format!("UPDATE projects SET archived = NOT archived WHERE id = {project}"),
        15 => format!(
            "INSERT INTO projects VALUES ({project}, {org}, {}) ON CONFLICT (id) DO UPDATE SET org_id = EXCLUDED.org_id",
            rng.below(2) == 0
        ),
        16 => format!("DELETE FROM projects WHERE id = {project}"),
        17 => format!(
            "INSERT INTO users VALUES ({user}, {}) ON CONFLICT (id) DO UPDATE SET team = EXCLUDED.team",
            1 + rng.below(TEAMS)
        ),
        18 => format!("DELETE FROM users WHERE id = {user}"),
        19 | 20 => format!("UPDATE tasks SET project_id = {project} WHERE id = {task}"),
        21 => format!(
            "INSERT INTO tasks VALUES ({task}, {project}, {user}, {}, '{}') ON CONFLICT (id) DO UPDATE SET owner_id = EXCLUDED.owner_id",
            nullable_v(rng),
            rng.pick(TAGS)
        ),
        22 => match rng.below(3) {
            0 => format!("DELETE FROM tasks WHERE id = {task}"),
            1 => format!(
                "UPDATE tasks SET v = {}, tag = '{}' WHERE id = {task}",
                nullable_v(rng),
                rng.pick(TAGS)
            ),
            _ => format!("UPDATE tasks SET owner_id = {user} WHERE id = {task}"),
        },
        // A task's key change: a delete and an insert for every shape
        // holding it.
        _ => {
            let to = 1 + rng.below(TASKS);
            format!(
                "UPDATE tasks SET id = {to}, project_id = {project} WHERE id = {task} \
                 AND NOT EXISTS (SELECT 1 FROM tasks WHERE id = {to})"
            )
        }
    }
}

fn nullable_v(rng: &mut Rng) -> String {
    if rng.below(6) == 0 {
        "NULL".into()
    } else {
        rng.below(30).to_string()
    }
}

/// Runs one transaction of `mutations` statements on `pg`. One time in
/// four it overlaps another on `other`: that one begins and runs half its
/// statements first and commits after this one (and a pause), so its xid
/// is older but its commit later, and a move-in snapshot taken meanwhile
/// sees it in progress. This one gives up on a lock the other holds
/// (`lock_timeout`, rolled back: nothing of it happened).
fn write_transaction(
    pg: &mut postgres::Client,
    other: &mut postgres::Client,
    rng: &mut Rng,
    mutations: u64,
    context: &str,
    replay: &str,
) {
    let statements = |rng: &mut Rng, n: u64| -> String {
        (0..n).map(|_| mutation(rng)).collect::<Vec<_>>().join("; ")
    };
    let overlap = rng.below(4) == 0;
    if overlap {
        let first = statements(rng, mutations.div_ceil(2));
        other
            .batch_execute(&format!("BEGIN; {first};"))
            .unwrap_or_else(|e| panic!("{context} (overlapping, first half): {e:?}; {replay}"));
    }
    let own = statements(rng, mutations);
    if let Err(e) = pg.batch_execute(&format!(
        "BEGIN; SET LOCAL lock_timeout = '100ms'; {own}; COMMIT;"
    )) {
        let waited = e
            .as_db_error()
            .is_some_and(|db| *db.code() == postgres::error::SqlState::LOCK_NOT_AVAILABLE);
        assert!(overlap && waited, "{context}: {e:?}; {replay}");
        pg.batch_execute("ROLLBACK").unwrap();
    }
    if overlap {
        std::thread::sleep(Duration::from_millis(30));
        let second = statements(rng, mutations / 2);
        other
            .batch_execute(&format!("{second}; COMMIT;"))
            .unwrap_or_else(|e| panic!("{context} (overlapping, second half): {e:?}; {replay}"));
    }
}

/// The tables, seeded from `rng`.
fn seed_tables(pg: &mut postgres::Client, rng: &mut Rng) {
    pg.batch_execute(
        "CREATE TABLE users (id int PRIMARY KEY, team int NOT NULL);
         CREATE TABLE org_members (user_id int, org_id int, PRIMARY KEY (user_id, org_id));
         CREATE TABLE projects (id int PRIMARY KEY, org_id int NOT NULL, archived bool NOT NULL);
         CREATE TABLE memberships (user_id int, project_id int, role text NOT NULL, PRIMARY KEY (user_id, project_id));
         CREATE TABLE tasks (id int PRIMARY KEY, project_id int NOT NULL, owner_id int NOT NULL, v int, tag text NOT NULL);",
    )
    .unwrap();
    let mut sql = Vec::new();
    for id in 1..=USERS - 2 {
        sql.push(format!(
            "INSERT INTO users VALUES ({id}, {})",
            1 + rng.below(TEAMS)
        ));
    }
    for id in 1..=PROJECTS - 2 {
        sql.push(format!(
            "INSERT INTO projects VALUES ({id}, {}, {})",
            1 + rng.below(ORGS),
            rng.below(4) == 0
        ));
    }
    for _ in 0..14 {
        sql.push(format!(
            "INSERT INTO org_members VALUES ({}, {}) ON CONFLICT DO NOTHING",
            1 + rng.below(USERS),
            1 + rng.below(ORGS)
        ));
    }
    for _ in 0..25 {
        sql.push(format!(
            "INSERT INTO memberships VALUES ({}, {}, '{}') ON CONFLICT DO NOTHING",
            1 + rng.below(USERS),
            1 + rng.below(PROJECTS),
            rng.pick(ROLES)
        ));
    }
    for id in 1..=TASKS * 5 / 8 {
        sql.push(format!(
            "INSERT INTO tasks VALUES ({id}, {}, {}, {}, '{}')",
            1 + rng.below(PROJECTS),
            1 + rng.below(USERS),
            nullable_v(rng),
            rng.pick(TAGS)
        ));
    }
    pg.batch_execute(&sql.join(";\n")).unwrap();
}

/// A followed shape: its stream (a fresh one after each 409) and how many
/// times it re-synced.
struct Follower {
    shape: Shape,
    stream: Stream,
    resyncs: usize,
    /// The batch during whose writes it was created (0: before them).
    created_in_batch: u64,
}

/// Brings every follower to Postgres' rows: a 409 is counted under
/// `phase` and answered by a fresh stream (a second 409 in a row fails),
/// anything else that differs fails with `replay`.
fn check_all(
    server: &Server,
    pg: &mut postgres::Client,
    followers: &mut [Follower],
    (phase, batch): (Phase, u64),
    tally: &mut Tally,
    context: &str,
    replay: &str,
) {
    for (n, f) in followers.iter_mut().enumerate() {
        let want = f.shape.oracle_rows(pg);
        let columns = f.shape.columns();
        let timeout = Duration::from_secs(30);
        match f.stream.try_converge(server, columns, &want, timeout) {
            Ok(()) => {}
            Err(Diverged::Gone(_)) => {
                tally.gone(server, (phase, batch), f, context, n);
                if let Err(e) = f.stream.try_converge(server, columns, &want, timeout) {
                    panic!(
                        "{context}, shape {n} ({}): the fresh stream after a 409: {e}\n{replay}",
                        f.shape
                    );
                }
            }
            Err(Diverged::Failed(e)) => panic!(
                "{context}, shape {n} ({}): {e}\nserver log:\n{}\n{replay}",
                f.shape,
                server.log_tail()
            ),
        }
    }
}

/// What the run saw: 409s per phase and shape kind, and the move events
/// of every stream (those replaced by a re-sync included).
struct Tally {
    at_rest: bool,
    replay: String,
    gone: BTreeMap<(Phase, ShapeKind), usize>,
    moves: BTreeMap<(ShapeKind, &'static str), usize>,
}

impl Tally {
    /// Whether a 409 for a `kind` shape is what the server promises
    /// today (module doc).
    fn allowed(&self, phase: Phase, f: &Follower, batch: u64) -> bool {
        // Without `at_rest`, a SIGKILL may come while a shape created
        // during that batch's writes is not durable yet: gone, though the
        // client never saw its snapshot end (served only once durable;
        // since then no run of seeds 1-13 saw such a 409).
        !self.at_rest && phase == Phase::Brutal && f.created_in_batch == batch
    }

    /// Counts a 409 for `f` (failing if it is not allowed) and starts it
    /// over with a fresh stream.
    fn gone(
        &mut self,
        server: &Server,
        (phase, batch): (Phase, u64),
        f: &mut Follower,
        context: &str,
        n: usize,
    ) {
        *self.gone.entry((phase, f.shape.kind)).or_default() += 1;
        let kind = f.shape.kind;
        if !self.allowed(phase, f, batch) {
            // What the server said about this shape's handle, and its
            // last restart's recovery.
            let log = server.log();
            let handle = f.stream.handle.clone().unwrap_or_default();
            let why: Vec<&str> = log
                .lines()
                .filter(|l| (!handle.is_empty() && l.contains(&handle)) || l.contains("restored"))
                .collect();
            panic!(
                "{context}, shape {n} ({}, handle {:?}): 409 ({phase}), not allowed for {kind:?} \
                 shapes\nserver log (its handle, recoveries):\n{}\n{}",
                f.shape,
                f.stream.handle,
                why[why.len().saturating_sub(30)..].join("\n"),
                self.replay
            );
        }
        println!("{context}, shape {n} ({kind:?}): 409 ({phase}), re-sync");
        self.count_moves(f);
        f.resyncs += 1;
        f.stream = Stream::new(&f.shape.definition());
    }

    fn count_moves(&mut self, f: &Follower) {
        for m in &f.stream.messages {
            if let Some(event) = m["headers"]["event"].as_str() {
                let event = if event == "move-in" {
                    "move-in"
                } else {
                    "move-out"
                };
                *self.moves.entry((f.shape.kind, event)).or_default() += 1;
            }
        }
    }
}

#[test]
fn subquery_shapes_match_the_oracle_across_batches_and_restarts() {
    let seed = knob("SEED", 0x5eed_0017);
    let shape_count = knob("SHAPE_COUNT", 12) as usize;
    let batches = knob("BATCH_COUNT", 8);
    let txns = knob("TXNS_PER_BATCH", 8);
    let mutations = knob("MUTATIONS_PER_TXN", 8);
    let restart_every = knob("RESTART_SERVER_EVERY", 1);
    let new_shapes = knob("NEW_SHAPES_PER_BATCH", 1);
    let restart_type = knob_text("RESTART_TYPE", "alternate");
    let at_rest = knob("RESTART_AT_REST", 1) == 1;
    let replay = format!(
        "replay with SEED={seed} SHAPE_COUNT={shape_count} BATCH_COUNT={batches} TXNS_PER_BATCH={txns} MUTATIONS_PER_TXN={mutations} NEW_SHAPES_PER_BATCH={new_shapes} RESTART_SERVER_EVERY={restart_every} RESTART_TYPE={restart_type} RESTART_AT_REST={}",
        at_rest as u8
    );
    // Shown with any failure's output, even a panic inside a client.
    println!("oracle_subquery: {replay}");
    let started = Instant::now();
    let mut rng = Rng(seed);

    let db = database("oracle_subquery");
    let mut pg = db.client();
    let mut overlapping = db.client();
    seed_tables(&mut pg, &mut rng);
    // At info level the log says why each subquery shape was not resumed.
    let mut server = Server::start(
        &db,
        &[
            ("ELECTRIC_LONG_POLL_TIMEOUT", "300"),
            ("ELECTRIC_LOG_LEVEL", "info"),
        ],
    );
    let mut followers: Vec<Follower> = Vec::new();
    for n in 0..shape_count {
        let shape = generate_shape(&mut rng, n);
        // Some subquery shapes get a twin with the same subqueries (and
        // parameters) and another outer where: on one shard they read one
        // shared truth per subquery.
        let twin = (shape.kind != ShapeKind::Plain && n % 2 == 1).then(|| shape.twin());
        for shape in std::iter::once(shape).chain(twin) {
            println!("shape {}: {shape}", followers.len());
            followers.push(Follower {
                stream: Stream::new(&shape.definition()),
                shape,
                resyncs: 0,
                created_in_batch: 0,
            });
        }
    }
    let mut tally = Tally {
        at_rest,
        replay: replay.clone(),
        gone: BTreeMap::new(),
        moves: BTreeMap::new(),
    };
    let mut restarts: BTreeMap<Phase, usize> = BTreeMap::new();
    // The most shared truths seen before a restart, with their readers.
    let mut most_shared = (0, 0);
    check_all(
        &server,
        &mut pg,
        &mut followers,
        (Phase::Running, 0),
        &mut tally,
        "initial sync",
        &replay,
    );

    for batch in 1..=batches {
        let new_shapes_at: Vec<u64> = (0..new_shapes).map(|_| rng.below(txns.max(1))).collect();
        for t in 0..txns {
            let context = format!("batch {batch} txn {t}");
            write_transaction(
                &mut pg,
                &mut overlapping,
                &mut rng,
                mutations,
                &context,
                &replay,
            );
            // A shape created while the writes go on: its snapshot and
            // seeding race with them.
            for _ in new_shapes_at.iter().filter(|&&at| at == t) {
                let n = followers.len();
                let shape = generate_shape(&mut rng, n);
                println!("{context}: shape {n}: {shape}");
                let mut stream = Stream::new(&shape.definition());
                if let Err(e) = stream.try_poll(&server, false) {
                    panic!("{context}, new shape {n} ({shape}): {e}\n{replay}");
                }
                followers.push(Follower {
                    shape,
                    stream,
                    resyncs: 0,
                    created_in_batch: batch,
                });
            }
            // One stream reads while the writes go on (no wait at the tip),
            // so reads interleave with moves being held and spliced.
            let n = rng.below(followers.len() as u64) as usize;
            let f = &mut followers[n];
            match f.stream.try_poll(&server, false) {
                Ok(()) => {}
                Err(Diverged::Gone(_)) => {
                    tally.gone(&server, (Phase::Running, batch), f, &context, n)
                }
                Err(Diverged::Failed(e)) => {
                    panic!("{context}, shape {n} ({}): {e}\n{replay}", f.shape)
                }
            }
        }
        let restart = restart_every > 0 && batch % restart_every == 0;
        if at_rest || !restart {
            check_all(
                &server,
                &mut pg,
                &mut followers,
                (Phase::Running, batch),
                &mut tally,
                &format!("batch {batch}"),
                &replay,
            );
        }
        let shared = (
            server.metric("shapeshard_subquery_dependencies_shared"),
            server.metric("shapeshard_subquery_dependency_readers"),
        );
        most_shared = most_shared.max(shared);
        if !restart {
            continue;
        }
        let phase = match restart_type.as_str() {
            "alternate" => [Phase::Graceful, Phase::Rolling, Phase::Brutal]
                [((batch / restart_every - 1) % 3) as usize],
            "graceful" => Phase::Graceful,
            "rolling" => Phase::Rolling,
            "brutal" => Phase::Brutal,
            other => panic!("RESTART_TYPE={other}?"),
        };
        // With `at_rest` every stream equals Postgres now, so every move
        // is spliced and the one-level shapes are at rest: a clean stop
        // keeps them. Without, the stop lands while the server is still
        // applying the batch (moves in flight, the fence behind a shard).
        match phase {
            Phase::Graceful => server.graceful_restart(),
            Phase::Rolling => server.rolling_restart(),
            _ => server.crash_and_restart(),
        }
        *restarts.entry(phase).or_default() += 1;
        check_all(
            &server,
            &mut pg,
            &mut followers,
            (phase, batch),
            &mut tally,
            &format!("batch {batch}, after the {phase} restart"),
            &replay,
        );
    }

    for f in &followers {
        tally.count_moves(f);
    }
    let resyncs: usize = followers.iter().map(|f| f.resyncs).sum();
    let mut not_resumed: BTreeMap<String, usize> = BTreeMap::new();
    for line in server.log().lines() {
        if let Some((_, why)) = line.split_once("subquery shape not resumed: ") {
            let why = why.split('\u{1b}').next().unwrap_or(why).trim().to_string();
            *not_resumed.entry(why).or_default() += 1;
        }
    }
    let rows: Vec<usize> = followers.iter().map(|f| f.stream.rows.len()).collect();
    println!(
        "oracle_subquery: {} shapes, {batches} batches, restarts {restarts:?}, \
         409s {:?} ({resyncs} re-syncs), not resumed because {not_resumed:?}, move events {:?}, \
         rows held at the end {rows:?}, at most {} shared truths read by {}, {:.1?}",
        followers.len(),
        tally.gone,
        tally.moves,
        most_shared.0,
        most_shared.1,
        started.elapsed()
    );
    // Not a vacuous run: the churn moved subquery shapes' rows in and out.
    if at_rest && shape_count >= 5 && batches >= 3 {
        for kind in [ShapeKind::OneLevel, ShapeKind::Nested] {
            for event in ["move-in", "move-out"] {
                assert!(
                    tally.moves.get(&(kind, event)).is_some_and(|&c| c > 0),
                    "no {event} for {kind:?} shapes in the whole run; {replay}"
                );
            }
        }
    }
}
