//! What a shape is: a table, an optional filter, a column selection and the
//! replica mode. Its canonical text decides identity and ownership.

use std::collections::BTreeMap;
use std::fmt;

use crate::owner::stable_hash;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Replica {
    /// Updates carry the key and changed columns; deletes the key.
    Default,
    /// Updates and deletes carry whole rows and `old_value`.
    Full,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogMode {
    Full,
    /// The snapshot is taken but returns no rows.
    ChangesOnly,
}

/// A qualified table name, as Postgres stores it (unquoted input folded).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl fmt::Display for TableName {
    /// `"schema"."name"`, quoted for SQL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "\"{}\".\"{}\"",
            self.schema.replace('"', "\"\""),
            self.name.replace('"', "\"\"")
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeDefinition {
    pub table: TableName,
    /// The where clause as the client wrote it (used in the snapshot query).
    pub where_sql: Option<String>,
    /// The where clause re-printed from its syntax tree: spacing and keyword
    /// case no longer matter for identity.
    pub where_canonical: Option<String>,
    /// `params[n]` values, 1-based.
    pub params: BTreeMap<usize, String>,
    /// Selected columns in request order; `None` selects all.
    pub columns: Option<Vec<String>>,
    pub replica: Replica,
    pub log_mode: LogMode,
}

impl ShapeDefinition {
    /// A stable text naming this shape: equal for requests that mean the same
    /// shape, different otherwise. Field separators cannot occur unescaped.
    pub fn canonical(&self) -> String {
        let mut out = String::with_capacity(64);
        out.push_str(&self.table.to_string());
        out.push_str("|where=");
        if let Some(w) = &self.where_canonical {
            out.push_str(&w.replace('|', "||"));
        }
        out.push_str("|params=");
        for (n, v) in &self.params {
            out.push_str(&format!("{n}:{}:{};", v.len(), v));
        }
        out.push_str("|columns=");
        if let Some(columns) = &self.columns {
            for c in columns {
                out.push_str(&format!("{}:{};", c.len(), c));
            }
        }
        out.push_str(match self.replica {
            Replica::Default => "|replica=default",
            Replica::Full => "|replica=full",
        });
        out.push_str(match self.log_mode {
            LogMode::Full => "|log=full",
            LogMode::ChangesOnly => "|log=changes_only",
        });
        out
    }

    /// The definition hash: the first half of a handle and the owner key.
    pub fn hash(&self) -> u64 {
        definition_hash(&self.canonical())
    }
}

/// Whether the shape a canonical definition names selects every column
/// (no `columns` list). User text (params, column names) sits before the
/// fixed `|replica=` tail, and a column list is never empty when present,
/// so only a select-all definition has `|columns=` right before the tail.
pub fn canonical_selects_all(canonical: &str) -> bool {
    canonical
        .rfind("|replica=")
        .is_some_and(|tail| canonical[..tail].ends_with("|columns="))
}

/// The hash of a normalised definition (`ShapeDefinition::canonical`).
pub fn definition_hash(canonical: &str) -> u64 {
    stable_hash(canonical.as_bytes())
}

/// A shape's handle: `<definition hash>-<creation time in µs>`. Never reused,
/// so a client holding an old one always learns it is gone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShapeHandle(pub String);

impl ShapeHandle {
    pub fn new(definition_hash: u64, created_micros: u64) -> ShapeHandle {
        // 27 bits, like Electric's, keeps handles short.
        ShapeHandle(format!(
            "{}-{}",
            definition_hash & 0x7ff_ffff,
            created_micros
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ShapeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition() -> ShapeDefinition {
        ShapeDefinition {
            table: TableName {
                schema: "public".into(),
                name: "items".into(),
            },
            where_sql: Some("id = $1".into()),
            where_canonical: Some("id = $1".into()),
            params: BTreeMap::from([(1, "7".into())]),
            columns: None,
            replica: Replica::Default,
            log_mode: LogMode::Full,
        }
    }

    #[test]
    fn every_field_takes_part_in_identity() {
        let base = definition();
        let mut variants = vec![base.clone()];
        let mut v = base.clone();
        v.table.schema = "other".into();
        variants.push(v);
        let mut v = base.clone();
        v.where_canonical = None;
        variants.push(v);
        let mut v = base.clone();
        v.params.insert(1, "8".into());
        variants.push(v);
        let mut v = base.clone();
        v.columns = Some(vec!["id".into()]);
        variants.push(v);
        let mut v = base.clone();
        v.replica = Replica::Full;
        variants.push(v);
        let mut v = base.clone();
        v.log_mode = LogMode::ChangesOnly;
        variants.push(v);
        let canon: std::collections::HashSet<String> =
            variants.iter().map(|d| d.canonical()).collect();
        assert_eq!(canon.len(), variants.len());
        // The raw where text does not: only its canonical form does.
        let mut v = base.clone();
        v.where_sql = Some("id   =   $1".into());
        assert_eq!(v.canonical(), base.canonical());
    }

    #[test]
    fn separators_in_values_cannot_collide() {
        let mut a = definition();
        a.params = BTreeMap::from([(1, "x;2:1:y".into())]);
        let mut b = definition();
        b.params = BTreeMap::from([(1, "x".into()), (2, "y".into())]);
        assert_ne!(a.canonical(), b.canonical());
    }

    #[test]
    fn handle_shape() {
        let h = ShapeHandle::new(u64::MAX, 1_721_812_114_261);
        assert_eq!(h.as_str(), "134217727-1721812114261");
    }
}
