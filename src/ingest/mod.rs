//! The ingest: one replication connection per server. It decodes pgoutput
//! exactly once, routes each transaction to the shards that own shapes on
//! the relations it touches, tells every shard how far the WAL has moved, and
//! confirms to Postgres only the persisted-offset fence.

pub mod publication;
pub mod slot;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use shards::change::Transaction;
use shards::feed::FeedEvent;
use shards::fence::DurableProgress;
use shards::routes::{RouteTable, ShardMask};
use shards::runtime::channel::ConnectedSender;
use shards::runtime::{self, Shutdown};
use shards::Lsn;

use crate::pg::conn::Connection;
use crate::pg::connstr::ConnConfig;
use crate::pg::error::PgError;
use crate::pg::pgoutput::{DecodedEvent, Decoder};
use crate::pg::replication::{self, ReplicationMessage};
use crate::pg::sql::quote_ident;
use crate::status::{ServiceStatus, Status};

/// SQLSTATE object_in_use: the slot is active for another process.
const OBJECT_IN_USE: &str = "55006";

/// At most one stale slot holder terminated per this interval.
const SLOT_TAKEOVER_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub conn: ConnConfig,
    pub slot_name: String,
    pub publication_name: String,
    /// Standby status updates at least this often.
    pub status_interval: Duration,
    /// Progress to idle shards at most this often (coalesced).
    pub progress_interval: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// On shutdown, how long to wait for every shard to reach the last
    /// received position before confirming what is durable.
    pub drain_timeout: Duration,
}

