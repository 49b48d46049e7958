//! A torn write at the end of a shard's segment log, end to end. The newest
//! transaction is durable on the server (clients have seen it, its records
//! are on disk) but not yet confirmed to Postgres. The server is SIGKILLed
//! and the end of each shard's newest segment is damaged by hand, as a
//! write torn by a power cut would leave it: the newest transaction's last
//! record, or the commit marker closing its flush. On restart the server
//! must cut the unfinished flush, Postgres re-sends the transaction (it was
//! never confirmed), the shard journals it again, and every client carries
//! on from its `(handle, offset)` — no 409, no gap, no duplicate — served
//! the same bytes as before, equal to Postgres.

use std::path::{Path, PathBuf};
use std::time::Duration;

use shards::Lsn;

use crate::harness::{database, sorted_texts, wait_for, TestDb};
use crate::replay::{self, Recorded};
use crate::server::Server;
use crate::shape_client::ShapeClient;

/// The shapes under test: definition, columns of the client's view, and
/// the query giving the same view from Postgres.
const SHAPES: &[(&str, &[&str], &str)] = &[
    (
        "table=items",
        &["id", "v", "note"],
        "SELECT concat_ws('|', id, v, note) FROM items",
    ),
    (
        "table=items&replica=full",
        &["id", "v", "note"],
        "SELECT concat_ws('|', id, v, note) FROM items",
    ),
    (
        "table=items&columns=id,v",
        &["id", "v"],
        "SELECT concat_ws('|', id, v) FROM items",
    ),
    (
        "table=items&where=v%20%3E%2020",
        &["id", "v", "note"],
        "SELECT concat_ws('|', id, v, note) FROM items WHERE v > 20",
    ),
    (
        "table=items&columns=id,note",
        &["id", "note"],
        "SELECT concat_ws('|', id, note) FROM items",
    ),
    (
        "table=items&where=v%20%3C%3D%2020",
        &["id", "v", "note"],
        "SELECT concat_ws('|', id, v, note) FROM items WHERE v <= 20",
    ),
    (
        "table=others",
        &["id", "label"],
        "SELECT concat_ws('|', id, label) FROM others",
    ),
];

/// How a record is damaged.
#[derive(Clone, Copy, Debug)]
enum Damage {
    /// Its last byte flipped: a checksum mismatch.
    FlipByte,
    /// The file ends in the middle of its payload.
    CutShort,
}

impl Damage {
    /// What the scanner says about it (`shards/src/storage/record.rs`).
    fn reason(self) -> &'static str {
        match self {
            Damage::FlipByte => "checksum mismatch",
            Damage::CutShort => "payload cut short",
        }
    }
}

/// Which record of a shard's newest segment is damaged.
#[derive(Clone, Copy, Debug)]
enum Target {
    /// The last entry: the newest transaction's last record.
    LastEntry,
    /// The very last record: the commit marker ending the newest flush.
    CommitMarker,
}

#[test]
fn a_torn_last_record_is_cut_and_postgres_resends_it() {
    torn_tail(
        "torn_flip",
        Damage::FlipByte,
        Target::LastEntry,
        NEWEST_ONE_CHANGE,
    );
}

#[test]
fn a_last_record_cut_short_is_cut_and_postgres_resends_it() {
    torn_tail(
        "torn_cut",
        Damage::CutShort,
        Target::LastEntry,
        NEWEST_ONE_CHANGE,
    );
}

/// A torn write can also end inside a transaction: the newest transaction
/// gives each shape several entries and only its last record is torn. The
/// shard must not keep the transaction in part (Postgres re-sends it whole,
/// and a shape that holds its commit LSN skips it).
#[test]
fn a_transaction_torn_between_its_records_is_completed_from_the_resend() {
    torn_tail(
        "torn_mid_tx",
        Damage::FlipByte,
        Target::LastEntry,
        NEWEST_THREE_CHANGES,
    );
}

/// Only the commit marker ending the newest flush is torn: its records
/// are all whole, yet the flush is unfinished and goes whole.
#[test]
fn a_torn_commit_marker_drops_its_flush_and_postgres_resends_it() {
    torn_tail(
        "torn_marker",
        Damage::FlipByte,
        Target::CommitMarker,
        NEWEST_THREE_CHANGES,
    );
}

