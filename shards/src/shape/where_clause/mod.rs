//! A shape's `where` clause: validated and typed against the table's
//! columns as Electric does it, evaluated on replication tuples (column
//! values in Postgres' text output), rendered back as SQL for the snapshot
//! query, and reduced to an equality key for the per-relation shape index.
//!
//! # Pipeline
//!
//! `lexer` (sqlparser's PostgreSQL tokenizer) → `parse` (our precedence
//! parser for Postgres' expression grammar; sqlparser's own parser differs
//! from Postgres in precedence and positions) → `typecheck` (names, types,
//! overloads, Electric's messages) → a typed [`expr::Expr`] that `eval`,
//! `render` and `index` walk.
//!
//! # Supported
//!
//! * Column references (unquoted names fold to lower case), literals
//!   (integers, decimals, strings, `TRUE`/`FALSE`/`NULL`), `'..'::type`,
//!   `CAST(.. AS type)`, `type '..'`, function-style casts (`int4('5')`),
//!   `ARRAY[..]`, `$n` parameters typed from context.
//! * `= <> != < > <= >=`, `AND OR NOT`, `IS [NOT] NULL`, `ISNULL`,
//!   `NOTNULL`, `IS [NOT] TRUE/FALSE/UNKNOWN`, `IS [NOT] DISTINCT FROM`,
//!   `[NOT] LIKE/ILIKE` (and `~~ ~~* !~~ !~~*`), `[NOT] BETWEEN
//!   [SYMMETRIC]`, `[NOT] IN (list)`, `op ANY/SOME/ALL (array)`.
//! * Arithmetic `+ - * / % ^ |/ ||/ @` and unary `-`/`+` on numeric types;
//!   bitwise `& | # ~ << >>` on integers; date/time arithmetic (`date ±
//!   int4`, `date - date`, `date + time`, date/timestamp/timestamptz/time ±
//!   interval, timestamp differences, `interval * / float8`).
//! * `||` on text and arrays; array `@> <@ &&`, comparisons.
//! * Functions: `lower upper like ilike coalesce greatest least array_cat
//!   array_prepend array_append array_ndims justify_days justify_hours
//!   justify_interval`.
//! * Types: `bool`, `int2/4/8`, `float4/8`, `numeric` (arbitrary
//!   precision to Postgres' limits, 131072 digits before the point and
//!   16383 after, with its scale rules for `/`, `*` and `^`), `text`,
//!   `varchar`, `bpchar` (padding-insensitive
//!   comparison), `name`, `uuid`, `date`, `time`, `timestamp`,
//!   `timestamptz`, `interval` (ordered like Postgres: a month is 30 days),
//!   and arrays of these. Enums, `json`, `jsonb`, `bytea` and other types
//!   support only `IS [NOT] NULL` and casts to text (enums, json, jsonb).
//!
//! # Subqueries
//!
//! `lhs IN (SELECT c[, c2] FROM [schema.]t [WHERE ..])` (and `NOT IN`),
//! anywhere under `AND`/`OR`/`NOT`, nested to any depth, `lhs` a column or
//! a row of columns whose types equal the selected columns' exactly. The
//! caller reads the inner tables from the catalog
//! ([`WhereClause::subquery_tables`]) and passes their columns
//! ([`WhereClause::parse_with_tables`]); the inner where is typed against
//! its own table, and `$n` means the request's `params[n]` at every level
//! (one type per parameter across levels: it is one bound value).
//! Evaluation asks a [`SubqueryView`] the caller keeps (the dependency's
//! current values) and follows SQL's NULL rules; SQL keeps the subquery
//! or, for a move-in query, replaces it by given values. Refused as
//! Electric does, in its order (every statement taken apart, then every
//! dependency built, then the outer clause typed): other subqueries
//! (`EXISTS`, `= ANY (SELECT ..)`, scalar, `ARRAY(SELECT ..)`), a left side
//! that is not columns, mismatched types, inner targets that are not plain
//! columns, anything but one table, any other clause. A clause with
//! subqueries also has Electric's DNF layout ([`DnfPlan`]): the `tags`,
//! `active_conditions` and move patterns its rows carry, and the where of
//! a move-in query ([`WhereClause::move_in_where`]: candidate disjuncts
//! with the moved values, minus rows already in through another disjunct;
//! NULLs as SQL has them where Electric's query gains or loses rows: a
//! NULL exclusion does not count as in, a `NOT IN` move-in checks the set
//! after the move, and a NULL leaving it, or the set emptying, brings in
//! the rows that now pass). One deviation: a row
//! pairs with the selected columns in the order written, as Postgres
//! does (Electric sorts the inner columns by name).
//!
//! # Not supported
//!
//! Aggregates and window functions, non-deterministic functions and
//! `CURRENT_*`, `CASE`, row constructors (but on the left of `IN (SELECT
//! ..)`), subscripts, `COLLATE`, `AT TIME ZONE`/`timezone()` (no
//! zone database), `SIMILAR TO`, `LIKE .. ESCAPE`, regular expressions,
//! JSON/geometric/range/network operators, type modifiers in casts
//! (`varchar(3)`, `numeric(10,2)`) and bare `char` (which means `char(1)`),
//! named time zones in literals (only `Z`, `UTC`, `GMT` and numeric
//! offsets), literals Postgres reads by `DateStyle` (only ISO year-first
//! dates), and text comparison by collation: we compare bytes, and the
//! rendered SQL asks Postgres to do the same with `COLLATE "C"` (on every
//! text comparison, `LIKE`, array membership and case folding, so that a
//! column's own collation, even a nondeterministic one, changes nothing).
//! `lower`/`upper`/`ILIKE` fold case as the `C` collation does: ASCII
//! letters only (`'É' ILIKE 'é'` is false), whatever the database's locale.
//! `numeric ^ numeric` needs a constant integer exponent (Postgres computes
//! fractional powers with ln/exp series whose last digits we do not
//! reproduce); `float8 ^` has no such limit.
//!
//! # Agreement with Postgres
//!
//! `tests/it/where_differential.rs` compares evaluation with Postgres
//! running the rendered SQL on generated clauses and edge-value rows. What
//! it pinned down: constants fold as Postgres' planner folds them (`AND`/
//! `OR` arms, `COALESCE`, strict functions of NULL), so a failing arm
//! Postgres never runs is not run here either; strict functions evaluate
//! every argument before NULL; `IN` lists type their constant items with
//! one common type; dates compare with timestamps through the cross-type
//! operators. A row on which Postgres would raise an error does not match.
//!
//! Nesting (parentheses, operators, function calls; a subquery counts
//! for four levels, about 15 subqueries deep) is bounded at 64 levels
//! (`stack depth limit exceeded`), which keeps typing, evaluation
//! and rendering within half a default thread stack even unoptimised; `AND`,
//! `OR` and `IN` lists are flat and unbounded.
//!
//! # Snapshot SQL
//!
//! [`WhereClause::to_sql`] writes every constant as a typed literal and
//! every implicit cast explicitly, so Postgres evaluates exactly the tree we
//! evaluate. It assumes the snapshot session uses the replication stream's
//! settings (`TimeZone=UTC`, `DateStyle=ISO`, `IntervalStyle=iso_8601`,
//! `extra_float_digits=1`), which timestamp/timestamptz conversions and
//! casts to text depend on. Parameter values are bound as we read them
//! (`'007'` for an `int4` binds `7`), so both sides agree on their meaning.
//!
//! # Error messages
//!
//! Messages are Electric's, with its `At location N:` prefix (for typing
//! errors N is the byte offset of the offending node in the clause; for
//! syntax errors it is libpg_query's 1-based character position counted
//! from the start of Electric's wrapper `SELECT 1 WHERE `, i.e. offset +
//! 16). Exact by construction: `unknown reference x`, `unknown or
//! unsupported function f/n`, `Could not select an operator overload`,
//! `Could not select a function overload for f(types)`, `unknown binary
//! operator "~"`, `parameter $n was not provided`, `parameter value for $n
//! was not used`, `invalid syntax for type T: v`, `could not cast value
//! "v" from text to T`, `unknown cast from type A to type B`,
//! `unsupported type x`, `aggregation is not supported in this context`,
//! `argument of IS TRUE must be bool, not T`, `argument of ANY must be an
//! array`, `X is not supported in this context`, `WHERE clause must
//! return a boolean`, `only \`value IN (SELECT ...)\` sublinks are
//! supported right now`, `currently, left side of \`IN (SELECT ...)\` can
//! only be a column reference or a list of column references`, `left side
//! of \`IN (SELECT ...)\` has type A but subquery returns B[]`, `Expected a
//! plain column reference` (at the position in Electric's wrapped
//! statement), `Expected a single table reference`, `SELECT statement must
//! not contain any clauses`, under `table` and `columns` a subquery's
//! missing table or columns, `unescaped ";" causing statement split`, `malformed query ending with SQL clauses`,
//! and under `params`: `Parameters must be numbered sequentially, starting
//! from 1`. Syntax errors read like Postgres' (`syntax error at or near
//! "x"`, `syntax error at end of input`, `unterminated quoted string at
//! or near ...`) but are ours, so the token Postgres blames may differ for
//! unusual input. Locations of typing errors follow Postgres' node
//! positions (the operator for an operator, the name for a function).

