//! Reads racing writes, group commits and checkpoints, replayed
//! deterministically from a seed. Electric's reader-after-flush bug returned
//! an empty or a partial result when a flush moved the in-memory tail to
//! disk between a reader taking its view and reading it.
//!
//! Here every await point of both sides is a separate scheduler step: a
//! reader takes its view (synchronous), later reads the file range the view
//! names (the await), later assembles; a checkpoint captures the tails
//! (synchronous, with the journal), later writes the files (the await) and
//! trims. Any number of readers and one checkpoint are in flight at once,
//! interleaved with appends and commits in the order the seed picks. The
//! model checks that no read is ever empty when data existed at its view,
//! partial, out of order, or ending anywhere but its last item.

use std::path::Path;
use std::sync::Arc;

use crate::change::{Change, Datum, Transaction};
use crate::lsn::Lsn;
use crate::routes::RouteTable;
use crate::shape::encode::PgSnapshot;
use crate::shape::log::{Captured, LogRead, ReadView};
use crate::shape::offset::LogOffset;
use crate::shape::registry::{Registry, Shape};
use crate::shape::test_support::{id_relation, id_shape};
use crate::storage::record::{self, Kind, Scanner};

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        // splitmix64: every seed, including 0, gives a good stream.
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

/// A read in flight: its view, the model length when it was taken, and
/// the file bytes once read.
struct Reader {
    after: LogOffset,
    known: usize,
    view: ReadView,
    disk: Option<Vec<u8>>,
}

fn read_disk(view: &ReadView) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::FileExt;
    let Some(d) = &view.disk else {
        return Ok(Vec::new());
    };
    let mut buf = vec![0u8; d.len];
    std::fs::File::open(&d.path)
        .and_then(|f| f.read_exact_at(&mut buf, d.pos))
        .map_err(|e| format!("reading {:?} at {}: {e}", d.path, d.pos))?;
    Ok(buf)
}

/// One seed's run; Err names what went wrong.
fn run(seed: u64, dir: &Path) -> Result<(), String> {
    let mut rng = Rng(seed);
    // Small chunks so chunk boundaries are crossed all the time.
    let mut registry = Registry::new(
        0,
        Arc::new(RouteTable::new()),
        150 + rng.below(300) as usize,
        dir,
    );
    let shape = registry.insert(id_shape(7, "t", None, 1));
    registry.snapshot_taken(
        shape.id,
        PgSnapshot {
            xmin: 1,
            xmax: 1,
            xip: vec![],
            wal_lsn: None,
        },
    );
    shape.finish_snapshot(&PgSnapshot {
        xmin: 1,
        xmax: 1,
        xip: vec![],
        wal_lsn: None,
    });
    let relation = id_relation(7, "t");
    // The model: every entry's offset, in order, and the durable prefix.
    let mut model: Vec<LogOffset> = Vec::new();
    let mut durable = 0usize;
    let mut journaled = 0usize;
    let mut readers: Vec<Reader> = Vec::new();
    let mut checkpoint: Option<(std::rc::Rc<Shape>, Captured)> = None;
    let mut lsn = 1000u64;
    let mut next_id = 0u64;
    for step in 0..120 {
        match rng.below(8) {
            0 | 1 => {
                lsn += 1 + rng.below(50);
                let changes: Vec<Change> = (0..1 + rng.below(3))
                    .map(|_| {
                        next_id += 1;
                        Change::Insert {
                            relation: relation.clone(),
                            new: vec![Datum::Text(next_id.to_string().into())],
                        }
                    })
                    .collect();
                for op in 0..changes.len() as u64 {
                    model.push(LogOffset::change(Lsn(lsn), 2 * op));
                }
                registry.apply_transaction(&Arc::new(Transaction {
                    xid: 10 + step,
                    commit_lsn: Lsn(lsn),
                    end_lsn: Lsn(lsn + 1),
                    commit_time_micros: 0,
                    changes,
                }));
            }
            2 => {
                // A group commit takes the journal: it must hold exactly the
                // entries appended since the last one, in order. When no
                // checkpoint is in flight, it starts one (the tails are
                // captured with the journal, as the committer does).
                let records = std::mem::take(&mut *registry.journal().borrow_mut());
                let entries: Vec<LogOffset> = Scanner::new(&records)
                    .filter(|r| r.kind == Kind::Entry)
                    .map(|r| {
                        let (tx, op, _) = record::parse_entry(r.payload).expect("an entry");
                        LogOffset::At { tx, op }
                    })
                    .collect();
                if entries[..] != model[journaled..] {
                    return Err(format!(
                        "step {step}: commit took {entries:?}, expected {:?}",
                        &model[journaled..]
                    ));
                }
                journaled = model.len();
                durable = journaled;
                if checkpoint.is_none() && rng.below(2) == 0 {
                    checkpoint = registry
                        .capture_logs()
                        .into_iter()
                        .next()
                        .map(|(shape, captured, _)| (shape, captured));
                }
            }
            3 => {
                // The checkpoint's await: its file writes, then the trim.
                if let Some((shape, captured)) = checkpoint.take() {
                    for write in &captured.writes {
                        write.apply().map_err(|e| format!("step {step}: {e}"))?;
                    }
                    shape.written(&captured);
                }
            }
            4 | 5 => {
                // A reader takes its view from a random known position.
                let pick = rng.below(model.len() as u64 + 1) as usize;
                let after = if pick == 0 {
                    LogOffset::SNAPSHOT_END
                } else {
                    model[pick - 1]
                };
                match shape.read(after) {
                    LogRead::Items(view) => readers.push(Reader {
                        after,
                        known: model.len(),
                        view,
                        disk: None,
                    }),
                    other => return Err(format!("step {step}: read after {after}: {other:?}")),
                }
            }
            6 => {
                // A reader's await: the file read, at whatever state the
                // files are in now.
                let waiting: Vec<usize> = (0..readers.len())
                    .filter(|&i| readers[i].disk.is_none())
                    .collect();
                if !waiting.is_empty() {
                    let i = waiting[rng.below(waiting.len() as u64) as usize];
                    readers[i].disk = Some(read_disk(&readers[i].view)?);
                }
            }
            _ => {
                let done: Vec<usize> = (0..readers.len())
                    .filter(|&i| readers[i].disk.is_some())
                    .collect();
                if !done.is_empty() {
                    let i = done[rng.below(done.len() as u64) as usize];
                    let reader = readers.swap_remove(i);
                    check(u64::from(step), &model, reader)?;
                }
            }
        }
        assert!(durable <= model.len(), "durable never passes written");
    }
    // Every reader still in flight finishes after everything above.
    for mut reader in readers {
        if reader.disk.is_none() {
            reader.disk = Some(read_disk(&reader.view)?);
        }
        check(u64::MAX, &model, reader)?;
    }
    Ok(())
}

