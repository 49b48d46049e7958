//! Reads racing writes and group commits, replayed deterministically from a
//! seed: Electric's reader-after-flush bug returned an empty or a partial
//! result when a flush trimmed the in-memory tail between a reader taking
//! its view and reading it. Here a read takes its view and its bytes in one
//! synchronous step (`Shape::read`, no await inside), commits never touch a
//! shape's log, and held results are immutable; this test interleaves
//! appends, commits and reads (including results held across later steps)
//! in every order a seed produces, and checks against a model that no read
//! is ever empty when data exists, partial, out of order, or changed later.

use std::sync::Arc;

use bytes::Bytes;

use crate::change::{Change, Datum, Transaction};
use crate::lsn::Lsn;
use crate::routes::RouteTable;
use crate::shape::encode::PgSnapshot;
use crate::shape::log::LogRead;
use crate::shape::offset::LogOffset;
use crate::shape::registry::Registry;
use crate::shape::test_support::{id_relation, id_shape};
use crate::storage::record::{Kind, Scanner};

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

/// One seed's run; Err names what went wrong.
fn run(seed: u64) -> Result<(), String> {
    let mut rng = Rng(seed);
    // Small chunks so chunk boundaries are crossed all the time.
    let mut registry = Registry::new(
        0,
        Arc::new(RouteTable::new()),
        150 + rng.below(300) as usize,
    );
    let shape = registry.insert(id_shape(7, "t", None, 1));
    registry.snapshot_taken(
        shape.id,
        PgSnapshot {
            xmin: 1,
            xmax: 1,
            xip: vec![],
        },
    );
    shape.finish_snapshot(&PgSnapshot {
        xmin: 1,
        xmax: 1,
        xip: vec![],
    });
    let relation = id_relation(7, "t");
    // The model: every entry's offset, in order, and the durable prefix.
    let mut model: Vec<LogOffset> = Vec::new();
    let mut durable = 0usize;
    let mut journaled = 0usize;
    let mut held: Vec<(LogOffset, Bytes, Bytes)> = Vec::new();
    let mut lsn = 1000u64;
    let mut next_id = 0u64;
    for step in 0..80 {
        match rng.below(4) {
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
                // entries appended since the last one, in order.
                let records = std::mem::take(&mut *registry.journal().borrow_mut());
                let entries: Vec<LogOffset> = Scanner::new(&records)
                    .filter(|r| r.kind == Kind::Entry)
                    .map(|r| LogOffset::At {
                        tx: u64::from_le_bytes(r.payload[0..8].try_into().unwrap()),
                        op: u64::from_le_bytes(r.payload[8..16].try_into().unwrap()),
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
            }
            _ => {
                // A read from a random known position (or the start).
                let pick = rng.below(model.len() as u64 + 1) as usize;
                let after = if pick == 0 {
                    LogOffset::SNAPSHOT_END
                } else {
                    model[pick - 1]
                };
                match shape.read(after) {
                    LogRead::Items { items, end } => {
                        let expected_first = model.iter().position(|&o| o > after);
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
                        let parsed: Vec<serde_json::Value> =
                            serde_json::from_str(&format!("[{text}]")).map_err(|e| {
                                format!("step {step}: partial or broken items after {after}: {e}")
                            })?;
                        let offsets: Vec<LogOffset> = parsed
                            .iter()
                            .map(|m| {
                                let lsn: u64 =
                                    m["headers"]["lsn"].as_str().unwrap().parse().unwrap();
                                let op = m["headers"]["op_position"].as_u64().unwrap();
                                LogOffset::change(Lsn(lsn), op)
                            })
                            .collect();
                        let start = expected_first.unwrap_or(model.len());
                        if offsets[..] != model[start..start + offsets.len()] {
                            return Err(format!("step {step}: read after {after} gave {offsets:?}, a gap or reorder"));
                        }
                        if let Some(&last) = offsets.last() {
                            if end != last {
                                return Err(format!(
                                    "step {step}: end {end} is not the last item {last}"
                                ));
                            }
                        }
                        held.push((after, items.clone(), items));
                    }
                    other => return Err(format!("step {step}: read after {after}: {other:?}")),
                }
            }
        }
        // Results handed out earlier never change, whatever happened since.
        for (after, original, copy) in &held {
            if original != copy {
                return Err(format!("step {step}: a held read after {after} changed"));
            }
        }
        assert!(durable <= model.len(), "durable never passes written");
    }
    Ok(())
}

#[test]
fn reads_interleaved_with_appends_and_commits_are_never_empty_or_partial() {
    let seeds: u64 = std::env::var("SHAPESHARD_INTERLEAVE_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    for seed in 0..seeds {
        if let Err(e) = run(seed) {
            panic!("seed {seed} fails (rerun with that seed): {e}");
        }
    }
}
