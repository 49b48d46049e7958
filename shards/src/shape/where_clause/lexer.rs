//! Tokens of a `where` clause, from sqlparser's PostgreSQL tokenizer,
//! with byte offsets into the user's text (Electric reports positions, and
//! syntax errors quote the offending token as Postgres does).

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Location, Token, Tokenizer};

use super::error::{syntax_error_location, WhereError};

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum TokenKind {
    /// An identifier or keyword. Unquoted ones are case-folded by the parser.
    Word {
        value: String,
        quoted: bool,
    },
    Number(String),
    /// Any string literal form that yields text (`'..'`, `E'..'`, `$$..$$`, `U&'..'`).
    String(String),
    /// `B'..'`, `X'..'`: bit strings, which Electric rejects.
    BitString,
    /// `$n` (the text after `$`).
    Param(String),
    /// An operator, spelled as Postgres names it (`!=` becomes `<>`).
    Operator(String),
    LeftParen,
    RightParen,
    LeftBracket,
    RightBracket,
    Comma,
    DoubleColon,
    Semicolon,
    Period,
    /// Anything else: always a syntax error where it appears.
    Other,
    End,
}

#[derive(Clone, Debug)]
pub(crate) struct Tok {
    pub kind: TokenKind,
    /// Byte range in the user's text.
    pub start: usize,
    pub end: usize,
}

/// Maps sqlparser's 1-based line/column (columns count characters) to
/// byte offsets. Lookups come in text order, so a cursor that only moves
/// forward (restarting at a line start when asked for an earlier column)
/// keeps tokenizing linear in the input size.
struct Positions<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
    /// (line, column, byte offset) of the last lookup.
    cursor: (u64, u64, usize),
}

