//! Subset snapshots: `subset__*` query parameters or a `POST /v1/shape`
//! JSON body ask for a one-off, consistent snapshot of part of a shape
//! (its where AND the subset's, ordered, limited), answered beside the
//! shape's log rather than from it. Validation here is what needs no
//! catalog; column checks happen on the owner shard.

use std::collections::BTreeMap;

use serde_json::Value;

use super::reply::ShapeReply;
use super::request::{parse_columns, Query};

/// Largest `POST /v1/shape` body accepted (Electric's: Plug's default read
/// length); past it the request is a 413.
pub const MAX_BODY_BYTES: usize = 8_000_000;

/// A validated subset request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subset {
    pub where_sql: Option<String>,
    /// `$n` values, 1-based.
    pub params: BTreeMap<usize, String>,
    pub order_by: Option<Vec<OrderTerm>>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderTerm {
    pub column: String,
    /// Where the column is named, as Electric counts it (in
    /// `SELECT 1 ORDER BY <order_by>`).
    pub location: usize,
    pub descending: bool,
    /// `Some(true)`: NULLS FIRST; `Some(false)`: NULLS LAST.
    pub nulls_first: Option<bool>,
}

/// The subset's fields before validation, from the query string and the
/// body (body values win), as JSON values.
#[derive(Default)]
pub struct RawSubset {
    fields: BTreeMap<&'static str, Value>,
}

const FIELDS: [&str; 7] = [
    "where",
    "params",
    "limit",
    "offset",
    "order_by",
    "where_expr",
    "order_by_expr",
];

impl RawSubset {
    /// `subset__<field>` query parameters.
    pub fn from_query(query: &Query) -> RawSubset {
        let mut raw = RawSubset::default();
        for field in FIELDS {
            if let Some(value) = query.get(&format!("subset__{field}")) {
                raw.fields.insert(field, Value::String(value.to_string()));
            }
        }
        raw
    }

