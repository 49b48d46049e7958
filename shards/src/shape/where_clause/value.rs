//! Runtime values: Postgres text input (`*in` functions) and output
//! (`*out`), comparison, and casts between the types we evaluate.

use std::cmp::Ordering;

use super::array::{self, ArrayValue};
use super::datetime::{self, Interval};
use super::numeric::{self, Numeric};
use super::types::{Scalar, Type};

#[derive(Clone, Debug)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    /// All integer widths; the static type bounds the range.
    Int(i64),
    /// `float4` values are stored already rounded to single precision.
    Float(f64),
    Numeric(Numeric),
    /// Text types, and the raw text of types we only pass through
    /// (enums, json, bytea). `bpchar` keeps its padding.
    Text(String),
    Uuid(u128),
    /// Days since 1970-01-01 (`i64::MIN`/`MAX`: -infinity/infinity).
    Date(i64),
    /// Microseconds since midnight.
    Time(i64),
    /// Microseconds since 2000-01-01 00:00 (UTC for `Timestamptz`), as in
    /// Postgres: its whole range fits an `i64` only from that epoch.
    Timestamp(i64),
    Timestamptz(i64),
    Interval(Interval),
    Array(Box<ArrayValue>),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }
}

pub(crate) fn int_range(scalar: &Scalar) -> (i64, i64) {
    match scalar {
        Scalar::Int2 => (i64::from(i16::MIN), i64::from(i16::MAX)),
        Scalar::Int4 => (i64::from(i32::MIN), i64::from(i32::MAX)),
        _ => (i64::MIN, i64::MAX),
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    let t = s.trim().to_ascii_lowercase();
    if t.is_empty() {
        return None;
    }
    let prefix_of = |word: &str, min: usize| t.len() >= min && word.starts_with(t.as_str());
    if prefix_of("true", 1) || prefix_of("yes", 1) || prefix_of("on", 2) || t == "1" {
        Some(true)
    } else if prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || t == "0" {
        Some(false)
    } else {
        None
    }
}

fn parse_int(s: &str, scalar: &Scalar) -> Option<i64> {
    let t = s.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: i64 = t.parse().ok()?;
    let (min, max) = int_range(scalar);
    (min..=max).contains(&value).then_some(value)
}

/// `uuid_in`: 32 hex digits, optionally in braces, hyphens only between
/// groups of four digits.
fn parse_uuid(s: &str) -> Option<u128> {
    let t = s.trim();
    let t = match t.strip_prefix('{') {
        Some(inner) => inner.strip_suffix('}')?,
        None => t,
    };
    let mut value: u128 = 0;
    let mut count = 0usize;
    let mut last_was_hyphen = true;
    for c in t.chars() {
        if c == '-' {
            if last_was_hyphen || !count.is_multiple_of(4) {
                return None;
            }
            last_was_hyphen = true;
            continue;
        }
        let digit = c.to_digit(16)?;
        count += 1;
        if count > 32 {
            return None;
        }
        value = (value << 4) | u128::from(digit);
        last_was_hyphen = false;
    }
    (count == 32 && !last_was_hyphen).then_some(value)
}

fn format_uuid(value: u128) -> String {
    let hex = format!("{value:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The type's input function on one (non-array) value.
pub(crate) fn parse_scalar(text: &str, scalar: &Scalar) -> Option<Value> {
    Some(match scalar {
        Scalar::Bool => Value::Bool(parse_bool(text)?),
        Scalar::Int2 | Scalar::Int4 | Scalar::Int8 => Value::Int(parse_int(text, scalar)?),
        Scalar::Float4 => Value::Float(numeric::parse_float(text, true)?),
        Scalar::Float8 => Value::Float(numeric::parse_float(text, false)?),
        Scalar::Numeric => Value::Numeric(Numeric::parse(text)?),
        Scalar::Uuid => Value::Uuid(parse_uuid(text)?),
        Scalar::Date => Value::Date(datetime::parse_date(text)?),
        Scalar::Time => Value::Time(datetime::parse_time(text)?),
        Scalar::Timestamp => Value::Timestamp(datetime::parse_timestamp(text)?),
        Scalar::Timestamptz => Value::Timestamptz(datetime::parse_timestamptz(text)?),
        Scalar::Interval => Value::Interval(datetime::parse_interval(text)?),
        Scalar::Name => Value::Text(truncate_name(text)),
        Scalar::Text
        | Scalar::Varchar
        | Scalar::Bpchar
        | Scalar::Json
        | Scalar::Jsonb
        | Scalar::Bytea
        | Scalar::Enum(_)
        | Scalar::Other(_)
        | Scalar::Unknown => Value::Text(text.to_string()),
    })
}

/// `name` holds at most 63 bytes.
fn truncate_name(text: &str) -> String {
    let mut end = text.len().min(63);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// The type's input function: `text` as Postgres prints a value of `ty`
/// (or as a user writes a literal of it). None if Postgres would reject it.
pub(crate) fn parse_value(text: &str, ty: &Type) -> Option<Value> {
    if !ty.array {
        return parse_scalar(text, &ty.scalar);
    }
    let raw = array::parse_array_text(text)?;
    let mut elements = Vec::with_capacity(raw.elements.len());
    for element in raw.elements {
        elements.push(match element {
            Some(text) => parse_scalar(&text, &ty.scalar)?,
            None => Value::Null,
        });
    }
    Some(Value::Array(Box::new(ArrayValue {
        dims: raw.dims,
        elements,
    })))
}

/// The type's output function; None for NULL.
pub(crate) fn format_value(value: &Value, ty: &Type) -> Option<String> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => if *b { "t" } else { "f" }.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => numeric::format_float(*f, ty.scalar == Scalar::Float4),
        Value::Numeric(n) => n.format(),
        Value::Text(s) => s.clone(),
        Value::Uuid(u) => format_uuid(*u),
        Value::Date(d) => datetime::format_date(*d),
        Value::Time(t) => datetime::format_time(*t),
        Value::Timestamp(t) => datetime::format_timestamp(*t, false),
        Value::Timestamptz(t) => datetime::format_timestamp(*t, true),
        Value::Interval(iv) => datetime::format_interval(iv),
        Value::Array(a) => {
            let element_type = ty.element();
            let texts: Vec<Option<String>> = a
                .elements
                .iter()
                .map(|e| format_value(e, &element_type))
                .collect();
            array::format_array_text(&a.dims, &texts)
        }
    })
}

fn trim_bpchar(s: &str) -> &str {
    s.trim_end_matches(' ')
}

/// Ordering under the type's btree operator class; None when the values
/// are not of one comparable kind (a bug upstream, reported as an error).
/// Text compares bytewise: rendered SQL adds `COLLATE "C"` to agree.
pub(crate) fn compare_values(a: &Value, b: &Value, scalar: &Scalar) -> Option<Ordering> {
    Some(match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Float(x), Value::Float(y)) => numeric::compare_floats(*x, *y),
        (Value::Numeric(x), Value::Numeric(y)) => x.compare(y),
        (Value::Text(x), Value::Text(y)) => {
            if *scalar == Scalar::Bpchar {
                trim_bpchar(x).cmp(trim_bpchar(y))
            } else {
                x.as_bytes().cmp(y.as_bytes())
            }
        }
        (Value::Uuid(x), Value::Uuid(y)) => x.cmp(y),
        (Value::Date(x), Value::Date(y))
        | (Value::Time(x), Value::Time(y))
        | (Value::Timestamp(x), Value::Timestamp(y))
        | (Value::Timestamptz(x), Value::Timestamptz(y)) => x.cmp(y),
        (Value::Interval(x), Value::Interval(y)) => x.compare(y),
        // Cross-type date/timestamp comparisons (`date_cmp_timestamp`...).
        (
            Value::Date(_) | Value::Timestamp(_) | Value::Timestamptz(_),
            Value::Date(_) | Value::Timestamp(_) | Value::Timestamptz(_),
        ) => datetime_key(a)?.cmp(&datetime_key(b)?),
        (Value::Array(x), Value::Array(y)) => {
            array::compare_arrays(x, y, &|p, q| compare_values(p, q, scalar))?
        }
        _ => return None,
    })
}

