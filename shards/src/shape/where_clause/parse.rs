//! A precedence-climbing parser for the expression grammar of Postgres
//! (`a_expr` in gram.y), over sqlparser's tokens. It is ours rather than
//! sqlparser's `Parser` so that precedence, accepted syntax, node positions
//! and syntax-error text follow Postgres, which Electric reports verbatim.

use super::ast::{
    BoolTestKind, Node, NodeKind, SubSelect, Sublink, SublinkKind, TypeName, SUBLINK_EXTRA_DEPTH,
};
use super::error::{WhereError, WRAPPER_PREFIX_CHARS};
use super::lexer::{syntax_error_at, tokenize, Tok, TokenKind};

/// Bounds on nesting: recursion over the tree (typing, evaluation,
/// rendering) is proportional to its height, and user input must not be
/// able to exhaust a shard's stack.
pub(crate) const MAX_DEPTH: usize = 64;

/// Binding levels, loosest first, as in gram.y's precedence declarations.
const OR: u8 = 1;
const AND: u8 = 2;
const NOT: u8 = 3;
const IS: u8 = 4;
const COMPARISON: u8 = 5;
const PREDICATE: u8 = 6;
const OTHER_OPERATOR: u8 = 7;
const ADDITIVE: u8 = 8;
const MULTIPLICATIVE: u8 = 9;
const POWER: u8 = 10;
const AT: u8 = 11;
const COLLATE: u8 = 12;
const UNARY: u8 = 13;
const SUBSCRIPT: u8 = 14;
const TYPECAST: u8 = 15;

/// Words that cannot name a column (reserved and type/function-name
/// keywords); the ones with a meaning of their own are handled first.
const RESERVED: &[&str] = &[
    "ALL",
    "AND",
    "ANY",
    "AS",
    "ASC",
    "ASYMMETRIC",
    "AUTHORIZATION",
    "BINARY",
    "BOTH",
    "CHECK",
    "COLLATE",
    "COLLATION",
    "COLUMN",
    "CONCURRENTLY",
    "CONSTRAINT",
    "CREATE",
    "CROSS",
    "DEFAULT",
    "DEFERRABLE",
    "DESC",
    "DISTINCT",
    "DO",
    "ELSE",
    "END",
    "EXCEPT",
    "FETCH",
    "FOR",
    "FOREIGN",
    "FREEZE",
    "FROM",
    "FULL",
    "GRANT",
    "GROUP",
    "HAVING",
    "ILIKE",
    "IN",
    "INITIALLY",
    "INNER",
    "INTERSECT",
    "INTO",
    "IS",
    "ISNULL",
    "JOIN",
    "LATERAL",
    "LEADING",
    "LEFT",
    "LIKE",
    "LIMIT",
    "NATURAL",
    "NOTNULL",
    "OFFSET",
    "ON",
    "ONLY",
    "OR",
    "ORDER",
    "OUTER",
    "OVERLAPS",
    "PLACING",
    "PRIMARY",
    "REFERENCES",
    "RETURNING",
    "RIGHT",
    "SELECT",
    "SIMILAR",
    "SOME",
    "SYMMETRIC",
    "TABLE",
    "TABLESAMPLE",
    "THEN",
    "TO",
    "TRAILING",
    "UNION",
    "UNIQUE",
    "USING",
    "VARIADIC",
    "VERBOSE",
    "WHEN",
    "WHERE",
    "WINDOW",
    "WITH",
];

/// The subset of `RESERVED` that Postgres accepts as function names.
const TYPE_FUNCTION_KEYWORDS: &[&str] = &[
    "AUTHORIZATION",
    "BINARY",
    "COLLATION",
    "CONCURRENTLY",
    "CROSS",
    "FREEZE",
    "FULL",
    "ILIKE",
    "INNER",
    "IS",
    "ISNULL",
    "JOIN",
    "LEFT",
    "LIKE",
    "NATURAL",
    "NOTNULL",
    "OUTER",
    "OVERLAPS",
    "RIGHT",
    "SIMILAR",
    "TABLESAMPLE",
    "VERBOSE",
];

/// SQL value functions: non-deterministic, so never allowed.
const SQL_VALUE_FUNCTIONS: &[&str] = &[
    "CURRENT_DATE",
    "CURRENT_TIME",
    "CURRENT_TIMESTAMP",
    "LOCALTIME",
    "LOCALTIMESTAMP",
    "CURRENT_ROLE",
    "CURRENT_USER",
    "SESSION_USER",
    "USER",
    "CURRENT_CATALOG",
    "CURRENT_SCHEMA",
    "SYSTEM_USER",
];

/// Clauses that may follow `WHERE` in `SELECT 1 WHERE ...`; Electric
/// refuses a where that smuggles them in.
const TRAILING_CLAUSES: &[&str] = &[
    "GROUP",
    "HAVING",
    "WINDOW",
    "ORDER",
    "LIMIT",
    "OFFSET",
    "FETCH",
    "FOR",
    "UNION",
    "INTERSECT",
    "EXCEPT",
];

pub(crate) struct Parsed {
    pub root: Node,
    /// A subquery appeared (anywhere, of any kind).
    pub has_subquery: bool,
}

pub(crate) fn parse(text: &str) -> Result<Parsed, WhereError> {
    let tokens = tokenize(text)?;
    let mut parser = Parser {
        text,
        tokens,
        pos: 0,
        recursion: 0,
        has_subquery: false,
    };
    let root = parser.parse_expr(0)?;
    parser.finish()?;
    Ok(Parsed {
        root,
        has_subquery: parser.has_subquery,
    })
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Tok>,
    pos: usize,
    recursion: usize,
    has_subquery: bool,
}

enum Infix {
    Or,
    And,
    Is,
    IsNullKeyword { negated: bool },
    Comparison(String),
    Predicate,
    Operator(String),
    At,
    Collate,
    Subscript,
    Typecast,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> &Tok {
        self.peek_at(0)
    }

    fn peek_at(&self, n: usize) -> &Tok {
        // The token list always ends with `End`, which is never consumed.
        let last = self.tokens.len().saturating_sub(1);
        &self.tokens[(self.pos + n).min(last)]
    }

    fn advance(&mut self) -> Tok {
        let tok = self.peek().clone();
        if tok.kind != TokenKind::End {
            self.pos += 1;
        }
        tok
    }

    fn error_here(&self) -> WhereError {
        syntax_error_at(self.text, self.peek())
    }

    fn keyword_at(&self, n: usize, keyword: &str) -> bool {
        is_keyword(self.peek_at(n), keyword)
    }

