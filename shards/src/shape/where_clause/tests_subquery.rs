//! Subqueries through the public API: typing against the inner tables,
//! Electric's refusals and their order, identity, SQL with bound
//! parameters (and with value sets), and evaluation against views.

use std::collections::BTreeMap;

use super::{Membership, WhereClause, WhereColumn, WhereError, WhereErrorField};
use crate::shape::definition::TableName;

fn column(name: &str, type_name: &str) -> WhereColumn {
    WhereColumn {
        name: name.into(),
        type_name: type_name.into(),
        dims: 0,
        is_enum: false,
    }
}

const ID: usize = 0;
const PROJECT: usize = 1;
const OWNER: usize = 2;
const PRICE: usize = 4;

/// The outer table.
fn tasks() -> Vec<WhereColumn> {
    vec![
        column("id", "int4"),
        column("project_id", "int4"),
        column("owner", "text"),
        column("big", "int8"),
        column("price", "numeric"),
    ]
}

fn catalog(table: &TableName) -> Option<Vec<WhereColumn>> {
    match (table.schema.as_str(), table.name.as_str()) {
        ("public", "members") => Some(vec![
            column("user_id", "int4"),
            column("project_id", "int4"),
            column("big", "int8"),
            column("role", "text"),
        ]),
        ("public", "projects") => Some(vec![
            column("id", "int4"),
            column("org", "int4"),
            column("price", "numeric"),
        ]),
        _ => None,
    }
}

fn params(values: &[&str]) -> BTreeMap<usize, String> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| (i + 1, v.to_string()))
        .collect()
}

fn parse(sql: &str, values: &[&str]) -> WhereClause {
    WhereClause::parse_with_tables(sql, &tasks(), &params(values), &catalog)
        .unwrap_or_else(|e| panic!("{sql:?} failed: {}", e.message))
}

fn error(sql: &str, values: &[&str]) -> WhereError {
    match WhereClause::parse_with_tables(sql, &tasks(), &params(values), &catalog) {
        Ok(clause) => panic!("{sql:?} parsed as {}", clause.canonical()),
        Err(e) => e,
    }
}

#[test]
fn where_clause_subquery_types_against_its_table() {
    let sql = "project_id IN (SELECT project_id FROM members WHERE user_id = $1)";
    let clause = parse(sql, &["7"]);
    assert_eq!(clause.referenced_columns(), &[PROJECT]);
    let dependencies = clause.dependencies();
    assert_eq!(dependencies.len(), 1);
    assert_eq!(
        dependencies[0].table,
        TableName {
            schema: "public".into(),
            name: "members".into()
        }
    );
    assert_eq!(dependencies[0].columns, ["project_id"]);
    assert_eq!(dependencies[0].type_names, ["int4"]);
    // The dependency's own where, reparseable, its parameter kept.
    assert_eq!(
        dependencies[0].where_sql.as_deref(),
        Some("(\"user_id\" = $1)")
    );
    // Parameters inside the subquery are bound, never written in.
    let (sql_text, bound) = clause.to_sql();
    assert_eq!(
        sql_text,
        "(\"project_id\" IN (SELECT \"project_id\" FROM \"public\".\"members\" WHERE (\"user_id\" = $1::int4)))"
    );
    assert_eq!(bound, ["7"]);
    assert_eq!(
        clause.canonical(),
        "(\"project_id\" IN (SELECT \"project_id\" FROM \"public\".\"members\" WHERE (\"user_id\" = '7'::int4)))"
    );
    // A parameter used only inside the subquery is used; one used nowhere
    // is not.
    assert_eq!(
        error(sql, &["7", "8"]).message,
        "At location 0: parameter value for $2 was not used"
    );
    assert_eq!(dependencies[0].params, params(&["7"]));
    // A dependency numbers the parameters it uses from 1: the same inner
    // select is one dependency shape whatever the outer numbering.
    let renumbered = parse(
        "owner = $1 AND project_id IN (SELECT project_id FROM members WHERE user_id = $3 AND role = $2)",
        &["a", "admin", "7"],
    );
    let dependency = &renumbered.dependencies()[0];
    assert_eq!(
        dependency.where_sql.as_deref(),
        Some("((\"user_id\" = $2) AND (\"role\" = $1))")
    );
    assert_eq!(dependency.params, params(&["admin", "7"]));
    // One parameter, one type, at every level.
    let shared = parse(
        "id = $1 AND project_id IN (SELECT project_id FROM members WHERE user_id = $1)",
        &["3"],
    );
    assert_eq!(shared.to_sql().1, ["3"]);
    // Nested subqueries resolve level by level.
    let nested = parse(
        "project_id IN (SELECT id FROM projects WHERE org IN (SELECT user_id FROM members WHERE role = $1))",
        &["admin"],
    );
    assert_eq!(
        nested.to_sql().0,
        "(\"project_id\" IN (SELECT \"id\" FROM \"public\".\"projects\" WHERE (\"org\" IN (SELECT \"user_id\" FROM \"public\".\"members\" WHERE (\"role\" = $1::text COLLATE \"C\")))))"
    );
    assert_eq!(
        WhereClause::subquery_tables(
            "project_id IN (SELECT id FROM projects WHERE org IN (SELECT user_id FROM members)) OR id IN (SELECT id FROM s.projects)"
        ),
        [("public", "projects"), ("public", "members"), ("s", "projects")]
            .map(|(schema, name)| TableName {
                schema: schema.into(),
                name: name.into()
            })
    );
}

