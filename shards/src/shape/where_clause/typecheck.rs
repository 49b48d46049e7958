//! Type checking: resolves names, types literals and parameters from
//! context as Postgres does (an untyped `'5'` or `$1` next to an `int4`
//! column becomes an `int4`), picks operator and function overloads, and
//! produces Electric's error messages for what it rejects.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::ast::{BoolTestKind, Node, NodeKind, SubSelect, Sublink, SublinkKind, TypeName};
use super::error::{WhereError, WhereErrorField};
use super::eval;
use super::expr::{Expr, Func, FuncKind};
use super::functions::{
    array_operator_kind, comparison, function_signatures, is_comparable, operator_signatures,
    select_overload, Signature,
};
use super::identity::node_identity;
use super::numeric::Numeric;
use super::subquery::Subquery;
use super::types::{
    electric_identifier, explicitly_castable, implicitly_castable, resolve_type_name, Category,
    Scalar, Type,
};
use super::value::{cast_value, format_value, parse_value, Value};
use super::{TableLookup, WhereColumn};
use crate::shape::definition::TableName;

/// A checked subtree: either a typed expression or a literal/parameter
/// whose type is still open.
#[derive(Clone, Debug)]
enum Typed {
    Unknown {
        /// None for `NULL`.
        text: Option<String>,
        loc: usize,
        param: Option<usize>,
    },
    Known {
        expr: Expr,
        loc: usize,
    },
}

impl Typed {
    fn ty(&self) -> Type {
        match self {
            Typed::Unknown { .. } => Type::UNKNOWN,
            Typed::Known { expr, .. } => expr.ty(),
        }
    }

    fn loc(&self) -> usize {
        match self {
            Typed::Unknown { loc, .. } | Typed::Known { loc, .. } => *loc,
        }
    }
}

pub(crate) struct Checked {
    pub expr: Expr,
    pub referenced: Vec<usize>,
    /// Each parameter's resolved type, by number.
    pub param_types: BTreeMap<usize, Type>,
    /// What `Expr::Sublink` nodes index.
    pub subqueries: Vec<Subquery>,
}

pub(crate) struct Checker<'a> {
    columns: &'a [WhereColumn],
    column_types: Vec<Type>,
    enums: Vec<Arc<str>>,
    params: &'a BTreeMap<usize, String>,
    param_types: BTreeMap<usize, Type>,
    used_params: BTreeSet<usize>,
    referenced: BTreeSet<usize>,
    /// Treat parameter values as literals (folding them into constants),
    /// as Electric does; off when `$n` placeholders must survive.
    fold_params: bool,
    /// Off while typing `IS DISTINCT FROM`, whose `=` is not strict.
    fold_null_calls: bool,
    /// The catalog of the tables subqueries read.
    tables: &'a TableLookup<'a>,
    subqueries: Vec<Subquery>,
    /// Subquery index by the location of its `SubLink` node.
    sublink_at: BTreeMap<usize, usize>,
}

/// The type a column is evaluated as.
pub(crate) fn column_type(column: &WhereColumn) -> Type {
    let scalar = if column.is_enum {
        Scalar::Enum(column.type_name.as_str().into())
    } else {
        Scalar::from_typname(&column.type_name)
            .unwrap_or_else(|| Scalar::Other(column.type_name.as_str().into()))
    };
    Type {
        scalar,
        array: column.dims > 0,
    }
}

fn describe(expr: &Expr, columns: &[WhereColumn]) -> String {
    match expr {
        Expr::Column { index, ty } => {
            let name = columns.get(*index).map_or("?", |c| c.name.as_str());
            format!("reference {} of type {ty}", electric_identifier(name))
        }
        Expr::Call { func, .. } => {
            format!("function {} returning {}", func.kind.sql(false).0, func.ret)
        }
        other => format!("expression of type {}", other.ty()),
    }
}

