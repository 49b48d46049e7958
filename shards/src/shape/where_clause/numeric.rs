//! `float4`/`float8` and `numeric` values: Postgres-compatible text input
//! and output (the output must match the replication stream byte for byte,
//! since the index compares text), ordering and arithmetic.

use std::cmp::Ordering;

use num_bigint::BigInt;
use num_integer::Integer;
use num_traits::{One, Signed, ToPrimitive, Zero};

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

/// Postgres' `numeric` limits: 131072 digits before the point (a base-10000
/// weight up to `i16::MAX`), 16383 after (`NUMERIC_DSCALE_MAX`).
const MAX_INTEGER_DIGITS: u64 = 131_072;
pub(crate) const MAX_SCALE: u32 = 16_383;
/// `NUMERIC_MAX_DISPLAY_SCALE`, the cap on computed scales.
const MAX_DISPLAY_SCALE: i64 = 1000;
/// `NUMERIC_MIN_SIG_DIGITS`.
const MIN_SIG_DIGITS: i64 = 16;

/// A finite `numeric`: `digits × 10^-scale`, where `scale` is Postgres'
/// display scale (`dscale`), so `1.50` keeps its two decimals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Dec {
    digits: BigInt,
    scale: u32,
}

fn pow10(n: u64) -> BigInt {
    BigInt::from(10u32).pow(n as u32)
}

/// `n / d` rounded half away from zero (Postgres' `round_var`).
fn div_round(n: &BigInt, d: &BigInt) -> BigInt {
    let (q, r) = n.div_rem(d);
    if (r.abs() << 1) >= d.abs() {
        if n.is_negative() != d.is_negative() {
            q - 1
        } else {
            q + 1
        }
    } else {
        q
    }
}

impl Dec {
    fn new(digits: BigInt, scale: u32) -> Dec {
        Dec { digits, scale }
    }

    fn zero(scale: u32) -> Dec {
        Dec::new(BigInt::zero(), scale)
    }

    pub fn is_zero(&self) -> bool {
        self.digits.is_zero()
    }

    fn is_negative(&self) -> bool {
        self.digits.is_negative()
    }

    /// The digits at scale `scale` (≥ the current one).
    fn digits_at(&self, scale: u32) -> BigInt {
        if scale == self.scale {
            self.digits.clone()
        } else {
            &self.digits * pow10(u64::from(scale - self.scale))
        }
    }

    /// `round_var`: to `scale` decimals, half away from zero.
    fn round(&self, scale: u32) -> Dec {
        if scale >= self.scale {
            return Dec::new(self.digits_at(scale), scale);
        }
        let divisor = pow10(u64::from(self.scale - scale));
        Dec::new(div_round(&self.digits, &divisor), scale)
    }

    /// `trunc_var`: to `scale` decimals, toward zero.
    fn trunc(&self, scale: u32) -> Dec {
        if scale >= self.scale {
            return Dec::new(self.digits_at(scale), scale);
        }
        let divisor = pow10(u64::from(self.scale - scale));
        Dec::new(&self.digits / divisor, scale)
    }

    /// Decimal digits of `|digits|` (0 for zero).
    fn digit_count(&self) -> u64 {
        if self.digits.is_zero() {
            return 0;
        }
        // bits × log10(2) is within one of the count; settle it exactly.
        let estimate = (self.digits.bits() as f64 * std::f64::consts::LOG10_2) as u64;
        let magnitude = self.digits.magnitude();
        let mut count = estimate.max(1);
        while count > 1 && *magnitude < pow10(count - 1).magnitude().clone() {
            count -= 1;
        }
        while *magnitude >= pow10(count).magnitude().clone() {
            count += 1;
        }
        count
    }

    /// Decimal exponent of the leading digit (`value ≈ d × 10^e`); None for zero.
    fn leading_exponent(&self) -> Option<i64> {
        (!self.is_zero()).then(|| self.digit_count() as i64 - 1 - i64::from(self.scale))
    }

    /// Postgres' base-10000 weight of the value (0 for zero).
    fn weight(&self) -> i64 {
        self.leading_exponent().map_or(0, |e| e.div_euclid(4))
    }