#[test]
fn where_clause_subquery_refusals_are_electrics_in_its_order() {
    let cases: &[(&str, WhereErrorField, &str)] = &[
        (
            "id IN (SELECT id FROM nope)",
            WhereErrorField::Table,
            "Table \"public\".\"nope\" does not exist. If the table name contains capitals or special characters you must quote it.",
        ),
        (
            "id IN (SELECT id, foo, bar FROM projects)",
            WhereErrorField::Columns,
            "The following columns are not found on the table: foo, bar",
        ),
        (
            "big IN (SELECT id FROM projects)",
            WhereErrorField::Where,
            "At location 4: left side of `IN (SELECT ...)` has type int8 but subquery returns int4[]",
        ),
        (
            "(id, owner) IN (SELECT project_id, big FROM members)",
            WhereErrorField::Where,
            "At location 12: left side of `IN (SELECT ...)` has type row of (int4, text) but subquery returns row of (int4, int8)[]",
        ),
        (
            "(id, owner) IN (SELECT project_id FROM members)",
            WhereErrorField::Where,
            "At location 12: left side of `IN (SELECT ...)` has type row of (int4, text) but subquery returns int4[]",
        ),
        (
            "id IN (SELECT project_id, user_id FROM members)",
            WhereErrorField::Where,
            "At location 3: left side of `IN (SELECT ...)` has type int4 but subquery returns row of (int4, int4)[]",
        ),
        (
            "id + 1 IN (SELECT id FROM projects)",
            WhereErrorField::Where,
            "At location 7: currently, left side of `IN (SELECT ...)` can only be a column reference or a list of column references",
        ),
        (
            "(id, 1) IN (SELECT id, org FROM projects)",
            WhereErrorField::Where,
            "At location 8: currently, left side of `IN (SELECT ...)` can only be a column reference or a list of column references",
        ),
        (
            "EXISTS (SELECT id FROM projects)",
            WhereErrorField::Where,
            "At location 0: only `value IN (SELECT ...)` sublinks are supported right now",
        ),
        (
            "id = ANY (SELECT id FROM projects)",
            WhereErrorField::Where,
            "At location 3: only `value IN (SELECT ...)` sublinks are supported right now",
        ),
        (
            "(SELECT id FROM projects) = 1",
            WhereErrorField::Where,
            "At location 0: only `value IN (SELECT ...)` sublinks are supported right now",
        ),
        // The inner where is typed against the inner table, located in the
        // outer text.
        (
            "id IN (SELECT id FROM projects WHERE owner = 'x')",
            WhereErrorField::Where,
            "At location 37: unknown reference owner",
        ),
        (
            "id IN (SELECT id FROM projects WHERE org)",
            WhereErrorField::Where,
            "WHERE clause must return a boolean",
        ),
        (
            "id IN (SELECT id FROM projects WHERE org = $1)",
            WhereErrorField::Where,
            "At location 43: parameter $1 was not provided",
        ),
        // Order: every statement is taken apart before any table is read,
        // and every dependency is built before the outer clause is typed.
        (
            "nope = 1 AND id IN (SELECT id FROM nope) AND id IN (SELECT 1 FROM projects)",
            WhereErrorField::Where,
            "At location 74: Expected a plain column reference",
        ),
        (
            "nope = 1 AND id IN (SELECT id FROM nope)",
            WhereErrorField::Table,
            "Table \"public\".\"nope\" does not exist. If the table name contains capitals or special characters you must quote it.",
        ),
        (
            "EXISTS (SELECT 1 FROM projects)",
            WhereErrorField::Where,
            "At location 30: Expected a plain column reference",
        ),
    ];
    for (sql, field, message) in cases {
        let e = error(sql, &[]);
        assert_eq!((e.field, e.message.as_str()), (*field, *message), "{sql}");
    }
    // A row anywhere else is what it was.
    assert_eq!(
        error("(id, 1) = (1, 1)", &[]).message,
        "At location 0: RowExpr is not supported in this context"
    );
}

