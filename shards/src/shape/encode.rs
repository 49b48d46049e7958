//! Log entries as the client reads them: JSON built once per change (or
//! snapshot row) and stored verbatim, so serving is concatenation.

use super::definition::TableName;
use super::json;
use super::offset::LogOffset;

/// One row's values in table column order. `None` is SQL NULL.
pub type Row<'a> = [Option<&'a str>];

/// What a shape selects from its table, in output order.
pub struct Layout<'a> {
    pub table: &'a TableName,
    pub column_names: &'a [String],
    /// Table column indices of the selected columns.
    pub selected: &'a [usize],
    /// Table column indices of the key columns, in key order.
    pub key: &'a [usize],
    /// Whether `key` is the primary key (as opposed to all columns).
    pub has_primary_key: bool,
}

/// `"schema"."table"/"v1"/"v2"`: `/` and `.` doubled in names, `/` doubled in
/// values, NULL as `_`.
pub fn row_key(layout: &Layout, row: &Row) -> String {
    let mut key = String::with_capacity(32);
    key.push('"');
    push_doubling(&mut key, layout.table.schema.as_str(), &['/', '.']);
    key.push_str("\".\"");
    push_doubling(&mut key, layout.table.name.as_str(), &['/', '.']);
    key.push('"');
    for &i in layout.key {
        key.push('/');
        match row[i] {
            Some(v) => {
                key.push('"');
                push_doubling(&mut key, v, &['/']);
                key.push('"');
            }
            None => key.push('_'),
        }
    }
    key
}

/// Appends `s` with each of `special` written twice (Electric's key
/// escaping), without a copy per replaced character (this runs per row).
fn push_doubling(key: &mut String, s: &str, special: &[char]) {
    let mut rest = s;
    while let Some(at) = rest.find(special) {
        let c = rest[at..].chars().next().expect("found a char");
        key.push_str(&rest[..at + c.len_utf8()]);
        key.push(c);
        rest = &rest[at + c.len_utf8()..];
    }
    key.push_str(rest);
}

/// `{"a":"1","b":null}` of the chosen columns.
fn push_value<'a>(
    out: &mut Vec<u8>,
    layout: &Layout,
    row: &Row,
    columns: impl Iterator<Item = &'a usize>,
) {
    out.push(b'{');
    let mut first = true;
    for &i in columns {
        if !first {
            out.push(b',');
        }
        first = false;
        json::push_str(out, &layout.column_names[i]);
        out.push(b':');
        json::push_opt_str(out, row[i]);
    }
    out.push(b'}');
}

fn push_relation(out: &mut Vec<u8>, table: &TableName) {
    out.extend_from_slice(b"\"relation\":[");
    json::push_str(out, &table.schema);
    out.push(b',');
    json::push_str(out, &table.name);
    out.push(b']');
}

/// A snapshot row: an insert without transaction headers.
pub fn snapshot_row(out: &mut Vec<u8>, layout: &Layout, row: &Row) {
    out.extend_from_slice(b"{\"key\":");
    json::push_str(out, &row_key(layout, row));
    out.extend_from_slice(b",\"value\":");
    push_value(out, layout, row, layout.selected.iter());
    out.extend_from_slice(b",\"headers\":{\"operation\":\"insert\",");
    push_relation(out, layout.table);
    out.extend_from_slice(b"}}");
}

/// What a row of a shape with subqueries carries beside its value: one
/// tag per disjunct of the where clause's DNF, the old row's tags the new
/// one lost (updates), and per DNF position whether it holds.
#[derive(Clone, Copy)]
pub struct Tagging<'a> {
    pub tags: &'a [String],
    /// Updates only (Electric writes it whenever there are tags, so `[]`
    /// on an update whose tags did not change).
    pub removed_tags: Option<&'a [String]>,
    pub active_conditions: &'a [bool],
}

fn push_strings(out: &mut Vec<u8>, items: &[String]) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::push_str(out, item);
    }
    out.push(b']');
}

fn push_bools(out: &mut Vec<u8>, items: &[bool]) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(if *item { b"true" } else { b"false" });
    }
    out.push(b']');
}