impl<'a> Checker<'a> {
    pub fn new(
        columns: &'a [WhereColumn],
        params: &'a BTreeMap<usize, String>,
        fold_params: bool,
        tables: &'a TableLookup<'a>,
    ) -> Checker<'a> {
        let mut enums: Vec<Arc<str>> = Vec::new();
        for c in columns.iter().filter(|c| c.is_enum) {
            if !enums.iter().any(|e| e.as_ref() == c.type_name) {
                enums.push(c.type_name.as_str().into());
            }
        }
        Checker {
            columns,
            column_types: columns.iter().map(column_type).collect(),
            enums,
            params,
            param_types: BTreeMap::new(),
            used_params: BTreeSet::new(),
            referenced: BTreeSet::new(),
            fold_params,
            fold_null_calls: true,
            tables,
            subqueries: Vec::new(),
            sublink_at: BTreeMap::new(),
        }
    }

    /// Checks the whole clause, including Electric's parameter and
    /// return-type rules.
    pub fn check_clause(mut self, root: &Node) -> Result<Checked, WhereError> {
        self.prepare_subqueries(root)?;
        let typed = self.check(root)?;
        let expr = self.infer(typed)?;
        if let Some(unused) = self.params.keys().find(|k| !self.used_params.contains(k)) {
            return Err(WhereError::at(
                0,
                format!("parameter value for ${unused} was not used"),
            ));
        }
        let highest = self.param_types.keys().next_back().copied().unwrap_or(0);
        if let Some(missing) = (1..=highest).find(|n| !self.param_types.contains_key(n)) {
            return Err(WhereError::at(
                0,
                format!(
                    "expression is missing ${missing} - parameters should be numbered sequentially"
                ),
            ));
        }
        if expr.ty() != Type::BOOL {
            return Err(WhereError::plain("WHERE clause must return a boolean"));
        }
        Ok(Checked {
            expr,
            referenced: self.referenced.into_iter().collect(),
            param_types: self.param_types,
            subqueries: self.subqueries,
        })
    }

    /// Resolves every subquery at this level before anything else is typed,
    /// in Electric's order: each statement taken apart (its refusals
    /// first, for all of them), then each dependency built against its own
    /// table (catalog, columns, then its where, recursively).
    fn prepare_subqueries(&mut self, root: &Node) -> Result<(), WhereError> {
        let mut sublinks = Vec::new();
        collect_sublinks(root, &mut sublinks);
        for (_, sublink) in &sublinks {
            if let Err(refused) = &sublink.select {
                return Err(refused.clone());
            }
        }
        for (loc, sublink) in sublinks {
            if let Ok(select) = &sublink.select {
                let subquery = self.subquery(select)?;
                self.sublink_at.insert(loc, self.subqueries.len());
                self.subqueries.push(subquery);
            }
        }
        // Kept for the clause's life, in every subquery shape.
        self.subqueries.shrink_to_fit();
        Ok(())
    }

    /// Types a subquery against its table. Parameters are the request's
    /// own (`$n` means `params[n]` at every level), so their types and uses
    /// are shared with the enclosing clause: a parameter has one type
    /// everywhere, as it is one bound value in one statement.
    fn subquery(&mut self, select: &SubSelect) -> Result<Subquery, WhereError> {
        let table = TableName {
            schema: select.schema.clone().unwrap_or_else(|| "public".into()),
            name: select.table.clone(),
        };
        let Some(columns) = (self.tables)(&table) else {
            return Err(WhereError {
                message: format!(
                    "Table {table} does not exist. If the table name contains capitals or special characters you must quote it."
                ),
                field: WhereErrorField::Table,
            });
        };
        let mut selected = Vec::with_capacity(select.columns.len());
        let mut missing = Vec::new();
        for name in &select.columns {
            match columns.iter().position(|c| &c.name == name) {
                Some(index) => selected.push(index),
                None => missing.push(name.as_str()),
            }
        }
        if !missing.is_empty() {
            return Err(WhereError {
                message: format!(
                    "The following columns are not found on the table: {}",
                    missing.join(", ")
                ),
                field: WhereErrorField::Columns,
            });
        }
        let types = selected.iter().map(|&i| column_type(&columns[i])).collect();
        let mut filter = None;
        let mut subqueries = Vec::new();
        let mut params = Vec::new();
        if let Some(node) = &select.filter {
            let mut inner = Checker::new(&columns, self.params, self.fold_params, self.tables);
            inner.param_types = std::mem::take(&mut self.param_types);
            let checked = inner.check_inner(node);
            // Hand the shared types back whatever the outcome; the uses
            // count for the request and say what the dependency binds.
            let (result, param_types, used_params) = checked;
            self.param_types = param_types;
            self.used_params.extend(used_params.iter().copied());
            let (expr, inner_subqueries) = result?;
            filter = Some(expr);
            subqueries = inner_subqueries;
            params = used_params.into_iter().collect();
        }
        // The dependency numbers the parameters it uses from 1, so the
        // same inner select is one dependency whatever the outer numbering.
        let renumber = params
            .iter()
            .enumerate()
            .map(|(i, &n)| (n, i + 1))
            .collect();
        Ok(Subquery {
            table,
            selected,
            types,
            filter,
            filter_text: select
                .filter
                .as_ref()
                .map(|node| node_identity(node, &renumber)),
            params,
            subqueries,
            columns,
        })
    }

    /// A subquery's where: typed as a clause of its own, except for the
    /// parameter rules, which apply to the request as a whole.
    #[allow(clippy::type_complexity)]
    fn check_inner(
        mut self,
        root: &Node,
    ) -> (
        Result<(Expr, Vec<Subquery>), WhereError>,
        BTreeMap<usize, Type>,
        BTreeSet<usize>,
    ) {
        let result = (|| {
            self.prepare_subqueries(root)?;
            let typed = self.check(root)?;
            let expr = self.infer(typed)?;
            if expr.ty() != Type::BOOL {
                return Err(WhereError::plain("WHERE clause must return a boolean"));
            }
            Ok(expr)
        })();
        let result = result.map(|expr| (expr, std::mem::take(&mut self.subqueries)));
        (result, self.param_types, self.used_params)
    }

    /// `lhs IN (SELECT ..)` once its subquery is typed: the left side must
    /// be a column or a row of columns whose type is exactly the selected
    /// columns' (no implicit casts, as Electric compares types).
    fn sublink(&mut self, sublink: &Sublink, loc: usize) -> Result<Expr, WhereError> {
        let (lhs_nodes, row): (Vec<&Node>, bool) = match &sublink.lhs {
            Some(Node {
                kind: NodeKind::Row(items),
                ..
            }) => (items.iter().collect(), true),
            Some(node) => (vec![node], false),
            None => (Vec::new(), false),
        };
        let mut lhs = Vec::with_capacity(lhs_nodes.len());
        for node in lhs_nodes {
            lhs.push(self.check(node)?);
        }
        if sublink.kind == SublinkKind::Other {
            return Err(WhereError::at(
                loc,
                "only `value IN (SELECT ...)` sublinks are supported right now",
            ));
        }
        let mut columns = Vec::with_capacity(lhs.len());
        for typed in lhs {
            match typed {
                Typed::Known {
                    expr: expr @ Expr::Column { .. },
                    ..
                } => columns.push(expr),
                _ => {
                    return Err(WhereError::at(
                        loc,
                        "currently, left side of `IN (SELECT ...)` can only be a column reference or a list of column references",
                    ))
                }
            }
        }
        let Some(&index) = self.sublink_at.get(&loc) else {
            // Every IN sublink was prepared; an absent one is our bug, and
            // refusing the clause is the safe answer.
            return Err(WhereError::at(
                loc,
                "SubLink is not supported in this context",
            ));
        };
        let subquery = &self.subqueries[index];
        let lhs_types: Vec<Type> = columns.iter().map(Expr::ty).collect();
        let describe = |types: &[Type], row: bool| {
            if row {
                let names: Vec<String> = types.iter().map(Type::to_string).collect();
                format!("row of ({})", names.join(", "))
            } else {
                types.first().map(Type::to_string).unwrap_or_default()
            }
        };
        let sub_row = subquery.types.len() != 1;
        if row != sub_row || lhs_types != subquery.types {
            return Err(WhereError::at(
                loc,
                format!(
                    "left side of `IN (SELECT ...)` has type {} but subquery returns {}[]",
                    describe(&lhs_types, row),
                    describe(&subquery.types, sub_row)
                ),
            ));
        }
        Ok(Expr::Sublink {
            lhs: columns,
            subquery: index,
        })
    }

    fn known(expr: Expr, loc: usize) -> Typed {
        Typed::Known { expr, loc }
    }

    /// Dispatches on the node kind. Each construct has its own method so
    /// that this recursive frame stays small: nesting depth times frame
    /// size must fit a shard thread's stack, unoptimised builds included.
    fn check(&mut self, node: &Node) -> Result<Typed, WhereError> {
        let loc = node.loc;
        let expr = match &node.kind {
            NodeKind::Column(path) => self.column(path, loc)?,
            NodeKind::Number(text) => number_const(text, loc)?,
            NodeKind::String(text) => return self.string(text, loc),
            NodeKind::Bool(b) => Expr::Const {
                value: Value::Bool(*b),
                ty: Type::BOOL,
                param: None,
            },
            NodeKind::Null => {
                return Ok(Typed::Unknown {
                    text: None,
                    loc,
                    param: None,
                })
            }
            NodeKind::Param(n) => return self.param(*n, loc),
            NodeKind::TypedString { type_name, value } => {
                self.typed_string(type_name, value, loc)?
            }
            NodeKind::Cast { arg, type_name } => self.cast(arg, type_name)?,
            NodeKind::Prefix { op, arg } => self.prefix(op, arg, loc)?,
            NodeKind::Infix { op, left, right } => self.infix(op, left, right, loc)?,
            NodeKind::Quantified {
                op,
                left,
                right,
                all,
            } => self.check_quantified(op, left, right, *all, loc)?,
            NodeKind::And(items) => self.bool_list(items, true)?,
            NodeKind::Or(items) => self.bool_list(items, false)?,
            NodeKind::Not(arg) => self.not(arg)?,
            NodeKind::IsNull { arg, negated } => self.is_null(arg, *negated)?,
            NodeKind::BoolTest { arg, test } => self.bool_test(arg, *test, loc)?,
            NodeKind::Distinct {
                left,
                right,
                negated,
            } => self.distinct(left, right, *negated, loc)?,
            NodeKind::Between {
                arg,
                low,
                high,
                negated,
                symmetric,
            } => self.check_between(arg, low, high, *negated, *symmetric, loc)?,
            NodeKind::InList {
                arg,
                items,
                negated,
            } => self.in_list(arg, items, *negated, loc)?,
            NodeKind::Func {
                name,
                args,
                aggregate,
            } => self.func_call(name, args, *aggregate, loc)?,
            NodeKind::Array(items) => self.array(items, loc)?,
            NodeKind::Sublink(sublink) => self.sublink(sublink, loc)?,
            NodeKind::Row(_) => {
                return Err(WhereError::at(
                    loc,
                    "RowExpr is not supported in this context",
                ))
            }
            NodeKind::Unsupported(what) => {
                return Err(WhereError::at(
                    loc,
                    format!("{what} is not supported in this context"),
                ))
            }
            NodeKind::UnsupportedMessage(message) => return Err(WhereError::at(loc, message)),
        };
        Ok(Self::known(fold_constant(expr), loc))
    }

    fn string(&mut self, text: &str, loc: usize) -> Result<Typed, WhereError> {
        if text.contains('\0') {
            return Err(WhereError::at(
                loc,
                "invalid byte sequence for encoding \"UTF8\": 0x00",
            ));
        }
        Ok(Typed::Unknown {
            text: Some(text.to_string()),
            loc,
            param: None,
        })
    }

    fn typed_string(
        &mut self,
        type_name: &TypeName,
        value: &str,
        loc: usize,
    ) -> Result<Expr, WhereError> {
        let ty = self.type_of(type_name)?;
        let unknown = Typed::Unknown {
            text: Some(value.to_string()),
            loc,
            param: None,
        };
        self.explicit_cast(unknown, &ty)
    }

    fn cast(&mut self, arg: &Node, type_name: &TypeName) -> Result<Expr, WhereError> {
        let arg = self.check(arg)?;
        let ty = self.type_of(type_name)?;
        self.explicit_cast(arg, &ty)
    }

    fn prefix(&mut self, op: &str, arg: &Node, loc: usize) -> Result<Expr, WhereError> {
        let arg = self.check(arg)?;
        self.operator(op, vec![arg], loc)
    }

    fn infix(
        &mut self,
        op: &str,
        left: &Node,
        right: &Node,
        loc: usize,
    ) -> Result<Expr, WhereError> {
        let left = self.check(left)?;
        let right = self.check(right)?;
        self.operator(op, vec![left, right], loc)
    }

    fn check_quantified(
        &mut self,
        op: &str,
        left: &Node,
        right: &Node,
        all: bool,
        loc: usize,
    ) -> Result<Expr, WhereError> {
        let left = self.check(left)?;
        let right = self.check(right)?;
        self.quantified(op, left, right, all, loc)
    }

    fn bool_list(&mut self, items: &[Node], is_and: bool) -> Result<Expr, WhereError> {
        let mut args = Vec::with_capacity(items.len());
        for item in items {
            let typed = self.check(item)?;
            match self.coerce_bool(typed)? {
                Expr::And(inner) if is_and => args.extend(inner),
                Expr::Or(inner) if !is_and => args.extend(inner),
                other => args.push(other),
            }
        }
        Ok(fold_bool_list(args, is_and))
    }

    fn not(&mut self, arg: &Node) -> Result<Expr, WhereError> {
        let typed = self.check(arg)?;
        Ok(fold_not(self.coerce_bool(typed)?))
    }

    fn is_null(&mut self, arg: &Node, negated: bool) -> Result<Expr, WhereError> {
        let typed = self.check(arg)?;
        let arg = self.infer(typed)?;
        Ok(Expr::IsNull {
            arg: Box::new(arg),
            negated,
        })
    }

    fn bool_test(
        &mut self,
        arg: &Node,
        test: BoolTestKind,
        loc: usize,
    ) -> Result<Expr, WhereError> {
        let typed = self.check(arg)?;
        let arg = self.bool_test_arg(typed, test, loc)?;
        Ok(Expr::BoolTest {
            arg: Box::new(arg),
            test,
        })
    }

    fn distinct(
        &mut self,
        left: &Node,
        right: &Node,
        negated: bool,
        loc: usize,
    ) -> Result<Expr, WhereError> {
        let left = self.check(left)?;
        let right = self.check(right)?;
        let overload_error = || WhereError::at(loc, "Could not select an operator overload");
        self.fold_null_calls = false;
        let equality = self.operator("=", vec![left, right], loc);
        self.fold_null_calls = true;
        let Expr::Call { mut args, .. } = equality? else {
            return Err(overload_error());
        };
        let (Some(right), Some(left)) = (args.pop(), args.pop()) else {
            return Err(overload_error());
        };
        Ok(Expr::Distinct {
            left: Box::new(left),
            right: Box::new(right),
            negated,
        })
    }

    fn check_between(
        &mut self,
        arg: &Node,
        low: &Node,
        high: &Node,
        negated: bool,
        symmetric: bool,
        loc: usize,
    ) -> Result<Expr, WhereError> {
        let arg = self.check(arg)?;
        let low = self.check(low)?;
        let high = self.check(high)?;
        let mut expr = self.between(&arg, &low, &high, loc)?;
        if symmetric {
            let swapped = self.between(&arg, &high, &low, loc)?;
            expr = fold_bool_list(vec![expr, swapped], false);
        }
        if negated {
            expr = fold_not(expr);
        }
        Ok(expr)
    }

    fn in_list(
        &mut self,
        arg: &Node,
        items: &[Node],
        negated: bool,
        loc: usize,
    ) -> Result<Expr, WhereError> {
        let arg = self.check(arg)?;
        let mut typed = Vec::with_capacity(items.len());
        for item in items {
            typed.push(self.check(item)?);
        }
        // Postgres (`transformAExprIn`) compares the items without column
        // references as one array of their common type with the left side
        // (`x = ANY (ARRAY[...])`), the others one by one, after them. The
        // common type decides how literals read (`f4 IN (0.1, 0.2)` reads
        // them as float4), so we type them the same way.
        let (constants, with_columns): (Vec<Typed>, Vec<Typed>) =
            typed.into_iter().partition(|t| !typed_has_column(t));
        let mut ordered = Vec::with_capacity(items.len());
        if constants.len() > 1 {
            let mut types = vec![arg.ty()];
            types.extend(constants.iter().map(Typed::ty));
            match self.union(&types, "IN", loc) {
                Ok(common) => {
                    for item in constants {
                        let item_loc = item.loc();
                        let expr = self.coerce(item, &common)?;
                        ordered.push(Typed::Known {
                            expr,
                            loc: item_loc,
                        });
                    }
                }
                Err(_) => ordered.extend(constants),
            }
        } else {
            ordered.extend(constants);
        }
        ordered.extend(with_columns);
        let mut comparisons = Vec::with_capacity(items.len());
        for item in ordered {
            let arg = self.refresh(arg.clone())?;
            comparisons.push(self.operator("=", vec![arg, item], loc)?);
        }
        let mut expr = if comparisons.len() == 1 {
            comparisons.remove(0)
        } else {
            fold_bool_list(comparisons, false)
        };
        if negated {
            expr = fold_not(expr);
        }
        Ok(expr)
    }

    fn func_call(
        &mut self,
        name: &[String],
        args: &[Node],
        aggregate: bool,
        loc: usize,
    ) -> Result<Expr, WhereError> {
        if aggregate {
            return Err(WhereError::at(
                loc,
                "aggregation is not supported in this context",
            ));
        }
        let mut typed = Vec::with_capacity(args.len());
        for arg in args {
            typed.push(self.check(arg)?);
        }
        self.function(name, typed, loc)
    }

    fn array(&mut self, items: &[Node], loc: usize) -> Result<Expr, WhereError> {
        let mut typed = Vec::with_capacity(items.len());
        for item in items {
            typed.push(self.check(item)?);
        }
        self.array_ctor(typed, loc)
    }

    fn column(&mut self, path: &[String], loc: usize) -> Result<Expr, WhereError> {
        if let [name] = path {
            if let Some(index) = self.columns.iter().position(|c| &c.name == name) {
                self.referenced.insert(index);
                return Ok(Expr::Column {
                    index,
                    ty: self.column_types[index].clone(),
                });
            }
        }
        let shown: Vec<String> = path.iter().map(|p| electric_identifier(p)).collect();
        Err(WhereError::at(
            loc,
            format!("unknown reference {}", shown.join(".")),
        ))
    }

    fn param(&mut self, n: usize, loc: usize) -> Result<Typed, WhereError> {
        let Some(text) = self.params.get(&n) else {
            return Err(WhereError::at(
                loc,
                format!("parameter ${n} was not provided"),
            ));
        };
        self.used_params.insert(n);
        if let Some(ty) = self.param_types.get(&n) {
            // Typed by an earlier use: later uses see that type, as in Electric.
            let value = parse_value(text, ty).ok_or_else(|| {
                WhereError::at(loc, format!("invalid syntax for type {ty}: {text}"))
            })?;
            return Ok(Self::known(
                Expr::Const {
                    value,
                    ty: ty.clone(),
                    param: (!self.fold_params).then_some(n),
                },
                loc,
            ));
        }
        Ok(Typed::Unknown {
            text: Some(text.clone()),
            loc,
            param: Some(n),
        })
    }

    /// A parameter checked once but used again (`$1 IN (..)`, `BETWEEN`)
    /// takes the type its first use gave it.
    fn refresh(&mut self, typed: Typed) -> Result<Typed, WhereError> {
        match typed {
            Typed::Unknown {
                param: Some(n),
                loc,
                ..
            } if self.param_types.contains_key(&n) => self.param(n, loc),
            other => Ok(other),
        }
    }

    fn type_of(&self, name: &TypeName) -> Result<Type, WhereError> {
        let shown = name
            .names
            .iter()
            .map(|n| electric_identifier(n))
            .collect::<Vec<_>>()
            .join(".");
        if name.has_modifiers {
            return Err(WhereError::at(
                name.loc,
                format!("unsupported type {shown} with modifiers"),
            ));
        }
        let scalar = resolve_type_name(&name.names, &self.enums)
            .ok_or_else(|| WhereError::at(name.loc, format!("unsupported type {shown}")))?;
        Ok(Type {
            scalar,
            array: name.array,
        })
    }

    /// Gives an open literal or parameter its type.
    fn resolve_unknown(
        &mut self,
        text: Option<String>,
        param: Option<usize>,
        ty: &Type,
        loc: usize,
        invalid: impl FnOnce(&str) -> String,
    ) -> Result<Expr, WhereError> {
        let value = match &text {
            None => Value::Null,
            Some(text) => {
                let parsed = ty
                    .scalar
                    .is_evaluable()
                    .then(|| parse_value(text, ty))
                    .flatten();
                parsed.ok_or_else(|| WhereError::at(loc, invalid(text)))?
            }
        };
        if let Some(n) = param {
            match self.param_types.get(&n) {
                Some(existing) if existing != ty => {
                    return Err(WhereError::at(
                        loc,
                        format!("type conflict for ${n}: {ty} and {existing}"),
                    ))
                }
                _ => {
                    self.param_types.insert(n, ty.clone());
                }
            }
        }
        Ok(Expr::Const {
            value,
            ty: ty.clone(),
            param: param.filter(|_| !self.fold_params),
        })
    }

    /// Implicit coercion to `ty` (after overload resolution chose it).
    fn coerce(&mut self, typed: Typed, ty: &Type) -> Result<Expr, WhereError> {
        match typed {
            Typed::Unknown { text, loc, param } => {
                self.resolve_unknown(text, param, ty, loc, |text| {
                    format!("invalid syntax for type {ty}: {text}")
                })
            }
            Typed::Known { expr, loc } => {
                let from = expr.ty();
                if &from == ty {
                    Ok(expr)
                } else if implicitly_castable(&from, ty) {
                    self.fold_cast(expr, ty, loc)
                } else {
                    Err(WhereError::at(
                        loc,
                        format!("{from} cannot be matched to {ty}"),
                    ))
                }
            }
        }
    }

    /// An open literal takes its natural type: text, or `unknown` for NULL.
    fn infer(&mut self, typed: Typed) -> Result<Expr, WhereError> {
        match typed {
            Typed::Unknown { text: None, .. } => Ok(Expr::Const {
                value: Value::Null,
                ty: Type::UNKNOWN,
                param: None,
            }),
            unknown @ Typed::Unknown { .. } => self.coerce(unknown, &Type::TEXT),
            Typed::Known { expr, .. } => Ok(expr),
        }
    }

    fn explicit_cast(&mut self, typed: Typed, ty: &Type) -> Result<Expr, WhereError> {
        match typed {
            Typed::Unknown { text, loc, param } => {
                self.resolve_unknown(text, param, ty, loc, |text| {
                    format!("could not cast value {text:?} from text to {ty}")
                })
            }
            Typed::Known { expr, loc } => {
                let from = expr.ty();
                if &from == ty {
                    return Ok(expr);
                }
                if !explicitly_castable(&from, ty) {
                    return Err(WhereError::at(
                        loc,
                        format!("unknown cast from type {from} to type {ty}"),
                    ));
                }
                self.fold_cast(expr, ty, loc)
            }
        }
    }

    /// A cast node, computed now when its argument is a literal so that
    /// invalid constants are reported at parse time like Electric does.
    fn fold_cast(&mut self, expr: Expr, ty: &Type, loc: usize) -> Result<Expr, WhereError> {
        let from = expr.ty();
        if let Expr::Const {
            value, param: None, ..
        } = &expr
        {
            return match cast_value(value.clone(), &from, ty) {
                Some(value) => Ok(Expr::Const {
                    value,
                    ty: ty.clone(),
                    param: None,
                }),
                None => {
                    let shown = format_value(value, &from).unwrap_or_default();
                    Err(WhereError::at(
                        loc,
                        format!("could not cast value {shown:?} from {from} to {ty}"),
                    ))
                }
            };
        }
        Ok(Expr::Cast {
            arg: Box::new(expr),
            ty: ty.clone(),
        })
    }

    /// Folds a call whose arguments are all literals; a failure is an
    /// error now rather than a clause that silently never matches.
    fn fold_call(&self, func: Func, args: Vec<Expr>, loc: usize) -> Result<Expr, WhereError> {
        // A strict function of a NULL literal is NULL, its other arguments
        // unevaluated (Postgres' planner folds it so: `x / 0 + NULL` never
        // divides).
        if self.fold_null_calls && func.kind.is_strict() && args.iter().any(is_null_literal) {
            return Ok(Expr::Const {
                value: Value::Null,
                ty: func.ret,
                param: None,
            });
        }
        let Some(values) = literal_values(&args) else {
            return Ok(Expr::Call { func, args });
        };
        match eval::call(&func, values) {
            Ok(value) => Ok(Expr::Const {
                value,
                ty: func.ret,
                param: None,
            }),
            Err(_) => Err(WhereError::at(
                loc,
                "Failed to apply function to constant arguments",
            )),
        }
    }

    fn coerce_bool(&mut self, typed: Typed) -> Result<Expr, WhereError> {
        match typed {
            unknown @ Typed::Unknown { .. } => self.coerce(unknown, &Type::BOOL),
            Typed::Known { expr, loc } => {
                if expr.ty() == Type::BOOL {
                    Ok(expr)
                } else {
                    Err(WhereError::at(
                        loc,
                        format!("{} is not castable to bool", describe(&expr, self.columns)),
                    ))
                }
            }
        }
    }

    fn bool_test_arg(
        &mut self,
        typed: Typed,
        test: BoolTestKind,
        loc: usize,
    ) -> Result<Expr, WhereError> {
        match typed {
            unknown @ Typed::Unknown { .. } => self.coerce(unknown, &Type::BOOL),
            Typed::Known { expr, .. } => {
                let ty = expr.ty();
                if ty == Type::BOOL {
                    Ok(expr)
                } else {
                    Err(WhereError::at(
                        loc,
                        format!("argument of {} must be bool, not {ty}", test.sql()),
                    ))
                }
            }
        }
    }

    fn apply(
        &mut self,
        sig: &Signature,
        args: Vec<Typed>,
        function_style: bool,
        loc: usize,
    ) -> Result<Expr, WhereError> {
        let mut coerced = Vec::with_capacity(args.len());
        for (arg, ty) in args.into_iter().zip(&sig.args) {
            coerced.push(self.coerce(arg, ty)?);
        }
        if sig.kind == FuncKind::Pow && sig.ret.scalar == Scalar::Numeric {
            // Postgres computes fractional numeric powers with ln/exp series
            // whose last digits we do not reproduce: only exponents we
            // compute exactly as Postgres does are accepted.
            let supported = matches!(
                coerced.get(1),
                Some(Expr::Const { value: Value::Numeric(n), .. }) if n.is_supported_exponent()
            ) || matches!(
                coerced.get(1),
                Some(Expr::Const {
                    value: Value::Null,
                    ..
                })
            );
            if !supported {
                return Err(WhereError::at(
                    loc,
                    "numeric ^ is only supported with a constant integer exponent",
                ));
            }
        }
        let func = Func {
            kind: sig.kind,
            args: sig.args.clone(),
            ret: sig.ret.clone(),
            function_style,
        };
        self.fold_call(func, coerced, loc)
    }

    fn operator(&mut self, op: &str, args: Vec<Typed>, loc: usize) -> Result<Expr, WhereError> {
        let types: Vec<Type> = args.iter().map(Typed::ty).collect();
        if let [left, right] = types.as_slice() {
            if left.array || right.array {
                if let Some(kind) = comparison(op).or_else(|| array_operator_kind(op)) {
                    return self.array_binary(kind, args, loc);
                }
                if op == "||" {
                    return self.array_concat(args, None, loc);
                }
            }
        }
        let Some(candidates) = operator_signatures(op, args.len()) else {
            let arity = if args.len() == 1 { "unary" } else { "binary" };
            return Err(WhereError::at(
                loc,
                format!("unknown {arity} operator {}", electric_identifier(op)),
            ));
        };
        let sig = select_overload(&candidates, &types, true)
            .cloned()
            .ok_or_else(|| WhereError::at(loc, "Could not select an operator overload"))?;
        self.apply(&sig, args, false, loc)
    }

    /// `anyarray` operators: both sides one array type (an untyped literal
    /// takes the other side's), elements comparable.
    fn array_binary(
        &mut self,
        kind: FuncKind,
        mut args: Vec<Typed>,
        loc: usize,
    ) -> Result<Expr, WhereError> {
        let overload_error = || WhereError::at(loc, "Could not select an operator overload");
        let (Some(right), Some(left)) = (args.pop(), args.pop()) else {
            return Err(overload_error());
        };
        let ty = match (left.ty(), right.ty()) {
            (l, r) if l.array && r.is_unknown() => l,
            (l, r) if l.is_unknown() && r.array => r,
            (l, r) if l.array && l == r => l,
            _ => return Err(overload_error()),
        };
        if !is_comparable(&ty.element()) {
            return Err(overload_error());
        }
        let left = self.coerce(left, &ty)?;
        let right = self.coerce(right, &ty)?;
        let func = Func {
            kind,
            args: vec![ty.clone(), ty],
            ret: Type::BOOL,
            function_style: false,
        };
        self.fold_call(func, vec![left, right], loc)
    }

    /// `||`, `array_cat`, `array_append`, `array_prepend` (anycompatible).
    /// `function` names the function used, which fixes which side is the
    /// element; for `||` an untyped literal next to an array is an array.
    fn array_concat(
        &mut self,
        mut args: Vec<Typed>,
        function: Option<FuncKind>,
        loc: usize,
    ) -> Result<Expr, WhereError> {
        let overload_error = || WhereError::at(loc, "Could not select an operator overload");
        let (Some(right), Some(left)) = (args.pop(), args.pop()) else {
            return Err(overload_error());
        };
        let (lt, rt) = (left.ty(), right.ty());
        let function_style = function.is_some();
        let (kind, element) = match (lt.array, rt.array) {
            (true, false) if function == Some(FuncKind::ArrayAppend) => (
                FuncKind::ArrayAppend,
                self.union(&[lt.element(), rt], "ARRAY", loc)?,
            ),
            (false, true) if function == Some(FuncKind::ArrayPrepend) => (
                FuncKind::ArrayPrepend,
                self.union(&[lt, rt.element()], "ARRAY", loc)?,
            ),
            (true, true) => (
                FuncKind::ArrayConcat,
                self.union(&[lt.element(), rt.element()], "ARRAY", loc)?,
            ),
            (true, false) if rt.is_unknown() => (FuncKind::ArrayConcat, lt.element()),
            (false, true) if lt.is_unknown() => (FuncKind::ArrayConcat, rt.element()),
            (true, false) => (
                FuncKind::ArrayAppend,
                self.union(&[lt.element(), rt], "ARRAY", loc)?,
            ),
            (false, true) => (
                FuncKind::ArrayPrepend,
                self.union(&[lt, rt.element()], "ARRAY", loc)?,
            ),
            (false, false) => return Err(overload_error()),
        };
        let array = Type {
            array: true,
            ..element.clone()
        };
        let (left_ty, right_ty) = match kind {
            FuncKind::ArrayAppend => (array.clone(), element),
            FuncKind::ArrayPrepend => (element, array.clone()),
            _ => (array.clone(), array.clone()),
        };
        let left = self.coerce(left, &left_ty)?;
        let right = self.coerce(right, &right_ty)?;
        let func = Func {
            kind,
            args: vec![left_ty, right_ty],
            ret: array,
            function_style,
        };
        self.fold_call(func, vec![left, right], loc)
    }

    fn between(
        &mut self,
        arg: &Typed,
        low: &Typed,
        high: &Typed,
        loc: usize,
    ) -> Result<Expr, WhereError> {
        let (low, arg_once) = (self.refresh(low.clone())?, self.refresh(arg.clone())?);
        let lower = self.operator("<=", vec![low, arg_once], loc)?;
        let (arg, high) = (self.refresh(arg.clone())?, self.refresh(high.clone())?);
        let upper = self.operator("<=", vec![arg, high], loc)?;
        Ok(fold_bool_list(vec![lower, upper], true))
    }

    fn quantified(
        &mut self,
        op: &str,
        left: Typed,
        right: Typed,
        all: bool,
        loc: usize,
    ) -> Result<Expr, WhereError> {
        let right_ty = right.ty();
        let element = if right_ty.is_unknown() {
            Type::UNKNOWN
        } else if right_ty.array {
            right_ty.element()
        } else {
            return Err(WhereError::at(
                right.loc(),
                "argument of ANY must be an array",
            ));
        };
        let left_ty = left.ty();
        let sig = if element.array || left_ty.array {
            None
        } else {
            let candidates = operator_signatures(op, 2).ok_or_else(|| {
                WhereError::at(
                    loc,
                    format!("unknown binary operator {}", electric_identifier(op)),
                )
            })?;
            select_overload(&candidates, &[left_ty, element], true).cloned()
        };
        let sig =
            sig.ok_or_else(|| WhereError::at(loc, "Could not select an operator overload"))?;
        if sig.ret != Type::BOOL {
            return Err(WhereError::at(
                loc,
                "ANY/ALL requires operator that returns bool",
            ));
        }
        let array_ty = Type {
            array: true,
            ..sig.args[1].clone()
        };
        let left = self.coerce(left, &sig.args[0])?;
        let right = self.coerce(right, &array_ty)?;
        Ok(Expr::Quantified {
            func: Func {
                kind: sig.kind,
                args: sig.args.clone(),
                ret: sig.ret.clone(),
                function_style: false,
            },
            left: Box::new(left),
            right: Box::new(right),
            all,
        })
    }

    /// Postgres' UNION/CASE/ARRAY type resolution (`select_common_type`).
    fn union(&self, types: &[Type], what: &str, loc: usize) -> Result<Type, WhereError> {
        let mut candidate: Option<Type> = None;
        for ty in types.iter().filter(|t| !t.is_unknown()) {
            let Some(current) = candidate.clone() else {
                candidate = Some(ty.clone());
                continue;
            };
            if *ty == current {
                continue;
            }
            if ty.category() != current.category() {
                return Err(WhereError::at(
                    loc,
                    format!("{what} types {current} and {ty} cannot be matched"),
                ));
            }
            if !current.is_preferred()
                && implicitly_castable(&current, ty)
                && !implicitly_castable(ty, &current)
            {
                candidate = Some(ty.clone());
            }
        }
        let result = candidate.unwrap_or(Type::TEXT);
        if let Some(bad) = types
            .iter()
            .find(|t| !t.is_unknown() && !implicitly_castable(t, &result))
        {
            return Err(WhereError::at(
                loc,
                format!("{what} types {bad} and {result} cannot be matched"),
            ));
        }
        Ok(result)
    }

    fn function(
        &mut self,
        name: &[String],
        args: Vec<Typed>,
        loc: usize,
    ) -> Result<Expr, WhereError> {
        let arity = args.len();
        let name = match name {
            [schema, name] if schema == "pg_catalog" => name.as_str(),
            [name] => name.as_str(),
            _ => {
                let shown: Vec<String> = name.iter().map(|n| electric_identifier(n)).collect();
                return Err(WhereError::at(
                    loc,
                    format!(
                        "unknown or unsupported function {}/{arity}",
                        shown.join(".")
                    ),
                ));
            }
        };
        match (name, arity) {
            ("coalesce", 1..) => {
                let ty = self.union(
                    &args.iter().map(Typed::ty).collect::<Vec<_>>(),
                    "COALESCE",
                    loc,
                )?;
                let args = self.coerce_all(args, &ty)?;
                return Ok(fold_coalesce(args, ty));
            }
            ("greatest" | "least", 1..) => {
                let what = if name == "greatest" {
                    "GREATEST"
                } else {
                    "LEAST"
                };
                let ty = self.union(&args.iter().map(Typed::ty).collect::<Vec<_>>(), what, loc)?;
                if !is_comparable(&ty.element()) {
                    return Err(self.function_overload_error(name, &args, loc));
                }
                let args = self.coerce_all(args, &ty)?;
                return Ok(Expr::MinMax {
                    args,
                    ty,
                    greatest: name == "greatest",
                });
            }
            ("array_cat", 2) => {
                if args.iter().any(|a| !a.ty().array && !a.ty().is_unknown()) {
                    return Err(self.function_overload_error(name, &args, loc));
                }
                return self.array_concat(args, Some(FuncKind::ArrayConcat), loc);
            }
            ("array_append", 2) | ("array_prepend", 2) => {
                let array_position = usize::from(name == "array_prepend");
                let array_ty = args[array_position].ty();
                let element_ty = args[1 - array_position].ty();
                if !array_ty.array || element_ty.array {
                    return Err(self.function_overload_error(name, &args, loc));
                }
                let kind = if name == "array_append" {
                    FuncKind::ArrayAppend
                } else {
                    FuncKind::ArrayPrepend
                };
                return self.array_concat(args, Some(kind), loc);
            }
            ("array_ndims", 1) => {
                let ty = args[0].ty();
                if !ty.array {
                    return Err(self.function_overload_error(name, &args, loc));
                }
                let mut args = args;
                let arg = self.coerce(args.remove(0), &ty)?;
                let func = Func {
                    kind: FuncKind::ArrayNdims,
                    args: vec![ty],
                    ret: Type::INT4,
                    function_style: true,
                };
                return self.fold_call(func, vec![arg], loc);
            }
            _ => {}
        }
        if arity == 1 {
            if let Some(scalar) = resolve_type_name(&[name.to_string()], &self.enums) {
                // Function-style casts: `int4('5')`, `text(x)`.
                let mut args = args;
                return self.explicit_cast(args.remove(0), &Type::scalar(scalar));
            }
        }
        let Some(candidates) = function_signatures(name, arity) else {
            return Err(WhereError::at(
                loc,
                format!(
                    "unknown or unsupported function {}/{arity}",
                    electric_identifier(name)
                ),
            ));
        };
        let types: Vec<Type> = args.iter().map(Typed::ty).collect();
        let Some(sig) = select_overload(&candidates, &types, false).cloned() else {
            return Err(self.function_overload_error(name, &args, loc));
        };
        self.apply(&sig, args, true, loc)
    }

    fn function_overload_error(&self, name: &str, args: &[Typed], loc: usize) -> WhereError {
        let shown: Vec<String> = args.iter().map(|a| a.ty().to_string()).collect();
        WhereError::at(
            loc,
            format!(
                "Could not select a function overload for {}({})",
                electric_identifier(name),
                shown.join(", ")
            ),
        )
    }

    fn coerce_all(&mut self, args: Vec<Typed>, ty: &Type) -> Result<Vec<Expr>, WhereError> {
        args.into_iter().map(|a| self.coerce(a, ty)).collect()
    }

    fn array_ctor(&mut self, elements: Vec<Typed>, loc: usize) -> Result<Expr, WhereError> {
        if elements.is_empty() {
            return Err(WhereError::at(loc, "cannot determine type of empty array"));
        }
        let ty = self.union(
            &elements.iter().map(Typed::ty).collect::<Vec<_>>(),
            "ARRAY",
            loc,
        )?;
        if ty.category() == Category::Unknown {
            return Err(WhereError::at(loc, "cannot determine type of empty array"));
        }
        let elements = self.coerce_all(elements, &ty)?;
        let result = Type { array: true, ..ty };
        if let Some(values) = literal_values(&elements) {
            return match eval::build_array(values, &result) {
                Ok(value) => Ok(Expr::Const {
                    value,
                    ty: result,
                    param: None,
                }),
                Err(_) => Err(WhereError::at(
                    loc,
                    "multidimensional arrays must have array expressions with matching dimensions",
                )),
            };
        }
        Ok(Expr::ArrayCtor {
            elements,
            ty: result,
        })
    }
}

