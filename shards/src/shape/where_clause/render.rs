//! Writes a typed expression back as Postgres SQL, for the snapshot query
//! and for shape identity. Everything is regenerated from the tree:
//! identifiers are quoted, constants are typed string literals, and every
//! compound expression is parenthesised, so no user text reaches the SQL.
//! Text orderings get `COLLATE "C"` so that Postgres sorts text bytewise,
//! exactly like our evaluation does, whatever the database's collation.

use std::cell::RefCell;

use super::expr::{Expr, Func, FuncKind, Style};
use super::subquery::{array_literal, Subquery};
use super::types::{quote_identifier, Type};
use super::value::format_value;
use super::{Views, WhereColumn};

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Params {
    /// `$n::type` placeholders (the snapshot query binds the values),
    /// numbered after the given count of earlier parameters (a subset's
    /// clause follows its shape's in one query).
    Placeholders { after: usize },
    /// Values written in (the canonical form for shape identity).
    Inline,
}

pub(crate) fn render(
    expr: &Expr,
    columns: &[WhereColumn],
    subqueries: &[Subquery],
    params: Params,
) -> String {
    let mut out = String::new();
    Renderer {
        columns,
        subqueries,
        params,
        values: &[],
        bound: RefCell::new(BoundValues::default()),
    }
    .expr(&mut out, expr);
    out
}

/// With placeholders numbered after `after` earlier parameters and the
/// clause's own `own_params`, and each subquery `values` gives replaced by
/// those values, bound as further parameters: the SQL and those values.
pub(crate) fn render_with_values(
    expr: &Expr,
    columns: &[WhereColumn],
    subqueries: &[Subquery],
    after: usize,
    own_params: usize,
    values: &Views<'_>,
) -> (String, Vec<String>) {
    let mut out = String::new();
    let renderer = Renderer {
        columns,
        subqueries,
        params: Params::Placeholders { after },
        values,
        bound: RefCell::new(BoundValues {
            next: after + own_params + 1,
            texts: Vec::new(),
        }),
    };
    renderer.expr(&mut out, expr);
    (out, renderer.bound.into_inner().texts)
}

/// Parameters added for subqueries replaced by values.
#[derive(Default)]
struct BoundValues {
    /// The next placeholder's number.
    next: usize,
    texts: Vec<String>,
}

/// A string literal Postgres reads the same way under any
/// `standard_conforming_strings` setting.
pub(crate) fn quote_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 3);
    if text.contains('\\') {
        out.push('E');
    }
    out.push('\'');
    for c in text.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Text orderings are bytewise: `COLLATE "C"`, in every rendering.
fn needs_bytewise_ordering(func: &Func) -> bool {
    func.kind.is_ordering() && func.args.first().is_some_and(|t| t.scalar.is_string())
}

/// Everything else on text that a collation can change: equality (under a
/// nondeterministic collation `=` is not bytewise, and two different
/// implicit collations make Postgres refuse the comparison), `LIKE`, array
/// membership, and case folding, which we do as the `C` collation does
/// (ASCII letters only). Only the snapshot SQL spells these out, so shape
/// identity (the canonical form) stays what it was.
fn needs_collation(func: &Func) -> bool {
    use FuncKind::*;
    matches!(
        func.kind,
        Eq | Ne
            | Like
            | NotLike
            | ILike
            | NotILike
            | Contains
            | ContainedBy
            | Overlap
            | Lower
            | Upper
    ) && func.args.first().is_some_and(|t| t.scalar.is_string())
}

struct Renderer<'a> {
    columns: &'a [WhereColumn],
    /// What `Expr::Sublink` indexes at this level.
    subqueries: &'a [Subquery],
    params: Params,
    /// Subqueries to write as their given values (top level only).
    values: &'a Views<'a>,
    bound: RefCell<BoundValues>,
}

