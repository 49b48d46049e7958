//! A shard's segment log on disk: records appended in memory, written with
//! direct I/O in whole 4 KiB blocks and made durable by one fdatasync per
//! flush (group commit). Segments are preallocated and roll over at a
//! configured size.
//!
//! The last, partly filled block stays in memory after a flush and is
//! written again (with what follows it) by the next one, so every write is
//! block-aligned and no byte of a durable record is ever rewritten with
//! different contents.
//!
//! Retention: a checkpoint (see `storage::commit`) puts everything before a
//! log position into the serving files and LMDB; segments wholly before it
//! are then deleted, whatever shapes they mention, so one long-lived shape
//! never pins old segments and nothing needs compacting.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::runtime::dma::{DmaLog, BLOCK};

use super::meta::Checkpoint;
use super::record::{self, Scanner, Stop};

/// Counters a test or an operator can read.
#[derive(Debug, Default)]
pub struct SegmentStats {
    pub fdatasyncs: Cell<u64>,
    pub flushes: Cell<u64>,
    /// Flushes that failed (their records stay pending for the retry).
    pub failed_flushes: Cell<u64>,
    pub bytes_written: Cell<u64>,
}

pub struct SegmentWriter {
    dir: PathBuf,
    segment_bytes: u64,
    index: u64,
    file: DmaLog,
    /// Block-aligned file offset where `tail` starts.
    tail_at: u64,
    /// The partial last block already on disk, then records not yet written.
    tail: Vec<u8>,
    /// Bytes at the start of `tail` that are already durable.
    tail_durable: usize,
    pub stats: Rc<SegmentStats>,
}

/// What recovery found at the end of the log.
#[derive(Debug)]
pub struct Recovered {
    /// Bytes of valid records in the last segment.
    pub valid_len: u64,
    /// Set when a torn record was cut off.
    pub torn: Option<String>,
}

impl SegmentWriter {
    /// Opens the newest segment in `dir` (creating the first if there is
    /// none), cuts a torn tail, and positions appends after the last valid
    /// record.
    pub async fn open(
        dir: &Path,
        segment_bytes: u64,
    ) -> std::io::Result<(SegmentWriter, Recovered)> {
        assert!(segment_bytes >= BLOCK as u64 && segment_bytes.is_multiple_of(BLOCK as u64));
        std::fs::create_dir_all(dir)?;
        let indices = segment_indices(dir)?;
        let index = indices.last().copied().unwrap_or(0);
        let path = segment_path(dir, index);
        let file = DmaLog::open(&path).await?;
        let size = file.size().await?;
        let bytes = if size == 0 {
            Vec::new()
        } else {
            file.read_at(0, size as usize).await?
        };
        let mut scan = Scanner::new(&bytes);
        // End of the last complete flush (its commit marker).
        let mut committed = 0;
        let mut after_marker = 0;
        while let Some(record) = scan.next() {
            if record.kind == record::Kind::Commit {
                committed = scan.valid_len();
            } else if scan.valid_len() > committed {
                after_marker += 1;
            }
        }
        let torn = match scan.stop() {
            Some(Stop::Torn { .. }) => scan.stop().map(|s| s.to_string()),
            _ if scan.valid_len() > committed => Some(format!(
                "{after_marker} records of an unfinished flush after byte {committed}"
            )),
            _ => None,
        };
        let valid_len = committed;
        if torn.is_some() {
            // Everything past the cut is dropped (zeroed in its block, then
            // truncated), so no stale record there can ever be read as a
            // new one, by this writer or by a recovery scan.
            let keep_at = align_down(valid_len);
            let mut block = bytes[keep_at..valid_len].to_vec();
            block.resize(BLOCK, 0);
            file.write_at(keep_at as u64, &block).await?;
            file.truncate((keep_at + BLOCK) as u64).await?;
            file.sync().await?;
        }
        if size < segment_bytes {
            file.preallocate(segment_bytes).await?;
        }
        let tail_at = align_down(valid_len) as u64;
        let tail = bytes[tail_at as usize..valid_len].to_vec();
        let tail_durable = tail.len();
        let writer = SegmentWriter {
            dir: dir.to_path_buf(),
            segment_bytes,
            index,
            file,
            tail_at,
            tail,
            tail_durable,
            stats: Rc::new(SegmentStats::default()),
        };
        Ok((
            writer,
            Recovered {
                valid_len: valid_len as u64,
                torn,
            },
        ))
    }

