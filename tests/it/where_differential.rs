//! Differential test of the where-clause engine against Postgres.
//!
//! A shape's snapshot is filtered by Postgres running the clause as our
//! renderer writes it (`WhereClause::to_sql`, `$n::type` parameters bound
//! as text), while live changes are filtered by our evaluator on the text
//! values pgoutput sends. Any disagreement silently corrupts a shape. So:
//! a table with a column of every type the engine knows, generated rows
//! full of edge values (NULLs, NaN, ±Infinity, -0, extreme dates, long
//! numerics, arrays with NULL elements, bytes/collation-sensitive and
//! non-ASCII text), and generated clauses from the supported grammar; for
//! every (clause, row): our engine on the row's text (fetched with the
//! simple protocol, i.e. the output functions, under the server's display
//! settings) versus Postgres running the rendered SQL, and versus Postgres
//! running the user's original text (where Postgres accepts it and the
//! clause does not depend on case folding, which we define as Postgres'
//! `C` collation does whatever the database's default).
//!
//! Knobs: WHERE_DIFF_SEED (default fixed, so CI is reproducible; any
//! failure prints the seed that replays it), WHERE_DIFF_CASES (clauses,
//! each evaluated on every row), WHERE_DIFF_ROWS.
//!
//! A row on which Postgres raises an error (overflow, bad cast) would make
//! the whole snapshot fail; the engine's convention is "no match", so only
//! a `true` from us there is a disagreement.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use postgres::types::Type;
use postgres::SimpleQueryMessage;
use shards::shape::where_clause::{WhereClause, WhereColumn};

use crate::harness::database;
use crate::rng::Rng;

fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| {
            let v = v.trim();
            match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => v.parse().ok(),
            }
        })
        .unwrap_or(default)
}

/// What the generator knows a column or expression to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum K {
    Int,
    Num,
    Float,
    Text,
    Bool,
    Uuid,
    Date,
    Time,
    Ts,
    Tstz,
    Iv,
    Json,
    Bytea,
    Enum,
    Arr(E),
}

/// Array element kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum E {
    Int,
    Num,
    Float,
    Text,
    Bool,
    Date,
    Tstz,
    Uuid,
    Iv,
}

impl E {
    fn scalar(self) -> K {
        match self {
            E::Int => K::Int,
            E::Num => K::Num,
            E::Float => K::Float,
            E::Text => K::Text,
            E::Bool => K::Bool,
            E::Date => K::Date,
            E::Tstz => K::Tstz,
            E::Uuid => K::Uuid,
            E::Iv => K::Iv,
        }
    }
}

struct Col {
    name: &'static str,
    /// As written in CREATE TABLE.
    sql_type: &'static str,
    /// `pg_type.typname` of the column or its element.
    type_name: &'static str,
    dims: u32,
    is_enum: bool,
    kind: K,
    /// Values as SQL literal text (quoted by the insert).
    pool: &'static [&'static str],
}

const INT2: &[&str] = &["0", "1", "-1", "7", "100", "32767", "-32768", "2", "5"];
const INT4: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "5",
    "42",
    "2147483647",
    "-2147483648",
    "1000000",
];
const INT8: &[&str] = &[
    "0",
    "1",
    "-3",
    "5000000000",
    "9223372036854775807",
    "-9223372036854775808",
    "4611686018427387904",
    "2",
];
const NUMERIC: &[&str] = &[
    "0",
    "1",
    "-1",
    "1.5",
    "1.50",
    "-0.0",
    "0.1",
    "0.2",
    "0.3",
    "2",
    "2.5",
    "-2.5",
    "10",
    "3.14159265358979323846264338327950288419716939937510",
    "NaN",
    "Infinity",
    "-Infinity",
    "123456789012345678901234567890.123456789",
    "99999999999999999999999999999999999999",
    "1.00000000000000000000000000000001",
    "0.000000000000000000000000000000000001",
    "1e100",
    "-1e-40",
    "12345678901234567890",
    "9223372036854775807.5",
    "0.49999999999999999999999999999999",
    "100000000000000000000000000000000000000000000000000000000000000000000000000001",
];
const FLOAT4: &[&str] = &[
    "0",
    "-0",
    "1.5",
    "0.1",
    "NaN",
    "Infinity",
    "-Infinity",
    "3.4028235e38",
    "1e-45",
    "-1",
    "16777217",
    "100000",
    "2.5",
    "1e10",
];
const FLOAT8: &[&str] = &[
    "0",
    "-0",
    "0.1",
    "0.30000000000000004",
    "1e308",
    "-1e308",
    "NaN",
    "Infinity",
    "-Infinity",
    "5e-324",
    "1.5",
    "2",
    "-2.5",
    "123456789012345680",
    "1e15",
    "1e16",
    "0.0001",
    "2.5e-5",
    "9.5",
];
const BOOL: &[&str] = &["t", "f"];
const TEXT: &[&str] = &[
    "",
    "a",
    "A",
    "b",
    "abc",
    "ABC",
    "Abc",
    "é",
    "É",
    "e",
    "z",
    "Z",
    "ß",
    "straße",
    "STRASSE",
    "İ",
    "ı",
    "ǅ",
    "Σσς",
    "ﬀ",
    "日本",
    "😀",
    "a%b",
    "a_b",
    "a\\b",
    " a",
    "a ",
    "NULL",
    "null",
    "x y",
    "1",
    "10",
    "2",
    "true",
    "2024-01-01",
    "1.5",
    "P1D",
    "{1,2}",
    "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "ab",
    "abcd",
    "\u{7f}",
    "\u{1}",
];
const BPCHAR: &[&str] = &["a", "ab", "abcd", "", "A", "é", "a b", " a"];
const NAME: &[&str] = &[
    "abc",
    "",
    "é",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "Z",
    "ééééééééééééééééééééééééééééééééééééééééé",
];
const UUID: &[&str] = &[
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "80000000-0000-0000-0000-000000000000",
    "7fffffff-ffff-ffff-ffff-ffffffffffff",
];
const DATE: &[&str] = &[
    "2024-01-01",
    "2024-02-29",
    "1970-01-01",
    "0001-01-01",
    "0001-12-31 BC",
    "4713-11-24 BC",
    "5874897-12-31",
    "294276-12-31",
    "294277-01-01",
    "infinity",
    "-infinity",
    "2000-03-01",
    "1999-12-31",
    "2024-01-31",
];
const TIME: &[&str] = &[
    "00:00",
    "23:59:59.999999",
    "24:00:00",
    "12:34:56.5",
    "10:00",
    "00:00:00.000001",
];
const TIMESTAMP: &[&str] = &[
    "2024-01-01 00:00",
    "2024-02-29 12:00:00.123456",
    "infinity",
    "-infinity",
    "4713-11-24 00:00:00 BC",
    "294276-12-31 23:59:59.999999",
    "1970-01-01",
    "2000-01-01 10:00",
    "2024-01-31 23:00",
    "0001-01-01 00:00 BC",
];
const TIMESTAMPTZ: &[&str] = &[
    "2024-01-01 00:00+00",
    "2024-01-01 00:00+02",
    "2024-02-29 12:00:00.123456-05:30",
    "infinity",
    "-infinity",
    "4713-11-24 00:00:00+00 BC",
    "294276-12-31 23:59:59.999999+00",
    "1970-01-01 00:00:00+00",
    "2024-01-31 23:00:00+00",
];
const INTERVAL: &[&str] = &[
    "0",
    "1 day",
    "24 hours",
    "1 mon",
    "30 days",
    "-1 day",
    "1 year 2 mons",
    "P1DT2H",
    "1.5 days",
    "-00:00:01",
    "1 mon -1 day",
    "00:00:00.000001",
    "178000000 years",
    "-178000000 years",
    "2147483647 days",
    "-2147483648 days",
    "1 day -24 hours",
    "25 hours",
    "35 days",
];
const JSON: &[&str] = &[
    "{\"a\": 1}",
    "[1, 2]",
    "null",
    "\"x\"",
    "{}",
    "{\"b\":2,\"a\":1}",
];
const BYTEA: &[&str] = &["\\x", "\\xdeadbeef", "abc", "\\x00"];
const MOOD: &[&str] = &["sad", "ok", "happy"];
const INT4_ARRAY: &[&str] = &[
    "{}",
    "{1,2,3}",
    "{1,NULL}",
    "{NULL}",
    "{{1,2},{3,4}}",
    "[0:1]={5,6}",
    "{2147483647}",
    "{-1}",
    "{2,1}",
    "{1}",
];
const INT8_ARRAY: &[&str] = &["{}", "{1,5000000000}", "{NULL,2}", "{{1},{2}}"];
const TEXT_ARRAY: &[&str] = &[
    "{}",
    "{a,b}",
    "{\"a b\",NULL}",
    "{A,é}",
    "{\"\"}",
    "{\"NULL\"}",
    "{a,a}",
    "{b}",
    "{\"x,y\",\"q\\\"r\"}",
    "{{a,b},{c,d}}",
];
const NUMERIC_ARRAY: &[&str] = &["{1.5,NaN}", "{1,1.0}", "{}", "{Infinity,-1}", "{0.1,NULL}"];
const FLOAT8_ARRAY: &[&str] = &["{0,-0}", "{NaN,1.5}", "{Infinity}", "{}", "{0.1}"];
const BOOL_ARRAY: &[&str] = &["{t,f,NULL}", "{t}", "{}", "{f,f}"];
const DATE_ARRAY: &[&str] = &["{2024-01-01,infinity}", "{}", "{1970-01-01,NULL}"];
const TIMESTAMPTZ_ARRAY: &[&str] = &[
    "{\"2024-01-01 00:00+00\"}",
    "{\"2024-01-01 02:00+02\",infinity}",
    "{}",
];
const UUID_ARRAY: &[&str] = &[
    "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
    "{}",
    "{00000000-0000-0000-0000-000000000000,NULL}",
];
const INTERVAL_ARRAY: &[&str] = &["{\"1 day\",\"24 hours\"}", "{}", "{\"1 mon\"}", "{P30D}"];

