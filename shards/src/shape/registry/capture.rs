//! What a tick or checkpoint takes from the registry: metadata records,
//! log tails, read stamps, files of removed shapes.

use std::path::PathBuf;
use std::rc::Rc;

use crate::storage::meta::{LogRecord, MetaBatch};

use crate::shape::log::Captured;

use super::{Registry, Shape, ShapeId};

impl Registry {
    /// This tick's metadata mutations (taken together with the journal, so
    /// they describe exactly what the tick's fdatasync makes durable).
    pub fn take_meta_batch(&mut self) -> MetaBatch {
        let mut ids: Vec<ShapeId> = self.meta_dirty.borrow_mut().drain().collect();
        ids.sort_unstable();
        MetaBatch {
            put: ids
                .iter()
                .filter_map(|id| self.shapes.get(id))
                .map(|s| s.meta_record())
                .collect(),
            remove: std::mem::take(&mut self.meta_removed),
        }
    }

    /// Checkpoint: every shape with log items not in its files yet, with
    /// its writes and resulting state. Taken with the journal (same
    /// position in the segment log).
    pub fn capture_logs(&self) -> Vec<(Rc<Shape>, Captured, LogRecord)> {
        self.shapes
            .values()
            .filter(|shape| shape.state.borrow().log.has_tail())
            .map(|shape| {
                let (captured, record) = shape.capture();
                (shape.clone(), captured, record)
            })
            .collect()
    }

    /// Serving files of shapes removed so far (delete them once the
    /// removals are checkpointed).
    pub fn take_doomed_files(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.doomed_files)
    }

    /// Records a read of `id` at `stamp` (a server-wide, growing clock).
    pub fn touch(&mut self, id: ShapeId, stamp: u64) {
        if let Some(shape) = self.warm(id) {
            self.by_read.remove(&(shape.read_stamp.get(), id));
            shape.read_stamp.set(stamp);
            self.by_read.insert((stamp, id));
            // Not a metadata rewrite per read: the stamp goes to LMDB's
            // small stamp table at the next checkpoint.
            self.read_stamps.insert(id, stamp);
        }
    }

    /// Checkpoint: the read stamps set since the last one.
    pub fn take_read_stamps(&mut self) -> Vec<(u64, u64)> {
        let mut stamps: Vec<(u64, u64)> = self.read_stamps.drain().collect();
        stamps.sort_unstable();
        stamps
    }

    /// A checkpoint that failed gives back what it took: the files of
    /// removed shapes are deleted by a later one, and its read stamps are
    /// kept unless the shape was read again since (or is gone).
    pub fn requeue_checkpoint(&mut self, doomed: Vec<PathBuf>, stamps: Vec<(u64, u64)>) {
        self.doomed_files.extend(doomed);
        for (id, stamp) in stamps {
            if self.shapes.contains_key(&id) || self.cold.contains_key(&id) {
                self.read_stamps.entry(id).or_insert(stamp);
            }
        }
    }

    /// The read stamp of the least recently read shape, if any.
    pub fn oldest_read(&self) -> Option<(u64, ShapeId)> {
        self.by_read.first().copied()
    }
}
