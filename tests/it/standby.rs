//! Standby status updates carry the persisted-offset fence: Postgres'
//! confirmed_flush_lsn advances only once every shard is durable.

use std::sync::atomic::Ordering;
use std::time::Duration;

use shards::Lsn;

use crate::harness::{database, wait_for};
use crate::rig::IngestRig;

fn confirmed_flush(client: &mut postgres::Client, slot: &str) -> Lsn {
    let text: String = client
        .query_one(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .unwrap()
        .get(0);
    text.parse().unwrap()
}

#[test]
fn confirmed_flush_follows_the_fence() {
    let db = database("standby");
    let mut client = db.client();
    client
        .batch_execute("CREATE TABLE items (id int8 PRIMARY KEY)")
        .unwrap();
    let rig = IngestRig::start(&db, 2);
    rig.follow(&db, &["items"], 1);
    rig.hold_durability.store(true, Ordering::SeqCst);

    client.execute("INSERT INTO items VALUES (1)", &[]).unwrap();
    let transaction = rig.wait_transactions(1, 1).remove(0);
    // Several status intervals pass; nothing may be confirmed past the
    // transaction while no shard has made it durable.
    std::thread::sleep(Duration::from_millis(500));
    let held = confirmed_flush(&mut client, &rig.slot_name);
    assert!(
        held <= transaction.commit_lsn,
        "confirmed {held} past undurable commit {}",
        transaction.commit_lsn
    );
    assert!(rig.progress.fence() < transaction.end_lsn);

    rig.hold_durability.store(false, Ordering::SeqCst);
    let advanced = wait_for(
        "confirmed_flush_lsn to advance",
        Duration::from_secs(10),
        || {
            let lsn = confirmed_flush(&mut client, &rig.slot_name);
            (lsn >= transaction.end_lsn).then_some(lsn)
        },
    );
    assert!(advanced >= transaction.end_lsn);
    for shard in 0..2 {
        assert!(rig.progress.fence() <= rig.progress.durable(shard));
    }
    rig.stop();
}