    /// Buffers one record; durable after the next `flush`.
    pub fn append(&mut self, lsn: u64, shape: u64, kind: record::Kind, payload: &[u8]) {
        record::encode(&mut self.tail, lsn, shape, kind, payload);
    }

    /// Buffers already framed records.
    pub fn append_framed(&mut self, records: &[u8]) {
        let start = self.tail.len();
        self.tail.extend_from_slice(records);
        let walked = record::walk_headers(&self.tail[start..], |_, _| {});
        assert_eq!(
            start + walked,
            self.tail.len(),
            "only whole records are appended"
        );
    }

    /// Where the next record goes: everything before it is appended (and
    /// durable after a flush). While a roll-over is due, pending records
    /// go to the next segment (the flush rolls first), so that is where
    /// they are counted.
    pub fn position(&self) -> Checkpoint {
        if self.roll_due() {
            Checkpoint {
                segment: self.index + 1,
                offset: self.pending() as u64,
            }
        } else {
            Checkpoint {
                segment: self.index,
                offset: self.tail_at + self.tail.len() as u64,
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes waiting for a flush.
    pub fn pending(&self) -> usize {
        self.tail.len() - self.tail_durable
    }

    /// The durable part of the current segment reached its size: the next
    /// flush starts a new one first.
    fn roll_due(&self) -> bool {
        self.tail_at + self.tail_durable as u64 >= self.segment_bytes
    }

    /// Writes what is pending, ended by a commit marker, in one aligned
    /// write and makes it durable with one fdatasync. Returns whether there
    /// was anything to write.
    ///
    /// On an error (ENOSPC, EIO) nothing is lost and the call can simply be
    /// repeated: the pending records stay buffered (the failed flush's
    /// marker is taken back), and the retry rewrites the same blocks from
    /// the same block-aligned offset with the same bytes, plus whatever was
    /// appended since, ended by one marker. Whatever the failed attempt
    /// left on disk is a prefix of that (or is cut by recovery as an
    /// unfinished flush), and nothing of it was published. A roll-over is
    /// done first, by the flush that needs it, so running out of space for
    /// the next segment's preallocation fails a flush too, and is retried
    /// the same way.
    pub async fn flush(&mut self) -> std::io::Result<bool> {
        if self.roll_due() {
            self.roll().await?;
        }
        if self.pending() == 0 {
            return Ok(false);
        }
        let unmarked = self.tail.len();
        record::encode(&mut self.tail, 0, 0, record::Kind::Commit, &[]);
        let len = self.tail.len();
        let mut block = std::mem::take(&mut self.tail);
        block.resize(align_up(len), 0);
        let result = async {
            self.file.write_at(self.tail_at, &block).await?;
            self.file.sync().await
        }
        .await;
        if let Err(e) = result {
            block.truncate(unmarked);
            self.tail = block;
            self.stats
                .failed_flushes
                .set(self.stats.failed_flushes.get() + 1);
            return Err(e);
        }
        block.truncate(len);
        self.tail = block;
        self.stats.fdatasyncs.set(self.stats.fdatasyncs.get() + 1);
        self.stats.flushes.set(self.stats.flushes.get() + 1);
        self.stats
            .bytes_written
            .set(self.stats.bytes_written.get() + align_up(len) as u64);
        let whole = align_down(len);
        self.tail.drain(..whole);
        self.tail_at += whole as u64;
        self.tail_durable = self.tail.len();
        Ok(true)
    }

    /// Starts the next segment; everything in the current one is durable.
    /// Records pending (not yet written) move to the new segment. On an
    /// error nothing changes (a half-made next segment is removed, giving
    /// back what its preallocation got), so it can be retried.
    async fn roll(&mut self) -> std::io::Result<()> {
        let index = self.index + 1;
        let path = segment_path(&self.dir, index);
        let file = DmaLog::open(&path).await?;
        if let Err(e) = file.preallocate(self.segment_bytes).await {
            let _ = file.close().await;
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let old = std::mem::replace(&mut self.file, file);
        // It was fdatasynced: a close error cannot lose anything.
        let _ = old.close().await;
        self.index = index;
        // The partial block belonged to the old segment, which is durable.
        self.tail.drain(..self.tail_durable);
        self.tail_durable = 0;
        self.tail_at = 0;
        Ok(())
    }

    pub fn segment_index(&self) -> u64 {
        self.index
    }
}

/// Deletes every segment before `segment`, a checkpoint's position (the
/// checkpoint holds all they contain; the writer is always at or past it).
pub fn delete_segments_before(dir: &Path, segment: u64) -> std::io::Result<()> {
    for index in segment_indices(dir)? {
        if index >= segment {
            break;
        }
        std::fs::remove_file(segment_path(dir, index))?;
    }
    Ok(())
}

fn segment_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(format!("segment-{index:010}.log"))
}

/// Segment numbers present in `dir`, ascending.
pub fn segment_indices(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut indices: Vec<u64> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("segment-")?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect();
    indices.sort_unstable();
    Ok(indices)
}

fn align_up(n: usize) -> usize {
    n.div_ceil(BLOCK) * BLOCK
}

fn align_down(n: usize) -> usize {
    n / BLOCK * BLOCK
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{dma::open_marker_first, spawn_thread};
    use crate::storage::record::Kind;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("shapeshard-segment-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn run<T: Send + 'static, F: std::future::Future<Output = T> + 'static>(
        make: impl FnOnce() -> F + Send + 'static,
    ) -> T {
        spawn_thread("segment-test", make)
            .unwrap()
            .join()
            .unwrap()
            .unwrap()
    }

    fn records(dir: &Path) -> Vec<(u64, u64, Vec<u8>)> {
        let mut out = Vec::new();
        for index in segment_indices(dir).unwrap() {
            let bytes = std::fs::read(segment_path(dir, index)).unwrap();
            out.extend(
                Scanner::new(&bytes)
                    .filter(|r| r.kind != Kind::Commit)
                    .map(|r| (r.lsn, r.shape, r.payload.to_vec())),
            );
        }
        out
    }

    #[test]
    fn group_commit_is_one_sync_per_flush_and_survives_reopen() {
        let dir = scratch("commit");
        let d = dir.clone();
        let syncs = run(move || async move {
            open_marker_first(&d.join("marker")).await.unwrap();
            let (mut writer, recovered) = SegmentWriter::open(&d, 64 * 1024).await.unwrap();
            assert_eq!(recovered.valid_len, 0);
            // 10,000 records in one tick: one write, one fdatasync.
            for i in 0..10_000u64 {
                writer.append(1000 + i, i, Kind::Entry, format!("entry {i}").as_bytes());
            }
            assert!(writer.flush().await.unwrap());
            assert!(!writer.flush().await.unwrap(), "nothing pending, no sync");
            for i in 0..3u64 {
                writer.append(20_000 + i, i, Kind::Entry, b"later");
                writer.flush().await.unwrap();
            }
            writer.stats.fdatasyncs.get()
        });
        assert_eq!(syncs, 4);
        let all = records(&dir);
        assert_eq!(all.len(), 10_003);
        assert_eq!(all[0], (1000, 0, b"entry 0".to_vec()));
        assert_eq!(all[10_002], (20_002, 2, b"later".to_vec()));
        assert!(
            segment_indices(&dir).unwrap().len() > 1,
            "64 KiB segments rolled over"
        );

        // Reopening appends after the last record.
        let d = dir.clone();
        run(move || async move {
            open_marker_first(&d.join("marker")).await.unwrap();
            let (mut writer, recovered) = SegmentWriter::open(&d, 64 * 1024).await.unwrap();
            assert!(recovered.torn.is_none());
            writer.append(30_000, 9, Kind::Entry, b"after reopen");
            writer.flush().await.unwrap();
        });
        let all = records(&dir);
        assert_eq!(all.len(), 10_004);
        assert_eq!(all.last().unwrap(), &(30_000, 9, b"after reopen".to_vec()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Two flushes; the second's last record is damaged: the whole second
    /// flush goes (its first records too), the first stays.
    #[test]
    fn a_torn_flush_is_cut_whole_on_recovery() {
        let dir = scratch("torn");
        let d = dir.clone();
        run(move || async move {
            open_marker_first(&d.join("marker")).await.unwrap();
            let (mut writer, _) = SegmentWriter::open(&d, 1 << 20).await.unwrap();
            for batch in 0..2u64 {
                for i in 0..5u64 {
                    writer.append(batch * 10 + i + 1, 1, Kind::Entry, &[b'x'; 100]);
                }
                writer.flush().await.unwrap();
            }
        });
        // Damage the last entry by hand, as a torn write would.
        let path = segment_path(&dir, 0);
        let mut bytes = std::fs::read(&path).unwrap();
        let entry = record::HEADER_BYTES + 100;
        let first_flush = 5 * entry + record::HEADER_BYTES;
        let last = first_flush + 4 * entry;
        bytes[last + record::HEADER_BYTES + 50] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();

        let d = dir.clone();
        let (valid, torn) = run(move || async move {
            open_marker_first(&d.join("marker")).await.unwrap();
            let (mut writer, recovered) = SegmentWriter::open(&d, 1 << 20).await.unwrap();
            // What Postgres re-sends lands where the torn flush was.
            writer.append(11, 1, Kind::Entry, b"resent");
            writer.flush().await.unwrap();
            (recovered.valid_len, recovered.torn)
        });
        assert_eq!(valid as usize, first_flush);
        assert!(torn.unwrap().contains("checksum"));
        let all = records(&dir);
        assert_eq!(all.len(), 6);
        assert_eq!(all[5], (11, 1, b"resent".to_vec()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// fdatasync fails twice (EIO), records keep coming; the retry writes
    /// the same blocks again: every record ends up on disk exactly once,
    /// in order, and a reopen finds no torn or unfinished flush.
    #[test]
    fn a_failed_flush_is_retried_with_nothing_lost_or_doubled() {
        let dir = scratch("retry");
        let d = dir.clone();
        let (failures, position) = run(move || async move {
            open_marker_first(&d.join("marker")).await.unwrap();
            let (mut writer, _) = SegmentWriter::open(&d, 1 << 20).await.unwrap();
            writer.append(1, 1, Kind::Entry, b"durable before");
            writer.flush().await.unwrap();
            writer.append(2, 1, Kind::Entry, &[b'a'; 5000]);
            crate::runtime::dma::fault::fail_next_syncs(2);
            let before = writer.pending();
            assert!(writer.flush().await.is_err());
            assert_eq!(writer.pending(), before, "the failed flush's records wait");
            writer.append(3, 1, Kind::Entry, b"during the outage");
            assert!(writer.flush().await.is_err());
            writer.append(4, 1, Kind::Entry, b"after");
            let position = writer.position();
            assert!(writer.flush().await.unwrap());
            assert_eq!(writer.pending(), 0);
            (writer.stats.failed_flushes.get(), position)
        });
        assert_eq!(failures, 2);
        let want = vec![
            (1, 1, b"durable before".to_vec()),
            (2, 1, vec![b'a'; 5000]),
            (3, 1, b"during the outage".to_vec()),
            (4, 1, b"after".to_vec()),
        ];
        assert_eq!(records(&dir), want);
        let bytes = std::fs::read(segment_path(&dir, 0)).unwrap();
        let markers = Scanner::new(&bytes)
            .filter(|r| r.kind == Kind::Commit)
            .count();
        assert_eq!(markers, 2, "one marker per successful flush");
        let d = dir.clone();
        let (valid, torn) = run(move || async move {
            open_marker_first(&d.join("marker")).await.unwrap();
            let (_, recovered) = SegmentWriter::open(&d, 1 << 20).await.unwrap();
            (recovered.valid_len, recovered.torn)
        });
        assert_eq!(torn, None);
        assert_eq!(position.segment, 0);
        assert_eq!(valid, position.offset + record::HEADER_BYTES as u64);
        assert_eq!(records(&dir), want);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The next segment cannot be made (here its path is taken by a
    /// directory; on a full disk, its preallocation fails): the flush that
    /// needs it fails with nothing changed, its records still counted in
    /// the next segment, and once the roll-over works they land there.
    #[test]
    fn a_failed_roll_over_is_retried_with_nothing_lost() {
        let dir = scratch("roll");
        let d = dir.clone();
        let (position, after) = run(move || async move {
            open_marker_first(&d.join("marker")).await.unwrap();
            let (mut writer, _) = SegmentWriter::open(&d, 64 * 1024).await.unwrap();
            writer.append(1, 1, Kind::Entry, &[b'x'; 70 * 1024]);
            writer.flush().await.unwrap();
            assert_eq!(writer.segment_index(), 0, "rolled by the next flush");
            let blocker = segment_path(&d, 1);
            std::fs::create_dir(&blocker).unwrap();
            writer.append(2, 1, Kind::Entry, b"waits for the next segment");
            let position = writer.position();
            assert_eq!(
                (position.segment, position.offset as usize),
                (1, writer.pending())
            );
            assert!(writer.flush().await.is_err());
            assert_eq!(writer.segment_index(), 0);
            assert_eq!(writer.position(), position, "nothing moved");
            std::fs::remove_dir(&blocker).unwrap();
            assert!(writer.flush().await.unwrap());
            (position, writer.position())
        });
        assert_eq!(after.segment, 1);
        assert_eq!(after.offset, position.offset + record::HEADER_BYTES as u64);
        assert_eq!(
            records(&dir),
            vec![
                (1, 1, vec![b'x'; 70 * 1024]),
                (2, 1, b"waits for the next segment".to_vec())
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn records_after_the_last_commit_marker_are_an_unfinished_flush() {
        let dir = scratch("unfinished");
        let d = dir.clone();
        run(move || async move {
            open_marker_first(&d.join("marker")).await.unwrap();
            let (mut writer, _) = SegmentWriter::open(&d, 1 << 20).await.unwrap();
            writer.append(1, 1, Kind::Entry, b"kept");
            writer.flush().await.unwrap();
        });
        // Valid records with no marker after them: a flush cut between
        // its records (they reached the disk, its marker did not).
        let path = segment_path(&dir, 0);
        let mut bytes = std::fs::read(&path).unwrap();
        let end = Scanner::new(&bytes).map(|_| ()).count();
        assert_eq!(end, 2);
        let mut scan = Scanner::new(&bytes);
        scan.by_ref().for_each(drop);
        let at = scan.valid_len();
        let mut extra = Vec::new();
        record::encode(&mut extra, 2, 1, Kind::Entry, b"half a transaction");
        bytes[at..at + extra.len()].copy_from_slice(&extra);
        std::fs::write(&path, &bytes).unwrap();
        let d = dir.clone();
        let (valid, torn) = run(move || async move {
            open_marker_first(&d.join("marker")).await.unwrap();
            let (_, recovered) = SegmentWriter::open(&d, 1 << 20).await.unwrap();
            (recovered.valid_len, recovered.torn)
        });
        assert_eq!(valid as usize, at);
        assert!(torn.unwrap().contains("unfinished flush"));
        assert_eq!(records(&dir), vec![(1, 1, b"kept".to_vec())]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod retention_tests {
    use super::*;
    use crate::runtime::{dma::open_marker_first, spawn_thread};
    use crate::storage::record::Kind;

    #[test]
    fn segments_before_a_checkpoint_go_and_the_rest_stay_whole() {
        let dir = std::env::temp_dir().join(format!("shapeshard-retention-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let d = dir.clone();
        let (before, after, deleted, at) = spawn_thread("retention", move || async move {
            open_marker_first(&d.join("marker")).await.unwrap();
            let (mut writer, _) = SegmentWriter::open(&d.join("log"), 64 * 1024)
                .await
                .unwrap();
            let payload = [b'x'; 1000];
            for _ in 0..300 {
                writer.append(1, 1, Kind::Entry, &payload);
                writer.flush().await.unwrap();
            }
            let before = segment_indices(&d.join("log")).unwrap();
            let at = writer.position();
            // As the group commit does: the position is taken, then a flush
            // (which starts the next segment first if one is due) makes it
            // durable, then a checkpoint there frees every older segment.
            writer.flush().await.unwrap();
            delete_segments_before(&d.join("log"), at.segment).unwrap();
            let after = segment_indices(&d.join("log")).unwrap();
            let deleted = before.len() - after.len();
            (before, after, deleted, at)
        })
        .unwrap()
        .join()
        .unwrap()
        .unwrap();
        assert!(before.len() >= 4, "{before:?}");
        assert_eq!(after, vec![at.segment]);
        assert_eq!(deleted, before.len() - 1);
        // What is left holds whole records only.
        let bytes = std::fs::read(
            dir.join("log")
                .join(format!("segment-{:010}.log", at.segment)),
        )
        .unwrap();
        let mut scan = Scanner::new(&bytes);
        scan.by_ref().for_each(drop);
        assert_eq!(scan.stop(), Some(&Stop::End));
        assert_eq!(scan.valid_len() as u64, at.offset);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
