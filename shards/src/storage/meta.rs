//! A shard's metadata in LMDB (`<shard>/meta`): one record per shape, the
//! definition-hash → handle index, and the checkpoint (where in the segment
//! log the serving files stop being derived-and-synced).
//!
//! The segment log stays the source of truth for durability: every creation
//! and removal is journaled there first. LMDB is the index that lets a
//! restart skip replaying history: shape records are committed once per
//! flush tick (after that tick's fdatasync) and the per-shape log state
//! only at checkpoints, after the serving files are synced.
//!
//! Commits use `NO_META_SYNC`: each commit syncs its data pages but not
//! the meta page, which LMDB documents as keeping the environment intact
//! through an OS crash or power loss (the newest commits may be undone,
//! and are re-derived from the segment log). `NO_SYNC` would save that
//! sync but may corrupt the whole environment on a system crash. Commits
//! are rare: creations, removals, snapshot ends (control plane); read
//! stamps, which change on every read, are written only at checkpoints. A
//! checkpoint forces a full sync before anything it covers (old segments)
//! is deleted.

use std::cell::Cell;
use std::path::Path;

use heed::types::{Bytes, Str, U64};
use heed::{byteorder::BigEndian, Database, Env, EnvFlags, EnvOpenOptions};
use rkyv::rancor;
use rkyv::util::AlignedVec;

/// A shape as LMDB keeps it (changes once per tick at most).
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ShapeRecord {
    pub id: u64,
    /// The table's columns as the shape was validated against them
    /// (`registry::schema_fingerprint`): checked against Relation messages
    /// without building the shape.
    pub schema_fingerprint: u64,
    pub handle: String,
    /// The normalised definition.
    pub canonical: String,
    pub definition_hash: u64,
    pub relation_id: u32,
    /// `(column, values)` of the where clause's index key: a restored
    /// shape is routed by it before its filter is compiled (lazy load).
    pub index_key: Option<(u64, Vec<String>)>,
    /// The creation record the edge wrote (definition and table columns).
    pub persisted: Vec<u8>,
    /// `snapshot-end` message once the snapshot completed.
    pub snapshot_end: Option<Vec<u8>>,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Read stamp on the server-wide read clock (LRU across restarts).
    pub last_read: u64,
}

/// One chunk of a serving file: bytes `[start, end)` of the file hold the
/// items from `first` to `last` (offsets as `(tx, op)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ChunkRecord {
    pub start: u64,
    pub end: u64,
    pub first: (u64, u64),
    pub last: (u64, u64),
    /// Comma-joined JSON bytes (the chunking rule's measure).
    pub json_bytes: u64,
    pub items: u64,
    pub sealed: bool,
}

/// A serving file's state at a checkpoint.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct RegionRecord {
    /// Bytes of the file that are synced and belong to the log.
    pub len: u64,
    pub chunks: Vec<ChunkRecord>,
}

/// A shape's log state at a checkpoint.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct LogRecord {
    pub snapshot: RegionRecord,
    pub snapshot_end: Option<Vec<u8>>,
    pub main: RegionRecord,
    /// Commit LSN of the newest transaction in the log.
    pub last_lsn: u64,
}

/// Where replay starts: segment index and byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Checkpoint {
    pub segment: u64,
    pub offset: u64,
}

/// One tick's metadata mutations, applied in one LMDB write transaction.
#[derive(Debug, Default)]
pub struct MetaBatch {
    pub put: Vec<ShapeRecord>,
    /// `(id, definition hash)` of shapes whose removal is durable.
    pub remove: Vec<(u64, u64)>,
}

impl MetaBatch {
    pub fn is_empty(&self) -> bool {
        self.put.is_empty() && self.remove.is_empty()
    }
}

/// A checkpoint's writes: log states, read stamps, and where replay now
/// starts.
#[derive(Debug, Default)]
pub struct CheckpointBatch {
    pub logs: Vec<(u64, LogRecord)>,
    /// `(shape id, read stamp)` of shapes read since the last checkpoint.
    pub stamps: Vec<(u64, u64)>,
    /// `(shape id, client-state bytes)` of subquery shapes whose client
    /// views changed since the last checkpoint (`registry/durable_views.rs`).
    pub client_views: Vec<(u64, Vec<u8>)>,
    pub at: Checkpoint,
    /// The shard's processed position when the checkpoint was taken (see
    /// `record::Kind::Position`, which later flushes record).
    pub seen: u64,
}

/// Everything a restart needs from LMDB.
#[derive(Debug, Default)]
pub struct Loaded {
    pub shapes: Vec<ShapeRecord>,
    pub logs: std::collections::HashMap<u64, LogRecord>,
    pub checkpoint: Checkpoint,
    /// The processed position the checkpoint was taken at (0: none kept).
    pub checkpoint_seen: u64,
}

