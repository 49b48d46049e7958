//! A table's columns as the catalog describes them, and the `electric-schema`
//! header the client parses values with.

use super::definition::TableName;
use super::json;

/// One column, from `pg_attribute`/`pg_type`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    /// `typname`; for arrays the element type's name.
    pub type_name: String,
    /// The column type's oid (the array type for arrays).
    pub type_oid: u32,
    /// Array dimensions; 0 for scalars.
    pub dims: u32,
    pub type_mod: i32,
    pub not_null: bool,
    /// Position in the primary key.
    pub pk_index: Option<usize>,
}

/// The columns of a table, in attribute order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSchema {
    pub relation_id: u32,
    pub table: TableName,
    pub columns: Vec<ColumnInfo>,
}

impl TableSchema {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// Indices of the key columns in key order: the primary key, or every
    /// column sorted by name when there is none (as Electric keys rows).
    pub fn key_columns(&self) -> Vec<usize> {
        let mut pk: Vec<(usize, usize)> = self
            .columns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.pk_index.map(|k| (k, i)))
            .collect();
        if pk.is_empty() {
            let mut all: Vec<usize> = (0..self.columns.len()).collect();
            all.sort_by(|&a, &b| self.columns[a].name.cmp(&self.columns[b].name));
            return all;
        }
        pk.sort();
        pk.into_iter().map(|(_, i)| i).collect()
    }

    pub fn has_primary_key(&self) -> bool {
        self.columns.iter().any(|c| c.pk_index.is_some())
    }

    /// The `electric-schema` JSON for the given columns (indices).
    pub fn header_json(&self, selected: &[usize]) -> String {
        let mut out = Vec::with_capacity(32 * selected.len());
        out.push(b'{');
        for (n, &i) in selected.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            let column = &self.columns[i];
            json::push_str(&mut out, &column.name);
            out.extend_from_slice(b":{\"type\":");
            json::push_str(&mut out, &column.type_name);
            if column.dims > 0 {
                out.extend_from_slice(format!(",\"dims\":{}", column.dims).as_bytes());
            }
            for (key, value) in type_modifiers(&column.type_name, column.type_mod) {
                out.extend_from_slice(format!(",\"{key}\":").as_bytes());
                match value {
                    Modifier::Number(v) => out.extend_from_slice(v.to_string().as_bytes()),
                    Modifier::Text(v) => json::push_str(&mut out, &v),
                }
            }
            if let Some(k) = column.pk_index {
                out.extend_from_slice(format!(",\"pk_index\":{k}").as_bytes());
            }
            if column.not_null {
                out.extend_from_slice(b",\"not_null\":true");
            }
            out.push(b'}');
        }
        out.push(b'}');
        String::from_utf8(out).expect("built from UTF-8")
    }
}

enum Modifier {
    Number(i64),
    Text(String),
}

const TIME_TYPES: [&str; 5] = ["time", "timetz", "timestamp", "timestamptz", "date"];

/// The per-type extras Electric derives from `atttypmod`.
fn type_modifiers(type_name: &str, type_mod: i32) -> Vec<(&'static str, Modifier)> {
    match type_name {
        "varchar" | "text" if type_mod > 0 => {
            vec![("max_length", Modifier::Number(type_mod as i64 - 4))]
        }
        "bpchar" if type_mod > 0 => vec![("length", Modifier::Number(type_mod as i64 - 4))],
        "bit" | "varbit" => vec![("length", Modifier::Number(type_mod as i64))],
        "interval" if type_mod > -1 => {
            let range = (type_mod >> 16) & 0xffff;
            let precision = (type_mod & 0xffff) as i16;
            let mut extras = Vec::new();
            if let Some(fields) = interval_fields(range) {
                extras.push(("fields", Modifier::Text(fields)));
            }
            if precision != -1 {
                extras.push(("precision", Modifier::Number(precision as i64)));
            }
            extras
        }
        t if type_mod > 0 && TIME_TYPES.contains(&t) => {
            vec![("precision", Modifier::Number(type_mod as i64))]
        }
        "numeric" if type_mod > -1 => {
            let packed = type_mod - 4;
            vec![
                (
                    "precision",
                    Modifier::Number(((packed >> 16) & 0xffff) as i64),
                ),
                ("scale", Modifier::Number((packed & 0xffff) as i16 as i64)),
            ]
        }
        _ => Vec::new(),
    }
}

/// Interval range bits (high half of the typmod) as `"DAY TO SECOND"` etc.
fn interval_fields(range: i32) -> Option<String> {
    const ALL_SET: i32 = 0x7fff;
    const UNITS: [(&str, i32); 6] = [
        ("YEAR", 1 << 2),
        ("MONTH", 1 << 1),
        ("DAY", 1 << 3),
        ("HOUR", 1 << 10),
        ("MINUTE", 1 << 11),
        ("SECOND", 1 << 12),
    ];
    if range == ALL_SET {
        return None;
    }
    let units: Vec<&str> = UNITS
        .iter()
        .filter(|(_, mask)| range & mask != 0)
        .map(|(u, _)| *u)
        .collect();
    match units.as_slice() {
        [] => None,
        [one] => Some(one.to_string()),
        [first, .., last] => Some(format!("{first} TO {last}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, type_name: &str, type_mod: i32) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            type_name: type_name.into(),
            type_oid: 0,
            dims: 0,
            type_mod,
            not_null: false,
            pk_index: None,
        }
    }

    #[test]
    fn header_carries_types_keys_and_modifiers() {
        let mut id = column("id", "int4", -1);
        id.pk_index = Some(0);
        id.not_null = true;
        let mut tags = column("tags", "text", -1);
        tags.dims = 1;
        let schema = TableSchema {
            relation_id: 1,
            table: TableName {
                schema: "public".into(),
                name: "t".into(),
            },
            columns: vec![
                id,
                tags,
                column("v", "varchar", 14),
                column("c", "bpchar", 7),
                column("n", "numeric", (10 << 16 | 2) + 4),
                column("ts", "timestamptz", 3),
                // DAY TO SECOND with precision 2
                column(
                    "i",
                    "interval",
                    ((1 << 3 | 1 << 10 | 1 << 11 | 1 << 12) << 16) | 2,
                ),
                column("i2", "interval", (0x7fff << 16) | 0xffff),
            ],
        };
        let all: Vec<usize> = (0..schema.columns.len()).collect();
        let header: serde_json::Value = serde_json::from_str(&schema.header_json(&all)).unwrap();
        assert_eq!(
            header,
            serde_json::json!({
                "id": {"type": "int4", "pk_index": 0, "not_null": true},
                "tags": {"type": "text", "dims": 1},
                "v": {"type": "varchar", "max_length": 10},
                "c": {"type": "bpchar", "length": 3},
                "n": {"type": "numeric", "precision": 10, "scale": 2},
                "ts": {"type": "timestamptz", "precision": 3},
                "i": {"type": "interval", "fields": "DAY TO SECOND", "precision": 2},
                "i2": {"type": "interval"},
            })
        );
        assert_eq!(schema.key_columns(), vec![0]);
    }

    #[test]
    fn tables_without_primary_key_key_on_all_columns_by_name() {
        let schema = TableSchema {
            relation_id: 1,
            table: TableName {
                schema: "public".into(),
                name: "t".into(),
            },
            columns: vec![column("b", "int4", -1), column("a", "text", -1)],
        };
        assert!(!schema.has_primary_key());
        assert_eq!(schema.key_columns(), vec![1, 0]);
    }
}