/// Evaluates `clause` on a tasks row against the given views.
fn eval(clause: &WhereClause, row: &[(usize, &str)], views: &[&super::SubqueryView]) -> bool {
    let lookup = |i: usize| row.iter().find(|(c, _)| *c == i).map(|(_, v)| *v);
    let views: Vec<Option<super::ViewRef>> = views.iter().map(|v| Some((*v).into())).collect();
    clause.matches_with(&lookup, &views)
}

#[test]
fn where_clause_subquery_evaluates_against_the_view() {
    let positive = parse("project_id IN (SELECT project_id FROM members)", &[]);
    let negated = parse("project_id NOT IN (SELECT project_id FROM members)", &[]);
    let mut view = positive.new_view(0).expect("a view");
    assert!(view.is_empty());
    // Without a view the row cannot be decided: it does not match.
    assert!(!positive.matches(&|i| (i == PROJECT).then_some("1")));
    let p1: &[(usize, &str)] = &[(ID, "10"), (PROJECT, "1")];
    let p2: &[(usize, &str)] = &[(ID, "11"), (PROJECT, "2")];
    let null: &[(usize, &str)] = &[(ID, "12")];
    // Empty: NOT IN holds even for NULL, as in Postgres.
    assert!(!eval(&positive, p1, &[&view]));
    assert!(eval(&negated, p1, &[&view]));
    assert!(eval(&negated, null, &[&view]));
    // A multiset: the first add moves in, the last remove moves out.
    assert!(view.add(&[Some("1")]));
    assert!(!view.add(&[Some("1")]));
    assert_eq!(view.len(), 1);
    assert!(eval(&positive, p1, &[&view]));
    assert!(!eval(&positive, p2, &[&view]));
    assert!(!eval(&negated, p1, &[&view]));
    assert!(eval(&negated, p2, &[&view]));
    // NULL on the left of a non-empty set is unknown: neither matches.
    assert!(!eval(&positive, null, &[&view]));
    assert!(!eval(&negated, null, &[&view]));
    assert!(!view.remove(&[Some("1")]));
    assert!(view.remove(&[Some("1")]));
    assert!(!view.remove(&[Some("1")]));
    assert!(!eval(&positive, p1, &[&view]));
    // A NULL in the set makes every miss unknown.
    assert!(view.add(&[Some("1")]));
    assert!(view.add(&[None]));
    assert_eq!(view.contains_text(&[Some("2")]), Membership::Unknown);
    assert_eq!(view.contains_text(&[Some("1")]), Membership::In);
    assert!(!eval(&negated, p2, &[&view]));
    assert!(view.remove(&[None]));
    assert!(eval(&negated, p2, &[&view]));
    // Text that is not of the column's type is never counted.
    assert!(!view.add(&[Some("x")]));
    // Inside AND/OR/NOT like any predicate.
    let mixed = parse(
        "id = 12 OR NOT (project_id IN (SELECT project_id FROM members) AND owner = 'a')",
        &[],
    );
    assert!(eval(&mixed, null, &[&view]));
    assert!(!eval(&mixed, &[(PROJECT, "1"), (OWNER, "a")], &[&view]));
    assert!(eval(&mixed, &[(PROJECT, "1"), (OWNER, "b")], &[&view]));
}

#[test]
fn where_clause_subquery_membership_is_postgres_equality() {
    let clause = parse("price IN (SELECT price FROM projects)", &[]);
    let mut view = clause.new_view(0).expect("a view");
    assert!(view.add(&[Some("1.50")]));
    // `1.5 = 1.50` in Postgres: one value, whatever the scale.
    assert!(!view.add(&[Some("1.5")]));
    assert!(eval(&clause, &[(PRICE, "1.500")], &[&view]));
    assert!(!eval(&clause, &[(PRICE, "1.51")], &[&view]));
    let row = parse("(id, project_id) IN (SELECT id, org FROM projects)", &[]);
    let mut pairs = row.new_view(0).expect("a view");
    assert!(pairs.add(&[Some("1"), Some("2")]));
    assert!(pairs.add(&[Some("3"), None]));
    assert!(eval(&row, &[(ID, "1"), (PROJECT, "2")], &[&pairs]));
    // (3, 4) against (3, NULL): unknown; (5, 4) differs from both.
    assert_eq!(
        pairs.contains_text(&[Some("3"), Some("4")]),
        Membership::Unknown
    );
    assert_eq!(
        pairs.contains_text(&[Some("5"), Some("4")]),
        Membership::NotIn
    );
    assert_eq!(pairs.contains_text(&[None, Some("2")]), Membership::Unknown);
    // (NULL, 9) differs from (1, 2) but not surely from (3, NULL).
    assert_eq!(pairs.contains_text(&[None, Some("9")]), Membership::Unknown);
    assert!(pairs.remove(&[Some("3"), None]));
    assert_eq!(pairs.contains_text(&[None, Some("9")]), Membership::NotIn);
}

