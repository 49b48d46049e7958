//! Subqueries of a `where` clause (`lhs IN (SELECT c FROM t WHERE ..)`):
//! what each one reads, typed against its own table, and the materialised
//! set of its values that an outer row is evaluated against.
//!
//! The clause never runs a subquery itself. Evaluation takes the current
//! values from a [`SubqueryView`] the caller keeps (the dependency's
//! materialised result); SQL either keeps the subquery (`IN (SELECT ..)`)
//! or replaces it by a given set of values (`= ANY($k::type[])`).

use std::collections::{BTreeMap, HashMap};

use super::expr::Expr;
use super::numeric::format_float;
use super::types::{Scalar, Type};
use super::value::{parse_value, Value};
use super::WhereColumn;
use crate::shape::definition::TableName;

/// One `IN (SELECT ..)` as typed: the inner table, its selected columns and
/// its filter (with the filter's own subqueries, one level down).
#[derive(Clone, Debug)]
pub(crate) struct Subquery {
    pub table: TableName,
    /// The inner table's columns (what `selected` and `filter` index).
    pub columns: Vec<WhereColumn>,
    /// Selected columns, in the order written (the order a row's columns
    /// pair with, as in Postgres).
    pub selected: Vec<usize>,
    /// The selected columns' types, the same order.
    pub types: Vec<Type>,
    pub filter: Option<Expr>,
    /// The inner where in identity form, its parameters renumbered from 1
    /// in the order of `params`: the dependency shape's own where clause.
    pub filter_text: Option<String>,
    /// The request's parameter numbers the inner where uses (at any
    /// depth), ascending: the dependency's `$1`, `$2`, ...
    pub params: Vec<usize>,
    pub subqueries: Vec<Subquery>,
}

/// A subquery as the code outside the engine needs it: the dependency
/// shape to build (table, columns, where) and the value types.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    pub table: TableName,
    /// Selected column names, in the order written.
    pub columns: Vec<String>,
    /// The inner where, reparseable, with the parameters it uses numbered
    /// from `$1` (values in `params`).
    pub where_sql: Option<String>,
    /// The dependency's own parameters, `$1` first.
    pub params: BTreeMap<usize, String>,
    /// `pg_type` names of the selected columns (`int4`, `text`, ...).
    pub type_names: Vec<String>,
}

impl Subquery {
    /// The dependency shape, its parameters taken from the request's.
    pub fn dependency(&self, request: &BTreeMap<usize, String>) -> Dependency {
        Dependency {
            params: self
                .params
                .iter()
                .enumerate()
                .map(|(i, n)| (i + 1, request.get(n).cloned().unwrap_or_default()))
                .collect(),
            table: self.table.clone(),
            columns: self
                .selected
                .iter()
                .map(|&i| self.columns[i].name.clone())
                .collect(),
            where_sql: self.filter_text.clone(),
            type_names: self.types.iter().map(|t| t.sql_name()).collect(),
        }
    }
}

/// The equality key of a value: two values of one type have the same key
/// exactly when Postgres' `=` says they are equal (`1.0 = 1.00`, `-0 = 0`,
/// `'a ' = 'a'` for `bpchar`, `'1 mon' = '30 days'`), so set membership is
/// a hash lookup that agrees with the `IN (SELECT ..)` Postgres runs.
fn equality_key(value: &Value, scalar: &Scalar) -> String {
    match value {
        Value::Float(f) if *f == 0.0 => "0".into(),
        Value::Float(f) => format_float(*f, false),
        Value::Numeric(n) => {
            let text = n.format();
            if text.contains('.') {
                text.trim_end_matches('0').trim_end_matches('.').to_string()
            } else {
                text
            }
        }
        Value::Text(text) if *scalar == Scalar::Bpchar => text.trim_end_matches(' ').to_string(),
        // Keys are compared within one column (one type): these are
        // injective, and equal to Postgres' text, which is then not kept
        // twice (`Entry::text`).
        Value::Text(text) => text.clone(),
        Value::Int(i) => i.to_string(),
        Value::Interval(interval) => format!("{}", interval.span()),
        other => format!("{other:?}"),
    }
}

