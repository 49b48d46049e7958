//! End-to-end tests of the public API: parse + typecheck, evaluation truth
//! tables on text rows, canonical forms, rendered SQL, index keys and
//! Electric's error messages.

use std::collections::BTreeMap;

use super::{WhereClause, WhereColumn, WhereErrorField};

fn column(name: &str, type_name: &str) -> WhereColumn {
    WhereColumn {
        name: name.into(),
        type_name: type_name.into(),
        dims: 0,
        is_enum: false,
    }
}

fn array_column(name: &str, type_name: &str) -> WhereColumn {
    WhereColumn {
        dims: 1,
        ..column(name, type_name)
    }
}

const ID: usize = 0;
const BIG: usize = 1;
const SMALL: usize = 2;
const NAME: usize = 3;
const CODE: usize = 4;
const PADDED: usize = 5;
const FLAG: usize = 6;
const PRICE: usize = 7;
const RATIO: usize = 8;
const SCORE: usize = 9;
const UID: usize = 10;
const DAY: usize = 11;
const AT: usize = 12;
const TS: usize = 13;
const TSTZ: usize = 14;
const SPAN: usize = 15;
const TAGS: usize = 16;
const NUMS: usize = 17;
const MOOD: usize = 18;
const DOC: usize = 19;
const MIXED: usize = 20;
const PT: usize = 21;

fn columns() -> Vec<WhereColumn> {
    vec![
        column("id", "int4"),
        column("big", "int8"),
        column("small", "int2"),
        column("name", "text"),
        column("code", "varchar"),
        column("padded", "bpchar"),
        column("flag", "bool"),
        column("price", "numeric"),
        column("ratio", "float8"),
        column("score", "float4"),
        column("uid", "uuid"),
        column("day", "date"),
        column("at", "time"),
        column("ts", "timestamp"),
        column("tstz", "timestamptz"),
        column("span", "interval"),
        array_column("tags", "text"),
        array_column("nums", "int4"),
        WhereColumn {
            is_enum: true,
            ..column("mood", "mood")
        },
        column("doc", "jsonb"),
        column("Mixed Case", "text"),
        column("pt", "point"),
    ]
}

fn params(values: &[&str]) -> BTreeMap<usize, String> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| (i + 1, v.to_string()))
        .collect()
}

fn parse_with(sql: &str, values: &[&str]) -> WhereClause {
    match WhereClause::parse(sql, &columns(), &params(values)) {
        Ok(clause) => clause,
        Err(e) => panic!("{sql:?} failed: {}", e.message),
    }
}

fn parse(sql: &str) -> WhereClause {
    parse_with(sql, &[])
}

fn error_with(sql: &str, values: &[&str]) -> String {
    match WhereClause::parse(sql, &columns(), &params(values)) {
        Ok(clause) => panic!("{sql:?} parsed as {}", clause.canonical()),
        Err(e) => e.message,
    }
}

fn error(sql: &str) -> String {
    error_with(sql, &[])
}

/// Evaluates on a row given as (column, text) pairs; others are NULL.
fn eval(clause: &WhereClause, row: &[(usize, &str)]) -> bool {
    let lookup = |i: usize| row.iter().find(|(c, _)| *c == i).map(|(_, v)| *v);
    clause.matches(&lookup)
}

/// Asserts a truth table: each row's expected match.
fn table(sql: &str, rows: &[(&[(usize, &str)], bool)]) {
    let clause = parse(sql);
    for (row, expected) in rows {
        assert_eq!(eval(&clause, row), *expected, "{sql} on {row:?}");
    }
    assert_canonical_is_stable(&clause);
}

/// The canonical form is itself a valid clause with the same canonical
/// form: rendering loses nothing the parser needs.
fn assert_canonical_is_stable(clause: &WhereClause) {
    let again = WhereClause::parse(clause.canonical(), &columns(), &BTreeMap::new())
        .unwrap_or_else(|e| {
            panic!(
                "canonical {:?} does not parse: {}",
                clause.canonical(),
                e.message
            )
        });
    assert_eq!(again.canonical(), clause.canonical());
}

#[test]
fn where_clause_integer_comparisons() {
    let five: &[(usize, &str)] = &[(ID, "5")];
    let six: &[(usize, &str)] = &[(ID, "6")];
    let null: &[(usize, &str)] = &[];
    table("id = 5", &[(five, true), (six, false), (null, false)]);
    table("id <> 5", &[(five, false), (six, true), (null, false)]);
    table("id != 5", &[(five, false), (six, true)]);
    table("id < 6", &[(five, true), (six, false)]);
    table("id <= 5", &[(five, true), (six, false)]);
    table("id > 5", &[(five, false), (six, true)]);
    table("id >= 6", &[(five, false), (six, true)]);
    table("5 = id", &[(five, true), (six, false)]);
    table("id = '5'", &[(five, true), (six, false)]);
    table("id = 5.0", &[(five, true), (six, false)]);
    table("id = 5.5", &[(five, false), (six, false)]);
    table("id < 5.5", &[(five, true), (six, false)]);
    table(
        "big = 5000000000",
        &[(&[(BIG, "5000000000")], true), (&[(BIG, "5")], false)],
    );
    table(
        "small = id",
        &[
            (&[(SMALL, "3"), (ID, "3")], true),
            (&[(SMALL, "3"), (ID, "4")], false),
        ],
    );
    table("big > id", &[(&[(BIG, "5000000000"), (ID, "3")], true)]);
}

#[test]
fn where_clause_text_family_comparisons() {
    table(
        "name = 'Alice'",
        &[
            (&[(NAME, "Alice")], true),
            (&[(NAME, "alice")], false),
            (&[], false),
        ],
    );
    // Bytewise, like `COLLATE "C"`: upper case sorts before lower case.
    table(
        "name < 'a'",
        &[(&[(NAME, "Z")], true), (&[(NAME, "b")], false)],
    );
    table(
        "name >= 'é'",
        &[(&[(NAME, "z")], false), (&[(NAME, "ü")], true)],
    );
    table(
        "code = 'x'",
        &[(&[(CODE, "x")], true), (&[(CODE, "y")], false)],
    );
    table(
        "code = name",
        &[
            (&[(CODE, "x"), (NAME, "x")], true),
            (&[(CODE, "x"), (NAME, "x ")], false),
        ],
    );
    // bpchar ignores trailing spaces; its text cast drops them.
    table(
        "padded = 'ab'",
        &[(&[(PADDED, "ab  ")], true), (&[(PADDED, "abc ")], false)],
    );
    table("padded::text = 'ab'", &[(&[(PADDED, "ab  ")], true)]);
    table(
        "\"Mixed Case\" = 'm'",
        &[(&[(MIXED, "m")], true), (&[(MIXED, "M")], false)],
    );
    table(
        "name || '!' = 'hi!'",
        &[
            (&[(NAME, "hi")], true),
            (&[(NAME, "ho")], false),
            (&[], false),
        ],
    );
    table("lower(name) = 'straße'", &[(&[(NAME, "STRAßE")], true)]);
    // Case folding is the `C` collation's (ASCII letters only), which the
    // rendered SQL asks Postgres for: the same on both sides whatever the
    // database's locale.
    table(
        "upper(name) = 'éCOLE'",
        &[(&[(NAME, "école")], true), (&[(NAME, "ÉCOLE")], false)],
    );
    table("upper(code) = 'X'", &[(&[(CODE, "x")], true)]);
}

#[test]
fn where_clause_like_and_ilike() {
    let row = |v: &'static str| -> Vec<(usize, &'static str)> { vec![(NAME, v)] };
    let cases: &[(&str, &str, bool)] = &[
        ("name LIKE 'ab%'", "abc", true),
        ("name LIKE 'ab%'", "xabc", false),
        ("name LIKE '_b_'", "abc", true),
        ("name NOT LIKE 'ab%'", "abc", false),
        ("name NOT LIKE 'ab%'", "xyz", true),
        ("name ILIKE 'AB%'", "abc", true),
        ("name NOT ILIKE 'AB%'", "abc", false),
        ("name ~~ 'a%'", "abc", true),
        ("name ~~* 'A%'", "abc", true),
        ("name !~~ 'a%'", "abc", false),
        ("name !~~* 'A%'", "abc", false),
        ("name LIKE '100\\%'", "100%", true),
        ("name LIKE '100\\%'", "1000", false),
        ("like(name, 'a%')", "abc", true),
        ("ilike(name, 'A%')", "abc", true),
        ("name LIKE ANY ('{x%,a%}')", "abc", true),
        ("name LIKE ALL ('{x%,a%}')", "abc", false),
    ];
    for (sql, value, expected) in cases {
        let clause = parse(sql);
        assert_eq!(eval(&clause, &row(value)), *expected, "{sql} on {value}");
        assert!(!eval(&clause, &[]), "{sql} on NULL");
    }
    // bpchar LIKE sees the padding, as Postgres' bpcharlike does.
    table("padded LIKE 'ab'", &[(&[(PADDED, "ab  ")], false)]);
    table("padded LIKE 'ab%'", &[(&[(PADDED, "ab  ")], true)]);
    // A pattern ending in the escape character is an error: no match.
    let clause = parse_with("name LIKE $1", &["a\\"]);
    assert!(!eval(&clause, &[(NAME, "a")]));
}

