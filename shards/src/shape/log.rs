//! A shape's log in memory: snapshot chunks, then transaction entries cut
//! into chunks at a byte threshold. Entries are stored encoded and joined by
//! commas, so a read is a slice of a chunk.
//!
//! Chunk boundaries are decided when an entry is appended and never move, so
//! the same request offset always gets the same response range (CDN caching
//! depends on it).

use bytes::{Bytes, BytesMut};

use super::offset::LogOffset;

/// Items of one chunk, comma-joined, and where each item ends.
#[derive(Default)]
struct Chunk {
    bytes: BytesMut,
    /// `(offset, end byte)` of every item; offsets strictly increase.
    items: Vec<(LogOffset, usize)>,
    /// Frozen copy once the chunk is closed: reads share it without copying.
    sealed: Option<Bytes>,
}

impl Chunk {
    fn push(&mut self, offset: LogOffset, item: &[u8]) {
        if let Some(&(last, _)) = self.items.last() {
            assert!(
                offset > last,
                "log offsets only grow: {offset} after {last}"
            );
            self.bytes.extend_from_slice(b",");
        }
        self.bytes.extend_from_slice(item);
        self.items.push((offset, self.bytes.len()));
    }

    fn seal(&mut self) {
        self.sealed = Some(std::mem::take(&mut self.bytes).freeze());
    }

    fn len_bytes(&self) -> usize {
        self.sealed.as_ref().map_or(self.bytes.len(), |b| b.len())
    }

    /// Items after index `from` (inclusive) to the end, comma-joined.
    fn slice_from(&self, from: usize) -> Bytes {
        let start = if from == 0 {
            0
        } else {
            self.items[from - 1].1 + 1
        };
        match &self.sealed {
            Some(b) => b.slice(start..),
            None => Bytes::copy_from_slice(&self.bytes[start..]),
        }
    }

    fn last_offset(&self) -> Option<LogOffset> {
        self.items.last().map(|&(o, _)| o)
    }
}

/// What a read found.
#[derive(Debug, PartialEq, Eq)]
pub enum LogRead {
    /// Comma-joined items after the requested offset (possibly empty) and
    /// the offset the response ends at.
    Items { items: Bytes, end: LogOffset },
    /// The requested range is not written yet (a snapshot chunk in progress).
    NotYet,
    /// The offset is beyond the end of this shape's log.
    OutOfBounds,
}

pub struct ShapeLog {
    chunk_bytes_max: usize,
    snapshot: Vec<Chunk>,
    snapshot_done: bool,
    main: Vec<Chunk>,
}

impl ShapeLog {
    pub fn new(chunk_bytes_max: usize) -> ShapeLog {
        assert!(chunk_bytes_max > 0);
        ShapeLog {
            chunk_bytes_max,
            snapshot: vec![Chunk::default()],
            snapshot_done: false,
            main: vec![Chunk::default()],
        }
    }

    pub fn snapshot_done(&self) -> bool {
        self.snapshot_done
    }

    /// Appends one snapshot row (or the final `snapshot-end`).
    pub fn push_snapshot_item(&mut self, item: &[u8]) {
        assert!(!self.snapshot_done, "snapshot items after its end");
        let chunk = self.snapshot.last_mut().expect("always an open chunk");
        let index = chunk.items.len() as u64;
        // Offsets inside a snapshot chunk are only ordering keys; clients see
        // the chunk's `0_<n>` end offset.
        chunk.push(LogOffset::At { tx: 0, op: index }, item);
        if chunk.len_bytes() >= self.chunk_bytes_max {
            chunk.seal();
            self.snapshot.push(Chunk::default());
        }
    }

    /// Closes the snapshot with its `snapshot-end` control message.
    pub fn finish_snapshot(&mut self, end_message: &[u8]) {
        let chunk = self.snapshot.last_mut().expect("always an open chunk");
        let index = chunk.items.len() as u64;
        chunk.push(LogOffset::At { tx: 0, op: index }, end_message);
        chunk.seal();
        self.snapshot_done = true;
    }

    /// Appends a transaction entry; offsets must grow.
    pub fn push_entry(&mut self, offset: LogOffset, item: &[u8]) {
        assert!(
            offset > LogOffset::SNAPSHOT_END,
            "entry offset {offset} in the snapshot region"
        );
        let chunk = self.main.last_mut().expect("always an open chunk");
        if let Some(last) = chunk.last_offset() {
            assert!(
                offset > last,
                "log offsets only grow: {offset} after {last}"
            );
        }
        chunk.push(offset, item);
        if chunk.len_bytes() >= self.chunk_bytes_max {
            chunk.seal();
            self.main.push(Chunk::default());
        }
    }

