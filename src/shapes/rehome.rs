//! `shapeshard rehome --shards M`: moves every shape of a cleanly stopped
//! storage directory to the shard that owns it under a new shard count, so
//! changing `--shards` keeps every shape and its clients' offsets.
//!
//! A shape's owner is `owner_key(definition hash) % shards`; its id is
//! shard-local, so a moved shape gets a fresh id on its new shard. Its
//! serving files are hard-linked under the new id and its LMDB records
//! (creation record, checkpointed log state) are written to the new
//! shard's environment. Only a clean stop qualifies: its closing checkpoint
//! covers the whole segment log, so no segment needs to move.
//!
//! Crash safety: the new layout is built in `shards.rehome/`, synced, and
//! marked `complete`; then `shards/` is renamed to `shards.old/` and the new
//! one into place. `finish_interrupted` (run by this command and by every
//! server start) completes or discards an interrupted run, so a crash at
//! any point leaves either the old layout or the new one, never a mix.

use std::path::Path;

use shards::owner::shard_of;
use shards::runtime::dma::sync_filesystem;
use shards::storage::meta::{Checkpoint, CheckpointBatch, MetaBatch, MetaStore, ShapeRecord};

use crate::http::shape::request::owner_key;

/// What a re-homing did.
#[derive(Debug)]
pub struct Rehomed {
    pub from: usize,
    pub to: usize,
    pub shapes: usize,
}

/// Re-homes the shapes under `storage` onto `shards` shards. The caller
/// holds the storage directory's lock.
pub fn rehome(storage: &Path, shards: usize) -> Result<Rehomed, String> {
    finish_interrupted(storage)?;
    let dir = storage.join("shards");
    if dir.join("count").exists() {
        crate::server::check_storage_format(&dir)?;
    }
    let count_path = dir.join("count");
    let from = match std::fs::read_to_string(&count_path) {
        Ok(text) => text
            .trim()
            .parse::<usize>()
            .map_err(|_| format!("{} is not a shard count", count_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "{} holds no shards: nothing to re-home",
                storage.display()
            ))
        }
        Err(e) => return Err(format!("cannot read {}: {e}", count_path.display())),
    };
    if from == shards {
        return Ok(Rehomed {
            from,
            to: shards,
            shapes: 0,
        });
    }
    for i in 0..from {
        if !dir.join(i.to_string()).join("clean").exists() {
            return Err(format!(
                "shard {i} in {} did not stop cleanly: start the server once with --shards {from}, stop it with SIGTERM, then re-home",
                dir.display()
            ));
        }
    }
    let staging = storage.join("shards.rehome");
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| io("cannot clear shards.rehome", e))?;
    }
    let mut records: Vec<MetaBatch> = (0..shards).map(|_| MetaBatch::default()).collect();
    let mut logs: Vec<CheckpointBatch> = (0..shards).map(|_| CheckpointBatch::default()).collect();
    for j in 0..shards {
        let shapes = staging.join(j.to_string()).join("shapes");
        std::fs::create_dir_all(&shapes)
            .map_err(|e| io(&format!("cannot create {}", shapes.display()), e))?;
    }
    let mut kept_views: Vec<Vec<(u64, Vec<u8>)>> = vec![Vec::new(); shards];
    let mut seen = 0;
    let mut moved = 0;
    for i in 0..from {
        let old = dir.join(i.to_string());
        let meta = MetaStore::open(&old.join("meta"))
            .map_err(|e| io(&format!("shard {i} metadata"), e))?;
        let mut loaded = meta
            .load()
            .map_err(|e| io(&format!("shard {i} metadata"), e))?;
        // Subquery shapes' views move with them: a clean stop's kept views
        // (resumed with no query) and the checkpoint's client views (the
        // others re-read their truth); every old shard applied all it was
        // sent below its own position, so the new shards take the maximum.
        let mut kept = meta
            .kept_views()
            .map_err(|e| io(&format!("shard {i} metadata"), e))?;
        let mut client = meta
            .client_views()
            .map_err(|e| io(&format!("shard {i} metadata"), e))?;
        seen = seen.max(loaded.checkpoint_seen);
        loaded.shapes.sort_unstable_by_key(|r| r.id);
        for record in loaded.shapes {
            let j = shard_of(owner_key(record.definition_hash), shards);
            // Ids count from 1 on each new shard, in (old shard, old id)
            // order, so the mapping is deterministic.
            let id = records[j].put.len() as u64 + 1;
            for ext in ["snap", "log"] {
                let source = old.join("shapes").join(format!("{}.{ext}", record.id));
                let target = staging
                    .join(j.to_string())
                    .join("shapes")
                    .join(format!("{id}.{ext}"));
                match std::fs::hard_link(&source, &target) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(_) => {
                        std::fs::copy(&source, &target)
                            .map_err(|e| io(&format!("cannot copy {}", source.display()), e))?;
                    }
                }
            }
            let log = loaded.logs.remove(&record.id).unwrap_or_default();
            logs[j].logs.push((id, log));
            if let Some(bytes) = kept.remove(&record.id) {
                kept_views[j].push((id, bytes));
            }
            if let Some(bytes) = client.remove(&record.id) {
                logs[j].client_views.push((id, bytes));
            }
            records[j].put.push(ShapeRecord { id, ..record });
            moved += 1;
        }
    }
    for j in 0..shards {
        let shard = staging.join(j.to_string());
        let meta = MetaStore::open(&shard.join("meta"))
            .map_err(|e| io(&format!("new shard {j} metadata"), e))?;
        meta.commit(&records[j])
            .map_err(|e| io(&format!("new shard {j} metadata"), e))?;
        // Nothing to replay: the new shard starts a fresh segment log.
        logs[j].at = Checkpoint::default();
        logs[j].seen = seen;
        meta.checkpoint(&logs[j])
            .map_err(|e| io(&format!("new shard {j} metadata"), e))?;
        if !kept_views[j].is_empty() {
            meta.put_views(&kept_views[j])
                .map_err(|e| io(&format!("new shard {j} metadata"), e))?;
        }
        std::fs::write(shard.join("clean"), b"clean\n")
            .map_err(|e| io("cannot write a clean marker", e))?;
    }
    std::fs::write(
        staging.join("format"),
        format!("{}\n", shards::shape::log::SERVING_FORMAT),
    )
    .map_err(|e| format!("cannot write {}: {e}", staging.join("format").display()))?;
    // Shape identity moves as it was: a storage not yet upgraded is
    // upgraded by the next start (`server::identity_upgrade`).
    if dir.join(crate::server::IDENTITY_FILE).exists() {
        std::fs::write(
            staging.join(crate::server::IDENTITY_FILE),
            format!("{}\n", crate::server::IDENTITY_VERSION),
        )
        .map_err(|e| io("cannot write the identity marker", e))?;
    }
    std::fs::write(staging.join("count"), format!("{shards}\n"))
        .map_err(|e| io("cannot write the shard count", e))?;
    sync_filesystem(&staging).map_err(|e| io("cannot sync the new layout", e))?;
    std::fs::write(staging.join("complete"), b"complete\n")
        .map_err(|e| io("cannot mark the new layout complete", e))?;
    sync_filesystem(&staging).map_err(|e| io("cannot sync the new layout", e))?;
    finish_interrupted(storage)?;
    Ok(Rehomed {
        from,
        to: shards,
        shapes: moved,
    })
}

