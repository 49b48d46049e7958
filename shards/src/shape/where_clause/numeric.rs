//! `float4`/`float8` and `numeric` values: Postgres-compatible text input
//! and output (the output must match the replication stream byte for byte,
//! since the index compares text), ordering and arithmetic.

use std::cmp::Ordering;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};

/// Parses `float8in`/`float4in` input. Rust's parser agrees with `strtod`
/// on every finite input; out-of-range values are errors as in Postgres
/// rather than silently becoming infinities or zero.
pub(crate) fn parse_float(s: &str, float4: bool) -> Option<f64> {
    let t = s.trim();
    let unsigned = t.trim_start_matches(['+', '-']);
    let lower = unsigned.to_ascii_lowercase();
    if lower == "nan" {
        return (unsigned.len() == t.len()).then_some(f64::NAN);
    }
    if lower == "inf" || lower == "infinity" {
        return Some(if t.starts_with('-') {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    if t.len() - unsigned.len() > 1
        || !unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.')
    {
        return None;
    }
    let value = if float4 {
        f64::from(t.parse::<f32>().ok()?)
    } else {
        t.parse::<f64>().ok()?
    };
    if value.is_infinite() {
        return None;
    }
    if value == 0.0 {
        let mantissa = unsigned.split(['e', 'E']).next().unwrap_or("");
        if mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b)) {
            return None;
        }
    }
    Some(value)
}

/// `float8out`/`float4out` with `extra_float_digits > 0`: the shortest
/// round-tripping digits, fixed notation for decimal exponents in
/// [-4, 15) (float4: [-4, 6)), else `d.ddde+XX`.
pub(crate) fn format_float(value: f64, float4: bool) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if value == 0.0 {
        return if value.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let scientific = if float4 {
        format!("{:e}", value as f32)
    } else {
        format!("{value:e}")
    };
    let (negative, body) = match scientific.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, scientific.as_str()),
    };
    let (mantissa, exponent) = body.split_once('e').unwrap_or((body, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let fixed_limit = if float4 { 6 } else { 15 };
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    if (-4..fixed_limit).contains(&exponent) {
        if exponent >= 0 {
            let integer_len = exponent as usize + 1;
            if digits.len() <= integer_len {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', integer_len - digits.len()));
            } else {
                out.push_str(&digits[..integer_len]);
                out.push('.');
                out.push_str(&digits[integer_len..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exponent - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exponent < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exponent.unsigned_abs()));
    }
    out
}

/// `float8_cmp_internal`: NaN equals NaN and sorts above everything.
pub(crate) fn compare_floats(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// Postgres raises on overflow and underflow of float arithmetic instead of
/// producing infinities or zero from finite inputs.
pub(crate) fn check_float(
    result: f64,
    inputs_infinite: bool,
    may_be_zero: bool,
    float4: bool,
) -> Option<f64> {
    let result = if float4 {
        f64::from(result as f32)
    } else {
        result
    };
    if result.is_infinite() && !inputs_infinite {
        return None;
    }
    if result == 0.0 && !may_be_zero {
        return None;
    }
    Some(result)
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Numeric {
    NaN,
    PosInf,
    NegInf,
    Finite(Decimal),
}

impl Numeric {
    pub fn parse(s: &str) -> Option<Numeric> {
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        match lower.as_str() {
            "nan" => return Some(Numeric::NaN),
            "infinity" | "+infinity" | "inf" | "+inf" => return Some(Numeric::PosInf),
            "-infinity" | "-inf" => return Some(Numeric::NegInf),
            _ => {}
        }
        let body = t.trim_start_matches(['+', '-']);
        if t.len() - body.len() > 1
            || !body.starts_with(|c: char| c.is_ascii_digit() || c == '.')
            || !body
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        {
            return None;
        }
        let decimal = if lower.contains('e') {
            Decimal::from_scientific(t).ok()?
        } else {
            Decimal::from_str(t).ok()?
        };
        Some(Numeric::Finite(decimal))
    }

    pub fn format(&self) -> String {
        match self {
            Numeric::NaN => "NaN".into(),
            Numeric::PosInf => "Infinity".into(),
            Numeric::NegInf => "-Infinity".into(),
            Numeric::Finite(d) => {
                let mut d = *d;
                if d.is_zero() {
                    // Postgres numerics have no negative zero.
                    d.set_sign_positive(true);
                }
                d.to_string()
            }
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Numeric::NegInf => 0,
            Numeric::Finite(_) => 1,
            Numeric::PosInf => 2,
            Numeric::NaN => 3,
        }
    }

    /// `cmp_numerics`: -Infinity < finite < Infinity < NaN, NaN = NaN.
    pub fn compare(&self, other: &Numeric) -> Ordering {
        match (self, other) {
            (Numeric::Finite(a), Numeric::Finite(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }

    pub fn to_f64(self) -> f64 {
        match self {
            Numeric::NaN => f64::NAN,
            Numeric::PosInf => f64::INFINITY,
            Numeric::NegInf => f64::NEG_INFINITY,
            // Through text, so the result is correctly rounded like strtod.
            Numeric::Finite(d) => d.to_string().parse().unwrap_or(f64::NAN),
        }
    }

    /// `float8_numeric`: the float printed with 15 (float4: 6) significant
    /// digits, then read back.
    pub fn from_f64(value: f64, float4: bool) -> Option<Numeric> {
        if value.is_nan() {
            return Some(Numeric::NaN);
        }
        if value.is_infinite() {
            return Some(if value > 0.0 {
                Numeric::PosInf
            } else {
                Numeric::NegInf
            });
        }
        let text = if float4 {
            format!("{value:.5e}")
        } else {
            format!("{value:.14e}")
        };
        let decimal = Decimal::from_scientific(&text).ok()?.normalize();
        Some(Numeric::Finite(decimal))
    }

    fn finite_op(
        a: Numeric,
        b: Numeric,
        float: fn(f64, f64) -> f64,
        decimal: fn(Decimal, Decimal) -> Option<Decimal>,
    ) -> Option<Numeric> {
        match (a, b) {
            (Numeric::Finite(x), Numeric::Finite(y)) => decimal(x, y).map(Numeric::Finite),
            _ => Some(Numeric::from_special(float(a.to_f64(), b.to_f64()))),
        }
    }

    fn from_special(value: f64) -> Numeric {
        if value.is_nan() {
            Numeric::NaN
        } else if value == f64::INFINITY {
            Numeric::PosInf
        } else if value == f64::NEG_INFINITY {
            Numeric::NegInf
        } else {
            Numeric::Finite(Decimal::ZERO)
        }
    }

    pub fn add(a: Numeric, b: Numeric) -> Option<Numeric> {
        Numeric::finite_op(a, b, |x, y| x + y, |x, y| x.checked_add(y))
    }

    pub fn sub(a: Numeric, b: Numeric) -> Option<Numeric> {
        Numeric::finite_op(a, b, |x, y| x - y, |x, y| x.checked_sub(y))
    }

    pub fn mul(a: Numeric, b: Numeric) -> Option<Numeric> {
        Numeric::finite_op(a, b, |x, y| x * y, |x, y| x.checked_mul(y))
    }

    pub fn div(a: Numeric, b: Numeric) -> Option<Numeric> {
        if let Numeric::Finite(y) = b {
            if y.is_zero() && a != Numeric::NaN {
                return None;
            }
        }
        Numeric::finite_op(
            a,
            b,
            |x, y| x / y,
            |x, y| {
                let scale = division_scale(&x, &y);
                let mut q = x
                    .checked_div(y)?
                    .round_dp_with_strategy(scale, RoundingStrategy::MidpointAwayFromZero);
                q.rescale(scale);
                Some(q)
            },
        )
    }

    pub fn rem(a: Numeric, b: Numeric) -> Option<Numeric> {
        if let Numeric::Finite(y) = b {
            if y.is_zero() && a != Numeric::NaN {
                return None;
            }
        }
        match (a, b) {
            (Numeric::Finite(x), Numeric::Finite(y)) => x.checked_rem(y).map(Numeric::Finite),
            (Numeric::Finite(_), Numeric::PosInf | Numeric::NegInf) => Some(a),
            _ => Some(Numeric::NaN),
        }
    }

    pub fn neg(a: Numeric) -> Numeric {
        match a {
            Numeric::NaN => Numeric::NaN,
            Numeric::PosInf => Numeric::NegInf,
            Numeric::NegInf => Numeric::PosInf,
            Numeric::Finite(d) => Numeric::Finite(-d),
        }
    }

    pub fn abs(a: Numeric) -> Numeric {
        match a {
            Numeric::NegInf => Numeric::PosInf,
            Numeric::Finite(d) => Numeric::Finite(d.abs()),
            other => other,
        }
    }

    /// Exact for integral exponents up to 1000 in magnitude (by squaring),
    /// otherwise through `f64`, which is the one approximation we accept.
    pub fn pow(a: Numeric, b: Numeric) -> Option<Numeric> {
        let (Numeric::Finite(base), Numeric::Finite(exponent)) = (a, b) else {
            return Some(Numeric::from_special(a.to_f64().powf(b.to_f64())));
        };
        if base.is_zero() && exponent.is_sign_negative() && !exponent.is_zero() {
            return None;
        }
        if exponent.is_integer() && exponent.abs() <= Decimal::from(1000) {
            let mut n = exponent.abs().normalize().to_string().parse::<u32>().ok()?;
            let mut result = Decimal::ONE;
            let mut square = base;
            while n > 0 {
                if n & 1 == 1 {
                    result = result.checked_mul(square)?;
                }
                n >>= 1;
                if n > 0 {
                    square = square.checked_mul(square)?;
                }
            }
            if exponent.is_sign_negative() {
                result = Decimal::ONE.checked_div(result)?;
            }
            return Some(Numeric::Finite(result.normalize()));
        }
        if base.is_sign_negative() {
            return None;
        }
        let value = Numeric::Finite(base)
            .to_f64()
            .powf(Numeric::Finite(exponent).to_f64());
        if !value.is_finite() {
            return None;
        }
        Numeric::from_f64(value, false)
    }

    /// Rounds half away from zero into an integer range (`numeric_int4` etc.).
    pub fn to_i64_in(self, min: i64, max: i64) -> Option<i64> {
        let Numeric::Finite(d) = self else {
            return None;
        };
        let rounded = d.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
        let value: i64 = rounded.normalize().to_string().parse().ok()?;
        (min..=max).contains(&value).then_some(value)
    }
}

/// `select_div_scale`: at least 16 significant digits, and no fewer
/// decimals than either input shows; capped at what `Decimal` can hold.
fn division_scale(dividend: &Decimal, divisor: &Decimal) -> u32 {
    let (w1, f1) = base10000_weight(dividend);
    let (w2, f2) = base10000_weight(divisor);
    let mut qweight = w1 - w2;
    if f1 <= f2 {
        qweight -= 1;
    }
    let scale = (16 - qweight * 4)
        .max(i64::from(dividend.scale()))
        .max(i64::from(divisor.scale()))
        .max(0);
    scale.min(28) as u32
}

/// Weight and first digit of a value written in base 10000, as Postgres'
/// `NumericVar` stores it.
fn base10000_weight(d: &Decimal) -> (i64, i64) {
    if d.is_zero() {
        return (0, 0);
    }
    let text = d.abs().normalize().to_string();
    let (integer, fraction) = text.split_once('.').unwrap_or((text.as_str(), ""));
    let all: String = format!("{integer}{fraction}");
    let leading_zeros = all.len() - all.trim_start_matches('0').len();
    let significant = all.trim_start_matches('0');
    let exponent10 = integer.len() as i64 - 1 - leading_zeros as i64;
    let weight = exponent10.div_euclid(4);
    let group_len = (exponent10 - weight * 4 + 1) as usize;
    let mut group: String = significant.chars().take(group_len).collect();
    while group.len() < group_len {
        group.push('0');
    }
    (weight, group.parse().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_clause_numeric_float_output_matches_postgres() {
        assert_eq!(format_float(1.5, false), "1.5");
        assert_eq!(format_float(0.1, false), "0.1");
        assert_eq!(format_float(1e20, false), "1e+20");
        assert_eq!(format_float(1e15, false), "1e+15");
        assert_eq!(format_float(1e14, false), "100000000000000");
        assert_eq!(format_float(0.0001, false), "0.0001");
        assert_eq!(format_float(0.00001, false), "1e-05");
        assert_eq!(format_float(-1.25e-300, false), "-1.25e-300");
        assert_eq!(format_float(-0.0, false), "-0");
        assert_eq!(format_float(f64::NAN, false), "NaN");
        assert_eq!(format_float(f64::from(0.1f32), true), "0.1");
        assert_eq!(format_float(1e6, true), "1e+06");
        assert_eq!(format_float(123456.0, true), "123456");
    }

    #[test]
    fn where_clause_numeric_float_input() {
        assert_eq!(parse_float(" 1.5 ", false), Some(1.5));
        assert_eq!(parse_float("-Infinity", false), Some(f64::NEG_INFINITY));
        assert!(parse_float("NaN", false).is_some_and(f64::is_nan));
        assert_eq!(parse_float("1e400", false), None);
        assert_eq!(parse_float("1e-400", false), None);
        assert_eq!(parse_float("abc", false), None);
        assert_eq!(parse_float("1e40", true), None);
        assert_eq!(parse_float("0.0", false), Some(0.0));
    }

    #[test]
    fn where_clause_numeric_decimal_semantics() {
        let n = |s: &str| Numeric::parse(s).unwrap();
        assert_eq!(n("1.50").format(), "1.50");
        assert_eq!(n("1.50").compare(&n("1.5")), Ordering::Equal);
        assert_eq!(n("NaN").compare(&n("Infinity")), Ordering::Greater);
        assert_eq!(n("-Infinity").compare(&n("-1e20")), Ordering::Less);
        // Beyond 28 significant digits `Decimal` cannot hold the value.
        assert_eq!(Numeric::parse("1e30"), None);
        assert_eq!(n("1e3").format(), "1000");
        assert_eq!(
            Numeric::div(n("1"), n("3")).unwrap().format(),
            "0.33333333333333333333"
        );
        assert_eq!(
            Numeric::div(n("10"), n("3")).unwrap().format(),
            "3.3333333333333333"
        );
        assert_eq!(Numeric::div(n("1"), n("0")), None);
        assert_eq!(Numeric::pow(n("2"), n("10")).unwrap().format(), "1024");
        assert_eq!(Numeric::pow(n("2.0"), n("3.0")).unwrap().format(), "8");
        assert_eq!(Numeric::parse("1e9999999999"), None);
        assert_eq!(n("2.5").to_i64_in(i64::MIN, i64::MAX), Some(3));
        assert_eq!(n("-2.5").to_i64_in(i64::MIN, i64::MAX), Some(-3));
        assert_eq!(Numeric::from_f64(0.1, false).unwrap().format(), "0.1");
        assert_eq!(Numeric::parse("abc"), None);
        assert_eq!(Numeric::parse("1_0"), None);
    }
}
