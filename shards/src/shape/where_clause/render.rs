//! Writes a typed expression back as Postgres SQL, for the snapshot query
//! and for shape identity. Everything is regenerated from the tree:
//! identifiers are quoted, constants are typed string literals, and every
//! compound expression is parenthesised, so no user text reaches the SQL.
//! Text orderings get `COLLATE "C"` so that Postgres sorts text bytewise,
//! exactly like our evaluation does, whatever the database's collation.

use super::expr::{Expr, Func, FuncKind, Style};
use super::types::{quote_identifier, Type};
use super::value::format_value;
use super::WhereColumn;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Params {
    /// `$n::type` placeholders (the snapshot query binds the values),
    /// numbered after the given count of earlier parameters (a subset's
    /// clause follows its shape's in one query).
    Placeholders { after: usize },
    /// Values written in (the canonical form for shape identity).
    Inline,
}

pub(crate) fn render(expr: &Expr, columns: &[WhereColumn], params: Params) -> String {
    let mut out = String::new();
    Renderer { columns, params }.expr(&mut out, expr);
    out
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
    params: Params,
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
        }
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