mod array;
mod ast;
mod datetime;
mod dnf;
mod error;
mod eval;
mod expr;
mod functions;
mod identity;
mod index;
mod lexer;
mod numeric;
mod parse;
mod render;
mod subquery;
mod typecheck;
mod types;
mod value;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_subquery;

use std::collections::BTreeMap;

pub use dnf::{namespaced, namespaced_row, value_hash, DnfPlan, TagSalt};
pub use error::{WhereError, WhereErrorField};
pub use identity::identity;
pub use subquery::{Dependency, Membership, SubqueryView, ValueKey, ViewRef};

use crate::shape::definition::TableName;

/// The columns of a table a subquery reads, None when there is no such
/// table: the catalog, read by the caller before the clause is typed.
pub type TableLookup<'a> = dyn Fn(&TableName) -> Option<Vec<WhereColumn>> + 'a;

/// Values of the clause's subqueries by index ([`WhereClause::dependencies`]
/// order); None (or past the end) where the caller has none.
pub type Views<'a> = [Option<ViewRef<'a>>];

/// A column of the shape's table, as the where clause may reference it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhereColumn {
    pub name: String,
    /// `pg_type.typname` of the column, or of its element type for arrays
    /// (`int4`, `text`, `timestamptz`, ...), or the enum's name.
    pub type_name: String,
    /// Array dimensions; 0 when not an array.
    pub dims: u32,
    pub is_enum: bool,
}

