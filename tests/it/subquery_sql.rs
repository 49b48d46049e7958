//! The SQL our where engine writes for subqueries, run by Postgres, agrees
//! with our own evaluation against the subquery's materialised values: the
//! full `IN (SELECT ..)` form (a snapshot's) and the form with the values
//! bound as arrays (a move-in's), on rows full of NULLs, numerics of
//! different scales and text that needs quoting. Parameters inside the
//! subquery are bound, never written into the SQL.

use std::collections::BTreeMap;

use postgres::types::Type;
use postgres::SimpleQueryMessage;
use shards::shape::definition::TableName;
use shards::shape::where_clause::{SubqueryView, ViewRef, WhereClause, WhereColumn};

use crate::harness::database;

fn column(name: &str, type_name: &str) -> WhereColumn {
    WhereColumn {
        name: name.into(),
        type_name: type_name.into(),
        dims: 0,
        is_enum: false,
    }
}

fn tasks() -> Vec<WhereColumn> {
    vec![
        column("id", "int4"),
        column("project_id", "int4"),
        column("owner", "text"),
        column("price", "numeric"),
        column("code", "varchar"),
    ]
}

fn members() -> Vec<WhereColumn> {
    vec![
        column("user_id", "int4"),
        column("project_id", "int4"),
        column("role", "text"),
        column("price", "numeric"),
        column("code", "varchar"),
    ]
}

fn catalog(table: &TableName) -> Option<Vec<WhereColumn>> {
    (table.schema == "public" && table.name == "members").then(members)
}

/// Rows as Postgres' output functions print them (what pgoutput sends).
fn text_rows(client: &mut postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let mut rows = Vec::new();
    for message in client.simple_query(sql).unwrap() {
        if let SimpleQueryMessage::Row(row) = message {
            rows.push(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            );
        }
    }
    rows
}

