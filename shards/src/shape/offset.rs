//! Positions in a shape's log, as Electric writes them: `<tx>_<op>`.
//!
//! `tx` is the commit LSN of the transaction (decimal), `op` twice the
//! change's index in it (a primary-key change takes `op` and `op + 1`).
//! Snapshot chunks live at `0_<n>`; `0_inf` closes the snapshot region.
//! Both parts derive from the WAL alone, so a rebuilt log has the same offsets.

use std::fmt;
use std::str::FromStr;

use crate::lsn::Lsn;

/// `op` of the `<tx>_inf` form: above every real operation index.
const OP_INFINITY: u64 = u64::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogOffset {
    /// `-1`: before everything, i.e. "start with the snapshot".
    BeforeAll,
    /// `tx_op`, ordered by `(tx, op)`; `op == u64::MAX` is `inf`.
    At { tx: u64, op: u64 },
}

impl LogOffset {
    /// `0_inf`: the end of the snapshot region, the latest offset of a shape
    /// with no transaction yet.
    pub const SNAPSHOT_END: LogOffset = LogOffset::At {
        tx: 0,
        op: OP_INFINITY,
    };

    /// The end offset of snapshot chunk `index` (`0_<index>`).
    pub fn snapshot_chunk(index: u64) -> LogOffset {
        debug_assert!(index < OP_INFINITY);
        LogOffset::At { tx: 0, op: index }
    }

    /// The offset of operation `op` of the transaction committed at `lsn`.
    pub fn change(lsn: Lsn, op: u64) -> LogOffset {
        debug_assert!(lsn.0 > 0, "real offsets have a commit LSN");
        LogOffset::At { tx: lsn.0, op }
    }

    /// `<tx>_inf`
    pub fn after_transaction(lsn: Lsn) -> LogOffset {
        LogOffset::At {
            tx: lsn.0,
            op: OP_INFINITY,
        }
    }

    /// Whether this offset lies in the snapshot region (`-1`, `0_n`, `0_inf`).
    pub fn is_snapshot_region(self) -> bool {
        match self {
            LogOffset::BeforeAll => true,
            LogOffset::At { tx, .. } => tx == 0,
        }
    }

    /// For `0_n` with finite `n`: the snapshot chunk that follows this one.
    pub fn snapshot_chunk_index(self) -> Option<u64> {
        match self {
            LogOffset::At { tx: 0, op } if op != OP_INFINITY => Some(op),
            _ => None,
        }
    }

    /// The transaction part, 0 in the snapshot region.
    pub fn tx(self) -> u64 {
        match self {
            LogOffset::BeforeAll => 0,
            LogOffset::At { tx, .. } => tx,
        }
    }

    /// The operation part (`u64::MAX` for `inf`), 0 for `-1`.
    pub fn op(self) -> u64 {
        match self {
            LogOffset::BeforeAll => 0,
            LogOffset::At { op, .. } => op,
        }
    }
}

impl fmt::Display for LogOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LogOffset::BeforeAll => f.write_str("-1"),
            LogOffset::At { tx, op } if op == OP_INFINITY => write!(f, "{tx}_inf"),
            LogOffset::At { tx, op } => write!(f, "{tx}_{op}"),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct InvalidOffset;

impl FromStr for LogOffset {
    type Err = InvalidOffset;

    /// Accepts `-1`, `<tx>_<op>` and `<tx>_inf` with decimal parts (leading
    /// zeros allowed); `now` is a request pseudo-offset handled by the caller.
    fn from_str(s: &str) -> Result<LogOffset, InvalidOffset> {
        if s == "-1" {
            return Ok(LogOffset::BeforeAll);
        }
        let (tx, op) = s.split_once('_').ok_or(InvalidOffset)?;
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(tx) {
            return Err(InvalidOffset);
        }
        let tx = tx.parse::<u64>().map_err(|_| InvalidOffset)?;
        let op = if op == "inf" {
            OP_INFINITY
        } else if digits(op) {
            op.parse::<u64>().map_err(|_| InvalidOffset)?
        } else {
            return Err(InvalidOffset);
        };
        if op == OP_INFINITY && s.ends_with(|c: char| c.is_ascii_digit()) {
            // u64::MAX spelled out is not `inf`.
            return Err(InvalidOffset);
        }
        Ok(LogOffset::At { tx, op })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_form() {
        for s in ["-1", "0_0", "0_inf", "24337048_4", "24337048_inf", "0_17"] {
            assert_eq!(s.parse::<LogOffset>().unwrap().to_string(), s);
        }
        assert_eq!("0_02".parse::<LogOffset>().unwrap().to_string(), "0_2");
        for bad in [
            "",
            "10",
            "1_2_3",
            "1_2 ",
            "10_32.1",
            "-1_0",
            "_1",
            "1_",
            "a_b",
            "now",
            "-2",
            "1_-1",
            "99999999999999999999_1",
        ] {
            assert!(
                bad.parse::<LogOffset>().is_err(),
                "{bad:?} must be rejected"
            );
        }
    }

    #[test]
    fn order_is_tx_then_op_with_inf_on_top() {
        let mut offsets: Vec<LogOffset> = ["5_inf", "-1", "0_inf", "0_3", "5_2", "5_10", "0_0"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        offsets.sort();
        let printed: Vec<String> = offsets.iter().map(|o| o.to_string()).collect();
        assert_eq!(
            printed,
            ["-1", "0_0", "0_3", "0_inf", "5_2", "5_10", "5_inf"]
        );
    }
}