/// An expression of literals only is computed now. Postgres' planner
/// folds immutable constant expressions before running anything, which
/// decides `AND`/`OR` arms without evaluating the others; folding at least
/// as much as it does (the rendered SQL then carries our constant) keeps
/// both sides' short-circuits the same. A failure stays for run time.
fn fold_constant(expr: Expr) -> Expr {
    if matches!(expr, Expr::Const { .. }) || has_column(&expr) || has_param(&expr) {
        return expr;
    }
    let lookup = |_: usize| -> Option<&str> { None };
    match eval::evaluate(&expr, &eval::Row::new(&lookup)) {
        Ok(value) => Expr::Const {
            value,
            ty: expr.ty(),
            param: None,
        },
        Err(_) => expr,
    }
}

/// `COALESCE` simplified as Postgres does: NULL literals drop out, a
/// leading literal is the result, and arguments after a literal are never
/// reached.
fn fold_coalesce(args: Vec<Expr>, ty: Type) -> Expr {
    let mut kept: Vec<Expr> = Vec::with_capacity(args.len());
    for arg in args {
        if is_null_literal(&arg) {
            continue;
        }
        let literal = matches!(arg, Expr::Const { param: None, .. });
        if literal && kept.is_empty() {
            return arg;
        }
        kept.push(arg);
        if literal {
            break;
        }
    }
    if kept.is_empty() {
        return Expr::Const {
            value: Value::Null,
            ty,
            param: None,
        };
    }
    Expr::Coalesce { args: kept, ty }
}