#[test]
fn where_clause_subquery_renders_with_value_sets() {
    let clause = parse(
        "owner = $1 AND project_id IN (SELECT project_id FROM members WHERE user_id = $2)",
        &["a", "7"],
    );
    let mut view = clause.new_view(0).expect("a view");
    view.add(&[Some("4")]);
    let (sql, bound) = clause.to_sql_with_values(&[Some((&view).into())]);
    assert_eq!(
        sql,
        "((\"owner\" = $1::text COLLATE \"C\") AND (\"project_id\" = ANY ($3::int4[])))"
    );
    assert_eq!(bound, ["a", "7", "{\"4\"}"]);
    // Without values the subquery stays.
    assert_eq!(clause.to_sql_with_values(&[None]), clause.to_sql());
    let row = parse("(owner, id) IN (SELECT role, user_id FROM members)", &[]);
    let mut pairs = row.new_view(0).expect("a view");
    pairs.add(&[Some("a\"b\\"), Some("1")]);
    pairs.add(&[None, Some("2")]);
    let (sql, bound) = row.to_sql_with_values(&[Some((&pairs).into())]);
    assert_eq!(
        sql,
        "((\"owner\" COLLATE \"C\", \"id\") IN (SELECT * FROM unnest($1::text[], $2::int4[])))"
    );
    // Element texts are quoted so none can change the array's shape.
    assert!(
        bound == ["{\"a\\\"b\\\\\",NULL}", "{\"1\",\"2\"}"]
            || bound == ["{NULL,\"a\\\"b\\\\\"}", "{\"2\",\"1\"}"],
        "{bound:?}"
    );
}

#[test]
fn where_clause_subquery_array_values_bind_one_by_one() {
    // Arrays inside `= ANY(..[])` would flatten: each value is its own
    // parameter, a NULL is written.
    let columns = vec![WhereColumn {
        dims: 1,
        ..column("tags", "text")
    }];
    let lookup = |_: &TableName| Some(columns.clone());
    let clause = WhereClause::parse_with_tables(
        "tags IN (SELECT tags FROM t)",
        &columns,
        &BTreeMap::new(),
        &lookup,
    )
    .unwrap_or_else(|e| panic!("{}", e.message));
    let mut view = clause.new_view(0).expect("a view");
    let (sql, bound) = clause.to_sql_with_values(&[Some((&view).into())]);
    assert_eq!(sql, "(\"tags\" COLLATE \"C\" IN (SELECT NULL WHERE false))");
    assert!(bound.is_empty());
    view.add(&[Some("{a,b}")]);
    view.add(&[None]);
    let (sql, bound) = clause.to_sql_with_values(&[Some((&view).into())]);
    assert!(
        sql == "(\"tags\" COLLATE \"C\" IN (VALUES ($1::text[]), (NULL::text[])))"
            || sql == "(\"tags\" COLLATE \"C\" IN (VALUES (NULL::text[]), ($1::text[])))",
        "{sql}"
    );
    assert_eq!(bound, ["{a,b}"]);
    assert!(clause.matches_with(&|_| Some("{a,b}"), &[Some((&view).into())]));
}

const SALT: super::TagSalt = super::TagSalt {
    stack_id: "single_stack",
    handle: "3833821-1754000000000000",
};
const H7: &str = "5bde1cb78690a878b8069a2edc4a6f18";
const H_NULL: &str = "411c3bd9bd4412980cbd09d87b040b79";

#[test]
fn where_clause_subquery_value_hashes_are_electrics() {
    // md5(stack id ‖ outer handle ‖ namespaced value), checked with md5sum.
    assert_eq!(
        super::value_hash(SALT.stack_id, SALT.handle, &super::namespaced(Some("7"))),
        H7
    );
    assert_eq!(
        super::value_hash(SALT.stack_id, SALT.handle, &super::namespaced(None)),
        H_NULL
    );
    assert_eq!(
        super::value_hash(
            SALT.stack_id,
            SALT.handle,
            &super::namespaced_row(&[("org_id", Some("1")), ("team_id", Some("2"))])
        ),
        "892e0db3c8d8bb801b7ed696b72a91fa"
    );
}

fn tags(clause: &WhereClause, row: &[(usize, &str)]) -> Vec<String> {
    let lookup = |i: usize| row.iter().find(|(c, _)| *c == i).map(|(_, v)| *v);
    clause.tags(&lookup, &SALT)
}

const SQ: &str = "project_id IN (SELECT project_id FROM members)";

