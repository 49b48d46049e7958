//! Restart: a shard rebuilds its shapes from its segment log — creation
//! records, snapshot rows, entries, removals — so clients holding
//! `(handle, offset)` carry on without a 409. Replication then resumes from
//! the fence and each shape skips transactions it already holds.

use std::path::Path;

use shards::lsn::Lsn;
use shards::shape::offset::LogOffset;
use shards::shape::registry::Registry;
use shards::storage::record::{Kind, Scanner};
use shards::storage::segment::segment_indices;

use super::create::build_spec;
use super::persist;

#[derive(Debug, Default)]
pub struct Recovery {
    pub records: u64,
    pub shapes: usize,
    pub dropped: usize,
}

/// Replays every segment in `dir` (already cut at a torn tail by
/// `SegmentWriter::open`) into `registry`.
pub fn recover(dir: &Path, registry: &mut Registry) -> std::io::Result<Recovery> {
    let mut recovery = Recovery::default();
    let indices = match segment_indices(dir) {
        Ok(indices) => indices,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(recovery),
        Err(e) => return Err(e),
    };
    for index in indices {
        let bytes = std::fs::read(dir.join(format!("segment-{index:010}.log")))?;
        for record in Scanner::new(&bytes) {
            recovery.records += 1;
            let shape = || registry.get(record.shape);
            match record.kind {
                Kind::ShapeCreated => match persist::decode(record.payload) {
                    Ok((handle, definition, info)) => {
                        if registry.by_definition(&definition.canonical()).is_some() {
                            tracing::warn!(%handle, "a second live shape for one definition in the log; keeping the first");
                            continue;
                        }
                        match build_spec(handle.clone(), definition, info) {
                            Ok((spec, _)) => {
                                registry.restore(record.shape, spec);
                            }
                            Err(reply) => tracing::warn!(
                                %handle,
                                "cannot rebuild shape: {}",
                                String::from_utf8_lossy(&reply.body)
                            ),
                        }
                    }
                    Err(e) => tracing::warn!(shape = record.shape, "unreadable shape record: {e}"),
                },
                Kind::SnapshotItem => {
                    if let Some(shape) = shape() {
                        shape.restore_snapshot_item(record.payload);
                    }
                }
                Kind::SnapshotEnd => {
                    if let Some(shape) = shape() {
                        shape.restore_snapshot_end(record.payload);
                    }
                }
                Kind::Entry => {
                    let (Some(tx), Some(op)) = (
                        record
                            .payload
                            .get(0..8)
                            .and_then(|b| b.try_into().ok())
                            .map(u64::from_le_bytes),
                        record
                            .payload
                            .get(8..16)
                            .and_then(|b| b.try_into().ok())
                            .map(u64::from_le_bytes),
                    ) else {
                        tracing::warn!(shape = record.shape, "entry record too short");
                        continue;
                    };
                    if let Some(shape) = shape() {
                        shape.restore_entry(
                            Lsn(record.lsn),
                            LogOffset::At { tx, op },
                            &record.payload[16..],
                        );
                    }
                }
                Kind::ShapeRemoved => registry.forget(record.shape, "removed before the restart"),
            }
        }
    }
    // A snapshot cut off by the crash cannot be resumed (its transaction is
    // gone): those shapes are dropped and their clients re-sync.
    let unfinished: Vec<u64> = registry
        .shapes()
        .filter(|s| !s.snapshot_done())
        .map(|s| s.id)
        .collect();
    for id in &unfinished {
        registry.remove(*id, "its snapshot was interrupted by the restart");
    }
    recovery.dropped = unfinished.len();
    recovery.shapes = registry.len();
    Ok(recovery)
}