fn has_param(expr: &Expr) -> bool {
    match expr {
        Expr::Const { param, .. } => param.is_some(),
        Expr::Column { .. } => false,
        Expr::Call { args, .. }
        | Expr::And(args)
        | Expr::Or(args)
        | Expr::Coalesce { args, .. }
        | Expr::MinMax { args, .. }
        | Expr::ArrayCtor { elements: args, .. } => args.iter().any(has_param),
        Expr::Cast { arg, .. }
        | Expr::Not(arg)
        | Expr::IsNull { arg, .. }
        | Expr::BoolTest { arg, .. } => has_param(arg),
        Expr::Distinct { left, right, .. } | Expr::Quantified { left, right, .. } => {
            has_param(left) || has_param(right)
        }
        // Its value depends on the view, never foldable.
        Expr::Sublink { .. } => true,
    }
}

fn typed_has_column(typed: &Typed) -> bool {
    match typed {
        Typed::Unknown { .. } => false,
        Typed::Known { expr, .. } => has_column(expr),
    }
}

fn has_column(expr: &Expr) -> bool {
    match expr {
        Expr::Const { .. } => false,
        Expr::Column { .. } => true,
        Expr::Call { args, .. }
        | Expr::And(args)
        | Expr::Or(args)
        | Expr::Coalesce { args, .. }
        | Expr::MinMax { args, .. }
        | Expr::ArrayCtor { elements: args, .. } => args.iter().any(has_column),
        Expr::Cast { arg, .. }
        | Expr::Not(arg)
        | Expr::IsNull { arg, .. }
        | Expr::BoolTest { arg, .. } => has_column(arg),
        Expr::Distinct { left, right, .. } | Expr::Quantified { left, right, .. } => {
            has_column(left) || has_column(right)
        }
        Expr::Sublink { .. } => true,
    }
}