const ID_COLUMN: Col = Col {
    name: "id",
    sql_type: "int4 PRIMARY KEY",
    type_name: "int4",
    dims: 0,
    is_enum: false,
    kind: K::Int,
    pool: &[],
};

const fn col(
    name: &'static str,
    sql_type: &'static str,
    type_name: &'static str,
    kind: K,
    pool: &'static [&'static str],
) -> Col {
    Col {
        name,
        sql_type,
        type_name,
        dims: 0,
        is_enum: false,
        kind,
        pool,
    }
}

const fn arr(
    name: &'static str,
    sql_type: &'static str,
    type_name: &'static str,
    e: E,
    pool: &'static [&'static str],
) -> Col {
    Col {
        name,
        sql_type,
        type_name,
        dims: 1,
        is_enum: false,
        kind: K::Arr(e),
        pool,
    }
}

fn table_columns(icu: bool) -> Vec<Col> {
    let mut cols = vec![
        ID_COLUMN,
        col("i2", "int2", "int2", K::Int, INT2),
        col("i4", "int4", "int4", K::Int, INT4),
        col("i8", "int8", "int8", K::Int, INT8),
        col("num", "numeric", "numeric", K::Num, NUMERIC),
        col("num2", "numeric", "numeric", K::Num, NUMERIC),
        col("f4", "float4", "float4", K::Float, FLOAT4),
        col("f8", "float8", "float8", K::Float, FLOAT8),
        col("b", "bool", "bool", K::Bool, BOOL),
        col("t", "text", "text", K::Text, TEXT),
        col("t2", "text", "text", K::Text, TEXT),
        col("vc", "varchar", "varchar", K::Text, TEXT),
        col("bp", "char(4)", "bpchar", K::Text, BPCHAR),
        col("nm", "name", "name", K::Text, NAME),
        col("u", "uuid", "uuid", K::Uuid, UUID),
        col("d", "date", "date", K::Date, DATE),
        col("tm", "time", "time", K::Time, TIME),
        col("ts", "timestamp", "timestamp", K::Ts, TIMESTAMP),
        col("tz", "timestamptz", "timestamptz", K::Tstz, TIMESTAMPTZ),
        col("iv", "interval", "interval", K::Iv, INTERVAL),
        col("j", "json", "json", K::Json, JSON),
        col("jb", "jsonb", "jsonb", K::Json, JSON),
        col("by", "bytea", "bytea", K::Bytea, BYTEA),
        Col {
            is_enum: true,
            ..col("e", "mood", "mood", K::Enum, MOOD)
        },
        arr("ai", "int4[]", "int4", E::Int, INT4_ARRAY),
        arr("a8", "int8[]", "int8", E::Int, INT8_ARRAY),
        arr("at", "text[]", "text", E::Text, TEXT_ARRAY),
        arr("an", "numeric[]", "numeric", E::Num, NUMERIC_ARRAY),
        arr("af", "float8[]", "float8", E::Float, FLOAT8_ARRAY),
        arr("ab", "bool[]", "bool", E::Bool, BOOL_ARRAY),
        arr("ad", "date[]", "date", E::Date, DATE_ARRAY),
        arr(
            "atz",
            "timestamptz[]",
            "timestamptz",
            E::Tstz,
            TIMESTAMPTZ_ARRAY,
        ),
        arr("au", "uuid[]", "uuid", E::Uuid, UUID_ARRAY),
        arr("aiv", "interval[]", "interval", E::Iv, INTERVAL_ARRAY),
    ];
    if icu {
        // A column whose collation orders text unlike bytes: rendered SQL
        // must not depend on it.
        cols.push(col(
            "tc",
            "text COLLATE \"und-x-icu\"",
            "text",
            K::Text,
            TEXT,
        ));
    }
    cols
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Literals a clause may use, by kind, as SQL.
fn literals(k: K) -> &'static [&'static str] {
    match k {
        K::Int => &[
            "0",
            "1",
            "-1",
            "2",
            "5",
            "7",
            "42",
            "32767",
            "-32768",
            "2147483647",
            "-2147483648",
            "2147483648",
            "9223372036854775807",
            "'7'",
            "' 12 '",
            "int8 '9'",
            "32767::int2",
            "1.0",
            "3::int8",
            "'-0'",
        ],
        K::Num => &[
            "1.5",
            "0.1",
            "0.3",
            "2.50",
            "-0.0",
            "0",
            "'NaN'::numeric",
            "'Infinity'::numeric",
            "'-Infinity'::numeric",
            "123456789012345678901234567890.5",
            "99999999999999999999999999999999999999",
            "1e30",
            "1.5e-3",
            "numeric '2.50'",
            "3.14159265358979323846264338327950288419716939937510",
            "1e-40",
            "0.000000000000000000000000000001",
            "'1e100'::numeric",
            "2.5",
            "-2.5",
            "12345678901234567890",
            "0.49999999999999999999999999999999",
            "1.00000000000000000000000000000001",
            "10",
        ],
        K::Float => &[
            "'NaN'::float8",
            "'-0'::float8",
            "0.1::float4",
            "'Infinity'::float8",
            "1e308::float8",
            "'1.5'::real",
            "double precision '2'",
            "'-Infinity'::float4",
            "0.1::float8",
            "'0'::float8",
            "'5e-324'::float8",
            "'3.4028235e38'::float4",
            "'16777217'::float4",
            "1e15::float8",
            "9.5::float8",
        ],
        K::Text => &[
            "'a'",
            "'A'",
            "'é'",
            "''",
            "'ab'",
            "'abc'",
            "'ABC'",
            "'ß'",
            "'STRASSE'",
            "'straße'",
            "'z'",
            "'日本'",
            "'😀'",
            "'İ'",
            "'i'",
            "'ǅ'",
            "'σ'",
            "'NULL'",
            "'a '",
            "' a'",
            "'1'",
            "'10'",
            "'true'",
            "'2024-01-01'",
            "'x y'",
            "'a\\b'",
            "E'a\\\\b'",
            "'ab  '",
        ],
        K::Bool => &["true", "false", "'t'", "'yes'", "'off'", "NULL"],
        K::Uuid => &[
            "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
            "'{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}'",
            "uuid '00000000-0000-0000-0000-000000000000'",
            "'80000000-0000-0000-0000-000000000000'",
            "'a0eebc999c0b4ef8bb6d6bb9bd380a11'",
        ],
        K::Date => &[
            "'2024-01-01'",
            "date '2024-02-29'",
            "'infinity'",
            "'-infinity'",
            "'0001-01-01 BC'",
            "'epoch'",
            "'2024-01-01 10:00'",
            "'1970-01-01'",
            "'5874897-12-31'",
            "'4713-11-24 BC'",
            "'2024-1-2'",
        ],
        K::Time => &[
            "'10:00'",
            "'24:00'",
            "time '23:59:59.9999995'",
            "'00:00:00.5'",
            "'12:34:56.5'",
            "'00:00'",
            "'10:00:00.0000005'",
            "'1:2:3'",
        ],
        K::Ts => &[
            "'2024-01-01 00:00'",
            "timestamp '2024-02-29 12:00:00.1234565'",
            "'infinity'",
            "'-infinity'",
            "'2024-01-01T10:00:00Z'",
            "'2000-01-01 10:00'",
            "'1970-01-01'",
            "'294276-12-31 23:59:59.999999'",
            "'4713-11-24 00:00 BC'",
            "'2024-02-29 12:00:00.123456'",
        ],
        K::Tstz => &[
            "'2024-01-01 00:00+02'",
            "'2024-01-01 10:00:00-05:30'",
            "'infinity'",
            "'-infinity'",
            "'2024-06-01'",
            "timestamptz '2024-01-01 00:00:00Z'",
            "'2023-12-31 22:00:00+00'",
            "'1970-01-01 00:00 UTC'",
            "'2024-01-01 00:00:00+14'",
        ],
        K::Iv => &[
            "'1 day'",
            "interval '1 mon'",
            "'P1Y'",
            "'-1 day 02:00'",
            "'1.5 hours'",
            "'30 days'",
            "'1 year -1 day'",
            "'@ 1 minute ago'",
            "'0'",
            "'24 hours'",
            "'PT0.0000005S'",
            "'1.5 months'",
            "'-178000000 years'",
            "'2147483647 days'",
        ],
        K::Json | K::Bytea | K::Enum => &["NULL"],
        K::Arr(E::Int) => &[
            "'{1,2}'",
            "ARRAY[1,2]",
            "'{}'",
            "'{NULL}'",
            "'{{1,2},{3,4}}'",
            "ARRAY[2147483647]",
            "'{1}'",
            "ARRAY[[1,2],[3,4]]",
            "'[0:1]={5,6}'",
            "'{1,NULL,3}'",
            "ARRAY[1, NULL]",
        ],
        K::Arr(E::Text) => &[
            "'{a,b}'",
            "ARRAY['a','b']",
            "'{}'",
            "'{\"a b\",NULL}'",
            "ARRAY['é']",
            "'{A}'",
            "'{\"NULL\"}'",
            "'{NULL}'",
            "'{\"\"}'",
            "ARRAY['b', 'a']",
        ],
        K::Arr(E::Num) => &[
            "'{1.5,NaN}'",
            "ARRAY[1.0]",
            "'{}'",
            "'{1}'",
            "ARRAY[0.1, 1.50]",
        ],
        K::Arr(E::Float) => &["'{0}'", "ARRAY['-0'::float8]", "'{NaN}'", "'{}'", "'{0.1}'"],
        K::Arr(E::Bool) => &["'{t}'", "ARRAY[true, NULL]", "'{}'", "'{f}'"],
        K::Arr(E::Date) => &["'{2024-01-01}'", "ARRAY[date '1970-01-01']", "'{infinity}'"],
        K::Arr(E::Tstz) => &["'{\"2024-01-01 00:00+00\"}'", "'{}'", "'{infinity}'"],
        K::Arr(E::Uuid) => &["'{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'", "'{}'"],
        K::Arr(E::Iv) => &[
            "'{\"1 day\"}'",
            "'{P1M}'",
            "'{}'",
            "ARRAY[interval '24 hours']",
        ],
    }
}

