//! What a shape's creation record in the segment log says: enough to build
//! the same shape again after a restart without asking Postgres (handle,
//! definition, and the table's columns as they were at creation).

use std::collections::BTreeMap;

use serde_json::{json, Value};
use shards::shape::definition::{LogMode, Replica, ShapeDefinition, ShapeHandle, TableName};
use shards::shape::schema::{ColumnInfo, TableSchema};

use super::catalog::TableInfo;

pub fn encode(handle: &ShapeHandle, definition: &ShapeDefinition, info: &TableInfo) -> Vec<u8> {
    exact(record(handle, definition, info))
}

/// A subquery shape's record: also its subqueries' tables as the catalog
/// had them at creation, so a restart rebuilds the same spec (typing,
/// fingerprints, relation ids) without asking Postgres.
pub fn encode_with_tables(
    handle: &ShapeHandle,
    definition: &ShapeDefinition,
    info: &TableInfo,
    tables: &BTreeMap<TableName, TableInfo>,
) -> Vec<u8> {
    let mut v = record(handle, definition, info);
    v["subquery_tables"] = Value::Array(
        tables
            .iter()
            .map(|(name, info)| {
                json!({
                    "table": [name.schema, name.name],
                    "relation_id": info.schema.relation_id,
                    "table_columns": columns_json(info),
                })
            })
            .collect(),
    );
    exact(v)
}

/// A record's bytes, their buffer no larger than they are: every live
/// shape keeps its own.
fn exact(record: Value) -> Vec<u8> {
    let mut bytes = record.to_string().into_bytes();
    bytes.shrink_to_fit();
    bytes
}

/// The subqueries' tables of a record (None: a plain shape's, or one
/// written before they were kept).
pub fn decode_tables(payload: &[u8]) -> Result<Option<BTreeMap<TableName, TableInfo>>, String> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    let Some(list) = v["subquery_tables"].as_array() else {
        return Ok(None);
    };
    let mut tables = BTreeMap::new();
    for t in list {
        let name = TableName {
            schema: t["table"][0].as_str().ok_or("missing schema")?.to_string(),
            name: t["table"][1].as_str().ok_or("missing table")?.to_string(),
        };
        let info = table_info(t, name.clone())?;
        tables.insert(name, info);
    }
    Ok(Some(tables))
}

fn columns_json(info: &TableInfo) -> Vec<Value> {
    info.schema
        .columns
        .iter()
        .zip(&info.is_enum)
        .map(|(c, is_enum)| {
            json!({
                "name": c.name, "type_name": c.type_name, "type_oid": c.type_oid,
                "dims": c.dims, "type_mod": c.type_mod, "not_null": c.not_null,
                "pk_index": c.pk_index, "is_enum": is_enum,
            })
        })
        .collect()
}

fn record(handle: &ShapeHandle, definition: &ShapeDefinition, info: &TableInfo) -> Value {
    let columns = columns_json(info);
    let params: BTreeMap<String, &String> = definition
        .params
        .iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    json!({
        "v": 1,
        "handle": handle.as_str(),
        "table": [definition.table.schema, definition.table.name],
        "where": definition.where_sql,
        "where_canonical": definition.where_canonical,
        "params": params,
        "columns": definition.columns,
        "replica": match definition.replica { Replica::Default => "default", Replica::Full => "full" },
        "log": match definition.log_mode { LogMode::Full => "full", LogMode::ChangesOnly => "changes_only" },
        "relation_id": info.schema.relation_id,
        "table_columns": columns,
    })
}

/// The record decoded; None (with the reason) when it is not one we wrote.
pub fn decode(payload: &[u8]) -> Result<(ShapeHandle, ShapeDefinition, TableInfo), String> {
    let v: Value = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    if v["v"] != 1 {
        return Err(format!("unknown record version {}", v["v"]));
    }
    let text = |x: &Value, what: &str| {
        x.as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("missing {what}"))
    };
    let table = TableName {
        schema: text(&v["table"][0], "schema")?,
        name: text(&v["table"][1], "table")?,
    };
    let mut params = BTreeMap::new();
    if let Some(map) = v["params"].as_object() {
        for (k, value) in map {
            let n = k.parse().map_err(|_| format!("bad param key {k}"))?;
            params.insert(n, text(value, "param")?);
        }
    }
    let columns = match &v["columns"] {
        Value::Null => None,
        Value::Array(list) => Some(
            list.iter()
                .map(|c| text(c, "column"))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        _ => return Err("bad columns".into()),
    };
    let definition = ShapeDefinition {
        table: table.clone(),
        where_sql: v["where"].as_str().map(str::to_string),
        where_canonical: v["where_canonical"].as_str().map(str::to_string),
        params,
        columns,
        replica: if v["replica"] == "full" {
            Replica::Full
        } else {
            Replica::Default
        },
        log_mode: if v["log"] == "changes_only" {
            LogMode::ChangesOnly
        } else {
            LogMode::Full
        },
    };
    let info = table_info(&v, table)?;
    Ok((ShapeHandle(text(&v["handle"], "handle")?), definition, info))
}