    /// Merges a POST body over the query's subset: `{"subset": {...}}`, or
    /// the subset fields at the top level (as Electric reads either).
    pub fn merge_body(&mut self, body: &[u8]) -> Result<(), ShapeReply> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            ShapeReply::error(
                400,
                format!(
                    r#"{{"error":"Invalid JSON in request body","details":{}}}"#,
                    Value::from(e.to_string())
                ),
            )
        })?;
        let Value::Object(mut object) = value else {
            return Err(ShapeReply::error(
                400,
                r#"{"error":"Request body must be a JSON object"}"#,
            ));
        };
        let source = match object.remove("subset") {
            Some(Value::Object(subset)) => subset,
            _ => object,
        };
        for field in FIELDS {
            if let Some(value) = source.get(field) {
                self.fields.insert(field, value.clone());
            }
        }
        Ok(())
    }

    /// Any subset field makes the request a subset snapshot.
    pub fn is_requested(&self) -> bool {
        self.fields.keys().any(|f| !f.ends_with("_expr"))
    }

    /// Validates the fields; errors are Electric's nested
    /// `{"subset": {"<field>": [...]}}` 400s. `where_expr` and
    /// `order_by_expr` (the client's structured forms, sent beside the SQL
    /// ones) are ignored, as Electric ignores them.
    pub fn validate(&self) -> Result<Subset, ShapeReply> {
        let mut subset = Subset::default();
        let invalid = |field: &str, message: &str| ShapeReply::invalid_subset(field, message);
        match self.fields.get("where") {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) if text.trim().is_empty() => {}
            Some(Value::String(text)) => subset.where_sql = Some(text.clone()),
            Some(_) => return Err(invalid("where", "is invalid")),
        }
        subset.limit = match self.fields.get("limit") {
            None | Some(Value::Null) => None,
            Some(value) => match integer(value) {
                Some(n) if n > 0 => Some(n as u64),
                Some(_) => return Err(invalid("limit", "must be greater than 0")),
                None => return Err(invalid("limit", "is invalid")),
            },
        };
        subset.offset = match self.fields.get("offset") {
            None | Some(Value::Null) => None,
            Some(value) => match integer(value) {
                Some(n) if n >= 0 => Some(n as u64),
                Some(_) => return Err(invalid("offset", "must be greater than or equal to 0")),
                None => return Err(invalid("offset", "is invalid")),
            },
        };
        subset.order_by = match self.fields.get("order_by") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) if text.trim().is_empty() => None,
            Some(Value::String(text)) => {
                Some(parse_order_by(text).map_err(|e| invalid("order_by", &e))?)
            }
            Some(_) => return Err(invalid("order_by", "is invalid")),
        };
        if (subset.limit.is_some() || subset.offset.is_some()) && subset.order_by.is_none() {
            return Err(invalid(
                "order_by",
                "order_by is required when limit or offset is present",
            ));
        }
        if let Some(params) = self.fields.get("params") {
            subset.params = parse_params(params).map_err(|e| invalid("params", &e))?;
        }
        Ok(subset)
    }
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `{"1": "a", "2": 5}` (a JSON object, or a string holding one); values
/// become text, as Electric stringifies them.
fn parse_params(value: &Value) -> Result<BTreeMap<usize, String>, String> {
    let parsed;
    let object = match value {
        Value::Null => return Ok(BTreeMap::new()),
        Value::String(text) => {
            parsed = serde_json::from_str::<Value>(text)
                .map_err(|_| "params must be valid JSON".to_string())?;
            match &parsed {
                Value::Object(object) => object,
                _ => return Err("params must be a JSON object".into()),
            }
        }
        Value::Object(object) => object,
        _ => return Err("params must be a JSON object".into()),
    };
    let mut params = BTreeMap::new();
    for (key, value) in object {
        let n = match key.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => return Err("Parameters can only use numbers as keys".into()),
        };
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Null => return Err(format!("parameter ${n} must not be null")),
            other => other.to_string(),
        };
        params.insert(n, text);
    }
    if params.keys().copied().ne(1..=params.len()) {
        return Err("Parameters must be numbered sequentially, starting from 1".into());
    }
    Ok(params)
}

/// Electric checks `SELECT 1 ORDER BY <order_by>` and reports positions in
/// that statement.
const ORDER_BY_PREFIX_CHARS: usize = "SELECT 1 ORDER BY ".len();

/// `col [ASC|DESC] [NULLS FIRST|LAST], ...` with plain or quoted column
/// names: what the client's `orderBy` compiles to. Expressions are refused
/// (they would be user SQL in our query).
pub fn parse_order_by(text: &str) -> Result<Vec<OrderTerm>, String> {
    let tokens = tokenize(text)?;
    let mut terms = Vec::new();
    let mut i = 0;
    let at = |i: usize| -> String {
        match tokens.get(i) {
            Some(t) => format!(
                "At location {}: syntax error at or near \"{}\"",
                ORDER_BY_PREFIX_CHARS + text[..t.start].chars().count(),
                t.text
            ),
            None => format!(
                "At location {}: syntax error at end of input",
                ORDER_BY_PREFIX_CHARS + text.chars().count()
            ),
        }
    };
    loop {
        let Some((column, start)) = tokens
            .get(i)
            .and_then(|t| t.identifier.clone().map(|name| (name, t.start)))
        else {
            return Err(at(i));
        };
        i += 1;
        let mut term = OrderTerm {
            column,
            location: ORDER_BY_PREFIX_CHARS + text[..start].chars().count(),
            descending: false,
            nulls_first: None,
        };
        match tokens.get(i).map(|t| t.keyword()) {
            Some(Some("asc")) => i += 1,
            Some(Some("desc")) => {
                term.descending = true;
                i += 1;
            }
            _ => {}
        }
        if tokens.get(i).and_then(|t| t.keyword()) == Some("nulls") {
            term.nulls_first = match tokens.get(i + 1).and_then(|t| t.keyword()) {
                Some("first") => Some(true),
                Some("last") => Some(false),
                _ => return Err(at(i + 1)),
            };
            i += 2;
        }
        terms.push(term);
        match tokens.get(i) {
            None => return Ok(terms),
            Some(t) if t.text == "," => i += 1,
            Some(t) if t.text == ";" => {
                return Err("Unexpected `;` in order by".into());
            }
            Some(_) => return Err(at(i)),
        }
    }
}