#[test]
fn where_clause_null_semantics() {
    let null: &[(usize, &str)] = &[];
    let flag_true: &[(usize, &str)] = &[(FLAG, "t")];
    let flag_false: &[(usize, &str)] = &[(FLAG, "f")];
    table("id = NULL", &[(&[(ID, "1")], false), (null, false)]);
    table(
        "NOT (id = 1)",
        &[(&[(ID, "2")], true), (&[(ID, "1")], false), (null, false)],
    );
    table("id IS NULL", &[(null, true), (&[(ID, "1")], false)]);
    table("id IS NOT NULL", &[(null, false), (&[(ID, "1")], true)]);
    table("id ISNULL", &[(null, true)]);
    table("id NOTNULL", &[(null, false), (&[(ID, "1")], true)]);
    table(
        "id = 1 OR flag",
        &[(flag_true, true), (flag_false, false), (null, false)],
    );
    table(
        "id = 1 AND flag",
        &[(flag_true, false), (&[(ID, "1"), (FLAG, "t")], true)],
    );
    table(
        "NOT flag",
        &[(flag_true, false), (flag_false, true), (null, false)],
    );
    table(
        "flag IS TRUE",
        &[(flag_true, true), (flag_false, false), (null, false)],
    );
    table(
        "flag IS NOT TRUE",
        &[(flag_true, false), (flag_false, true), (null, true)],
    );
    table("flag IS FALSE", &[(flag_false, true), (null, false)]);
    table("flag IS NOT FALSE", &[(flag_false, false), (null, true)]);
    table("flag IS UNKNOWN", &[(null, true), (flag_true, false)]);
    table("flag IS NOT UNKNOWN", &[(null, false), (flag_false, true)]);
    table("(id = 1) IS NULL", &[(null, true), (&[(ID, "2")], false)]);
    table(
        "id IS DISTINCT FROM 1",
        &[(null, true), (&[(ID, "1")], false), (&[(ID, "2")], true)],
    );
    table(
        "id IS NOT DISTINCT FROM NULL",
        &[(null, true), (&[(ID, "1")], false)],
    );
    table(
        "id IS NOT DISTINCT FROM big",
        &[
            (null, true),
            (&[(ID, "1"), (BIG, "1")], true),
            (&[(ID, "1")], false),
        ],
    );
    // `x NOT IN (..., NULL)` is never true: the classic trap, kept.
    table(
        "id IN (1, NULL)",
        &[(&[(ID, "1")], true), (&[(ID, "2")], false)],
    );
    table(
        "id NOT IN (1, NULL)",
        &[(&[(ID, "2")], false), (&[(ID, "1")], false)],
    );
    table(
        "coalesce(id, 0) = 0",
        &[(null, true), (&[(ID, "3")], false)],
    );
    table("true", &[(null, true)]);
    table("false OR NULL", &[(null, false)]);
    table("NOT (false AND NULL)", &[(null, true)]);
}

#[test]
fn where_clause_between_and_in() {
    let r = |v: &'static str| -> Vec<(usize, &'static str)> { vec![(ID, v)] };
    let cases: &[(&str, &str, bool)] = &[
        ("id BETWEEN 1 AND 3", "1", true),
        ("id BETWEEN 1 AND 3", "3", true),
        ("id BETWEEN 1 AND 3", "4", false),
        ("id BETWEEN 3 AND 1", "2", false),
        ("id BETWEEN SYMMETRIC 3 AND 1", "2", true),
        ("id NOT BETWEEN 1 AND 3", "4", true),
        ("id NOT BETWEEN 1 AND 3", "2", false),
        ("id NOT BETWEEN SYMMETRIC 3 AND 1", "2", false),
        ("id IN (1, 2, 3)", "2", true),
        ("id IN (1, 2, 3)", "4", false),
        ("id IN ('1', '2')", "2", true),
        ("id NOT IN (1, 2)", "3", true),
        ("id NOT IN (1, 2)", "2", false),
    ];
    for (sql, value, expected) in cases {
        let clause = parse(sql);
        assert_eq!(eval(&clause, &r(value)), *expected, "{sql} on {value}");
        assert!(!eval(&clause, &[]), "{sql} on NULL");
        assert_canonical_is_stable(&clause);
    }
    table(
        "name IN ('a', 'b')",
        &[(&[(NAME, "b")], true), (&[(NAME, "c")], false)],
    );
    table(
        "day BETWEEN '2024-01-01' AND '2024-01-31'",
        &[
            (&[(DAY, "2024-01-15")], true),
            (&[(DAY, "2024-02-01")], false),
        ],
    );
}

#[test]
fn where_clause_any_all() {
    let nums = |v: &'static str| -> Vec<(usize, &'static str)> { vec![(NUMS, v), (ID, "2")] };
    let cases: &[(&str, &str, bool)] = &[
        ("2 = ANY(nums)", "{1,2,3}", true),
        ("2 = ANY(nums)", "{1,3}", false),
        ("2 = ANY(nums)", "{1,NULL}", false),
        ("2 = ANY(nums)", "{}", false),
        ("id = SOME(nums)", "{2}", true),
        ("2 <> ALL(nums)", "{1,3}", true),
        ("2 <> ALL(nums)", "{1,2}", false),
        ("2 <> ALL(nums)", "{1,NULL}", false),
        ("2 <> ALL(nums)", "{}", true),
        ("id < ALL(nums)", "{3,4}", true),
        ("id = ANY('{1,2}')", "{}", true),
        ("id = ANY(ARRAY[1, 5])", "{}", false),
        ("id = ANY($1)", "{}", true),
    ];
    for (sql, value, expected) in cases {
        let clause = parse_with(sql, &["{2,4}"][..usize::from(sql.contains('$'))]);
        assert_eq!(eval(&clause, &nums(value)), *expected, "{sql} on {value}");
    }
    assert!(!eval(&parse("2 = ANY(nums)"), &[]));
    table(
        "'b' = ANY(tags)",
        &[(&[(TAGS, "{a,b}")], true), (&[(TAGS, "{a}")], false)],
    );
}

#[test]
fn where_clause_numeric_float_and_bool_types() {
    table(
        "price = 1.5",
        &[(&[(PRICE, "1.50")], true), (&[(PRICE, "1.51")], false)],
    );
    table(
        "price > 10",
        &[(&[(PRICE, "10.000001")], true), (&[(PRICE, "9.99")], false)],
    );
    table("price + 0.1 = 0.3", &[(&[(PRICE, "0.2")], true)]);
    table(
        "price = 'NaN'",
        &[(&[(PRICE, "NaN")], true), (&[(PRICE, "1")], false)],
    );
    table(
        "price > 1e20",
        &[(&[(PRICE, "Infinity")], true), (&[(PRICE, "5")], false)],
    );
    table("ratio = 0.1", &[(&[(RATIO, "0.1")], true)]);
    table(
        "ratio > 1",
        &[
            (&[(RATIO, "1.5")], true),
            (&[(RATIO, "-Infinity")], false),
            (&[(RATIO, "NaN")], true),
        ],
    );
    // float4 0.1 is not float8 0.1, in Postgres too.
    table("score = 0.1", &[(&[(SCORE, "0.1")], false)]);
    table("score = 0.5", &[(&[(SCORE, "0.5")], true)]);
    table("score = 0.1::float4", &[(&[(SCORE, "0.1")], true)]);
    table("flag", &[(&[(FLAG, "t")], true), (&[(FLAG, "f")], false)]);
    table("flag = 'yes'", &[(&[(FLAG, "t")], true)]);
    table("flag <> true", &[(&[(FLAG, "f")], true)]);
    table(
        "flag > false",
        &[(&[(FLAG, "t")], true), (&[(FLAG, "f")], false)],
    );
    table("flag::int4 = 1", &[(&[(FLAG, "t")], true)]);
    table("flag::text = 'true'", &[(&[(FLAG, "t")], true)]);
}