fn cast_name(k: K) -> &'static [&'static str] {
    match k {
        K::Int => &["int2", "int4", "int8", "integer", "bigint", "smallint"],
        K::Num => &["numeric", "decimal"],
        K::Float => &["float4", "float8", "real", "double precision"],
        K::Text => &["text", "varchar", "bpchar", "name", "character varying"],
        K::Bool => &["bool", "boolean"],
        K::Uuid => &["uuid"],
        K::Date => &["date"],
        K::Time => &["time"],
        K::Ts => &["timestamp"],
        K::Tstz => &["timestamptz", "timestamp with time zone"],
        K::Iv => &["interval"],
        K::Json => &["json", "jsonb"],
        K::Bytea => &["bytea"],
        K::Enum => &["mood"],
        K::Arr(E::Int) => &["int4[]", "int8[]", "int2[]"],
        K::Arr(E::Text) => &["text[]", "varchar[]"],
        K::Arr(E::Num) => &["numeric[]"],
        K::Arr(E::Float) => &["float8[]", "float4[]"],
        K::Arr(E::Bool) => &["bool[]"],
        K::Arr(E::Date) => &["date[]"],
        K::Arr(E::Tstz) => &["timestamptz[]"],
        K::Arr(E::Uuid) => &["uuid[]"],
        K::Arr(E::Iv) => &["interval[]"],
    }
}