/// A snapshot or move-in row of a shape with subqueries: Electric puts
/// `active_conditions` and `tags` first in the headers, and marks rows a
/// move-in query returned with `is_move_in`.
pub fn tagged_row(
    out: &mut Vec<u8>,
    layout: &Layout,
    row: &Row,
    tagging: Tagging,
    is_move_in: bool,
) {
    out.extend_from_slice(b"{\"key\":");
    json::push_str(out, &row_key(layout, row));
    out.extend_from_slice(b",\"value\":");
    push_value(out, layout, row, layout.selected.iter());
    out.extend_from_slice(b",\"headers\":{\"active_conditions\":");
    push_bools(out, tagging.active_conditions);
    out.extend_from_slice(b",\"tags\":");
    push_strings(out, tagging.tags);
    out.extend_from_slice(b",\"operation\":\"insert\",");
    push_relation(out, layout.table);
    if is_move_in {
        out.extend_from_slice(b",\"is_move_in\":true");
    }
    out.extend_from_slice(b"}}");
}

/// Which way values moved for a shape with subqueries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Move {
    In,
    Out,
}

/// `{"headers":{"event":"move-out","patterns":[{"pos":0,"value":"<hash>"}],
/// "txids":[..]}}`: `patterns` are (DNF position, value hash) pairs, txids
/// the transactions that caused the move, ascending.
pub fn move_event(direction: Move, patterns: &[(usize, String)], txids: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + patterns.len() * 48);
    out.extend_from_slice(match direction {
        Move::In => b"{\"headers\":{\"event\":\"move-in\",\"patterns\":[".as_slice(),
        Move::Out => b"{\"headers\":{\"event\":\"move-out\",\"patterns\":[".as_slice(),
    });
    for (i, (position, hash)) in patterns.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(format!("{{\"pos\":{position},\"value\":").as_bytes());
        json::push_str(&mut out, hash);
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"txids\":[");
    for (i, txid) in txids.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(txid.to_string().as_bytes());
    }
    out.extend_from_slice(b"]}}");
    out
}

/// A subset snapshot row: a snapshot row marked with the subset's
/// `snapshot_mark`, which the client matches against the response metadata.
pub fn subset_row(out: &mut Vec<u8>, layout: &Layout, row: &Row, snapshot_mark: u32) {
    out.extend_from_slice(b"{\"key\":");
    json::push_str(out, &row_key(layout, row));
    out.extend_from_slice(b",\"value\":");
    push_value(out, layout, row, layout.selected.iter());
    out.extend_from_slice(b",\"headers\":{\"operation\":\"insert\",");
    push_relation(out, layout.table);
    out.extend_from_slice(format!(",\"snapshot_mark\":{snapshot_mark}}}}}").as_bytes());
}

/// An entry whose headers are still open: `last` is only known once the
/// whole transaction has been seen by the shape.
pub struct OpenEntry {
    pub offset: LogOffset,
    bytes: Vec<u8>,
}

impl OpenEntry {
    /// Closes the entry; `last` marks the shape's final entry of the transaction.
    pub fn finish(mut self, last: bool) -> (LogOffset, Vec<u8>) {
        if last {
            self.bytes.extend_from_slice(b",\"last\":true");
        }
        self.bytes.extend_from_slice(b"}}");
        (self.offset, self.bytes)
    }
}

/// The transaction a change belongs to.
#[derive(Clone, Copy)]
pub struct TxContext {
    pub xid: u32,
    pub commit_lsn: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Insert,
    Update,
    Delete,
}

