//! The oracle property test: random mutation batches over a small table
//! hierarchy, shapes with generated where clauses followed by strict
//! clients, server restarts (graceful and SIGKILL) and client restarts in
//! between; after every batch each client's view must equal the oracle
//! `SELECT` on Postgres. Any failure names the seed that replays it.
//!
//! Knobs (environment): SEED, SHAPE_COUNT, BATCH_COUNT, TXNS_PER_BATCH,
//! MUTATIONS_PER_TXN, RESTART_SERVER_EVERY, RESTART_TYPE
//! (graceful|brutal|rolling|alternate), RESTART_CLIENT_EVERY. Defaults are the CI
//! run: 20 shapes × 10 batches × 10 × 10, server restarts every 3 batches
//! alternating graceful and brutal.

use std::time::Duration;

use crate::harness::{database, knob, knob_text, sorted_texts, url_encode};
use crate::rng::Rng;
use crate::server::Server;
use crate::shape_client::ShapeClient;

const KINDS: &[&str] = &["a", "b", "c", "d"];
const NAMES: &[&str] = &["alpha", "beta", "gamma", "delta", "alps", "bet"];

/// A where clause over `parent (id, name, kind, n)` or
/// `child (id, parent_id, v, tag)`, and the columns to compare.
fn generate_shape(rng: &mut Rng) -> (&'static str, String) {
    if rng.below(2) == 0 {
        let k = rng.below(20);
        let clause = match rng.below(8) {
            0 => format!("n = {k}"),
            1 => format!("n > {k}"),
            2 => format!("name LIKE '{}%'", &rng.pick(NAMES)[..2]),
            3 => format!("n BETWEEN {k} AND {}", k + rng.below(8)),
            4 => format!("kind IN ('{}', '{}')", rng.pick(KINDS), rng.pick(KINDS)),
            5 => format!("NOT (n < {k})"),
            6 => format!(
                "(n = {k} OR n = {}) AND kind <> '{}'",
                rng.below(20),
                rng.pick(KINDS)
            ),
            _ => format!("name ILIKE '%{}' OR n IS NULL", &rng.pick(NAMES)[2..]),
        };
        ("parent", clause)
    } else {
        let k = rng.below(30);
        let clause = match rng.below(6) {
            0 => format!("parent_id = {}", 1 + rng.below(15)),
            1 => format!("v >= {k}"),
            2 => format!("tag = '{}'", rng.pick(KINDS)),
            3 => format!(
                "parent_id IN ({}, {}, {})",
                1 + rng.below(15),
                1 + rng.below(15),
                1 + rng.below(15)
            ),
            4 => format!("v BETWEEN {k} AND {} AND tag <> 'a'", k + 10),
            _ => format!("NOT (tag = '{}') OR v IS NULL", rng.pick(KINDS)),
        };
        ("child", clause)
    }
}

fn mutation(rng: &mut Rng) -> String {
    let id = 1 + rng.below(40);
    match rng.below(7) {
        0 => format!(
            "INSERT INTO parent VALUES ({id}, '{}', '{}', {}) ON CONFLICT (id) DO NOTHING",
            rng.pick(NAMES),
            rng.pick(KINDS),
            rng.below(20)
        ),
        1 => format!("UPDATE parent SET n = {} WHERE id = {id}", rng.below(20)),
        2 => format!(
            "UPDATE parent SET name = '{}', kind = '{}' WHERE id = {id}",
            rng.pick(NAMES),
            rng.pick(KINDS)
        ),
        3 => format!("DELETE FROM parent WHERE id = {id}"),
        4 => format!(
            "INSERT INTO child VALUES ({}, {}, {}, '{}') ON CONFLICT (id) DO NOTHING",
            rng.below(80),
            1 + rng.below(15),
            rng.below(40),
            rng.pick(KINDS)
        ),
        5 => format!(
            "UPDATE child SET v = {}, tag = '{}' WHERE id = {}",
            rng.below(40),
            rng.pick(KINDS),
            rng.below(80)
        ),
        // A key change: delete + insert for every shape that has the row.
        _ => {
            let to = 80 + rng.below(40);
            format!(
                "UPDATE child SET id = {to} WHERE id = {} AND NOT EXISTS (SELECT 1 FROM child WHERE id = {to})",
                rng.below(80)
            )
        }
    }
}

fn query_string(table: &str, clause: &str) -> String {
    format!("table={table}&where={}", url_encode(clause))
}