const SCALAR_KINDS: &[K] = &[
    K::Int,
    K::Num,
    K::Float,
    K::Text,
    K::Bool,
    K::Uuid,
    K::Date,
    K::Time,
    K::Ts,
    K::Tstz,
    K::Iv,
];

const ARRAY_KINDS: &[K] = &[
    K::Arr(E::Int),
    K::Arr(E::Text),
    K::Arr(E::Num),
    K::Arr(E::Float),
    K::Arr(E::Bool),
    K::Arr(E::Date),
    K::Arr(E::Tstz),
    K::Arr(E::Uuid),
    K::Arr(E::Iv),
];

/// One generated clause: SQL with `$n` placeholders, their values, and
/// flags that decide whether the user's text is comparable as written.
struct Clause {
    sql: String,
    params: Vec<String>,
    /// Uses case folding (lower/upper/ILIKE), defined by us as the `C`
    /// collation does; the original text would use the database's.
    case_folds: bool,
    /// References the column with a non-bytewise collation.
    collated: bool,
}

struct Gen<'a> {
    rng: Rng,
    cols: &'a [Col],
    params: Vec<String>,
    case_folds: bool,
    collated: bool,
}

impl<'a> Gen<'a> {
    fn below(&mut self, n: u64) -> u64 {
        self.rng.below(n)
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.rng.below(one_in) == 0
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.below(items.len() as u64) as usize]
    }

    fn column(&mut self, k: K) -> Option<String> {
        let matching: Vec<&Col> = self.cols.iter().filter(|c| c.kind == k).collect();
        if matching.is_empty() {
            return None;
        }
        let c = matching[self.rng.below(matching.len() as u64) as usize];
        if c.name == "tc" {
            self.collated = true;
        }
        Some(c.name.to_string())
    }

    /// An untyped string literal: sometimes a `$n` parameter instead.
    fn literal(&mut self, k: K) -> String {
        let text = self.pick(literals(k));
        if let Some(inner) = text
            .strip_prefix('\'')
            .and_then(|t| t.strip_suffix('\''))
            .filter(|t| !t.contains('\''))
        {
            if self.chance(5) {
                self.params.push(inner.to_string());
                return format!("${}", self.params.len());
            }
        }
        text.to_string()
    }

    fn leaf(&mut self, k: K) -> String {
        if self.chance(3) {
            return self.literal(k);
        }
        self.column(k).unwrap_or_else(|| self.literal(k))
    }

    fn value(&mut self, k: K, depth: u32) -> String {
        if depth == 0 || self.chance(2) {
            return self.leaf(k);
        }
        let d = depth - 1;
        match k {
            K::Int => match self.below(12) {
                0 => {
                    let op = self.pick(&["+", "-", "*", "/", "%"]);
                    format!("({} {op} {})", self.value(K::Int, d), self.value(K::Int, d))
                }
                1 => {
                    let op = self.pick(&["&", "|", "#", "<<", ">>"]);
                    format!("({} {op} {})", self.value(K::Int, d), self.value(K::Int, d))
                }
                2 => format!(
                    "{}({})",
                    self.pick(&["-", "@", "~", "+"]),
                    self.value(K::Int, d)
                ),
                3 => {
                    let from = self.pick(&[K::Num, K::Float, K::Text, K::Int]);
                    let to = self.pick(cast_name(K::Int));
                    format!("{}::{to}", self.paren(from, d))
                }
                4 => format!("({} - {})", self.value(K::Date, d), self.value(K::Date, d)),
                5 => format!("array_ndims({})", self.array_value(d)),
                6 => format!(
                    "coalesce({}, {})",
                    self.value(K::Int, d),
                    self.value(K::Int, d)
                ),
                7 => format!(
                    "{}({}, {})",
                    self.pick(&["greatest", "least"]),
                    self.value(K::Int, d),
                    self.value(K::Int, d)
                ),
                8 => format!("{}::int4", self.paren(K::Bool, d)),
                9 => format!("CAST({} AS int8)", self.value(K::Int, d)),
                _ => self.leaf(K::Int),
            },
            K::Num => match self.below(9) {
                0..=2 => {
                    let op = self.pick(&["+", "-", "*", "/", "%", "+", "-", "*"]);
                    let (l, r) = (self.num_or_int(d), self.num_or_int(d));
                    format!("({l} {op} {r})")
                }
                3 => format!(
                    "({} ^ {})",
                    self.value(K::Num, d),
                    self.pick(&["2", "3", "0", "-1", "0.5", "2.0", "1", "10"])
                ),
                4 => format!("{}({})", self.pick(&["-", "@", "+"]), self.value(K::Num, d)),
                5 => {
                    let from = self.pick(&[K::Int, K::Float, K::Text, K::Num]);
                    format!("{}::numeric", self.paren(from, d))
                }
                6 => format!(
                    "{}({}, {})",
                    self.pick(&["greatest", "least", "coalesce"]),
                    self.value(K::Num, d),
                    self.num_or_int(d)
                ),
                _ => self.leaf(K::Num),
            },
            K::Float => match self.below(9) {
                0..=2 => {
                    let op = self.pick(&["+", "-", "*", "/", "^"]);
                    format!(
                        "({} {op} {})",
                        self.value(K::Float, d),
                        self.pick_numeric(d)
                    )
                }
                3 => format!(
                    "{}({})",
                    self.pick(&["-", "@", "|/", "||/", "+"]),
                    self.value(K::Float, d)
                ),
                4 => {
                    let from = self.pick(&[K::Int, K::Num, K::Text, K::Float]);
                    let to = self.pick(cast_name(K::Float));
                    format!("{}::{to}", self.paren(from, d))
                }
                5 => format!("({} ^ {})", self.value(K::Int, d), self.value(K::Int, d)),
                6 => format!(
                    "{}({}, {})",
                    self.pick(&["greatest", "least", "coalesce"]),
                    self.value(K::Float, d),
                    self.pick_numeric(d)
                ),
                _ => self.leaf(K::Float),
            },
            K::Text => match self.below(10) {
                0 | 1 => format!("({} || {})", self.value(K::Text, d), self.value(K::Text, d)),
                2 => {
                    self.case_folds = true;
                    format!(
                        "{}({})",
                        self.pick(&["lower", "upper"]),
                        self.value(K::Text, d)
                    )
                }
                3 | 4 => {
                    let from = self.pick(&[
                        K::Int,
                        K::Num,
                        K::Float,
                        K::Bool,
                        K::Uuid,
                        K::Date,
                        K::Time,
                        K::Ts,
                        K::Tstz,
                        K::Iv,
                        K::Json,
                        K::Bytea,
                        K::Enum,
                        K::Text,
                    ]);
                    let to = self.pick(cast_name(K::Text));
                    format!("{}::{to}", self.paren(from, d))
                }
                5 => {
                    let a = self.array_value(d);
                    format!("{a}::text")
                }
                6 => format!(
                    "{}({}, {})",
                    self.pick(&["greatest", "least", "coalesce"]),
                    self.value(K::Text, d),
                    self.value(K::Text, d)
                ),
                7 => format!("text({})", self.value_of(&[K::Int, K::Num, K::Date], d)),
                _ => self.leaf(K::Text),
            },
            K::Bool => self.predicate(d),
            K::Uuid => match self.below(3) {
                0 => format!("{}::uuid", self.paren(K::Text, d)),
                _ => self.leaf(K::Uuid),
            },
            K::Date => match self.below(7) {
                0 => format!("({} + {})", self.value(K::Date, d), self.value(K::Int, d)),
                1 => format!("({} - {})", self.value(K::Date, d), self.value(K::Int, d)),
                2 => format!("{}::date", self.paren_of(&[K::Ts, K::Tstz, K::Text], d)),
                3 => format!(
                    "{}({}, {})",
                    self.pick(&["greatest", "least"]),
                    self.value(K::Date, d),
                    self.value(K::Date, d)
                ),
                _ => self.leaf(K::Date),
            },
            K::Time => match self.below(6) {
                0 => format!("({} + {})", self.value(K::Time, d), self.value(K::Iv, d)),
                1 => format!("({} - {})", self.value(K::Time, d), self.value(K::Iv, d)),
                2 => format!(
                    "{}::time",
                    self.paren_of(&[K::Ts, K::Tstz, K::Iv, K::Text], d)
                ),
                _ => self.leaf(K::Time),
            },
            K::Ts => match self.below(8) {
                0 => format!("({} + {})", self.value(K::Date, d), self.value(K::Time, d)),
                1 => format!("({} + {})", self.value(K::Date, d), self.value(K::Iv, d)),
                2 => format!("({} + {})", self.value(K::Ts, d), self.value(K::Iv, d)),
                3 => format!("({} - {})", self.value(K::Ts, d), self.value(K::Iv, d)),
                4 => format!(
                    "{}::timestamp",
                    self.paren_of(&[K::Tstz, K::Date, K::Text], d)
                ),
                _ => self.leaf(K::Ts),
            },
            K::Tstz => match self.below(6) {
                0 => format!("({} + {})", self.value(K::Tstz, d), self.value(K::Iv, d)),
                1 => format!("({} - {})", self.value(K::Tstz, d), self.value(K::Iv, d)),
                2 => format!(
                    "{}::timestamptz",
                    self.paren_of(&[K::Ts, K::Date, K::Text], d)
                ),
                _ => self.leaf(K::Tstz),
            },
            K::Iv => match self.below(11) {
                0 => format!("({} - {})", self.value(K::Ts, d), self.value(K::Ts, d)),
                1 => format!("({} - {})", self.value(K::Tstz, d), self.value(K::Tstz, d)),
                2 => format!("({} * {})", self.value(K::Iv, d), self.pick_numeric(d)),
                3 => format!("({} / {})", self.value(K::Iv, d), self.pick_numeric(d)),
                4 => format!(
                    "{}({})",
                    self.pick(&["justify_days", "justify_hours", "justify_interval"]),
                    self.value(K::Iv, d)
                ),
                5 => format!("-{}", self.paren(K::Iv, d)),
                6 => format!(
                    "({} {} {})",
                    self.value(K::Iv, d),
                    self.pick(&["+", "-"]),
                    self.value(K::Iv, d)
                ),
                7 => format!("({} - {})", self.value(K::Time, d), self.value(K::Time, d)),
                8 => format!("{}::interval", self.paren_of(&[K::Time, K::Text], d)),
                _ => self.leaf(K::Iv),
            },
            K::Json | K::Bytea | K::Enum => self.leaf(k),
            K::Arr(e) => match self.below(8) {
                0 => format!("({} || {})", self.value(k, d), self.value(k, d)),
                1 => format!(
                    "array_append({}, {})",
                    self.value(k, d),
                    self.value(e.scalar(), d)
                ),
                2 => format!(
                    "array_prepend({}, {})",
                    self.value(e.scalar(), d),
                    self.value(k, d)
                ),
                3 => format!("array_cat({}, {})", self.value(k, d), self.value(k, d)),
                4 => {
                    let n = 1 + self.below(3);
                    let items: Vec<String> = (0..n).map(|_| self.value(e.scalar(), d)).collect();
                    format!("ARRAY[{}]", items.join(", "))
                }
                5 => {
                    let to = self.pick(cast_name(k));
                    format!("{}::{to}", self.paren_of(&[k, K::Text], d))
                }
                6 => format!("({} || {})", self.value(k, d), self.value(e.scalar(), d)),
                _ => self.leaf(k),
            },
        }
    }

    fn array_value(&mut self, depth: u32) -> String {
        let k = self.pick(ARRAY_KINDS);
        self.value(k, depth)
    }

    fn paren(&mut self, k: K, depth: u32) -> String {
        let v = self.value(k, depth);
        format!("({v})")
    }

    fn paren_of(&mut self, kinds: &[K], depth: u32) -> String {
        let k = self.pick(kinds);
        self.paren(k, depth)
    }

    fn value_of(&mut self, kinds: &[K], depth: u32) -> String {
        let k = self.pick(kinds);
        self.value(k, depth)
    }

    fn num_or_int(&mut self, depth: u32) -> String {
        let k = self.pick(&[K::Num, K::Num, K::Int]);
        self.value(k, depth)
    }

    fn pick_numeric(&mut self, depth: u32) -> String {
        let k = self.pick(&[K::Int, K::Num, K::Float, K::Float]);
        self.value(k, depth)
    }

    /// A kind two values of may be compared.
    fn comparable_pair(&mut self) -> (K, K) {
        match self.below(14) {
            0 => (K::Int, K::Num),
            1 => (K::Float, K::Num),
            2 => (K::Int, K::Float),
            3 => (K::Date, K::Ts),
            4 => (K::Ts, K::Tstz),
            5 => (K::Date, K::Tstz),
            6..=8 => {
                let k = self.pick(ARRAY_KINDS);
                (k, k)
            }
            _ => {
                let k = self.pick(SCALAR_KINDS);
                (k, k)
            }
        }
    }

    fn predicate(&mut self, depth: u32) -> String {
        let d = depth.saturating_sub(1);
        let choice = if depth == 0 {
            self.below(9)
        } else {
            self.below(20)
        };
        match choice {
            0..=2 => {
                let (a, b) = self.comparable_pair();
                let (a, b) = if self.chance(2) { (b, a) } else { (a, b) };
                let op = self.pick(&["=", "<>", "<", ">", "<=", ">=", "!="]);
                format!("{} {op} {}", self.value(a, d), self.value(b, d))
            }
            3 => {
                let k = self.pick(&[
                    K::Int,
                    K::Num,
                    K::Float,
                    K::Text,
                    K::Bool,
                    K::Uuid,
                    K::Date,
                    K::Time,
                    K::Ts,
                    K::Tstz,
                    K::Iv,
                    K::Json,
                    K::Bytea,
                    K::Enum,
                    K::Arr(E::Int),
                    K::Arr(E::Text),
                ]);
                let not = if self.chance(2) { " NOT" } else { "" };
                if self.chance(4) {
                    format!("{} IS{not} NULL", self.value(k, d))
                } else {
                    format!(
                        "{}{}",
                        self.value(k, d),
                        if not.is_empty() {
                            " ISNULL"
                        } else {
                            " NOTNULL"
                        }
                    )
                }
            }
            4 => {
                let (a, b) = self.comparable_pair();
                let not = if self.chance(2) { " NOT" } else { "" };
                format!(
                    "{} IS{not} DISTINCT FROM {}",
                    self.value(a, d),
                    self.value(b, d)
                )
            }
            5 => {
                let (a, b) = self.comparable_pair();
                let not = if self.chance(3) { " NOT" } else { "" };
                let sym = if self.chance(3) { " SYMMETRIC" } else { "" };
                format!(
                    "{}{not} BETWEEN{sym} {} AND {}",
                    self.value(a, d),
                    self.value(b, d),
                    self.value(a, d)
                )
            }
            6 => {
                let (a, b) = self.comparable_pair();
                let not = if self.chance(3) { " NOT" } else { "" };
                let n = 1 + self.below(4);
                let items: Vec<String> = (0..n)
                    .map(|i| {
                        if i % 2 == 0 {
                            self.value(b, d)
                        } else {
                            self.value(a, d)
                        }
                    })
                    .collect();
                format!("{}{not} IN ({})", self.value(a, d), items.join(", "))
            }
            7 => {
                let not = if self.chance(3) { " NOT" } else { "" };
                let op = if self.chance(2) {
                    "LIKE"
                } else {
                    self.case_folds = true;
                    "ILIKE"
                };
                let pattern = self.pick(&[
                    "'a%'", "'%b'", "'_'", "'%'", "'a\\%b'", "'a_b'", "'%é%'", "'É%'", "'%ß'",
                    "'A%'", "'__'", "'%\\_%'", "'ab%'", "'%a%b%'", "''", "'İ'", "'i%'", "'%S%'",
                ]);
                let pattern = if self.chance(4) {
                    self.value(K::Text, d)
                } else {
                    pattern.to_string()
                };
                format!("{}{not} {op} {pattern}", self.value(K::Text, d))
            }
            8 => {
                let e = self.pick(&[
                    E::Int,
                    E::Text,
                    E::Num,
                    E::Float,
                    E::Date,
                    E::Iv,
                    E::Uuid,
                    E::Bool,
                    E::Tstz,
                ]);
                let op = self.pick(&["@>", "<@", "&&"]);
                format!(
                    "{} {op} {}",
                    self.value(K::Arr(e), d),
                    self.value(K::Arr(e), d)
                )
            }
            9 | 10 => {
                let e = self.pick(&[E::Int, E::Text, E::Num, E::Float, E::Date, E::Iv, E::Bool]);
                let op = self.pick(&["=", "<>", "<", ">=", "=", "LIKE"]);
                let e = if op == "LIKE" { E::Text } else { e };
                let q = self.pick(&["ANY", "ALL", "SOME"]);
                format!(
                    "{} {op} {q} ({})",
                    self.value(e.scalar(), d),
                    self.value(K::Arr(e), d)
                )
            }
            11 => {
                let t = self.pick(&["TRUE", "FALSE", "UNKNOWN"]);
                let not = if self.chance(2) { " NOT" } else { "" };
                format!("({}) IS{not} {t}", self.predicate(d))
            }
            12 => self.column(K::Bool).unwrap_or_else(|| "true".into()),
            13 => {
                let items: Vec<String> =
                    (0..2 + self.below(2)).map(|_| self.predicate(d)).collect();
                format!("({})", items.join(" AND "))
            }
            14 => {
                let items: Vec<String> =
                    (0..2 + self.below(2)).map(|_| self.predicate(d)).collect();
                format!("({})", items.join(" OR "))
            }
            15 => format!("NOT ({})", self.predicate(d)),
            16 => format!(
                "coalesce({}, {})",
                self.value(K::Bool, d),
                self.value(K::Bool, d)
            ),
            17 => format!("{} = {}", self.value(K::Bool, d), self.value(K::Bool, d)),
            _ => {
                let (a, b) = self.comparable_pair();
                let op = self.pick(&["=", "<", ">="]);
                format!("{} {op} {}", self.value(a, d), self.value(b, d))
            }
        }
    }

    fn clause(&mut self) -> Clause {
        self.params.clear();
        self.case_folds = false;
        self.collated = false;
        let depth = 1 + self.below(3) as u32;
        let sql = self.predicate(depth);
        Clause {
            sql,
            params: self.params.clone(),
            case_folds: self.case_folds,
            collated: self.collated,
        }
    }
}

