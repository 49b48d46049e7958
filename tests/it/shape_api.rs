//! `/v1/shape` over real HTTP against the real server: the happy path's
//! headers and offsets, and every 4xx path with Electric's status and body.

use std::time::Duration;

use crate::harness::database;
use crate::server::Server;
use crate::shape_client::ShapeClient;

const MUST_REFETCH: &str = r#"[{"headers":{"control":"must-refetch"}}]"#;

fn invalid(field: &str, message: &str) -> String {
    // Electric's key order: message first.
    format!(
        r#"{{"message":"Invalid request","errors":{{{}:[{}]}}}}"#,
        serde_json::Value::from(field),
        serde_json::Value::from(message)
    )
}

#[test]
fn snapshot_live_changes_and_caching_headers() {
    let db = database("shape_api");
    db.client()
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, title text, n int);
             INSERT INTO items SELECT g, 'item ' || g, g % 3 FROM generate_series(1, 5) g;",
        )
        .unwrap();
    let server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "2000")]);

    let first = server.get("/v1/shape?table=items&offset=-1");
    assert_eq!(first.status, 200, "{}", first.body);
    let handle = first.header("electric-handle").unwrap().to_string();
    assert!(handle.contains('-'), "{handle}");
    assert_eq!(first.header("electric-offset"), Some("0_0"));
    assert_eq!(
        first.header("electric-up-to-date"),
        None,
        "never on offset=-1"
    );
    assert_eq!(
        first.header("cache-control"),
        Some("public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746")
    );
    assert_eq!(
        first.header("etag"),
        Some(format!("\"{handle}:-1:0_0\"").as_str())
    );
    assert_eq!(
        first.header("electric-schema"),
        Some(
            r#"{"id":{"type":"int4","pk_index":0,"not_null":true},"title":{"type":"text"},"n":{"type":"int4"}}"#
        )
    );
    let body = first.json();
    let messages = body.as_array().unwrap();
    assert_eq!(messages.len(), 6, "5 rows and snapshot-end");
    assert_eq!(
        messages[0],
        serde_json::json!({"key":"\"public\".\"items\"/\"1\"","value":{"id":"1","title":"item 1","n":"1"},"headers":{"operation":"insert","relation":["public","items"]}})
    );
    assert_eq!(messages[5]["headers"]["control"], "snapshot-end");

    // The same request again is the same response: a CDN may serve it.
    let again = server.get("/v1/shape?table=items&offset=-1&cache-buster=x");
    assert_eq!(again.header("electric-handle"), Some(handle.as_str()));
    assert_eq!(again.body, first.body);

    // A matching If-None-Match is a 304 without a body or schema.
    let etag = first.header("etag").unwrap().to_string();
    let not_modified = crate::server::Reply::from(
        ureq::get(&server.url("/v1/shape?table=items&offset=-1"))
            .set("if-none-match", &etag)
            .call(),
    );
    assert_eq!(not_modified.status, 304);
    assert_eq!(not_modified.body, "");
    assert_eq!(not_modified.header("electric-schema"), None);

    let caught_up = server.get(&format!("/v1/shape?table=items&offset=0_0&handle={handle}"));
    assert_eq!(caught_up.status, 200);
    assert_eq!(caught_up.header("electric-offset"), Some("0_inf"));
    assert_eq!(caught_up.header("electric-up-to-date"), Some(""));
    assert_eq!(
        caught_up.header("cache-control"),
        Some("public, max-age=60, stale-while-revalidate=300")
    );
    assert_eq!(caught_up.json()[0]["headers"]["control"], "up-to-date");

    // A live request with nothing new times out with just up-to-date.
    let idle = server.get(&format!(
        "/v1/shape?table=items&offset=0_inf&handle={handle}&live=true"
    ));
    assert_eq!(idle.status, 200);
    assert_eq!(idle.header("electric-has-data"), Some("false"));
    assert_eq!(idle.header("electric-offset"), Some("0_inf"));
    assert!(idle.header("electric-cursor").is_some());
    assert_eq!(
        idle.header("electric-schema"),
        None,
        "never on live responses"
    );
    assert_eq!(
        idle.header("cache-control"),
        Some("public, max-age=5, stale-while-revalidate=5")
    );
    assert_eq!(idle.json().as_array().unwrap().len(), 1);

    // A live request wakes up for a change.
    let writer = {
        let url = db.url.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            c.batch_execute(
                "BEGIN; INSERT INTO items VALUES (10, 'ten', 1);
                 UPDATE items SET title = 'one' WHERE id = 1;
                 DELETE FROM items WHERE id = 2;
                 UPDATE items SET id = 30 WHERE id = 3; COMMIT;",
            )
            .unwrap();
        })
    };
    let live = server.get(&format!(
        "/v1/shape?table=items&offset=0_inf&handle={handle}&live=true"
    ));
    writer.join().unwrap();
    assert_eq!(live.status, 200, "{}", live.body);
    let body = live.json();
    let messages = body.as_array().unwrap();
    let ops: Vec<(&str, &str)> = messages[..5]
        .iter()
        .map(|m| {
            (
                m["headers"]["operation"].as_str().unwrap(),
                m["key"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ops,
        [
            ("insert", "\"public\".\"items\"/\"10\""),
            ("update", "\"public\".\"items\"/\"1\""),
            ("delete", "\"public\".\"items\"/\"2\""),
            ("delete", "\"public\".\"items\"/\"3\""),
            ("insert", "\"public\".\"items\"/\"30\""),
        ]
    );
    // replica=default: an update carries the key and what changed.
    assert_eq!(
        messages[1]["value"],
        serde_json::json!({"id":"1","title":"one"})
    );
    assert_eq!(messages[2]["value"], serde_json::json!({"id":"2"}));
    assert_eq!(
        messages[3]["headers"]["key_change_to"],
        "\"public\".\"items\"/\"30\""
    );
    assert_eq!(
        messages[4]["headers"]["key_change_from"],
        "\"public\".\"items\"/\"3\""
    );
    assert_eq!(messages[4]["headers"]["last"], true);
    assert!(messages[3]["headers"].get("last").is_none());
    let lsn = messages[0]["headers"]["lsn"].as_str().unwrap().to_string();
    assert_eq!(messages[0]["headers"]["op_position"], 0);
    assert_eq!(
        messages[4]["headers"]["op_position"], 7,
        "a key change takes op and op+1"
    );
    assert_eq!(
        live.header("electric-offset"),
        Some(format!("{lsn}_7").as_str())
    );
    assert_eq!(messages[5]["headers"]["control"], "up-to-date");

    // The strict client ends with exactly the table's rows.
    let mut client = ShapeClient::new("table=items");
    client.sync(&server).unwrap();
    let mut want: Vec<String> = db
        .client()
        .query("SELECT id::text FROM items", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    want.sort();
    assert_eq!(client.values("id"), want);

    // offset=now: the current end, no data.
    let now = server.get("/v1/shape?table=items&offset=now");
    assert_eq!(now.status, 200);
    assert_eq!(now.header("electric-has-data"), Some("false"));
    assert_eq!(
        now.header("electric-offset"),
        Some(format!("{lsn}_7").as_str())
    );
    assert_eq!(now.json()[0]["headers"]["control"], "up-to-date");

    // TRUNCATE: the shape must be refetched, under a new handle.
    db.client().batch_execute("TRUNCATE items").unwrap();
    let gone = crate::harness::wait_for(
        "the truncate to invalidate",
        Duration::from_secs(20),
        || {
            let r = server.get(&format!(
                "/v1/shape?table=items&offset={lsn}_7&handle={handle}"
            ));
            (r.status == 409).then_some(r)
        },
    );
    assert_eq!(gone.body, MUST_REFETCH);
    let new_handle = gone.header("electric-handle").unwrap();
    assert_ne!(new_handle, handle, "handles are never reused");
    assert_eq!(
        gone.header("cache-control"),
        Some("public, max-age=60, must-revalidate")
    );
}

#[test]
fn every_bad_request_gets_electrics_status_and_body() {
    let db = database("shape_errors");
    db.client()
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, title text);
             CREATE TABLE pairs (a int, b int, note text, PRIMARY KEY (a, b));
             INSERT INTO items VALUES (1, 'one');",
        )
        .unwrap();
    let server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "2000")]);
    let check = |url: &str, status: u16, body: &str| {
        let reply = server.get(url);
        assert_eq!(reply.status, status, "{url}: {}", reply.body);
        assert_eq!(reply.body, body, "{url}");
        if status != 409 {
            assert_eq!(reply.header("cache-control"), Some("no-store"), "{url}");
            assert_eq!(reply.header("surrogate-control"), Some("no-store"), "{url}");
        }
        reply
    };
    check(
        "/v1/shape?offset=-1",
        400,
        &invalid("table", "can't be blank"),
    );
    check(
        "/v1/shape?table=nope&offset=-1",
        400,
        &invalid(
            "table",
            "Table \"public\".\"nope\" does not exist. If the table name contains capitals or special characters you must quote it.",
        ),
    );
    check(
        "/v1/shape?table=Items.x.y&offset=-1",
        400,
        &invalid(
            "table",
            "Invalid relation \"Items.x.y\": expected a table name, optionally schema-qualified",
        ),
    );
    check(
        "/v1/shape?table=items",
        400,
        &invalid("offset", "can't be blank"),
    );
    check(
        "/v1/shape?table=items&offset=abc",
        400,
        &invalid("offset", "has invalid format"),
    );
    check(
        "/v1/shape?table=items&offset=1_x",
        400,
        &invalid("offset", "has invalid format"),
    );
    check(
        "/v1/shape?table=items&offset=0_0",
        400,
        &invalid("handle", "can't be blank when offset != -1"),
    );
    check(
        "/v1/shape?table=items&offset=-1&live=true",
        400,
        &invalid("live", "can't be true when offset == -1"),
    );
    check(
        "/v1/shape?table=items&offset=now&live=true",
        400,
        &invalid("live", "can't be true when offset is 'now'"),
    );
    check(
        "/v1/shape?table=pairs&offset=-1&columns=a,note",
        400,
        &invalid(
            "columns",
            "The list of columns must include all primary key columns, missing: b",
        ),
    );
    check(
        "/v1/shape?table=items&offset=-1&columns=id,nope",
        400,
        &invalid(
            "columns",
            "The following columns are not found on the table: nope",
        ),
    );
    check(
        "/v1/shape?table=items&offset=-1&columns=id,,title",
        400,
        &invalid("columns", "Invalid zero-length identifier"),
    );

    // Where clauses: our checks, in Electric's words and locations.
    for (url, field, message) in [
        (
            "where=nope%20%3D%201",
            "where",
            "At location 0: unknown reference nope",
        ),
        (
            "where=id%20%3D%20",
            "where",
            "At location 20: syntax error at end of input",
        ),
        (
            "where=id%20%3D%20%241",
            "where",
            "At location 5: parameter $1 was not provided",
        ),
        (
            "where=id%20%3D%20%242&params%5B2%5D=1",
            "params",
            "Parameters must be numbered sequentially, starting from 1",
        ),
        ("where=title", "where", "WHERE clause must return a boolean"),
        // Subqueries: Electric's refusals, with the inner table read from
        // the catalog.
        (
            "where=(SELECT%201)%20%3D%201",
            "where",
            "At location 23: Expected a plain column reference",
        ),
        (
            "where=id%20IN%20(SELECT%20a%20FROM%20nope)",
            "table",
            "Table \"public\".\"nope\" does not exist. If the table name contains capitals or special characters you must quote it.",
        ),
        (
            "where=id%20IN%20(SELECT%20note%20FROM%20pairs)",
            "where",
            "At location 3: left side of `IN (SELECT ...)` has type int4 but subquery returns text[]",
        ),
        // Valid subqueries are served since issue 17 (nested ones since
        // its slice 3: `subquery_nested.rs`).
    ] {
        check(
            &format!("/v1/shape?table=items&offset=-1&{url}"),
            400,
            &invalid(field, message),
        );
    }
    // A bound parameter is a value, never SQL.
    let injected = server.get("/v1/shape?table=items&offset=-1&where=title%20%3D%20%241&params%5B1%5D=x%27%20OR%201%3D1%20--");
    assert_eq!(injected.status, 200, "{}", injected.body);
    assert_eq!(
        injected.json().as_array().unwrap().len(),
        1,
        "only snapshot-end: {}",
        injected.body
    );

    // Handle and definition disagree: 409 naming the definition's shape.
    let first = server.get("/v1/shape?table=items&offset=-1");
    let handle = first.header("electric-handle").unwrap().to_string();
    let mismatch = check(
        "/v1/shape?table=items&offset=0_0&handle=123-456",
        409,
        MUST_REFETCH,
    );
    assert_eq!(mismatch.header("electric-handle"), Some(handle.as_str()));
    let other = check(
        &format!("/v1/shape?table=items&columns=id&offset=0_0&handle={handle}"),
        409,
        MUST_REFETCH,
    );
    assert_ne!(other.header("electric-handle"), Some(handle.as_str()));

    // An offset past the shape's end waits briefly, then is a 400.
    check(
        &format!("/v1/shape?table=items&offset=99999999999_0&handle={handle}"),
        400,
        &invalid("offset", "out of bounds for this shape"),
    );

    // DELETE: mismatched handle, unknown shape, then the real thing.
    let delete = |url: &str| server.request("DELETE", url);
    let wrong = delete("/v1/shape?table=items&handle=1-2");
    assert_eq!(wrong.status, 400, "{}", wrong.body);
    let unknown = delete("/v1/shape?handle=1-2");
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.body, r#"{"message":"No existing shape found"}"#);
    let deleted = delete(&format!("/v1/shape?table=items&handle={handle}"));
    assert_eq!(deleted.status, 202);
    assert_eq!(deleted.header("cache-control"), Some("no-cache"));
    let after = check(
        &format!("/v1/shape?table=items&offset=0_0&handle={handle}"),
        409,
        MUST_REFETCH,
    );
    assert_ne!(after.header("electric-handle"), Some(handle.as_str()));

    // Unknown routes.
    let missing = server.get("/v2/nothing");
    assert_eq!(missing.status, 404);

    // CORS preflight.
    let preflight = crate::server::Reply::from(
        ureq::request("OPTIONS", &server.url("/v1/shape"))
            .set("access-control-request-headers", "if-none-match")
            .call(),
    );
    assert_eq!(preflight.status, 204);
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("if-none-match")
    );
    assert_eq!(preflight.header("access-control-max-age"), Some("86400"));
}

