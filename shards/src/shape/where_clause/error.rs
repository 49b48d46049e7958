//! The 400 error of an invalid `where`: its message reproduces Electric's
//! text, including its `At location N:` prefix, so clients see the same
//! body from shapeshard as from Electric.

use std::fmt;

/// Which request field the error belongs to in
/// `{"message":"Invalid request","errors":{<field>:[<message>]}}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhereErrorField {
    Where,
    /// Electric reports badly numbered parameters under `params`.
    Params,
    /// A subquery's table does not exist.
    Table,
    /// A subquery selects columns its table lacks.
    Columns,
}

impl WhereErrorField {
    pub fn as_str(&self) -> &'static str {
        match self {
            WhereErrorField::Where => "where",
            WhereErrorField::Params => "params",
            WhereErrorField::Table => "table",
            WhereErrorField::Columns => "columns",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhereError {
    pub message: String,
    pub field: WhereErrorField,
}

/// Electric parses `SELECT 1 WHERE <where>` and reports a syntax error at
/// libpg_query's `cursorpos` (1-based, in characters, counted from the
/// start of that wrapped statement) minus one.
pub(crate) const WRAPPER_PREFIX_CHARS: usize = "SELECT 1 WHERE ".len();

pub(crate) fn syntax_error_location(text: &str, byte_offset: usize) -> usize {
    let prefix = text.get(..byte_offset).unwrap_or(text);
    WRAPPER_PREFIX_CHARS + prefix.chars().count()
}

impl WhereError {
    /// A semantic error at a node: Electric subtracts the wrapper prefix
    /// from the node's byte location, giving a 0-based byte offset into the
    /// user's text.
    pub(crate) fn at(byte_offset: usize, message: impl fmt::Display) -> WhereError {
        WhereError {
            message: format!("At location {byte_offset}: {message}"),
            field: WhereErrorField::Where,
        }
    }

    pub(crate) fn syntax(text: &str, byte_offset: usize, message: &str) -> WhereError {
        WhereError {
            message: format!(
                "At location {}: {message}",
                syntax_error_location(text, byte_offset)
            ),
            field: WhereErrorField::Where,
        }
    }

    pub(crate) fn plain(message: impl Into<String>) -> WhereError {
        WhereError {
            message: message.into(),
            field: WhereErrorField::Where,
        }
    }

    pub(crate) fn params(message: impl Into<String>) -> WhereError {
        WhereError {
            message: message.into(),
            field: WhereErrorField::Params,
        }
    }
}

impl fmt::Display for WhereError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WhereError {}
