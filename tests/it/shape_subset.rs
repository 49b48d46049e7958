//! Subset snapshots and the other request-level parity details over real
//! HTTP: GET `subset__*` and POST bodies, their body and headers, every
//! error with Electric's status and body, `queryable_columns`, methods,
//! server headers and the secret check on every spelling of the path.

use std::time::Duration;

use crate::harness::database;
use crate::server::{Reply, Server};

fn post(server: &Server, path_and_query: &str, body: &str) -> Reply {
    Reply::from(
        ureq::post(&server.url(path_and_query))
            .set("content-type", "application/json")
            .timeout(Duration::from_secs(60))
            .send_string(body),
    )
}

fn ids(reply: &Reply) -> Vec<String> {
    reply.json()["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data in {}", reply.body))
        .iter()
        .map(|row| row["value"]["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn subset_snapshots_over_get_and_post() {
    let db = database("shape_subset");
    let mut pg = db.client();
    pg.batch_execute(
        "CREATE TABLE items (id int8 PRIMARY KEY, title text, n int, secret text);
         INSERT INTO items SELECT g, 'item ' || g, g % 4, 's' FROM generate_series(1, 40) g;",
    )
    .unwrap();
    let server = Server::start(&db, &[]);
    let shape = "/v1/shape?table=items&where=n%20%3C%3E%200";
    let first = server.get(&format!("{shape}&offset=-1"));
    assert_eq!(first.status, 200);
    let handle = first.header("electric-handle").unwrap().to_string();

    // GET: the shape's where AND the subset's, ordered, paged.
    let get = server.get(&format!(
        "{shape}&offset=-1&subset__where=id%20%3E%20%241&subset__params=%7B%221%22%3A%2210%22%7D\
         &subset__order_by=id%20DESC&subset__limit=3&subset__offset=1"
    ));
    assert_eq!(get.status, 200, "{}", get.body);
    assert_eq!(
        ids(&get),
        ["38", "37", "35"],
        "n <> 0 drops 40 and 36; offset 1 skips 39"
    );
    assert_eq!(get.header("electric-snapshot"), Some("true"));
    assert_eq!(get.header("cache-control"), Some("no-cache"));
    assert_eq!(get.header("electric-handle"), Some(handle.as_str()));
    assert_eq!(get.header("electric-offset"), Some("-1"));
    assert!(get.header("electric-schema").unwrap().contains("\"int8\""));
    assert_eq!(get.header("etag"), None);
    assert!(
        get.body.starts_with(r#"{"metadata":{"database_lsn":""#)
            && get.body.contains(r#"}, "data": ["#),
        "Electric's body layout: {}",
        get.body
    );
    let body = get.json();
    let mark = body["metadata"]["snapshot_mark"].as_u64().unwrap();
    for key in ["xmin", "xmax", "database_lsn"] {
        let value = body["metadata"][key].as_str().unwrap();
        assert!(value.parse::<u64>().is_ok(), "{key} = {value}");
    }
    assert!(body["metadata"]["xip_list"].is_array());
    for row in body["data"].as_array().unwrap() {
        assert_eq!(row["headers"]["snapshot_mark"].as_u64(), Some(mark));
        assert_eq!(row["headers"]["operation"], "insert");
        assert_eq!(
            row["key"].as_str().unwrap(),
            format!(
                "\"public\".\"items\"/\"{}\"",
                row["value"]["id"].as_str().unwrap()
            )
        );
    }

    // POST: top level or under "subset", merged over the query; params are
    // bound (a quote in a value is data, not SQL), big integers exact.
    let top = post(
        &server,
        &format!("{shape}&offset=-1"),
        r#"{"where":"id > $1","params":{"1":"10"},"order_by":"id DESC","limit":3,"offset":1}"#,
    );
    assert_eq!(top.status, 200, "{}", top.body);
    assert_eq!(ids(&top), ids(&get));
    assert_eq!(top.header("cache-control"), Some("no-cache"));
    let nested = post(
        &server,
        &format!("{shape}&offset=-1&subset__where=id%20%3D%201"),
        r#"{"subset":{"where":"title = $1","params":{"1":"x' OR '1'='1"}}}"#,
    );
    assert_eq!(nested.status, 200, "{}", nested.body);
    assert_eq!(ids(&nested), Vec::<String>::new(), "the value is never SQL");
    // A handle that is not the shape's: 409 with the current one.
    let stale = server.get(&format!(
        "{shape}&offset=0_inf&handle=1-1&subset__where=id%20%3D%201"
    ));
    assert_eq!(stale.status, 409);
    assert_eq!(stale.header("electric-handle"), Some(handle.as_str()));
    // offset=now: the shape's current end, for the client to go on from
    // (still the snapshot's: the insert below would race this check).
    let now = server.get(&format!("{shape}&offset=now&subset__where=id%20%3D%201"));
    assert_eq!(now.status, 200);
    assert_eq!(ids(&now), ["1"]);
    assert_eq!(now.header("electric-offset"), Some("0_inf"));

    pg.batch_execute("INSERT INTO items VALUES (9007199254740993, 'big', 1, 's')")
        .unwrap();
    let big = post(
        &server,
        &format!("{shape}&offset=-1"),
        r#"{"where":"id = $1","params":{"1":9007199254740993}}"#,
    );
    assert_eq!(ids(&big), ["9007199254740993"]);

    // Errors, with Electric's statuses and bodies.
    let cases: &[(&str, &str)] = &[
        (
            "subset__limit=2",
            r#"{"message":"Invalid request","errors":{"subset":{"order_by":["order_by is required when limit or offset is present"]}}}"#,
        ),
        (
            "subset__limit=0&subset__order_by=id",
            r#"{"message":"Invalid request","errors":{"subset":{"limit":["must be greater than 0"]}}}"#,
        ),
        (
            "subset__where=nope%20%3D%201",
            r#"{"message":"Invalid request","errors":{"subset":{"where":["At location 0: unknown reference nope"]}}}"#,
        ),
        (
            "subset__where=1%20x%201",
            r#"{"message":"Invalid request","errors":{"subset":{"where":["At location 17: syntax error at or near \"x\""]}}}"#,
        ),
        (
            "subset__order_by=zz",
            r#"{"message":"Invalid request","errors":{"subset":{"order_by":["At location 18: unknown reference zz"]}}}"#,
        ),
        (
            "subset__order_by=id%3B%20drop%20table%20items",
            r#"{"message":"Invalid request","errors":{"subset":{"order_by":["Unexpected `;` in order by"]}}}"#,
        ),
        (
            "subset__where=id%20%3D%20%241&subset__params=%7B%222%22%3A%221%22%7D",
            r#"{"message":"Invalid request","errors":{"subset":{"params":["Parameters must be numbered sequentially, starting from 1"]}}}"#,
        ),
        // A subset is one query: Electric refuses subqueries in it.
        (
            "subset__where=id%20IN%20(SELECT%20id%20FROM%20items)",
            r#"{"message":"Invalid request","errors":{"subset":{"where":["Subqueries are not allowed in subsets"]}}}"#,
        ),
    ];
    for (query, expected) in cases {
        let reply = server.get(&format!("{shape}&offset=-1&{query}"));
        assert_eq!(reply.status, 400, "{query}");
        assert_eq!(&reply.body, expected, "{query}");
        assert_eq!(reply.header("cache-control"), Some("no-store"), "{query}");
    }
    let not_json = post(&server, &format!("{shape}&offset=-1"), "{where");
    assert_eq!(not_json.status, 400);
    assert!(
        not_json
            .body
            .starts_with(r#"{"error":"Invalid JSON in request body","details":"#),
        "{}",
        not_json.body
    );
    let not_object = post(&server, &format!("{shape}&offset=-1"), "[1]");
    assert_eq!(not_object.status, 400);
    assert_eq!(
        not_object.body,
        r#"{"error":"Request body must be a JSON object"}"#
    );
    let huge = format!(r#"{{"where":"{}"}}"#, "x".repeat(8_000_001));
    let too_large = post(&server, &format!("{shape}&offset=-1"), &huge);
    assert_eq!(too_large.status, 413);
    assert_eq!(too_large.body, r#"{"error":"Request body too large"}"#);
    server.stop();
}

#[test]
fn queryable_columns_bound_what_subsets_and_columns_see() {
    let db = database("shape_queryable");
    db.client()
        .batch_execute(
            "CREATE TABLE notes (id int PRIMARY KEY, title text, body text, owner int);
             INSERT INTO notes VALUES (1, 'a', 'x', 7), (2, 'b', 'y', 8);",
        )
        .unwrap();
    let server = Server::start(&db, &[]);
    let base = "/v1/shape?table=notes&offset=-1&queryable_columns=id,title,owner";

    let synced = server.get(base);
    assert_eq!(synced.status, 200, "{}", synced.body);
    let schema: serde_json::Value =
        serde_json::from_str(synced.header("electric-schema").unwrap()).unwrap();
    let mut names: Vec<&String> = schema.as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(
        names,
        ["id", "owner", "title"],
        "without columns, the queryable ones sync"
    );

    let ok = server.get(&format!(
        "{base}&subset__where=owner%20%3D%208&subset__order_by=title"
    ));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ids(&ok), ["2"]);
    let hidden = server.get(&format!("{base}&subset__where=body%20%3D%20%27x%27"));
    assert_eq!(hidden.status, 400);
    assert_eq!(
        hidden.body,
        r#"{"message":"Invalid request","errors":{"subset":{"where":["At location 0: unknown reference body"]}}}"#
    );
    let hidden_order = server.get(&format!("{base}&subset__order_by=body"));
    assert_eq!(hidden_order.status, 400, "{}", hidden_order.body);
    let outside = server.get(&format!("{base}&columns=id,body"));
    assert_eq!(outside.status, 400);
    assert_eq!(
        outside.body,
        r#"{"message":"Invalid request","errors":{"columns":["The following columns are not in queryable_columns: body"]}}"#
    );
    let unknown = server.get("/v1/shape?table=notes&offset=-1&columns=id&queryable_columns=id,zz");
    assert_eq!(unknown.status, 400);
    assert_eq!(
        unknown.body,
        r#"{"message":"Invalid request","errors":{"queryable_columns":["The following columns are not found on the table: zz"]}}"#
    );
    server.stop();
}

#[test]
fn methods_headers_and_secret_on_every_path_spelling() {
    let db = database("shape_parity");
    db.client()
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);")
        .unwrap();
    let server = Server::start(
        &db,
        &[
            ("ELECTRIC_SECRET", "s3cret"),
            ("ELECTRIC_INSECURE", "false"),
        ],
    );
    for path in ["/v1/shape", "/v1/shape/", "/v1//shape", "/v1/%73hape"] {
        let denied = server.get(&format!("{path}?table=t&offset=-1"));
        assert_eq!(denied.status, 401, "{path}");
        assert_eq!(
            denied.body,
            r#"{"message":"Unauthorized - Invalid API secret"}"#
        );
        let denied_post = post(&server, &format!("{path}?table=t&offset=-1"), "{}");
        assert_eq!(denied_post.status, 401, "POST {path}");
        let allowed = server.get(&format!("{path}?table=t&offset=-1&secret=s3cret"));
        assert_eq!(allowed.status, 200, "{path}: {}", allowed.body);
    }
    let ok =
        server.get("/v1/shape?table=t&offset=-1&secret=s3cret&expired_handle=1-2&cache-buster=abc");
    assert_eq!(ok.status, 200, "unknown parameters are ignored");
    assert_eq!(ok.header("electric-has-data"), Some("true"));
    assert!(ok
        .header("electric-server")
        .unwrap()
        .starts_with("shapeshard/"));
    assert!(ok.header("x-request-id").is_some_and(|id| id.len() >= 20));
    let exposed = ok.header("access-control-expose-headers").unwrap();
    for header in [
        "electric-handle",
        "electric-offset",
        "electric-schema",
        "electric-cursor",
        "electric-up-to-date",
        "electric-has-data",
        "retry-after",
    ] {
        assert!(exposed.contains(header), "{header} not exposed: {exposed}");
    }
    let put = server.request("PUT", "/v1/shape?table=t&offset=-1&secret=s3cret");
    assert_eq!(put.status, 405);
    let preflight = server.request("OPTIONS", "/v1/shape");
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-methods"),
        Some("GET, POST, HEAD, DELETE, OPTIONS")
    );
    let with_origin = Reply::from(
        ureq::get(&server.url("/v1/shape?table=t&offset=-1&secret=s3cret"))
            .set("origin", "https://app.example")
            .call(),
    );
    assert_eq!(
        with_origin.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    // A table or column that does not exist: under its own field.
    let no_table = server.get("/v1/shape?table=nope&offset=-1&secret=s3cret");
    assert_eq!(no_table.status, 400);
    assert_eq!(
        no_table.body,
        r#"{"message":"Invalid request","errors":{"table":["Table \"public\".\"nope\" does not exist. If the table name contains capitals or special characters you must quote it."]}}"#
    );
    let no_column = server.get("/v1/shape?table=t&offset=-1&secret=s3cret&columns=id,zz");
    assert_eq!(no_column.status, 400);
    assert_eq!(
        no_column.body,
        r#"{"message":"Invalid request","errors":{"columns":["The following columns are not found on the table: zz"]}}"#
    );
    server.stop();
}

/// Raw HTTP/1.1: the status line of the answer to `head`.
fn raw_status(server: &Server, head: &[u8]) -> String {
    use std::io::{Read, Write};
    let address = server.base_url().trim_start_matches("http://").to_string();
    let mut socket = std::net::TcpStream::connect(address).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = socket.write_all(head);
    let mut answer = vec![0u8; 64];
    let n = socket.read(&mut answer).unwrap_or(0);
    String::from_utf8_lossy(&answer[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[test]
fn oversized_request_heads_get_414_and_431() {
    let db = database("shape_limits");
    let server = Server::start(&db, &[]);
    let mut uri = b"GET /v1/shape?table=".to_vec();
    uri.extend(std::iter::repeat_n(b'a', 100_000));
    uri.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(raw_status(&server, &uri), "HTTP/1.1 414 URI Too Long");
    let mut header = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    header.extend(std::iter::repeat_n(b'b', 1_000_000));
    header.extend_from_slice(b"\r\n\r\n");
    assert_eq!(
        raw_status(&server, &header),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    assert_eq!(
        raw_status(&server, b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"),
        "HTTP/1.1 200 OK",
        "an ordinary request still passes"
    );
    server.stop();
}

/// Reads until the server closes the connection; how long that took.
fn closed_within(socket: &mut std::net::TcpStream, limit: Duration) -> Option<Duration> {
    use std::io::Read;
    let started = std::time::Instant::now();
    socket.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(started.elapsed())
            }
            Err(_) => return None,
        }
    }
}

#[test]
fn idle_and_slow_connections_are_dropped_busy_ones_kept() {
    use std::io::Write;
    let db = database("shape_idle");
    db.client()
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);")
        .unwrap();
    let server = Server::start(
        &db,
        &[
            ("ELECTRIC_TCP_READ_TIMEOUT", "1500"),
            ("SHAPESHARD_SSE_KEEPALIVE_MS", "500"),
            ("ELECTRIC_LONG_POLL_TIMEOUT", "3000"),
        ],
    );
    let address = server.base_url().trim_start_matches("http://").to_string();

    // A head that never ends (slowloris).
    let mut slow = std::net::TcpStream::connect(&address).unwrap();
    slow.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let took = closed_within(&mut slow, Duration::from_secs(8)).expect("a slow head is dropped");
    assert!(
        took >= Duration::from_millis(1_000),
        "dropped too early: {took:?}"
    );

    // An idle keep-alive after a complete request.
    let mut idle = std::net::TcpStream::connect(&address).unwrap();
    idle.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    closed_within(&mut idle, Duration::from_secs(8)).expect("an idle keep-alive is dropped");

    // A long-poll longer than the read timeout is answered, not cut.
    let first = server.get("/v1/shape?table=t&offset=-1");
    let handle = first.header("electric-handle").unwrap().to_string();
    let end = server
        .get(&format!("/v1/shape?table=t&offset=0_0&handle={handle}"))
        .header("electric-offset")
        .unwrap()
        .to_string();
    let started = std::time::Instant::now();
    let live = server.get(&format!(
        "/v1/shape?table=t&offset={end}&handle={handle}&live=true"
    ));
    assert_eq!(live.status, 200, "{}", live.body);
    assert!(
        started.elapsed() >= Duration::from_millis(2_500),
        "the long-poll ran its course"
    );
    server.stop();
}