#[test]
fn where_clause_arithmetic() {
    let id = |v: &'static str| -> Vec<(usize, &'static str)> { vec![(ID, v)] };
    let cases: &[(&str, &str, bool)] = &[
        ("id + 1 = 6", "5", true),
        ("id - 1 = 4", "5", true),
        ("id * 2 = 10", "5", true),
        ("id / 2 = 2", "5", true),
        ("id % 3 = 2", "5", true),
        ("-id = -5", "5", true),
        ("+id = 5", "5", true),
        ("@ id = 5", "-5", true),
        ("id ^ 2 = 25", "5", true),
        ("|/ id = 3", "9", true),
        ("||/ id = 3", "27", true),
        ("id / 2.0 = 2.5", "5", true),
        ("id & 3 = 1", "5", true),
        ("id | 2 = 7", "5", true),
        ("id # 1 = 4", "5", true),
        ("~id = -6", "5", true),
        ("id << 2 = 20", "5", true),
        ("id >> 1 = 2", "5", true),
        ("(id + 1) * 2 = 12", "5", true),
        ("id + 1 * 2 = 7", "5", true),
        // Errors (overflow, division by zero, square root of a negative)
        // make the row not match.
        ("id * 2147483647 > 0", "5", false),
        ("id / (id - 5) = 1", "5", false),
        ("id % 0 = 1", "5", false),
        ("|/ id > 0", "-1", false),
        ("id + 1 = 0", "2147483647", false),
        ("@ id > 0", "-2147483648", false),
    ];
    for (sql, value, expected) in cases {
        let clause = parse(sql);
        assert_eq!(eval(&clause, &id(value)), *expected, "{sql} on {value}");
        assert!(!eval(&clause, &[]), "{sql} on NULL");
    }
    // Left-associative, as in Postgres: (2 ^ 3) ^ 2.
    table("2 ^ 3 ^ 2 = 64", &[(&[], true)]);
    table("big * 2 > 4294967296", &[(&[(BIG, "2147483649")], true)]);
    table(
        "small + 1 = 32767",
        &[(&[(SMALL, "32766")], true), (&[(SMALL, "32767")], false)],
    );
    table("price * 2 = 3", &[(&[(PRICE, "1.5")], true)]);
    table("price / 3 > 0.33", &[(&[(PRICE, "1")], true)]);
    table("ratio * 2 = 3", &[(&[(RATIO, "1.5")], true)]);
    table("ratio / 0 = 1", &[(&[(RATIO, "1.5")], false)]);
}

#[test]
fn where_clause_dates_times_and_intervals() {
    table(
        "day = '2024-01-02'",
        &[
            (&[(DAY, "2024-01-02")], true),
            (&[(DAY, "2024-01-03")], false),
        ],
    );
    table("day + 1 = '2024-01-03'", &[(&[(DAY, "2024-01-02")], true)]);
    table(
        "day - 1 = date '2024-01-01'",
        &[(&[(DAY, "2024-01-02")], true)],
    );
    table(
        "day - date '2024-01-01' = 31",
        &[(&[(DAY, "2024-02-01")], true)],
    );
    table(
        "day < 'infinity'",
        &[
            (&[(DAY, "2024-01-02")], true),
            (&[(DAY, "infinity")], false),
        ],
    );
    table(
        "day > '0044-03-15 BC'",
        &[
            (&[(DAY, "0001-01-01")], true),
            (&[(DAY, "0100-01-01 BC")], false),
        ],
    );
    table(
        "at > '10:00'",
        &[(&[(AT, "10:00:00.5")], true), (&[(AT, "09:59:59")], false)],
    );
    table(
        "at + interval '1 hour' = '00:30'",
        &[(&[(AT, "23:30:00")], true)],
    );
    table(
        "ts >= '2024-01-01 00:00:00'",
        &[
            (&[(TS, "2024-01-01 00:00:00")], true),
            (&[(TS, "2023-12-31 23:59:59.999999")], false),
        ],
    );
    table(
        "ts = day",
        &[(&[(TS, "2024-01-02 00:00:00"), (DAY, "2024-01-02")], true)],
    );
    table(
        "ts + interval '1 month' = '2024-02-29'",
        &[(&[(TS, "2024-01-31 00:00:00")], true)],
    );
    table(
        "ts - ts = interval '0'",
        &[(&[(TS, "2024-01-31 00:00:00")], true)],
    );
    table(
        "day + at = '2024-01-02 10:00'",
        &[(&[(DAY, "2024-01-02"), (AT, "10:00:00")], true)],
    );
    table(
        "tstz = '2024-01-02 05:04:05+02'",
        &[
            (&[(TSTZ, "2024-01-02 03:04:05+00")], true),
            (&[(TSTZ, "2024-01-02 05:04:05+00")], false),
        ],
    );
    table(
        "tstz > '2024-01-02T03:04:05Z'",
        &[(&[(TSTZ, "2024-01-02 03:04:05.001+00")], true)],
    );
    table(
        "tstz - interval '1 day' < '2024-01-01'",
        &[
            (&[(TSTZ, "2024-01-01 12:00:00+00")], true),
            (&[(TSTZ, "2024-01-02 12:00:00+00")], false),
        ],
    );
    table(
        "tstz > ts",
        &[(
            &[
                (TSTZ, "2024-01-02 03:04:06+00"),
                (TS, "2024-01-02 03:04:05"),
            ],
            true,
        )],
    );
    table(
        "tstz - tstz = '0'",
        &[(&[(TSTZ, "2024-01-02 03:04:06+00")], true)],
    );
    table(
        "span = '1 day'",
        &[
            (&[(SPAN, "P1D")], true),
            (&[(SPAN, "PT24H")], true),
            (&[(SPAN, "P2D")], false),
        ],
    );
    table(
        "span > interval '1 month'",
        &[(&[(SPAN, "P31D")], true), (&[(SPAN, "P30D")], false)],
    );
    table("span = interval '30 days'", &[(&[(SPAN, "P1M")], true)]);
    table("span * 2 = '3 days'", &[(&[(SPAN, "P1DT12H")], true)]);
    table("-span = '-1 day'", &[(&[(SPAN, "P1D")], true)]);
    table("span + span = '2 days'", &[(&[(SPAN, "P1D")], true)]);
    table(
        "justify_hours(span) = '1 day 1 hour'",
        &[(&[(SPAN, "PT25H")], true)],
    );
    table(
        "justify_days(span) = '1 mon 5 days'",
        &[(&[(SPAN, "P35D")], true)],
    );
    table(
        "justify_interval(span) > '0'",
        &[(&[(SPAN, "P1M-1D")], true)],
    );
    table(
        "ts::date = '2024-01-02'",
        &[(&[(TS, "2024-01-02 23:00:00")], true)],
    );
    table(
        "tstz::text = '2024-01-02 03:04:05+00'",
        &[(&[(TSTZ, "2024-01-02 03:04:05+00")], true)],
    );
    table("span::text = 'P1DT2H'", &[(&[(SPAN, "P1DT2H")], true)]);
    // A value that does not parse is an error, hence no match.
    table("day = '2024-01-02'", &[(&[(DAY, "garbage")], false)]);
}

#[test]
fn where_clause_uuid_and_casts() {
    let uid = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
    table(
        "uid = 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'",
        &[(&[(UID, uid)], true)],
    );
    table(
        "uid::text = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
        &[(&[(UID, uid)], true)],
    );
    table(
        "uid > '00000000-0000-0000-0000-000000000000'",
        &[(&[(UID, uid)], true)],
    );
    table("id::text = '5'", &[(&[(ID, "5")], true)]);
    table(
        "name::int4 = 5",
        &[(&[(NAME, " 5")], true), (&[(NAME, "five")], false)],
    );
    table("CAST(price AS float8) > 1.4", &[(&[(PRICE, "1.5")], true)]);
    table("int4('5') = id", &[(&[(ID, "5")], true)]);
    table("text(id) = '5'", &[(&[(ID, "5")], true)]);
    table(
        "price::int4 = 2",
        &[(&[(PRICE, "1.5")], true), (&[(PRICE, "2.5")], false)],
    );
    table(
        "ratio::int8 = 2",
        &[(&[(RATIO, "2.5")], true), (&[(RATIO, "1.5")], true)],
    );
    table("id::float8 / 2 = 2.5", &[(&[(ID, "5")], true)]);
    table(
        "mood::text = 'happy'",
        &[(&[(MOOD, "happy")], true), (&[(MOOD, "sad")], false)],
    );
    table(
        "doc::text = '{\"a\": 1}'",
        &[(&[(DOC, "{\"a\": 1}")], true)],
    );
    table(
        "doc IS NOT NULL AND pt IS NULL",
        &[
            (&[(DOC, "{}")], true),
            (&[(DOC, "{}"), (PT, "(1,2)")], false),
        ],
    );
    table("mood IS NULL", &[(&[], true), (&[(MOOD, "sad")], false)]);
    table("'{1,2}'::int4[] = nums", &[(&[(NUMS, "{1,2}")], true)]);
    table("nums::text[] @> '{2}'", &[(&[(NUMS, "{1,2}")], true)]);
    table(
        "tags::text = '{a,\"b c\"}'",
        &[(&[(TAGS, "{a,\"b c\"}")], true)],
    );
}