/// Up to three entries per shape on items (unfiltered shapes three, `v > 20`
/// two, `v <= 20` one).
const NEWEST_THREE_CHANGES: &str = "BEGIN;
     INSERT INTO items VALUES (1000, 1000, 'newest');
     INSERT INTO items VALUES (1001, 5, 'newest too');
     UPDATE items SET note = 'touched last' WHERE id = 1000;
     COMMIT;";

/// The newest transaction gives each shape one entry: the torn record is
/// all of it.
const NEWEST_ONE_CHANGE: &str = "INSERT INTO items VALUES (1000, 1000, 'newest')";

/// One framed record of a segment (`len u32 | crc32 u32 | lsn u64 | shape
/// u64 | kind u8 | payload`).
#[derive(Debug)]
struct Record {
    at: usize,
    len: usize,
    lsn: u64,
    shape: u64,
    kind: u8,
}

const HEADER: usize = 25;
const SHAPE_CREATED: u8 = 4;
/// Ends the records of one flush (`len | crc | lsn 0 | shape 0 | 6`).
const COMMIT: u8 = 6;
/// A flush's processed position (after its records, before its marker).
const POSITION: u8 = 8;

/// The records of a segment, up to its zero padding. The test reads only
/// what the server wrote whole, so anything else is a failure.
fn records(bytes: &[u8], path: &Path) -> Vec<Record> {
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let mut out = Vec::new();
    let mut at = 0;
    while at + HEADER <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        assert!(
            len >= HEADER && at + len <= bytes.len(),
            "{}: bad record length {len} at byte {at}",
            path.display()
        );
        out.push(Record {
            at,
            len,
            lsn: word(at + 8),
            shape: word(at + 16),
            kind: bytes[at + 24],
        });
        at += len;
    }
    out
}

/// Each shard's segment files, oldest first.
fn segments(storage: &Path) -> Vec<(usize, Vec<PathBuf>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(storage.join("shards")).unwrap() {
        let entry = entry.unwrap();
        let Ok(shard) = entry.file_name().to_string_lossy().parse::<usize>() else {
            continue;
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(entry.path().join("log"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                name.starts_with("segment-") && name.ends_with(".log")
            })
            .collect();
        files.sort();
        if !files.is_empty() {
            out.push((shard, files));
        }
    }
    out.sort();
    out
}

/// Whether a shard's log created a shape on `items`.
fn has_items_shape(files: &[PathBuf]) -> bool {
    files.iter().any(|path| {
        let bytes = std::fs::read(path).unwrap();
        !items_shapes(&bytes, &records(&bytes, path)).is_empty()
    })
}

/// The shape ids (record ids) of a segment's shapes on `items`.
fn items_shapes(bytes: &[u8], records: &[Record]) -> Vec<u64> {
    records
        .iter()
        .filter(|r| r.kind == SHAPE_CREATED)
        .filter(|r| {
            let creation: serde_json::Value =
                serde_json::from_slice(&bytes[r.at + HEADER..r.at + r.len]).unwrap();
            creation["table"][1] == "items"
        })
        .map(|r| r.shape)
        .collect()
}

/// The log without terminal colours.
fn strip_ansi(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters, ending with a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn confirmed_flush(pg: &mut postgres::Client, db: &TestDb) -> Lsn {
    let text: String = pg
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&format!("electric_slot_{}", db.stream_id())],
        )
        .unwrap()
        .get(0);
    text.parse().unwrap()
}

/// The commit LSN the client saw for the insert of items row `id`.
fn insert_lsn(client: &ShapeClient, id: i32) -> u64 {
    let key = format!("/\"{id}\"");
    client
        .history
        .iter()
        .find(|h| h.1 == "insert" && h.2.ends_with(&key))
        .unwrap_or_else(|| panic!("{} never saw the insert of {id}", client.definition))
        .3
        .parse()
        .unwrap()
}

/// Transactions `from..from + count`: an insert, an update (moving rows
/// into the where shape) and a change of `others`.
fn write(pg: &mut postgres::Client, from: i32, count: i32) {
    for n in from..from + count {
        pg.batch_execute(&format!(
            "BEGIN;
             INSERT INTO items VALUES ({n}, {n}, 'w{n}');
             UPDATE items SET v = v + 7 WHERE id = {};
             UPDATE others SET label = 'l{n}' WHERE id = {};
             COMMIT;",
            1 + n % 40,
            1 + n % 10
        ))
        .unwrap();
    }
}