/// A validated, typed `where` clause.
#[derive(Clone, Debug)]
pub struct WhereClause {
    expr: expr::Expr,
    referenced: Vec<usize>,
    canonical: String,
    sql: String,
    /// Parameter values normalised to their types' text form, `$1` first.
    param_values: Vec<String>,
    index_key: Option<(usize, Vec<String>)>,
    /// The subqueries `expr` evaluates against views.
    subqueries: Vec<subquery::Subquery>,
    /// With subqueries: the placeholder-typed tree and its subqueries, to
    /// render the clause again with some subqueries replaced by values.
    placeholders: Option<Box<(expr::Expr, Vec<subquery::Subquery>)>>,
    /// With subqueries: the layout of tags and active conditions, over the
    /// placeholder-typed tree (whose leaves render with bound parameters
    /// and evaluate to the same values).
    dnf: Option<DnfPlan>,
    columns: Vec<WhereColumn>,
    earlier_params: usize,
    /// The request's parameters (a dependency takes those it uses).
    params: BTreeMap<usize, String>,
}

impl WhereClause {
    /// Parses and typechecks `sql` against `columns`; `params` are the
    /// `$n` values by 1-based position. Errors carry Electric's messages.
    pub fn parse(
        sql: &str,
        columns: &[WhereColumn],
        params: &BTreeMap<usize, String>,
    ) -> Result<WhereClause, WhereError> {
        WhereClause::parse_after(sql, columns, params, 0)
    }

    /// As [`WhereClause::parse`], for a clause whose subqueries read
    /// tables: `tables` gives their columns (see
    /// [`WhereClause::subquery_tables`] for which to load).
    pub fn parse_with_tables(
        sql: &str,
        columns: &[WhereColumn],
        params: &BTreeMap<usize, String>,
        tables: &TableLookup<'_>,
    ) -> Result<WhereClause, WhereError> {
        WhereClause::parse_inner(sql, columns, params, 0, tables)
    }

