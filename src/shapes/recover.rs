//! Restart: a shard rebuilds its shapes from LMDB (records and the log
//! states of the last checkpoint, with the serving files cut back to it),
//! then replays the segment log from the checkpoint's position — creation
//! records, snapshot rows, entries, removals — so clients holding
//! `(handle, offset)` carry on without a 409. Replication then resumes from
//! the fence and each shape skips transactions it already holds.

use std::path::Path;

use shards::lsn::Lsn;
use shards::shape::offset::LogOffset;
use shards::shape::registry::{Registry, SpecLoader};
use shards::storage::meta::MetaStore;
use shards::storage::record::{self, Kind, Scanner};
use shards::storage::segment::segment_indices;

use super::create::build_spec;
use super::persist;
use super::service::ShapeConfig;

#[derive(Debug, Default)]
pub struct Recovery {
    /// Shapes restored from LMDB records.
    pub from_meta: usize,
    /// Segment log records replayed (those after the checkpoint).
    pub records: u64,
    pub shapes: usize,
    pub dropped: usize,
    /// Serving files of shapes that no longer exist, deleted.
    pub orphans: usize,
    /// Snapshots that had ended but whose rows past the journaled part
    /// were not checkpointed yet (counted in `dropped`).
    pub large_snapshots_lost: usize,
    /// Subquery shapes resumed from a clean stop's kept views.
    pub subquery_resumed: usize,
    /// Subquery shapes resumed from their durable client views, their
    /// values to be read again (`reseed.rs`).
    pub subquery_reseeding: usize,
}

/// Builds restored shapes' specs from their creation records (a subquery
/// shape's with the tables its record kept, under `config`'s stack id and
/// buffer bound).
pub fn spec_loader(config: &ShapeConfig) -> SpecLoader {
    let config = config.clone();
    Box::new(move |persisted: &[u8]| {
        let unreadable = |e: String| format!("unreadable creation record: {e}");
        let (handle, definition, info) = persist::decode(persisted).map_err(unreadable)?;
        let built = match persist::decode_tables(persisted).map_err(unreadable)? {
            Some(tables) => super::subquery::build_spec(handle, definition, info, &tables, &config),
            None => build_spec(handle, definition, info),
        };
        built
            .map(|(spec, _)| spec)
            .map_err(|reply| String::from_utf8_lossy(&reply.body).into_owned())
    })
}

/// A subquery shape's seeding queries, from its creation record.
pub fn seeds_of(
    persisted: &[u8],
    config: &ShapeConfig,
) -> Result<Vec<super::subquery::SeedSql>, String> {
    let unreadable = |e: String| format!("unreadable creation record: {e}");
    let (handle, definition, info) = persist::decode(persisted).map_err(unreadable)?;
    let tables = persist::decode_tables(persisted)
        .map_err(unreadable)?
        .ok_or("a creation record without its subquery tables")?;
    super::subquery::build_spec(handle, definition, info, &tables, config)
        .map(|(_, sql)| sql.seeds)
        .map_err(|reply| String::from_utf8_lossy(&reply.body).into_owned())
}