/// A value's identity in a [`SubqueryView`]: its columns' equality keys
/// packed into one string (see [`pack`]), so a value costs one small
/// allocation beside its slot (views may hold millions of values).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ValueKey(Box<str>);

/// Packs one value's columns (equality keys, or Postgres' text), None for
/// NULL, into one string. Postgres' text never holds a NUL, so NUL can
/// delimit: a single column is its text as is (`"\0"` for NULL: most
/// values are one integer or one text, stored without overhead); a row is
/// each column as NUL then `v` and its text, or NUL then `n`. None for a
/// text holding a NUL (no column of a table can give it).
fn pack<S: AsRef<str>>(columns: &[Option<S>]) -> Option<Box<str>> {
    if columns.iter().flatten().any(|t| t.as_ref().contains('\0')) {
        return None;
    }
    if let [single] = columns {
        return Some(single.as_ref().map_or("\0", AsRef::as_ref).into());
    }
    let mut out = String::new();
    for column in columns {
        out.push('\0');
        match column {
            None => out.push('n'),
            Some(text) => {
                out.push('v');
                out.push_str(text.as_ref());
            }
        }
    }
    Some(out.into_boxed_str())
}

/// The key of a value's equality keys: a single column's string moves
/// into it (a lookup per evaluated row or counted change allocates once).
fn key_from(keys: Vec<Option<String>>) -> Option<ValueKey> {
    match <[Option<String>; 1]>::try_from(keys) {
        Ok([Some(text)]) if !text.contains('\0') => Some(ValueKey(text.into_boxed_str())),
        Ok(single) => pack(&single).map(ValueKey),
        Err(keys) => pack(&keys).map(ValueKey),
    }
}

/// A packed value's columns again (`width` of them, as the view's types).
fn unpack(packed: &str, width: usize) -> Vec<Option<&str>> {
    if width == 1 {
        return vec![(packed != "\0").then_some(packed)];
    }
    packed
        .split('\0')
        .skip(1)
        .map(|column| column.strip_prefix('v'))
        .collect()
}

/// Columns of a row form past which [`SubqueryView::null_variants_not_in`]
/// gives up (2^n − 1 variants per value, each a scan of the view).
pub const MAX_NULL_VARIANT_COLUMNS: usize = 8;

/// A subquery's result as a multiset of values (a dependency's rows may
/// repeat a value): evaluation asks whether a value is in it, with SQL's
/// NULL rules; moves are its 0→1 and 1→0 transitions.
#[derive(Clone, Debug)]
pub struct SubqueryView {
    types: Vec<Type>,
    /// Each distinct value's key and the rows counted with it.
    entries: HashMap<ValueKey, u64>,
    /// The text first seen for a key (Postgres' output, packed), to bind
    /// back, for the few values whose text is not their key (`1.50` is
    /// `1.5`; integers and text, most values, are their own key).
    texts: HashMap<ValueKey, Box<str>>,
    /// Distinct tuples holding a NULL: they make a failed lookup unknown
    /// rather than false, so they are kept apart to be scanned.
    with_null: usize,
}

/// How a value stands against a view, in SQL's three-valued logic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Membership {
    In,
    NotIn,
    /// NULL: neither, because of a NULL on either side.
    Unknown,
}

impl SubqueryView {
    pub(crate) fn new(types: Vec<Type>) -> SubqueryView {
        SubqueryView {
            types,
            entries: HashMap::new(),
            texts: HashMap::new(),
            with_null: 0,
        }
    }

    /// An empty view of the same types.
    pub fn empty_like(&self) -> SubqueryView {
        SubqueryView::new(self.types.clone())
    }

    /// The values' types, as text (what a view's keys depend on).
    pub fn type_signature(&self) -> String {
        format!("{:?}", self.types)
    }