/// Postgres' answer for one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pg {
    Match,
    NoMatch,
    /// A runtime error (SQLSTATE class 22: overflow, bad input, ...).
    Error,
}

/// Why Postgres could not run a statement at all.
enum Rejected {
    /// Parse or analysis error (class 42, or anything but a data exception).
    Plan(String),
}

/// Errors raised while running (data exceptions, and "cannot convert
/// infinity to int" which Postgres files under feature_not_supported), as
/// opposed to a statement Postgres cannot parse or type.
fn runtime_error(code: &str) -> bool {
    code.starts_with("22") || code == "0A000"
}

fn db_error(e: &postgres::Error) -> (String, String) {
    match e.as_db_error() {
        Some(db) => (db.code().code().to_string(), db.message().to_string()),
        None => (String::new(), e.to_string()),
    }
}

/// How `$n` values reach Postgres.
#[derive(Clone, Copy)]
enum Binding {
    /// Bound as `text`, as the server binds the rendered SQL's `$n::type`.
    Text,
    /// Of unspecified type, typed by Postgres from context (as a user's own
    /// statement would be): `PREPARE` without types, then `EXECUTE`.
    Unspecified,
}

fn run(
    client: &mut postgres::Client,
    sql: &str,
    params: &[String],
    binding: Binding,
) -> Result<Vec<postgres::Row>, postgres::Error> {
    match binding {
        Binding::Text => {
            let bound: Vec<(&(dyn postgres::types::ToSql + Sync), Type)> = params
                .iter()
                .map(|p| (p as &(dyn postgres::types::ToSql + Sync), Type::TEXT))
                .collect();
            client.query_typed(sql, &bound)
        }
        Binding::Unspecified if params.is_empty() => client.query(sql, &[]),
        Binding::Unspecified => {
            client.batch_execute(&format!("PREPARE where_diff AS {sql}"))?;
            let values: Vec<String> = params.iter().map(|p| quote(p)).collect();
            let rows = client.query(&format!("EXECUTE where_diff({})", values.join(", ")), &[]);
            client.batch_execute("DEALLOCATE where_diff")?;
            rows
        }
    }
}

