//! `/v1/shape` query parameters → a validated request, with Electric's 400
//! bodies for what is wrong. Unknown parameters are ignored (the client sends
//! several, e.g. `cache-buster`, `expired_handle`).

use std::collections::BTreeMap;

use shards::shape::definition::{LogMode, Replica, ShapeDefinition, TableName};
use shards::shape::offset::LogOffset;

use super::reply::ShapeReply;
use super::subset::RawSubset;

/// Where a read starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartOffset {
    /// A log position (`-1` is `LogOffset::BeforeAll`).
    At(LogOffset),
    /// `now`: the current end, with no data.
    Now,
}

/// Everything an owner shard needs to answer; plain data, so it can be sent
/// to the owner over the mesh.
#[derive(Clone, Debug)]
pub struct ShapeRequest {
    pub kind: RequestKind,
    /// None only for DELETE by handle.
    pub definition: Option<ShapeDefinition>,
    pub handle: Option<String>,
    pub offset: StartOffset,
    pub live: bool,
    /// `live_sse` (or the deprecated `experimental_live_sse`): the live
    /// response is a stream of server-sent events.
    pub sse: bool,
    /// How long a live read may wait for a change, when not the configured
    /// long-poll timeout (the rounds of an SSE stream set it).
    pub wait: Option<std::time::Duration>,
    /// The `cursor` the client echoed from our last live response.
    pub cursor: Option<u64>,
    pub if_none_match: Option<String>,
    /// A subset snapshot instead of a log read.
    pub subset: Option<Box<super::subset::Subset>>,
    /// `queryable_columns`: what subsets may reference (and `columns` select).
    pub queryable: Option<Vec<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    Get,
    Delete,
    /// Internal, shard to shard: evict this shard's least recently read
    /// shape (never parsed from a client request).
    Evict,
}

impl ShapeRequest {
    /// The shard-independent key choosing the owner shard: the definition
    /// hash, or for a DELETE by handle the hash part of the handle (handles
    /// start with the same 27 bits of it).
    pub fn owner_key(&self) -> u64 {
        match (&self.definition, &self.handle) {
            (Some(definition), _) => owner_key(definition.hash()),
            (None, Some(handle)) => handle
                .split('-')
                .next()
                .and_then(|h| h.parse().ok())
                .unwrap_or(0),
            (None, None) => 0,
        }
    }
}

/// Handles keep 27 bits of the definition hash; routing uses the same bits
/// so a handle alone finds its owner.
pub fn owner_key(definition_hash: u64) -> u64 {
    definition_hash & 0x7ff_ffff
}

