//! The framing of a shard's segment log. Each record is
//!
//! ```text
//! len u32 LE | crc32 u32 LE | lsn u64 LE | shape u64 LE | kind u8 | payload
//! (len = the whole record, header included, so it is never zero)
//! ```
//!
//! The checksum covers everything after itself, so a torn write (a record
//! cut short, or garbage where a record should be) is detected and the log is
//! cut at the last whole record. A zero length marks the end of the written
//! part of a block padded for direct I/O.

use std::fmt;

pub const HEADER_BYTES: usize = 4 + 4 + 8 + 8 + 1;
/// Records larger than this are refused on write and treated as corruption
/// on read (a shape log entry is one change of one row).
pub const MAX_PAYLOAD: usize = 64 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A transaction entry of a shape's log.
    Entry = 1,
    /// A snapshot row of a shape.
    SnapshotItem = 2,
    /// A shape's `snapshot-end`.
    SnapshotEnd = 3,
    /// A shape was created (its definition follows).
    ShapeCreated = 4,
    /// A shape was removed.
    ShapeRemoved = 5,
    /// Ends the records of one flush. A flush is all or nothing: records
    /// after the last marker are a torn batch and are cut on recovery (a
    /// transaction's entries must never be kept in part, or its re-send
    /// would be skipped as already held).
    Commit = 6,
    /// A shape's `snapshot-end`, after its number of snapshot rows (u64
    /// LE): rows past the first `SNAPSHOT_JOURNAL_BYTES` are not journaled
    /// (the checkpoint writes them), so recovery keeps the snapshot only if
    /// it holds them all.
    SnapshotEndCounted = 7,
    /// The shard's processed position when this flush's records were
    /// taken (its LSN; no shape, no payload): every transaction committed
    /// below it was applied to every shape not holding it, and what that
    /// applying journaled is in this flush or an earlier one.
    Position = 8,
    /// A subquery shape's client views, whole (payload: see
    /// `registry/durable_views.rs`): at its seeding.
    ViewSet = 9,
    /// One value moved into or out of a subquery shape's client view, in
    /// the same flush as the move's log items.
    ViewMove = 10,
    /// A subquery shape started holding transactions at this LSN (a
    /// move-in in flight, or a re-seed after a restart), or (LSN 0)
    /// holds none any more: those it holds are not applied yet.
    HeldFrom = 11,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Entry,
            2 => Kind::SnapshotItem,
            3 => Kind::SnapshotEnd,
            4 => Kind::ShapeCreated,
            5 => Kind::ShapeRemoved,
            6 => Kind::Commit,
            7 => Kind::SnapshotEndCounted,
            8 => Kind::Position,
            9 => Kind::ViewSet,
            10 => Kind::ViewMove,
            11 => Kind::HeldFrom,
            _ => return None,
        })
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub lsn: u64,
    pub shape: u64,
    pub kind: Kind,
    pub payload: &'a [u8],
}

/// Appends one framed record to `out`.
/// An `Entry` record's payload: the entry's offset `(tx, op)`, then its
/// JSON, so a shape's log is rebuilt byte for byte from the segments.
pub fn entry_payload(out: &mut Vec<u8>, tx: u64, op: u64, json: &[u8]) {
    out.clear();
    out.extend_from_slice(&tx.to_le_bytes());
    out.extend_from_slice(&op.to_le_bytes());
    out.extend_from_slice(json);
}

/// `(tx, op, json)` of an `Entry` payload; None when it is too short.
pub fn parse_entry(payload: &[u8]) -> Option<(u64, u64, &[u8])> {
    let tx = u64::from_le_bytes(payload.get(0..8)?.try_into().ok()?);
    let op = u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?);
    Some((tx, op, &payload[16..]))
}

pub fn encode(out: &mut Vec<u8>, lsn: u64, shape: u64, kind: Kind, payload: &[u8]) {
    assert!(
        payload.len() <= MAX_PAYLOAD,
        "record of {} bytes",
        payload.len()
    );
    let start = out.len();
    out.extend_from_slice(&((HEADER_BYTES + payload.len()) as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&shape.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Calls `f(shape, kind)` for each record of `bytes`, which must be whole
/// records this process framed (no checksum work: for bookkeeping on the
/// write path). Returns the bytes walked.
pub fn walk_headers(bytes: &[u8], mut f: impl FnMut(u64, u8)) -> usize {
    let mut pos = 0;
    while let Some(header) = bytes.get(pos..pos + HEADER_BYTES) {
        let total = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        if total < HEADER_BYTES || pos + total > bytes.len() {
            break;
        }
        f(
            u64::from_le_bytes(header[16..24].try_into().expect("8 bytes")),
            header[24],
        );
        pos += total;
    }
    pos
}

/// Why a scan stopped before the end of the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// Zero padding: the written part ends here.
    End,
    /// A record cut short or failing its checksum: a torn write.
    Torn { at: usize, why: &'static str },
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::End => f.write_str("end of log"),
            Stop::Torn { at, why } => write!(f, "torn record at byte {at}: {why}"),
        }
    }
}

/// Reads records from the start of `bytes` until the end, padding or the
/// first damaged record. `valid_len()` is where the log must be cut.
pub struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
    stop: Option<Stop>,
}