    /// Number of distinct values.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether some value has a NULL (which makes `NOT IN` unknown).
    pub fn has_null(&self) -> bool {
        self.with_null > 0
    }

    /// Equality keys per column, from Postgres text; None when a text does
    /// not parse as its column's type (it cannot come from that column).
    fn keys_of_text(&self, text: &[Option<&str>]) -> Option<Vec<Option<String>>> {
        if text.len() != self.types.len() {
            return None;
        }
        text.iter()
            .zip(&self.types)
            .map(|(t, ty)| match t {
                None => Some(None),
                Some(t) => parse_value(t, ty).map(|v| Some(equality_key(&v, &ty.scalar))),
            })
            .collect()
    }

    fn keys_of_values(&self, values: &[Value]) -> Vec<Option<String>> {
        values
            .iter()
            .zip(&self.types)
            .map(|(v, ty)| (!v.is_null()).then(|| equality_key(v, &ty.scalar)))
            .collect()
    }

    /// Counts one more row with this value (text per selected column);
    /// true when the value was absent (a move in). False, and nothing
    /// counted, for text that is not of the column's type.
    pub fn add(&mut self, text: &[Option<&str>]) -> bool {
        let Some(keys) = self.keys_of_text(text) else {
            return false;
        };
        let has_null = keys.iter().any(Option::is_none);
        let same = keys.iter().zip(text).all(|(k, t)| k.as_deref() == *t);
        let Some(key) = key_from(keys) else {
            return false;
        };
        if let Some(count) = self.entries.get_mut(&key) {
            *count += 1;
            return false;
        }
        if has_null {
            self.with_null += 1;
        }
        if !same {
            if let Some(packed) = pack(text) {
                self.texts.insert(key.clone(), packed);
            }
        }
        self.entries.insert(key, 1);
        true
    }

    /// Counts one row with this value less; true when it was the last (a
    /// move out).
    pub fn remove(&mut self, text: &[Option<&str>]) -> bool {
        let Some(key) = self.key_of(text) else {
            return false;
        };
        let Some(count) = self.entries.get_mut(&key) else {
            return false;
        };
        *count -= 1;
        if *count > 0 {
            return false;
        }
        if text.iter().any(Option::is_none) {
            self.with_null -= 1;
        }
        self.entries.remove(&key);
        self.texts.remove(&key);
        true
    }

    /// The value's identity in the view (equal exactly when Postgres' `=`
    /// says so); None for text that is not of the columns' types.
    pub fn key_of(&self, text: &[Option<&str>]) -> Option<ValueKey> {
        key_from(self.keys_of_text(text)?)
    }

    /// Whether the view holds the value (at least one row has it).
    pub fn holds(&self, key: &ValueKey) -> bool {
        self.entries.contains_key(key)
    }

    /// Whether a value given as text is in the view.
    pub fn contains_text(&self, text: &[Option<&str>]) -> Membership {
        ViewRef::from(self).contains_text(text)
    }

    /// A key's text as Postgres printed it (the key itself for most).
    fn text_of<'a>(&'a self, key: &'a ValueKey) -> Vec<Option<&'a str>> {
        let packed = self.texts.get(key).unwrap_or(&key.0);
        unpack(packed, self.types.len())
    }

    /// Every distinct value's text with its count (to keep the view).
    pub fn counted_texts(&self) -> impl Iterator<Item = (Vec<Option<&str>>, u64)> {
        self.entries
            .iter()
            .map(|(key, &count)| (self.text_of(key), count))
    }

    /// The distinct values' texts, per column (for binding as arrays).
    pub fn column_texts(&self) -> Vec<Vec<Option<&str>>> {
        ViewRef::from(self).column_texts()
    }