/// Query parameters by name, decoded; `params[n]` gathered apart.
pub struct Query {
    values: Vec<(String, String)>,
}

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let values = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Query { values }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Collects validation errors per field, in Electric's body shape.
#[derive(Default)]
struct Errors(Vec<(&'static str, String)>);

impl Errors {
    fn add(&mut self, field: &'static str, message: impl Into<String>) {
        self.0.push((field, message.into()));
    }
}

/// Validates a GET or DELETE. Electric validates in stages and stops at
/// the first stage with errors; so does this.
pub fn parse(
    kind: RequestKind,
    query: &Query,
    if_none_match: Option<&str>,
) -> Result<ShapeRequest, ShapeReply> {
    parse_with_subset(kind, query, if_none_match, RawSubset::from_query(query))
}

/// As [`parse`], with subset fields from a POST body merged over the
/// query's `subset__*` ones.
pub fn parse_with_subset(
    kind: RequestKind,
    query: &Query,
    if_none_match: Option<&str>,
    body_subset: RawSubset,
) -> Result<ShapeRequest, ShapeReply> {
    let mut errors = Errors::default();
    let mut handle = query
        .get("handle")
        .filter(|h| !h.is_empty())
        .map(str::to_string);
    let mut offset = StartOffset::At(LogOffset::BeforeAll);
    let live = query.get("live").is_some_and(|v| v != "false");
    // Electric: `live_sse` defaults to the deprecated spelling's value.
    let sse = query
        .get("live_sse")
        .or_else(|| query.get("experimental_live_sse"))
        .is_some_and(|v| v != "false");
    if kind == RequestKind::Get {
        match query.get("offset") {
            None | Some("") => errors.add("offset", "can't be blank"),
            Some("now") => offset = StartOffset::Now,
            Some(text) => match text.parse::<LogOffset>() {
                Ok(o) => offset = StartOffset::At(o),
                Err(_) => errors.add("offset", "has invalid format"),
            },
        }
        if errors.0.is_empty() {
            match offset {
                StartOffset::At(LogOffset::BeforeAll) | StartOffset::Now => {
                    // Like Electric: a handle with -1/now only busts caches.
                    handle = None;
                }
                _ if handle.is_none() => errors.add("handle", "can't be blank when offset != -1"),
                _ => {}
            }
            match offset {
                StartOffset::At(LogOffset::BeforeAll) if live => {
                    errors.add("live", "can't be true when offset == -1")
                }
                StartOffset::Now if live => {
                    errors.add("live", "can't be true when offset is 'now'")
                }
                _ => {}
            }
            if sse && !live {
                errors.add("live_sse", "can't be true unless live is also true");
            }
        }
        if !errors.0.is_empty() {
            return Err(ShapeReply::invalid(&errors.0));
        }
    }
    let subset = if kind == RequestKind::Get && body_subset.is_requested() {
        Some(Box::new(body_subset.validate()?))
    } else {
        None
    };
    let queryable = match super::subset::parse_queryable(query) {
        Ok(q) => q,
        Err(e) => return Err(ShapeReply::invalid(&[("queryable_columns", e)])),
    };
    let table = query.get("table").filter(|t| !t.is_empty());
    let definition = match (kind, table) {
        (RequestKind::Delete, None) => {
            if handle.is_none() {
                errors.add("handle", "can't be blank when shape definition is missing");
                return Err(ShapeReply::invalid(&errors.0));
            }
            None
        }
        (RequestKind::Get | RequestKind::Evict, None) => {
            errors.add("table", "can't be blank");
            return Err(ShapeReply::invalid(&errors.0));
        }
        (_, Some(table)) => Some(definition(query, table, &mut errors)),
    };
    let mut definition = definition;
    // Without `columns`, a shape syncs its queryable columns.
    if let (Some(definition), Some(queryable)) = (definition.as_mut(), &queryable) {
        match &definition.columns {
            None => definition.columns = Some(queryable.clone()),
            Some(columns) => {
                let outside: Vec<&str> = columns
                    .iter()
                    .filter(|c| !queryable.contains(c))
                    .map(String::as_str)
                    .collect();
                if !outside.is_empty() {
                    errors.add(
                        "columns",
                        format!(
                            "The following columns are not in queryable_columns: {}",
                            outside.join(", ")
                        ),
                    );
                }
            }
        }
    }
    if !errors.0.is_empty() {
        return Err(ShapeReply::invalid(&errors.0));
    }
    Ok(ShapeRequest {
        kind,
        definition,
        handle,
        offset,
        live,
        // A subset is a one-off answer, never a stream (Electric serves it
        // as JSON whatever `live_sse` says).
        sse: sse && live && subset.is_none(),
        wait: None,
        cursor: query.get("cursor").and_then(|c| c.parse().ok()),
        if_none_match: if_none_match.map(str::to_string),
        subset,
        queryable,
    })
}

fn definition(query: &Query, table: &str, errors: &mut Errors) -> ShapeDefinition {
    let table = match parse_relation(table) {
        Ok(t) => t,
        Err(e) => {
            errors.add("table", e);
            TableName {
                schema: String::new(),
                name: String::new(),
            }
        }
    };
    let replica = match query.get("replica") {
        None | Some("default") => Replica::Default,
        Some("full") => Replica::Full,
        Some(_) => {
            errors.add("replica", "is invalid");
            Replica::Default
        }
    };
    let log_mode = match query.get("log") {
        None | Some("full") => LogMode::Full,
        Some("changes_only") => LogMode::ChangesOnly,
        Some(_) => {
            errors.add("log", "is invalid");
            LogMode::Full
        }
    };
    let columns = match query.get("columns") {
        None => None,
        Some(text) => match parse_columns(text) {
            Ok(c) => Some(c),
            Err(e) => {
                errors.add("columns", e);
                None
            }
        },
    };
    let mut params = BTreeMap::new();
    for (key, value) in &query.values {
        let Some(inner) = key
            .strip_prefix("params[")
            .and_then(|k| k.strip_suffix(']'))
        else {
            continue;
        };
        match inner.parse::<usize>() {
            Ok(n) if n > 0 => {
                params.insert(n, value.clone());
            }
            _ => errors.add(
                "params",
                format!(
                    "invalid parameter name {inner:?}: parameters are params[1], params[2], ..."
                ),
            ),
        }
    }
    // `params` as a JSON object, as newer clients may send it.
    if let Some(json) = query.get("params") {
        match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(json) {
            Ok(map) => {
                for (k, v) in map {
                    let text = match v {
                        serde_json::Value::String(s) => s,
                        other => other.to_string(),
                    };
                    match k.parse::<usize>() {
                        Ok(n) if n > 0 => {
                            params.insert(n, text);
                        }
                        _ => errors.add("params", format!("invalid parameter name {k:?}")),
                    }
                }
            }
            Err(_) => errors.add("params", "params must be valid JSON"),
        }
    }
    let where_sql = query
        .get("where")
        .map(str::to_string)
        .filter(|w| !w.trim().is_empty());
    let where_canonical = where_sql
        .as_deref()
        .map(|w| shards::shape::where_clause::identity(w).unwrap_or_else(|| w.to_string()));
    ShapeDefinition {
        table,
        where_sql,
        where_canonical,
        params,
        columns,
        replica,
        log_mode,
    }
}

/// `items`, `public.items`, `"My Table"`, `"my.schema"."t"`: unquoted parts
/// are lowercased, quoted ones kept (with `""` for a quote); the schema
/// defaults to `public`.
pub fn parse_relation(text: &str) -> Result<TableName, String> {
    let parts = split_identifiers(text, '.')?;
    match parts.as_slice() {
        [name] => Ok(TableName {
            schema: "public".into(),
            name: name.clone(),
        }),
        [schema, name] => Ok(TableName {
            schema: schema.clone(),
            name: name.clone(),
        }),
        _ => Err(format!(
            "Invalid relation {text:?}: expected a table name, optionally schema-qualified"
        )),
    }
}

/// `id,"Status-Check",name`
pub fn parse_columns(text: &str) -> Result<Vec<String>, String> {
    split_identifiers(text, ',')
}

fn split_identifiers(text: &str, separator: char) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        // Leading spaces around separators are not part of names.
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => {
                        return Err(format!(
                            "Invalid unterminated quoted identifier in {text:?}"
                        ))
                    }
                }
            }
            while chars.peek() == Some(&' ') {
                chars.next();
            }
            match chars.peek() {
                None => {}
                Some(&c) if c == separator => {}
                Some(_) => return Err(format!("Invalid identifier in {text:?}")),
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == separator {
                    break;
                }
                if c == '"' {
                    return Err(format!("Invalid identifier in {text:?}"));
                }
                part.push(c.to_ascii_lowercase());
                chars.next();
            }
            let trimmed = part.trim_end().to_string();
            part = trimmed;
        }
        if part.is_empty() {
            return Err("Invalid zero-length identifier".into());
        }
        parts.push(part);
        match chars.next() {
            None => return Ok(parts),
            Some(_) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relations_and_columns_parse_like_postgres_identifiers() {
        let t = parse_relation("Items").unwrap();
        assert_eq!((t.schema.as_str(), t.name.as_str()), ("public", "items"));
        let t = parse_relation("\"My.Schema\".\"Ta\"\"ble\"").unwrap();
        assert_eq!(
            (t.schema.as_str(), t.name.as_str()),
            ("My.Schema", "Ta\"ble")
        );
        assert!(parse_relation("a.b.c").is_err());
        assert!(parse_relation("\"open").is_err());
        assert!(parse_relation("a.").is_err());
        assert_eq!(
            parse_columns("id, \"Status-Check\",Name").unwrap(),
            ["id", "Status-Check", "name"]
        );
        assert!(parse_columns("id,,x").is_err());
    }

    #[test]
    fn validation_follows_electrics_stages() {
        let bad = |q: &str| {
            let reply = parse(RequestKind::Get, &Query::parse(Some(q)), None).unwrap_err();
            assert_eq!(reply.status, 400, "{q}");
            String::from_utf8(reply.body.to_vec()).unwrap()
        };
        assert_eq!(
            bad("table=items"),
            r#"{"message":"Invalid request","errors":{"offset":["can't be blank"]}}"#
        );
        assert_eq!(
            bad("table=items&offset=x"),
            r#"{"message":"Invalid request","errors":{"offset":["has invalid format"]}}"#
        );
        assert_eq!(
            bad("table=items&offset=1_2"),
            r#"{"message":"Invalid request","errors":{"handle":["can't be blank when offset != -1"]}}"#
        );
        assert_eq!(
            bad("table=items&offset=-1&live=true"),
            r#"{"message":"Invalid request","errors":{"live":["can't be true when offset == -1"]}}"#
        );
        assert_eq!(
            bad("offset=-1"),
            r#"{"message":"Invalid request","errors":{"table":["can't be blank"]}}"#
        );
        let ok = parse(
            RequestKind::Get,
            &Query::parse(Some(
                "table=items&offset=-1&handle=h&live=false&params[1]=a&cache-buster=1",
            )),
            None,
        )
        .unwrap();
        assert_eq!(ok.handle, None, "handle is dropped with offset=-1");
        assert!(!ok.live);
        assert_eq!(ok.definition.unwrap().params[&1], "a");
        let live = parse(
            RequestKind::Get,
            &Query::parse(Some("table=t&offset=0_inf&handle=h&live=0")),
            None,
        )
        .unwrap();
        assert!(live.live, "anything but false is true");
    }
}