#[test]
fn where_clause_arrays() {
    let nums = |v: &'static str| -> Vec<(usize, &'static str)> { vec![(NUMS, v)] };
    let cases: &[(&str, &str, bool)] = &[
        ("nums = '{1,2}'", "{1,2}", true),
        ("nums = '{1,2}'", "{2,1}", false),
        ("nums = '{1,2}'", "[0:1]={1,2}", false),
        ("nums <> '{1,2}'", "{1}", true),
        ("nums < '{1,3}'", "{1,2,9}", true),
        ("nums > '{1}'", "{1,NULL}", true),
        ("nums = '{1,NULL}'", "{1,NULL}", true),
        ("nums @> '{1}'", "{1,2}", true),
        ("nums @> '{1,3}'", "{1,2}", false),
        ("nums @> '{}'", "{}", true),
        ("nums @> '{NULL}'", "{1,NULL}", false),
        ("nums <@ '{1,2,3}'", "{3,1}", true),
        ("'{1,2,3}' @> nums", "{3,1}", true),
        ("nums && '{5,2}'", "{1,2}", true),
        ("nums && '{5,6}'", "{1,2}", false),
        ("nums && '{NULL}'", "{1,NULL}", false),
        ("nums @> ARRAY[1, 2]", "{{1,2},{3,4}}", true),
        ("nums || 3 = '{1,2,3}'", "{1,2}", true),
        ("0 || nums = '{0,1,2}'", "{1,2}", true),
        ("nums || '{3}' = '{1,2,3}'", "{1,2}", true),
        ("nums || nums = '{1,1}'", "{1}", true),
        ("array_cat(nums, ARRAY[3]) = '{1,2,3}'", "{1,2}", true),
        ("array_append(nums, 3) = '{1,2,3}'", "{1,2}", true),
        ("array_prepend(0, nums) = '{0,1,2}'", "{1,2}", true),
        ("array_ndims(nums) = 2", "{{1,2},{3,4}}", true),
        ("array_ndims(nums) IS NULL", "{}", true),
        ("nums = ARRAY[[1,2],[3,4]]", "{{1,2},{3,4}}", true),
        ("nums::text = '{1,2}'", "{1,2}", true),
        ("nums = '{1,2}'", "{1,x}", false),
    ];
    for (sql, value, expected) in cases {
        let clause = parse(sql);
        assert_eq!(eval(&clause, &nums(value)), *expected, "{sql} on {value}");
        assert_canonical_is_stable(&clause);
    }
    table(
        "tags @> '{\"a b\"}'",
        &[
            (&[(TAGS, "{x,\"a b\"}")], true),
            (&[(TAGS, "{a,b}")], false),
        ],
    );
    table("tags @> ARRAY['a']", &[(&[(TAGS, "{a}")], true)]);
    table(
        "array_append(tags, 'z') = '{a,z}'",
        &[(&[(TAGS, "{a}")], true), (&[], false)],
    );
    // array_append is not strict: a NULL array behaves as empty.
    table("array_append(tags, 'z') = '{z}'", &[(&[], true)]);
}

#[test]
fn where_clause_coalesce_greatest_least() {
    table(
        "coalesce(name, code, 'none') = 'none'",
        &[(&[], true), (&[(CODE, "c")], false)],
    );
    table("coalesce(name, code) = 'c'", &[(&[(CODE, "c")], true)]);
    table(
        "greatest(id, 3) = 3",
        &[(&[(ID, "1")], true), (&[(ID, "5")], false), (&[], true)],
    );
    table("least(id, 3, big) = 2", &[(&[(ID, "5"), (BIG, "2")], true)]);
    table(
        "greatest(name, 'b') = 'b'",
        &[(&[(NAME, "B")], true), (&[(NAME, "c")], false)],
    );
    table(
        "least(day, '2024-01-01') = '2023-01-01'",
        &[(&[(DAY, "2023-01-01")], true)],
    );
    table("greatest(NULL, id) IS NULL", &[(&[], true)]);
}

#[test]
fn where_clause_params_are_typed_from_context() {
    let clause = parse_with("id = $1", &["007"]);
    assert!(eval(&clause, &[(ID, "7")]));
    let (sql, values) = clause.to_sql();
    assert_eq!(sql, "(\"id\" = $1::int4)");
    assert_eq!(values, vec!["7".to_string()]);

    let clause = parse_with("name = $1 AND tstz > $2", &["x", "2024-01-01 02:00:00+02"]);
    let (sql, values) = clause.to_sql();
    assert_eq!(
        sql,
        "((\"name\" = $1::text COLLATE \"C\") AND (\"tstz\" > $2::timestamptz))"
    );
    assert_eq!(
        values,
        vec!["x".to_string(), "2024-01-01 00:00:00+00".to_string()]
    );
    assert!(eval(
        &clause,
        &[(NAME, "x"), (TSTZ, "2024-01-01 00:00:01+00")]
    ));

    // A parameter with no typing context is text; a cast types it.
    let clause = parse_with("$1 IS NOT NULL AND $2::int8 = big", &["a", "5"]);
    assert_eq!(
        clause.to_sql().0,
        "(($1::text IS NOT NULL) AND ($2::int8 = \"big\"))"
    );
    assert!(eval(&clause, &[(BIG, "5")]));

    // Reused parameters keep their first type.
    let clause = parse_with("id = $1 OR big = $1", &["5"]);
    assert_eq!(
        clause.to_sql().0,
        "((\"id\" = $1::int4) OR (\"big\" = $1::int4::int8))"
    );
    assert!(eval(&clause, &[(BIG, "5")]));

    let clause = parse_with("id IN ($1, $2)", &["1", "2"]);
    assert!(eval(&clause, &[(ID, "2")]));
    let clause = parse_with("nums @> $1", &["{1,2}"]);
    assert_eq!(
        clause.to_sql(),
        ("(\"nums\" @> $1::int4[])".into(), vec!["{1,2}".into()])
    );
    let clause = parse_with("uid = $1", &["A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"]);
    assert_eq!(
        clause.to_sql().1,
        vec!["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".to_string()]
    );
}

#[test]
fn where_clause_param_errors() {
    assert_eq!(
        error("id = $1"),
        "At location 5: parameter $1 was not provided"
    );
    assert_eq!(
        error_with("id = $2", &["1", "2"]),
        "At location 0: parameter value for $1 was not used"
    );
    assert_eq!(
        error_with("id = $1", &["1", "2"]),
        "At location 0: parameter value for $2 was not used"
    );
    assert_eq!(
        error_with("id = $1", &["abc"]),
        "At location 5: invalid syntax for type int4: abc"
    );
    assert_eq!(
        error_with("id = $1 AND name = $1", &["1"]),
        "At location 17: Could not select an operator overload"
    );
    let mut gapped = BTreeMap::new();
    gapped.insert(1, "1".to_string());
    gapped.insert(3, "3".to_string());
    let e = WhereClause::parse("id = $1", &columns(), &gapped).unwrap_err();
    assert_eq!(
        e.message,
        "Parameters must be numbered sequentially, starting from 1"
    );
    assert_eq!(e.field, WhereErrorField::Params);
    assert_eq!(e.field.as_str(), "params");
    let mut zero = BTreeMap::new();
    zero.insert(0, "1".to_string());
    assert!(WhereClause::parse("id = $0", &columns(), &zero).is_err());
}

