//! Subquery shapes: one membership shape per user over one link table,
//! `tasks WHERE project_id IN (SELECT project_id FROM members WHERE
//! user_id = $1)`, against the release server and a throwaway Postgres.
//!
//! Measured, with every user's shape live:
//! - move-in latency: a membership committed → a parked live request for
//!   that user's shape answers with the move-in (event, the project's rows,
//!   `snapshot-end`); move-out latency likewise (the `move-out` event);
//! - write throughput: task updates and membership churn until durable
//!   (`confirmed_flush_lsn`), beside the same writes with no shape at all;
//! - a SIGKILL with every shape live: restart → active, and → a sample of
//!   users' shapes resumed with their handle (their memberships read again)
//!   and moving again (a move-in reaches a live client);
//! - memory: RSS per membership shape, and per dependency value (one shape
//!   whose subquery selects `values` values, none of which matches a task,
//!   so its snapshot is empty and only the views grow).

use std::time::{Duration, Instant};

use crate::report::Machine;
use crate::server::{Server, ServerConfig};
use crate::shapes::{agent, for_each, get_admitted, ShapeAt};
use hdrhistogram::Histogram;
use shapeshard::devpg::{free_port, DevPgOptions, DevPostgres};

const SLOT: &str = "electric_slot_default";
/// Every user is a member of this many projects; a project has this many
/// tasks, and as many members (users `p`, `p - 1`, `p - 7`).
const MEMBERSHIPS: usize = 3;
const TASKS_PER_PROJECT: usize = 4;
/// Changes per write transaction.
const TXN_ROWS: usize = 100;

pub struct Args {
    pub users: usize,
    pub samples: usize,
    pub writes: usize,
    pub values: usize,
}

impl Args {
    pub fn sized(size: crate::bench::Size) -> Args {
        Args {
            users: size.pick(2_000, 10_000),
            samples: size.pick(40, 200),
            writes: size.pick(20_000, 100_000),
            values: size.pick(100_000, 1_000_000),
        }
    }
}

fn shape_where() -> String {
    crate::bench::encode("project_id IN (SELECT project_id FROM members WHERE user_id = $1)")
}

fn shape_url(base: &str, user: usize, at: Option<&ShapeAt>) -> String {
    let mut url = format!(
        "{base}/v1/shape?table=tasks&where={}&params%5B1%5D={user}",
        shape_where()
    );
    match at {
        Some(at) => url.push_str(&format!("&offset={}&handle={}", at.offset, at.handle)),
        None => url.push_str("&offset=-1"),
    }
    url
}

/// Reads a shape from `at` until it is up to date; where it ends.
fn catch_up(agent: &ureq::Agent, base: &str, user: usize, mut at: ShapeAt) -> ShapeAt {
    loop {
        let reply = get_admitted(agent, &shape_url(base, user, Some(&at)));
        assert_eq!(reply.status, 200, "user {user}: {}", reply.body);
        at = reply.at.expect("electric-handle and -offset");
        if reply.up_to_date {
            return at;
        }
    }
}

