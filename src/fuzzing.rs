//! Entry points for fuzzing what the network and the disk feed the server.
//! A panic is a remote denial of service (the process aborts by design), so
//! every target must return normally on any input; where a target can also
//! check a property (valid JSON out, identity for what parses), it asserts
//! it. `fuzz/` runs these under libFuzzer (`cargo +nightly fuzz run
//! <target>`); `tests` below runs each over its seed corpus and a few
//! thousand mutations of it in every CI run.

use std::collections::BTreeMap;

use bytes::Bytes;
use shards::shape::definition::{ShapeHandle, TableName};
use shards::shape::encode::{self, Layout};
use shards::shape::offset::LogOffset;
use shards::shape::where_clause::{identity, TagSalt, WhereClause, WhereColumn};

use crate::http::shape::request::{self, Query, RequestKind};

/// A fuzz target: any bytes in, a normal return out.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/<name>.rs` and
/// `fuzz/corpus/<name>/` name them.
pub const TARGETS: &[(&str, Target)] = &[
    ("where_clause", where_clause),
    ("request", shape_request),
    ("pgoutput", pgoutput),
    ("replication", replication),
    ("encode", encode_row),
    ("segment", segment),
    ("serving", serving),
];

fn column(name: &str, type_name: &str, dims: u32) -> WhereColumn {
    WhereColumn {
        name: name.into(),
        type_name: type_name.into(),
        dims,
        is_enum: false,
    }
}

/// A table with a column of each kind the where engine types.
fn where_columns() -> Vec<WhereColumn> {
    vec![
        column("id", "int4", 0),
        column("big", "int8", 0),
        column("name", "text", 0),
        column("flag", "bool", 0),
        column("price", "numeric", 0),
        column("ratio", "float8", 0),
        column("uid", "uuid", 0),
        column("day", "date", 0),
        column("ts", "timestamptz", 0),
        column("span", "interval", 0),
        column("tags", "text", 1),
        column("nums", "int4", 1),
        column("doc", "jsonb", 0),
    ]
}