#[test]
fn where_clause_canonical_forms_identify_meaning() {
    let same = |a: &str, b: &str, params_b: &[&str]| {
        assert_eq!(
            parse(a).canonical(),
            parse_with(b, params_b).canonical(),
            "{a} vs {b}"
        );
    };
    same("id=1", "ID   =   1", &[]);
    same("id = 1", "\"id\" = 1", &[]);
    same("id = 1", "id = $1", &["1"]);
    same("id = 1", "id = '001'", &[]);
    same("id = 1", "id IN (1)", &[]);
    same("id BETWEEN 1 AND 3", "1 <= id AND id <= 3", &[]);
    same(
        "name = 'x' and flag = true",
        "name = $1 AND flag = $2",
        &["x", "t"],
    );
    same("big = 5", "big = 5::int8", &[]);
    same(
        "tstz = '2024-01-01 02:00+02'",
        "tstz = $1",
        &["2024-01-01 00:00:00Z"],
    );
    same("id = 1 + 1", "id = 2", &[]);
    same("name IS NULL", "name ISNULL", &[]);
    let differ =
        |a: &str, b: &str| assert_ne!(parse(a).canonical(), parse(b).canonical(), "{a} vs {b}");
    differ("id = 1", "id = 2");
    differ("id = 1", "big = 1");
    differ("name = 'x'", "name = 'X'");
    differ("\"Mixed Case\" = 'x'", "name = 'x'");
    differ("id < 1", "id <= 1");
    assert_eq!(parse("id = 1").canonical(), "(\"id\" = '1'::int4)");
}

#[test]
fn where_clause_to_sql_never_echoes_user_text() {
    assert_eq!(
        error("1=1) OR (1=1"),
        "At location 18: syntax error at or near \")\""
    );
    let attempts = [
        "name = 'x'' OR 1=1 --'",
        "name = 'x''); DROP TABLE users; --'",
        "name = E'\\\\'' OR true --'",
        "name = $$'; DROP TABLE t; --$$",
    ];
    for sql in attempts {
        let clause = parse(sql);
        let (rendered, values) = clause.to_sql();
        assert!(values.is_empty());
        assert!(!rendered.contains(sql), "{rendered}");
        // The rendered SQL re-parses to the same single comparison: the
        // literal stays one literal, so no other name value matches.
        let again = parse(&rendered);
        assert_eq!(again.canonical(), clause.canonical());
        assert_eq!(again.referenced_columns(), &[NAME]);
        assert!(!eval(&again, &[(NAME, "x")]), "{rendered}");
        assert!(!eval(&again, &[(ID, "1")]), "{rendered}");
    }
    // With standard strings a backslash is an ordinary character: this is
    // the user's own OR, and it renders with the backslash safely escaped.
    let clause = parse("name = 'a\\' OR flag");
    assert_eq!(
        clause.to_sql().0,
        "((\"name\" = E'a\\\\'::text COLLATE \"C\") OR \"flag\")"
    );
    let clause = parse("name = 'a\\b'");
    assert_eq!(
        clause.to_sql().0,
        "(\"name\" = E'a\\\\b'::text COLLATE \"C\")"
    );
    assert!(eval(&clause, &[(NAME, "a\\b")]));
    // Injection through a parameter stays a bound value.
    let clause = parse_with("name = $1", &["x' OR '1'='1"]);
    assert_eq!(
        clause.to_sql(),
        (
            "(\"name\" = $1::text COLLATE \"C\")".into(),
            vec!["x' OR '1'='1".into()]
        )
    );
    assert!(eval(&clause, &[(NAME, "x' OR '1'='1")]));
    // Column names are always quoted, whatever they contain.
    let cols = vec![column("we\"ird", "int4")];
    let clause = WhereClause::parse("\"we\"\"ird\" = 1", &cols, &BTreeMap::new()).unwrap();
    assert_eq!(clause.to_sql().0, "(\"we\"\"ird\" = '1'::int4)");
    // Text orderings ask Postgres for the bytewise order we evaluate with.
    assert_eq!(
        parse("name < 'b'").to_sql().0,
        "(\"name\" < 'b'::text COLLATE \"C\")"
    );
    // Equality too: under a nondeterministic collation `=` is not bytewise.
    assert_eq!(
        parse("name = 'b'").to_sql().0,
        "(\"name\" = 'b'::text COLLATE \"C\")"
    );
    // Shape identity is unchanged by that.
    assert_eq!(parse("name = 'b'").canonical(), "(\"name\" = 'b'::text)");
}

#[test]
fn where_clause_index_keys() {
    let key = |sql: &str| parse(sql).index_key();
    let some = |column: usize, values: &[&str]| {
        Some((
            column,
            values.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
        ))
    };
    assert_eq!(key("id = 5"), some(ID, &["5"]));
    assert_eq!(key("5 = id"), some(ID, &["5"]));
    assert_eq!(key("id = '007'"), some(ID, &["7"]));
    assert_eq!(key("id IN (1, 2, 2)"), some(ID, &["1", "2"]));
    assert_eq!(key("id = 1 OR id = 3"), some(ID, &["1", "3"]));
    assert_eq!(key("id = 1 AND name = 'x'"), some(ID, &["1"]));
    assert_eq!(key("name = 'x' AND id > 3"), some(NAME, &["x"]));
    assert_eq!(
        key("id > 3 AND (flag = true AND name LIKE 'a%')"),
        some(FLAG, &["t"])
    );
    assert_eq!(
        key("uid = 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'"),
        some(UID, &["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"])
    );
    assert_eq!(key("big = 5"), some(BIG, &["5"]));
    assert_eq!(key("code = 'v'"), some(CODE, &["v"]));
    assert_eq!(key("small = 100000"), some(SMALL, &[]));
    // Folded to NULL (a strict operator of a NULL literal): no row matches.
    assert_eq!(key("id = NULL"), None);
    assert_eq!(key("id IN (1, NULL)"), some(ID, &["1"]));
    assert_eq!(
        key("tstz = '2024-01-01 10:00:00+02'"),
        some(TSTZ, &["2024-01-01 08:00:00+00"])
    );
    assert_eq!(key("day = '2024-1-2'"), some(DAY, &["2024-01-02"]));
    assert_eq!(
        parse_with("id = $1", &["42"]).index_key(),
        some(ID, &["42"])
    );
    assert_eq!(key("flag"), some(FLAG, &["t"]));
    assert_eq!(key("NOT flag AND id > 1"), some(FLAG, &["f"]));
    assert_eq!(key("flag IS FALSE"), some(FLAG, &["f"]));
    for none in [
        "id = 1 OR name = 'x'",
        "id > 5",
        "id <> 5",
        "NOT id = 5",
        "id NOT IN (1, 2)",
        "price = 1.0",
        "ratio = 1",
        "padded = 'a'",
        "span = '1 day'",
        "nums = '{1}'",
        "id + 0 = 5",
        "id::text = '5'",
        "flag IS NOT TRUE",
        "NOT (flag AND id = 1)",
    ] {
        assert_eq!(key(none), None, "{none}");
    }
    // Soundness: a row printing a key value matches; the key predicts it.
    for (sql, row) in [
        ("id = 5 AND name = 'x'", vec![(ID, "5"), (NAME, "x")]),
        (
            "tstz = '2024-01-01 10:00:00+02'",
            vec![(TSTZ, "2024-01-01 08:00:00+00")],
        ),
        ("flag = 'yes'", vec![(FLAG, "t")]),
    ] {
        let clause = parse(sql);
        let (column, values) = clause.index_key().unwrap();
        let text = row
            .iter()
            .find(|(c, _)| *c == column)
            .map(|(_, v)| *v)
            .unwrap();
        assert!(values.iter().any(|v| v == text), "{sql}");
        assert!(eval(&clause, &row), "{sql}");
    }
}

#[test]
fn where_clause_referenced_columns() {
    assert_eq!(
        parse("id = 1 AND (name = 'x' OR id = 2) AND tags @> '{a}'").referenced_columns(),
        &[ID, NAME, TAGS]
    );
    assert!(parse("true").referenced_columns().is_empty());
}

