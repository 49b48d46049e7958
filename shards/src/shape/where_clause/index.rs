//! Equality keys for the per-relation shape index: when a clause can only
//! hold for rows whose column text equals one of a few strings, a change
//! is routed by a hash lookup instead of evaluating every shape.
//!
//! The key is only sound where equal values always print the same text
//! and distinct values never do; that rules out `numeric` (`1.0`/`1.00`),
//! floats (`0`/`-0`), `bpchar` (padding), `interval` (`1 mon`/`30 days`)
//! and arrays, which fall back to evaluation.

use super::ast::BoolTestKind;
use super::expr::{Expr, FuncKind};
use super::types::{Scalar, Type};
use super::value::{cast_value, format_value};

fn keyable(ty: &Type) -> bool {
    !ty.array
        && matches!(
            ty.scalar,
            Scalar::Int2
                | Scalar::Int4
                | Scalar::Int8
                | Scalar::Text
                | Scalar::Varchar
                | Scalar::Name
                | Scalar::Uuid
                | Scalar::Bool
                | Scalar::Date
                | Scalar::Time
                | Scalar::Timestamp
                | Scalar::Timestamptz
        )
}

/// Casts that preserve a value's text: integer widening and the text
/// family's binary-compatible casts. Anything else changes the text the
/// comparison sees, so the column's own text cannot be the key.
fn text_preserving(from: &Type, to: &Type) -> bool {
    let ints = [Scalar::Int2, Scalar::Int4, Scalar::Int8];
    (ints.contains(&from.scalar) && ints.contains(&to.scalar))
        || (matches!(from.scalar, Scalar::Varchar | Scalar::Name) && to.scalar == Scalar::Text)
}

/// The column under any text-preserving casts.
fn column_of(expr: &Expr) -> Option<(usize, &Type)> {
    match expr {
        Expr::Column { index, ty } => Some((*index, ty)),
        Expr::Cast { arg, ty } if text_preserving(&arg.ty(), ty) => column_of(arg),
        _ => None,
    }
}

/// `column = constant` (either side): the column and the key values.
fn equality(expr: &Expr) -> Option<(usize, Vec<String>)> {
    let Expr::Call { func, args } = expr else {
        return None;
    };
    // Cross-type comparisons (a date against a timestamp) are not
    // equalities of one type's text.
    if func.kind != FuncKind::Eq || func.args.first() != func.args.get(1) {
        return None;
    }
    let [left, right] = args.as_slice() else {
        return None;
    };
    let (column, constant) = match (column_of(left), column_of(right)) {
        (Some(c), None) => (c, right),
        (None, Some(c)) => (c, left),
        _ => return None,
    };
    let (index, column_type) = column;
    if !keyable(column_type) {
        return None;
    }
    let Expr::Const { value, ty, .. } = constant else {
        return None;
    };
    // The constant as the column's type prints as the stream would print a
    // matching row. A NULL, or a value outside the column's range (an int8
    // beyond int4), matches no row: an empty key set.
    let text =
        cast_value(value.clone(), ty, column_type).and_then(|v| format_value(&v, column_type));
    Some((index, text.into_iter().collect()))
}

/// A bare boolean column (`WHERE active`, `NOT active`, `active IS TRUE`)
/// is an equality on `t` / `f`.
fn boolean_column(expr: &Expr) -> Option<(usize, Vec<String>)> {
    let (column, value) = match expr {
        Expr::Not(arg) => (arg.as_ref(), "f"),
        Expr::BoolTest {
            arg,
            test: BoolTestKind::IsTrue,
        } => (arg.as_ref(), "t"),
        Expr::BoolTest {
            arg,
            test: BoolTestKind::IsFalse,
        } => (arg.as_ref(), "f"),
        other => (other, "t"),
    };
    match column {
        Expr::Column { index, ty } if *ty == Type::BOOL => Some((*index, vec![value.to_string()])),
        _ => None,
    }
}