/// Whether Postgres parses and types the clause as the user wrote it.
fn postgres_accepts(client: &mut postgres::Client, clause: &Clause) -> bool {
    let ok = client
        .batch_execute(&format!(
            "PREPARE where_diff_check AS SELECT id FROM t WHERE ({})",
            clause.sql
        ))
        .is_ok();
    if ok {
        let _ = client.batch_execute("DEALLOCATE where_diff_check");
    }
    ok
}

/// Runs `condition` (SQL with `$n` placeholders for `params`) over every
/// row: one query, or one per row when some row raises a runtime error.
fn postgres_answers(
    client: &mut postgres::Client,
    condition: &str,
    params: &[String],
    binding: Binding,
    ids: &[i32],
) -> Result<Vec<Pg>, Rejected> {
    let sql = format!("SELECT id FROM t WHERE {condition}");
    match run(client, &sql, params, binding) {
        Ok(rows) => {
            let matched: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
            return Ok(ids
                .iter()
                .map(|id| {
                    if matched.contains(id) {
                        Pg::Match
                    } else {
                        Pg::NoMatch
                    }
                })
                .collect());
        }
        Err(e) => {
            let (code, message) = db_error(&e);
            if !runtime_error(&code) {
                return Err(Rejected::Plan(format!("{code}: {message}")));
            }
        }
    }
    let mut answers = Vec::with_capacity(ids.len());
    // The id is the last parameter, after the clause's own.
    let sql = format!(
        "SELECT ({condition}) FROM (SELECT * FROM t WHERE id = ${}::int4 OFFSET 0) AS t",
        params.len() + 1
    );
    for id in ids {
        let mut with_id = params.to_vec();
        with_id.push(id.to_string());
        answers.push(match run(client, &sql, &with_id, binding) {
            Ok(rows) => match rows.first().and_then(|r| r.get::<_, Option<bool>>(0)) {
                Some(true) => Pg::Match,
                _ => Pg::NoMatch,
            },
            Err(e) => {
                let (code, message) = db_error(&e);
                if !runtime_error(&code) {
                    return Err(Rejected::Plan(format!("{code}: {message}")));
                }
                Pg::Error
            }
        });
    }
    Ok(answers)
}