impl IngestConfig {
    pub fn new(conn: ConnConfig, stream_id: &str) -> IngestConfig {
        IngestConfig {
            conn,
            slot_name: format!("electric_slot_{stream_id}"),
            publication_name: format!("electric_publication_{stream_id}"),
            status_interval: Duration::from_secs(1),
            progress_interval: Duration::from_millis(50),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Counters the ingest keeps, for logs, health and tests.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub sessions: std::sync::atomic::AtomicU64,
    pub transactions_delivered: std::sync::atomic::AtomicU64,
    pub transactions_skipped: std::sync::atomic::AtomicU64,
    pub last_confirmed: std::sync::atomic::AtomicU64,
}

pub struct Ingest {
    config: IngestConfig,
    feeds: Vec<ConnectedSender<FeedEvent>>,
    progress: Arc<DurableProgress>,
    routes: Arc<RouteTable>,
    status: Arc<ServiceStatus>,
    shutdown: Shutdown,
    stats: Arc<IngestStats>,
    /// Commit LSN of the last transaction handed to the shards: a resent one
    /// at or below it is skipped, so a reconnect never repeats a transaction.
    last_delivered_commit: Lsn,
    /// Everything before this WAL position has been handed to the shards.
    received: Lsn,
    /// Shards that have not yet been told about `received`.
    owed_progress: ShardMask,
}

enum SessionEnd {
    Shutdown,
}

impl Ingest {
    pub fn new(
        config: IngestConfig,
        feeds: Vec<ConnectedSender<FeedEvent>>,
        progress: Arc<DurableProgress>,
        routes: Arc<RouteTable>,
        status: Arc<ServiceStatus>,
        shutdown: Shutdown,
        stats: Arc<IngestStats>,
    ) -> Ingest {
        assert_eq!(feeds.len(), progress.shards(), "one feed per shard");
        Ingest {
            config,
            feeds,
            progress,
            routes,
            status,
            shutdown,
            stats,
            last_delivered_commit: Lsn::ZERO,
            received: Lsn::ZERO,
            owed_progress: 0,
        }
    }

    /// Streams until shutdown, reconnecting with backoff after any failure.
    /// Dropping the feeds at the end tells every shard the stream is over.
    pub async fn run(mut self) {
        let mut backoff = self.config.backoff_initial;
        let mut last_takeover: Option<Instant> = None;
        while !self.shutdown.is_triggered() {
            let started = Instant::now();
            match self.session().await {
                Ok(SessionEnd::Shutdown) => break,
                Err(e) => {
                    if e.code() == Some(OBJECT_IN_USE) {
                        self.status.set(Status::Waiting);
                        if self.take_over_slot(&mut last_takeover).await {
                            // Its walsender is going: try again soon.
                            backoff = self.config.backoff_initial;
                        } else {
                            tracing::info!(
                                "waiting for replication slot {} to be released: {e}",
                                self.config.slot_name
                            );
                        }
                    } else {
                        self.status.set(Status::Starting);
                        tracing::warn!(
                            "replication stream failed, reconnecting in {backoff:?}: {e}"
                        );
                    }
                }
            }
            // A session that streamed a while was healthy: start backoff over.
            if started.elapsed() > self.config.backoff_max * 2 {
                backoff = self.config.backoff_initial;
            }
            futures_lite::future::or(runtime::sleep(backoff), self.shutdown.wait()).await;
            backoff = (backoff * 2).min(self.config.backoff_max);
        }
        self.status.set(Status::Starting);
    }

    /// Our slot is busy. The ingest runs only while this process holds the
    /// storage directory's lock, so the holder is no live instance of ours
    /// (a rolling deploy's predecessor has let go of the lock, so it is
    /// stopping): it is the walsender of an earlier process that died
    /// (SIGKILL, a crash) and that Postgres has not noticed yet, which can
    /// take `wal_sender_timeout`. Terminate it (only a walsender, only on
    /// our slot), at most once per `SLOT_TAKEOVER_INTERVAL`, so a
    /// misconfigured twin using the same stream id cannot make two
    /// servers fight over the slot in a tight loop. Returns whether one
    /// was terminated.
    async fn take_over_slot(&self, last: &mut Option<Instant>) -> bool {
        if last.is_some_and(|at| at.elapsed() < SLOT_TAKEOVER_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        let slot = &self.config.slot_name;
        let terminated = async {
            let mut admin = Connection::connect(&self.config.conn).await?;
            let pid = slot::terminate_stale_holder(&mut admin, slot).await;
            admin.close().await;
            pid
        }
        .await;
        match terminated {
            Ok(Some(pid)) => {
                tracing::warn!(
                    %slot,
                    pid,
                    "replication slot was held by a stale walsender (of an earlier process of this server: this one holds the storage lock); terminated it. If another server uses the same ELECTRIC_REPLICATION_STREAM_ID, give each its own"
                );
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(%slot, "cannot terminate the stale holder of the replication slot: {e}");
                false
            }
        }
    }

    async fn session(&mut self) -> Result<SessionEnd, PgError> {
        let mut admin = Connection::connect(&self.config.conn).await?;
        publication::ensure_exists(&mut admin, &self.config.publication_name).await?;
        admin.close().await;

        let mut conn =
            Connection::connect_replication(&crate::pg::with_display_settings(&self.config.conn))
                .await?;
        let slot = slot::prepare(&mut conn, &self.config.slot_name).await?;
        self.stats
            .sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if slot.created {
            tracing::info!(slot = %self.config.slot_name, at = %slot.confirmed_flush, "created replication slot");
            // Shapes exist, so a slot existed: it was dropped from under us
            // (or lost with a failover). What happened in between is gone
            // from the stream; the shapes cannot be trusted any more.
            if !self.routes.is_empty() {
                tracing::error!(slot = %self.config.slot_name, "the replication slot was gone; every shape is dropped and its clients re-sync");
                self.send_to(all_shards(self.feeds.len()), FeedEvent::SlotLost)
                    .await;
            }
        }
        // What Postgres confirmed was durable everywhere when it was confirmed.
        for shard in 0..self.progress.shards() {
            self.progress.publish(shard, slot.confirmed_flush);
        }
        self.received = self.received.max(slot.confirmed_flush);
        let start = self.progress.fence().max(slot.confirmed_flush);
        conn.start_copy_both(&format!(
            "START_REPLICATION SLOT {} LOGICAL {start} (proto_version '1', publication_names {})",
            quote_ident(&self.config.slot_name),
            crate::pg::sql::quote_literal(&quote_ident(&self.config.publication_name)),
        ))
        .await?;
        tracing::info!(slot = %self.config.slot_name, from = %start, "replication streaming");
        self.status.set(Status::Active);

        let mut decoder = Decoder::default();
        let mut last_status = Instant::now();
        let mut last_progress = Instant::now();
        let mut confirmed = Lsn::ZERO;
        let tick = self
            .config
            .progress_interval
            .min(self.config.status_interval);
        loop {
            let next =
                futures_lite::future::or(async { Some(conn.read_copy_data().await) }, async {
                    runtime::sleep(tick).await;
                    None
                })
                .await;
            let mut reply_now = false;
            match next {
                Some(Ok(Some(data))) => {
                    match replication::parse(data).map_err(PgError::Protocol)? {
                        ReplicationMessage::XLogData { data, .. } => {
                            self.handle_pgoutput(&mut decoder, data).await?;
                        }
                        ReplicationMessage::Keepalive {
                            wal_end,
                            reply_requested,
                            ..
                        } => {
                            // Outside a transaction nothing before wal_end is
                            // still coming: idle WAL need not pin the slot.
                            if !decoder.in_transaction() && wal_end > self.received {
                                self.received = wal_end;
                                self.owed_progress = all_shards(self.feeds.len());
                            }
                            reply_now = reply_requested;
                        }
                    }
                }
                Some(Ok(None)) => return Err(PgError::Closed),
                Some(Err(e)) => return Err(e),
                None => {}
            }
            if self.shutdown.is_triggered() {
                self.drain(&mut conn).await?;
                return Ok(SessionEnd::Shutdown);
            }
            if self.owed_progress != 0 && last_progress.elapsed() >= self.config.progress_interval {
                self.send_owed_progress();
                last_progress = Instant::now();
            }
            let fence = self.progress.fence();
            if reply_now
                || (fence != confirmed && last_status.elapsed() >= self.config.status_interval)
                || last_status.elapsed() >= self.config.status_interval * 10
            {
                confirmed = self.send_status(&mut conn, reply_now).await?;
                last_status = Instant::now();
            }
        }
    }

    async fn handle_pgoutput(&mut self, decoder: &mut Decoder, data: Bytes) -> Result<(), PgError> {
        let event = decoder
            .decode(data)
            .map_err(|e| PgError::Protocol(format!("pgoutput: {e}")))?;
        match event {
            None => Ok(()),
            Some(DecodedEvent::Relation(relation)) => {
                let mask = self.routes.mask_for_relation(relation.id);
                self.send_to(mask, FeedEvent::Relation(relation)).await;
                Ok(())
            }
            Some(DecodedEvent::Transaction(transaction)) => {
                self.deliver(transaction).await;
                Ok(())
            }
        }
    }

    async fn deliver(&mut self, transaction: Transaction) {
        use std::sync::atomic::Ordering::Relaxed;
        if transaction.commit_lsn <= self.last_delivered_commit {
            // Postgres resends from the confirmed position after a
            // reconnect; the shards already have this one.
            self.stats.transactions_skipped.fetch_add(1, Relaxed);
            return;
        }
        self.last_delivered_commit = transaction.commit_lsn;
        self.received = self.received.max(transaction.end_lsn);
        let mask = self.routes.mask_for(&transaction);
        let end_lsn = transaction.end_lsn;
        self.send_to(mask, FeedEvent::Transaction(Arc::new(transaction)))
            .await;
        // Everyone else only needs to hear that the WAL moved on.
        self.owed_progress |= all_shards(self.feeds.len()) & !mask;
        self.stats.transactions_delivered.fetch_add(1, Relaxed);
        tracing::trace!(end = %end_lsn, shards = mask, "transaction routed");
    }

    async fn send_to(&self, mask: ShardMask, event: FeedEvent) {
        for (shard, feed) in self.feeds.iter().enumerate() {
            if mask & (1 << shard) != 0 && feed.send(event.clone()).await.is_err() {
                tracing::error!(shard, "shard feed closed; the shard has stopped");
            }
        }
    }

    /// Coalesced: one Progress per owed shard per interval. A full feed keeps
    /// its debt for the next round instead of stalling the stream.
    fn send_owed_progress(&mut self) {
        for (shard, feed) in self.feeds.iter().enumerate() {
            let bit = 1 << shard;
            if self.owed_progress & bit != 0
                && feed.try_send(FeedEvent::Progress(self.received)).is_ok()
            {
                self.owed_progress &= !bit;
            }
        }
    }

    async fn send_status(
        &self,
        conn: &mut Connection,
        reply_requested: bool,
    ) -> Result<Lsn, PgError> {
        let fence = self.progress.fence();
        for shard in 0..self.progress.shards() {
            assert!(
                fence <= self.progress.durable(shard),
                "fence ahead of shard {shard}"
            );
        }
        let write = self.received.max(fence);
        conn.write_copy_data(&replication::standby_status(write, fence, fence, false))
            .await?;
        self.stats
            .last_confirmed
            .store(fence.0, std::sync::atomic::Ordering::Relaxed);
        tracing::trace!(%write, %fence, reply_requested, "standby status sent");
        Ok(fence)
    }

    /// Clean stop: every shard hears the last received position, we wait
    /// (bounded) until all are durable up to it, then confirm the fence.
    async fn drain(&mut self, conn: &mut Connection) -> Result<(), PgError> {
        let received = self.received;
        self.send_to(all_shards(self.feeds.len()), FeedEvent::Progress(received))
            .await;
        self.owed_progress = 0;
        let deadline = Instant::now() + self.config.drain_timeout;
        while self.progress.fence() < received && Instant::now() < deadline {
            runtime::sleep(Duration::from_millis(2)).await;
        }
        let fence = self.send_status(conn, false).await?;
        tracing::info!(%received, confirmed = %fence, "replication stopped");
        Ok(())
    }
}

fn all_shards(count: usize) -> ShardMask {
    if count >= 64 {
        u64::MAX
    } else {
        (1u64 << count) - 1
    }
}
