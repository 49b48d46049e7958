//! An in-process ingest against the test cluster, with recording shards in
//! place of the server's: what the ingest delivered, in order, and a switch
//! to hold back durability.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shapeshard::ingest::{publication, Ingest, IngestConfig, IngestStats};
use shapeshard::pg::conn::Connection;
use shapeshard::status::{ServiceStatus, Status};
use shards::change::Transaction;
use shards::feed::{FeedEvent, FEED_CAPACITY};
use shards::fence::DurableProgress;
use shards::routes::RouteTable;
use shards::runtime::{self, channel, Shutdown};
use shards::Lsn;

use crate::harness::{wait_for, TestDb};

pub struct IngestRig {
    pub shutdown: Shutdown,
    pub progress: Arc<DurableProgress>,
    pub routes: Arc<RouteTable>,
    pub status: Arc<ServiceStatus>,
    pub stats: Arc<IngestStats>,
    /// Transactions each recording shard received, in order.
    received: Arc<Mutex<Vec<Vec<Arc<Transaction>>>>>,
    /// While set, recording shards publish no durable progress.
    pub hold_durability: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<std::io::Result<()>>>,
    pub slot_name: String,
    pub publication_name: String,
}

impl IngestRig {
    pub fn start(db: &TestDb, shards: usize) -> IngestRig {
        let mut config = IngestConfig::new(db.conn_config(), &db.stream_id());
        config.status_interval = Duration::from_millis(100);
        config.progress_interval = Duration::from_millis(20);
        config.backoff_initial = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(500);
        let shutdown = Shutdown::new();
        let progress = DurableProgress::new(shards, Lsn::ZERO);
        let routes = Arc::new(RouteTable::new());
        let status = Arc::new(ServiceStatus::default());
        let received = Arc::new(Mutex::new(vec![Vec::new(); shards]));
        let hold_durability = Arc::new(AtomicBool::new(false));
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..shards)
            .map(|_| channel::new_bounded::<FeedEvent>(FEED_CAPACITY))
            .unzip();

        let shard_thread = {
            let progress = progress.clone();
            let received = received.clone();
            let hold = hold_durability.clone();
            runtime::spawn_thread("rig-shards", move || async move {
                let mut tasks = Vec::new();
                for (index, receiver) in receivers.into_iter().enumerate() {
                    let progress = progress.clone();
                    let received = received.clone();
                    let hold = hold.clone();
                    tasks.push(runtime::spawn_local(async move {
                        let feed = receiver.connect().await;
                        record(index, feed, progress, received, hold).await;
                    }));
                }
                for task in tasks {
                    task.join().await;
                }
            })
            .unwrap()
        };
        let stats = Arc::new(IngestStats::default());
        let ingest_thread = {
            let (progress, routes, status, shutdown, stats, config) = (
                progress.clone(),
                routes.clone(),
                status.clone(),
                shutdown.clone(),
                stats.clone(),
                config.clone(),
            );
            runtime::spawn_thread("rig-ingest", move || async move {
                let mut feeds = Vec::new();
                for sender in senders {
                    feeds.push(sender.connect().await);
                }
                Ingest::new(config, feeds, progress, routes, status, shutdown, stats)
                    .run()
                    .await;
            })
            .unwrap()
        };
        let rig = IngestRig {
            shutdown,
            progress,
            routes,
            status,
            stats,
            received,
            hold_durability,
            threads: vec![ingest_thread, shard_thread],
            slot_name: config.slot_name.clone(),
            publication_name: config.publication_name.clone(),
        };
        wait_for("replication to stream", Duration::from_secs(30), || {
            (rig.status.get() == Status::Active).then_some(())
        });
        rig
    }

    /// Adds tables to the publication (as shape creation does) and routes
    /// them to `shard`.
    pub fn follow(&self, db: &TestDb, tables: &[&str], shard: usize) {
        let conn = db.conn_config();
        let publication = self.publication_name.clone();
        let names: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
        crate::harness::block_on(move || async move {
            let mut c = Connection::connect(&conn).await.unwrap();
            for table in &names {
                publication::add_table(&mut c, &publication, "public", table)
                    .await
                    .unwrap();
            }
            c.close().await;
        });
        let mut client = db.client();
        for table in tables {
            let oid: u32 = client
                .query_one(&format!("SELECT '{table}'::regclass::oid"), &[])
                .unwrap()
                .get(0);
            self.routes.subscribe(oid, shard);
        }
    }

    pub fn transactions(&self, shard: usize) -> Vec<Arc<Transaction>> {
        self.received.lock().unwrap()[shard].clone()
    }

    /// Waits until shard `shard` has received at least `count` transactions.
    pub fn wait_transactions(&self, shard: usize, count: usize) -> Vec<Arc<Transaction>> {
        wait_for(
            &format!("{count} transactions on shard {shard}"),
            Duration::from_secs(30),
            || {
                let got = self.transactions(shard);
                (got.len() >= count).then_some(got)
            },
        )
    }

    pub fn stop(mut self) {
        self.shutdown.trigger();
        for thread in self.threads.drain(..) {
            thread.join().unwrap().unwrap();
        }
    }
}

impl Drop for IngestRig {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

async fn record(
    index: usize,
    feed: channel::ConnectedReceiver<FeedEvent>,
    progress: Arc<DurableProgress>,
    received: Arc<Mutex<Vec<Vec<Arc<Transaction>>>>>,
    hold: Arc<AtomicBool>,
) {
    let mut pending = Lsn::ZERO;
    loop {
        let event = runtime::timeout(Duration::from_millis(10), feed.recv()).await;
        match event {
            Some(None) => break,
            Some(Some(FeedEvent::Transaction(t))) => {
                pending = pending.max(t.end_lsn);
                received.lock().unwrap()[index].push(t);
            }
            Some(Some(FeedEvent::Progress(lsn))) => pending = pending.max(lsn),
            Some(Some(FeedEvent::Relation(_) | FeedEvent::SlotLost)) => {}
            None => {}
        }
        if !hold.load(Ordering::SeqCst) {
            progress.publish(index, pending);
        }
    }
}