    /// Whether `sql` parses with a subquery in it (of any kind, valid or
    /// not): for the callers that refuse them outright (subsets).
    pub fn has_subquery(sql: &str) -> bool {
        parse::parse(sql).is_ok_and(|p| p.has_subquery)
    }

    /// Every table the clause's subqueries read, at every level, first
    /// seen first; empty when it does not parse (typing reports that).
    pub fn subquery_tables(sql: &str) -> Vec<TableName> {
        let Ok(parsed) = parse::parse(sql) else {
            return Vec::new();
        };
        let mut tables = Vec::new();
        typecheck::subquery_tables(&parsed.root, &mut tables);
        tables
    }

    /// As [`WhereClause::parse`], with the SQL's placeholders numbered
    /// after `earlier_params` (`$1` is written `$<earlier_params + 1>`), so
    /// the clause can follow another one's in a single query.
    pub fn parse_after(
        sql: &str,
        columns: &[WhereColumn],
        params: &BTreeMap<usize, String>,
        earlier_params: usize,
    ) -> Result<WhereClause, WhereError> {
        // Without a catalog every subquery's table is unknown.
        WhereClause::parse_inner(sql, columns, params, earlier_params, &|_| None)
    }

    fn parse_inner(
        sql: &str,
        columns: &[WhereColumn],
        params: &BTreeMap<usize, String>,
        earlier_params: usize,
        tables: &TableLookup<'_>,
    ) -> Result<WhereClause, WhereError> {
        let parsed = parse::parse(sql)?;
        if params.keys().copied().ne(1..=params.len()) {
            return Err(WhereError::params(
                "Parameters must be numbered sequentially, starting from 1",
            ));
        }
        // Parameters are values like any literal for validation, evaluation,
        // the index and identity (so `id = $1` with 1 is `id = 1`); a second
        // pass keeps them as placeholders for the snapshot query's SQL.
        let checked =
            typecheck::Checker::new(columns, params, true, tables).check_clause(&parsed.root)?;
        let with_placeholders =
            typecheck::Checker::new(columns, params, false, tables).check_clause(&parsed.root)?;
        let mut param_values = Vec::with_capacity(checked.param_types.len());
        for (n, ty) in &checked.param_types {
            // Bind the value as we read it, so Postgres and our evaluation
            // cannot interpret the user's spelling differently.
            let text = params.get(n).map(String::as_str).unwrap_or_default();
            let normalised = value::parse_value(text, ty)
                .and_then(|v| value::format_value(&v, ty))
                .unwrap_or_else(|| text.to_string());
            param_values.push(normalised);
        }
        let canonical = render::render(
            &checked.expr,
            columns,
            &checked.subqueries,
            render::Params::Inline,
        );
        let (sql, _) = render::render_with_values(
            &with_placeholders.expr,
            columns,
            &with_placeholders.subqueries,
            earlier_params,
            param_values.len(),
            &[],
        );
        let index_key = index::index_key(&checked.expr);
        let placeholders = (!with_placeholders.subqueries.is_empty())
            .then(|| Box::new((with_placeholders.expr, with_placeholders.subqueries)));
        let dnf = match &placeholders {
            Some(placeholders) => Some(DnfPlan::new(&placeholders.0)?),
            None => None,
        };
        Ok(WhereClause {
            expr: checked.expr,
            referenced: checked.referenced,
            canonical,
            sql,
            param_values,
            index_key,
            subqueries: checked.subqueries,
            // Kept only to render subqueries replaced by values.
            columns: if placeholders.is_some() {
                columns.to_vec()
            } else {
                Vec::new()
            },
            placeholders,
            params: if dnf.is_some() {
                params.clone()
            } else {
                BTreeMap::new()
            },
            dnf,
            earlier_params,
        })
    }