#[test]
fn where_clause_error_messages_match_electric() {
    let cases: &[(&str, &str)] = &[
        ("foo = 1", "At location 0: unknown reference foo"),
        (
            "id = 1 AND \"Foo\" = 2",
            "At location 11: unknown reference \"Foo\"",
        ),
        ("t.id = 1", "At location 0: unknown reference t.id"),
        (
            "name + 1 > 10",
            "At location 5: Could not select an operator overload",
        ),
        (
            "name = 1",
            "At location 5: Could not select an operator overload",
        ),
        (
            "mood = 'happy'",
            "At location 5: Could not select an operator overload",
        ),
        (
            "pt = 'x'",
            "At location 3: Could not select an operator overload",
        ),
        (
            "nums @> '{a}'",
            "At location 8: invalid syntax for type int4[]: {a}",
        ),
        ("id", "WHERE clause must return a boolean"),
        ("name", "WHERE clause must return a boolean"),
        ("'true'", "WHERE clause must return a boolean"),
        ("NULL", "WHERE clause must return a boolean"),
        (
            "now() > tstz",
            "At location 0: unknown or unsupported function now/0",
        ),
        (
            "random() > 0.5",
            "At location 0: unknown or unsupported function random/0",
        ),
        (
            "lower(id) = 'x'",
            "At location 0: Could not select a function overload for lower(int4)",
        ),
        (
            "count(*) > 1",
            "At location 0: aggregation is not supported in this context",
        ),
        (
            "sum(DISTINCT id) > 1",
            "At location 0: aggregation is not supported in this context",
        ),
        // Subqueries are typed (tests_subquery.rs); without a catalog every
        // table they read is unknown.
        (
            "id IN (SELECT id FROM t)",
            "Table \"public\".\"t\" does not exist. If the table name contains capitals or special characters you must quote it.",
        ),
        (
            "EXISTS (SELECT 1)",
            "At location 30: Expected a plain column reference",
        ),
        ("id::foo = 1", "At location 4: unsupported type foo"),
        (
            "name::varchar(3) = 'x'",
            "At location 6: unsupported type varchar with modifiers",
        ),
        (
            "id = 'abc'",
            "At location 5: invalid syntax for type int4: abc",
        ),
        (
            "'abc'::int4 = id",
            "At location 0: could not cast value \"abc\" from text to int4",
        ),
        (
            "uid::int4 = 1",
            "At location 0: unknown cast from type uuid to type int4",
        ),
        (
            "id IS TRUE",
            "At location 3: argument of IS TRUE must be bool, not int4",
        ),
        (
            "id = ANY(5)",
            "At location 9: argument of ANY must be an array",
        ),
        ("name ~ 'a'", "At location 5: unknown binary operator \"~\""),
        (
            "name SIMILAR TO 'a'",
            "At location 5: expression \"~\" of :AEXPR_SIMILAR is not currently supported",
        ),
        (
            "CASE WHEN flag THEN true END",
            "At location 0: CaseExpr is not supported in this context",
        ),
        (
            "CURRENT_DATE > day",
            "At location 0: SQLValueFunction is not supported in this context",
        ),
        (
            "nums[1] = 1",
            "At location 0: A_Indirection is not supported in this context",
        ),
        (
            "(id, big) = (1, 2)",
            "At location 0: RowExpr is not supported in this context",
        ),
        (
            "id = 1 AND name",
            "At location 11: reference name of type text is not castable to bool",
        ),
        (
            "id = 1 / 0",
            "At location 7: Failed to apply function to constant arguments",
        ),
        (
            "id = 1; DELETE FROM t",
            "unescaped \";\" causing statement split",
        ),
        (
            "id = 1 GROUP BY id",
            "malformed query ending with SQL clauses",
        ),
        ("id = ", "At location 20: syntax error at end of input"),
        (
            "id = 'abc",
            "At location 20: unterminated quoted string at or near \"'abc\"",
        ),
        ("id == 1", "At location 3: unknown binary operator \"==\""),
        ("id = = 1", "At location 20: syntax error at or near \"=\""),
        (
            "name LIKE 'a' ESCAPE '!'",
            "At location 5: unknown or unsupported function like_escape/2",
        ),
        (
            "B'101' = id",
            "At location 0: BitString values are not supported",
        ),
        (
            "ARRAY[1, 'x'::text] = nums",
            "At location 0: ARRAY types int4 and text cannot be matched",
        ),
        ("tstz > now", "At location 7: unknown reference now"),
    ];
    for (sql, expected) in cases {
        assert_eq!(&error(sql), expected, "{sql}");
    }
}

/// Deterministic xorshift, so failures replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

fn exercise(clause: &WhereClause, rng: &mut Rng) {
    let values = [
        "1",
        "-5",
        "abc",
        "",
        "{1,NULL}",
        "{{1}}",
        "P1D",
        "2024-01-01 00:00:00+00",
        "t",
        "NaN",
        "\u{0}",
        "{a,\"b\"}",
        "2024-01-01",
        "10:00",
        "1e400",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    ];
    let (rendered, _) = clause.to_sql();
    assert!(!rendered.is_empty());
    let _ = clause.index_key();
    for _ in 0..5 {
        let row: Vec<Option<&str>> = (0..columns().len())
            .map(|_| (!rng.next().is_multiple_of(4)).then(|| rng.pick(&values)))
            .collect();
        let _ = clause.matches(&|i| row.get(i).copied().flatten());
    }
    assert_canonical_is_stable(clause);
}

#[test]
fn where_clause_never_panics_on_garbage() {
    let soup = [
        "id",
        "name",
        "tags",
        "=",
        "<>",
        "+",
        "-",
        "*",
        "/",
        "^",
        "||",
        "@>",
        "~~",
        "|/",
        "@",
        "~",
        "AND",
        "OR",
        "NOT",
        "IS",
        "NULL",
        "TRUE",
        "IN",
        "BETWEEN",
        "LIKE",
        "ANY",
        "ALL",
        "(",
        ")",
        "[",
        "]",
        ",",
        "::",
        "int4",
        "text[]",
        "'x'",
        "1",
        "-1",
        "1e400",
        "$1",
        "ARRAY",
        "coalesce(",
        "CAST(",
        "AS",
        "DISTINCT",
        "FROM",
        ";",
        "'",
        "\"",
        "E'\\",
        "$$",
        "--",
        "/*",
        "é",
        "\u{0}",
        "SELECT",
    ];
    let mut rng = Rng(0x5eed_1234_abcd_9876);
    for _ in 0..2000 {
        let len = 1 + rng.next() % 10;
        let sql: Vec<&str> = (0..len).map(|_| rng.pick(&soup)).collect();
        let sql = sql.join(if rng.next().is_multiple_of(2) {
            " "
        } else {
            ""
        });
        let params = params(&["5", "{1}"][..(rng.next() % 3) as usize]);
        if let Ok(clause) = WhereClause::parse(&sql, &columns(), &params) {
            exercise(&clause, &mut rng);
        }
    }
    // Grammar-shaped clauses, operands drawn from one type family, reach
    // typing and evaluation far more often.
    let families: [(&[&str], &[&str]); 6] = [
        (
            &[
                "id",
                "big",
                "small",
                "1",
                "-2147483648",
                "(id + 1)",
                "coalesce(id, 1)",
                "greatest(id, big)",
                "$1",
                "'5'",
                "NULL",
                "name::int4",
            ],
            &[
                "=",
                "<>",
                "<",
                ">=",
                "+",
                "-",
                "*",
                "/",
                "%",
                "^",
                "&",
                "<<",
                "IS DISTINCT FROM",
            ],
        ),
        (
            &[
                "name",
                "code",
                "padded",
                "'x'",
                "lower(name)",
                "id::text",
                "$1",
                "NULL",
                "mood::text",
            ],
            &["=", "<", ">=", "||", "LIKE", "ILIKE", "IS DISTINCT FROM"],
        ),
        (
            &["price", "ratio", "score", "1.5", "1e3", "'NaN'", "id", "$1"],
            &["=", "<", "+", "-", "*", "/", "^"],
        ),
        (
            &[
                "day",
                "ts",
                "tstz",
                "'2024-01-01'",
                "day + 1",
                "tstz - interval '1 day'",
                "span",
                "'1 day'",
                "at",
                "$1",
            ],
            &["=", "<", ">=", "+", "-"],
        ),
        (
            &[
                "tags",
                "nums",
                "'{1,2}'",
                "ARRAY[1,2]",
                "array_append(nums, 1)",
                "'{a}'",
                "$1",
            ],
            &["=", "@>", "<@", "&&", "||", "<"],
        ),
        (
            &["flag", "true", "NULL", "$1", "(id = 1)"],
            &["=", "<>", "AND", "OR", "IS DISTINCT FROM"],
        ),
    ];
    let mut typed = 0;
    for _ in 0..4000 {
        let mut sql = String::new();
        for term in 0..1 + rng.next() % 3 {
            if term > 0 {
                sql.push_str(rng.pick(&[" AND ", " OR "]));
            }
            if rng.next().is_multiple_of(5) {
                sql.push_str("NOT ");
            }
            let (operands, operators) = families[(rng.next() % families.len() as u64) as usize];
            let (left, op, right) = (rng.pick(operands), rng.pick(operators), rng.pick(operands));
            sql.push_str(&match rng.next() % 8 {
                0 => format!("{left} IN ({right}, {left})"),
                1 => format!("{left} BETWEEN {right} AND {left}"),
                2 => format!("{left} {op} ANY({right})"),
                3 => format!("{left} IS NULL"),
                4 => format!("({left} {op} {right}) = {right}"),
                _ => format!("({left} {op} {right})"),
            });
        }
        let value = rng.pick(&["5", "x", "{1}", "P1D", "2024-01-01", "t"]);
        let values = [value];
        let params = params(if sql.contains("$1") { &values[..] } else { &[] });
        if let Ok(clause) = WhereClause::parse(&sql, &columns(), &params) {
            typed += 1;
            exercise(&clause, &mut rng);
        }
    }
    // The generator must exercise the valid path too, not only errors.
    assert!(typed > 800, "only {typed} generated clauses type-checked");
}