    /// The newest offset: the last entry's, or `0_inf` without entries.
    pub fn last_offset(&self) -> LogOffset {
        self.main
            .iter()
            .rev()
            .find_map(|c| c.last_offset())
            .unwrap_or(LogOffset::SNAPSHOT_END)
    }

    /// Items in `(after, end]` where `end` is the end of the chunk holding the
    /// first item after `after` (or the log's end when that chunk is open).
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
        let last = self.last_offset();
        if after > last {
            return LogRead::OutOfBounds;
        }
        for chunk in &self.main {
            // First item past `after` in this chunk, if any.
            let from = chunk.items.partition_point(|&(o, _)| o <= after);
            if from == chunk.items.len() {
                continue;
            }
            let end = if chunk.sealed.is_some() {
                chunk.last_offset().expect("sealed chunks have items")
            } else {
                last
            };
            return LogRead::Items {
                items: chunk.slice_from(from),
                end,
            };
        }
        LogRead::Items {
            items: Bytes::new(),
            end: last,
        }
    }

    pub fn sealed_snapshot_chunks(&self) -> u64 {
        self.snapshot.iter().filter(|c| c.sealed.is_some()).count() as u64
    }

    fn read_snapshot_chunk(&self, index: u64) -> LogRead {
        match self.snapshot.get(index as usize) {
            Some(chunk) if chunk.sealed.is_some() => LogRead::Items {
                items: chunk.slice_from(0),
                end: LogOffset::snapshot_chunk(index),
            },
            Some(_) => LogRead::NotYet,
            None if self.snapshot_done => LogRead::OutOfBounds,
            None => LogRead::NotYet,
        }
    }

    /// Bytes held, for accounting.
    pub fn bytes(&self) -> usize {
        self.snapshot
            .iter()
            .chain(&self.main)
            .map(|c| c.len_bytes())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(read: LogRead) -> (String, String) {
        match read {
            LogRead::Items { items, end } => {
                (String::from_utf8(items.to_vec()).unwrap(), end.to_string())
            }
            other => panic!("expected items, got {other:?}"),
        }
    }

    fn off(s: &str) -> LogOffset {
        s.parse().unwrap()
    }

    #[test]
    fn snapshot_chunks_then_log() {
        let mut log = ShapeLog::new(10);
        assert_eq!(log.read(LogOffset::BeforeAll), LogRead::NotYet);
        log.push_snapshot_item(b"aaaaaa");
        log.push_snapshot_item(b"bbbbbb"); // chunk 0 full: 13 bytes
        log.push_snapshot_item(b"c");
        assert_eq!(
            items(log.read(LogOffset::BeforeAll)),
            ("aaaaaa,bbbbbb".into(), "0_0".into())
        );
        assert_eq!(log.read(off("0_0")), LogRead::NotYet);
        log.finish_snapshot(b"end");
        assert_eq!(items(log.read(off("0_0"))), ("c,end".into(), "0_1".into()));
        // Past the last snapshot chunk: the (empty) main log.
        assert_eq!(items(log.read(off("0_1"))), ("".into(), "0_inf".into()));
        assert_eq!(items(log.read(off("0_inf"))), ("".into(), "0_inf".into()));
        log.push_entry(off("100_0"), b"x1");
        log.push_entry(off("100_2"), b"x2");
        assert_eq!(
            items(log.read(off("0_1"))),
            ("x1,x2".into(), "100_2".into())
        );
        assert_eq!(items(log.read(off("100_0"))), ("x2".into(), "100_2".into()));
        assert_eq!(items(log.read(off("100_2"))), ("".into(), "100_2".into()));
        assert_eq!(log.read(off("101_0")), LogRead::OutOfBounds);
    }

    #[test]
    fn main_log_chunks_are_stable() {
        let mut log = ShapeLog::new(8);
        log.finish_snapshot(b"end");
        log.push_entry(off("1_0"), b"aaaa");
        log.push_entry(off("2_0"), b"bbbb"); // 9 bytes: chunk sealed
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
    }

    #[test]
    #[should_panic(expected = "log offsets only grow")]
    fn offsets_must_grow() {
        let mut log = ShapeLog::new(1024);
        log.push_entry(off("5_0"), b"a");
        log.push_entry(off("5_0"), b"b");
    }
}