    /// See [`ViewRef::null_variants_not_in`].
    pub fn null_variants_not_in<'t>(
        &self,
        value: &[Option<&'t str>],
    ) -> Option<Vec<Vec<Option<&'t str>>>> {
        ViewRef::from(self).null_variants_not_in(value)
    }

    /// Whether a key has a NULL column (`unpack`'s None).
    fn key_has_null(&self, key: &ValueKey) -> bool {
        unpack(&key.0, self.types.len()).iter().any(Option::is_none)
    }

    /// Adds `key`'s value if absent, removes it if present (a view kept as
    /// a set of differences: see [`ViewRef`]).
    pub fn toggle(&mut self, text: &[Option<&str>]) {
        match self.key_of(text) {
            Some(key) if self.holds(&key) => {
                self.remove(text);
            }
            Some(_) => {
                self.add(text);
            }
            None => {}
        }
    }
}

/// A view as evaluation reads it: `base`, with the presence of each value
/// of `flips` inverted. A shape's client view is kept that way over the
/// shared truth it reads (they are equal at rest, so `flips` is small);
/// a plain view has no flips.
#[derive(Clone, Copy, Debug)]
pub struct ViewRef<'a> {
    base: &'a SubqueryView,
    flips: Option<&'a SubqueryView>,
}

impl<'a> From<&'a SubqueryView> for ViewRef<'a> {
    fn from(base: &'a SubqueryView) -> ViewRef<'a> {
        ViewRef { base, flips: None }
    }
}