#[test]
fn the_secret_guards_every_shape_route() {
    let db = database("shape_secret");
    db.client()
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY)")
        .unwrap();
    let server = Server::start(
        &db,
        &[
            ("ELECTRIC_INSECURE", "false"),
            ("ELECTRIC_SECRET", "s3cret"),
            ("ELECTRIC_ENABLE_INTEGRATION_TESTING", "false"),
        ],
    );
    let unauthorized = r#"{"message":"Unauthorized - Invalid API secret"}"#;
    for url in [
        "/v1/shape?table=items&offset=-1",
        "/v1/shape?table=items&offset=-1&secret=wrong",
        "/v1//shape/?table=items&offset=-1",
        "/v1/%73hape?table=items&offset=-1",
    ] {
        let reply = server.get(url);
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (401, unauthorized),
            "{url}"
        );
    }
    assert_eq!(
        server
            .get("/v1/shape?table=items&offset=-1&secret=s3cret")
            .status,
        200
    );
    assert_eq!(
        server
            .get("/v1/shape?table=items&offset=-1&api_secret=s3cret")
            .status,
        200
    );
    assert_eq!(
        server.request("DELETE", "/v1/shape?table=items").status,
        401
    );
    let disabled = server.request("DELETE", "/v1/shape?table=items&secret=s3cret");
    assert_eq!(
        (disabled.status, disabled.body.as_str()),
        (405, r#"{"message":"DELETE not allowed"}"#)
    );
    // Health needs no secret; emptying the latency histograms does.
    assert_eq!(server.get("/v1/health").status, 200);
    assert_eq!(server.request("POST", "/metrics/reset").status, 401);
    assert_eq!(
        server
            .request("POST", "/metrics/reset?secret=s3cret")
            .status,
        200
    );
}

