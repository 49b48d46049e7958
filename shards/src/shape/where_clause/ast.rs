//! The untyped syntax tree of a `where` clause, shaped like Postgres' raw
//! parse tree (so errors and positions line up with Electric's), before
//! type checking turns it into an evaluable expression.

/// How many nesting levels a subquery counts for beyond one: with the
/// 64-level bound, about 15 subqueries deep (`tests_subquery.rs` checks the
/// deepest accepted fits half a stack, unoptimised).
pub(crate) const SUBLINK_EXTRA_DEPTH: usize = 3;

#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub kind: NodeKind,
    /// Byte offset in the user's text of the token Postgres would report.
    pub loc: usize,
    /// Height of the subtree, bounded so later recursion cannot overflow.
    pub depth: usize,
}

/// Postgres' `BooleanTest` kinds, named as in its parse tree.
#[allow(clippy::enum_variant_names)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BoolTestKind {
    IsTrue,
    IsNotTrue,
    IsFalse,
    IsNotFalse,
    IsUnknown,
    IsNotUnknown,
}

impl BoolTestKind {
    pub fn sql(&self) -> &'static str {
        match self {
            BoolTestKind::IsTrue => "IS TRUE",
            BoolTestKind::IsNotTrue => "IS NOT TRUE",
            BoolTestKind::IsFalse => "IS FALSE",
            BoolTestKind::IsNotFalse => "IS NOT FALSE",
            BoolTestKind::IsUnknown => "IS UNKNOWN",
            BoolTestKind::IsNotUnknown => "IS NOT UNKNOWN",
        }
    }
}

/// A type as written in a cast or typed literal.
#[derive(Clone, Debug)]
pub(crate) struct TypeName {
    /// Case-folded name parts; multi-word names joined by single spaces.
    pub names: Vec<String>,
    pub array: bool,
    /// `varchar(10)`, `numeric(10,2)`: modifiers change values, so we
    /// refuse them rather than evaluate differently from Postgres.
    pub has_modifiers: bool,
    pub loc: usize,
}

#[derive(Clone, Debug)]
pub(crate) enum NodeKind {
    /// A column reference: one name, or a qualified path we reject.
    Column(Vec<String>),
    Number(String),
    /// A string literal: of unknown type until context decides.
    String(String),
    Bool(bool),
    Null,
    Param(usize),
    /// `type 'literal'`.
    TypedString {
        type_name: TypeName,
        value: String,
    },
    Cast {
        arg: Box<Node>,
        type_name: TypeName,
    },
    Prefix {
        op: String,
        arg: Box<Node>,
    },
    /// Binary operators, including LIKE/ILIKE spelled `~~`/`~~*` as
    /// Postgres' parser does.
    Infix {
        op: String,
        left: Box<Node>,
        right: Box<Node>,
    },
    /// `left op ANY (right)` / `ALL`.
    Quantified {
        op: String,
        left: Box<Node>,
        right: Box<Node>,
        all: bool,
    },
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    IsNull {
        arg: Box<Node>,
        negated: bool,
    },
    BoolTest {
        arg: Box<Node>,
        test: BoolTestKind,
    },
    Distinct {
        left: Box<Node>,
        right: Box<Node>,
        negated: bool,
    },
    Between {
        arg: Box<Node>,
        low: Box<Node>,
        high: Box<Node>,
        negated: bool,
        symmetric: bool,
    },
    InList {
        arg: Box<Node>,
        items: Vec<Node>,
        negated: bool,
    },
    Func {
        name: Vec<String>,
        args: Vec<Node>,
        /// `count(*)`, `DISTINCT`, `ORDER BY`, `FILTER`, `OVER`.
        aggregate: bool,
    },
    /// `ARRAY[...]` (and nested `[...]` inside it).
    Array(Vec<Node>),
    /// `(a, b)` or `ROW(a, b)`: allowed only on the left of `IN (SELECT ..)`.
    Row(Vec<Node>),
    /// A subquery (Postgres' `SubLink`), at the position Postgres gives it:
    /// the `IN` (or the `NOT` of `NOT IN`, which is `NOT (.. IN ..)`), the
    /// operator of `op ANY (SELECT ..)`, `EXISTS`, `ARRAY`, or the opening
    /// parenthesis of a scalar subquery.
    Sublink(Box<Sublink>),
    /// A construct Postgres parses but we do not support: Electric's
    /// `<Node> is not supported in this context`.
    Unsupported(&'static str),
    /// Same, with a message of its own.
    UnsupportedMessage(String),
}

impl Node {
    pub fn new(kind: NodeKind, loc: usize) -> Node {
        let depth = 1 + match &kind {
            NodeKind::Cast { arg, .. }
            | NodeKind::Prefix { arg, .. }
            | NodeKind::Not(arg)
            | NodeKind::IsNull { arg, .. }
            | NodeKind::BoolTest { arg, .. } => arg.depth,
            NodeKind::Infix { left, right, .. }
            | NodeKind::Quantified { left, right, .. }
            | NodeKind::Distinct { left, right, .. } => left.depth.max(right.depth),
            NodeKind::Between { arg, low, high, .. } => arg.depth.max(low.depth).max(high.depth),
            NodeKind::InList { arg, items, .. } => items
                .iter()
                .map(|n| n.depth)
                .max()
                .unwrap_or(0)
                .max(arg.depth),
            // A subquery level costs more stack than one operator (a
            // statement parsed, a checker and its catalog per level).
            NodeKind::Sublink(sublink) => sublink.depth() + SUBLINK_EXTRA_DEPTH,
            NodeKind::And(items)
            | NodeKind::Or(items)
            | NodeKind::Array(items)
            | NodeKind::Row(items)
            | NodeKind::Func { args: items, .. } => {
                items.iter().map(|n| n.depth).max().unwrap_or(0)
            }
            _ => 0,
        };
        Node { kind, loc, depth }
    }
}

/// What kind of subquery a `SubLink` is. Electric accepts only `IN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SublinkKind {
    /// `lhs IN (SELECT ..)`, Postgres' `ANY_SUBLINK` without an operator.
    In,
    /// `EXISTS`, `op ANY/ALL (SELECT ..)`, `ARRAY(SELECT ..)`, `(SELECT ..)`.
    Other,
}

#[derive(Clone, Debug)]
pub(crate) struct Sublink {
    pub kind: SublinkKind,
    /// The tested expression of `IN`; None for the other kinds.
    pub lhs: Option<Node>,
    /// The inner statement, or the error Electric reports while taking it
    /// apart (before anything is typed): it is only a `SELECT` of plain
    /// columns from one table with an optional `WHERE`.
    pub select: Result<SubSelect, super::error::WhereError>,
}

impl Sublink {
    fn depth(&self) -> usize {
        let lhs = self.lhs.as_ref().map_or(0, |n| n.depth);
        let inner = match &self.select {
            Ok(select) => select.filter.as_ref().map_or(0, |n| n.depth),
            Err(_) => 0,
        };
        lhs.max(inner)
    }
}

/// `SELECT c[, c2] FROM [schema.]table [WHERE filter]`.
#[derive(Clone, Debug)]
pub(crate) struct SubSelect {
    /// The selected column names (folded as identifiers), in written order.
    pub columns: Vec<String>,
    /// The schema as written, if any (`public` when absent, as Electric).
    pub schema: Option<String>,
    pub table: String,
    pub filter: Option<Node>,
}