fn check(step: u64, model: &[LogOffset], reader: Reader) -> Result<(), String> {
    let Reader {
        after,
        known,
        view,
        disk,
    } = reader;
    let end = view.end;
    let items = view
        .assemble(&disk.unwrap_or_default())
        .map_err(|e| format!("step {step}: {e}"))?;
    let expected_first = model[..known].iter().position(|&o| o > after);
    match expected_first {
        None if !items.is_empty() => {
            return Err(format!("step {step}: items after the end {after}"))
        }
        Some(_) if items.is_empty() => {
            return Err(format!(
                "step {step}: empty read after {after} with data present"
            ))
        }
        _ => {}
    }
    let text = std::str::from_utf8(&items).map_err(|e| e.to_string())?;
    let parsed: Vec<serde_json::Value> = serde_json::from_str(&format!("[{text}]"))
        .map_err(|e| format!("step {step}: partial or broken items after {after}: {e}"))?;
    let offsets: Vec<LogOffset> = parsed
        .iter()
        .map(|m| {
            let lsn: u64 = m["headers"]["lsn"].as_str().unwrap().parse().unwrap();
            let op = m["headers"]["op_position"].as_u64().unwrap();
            LogOffset::change(Lsn(lsn), op)
        })
        .collect();
    let start = expected_first.unwrap_or(known);
    if start + offsets.len() > known || offsets[..] != model[start..start + offsets.len()] {
        return Err(format!(
            "step {step}: read after {after} gave {offsets:?}, a gap or reorder"
        ));
    }
    if let Some(&last) = offsets.last() {
        if end != last {
            return Err(format!(
                "step {step}: end {end} is not the last item {last}"
            ));
        }
    }
    Ok(())
}

#[test]
fn reads_interleaved_with_appends_commits_and_checkpoints_are_never_empty_or_partial() {
    let seeds: u64 = std::env::var("SHAPESHARD_INTERLEAVE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let dir = std::env::temp_dir().join(format!("shapeshard-interleave-{}", std::process::id()));
    for seed in 0..seeds {
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = run(seed, &dir) {
            panic!("seed {seed} fails (rerun with that seed): {e}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
