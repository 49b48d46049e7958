//! Shape creation under a thundering herd: one creation (and one snapshot
//! query) per definition however many ask at once, the same answer for all,
//! failures shared and retryable, and admission control that sheds load
//! without losing anyone.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::harness::database;
use crate::server::{Reply, Server};

/// `n` GETs released together; the replies in request order.
fn herd(server: &Server, urls: Vec<String>) -> Vec<Reply> {
    let barrier = Arc::new(Barrier::new(urls.len()));
    let base = server.base_url();
    let threads: Vec<_> = urls
        .into_iter()
        .map(|url| {
            let (barrier, base) = (barrier.clone(), base.clone());
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    let agent = ureq::AgentBuilder::new()
                        .timeout(Duration::from_secs(120))
                        .build();
                    barrier.wait();
                    Reply::from(agent.get(&format!("{base}{url}")).call())
                })
                .unwrap()
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn a_thousand_requests_for_one_new_shape_make_one_snapshot() {
    let db = database("herd");
    let mut pg = db.client();
    pg.batch_execute(
        "CREATE TABLE herd (id int PRIMARY KEY, v text);
         INSERT INTO herd SELECT g, 'v' || g FROM generate_series(1, 500) g;",
    )
    .unwrap();
    for i in 0..20 {
        pg.batch_execute(&format!(
            "CREATE TABLE t{i} (id int PRIMARY KEY); INSERT INTO t{i} VALUES (1)"
        ))
        .unwrap();
    }
    let server = Server::start(
        &db,
        &[(
            "ELECTRIC_MAX_CONCURRENT_REQUESTS",
            r#"{"initial": 5000, "existing": 5000}"#,
        )],
    );

    let replies = herd(
        &server,
        vec!["/v1/shape?table=herd&offset=-1".to_string(); 1000],
    );
    let first = &replies[0];
    assert_eq!(first.status, 200, "{}", first.body);
    let handle = first.header("electric-handle").unwrap();
    for reply in &replies {
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.header("electric-handle"), Some(handle));
        assert_eq!(reply.body, first.body);
    }
    assert_eq!(first.json().as_array().unwrap().len(), 501);
    assert_eq!(server.metric("shapeshard_shape_creations_started_total"), 1);
    assert_eq!(server.metric("shapeshard_snapshots_started_total"), 1);

    // 200 requests over 20 new shapes: 20 creations.
    let urls: Vec<String> = (0..200)
        .map(|n| format!("/v1/shape?table=t{}&offset=-1", n % 20))
        .collect();
    let replies = herd(&server, urls);
    for (n, reply) in replies.iter().enumerate() {
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body, replies[n % 20].body);
        assert_eq!(
            reply.header("electric-handle"),
            replies[n % 20].header("electric-handle")
        );
    }
    assert_eq!(
        server.metric("shapeshard_shape_creations_started_total"),
        21
    );
    assert_eq!(server.metric("shapeshard_snapshots_started_total"), 21);
    assert_eq!(server.metric("shapeshard_shape_creations_in_flight"), 0);

    // A creation that fails fails for every waiter, and is retried later.
    let replies = herd(
        &server,
        vec!["/v1/shape?table=later&offset=-1".to_string(); 100],
    );
    for reply in &replies {
        assert_eq!(reply.status, 400);
        assert_eq!(reply.body, replies[0].body);
    }
    assert!(
        replies[0].body.contains("does not exist"),
        "{}",
        replies[0].body
    );
    let failed = server.metric("shapeshard_shape_creations_failed_total");
    assert!(failed >= 1, "{failed}");
    pg.batch_execute("CREATE TABLE later (id int PRIMARY KEY); INSERT INTO later VALUES (7)")
        .unwrap();
    let retried = server.get("/v1/shape?table=later&offset=-1");
    assert_eq!(retried.status, 200, "{}", retried.body);
    assert_eq!(retried.json()[0]["value"]["id"], "7");
}

#[test]
fn over_budget_initial_requests_get_503_and_all_sync_on_retry() {
    let db = database("overload");
    let mut pg = db.client();
    for i in 0..100 {
        pg.batch_execute(&format!(
            "CREATE TABLE o{i} (id int PRIMARY KEY); INSERT INTO o{i} SELECT generate_series(1, 200)"
        ))
        .unwrap();
    }
    let server = Server::start(
        &db,
        &[
            (
                "ELECTRIC_MAX_CONCURRENT_REQUESTS",
                r#"{"initial": 10, "existing": 1000}"#,
            ),
            ("SHAPESHARD_SNAPSHOT_POOL_SIZE", "1"),
        ],
    );
    let urls: Vec<String> = (0..100)
        .map(|i| format!("/v1/shape?table=o{i}&offset=-1"))
        .collect();
    let replies = herd(&server, urls.clone());
    let rejected: Vec<&Reply> = replies.iter().filter(|r| r.status == 503).collect();
    assert!(!rejected.is_empty(), "a budget of 10 must shed some of 100");
    for reply in &rejected {
        let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
        assert!((6..=10).contains(&retry), "{retry}");
        assert_eq!(reply.json()["code"], "concurrent_request_limit_exceeded");
        assert_eq!(
            reply.json()["message"],
            "Concurrent initial request limit exceeded (limit: 10), please retry"
        );
    }
    assert!(server.metric("shapeshard_requests_rejected_initial_total") >= rejected.len() as u64);
    // Nobody is lost: every rejected client gets its shape on retry
    // (without the retry-after wait, to keep the test short).
    for (i, reply) in replies.iter().enumerate() {
        let mut reply = Reply {
            status: reply.status,
            headers: reply.headers.clone(),
            body: reply.body.clone(),
        };
        let mut attempts = 0;
        while reply.status == 503 {
            attempts += 1;
            assert!(attempts < 200, "o{i} never admitted");
            std::thread::sleep(Duration::from_millis(20));
            reply = server.get(&urls[i]);
        }
        assert_eq!(reply.status, 200, "o{i}: {}", reply.body);
        assert_eq!(reply.json().as_array().unwrap().len(), 201, "o{i}");
    }
}
