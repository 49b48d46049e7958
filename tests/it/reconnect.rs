//! The replication backend is killed mid-stream: the ingest reconnects with
//! backoff and resumes from its last confirmed position, losing and
//! repeating nothing.

use std::sync::atomic::Ordering;
use std::time::Duration;

use shards::change::Change;

use crate::harness::{database, wait_for};
use crate::rig::IngestRig;

fn inserted_ids(rig: &IngestRig) -> Vec<i64> {
    rig.transactions(0)
        .iter()
        .flat_map(|t| t.changes.iter())
        .map(|c| match c {
            Change::Insert { new, .. } => new[0].as_str().unwrap().parse().unwrap(),
            other => panic!("unexpected change {other:?}"),
        })
        .collect()
}

#[test]
fn killed_replication_backend_resumes_without_loss_or_repeat() {
    let db = database("reconnect");
    let mut client = db.client();
    client
        .batch_execute("CREATE TABLE items (id int8 PRIMARY KEY, payload text)")
        .unwrap();
    let rig = IngestRig::start(&db, 2);
    rig.follow(&db, &["items"], 0);
    // Hold durability so the slot's confirmed position stays behind what was
    // delivered: the new session must be resent transactions and skip them.
    rig.hold_durability.store(true, Ordering::SeqCst);

    let writer = {
        let url = db.url.clone();
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            for id in 1..=200i64 {
                client
                    .execute("INSERT INTO items VALUES ($1, 'x')", &[&id])
                    .unwrap();
                if id % 20 == 0 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        })
    };
    let mut kills = 0;
    for at in [40usize, 120] {
        rig.wait_transactions(0, at);
        let killed: bool = client
            .query_one(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL",
                &[&rig.slot_name],
            )
            .map(|row| row.get(0))
            .unwrap_or(false);
        assert!(killed, "the walsender was running and got terminated");
        kills += 1;
        if at == 40 {
            // Let the next session start from the held position and be
            // resent what was delivered, then release durability so later
            // sessions resume from a newer confirmed position. (Waiting for
            // the session alone raced: released before the new session
            // read the fence, it started past what was delivered.)
            wait_for("a resend after the kill", Duration::from_secs(30), || {
                (rig.stats.sessions.load(Ordering::SeqCst) >= 2
                    && rig.stats.transactions_skipped.load(Ordering::SeqCst) > 0)
                    .then_some(())
            });
            rig.hold_durability.store(false, Ordering::SeqCst);
        }
    }
    writer.join().unwrap();
    rig.wait_transactions(0, 200);
    // A moment for any stray resend to show up.
    std::thread::sleep(Duration::from_millis(300));
    let ids = inserted_ids(&rig);
    assert_eq!(
        ids,
        (1..=200).collect::<Vec<_>>(),
        "every transaction once, in order"
    );
    assert!(
        rig.stats.sessions.load(Ordering::SeqCst) > kills as u64,
        "reconnected after each kill"
    );
    assert!(
        rig.stats.transactions_skipped.load(Ordering::SeqCst) > 0,
        "transactions after the confirmed position were resent and skipped"
    );
    // Shard 1 owns nothing on `items` and never saw a transaction.
    assert!(rig.transactions(1).is_empty());
    rig.stop();
}
