//! A shape's identity from its `where` text, decided by the same parser
//! that decides its meaning: the untyped tree (before the catalog is read,
//! which happens on the owner shard this text chooses) written back with
//! every compound parenthesised, identifiers quoted and keywords in one
//! spelling. Spacing, keyword case and redundant parentheses do not make
//! two shapes; texts Postgres reads differently never make one.

use std::collections::BTreeMap;

use super::ast::{Node, NodeKind, SubSelect, Sublink, SublinkKind, TypeName};
use super::parse;
use super::render::quote_literal;
use super::types::quote_identifier;

/// The identity form of `sql`, or None when it does not parse (the owner
/// then answers with the parse error).
pub fn identity(sql: &str) -> Option<String> {
    let parsed = parse::parse(sql).ok()?;
    let mut out = String::with_capacity(sql.len() + 16);
    write(&mut out, &parsed.root, &BTreeMap::new());
    Some(out)
}

/// The identity form of one node (a subquery's inner where), each `$n`
/// in `renumber` written as its new number (a dependency shape numbers
/// the parameters it uses from 1).
pub(crate) fn node_identity(node: &Node, renumber: &Renumber) -> String {
    let mut out = String::new();
    write(&mut out, node, renumber);
    out
}

/// Parameter numbers to write differently: old → new.
pub(crate) type Renumber = BTreeMap<usize, usize>;

fn write_type(out: &mut String, t: &TypeName) {
    out.push_str(&t.names.join("."));
    if t.has_modifiers {
        // Refused when typed; kept apart from the plain type all the same.
        out.push_str("(…)");
    }
    if t.array {
        out.push_str("[]");
    }
}

fn write_list(out: &mut String, items: &[Node], separator: &str, renumber: &Renumber) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(separator);
        }
        write(out, item, renumber);
    }
}

fn write(out: &mut String, node: &Node, renumber: &Renumber) {
    match &node.kind {
        NodeKind::Column(parts) => {
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(&quote_identifier(part));
            }
        }
        NodeKind::Number(n) => out.push_str(n),
        NodeKind::String(s) => out.push_str(&quote_literal(s)),
        NodeKind::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        NodeKind::Null => out.push_str("NULL"),
        NodeKind::Param(n) => {
            out.push('$');
            out.push_str(&renumber.get(n).unwrap_or(n).to_string());
        }
        NodeKind::TypedString { type_name, value } => {
            write_type(out, type_name);
            out.push(' ');
            out.push_str(&quote_literal(value));
        }
        NodeKind::Cast { arg, type_name } => {
            out.push('(');
            write(out, arg, renumber);
            out.push_str(")::");
            write_type(out, type_name);
        }
        NodeKind::Prefix { op, arg } => {
            out.push('(');
            out.push_str(op);
            out.push(' ');
            write(out, arg, renumber);
            out.push(')');
        }
        NodeKind::Infix { op, left, right } => {
            out.push('(');
            write(out, left, renumber);
            out.push(' ');
            out.push_str(op);
            out.push(' ');
            write(out, right, renumber);
            out.push(')');
        }
        NodeKind::Quantified {
            op,
            left,
            right,
            all,
        } => {
            out.push('(');
            write(out, left, renumber);
            out.push(' ');
            out.push_str(op);
            out.push_str(if *all { " ALL (" } else { " ANY (" });
            write(out, right, renumber);
            out.push_str("))");
        }
        NodeKind::And(items) => {
            out.push('(');
            write_list(out, items, " AND ", renumber);
            out.push(')');
        }
        NodeKind::Or(items) => {
            out.push('(');
            write_list(out, items, " OR ", renumber);
            out.push(')');
        }
        NodeKind::Not(arg) => {
            out.push_str("(NOT ");
            write(out, arg, renumber);
            out.push(')');
        }
        NodeKind::IsNull { arg, negated } => {
            out.push('(');
            write(out, arg, renumber);
            out.push_str(if *negated {
                " IS NOT NULL)"
            } else {
                " IS NULL)"
            });
        }
        NodeKind::BoolTest { arg, test } => {
            out.push('(');
            write(out, arg, renumber);
            out.push(' ');
            out.push_str(test.sql());
            out.push(')');
        }
        NodeKind::Distinct {
            left,
            right,
            negated,
        } => {
            out.push('(');
            write(out, left, renumber);
            out.push_str(if *negated {
                " IS NOT DISTINCT FROM "
            } else {
                " IS DISTINCT FROM "
            });
            write(out, right, renumber);
            out.push(')');
        }
        NodeKind::Between {
            arg,
            low,
            high,
            negated,
            symmetric,
        } => {
            out.push('(');
            write(out, arg, renumber);
            out.push_str(if *negated {
                " NOT BETWEEN "
            } else {
                " BETWEEN "
            });
            if *symmetric {
                out.push_str("SYMMETRIC ");
            }
            write(out, low, renumber);
            out.push_str(" AND ");
            write(out, high, renumber);
            out.push(')');
        }
        NodeKind::InList {
            arg,
            items,
            negated,
        } => {
            out.push('(');
            write(out, arg, renumber);
            out.push_str(if *negated { " NOT IN (" } else { " IN (" });
            write_list(out, items, ", ", renumber);
            out.push_str("))");
        }
        NodeKind::Func {
            name,
            args,
            aggregate,
        } => {
            let name: Vec<String> = name.iter().map(|n| quote_identifier(n)).collect();
            out.push_str(&name.join("."));
            out.push('(');
            if *aggregate {
                // Refused when typed; never equal to a plain call.
                out.push_str("aggregate ");
            }
            write_list(out, args, ", ", renumber);
            out.push(')');
        }
        NodeKind::Array(items) => {
            out.push_str("ARRAY[");
            write_list(out, items, ", ", renumber);
            out.push(']');
        }
        NodeKind::Row(items) => {
            out.push_str("ROW(");
            write_list(out, items, ", ", renumber);
            out.push(')');
        }
        NodeKind::Sublink(sublink) => write_sublink(out, sublink, renumber),
        // Refused when typed; never equal to anything that types.
        NodeKind::Unsupported(what) => out.push_str(&format!("<unsupported {what}>")),
        NodeKind::UnsupportedMessage(what) => out.push_str(&format!("<unsupported {what}>")),
    }
}