impl<'a> Positions<'a> {
    fn new(text: &'a str) -> Positions<'a> {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Positions {
            text,
            line_starts,
            cursor: (1, 1, 0),
        }
    }

    fn offset(&mut self, location: Location) -> usize {
        let (line, column) = (location.line, location.column.max(1));
        let line_index = usize::try_from(line).unwrap_or(usize::MAX);
        let Some(&line_start) = line_index
            .checked_sub(1)
            .and_then(|l| self.line_starts.get(l))
        else {
            return self.text.len();
        };
        let (cursor_line, cursor_column, cursor_byte) = self.cursor;
        let (mut current_column, mut byte) = if cursor_line == line && cursor_column <= column {
            (cursor_column, cursor_byte)
        } else {
            (1, line_start)
        };
        let mut chars = self.text[byte..].chars();
        while current_column < column {
            match chars.next() {
                Some('\n') | None => break,
                Some(c) => {
                    byte += c.len_utf8();
                    current_column += 1;
                }
            }
        }
        self.cursor = (line, current_column, byte);
        byte
    }
}

fn operator_kind(token: &Token) -> bool {
    matches!(
        token,
        Token::DoubleEq
            | Token::Eq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Spaceship
            | Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::DuckIntDiv
            | Token::Mod
            | Token::StringConcat
            | Token::Ampersand
            | Token::Pipe
            | Token::Caret
            | Token::Sharp
            | Token::DoubleSharp
            | Token::Tilde
            | Token::TildeAsterisk
            | Token::ExclamationMarkTilde
            | Token::ExclamationMarkTildeAsterisk
            | Token::DoubleTilde
            | Token::DoubleTildeAsterisk
            | Token::ExclamationMarkDoubleTilde
            | Token::ExclamationMarkDoubleTildeAsterisk
            | Token::ShiftLeft
            | Token::ShiftRight
            | Token::Overlap
            | Token::ExclamationMark
            | Token::DoubleExclamationMark
            | Token::AtSign
            | Token::CaretAt
            | Token::PGSquareRoot
            | Token::PGCubeRoot
            | Token::Arrow
            | Token::LongArrow
            | Token::HashArrow
            | Token::HashLongArrow
            | Token::AtDashAt
            | Token::QuestionMarkDash
            | Token::AmpersandLeftAngleBracket
            | Token::AmpersandRightAngleBracket
            | Token::AmpersandLeftAngleBracketVerticalBar
            | Token::VerticalBarAmpersandRightAngleBracket
            | Token::TwoWayArrow
            | Token::LeftAngleBracketCaret
            | Token::RightAngleBracketCaret
            | Token::QuestionMarkSharp
            | Token::QuestionMarkDashVerticalBar
            | Token::QuestionMarkDoubleVerticalBar
            | Token::TildeEqual
            | Token::ShiftLeftVerticalBar
            | Token::VerticalBarShiftRight
            | Token::AtArrow
            | Token::ArrowAt
            | Token::HashMinus
            | Token::AtQuestion
            | Token::AtAt
            | Token::Question
            | Token::QuestionAnd
            | Token::QuestionPipe
            | Token::CustomBinaryOperator(_)
    )
}

/// Tokenizes `text`, dropping whitespace and comments.
pub(crate) fn tokenize(text: &str) -> Result<Vec<Tok>, WhereError> {
    let dialect = PostgreSqlDialect {};
    let mut positions = Positions::new(text);
    let mut raw = Vec::new();
    if let Err(e) = Tokenizer::new(&dialect, text).tokenize_with_location_into_buf(&mut raw) {
        // The failing token starts after the last complete one (sqlparser
        // may report the position where it gave up instead).
        let after = raw.last().map_or(0, |t| positions.offset(t.span.end));
        let start = after + text[after..].len() - text[after..].trim_start().len();
        return Err(lexer_error(text, start, &e.message));
    }
    let mut tokens = Vec::with_capacity(raw.len() + 1);
    for t in raw {
        let start = positions.offset(t.span.start);
        let end = positions.offset(t.span.end).max(start);
        let source = &text[start..end];
        let kind = match t.token {
            Token::Whitespace(_) => continue,
            Token::EOF => break,
            Token::Word(word) => {
                if word.quote_style.is_some() && word.value.is_empty() {
                    return Err(WhereError::syntax(
                        text,
                        start,
                        "zero-length delimited identifier at or near \"\"\"\"\"",
                    ));
                }
                match word.quote_style {
                    None | Some('"') => TokenKind::Word {
                        value: word.value,
                        quoted: word.quote_style.is_some(),
                    },
                    Some(_) => TokenKind::Other,
                }
            }
            Token::Number(n, false) => TokenKind::Number(n),
            Token::SingleQuotedString(s)
            | Token::EscapedStringLiteral(s)
            | Token::UnicodeStringLiteral(s)
            | Token::NationalStringLiteral(s) => TokenKind::String(s),
            Token::DollarQuotedString(s) => TokenKind::String(s.value),
            Token::SingleQuotedByteStringLiteral(_) | Token::HexStringLiteral(_) => {
                TokenKind::BitString
            }
            Token::Placeholder(p) => match p.strip_prefix('$') {
                Some(rest) => TokenKind::Param(rest.to_string()),
                None => TokenKind::Other,
            },
            Token::LParen => TokenKind::LeftParen,
            Token::RParen => TokenKind::RightParen,
            Token::LBracket => TokenKind::LeftBracket,
            Token::RBracket => TokenKind::RightBracket,
            Token::Comma => TokenKind::Comma,
            Token::DoubleColon => TokenKind::DoubleColon,
            Token::SemiColon => TokenKind::Semicolon,
            Token::Period => TokenKind::Period,
            Token::Neq => TokenKind::Operator("<>".into()),
            ref other if operator_kind(other) => TokenKind::Operator(source.to_string()),
            _ => TokenKind::Other,
        };
        tokens.push(Tok { kind, start, end });
    }
    tokens.push(Tok {
        kind: TokenKind::End,
        start: text.len(),
        end: text.len(),
    });
    Ok(tokens)
}

/// Postgres' scanner messages for what sqlparser's tokenizer rejects,
/// told apart by how the failing token starts.
fn lexer_error(text: &str, start: usize, message: &str) -> WhereError {
    let near = &text[start..];
    let upper = near.to_ascii_uppercase();
    let what = if near.starts_with('"') {
        "unterminated quoted identifier"
    } else if near.starts_with('$') {
        "unterminated dollar-quoted string"
    } else if near.starts_with("/*") {
        "unterminated /* comment"
    } else if ["'", "E'", "N'", "X'", "B'", "U&'"]
        .iter()
        .any(|p| upper.starts_with(p))
        && message.to_ascii_lowercase().contains("unterminated")
    {
        "unterminated quoted string"
    } else {
        let token: String = near
            .chars()
            .take_while(|c| !c.is_whitespace())
            .take(32)
            .collect();
        return WhereError::syntax(text, start, &format!("syntax error at or near \"{token}\""));
    };
    WhereError::syntax(text, start, &format!("{what} at or near \"{near}\""))
}

/// `syntax error at or near "<token>"`, or `at end of input`.
pub(crate) fn syntax_error_at(text: &str, token: &Tok) -> WhereError {
    if token.kind == TokenKind::End {
        return WhereError {
            message: format!(
                "At location {}: syntax error at end of input",
                syntax_error_location(text, text.len())
            ),
            field: super::error::WhereErrorField::Where,
        };
    }
    let near = text.get(token.start..token.end).unwrap_or("");
    WhereError::syntax(
        text,
        token.start,
        &format!("syntax error at or near \"{near}\""),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<TokenKind> {
        tokenize(text)
            .unwrap()
            .into_iter()
            .map(|t| t.kind)
            .collect()
    }

    #[test]
    fn where_clause_lexer_tokens_and_offsets() {
        let tokens = tokenize("é = 'ü' AND\n\"Ab\" != $1").unwrap();
        let spans: Vec<(usize, usize)> = tokens.iter().map(|t| (t.start, t.end)).collect();
        assert_eq!(
            spans,
            vec![
                (0, 2),
                (3, 4),
                (5, 9),
                (10, 13),
                (14, 18),
                (19, 21),
                (22, 24),
                (24, 24)
            ]
        );
        assert_eq!(tokens[5].kind, TokenKind::Operator("<>".into()));
        assert_eq!(tokens[6].kind, TokenKind::Param("1".into()));
        assert_eq!(
            kinds("a ~~* b"),
            vec![
                TokenKind::Word {
                    value: "a".into(),
                    quoted: false
                },
                TokenKind::Operator("~~*".into()),
                TokenKind::Word {
                    value: "b".into(),
                    quoted: false
                },
                TokenKind::End
            ]
        );
    }

    #[test]
    fn where_clause_lexer_errors_read_like_postgres() {
        let err = tokenize("a = 'abc").unwrap_err();
        assert_eq!(
            err.message,
            "At location 19: unterminated quoted string at or near \"'abc\""
        );
        for (text, expected) in [
            (
                "id = \"abc",
                "At location 20: unterminated quoted identifier at or near \"\"abc\"",
            ),
            (
                "id = $$abc",
                "At location 20: unterminated dollar-quoted string at or near \"$$abc\"",
            ),
            (
                "id = /* abc",
                "At location 20: unterminated /* comment at or near \"/* abc\"",
            ),
            (
                "id = E'abc",
                "At location 20: unterminated quoted string at or near \"E'abc\"",
            ),
            (
                "id = 'a' || 'b",
                "At location 27: unterminated quoted string at or near \"'b\"",
            ),
        ] {
            assert_eq!(tokenize(text).unwrap_err().message, expected, "{text}");
        }
        let err = tokenize("\"\" = 1").unwrap_err();
        assert_eq!(
            err.message,
            "At location 15: zero-length delimited identifier at or near \"\"\"\"\""
        );
    }
}