#[test]
fn where_clause_subquery_dnf_lays_out_tags_as_electric() {
    let p7: &[(usize, &str)] = &[(ID, "1"), (PROJECT, "7"), (OWNER, "a")];
    // One subquery: one disjunct, one slot.
    let clause = parse(SQ, &[]);
    let dnf = clause.dnf().expect("a plan");
    assert_eq!(dnf.position_count(), 1);
    assert_eq!(dnf.disjuncts(), &[vec![0]]);
    assert_eq!(dnf.subquery_at(0), Some(0));
    assert_eq!(tags(&clause, p7), [H7]);
    assert_eq!(tags(&clause, &[(ID, "1")]), [H_NULL]);
    // A plain condition beside it is `1`.
    let clause = parse(&format!("{SQ} AND owner = 'a'"), &[]);
    assert_eq!(tags(&clause, p7), [format!("{H7}/1")]);
    // OR: a disjunct each, empty slots for the other's positions.
    let clause = parse(&format!("owner = $1 OR {SQ}"), &["a"]);
    assert_eq!(
        clause.dnf().expect("a plan").disjuncts(),
        &[vec![0], vec![1]]
    );
    assert_eq!(tags(&clause, p7), ["1/".to_string(), format!("/{H7}")]);
    // NOT pushed to the leaves: NOT (A AND B) is NOT A OR NOT B.
    let clause = parse(&format!("NOT ({SQ} AND owner = 'a')"), &[]);
    let dnf = clause.dnf().expect("a plan");
    assert_eq!(dnf.disjuncts(), &[vec![0], vec![1]]);
    assert!(dnf.is_negated(0) && dnf.is_negated(1));
    assert_eq!(dnf.subquery_at(0), Some(0));
    assert_eq!(dnf.subquery_at(1), None);
    // An IN list is an OR of equalities, so AND distributes over it: the
    // same subquery leaf gets a position in each disjunct.
    let clause = parse(&format!("owner IN ('a', 'b') AND {SQ}"), &[]);
    let dnf = clause.dnf().expect("a plan");
    assert_eq!(dnf.disjuncts(), &[vec![0, 1], vec![2, 3]]);
    assert_eq!(dnf.positions_of(0), [1, 3]);
    assert_eq!(
        tags(&clause, p7),
        [format!("1/{H7}//"), format!("//1/{H7}")]
    );
    assert_eq!(
        clause.move_patterns(0, &[Some("7")], &SALT),
        [(1, H7.to_string()), (3, H7.to_string())]
    );
    // A row hashes its outer column names with its values.
    let clause = parse("(id, project_id) IN (SELECT id, org FROM projects)", &[]);
    assert_eq!(
        tags(&clause, &[(ID, "1"), (PROJECT, "2")]),
        [super::value_hash(
            SALT.stack_id,
            SALT.handle,
            "id:v:1project_id:v:2"
        )]
    );
    // Without subqueries there is no plan and no tags.
    let plain = parse("owner = 'a'", &[]);
    assert!(plain.dnf().is_none());
    assert!(tags(&plain, p7).is_empty());
}

#[test]
fn where_clause_subquery_active_conditions_count_null_as_false() {
    let clause = parse(&format!("owner = 'a' OR NOT ({SQ})"), &[]);
    let mut view = clause.new_view(0).expect("a view");
    view.add(&[Some("7")]);
    let active = |row: &[(usize, &str)]| {
        let lookup = |i: usize| row.iter().find(|(c, _)| *c == i).map(|(_, v)| *v);
        clause.active_conditions(&lookup, &[Some((&view).into())])
    };
    let dnf = clause.dnf().expect("a plan");
    assert_eq!(active(&[(PROJECT, "7"), (OWNER, "a")]), [true, false]);
    assert_eq!(active(&[(PROJECT, "8"), (OWNER, "b")]), [false, true]);
    assert!(dnf.included(&[false, true]));
    assert!(!dnf.included(&[false, false]));
    // NULLs: `owner = 'a'` is NULL → false; the negated subquery leaf is
    // NULL → NOT COALESCE(NULL, false) → true, as Electric reports it,
    // though the row is not in the shape by SQL's rules.
    let null_row: &[(usize, &str)] = &[(ID, "1")];
    assert_eq!(active(null_row), [false, true]);
    let lookup = |i: usize| null_row.iter().find(|(c, _)| *c == i).map(|(_, v)| *v);
    assert!(!clause.matches_with(&lookup, &[Some((&view).into())]));
}

#[test]
fn where_clause_subquery_dnf_is_bounded() {
    // 2^9 disjuncts of 10 positions: far past the bound, refused early.
    let arms: Vec<String> = (0..9).map(|i| format!("(id = {i} OR big = {i})")).collect();
    let sql = format!("{SQ} AND {}", arms.join(" AND "));
    let e = error(&sql, &[]);
    assert!(e.message.contains("too complex"), "{}", e.message);
    // The same clause without subqueries needs no plan.
    let plain = WhereClause::parse(&arms.join(" AND "), &tasks(), &BTreeMap::new());
    assert!(plain.is_ok());
}