#[test]
fn where_clause_bounds_nesting_and_size() {
    let deep = format!("{}id = 1{}", "(".repeat(1000), ")".repeat(1000));
    assert!(error(&deep).ends_with("stack depth limit exceeded"));
    let nots = format!("{}flag", "NOT ".repeat(1000));
    assert!(error(&nots).ends_with("stack depth limit exceeded"));
    let wide = (0..3000)
        .map(|i| format!("id = {i}"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let clause = parse(&wide);
    assert!(eval(&clause, &[(ID, "2999")]));
    assert_eq!(
        clause.index_key().map(|(c, v)| (c, v.len())),
        Some((ID, 3000))
    );
    let list = (0..3000)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    assert!(eval(
        &parse(&format!("id NOT IN ({list})")),
        &[(ID, "3000")]
    ));
}

#[test]
fn where_clause_locations_count_bytes_for_typing_and_characters_for_syntax() {
    // "é" is two bytes and one character.
    assert_eq!(
        error("name = 'é' AND foo = 1"),
        "At location 16: unknown reference foo"
    );
    assert_eq!(
        error("name = 'é' AND )"),
        "At location 30: syntax error at or near \")\""
    );
}

#[test]
fn where_clause_rendered_sql_is_explicit_postgres() {
    let cases: &[(&str, &[&str], &str)] = &[
        ("small = 1", &[], "(\"small\"::int4 = '1'::int4)"),
        // Postgres' own cross-type operator: no cast that could overflow.
        ("ts < tstz", &[], "(\"ts\" < \"tstz\")"),
        ("score = 0.1", &[], "(\"score\" = '0.1'::float8)"),
        (
            "name < ANY('{a,b}')",
            &[],
            "(\"name\" COLLATE \"C\" < ANY ('{a,b}'::text[]))",
        ),
        (
            "greatest(name, code) = 'x'",
            &[],
            "(GREATEST(\"name\" COLLATE \"C\", \"code\"::text) = 'x'::text COLLATE \"C\")",
        ),
        ("id = ANY($1)", &["{1,2}"], "(\"id\" = ANY ($1::int4[]))"),
        (
            "span * 2 > '1 day'",
            &[],
            "((\"span\" * '2'::float8) > 'P1D'::interval)",
        ),
        ("-id > @ big", &[], "((- \"id\")::int8 > (@ \"big\"))"),
        (
            "name LIKE 'a%' AND NOT flag",
            &[],
            "((\"name\" ~~ 'a%'::text COLLATE \"C\") AND (NOT \"flag\"))",
        ),
        (
            "like(name, 'a%')",
            &[],
            "like(\"name\", 'a%'::text COLLATE \"C\")",
        ),
        (
            "array_append(nums, 1) = ARRAY[id]",
            &[],
            "(array_append(\"nums\", '1'::int4) = ARRAY[\"id\"])",
        ),
        ("mood IS NOT NULL", &[], "(\"mood\" IS NOT NULL)"),
        // A strict operator of a NULL literal is NULL, folded as Postgres does.
        ("id = NULL", &[], "NULL::bool"),
    ];
    for (sql, values, expected) in cases {
        let clause = parse_with(sql, values);
        assert_eq!(clause.to_sql().0, *expected, "{sql}");
    }
}

#[test]
fn where_clause_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync + Clone + std::fmt::Debug>() {}
    assert_send_sync::<WhereClause>();
    let clause = parse("id = 1");
    let handle = std::thread::spawn(move || clause.matches(&|i| (i == ID).then_some("1")));
    assert!(handle.join().unwrap_or(false));
}

/// Every nesting shape, at the deepest nesting the parser accepts, is
/// typed, evaluated and rendered within half a default thread stack even
/// in an unoptimised build: user input cannot overflow a shard's stack.
#[test]
fn where_clause_deepest_accepted_nesting_fits_half_a_stack() {
    type Shape = fn(usize) -> String;
    let shapes: [(&str, Shape); 14] = [
        ("not", |d| {
            format!("{}flag{}", "NOT (".repeat(d), ")".repeat(d))
        }),
        ("not bare", |d| format!("{}flag", "NOT ".repeat(d))),
        ("sum", |d| {
            format!("{}id{} = 190", "(".repeat(d), " + 1)".repeat(d))
        }),
        ("concat", |d| format!("name{} = 'x'", " || 'a'".repeat(d))),
        ("lower", |d| {
            format!("{}name{} = 'x'", "lower(".repeat(d), ")".repeat(d))
        }),
        ("coalesce", |d| {
            format!("{}id{} = 1", "coalesce(".repeat(d), ", 1)".repeat(d))
        }),
        ("negation", |d| format!("{}id = 1", "- ".repeat(d))),
        ("is null", |d| {
            format!("{}flag{}", "(".repeat(d), " IS NULL)".repeat(d))
        }),
        ("distinct", |d| {
            format!(
                "{}flag{}",
                "(flag IS DISTINCT FROM ".repeat(d),
                ")".repeat(d)
            )
        }),
        ("and/or", |d| {
            format!("{}flag{}", "(flag AND (flag OR ".repeat(d), "))".repeat(d))
        }),
        ("cast", |d| {
            format!("{}id{} = 1", "(".repeat(d), ")::int8".repeat(d))
        }),
        ("in", |d| {
            format!("{}flag{}", "(flag IN (".repeat(d), "))".repeat(d))
        }),
        ("between", |d| {
            format!(
                "{}flag{}",
                "(flag BETWEEN false AND ".repeat(d),
                ")".repeat(d)
            )
        }),
        ("any", |d| {
            format!("{}flag{}", "(flag = ANY(ARRAY[".repeat(d), "]))".repeat(d))
        }),
    ];
    for (label, shape) in shapes {
        let deepest = (1..=super::parse::MAX_DEPTH)
            .rev()
            .find(|d| WhereClause::parse(&shape(*d), &columns(), &BTreeMap::new()).is_ok());
        let Some(depth) = deepest else {
            panic!("{label}: no depth parses")
        };
        assert!(
            depth >= 15,
            "{label}: only {depth} levels of nesting accepted"
        );
        assert!(WhereClause::parse(&shape(depth + 10), &columns(), &BTreeMap::new()).is_err());
        let sql = shape(depth);
        let survived = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || {
                let clause = WhereClause::parse(&sql, &columns(), &BTreeMap::new()).ok()?;
                let _ = clause.matches(&|_| Some("1"));
                let _ = clause.matches(&|_| Some("t"));
                Some(clause.to_sql().0.len() + clause.canonical().len())
            })
            .ok()
            .and_then(|handle| handle.join().ok())
            .flatten();
        assert!(survived.is_some(), "{label} at depth {depth}");
    }
}

// Disagreements with Postgres found by tests/it/where_differential.rs, each
// pinned here with the answer Postgres 15 gives.

#[test]
fn where_clause_numeric_has_postgres_precision() {
    let long = "123456789012345678901234567890.123456789";
    table(
        "price > 123456789012345678901234567890.12345678",
        &[(&[(PRICE, long)], true), (&[(PRICE, "1e28")], false)],
    );
    table(
        "price = 1e100",
        &[(&[(PRICE, &format!("1{}", "0".repeat(100)))], true)],
    );
    table(
        "(price * 2)::text = '246913578024691357802469135781.0'",
        &[(&[(PRICE, "123456789012345678901234567890.5")], true)],
    );
    table(
        "(price / 7)::text = '142857142857142857142857142857'",
        &[(&[(PRICE, "1e30")], true)],
    );
    table("(price % 3.3)::text = '0.1'", &[(&[(PRICE, "10")], true)]);
    table(
        "(price ^ 100)::text = '1267650600228229401496703205376.0000000000000000'",
        &[(&[(PRICE, "2")], true)],
    );
    table(
        "(price ^ -3)::text = '0.2962962962962963'",
        &[(&[(PRICE, "1.5")], true)],
    );
    // Products keep at most 16383 decimals (rounded), as numeric_mul does.
    table(
        "price * price = 0",
        &[(&[(PRICE, &format!("0.{}1", "0".repeat(9999)))], true)],
    );
    // numeric -> float8 raises where float8in does: no match.
    table("price::float8 > 0", &[(&[(PRICE, "1e400")], false)]);
    assert_eq!(
        error("price ^ 0.5 > 1"),
        "At location 6: numeric ^ is only supported with a constant integer exponent"
    );
    assert_eq!(
        error("price ^ price > 1"),
        "At location 6: numeric ^ is only supported with a constant integer exponent"
    );
}

