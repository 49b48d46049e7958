//! A shape's log: snapshot chunks, then transaction entries, cut into chunks
//! at a byte threshold. Each of the two regions is served from its own
//! append-only file (`<id>.snap`, `<id>.log`) with a memory tail of the
//! items not written there yet.
//!
//! Items reach the files only after the segment log made them durable (the
//! group commit materialises tails, see `storage::commit`), so the files are
//! derived data: a restart truncates them to their last checkpointed length
//! and re-derives the rest from the segment log.
//!
//! Reads: `read` takes one consistent view (the file range to read, the
//! tail items it needs, the end offset) synchronously; the caller then
//! awaits the file read and `assemble`s. File bytes below the view's length
//! never change and tail items are shared (`Bytes`), so a trim between the
//! view and the read cannot make the answer empty or partial.
//!
//! Chunk boundaries are decided when an item is appended and never move, so
//! the same request offset always gets the same response range (CDN caching
//! depends on it), before and after a restart.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};

use super::offset::LogOffset;
use crate::storage::meta::{ChunkRecord, RegionRecord};

/// Frame of one item in a serving file: tx, op, JSON length (LE), a CRC32
/// of those and the JSON, then the JSON. Once older segments are deleted
/// these files are the only copy: every read checks every frame it serves.
const FRAME_HEADER: u64 = 8 + 8 + 4 + 4;

/// Bytes a tail item costs beyond its frame (queue slot, shared buffer).
const TAIL_ITEM_OVERHEAD: usize = 48;

/// The serving-file layout this build writes and reads (`shards/format`).
pub const SERVING_FORMAT: &str = "2";

fn frame_crc(header: &[u8], json: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header);
    hasher.update(json);
    hasher.finalize()
}

/// In an open chunk, a seek mark every this many file bytes, so a read from
/// the middle of a large open chunk does not read it from its start.
const MARK_EVERY: u64 = 64 * 1024;

#[derive(Clone, Debug)]
struct Chunk {
    /// File bytes `[start, end)`.
    start: u64,
    end: u64,
    first: LogOffset,
    last: LogOffset,
    /// Comma-joined JSON size: what the threshold measures.
    json_bytes: u64,
    items: u64,
    sealed: bool,
}

fn pair(offset: LogOffset) -> (u64, u64) {
    (offset.tx(), offset.op())
}

fn offset((tx, op): (u64, u64)) -> LogOffset {
    LogOffset::At { tx, op }
}

#[derive(Clone, Debug)]
struct TailItem {
    pos: u64,
    offset: LogOffset,
    json: Bytes,
}

/// One region (snapshot or main) of a shape's log.
struct Region {
    path: PathBuf,
    chunk_bytes_max: u64,
    chunks: Vec<Chunk>,
    /// File bytes `[0, disk_len)` are written and readable.
    disk_len: u64,
    /// End of the last item, in file coordinates (`disk_len` + tail).
    end_len: u64,
    tail: VecDeque<TailItem>,
    /// Items in all chunks (snapshot items are numbered by it).
    items: u64,
    /// In the open chunk: `(offset of the item before pos, pos)`.
    marks: Vec<(LogOffset, u64)>,
    /// The snapshot's rows are copied into shared blocks (one allocation
    /// per block, not per row: a 1M-row snapshot spent a tenth of its
    /// shard time in per-row allocations and fresh pages). Only while a
    /// snapshot is written: the main region's items stay separate, so an
    /// idle shape holds no half-used block.
    pack: Option<BytesMut>,
}

/// Smallest and largest block snapshot rows are packed into (a block
/// grows with the region: a small snapshot wastes little).
const PACK_MIN: usize = 4 * 1024;
const PACK_MAX: usize = 256 * 1024;

/// Bytes to append to a serving file: `bytes` go at `pos`.
#[derive(Debug)]
pub struct FileWrite {
    pub path: PathBuf,
    pub pos: u64,
    /// Bytes the write appends (framed).
    pub len: u64,
    body: WriteBody,
}

/// What a checkpoint write holds: the tail's items, shared with the log
/// (framed and checksummed on the checkpoint thread, not the shard's:
/// that was a third of a large snapshot's shard CPU), or raw bytes.
#[derive(Debug)]
enum WriteBody {
    Items(Vec<(LogOffset, Bytes)>),
    #[cfg(test)]
    Raw(Vec<u8>),
}