#[test]
fn changes_only_logs_and_schema_changes() {
    let db = database("shape_schema");
    db.client()
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, title text);
             INSERT INTO items VALUES (1, 'one'), (2, 'two');",
        )
        .unwrap();
    let server = Server::start(&db, &[("ELECTRIC_LONG_POLL_TIMEOUT", "2000")]);

    // log=changes_only: no snapshot rows, but the snapshot is still taken.
    let first = server.get("/v1/shape?table=items&offset=-1&log=changes_only");
    assert_eq!(first.status, 200, "{}", first.body);
    let body = first.json();
    assert_eq!(body.as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body[0]["headers"]["control"], "snapshot-end");
    let handle = first.header("electric-handle").unwrap().to_string();
    let full = server.get("/v1/shape?table=items&offset=-1");
    assert_ne!(
        full.header("electric-handle"),
        Some(handle.as_str()),
        "a different shape"
    );
    let full_handle = full.header("electric-handle").unwrap().to_string();

    db.client()
        .batch_execute("INSERT INTO items VALUES (3, 'three')")
        .unwrap();
    let mut client = ShapeClient::new("table=items&log=changes_only");
    client.handle = Some(handle.clone());
    client.offset = "0_0".into();
    crate::harness::wait_for("the insert", Duration::from_secs(20), || {
        client.poll(&server).unwrap();
        (client.rows.len() == 1).then_some(())
    });
    assert!(client.rows.contains_key("\"public\".\"items\"/\"3\""));

    // A shape naming its columns, followed to the end before the change.
    let mut named = ShapeClient::new("table=items&columns=id,title");
    crate::harness::wait_for("the named shape", Duration::from_secs(20), || {
        named.poll(&server).unwrap();
        (named.up_to_date && named.rows.len() == 3).then_some(())
    });

    // A column added under the shapes: those selecting every column must be
    // refetched.
    db.client()
        .batch_execute(
            "ALTER TABLE items ADD COLUMN extra text; INSERT INTO items VALUES (4, 'four', 'x')",
        )
        .unwrap();
    for (query, handle) in [
        ("table=items&log=changes_only", &handle),
        ("table=items", &full_handle),
    ] {
        let reply = crate::harness::wait_for(
            "the schema change to invalidate",
            Duration::from_secs(20),
            || {
                let r = server.get(&format!("/v1/shape?{query}&offset=0_inf&handle={handle}"));
                (r.status == 409).then_some(r)
            },
        );
        assert_eq!(reply.body, MUST_REFETCH);
        let new = server.get(&format!("/v1/shape?{query}&offset=-1"));
        assert!(
            new.header("electric-schema").unwrap().contains("\"extra\""),
            "{query}"
        );
    }
    // The named shape uses none of what changed: it stays (no 409) and
    // receives the new row without the new column.
    crate::harness::wait_for("the row after ADD COLUMN", Duration::from_secs(20), || {
        named.poll(&server).unwrap();
        named
            .rows
            .contains_key("\"public\".\"items\"/\"4\"")
            .then_some(())
    });
    let four = &named.rows["\"public\".\"items\"/\"4\""];
    assert_eq!(four.get("title").and_then(|v| v.as_str()), Some("four"));
    assert!(!four.contains_key("extra"), "{four:?}");
    assert_eq!(named.rows.len(), 4);
}