/// Restores `registry` from `meta` and the segments in `log_dir` (already
/// cut at a torn tail by `SegmentWriter::open`).
pub fn recover(
    log_dir: &Path,
    meta: &MetaStore,
    registry: &mut Registry,
    upgrade_identity: bool,
    config: &ShapeConfig,
) -> std::io::Result<Recovery> {
    let mut recovery = Recovery::default();
    // Taken (deleted) first: they describe the last clean stop only, and
    // this run makes them stale as soon as it applies anything.
    let kept_views = meta.take_views()?;
    let client_views = meta.client_views()?;
    let mut loaded = meta.load()?;
    loaded.shapes.sort_unstable_by_key(|r| r.id);
    for record in &loaded.shapes {
        // Registered cold: built on first use (see `Registry::warm`). The
        // serving files are not touched either: bytes past the checkpointed
        // lengths are cut by the next write to them (`FileWrite::apply`).
        let log = loaded.logs.remove(&record.id).unwrap_or_default();
        if registry.restore_cold(record, log) {
            recovery.from_meta += 1;
        } else {
            tracing::warn!(handle = %record.handle, "a second shape for one definition; keeping the first");
            registry.forget_record(record.id, record.definition_hash);
        }
    }
    // Subquery shapes are built now: their client views as the checkpoint
    // kept them, the segment log's moves replayed on top.
    for (id, bytes) in &client_views {
        if let Some(shape) = registry.get(*id) {
            if let Err(why) = shape.restore_client_views(bytes) {
                tracing::warn!(shape = id, "cannot restore a subquery shape's views: {why}");
            }
        }
    }
    let (tail, position) = replay(
        log_dir,
        loaded.checkpoint,
        loaded.checkpoint_seen,
        registry,
        &mut recovery,
        config,
    )?;
    // A snapshot cut off by the crash cannot be resumed (its transaction is
    // gone): those shapes are dropped and their clients re-sync.
    let unfinished = registry.unfinished_snapshots();
    for id in &unfinished {
        registry.remove(*id, "its snapshot was interrupted by the restart");
    }
    recovery.dropped = unfinished.len();
    // Subquery shapes resume with their handle: at rest after a clean
    // stop from its kept views (`registry/kept_views.rs`: no query);
    // otherwise from their durable client views, their truth read again
    // once the shard runs (`registry/durable_views.rs`, `reseed.rs`). Only
    // one whose views were never made durable goes (409, re-sync).
    let subquery = registry.ids_where(super::subquery::canonical_has_subquery);
    for id in &subquery {
        if registry
            .get(*id)
            .is_some_and(|shape| shape.spec.subqueries.is_none())
        {
            // Its where only mentions `select` (in a literal).
            continue;
        }
        let kept = match kept_views.get(id) {
            Some(_) if tail => Err("records followed its kept views"),
            Some(bytes) => match registry.get(*id) {
                // Built now: its inner relations are routed from the start.
                Some(shape) => shape.restore_views(bytes),
                None => Err("it could not be rebuilt"),
            },
            None => Err("no views were kept for it"),
        };
        if kept.is_ok() {
            registry.route_restored_by_values(*id);
            recovery.subquery_resumed += 1;
            continue;
        }
        let reseed = match registry.get(*id) {
            Some(shape) => shape.prepare_reseed(position),
            None => Err("it could not be rebuilt"),
        };
        match reseed {
            Ok(()) => {
                registry.reseed_later(*id);
                recovery.subquery_reseeding += 1;
            }
            Err(why) => {
                tracing::info!(shape = id, "subquery shape not resumed: {why}");
                if registry.contains(*id) {
                    registry.remove(*id, "its subquery views could not be restored");
                }
                recovery.dropped += 1;
            }
        }
    }
    if upgrade_identity {
        // Keyed under an older canonical form of their where clause.
        let stale = registry.ids_where(|canonical| !canonical_without_where(canonical));
        for id in &stale {
            registry.remove(*id, "shape identities changed in this version");
        }
        recovery.dropped += stale.len();
    }
    recovery.shapes = registry.len();
    recovery.orphans = delete_orphans(registry)?;
    Ok(recovery)
}

/// Whether a canonical definition has no where clause (the where text is
/// escaped, so `|where=|` can only be an empty one).
fn canonical_without_where(canonical: &str) -> bool {
    canonical.contains("|where=|params=")
}