type IdDb = Database<'static, U64<BigEndian>, Bytes>;

/// A shard's environment. LMDB allows one open environment per file per
/// process, and a shard keeps its own for the life of the process, so the
/// environment is leaked into a `'static` (the databases borrow it).
#[derive(Clone, Copy)]
pub struct MetaStore {
    env: &'static Env,
    shapes: IdDb,
    logs: IdDb,
    /// Read stamps by shape id (LRU order), newer than the records' own.
    stamps: Database<'static, U64<BigEndian>, U64<BigEndian>>,
    state: Database<'static, Str, Bytes>,
}

/// Counters a test or an operator can read.
#[derive(Debug, Default)]
pub struct MetaStats {
    pub commits: Cell<u64>,
    pub checkpoints: Cell<u64>,
}

const CHECKPOINT_KEY: &str = "checkpoint";
/// The processed position of the checkpoint (u64 LE).
const CHECKPOINT_SEEN_KEY: &str = "checkpoint_seen";
/// Key prefix of a subquery shape's views kept by a clean stop.
const VIEWS_PREFIX: &str = "views/";

/// Subquery shapes' client views as of the checkpoint, one key per shape
/// (`cv/<id>`): unlike a clean stop's kept views they always exist.
const CLIENT_VIEWS_PREFIX: &str = "cv/";

/// Test seam: the next N reads of a creation record fail (this thread).
#[cfg(test)]
pub mod fault {
    use std::cell::Cell;

    thread_local! {
        static READ_FAILURES: Cell<u32> = const { Cell::new(0) };
    }

    pub fn fail_reads(n: u32) {
        READ_FAILURES.with(|f| f.set(n));
    }

    pub(super) fn take_read_failure() -> bool {
        READ_FAILURES.with(|f| {
            let n = f.get();
            f.set(n.saturating_sub(1));
            n > 0
        })
    }
}

fn err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("shard metadata (LMDB): {e}"))
}

fn encode<T>(value: &T) -> std::io::Result<AlignedVec>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rancor::Error,
        >,
    >,
{
    rkyv::to_bytes::<rancor::Error>(value).map_err(err)
}

/// LMDB hands out unaligned bytes; rkyv reads only aligned input.
fn decode<T>(bytes: &[u8]) -> std::io::Result<T>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, rancor::Error>(&aligned).map_err(err)
}