    /// The first base-10000 digits of `|value|` from its weight down
    /// (`count` of them, zero-padded past the last nonzero digit).
    fn base10000_digits(&self, count: usize) -> Vec<u32> {
        let Some(e) = self.leading_exponent() else {
            return vec![0; count];
        };
        let weight = e.div_euclid(4);
        // |value| / 10000^(weight - count + 1), truncated.
        let shift = 4 * (weight - count as i64 + 1) + i64::from(self.scale);
        let mut scaled = self.digits.abs();
        if shift >= 0 {
            scaled /= pow10(shift as u64);
        } else {
            scaled *= pow10((-shift) as u64);
        }
        let ten_thousand = BigInt::from(10_000u32);
        let mut out = vec![0u32; count];
        for slot in out.iter_mut().rev() {
            let (q, r) = scaled.div_rem(&ten_thousand);
            *slot = r.to_u32().unwrap_or(0);
            scaled = q;
        }
        out
    }

    /// Fits Postgres' format (`make_result`): else "value overflows".
    fn checked(self) -> Option<Dec> {
        if self.scale > MAX_SCALE {
            return None;
        }
        match self.leading_exponent() {
            Some(e) if e >= MAX_INTEGER_DIGITS as i64 => None,
            _ => Some(self),
        }
    }

    fn to_text(&self) -> String {
        let magnitude = self.digits.magnitude().to_string();
        let scale = self.scale as usize;
        let mut out = String::with_capacity(magnitude.len() + 3);
        if self.is_negative() {
            out.push('-');
        }
        if scale == 0 {
            out.push_str(&magnitude);
            return out;
        }
        if magnitude.len() <= scale {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', scale - magnitude.len()));
            out.push_str(&magnitude);
        } else {
            let (integer, fraction) = magnitude.split_at(magnitude.len() - scale);
            out.push_str(integer);
            out.push('.');
            out.push_str(fraction);
        }
        out
    }