/// Frames are assembled in pieces of about this size before each write,
/// in a buffer each checkpoint thread keeps (no fresh pages per write).
const WRITE_PIECE: usize = 1 << 20;

impl FileWrite {
    /// Appends at `pos` (the file's checkpointed or written length). Bytes
    /// past `pos` were written after the last checkpoint before a crash:
    /// they are cut here, lazily, so a restart touches no serving file
    /// (reads never look past the chunk ranges, so they are harmless until
    /// then). Opens the file; `storage::serving` keeps busy ones open.
    pub fn apply(&self) -> std::io::Result<()> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)?;
        let len = file.metadata()?.len();
        self.apply_to(&file, len).map(|_| ())
    }

    /// `apply` on an open `file` of length `len`; returns the new length.
    pub fn apply_to(&self, file: &std::fs::File, len: u64) -> std::io::Result<u64> {
        use std::os::unix::fs::FileExt;
        if len < self.pos {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} has {len} bytes, its checkpoint says {}: storage was lost",
                    self.path.display(),
                    self.pos
                ),
            ));
        }
        if len > self.pos {
            file.set_len(self.pos)?;
        }
        let items = match &self.body {
            WriteBody::Items(items) => items,
            #[cfg(test)]
            WriteBody::Raw(bytes) => {
                file.write_all_at(bytes, self.pos)?;
                return Ok(self.pos + bytes.len() as u64);
            }
        };
        thread_local! {
            static PIECE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        PIECE.with(|piece| {
            let mut piece = piece.borrow_mut();
            let mut at = self.pos;
            for (offset, json) in items {
                push_frame(&mut piece, *offset, json);
                if piece.len() >= WRITE_PIECE {
                    file.write_all_at(&piece, at)?;
                    at += piece.len() as u64;
                    piece.clear();
                }
            }
            file.write_all_at(&piece, at)?;
            at += piece.len() as u64;
            piece.clear();
            assert_eq!(at, self.pos + self.len, "framed as the log counted");
            Ok(at)
        })
    }

    #[cfg(test)]
    pub fn raw(path: &Path, pos: u64, bytes: &[u8]) -> FileWrite {
        FileWrite {
            path: path.to_path_buf(),
            pos,
            len: bytes.len() as u64,
            body: WriteBody::Raw(bytes.to_vec()),
        }
    }
}

/// One serving-file frame: offset, length, checksum, then the item.
fn push_frame(out: &mut Vec<u8>, offset: LogOffset, json: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&offset.tx().to_le_bytes());
    out.extend_from_slice(&offset.op().to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    let crc = frame_crc(&out[start..], json);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(json);
}

impl Region {
    fn new(path: PathBuf, chunk_bytes_max: usize) -> Region {
        assert!(chunk_bytes_max > 0);
        Region {
            path,
            chunk_bytes_max: chunk_bytes_max as u64,
            chunks: Vec::new(),
            disk_len: 0,
            end_len: 0,
            tail: VecDeque::new(),
            items: 0,
            marks: Vec::new(),
            pack: None,
        }
    }

    /// The item's own copy of `json`: a slice of the current block when
    /// packing, else an allocation of its own.
    fn copy_item(&mut self, json: &[u8]) -> Bytes {
        let Some(block) = &mut self.pack else {
            return Bytes::copy_from_slice(json);
        };
        if block.capacity() < json.len() {
            let size = (self.end_len as usize / 4).clamp(PACK_MIN, PACK_MAX);
            *block = BytesMut::with_capacity(size.max(json.len()));
        }
        block.extend_from_slice(json);
        block.split().freeze()
    }

    fn last_offset(&self) -> Option<LogOffset> {
        self.chunks.last().map(|c| c.last)
    }