/// Follows the shape live from `at` until a reply contains `marker`; the
/// time from the moment `write` returns (right after its commit) to that
/// reply, the inserts the replies held, and where the shape ends.
fn live_until(
    base: &str,
    user: usize,
    at: ShapeAt,
    marker: &str,
    write: impl FnOnce() -> Instant,
) -> (Duration, usize, ShapeAt) {
    let url_base = base.to_string();
    let marker = marker.to_string();
    let reader = std::thread::spawn(move || {
        let agent = agent();
        let mut at = at;
        let mut inserts = 0;
        loop {
            let url = format!("{}&live=true", shape_url(&url_base, user, Some(&at)));
            let reply = get_admitted(&agent, &url);
            assert_eq!(reply.status, 200, "user {user}: {}", reply.body);
            let arrived = Instant::now();
            at = reply.at.expect("electric-handle and -offset");
            inserts += reply.body.matches(r#""operation":"insert""#).count();
            if reply.body.contains(&marker) {
                return (arrived, inserts, at);
            }
        }
    });
    // Long enough for the live request to park on the server.
    std::thread::sleep(Duration::from_millis(30));
    let committed = write();
    let (arrived, inserts, at) = reader.join().expect("live reader");
    (arrived.saturating_duration_since(committed), inserts, at)
}

/// `pg_lsn - pg_lsn` is numeric; as text it has no fraction.
fn lsn_bytes(s: &str) -> u64 {
    s.split('.')
        .next()
        .unwrap()
        .parse()
        .expect("an LSN byte count")
}

/// Runs `writes` task updates (and a membership change per transaction)
/// and waits until the server confirmed them durable; changes per second.
fn write_until_durable(
    pg: &mut postgres::Client,
    users: usize,
    writes: usize,
    round: usize,
) -> f64 {
    let projects = users;
    let tasks = projects * TASKS_PER_PROJECT;
    let started = Instant::now();
    let mut changes = 0;
    let mut txn = 0;
    while changes < writes {
        let first = (txn * 7919 + round * 104_729) % tasks;
        // One membership in, and the one added two transactions before
        // out, per transaction: the dependency moves with the writes.
        let churn = |txn: usize| {
            let user = (txn * 31 + round) % users;
            (user, (user + 100 + txn % 50) % projects)
        };
        let (user, project) = churn(txn);
        let leave = match txn.checked_sub(2).map(churn) {
            Some((user, project)) => {
                format!("DELETE FROM members WHERE user_id = {user} AND project_id = {project};")
            }
            None => String::new(),
        };
        let sql = format!(
            "BEGIN;
             UPDATE tasks SET title = 'r{round}t{txn}' WHERE id >= {first} AND id < {first} + {TXN_ROWS};
             INSERT INTO members VALUES ({user}, {project}) ON CONFLICT DO NOTHING;
             {leave}
             COMMIT;"
        );
        pg.batch_execute(&sql).expect("write transaction");
        changes += TXN_ROWS.min(tasks - first) + 2;
        txn += 1;
    }
    let target = lsn_bytes(
        pg.query_one(
            "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::text",
            &[],
        )
        .expect("insert position")
        .get(0),
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let row = pg
            .query_one(
                "SELECT COALESCE(confirmed_flush_lsn - '0/0'::pg_lsn, 0)::text FROM pg_replication_slots WHERE slot_name = $1",
                &[&SLOT],
            )
            .expect("slot position");
        if lsn_bytes(row.get(0)) >= target {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server never confirmed the writes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    changes as f64 / started.elapsed().as_secs_f64()
}

/// Server RSS once it has settled (the allocator returns freed pages
/// lazily: the smallest of a few readings).
fn settled_rss_kib(server: &Server) -> u64 {
    let mut least = u64::MAX;
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(400));
        least = least.min(server.rss_kib());
    }
    least
}

pub fn run(args: Args) -> String {
    let Args {
        users,
        samples,
        writes,
        values,
    } = args;
    let (bin, _version) = crate::server::server_binary(None, None);
    let dir =
        std::env::temp_dir().join(format!("shapeshard-subquery-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut options = DevPgOptions::default();
    options.settings.push(("fsync".into(), "off".into()));
    options.settings.push(("autovacuum".into(), "off".into()));
    let pg_server = DevPostgres::start(&dir.join("pg"), &options).expect("start Postgres");
    let url = pg_server.url("postgres");
    let mut pg = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let projects = users;
    pg.batch_execute(&format!(
        "CREATE TABLE members (user_id int, project_id int, PRIMARY KEY (user_id, project_id));
         CREATE INDEX ON members (project_id);
         CREATE TABLE tasks (id int PRIMARY KEY, project_id int NOT NULL, title text NOT NULL);
         CREATE INDEX ON tasks (project_id);
         CREATE TABLE big_set (v int PRIMARY KEY);
         INSERT INTO members SELECT u, (u + d) % {projects} FROM generate_series(0, {users} - 1) u,
             unnest(ARRAY[0, 1, 7]) d;
         INSERT INTO tasks SELECT g, g / {TASKS_PER_PROJECT}, 'task ' || g
             FROM generate_series(0, {projects} * {TASKS_PER_PROJECT} - 1) g;
         INSERT INTO big_set SELECT 100000000 + g FROM generate_series(1, {values}) g;"
    ))
    .expect("fixture");
    pg.batch_execute("ANALYZE").expect("analyze");

    let port = free_port().expect("a free port");
    let config = ServerConfig::new(&bin, &url, port, &dir.join("server"))
        .log_level("error")
        .args([
            "--status-interval-ms",
            "20",
            "--max-concurrent-requests",
            r#"{"initial": 100000, "existing": 100000}"#,
        ]);
    let server = Server::start(&config, &dir.join("server.log"));
    let base = server.base.clone();

    // The writes with no shape: what the server's ingest and Postgres cost
    // alone, the limit for the same writes with every shape live.
    let unshaped = write_until_durable(&mut pg, users, writes, 0);
    eprintln!("writes with no shape: {unshaped:.0} changes/s");

    // A fresh server's first shapes pay its fixed costs (I/O buffers
    // touched for the first time, maps growing): measured apart, with
    // one-row shapes on a table the writes below never touch, so the
    // per-shape figures below are what one more shape costs.
    let rss_fresh = settled_rss_kib(&server);
    for_each("warm-up shapes created", 0..users, 8, |agent, k| {
        let url = format!(
            "{base}/v1/shape?table=big_set&offset=-1&where={}",
            crate::bench::encode(&format!("v = {}", 100_000_001 + k))
        );
        let reply = get_admitted(agent, &url);
        assert_eq!(reply.status, 200, "warm-up shape {k}: {}", reply.body);
    });
    let rss_empty = settled_rss_kib(&server);
    let per_warm_up = (rss_empty.saturating_sub(rss_fresh) * 1024) as f64 / users as f64;
    eprintln!("{users} warm-up shapes: {per_warm_up:.0} B RSS each");

    // One shape per user.
    let started = Instant::now();
    let mut created = Histogram::<u64>::new(3).unwrap();
    let shapes: Vec<(u64, ShapeAt)> = for_each("created", 0..users, 8, |agent, user| {
        let t = Instant::now();
        let reply = get_admitted(agent, &shape_url(&base, user, None));
        assert_eq!(
            reply.status, 200,
            "creating user {user}'s shape: {}",
            reply.body
        );
        (
            t.elapsed().as_micros() as u64,
            reply.at.expect("electric-handle and -offset"),
        )
    });
    let creation_seconds = started.elapsed().as_secs_f64();
    for (micros, _) in &shapes {
        created.record(*micros).unwrap();
    }
    let rss_shapes = settled_rss_kib(&server);
    let per_shape = (rss_shapes.saturating_sub(rss_empty) * 1024) as f64 / users as f64;
    eprintln!("{users} shapes in {creation_seconds:.1}s, {per_shape:.0} B RSS each");
    // The same number of plain shapes of the same size (`project_id = k`,
    // 4 rows): what any built shape costs, beside which the subquery's
    // share shows.
    for_each("plain shapes created", 0..users, 8, |agent, k| {
        let url = format!(
            "{base}/v1/shape?table=tasks&offset=-1&where={}",
            crate::bench::encode(&format!("project_id = {k}"))
        );
        let reply = get_admitted(agent, &url);
        assert_eq!(reply.status, 200, "plain shape {k}: {}", reply.body);
    });
    let rss_plain = settled_rss_kib(&server);
    let per_plain = (rss_plain.saturating_sub(rss_shapes) * 1024) as f64 / users as f64;
    eprintln!("{users} plain shapes: {per_plain:.0} B RSS each");

    // Move-in and move-out latency, one user at a time, every shape live.
    let agent = agent();
    let mut move_in = Histogram::<u64>::new(3).unwrap();
    let mut move_out = Histogram::<u64>::new(3).unwrap();
    let mut failures = 0;
    for s in 0..samples {
        let user = (s * 7919) % users;
        let project = (user + projects / 2 + s) % projects;
        let at = catch_up(&agent, &base, user, shapes[user].1.clone());
        let mut pg_in = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        let (took, inserts, at) = live_until(&base, user, at, "snapshot-end", || {
            pg_in
                .batch_execute(&format!("INSERT INTO members VALUES ({user}, {project})"))
                .expect("membership");
            Instant::now()
        });
        move_in.record(took.as_micros() as u64).unwrap();
        // The move-in brings exactly the project's tasks.
        if inserts != TASKS_PER_PROJECT {
            failures += 1;
            crate::report::failure(format!(
                "user {user}: the move-in of project {project} brought {inserts} rows, not {TASKS_PER_PROJECT}"
            ));
        }
        let (took, inserts, _) = live_until(&base, user, at, "move-out", || {
            pg_in
                .batch_execute(&format!(
                    "DELETE FROM members WHERE user_id = {user} AND project_id = {project}"
                ))
                .expect("membership");
            Instant::now()
        });
        move_out.record(took.as_micros() as u64).unwrap();
        if inserts != 0 {
            failures += 1;
            crate::report::failure(format!("user {user}: a move-out brought rows"));
        }
    }

    // Write throughput with every shape live.
    let shaped = write_until_durable(&mut pg, users, writes, 1);
    eprintln!("writes with {users} membership shapes: {shaped:.0} changes/s");

    // A SIGKILL with every shape live: each resumes with its handle once
    // its memberships are read again.
    let mut server = server;
    server.kill();
    let killed = Instant::now();
    let mut server = Server::spawn(&config, &dir.join("server.log"));
    let active = server.wait_active(Duration::from_secs(120)) - killed;
    let mut resumed = 0;
    let mut lost = 0;
    let mut moved_again = Duration::ZERO;
    for s in 0..samples.min(50) {
        let user = (s * 104_729 + 13) % users;
        let project = (user + projects / 3 + s) % projects;
        let reply = get_admitted(&agent, &shape_url(&base, user, Some(&shapes[user].1)));
        if reply.status != 200 {
            lost += 1;
            crate::report::failure(format!(
                "user {user}: {} after the SIGKILL, not its shape resumed: {}",
                reply.status, reply.body
            ));
            continue;
        }
        resumed += 1;
        let at = catch_up(&agent, &base, user, shapes[user].1.clone());
        let mut pg_in = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        let (_, inserts, _) = live_until(&base, user, at, "snapshot-end", || {
            pg_in
                .batch_execute(&format!(
                    "INSERT INTO members VALUES ({user}, {project}) ON CONFLICT DO NOTHING"
                ))
                .expect("membership");
            Instant::now()
        });
        moved_again = killed.elapsed();
        if inserts != TASKS_PER_PROJECT {
            failures += 1;
            crate::report::failure(format!(
                "user {user}: the move-in after the restart brought {inserts} rows"
            ));
        }
    }
    failures += lost;
    eprintln!(
        "SIGKILL: active after {active:.1?}, {resumed} sampled shapes resumed, the last moved again {moved_again:.1?} after the kill"
    );

    // Memory per dependency value: one shape whose subquery selects
    // `values` values (its snapshot is empty: no task has such a project).
    let rss_before_big = settled_rss_kib(&server);
    let big = get_admitted(
        &agent,
        &format!(
            "{base}/v1/shape?table=tasks&offset=-1&where={}",
            crate::bench::encode("project_id IN (SELECT v FROM big_set)")
        ),
    );
    assert_eq!(big.status, 200, "{}", big.body);
    // Writes take the shard past the shape's snapshot: it reads the
    // shard's shared truth from then on, as it will at rest.
    let pass_snapshots = |pg: &mut postgres::Client| {
        for _ in 0..3 {
            pg.batch_execute("UPDATE tasks SET title = title WHERE id = 0")
                .expect("a write");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    pass_snapshots(&mut pg);
    let rss_big = settled_rss_kib(&server);
    let per_value = (rss_big.saturating_sub(rss_before_big) * 1024) as f64 / values as f64;
    eprintln!("{values} dependency values: {per_value:.0} B RSS each");

    // More shapes with the same subquery (another outer where each): a
    // shard keeps one truth per subquery definition, so each more shape
    // on a shard that has it costs its client view only. Writes let every
    // shape pass its snapshot's position and join.
    let twins = 4;
    for t in 0..twins {
        let twin = get_admitted(
            &agent,
            &format!(
                "{base}/v1/shape?table=tasks&offset=-1&where={}",
                crate::bench::encode(&format!(
                    "project_id IN (SELECT v FROM big_set) AND id >= {t}"
                ))
            ),
        );
        assert_eq!(twin.status, 200, "{}", twin.body);
    }
    pass_snapshots(&mut pg);
    let rss_twins = settled_rss_kib(&server);
    let per_twin_value =
        (rss_twins.saturating_sub(rss_big) * 1024) as f64 / (values * twins) as f64;
    // All of them together: memory one step frees and the next reuses
    // cancels out.
    let all_shapes_value = (rss_twins.saturating_sub(rss_before_big) * 1024) as f64 / values as f64;
    let all_shapes = twins + 1;
    let metrics = server.metrics();
    let total = |name: &str| crate::server::series(&metrics, name).iter().sum::<u64>();
    let (shared, readers) = (
        total("shapeshard_subquery_dependencies_shared"),
        total("shapeshard_subquery_dependency_readers"),
    );
    eprintln!(
        "{twins} more shapes on the same {values} values: {per_twin_value:.0} B RSS per value each; \
         {shared} shared truths, {readers} readers"
    );

    let row = |name: &str, h: &Histogram<u64>| {
        format!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            h.len(),
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0,
            h.mean() / 1000.0
        )
    };
    crate::report::histogram("subquery-move-in", &move_in);
    crate::report::histogram("subquery-move-out", &move_out);
    crate::report::histogram("subquery-create", &created);
    crate::report::percentile_plot(
        "subquery",
        "membership moves: commit → live client",
        &[("move-in", &move_in), ("move-out", &move_out)],
    );
    crate::report::headline(
        crate::report::Headline::latency(
            "subquery",
            &format!("move-in, commit → live client, p99 ({users} membership shapes)"),
            move_in.value_at_quantile(0.99),
            None,
            "report (issue 17)",
        )
        .with_errors(failures),
    );
    crate::report::headline(crate::report::Headline::rate(
        "subquery",
        &format!("writes until durable with {users} membership shapes"),
        shaped,
        "changes/s",
        Some(("the same writes, no shape", unshaped)),
        "report (issue 17)",
    ));
    crate::report::headline(crate::report::Headline {
        workload: "subquery".into(),
        measure: format!("RSS per dependency value ({values} values, one shape)"),
        ours: per_value,
        unit: "bytes".into(),
        limit: None,
        target: "Electric 1.7.4: ~288 (275 MiB per 1M values)".into(),
        lower_is_better: true,
        errors: 0,
    });
    let report = format!(
        "# Subquery shapes: moves, writes and memory\n\n{}\n\n\
         {users} users, one shape each: `tasks WHERE project_id IN (SELECT project_id FROM members WHERE user_id = $1)` \
         (the user as a bound parameter). Every user is a member of {MEMBERSHIPS} projects, a project has {TASKS_PER_PROJECT} tasks. \
         Shapes created 8 at a time in {creation_seconds:.1} s (p50 {:.1} ms, p99 {:.1} ms per creation).\n\n\
         ## Moves: commit → a parked live request answers\n\n\
         A user's shape is caught up, a live request parks, then a membership for a project with {TASKS_PER_PROJECT} tasks is \
         inserted (move-in: the `move-in` event, the rows from a move-in query in a fresh `REPEATABLE READ` snapshot, \
         `snapshot-end`), then deleted (one `move-out` event). Latency is from the commit's return to the live reply holding \
         the marker; the client runs on the same two cores.\n\n\
         | move | samples | p50 ms | p99 ms | max ms | mean ms |\n|---|---|---|---|---|---|\n{}\n{}\n\n\
         ## Writes until durable\n\n\
         {writes} changes in transactions of {TXN_ROWS} task updates, each also adding one membership and removing one \
         (every transaction moves two users' shapes), until `confirmed_flush_lsn` reaches the last commit.\n\n\
         | shapes | changes/s |\n|---|---|\n| none | {unshaped:.0} |\n| {users} membership shapes | {shaped:.0} |\n\n\
         ## SIGKILL with every shape live\n\n\
         The server is killed and started again on its storage: active (replication streaming) {:.2} s after the kill; \
         {resumed} of {} sampled users' shapes answered with their handle (no 409: durable client views, memberships \
         read again), each then got a move-in on the same stream; the last of those arrived {:.2} s after the kill.\n\n\
         ## Memory\n\n\
         Measured after {users} warm-up shapes (one row each, on a table the writes do not touch), which paid \
         a fresh server's fixed costs: {per_warm_up:.0} B each.\n\n\
         | what | RSS bytes each |\n|---|---|\n| membership shape (3 values, 12 rows) | {per_shape:.0} |\n\
         | plain shape `project_id = k` (4 rows), for comparison | {per_plain:.0} |\n\
         | dependency value ({values} values in one shape's subquery; empty snapshot) | {per_value:.0} |\n\
         | dependency value, each of {twins} more shapes with the same subquery | {per_twin_value:.0} |\n\
         | dependency value, all {all_shapes} shapes with that subquery together | {all_shapes_value:.0} |\n\n\
         Electric 1.7.4 reports ~275 MiB per 1M dependency values (~288 B each). A shape keeps two views of its \
         dependency: the truth (a count per value) and the values its log reflects. The truth is kept once per \
         shard for every shape with the same subquery (same table, where and parameters), and at rest a shape \
         reading it keeps its log's view as the values that differ from it (none at rest): at the end, \
         {shared} shared truths had {readers} readers (`/metrics`). A shape with more than 16,384 values is not \
         indexed by them (it evaluates every row of its table): the index cost about 200 B per value. See \
         `docs/design/subqueries-next.md`.\n",
        Machine::describe(),
        created.value_at_quantile(0.5) as f64 / 1000.0,
        created.value_at_quantile(0.99) as f64 / 1000.0,
        row("move-in", &move_in),
        row("move-out", &move_out),
        active.as_secs_f64(),
        samples.min(50),
        moved_again.as_secs_f64(),
    );
    let mut server = server;
    server.stop();
    drop(pg);
    drop(pg_server);
    let _ = std::fs::remove_dir_all(&dir);
    report
}