fn is_null_literal(expr: &Expr) -> bool {
    matches!(
        expr,
        Expr::Const {
            value: Value::Null,
            param: None,
            ..
        }
    )
}

/// `AND`/`OR` simplified as Postgres' planner does before running anything
/// (`simplify_and_arguments`/`simplify_or_arguments`): a literal `false`
/// (`true`) decides an `AND` (`OR`) without evaluating the other arms, the
/// other literal drops out, literal NULLs merge into one at the end. Without
/// this, `x / 0 = 1 OR true` would fail for us and hold for the snapshot.
fn fold_bool_list(items: Vec<Expr>, is_and: bool) -> Expr {
    let decisive = !is_and;
    let mut kept = Vec::with_capacity(items.len());
    let mut null = None;
    for item in items {
        match item {
            Expr::Const {
                value: Value::Bool(b),
                param: None,
                ..
            } => {
                if b == decisive {
                    return Expr::Const {
                        value: Value::Bool(decisive),
                        ty: Type::BOOL,
                        param: None,
                    };
                }
            }
            null_literal if is_null_literal(&null_literal) => null = Some(null_literal),
            Expr::And(inner) if is_and => kept.extend(inner),
            Expr::Or(inner) if !is_and => kept.extend(inner),
            other => kept.push(other),
        }
    }
    kept.extend(null);
    match kept.len() {
        0 => Expr::Const {
            value: Value::Bool(!decisive),
            ty: Type::BOOL,
            param: None,
        },
        1 => kept.pop().unwrap_or(Expr::Const {
            value: Value::Null,
            ty: Type::BOOL,
            param: None,
        }),
        _ if is_and => Expr::And(kept),
        _ => Expr::Or(kept),
    }
}