    /// Appends an item; returns whether it sealed its chunk.
    fn push(&mut self, at: LogOffset, json: &[u8]) -> bool {
        if let Some(last) = self.last_offset() {
            assert!(at > last, "log offsets only grow: {at} after {last}");
        }
        let pos = self.end_len;
        if self.chunks.last().is_none_or(|c| c.sealed) {
            self.marks.clear();
            self.chunks.push(Chunk {
                start: pos,
                end: pos,
                first: at,
                last: at,
                json_bytes: 0,
                items: 0,
                sealed: false,
            });
        }
        let chunk = self.chunks.last_mut().expect("an open chunk");
        if chunk.items > 0 {
            chunk.json_bytes += 1;
            let since = self.marks.last().map_or(chunk.start, |&(_, p)| p);
            if pos - since >= MARK_EVERY {
                self.marks.push((chunk.last, pos));
            }
        }
        self.end_len = pos + FRAME_HEADER + json.len() as u64;
        let json_bytes = json.len() as u64;
        let json = self.copy_item(json);
        let chunk = self.chunks.last_mut().expect("an open chunk");
        chunk.end = self.end_len;
        chunk.json_bytes += json_bytes;
        chunk.items += 1;
        chunk.last = at;
        self.items += 1;
        self.tail.push_back(TailItem {
            pos,
            offset: at,
            json,
        });
        if chunk.json_bytes >= self.chunk_bytes_max {
            self.seal();
            true
        } else {
            false
        }
    }

    fn seal(&mut self) {
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.sealed = true;
        }
        self.marks.clear();
    }

    fn sealed_chunks(&self) -> u64 {
        self.chunks.iter().filter(|c| c.sealed).count() as u64
    }

    /// A view of chunk `index`'s items after `after` (all with None).
    /// Items of chunk `index` after `after` (up to `upto` when given), the
    /// response ending at `end`; `sealed` when that is the whole rest of a
    /// sealed chunk.
    fn view(
        &self,
        index: usize,
        after: Option<LogOffset>,
        upto: Option<LogOffset>,
        end: LogOffset,
        sealed: bool,
    ) -> ReadView {
        let chunk = &self.chunks[index];
        let mut start = chunk.start;
        if let (Some(after), false) = (after, chunk.sealed) {
            // The furthest mark at or before `after`: items from there on
            // all come after the mark's offset.
            let i = self.marks.partition_point(|&(o, _)| o <= after);
            if i > 0 {
                start = self.marks[i - 1].1;
            }
        }
        let disk_end = chunk.end.min(self.disk_len);
        let disk = (start < disk_end).then(|| DiskRange {
            path: self.path.clone(),
            pos: start,
            len: (disk_end - start) as usize,
        });
        let from = self
            .tail
            .partition_point(|t| t.pos < chunk.start.max(self.disk_len));
        let mem = self
            .tail
            .iter()
            .skip(from)
            .take_while(|t| t.pos < chunk.end && upto.is_none_or(|u| t.offset <= u))
            .filter(|t| after.is_none_or(|a| t.offset > a))
            .map(|t| t.json.clone())
            .collect();
        ReadView {
            end,
            sealed,
            after,
            disk,
            mem,
        }
    }

    /// Frames the tail for writing, if there is one.
    fn capture(&self) -> Option<FileWrite> {
        let first = self.tail.front()?;
        assert_eq!(
            first.pos, self.disk_len,
            "the tail starts where the file ends"
        );
        Some(FileWrite {
            path: self.path.clone(),
            pos: self.disk_len,
            len: self.end_len - self.disk_len,
            body: WriteBody::Items(
                self.tail
                    .iter()
                    .map(|item| (item.offset, item.json.clone()))
                    .collect(),
            ),
        })
    }

    /// The file now holds everything before `upto`: drop it from memory.
    fn written(&mut self, upto: u64) {
        assert!(
            upto >= self.disk_len && upto <= self.end_len,
            "written {upto} outside [{}, {}]",
            self.disk_len,
            self.end_len
        );
        while self.tail.front().is_some_and(|t| t.pos < upto) {
            self.tail.pop_front();
        }
        self.disk_len = upto;
    }

    /// Memory the tail holds: its framed bytes plus a per-item allowance
    /// for the entry itself (O(1): this is asked after every append).
    fn tail_bytes(&self) -> usize {
        (self.end_len - self.disk_len) as usize + self.tail.len() * TAIL_ITEM_OVERHEAD
    }

    /// The state once the whole tail is in the file (taken with `capture`,
    /// so it matches the segment log position of the capture).
    fn record(&self) -> RegionRecord {
        RegionRecord {
            len: self.end_len,
            chunks: self
                .chunks
                .iter()
                .map(|c| ChunkRecord {
                    start: c.start,
                    end: c.end,
                    first: pair(c.first),
                    last: pair(c.last),
                    json_bytes: c.json_bytes,
                    items: c.items,
                    sealed: c.sealed,
                })
                .collect(),
        }
    }

    /// Restores a checkpointed state.
    fn restore(&mut self, record: &RegionRecord) {
        self.chunks = record
            .chunks
            .iter()
            .map(|c| Chunk {
                start: c.start,
                end: c.end,
                first: offset(c.first),
                last: offset(c.last),
                json_bytes: c.json_bytes,
                items: c.items,
                sealed: c.sealed,
            })
            .collect();
        self.disk_len = record.len;
        self.end_len = record.len;
        self.items = self.chunks.iter().map(|c| c.items).sum();
        self.tail.clear();
        self.marks.clear();
    }
}