    fn at_keyword(&self, keyword: &str) -> bool {
        self.keyword_at(0, keyword)
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        if self.at_keyword(keyword) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_keyword(&mut self, keyword: &str) -> Result<(), WhereError> {
        if self.eat_keyword(keyword) {
            Ok(())
        } else {
            Err(self.error_here())
        }
    }

    fn eat(&mut self, kind: &TokenKind) -> bool {
        if &self.peek().kind == kind {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, kind: &TokenKind) -> Result<Tok, WhereError> {
        if &self.peek().kind == kind {
            Ok(self.advance())
        } else {
            Err(self.error_here())
        }
    }

    fn node(&self, kind: NodeKind, loc: usize) -> Result<Node, WhereError> {
        let node = Node::new(kind, loc);
        if node.depth > MAX_DEPTH {
            return Err(WhereError::at(loc, "stack depth limit exceeded"));
        }
        Ok(node)
    }

    fn finish(&mut self) -> Result<(), WhereError> {
        let tok = self.peek().clone();
        match &tok.kind {
            TokenKind::End => Ok(()),
            TokenKind::Semicolon => {
                self.advance();
                while self.eat(&TokenKind::Semicolon) {}
                if self.peek().kind == TokenKind::End {
                    Ok(())
                } else {
                    Err(WhereError::plain("unescaped \";\" causing statement split"))
                }
            }
            _ if TRAILING_CLAUSES.iter().any(|k| is_keyword(&tok, k)) => {
                Err(WhereError::plain("malformed query ending with SQL clauses"))
            }
            _ => Err(syntax_error_at(self.text, &tok)),
        }
    }

    fn parse_expr(&mut self, min_level: u8) -> Result<Node, WhereError> {
        self.recursion += 1;
        if self.recursion > MAX_DEPTH {
            return Err(WhereError::at(
                self.peek().start,
                "stack depth limit exceeded",
            ));
        }
        let result = self.parse_expr_inner(min_level);
        self.recursion -= 1;
        result
    }

    fn parse_expr_inner(&mut self, min_level: u8) -> Result<Node, WhereError> {
        let mut lhs = self.parse_prefix()?;
        let mut last_non_associative = None;
        while let Some((level, infix)) = self.infix() {
            if level <= min_level {
                break;
            }
            if last_non_associative == Some(level) {
                // `a = b = c`, `a IS NULL IS NULL`: non-associative in Postgres.
                return Err(self.error_here());
            }
            lhs = self.parse_infix(lhs, level, infix)?;
            last_non_associative = matches!(level, IS | COMPARISON | PREDICATE).then_some(level);
        }
        Ok(lhs)
    }

    fn infix(&self) -> Option<(u8, Infix)> {
        let tok = self.peek();
        Some(match &tok.kind {
            TokenKind::Word {
                quoted: false,
                value,
            } => match value.to_ascii_uppercase().as_str() {
                "OR" => (OR, Infix::Or),
                "AND" => (AND, Infix::And),
                "IS" => (IS, Infix::Is),
                "ISNULL" => (IS, Infix::IsNullKeyword { negated: false }),
                "NOTNULL" => (IS, Infix::IsNullKeyword { negated: true }),
                "LIKE" | "ILIKE" | "BETWEEN" | "IN" | "SIMILAR" => (PREDICATE, Infix::Predicate),
                "NOT"
                    if ["LIKE", "ILIKE", "BETWEEN", "IN", "SIMILAR"]
                        .iter()
                        .any(|k| self.keyword_at(1, k)) =>
                {
                    (PREDICATE, Infix::Predicate)
                }
                "AT" => (AT, Infix::At),
                "COLLATE" => (COLLATE, Infix::Collate),
                _ => return None,
            },
            TokenKind::Operator(op) => match op.as_str() {
                "=" | "<>" | "<" | ">" | "<=" | ">=" => (COMPARISON, Infix::Comparison(op.clone())),
                "+" | "-" => (ADDITIVE, Infix::Operator(op.clone())),
                "*" | "/" | "%" => (MULTIPLICATIVE, Infix::Operator(op.clone())),
                "^" => (POWER, Infix::Operator(op.clone())),
                _ => (OTHER_OPERATOR, Infix::Operator(op.clone())),
            },
            TokenKind::LeftBracket => (SUBSCRIPT, Infix::Subscript),
            TokenKind::DoubleColon => (TYPECAST, Infix::Typecast),
            _ => return None,
        })
    }

    fn parse_infix(&mut self, lhs: Node, level: u8, infix: Infix) -> Result<Node, WhereError> {
        let op_tok = self.advance();
        let loc = op_tok.start;
        match infix {
            Infix::Or | Infix::And => {
                let rhs = self.parse_expr(level)?;
                let is_or = matches!(infix, Infix::Or);
                let mut items = match lhs.kind {
                    NodeKind::Or(items) if is_or => items,
                    NodeKind::And(items) if !is_or => items,
                    _ => vec![lhs],
                };
                items.push(rhs);
                self.node(
                    if is_or {
                        NodeKind::Or(items)
                    } else {
                        NodeKind::And(items)
                    },
                    loc,
                )
            }
            Infix::IsNullKeyword { negated } => self.node(
                NodeKind::IsNull {
                    arg: Box::new(lhs),
                    negated,
                },
                loc,
            ),
            Infix::Is => self.parse_is(lhs, loc),
            Infix::Comparison(op) | Infix::Operator(op) => {
                if let Some(node) = self.maybe_quantified(&lhs, &op, loc)? {
                    return Ok(node);
                }
                let rhs = self.parse_expr(level)?;
                self.node(
                    NodeKind::Infix {
                        op,
                        left: Box::new(lhs),
                        right: Box::new(rhs),
                    },
                    loc,
                )
            }
            Infix::Predicate => {
                // `op_tok` was the predicate keyword, or NOT before it.
                self.pos -= 1;
                self.parse_predicate(lhs, loc)
            }
            Infix::At => {
                if self.eat_keyword("LOCAL") {
                    return self.node(
                        NodeKind::UnsupportedMessage(
                            "unknown or unsupported function timezone/1".into(),
                        ),
                        loc,
                    );
                }
                self.expect_keyword("TIME")?;
                self.expect_keyword("ZONE")?;
                let _zone = self.parse_expr(AT)?;
                self.node(
                    NodeKind::UnsupportedMessage(
                        "unknown or unsupported function timezone/2".into(),
                    ),
                    loc,
                )
            }
            Infix::Collate => {
                let mut name = Vec::new();
                loop {
                    let part = self.advance();
                    if !matches!(part.kind, TokenKind::Word { .. }) {
                        return Err(syntax_error_at(self.text, &part));
                    }
                    name.push(word_name(&part));
                    if !self.eat(&TokenKind::Period) {
                        break;
                    }
                }
                // The byte-order collations are what we evaluate with anyway
                // (and what rendered SQL uses), so they change nothing.
                let bytewise = match name.as_slice() {
                    [c] | [_, c] => c == "C" || c == "POSIX",
                    _ => false,
                };
                if bytewise
                    && name
                        .first()
                        .is_some_and(|s| name.len() == 1 || s == "pg_catalog")
                {
                    return Ok(lhs);
                }
                self.node(NodeKind::Unsupported("CollateClause"), loc)
            }
            Infix::Subscript => {
                self.skip_balanced(&TokenKind::LeftBracket, &TokenKind::RightBracket, 1)?;
                self.node(NodeKind::Unsupported("A_Indirection"), lhs.loc)
            }
            Infix::Typecast => {
                let type_name = self.parse_type_name()?;
                self.node(
                    NodeKind::Cast {
                        arg: Box::new(lhs),
                        type_name,
                    },
                    loc,
                )
            }
        }
    }

    fn parse_is(&mut self, lhs: Node, loc: usize) -> Result<Node, WhereError> {
        let negated = self.eat_keyword("NOT");
        let arg = Box::new(lhs);
        let kind = if self.eat_keyword("NULL") {
            NodeKind::IsNull { arg, negated }
        } else if self.eat_keyword("TRUE") {
            let test = if negated {
                BoolTestKind::IsNotTrue
            } else {
                BoolTestKind::IsTrue
            };
            NodeKind::BoolTest { arg, test }
        } else if self.eat_keyword("FALSE") {
            let test = if negated {
                BoolTestKind::IsNotFalse
            } else {
                BoolTestKind::IsFalse
            };
            NodeKind::BoolTest { arg, test }
        } else if self.eat_keyword("UNKNOWN") {
            let test = if negated {
                BoolTestKind::IsNotUnknown
            } else {
                BoolTestKind::IsUnknown
            };
            NodeKind::BoolTest { arg, test }
        } else if self.eat_keyword("DISTINCT") {
            self.expect_keyword("FROM")?;
            let right = Box::new(self.parse_expr(IS)?);
            NodeKind::Distinct {
                left: arg,
                right,
                negated,
            }
        } else {
            return Err(self.error_here());
        };
        self.node(kind, loc)
    }

    fn parse_predicate(&mut self, lhs: Node, loc: usize) -> Result<Node, WhereError> {
        let negated = self.eat_keyword("NOT");
        let keyword = self.advance();
        let word = match &keyword.kind {
            TokenKind::Word { value, .. } => value.to_ascii_uppercase(),
            _ => return Err(syntax_error_at(self.text, &keyword)),
        };
        match word.as_str() {
            "LIKE" | "ILIKE" => {
                let op = match (word == "ILIKE", negated) {
                    (false, false) => "~~",
                    (false, true) => "!~~",
                    (true, false) => "~~*",
                    (true, true) => "!~~*",
                };
                if let Some(node) = self.maybe_quantified(&lhs, op, loc)? {
                    return Ok(node);
                }
                let pattern = self.parse_expr(PREDICATE)?;
                if self.eat_keyword("ESCAPE") {
                    let _escape = self.parse_expr(PREDICATE)?;
                    return self.node(
                        NodeKind::UnsupportedMessage(
                            "unknown or unsupported function like_escape/2".into(),
                        ),
                        loc,
                    );
                }
                self.node(
                    NodeKind::Infix {
                        op: op.to_string(),
                        left: Box::new(lhs),
                        right: Box::new(pattern),
                    },
                    loc,
                )
            }
            "SIMILAR" => {
                self.expect_keyword("TO")?;
                let _pattern = self.parse_expr(PREDICATE)?;
                if self.eat_keyword("ESCAPE") {
                    let _escape = self.parse_expr(PREDICATE)?;
                }
                let name = if negated { "!~" } else { "~" };
                self.node(
                    NodeKind::UnsupportedMessage(format!(
                        "expression \"{name}\" of :AEXPR_SIMILAR is not currently supported"
                    )),
                    loc,
                )
            }
            "BETWEEN" => {
                let symmetric = self.eat_keyword("SYMMETRIC");
                if !symmetric {
                    self.eat_keyword("ASYMMETRIC");
                }
                let low = self.parse_expr(PREDICATE)?;
                self.expect_keyword("AND")?;
                let high = self.parse_expr(PREDICATE)?;
                self.node(
                    NodeKind::Between {
                        arg: Box::new(lhs),
                        low: Box::new(low),
                        high: Box::new(high),
                        negated,
                        symmetric,
                    },
                    loc,
                )
            }
            "IN" => {
                self.expect(&TokenKind::LeftParen)?;
                if self.at_subquery_start() {
                    let sublink = self.sublink(SublinkKind::In, Some(lhs), loc)?;
                    // `a NOT IN (SELECT ..)` is `NOT (a IN (SELECT ..))`, both
                    // placed at the NOT, as Postgres' grammar builds it.
                    return if negated {
                        self.node(NodeKind::Not(Box::new(sublink)), loc)
                    } else {
                        Ok(sublink)
                    };
                }
                let mut items = vec![self.parse_expr(0)?];
                while self.eat(&TokenKind::Comma) {
                    items.push(self.parse_expr(0)?);
                }
                self.expect(&TokenKind::RightParen)?;
                self.node(
                    NodeKind::InList {
                        arg: Box::new(lhs),
                        items,
                        negated,
                    },
                    loc,
                )
            }
            _ => Err(syntax_error_at(self.text, &keyword)),
        }
    }

    /// `op ANY (...)`, `op SOME (...)`, `op ALL (...)` after an operator.
    fn maybe_quantified(
        &mut self,
        lhs: &Node,
        op: &str,
        loc: usize,
    ) -> Result<Option<Node>, WhereError> {
        let all = self.at_keyword("ALL");
        if !(all || self.at_keyword("ANY") || self.at_keyword("SOME"))
            || self.peek_at(1).kind != TokenKind::LeftParen
        {
            return Ok(None);
        }
        self.pos += 2;
        if self.at_subquery_start() {
            return self
                .sublink(SublinkKind::Other, Some(lhs.clone()), loc)
                .map(Some);
        }
        let right = self.parse_expr(0)?;
        self.expect(&TokenKind::RightParen)?;
        self.node(
            NodeKind::Quantified {
                op: op.to_string(),
                left: Box::new(lhs.clone()),
                right: Box::new(right),
                all,
            },
            loc,
        )
        .map(Some)
    }

    /// After the parenthesis opening a subquery: the statement up to and
    /// including its closing parenthesis, as a `SubLink` node at `loc`.
    fn sublink(
        &mut self,
        kind: SublinkKind,
        lhs: Option<Node>,
        loc: usize,
    ) -> Result<Node, WhereError> {
        self.has_subquery = true;
        // A statement costs more stack than an operator: it counts for
        // several levels here as its node does (`SUBLINK_EXTRA_DEPTH`).
        self.recursion += SUBLINK_EXTRA_DEPTH;
        if self.recursion > MAX_DEPTH {
            return Err(WhereError::at(loc, "stack depth limit exceeded"));
        }
        let select = self.parse_subselect();
        self.recursion -= SUBLINK_EXTRA_DEPTH;
        let select = select?;
        self.node(
            NodeKind::Sublink(Box::new(Sublink { kind, lhs, select })),
            loc,
        )
    }

    /// Takes a subquery's statement apart the way Electric does
    /// (`extract_parts_from_select`): plain column targets, then a single
    /// table, then no other clause, each with its own error, checked in
    /// that order. Statements it refuses are skipped to their closing
    /// parenthesis (syntax errors inside them then go unreported: the
    /// statement is refused either way).
    fn parse_subselect(&mut self) -> Result<Result<SubSelect, WhereError>, WhereError> {
        let single_table = || WhereError::plain("Expected a single table reference");
        let clauses = || WhereError::plain("SELECT statement must not contain any clauses");
        if self.eat(&TokenKind::LeftParen) {
            // `((SELECT ..))`: the same statement, each parenthesis a level.
            self.recursion += 1;
            if self.recursion > MAX_DEPTH {
                return Err(WhereError::at(
                    self.peek().start,
                    "stack depth limit exceeded",
                ));
            }
            let inner = self.parse_subselect();
            self.recursion -= 1;
            let inner = inner?;
            if self.eat(&TokenKind::RightParen) {
                return Ok(inner);
            }
            let set_operation = ["UNION", "INTERSECT", "EXCEPT"]
                .iter()
                .any(|k| self.at_keyword(k));
            self.skip_balanced(&TokenKind::LeftParen, &TokenKind::RightParen, 1)?;
            return Ok(Err(if set_operation {
                single_table()
            } else {
                clauses()
            }));
        }
        if self.at_keyword("WITH") || self.at_keyword("VALUES") {
            let with = self.at_keyword("WITH");
            self.skip_balanced(&TokenKind::LeftParen, &TokenKind::RightParen, 1)?;
            return Ok(Err(if with { clauses() } else { single_table() }));
        }
        self.expect_keyword("SELECT")?;
        let mut has_clause = false;
        if self.eat_keyword("DISTINCT") {
            has_clause = true;
            if self.eat_keyword("ON") {
                self.expect(&TokenKind::LeftParen)?;
                self.skip_balanced(&TokenKind::LeftParen, &TokenKind::RightParen, 1)?;
            }
        } else {
            self.eat_keyword("ALL");
        }
        let mut columns: Result<Vec<String>, WhereError> = Ok(Vec::new());
        let refuse_target = |columns: &mut Result<_, _>, loc: usize| {
            if columns.is_ok() {
                // Electric reports the target's raw position in its wrapped
                // `SELECT 1 WHERE ..` statement, without taking the prefix off.
                *columns = Err(WhereError::at(
                    loc + WRAPPER_PREFIX_CHARS,
                    "Expected a plain column reference",
                ));
            }
        };
        if !(self.at_keyword("FROM") || self.peek().kind == TokenKind::RightParen) {
            loop {
                let loc = self.peek().start;
                if self.peek().kind == TokenKind::Operator("*".into()) {
                    self.advance();
                    refuse_target(&mut columns, loc);
                } else {
                    let target = self.parse_expr(0)?;
                    match (&target.kind, columns.as_mut()) {
                        (NodeKind::Column(path), Ok(list)) if path.len() == 1 => {
                            list.push(path[0].clone())
                        }
                        (NodeKind::Column(path), Err(_)) if path.len() == 1 => {}
                        _ => refuse_target(&mut columns, loc),
                    }
                }
                // An alias names the output column only; Electric ignores it.
                if self.eat_keyword("AS") || self.at_alias() {
                    let alias = self.advance();
                    if !matches!(alias.kind, TokenKind::Word { .. }) {
                        return Err(syntax_error_at(self.text, &alias));
                    }
                }
                if !self.eat(&TokenKind::Comma) {
                    break;
                }
            }
        }
        if columns.as_ref().is_ok_and(|c| c.is_empty()) {
            // `SELECT FROM t`: Postgres allows no targets; nothing to compare
            // with, so it is refused like a non-column target.
            refuse_target(&mut columns, self.peek().start);
        }
        let from = if self.eat_keyword("FROM") {
            self.parse_from_item()?
        } else {
            None
        };
        let Some((schema, table)) = from else {
            self.skip_balanced(&TokenKind::LeftParen, &TokenKind::RightParen, 1)?;
            return Ok(Err(columns.err().unwrap_or_else(single_table)));
        };
        let filter = if self.eat_keyword("WHERE") {
            Some(self.parse_expr(0)?)
        } else {
            None
        };
        if !self.eat(&TokenKind::RightParen) {
            if ["UNION", "INTERSECT", "EXCEPT"]
                .iter()
                .any(|k| self.at_keyword(k))
            {
                self.skip_balanced(&TokenKind::LeftParen, &TokenKind::RightParen, 1)?;
                return Ok(Err(single_table()));
            }
            if !TRAILING_CLAUSES.iter().any(|k| self.at_keyword(k)) {
                return Err(self.error_here());
            }
            has_clause = true;
            self.skip_balanced(&TokenKind::LeftParen, &TokenKind::RightParen, 1)?;
        }
        let columns = match columns {
            Ok(columns) => columns,
            Err(e) => return Ok(Err(e)),
        };
        if has_clause {
            return Ok(Err(clauses()));
        }
        Ok(Ok(SubSelect {
            columns,
            schema,
            table,
            filter,
        }))
    }

    /// A bare alias after a target or table: any name Postgres would not
    /// read as the next clause.
    fn at_alias(&self) -> bool {
        match &self.peek().kind {
            TokenKind::Word { quoted: true, .. } => true,
            TokenKind::Word { value, .. } => {
                let upper = value.to_ascii_uppercase();
                !RESERVED.contains(&upper.as_str()) && upper != "NOT"
            }
            _ => false,
        }
    }

    /// After `FROM`: `[ONLY] [schema.]table [[AS] alias [(columns)]]` when
    /// that is the whole list (schema, name); None for anything else (a
    /// join, several tables, a function, a subquery).
    fn parse_from_item(&mut self) -> Result<Option<(Option<String>, String)>, WhereError> {
        self.eat_keyword("ONLY");
        let first = self.peek().clone();
        let named = match &first.kind {
            TokenKind::Word { quoted: true, .. } => true,
            TokenKind::Word { value, .. } => {
                !RESERVED.contains(&value.to_ascii_uppercase().as_str())
            }
            _ => false,
        };
        if !named {
            return Ok(None);
        }
        self.advance();
        let mut parts = vec![word_name(&first)];
        while self.eat(&TokenKind::Period) {
            let part = self.advance();
            if !matches!(part.kind, TokenKind::Word { .. }) {
                return Err(syntax_error_at(self.text, &part));
            }
            parts.push(word_name(&part));
        }
        if self.peek().kind == TokenKind::LeftParen || parts.len() > 2 {
            return Ok(None);
        }
        if self.eat_keyword("AS") || self.at_alias() {
            let alias = self.advance();
            if !matches!(alias.kind, TokenKind::Word { .. }) {
                return Err(syntax_error_at(self.text, &alias));
            }
            if self.eat(&TokenKind::LeftParen) {
                self.skip_balanced(&TokenKind::LeftParen, &TokenKind::RightParen, 1)?;
            }
        }
        let more = self.peek().kind == TokenKind::Comma
            || ["JOIN", "CROSS", "NATURAL", "INNER", "LEFT", "RIGHT", "FULL"]
                .iter()
                .any(|k| self.at_keyword(k));
        if more {
            return Ok(None);
        }
        let table = parts.pop().unwrap_or_default();
        Ok(Some((parts.pop(), table)))
    }

    fn at_subquery_start(&self) -> bool {
        self.at_keyword("SELECT")
            || self.at_keyword("WITH")
            || self.at_keyword("VALUES")
            || (self.peek().kind == TokenKind::LeftParen
                && (self.keyword_at(1, "SELECT") || self.keyword_at(1, "WITH")))
    }

    /// Skips to the token closing an already-opened bracket.
    fn skip_balanced(
        &mut self,
        open: &TokenKind,
        close: &TokenKind,
        mut depth: usize,
    ) -> Result<(), WhereError> {
        while depth > 0 {
            let tok = self.advance();
            match &tok.kind {
                TokenKind::End => return Err(syntax_error_at(self.text, &tok)),
                k if k == open => depth += 1,
                k if k == close => depth -= 1,
                _ => {}
            }
        }
        Ok(())
    }

    fn parse_prefix(&mut self) -> Result<Node, WhereError> {
        let tok = self.peek().clone();
        match &tok.kind {
            TokenKind::Word { quoted: false, .. } if is_keyword(&tok, "NOT") => {
                self.advance();
                let arg = self.parse_expr(NOT)?;
                self.node(NodeKind::Not(Box::new(arg)), tok.start)
            }
            TokenKind::Operator(op) if op == "-" || op == "+" => {
                self.advance();
                let arg = self.parse_expr(UNARY)?;
                if let (NodeKind::Number(n), "-") = (&arg.kind, op.as_str()) {
                    // Postgres folds the sign into the constant (`doNegate`).
                    if !n.starts_with('-') {
                        return self.node(NodeKind::Number(format!("-{n}")), tok.start);
                    }
                }
                self.node(
                    NodeKind::Prefix {
                        op: op.clone(),
                        arg: Box::new(arg),
                    },
                    tok.start,
                )
            }
            TokenKind::Operator(op)
                if !matches!(
                    op.as_str(),
                    "*" | "/" | "%" | "^" | "<" | ">" | "=" | "<>" | "<=" | ">="
                ) =>
            {
                self.advance();
                let arg = self.parse_expr(OTHER_OPERATOR)?;
                self.node(
                    NodeKind::Prefix {
                        op: op.clone(),
                        arg: Box::new(arg),
                    },
                    tok.start,
                )
            }
            _ => self.parse_primary(),
        }
    }

    fn parse_primary(&mut self) -> Result<Node, WhereError> {
        let tok = self.peek().clone();
        let loc = tok.start;
        match &tok.kind {
            TokenKind::Number(n) => {
                self.advance();
                self.node(NodeKind::Number(n.clone()), loc)
            }
            TokenKind::String(s) => {
                self.advance();
                self.node(NodeKind::String(s.clone()), loc)
            }
            TokenKind::BitString => {
                self.advance();
                self.node(
                    NodeKind::UnsupportedMessage("BitString values are not supported".into()),
                    loc,
                )
            }
            TokenKind::Param(p) => {
                let number = p.parse::<usize>().map_err(|_| self.error_here())?;
                self.advance();
                self.node(NodeKind::Param(number), loc)
            }
            TokenKind::LeftParen => {
                self.advance();
                if self.at_subquery_start() {
                    return self.sublink(SublinkKind::Other, None, loc);
                }
                let inner = self.parse_expr(0)?;
                if self.eat(&TokenKind::Comma) {
                    let mut items = vec![inner, self.parse_expr(0)?];
                    while self.eat(&TokenKind::Comma) {
                        items.push(self.parse_expr(0)?);
                    }
                    self.expect(&TokenKind::RightParen)?;
                    return self.node(NodeKind::Row(items), loc);
                }
                self.expect(&TokenKind::RightParen)?;
                Ok(inner)
            }
            TokenKind::Word { value, quoted } => {
                if !quoted {
                    if let Some(node) =
                        self.parse_keyword_primary(&value.to_ascii_uppercase(), loc)?
                    {
                        return Ok(node);
                    }
                }
                self.parse_name_primary()
            }
            _ => Err(self.error_here()),
        }
    }

    /// Primaries introduced by a keyword; None when the word is a plain name.
    fn parse_keyword_primary(
        &mut self,
        word: &str,
        loc: usize,
    ) -> Result<Option<Node>, WhereError> {
        let node = match word {
            "TRUE" | "FALSE" => {
                self.advance();
                self.node(NodeKind::Bool(word == "TRUE"), loc)?
            }
            "NULL" => {
                self.advance();
                self.node(NodeKind::Null, loc)?
            }
            "CAST" => {
                self.advance();
                self.expect(&TokenKind::LeftParen)?;
                let arg = self.parse_expr(0)?;
                self.expect_keyword("AS")?;
                let type_name = self.parse_type_name()?;
                self.expect(&TokenKind::RightParen)?;
                self.node(
                    NodeKind::Cast {
                        arg: Box::new(arg),
                        type_name,
                    },
                    loc,
                )?
            }
            "ARRAY" => {
                self.advance();
                if self.eat(&TokenKind::LeftParen) {
                    return self.sublink(SublinkKind::Other, None, loc).map(Some);
                }
                self.expect(&TokenKind::LeftBracket)?;
                self.parse_array_elements(loc)?
            }
            "EXISTS" if self.peek_at(1).kind == TokenKind::LeftParen => {
                self.pos += 2;
                self.sublink(SublinkKind::Other, None, loc)?
            }
            "CASE" => {
                self.advance();
                self.parse_case(loc)?
            }
            "ROW" if self.peek_at(1).kind == TokenKind::LeftParen => {
                self.pos += 2;
                let mut items = Vec::new();
                if !self.eat(&TokenKind::RightParen) {
                    items.push(self.parse_expr(0)?);
                    while self.eat(&TokenKind::Comma) {
                        items.push(self.parse_expr(0)?);
                    }
                    self.expect(&TokenKind::RightParen)?;
                }
                self.node(NodeKind::Row(items), loc)?
            }
            "NULLIF" if self.peek_at(1).kind == TokenKind::LeftParen => {
                self.pos += 2;
                self.parse_expr(0)?;
                self.expect(&TokenKind::Comma)?;
                self.parse_expr(0)?;
                self.expect(&TokenKind::RightParen)?;
                self.node(
                    NodeKind::UnsupportedMessage(
                        "expression \"=\" of :AEXPR_NULLIF is not currently supported".into(),
                    ),
                    loc,
                )?
            }
            w if SQL_VALUE_FUNCTIONS.contains(&w) => {
                self.advance();
                if self.eat(&TokenKind::LeftParen) {
                    self.skip_balanced(&TokenKind::LeftParen, &TokenKind::RightParen, 1)?;
                }
                self.node(NodeKind::Unsupported("SQLValueFunction"), loc)?
            }
            // Type/function-name keywords may name a function: `like(a, b)`.
            w if TYPE_FUNCTION_KEYWORDS.contains(&w)
                && self.peek_at(1).kind == TokenKind::LeftParen =>
            {
                return Ok(None)
            }
            w if RESERVED.contains(&w) => return Err(self.error_here()),
            _ => return Ok(None),
        };
        Ok(Some(node))
    }

    fn parse_case(&mut self, loc: usize) -> Result<Node, WhereError> {
        if !self.at_keyword("WHEN") {
            self.parse_expr(0)?;
        }
        self.expect_keyword("WHEN")?;
        loop {
            self.parse_expr(0)?;
            self.expect_keyword("THEN")?;
            self.parse_expr(0)?;
            if !self.eat_keyword("WHEN") {
                break;
            }
        }
        if self.eat_keyword("ELSE") {
            self.parse_expr(0)?;
        }
        self.expect_keyword("END")?;
        self.node(NodeKind::Unsupported("CaseExpr"), loc)
    }

    /// After `ARRAY[` or a nested `[`: elements up to the closing `]`.
    fn parse_array_elements(&mut self, loc: usize) -> Result<Node, WhereError> {
        let mut elements = Vec::new();
        if !self.eat(&TokenKind::RightBracket) {
            loop {
                let element = if self.peek().kind == TokenKind::LeftBracket {
                    let tok = self.advance();
                    self.recursion += 1;
                    if self.recursion > MAX_DEPTH {
                        return Err(WhereError::at(tok.start, "stack depth limit exceeded"));
                    }
                    let nested = self.parse_array_elements(tok.start);
                    self.recursion -= 1;
                    nested?
                } else {
                    self.parse_expr(0)?
                };
                elements.push(element);
                if self.eat(&TokenKind::Comma) {
                    continue;
                }
                self.expect(&TokenKind::RightBracket)?;
                break;
            }
        }
        self.node(NodeKind::Array(elements), loc)
    }

    fn parse_name_primary(&mut self) -> Result<Node, WhereError> {
        let start = self.pos;
        let first = self.advance();
        let loc = first.start;
        // `type 'literal'`, including multi-word type names.
        self.pos = start;
        if let Ok(type_name) = self.parse_type_name() {
            if let TokenKind::String(value) = &self.peek().kind {
                let value = value.clone();
                let string_loc = self.advance().start;
                // Postgres places the constant at the string (`@2`).
                return self.node(NodeKind::TypedString { type_name, value }, string_loc);
            }
        }
        self.pos = start + 1;
        let mut path = vec![word_name(&first)];
        while self.peek().kind == TokenKind::Period {
            self.advance();
            let part = self.advance();
            match &part.kind {
                TokenKind::Word { .. } => path.push(word_name(&part)),
                _ => return Err(syntax_error_at(self.text, &part)),
            }
        }
        if self.peek().kind == TokenKind::LeftParen {
            self.advance();
            return self.parse_function_call(path, loc);
        }
        self.node(NodeKind::Column(path), loc)
    }

    fn parse_function_call(&mut self, name: Vec<String>, loc: usize) -> Result<Node, WhereError> {
        let mut args = Vec::new();
        let mut aggregate = false;
        if self.peek().kind == TokenKind::Operator("*".into())
            && self.peek_at(1).kind == TokenKind::RightParen
        {
            self.pos += 2;
            aggregate = true;
        } else if !self.eat(&TokenKind::RightParen) {
            if self.eat_keyword("DISTINCT") {
                aggregate = true;
            } else {
                self.eat_keyword("ALL");
            }
            if self.at_keyword("VARIADIC") {
                return Err(self.error_here());
            }
            args.push(self.parse_expr(0)?);
            while self.eat(&TokenKind::Comma) {
                args.push(self.parse_expr(0)?);
            }
            if self.at_keyword("ORDER") {
                aggregate = true;
                self.skip_balanced(&TokenKind::LeftParen, &TokenKind::RightParen, 1)?;
            } else {
                self.expect(&TokenKind::RightParen)?;
            }
        }
        if self.at_keyword("WITHIN") && self.keyword_at(1, "GROUP") {
            self.pos += 2;
            self.expect(&TokenKind::LeftParen)?;
            self.skip_balanced(&TokenKind::LeftParen, &TokenKind::RightParen, 1)?;
            aggregate = true;
        }
        if self.at_keyword("FILTER") && self.peek_at(1).kind == TokenKind::LeftParen {
            self.pos += 2;
            self.skip_balanced(&TokenKind::LeftParen, &TokenKind::RightParen, 1)?;
            aggregate = true;
        }
        if self.eat_keyword("OVER") {
            if self.eat(&TokenKind::LeftParen) {
                self.skip_balanced(&TokenKind::LeftParen, &TokenKind::RightParen, 1)?;
            } else {
                let window = self.advance();
                if !matches!(window.kind, TokenKind::Word { .. }) {
                    return Err(syntax_error_at(self.text, &window));
                }
            }
            aggregate = true;
        }
        self.node(
            NodeKind::Func {
                name,
                args,
                aggregate,
            },
            loc,
        )
    }

    /// A type name: `[schema.]name`, Postgres' multi-word names, optional
    /// modifiers, and array markers (`[]`, `[3]`, `ARRAY`).
    fn parse_type_name(&mut self) -> Result<TypeName, WhereError> {
        let first = self.peek().clone();
        let loc = first.start;
        let TokenKind::Word { value, quoted } = &first.kind else {
            return Err(self.error_here());
        };
        self.advance();
        let mut names = vec![word_name(&first)];
        let mut has_modifiers = false;
        if !quoted {
            let upper = value.to_ascii_uppercase();
            match upper.as_str() {
                "DOUBLE" if self.eat_keyword("PRECISION") => {
                    names = vec!["double precision".into()]
                }
                "CHARACTER" | "CHAR" | "NATIONAL" => {
                    if upper == "NATIONAL"
                        && !(self.eat_keyword("CHARACTER") || self.eat_keyword("CHAR"))
                    {
                        return Err(self.error_here());
                    }
                    if self.eat_keyword("VARYING") {
                        names = vec!["character varying".into()];
                    } else {
                        names = vec!["character".into()];
                    }
                }
                "TIMESTAMP" | "TIME" => {
                    if self.eat(&TokenKind::LeftParen) {
                        self.skip_balanced(&TokenKind::LeftParen, &TokenKind::RightParen, 1)?;
                        has_modifiers = true;
                    }
                    let base = upper.to_ascii_lowercase();
                    if self.at_keyword("WITH")
                        && self.keyword_at(1, "TIME")
                        && self.keyword_at(2, "ZONE")
                    {
                        self.pos += 3;
                        names = vec![format!("{base} with time zone")];
                    } else if self.at_keyword("WITHOUT")
                        && self.keyword_at(1, "TIME")
                        && self.keyword_at(2, "ZONE")
                    {
                        self.pos += 3;
                        names = vec![format!("{base} without time zone")];
                    }
                }
                _ => {}
            }
        }
        if names.len() == 1 && self.peek().kind == TokenKind::Period {
            self.advance();
            let part = self.advance();
            match &part.kind {
                TokenKind::Word { .. } => names.push(word_name(&part)),
                _ => return Err(syntax_error_at(self.text, &part)),
            }
        }
        if self.eat(&TokenKind::LeftParen) {
            self.skip_balanced(&TokenKind::LeftParen, &TokenKind::RightParen, 1)?;
            has_modifiers = true;
        }
        let mut array = false;
        loop {
            if self.peek().kind == TokenKind::LeftBracket {
                self.advance();
                if let TokenKind::Number(_) = self.peek().kind {
                    self.advance();
                }
                self.expect(&TokenKind::RightBracket)?;
                array = true;
            } else if self.at_keyword("ARRAY") {
                self.advance();
                array = true;
                if self.peek().kind == TokenKind::LeftBracket {
                    self.advance();
                    if let TokenKind::Number(_) = self.peek().kind {
                        self.advance();
                    }
                    self.expect(&TokenKind::RightBracket)?;
                }
            } else {
                break;
            }
        }
        Ok(TypeName {
            names,
            array,
            has_modifiers,
            loc,
        })
    }
}

fn is_keyword(tok: &Tok, keyword: &str) -> bool {
    matches!(&tok.kind, TokenKind::Word { value, quoted: false } if value.eq_ignore_ascii_case(keyword))
}

/// Unquoted names fold to lower case (ASCII only, like Postgres with UTF-8).
fn word_name(tok: &Tok) -> String {
    match &tok.kind {
        TokenKind::Word {
            value,
            quoted: false,
        } => value.to_ascii_lowercase(),
        TokenKind::Word {
            value,
            quoted: true,
        } => value.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compact rendering of the tree to assert precedence.
    fn show(node: &Node) -> String {
        match &node.kind {
            NodeKind::Column(path) => path.join("."),
            NodeKind::Number(n) => n.clone(),
            NodeKind::String(s) => format!("'{s}'"),
            NodeKind::Bool(b) => b.to_string(),
            NodeKind::Null => "null".into(),
            NodeKind::Param(n) => format!("${n}"),
            NodeKind::TypedString { type_name, value } => {
                format!("{}'{value}'", type_name.names.join("."))
            }
            NodeKind::Cast { arg, type_name } => {
                format!(
                    "{}::{}{}",
                    show(arg),
                    type_name.names.join("."),
                    if type_name.array { "[]" } else { "" }
                )
            }
            NodeKind::Prefix { op, arg } => format!("({op}{})", show(arg)),
            NodeKind::Infix { op, left, right } => format!("({} {op} {})", show(left), show(right)),
            NodeKind::Quantified {
                op,
                left,
                right,
                all,
            } => {
                format!(
                    "({} {op} {}({}))",
                    show(left),
                    if *all { "ALL" } else { "ANY" },
                    show(right)
                )
            }
            NodeKind::And(items) => format!(
                "and({})",
                items.iter().map(show).collect::<Vec<_>>().join(", ")
            ),
            NodeKind::Or(items) => format!(
                "or({})",
                items.iter().map(show).collect::<Vec<_>>().join(", ")
            ),
            NodeKind::Not(arg) => format!("not({})", show(arg)),
            NodeKind::IsNull { arg, negated } => format!(
                "{}({})",
                if *negated { "notnull" } else { "isnull" },
                show(arg)
            ),
            NodeKind::BoolTest { arg, test } => format!("({} {})", show(arg), test.sql()),
            NodeKind::Distinct {
                left,
                right,
                negated,
            } => {
                format!(
                    "({} {}distinct {})",
                    show(left),
                    if *negated { "not " } else { "" },
                    show(right)
                )
            }
            NodeKind::Between {
                arg,
                low,
                high,
                negated,
                symmetric,
            } => format!(
                "between{}{}({}, {}, {})",
                if *negated { "-not" } else { "" },
                if *symmetric { "-sym" } else { "" },
                show(arg),
                show(low),
                show(high)
            ),
            NodeKind::InList {
                arg,
                items,
                negated,
            } => format!(
                "{}({}, [{}])",
                if *negated { "notin" } else { "in" },
                show(arg),
                items.iter().map(show).collect::<Vec<_>>().join(", ")
            ),
            NodeKind::Func {
                name,
                args,
                aggregate,
            } => format!(
                "{}{}({})",
                name.join("."),
                if *aggregate { "!agg" } else { "" },
                args.iter().map(show).collect::<Vec<_>>().join(", ")
            ),
            NodeKind::Array(items) => format!(
                "[{}]",
                items.iter().map(show).collect::<Vec<_>>().join(", ")
            ),
            NodeKind::Row(items) => format!(
                "row({})",
                items.iter().map(show).collect::<Vec<_>>().join(", ")
            ),
            NodeKind::Sublink(sublink) => {
                let select = match &sublink.select {
                    Ok(s) => format!(
                        "select {} from {}{}{}",
                        s.columns.join(","),
                        s.schema
                            .as_ref()
                            .map(|s| format!("{s}."))
                            .unwrap_or_default(),
                        s.table,
                        s.filter
                            .as_ref()
                            .map(|f| format!(" where {}", show(f)))
                            .unwrap_or_default()
                    ),
                    Err(e) => format!("refused: {}", e.message),
                };
                format!(
                    "{:?}@{}({}; {select})",
                    sublink.kind,
                    node.loc,
                    sublink.lhs.as_ref().map(show).unwrap_or_default()
                )
            }
            NodeKind::Unsupported(what) => format!("<{what}>"),
            NodeKind::UnsupportedMessage(m) => format!("<{m}>"),
        }
    }

    fn tree(text: &str) -> String {
        show(&parse(text).unwrap_or_else(|e| panic!("{text}: {e}")).root)
    }

    fn error(text: &str) -> String {
        match parse(text) {
            Ok(p) => panic!("{text} parsed as {}", show(&p.root)),
            Err(e) => e.message,
        }
    }

    #[test]
    fn where_clause_parse_precedence_follows_postgres() {
        assert_eq!(tree("a = 1 AND b = 2 OR c"), "or(and((a = 1), (b = 2)), c)");
        assert_eq!(tree("NOT a = 1 AND b"), "and(not((a = 1)), b)");
        assert_eq!(tree("-2 ^ 2"), "(-2 ^ 2)");
        assert_eq!(tree("- a ^ 2"), "((-a) ^ 2)");
        assert_eq!(tree("1 + 2 * 3 - 4"), "((1 + (2 * 3)) - 4)");
        assert_eq!(tree("|/ 16 + 9"), "(|/(16 + 9))");
        assert_eq!(tree("a || b = c"), "((a || b) = c)");
        assert_eq!(tree("a = b IS NULL"), "isnull((a = b))");
        assert_eq!(tree("a LIKE 'x' = true"), "((a ~~ 'x') = true)");
        assert_eq!(tree("x BETWEEN 1 AND 3 AND y"), "and(between(x, 1, 3), y)");
        assert_eq!(
            tree("x NOT BETWEEN SYMMETRIC 3 AND 1"),
            "between-not-sym(x, 3, 1)"
        );
        assert_eq!(tree("x NOT IN (1, 2)"), "notin(x, [1, 2])");
        assert_eq!(
            tree("x = ANY('{1}') AND y <> ALL(z)"),
            "and((x = ANY('{1}')), (y <> ALL(z)))"
        );
        assert_eq!(tree("a IS NOT DISTINCT FROM b"), "(a not distinct b)");
        assert_eq!(
            tree("a::int4[] @> '{1}'::int[]"),
            "(a::int4[] @> '{1}'::int[])"
        );
        assert_eq!(tree("-a::int"), "(-a::int)");
        assert_eq!(
            tree("\"Ab\" = date '2024-01-01'"),
            "(Ab = date'2024-01-01')"
        );
        assert_eq!(
            tree("ts > timestamp with time zone '2024-01-01'"),
            "(ts > timestamp with time zone'2024-01-01')"
        );
        assert_eq!(tree("time > '10:00'"), "(time > '10:00')");
        assert_eq!(
            tree("CAST(a AS double precision) > 1.5"),
            "(a::double precision > 1.5)"
        );
        assert_eq!(tree("lower(name) ILIKE $1"), "(lower(name) ~~* $1)");
        assert_eq!(tree("count(*) > 1"), "(count!agg() > 1)");
        assert_eq!(tree("ARRAY[[1,2],[3,4]] = x"), "([[1, 2], [3, 4]] = x)");
        assert_eq!(tree("A = 1;"), "(a = 1)");
        assert_eq!(tree("a isnull or b notnull"), "or(isnull(a), notnull(b))");
        assert_eq!(tree("a and b and (c and d)"), "and(a, b, and(c, d))");
    }

    #[test]
    fn where_clause_parse_errors_read_like_postgres() {
        assert_eq!(
            error("1=1) OR (1=1"),
            "At location 18: syntax error at or near \")\""
        );
        assert_eq!(
            error("a = "),
            "At location 19: syntax error at end of input"
        );
        assert_eq!(error(""), "At location 15: syntax error at end of input");
        assert_eq!(
            error("a = = 1"),
            "At location 19: syntax error at or near \"=\""
        );
        assert_eq!(
            error("a = 1 = 2"),
            "At location 21: syntax error at or near \"=\""
        );
        assert_eq!(
            error("a = 1; DROP TABLE x"),
            "unescaped \";\" causing statement split"
        );
        assert_eq!(
            error("a = 1 ORDER BY a"),
            "malformed query ending with SQL clauses"
        );
        assert_eq!(
            error("select = 1"),
            "At location 15: syntax error at or near \"select\""
        );
        assert_eq!(
            error("é = ) "),
            "At location 19: syntax error at or near \")\""
        );
    }

    #[test]
    fn where_clause_parse_takes_subqueries_apart() {
        assert_eq!(
            tree("p IN (SELECT id FROM projects WHERE o = $1) AND x"),
            "and(In@2(p; select id from projects where (o = $1)), x)"
        );
        assert_eq!(
            tree("p NOT IN (select \"Id\" AS i FROM s.t x)"),
            "not(In@2(p; select Id from s.t))"
        );
        assert_eq!(
            tree("(a, b) IN ((SELECT x, y FROM ONLY t AS q (m, n)))"),
            "In@7(row(a, b); select x,y from t)"
        );
        assert_eq!(
            tree("ROW(a, b) IN (SELECT x, y FROM t)"),
            "In@10(row(a, b); select x,y from t)"
        );
        assert_eq!(
            tree("p IN (SELECT id FROM t WHERE q IN (SELECT id FROM u))"),
            "In@2(p; select id from t where In@31(q; select id from u))"
        );
        assert_eq!(
            tree("x = ANY (SELECT id FROM t)"),
            "Other@2(x; select id from t)"
        );
        assert_eq!(
            tree("EXISTS (SELECT id FROM t)"),
            "Other@0(; select id from t)"
        );
        assert_eq!(
            tree("(SELECT id FROM t) = 1"),
            "(Other@0(; select id from t) = 1)"
        );
        assert_eq!(
            tree("x = ARRAY(SELECT id FROM t)"),
            "(x = Other@4(; select id from t))"
        );
        // Electric's refusals while taking the statement apart, first the
        // targets (at their unadjusted position), then the table, then
        // any other clause.
        for (text, refused) in [
            (
                "p IN (SELECT 1 FROM t)",
                "At location 28: Expected a plain column reference",
            ),
            (
                "p IN (SELECT x + 1 FROM t, u)",
                "At location 28: Expected a plain column reference",
            ),
            (
                "p IN (SELECT * FROM t)",
                "At location 28: Expected a plain column reference",
            ),
            (
                "p IN (SELECT t.x FROM t)",
                "At location 28: Expected a plain column reference",
            ),
            (
                "p IN (SELECT x FROM t, u)",
                "Expected a single table reference",
            ),
            (
                "p IN (SELECT x FROM t JOIN u ON true)",
                "Expected a single table reference",
            ),
            (
                "p IN (SELECT x FROM f(1))",
                "Expected a single table reference",
            ),
            (
                "p IN (SELECT x FROM (SELECT 1) s)",
                "Expected a single table reference",
            ),
            ("p IN (SELECT x)", "Expected a single table reference"),
            (
                "p IN (SELECT x FROM t UNION SELECT y FROM u)",
                "Expected a single table reference",
            ),
            ("p IN (VALUES (1))", "Expected a single table reference"),
            (
                "p IN (SELECT DISTINCT x FROM t)",
                "SELECT statement must not contain any clauses",
            ),
            (
                "p IN (SELECT x FROM t ORDER BY x)",
                "SELECT statement must not contain any clauses",
            ),
            (
                "p IN (SELECT x FROM t WHERE y GROUP BY x)",
                "SELECT statement must not contain any clauses",
            ),
            (
                "p IN (SELECT x FROM t LIMIT 1)",
                "SELECT statement must not contain any clauses",
            ),
            (
                "p IN (SELECT x FROM t FOR UPDATE)",
                "SELECT statement must not contain any clauses",
            ),
            (
                "p IN (WITH a AS (SELECT 1) SELECT x FROM a)",
                "SELECT statement must not contain any clauses",
            ),
        ] {
            let parsed = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let NodeKind::Sublink(sublink) = &parsed.root.kind else {
                panic!("{text}: {}", show(&parsed.root));
            };
            match &sublink.select {
                Err(e) => assert_eq!(e.message, refused, "{text}"),
                Ok(_) => panic!("{text} was accepted"),
            }
        }
        assert_eq!(
            error("p IN (SELECT x FROM t WHERE)"),
            "At location 42: syntax error at or near \")\""
        );
        assert_eq!(
            error("p IN (SELECT x FROM t"),
            "At location 36: syntax error at end of input"
        );
    }

    #[test]
    fn where_clause_parse_flags_subqueries_and_bounds_depth() {
        for text in [
            "a IN (SELECT b FROM t)",
            "EXISTS (SELECT 1)",
            "a = ANY (SELECT b FROM t)",
            "(SELECT 1) = a",
            "a = ARRAY(SELECT 1)",
        ] {
            assert!(parse(text).unwrap().has_subquery, "{text}");
        }
        assert!(!parse("a IN (1, 2)").unwrap().has_subquery);
        let deep = format!("{}1{}", "(".repeat(5000), ")".repeat(5000));
        assert!(error(&deep).contains("stack depth limit exceeded"));
        let long = vec!["1"; 5000].join(" + ");
        assert!(error(&format!("a = {long}")).contains("stack depth limit exceeded"));
        let wide = (0..5000)
            .map(|i| format!("a = {i}"))
            .collect::<Vec<_>>()
            .join(" OR ");
        assert!(parse(&wide).is_ok());
    }
}
