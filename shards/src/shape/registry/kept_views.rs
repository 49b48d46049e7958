//! A subquery shape's views kept across a clean stop (issue 17, §3, the
//! graceful part): with the closing checkpoint every applied transaction
//! is durable and in the shape's log, so if no move is in flight or
//! pending, the views *are* the state at the shard's last position:
//! each dependency's materializer (the truth, a multiset) and its client
//! view (what the log reflects). They are taken at the closing tick (with
//! its journal), written once after its checkpoint, and taken (read and
//! deleted) by the next recovery: a run
//! that applies anything makes them stale, so a crash must never find
//! them (a crash resumes shapes as `durable_views.rs` says).
//!
//! Not kept here (they resume through `durable_views.rs`, their truth
//! read again): a shape with a move-in in flight or pending moves, a
//! nested one (its middle levels' rows are not in these bytes); a shape
//! whose snapshot did not finish is dropped.
//!
//! Layout: version, the shard position the views hold through, then per
//! dependency the materializer's values with counts and the client view's
//! values. A value is its column count and per column a NULL flag or a
//! length-prefixed text.

use crate::lsn::Lsn;

use super::shape::{Gate, Shape};
use super::subquery::{as_refs, set_add};
use super::Registry;

const VERSION: u8 = 1;

type Value = Vec<Option<String>>;

impl Registry {
    /// The views of every built subquery shape that can resume exactly,
    /// as of the shard's last position. Taken at the closing tick with its
    /// journal (so they describe what that flush makes durable), written
    /// only after its checkpoint.
    pub fn closing_views(&self) -> Vec<(u64, Vec<u8>)> {
        let through = self.last_seen();
        self.shapes
            .iter()
            .filter_map(|(&id, shape)| shape.kept_views(through).map(|v| (id, v)))
            .collect()
    }
}

impl Shape {
    /// This shape's views, if it is a subquery shape at rest: snapshot
    /// done, no move in flight, no value pending.
    fn kept_views(&self, through: Lsn) -> Option<Vec<u8>> {
        let state = self.state.borrow();
        let sub = state.subquery.as_ref()?;
        // A nested subquery's middle levels mirror their tables' rows,
        // which these bytes do not hold: such a shape re-syncs (409).
        let nested = self
            .subquery_spec()
            .is_some_and(|spec| spec.dependencies.iter().any(|d| !d.children.is_empty()));
        let at_rest = !nested
            && !state.gone
            && state.snapshot_end.is_some()
            // (a filtering gate is re-armed from the snapshot's end on rebuild)
            && !matches!(state.gate, Gate::Pending(_))
            && !sub.streaming
            && sub.moving.is_none()
            && sub.pending.iter().all(|p| p.is_empty());
        if !at_rest {
            return None;
        }
        // A run that processed less than the last one (nothing routed to
        // its shard yet) still skips what the last one did.
        let through = through.max(sub.resume_after);
        let mut out = Vec::new();
        put_header(&mut out, VERSION, through, sub.truths.len());
        for (truth, client) in sub.truths.iter().zip(&sub.client) {
            let base = truth.base();
            let counted: Vec<_> = base.counted_texts().collect();
            put_u32(&mut out, counted.len());
            for (value, count) in counted {
                out.extend_from_slice(&count.to_le_bytes());
                put_value(&mut out, &value);
            }
            let shown: Vec<_> = client.view(&base).counted_texts().collect();
            put_u32(&mut out, shown.len());
            for (value, _) in shown {
                put_value(&mut out, &value);
            }
        }
        Some(out)
    }