#[test]
fn where_clause_timestamps_reach_the_end_of_their_range() {
    table(
        "tstz > '2024-01-01 00:00:00+00'",
        &[(&[(TSTZ, "294276-12-31 23:59:59.999999+00")], true)],
    );
    table(
        "ts::date = '294276-12-31'",
        &[(&[(TS, "294276-12-31 23:59:59.999999")], true)],
    );
    // Each step of timestamp + interval must stay in range.
    table(
        "(ts + span) IS NULL",
        &[(&[(TS, "294276-12-31 23:00:00"), (SPAN, "P1DT-24H")], false)],
    );
    table(
        "ts + span IS NOT NULL",
        &[(&[(TS, "294276-12-31 23:00:00"), (SPAN, "P1DT-24H")], false)],
    );
    // Infinite timestamps absorb any interval, even the most negative one.
    table(
        "tstz - span = tstz",
        &[(&[(TSTZ, "-infinity"), (SPAN, "P-2147483648D")], true)],
    );
    table("span - span = '0'", &[(&[(SPAN, "P-2147483648D")], true)]);
    // Postgres 15 wraps around rather than failing here.
    table(
        "(ts - '4713-11-24 00:00 BC')::text = 'P-104300820DT-8H-1M-49.551617S'",
        &[(&[(TS, "294276-12-31 23:59:59.999999")], true)],
    );
    // An infinite timestamp has no time of day: NULL, not an error.
    table("ts::time IS NULL", &[(&[(TS, "infinity")], true)]);
    // A date alone is not a time.
    table("name::time IS NULL", &[(&[(NAME, "2024-01-01")], false)]);
    table(
        "name::time = '10:00'",
        &[(&[(NAME, "2024-01-01 10:00")], true)],
    );
}

#[test]
fn where_clause_date_timestamp_comparisons_are_cross_type() {
    // A date past the timestamp range compares above every finite
    // timestamp, below infinity (date_cmp_timestamp), instead of failing.
    table(
        "day > ts",
        &[
            (&[(DAY, "5874897-12-31"), (TS, "2024-01-01 00:00:00")], true),
            (&[(DAY, "5874897-12-31"), (TS, "infinity")], false),
        ],
    );
    table(
        "day <> tstz",
        &[(
            &[(DAY, "5874897-12-31"), (TSTZ, "2024-01-01 00:00:00+00")],
            true,
        )],
    );
    table(
        "day = ts",
        &[(&[(DAY, "2024-01-02"), (TS, "2024-01-02 00:00:00")], true)],
    );
    assert_eq!(parse("day >= ts").to_sql().0, "(\"day\" >= \"ts\")");
    // No index key from a cross-type equality.
    assert_eq!(
        parse("day = timestamp '2024-01-01 10:00'").index_key(),
        None
    );
}

#[test]
fn where_clause_constants_fold_as_postgres_plans_them() {
    // Postgres folds `... OR true` to true before running: the failing arm
    // is never evaluated. So do we.
    table("id / 0 = 1 OR true", &[(&[(ID, "1")], true)]);
    table("NOT (id / 0 = 1 AND false)", &[(&[(ID, "1")], true)]);
    table(
        "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11' IN (uid, name::uuid, 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')",
        &[(&[(NAME, "abc")], true)],
    );
    table(
        "coalesce('yes', name ILIKE '_') OR id / 0 = 1",
        &[(&[(ID, "1")], true)],
    );
    table("greatest(1, 2) = 2 OR id / 0 = 1", &[(&[(ID, "1")], true)]);
    // A strict function of a NULL literal is NULL without evaluating the rest.
    table("(id / 0 + NULL) IS NULL", &[(&[(ID, "1")], true)]);
    assert_eq!(parse("id = 1 OR true").to_sql().0, "'t'::bool");
    assert_eq!(parse("flag AND true").to_sql().0, "\"flag\"");
    // ...but IS DISTINCT FROM NULL is not strict.
    table("id IS DISTINCT FROM NULL", &[(&[(ID, "1")], true)]);
}

#[test]
fn where_clause_strict_calls_evaluate_every_argument() {
    // Postgres evaluates all arguments before a strict function sees the
    // NULL: the division by zero fails the row.
    table(
        "ratio IS DISTINCT FROM ((price ^ 3) * (small % small))",
        &[(&[(RATIO, "1"), (SMALL, "0")], false)],
    );
    table("(id / 0) = ANY (nums) IS NULL", &[(&[(ID, "1")], false)]);
}

#[test]
fn where_clause_in_lists_type_constants_together() {
    // `score IN (0.1, 0.2)` reads the literals as float4 (their common type
    // with the left side), so a float4 0.1 matches; `score = 0.1` alone
    // compares as float8 and does not.
    table("score IN (0.1, 0.2)", &[(&[(SCORE, "0.1")], true)]);
    table("score IN (0.1)", &[(&[(SCORE, "0.1")], false)]);
    table("score = 0.1", &[(&[(SCORE, "0.1")], false)]);
    // Items with columns are compared one by one.
    table(
        "score IN (ratio, 0.1)",
        &[(&[(SCORE, "0.1"), (RATIO, "0.1")], false)],
    );
}

#[test]
fn where_clause_float_edge_cases_follow_postgres() {
    table("ratio / 0 IS NULL", &[(&[(RATIO, "NaN")], false)]);
    table("(ratio / 0)::text = 'NaN'", &[(&[(RATIO, "NaN")], true)]);
    table(
        "ratio ^ 3 = '-Infinity'",
        &[(&[(RATIO, "-Infinity")], true)],
    );
    table(
        "(ratio ^ -3)::text = '-0'",
        &[(&[(RATIO, "-Infinity")], true)],
    );
    table("2 ^ ratio = 0", &[(&[(RATIO, "-Infinity")], true)]);
    table("ratio ^ ratio = 0", &[(&[(RATIO, "-Infinity")], true)]);
    // Underflow of a finite power is an error: no match either way.
    table("2 ^ ratio >= 0", &[(&[(RATIO, "-1e300")], false)]);
}

#[test]
fn where_clause_array_cat_checks_lower_bounds() {
    table(
        "array_cat(nums, '{{1,2},{3,4}}') IS NOT NULL",
        &[
            (&[(NUMS, "[0:1]={5,6}")], false),
            (&[(NUMS, "{5,6}")], true),
        ],
    );
}

#[test]
fn where_clause_text_comparisons_render_bytewise_everywhere() {
    let sql = |s: &str| parse(s).to_sql().0;
    assert_eq!(
        sql("name IN ('a', 'b')"),
        "((\"name\" = 'a'::text COLLATE \"C\") OR (\"name\" = 'b'::text COLLATE \"C\"))"
    );
    assert_eq!(
        sql("name IS DISTINCT FROM code"),
        "(\"name\" IS DISTINCT FROM \"code\"::text COLLATE \"C\")"
    );
    assert_eq!(
        sql("lower(name) = 'a'"),
        "(lower(\"name\" COLLATE \"C\") = 'a'::text COLLATE \"C\")"
    );
    assert_eq!(
        sql("name ILIKE 'a%'"),
        "(\"name\" ~~* 'a%'::text COLLATE \"C\")"
    );
    assert_eq!(
        sql("tags @> '{a}'"),
        "(\"tags\" @> '{a}'::text[] COLLATE \"C\")"
    );
    assert_eq!(
        sql("name = ANY (tags)"),
        "(\"name\" COLLATE \"C\" = ANY (\"tags\"))"
    );
    // Case folding is ASCII only, as the C collation's.
    table(
        "name ILIKE 'straSSe%'",
        &[(&[(NAME, "STRASSE")], true), (&[(NAME, "straße")], false)],
    );
    table("lower(name) = 'É'", &[(&[(NAME, "É")], true)]);
    table("upper(name) = 'SS'", &[(&[(NAME, "ß")], false)]);
    table("name ILIKE 'é'", &[(&[(NAME, "É")], false)]);
}