/// A file range a read needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskRange {
    pub path: PathBuf,
    pub pos: u64,
    pub len: usize,
}

/// One consistent view of a read: assemble it once `disk` is read.
#[derive(Debug)]
pub struct ReadView {
    /// The offset the response ends at.
    pub end: LogOffset,
    /// The view is one sealed chunk's items after `after`: its bytes never
    /// change (wherever they live now), so they may be cached.
    pub sealed: bool,
    /// Items at or before it are skipped; None: the whole chunk.
    after: Option<LogOffset>,
    pub disk: Option<DiskRange>,
    mem: Vec<Bytes>,
}

impl ReadView {
    /// Comma-joined items: those in `disk_bytes` (the bytes of `disk`)
    /// after `after`, then the memory ones.
    pub fn assemble(&self, disk_bytes: &[u8]) -> std::io::Result<Bytes> {
        let joined = join_frames(disk_bytes, self.after).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "serving file {:?}: {e}",
                    self.disk.as_ref().map(|d| &d.path)
                ),
            )
        })?;
        if self.mem.is_empty() {
            return Ok(joined);
        }
        let mem_bytes: usize = self.mem.iter().map(|j| j.len() + 1).sum();
        let mut out = BytesMut::with_capacity(joined.len() + mem_bytes);
        out.extend_from_slice(&joined);
        for json in &self.mem {
            if !out.is_empty() {
                out.extend_from_slice(b",");
            }
            out.extend_from_slice(json);
        }
        Ok(out.freeze())
    }

    /// Reads the file range through the shard's I/O ring and assembles.
    pub async fn load(self) -> std::io::Result<Bytes> {
        let bytes = match &self.disk {
            Some(d) => crate::runtime::dma::read_range(&d.path, d.pos, d.len).await?,
            None => Vec::new(),
        };
        self.assemble(&bytes)
    }

    /// The same, with blocking reads (tools and tests off the executor).
    pub fn load_blocking(self) -> std::io::Result<Bytes> {
        let bytes = match &self.disk {
            Some(d) => {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; d.len];
                std::fs::File::open(&d.path)?.read_exact_at(&mut buf, d.pos)?;
                buf
            }
            None => Vec::new(),
        };
        self.assemble(&bytes)
    }
}

/// The JSON of every frame in `bytes` whose offset is after `after`,
/// comma-joined. Every frame's length and checksum are checked: damage is
/// `InvalidData`, never a wrong byte served.
pub fn join_frames(bytes: &[u8], after: Option<LogOffset>) -> std::io::Result<Bytes> {
    let mut out = BytesMut::with_capacity(bytes.len());
    let mut rest = bytes;
    let corrupt = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a frame fails its checksum or length",
        )
    };
    while !rest.is_empty() {
        let header = rest.get(..FRAME_HEADER as usize).ok_or_else(corrupt)?;
        let tx = u64::from_le_bytes(header[0..8].try_into().expect("8 bytes"));
        let op = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[20..24].try_into().expect("4 bytes"));
        let json = rest
            .get(FRAME_HEADER as usize..FRAME_HEADER as usize + len)
            .ok_or_else(corrupt)?;
        if frame_crc(&header[..20], json) != crc {
            return Err(corrupt());
        }
        rest = &rest[FRAME_HEADER as usize + len..];
        if after.is_some_and(|a| LogOffset::At { tx, op } <= a) {
            continue;
        }
        if !out.is_empty() {
            out.extend_from_slice(b",");
        }
        out.extend_from_slice(json);
    }
    Ok(out.freeze())
}

/// What a read found.
#[derive(Debug)]
pub enum LogRead {
    /// Items after the requested offset (possibly none) up to `view.end`.
    Items(ReadView),
    /// The requested range is not written yet (a snapshot chunk in progress).
    NotYet,
    /// The offset is beyond the end of this shape's log.
    OutOfBounds,
}