impl<'a> Scanner<'a> {
    pub fn new(bytes: &'a [u8]) -> Scanner<'a> {
        Scanner {
            bytes,
            pos: 0,
            stop: None,
        }
    }

    /// Bytes of whole, valid records read so far.
    pub fn valid_len(&self) -> usize {
        self.pos
    }

    pub fn stop(&self) -> Option<&Stop> {
        self.stop.as_ref()
    }

    fn torn(&mut self, why: &'static str) -> Option<Record<'a>> {
        self.stop = Some(Stop::Torn { at: self.pos, why });
        None
    }
}

impl<'a> Iterator for Scanner<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        if self.stop.is_some() {
            return None;
        }
        let rest = &self.bytes[self.pos..];
        if rest.len() < 4 || rest[..4] == [0; 4] {
            // Zero length: padding. A valid record always has a kind byte,
            // so a header of zeros is never a record.
            if rest.len() >= HEADER_BYTES && rest[..HEADER_BYTES].iter().any(|&b| b != 0) {
                return self.torn("zero length with a non-zero header");
            }
            self.stop = Some(Stop::End);
            return None;
        }
        if rest.len() < HEADER_BYTES {
            return self.torn("header cut short");
        }
        let total = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        if total < HEADER_BYTES {
            return self.torn("length shorter than a header");
        }
        let len = total - HEADER_BYTES;
        if len > MAX_PAYLOAD {
            return self.torn("length over the limit");
        }
        if rest.len() < HEADER_BYTES + len {
            return self.torn("payload cut short");
        }
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if crc32fast::hash(&rest[8..HEADER_BYTES + len]) != crc {
            return self.torn("checksum mismatch");
        }
        let Some(kind) = Kind::from_byte(rest[24]) else {
            return self.torn("unknown record kind");
        };
        let record = Record {
            lsn: u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes")),
            shape: u64::from_le_bytes(rest[16..24].try_into().expect("8 bytes")),
            kind,
            payload: &rest[HEADER_BYTES..HEADER_BYTES + len],
        };
        self.pos += HEADER_BYTES + len;
        Some(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut log = Vec::new();
        encode(
            &mut log,
            100,
            1,
            Kind::ShapeCreated,
            b"{\"table\":\"items\"}",
        );
        encode(&mut log, 200, 1, Kind::Entry, b"{\"key\":\"a\"}");
        encode(&mut log, 300, 2, Kind::Entry, b"");
        log
    }

    #[test]
    fn records_round_trip_and_padding_ends_the_log() {
        let mut log = sample();
        let written = log.len();
        log.resize(4096, 0);
        let mut scan = Scanner::new(&log);
        let records: Vec<_> = scan
            .by_ref()
            .map(|r| (r.lsn, r.shape, r.kind, r.payload.len()))
            .collect();
        assert_eq!(
            records,
            [
                (100, 1, Kind::ShapeCreated, 17),
                (200, 1, Kind::Entry, 11),
                (300, 2, Kind::Entry, 0)
            ]
        );
        assert_eq!(scan.stop(), Some(&Stop::End));
        assert_eq!(scan.valid_len(), written);
    }

    #[test]
    fn every_cut_and_every_flipped_byte_is_detected() {
        let log = sample();
        let whole: Vec<usize> = {
            let mut ends = vec![0];
            let mut scan = Scanner::new(&log);
            while scan.next().is_some() {
                ends.push(scan.valid_len());
            }
            ends
        };
        // A cut anywhere keeps exactly the whole records before it.
        for cut in 0..log.len() {
            let mut scan = Scanner::new(&log[..cut]);
            scan.by_ref().for_each(drop);
            let expected = *whole.iter().filter(|&&e| e <= cut).max().unwrap();
            assert_eq!(scan.valid_len(), expected, "cut at {cut}");
        }
        // A flipped bit anywhere stops the scan at or before that record.
        for at in 0..log.len() {
            let mut damaged = log.clone();
            damaged[at] ^= 0x40;
            let mut scan = Scanner::new(&damaged);
            scan.by_ref().for_each(drop);
            let record_start = *whole.iter().filter(|&&e| e <= at).max().unwrap();
            assert!(
                scan.valid_len() <= record_start,
                "flip at {at}: kept {} bytes",
                scan.valid_len()
            );
            assert!(matches!(
                scan.stop(),
                Some(Stop::Torn { .. }) | Some(Stop::End)
            ));
        }
    }
}