/// Replays segment records from `checkpoint` on. Returns whether any
/// shape record follows the checkpoint, and the shard's last processed
/// position a flush recorded.
fn replay(
    log_dir: &Path,
    checkpoint: shards::storage::meta::Checkpoint,
    checkpoint_seen: u64,
    registry: &mut Registry,
    recovery: &mut Recovery,
    config: &ShapeConfig,
) -> std::io::Result<(bool, Lsn)> {
    let load = spec_loader(config);
    // Whether any record other than a flush's commit marker or position
    // follows the checkpoint (a clean stop's closing checkpoint covers
    // everything).
    let mut tail = false;
    let mut position = Lsn(checkpoint_seen);
    let indices = match segment_indices(log_dir) {
        Ok(indices) => indices,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((false, position)),
        Err(e) => return Err(e),
    };
    for index in indices.into_iter().filter(|&i| i >= checkpoint.segment) {
        let bytes = std::fs::read(log_dir.join(format!("segment-{index:010}.log")))?;
        let from = if index == checkpoint.segment {
            (checkpoint.offset as usize).min(bytes.len())
        } else {
            0
        };
        for record in Scanner::new(&bytes[from..]) {
            recovery.records += 1;
            tail |= !matches!(record.kind, Kind::Commit | Kind::Position);
            match record.kind {
                Kind::ShapeCreated => {
                    if registry.contains(record.shape) {
                        // Already restored from its LMDB record.
                        continue;
                    }
                    match load(record.payload) {
                        Ok(spec) if registry.has_definition(&spec.canonical) => tracing::warn!(
                            handle = spec.handle.as_str(),
                            "a second live shape for one definition in the log; keeping the first"
                        ),
                        Ok(spec) => {
                            registry.restore(record.shape, spec);
                        }
                        Err(e) => tracing::warn!(shape = record.shape, "cannot rebuild shape: {e}"),
                    }
                }
                Kind::SnapshotItem => {
                    if let Some(shape) = registry.get(record.shape) {
                        shape.restore_snapshot_item(record.payload);
                    }
                }
                Kind::SnapshotEnd => {
                    if let Some(shape) = registry.get(record.shape) {
                        shape.restore_snapshot_end(record.payload);
                    }
                }
                Kind::SnapshotEndCounted => {
                    if let Some(shape) = registry.get(record.shape) {
                        if !shape.restore_snapshot_end_counted(record.payload) {
                            // Left unfinished: dropped below with the
                            // other interrupted snapshots.
                            recovery.large_snapshots_lost += 1;
                        }
                    }
                }
                Kind::Entry => {
                    let Some((tx, op, json)) = record::parse_entry(record.payload) else {
                        tracing::warn!(shape = record.shape, "entry record too short");
                        continue;
                    };
                    if let Some(shape) = registry.get(record.shape) {
                        shape.restore_entry(Lsn(record.lsn), LogOffset::At { tx, op }, json);
                    }
                }
                Kind::ShapeRemoved => registry.forget(record.shape, "removed before the restart"),
                Kind::ViewSet | Kind::ViewMove => {
                    if let Some(shape) = registry.get(record.shape) {
                        let replayed = match record.kind {
                            Kind::ViewSet => shape.replay_view_set(record.payload),
                            _ => shape.replay_view_move(record.payload),
                        };
                        if let Err(why) = replayed {
                            tracing::warn!(
                                shape = record.shape,
                                "cannot replay a view record: {why}"
                            );
                        }
                    }
                }
                Kind::HeldFrom => {
                    if let Some(shape) = registry.get(record.shape) {
                        shape.replay_held_from(Lsn(record.lsn));
                    }
                }
                Kind::Position => position = position.max(Lsn(record.lsn)),
                Kind::Commit => {}
            }
        }
    }
    Ok((tail, position))
}

/// Deletes serving files whose shape is gone (removed, or a crash came
/// before the checkpoint that would have deleted them).
fn delete_orphans(registry: &Registry) -> std::io::Result<usize> {
    let mut deleted = 0;
    let entries = match std::fs::read_dir(registry.files_dir()) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let id = name
            .to_str()
            .and_then(|n| n.split('.').next())
            .and_then(|n| n.parse::<u64>().ok());
        if id.is_some_and(|id| !registry.contains(id)) {
            std::fs::remove_file(entry.path())?;
            deleted += 1;
        }
    }
    Ok(deleted)
}
