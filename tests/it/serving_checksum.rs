//! Serving files are the only copy of a shape's history once the segments
//! before a checkpoint are deleted: every frame carries a checksum, checked
//! on every read. A flipped byte makes that shape's clients re-sync (409)
//! instead of reading a wrong value; other shapes carry on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::harness::{database, sorted_texts};
use crate::server::Server;
use crate::shape_client::ShapeClient;

/// Serving files under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.parent().and_then(Path::file_name) == Some("shapes".as_ref())
                && matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("snap" | "log")
                )
                && std::fs::read(&path)
                    .unwrap()
                    .windows(needle.len())
                    .any(|w| w == needle)
            {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn a_flipped_byte_in_a_serving_file_makes_its_shape_resync() {
    let db = database("serving_checksum");
    let mut pg = db.client();
    pg.batch_execute(
        "CREATE TABLE alpha (id int PRIMARY KEY, title text);
         CREATE TABLE beta (id int PRIMARY KEY, title text);
         INSERT INTO alpha SELECT g, 'alpha-' || g FROM generate_series(1, 5) g;
         INSERT INTO beta SELECT g, 'beta-' || g FROM generate_series(1, 5) g;",
    )
    .unwrap();
    let mut server = Server::start(&db, &[]);
    let want = |pg: &mut postgres::Client, table: &str| {
        sorted_texts(
            pg,
            &format!("SELECT concat_ws('|', id, title) FROM {table}"),
            &[],
        )
    };
    let mut alpha = ShapeClient::new("table=alpha");
    let mut beta = ShapeClient::new("table=beta");
    alpha.sync(&server).unwrap();
    beta.sync(&server).unwrap();
    let beta_handle = beta.handle.clone().unwrap();

    // A clean stop writes every item to the serving files.
    server.stop_process();
    let files = files_containing(&server.dir, b"alpha-3");
    assert_eq!(
        files.len(),
        1,
        "one serving file holds alpha's rows: {files:?}"
    );
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let at = bytes.windows(7).position(|w| w == b"alpha-3").unwrap();
    bytes[at + 4] = b'A'; // still valid JSON: only the checksum can tell
    std::fs::write(&files[0], &bytes).unwrap();
    server.restart();

    // A new client and the existing one both learn the shape is gone.
    let fresh = server.get("/v1/shape?table=alpha&offset=-1");
    assert_eq!(fresh.status, 409, "{}", fresh.body);
    assert!(!fresh.body.contains("alphA"), "a corrupt value was served");
    assert_eq!(server.metric("shapeshard_serving_files_corrupt_total"), 1);
    let mut resynced = ShapeClient::new("table=alpha&cache-buster=1");
    resynced.sync(&server).unwrap();
    resynced
        .converge(
            &server,
            &["id", "title"],
            &want(&mut pg, "alpha"),
            Duration::from_secs(20),
        )
        .unwrap();
    assert_ne!(resynced.handle, alpha.handle);
    match alpha.poll(&server) {
        Err(e) => assert!(e.contains("409"), "{e}"),
        Ok(()) => panic!("the old alpha handle still answers"),
    }

    // The other shape is unaffected: same handle, live changes.
    pg.batch_execute("INSERT INTO beta VALUES (6, 'beta-6')")
        .unwrap();
    beta.converge(
        &server,
        &["id", "title"],
        &want(&mut pg, "beta"),
        Duration::from_secs(20),
    )
    .unwrap();
    assert_eq!(beta.handle.as_deref(), Some(beta_handle.as_str()));

    // Storage from before frames had checksums is refused, saying what to do.
    server.stop_process();
    std::fs::remove_file(server.dir.join("shards").join("format")).unwrap();
    let status = server.start_expecting_exit();
    assert!(!status.success(), "{}", server.log_tail());
    assert!(
        server.log_tail().contains("older shapeshard"),
        "{}",
        server.log_tail()
    );
}