    /// Recovery: sets a rebuilt subquery shape's views from a clean stop's
    /// bytes. The shape takes no transaction committed below their
    /// position (its shard processed them all before the stop).
    pub fn restore_views(&self, bytes: &[u8]) -> Result<(), &'static str> {
        let mut state = self.state.borrow_mut();
        if state.snapshot_end.is_none() {
            return Err("its snapshot had not finished");
        }
        let sub = state.subquery.as_mut().ok_or("not a subquery shape")?;
        let mut r = Reader(bytes);
        let through = r.header(VERSION, sub.truths.len())?;
        for d in 0..sub.truths.len() {
            let truth = sub.truths[d]
                .private_mut()
                .ok_or("a shared truth cannot be restored")?;
            for _ in 0..r.u32()? {
                let count = r.u64()?;
                let value = r.value()?;
                for _ in 0..count {
                    truth.seed(&as_refs(&value));
                }
            }
            for _ in 0..r.u32()? {
                let value = r.value()?;
                let client = sub.client[d]
                    .own_mut()
                    .ok_or("a shared truth cannot be restored")?;
                set_add(client, &as_refs(&value));
            }
        }
        r.end()?;
        sub.streaming = false;
        sub.seeded = None;
        sub.resume_after = through;
        Ok(())
    }
}

/// The start of views bytes (kept views, client views): the format's
/// version, a WAL position, the number of dependencies.
pub(super) fn put_header(out: &mut Vec<u8>, version: u8, lsn: Lsn, dependencies: usize) {
    out.push(version);
    out.extend_from_slice(&lsn.0.to_le_bytes());
    put_u32(out, dependencies);
}

pub(super) fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

pub(super) fn put_value<S: AsRef<str>>(out: &mut Vec<u8>, value: &[Option<S>]) {
    put_u32(out, value.len());
    for column in value {
        match column {
            None => out.push(0),
            Some(text) => {
                let text = text.as_ref();
                out.push(1);
                put_u32(out, text.len());
                out.extend_from_slice(text.as_bytes());
            }
        }
    }
}

pub(super) struct Reader<'a>(pub(super) &'a [u8]);

const SHORT: &str = "views cut short";

impl Reader<'_> {
    /// `put_header`'s fields, checked against this build's `version` and
    /// the clause's number of `dependencies`; the position.
    pub(super) fn header(&mut self, version: u8, dependencies: usize) -> Result<Lsn, &'static str> {
        if self.u8()? != version {
            return Err("views of another version");
        }
        let lsn = Lsn(self.u64()?);
        if self.u32()? != dependencies {
            return Err("views of another clause");
        }
        Ok(lsn)
    }

    /// Every byte was read.
    pub(super) fn end(&self) -> Result<(), &'static str> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err("views with trailing bytes")
        }
    }

    fn take(&mut self, n: usize) -> Result<&[u8], &'static str> {
        if self.0.len() < n {
            return Err(SHORT);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    pub(super) fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u32(&mut self) -> Result<usize, &'static str> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b.try_into().map_err(|_| SHORT)?) as usize)
    }

    pub(super) fn u64(&mut self) -> Result<u64, &'static str> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| SHORT)?))
    }

    pub(super) fn value(&mut self) -> Result<Value, &'static str> {
        let columns = self.u32()?;
        let mut value = Vec::with_capacity(columns.min(64));
        for _ in 0..columns {
            value.push(match self.u8()? {
                0 => None,
                _ => {
                    let len = self.u32()?;
                    let text = std::str::from_utf8(self.take(len)?)
                        .map_err(|_| "kept view text is not UTF-8")?;
                    Some(text.to_string())
                }
            });
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values (NULLs, empty and multi-byte texts) read back as written;
    /// bytes cut anywhere are an error, never a shorter value.
    #[test]
    fn values_round_trip_and_cut_bytes_are_refused() {
        let value: Value = vec![
            Some("7".into()),
            None,
            Some(String::new()),
            Some("ü/x".into()),
        ];
        let mut out = Vec::new();
        put_value(&mut out, &value);
        let mut reader = Reader(&out);
        assert_eq!(reader.value().unwrap(), value);
        assert!(reader.0.is_empty());
        for cut in 0..out.len() {
            assert!(Reader(&out[..cut]).value().is_err(), "cut at {cut}");
        }
    }
}