/// Ids of the tasks `condition` selects, its `$n` bound as text (as the
/// server binds the rendered `$n::type`).
fn selected(client: &mut postgres::Client, condition: &str, params: &[String]) -> Vec<i32> {
    let bound: Vec<(&(dyn postgres::types::ToSql + Sync), Type)> = params
        .iter()
        .map(|p| (p as &(dyn postgres::types::ToSql + Sync), Type::TEXT))
        .collect();
    let sql = format!("SELECT id FROM tasks WHERE {condition} ORDER BY id");
    client
        .query_typed(&sql, &bound)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn subquery_sql_agrees_with_evaluation_against_views() {
    let db = database("subquery_sql");
    let mut client = db.client();
    client
        .batch_execute(
            "SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; SET extra_float_digits = 1;
             CREATE TABLE tasks (id int PRIMARY KEY, project_id int, owner text, price numeric, code varchar);
             CREATE TABLE members (user_id int, project_id int, role text, price numeric, code varchar);
             INSERT INTO tasks VALUES
               (1, 1, 'a', 1.5, 'x'), (2, 2, 'b', 1.50, 'y'), (3, NULL, E'a\"b\\\\', 2, NULL),
               (4, 3, NULL, NULL, 'z'), (5, 4, 'c', 2.000, 'x'), (6, 1, 'admin', 7, 'q'),
               (7, 2, E'a\"b\\\\', 3, 'w');
             INSERT INTO members VALUES
               (10, 1, 'admin', 1.50, 'x'), (10, 2, 'user', NULL, NULL),
               (11, 3, 'admin', 2.0, 'z'), (12, NULL, 'admin', NULL, 'q'),
               (13, 2, E'a\"b\\\\', 3.00, 'w');",
        )
        .unwrap();
    let task_rows = text_rows(&mut client, "SELECT * FROM tasks ORDER BY id");
    let cases: &[(&str, &[&str], &[i32])] = &[
        (
            "project_id IN (SELECT project_id FROM members WHERE user_id = $1)",
            &["10"], &[1, 2, 6, 7],
        ),
        (
            "project_id NOT IN (SELECT project_id FROM members WHERE user_id = $1)",
            &["10"], &[4, 5],
        ),
        // A NULL among the values: NOT IN selects nothing.
        (
            "project_id NOT IN (SELECT project_id FROM members WHERE role = $1)",
            &["admin"], &[],
        ),
        ("price IN (SELECT price FROM members)", &[], &[1, 2, 3, 5, 7]),
        ("code IN (SELECT code FROM members WHERE code <> $1)", &["q"], &[1, 4, 5, 7]),
        ("(project_id, owner) IN (SELECT project_id, role FROM members)", &[], &[6, 7]),
        // Rows: tasks 3 and 4, (NULL, o) and (3, NULL), do not surely
        // differ from (2, o) and (3, 'admin'): unknown, not in.
        (
            "(project_id, owner) NOT IN (SELECT project_id, role FROM members WHERE user_id <> $1)",
            &["12"], &[1, 2, 5],
        ),
        // (NULL, 'admin') in the set differs from every row by its role.
        (
            "(project_id, owner) NOT IN (SELECT project_id, role FROM members)",
            &[], &[1, 2, 5],
        ),
        (
            "code = $1 OR (project_id, owner) IN (SELECT project_id, role FROM members WHERE user_id <> $2)",
            &["x", "12"], &[1, 5, 6, 7],
        ),
        (
            "owner = $1 OR NOT (project_id IN (SELECT project_id FROM members WHERE role = $2))",
            &["a", "user"], &[1, 4, 5, 6],
        ),
        (
            "project_id IN (SELECT project_id FROM members WHERE user_id IN (SELECT user_id FROM members WHERE role = $1))",
            &["admin"], &[1, 2, 4, 6, 7],
        ),
        (
            "id > $1 AND project_id IN (SELECT project_id FROM members) AND owner IN (SELECT role FROM members WHERE user_id = $2)",
            &["1", "13"], &[7],
        ),
    ];
    // Move-in queries checked that bring rows in.
    let mut move_ins = 0;
    for (sql, values, expected) in cases {
        let params: BTreeMap<usize, String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| (i + 1, v.to_string()))
            .collect();
        let clause = WhereClause::parse_with_tables(sql, &tasks(), &params, &catalog)
            .unwrap_or_else(|e| panic!("{sql}: {}", e.message));
        // Each dependency's values, from its own shape's query.
        let mut views: Vec<SubqueryView> = Vec::new();
        for (index, dependency) in clause.dependencies().iter().enumerate() {
            let mut view = clause.new_view(index).unwrap();
            // As text: what Postgres' output functions print.
            let texts: Vec<String> = dependency
                .columns
                .iter()
                .map(|c| format!("{c}::text"))
                .collect();
            let mut query = format!("SELECT {} FROM members", texts.join(", "));
            let mut bound = Vec::new();
            if let Some(inner) = &dependency.where_sql {
                let filter =
                    WhereClause::parse_with_tables(inner, &members(), &dependency.params, &catalog)
                        .unwrap_or_else(|e| panic!("{inner}: {}", e.message));
                let (inner_sql, inner_params) = filter.to_sql();
                query.push_str(&format!(" WHERE {inner_sql}"));
                bound = inner_params;
            }
            let bound_refs: Vec<(&(dyn postgres::types::ToSql + Sync), Type)> = bound
                .iter()
                .map(|p| (p as &(dyn postgres::types::ToSql + Sync), Type::TEXT))
                .collect();
            for row in client.query_typed(&query, &bound_refs).unwrap() {
                let values: Vec<Option<String>> = (0..row.len())
                    .map(|i| row.get::<_, Option<String>>(i))
                    .collect();
                let values: Vec<Option<&str>> = values.iter().map(|v| v.as_deref()).collect();
                view.add(&values);
            }
            views.push(view);
        }
        let plain_views: Vec<Option<&SubqueryView>> = views.iter().map(Some).collect();
        let views: Vec<Option<ViewRef>> = views.iter().map(|v| Some(v.into())).collect();
        let ours: Vec<i32> = task_rows
            .iter()
            .filter(|row| {
                let lookup = |i: usize| row.get(i).and_then(|v| v.as_deref());
                clause.matches_with(&lookup, &views)
            })
            .map(|row| row[0].as_deref().unwrap().parse().unwrap())
            .collect();
        let (full_sql, full_params) = clause.to_sql();
        for value in values.iter() {
            assert!(!full_sql.contains(&format!("'{value}'")), "{full_sql}");
        }
        let full = selected(&mut client, &full_sql, &full_params);
        let (values_sql, values_params) = clause.to_sql_with_values(&views);
        let with_values = selected(&mut client, &values_sql, &values_params);
        assert_eq!(&full, expected, "{sql}: Postgres on {full_sql}");
        move_ins += move_ins_agree(&mut client, &clause, &plain_views, &task_rows, sql);
        assert_eq!(ours, full, "{sql}: ours vs Postgres on {full_sql}");
        assert_eq!(
            with_values, full,
            "{sql}: values form {values_sql} {values_params:?}"
        );
    }
    assert!(move_ins >= 5, "only {move_ins} move-ins brought rows in");
}