/// The arms of an `OR` that can make it true: a NULL arm never does.
fn live_arms(items: &[Expr]) -> impl Iterator<Item = &Expr> {
    items.iter().filter(|item| {
        !matches!(
            item,
            Expr::Const {
                value: super::value::Value::Null,
                ..
            }
        )
    })
}

pub(crate) fn index_key(expr: &Expr) -> Option<(usize, Vec<String>)> {
    if let Some(key) = boolean_column(expr) {
        return Some(key);
    }
    match expr {
        Expr::And(items) => items.iter().find_map(index_key),
        // `IN (...)` and `a = 1 OR a = 2`: one column, any of the values.
        Expr::Or(items) => {
            let mut column = None;
            let mut values: Vec<String> = Vec::new();
            for item in live_arms(items) {
                let (index, keys) = equality(item)?;
                if column.is_some_and(|c| c != index) {
                    return None;
                }
                column = Some(index);
                for key in keys {
                    if !values.contains(&key) {
                        values.push(key);
                    }
                }
            }
            column.map(|c| (c, values))
        }
        other => equality(other),
    }
}

/// Whether two types print equal values as the same text (and unequal
/// ones as different text): an outer column and a subquery's selected
/// column of the same family, each keyable.
fn same_text(outer: &Type, inner: &Type) -> bool {
    let ints = [Scalar::Int2, Scalar::Int4, Scalar::Int8];
    let texts = [Scalar::Text, Scalar::Varchar, Scalar::Name];
    !outer.array
        && !inner.array
        && ((ints.contains(&outer.scalar) && ints.contains(&inner.scalar))
            || (texts.contains(&outer.scalar) && texts.contains(&inner.scalar))
            || (outer.scalar == Scalar::Uuid && inner.scalar == Scalar::Uuid))
}

/// `column IN (SELECT c ..)` as the clause or one conjunct of its top
/// `AND`: every matching row's column then prints as one of the
/// subquery's values (given `inner(s)`, the type subquery `s` selects,
/// printing alike). The column and the subquery.
pub(crate) fn subquery_key(
    expr: &Expr,
    inner: &dyn Fn(usize) -> Option<Type>,
) -> Option<(usize, usize)> {
    match expr {
        Expr::And(items) => items.iter().find_map(|item| subquery_key(item, inner)),
        Expr::Sublink { lhs, subquery } => {
            let [single] = lhs.as_slice() else {
                return None;
            };
            let (column, ty) = column_of(single)?;
            same_text(ty, &inner(*subquery)?).then_some((column, *subquery))
        }
        _ => None,
    }
}

/// A fixed key of the relation index: a column and the texts it may print.
pub(crate) type FixedKey = (usize, Vec<String>);

/// How a subquery clause's rows are routed: by the values of subquery
/// `subquery` in `column` (see [`subquery_key`]), and, when the clause is
/// an `OR` whose other arms each require a plain equality, by those fixed
/// keys too (`project_id IN (SELECT ..) OR owner_id = 7`): a row can only
/// match through one of the arms, so it reaches the shape through one of
/// the keys. None when some arm requires neither (`OR title LIKE ..`).
pub(crate) fn subquery_routing(
    expr: &Expr,
    inner: &dyn Fn(usize) -> Option<Type>,
) -> Option<(usize, usize, Vec<FixedKey>)> {
    if let Some((column, subquery)) = subquery_key(expr, inner) {
        return Some((column, subquery, Vec::new()));
    }
    match expr {
        Expr::And(items) => items.iter().find_map(|item| subquery_routing(item, inner)),
        Expr::Or(items) => {
            let mut routed: Option<(usize, usize)> = None;
            let mut fixed: Vec<FixedKey> = Vec::new();
            for item in live_arms(items) {
                if let Some(key) = subquery_key(item, inner) {
                    // Two subqueries' values would need two routings.
                    if routed.is_some_and(|r| r != key) {
                        return None;
                    }
                    routed = Some(key);
                    continue;
                }
                fixed.push(index_key(item)?);
            }
            let (column, subquery) = routed?;
            Some((column, subquery, fixed))
        }
        _ => None,
    }
}