/// Splits `data` at NUL bytes: the first part, then the rest.
fn parts(data: &[u8]) -> Vec<String> {
    data.split(|&b| b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

/// `where` text, then `$1..` parameter values, then a row (NUL-separated;
/// a `\u{1}` value is NULL): parse, type, identity, evaluate, render.
pub fn where_clause(data: &[u8]) {
    let parts = parts(data);
    let Some((sql, rest)) = parts.split_first() else {
        return;
    };
    let columns = where_columns();
    let (params, row) = rest.split_at(rest.len().min(2));
    let params: BTreeMap<usize, String> = params
        .iter()
        .enumerate()
        .map(|(n, v)| (n + 1, v.clone()))
        .collect();
    let shape_identity = identity(sql);
    // Subqueries may read `public.t`, which has the same columns.
    let tables =
        |table: &TableName| (table.schema == "public" && table.name == "t").then(where_columns);
    let _ = WhereClause::subquery_tables(sql);
    if let Ok(clause) = WhereClause::parse_with_tables(sql, &columns, &params, &tables) {
        assert!(
            shape_identity.is_some(),
            "a clause that types must have an identity: {sql:?}"
        );
        let value = |i: usize| row.get(i).map(String::as_str).filter(|v| *v != "\u{1}");
        let _ = clause.matches(&value);
        let _ = clause.to_sql();
        let _ = clause.index_key();
        // Each subquery against a view holding the row's leading values.
        let mut views = Vec::new();
        for (index, dependency) in clause.dependencies().iter().enumerate() {
            let mut view = clause.new_view(index).expect("a view per dependency");
            let texts: Vec<Option<&str>> = (0..dependency.columns.len()).map(&value).collect();
            view.add(&texts);
            let _ = view.contains_text(&texts);
            views.push(view);
        }
        let views: Vec<_> = views.iter().map(|v| Some(v.into())).collect();
        let _ = clause.matches_with(&value, &views);
        let _ = clause.to_sql_with_values(&views);
        let salt = TagSalt {
            stack_id: "single_stack",
            handle: "1-2",
        };
        let tags = clause.tags(&value, &salt);
        let active = clause.active_conditions(&value, &views);
        if let Some(dnf) = clause.dnf() {
            assert_eq!(tags.len(), dnf.disjuncts().len());
            assert_eq!(active.len(), dnf.position_count());
            for index in 0..clause.dependencies().len() {
                let _ = clause.move_patterns(index, &[value(0), value(1)], &salt);
            }
        }
    }
}

/// A query string as `/v1/shape` receives it.
pub fn shape_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (query, if_none_match) = match text.split_once('\n') {
        Some((q, etag)) => (q, Some(etag)),
        None => (text.as_ref(), None),
    };
    let query = Query::parse(Some(query));
    for kind in [RequestKind::Get, RequestKind::Delete] {
        let _ = request::parse(kind, &query, if_none_match);
    }
}

/// XLogData payloads through the pgoutput decoder, a few in a row (each
/// prefixed by its length, u16 LE) so a Relation can precede the changes
/// that use it.
pub fn pgoutput(data: &[u8]) {
    let mut decoder = crate::pg::pgoutput::Decoder::new(1_000);
    let mut rest = data;
    while rest.len() >= 2 {
        let len = (u16::from_le_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
        let message = Bytes::copy_from_slice(&rest[2..2 + len]);
        rest = &rest[2 + len..];
        let _ = crate::pg::pgoutput::parse(message.clone());
        if decoder.decode(message).is_err() {
            // The ingest reconnects on a decode error: a fresh decoder.
            decoder = crate::pg::pgoutput::Decoder::new(1_000);
        }
    }
}

/// One CopyData payload of the replication stream.
pub fn replication(data: &[u8]) {
    let _ = crate::pg::replication::parse(Bytes::copy_from_slice(data));
}

/// A row of arbitrary values through the JSON encoders: the output must
/// be valid JSON whose values are the input's.
pub fn encode_row(data: &[u8]) {
    let values = parts(data);
    if values.is_empty() {
        return;
    }
    let names: Vec<String> = (0..values.len()).map(|i| format!("c\"{i}\\")).collect();
    let table = TableName {
        schema: values[0].clone(),
        name: "t/.\"".into(),
    };
    let selected: Vec<usize> = (0..values.len()).collect();
    let key = vec![0];
    let layout = Layout {
        table: &table,
        column_names: &names,
        selected: &selected,
        key: &key,
        has_primary_key: true,
    };
    let row: Vec<Option<&str>> = values
        .iter()
        .map(|v| Some(v.as_str()).filter(|v| *v != "\u{1}"))
        .collect();
    let mut out = Vec::new();
    encode::snapshot_row(&mut out, &layout, &row);
    let json: serde_json::Value = serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("invalid JSON {e}: {}", String::from_utf8_lossy(&out)));
    for (i, value) in row.iter().enumerate() {
        let got = &json["value"][&names[i]];
        match value {
            Some(v) => assert_eq!(got.as_str(), Some(*v)),
            None => assert!(got.is_null()),
        }
    }
    let handle = ShapeHandle::new(u64::from(data.len() as u32), 1);
    let _ = handle.as_str();
}

/// Segment-log bytes as recovery scans them: it must stop at the first
/// damage, never read past it.
pub fn segment(data: &[u8]) {
    let mut scanner = shards::storage::record::Scanner::new(data);
    let mut count = 0usize;
    for record in scanner.by_ref() {
        count += 1;
        let _ = record;
    }
    assert!(scanner.valid_len() <= data.len());
    let _ = count;
}

/// Serving-file bytes as a read checks and joins them.
pub fn serving(data: &[u8]) {
    let after = data.first().map(|&b| LogOffset::At {
        tx: u64::from(b),
        op: 0,
    });
    let _ = shards::shape::log::join_frames(data, after);
    let _ = shards::shape::log::join_frames(data, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift: reproducible mutations without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
        let mut out = seed.to_vec();
        for _ in 0..1 + rng.below(4) {
            match rng.below(5) {
                0 if !out.is_empty() => {
                    let i = rng.below(out.len());
                    out[i] = rng.next() as u8;
                }
                1 => {
                    let i = rng.below(out.len() + 1);
                    out.insert(i, rng.next() as u8);
                }
                2 if !out.is_empty() => {
                    let i = rng.below(out.len());
                    out.remove(i);
                }
                3 if !out.is_empty() => {
                    let a = rng.below(out.len());
                    let b = a + rng.below(out.len() - a);
                    let piece = out[a..=b.min(out.len() - 1)].to_vec();
                    let at = rng.below(out.len() + 1);
                    out.splice(at..at, piece);
                }
                _ => {
                    let i = rng.below(out.len() + 1);
                    out.truncate(i);
                }
            }
        }
        out
    }

    /// Every target over its committed seed corpus and 2,000 mutations of
    /// it: the CI share of fuzzing (the long runs are `cargo fuzz`'s).
    #[test]
    fn every_target_survives_its_corpus_and_mutations() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let runs: usize = std::env::var("FUZZ_SMOKE_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000);
        let only = std::env::var("FUZZ_TARGET").ok();
        for (name, target) in TARGETS {
            if only.as_deref().is_some_and(|o| o != *name) {
                continue;
            }
            let dir = root.join(name);
            let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
                .collect();
            seeds.sort();
            assert!(!seeds.is_empty(), "no seeds for {name}");
            for seed in &seeds {
                target(seed);
            }
            let mut rng = Rng(0x5eed_0000 + name.len() as u64);
            let trace = std::env::var("FUZZ_TRACE").is_ok();
            for _ in 0..runs {
                let seed = &seeds[rng.below(seeds.len())];
                let input = mutate(&mut rng, seed);
                if trace {
                    eprintln!("{name} <- {:?}", String::from_utf8_lossy(&input));
                }
                let started = std::time::Instant::now();
                target(&input);
                if trace && started.elapsed() > std::time::Duration::from_millis(20) {
                    eprintln!(
                        "{name} took {:?}: {:?}",
                        started.elapsed(),
                        String::from_utf8_lossy(&input)
                    );
                }
            }
        }
    }
}
