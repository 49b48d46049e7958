//! The shard's memory budget: what waits for the disk (journal, tails,
//! held transactions) and the wait below it.

use std::cell::RefCell;
use std::rc::Rc;

use crate::notify::Notify;

use super::Registry;

/// While the shard is over its memory budget, waits for a flush or a
/// checkpoint (asked to come early) to write some out; gives up when
/// `stop()` says so. Used by the feed consumer and by snapshot writers, so
/// the backlog stays in Postgres rather than in memory.
pub async fn wait_for_memory(registry: &RefCell<Registry>, stop: impl Fn() -> bool) {
    loop {
        let freed = {
            let mut registry = registry.borrow_mut();
            if !registry.over_budget() || stop() {
                return;
            }
            registry.memory_pressure = true;
            registry.memory_waits += 1;
            registry.freed.listen()
        };
        // Bounded: re-check even if no wake-up comes.
        crate::runtime::timeout(std::time::Duration::from_millis(100), freed).await;
    }
}

impl Registry {
    /// Built shapes unloaded to cold since start.
    /// Sets the shard's memory budget (journal + tails), in bytes.
    pub fn set_memory_budget(&mut self, bytes: usize) {
        self.memory_budget = bytes;
    }

    pub fn memory_budget(&self) -> usize {
        self.memory_budget
    }

    /// Bytes held in memory waiting for durability or a checkpoint: the
    /// journal not yet flushed, and the shapes' tails not yet in files.
    pub fn memory_bytes(&self) -> usize {
        self.memory.get() + self.journal.borrow().len() + self.unflushed
    }

    /// Journal bytes the segment writer still holds after a failed flush
    /// (0 once a flush succeeds); see `unflushed`.
    pub fn set_unflushed(&mut self, bytes: usize) {
        self.unflushed = bytes;
    }

    /// Over the budget: take nothing more (feed, snapshot rows) until
    /// `freed` fires.
    pub fn over_budget(&self) -> bool {
        self.memory_bytes() > self.memory_budget
    }

    /// Fires when a flush or a checkpoint freed memory.
    pub fn freed(&self) -> Rc<Notify> {
        self.freed.clone()
    }

    /// Asks for a checkpoint at the next tick: a finished snapshot is
    /// durable only once one has written it (`Shape::push_snapshot_row`),
    /// so a crash right after it loses as little as possible.
    pub fn request_checkpoint(&mut self) {
        self.memory_pressure = true;
    }

    /// Whether someone waited on the budget (or asked for a checkpoint)
    /// since the last call.
    pub fn take_memory_pressure(&mut self) -> bool {
        std::mem::take(&mut self.memory_pressure)
    }

    pub fn memory_waits(&self) -> u64 {
        self.memory_waits
    }
}