#[test]
fn where_clause_subquery_move_in_where_is_candidate_and_not_exclusion() {
    let clause = parse(
        "owner = $1 OR (project_id IN (SELECT project_id FROM members WHERE user_id = $2) AND NOT (id IN (SELECT id FROM projects)))",
        &["a", "7"],
    );
    let mut moved = clause.new_view(0).expect("a view");
    moved.add(&[Some("2")]);
    let mut projects = clause.new_view(1).expect("a view");
    projects.add(&[Some("5")]);
    let (sql, bound) = clause
        .move_in_where(
            0,
            (&moved).into(),
            (&moved).into(),
            &[None, Some((&projects).into())],
        )
        .expect("a move-in where");
    // The moved values only for the trigger, the pre-move view for the
    // other subquery (negated as written), the other disjunct excluded
    // unless it was true (NULL: the row was not in through it).
    assert_eq!(
        sql,
        "(((\"project_id\" = ANY ($3::int4[])) AND (NOT (\"id\" = ANY ($4::int4[])))) AND (NOT COALESCE((\"owner\" = $1::text COLLATE \"C\"), 'f'::bool)))"
    );
    assert_eq!(bound, ["a", "7", "{\"2\"}", "{\"5\"}"]);
    // A NOT IN trigger (a value left the set) selects rows with the value
    // that the set after the move does not hold (a NULL left in it keeps
    // them out).
    let negated = parse("project_id NOT IN (SELECT project_id FROM members)", &[]);
    let mut after = negated.new_view(0).expect("a view");
    after.add(&[None]);
    let (sql, bound) = negated
        .move_in_where(0, (&moved).into(), (&after).into(), &[])
        .expect("a move-in where");
    assert_eq!(
        sql,
        "((\"project_id\" = ANY ($1::int4[])) AND (NOT (\"project_id\" = ANY ($2::int4[]))))"
    );
    assert_eq!(bound, ["{\"2\"}", "{NULL}"]);
    // No position tests a subquery that is not there.
    assert!(negated
        .move_in_where(1, (&moved).into(), (&after).into(), &[])
        .is_none());
    assert!(parse("owner = 'a'", &[])
        .move_in_where(0, (&moved).into(), (&after).into(), &[])
        .is_none());
}

#[test]
fn where_clause_subquery_deepest_nesting_fits_half_a_stack() {
    let nested = |d: usize| {
        format!(
            "project_id IN {}(SELECT project_id FROM members){}",
            "(SELECT project_id FROM members WHERE project_id IN ".repeat(d),
            ")".repeat(d)
        )
    };
    let parses = |sql: &str| {
        WhereClause::parse_with_tables(sql, &tasks(), &BTreeMap::new(), &catalog).is_ok()
    };
    let deepest = (1..=super::parse::MAX_DEPTH)
        .rev()
        .find(|d| parses(&nested(*d)))
        .expect("some depth parses");
    // Each level counts for several operators (it costs several frames).
    assert!(
        (10..=20).contains(&deepest),
        "{deepest} levels of subqueries accepted"
    );
    let too_deep =
        WhereClause::parse_with_tables(&nested(deepest + 1), &tasks(), &BTreeMap::new(), &catalog);
    assert!(too_deep.is_err_and(|e| e.message.contains("stack depth limit exceeded")));
    // Far too deep is refused while parsing, within the same stack, also
    // as parentheses around one statement.
    let far = nested(500);
    let parenthesised = format!(
        "project_id IN ({}SELECT project_id FROM members{})",
        "(".repeat(5000),
        ")".repeat(5000)
    );
    assert!(super::identity(&parenthesised).is_none());
    let refused = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || {
            WhereClause::parse_with_tables(&far, &tasks(), &BTreeMap::new(), &catalog).is_err()
                && super::identity(&far).is_none()
        })
        .ok()
        .and_then(|handle| handle.join().ok());
    assert_eq!(refused, Some(true));
    let sql = nested(deepest);
    let survived = std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(move || {
            let clause =
                WhereClause::parse_with_tables(&sql, &tasks(), &BTreeMap::new(), &catalog).ok()?;
            let mut view = clause.new_view(0)?;
            view.add(&[Some("1")]);
            let _ = clause.matches_with(&|_| Some("1"), &[Some((&view).into())]);
            let _ = clause.tags(&|_| Some("1"), &SALT);
            let _ = clause.move_in_where(0, (&view).into(), (&view).into(), &[]);
            let _ = super::identity(&sql);
            Some(clause.to_sql().0.len() + clause.canonical().len())
        })
        .ok()
        .and_then(|handle| handle.join().ok())
        .flatten();
    assert!(survived.is_some(), "at depth {deepest}");
}

