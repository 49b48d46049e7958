//! A shard's core loop: it consumes its feed from the ingest in WAL order and
//! publishes how far it is durable.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use crate::feed::FeedEvent;
use crate::fence::DurableProgress;
use crate::lsn::Lsn;
use crate::runtime::channel::ConnectedReceiver;
use crate::shape::registry::Registry;

pub struct ShardCore {
    index: usize,
    progress: Arc<DurableProgress>,
    /// Highest WAL position seen on the feed; only grows.
    last_seen: Lsn,
    transactions_seen: u64,
    /// The shapes this shard owns, shared with its HTTP handlers.
    registry: Rc<RefCell<Registry>>,
}

impl ShardCore {
    pub fn new(
        index: usize,
        progress: Arc<DurableProgress>,
        registry: Rc<RefCell<Registry>>,
    ) -> ShardCore {
        let last_seen = progress.durable(index);
        ShardCore {
            index,
            progress,
            last_seen,
            transactions_seen: 0,
            registry,
        }
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn transactions_seen(&self) -> u64 {
        self.transactions_seen
    }

    pub fn apply(&mut self, event: FeedEvent) {
        match event {
            FeedEvent::Transaction(transaction) => {
                assert!(
                    transaction.end_lsn > self.last_seen,
                    "shard {}: transaction ending at {} after position {}: the feed went back",
                    self.index,
                    transaction.end_lsn,
                    self.last_seen
                );
                self.last_seen = transaction.end_lsn;
                self.transactions_seen += 1;
                self.registry.borrow_mut().apply_transaction(&transaction);
                // No shape storage holds data yet, so nothing is pending: the
                // transaction is as durable as this shard needs it to be.
                self.progress.publish(self.index, self.last_seen);
            }
            FeedEvent::Progress(lsn) => {
                self.last_seen = self.last_seen.max(lsn);
                self.registry.borrow_mut().advance(lsn);
                self.progress.publish(self.index, self.last_seen);
            }
            FeedEvent::Relation(relation) => {
                self.registry.borrow_mut().apply_relation(&relation);
            }
        }
    }

    /// Consumes the feed until the ingest closes it (on shutdown, after its
    /// last event: the shard drains everything it was sent).
    pub async fn run(&mut self, feed: ConnectedReceiver<FeedEvent>) {
        while let Some(event) = feed.recv().await {
            self.apply(event);
            crate::runtime::yield_if_needed().await;
        }
    }
}