/// The files' part of a checkpoint for one shape.
#[derive(Debug, Default)]
pub struct Captured {
    pub writes: Vec<FileWrite>,
    snapshot_upto: Option<u64>,
    main_upto: Option<u64>,
    /// The regions' state once the writes are done: `(snapshot, main)`.
    pub records: (RegionRecord, RegionRecord),
}

pub struct ShapeLog {
    snapshot: Region,
    snapshot_done: bool,
    main: Region,
    /// Entries past this are not served yet (None: every one is). A
    /// subquery shape's log is served only up to what the segment log made
    /// durable: after a crash its tail is rebuilt differently (move-in rows
    /// come from queries, moves from re-seeded views), so a client must
    /// never have read past the durable point. A plain shape's tail comes
    /// back identical from Postgres' resend, so it is served at once.
    served: Option<LogOffset>,
    /// The snapshot's last chunk (with `snapshot-end`) waits until the
    /// shape is durable: a client told it is up to date must find the
    /// shape after a crash.
    end_held: bool,
}

impl ShapeLog {
    /// A log served from `<dir>/<id>.snap` and `<dir>/<id>.log`.
    pub fn new(dir: &Path, id: u64, chunk_bytes_max: usize) -> ShapeLog {
        ShapeLog {
            snapshot: Region::new(dir.join(format!("{id}.snap")), chunk_bytes_max),
            snapshot_done: false,
            main: Region::new(dir.join(format!("{id}.log")), chunk_bytes_max),
            served: None,
            end_held: false,
        }
    }

    /// The live snapshot just ended: its last chunk waits for durability.
    pub fn hold_snapshot_end(&mut self) {
        self.end_held = true;
    }

    /// The shape is durable: serve its snapshot's end. Returns whether it
    /// was held.
    pub fn release_snapshot_end(&mut self) -> bool {
        std::mem::replace(&mut self.end_held, false)
    }

    pub fn snapshot_end_held(&self) -> bool {
        self.end_held
    }

    /// Whether every snapshot item is in the serving file.
    pub fn snapshot_on_disk(&self) -> bool {
        self.snapshot.tail.is_empty()
    }

    /// From now on entries are served only up to what `serve_through`
    /// allows; those already in the log are (they are durable).
    pub fn serve_durable_only(&mut self) {
        self.served = Some(self.last_offset());
    }

    /// Entries up to `end` are durable: serve them. Returns whether that
    /// is more than before.
    pub fn serve_through(&mut self, end: LogOffset) -> bool {
        match &mut self.served {
            Some(served) if end > *served => {
                assert!(
                    end <= self.main.last_offset().unwrap_or(LogOffset::SNAPSHOT_END),
                    "served past the log's last entry"
                );
                *served = end;
                true
            }
            _ => false,
        }
    }

    /// The last offset served: the last entry's, or less while entries
    /// wait for their flush.
    pub fn served_offset(&self) -> LogOffset {
        let last = self.last_offset();
        self.served.map_or(last, |served| served.min(last))
    }

    /// Snapshot rows so far (its `snapshot-end` not counted).
    pub fn snapshot_items(&self) -> u64 {
        self.snapshot.items - self.snapshot_done as u64
    }

    pub fn snapshot_done(&self) -> bool {
        self.snapshot_done
    }

    /// Appends one snapshot row; returns whether it sealed a chunk.
    pub fn push_snapshot_item(&mut self, item: &[u8]) -> bool {
        assert!(!self.snapshot_done, "snapshot items after its end");
        self.snapshot.pack.get_or_insert_with(BytesMut::new);
        // Offsets inside the snapshot are only ordering keys; clients see
        // chunk end offsets `0_<n>`.
        let n = self.snapshot.items;
        self.snapshot.push(LogOffset::At { tx: 0, op: n }, item)
    }

    /// Closes the snapshot with its `snapshot-end` control message.
    pub fn finish_snapshot(&mut self, end_message: &[u8]) {
        assert!(!self.snapshot_done, "the snapshot ends once");
        let n = self.snapshot.items;
        self.snapshot
            .push(LogOffset::At { tx: 0, op: n }, end_message);
        self.snapshot.seal();
        self.snapshot.pack = None;
        self.snapshot_done = true;
    }