#[test]
fn where_clause_subquery_row_not_in_move_in_takes_rows_the_value_kept_out() {
    let clause = parse(
        "(id, project_id) NOT IN (SELECT user_id, project_id FROM members)",
        &[],
    );
    let mut moved = clause.new_view(0).expect("a view");
    moved.add(&[Some("1"), Some("2")]);
    let after = clause.new_view(0).expect("a view");
    let (sql, bound) = clause
        .move_in_where(0, (&moved).into(), (&after).into(), &[])
        .expect("a move-in where");
    // `IS NOT FALSE`: rows half NULL that the value kept out (unknown
    // against it) come back too, not only rows equal to it.
    assert_eq!(
        sql,
        "((((\"id\", \"project_id\") IN (SELECT * FROM unnest($1::int4[], $2::int4[]))) IS NOT FALSE) AND (NOT ((\"id\", \"project_id\") IN (SELECT * FROM unnest($3::int4[], $4::int4[])))))"
    );
    assert_eq!(bound, ["{\"1\"}", "{\"2\"}", "{}", "{}"]);
}

#[test]
fn where_clause_subquery_row_null_variants_are_those_not_in_holds_for() {
    let clause = parse(
        "(id, project_id) IN (SELECT user_id, project_id FROM members)",
        &[],
    );
    let mut view = clause.new_view(0).expect("a view");
    let variants = |view: &super::SubqueryView| {
        let mut v = view
            .null_variants_not_in(&[Some("1"), Some("2")])
            .expect("two columns");
        v.sort();
        v
    };
    // Against nothing every variant holds.
    assert_eq!(
        variants(&view),
        [
            vec![None, None],
            vec![None, Some("2")],
            vec![Some("1"), None]
        ]
    );
    // (3, 2) leaves (1, NULL) surely different, not (NULL, 2) or
    // (NULL, NULL).
    view.add(&[Some("3"), Some("2")]);
    assert_eq!(variants(&view), [vec![Some("1"), None]]);
    // (1, 5) also keeps (1, NULL) undecided.
    view.add(&[Some("1"), Some("5")]);
    assert!(variants(&view).is_empty());
    // A single column: NULL holds only against an empty set.
    let single = parse(SQ, &[]);
    let mut set = single.new_view(0).expect("a view");
    assert_eq!(
        set.null_variants_not_in(&[Some("7")]),
        Some(vec![vec![None]])
    );
    set.add(&[Some("8")]);
    assert_eq!(set.null_variants_not_in(&[Some("7")]), Some(Vec::new()));
}

#[test]
fn where_clause_subquery_views_give_back_each_value_as_first_seen() {
    // Values are packed into one key each: NULL, the empty text and a
    // row's NULL and empty columns must all come back apart.
    let owner = parse("owner IN (SELECT role FROM members)", &[]);
    let mut texts = owner.new_view(0).expect("a view");
    assert!(texts.add(&[Some("")]));
    assert!(texts.add(&[None]));
    assert!(texts.add(&[Some("v")]));
    assert!(!texts.add(&[Some("v")]));
    let mut counted: Vec<(Vec<Option<String>>, u64)> = texts
        .counted_texts()
        .map(|(v, n)| (v.iter().map(|t| t.map(str::to_string)).collect(), n))
        .collect();
    counted.sort();
    assert_eq!(
        counted,
        [
            (vec![None], 1),
            (vec![Some(String::new())], 1),
            (vec![Some("v".to_string())], 2)
        ]
    );
    // A text holding a NUL comes from no column: not counted.
    assert!(!texts.add(&[Some("a\0b")]));
    assert_eq!(texts.len(), 3);

    let row = parse("(owner, id) IN (SELECT role, user_id FROM members)", &[]);
    let mut pairs = row.new_view(0).expect("a view");
    assert!(pairs.add(&[Some(""), None]));
    assert!(pairs.add(&[None, Some("1")]));
    assert!(pairs.add(&[Some("n"), Some("1")]));
    let mut counted: Vec<Vec<Option<&str>>> = pairs.counted_texts().map(|(v, _)| v).collect();
    counted.sort();
    assert_eq!(
        counted,
        [
            vec![None, Some("1")],
            vec![Some(""), None],
            vec![Some("n"), Some("1")]
        ]
    );
    assert!(pairs.remove(&[Some(""), None]));
    assert_eq!(
        pairs.contains_text(&[Some("x"), Some("1")]),
        Membership::Unknown
    );

    // A numeric keeps the text first seen (bound back as Postgres printed
    // it) until its last row goes; then the next one's.
    let price = parse("price IN (SELECT price FROM projects)", &[]);
    let mut prices = price.new_view(0).expect("a view");
    assert!(prices.add(&[Some("1.50")]));
    assert!(!prices.add(&[Some("1.5")]));
    assert_eq!(prices.column_texts(), [vec![Some("1.50")]]);
    assert!(!prices.remove(&[Some("1.500")]));
    assert!(prices.remove(&[Some("1.5")]));
    assert!(prices.add(&[Some("1.5")]));
    assert_eq!(prices.column_texts(), [vec![Some("1.5")]]);
}