impl Renderer<'_> {
    /// Whether `func`'s text operands get `COLLATE "C"` here.
    fn collate(&self, func: &Func) -> bool {
        needs_bytewise_ordering(func)
            || (matches!(self.params, Params::Placeholders { .. }) && needs_collation(func))
    }

    fn collate_text(&self, ty: &Type) -> bool {
        matches!(self.params, Params::Placeholders { .. }) && ty.scalar.is_string()
    }

    fn list(&self, out: &mut String, items: &[Expr], separator: &str) {
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(separator);
            }
            self.expr(out, item);
        }
    }

    fn constant(
        &self,
        out: &mut String,
        value: &super::value::Value,
        ty: &Type,
        param: Option<usize>,
    ) {
        if let (Some(n), Params::Placeholders { after }) = (param, self.params) {
            out.push_str(&format!("${}::{}", n + after, ty.sql_name()));
            return;
        }
        match format_value(value, ty) {
            None if ty.is_unknown() => out.push_str("NULL"),
            None => out.push_str(&format!("NULL::{}", ty.sql_name())),
            Some(text) => {
                out.push_str(&quote_literal(&text));
                out.push_str("::");
                out.push_str(&ty.sql_name());
            }
        }
    }

    fn expr(&self, out: &mut String, expr: &Expr) {
        match expr {
            Expr::Const { value, ty, param } => self.constant(out, value, ty, *param),
            Expr::Column { index, .. } => {
                let name = self.columns.get(*index).map_or("", |c| c.name.as_str());
                out.push_str(&quote_identifier(name));
            }
            Expr::Call { func, args } => self.call(out, func, args),
            Expr::Cast { arg, ty } => {
                self.expr(out, arg);
                out.push_str("::");
                out.push_str(&ty.sql_name());
            }
            Expr::And(items) | Expr::Or(items) => {
                let separator = if matches!(expr, Expr::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                out.push('(');
                self.list(out, items, separator);
                out.push(')');
            }
            Expr::Not(arg) => {
                out.push_str("(NOT ");
                self.expr(out, arg);
                out.push(')');
            }
            Expr::IsNull { arg, negated } => {
                out.push('(');
                self.expr(out, arg);
                out.push_str(if *negated {
                    " IS NOT NULL)"
                } else {
                    " IS NULL)"
                });
            }
            Expr::BoolTest { arg, test } => {
                out.push('(');
                self.expr(out, arg);
                out.push(' ');
                out.push_str(test.sql());
                out.push(')');
            }
            Expr::Distinct {
                left,
                right,
                negated,
            } => {
                out.push('(');
                self.expr(out, left);
                out.push_str(if *negated {
                    " IS NOT DISTINCT FROM "
                } else {
                    " IS DISTINCT FROM "
                });
                self.expr(out, right);
                if self.collate_text(&left.ty()) {
                    out.push_str(" COLLATE \"C\"");
                }
                out.push(')');
            }
            Expr::Quantified {
                func,
                left,
                right,
                all,
            } => {
                out.push('(');
                self.expr(out, left);
                if self.collate(func) {
                    out.push_str(" COLLATE \"C\"");
                }
                out.push(' ');
                out.push_str(func.kind.sql(false).0);
                out.push_str(if *all { " ALL (" } else { " ANY (" });
                self.expr(out, right);
                out.push_str("))");
            }
            Expr::Coalesce { args, .. } => {
                out.push_str("COALESCE(");
                self.list(out, args, ", ");
                out.push(')');
            }
            Expr::MinMax { args, ty, greatest } => {
                out.push_str(if *greatest { "GREATEST(" } else { "LEAST(" });
                for (i, arg) in args.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    self.expr(out, arg);
                    if i == 0 && ty.scalar.is_string() {
                        // One explicit collation decides the whole call's.
                        out.push_str(" COLLATE \"C\"");
                    }
                }
                out.push(')');
            }
            Expr::ArrayCtor { elements, .. } => {
                out.push_str("ARRAY[");
                self.list(out, elements, ", ");
                out.push(']');
            }
            Expr::Sublink { lhs, subquery } => self.sublink(out, lhs, *subquery),
        }
    }

    /// The tested columns; each text one bytewise (`COLLATE "C"`), as our
    /// membership test compares bytes.
    fn sublink_lhs(&self, out: &mut String, lhs: &[Expr]) {
        if lhs.len() != 1 {
            out.push('(');
        }
        for (i, column) in lhs.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            self.expr(out, column);
            if self.collate_text(&column.ty()) {
                out.push_str(" COLLATE \"C\"");
            }
        }
        if lhs.len() != 1 {
            out.push(')');
        }
    }

    fn sublink(&self, out: &mut String, lhs: &[Expr], index: usize) {
        let Some(subquery) = self.subqueries.get(index) else {
            // Type checking never builds one; never true is the safe SQL.
            out.push_str("false");
            return;
        };
        out.push('(');
        self.sublink_lhs(out, lhs);
        if let Some(view) = self.values.get(index).copied().flatten() {
            self.values_of(out, subquery, view);
            out.push(')');
            return;
        }
        out.push_str(" IN (SELECT ");
        for (i, &column) in subquery.selected.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&quote_identifier(&subquery.columns[column].name));
        }
        out.push_str(" FROM ");
        out.push_str(&quote_identifier(&subquery.table.schema));
        out.push('.');
        out.push_str(&quote_identifier(&subquery.table.name));
        if let Some(filter) = &subquery.filter {
            out.push_str(" WHERE ");
            let inner = Renderer {
                columns: &subquery.columns,
                subqueries: &subquery.subqueries,
                params: self.params,
                values: &[],
                bound: RefCell::new(BoundValues::default()),
            };
            inner.expr(out, filter);
        }
        out.push_str("))");
    }

    /// ` = ANY($k::type[])`, or for a row ` IN (SELECT * FROM unnest($k::t1[],
    /// $k+1::t2[]))`; array-typed columns (whose arrays would flatten) as
    /// ` IN (VALUES ($k::t[]), ..)`, one parameter per value.
    fn values_of(&self, out: &mut String, subquery: &Subquery, view: super::ViewRef<'_>) {
        let columns = view.column_texts();
        let mut bound = self.bound.borrow_mut();
        if subquery.types.iter().any(|t| t.array) {
            let count = columns.first().map_or(0, Vec::len);
            if count == 0 {
                // `IN` of nothing is false, NULL or not.
                out.push_str(" IN (SELECT NULL WHERE false)");
                return;
            }
            out.push_str(" IN (VALUES ");
            for row in 0..count {
                if row > 0 {
                    out.push_str(", ");
                }
                out.push('(');
                for (c, (ty, column)) in subquery.types.iter().zip(&columns).enumerate() {
                    if c > 0 {
                        out.push_str(", ");
                    }
                    match column[row] {
                        // Bound parameters are texts; a NULL is written.
                        None => out.push_str(&format!("NULL::{}", ty.sql_name())),
                        Some(text) => {
                            out.push_str(&format!("${}::{}", bound.next, ty.sql_name()));
                            bound.next += 1;
                            bound.texts.push(text.to_string());
                        }
                    }
                }
                out.push(')');
            }
            out.push(')');
            return;
        }
        if let [ty] = subquery.types.as_slice() {
            out.push_str(&format!(" = ANY (${}::{}[])", bound.next, ty.sql_name()));
            bound.next += 1;
            bound.texts.push(array_literal(&columns[0]));
            return;
        }
        out.push_str(" IN (SELECT * FROM unnest(");
        for (c, ty) in subquery.types.iter().enumerate() {
            if c > 0 {
                out.push_str(", ");
            }
            out.push_str(&format!("${}::{}[]", bound.next, ty.sql_name()));
            bound.next += 1;
            bound.texts.push(array_literal(&columns[c]));
        }
        out.push_str("))");
    }

    fn call(&self, out: &mut String, func: &Func, args: &[Expr]) {
        let (name, style) = func.kind.sql(func.function_style);
        match (style, args) {
            (Style::Infix, [left, right]) => {
                out.push('(');
                self.expr(out, left);
                out.push(' ');
                out.push_str(name);
                out.push(' ');
                self.expr(out, right);
                if self.collate(func) {
                    out.push_str(" COLLATE \"C\"");
                }
                out.push(')');
            }
            (Style::Prefix, [arg]) => {
                out.push('(');
                out.push_str(name);
                out.push(' ');
                self.expr(out, arg);
                out.push(')');
            }
            _ => {
                // Function-call syntax; also the fallback for any arity
                // mismatch, which type checking never produces.
                let name = if style == Style::Call {
                    name
                } else {
                    fallback_name(func.kind)
                };
                out.push_str(name);
                out.push('(');
                self.list(out, args, ", ");
                if self.collate(func) {
                    // On the last argument: one explicit collation decides.
                    out.push_str(" COLLATE \"C\"");
                }
                out.push(')');
            }
        }
    }
}

fn fallback_name(kind: FuncKind) -> &'static str {
    match kind {
        FuncKind::ArrayConcat => "array_cat",
        FuncKind::ArrayAppend => "array_append",
        FuncKind::ArrayPrepend => "array_prepend",
        _ => "unsupported",
    }
}