fn describe_row(cols: &[Col], row: &[Option<String>]) -> String {
    cols.iter()
        .zip(row)
        .filter_map(|(c, v)| v.as_ref().map(|v| format!("{}={v:?}", c.name)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn where_differential() {
    let seed = knob("WHERE_DIFF_SEED", 0x5eed_d1ff);
    let cases = knob("WHERE_DIFF_CASES", 2500) as usize;
    let row_count = knob("WHERE_DIFF_ROWS", 48) as usize;
    eprintln!("where_differential: WHERE_DIFF_SEED={seed} WHERE_DIFF_CASES={cases} WHERE_DIFF_ROWS={row_count}");
    let started = Instant::now();

    let db = database("where_diff");
    let mut client = db.client();
    client
        .batch_execute(
            "SET DateStyle = 'ISO, DMY'; SET TimeZone = 'UTC'; SET extra_float_digits = 1;
             SET IntervalStyle = 'iso_8601'; SET bytea_output = 'hex';
             CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');",
        )
        .unwrap();
    let icu = client
        .query(
            "SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu'",
            &[],
        )
        .unwrap()
        .len()
        == 1;
    let cols = table_columns(icu);
    let create = format!(
        "CREATE TABLE t ({})",
        cols.iter()
            .map(|c| format!("{} {}", c.name, c.sql_type))
            .collect::<Vec<_>>()
            .join(", ")
    );
    client.batch_execute(&create).unwrap();

    // Rows: every value of every pool appears (round-robin), mixed at random, with NULLs.
    let mut rng = Rng(seed ^ 0x0123_4567_89ab_cdef);
    let mut inserts = String::new();
    for id in 1..=row_count {
        let values: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 {
                    return id.to_string();
                }
                if rng.below(7) == 0 {
                    return "NULL".into();
                }
                let index = if rng.below(2) == 0 {
                    (id + i) % c.pool.len()
                } else {
                    rng.below(c.pool.len() as u64) as usize
                };
                format!(
                    "{}::{}",
                    quote(c.pool[index]),
                    c.sql_type.split(" COLLATE").next().unwrap()
                )
            })
            .collect();
        let _ = writeln!(inserts, "INSERT INTO t VALUES ({});", values.join(", "));
    }
    client.batch_execute(&inserts).unwrap();

    // The rows as Postgres prints them (output functions, as pgoutput sends).
    let mut rows: Vec<Vec<Option<String>>> = Vec::new();
    for message in client.simple_query("SELECT * FROM t ORDER BY id").unwrap() {
        if let SimpleQueryMessage::Row(row) = message {
            rows.push(
                (0..cols.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            );
        }
    }
    assert_eq!(rows.len(), row_count);
    let ids: Vec<i32> = rows
        .iter()
        .map(|r| r[0].as_deref().unwrap().parse().unwrap())
        .collect();

    let columns: Vec<WhereColumn> = cols
        .iter()
        .map(|c| WhereColumn {
            name: c.name.to_string(),
            type_name: c.type_name.to_string(),
            dims: c.dims,
            is_enum: c.is_enum,
        })
        .collect();

    let mut gen = Gen {
        rng: Rng(seed),
        cols: &cols,
        params: Vec::new(),
        case_folds: false,
        collated: false,
    };
    let mut accepted = 0usize;
    let mut rejected = 0usize;
    let mut rejected_but_valid = 0usize;
    let mut compared_rows = 0usize;
    let mut pg_errors = 0usize;
    let mut matches_seen = 0usize;
    let mut original_compared = 0usize;
    let mut original_invalid = 0usize;
    let mut failures: Vec<String> = Vec::new();
    let mut rejections: BTreeMap<String, usize> = BTreeMap::new();
    for case in 0..cases {
        let clause = gen.clause();
        let params: BTreeMap<usize, String> = clause
            .params
            .iter()
            .enumerate()
            .map(|(i, v)| (i + 1, v.clone()))
            .collect();
        let parsed = match WhereClause::parse(&clause.sql, &columns, &params) {
            Ok(parsed) => parsed,
            Err(e) => {
                rejected += 1;
                let kind: String = e
                    .message
                    .split_once(": ")
                    .map_or(e.message.as_str(), |(_, m)| m)
                    .chars()
                    .take(40)
                    .collect();
                *rejections.entry(kind).or_default() += 1;
                // Informational: clauses we refuse that Postgres would run.
                if postgres_accepts(&mut client, &clause) {
                    rejected_but_valid += 1;
                    if rejected_but_valid <= 5 {
                        eprintln!(
                            "  refused, valid in Postgres: {} ({})",
                            clause.sql, e.message
                        );
                    }
                }
                continue;
            }
        };
        accepted += 1;
        let ours: Vec<bool> = rows
            .iter()
            .map(|row| parsed.matches(&|i| row.get(i).and_then(|v| v.as_deref())))
            .collect();
        matches_seen += ours.iter().filter(|m| **m).count();
        let (rendered, values) = parsed.to_sql();
        let report = |what: &str, sql: &str, answers: &[Pg], failures: &mut Vec<String>| {
            for (i, (pg, ours)) in answers.iter().zip(&ours).enumerate() {
                let agree = match pg {
                    Pg::Match => *ours,
                    Pg::NoMatch | Pg::Error => !*ours,
                };
                if !agree {
                    failures.push(format!(
                        "case {case} ({what}): WHERE_DIFF_SEED={seed}\n  clause:   {}\n  params:   {:?}\n  {what}: {sql}\n  bound:    {values:?}\n  row:      {}\n  postgres: {pg:?}  ours: {}",
                        clause.sql,
                        clause.params,
                        describe_row(&cols, &rows[i]),
                        if *ours { "Match" } else { "NoMatch" },
                    ));
                    return;
                }
            }
        };
        match postgres_answers(&mut client, &rendered, &values, Binding::Text, &ids) {
            Ok(answers) => {
                compared_rows += answers.len();
                pg_errors += answers.iter().filter(|a| **a == Pg::Error).count();
                report("rendered", &rendered, &answers, &mut failures);
            }
            Err(Rejected::Plan(message)) => failures.push(format!(
                "case {case}: WHERE_DIFF_SEED={seed}\n  clause:   {}\n  params:   {:?}\n  rendered SQL rejected by Postgres: {message}\n  rendered: {rendered}\n  bound:    {values:?}",
                clause.sql, clause.params
            )),
        }
        if !clause.case_folds && !clause.collated {
            let original = &clause.sql;
            match postgres_answers(
                &mut client,
                &format!("({original})"),
                &clause.params,
                Binding::Unspecified,
                &ids,
            ) {
                Ok(answers) => {
                    original_compared += 1;
                    // Where the user's text fails on a row, Postgres' planner
                    // decided what ran (it folds immutable constants, not
                    // stable ones such as date output): the rendered SQL,
                    // which is what runs, was held to the strict rule above.
                    let answers: Vec<Pg> = answers
                        .iter()
                        .zip(&ours)
                        .map(|(pg, ours)| match pg {
                            Pg::Error if *ours => Pg::Match,
                            other => *other,
                        })
                        .collect();
                    report("original", original, &answers, &mut failures);
                }
                Err(Rejected::Plan(message)) => {
                    original_invalid += 1;
                    if original_invalid <= 5 {
                        eprintln!(
                            "  accepted, invalid in Postgres: {} ({message})",
                            clause.sql
                        );
                    }
                }
            }
        }
        if failures.len() >= 30 {
            break;
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "where_differential: {accepted} clauses accepted, {rejected} rejected at parse time, \
         {compared_rows} (clause, row) comparisons with the rendered SQL ({pg_errors} rows on \
         which Postgres raised an error), {matches_seen} matches, {original_compared} clauses \
         also compared as written ({original_invalid} not valid as written; {rejected_but_valid} \
         refused ones valid in Postgres), {:.1?}",
        elapsed
    );
    let mut top: Vec<(&String, &usize)> = rejections.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1));
    for (message, count) in top.iter().take(12) {
        eprintln!("  rejected {count:5} × {message}");
    }
    if !failures.is_empty() {
        panic!(
            "{} disagreement(s) between the where engine and Postgres (replay with WHERE_DIFF_SEED={seed} WHERE_DIFF_CASES={cases}):\n\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }
    // The generator must keep reaching evaluation, and find both answers.
    assert!(
        accepted * 2 >= accepted + rejected,
        "only {accepted} of {} generated clauses were accepted",
        accepted + rejected
    );
    assert!(
        matches_seen > 0 && matches_seen < compared_rows,
        "{matches_seen} matches of {compared_rows}"
    );
    assert!(
        original_compared * 4 >= accepted,
        "only {original_compared} of {accepted} compared as written"
    );
}