/// `NOT` of a literal is folded, as Postgres does.
fn fold_not(expr: Expr) -> Expr {
    match expr {
        Expr::Const {
            value: Value::Bool(b),
            param: None,
            ty,
        } => Expr::Const {
            value: Value::Bool(!b),
            ty,
            param: None,
        },
        null_literal if is_null_literal(&null_literal) => null_literal,
        other => Expr::Not(Box::new(other)),
    }
}

/// The values of arguments that are all literals (not parameters).
fn literal_values(args: &[Expr]) -> Option<Vec<Value>> {
    args.iter()
        .map(|a| match a {
            Expr::Const {
                value, param: None, ..
            } => Some(value.clone()),
            _ => None,
        })
        .collect()
}

/// Integer literals are int4 when they fit, else int8, else numeric, as in
/// Postgres; anything with a point or exponent is numeric.
fn number_const(text: &str, loc: usize) -> Result<Expr, WhereError> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(value) = text.parse::<i64>() {
            let ty = if i32::try_from(value).is_ok() {
                Type::INT4
            } else {
                Type::scalar(Scalar::Int8)
            };
            return Ok(Expr::Const {
                value: Value::Int(value),
                ty,
                param: None,
            });
        }
    }
    let value = Numeric::parse(text)
        .ok_or_else(|| WhereError::at(loc, format!("invalid syntax for type numeric: {text}")))?;
    Ok(Expr::Const {
        value: Value::Numeric(value),
        ty: Type::scalar(Scalar::Numeric),
        param: None,
    })
}