struct Token<'a> {
    start: usize,
    text: &'a str,
    /// The name, for an identifier (unquoted ones lowercased).
    identifier: Option<String>,
    quoted: bool,
}

impl Token<'_> {
    fn keyword(&self) -> Option<&'static str> {
        if self.quoted {
            return None;
        }
        ["asc", "desc", "nulls", "first", "last"]
            .into_iter()
            .find(|k| self.text.eq_ignore_ascii_case(k))
    }
}

fn tokenize(text: &str) -> Result<Vec<Token<'_>>, String> {
    let mut tokens = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c == b'"' {
            let mut name = String::new();
            i += 1;
            loop {
                match text[i..].chars().next() {
                    None => {
                        return Err(format!(
                            "At location {}: unterminated quoted identifier at or near \"{}\"",
                            ORDER_BY_PREFIX_CHARS + text[..start].chars().count(),
                            &text[start..]
                        ))
                    }
                    Some('"') if bytes.get(i + 1) == Some(&b'"') => {
                        name.push('"');
                        i += 2;
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        name.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            if name.is_empty() {
                return Err(format!(
                    "At location {}: zero-length delimited identifier at or near \"\"\"\"",
                    ORDER_BY_PREFIX_CHARS + text[..start].chars().count()
                ));
            }
            tokens.push(Token {
                start,
                text: &text[start..i],
                identifier: Some(name),
                quoted: true,
            });
        } else if c.is_ascii_alphabetic()
            || c == b'_'
            // A non-ASCII letter starts an identifier; any other character
            // is a token of its own (it must be consumed: fuzzing found a
            // `�` here looping forever, a remote denial of service).
            || (c >= 0x80 && text[i..].chars().next().is_some_and(char::is_alphabetic))
        {
            while i < bytes.len() {
                let ch = text[i..].chars().next().expect("in bounds");
                if ch.is_alphanumeric() || ch == '_' || ch == '$' {
                    i += ch.len_utf8();
                } else {
                    break;
                }
            }
            let word = &text[start..i];
            tokens.push(Token {
                start,
                text: word,
                identifier: Some(word.to_lowercase()),
                quoted: false,
            });
        } else {
            let ch = text[i..].chars().next().expect("in bounds");
            i += ch.len_utf8();
            tokens.push(Token {
                start,
                text: &text[start..i],
                identifier: None,
                quoted: false,
            });
        }
    }
    // Keywords are not column names.
    for token in &mut tokens {
        if token.keyword().is_some() {
            token.identifier = None;
        }
    }
    Ok(tokens)
}

/// `queryable_columns`: the columns subset snapshots may filter and sort
/// on (and `columns` may select; the synced columns when `columns` is
/// absent).
pub fn parse_queryable(query: &Query) -> Result<Option<Vec<String>>, String> {
    match query.get("queryable_columns") {
        None => Ok(None),
        Some(text) => parse_columns(text).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&'static str, Value)]) -> RawSubset {
        RawSubset {
            fields: pairs.iter().cloned().collect(),
        }
    }

    fn error(raw: RawSubset) -> String {
        String::from_utf8(raw.validate().unwrap_err().body.to_vec()).unwrap()
    }

    #[test]
    fn order_by_with_a_non_letter_outside_ascii_is_an_error_not_a_hang() {
        for text in ["id des\u{FFFD}", "\u{FFFD}", "id, \u{2028}", "é asc"] {
            let result = parse_order_by(text);
            if text == "é asc" {
                assert!(result.is_ok(), "{text:?}: {result:?}");
            } else {
                assert!(result.is_err(), "{text:?}");
            }
        }
    }

    #[test]
    fn order_by_accepts_what_the_client_compiles() {
        let terms =
            parse_order_by(r#""created_at" DESC NULLS FIRST, id, Title asc nulls last"#).unwrap();
        assert_eq!(
            terms,
            vec![
                OrderTerm {
                    column: "created_at".into(),
                    location: 18,
                    descending: true,
                    nulls_first: Some(true)
                },
                OrderTerm {
                    column: "id".into(),
                    location: 49,
                    descending: false,
                    nulls_first: None
                },
                OrderTerm {
                    column: "title".into(),
                    location: 53,
                    descending: false,
                    nulls_first: Some(false)
                },
            ]
        );
        assert_eq!(
            parse_order_by("id; DROP TABLE x").unwrap_err(),
            "Unexpected `;` in order by"
        );
        assert_eq!(
            parse_order_by("lower(title)").unwrap_err(),
            "At location 23: syntax error at or near \"(\""
        );
        assert_eq!(
            parse_order_by("id desc nulls").unwrap_err(),
            "At location 31: syntax error at end of input"
        );
    }

    #[test]
    fn subset_fields_validate_like_electric() {
        let s = Value::String;
        assert_eq!(
            error(raw(&[("limit", s("10".into()))])),
            r#"{"message":"Invalid request","errors":{"subset":{"order_by":["order_by is required when limit or offset is present"]}}}"#
        );
        assert_eq!(
            error(raw(&[
                ("limit", Value::from(0)),
                ("order_by", s("id".into()))
            ])),
            r#"{"message":"Invalid request","errors":{"subset":{"limit":["must be greater than 0"]}}}"#
        );
        assert_eq!(
            error(raw(&[
                ("offset", Value::from(-1)),
                ("order_by", s("id".into()))
            ])),
            r#"{"message":"Invalid request","errors":{"subset":{"offset":["must be greater than or equal to 0"]}}}"#
        );
        assert_eq!(
            error(raw(&[("params", s("{1:".into()))])),
            r#"{"message":"Invalid request","errors":{"subset":{"params":["params must be valid JSON"]}}}"#
        );
        assert_eq!(
            error(raw(&[("params", serde_json::json!({"2": "x"}))])),
            r#"{"message":"Invalid request","errors":{"subset":{"params":["Parameters must be numbered sequentially, starting from 1"]}}}"#
        );
        let ok = raw(&[
            ("where", s("id > $1".into())),
            ("params", s(r#"{"1": 5}"#.into())),
            ("limit", s("3".into())),
            ("order_by", s("id".into())),
            ("where_expr", s("{}".into())),
        ])
        .validate()
        .unwrap();
        assert_eq!(ok.params[&1], "5");
        assert_eq!(ok.limit, Some(3));
        assert!(!raw(&[("where_expr", s("{}".into()))]).is_requested());
    }

    #[test]
    fn post_bodies_merge_over_the_query() {
        let mut subset = raw(&[("where", Value::String("a = 1".into()))]);
        subset
            .merge_body(br#"{"subset": {"where": "b = 2", "limit": 5, "order_by": "b"}}"#)
            .unwrap();
        let valid = subset.validate().unwrap();
        assert_eq!(valid.where_sql.as_deref(), Some("b = 2"));
        assert_eq!(valid.limit, Some(5));
        let mut top = RawSubset::default();
        top.merge_body(br#"{"where": "c = 3", "params": {"1": 9007199254740993}}"#)
            .unwrap();
        assert_eq!(
            top.validate().unwrap().params[&1],
            "9007199254740993",
            "big integers keep every digit"
        );
        let mut bad = RawSubset::default();
        assert_eq!(
            String::from_utf8(bad.merge_body(b"[1]").unwrap_err().body.to_vec()).unwrap(),
            r#"{"error":"Request body must be a JSON object"}"#
        );
        assert!(bad.merge_body(b"{nope").is_err());
        assert!(bad.merge_body(b"  ").is_ok());
    }
}