/// A table's columns and relation id as `columns_json` wrote them.
fn table_info(v: &Value, table: TableName) -> Result<TableInfo, String> {
    let text = |x: &Value, what: &str| {
        x.as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("missing {what}"))
    };
    let mut table_columns = Vec::new();
    let mut is_enum = Vec::new();
    for c in v["table_columns"]
        .as_array()
        .ok_or("missing table columns")?
    {
        let number = |key: &str| c[key].as_i64().ok_or_else(|| format!("missing {key}"));
        table_columns.push(ColumnInfo {
            name: text(&c["name"], "column name")?,
            type_name: text(&c["type_name"], "type name")?,
            type_oid: number("type_oid")? as u32,
            dims: number("dims")? as u32,
            type_mod: number("type_mod")? as i32,
            not_null: c["not_null"].as_bool().unwrap_or(false),
            pk_index: c["pk_index"].as_u64().map(|n| n as usize),
        });
        is_enum.push(c["is_enum"].as_bool().unwrap_or(false));
    }
    let info = TableInfo {
        schema: TableSchema {
            relation_id: v["relation_id"].as_u64().ok_or("missing relation id")? as u32,
            table,
            columns: table_columns,
        },
        is_enum,
    };
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_records_round_trip() {
        let definition = ShapeDefinition {
            table: TableName {
                schema: "public".into(),
                name: "it\"ems".into(),
            },
            where_sql: Some("id = $1".into()),
            where_canonical: Some("id = $1".into()),
            params: BTreeMap::from([(1, "7".to_string())]),
            columns: Some(vec!["id".into(), "Title".into()]),
            replica: Replica::Full,
            log_mode: LogMode::ChangesOnly,
        };
        let info = TableInfo {
            schema: TableSchema {
                relation_id: 16384,
                table: definition.table.clone(),
                columns: vec![ColumnInfo {
                    name: "id".into(),
                    type_name: "int4".into(),
                    type_oid: 23,
                    dims: 0,
                    type_mod: -1,
                    not_null: true,
                    pk_index: Some(0),
                }],
            },
            is_enum: vec![false],
        };
        let handle = ShapeHandle("12-34".into());
        let (h, d, i) = decode(&encode(&handle, &definition, &info)).unwrap();
        assert_eq!(h, handle);
        assert_eq!(d, definition);
        assert_eq!(i.schema, info.schema);
        assert_eq!(i.is_enum, info.is_enum);
        assert!(decode(b"{\"v\":2}").is_err());
        assert!(decode(b"garbage").is_err());
        // A plain shape's record keeps no subquery tables; a subquery
        // shape's keeps each (a restart rebuilds its spec from them).
        assert!(decode_tables(&encode(&handle, &definition, &info))
            .unwrap()
            .is_none());
        let members = TableName {
            schema: "public".into(),
            name: "members".into(),
        };
        let mut schema = info.schema.clone();
        schema.relation_id = 16390;
        schema.table = members.clone();
        let inner = TableInfo {
            schema,
            is_enum: vec![true],
        };
        let expected = (inner.schema.clone(), inner.is_enum.clone());
        let tables = BTreeMap::from([(members.clone(), inner)]);
        let record = encode_with_tables(&handle, &definition, &info, &tables);
        let (h, d, i) = decode(&record).unwrap();
        assert_eq!((h, d, i.schema), (handle, definition, info.schema));
        let kept = decode_tables(&record).unwrap().unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(
            (
                kept[&members].schema.clone(),
                kept[&members].is_enum.clone()
            ),
            expected
        );
    }
}