impl MetaStore {
    /// Opens (creating) the environment in `dir`. Opening a directory
    /// this process already opened returns that store: LMDB environments
    /// must be opened once per process (a rolling deploy's read-only phase
    /// and the shard that takes over share one).
    pub fn open(dir: &Path) -> std::io::Result<MetaStore> {
        static OPENED: std::sync::Mutex<Vec<(std::path::PathBuf, MetaStore)>> =
            std::sync::Mutex::new(Vec::new());
        std::fs::create_dir_all(dir)?;
        let path = dir.canonicalize()?;
        let mut opened = OPENED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, store)) = opened.iter().find(|(p, _)| *p == path) {
            return Ok(*store);
        }
        let store = MetaStore::open_new(&path)?;
        opened.push((path, store));
        Ok(store)
    }

    fn open_new(dir: &Path) -> std::io::Result<MetaStore> {
        let mut options = EnvOpenOptions::new();
        // Address space only: the file grows as records are written.
        options.map_size(64 << 30).max_dbs(4);
        // SAFETY: `open` opens each environment once per process (LMDB's
        // rule; other processes may hold it too: LMDB locks across them, and
        // only the holder of the storage lock writes more than an empty
        // transaction); NO_META_SYNC is paired with `force_sync` at
        // checkpoints (see the module comment).
        let env = unsafe {
            options.flags(EnvFlags::NO_META_SYNC);
            options.open(dir)
        }
        .map_err(err)?;
        let env: &'static Env = Box::leak(Box::new(env));
        let txn = env.write_txn().map_err(err)?;
        let (shapes, logs, stamps, state) = env
            .create_databases_and_commit(txn, |opener, txn| -> heed::Result<_> {
                Ok(heed::CommitOrAbort::<_, ()>::Commit((
                    opener.create_database(txn, Some("shapes"))?,
                    opener.create_database(txn, Some("logs"))?,
                    opener.create_database(txn, Some("stamps"))?,
                    opener.create_database(txn, Some("state"))?,
                )))
            })
            .map_err(err)?
            .unwrap_commit();
        Ok(MetaStore {
            env,
            shapes,
            logs,
            stamps,
            state,
        })
    }

    /// Reads every shape record, log state and the checkpoint.
    pub fn load(&self) -> std::io::Result<Loaded> {
        let txn = self.env.read_txn().map_err(err)?;
        let mut loaded = Loaded::default();
        for item in self.shapes.iter(&txn).map_err(err)? {
            let (id, bytes) = item.map_err(err)?;
            let mut record = decode::<ShapeRecord>(bytes)?;
            if let Some(stamp) = self.stamps.get(&txn, &id).map_err(err)? {
                record.last_read = record.last_read.max(stamp);
            }
            loaded.shapes.push(record);
        }
        for item in self.logs.iter(&txn).map_err(err)? {
            let (id, bytes) = item.map_err(err)?;
            loaded.logs.insert(id, decode::<LogRecord>(bytes)?);
        }
        if let Some(bytes) = self.state.get(&txn, CHECKPOINT_KEY).map_err(err)? {
            let (Some(segment), Some(offset)) = (
                bytes
                    .get(0..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes),
                bytes
                    .get(8..16)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes),
            ) else {
                return Err(err("checkpoint record is not 16 bytes"));
            };
            loaded.checkpoint = Checkpoint { segment, offset };
        }
        if let Some(bytes) = self.state.get(&txn, CHECKPOINT_SEEN_KEY).map_err(err)? {
            let seen: [u8; 8] = bytes
                .try_into()
                .map_err(|_| err("checkpoint position is not 8 bytes"))?;
            loaded.checkpoint_seen = u64::from_le_bytes(seen);
        }
        Ok(loaded)
    }

    /// A shape's creation record, to build it when it is first used.
    pub fn persisted(&self, id: u64) -> std::io::Result<Option<Vec<u8>>> {
        #[cfg(test)]
        if fault::take_read_failure() {
            return Err(err("injected read failure"));
        }
        let txn = self.env.read_txn().map_err(err)?;
        match self.shapes.get(&txn, &id).map_err(err)? {
            Some(bytes) => Ok(Some(decode::<ShapeRecord>(bytes)?.persisted)),
            None => Ok(None),
        }
    }

    /// One tick's mutations in one write transaction.
    pub fn commit(&self, batch: &MetaBatch) -> std::io::Result<()> {
        let mut txn = self.env.write_txn().map_err(err)?;
        for record in &batch.put {
            let bytes = encode(record)?;
            self.shapes.put(&mut txn, &record.id, &bytes).map_err(err)?;
        }
        for &(id, _) in &batch.remove {
            self.shapes.delete(&mut txn, &id).map_err(err)?;
            self.logs.delete(&mut txn, &id).map_err(err)?;
            self.stamps.delete(&mut txn, &id).map_err(err)?;
            self.state
                .delete(&mut txn, &format!("{CLIENT_VIEWS_PREFIX}{id}"))
                .map_err(err)?;
        }
        txn.commit().map_err(err)
    }

    /// A clean stop's subquery views (`registry/kept_views.rs`), written
    /// after the closing checkpoint and made durable. Nothing else writes
    /// them: between clean stops they do not exist.
    pub fn put_views(&self, views: &[(u64, Vec<u8>)]) -> std::io::Result<()> {
        let mut txn = self.env.write_txn().map_err(err)?;
        for (id, bytes) in views {
            self.state
                .put(&mut txn, &format!("{VIEWS_PREFIX}{id}"), bytes)
                .map_err(err)?;
        }
        txn.commit().map_err(err)?;
        self.env.force_sync().map_err(err)
    }

    /// Reads and deletes (durably) every kept view: they describe the
    /// moment of the last clean stop only, so once this run applies
    /// anything they are stale, and a crash in this run must not find them.
    pub fn take_views(&self) -> std::io::Result<std::collections::HashMap<u64, Vec<u8>>> {
        let views = self.kept_views()?;
        let mut txn = self.env.write_txn().map_err(err)?;
        for id in views.keys() {
            self.state
                .delete(&mut txn, &format!("{VIEWS_PREFIX}{id}"))
                .map_err(err)?;
        }
        txn.commit().map_err(err)?;
        self.env.force_sync().map_err(err)?;
        Ok(views)
    }

    /// Every subquery shape's client views as the last checkpoint wrote
    /// them.
    pub fn client_views(&self) -> std::io::Result<std::collections::HashMap<u64, Vec<u8>>> {
        self.by_prefix(CLIENT_VIEWS_PREFIX)
    }

    /// A clean stop's kept views, left in place (`take_views` deletes).
    pub fn kept_views(&self) -> std::io::Result<std::collections::HashMap<u64, Vec<u8>>> {
        self.by_prefix(VIEWS_PREFIX)
    }

    fn by_prefix(&self, prefix: &str) -> std::io::Result<std::collections::HashMap<u64, Vec<u8>>> {
        let txn = self.env.read_txn().map_err(err)?;
        let mut views = std::collections::HashMap::new();
        for item in self.state.prefix_iter(&txn, prefix).map_err(err)? {
            let (key, bytes) = item.map_err(err)?;
            if let Ok(id) = key[prefix.len()..].parse::<u64>() {
                views.insert(id, bytes.to_vec());
            }
        }
        Ok(views)
    }

    /// Records a checkpoint and makes it (and every earlier commit) durable.
    pub fn checkpoint(&self, batch: &CheckpointBatch) -> std::io::Result<()> {
        let mut txn = self.env.write_txn().map_err(err)?;
        for (id, log) in &batch.logs {
            // A shape removed since its state was captured keeps no record.
            if self.shapes.get(&txn, id).map_err(err)?.is_none() {
                continue;
            }
            let bytes = encode(log)?;
            self.logs.put(&mut txn, id, &bytes).map_err(err)?;
        }
        for (id, stamp) in &batch.stamps {
            if self.shapes.get(&txn, id).map_err(err)?.is_some() {
                self.stamps.put(&mut txn, id, stamp).map_err(err)?;
            }
        }
        for (id, bytes) in &batch.client_views {
            if self.shapes.get(&txn, id).map_err(err)?.is_some() {
                self.state
                    .put(&mut txn, &format!("{CLIENT_VIEWS_PREFIX}{id}"), bytes)
                    .map_err(err)?;
            }
        }
        let mut at = [0u8; 16];
        at[..8].copy_from_slice(&batch.at.segment.to_le_bytes());
        at[8..].copy_from_slice(&batch.at.offset.to_le_bytes());
        self.state.put(&mut txn, CHECKPOINT_KEY, &at).map_err(err)?;
        self.state
            .put(&mut txn, CHECKPOINT_SEEN_KEY, &batch.seen.to_le_bytes())
            .map_err(err)?;
        txn.commit().map_err(err)?;
        self.env.force_sync().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64) -> ShapeRecord {
        ShapeRecord {
            id,
            schema_fingerprint: 0,
            handle: format!("{id}-handle"),
            canonical: format!("items where id = {id}"),
            definition_hash: id * 7,
            relation_id: 16384,
            index_key: Some((0, vec![id.to_string()])),
            persisted: vec![1, 2, 3],
            snapshot_end: None,
            created_ms: 1,
            last_read: id,
        }
    }

    #[test]
    fn records_logs_and_checkpoint_round_trip() {
        let dir = std::env::temp_dir().join(format!("shapeshard-meta-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let meta = MetaStore::open(&dir).unwrap();
        let batch = MetaBatch {
            put: (1..=3).map(record).collect(),
            remove: vec![],
        };
        meta.commit(&batch).unwrap();
        let log = LogRecord {
            snapshot: RegionRecord {
                len: 10,
                chunks: vec![ChunkRecord {
                    start: 0,
                    end: 10,
                    first: (0, 0),
                    last: (0, 1),
                    json_bytes: 5,
                    items: 2,
                    sealed: true,
                }],
            },
            snapshot_end: Some(b"end".to_vec()),
            main: RegionRecord::default(),
            last_lsn: 99,
        };
        meta.checkpoint(&CheckpointBatch {
            client_views: Vec::new(),
            seen: 0,
            logs: vec![(2, log.clone()), (42, log.clone())],
            stamps: vec![(3, 777), (42, 1)],
            at: Checkpoint {
                segment: 3,
                offset: 4096,
            },
        })
        .unwrap();
        meta.commit(&MetaBatch {
            put: vec![],
            remove: vec![(1, 7)],
        })
        .unwrap();
        let loaded = meta.load().unwrap();
        // Shape 3's read stamp came from the checkpoint's stamp table.
        let mut read3 = record(3);
        read3.last_read = 777;
        assert_eq!(loaded.shapes, vec![record(2), read3]);
        // Shape 42 has no record, so its log state was not kept.
        assert_eq!(loaded.logs.len(), 1);
        assert_eq!(loaded.logs[&2], log);
        assert_eq!(
            loaded.checkpoint,
            Checkpoint {
                segment: 3,
                offset: 4096
            }
        );
        assert_eq!(meta.persisted(2).unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(meta.persisted(1).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A clean stop's views are read once: taking them deletes them, so a
    /// crash later in that run finds none; the checkpoint stays.
    #[test]
    fn kept_views_are_taken_once() {
        let dir =
            std::env::temp_dir().join(format!("shapeshard-meta-views-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let meta = MetaStore::open(&dir).unwrap();
        let at = Checkpoint {
            segment: 2,
            offset: 8192,
        };
        meta.checkpoint(&CheckpointBatch {
            client_views: Vec::new(),
            seen: 0,
            logs: vec![],
            stamps: vec![],
            at,
        })
        .unwrap();
        meta.put_views(&[(7, vec![1, 2]), (12, vec![3])]).unwrap();
        let taken = meta.take_views().unwrap();
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[&7], vec![1, 2]);
        assert_eq!(taken[&12], vec![3]);
        assert!(meta.take_views().unwrap().is_empty());
        assert_eq!(meta.load().unwrap().checkpoint, at);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
