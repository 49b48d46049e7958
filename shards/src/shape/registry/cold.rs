//! Cold shapes: restored from LMDB without being built, built on first
//! use (`warm`), and built shapes unloaded back to cold when idle.

use std::rc::Rc;

use crate::change::RelationId;
use crate::storage::meta::{LogRecord, MetaStore, ShapeRecord};

use crate::shape::definition::definition_hash;
use crate::shape::log::ShapeLog;

use super::{Gate, Registry, Shape, ShapeId};

/// Shapes unloaded per checkpoint at most: an unload frees a built shape
/// and allocates its cold form (a few µs each), and the sweep runs on the
/// shard's executor, so a mass of idle shapes goes cold over several
/// checkpoints rather than in one long pause.
pub const UNLOAD_PER_CHECKPOINT: usize = 1024;

/// Built shapes the unload sweep looks at per checkpoint (it walks them in
/// turn, so a shard with many busy shapes does not scan them all at once).
pub const SWEEP_PER_CHECKPOINT: usize = 16_384;

/// Reads of a creation record tried before giving up on the metadata.
const META_READ_ATTEMPTS: u32 = 3;

/// A cold shape's creation record. A read that keeps failing is a storage
/// failure, not a reason to delete the shape: the process stops (as on any
/// storage failure) and recovery rebuilds from the segment log, rather than
/// the shape's clients losing it or a change for it being skipped.
fn read_persisted(meta: &MetaStore, id: ShapeId) -> Option<Vec<u8>> {
    let mut last_error = None;
    for _ in 0..META_READ_ATTEMPTS {
        match meta.persisted(id) {
            Ok(found) => return found,
            Err(e) => last_error = Some(e),
        }
    }
    panic!(
        "shard metadata unreadable (shape {id}): {}; stopping so that recovery rebuilds from the segment log",
        last_error.map_or_else(String::new, |e| e.to_string())
    );
}

/// A shape restored from LMDB and not used since, or unloaded after being
/// idle: routed and looked up like any other, but its spec, filter and log
/// state are built only when a request or a change next needs them, so a
/// restart costs O(records) and an idle shape keeps a few hundred bytes.
pub(super) struct Cold {
    pub(super) handle: Box<str>,
    pub(super) canonical: Box<str>,
    pub(super) relation: RelationId,
    /// `schema_fingerprint` of the table the shape was validated against.
    pub(super) fingerprint: u64,
    pub(super) read_stamp: u64,
    pub(super) created_ms: u64,
    pub(super) log: LogRecord,
}

impl Registry {
    /// Recovery: registers a shape from its LMDB record without building
    /// it (see `Cold`). Returns false when its definition is already taken.
    pub fn restore_cold(&mut self, record: &ShapeRecord, log: LogRecord) -> bool {
        self.next_id = self.next_id.max(record.id + 1);
        if self.by_definition.contains_key(record.canonical.as_str()) {
            return false;
        }
        let id = record.id;
        self.by_definition.insert(record.canonical.clone(), id);
        self.by_handle.insert(record.handle.clone(), id);
        let key = record
            .index_key
            .as_ref()
            .map(|(column, values)| (*column as usize, values.clone()));
        self.by_relation
            .entry(record.relation_id)
            .or_default()
            .add(id, key);
        self.by_read.insert((record.last_read, id));
        self.routes.subscribe(record.relation_id, self.shard);
        self.cold.insert(
            id,
            Box::new(Cold {
                handle: record.handle.as_str().into(),
                canonical: record.canonical.as_str().into(),
                relation: record.relation_id,
                fingerprint: record.schema_fingerprint,
                read_stamp: record.last_read,
                created_ms: record.created_ms,
                log,
            }),
        );
        true
    }

    /// Shapes not built since the restart.
    pub fn cold_count(&self) -> usize {
        self.cold.len()
    }