pub enum KeyChange<'a> {
    None,
    To(&'a str),
    From(&'a str),
}

/// Everything one entry says, before encoding.
pub struct EntrySpec<'a, 'r> {
    pub operation: Operation,
    pub key: &'a str,
    pub row: &'a Row<'r>,
    /// Table column indices for `value`.
    pub value_columns: &'a [usize],
    /// Old row and the columns for `old_value` (replica=full updates).
    pub old_value: Option<(&'a Row<'r>, &'a [usize])>,
    pub key_change: KeyChange<'a>,
    pub op: u64,
    /// Tags for a shape with subqueries.
    pub tagging: Option<Tagging<'a>>,
}

pub fn change(layout: &Layout, tx: TxContext, spec: EntrySpec) -> OpenEntry {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"{\"key\":");
    json::push_str(&mut out, spec.key);
    out.extend_from_slice(b",\"value\":");
    push_value(&mut out, layout, spec.row, spec.value_columns.iter());
    if let Some((old, columns)) = spec.old_value {
        out.extend_from_slice(b",\"old_value\":");
        push_value(&mut out, layout, old, columns.iter());
    }
    out.extend_from_slice(b",\"headers\":{\"operation\":");
    out.extend_from_slice(match spec.operation {
        Operation::Insert => b"\"insert\"",
        Operation::Update => b"\"update\"",
        Operation::Delete => b"\"delete\"",
    });
    out.extend_from_slice(format!(",\"txids\":[{}],", tx.xid).as_bytes());
    push_relation(&mut out, layout.table);
    out.extend_from_slice(
        format!(",\"lsn\":\"{}\",\"op_position\":{}", tx.commit_lsn, spec.op).as_bytes(),
    );
    match spec.key_change {
        KeyChange::None => {}
        KeyChange::To(k) => {
            out.extend_from_slice(b",\"key_change_to\":");
            json::push_str(&mut out, k);
        }
        KeyChange::From(k) => {
            out.extend_from_slice(b",\"key_change_from\":");
            json::push_str(&mut out, k);
        }
    }
    if let Some(tagging) = spec.tagging {
        out.extend_from_slice(b",\"tags\":");
        push_strings(&mut out, tagging.tags);
        if let Some(removed) = tagging.removed_tags {
            out.extend_from_slice(b",\"removed_tags\":");
            push_strings(&mut out, removed);
        }
        out.extend_from_slice(b",\"active_conditions\":");
        push_bools(&mut out, tagging.active_conditions);
    }
    OpenEntry {
        offset: LogOffset::change(crate::Lsn(tx.commit_lsn), spec.op),
        bytes: out,
    }
}

/// `{"headers":{"control":"up-to-date","global_last_seen_lsn":"<n>"}}`
pub fn up_to_date(global_last_seen_lsn: u64) -> String {
    format!(
        "{{\"headers\":{{\"control\":\"up-to-date\",\"global_last_seen_lsn\":\"{global_last_seen_lsn}\"}}}}"
    )
}

pub const MUST_REFETCH: &str = r#"[{"headers":{"control":"must-refetch"}}]"#;

/// A Postgres snapshot, `pg_current_snapshot()` split into its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgSnapshot {
    pub xmin: u64,
    pub xmax: u64,
    pub xip: Vec<u64>,
    /// `pg_current_wal_insert_lsn()` read right after the snapshot: every
    /// transaction the snapshot sees committed below it, so one committed
    /// at or after it never is. Deciding by it first keeps the 32-bit xid
    /// arithmetic to transactions of the snapshot's own time, however old
    /// the snapshot gets. None for shapes stored before it was recorded.
    pub wal_lsn: Option<u64>,
}

impl PgSnapshot {
    /// Whether the transaction `xid` committed at `commit_lsn` is already
    /// in the snapshot rows (so its changes must be dropped).
    pub fn holds(&self, xid: u32, commit_lsn: u64) -> bool {
        if self.wal_lsn.is_some_and(|lsn| commit_lsn >= lsn) {
            return false;
        }
        self.contains(xid)
    }

    /// Whether no transaction from this one on (in commit order) can be in
    /// the snapshot: it committed past the snapshot's WAL position, or it
    /// started after the snapshot.
    pub fn ends_filtering(&self, xid: u32, commit_lsn: u64) -> bool {
        self.wal_lsn.is_some_and(|lsn| commit_lsn >= lsn) || self.is_after(xid)
    }

    /// The form kept in the journal and LMDB: the `snapshot-end` message
    /// clients read, then (after a newline, which JSON never holds raw) the
    /// snapshot's WAL position, which clients never see.
    pub fn stored_end(&self) -> Vec<u8> {
        let mut out = self.end_message().into_bytes();
        if let Some(lsn) = self.wal_lsn {
            out.extend_from_slice(format!("\n{lsn}").as_bytes());
        }
        out
    }

    /// The client's part of a stored end: the `snapshot-end` message.
    pub fn served_end(stored: &[u8]) -> &[u8] {
        match stored.iter().position(|&b| b == b'\n') {
            Some(n) => &stored[..n],
            None => stored,
        }
    }

    /// Reads back what `stored_end` wrote (or a bare end message).
    pub fn from_stored_end(stored: &[u8]) -> Option<PgSnapshot> {
        let served = PgSnapshot::served_end(stored);
        let mut snapshot = PgSnapshot::from_end_message(std::str::from_utf8(served).ok()?)?;
        if served.len() < stored.len() {
            snapshot.wal_lsn = Some(
                std::str::from_utf8(&stored[served.len() + 1..])
                    .ok()?
                    .parse()
                    .ok()?,
            );
        }
        Some(snapshot)
    }

    /// Parses `xmin:xmax:xip1,xip2`.
    pub fn parse(s: &str) -> Option<PgSnapshot> {
        let mut parts = s.splitn(3, ':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let xip = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<Vec<u64>>>()?,
        };
        Some(PgSnapshot {
            xmin,
            xmax,
            xip,
            wal_lsn: None,
        })
    }