/// The subqueries at this level of a clause, left to right, with their
/// locations; those inside a subquery's own where belong to that level.
fn collect_sublinks<'n>(node: &'n Node, out: &mut Vec<(usize, &'n Sublink)>) {
    match &node.kind {
        NodeKind::Sublink(sublink) => {
            if let Some(lhs) = &sublink.lhs {
                collect_sublinks(lhs, out);
            }
            out.push((node.loc, sublink));
        }
        NodeKind::Cast { arg, .. }
        | NodeKind::Prefix { arg, .. }
        | NodeKind::Not(arg)
        | NodeKind::IsNull { arg, .. }
        | NodeKind::BoolTest { arg, .. } => collect_sublinks(arg, out),
        NodeKind::Infix { left, right, .. }
        | NodeKind::Quantified { left, right, .. }
        | NodeKind::Distinct { left, right, .. } => {
            collect_sublinks(left, out);
            collect_sublinks(right, out);
        }
        NodeKind::Between { arg, low, high, .. } => {
            collect_sublinks(arg, out);
            collect_sublinks(low, out);
            collect_sublinks(high, out);
        }
        NodeKind::InList { arg, items, .. } => {
            collect_sublinks(arg, out);
            items.iter().for_each(|n| collect_sublinks(n, out));
        }
        NodeKind::And(items)
        | NodeKind::Or(items)
        | NodeKind::Array(items)
        | NodeKind::Row(items)
        | NodeKind::Func { args: items, .. } => items.iter().for_each(|n| collect_sublinks(n, out)),
        NodeKind::Column(_)
        | NodeKind::Number(_)
        | NodeKind::String(_)
        | NodeKind::Bool(_)
        | NodeKind::Null
        | NodeKind::Param(_)
        | NodeKind::TypedString { .. }
        | NodeKind::Unsupported(_)
        | NodeKind::UnsupportedMessage(_) => {}
    }
}

/// The tables of every subquery in a parsed clause, at every level, each
/// once, first seen first (for the caller to read from the catalog).
pub(crate) fn subquery_tables(node: &Node, out: &mut Vec<TableName>) {
    let mut sublinks = Vec::new();
    collect_sublinks(node, &mut sublinks);
    for (_, sublink) in sublinks {
        if let Ok(select) = &sublink.select {
            let table = TableName {
                schema: select.schema.clone().unwrap_or_else(|| "public".into()),
                name: select.table.clone(),
            };
            if !out.contains(&table) {
                out.push(table);
            }
            if let Some(filter) = &select.filter {
                subquery_tables(filter, out);
            }
        }
    }
}