fn converge(server: &Server, clients: &mut [ShapeClient], pg: &mut postgres::Client, when: &str) {
    for client in clients {
        let (_, columns, query) = SHAPES.iter().find(|s| s.0 == client.definition).unwrap();
        let want = sorted_texts(pg, query, &[]);
        client
            .converge(server, columns, &want, Duration::from_secs(30))
            .unwrap_or_else(|e| {
                panic!(
                    "{when}: {} (handle {:?}, offset {}) is not Postgres' view: {e}\nserver log:\n{}",
                    client.definition,
                    client.handle,
                    client.offset,
                    server.log_tail()
                )
            });
    }
}

fn torn_tail(prefix: &str, damage: Damage, target: Target, newest: &str) {
    let db = database(prefix);
    let mut pg = db.client();
    pg.batch_execute(
        "CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, note text);
         INSERT INTO items SELECT g, g, 'seed' FROM generate_series(1, 40) g;
         CREATE TABLE others (id int PRIMARY KEY, label text);
         INSERT INTO others SELECT g, 'o' || g FROM generate_series(1, 10) g;",
    )
    .unwrap();
    let mut server = Server::start(
        &db,
        &[
            ("ELECTRIC_LONG_POLL_TIMEOUT", "500"),
            ("SHAPESHARD_SEGMENT_BYTES", "1048576"),
        ],
    );
    let mut followers: Vec<ShapeClient> = SHAPES
        .iter()
        .map(|(definition, _, _)| {
            let mut client = ShapeClient::new(definition);
            client.record = true;
            client.sync(&server).unwrap();
            client
        })
        .collect();

    // Confirmations work: what the shards made durable is confirmed.
    write(&mut pg, 100, 5);
    converge(&server, &mut followers, &mut pg, "first writes");
    let first_writes = insert_lsn(&followers[0], 104);
    wait_for(
        "Postgres to confirm the first writes",
        Duration::from_secs(20),
        || (confirmed_flush(&mut pg, &db).0 > first_writes).then_some(()),
    );

    // From now on nothing more is confirmed (a status interval of an hour):
    // what the shards make durable stays unconfirmed, so Postgres must
    // re-send it after the crash. The clean stop confirms the fence.
    server.set_env("SHAPESHARD_STATUS_INTERVAL_MS", "3600000");
    server.graceful_restart();
    let confirmed = confirmed_flush(&mut pg, &db);
    converge(&server, &mut followers, &mut pg, "after the clean restart");
    // Clients that stop here, before the unconfirmed transactions, and
    // read them from the rebuilt log after the crash.
    let mut laggards: Vec<ShapeClient> = SHAPES
        .iter()
        .map(|(definition, _, _)| {
            let mut client = ShapeClient::new(definition);
            client.sync(&server).unwrap();
            client
        })
        .collect();

    write(&mut pg, 200, 5);
    pg.batch_execute(newest).unwrap();
    converge(&server, &mut followers, &mut pg, "before the crash");
    let newest_lsn = insert_lsn(&followers[0], 1000);
    let mut recorded: Vec<Recorded> = followers
        .iter_mut()
        .flat_map(|c| std::mem::take(&mut c.recorded))
        .collect();
    // What the laggards will read: the unconfirmed transactions, as served
    // before the crash.
    for (follower, laggard) in followers.iter().zip(&laggards) {
        let handle = follower.handle.as_deref().unwrap();
        for offset in [&laggard.offset, &follower.offset] {
            recorded.push(replay::fetch(&server, &follower.definition, handle, offset).unwrap());
        }
    }

    // The newest transaction is durable: its records end every shard log
    // that has a shape on items, closed by a commit marker.
    let storage = server.dir.clone();
    let tails = wait_for(
        "the newest transaction to be durable",
        Duration::from_secs(20),
        || {
            let mut tails = Vec::new();
            for (shard, files) in segments(&storage) {
                if !has_items_shape(&files) {
                    continue;
                }
                let path = files.last().unwrap().clone();
                let bytes = std::fs::read(&path).unwrap();
                let records = records(&bytes, &path);
                let marker = records.last().filter(|r| r.kind == COMMIT)?;
                let entry = records
                    .iter()
                    .rev()
                    .find(|r| r.kind != COMMIT && r.kind != POSITION)?;
                if entry.lsn != newest_lsn {
                    return None;
                }
                let damaged = match target {
                    Target::LastEntry => entry,
                    Target::CommitMarker => marker,
                };
                // Recovery keeps what the last whole flush before the
                // damage ended with.
                let cut = records
                    .iter()
                    .filter(|r| r.kind == COMMIT && r.at + r.len <= damaged.at)
                    .map(|r| r.at + r.len)
                    .max()
                    .unwrap_or(0);
                tails.push(Tail {
                    shard,
                    path,
                    at: damaged.at,
                    len: damaged.len,
                    cut,
                    shape: entry.shape,
                    entry: bytes[entry.at..entry.at + entry.len].to_vec(),
                });
            }
            Some(tails)
        },
    );
    assert!(
        !tails.is_empty(),
        "no shard holds a shape on items: {:?}",
        segments(&storage)
    );
    // ... and neither it nor the writes before it since the clean restart
    // are confirmed: Postgres will send them again.
    let held = confirmed_flush(&mut pg, &db);
    let first_unconfirmed = insert_lsn(&followers[0], 200);
    assert!(
        held.0 < first_unconfirmed && first_unconfirmed < newest_lsn,
        "confirmed_flush_lsn {held} is already past the first commit since the clean \
         restart {} (newest {}; confirmed {confirmed} at the clean restart)",
        Lsn(first_unconfirmed),
        Lsn(newest_lsn)
    );

    server.kill();
    let log_before = server.log().len();
    for Tail {
        shard,
        path,
        at,
        len,
        cut,
        ..
    } in &tails
    {
        let mut bytes = std::fs::read(path).unwrap();
        match damage {
            Damage::FlipByte => {
                bytes[at + len - 1] ^= 0x5a;
                std::fs::write(path, &bytes).unwrap();
            }
            Damage::CutShort => {
                assert!(*len > HEADER, "no payload to cut in the middle of");
                let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
                file.set_len((at + HEADER + (len - HEADER) / 2) as u64)
                    .unwrap();
            }
        }
        eprintln!(
            "shard {shard}: damaged ({damage:?}) the {target:?} at byte {at} ({len} bytes; \
             newest commit {newest_lsn}; last whole flush ends at byte {cut}) in {}",
            path.display()
        );
    }
    server.restart();

    let log = strip_ansi(&server.log()[log_before..]);
    for Tail { shard, at, cut, .. } in &tails {
        let said = format!(
            "cut the segment log at byte {cut}: torn record at byte {at}: {}",
            damage.reason()
        );
        assert!(
            log.lines()
                .any(|l| l.contains(&said) && l.contains(&format!("shard={shard}"))),
            "shard {shard} did not say it cut the torn tail ({said}); log since the restart:\n{log}"
        );
    }

    // Everyone carries on, through one more transaction after the restart.
    write(&mut pg, 300, 1);
    converge(
        &server,
        &mut followers,
        &mut pg,
        "followers after the torn tail",
    );
    converge(
        &server,
        &mut laggards,
        &mut pg,
        "laggards after the torn tail",
    );
    let mut fresh: Vec<ShapeClient> = SHAPES
        .iter()
        .map(|(definition, _, _)| ShapeClient::new(definition))
        .collect();
    converge(
        &server,
        &mut fresh,
        &mut pg,
        "fresh clients after the torn tail",
    );
    for (client, follower) in fresh.iter().zip(&followers) {
        assert_eq!(
            client.handle, follower.handle,
            "{}: the shape was rebuilt, not recreated",
            client.definition
        );
    }
    replay::verify(&server, &recorded, Duration::from_secs(20)).unwrap_or_else(|e| {
        panic!(
            "the log after the torn tail is not the log before it: {e}\nserver log:\n{}",
            server.log_tail()
        )
    });

    // Postgres re-sent the torn transaction and the shard journaled it
    // again: its last entry, byte for byte, after the cut.
    for Tail {
        shard,
        path,
        cut,
        shape,
        entry,
        ..
    } in &tails
    {
        wait_for(
            &format!("shard {shard} to journal the re-sent entry of shape {shape} again"),
            Duration::from_secs(20),
            || {
                let bytes = std::fs::read(path).unwrap();
                records(&bytes, path)
                    .iter()
                    .any(|r| r.at >= *cut && bytes[r.at..r.at + r.len] == entry[..])
                    .then_some(())
            },
        );
    }
}

/// A shard's newest segment as found before the crash.
struct Tail {
    shard: usize,
    path: PathBuf,
    /// The damaged record.
    at: usize,
    len: usize,
    /// Where recovery must cut: the end of the last whole flush before it.
    cut: usize,
    /// The newest transaction's last entry (its shape and framed bytes).
    shape: u64,
    entry: Vec<u8>,
}