#[test]
fn where_clause_subquery_routing_covers_every_arm_of_an_or() {
    let sub = "project_id IN (SELECT project_id FROM members WHERE user_id = $1)";
    let routing = |sql: &str| parse(sql, &["7"]).subquery_routing();
    assert_eq!(routing(sub), Some((PROJECT, 0, Vec::new())));
    assert_eq!(
        routing(&format!("{sub} AND owner = 'a'")),
        Some((PROJECT, 0, Vec::new()))
    );
    // Every other arm requires a plain equality: rows come by either key.
    assert_eq!(
        routing(&format!("{sub} OR owner = 'a' OR id IN (1, 2)")),
        Some((
            PROJECT,
            0,
            // (`IN (1, 2)` is an `OR` of equalities, flattened into this one)
            vec![
                (OWNER, vec!["a".to_string()]),
                (ID, vec!["1".to_string()]),
                (ID, vec!["2".to_string()])
            ]
        ))
    );
    assert_eq!(
        routing(&format!("(owner = 'b' AND id > 3) OR ({sub} AND id < 9)")),
        Some((PROJECT, 0, vec![(OWNER, vec!["b".to_string()])]))
    );
    // An arm with no key, a negated subquery, two subqueries' values: no
    // routing (every change is evaluated).
    for unrouted in [
        format!("{sub} OR owner LIKE 'a%'"),
        format!("NOT ({sub}) OR owner = 'a'"),
        format!("{sub} OR id IN (SELECT user_id FROM members WHERE role = 'x')"),
    ] {
        assert_eq!(routing(&unrouted), None, "{unrouted}");
    }
}

/// A view kept as flips over a base (a client view over its shared
/// truth) answers every question as the whole view it stands for, NULLs,
/// repeated values and texts that are not their key included.
#[test]
fn where_clause_subquery_view_over_a_base_is_the_view_it_stands_for() {
    let row = parse(
        "(id, project_id) IN (SELECT user_id, project_id FROM members)",
        &[],
    );
    let values: Vec<[Option<&str>; 2]> = vec![
        [Some("1"), Some("1")],
        [Some("1"), Some("2")],
        [Some("2"), None],
        [None, Some("3")],
        [Some("3"), Some("3")],
        [None, None],
    ];
    let mut rng = 0x9e37_79b9_u64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    for _ in 0..300 {
        let mut base = row.new_view(0).expect("a view");
        let mut whole = row.new_view(0).expect("a view");
        for value in &values {
            for _ in 0..next(3) {
                base.add(value);
            }
            if next(2) == 0 {
                whole.add(value);
            }
        }
        let mut flips = row.new_view(0).expect("a view");
        for value in &values {
            let key = base.key_of(value).expect("a key");
            if base.holds(&key) != whole.holds(&key) {
                flips.toggle(value);
            }
        }
        let over = super::ViewRef::over(&base, &flips);
        let plain = super::ViewRef::from(&whole);
        assert_eq!(over.len(), whole.len());
        assert_eq!(over.has_null(), plain.has_null());
        fn texts(v: super::ViewRef<'_>) -> Vec<Vec<Option<String>>> {
            let mut t: Vec<_> = v
                .counted_texts()
                .map(|(t, _)| t.iter().map(|c| c.map(str::to_string)).collect())
                .collect();
            t.sort();
            t
        }
        assert_eq!(texts(over), texts(plain));
        let mut probes: Vec<[Option<&str>; 2]> = values.clone();
        probes.push([Some("9"), Some("9")]);
        probes.push([Some("1"), None]);
        for probe in &probes {
            assert_eq!(
                over.contains_text(probe),
                plain.contains_text(probe),
                "{probe:?}"
            );
            if probe.iter().all(Option::is_some) {
                assert_eq!(
                    over.null_variants_not_in(probe),
                    plain.null_variants_not_in(probe)
                );
            }
        }
        let mut columns = over.column_texts();
        let mut expected = plain.column_texts();
        for c in columns.iter_mut().chain(expected.iter_mut()) {
            c.sort();
        }
        assert_eq!(columns, expected);
        // Flipping a value twice leaves the view as it was.
        flips.toggle(&values[0]);
        flips.toggle(&values[0]);
        assert_eq!(super::ViewRef::over(&base, &flips).len(), whole.len());
    }
}
