//! Errors from the Postgres client. Every `Display` is one line, meant to
//! be logged or shown to an operator as is.

use std::fmt;
use std::io;

/// An ErrorResponse (or NoticeResponse) from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbError {
    /// `ERROR`, `FATAL`, `PANIC`, `WARNING`, ... (not localized when the
    /// server sends the `V` field, i.e. since 9.6).
    pub severity: String,
    /// SQLSTATE, e.g. `42P01`.
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// 1-based character offset into the query text.
    pub position: Option<u32>,
}

#[derive(Debug)]
pub enum PgError {
    Io(io::Error),
    /// What timed out, e.g. "connecting to Postgres".
    Timeout(&'static str),
    /// The server sent something we did not expect or cannot decode.
    Protocol(String),
    Auth(String),
    Db(DbError),
    Tls(String),
    /// The server closed the connection.
    Closed,
}

impl PgError {
    /// The SQLSTATE, for errors the server reported.
    pub fn code(&self) -> Option<&str> {
        match self {
            PgError::Db(e) => Some(&e.code),
            _ => None,
        }
    }

    /// The server's error, if this is one.
    pub fn as_db(&self) -> Option<&DbError> {
        match self {
            PgError::Db(e) => Some(e),
            _ => None,
        }
    }
}

impl DbError {
    /// Decodes the fields of an ErrorResponse or NoticeResponse body: a
    /// sequence of (type byte, NUL-terminated string), ended by a 0 byte.
    /// Lenient: a truncated or non-UTF-8 body still yields what it can.
    pub fn parse(body: &[u8]) -> DbError {
        let mut localized_severity = None;
        let mut error = DbError {
            severity: String::new(),
            code: String::new(),
            message: String::new(),
            detail: None,
            hint: None,
            position: None,
        };
        let mut rest = body;
        while let Some((&kind, tail)) = rest.split_first() {
            if kind == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            let value = String::from_utf8_lossy(&tail[..end]).into_owned();
            rest = tail.get(end + 1..).unwrap_or_default();
            match kind {
                b'S' => localized_severity = Some(value),
                b'V' => error.severity = value,
                b'C' => error.code = value,
                b'M' => error.message = value,
                b'D' => error.detail = Some(value),
                b'H' => error.hint = Some(value),
                b'P' => error.position = value.parse().ok(),
                _ => {}
            }
        }
        if error.severity.is_empty() {
            error.severity = localized_severity.unwrap_or_else(|| "ERROR".to_string());
        }
        error
    }
}

/// Server texts (details especially) may span lines; logs want one.
fn one_line(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if let Some(first) = lines.next() {
        f.write_str(first)?;
    }
    for line in lines {
        write!(f, " {line}")?;
    }
    Ok(())
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: ", self.severity, self.code)?;
        one_line(f, &self.message)?;
        if let Some(position) = self.position {
            write!(f, " (at position {position})")?;
        }
        if let Some(detail) = &self.detail {
            f.write_str("; detail: ")?;
            one_line(f, detail)?;
        }
        if let Some(hint) = &self.hint {
            f.write_str("; hint: ")?;
            one_line(f, hint)?;
        }
        Ok(())
    }
}

impl std::error::Error for DbError {}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgError::Io(e) => write!(f, "Postgres connection error: {e}"),
            PgError::Timeout(what) => write!(f, "timed out {what}"),
            PgError::Protocol(message) => {
                f.write_str("Postgres protocol error: ")?;
                one_line(f, message)
            }
            PgError::Auth(message) => {
                f.write_str("Postgres authentication failed: ")?;
                one_line(f, message)
            }
            PgError::Db(e) => e.fmt(f),
            PgError::Tls(message) => one_line(f, message),
            PgError::Closed => f.write_str("Postgres closed the connection"),
        }
    }
}

impl std::error::Error for PgError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PgError::Io(e) => Some(e),
            PgError::Db(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for PgError {
    fn from(e: io::Error) -> PgError {
        PgError::Io(e)
    }
}

impl From<DbError> for PgError {
    fn from(e: DbError) -> PgError {
        PgError::Db(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(fields: &[(u8, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (kind, value) in fields {
            out.push(*kind);
            out.extend_from_slice(value.as_bytes());
            out.push(0);
        }
        out.push(0);
        out
    }

    #[test]
    fn parses_error_fields() {
        let e = DbError::parse(&body(&[
            (b'S', "FEHLER"),
            (b'V', "ERROR"),
            (b'C', "42P01"),
            (b'M', "relation \"nope\" does not exist"),
            (b'P', "15"),
            (b'F', "parse_relation.c"),
        ]));
        assert_eq!(e.severity, "ERROR");
        assert_eq!(e.code, "42P01");
        assert_eq!(e.position, Some(15));
        assert_eq!(
            e.to_string(),
            "ERROR 42P01: relation \"nope\" does not exist (at position 15)"
        );
        let pg = PgError::Db(e);
        assert_eq!(pg.code(), Some("42P01"));
    }

    #[test]
    fn detail_and_hint_stay_on_one_line() {
        let e = DbError::parse(&body(&[
            (b'S', "FATAL"),
            (b'C', "28P01"),
            (b'M', "password authentication failed for user \"bob\""),
            (b'D', "line one\nline two"),
            (b'H', "try again"),
        ]));
        assert_eq!(e.severity, "FATAL");
        assert_eq!(
            e.to_string(),
            "FATAL 28P01: password authentication failed for user \"bob\"; detail: line one line two; hint: try again"
        );
    }

    #[test]
    fn tolerates_garbage() {
        for bad in [
            &b""[..],
            b"C",
            b"C42",
            b"\xff\xfe\0",
            b"P12x\0\0",
            b"M\xff\0",
        ] {
            let e = DbError::parse(bad);
            assert_eq!(e.severity, "ERROR");
            assert!(!e.to_string().contains('\n'));
        }
        assert_eq!(DbError::parse(b"C42").code, "42");
    }

    #[test]
    fn other_errors_display() {
        assert_eq!(PgError::Closed.code(), None);
        assert_eq!(
            PgError::Timeout("connecting to Postgres").to_string(),
            "timed out connecting to Postgres"
        );
        let io: PgError = io::Error::new(io::ErrorKind::ConnectionRefused, "refused").into();
        assert_eq!(io.to_string(), "Postgres connection error: refused");
    }
}