/// A date or timestamp on one scale without overflow: a date past the
/// timestamp range sorts after every finite timestamp and before infinity,
/// as Postgres' cross-type comparisons have it.
fn datetime_key(value: &Value) -> Option<i128> {
    Some(match value {
        Value::Date(d) => match *d {
            datetime::NEG_INFINITY => i128::MIN,
            datetime::POS_INFINITY => i128::MAX,
            day => datetime::day_micros_wide(day),
        },
        Value::Timestamp(t) | Value::Timestamptz(t) => match *t {
            datetime::NEG_INFINITY => i128::MIN,
            datetime::POS_INFINITY => i128::MAX,
            micros => i128::from(micros),
        },
        _ => return None,
    })
}

/// Equality as Postgres' `=` for the type (same as ordering equality for
/// every type we evaluate).
pub(crate) fn values_equal(a: &Value, b: &Value, scalar: &Scalar) -> Option<bool> {
    compare_values(a, b, scalar).map(|o| o == Ordering::Equal)
}

/// Casts a value between types; None where Postgres raises an error.
pub(crate) fn cast_value(value: Value, from: &Type, to: &Type) -> Option<Value> {
    if value.is_null() || from == to {
        return Some(value);
    }
    if to.scalar.is_string() && !to.array {
        let text = if from.array {
            format_value(&value, from)?
        } else {
            match (&value, &from.scalar) {
                // `bool::text` is `booltext`, not the output function.
                (Value::Bool(b), _) => if *b { "true" } else { "false" }.to_string(),
                (Value::Text(s), Scalar::Bpchar) => trim_bpchar(s).to_string(),
                _ => format_value(&value, from)?,
            }
        };
        return Some(Value::Text(if to.scalar == Scalar::Name {
            truncate_name(&text)
        } else {
            text
        }));
    }
    if from.scalar.is_string() && !from.array {
        let Value::Text(text) = &value else {
            return None;
        };
        return parse_value(text, to);
    }
    if from.array && to.array {
        let Value::Array(a) = value else { return None };
        let (from_element, to_element) = (from.element(), to.element());
        let mut elements = Vec::with_capacity(a.elements.len());
        for element in a.elements {
            elements.push(cast_value(element, &from_element, &to_element)?);
        }
        return Some(Value::Array(Box::new(ArrayValue {
            dims: a.dims,
            elements,
        })));
    }
    if from.array || to.array {
        return None;
    }
    cast_scalar(value, &from.scalar, &to.scalar)
}