/// Completes a re-homing whose new layout was complete, or discards one
/// that was not (the old layout is then untouched).
pub fn finish_interrupted(storage: &Path) -> Result<(), String> {
    let dir = storage.join("shards");
    let staging = storage.join("shards.rehome");
    let old = storage.join("shards.old");
    let fail =
        |what: &str, e: std::io::Error| format!("re-homing {}: {what}: {e}", storage.display());
    if staging.join("complete").exists() {
        if dir.exists() {
            if old.exists() {
                std::fs::remove_dir_all(&old).map_err(|e| fail("removing shards.old", e))?;
            }
            std::fs::rename(&dir, &old).map_err(|e| fail("moving shards aside", e))?;
        }
        std::fs::rename(&staging, &dir).map_err(|e| fail("moving the new layout in", e))?;
        std::fs::remove_file(dir.join("complete")).map_err(|e| fail("removing the mark", e))?;
        sync_filesystem(storage).map_err(|e| fail("syncing", e))?;
    } else if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| fail("discarding shards.rehome", e))?;
    }
    if old.exists() && dir.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| fail("removing shards.old", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(root: &Path, dirs: &[(&str, &str)]) {
        let _ = std::fs::remove_dir_all(root);
        for (dir, file) in dirs {
            std::fs::create_dir_all(root.join(dir)).unwrap();
            std::fs::write(root.join(dir).join(file), file).unwrap();
        }
    }

    fn count(root: &Path) -> Option<String> {
        std::fs::read_to_string(root.join("shards").join("count")).ok()
    }

    /// Every point a re-homing can be interrupted at ends in one layout.
    #[test]
    fn an_interrupted_rehoming_completes_or_is_discarded() {
        let root = std::env::temp_dir().join(format!("shapeshard-rehome-{}", std::process::id()));
        // Staging not complete: discarded, the old layout stays.
        layout(&root, &[("shards", "count"), ("shards.rehome", "count")]);
        finish_interrupted(&root).unwrap();
        assert!(!root.join("shards.rehome").exists());
        assert_eq!(count(&root).as_deref(), Some("count"));
        // Complete, not swapped yet.
        layout(
            &root,
            &[
                ("shards", "old"),
                ("shards.rehome", "count"),
                ("shards.rehome", "complete"),
            ],
        );
        finish_interrupted(&root).unwrap();
        assert_eq!(count(&root).as_deref(), Some("count"));
        assert!(!root.join("shards").join("old").exists());
        assert!(!root.join("shards").join("complete").exists());
        assert!(!root.join("shards.old").exists());
        // Crashed between the two renames.
        layout(
            &root,
            &[
                ("shards.old", "old"),
                ("shards.rehome", "count"),
                ("shards.rehome", "complete"),
            ],
        );
        finish_interrupted(&root).unwrap();
        assert_eq!(count(&root).as_deref(), Some("count"));
        assert!(!root.join("shards.old").exists());
        // Crashed before removing the old layout.
        layout(&root, &[("shards.old", "old"), ("shards", "count")]);
        finish_interrupted(&root).unwrap();
        assert!(!root.join("shards.old").exists());
        assert_eq!(count(&root).as_deref(), Some("count"));
        let _ = std::fs::remove_dir_all(&root);
    }
}