/// `(lhs IN (SELECT "c" FROM "schema"."t" WHERE ..))`: the schema written
/// out (`public` when absent), the columns in their written order (the
/// pairing with a row's columns follows it), the inner where in identity
/// form. Parameters stay `$n`: their values are part of the definition.
fn write_sublink(out: &mut String, sublink: &Sublink, renumber: &Renumber) {
    out.push('(');
    if sublink.kind == SublinkKind::Other {
        // Refused when typed; kept apart from `IN` all the same.
        out.push_str("<unsupported SubLink> ");
    }
    if let Some(lhs) = &sublink.lhs {
        write(out, lhs, renumber);
        out.push(' ');
    }
    out.push_str("IN (");
    match &sublink.select {
        Ok(select) => write_select(out, select, renumber),
        Err(refused) => {
            out.push_str("<refused ");
            out.push_str(&refused.message);
            out.push('>');
        }
    }
    out.push_str("))");
}

fn write_select(out: &mut String, select: &SubSelect, renumber: &Renumber) {
    out.push_str("SELECT ");
    for (i, column) in select.columns.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&quote_identifier(column));
    }
    out.push_str(" FROM ");
    out.push_str(&quote_identifier(
        select.schema.as_deref().unwrap_or("public"),
    ));
    out.push('.');
    out.push_str(&quote_identifier(&select.table));
    if let Some(filter) = &select.filter {
        out.push_str(" WHERE ");
        write(out, filter, renumber);
    }
}

#[cfg(test)]
mod tests {
    use super::identity;

    #[test]
    fn spelling_does_not_make_a_shape() {
        for (a, b) in [
            ("id = 1", "ID=1"),
            ("id = 1", "  id   =   1  "),
            ("id = 1", "(id = 1)"),
            ("id = 1", "((id) = (1))"),
            ("a AND b", "a and b"),
            ("name ILIKE 'x%'", "name ilike 'x%'"),
            ("x IN (1, 2)", "x in (1,2)"),
            ("x IS NOT NULL", "x is not null"),
            ("\"id\" = 1", "id = 1"),
            ("x::int4 = 1", "x :: int4 = 1"),
            (
                "p IN (SELECT id FROM projects)",
                "p in ( select ID from public.projects )",
            ),
            (
                "p NOT IN (SELECT id FROM t WHERE o = $1)",
                "NOT (p IN ((SELECT id FROM \"public\".t AS x WHERE (o = $1))))",
            ),
            (
                "(a, b) IN (SELECT x, y FROM t)",
                "ROW(a, b) IN (SELECT x AS q, y FROM ONLY t)",
            ),
        ] {
            assert_eq!(identity(a), identity(b), "{a} vs {b}");
            assert!(identity(a).is_some(), "{a}");
        }
    }

    #[test]
    fn meaning_makes_a_shape() {
        for (a, b) in [
            ("a OR b AND c", "(a OR b) AND c"),
            ("id = 1", "id = 2"),
            ("name = 'x'", "name = 'X'"),
            ("\"Id\" = 1", "id = 1"),
            ("x = $1", "x = $2"),
            ("x = 1", "x = '1'"),
            ("x - 1 - 2 = 0", "x - (1 - 2) = 0"),
            ("x IN (1, 2)", "x NOT IN (1, 2)"),
            ("x BETWEEN 1 AND 2", "x BETWEEN SYMMETRIC 1 AND 2"),
            ("name = 'a''b'", "name = 'a' 'b'"),
            ("x = ANY(ARRAY[1])", "x = ALL(ARRAY[1])"),
            ("p IN (SELECT id FROM t)", "p IN (SELECT id FROM s.t)"),
            ("p IN (SELECT id FROM t)", "p IN (SELECT id FROM \"T\")"),
            ("p IN (SELECT id FROM t)", "p IN (SELECT x FROM t)"),
            (
                "p IN (SELECT id FROM t)",
                "p IN (SELECT id FROM t WHERE true)",
            ),
            ("p IN (SELECT id FROM t)", "p NOT IN (SELECT id FROM t)"),
            ("p IN (SELECT id FROM t)", "p = ANY (SELECT id FROM t)"),
            (
                "(a, b) IN (SELECT x, y FROM t)",
                "(a, b) IN (SELECT y, x FROM t)",
            ),
            (
                "p IN (SELECT id FROM t WHERE o = $1)",
                "p IN (SELECT id FROM t WHERE o = $2)",
            ),
            (
                "p IN (SELECT id FROM t WHERE o IN (SELECT id FROM u))",
                "p IN (SELECT id FROM t WHERE o IN (SELECT id FROM v))",
            ),
        ] {
            let (x, y) = (identity(a), identity(b));
            if x.is_some() || y.is_some() {
                assert_ne!(x, y, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn text_that_does_not_parse_has_no_identity() {
        assert_eq!(identity("id = "), None);
        assert_eq!(identity("id = 1 garbage"), None);
    }
}