    /// Whether transaction `xid` (32-bit, from pgoutput) committed before the
    /// snapshot: its changes are already in the snapshot rows. Compared
    /// modulo 2^32 relative to `xmin`, so it holds across epochs.
    pub fn contains(&self, xid: u32) -> bool {
        let distance = |x: u64| (x as u32).wrapping_sub(self.xmin as u32) as i32;
        let d = (xid).wrapping_sub(self.xmin as u32) as i32;
        if d < 0 {
            return true;
        }
        if d >= distance(self.xmax) {
            return false;
        }
        !self.xip.iter().any(|&x| x as u32 == xid)
    }

    /// Whether `xid` started after the snapshot (at or past `xmax`): from the
    /// first such transaction on, no later one can be in the snapshot.
    pub fn is_after(&self, xid: u32) -> bool {
        let d = xid.wrapping_sub(self.xmin as u32) as i32;
        let max = (self.xmax as u32).wrapping_sub(self.xmin as u32) as i32;
        d >= max
    }

    /// Reads back what `end_message` wrote (recovery restores a shape's
    /// snapshot visibility from its `snapshot-end` record).
    pub fn from_end_message(message: &str) -> Option<PgSnapshot> {
        let field = |name: &str| -> Option<&str> {
            let start = message.find(&format!("\"{name}\":"))? + name.len() + 3;
            Some(&message[start..])
        };
        let quoted = |rest: &str| -> Option<u64> {
            let rest = rest.strip_prefix('"')?;
            rest[..rest.find('"')?].parse().ok()
        };
        let xmin = quoted(field("xmin")?)?;
        let xmax = quoted(field("xmax")?)?;
        let list = field("xip_list")?.strip_prefix('[')?;
        let list = &list[..list.find(']')?];
        let xip = if list.is_empty() {
            Vec::new()
        } else {
            list.split(',')
                .map(|x| x.trim().trim_matches('"').parse().ok())
                .collect::<Option<Vec<u64>>>()?
        };
        Some(PgSnapshot {
            xmin,
            xmax,
            xip,
            wal_lsn: None,
        })
    }