    /// `set_var_from_str`: `[+-]digits[.digits][e[+-]digits]`, with the
    /// display scale the written decimals minus the exponent.
    fn parse(t: &str) -> Option<Dec> {
        let bytes = t.as_bytes();
        let mut i = 0;
        let negative = match bytes.first() {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let mut digits = String::new();
        let mut fraction_digits: i64 = 0;
        let mut seen_point = false;
        let mut any_digit = false;
        while let Some(&b) = bytes.get(i) {
            match b {
                b'0'..=b'9' => {
                    digits.push(b as char);
                    any_digit = true;
                    if seen_point {
                        fraction_digits += 1;
                    }
                }
                b'.' if !seen_point => seen_point = true,
                _ => break,
            }
            i += 1;
        }
        if !any_digit {
            return None;
        }
        let mut exponent: i64 = 0;
        if matches!(bytes.get(i), Some(b'e' | b'E')) {
            i += 1;
            let exponent_negative = match bytes.get(i) {
                Some(b'-') => {
                    i += 1;
                    true
                }
                Some(b'+') => {
                    i += 1;
                    false
                }
                _ => false,
            };
            let start = i;
            while let Some(b'0'..=b'9') = bytes.get(i) {
                exponent = exponent
                    .checked_mul(10)?
                    .checked_add(i64::from(bytes[i] - b'0'))?;
                // Far past anything representable (Postgres: "overflows").
                if exponent > 10_000_000 {
                    return None;
                }
                i += 1;
            }
            if i == start {
                return None;
            }
            if exponent_negative {
                exponent = -exponent;
            }
        }
        if i != bytes.len() {
            return None;
        }
        let scale = (fraction_digits - exponent).max(0);
        if scale > i64::from(MAX_SCALE) {
            return None;
        }
        // value = digits × 10^(exponent - fraction_digits), shown at `scale`.
        let mut value: BigInt = digits.parse().ok()?;
        let shift = exponent - fraction_digits + scale;
        if shift > 0 {
            if !value.is_zero()
                && shift + digits.len() as i64 > MAX_INTEGER_DIGITS as i64 + scale + 1
            {
                return None;
            }
            value *= pow10(shift as u64);
        }
        if negative {
            value = -value;
        }
        Dec::new(value, scale as u32).checked()
    }

    fn compare(&self, other: &Dec) -> Ordering {
        if self.scale == other.scale {
            return self.digits.cmp(&other.digits);
        }
        let scale = self.scale.max(other.scale);
        self.digits_at(scale).cmp(&other.digits_at(scale))
    }

    fn add(&self, other: &Dec) -> Option<Dec> {
        let scale = self.scale.max(other.scale);
        Dec::new(self.digits_at(scale) + other.digits_at(scale), scale).checked()
    }

    fn neg(&self) -> Dec {
        Dec::new(-self.digits.clone(), self.scale)
    }

    /// `mul_var` at `scale` decimals (the exact product, rounded).
    fn mul_round(&self, other: &Dec, scale: u32) -> Dec {
        Dec::new(&self.digits * &other.digits, self.scale + other.scale).round(scale)
    }

    /// `div_var` with rounding: the quotient to `scale` decimals, half away
    /// from zero (Postgres divides exactly before rounding).
    fn div_round(&self, other: &Dec, scale: u32) -> Dec {
        // self / other × 10^scale = a × 10^(scale + sb - sa) / b
        let exponent = i64::from(scale) + i64::from(other.scale) - i64::from(self.scale);
        let (mut n, mut d) = (self.digits.clone(), other.digits.clone());
        if exponent >= 0 {
            n *= pow10(exponent as u64);
        } else {
            d *= pow10((-exponent) as u64);
        }
        Dec::new(div_round(&n, &d), scale)
    }

    /// `select_div_scale`: at least 16 significant digits, no fewer
    /// decimals than either input shows, at most 1000.
    fn division_scale(&self, other: &Dec) -> u32 {
        let (w1, f1) = if self.is_zero() {
            (0, 0)
        } else {
            (self.weight(), self.base10000_digits(1)[0])
        };
        let (w2, f2) = if other.is_zero() {
            (0, 0)
        } else {
            (other.weight(), other.base10000_digits(1)[0])
        };
        let mut qweight = w1 - w2;
        if f1 <= f2 {
            qweight -= 1;
        }
        (MIN_SIG_DIGITS - qweight * 4)
            .max(i64::from(self.scale))
            .max(i64::from(other.scale))
            .clamp(0, MAX_DISPLAY_SCALE) as u32
    }

    fn is_integral(&self) -> bool {
        self.scale == 0 || (&self.digits % pow10(u64::from(self.scale))).is_zero()
    }

    /// The integer value, if integral and within `i64`.
    fn to_integer(&self) -> Option<i64> {
        if !self.is_integral() {
            return None;
        }
        self.trunc(0).digits.to_i64()
    }

    /// `power_var_int` (Postgres 15): repeated squaring, each product kept
    /// to the significant digits the result needs, then rounded to `rscale`.
    fn pow_int(&self, exp: i32, rscale: u32) -> Option<Dec> {
        match exp {
            0 => return Some(Dec::new(pow10(u64::from(rscale)), rscale)),
            1 => return self.round(rscale).checked(),
            -1 => {
                if self.is_zero() {
                    return None;
                }
                return Dec::new(BigInt::one(), 0).div_round(self, rscale).checked();
            }
            2 => return self.mul_round(self, rscale).checked(),
            _ => {}
        }
        if self.is_zero() {
            return (exp > 0).then(|| Dec::zero(rscale));
        }
        // base ≈ f × 10^p from its first base-10000 digits (as Postgres).
        let groups = self.base10000_digits(4);
        let mut f = f64::from(groups[0]);
        let mut p = self.weight() * 4;
        for (i, group) in groups.iter().enumerate().skip(1) {
            if self.base10000_digits_end() <= i {
                break;
            }
            f = f * 10_000.0 + f64::from(*group);
            p -= 4;
        }
        let f = f64::from(exp) * (f.log10() + p as f64);
        if f > f64::from(3 * i16::MAX as i32 * 4) {
            return None;
        }
        if f + 1.0 < -(f64::from(rscale)) || f + 1.0 < -(MAX_DISPLAY_SCALE as f64) {
            return Some(Dec::zero(rscale));
        }
        let mut sig_digits = 1 + i64::from(rscale) + f as i64;
        sig_digits += f64::from(exp).abs().ln() as i64 + 8;
        let negative = exp < 0;
        let mut mask = exp.unsigned_abs();
        let mut base_prod = self.clone();
        let mut result = if mask & 1 == 1 {
            self.clone()
        } else {
            Dec::new(BigInt::one(), 0)
        };
        let weight_limit = i64::from(i16::MAX);
        loop {
            mask >>= 1;
            if mask == 0 {
                break;
            }
            let local = (sig_digits - 2 * base_prod.weight() * 4)
                .min(2 * i64::from(base_prod.scale))
                .max(0);
            base_prod = base_prod.mul_round(&base_prod, local as u32);
            if mask & 1 == 1 {
                let local = (sig_digits - (base_prod.weight() + result.weight()) * 4)
                    .min(i64::from(base_prod.scale) + i64::from(result.scale))
                    .max(0);
                result = base_prod.mul_round(&result, local as u32);
            }
            if base_prod.weight() > weight_limit || result.weight() > weight_limit {
                if !negative {
                    return None;
                }
                return Some(Dec::zero(rscale));
            }
        }
        if negative {
            if result.is_zero() {
                return None;
            }
            Dec::new(BigInt::one(), 0)
                .div_round(&result, rscale)
                .checked()
        } else {
            result.round(rscale).checked()
        }
    }

    /// How many base-10000 digits Postgres stores for the value (trailing
    /// zero groups stripped), counted from its weight.
    fn base10000_digits_end(&self) -> usize {
        let Some(e) = self.leading_exponent() else {
            return 0;
        };
        let weight = e.div_euclid(4);
        // The last nonzero decimal digit's exponent.
        let mut trailing = 0i64;
        let mut digits = self.digits.abs();
        let ten = BigInt::from(10u32);
        while !digits.is_zero() {
            let (q, r) = digits.div_rem(&ten);
            if !r.is_zero() {
                break;
            }
            digits = q;
            trailing += 1;
            if trailing > 64 {
                break;
            }
        }
        let last_exponent = trailing - i64::from(self.scale);
        (weight - last_exponent.div_euclid(4) + 1) as usize
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Numeric {
    NaN,
    PosInf,
    NegInf,
    Finite(Dec),
}

impl Numeric {
    pub fn from_i64(value: i64) -> Numeric {
        Numeric::Finite(Dec::new(BigInt::from(value), 0))
    }

    fn zero() -> Numeric {
        Numeric::Finite(Dec::zero(0))
    }

    fn one() -> Numeric {
        Numeric::from_i64(1)
    }

    /// `numeric_in`: NaN, [+-]Infinity/inf, or a decimal; None where
    /// Postgres raises (bad syntax, or beyond the format's limits).
    pub fn parse(s: &str) -> Option<Numeric> {
        let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
        let lower = t.to_ascii_lowercase();
        match lower.as_str() {
            "nan" => return Some(Numeric::NaN),
            "infinity" | "+infinity" | "inf" | "+inf" => return Some(Numeric::PosInf),
            "-infinity" | "-inf" => return Some(Numeric::NegInf),
            _ => {}
        }
        Dec::parse(t).map(Numeric::Finite)
    }

    pub fn format(&self) -> String {
        match self {
            Numeric::NaN => "NaN".into(),
            Numeric::PosInf => "Infinity".into(),
            Numeric::NegInf => "-Infinity".into(),
            Numeric::Finite(d) => d.to_text(),
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
            (Numeric::Finite(a), Numeric::Finite(b)) => a.compare(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }

    /// -1, 0 or 1; None for NaN.
    fn sign(&self) -> Option<i32> {
        match self {
            Numeric::NaN => None,
            Numeric::PosInf => Some(1),
            Numeric::NegInf => Some(-1),
            Numeric::Finite(d) if d.is_zero() => Some(0),
            Numeric::Finite(d) if d.is_negative() => Some(-1),
            Numeric::Finite(_) => Some(1),
        }
    }

    /// `numeric_float8`/`numeric_float4`: the text form read by `float8in`
    /// (`float4in`), which raises on overflow and on underflow to zero.
    pub fn to_float(&self, float4: bool) -> Option<f64> {
        match self {
            Numeric::NaN => Some(f64::NAN),
            Numeric::PosInf => Some(f64::INFINITY),
            Numeric::NegInf => Some(f64::NEG_INFINITY),
            Numeric::Finite(d) => parse_float(&d.to_text(), float4),
        }
    }

    /// `float8_numeric` / `float4_numeric`: the float printed with `%.15g`
    /// (float4: `%.6g`), then read back with that text's scale.
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
        // `%g` drops trailing zeros: the scale is what remains.
        let (mantissa, exponent) = text.split_once('e')?;
        let exponent: i64 = exponent.parse().ok()?;
        let negative = mantissa.starts_with('-');
        let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
        let digits = digits.trim_end_matches('0');
        let digits = if digits.is_empty() { "0" } else { digits };
        let scale = (digits.len() as i64 - 1 - exponent).max(0);
        let shift = exponent - (digits.len() as i64 - 1) + scale;
        let mut value: BigInt = digits.parse().ok()?;
        value *= pow10(shift as u64);
        if negative {
            value = -value;
        }
        Dec::new(value, scale as u32).checked().map(Numeric::Finite)
    }

    /// Arithmetic on infinities and NaN follows IEEE floats, as Postgres'.
    fn special(a: &Numeric, b: &Numeric, float: fn(f64, f64) -> f64) -> Numeric {
        let to_f64 = |n: &Numeric| match n {
            Numeric::NaN => f64::NAN,
            Numeric::PosInf => f64::INFINITY,
            Numeric::NegInf => f64::NEG_INFINITY,
            Numeric::Finite(d) => d.sign_f64(),
        };
        let value = float(to_f64(a), to_f64(b));
        if value.is_nan() {
            Numeric::NaN
        } else if value == f64::INFINITY {
            Numeric::PosInf
        } else if value == f64::NEG_INFINITY {
            Numeric::NegInf
        } else {
            Numeric::zero()
        }
    }

    pub fn add(a: Numeric, b: Numeric) -> Option<Numeric> {
        match (&a, &b) {
            (Numeric::Finite(x), Numeric::Finite(y)) => x.add(y).map(Numeric::Finite),
            _ => Some(Numeric::special(&a, &b, |x, y| x + y)),
        }
    }

    pub fn sub(a: Numeric, b: Numeric) -> Option<Numeric> {
        match (&a, &b) {
            (Numeric::Finite(x), Numeric::Finite(y)) => x.add(&y.neg()).map(Numeric::Finite),
            _ => Some(Numeric::special(&a, &b, |x, y| x - y)),
        }
    }

    /// `numeric_mul`: the exact product, rounded only past 16383 decimals.
    pub fn mul(a: Numeric, b: Numeric) -> Option<Numeric> {
        match (&a, &b) {
            (Numeric::Finite(x), Numeric::Finite(y)) => {
                let scale = (x.scale + y.scale).min(MAX_SCALE);
                x.mul_round(y, scale).checked().map(Numeric::Finite)
            }
            _ => Some(Numeric::special(&a, &b, |x, y| x * y)),
        }
    }

    pub fn div(a: Numeric, b: Numeric) -> Option<Numeric> {
        if b.sign() == Some(0) && a != Numeric::NaN {
            return None;
        }
        match (&a, &b) {
            (Numeric::Finite(x), Numeric::Finite(y)) => {
                let scale = x.division_scale(y);
                x.div_round(y, scale).checked().map(Numeric::Finite)
            }
            _ => Some(Numeric::special(&a, &b, |x, y| x / y)),
        }
    }

    /// `numeric_mod`: truncated division's remainder, at the larger scale.
    pub fn rem(a: Numeric, b: Numeric) -> Option<Numeric> {
        if b.sign() == Some(0) && a != Numeric::NaN {
            return None;
        }
        match (&a, &b) {
            (Numeric::Finite(x), Numeric::Finite(y)) => {
                let scale = x.scale.max(y.scale);
                let r = x.digits_at(scale) % y.digits_at(scale);
                Some(Numeric::Finite(Dec::new(r, scale)))
            }
            (Numeric::Finite(_), Numeric::PosInf | Numeric::NegInf) => Some(a),
            _ => Some(Numeric::NaN),
        }
    }

    pub fn neg(a: Numeric) -> Numeric {
        match a {
            Numeric::NaN => Numeric::NaN,
            Numeric::PosInf => Numeric::NegInf,
            Numeric::NegInf => Numeric::PosInf,
            Numeric::Finite(d) => Numeric::Finite(d.neg()),
        }
    }

    pub fn abs(a: Numeric) -> Numeric {
        match a {
            Numeric::NegInf => Numeric::PosInf,
            Numeric::Finite(d) => Numeric::Finite(Dec::new(d.digits.abs(), d.scale)),
            other => other,
        }
    }

    /// Exponents we compute exactly as Postgres does: integers within
    /// `int4`, and the special values. Fractional exponents go through
    /// Postgres' ln/exp series, which we do not reproduce digit for digit.
    pub fn is_supported_exponent(&self) -> bool {
        match self {
            Numeric::Finite(d) => d.to_integer().is_some_and(|e| i32::try_from(e).is_ok()),
            _ => true,
        }
    }

    /// `numeric_power` (Postgres 15), for the exponents
    /// [`Numeric::is_supported_exponent`] accepts; None on Postgres'
    /// errors and on fractional exponents.
    pub fn pow(a: Numeric, b: Numeric) -> Option<Numeric> {
        let (sign1, sign2) = (a.sign(), b.sign());
        let is_one = |n: &Numeric| n.compare(&Numeric::one()) == Ordering::Equal;
        if a == Numeric::NaN {
            return Some(if sign2 == Some(0) {
                Numeric::one()
            } else {
                Numeric::NaN
            });
        }
        if b == Numeric::NaN {
            return Some(if is_one(&a) {
                Numeric::one()
            } else {
                Numeric::NaN
            });
        }
        let (sign1, sign2) = (sign1?, sign2?);
        if sign1 == 0 && sign2 < 0 {
            return None;
        }
        // Infinities count as integral (`numeric_is_integral`).
        let integral = match &b {
            Numeric::Finite(d) => d.is_integral(),
            _ => true,
        };
        if matches!(a, Numeric::PosInf | Numeric::NegInf)
            || matches!(b, Numeric::PosInf | Numeric::NegInf)
        {
            if sign1 < 0 && !integral {
                return None;
            }
            if is_one(&a) || sign2 == 0 {
                return Some(Numeric::one());
            }
            if sign1 == 0 && sign2 > 0 {
                return Some(Numeric::zero());
            }
            if matches!(b, Numeric::PosInf | Numeric::NegInf) {
                let abs_x_gt_one = match &a {
                    Numeric::Finite(x) => {
                        if x.compare(&Dec::new(BigInt::from(-1), 0)) == Ordering::Equal {
                            return Some(Numeric::one());
                        }
                        Dec::new(x.digits.abs(), x.scale).compare(&Dec::new(BigInt::one(), 0))
                            == Ordering::Greater
                    }
                    _ => true,
                };
                return Some(if abs_x_gt_one == (sign2 > 0) {
                    Numeric::PosInf
                } else {
                    Numeric::zero()
                });
            }
            if a == Numeric::PosInf {
                return Some(if sign2 > 0 {
                    Numeric::PosInf
                } else {
                    Numeric::zero()
                });
            }
            // a is -Infinity, b finite.
            if sign2 < 0 {
                return Some(Numeric::zero());
            }
            let odd = match &b {
                Numeric::Finite(d) => d.to_integer().is_some_and(|e| e % 2 != 0),
                _ => false,
            };
            return Some(if odd {
                Numeric::NegInf
            } else {
                Numeric::PosInf
            });
        }
        let (Numeric::Finite(base), Numeric::Finite(exponent)) = (&a, &b) else {
            return None;
        };
        let exp = i32::try_from(exponent.to_integer()?).ok()?;
        let rscale = (MIN_SIG_DIGITS.max(i64::from(base.scale))).clamp(0, MAX_DISPLAY_SCALE) as u32;
        base.pow_int(exp, rscale).map(Numeric::Finite)
    }

    /// Rounds half away from zero into an integer range (`numeric_int4` etc.).
    pub fn to_i64_in(&self, min: i64, max: i64) -> Option<i64> {
        let Numeric::Finite(d) = self else {
            return None;
        };
        let value = d.round(0).digits.to_i64()?;
        (min..=max).contains(&value).then_some(value)
    }
}

impl Dec {
    /// The sign as a float (for arithmetic with infinities).
    fn sign_f64(&self) -> f64 {
        if self.is_zero() {
            0.0
        } else if self.is_negative() {
            -1.0
        } else {
            1.0
        }
    }
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
        // Postgres' full range: 131072 digits before the point, 16383 after.
        assert_eq!(n("1e30").format(), format!("1{}", "0".repeat(30)));
        assert_eq!(n("1e131071").format().len(), 131_072);
        assert_eq!(Numeric::parse("1e131072"), None);
        assert_eq!(n("1e-16383").format().len(), 16_385);
        assert_eq!(Numeric::parse("1e-16384"), None);
        assert_eq!(Numeric::parse("0e-16384"), None);
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
        // `power_var_int`: at least 16 decimals.
        assert_eq!(
            Numeric::pow(n("2"), n("10")).unwrap().format(),
            "1024.0000000000000000"
        );
        assert_eq!(
            Numeric::pow(n("2.0"), n("3.0")).unwrap().format(),
            "8.0000000000000000"
        );
        assert_eq!(Numeric::parse("1e9999999999"), None);
        assert_eq!(n("2.5").to_i64_in(i64::MIN, i64::MAX), Some(3));
        assert_eq!(n("-2.5").to_i64_in(i64::MIN, i64::MAX), Some(-3));
        assert_eq!(Numeric::from_f64(0.1, false).unwrap().format(), "0.1");
        assert_eq!(Numeric::parse("abc"), None);
        assert_eq!(Numeric::parse("1_0"), None);
    }
}