    /// Appends a transaction entry; offsets must grow.
    pub fn push_entry(&mut self, at: LogOffset, item: &[u8]) {
        assert!(
            at > LogOffset::SNAPSHOT_END,
            "entry offset {at} in the snapshot region"
        );
        self.main.push(at, item);
    }

    /// The newest offset: the last entry's, or `0_inf` without entries.
    pub fn last_offset(&self) -> LogOffset {
        self.main.last_offset().unwrap_or(LogOffset::SNAPSHOT_END)
    }

    /// A view of the items in `(after, end]`, where `end` is the end of the
    /// chunk holding the first item after `after` (or the log's end when
    /// that chunk is open).
    pub fn read(&self, after: LogOffset) -> LogRead {
        match after {
            LogOffset::BeforeAll => return self.read_snapshot_chunk(0),
            LogOffset::At { tx: 0, .. } => {
                if let Some(n) = after.snapshot_chunk_index() {
                    let next = n.saturating_add(1);
                    if next < self.sealed_snapshot_chunks() || !self.snapshot_done {
                        return self.read_snapshot_chunk(next);
                    }
                }
            }
            LogOffset::At { .. } => {}
        }
        let last = self.served_offset();
        if after > last {
            return LogRead::OutOfBounds;
        }
        let chunks = &self.main.chunks;
        let index = chunks.partition_point(|c| c.last <= after);
        if index == chunks.len() || chunks[index].first > last {
            return LogRead::Items(ReadView {
                end: last,
                sealed: false,
                after: None,
                disk: None,
                mem: Vec::new(),
            });
        }
        // A sealed chunk not wholly served yet is read like an open one.
        let sealed = chunks[index].sealed && chunks[index].last <= last;
        let end = if sealed { chunks[index].last } else { last };
        LogRead::Items(self.main.view(index, Some(after), Some(end), end, sealed))
    }

    pub fn sealed_snapshot_chunks(&self) -> u64 {
        self.snapshot.sealed_chunks()
    }

    fn read_snapshot_chunk(&self, index: u64) -> LogRead {
        match self.snapshot.chunks.get(index as usize) {
            Some(chunk)
                if chunk.sealed
                    && self.end_held
                    && self.snapshot_done
                    && index as usize + 1 == self.snapshot.chunks.len() =>
            {
                LogRead::NotYet
            }
            Some(chunk) if chunk.sealed => LogRead::Items(self.snapshot.view(
                index as usize,
                None,
                None,
                LogOffset::snapshot_chunk(index),
                true,
            )),
            Some(_) => LogRead::NotYet,
            None if self.snapshot_done => LogRead::OutOfBounds,
            None => LogRead::NotYet,
        }
    }

    /// Bytes held in memory (tails not yet in the files).
    pub fn memory_bytes(&self) -> usize {
        self.snapshot.tail_bytes() + self.main.tail_bytes()
    }

    /// Whether anything waits to be written to the files.
    pub fn has_tail(&self) -> bool {
        !self.snapshot.tail.is_empty() || !self.main.tail.is_empty()
    }

    /// The writes that bring the files up to the memory tails. Call only
    /// for items the segment log holds durably.
    pub fn capture(&self) -> Captured {
        let mut captured = Captured::default();
        if let Some(w) = self.snapshot.capture() {
            captured.snapshot_upto = Some(w.pos + w.len);
            captured.writes.push(w);
        }
        if let Some(w) = self.main.capture() {
            captured.main_upto = Some(w.pos + w.len);
            captured.writes.push(w);
        }
        captured.records = (self.snapshot.record(), self.main.record());
        captured
    }

    /// `captured`'s writes are done: trim the tails they covered.
    pub fn written(&mut self, captured: &Captured) {
        if let Some(upto) = captured.snapshot_upto {
            self.snapshot.written(upto);
        }
        if let Some(upto) = captured.main_upto {
            self.main.written(upto);
        }
    }

    /// Restores the files' checkpointed state (the files are cut to it by
    /// the caller) before the segment log's tail is replayed on top.
    pub fn restore(&mut self, snapshot: &RegionRecord, main: &RegionRecord, snapshot_done: bool) {
        self.snapshot.restore(snapshot);
        self.main.restore(main);
        self.snapshot_done = snapshot_done;
        if self.served.is_some() {
            // Checkpointed items are durable.
            self.served = Some(self.last_offset());
        }
    }