    /// The `snapshot-end` control message.
    pub fn end_message(&self) -> String {
        let xip: Vec<String> = self.xip.iter().map(|x| format!("\"{x}\"")).collect();
        format!(
            "{{\"headers\":{{\"control\":\"snapshot-end\",\"xmin\":\"{}\",\"xmax\":\"{}\",\"xip_list\":[{}]}}}}",
            self.xmin,
            self.xmax,
            xip.join(",")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> TableName {
        TableName {
            schema: "public".into(),
            name: "items".into(),
        }
    }

    #[test]
    fn keys_escape_slashes_dots_and_nulls() {
        let t = TableName {
            schema: "he.llo".into(),
            name: "wo/rld".into(),
        };
        let names = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        let layout = Layout {
            table: &t,
            column_names: &names,
            selected: &[0, 1, 2],
            key: &[0, 1, 2],
            has_primary_key: true,
        };
        assert_eq!(
            row_key(&layout, &[Some("te/st"), None, Some("2")]),
            r#""he..llo"."wo//rld"/"te//st"/_/"2""#
        );
    }

    #[test]
    fn snapshot_rows_and_changes_encode_like_electric() {
        let t = table();
        let names = vec!["id".to_string(), "title".to_string()];
        let layout = Layout {
            table: &t,
            column_names: &names,
            selected: &[0, 1],
            key: &[0],
            has_primary_key: true,
        };
        let row = [Some("1"), Some("x \"y\"")];
        let mut out = Vec::new();
        snapshot_row(&mut out, &layout, &row);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"key":"\"public\".\"items\"/\"1\"","value":{"id":"1","title":"x \"y\""},"headers":{"operation":"insert","relation":["public","items"]}}"#
        );
        let key = row_key(&layout, &row);
        let entry = change(
            &layout,
            TxContext {
                xid: 741,
                commit_lsn: 24337200,
            },
            EntrySpec {
                operation: Operation::Update,
                key: &key,
                row: &row,
                value_columns: &[0, 1],
                old_value: Some((&[Some("1"), None], &[1])),
                key_change: KeyChange::None,
                op: 2,
                tagging: None,
            },
        );
        let (offset, bytes) = entry.finish(true);
        assert_eq!(offset.to_string(), "24337200_2");
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"key":"\"public\".\"items\"/\"1\"","value":{"id":"1","title":"x \"y\""},"old_value":{"title":null},"headers":{"operation":"update","txids":[741],"relation":["public","items"],"lsn":"24337200","op_position":2,"last":true}}"#
        );
    }

    #[test]
    fn subquery_rows_and_move_events_encode_as_electric() {
        let t = table();
        let names = vec!["id".to_string(), "title".to_string()];
        let layout = Layout {
            table: &t,
            column_names: &names,
            selected: &[0, 1],
            key: &[0],
            has_primary_key: true,
        };
        let row = [Some("1"), Some("x")];
        let tags = ["5bde1cb78690a878b8069a2edc4a6f18".to_string()];
        let tagging = Tagging {
            tags: &tags,
            removed_tags: None,
            active_conditions: &[true],
        };
        let mut out = Vec::new();
        tagged_row(&mut out, &layout, &row, tagging, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"key":"\"public\".\"items\"/\"1\"","value":{"id":"1","title":"x"},"headers":{"active_conditions":[true],"tags":["5bde1cb78690a878b8069a2edc4a6f18"],"operation":"insert","relation":["public","items"]}}"#
        );
        let mut out = Vec::new();
        tagged_row(&mut out, &layout, &row, tagging, true);
        assert!(String::from_utf8(out)
            .unwrap()
            .ends_with(r#""relation":["public","items"],"is_move_in":true}}"#));
        let key = row_key(&layout, &row);
        let removed = ["a/1".to_string()];
        let entry = change(
            &layout,
            TxContext {
                xid: 9,
                commit_lsn: 100,
            },
            EntrySpec {
                operation: Operation::Update,
                key: &key,
                row: &row,
                value_columns: &[0, 1],
                old_value: None,
                key_change: KeyChange::None,
                op: 0,
                tagging: Some(Tagging {
                    tags: &["b/1".to_string()],
                    removed_tags: Some(&removed),
                    active_conditions: &[true, false],
                }),
            },
        );
        assert_eq!(
            String::from_utf8(entry.finish(false).1).unwrap(),
            r#"{"key":"\"public\".\"items\"/\"1\"","value":{"id":"1","title":"x"},"headers":{"operation":"update","txids":[9],"relation":["public","items"],"lsn":"100","op_position":0,"tags":["b/1"],"removed_tags":["a/1"],"active_conditions":[true,false]}}"#
        );
        assert_eq!(
            String::from_utf8(move_event(
                Move::Out,
                &[(0, "5bde1cb78690a878b8069a2edc4a6f18".into())],
                &[7712]
            ))
            .unwrap(),
            r#"{"headers":{"event":"move-out","patterns":[{"pos":0,"value":"5bde1cb78690a878b8069a2edc4a6f18"}],"txids":[7712]}}"#
        );
        assert_eq!(
            String::from_utf8(move_event(
                Move::In,
                &[(0, "a".into()), (2, "b".into())],
                &[1, 2]
            ))
            .unwrap(),
            r#"{"headers":{"event":"move-in","patterns":[{"pos":0,"value":"a"},{"pos":2,"value":"b"}],"txids":[1,2]}}"#
        );
    }

    #[test]
    fn snapshot_visibility() {
        let s = PgSnapshot::parse("100:105:101,103").unwrap();
        assert_eq!(s.xip, vec![101, 103]);
        assert!(s.contains(99));
        assert!(s.contains(100));
        assert!(!s.contains(101));
        assert!(s.contains(102));
        assert!(!s.contains(103));
        assert!(!s.contains(105));
        assert!(!s.is_after(104));
        assert!(s.is_after(105));
        assert_eq!(
            s.end_message(),
            r#"{"headers":{"control":"snapshot-end","xmin":"100","xmax":"105","xip_list":["101","103"]}}"#
        );
        // xid8 values from a later epoch compare by their low 32 bits.
        let epoch = 5u64 << 32;
        let s = PgSnapshot::parse(&format!("{}:{}:", epoch + 10, epoch + 12)).unwrap();
        assert!(s.contains(9));
        assert!(s.contains(11));
        assert!(!s.contains(12));
        assert!(PgSnapshot::parse("1:2").is_none());
        assert!(PgSnapshot::parse("x:2:").is_none());
    }

    #[test]
    fn snapshot_end_messages_read_back() {
        for snapshot in [
            PgSnapshot {
                xmin: 740,
                xmax: 745,
                xip: vec![741, 743],
                wal_lsn: None,
            },
            PgSnapshot {
                xmin: 5,
                xmax: 5,
                xip: vec![],
                wal_lsn: None,
            },
        ] {
            assert_eq!(
                PgSnapshot::from_end_message(&snapshot.end_message()),
                Some(snapshot)
            );
        }
        assert_eq!(PgSnapshot::from_end_message("{}"), None);
    }
}