    /// The shape `id`, built first if it is cold. A cold shape that cannot
    /// be built (its record unreadable) is removed: its clients re-sync.
    pub(super) fn warm(&mut self, id: ShapeId) -> Option<Rc<Shape>> {
        if let Some(shape) = self.shapes.get(&id) {
            shape.active.set(self.epoch);
            return Some(shape.clone());
        }
        let cold = self.cold.get(&id)?;
        let built = match &self.loader {
            Some((meta, loader)) => match read_persisted(meta, id) {
                Some(persisted) => loader(&persisted),
                None => Err("its metadata record is missing".to_string()),
            },
            None => Err("no loader for restored shapes".to_string()),
        };
        let built = built.and_then(|spec| {
            if spec.canonical.as_str() == &*cold.canonical {
                Ok(spec)
            } else {
                Err("its creation record names another definition".to_string())
            }
        });
        let spec = match built {
            Ok(spec) => spec,
            Err(e) => {
                tracing::warn!(
                    shard = self.shard,
                    handle = &*cold.handle,
                    "cannot rebuild shape: {e}"
                );
                self.remove(id, "its stored definition could not be rebuilt");
                return None;
            }
        };
        let cold = self.cold.remove(&id).expect("checked above");
        self.rebuilt += 1;
        let shape = self.build(id, spec, Gate::Open, cold.created_ms, cold.read_stamp);
        shape.restore_log(&cold.log);
        // A subquery shape is cold only between a restart and its rebuild
        // (it is never unloaded): its inner relations are routed from now.
        self.route_dependencies(id, &shape);
        if shape.spec.subqueries.is_some() {
            self.unshared.insert(id);
        }
        self.shapes.insert(id, shape.clone());
        Some(shape)
    }

    /// Called once per checkpoint, as it starts (the previous one has
    /// completed): unloads the built shapes unused for more than
    /// `idle_checkpoints` checkpoints back to cold, so an idle shape costs
    /// what a restored one does. Only a shape nothing else holds (no reader,
    /// long-poll, snapshot or checkpoint in flight) whose items are all in
    /// its files goes cold, and only with a loader to rebuild it. A shape
    /// idle for a whole checkpoint had its creation record committed to
    /// LMDB, where rebuilding reads it. 0 never unloads. Each call looks at
    /// the next `SWEEP_PER_CHECKPOINT` built shapes and unloads at most
    /// `UNLOAD_PER_CHECKPOINT`. Returns how many.
    pub fn unload_idle(&mut self, idle_checkpoints: u64) -> usize {
        self.epoch += 1;
        if idle_checkpoints == 0 || self.loader.is_none() {
            return 0;
        }
        if self.sweep.is_empty() {
            self.sweep = self.shapes.keys().copied().collect();
        }
        let dirty = self.meta_dirty.clone();
        let dirty = dirty.borrow();
        let (mut visited, mut unloaded) = (0, 0);
        while visited < SWEEP_PER_CHECKPOINT && unloaded < UNLOAD_PER_CHECKPOINT {
            let Some(id) = self.sweep.pop() else { break };
            visited += 1;
            let Some(shape) = self.shapes.get(&id) else {
                continue;
            };
            if self.epoch - shape.active.get() <= idle_checkpoints
                || Rc::strong_count(shape) > 1
                || dirty.contains(&id)
            {
                continue;
            }
            if let Some(cold) = shape.to_cold() {
                self.shapes.remove(&id);
                self.cold.insert(id, cold);
                unloaded += 1;
            }
        }
        self.unloaded += unloaded as u64;
        unloaded
    }

    pub(super) fn forget_cold(&mut self, id: ShapeId, cold: &Cold, why: &str) {
        tracing::info!(
            shard = self.shard,
            handle = &*cold.handle,
            "shape removed: {why}"
        );
        self.by_read.remove(&(cold.read_stamp, id));
        self.read_stamps.remove(&id);
        self.meta_removed
            .push((id, definition_hash(&cold.canonical)));
        let log = ShapeLog::new(&self.files_dir, id, 1);
        self.doomed_files
            .extend(log.paths().iter().map(|p| p.to_path_buf()));
        self.by_handle.remove(&*cold.handle);
        if self.by_definition.get(&*cold.canonical) == Some(&id) {
            self.by_definition.remove(&*cold.canonical);
        }
        if let Some(shapes) = self.by_relation.get_mut(&cold.relation) {
            shapes.remove(id);
            if shapes.count == 0 {
                self.by_relation.remove(&cold.relation);
            }
        }
        self.routes.unsubscribe(cold.relation, self.shard);
    }
}