/// For each subquery (a column or a row): the move-in query after one of
/// its values arrives (positive positions) or leaves (negated ones)
/// selects exactly the rows the move brings into the shape by our
/// evaluation.
fn move_ins_agree(
    client: &mut postgres::Client,
    clause: &WhereClause,
    views: &[Option<&SubqueryView>],
    task_rows: &[Vec<Option<String>>],
    sql: &str,
) -> usize {
    let Some(dnf) = clause.dnf() else {
        return 0;
    };
    let mut bringing_rows = 0;
    for trigger in 0..views.len() {
        let positions = dnf.positions_of(trigger);
        let negated = positions.iter().any(|&p| dnf.is_negated(p));
        let Some(full) = views[trigger] else {
            continue;
        };
        let columns = full.column_texts();
        let count = columns.first().map_or(0, Vec::len);
        // A positive position: each value arrives (one with a NULL brings
        // no row in). A negated one: each value, NULLs included, leaves.
        for index in 0..count {
            let value: Vec<Option<&str>> = columns.iter().map(|c| c[index]).collect();
            if value.iter().any(Option::is_none) && !negated {
                continue;
            }
            // The view without any row of the value.
            let mut without = full.clone();
            if let Some(key) = without.key_of(&value) {
                while without.holds(&key) {
                    without.remove(&value);
                }
            }
            let mut moved = clause.new_view(trigger).unwrap();
            moved.add(&value);
            // Before and after the move, for the trigger.
            let (before, after) = if negated {
                (full, &without)
            } else {
                (&without, full)
            };
            let mut pre: Vec<Option<ViewRef>> =
                views.iter().map(|v| v.map(ViewRef::from)).collect();
            pre[trigger] = Some(before.into());
            let mut post: Vec<Option<ViewRef>> =
                views.iter().map(|v| v.map(ViewRef::from)).collect();
            post[trigger] = Some(after.into());
            let (move_sql, params) = clause
                .move_in_where(trigger, (&moved).into(), after.into(), &pre)
                .expect("a move-in where");
            let got = selected(client, &move_sql, &params);
            let expected: Vec<i32> = task_rows
                .iter()
                .filter(|row| {
                    let lookup = |i: usize| row.get(i).and_then(|v| v.as_deref());
                    clause.matches_with(&lookup, &post) && !clause.matches_with(&lookup, &pre)
                })
                .map(|row| row[0].as_deref().unwrap().parse().unwrap())
                .collect();
            assert_eq!(
                got, expected,
                "{sql}: move-in of {value:?}: {move_sql} {params:?}"
            );
            bringing_rows += usize::from(!got.is_empty());
        }
    }
    bringing_rows
}
