//! The typed expression a `where` clause compiles to: every operator and
//! function resolved to one implementation, every implicit cast explicit.
//! Evaluation, SQL rendering and index extraction all walk this tree.

use super::ast::BoolTestKind;
use super::types::Type;
use super::value::Value;

/// How a function is written back as SQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Style {
    Infix,
    Prefix,
    Call,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FuncKind {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Neg,
    Plus,
    Abs,
    Sqrt,
    Cbrt,
    BitAnd,
    BitOr,
    BitXor,
    BitNot,
    ShiftLeft,
    ShiftRight,
    TextConcat,
    Like,
    NotLike,
    ILike,
    NotILike,
    Lower,
    Upper,
    ArrayConcat,
    ArrayPrepend,
    ArrayAppend,
    ArrayNdims,
    Contains,
    ContainedBy,
    Overlap,
    JustifyDays,
    JustifyHours,
    JustifyInterval,
}

impl FuncKind {
    /// SQL spelling and syntax. Function-call spellings are the Postgres
    /// function names, so rendered SQL means the same thing to Postgres.
    pub fn sql(&self, function_style: bool) -> (&'static str, Style) {
        use FuncKind::*;
        let infix = |op| (op, Style::Infix);
        let prefix = |op| (op, Style::Prefix);
        let call = |name| (name, Style::Call);
        match self {
            Eq => infix("="),
            Ne => infix("<>"),
            Lt => infix("<"),
            Gt => infix(">"),
            Le => infix("<="),
            Ge => infix(">="),
            Add => infix("+"),
            Sub => infix("-"),
            Mul => infix("*"),
            Div => infix("/"),
            Mod => infix("%"),
            Pow => infix("^"),
            Neg => prefix("-"),
            Plus => prefix("+"),
            Abs => prefix("@"),
            Sqrt => prefix("|/"),
            Cbrt => prefix("||/"),
            BitAnd => infix("&"),
            BitOr => infix("|"),
            BitXor => infix("#"),
            BitNot => prefix("~"),
            ShiftLeft => infix("<<"),
            ShiftRight => infix(">>"),
            TextConcat => infix("||"),
            Like if function_style => call("like"),
            Like => infix("~~"),
            NotLike => infix("!~~"),
            ILike if function_style => call("ilike"),
            ILike => infix("~~*"),
            NotILike => infix("!~~*"),
            Lower => call("lower"),
            Upper => call("upper"),
            ArrayConcat if function_style => call("array_cat"),
            ArrayConcat => infix("||"),
            ArrayPrepend if function_style => call("array_prepend"),
            ArrayPrepend => infix("||"),
            ArrayAppend if function_style => call("array_append"),
            ArrayAppend => infix("||"),
            ArrayNdims => call("array_ndims"),
            Contains => infix("@>"),
            ContainedBy => infix("<@"),
            Overlap => infix("&&"),
            JustifyDays => call("justify_days"),
            JustifyHours => call("justify_hours"),
            JustifyInterval => call("justify_interval"),
        }
    }

    /// Strict functions return NULL on any NULL argument without running;
    /// array concatenation is the exception, as in Postgres.
    pub fn is_strict(&self) -> bool {
        !matches!(
            self,
            FuncKind::ArrayConcat | FuncKind::ArrayPrepend | FuncKind::ArrayAppend
        )
    }

    pub fn is_ordering(&self) -> bool {
        matches!(
            self,
            FuncKind::Lt | FuncKind::Gt | FuncKind::Le | FuncKind::Ge
        )
    }
}

/// A resolved operator or function with its concrete signature.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Func {
    pub kind: FuncKind,
    pub args: Vec<Type>,
    pub ret: Type,
    /// Written as a function (`like(a, b)`) rather than an operator.
    pub function_style: bool,
}

#[derive(Clone, Debug)]
pub(crate) enum Expr {
    Const {
        value: Value,
        ty: Type,
        /// Set when the constant is `$n`: rendered as a placeholder.
        param: Option<usize>,
    },
    Column {
        index: usize,
        ty: Type,
    },
    Call {
        func: Func,
        args: Vec<Expr>,
    },
    Cast {
        arg: Box<Expr>,
        ty: Type,
    },
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    IsNull {
        arg: Box<Expr>,
        negated: bool,
    },
    BoolTest {
        arg: Box<Expr>,
        test: BoolTestKind,
    },
    Distinct {
        left: Box<Expr>,
        right: Box<Expr>,
        negated: bool,
    },
    /// `left op ANY/ALL (right)`, `func` taking (left type, element type).
    Quantified {
        func: Func,
        left: Box<Expr>,
        right: Box<Expr>,
        all: bool,
    },
    Coalesce {
        args: Vec<Expr>,
        ty: Type,
    },
    MinMax {
        args: Vec<Expr>,
        ty: Type,
        greatest: bool,
    },
    ArrayCtor {
        elements: Vec<Expr>,
        ty: Type,
    },
    /// `lhs IN (SELECT ..)`: `lhs` is one column or a row of columns,
    /// `subquery` indexes the clause's subqueries (at this level).
    Sublink {
        lhs: Vec<Expr>,
        subquery: usize,
    },
}

impl Expr {
    pub fn ty(&self) -> Type {
        match self {
            Expr::Const { ty, .. }
            | Expr::Column { ty, .. }
            | Expr::Cast { ty, .. }
            | Expr::Coalesce { ty, .. }
            | Expr::MinMax { ty, .. }
            | Expr::ArrayCtor { ty, .. } => ty.clone(),
            Expr::Call { func, .. } => func.ret.clone(),
            Expr::And(_)
            | Expr::Or(_)
            | Expr::Not(_)
            | Expr::IsNull { .. }
            | Expr::BoolTest { .. }
            | Expr::Distinct { .. }
            | Expr::Quantified { .. }
            | Expr::Sublink { .. } => Type::BOOL,
        }
    }
}