#[test]
fn shapes_match_the_oracle_across_batches_and_restarts() {
    let seed = knob("SEED", 0x5eed_0001);
    let shape_count = knob("SHAPE_COUNT", 20) as usize;
    let batches = knob("BATCH_COUNT", 10);
    let txns = knob("TXNS_PER_BATCH", 10);
    let mutations = knob("MUTATIONS_PER_TXN", 10);
    let restart_every = knob("RESTART_SERVER_EVERY", 3);
    let client_restart_every = knob("RESTART_CLIENT_EVERY", 0);
    let restart_type = knob_text("RESTART_TYPE", "alternate");
    let replay = format!(
        "replay with SEED={seed} SHAPE_COUNT={shape_count} BATCH_COUNT={batches} TXNS_PER_BATCH={txns} MUTATIONS_PER_TXN={mutations} RESTART_SERVER_EVERY={restart_every} RESTART_TYPE={restart_type} RESTART_CLIENT_EVERY={client_restart_every}"
    );
    let mut rng = Rng(seed);

    let db = database("oracle");
    let mut pg = db.client();
    pg.batch_execute(
        "CREATE TABLE parent (id int PRIMARY KEY, name text NOT NULL, kind text NOT NULL, n int);
         CREATE TABLE child (id int PRIMARY KEY, parent_id int NOT NULL, v int, tag text NOT NULL);",
    )
    .unwrap();
    for _ in 0..60 {
        pg.batch_execute(&mutation(&mut rng)).unwrap();
    }
    let mut server = Server::start(
        &db,
        &[
            ("ELECTRIC_LONG_POLL_TIMEOUT", "300"),
            ("ELECTRIC_SSE_TIMEOUT", "1000"),
        ],
    );
    let shapes: Vec<(&str, String)> = (0..shape_count).map(|_| generate_shape(&mut rng)).collect();
    // Every third client follows its shape over SSE.
    let new_client = |n: usize, definition: &str| {
        if n % 3 == 1 {
            ShapeClient::sse(definition)
        } else {
            ShapeClient::new(definition)
        }
    };
    let mut sse_requests = 0;
    let mut clients: Vec<ShapeClient> = shapes
        .iter()
        .enumerate()
        .map(|(n, (table, clause))| new_client(n, &query_string(table, clause)))
        .collect();

    for batch in 1..=batches {
        for _ in 0..txns {
            let statements: Vec<String> = (0..mutations).map(|_| mutation(&mut rng)).collect();
            pg.batch_execute(&format!("BEGIN; {}; COMMIT;", statements.join("; ")))
                .unwrap_or_else(|e| panic!("{e:?}; {replay}"));
        }
        if restart_every > 0 && batch % restart_every == 0 {
            let kind = match restart_type.as_str() {
                "alternate" => ["graceful", "brutal"][((batch / restart_every) % 2) as usize],
                other => other,
            };
            match kind {
                "brutal" => server.crash_and_restart(),
                "rolling" => server.rolling_restart(),
                _ => server.graceful_restart(),
            }
        }
        if client_restart_every > 0 && batch % client_restart_every == 0 {
            for (n, client) in clients.iter_mut().enumerate() {
                sse_requests += client.sse_requests;
                *client = new_client(n, &client.definition.clone());
            }
        }
        for (n, ((table, clause), client)) in shapes.iter().zip(&mut clients).enumerate() {
            let key = if *table == "parent" {
                "id, name, kind, n"
            } else {
                "id, parent_id, v, tag"
            };
            let want = sorted_texts(
                &mut pg,
                &format!("SELECT concat_ws('|', {key}) FROM {table} WHERE {clause}"),
                &[],
            );
            let columns: Vec<&str> = key.split(", ").collect();
            client
                .converge(&server, &columns, &want, Duration::from_secs(30))
                .unwrap_or_else(|e| {
                    panic!("batch {batch}, shape {n} ({table} WHERE {clause}): {e}; {replay}")
                });
            // A subset snapshot of the shape agrees with Postgres too.
            if n % 4 == batch as usize % 4 {
                let after = rng.below(40);
                let limit = 1 + rng.below(10);
                let want = sorted_texts(
                    &mut pg,
                    &format!(
                        "SELECT id::text FROM (SELECT id FROM {table} WHERE ({clause}) AND id > {after} ORDER BY id DESC LIMIT {limit}) s"
                    ),
                    &[],
                );
                let got = subset_ids(&server, &client.definition, after, limit, batch % 2 == 0)
                    .unwrap_or_else(|e| panic!("batch {batch}, shape {n}: subset: {e}; {replay}"));
                assert_eq!(
                    got, want,
                    "batch {batch}, shape {n} ({table} WHERE {clause}): subset id > {after} ORDER BY id DESC LIMIT {limit}; {replay}"
                );
            }
        }
    }
    sse_requests += clients.iter().map(|c| c.sse_requests).sum::<usize>();
    assert!(
        shape_count < 2 || sse_requests > 0,
        "no SSE client ever read a stream; {replay}"
    );
}

/// Ids of a subset snapshot (`id > after`, newest `limit`), sorted as text;
/// over POST or GET.
fn subset_ids(
    server: &Server,
    definition: &str,
    after: u64,
    limit: u64,
    post: bool,
) -> Result<Vec<String>, String> {
    let path = format!("/v1/shape?{definition}&offset=-1");
    let reply = if post {
        crate::server::Reply::from(
            ureq::post(&server.url(&path))
                .timeout(Duration::from_secs(60))
                .send_string(&format!(
                    r#"{{"where":"id > $1","params":{{"1":"{after}"}},"order_by":"id DESC","limit":{limit}}}"#
                )),
        )
    } else {
        server.get(&format!(
            "{path}&subset__where=id%20%3E%20{after}&subset__order_by=id%20DESC&subset__limit={limit}"
        ))
    };
    if reply.status != 200 {
        return Err(format!("{} {}", reply.status, reply.body));
    }
    let mut ids: Vec<String> = reply.json()["data"]
        .as_array()
        .ok_or("no data")?
        .iter()
        .map(|row| row["value"]["id"].as_str().unwrap_or("?").to_string())
        .collect();
    ids.sort();
    Ok(ids)
}