    /// The serving files.
    pub fn paths(&self) -> [&Path; 2] {
        [&self.snapshot.path, &self.main.path]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("shapeshard-log-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn items(read: LogRead) -> (String, String) {
        match read {
            LogRead::Items(view) => {
                let end = view.end.to_string();
                let bytes = view.load_blocking().unwrap();
                (String::from_utf8(bytes.to_vec()).unwrap(), end)
            }
            other => panic!("expected items, got {other:?}"),
        }
    }

    fn off(s: &str) -> LogOffset {
        s.parse().unwrap()
    }

    /// Writes the tails to the files, as a checkpoint does.
    fn materialise(log: &mut ShapeLog) {
        let captured = log.capture();
        for w in &captured.writes {
            w.apply().unwrap();
        }
        log.written(&captured);
    }

    #[test]
    fn snapshot_chunks_then_log() {
        for on_disk in [false, true] {
            let d = dir(&format!("snap-{on_disk}"));
            let mut log = ShapeLog::new(&d, 1, 10);
            let flush = |log: &mut ShapeLog| {
                if on_disk {
                    materialise(log)
                }
            };
            assert!(matches!(log.read(LogOffset::BeforeAll), LogRead::NotYet));
            log.push_snapshot_item(b"aaaaaa");
            log.push_snapshot_item(b"bbbbbb"); // chunk 0 full: 13 bytes
            log.push_snapshot_item(b"c");
            flush(&mut log);
            assert_eq!(
                items(log.read(LogOffset::BeforeAll)),
                ("aaaaaa,bbbbbb".into(), "0_0".into())
            );
            assert!(matches!(log.read(off("0_0")), LogRead::NotYet));
            log.finish_snapshot(b"end");
            flush(&mut log);
            assert_eq!(items(log.read(off("0_0"))), ("c,end".into(), "0_1".into()));
            // Past the last snapshot chunk: the (empty) main log.
            assert_eq!(items(log.read(off("0_1"))), ("".into(), "0_inf".into()));
            assert_eq!(items(log.read(off("0_inf"))), ("".into(), "0_inf".into()));
            log.push_entry(off("100_0"), b"x1");
            flush(&mut log);
            log.push_entry(off("100_2"), b"x2");
            assert_eq!(
                items(log.read(off("0_1"))),
                ("x1,x2".into(), "100_2".into())
            );
            assert_eq!(items(log.read(off("100_0"))), ("x2".into(), "100_2".into()));
            assert_eq!(items(log.read(off("100_2"))), ("".into(), "100_2".into()));
            assert!(matches!(log.read(off("101_0")), LogRead::OutOfBounds));
            std::fs::remove_dir_all(&d).unwrap();
        }
    }

    #[test]
    fn main_log_chunks_are_stable() {
        let d = dir("stable");
        let mut log = ShapeLog::new(&d, 2, 8);
        log.finish_snapshot(b"end");
        log.push_entry(off("1_0"), b"aaaa");
        log.push_entry(off("2_0"), b"bbbb"); // 9 bytes: chunk sealed
        materialise(&mut log);
        log.push_entry(off("3_0"), b"cc");
        assert_eq!(
            items(log.read(off("0_inf"))),
            ("aaaa,bbbb".into(), "2_0".into())
        );
        assert_eq!(items(log.read(off("1_0"))), ("bbbb".into(), "2_0".into()));
        assert_eq!(items(log.read(off("2_0"))), ("cc".into(), "3_0".into()));
        log.push_entry(off("4_0"), b"dd");
        // The first chunk's answer did not change.
        assert_eq!(
            items(log.read(off("0_inf"))),
            ("aaaa,bbbb".into(), "2_0".into())
        );
        assert_eq!(items(log.read(off("2_0"))), ("cc,dd".into(), "4_0".into()));
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A log served only up to its durable point: entries past it are
    /// not read (not even when they seal a chunk, which is then read as an
    /// open one up to the point), and `serve_through` lets them out.
    #[test]
    fn entries_past_the_durable_point_are_not_served() {
        let d = dir("served");
        let mut log = ShapeLog::new(&d, 6, 8);
        log.serve_durable_only();
        log.finish_snapshot(b"end");
        log.push_entry(off("1_0"), b"aaaa");
        assert_eq!(log.served_offset(), off("0_inf"));
        assert_eq!(items(log.read(off("0_inf"))), ("".into(), "0_inf".into()));
        assert!(log.serve_through(off("1_0")));
        assert!(!log.serve_through(off("1_0")), "no wake-up for nothing new");
        log.push_entry(off("2_0"), b"bbbb"); // seals the chunk, not served
        let view = match log.read(off("0_inf")) {
            LogRead::Items(view) => view,
            other => panic!("{other:?}"),
        };
        assert!(!view.sealed, "a chunk served in part is not cacheable");
        assert_eq!(items(log.read(off("0_inf"))), ("aaaa".into(), "1_0".into()));
        assert!(matches!(log.read(off("2_0")), LogRead::OutOfBounds));
        log.push_entry(off("3_0"), b"cc");
        assert!(log.serve_through(off("3_0")));
        assert_eq!(
            items(log.read(off("0_inf"))),
            ("aaaa,bbbb".into(), "2_0".into())
        );
        assert_eq!(items(log.read(off("2_0"))), ("cc".into(), "3_0".into()));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_view_survives_the_trim_of_its_tail() {
        let d = dir("trim");
        let mut log = ShapeLog::new(&d, 3, 1 << 20);
        log.finish_snapshot(b"end");
        log.push_entry(off("1_0"), b"a");
        materialise(&mut log);
        log.push_entry(off("2_0"), b"b");
        let view = match log.read(off("0_inf")) {
            LogRead::Items(view) => view,
            other => panic!("{other:?}"),
        };
        // The tail moves to the file between the view and its read.
        materialise(&mut log);
        log.push_entry(off("3_0"), b"c");
        assert_eq!(view.end, off("2_0"));
        assert_eq!(&view.load_blocking().unwrap()[..], b"a,b");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn packed_snapshot_rows_read_back_whole_across_blocks_and_checkpoints() {
        let d = dir("pack");
        let mut log = ShapeLog::new(&d, 5, 64 << 10);
        let rows: Vec<Vec<u8>> = (0..3000)
            .map(|n| format!("{{\"id\":{n},\"pad\":\"{}\"}}", "p".repeat(n % 300)).into_bytes())
            .collect();
        for (n, row) in rows.iter().enumerate() {
            log.push_snapshot_item(row);
            if n == 1500 {
                // Half the rows reach the file: their blocks may go.
                materialise(&mut log);
            }
        }
        assert!(
            log.snapshot.pack.is_some(),
            "rows are packed while the snapshot runs"
        );
        log.finish_snapshot(b"end");
        assert!(log.snapshot.pack.is_none(), "no block is kept once it ends");
        let mut bodies: Vec<Vec<u8>> = Vec::new();
        let mut after = LogOffset::BeforeAll;
        while let LogRead::Items(view) = log.read(after) {
            assert!(bodies.len() < 1000, "reads end");
            if view.end == after {
                break;
            }
            after = view.end;
            let body = view.load_blocking().unwrap();
            if !body.is_empty() {
                bodies.push(body.to_vec());
            }
        }
        let mut want: Vec<u8> = rows.join(&b","[..]);
        want.extend_from_slice(b",end");
        assert!(bodies.join(&b","[..]) == want, "the rows, in order, whole");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn marks_skip_the_start_of_a_large_open_chunk() {
        let d = dir("marks");
        let mut log = ShapeLog::new(&d, 4, 10 << 20);
        log.finish_snapshot(b"end");
        let item = vec![b'x'; 1000];
        for tx in 1..=1000u64 {
            log.push_entry(LogOffset::At { tx, op: 0 }, &item);
        }
        materialise(&mut log);
        let LogRead::Items(view) = log.read(LogOffset::At { tx: 990, op: 0 }) else {
            panic!("items expected");
        };
        let disk = view.disk.clone().unwrap();
        assert!(
            disk.len < 100 * 1024,
            "read {} bytes for 10 items",
            disk.len
        );
        let bytes = view.load_blocking().unwrap();
        assert_eq!(bytes.len(), 10 * 1000 + 9);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    #[should_panic(expected = "log offsets only grow")]
    fn offsets_must_grow() {
        let d = dir("grow");
        let mut log = ShapeLog::new(&d, 5, 1024);
        log.push_entry(off("5_0"), b"a");
        log.push_entry(off("5_0"), b"b");
    }
}
