//! The server behind a real caching proxy: nginx (Debian's package, installed
//! here when missing and running as root) started from the shipped
//! `deploy/nginx.conf` with only its addresses and paths changed. Initial
//! syncs are cache hits, concurrent long-polls collapse into one upstream
//! request, SSE streams pass through unbuffered, and clients come through
//! a 409 correct.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::harness::{database, sorted_texts};
use crate::nginx::Nginx;
use crate::server::{Reply, Server};
use crate::shape_client::{Endpoint, ShapeClient};

#[test]
fn behind_nginx_hits_collapses_streams_and_recovers() {
    let db = database("proxy_cache");
    let mut pg = db.client();
    pg.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, title text);
         INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 20) g;",
    )
    .unwrap();
    let server = Server::start(&db, &[("ELECTRIC_SSE_TIMEOUT", "10000")]);
    let port: u16 = server
        .base_url()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let nginx = Nginx::start(
        "nginx.conf",
        &[("127.0.0.1:3000", format!("127.0.0.1:{port}"))],
    );
    let want = || {
        sorted_texts(
            &mut db.client(),
            "SELECT concat_ws('|', id, title) FROM items",
            &[],
        )
    };

    // A second client's initial sync is a cache hit, byte for byte.
    let first = nginx.get("/v1/shape?table=items&offset=-1");
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.header("x-cache-status"), Some("MISS"));
    let second = nginx.get("/v1/shape?table=items&offset=-1");
    assert_eq!(second.header("x-cache-status"), Some("HIT"));
    assert_eq!(second.body, first.body);
    let mut client = ShapeClient::new("table=items");
    client.sync(&nginx).unwrap();
    client
        .converge(&nginx, &["id", "title"], &want(), Duration::from_secs(20))
        .unwrap();
    let handle = client.handle.clone().unwrap();

    // 100 identical live long-polls (same offset and cursor, as clients in
    // step have): one reaches the server, every one gets the change.
    let live = format!(
        "/v1/shape?table=items&offset={}&handle={handle}&live=true&cursor=1",
        client.offset
    );
    let before = nginx.access_log().len();
    let clients = 100;
    let barrier = Arc::new(Barrier::new(clients + 1));
    let waiting: Vec<_> = (0..clients)
        .map(|_| {
            let url = nginx.url(&live);
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                Reply::from(ureq::get(&url).timeout(Duration::from_secs(60)).call())
            })
        })
        .collect();
    barrier.wait();
    std::thread::sleep(Duration::from_millis(1_000));
    pg.batch_execute("INSERT INTO items VALUES (21, 'new')")
        .unwrap();
    for reply in waiting {
        let reply = reply.join().unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(
            reply.body.contains("\"new\""),
            "a live reply without the change: {}",
            reply.body
        );
    }
    let log = nginx.access_log();
    let upstream: Vec<&String> = log[before..]
        .iter()
        .filter(|l| l.contains("live=true") && !l.contains("cache=HIT"))
        .collect();
    assert_eq!(
        upstream.len(),
        1,
        "100 collapsed long-polls should cost one upstream request: {upstream:#?}"
    );

    // SSE through nginx: the change arrives while the stream is open.
    client
        .converge(&nginx, &["id", "title"], &want(), Duration::from_secs(20))
        .unwrap();
    let sse_url = nginx.url(&format!(
        "/v1/shape?table=items&offset={}&handle={handle}&live=true&live_sse=true",
        client.offset
    ));
    let (send, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let response = ureq::get(&sse_url)
            .timeout(Duration::from_secs(60))
            .call()
            .unwrap();
        for line in std::io::BufReader::new(response.into_reader()).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let committed = Instant::now();
    pg.batch_execute("UPDATE items SET title = 'streamed' WHERE id = 3")
        .unwrap();
    let deadline = committed + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("the change did not come through nginx within 5 s (buffered?)");
        if line.contains("\"streamed\"") {
            break;
        }
    }

    // The shape goes away: clients through the cache get the 409, start
    // over (with a cache-buster, as Electric's client does) and end right.
    let deleted = server.request("DELETE", &format!("/v1/shape?table=items&handle={handle}"));
    assert_eq!(deleted.status, 202);
    pg.batch_execute("INSERT INTO items VALUES (22, 'after the 409')")
        .unwrap();
    let mut saw_409 = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match client.poll(&nginx) {
            Ok(()) => {}
            Err(e) if e.contains("→ 409") => {
                saw_409 = true;
                client = ShapeClient::new("table=items&cache-buster=after-409");
                client.sync(&nginx).unwrap();
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(saw_409, "the client never learnt its shape was gone");
    assert_ne!(client.handle.as_deref(), Some(handle.as_str()));
    client
        .converge(&nginx, &["id", "title"], &want(), Duration::from_secs(30))
        .unwrap();
    drop(nginx);
    server.stop();
}
