//! Live responses as server-sent events over real HTTP: framing, headers,
//! the one-shot answer when data is waiting, the open stream with its
//! keep-alives and timeout, and the end of a stream whose shape is deleted.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::database;
use crate::server::Server;

const SSE_TIMEOUT_MS: u64 = 4_000;
const KEEPALIVE_MS: u64 = 1_000;

/// An SSE response read line by line on a thread of its own, so the test
/// can wait for what arrives with a deadline.
struct SseStream {
    status: u16,
    headers: Vec<(String, String)>,
    lines: mpsc::Receiver<Option<String>>,
    opened: Instant,
}

impl SseStream {
    fn open(server: &Server, path_and_query: &str) -> SseStream {
        let opened = Instant::now();
        let response = match ureq::get(&server.url(path_and_query))
            .set("accept", "text/event-stream")
            .timeout(Duration::from_secs(60))
            .call()
        {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("GET {path_and_query}: {e}"),
        };
        let status = response.status();
        let headers = response
            .headers_names()
            .into_iter()
            .map(|n| {
                let v = response.header(&n).unwrap_or_default().to_string();
                (n, v)
            })
            .collect();
        let (send, lines) = mpsc::channel();
        let reader = BufReader::new(response.into_reader());
        std::thread::spawn(move || {
            for line in reader.lines() {
                match line {
                    Ok(line) => {
                        if send.send(Some(line)).is_err() {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            let _ = send.send(None);
        });
        SseStream {
            status,
            headers,
            lines,
            opened,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The next non-empty line (an event's `data:` or a comment), or None
    /// when the response ended; panics if nothing comes within `wait`.
    fn next_line(&self, wait: Duration) -> Option<String> {
        loop {
            match self.lines.recv_timeout(wait) {
                Ok(Some(line)) if line.is_empty() => continue,
                Ok(Some(line)) => return Some(line),
                Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("nothing on the SSE stream within {wait:?}")
                }
            }
        }
    }

    /// The next event's JSON, skipping keep-alive comments.
    fn next_event(&self, wait: Duration) -> serde_json::Value {
        loop {
            let line = self
                .next_line(wait)
                .expect("the stream ended before the event");
            if line.starts_with(':') {
                continue;
            }
            let data = line
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not an SSE data line: {line:?}"));
            return serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}"));
        }
    }
}

fn current_end(server: &Server, handle: &str, offset: &str) -> String {
    let reply = server.get(&format!(
        "/v1/shape?table=items&offset={offset}&handle={handle}"
    ));
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.header("electric-offset").unwrap().to_string()
}

#[test]
fn sse_one_shot_stream_keepalive_timeout_and_rotation() {
    let db = database("shape_sse");
    let mut pg = db.client();
    pg.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, title text);
         INSERT INTO items VALUES (1, 'one'), (2, 'two');",
    )
    .unwrap();
    let server = Server::start(
        &db,
        &[
            ("ELECTRIC_SSE_TIMEOUT", &SSE_TIMEOUT_MS.to_string()),
            ("SHAPESHARD_SSE_KEEPALIVE_MS", &KEEPALIVE_MS.to_string()),
        ],
    );

    let bad = server.get("/v1/shape?table=items&offset=-1&live_sse=true");
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.body,
        r#"{"message":"Invalid request","errors":{"live_sse":["can't be true unless live is also true"]}}"#
    );

    let first = server.get("/v1/shape?table=items&offset=-1");
    let handle = first.header("electric-handle").unwrap().to_string();
    let end = current_end(&server, &handle, "0_0");

    // Data already waiting: one response with it, then the end.
    pg.batch_execute("INSERT INTO items VALUES (3, 'three')")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while current_end(&server, &handle, &end) == end {
        assert!(
            Instant::now() < deadline,
            "the insert never reached the shape"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let one_shot = SseStream::open(
        &server,
        &format!("/v1/shape?table=items&offset={end}&handle={handle}&live=true&live_sse=true"),
    );
    assert_eq!(one_shot.status, 200);
    assert_eq!(one_shot.header("content-type"), Some("text/event-stream"));
    assert_eq!(one_shot.header("cache-control"), Some("public, max-age=3"));
    assert_eq!(one_shot.header("electric-handle"), Some(handle.as_str()));
    assert!(one_shot.header("electric-cursor").is_some());
    assert_eq!(one_shot.header("electric-schema"), None);
    let insert = one_shot.next_event(Duration::from_secs(5));
    assert_eq!(insert["headers"]["operation"], "insert");
    assert_eq!(insert["value"]["id"], "3");
    let up_to_date = one_shot.next_event(Duration::from_secs(5));
    assert_eq!(up_to_date["headers"]["control"], "up-to-date");
    assert_eq!(
        up_to_date["headers"]["global_last_seen_lsn"], insert["headers"]["lsn"],
        "the LSN the client resumes from is the transaction's"
    );
    assert_eq!(
        one_shot.next_line(Duration::from_secs(5)),
        None,
        "a one-shot answer ends after its data"
    );

    // Electric's client resumes an SSE stream at `<global_last_seen_lsn>_0`:
    // after a transaction of several changes that must be past all of them
    // (else it re-reads the later ones, in a loop), and still in bounds.
    let end = current_end(&server, &handle, &end);
    pg.batch_execute(
        "BEGIN; INSERT INTO items VALUES (5, 'five'); INSERT INTO items VALUES (6, 'six'); COMMIT;",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while current_end(&server, &handle, &end) == end {
        assert!(
            Instant::now() < deadline,
            "the transaction never reached the shape"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let batch = SseStream::open(
        &server,
        &format!("/v1/shape?table=items&offset={end}&handle={handle}&live=true&live_sse=true"),
    );
    let five = batch.next_event(Duration::from_secs(5));
    let six = batch.next_event(Duration::from_secs(5));
    assert_eq!(
        (five["value"]["id"].as_str(), six["value"]["id"].as_str()),
        (Some("5"), Some("6"))
    );
    assert_eq!(six["headers"]["op_position"], 2);
    let lsn: u64 = six["headers"]["lsn"].as_str().unwrap().parse().unwrap();
    let up_to_date = batch.next_event(Duration::from_secs(5));
    assert_eq!(up_to_date["headers"]["control"], "up-to-date");
    let resume: u64 = up_to_date["headers"]["global_last_seen_lsn"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(resume, lsn + 1, "resuming at <lsn>_0 would repeat id 6");
    let resumed = SseStream::open(
        &server,
        &format!("/v1/shape?table=items&offset={resume}_0&handle={handle}&live=true&live_sse=true"),
    );
    assert_eq!(resumed.status, 200, "the resume point is in bounds");
    pg.batch_execute("INSERT INTO items VALUES (7, 'seven')")
        .unwrap();
    let seven = resumed.next_event(Duration::from_secs(5));
    assert_eq!(
        seven["value"]["id"], "7",
        "nothing repeated, nothing skipped"
    );
    drop(resumed);

    // Nothing waiting: the stream opens at once and carries each change.
    let end = current_end(&server, &handle, &end);
    let stream = SseStream::open(
        &server,
        &format!("/v1/shape?table=items&offset={end}&handle={handle}&live=true&live_sse=true"),
    );
    assert!(
        stream.opened.elapsed() < Duration::from_secs(2),
        "headers come before any change"
    );
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    assert_eq!(stream.header("electric-offset"), Some(end.as_str()));
    assert_eq!(
        stream.header("etag"),
        Some(format!("\"{handle}:{end}:{end}\"").as_str())
    );
    // A stream whose client hung up is noticed at its next write (at the
    // latest its keep-alive): the resumed one above.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.metric("shapeshard_sse_streams_open") != 1 {
        assert!(Instant::now() < deadline, "a hung-up stream is still open");
        std::thread::sleep(Duration::from_millis(20));
    }
    pg.batch_execute("INSERT INTO items VALUES (4, 'four')")
        .unwrap();
    let event = stream.next_event(Duration::from_secs(3));
    assert_eq!(event["value"]["id"], "4");
    assert_eq!(
        stream.next_event(Duration::from_secs(3))["headers"]["control"],
        "up-to-date"
    );
    pg.batch_execute("UPDATE items SET title = 'FOUR' WHERE id = 4")
        .unwrap();
    let event = stream.next_event(Duration::from_secs(3));
    assert_eq!(event["headers"]["operation"], "update");
    assert_eq!(event["value"]["title"], "FOUR");
    assert_eq!(
        stream.next_event(Duration::from_secs(3))["headers"]["control"],
        "up-to-date"
    );
    // Silence: keep-alive comments, then the end at the timeout.
    let mut keepalives = 0;
    while let Some(line) = stream.next_line(Duration::from_secs(3)) {
        assert_eq!(
            line, ": keep-alive",
            "only keep-alives while nothing changes"
        );
        keepalives += 1;
    }
    let lasted = stream.opened.elapsed();
    assert!(keepalives >= 1, "no keep-alive in {lasted:?} of silence");
    assert!(
        lasted >= Duration::from_millis(SSE_TIMEOUT_MS - 200)
            && lasted < Duration::from_millis(SSE_TIMEOUT_MS + 3_000),
        "the stream should end at the SSE timeout, lasted {lasted:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while server.metric("shapeshard_sse_streams_open") != 0 {
        assert!(
            Instant::now() < deadline,
            "an ended stream is still counted open"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // A shape deleted mid-stream ends the stream; the next request is a 409.
    let end = current_end(&server, &handle, "0_0");
    let stream = SseStream::open(
        &server,
        &format!("/v1/shape?table=items&offset={end}&handle={handle}&live=true&live_sse=true"),
    );
    let deleted = server.request("DELETE", &format!("/v1/shape?table=items&handle={handle}"));
    assert_eq!(deleted.status, 202, "{}", deleted.body);
    loop {
        match stream.next_line(Duration::from_secs(3)) {
            None => break,
            Some(line) => assert_eq!(line, ": keep-alive"),
        }
    }
    assert!(
        stream.opened.elapsed() < Duration::from_millis(SSE_TIMEOUT_MS),
        "the stream ended with its shape, not at the timeout"
    );
    let after = server.get(&format!(
        "/v1/shape?table=items&offset={end}&handle={handle}&live=true&live_sse=true"
    ));
    assert_eq!(after.status, 409, "{}", after.body);
    assert_eq!(after.body, r#"[{"headers":{"control":"must-refetch"}}]"#);
    server.stop();
}

#[test]
fn many_idle_streams_share_one_watch_and_all_get_the_change() {
    let db = database("shape_sse_many");
    let mut pg = db.client();
    pg.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, title text); INSERT INTO items VALUES (1, 'one');",
    )
    .unwrap();
    let server = Server::start(
        &db,
        &[
            ("ELECTRIC_SSE_TIMEOUT", "30000"),
            ("SHAPESHARD_SSE_KEEPALIVE_MS", "1000"),
        ],
    );
    let first = server.get("/v1/shape?table=items&offset=-1");
    let handle = first.header("electric-handle").unwrap().to_string();
    let end = current_end(&server, &handle, "0_0");
    let path =
        format!("/v1/shape?table=items&offset={end}&handle={handle}&live=true&live_sse=true");
    let streams: Vec<SseStream> = (0..200).map(|_| SseStream::open(&server, &path)).collect();
    assert_eq!(server.metric("shapeshard_sse_streams_open"), 200);
    assert_eq!(
        server.metric("shapeshard_shapes_watched"),
        1,
        "200 streams of one shape cost its owner one watch"
    );
    let joined = server.metric("shapeshard_live_reads_joined_total");
    pg.batch_execute("INSERT INTO items VALUES (2, 'two')")
        .unwrap();
    for stream in &streams {
        assert_eq!(
            stream.next_event(Duration::from_secs(10))["value"]["id"],
            "2"
        );
    }
    // Woken by the same change, the streams of a shard read it once.
    let joined = server.metric("shapeshard_live_reads_joined_total") - joined;
    assert!(
        joined >= 150,
        "{joined} of 200 rounds joined another's read"
    );
    // Hung up: each is noticed at its next keep-alive, and the watch ends
    // with the last.
    drop(streams);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("shapeshard_shapes_watched") != 0
        || server.metric("shapeshard_sse_streams_open") != 0
    {
        assert!(
            Instant::now() < deadline,
            "closed streams still hold their watch"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop();
}