    /// Evaluates the clause on a row: `value(i)` is column `i` (an index
    /// into the `columns` given to [`WhereClause::parse`]) in Postgres text
    /// output, None for NULL. NULL/unknown, and any evaluation error
    /// (overflow, a value that does not parse), count as not matching.
    /// (`'r` lets the row lend its text; an elided lifetime in a `dyn Fn`
    /// return type does not compile.)
    pub fn matches<'r>(&self, value: &dyn Fn(usize) -> Option<&'r str>) -> bool {
        self.matches_with(value, &[])
    }

    /// As [`WhereClause::matches`], with each subquery's current values
    /// (`lhs IN (SELECT ..)` is membership in its view, NULLs as SQL has
    /// them). A subquery without a view makes the row not match.
    pub fn matches_with<'r, 'v>(
        &self,
        value: &dyn Fn(usize) -> Option<&'r str>,
        views: &Views<'v>,
    ) -> bool {
        matches!(
            eval::evaluate(&self.expr, &eval::Row::with_views(value, views)),
            Ok(value::Value::Bool(true))
        )
    }

    /// The subqueries at the top of the clause, in the order
    /// `Expr::Sublink` and the views number them.
    pub fn dependencies(&self) -> Vec<Dependency> {
        self.subqueries
            .iter()
            .map(|s| s.dependency(&self.params))
            .collect()
    }

    /// The DNF layout of a clause with subqueries (None without).
    pub fn dnf(&self) -> Option<&DnfPlan> {
        self.dnf.as_ref()
    }

    /// A row's `tags` (empty without subqueries); see [`DnfPlan::tags`].
    pub fn tags<'r>(
        &self,
        value: &dyn Fn(usize) -> Option<&'r str>,
        salt: &TagSalt,
    ) -> Vec<String> {
        self.dnf
            .as_ref()
            .map(|dnf| dnf.tags(&self.columns, value, salt))
            .unwrap_or_default()
    }

    /// A row's `active_conditions` under the views (empty without
    /// subqueries); see [`DnfPlan::active_conditions`].
    pub fn active_conditions<'r>(
        &self,
        value: &dyn Fn(usize) -> Option<&'r str>,
        views: &Views<'_>,
    ) -> Vec<bool> {
        self.dnf
            .as_ref()
            .map(|dnf| dnf.active_conditions(value, views))
            .unwrap_or_default()
    }

    /// A move's patterns for one value of subquery `index` (the value's
    /// text per selected column): `(position, hash)` for every position
    /// testing that subquery, ascending.
    pub fn move_patterns(
        &self,
        index: usize,
        value: &[Option<&str>],
        salt: &TagSalt,
    ) -> Vec<(usize, String)> {
        let Some(dnf) = &self.dnf else {
            return Vec::new();
        };
        dnf.positions_of(index)
            .into_iter()
            .filter_map(|p| {
                dnf.value_hash(p, &self.columns, value, salt)
                    .map(|hash| (p, hash))
            })
            .collect()
    }

    /// The where of a move-in query after subquery `trigger` moved the
    /// values in `moved` (Electric's `move_in_where_clause`): rows the
    /// moved values bring in, through a disjunct that tests `trigger`, and
    /// not already in the shape through another disjunct. `after` is
    /// `trigger`'s view after the move (a `NOT IN` position needs it: a
    /// NULL left in the set keeps rows out), `pre` the other subqueries'
    /// views as they were before it; every value set is bound as an array
    /// after the clause's own parameters. None without subqueries or when
    /// no position tests `trigger`.
    pub fn move_in_where<'v>(
        &self,
        trigger: usize,
        moved: ViewRef<'v>,
        after: ViewRef<'v>,
        pre: &Views<'v>,
    ) -> Option<(String, Vec<String>)> {
        let dnf = self.dnf.as_ref()?;
        let (_, subqueries) = self.placeholders.as_deref()?;
        // `after` is bound as one more subquery, a copy of the trigger.
        let after_index = subqueries.len();
        let tree = dnf.move_in_tree(trigger, after_index, moved.has_null(), after.is_empty())?;
        let mut with_after = subqueries.clone();
        with_after.push(subqueries.get(trigger)?.clone());
        let views: Vec<Option<ViewRef>> = (0..=after_index)
            .map(|i| {
                if i == trigger {
                    Some(moved)
                } else if i == after_index {
                    Some(after)
                } else {
                    pre.get(i).copied().flatten()
                }
            })
            .collect();
        let (sql, extra) = render::render_with_values(
            &tree,
            &self.columns,
            &with_after,
            self.earlier_params,
            self.param_values.len(),
            &views,
        );
        let mut params = self.param_values.clone();
        params.extend(extra);
        Some((sql, params))
    }

    /// The columns subquery `index` tests, when a row's texts of them key
    /// a lookup in its view: plain columns of exactly the subquery's
    /// types (another type compares through a cast, whose equality the
    /// view's keys need not share). None otherwise.
    pub fn keyed_columns(&self, index: usize) -> Option<Vec<usize>> {
        let tested = self.dnf.as_ref()?.tested_columns(index)?;
        let subquery = self.subqueries.get(index)?;
        let same = tested.len() == subquery.types.len()
            && tested.iter().zip(&subquery.types).all(|(&c, ty)| {
                self.columns
                    .get(c)
                    .is_some_and(|c| c.dims == 0 && !c.is_enum && c.type_name == ty.sql_name())
            });
        same.then_some(tested)
    }

    /// An empty view for subquery `index`, typed as its selected columns.
    pub fn new_view(&self, index: usize) -> Option<SubqueryView> {
        self.subqueries
            .get(index)
            .map(|s| SubqueryView::new(s.types.clone()))
    }

    /// As [`WhereClause::to_sql`], with the subqueries `values` gives
    /// replaced by those values, bound as arrays after the clause's own
    /// parameters (`lhs = ANY($k::type[])`; a row reads its columns'
    /// arrays through `unnest`): a move-in query's form, which runs against
    /// the views the shape holds rather than the tables' current rows.
    pub fn to_sql_with_values<'v>(&self, values: &Views<'v>) -> (String, Vec<String>) {
        let Some(placeholders) = &self.placeholders else {
            return self.to_sql();
        };
        let (expr, subqueries) = placeholders.as_ref();
        let (sql, extra) = render::render_with_values(
            expr,
            &self.columns,
            subqueries,
            self.earlier_params,
            self.param_values.len(),
            values,
        );
        let mut params = self.param_values.clone();
        params.extend(extra);
        (sql, params)
    }

    /// Indices of the columns the clause references, ascending.
    pub fn referenced_columns(&self) -> &[usize] {
        &self.referenced
    }

    /// A normalised SQL form with parameters written in: clauses that mean
    /// the same (whitespace, case, literal spelling, `$1` versus its value,
    /// `BETWEEN` versus two comparisons) give the same string.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// The clause as Postgres SQL for the snapshot query, regenerated from
    /// the typed tree, with `$n::type` placeholders, and the values to bind
    /// for `$1..$n` (normalised to each parameter's type).
    pub fn to_sql(&self) -> (String, Vec<String>) {
        (self.sql.clone(), self.param_values.clone())
    }

    /// If every matching row must have column `i` print as one of the
    /// returned strings (`col = const`, `col IN (...)`, or such a conjunct
    /// of an `AND`), that column and those strings, in the exact text the
    /// replication stream carries. Rows with other text cannot match.
    pub fn index_key(&self) -> Option<(usize, Vec<String>)> {
        self.index_key.clone()
    }

    /// If every matching row must have column `i` print as one of the
    /// values of subquery `s` (`col IN (SELECT ..)`, alone or a conjunct of
    /// an `AND`, the two columns printing alike), or else satisfy one of
    /// the plain equalities of the other arms of an `OR`
    /// ([`WhereClause::subquery_routing`]): `(i, s)`. Changes are then
    /// routed by the subquery's current values, like an index key that
    /// moves.
    pub fn subquery_key(&self) -> Option<(usize, usize)> {
        self.subquery_routing()
            .map(|(column, subquery, _)| (column, subquery))
    }

    /// As [`WhereClause::subquery_key`], with the fixed keys (column,
    /// texts) of the arms of an `OR` beside the subquery's
    /// (`index::subquery_routing`).
    pub fn subquery_routing(&self) -> Option<(usize, usize, Vec<(usize, Vec<String>)>)> {
        index::subquery_routing(&self.expr, &|s| {
            let types = &self.subqueries.get(s)?.types;
            (types.len() == 1).then(|| types[0].clone())
        })
    }
}