fn cast_scalar(value: Value, from: &Scalar, to: &Scalar) -> Option<Value> {
    use Scalar::*;
    let float4 = *to == Float4;
    Some(match (value, to) {
        (Value::Int(i), Int2 | Int4 | Int8) => {
            let (min, max) = int_range(to);
            Value::Int((min..=max).contains(&i).then_some(i)?)
        }
        (Value::Int(i), Float4) => Value::Float(f64::from(i as f32)),
        (Value::Int(i), Float8) => Value::Float(i as f64),
        (Value::Int(i), Numeric) => Value::Numeric(numeric::Numeric::from_i64(i)),
        (Value::Int(i), Bool) if *from == Int4 => Value::Bool(i != 0),
        (Value::Float(f), Int2 | Int4 | Int8) => {
            if !f.is_finite() {
                return None;
            }
            let rounded = f.round_ties_even();
            let (min, max) = int_range(to);
            if rounded < min as f64 || rounded >= -(min as f64) || rounded > max as f64 {
                return None;
            }
            Value::Int(rounded as i64)
        }
        (Value::Float(f), Float4) => {
            let narrowed = f64::from(f as f32);
            if (narrowed.is_infinite() && f.is_finite()) || (narrowed == 0.0 && f != 0.0) {
                return None;
            }
            Value::Float(narrowed)
        }
        (Value::Float(f), Float8) => Value::Float(f),
        (Value::Float(f), Numeric) => {
            Value::Numeric(numeric::Numeric::from_f64(f, *from == Float4)?)
        }
        (Value::Numeric(n), Int2 | Int4 | Int8) => {
            let (min, max) = int_range(to);
            Value::Int(n.to_i64_in(min, max)?)
        }
        (Value::Numeric(n), Float4 | Float8) => Value::Float(n.to_float(float4)?),
        (Value::Bool(b), Int4) => Value::Int(i64::from(b)),
        (Value::Date(d), Timestamp) => Value::Timestamp(datetime::date_to_timestamp(d)?),
        (Value::Date(d), Timestamptz) => Value::Timestamptz(datetime::date_to_timestamp(d)?),
        (Value::Timestamp(t), Timestamptz) => Value::Timestamptz(t),
        (Value::Timestamptz(t), Timestamp) => Value::Timestamp(t),
        (Value::Timestamp(t) | Value::Timestamptz(t), Date) => {
            Value::Date(datetime::timestamp_to_date(t))
        }
        (Value::Timestamp(t) | Value::Timestamptz(t), Time) => {
            // `timestamp_time`: an infinite timestamp has no time: NULL.
            match datetime::timestamp_to_time(t) {
                Some(time) => Value::Time(time),
                None => Value::Null,
            }
        }
        (Value::Time(t), Interval) => Value::Interval(datetime::Interval {
            months: 0,
            days: 0,
            micros: t,
        }),
        (Value::Interval(iv), Time) => Value::Time(iv.micros.rem_euclid(datetime::USECS_PER_DAY)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: Scalar) -> Type {
        Type::scalar(s)
    }

    #[test]
    fn where_clause_value_inputs() {
        assert!(matches!(
            parse_scalar(" 007 ", &Scalar::Int4),
            Some(Value::Int(7))
        ));
        assert!(parse_scalar("2147483648", &Scalar::Int4).is_none());
        assert!(parse_scalar("1.5", &Scalar::Int4).is_none());
        assert!(matches!(
            parse_scalar("yes", &Scalar::Bool),
            Some(Value::Bool(true))
        ));
        assert!(matches!(
            parse_scalar("of", &Scalar::Bool),
            Some(Value::Bool(false))
        ));
        assert!(parse_scalar("o", &Scalar::Bool).is_none());
        let uuid = parse_scalar("{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}", &Scalar::Uuid).unwrap();
        assert_eq!(
            format_value(&uuid, &t(Scalar::Uuid)).unwrap(),
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
        );
        assert!(parse_scalar("a0eebc999c0b4ef8bb6d6bb9bd380a11", &Scalar::Uuid).is_some());
        assert!(parse_scalar("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1", &Scalar::Uuid).is_none());
        let array = parse_value("{1,NULL,3}", &Type::array_of(Scalar::Int8)).unwrap();
        assert_eq!(
            format_value(&array, &Type::array_of(Scalar::Int8)).unwrap(),
            "{1,NULL,3}"
        );
        assert!(parse_value("{1,x}", &Type::array_of(Scalar::Int8)).is_none());
    }

    #[test]
    fn where_clause_value_compare_and_cast() {
        let bp = |s: &str| Value::Text(s.into());
        assert_eq!(
            compare_values(&bp("a  "), &bp("a"), &Scalar::Bpchar),
            Some(Ordering::Equal)
        );
        assert_eq!(
            compare_values(&bp("a  "), &bp("a"), &Scalar::Text),
            Some(Ordering::Greater)
        );
        assert_eq!(
            compare_values(&Value::Int(1), &bp("a"), &Scalar::Int4),
            None
        );
        let cast = |v: Value, from: Scalar, to: Scalar| cast_value(v, &t(from), &t(to));
        assert!(
            matches!(cast(Value::Bool(true), Scalar::Bool, Scalar::Text), Some(Value::Text(s)) if s == "true")
        );
        assert!(matches!(
            cast(Value::Float(2.5), Scalar::Float8, Scalar::Int4),
            Some(Value::Int(2))
        ));
        assert!(matches!(
            cast(Value::Float(3.5), Scalar::Float8, Scalar::Int4),
            Some(Value::Int(4))
        ));
        assert!(cast(Value::Int(70000), Scalar::Int4, Scalar::Int2).is_none());
        assert!(cast(Value::Float(f64::NAN), Scalar::Float8, Scalar::Int8).is_none());
        assert!(cast(Value::Float(9.3e18), Scalar::Float8, Scalar::Int8).is_none());
        assert!(
            matches!(cast(bp("a  "), Scalar::Bpchar, Scalar::Text), Some(Value::Text(s)) if s == "a")
        );
        assert!(matches!(
            cast(bp(" 12 "), Scalar::Text, Scalar::Int4),
            Some(Value::Int(12))
        ));
        assert!(cast(bp("x"), Scalar::Text, Scalar::Int4).is_none());
    }
}