impl<'a> ViewRef<'a> {
    /// `base` with every value of `flips` inverted.
    pub fn over(base: &'a SubqueryView, flips: &'a SubqueryView) -> ViewRef<'a> {
        ViewRef {
            base,
            flips: Some(flips).filter(|f| !f.is_empty()),
        }
    }

    /// The flips that add a value (absent from the base), and those that
    /// remove one.
    fn flipped(&self) -> impl Iterator<Item = (&'a ValueKey, bool)> + 'a {
        let base = self.base;
        self.flips
            .into_iter()
            .flat_map(|f| f.entries.keys())
            .map(move |key| (key, !base.holds(key)))
    }

    pub fn key_of(&self, text: &[Option<&str>]) -> Option<ValueKey> {
        self.base.key_of(text)
    }

    pub fn holds(&self, key: &ValueKey) -> bool {
        self.base.holds(key) != self.flips.is_some_and(|f| f.holds(key))
    }

    /// Number of distinct values.
    pub fn len(&self) -> usize {
        self.flipped().fold(
            self.base.len(),
            |n, (_, added)| if added { n + 1 } else { n - 1 },
        )
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether some value has a NULL (which makes `NOT IN` unknown). Each
    /// evaluation asks: only flips of values with a NULL (rare) are read.
    pub fn has_null(&self) -> bool {
        let Some(flips) = self.flips.filter(|f| f.with_null > 0) else {
            return self.base.with_null > 0;
        };
        let with_null = self.flipped().fold(self.base.with_null, |n, (key, added)| {
            match flips.key_has_null(key) {
                false => n,
                true if added => n + 1,
                true => n - 1,
            }
        });
        with_null > 0
    }

    /// Every distinct value's key, each once.
    fn keys(&self) -> impl Iterator<Item = &'a ValueKey> + 'a {
        let flips = self.flips;
        let kept = self
            .base
            .entries
            .keys()
            .filter(move |k| !flips.is_some_and(|f| f.holds(k)));
        kept.chain(self.flipped().filter(|&(_, added)| added).map(|(k, _)| k))
    }

    /// A key's text as Postgres printed it.
    fn text_of(&self, key: &'a ValueKey) -> Vec<Option<&'a str>> {
        match self.flips {
            Some(f) if !self.base.holds(key) => f.text_of(key),
            _ => self.base.text_of(key),
        }
    }

    /// Every distinct value's text with its count (the base's count; one
    /// for a value only the flips add).
    pub fn counted_texts(&self) -> impl Iterator<Item = (Vec<Option<&'a str>>, u64)> + 'a {
        let this = *self;
        self.keys().map(move |key| {
            let count = this.base.entries.get(key).copied().unwrap_or(1);
            (this.text_of(key), count)
        })
    }

    /// Whether a value given as text is in the view.
    pub fn contains_text(&self, text: &[Option<&str>]) -> Membership {
        let types = &self.base.types;
        let values: Option<Vec<Value>> = text
            .iter()
            .zip(types)
            .map(|(t, ty)| match t {
                None => Some(Value::Null),
                Some(t) => parse_value(t, ty),
            })
            .collect();
        match values {
            Some(values) if values.len() == types.len() => self.contains(&values),
            _ => Membership::Unknown,
        }
    }

    /// `lhs IN (values)` as Postgres has it for rows: a tuple equals when
    /// every column does, differs when any non-NULL pair differs, else is
    /// unknown; the `IN` holds if one equals, is false if all differ.
    pub(crate) fn contains(&self, values: &[Value]) -> Membership {
        let keys = self.base.keys_of_values(values);
        let lhs_has_null = keys.iter().any(Option::is_none);
        if !lhs_has_null && !self.has_null() {
            return match key_from(keys) {
                Some(key) if self.holds(&key) => Membership::In,
                _ => Membership::NotIn,
            };
        }
        if !lhs_has_null && pack(&keys).is_some_and(|key| self.holds(&ValueKey(key))) {
            return Membership::In;
        }
        // Only NULLs can make it unknown: scan for a tuple that does not
        // differ in any column where both sides are known. For a single
        // column with a NULL on the left that is any tuple at all.
        let width = self.base.types.len();
        let undecided = |other: &ValueKey| {
            keys.iter()
                .zip(unpack(&other.0, width))
                .all(|(a, b)| a.is_none() || b.is_none() || a.as_deref() == b)
        };
        if self.keys().any(undecided) {
            Membership::Unknown
        } else {
            Membership::NotIn
        }
    }

    /// `value` (a row of several columns, none NULL) with some of its
    /// columns made NULL, for every such variant that `NOT IN` this view
    /// holds: the tested rows whose `NOT IN` a value decides besides the
    /// rows equal to it, because a NULL compares as unknown (`(1, NULL)
    /// NOT IN {(3, 4)}` holds; `(1, 2)` entering the set makes it unknown,
    /// and leaving it may make it hold again). A single column has one
    /// variant, NULL, which holds only against an empty view. None when
    /// the value has more than [`MAX_NULL_VARIANT_COLUMNS`] columns.
    pub fn null_variants_not_in<'t>(
        &self,
        value: &[Option<&'t str>],
    ) -> Option<Vec<Vec<Option<&'t str>>>> {
        if value.len() > MAX_NULL_VARIANT_COLUMNS {
            return None;
        }
        let known: Vec<usize> = (0..value.len()).filter(|&c| value[c].is_some()).collect();
        let mut variants = Vec::new();
        // Each non-empty subset of the known columns, as a bit mask.
        for mask in 1u32..(1 << known.len()) {
            let mut variant = value.to_vec();
            for (bit, &column) in known.iter().enumerate() {
                if mask & (1 << bit) != 0 {
                    variant[column] = None;
                }
            }
            if self.contains_text(&variant) == Membership::NotIn {
                variants.push(variant);
            }
        }
        Some(variants)
    }

    /// The distinct values' texts, per column (for binding as arrays).
    pub fn column_texts(&self) -> Vec<Vec<Option<&'a str>>> {
        let mut columns = vec![Vec::with_capacity(self.len()); self.base.types.len()];
        for key in self.keys() {
            for (column, text) in columns.iter_mut().zip(self.text_of(key)) {
                column.push(text);
            }
        }
        columns
    }
}

/// A Postgres array literal of texts (`{"a","b",NULL}`), every element
/// quoted so no element text can change the array's shape.
pub(crate) fn array_literal(items: &[Option<&str>]) -> String {
    let mut out = String::from("{");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match item {
            None => out.push_str("NULL"),
            Some(text) => {
                out.push('"');
                for c in text.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
    out.push('}');
    out
}
