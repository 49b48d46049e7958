//! Dates, times, timestamps and intervals: parsing Postgres' text forms
//! (its ISO output under `DateStyle=ISO`, `TimeZone=UTC`,
//! `IntervalStyle=iso_8601`, plus the common input spellings users write),
//! formatting them back exactly as Postgres would, and the arithmetic the
//! operators need. Values are plain integers, as in Postgres itself:
//! days since 1970-01-01, or microseconds since 2000-01-01 (Postgres' own
//! timestamp epoch), with the extremes of `i64`
//! standing for `-infinity` / `infinity`.

use std::cmp::Ordering;

pub(crate) const USECS_PER_SEC: i64 = 1_000_000;
pub(crate) const USECS_PER_MINUTE: i64 = 60 * USECS_PER_SEC;
pub(crate) const USECS_PER_HOUR: i64 = 60 * USECS_PER_MINUTE;
pub(crate) const USECS_PER_DAY: i64 = 24 * USECS_PER_HOUR;
const DAYS_PER_MONTH: i64 = 30;

pub(crate) const NEG_INFINITY: i64 = i64::MIN;
/// Days from 1970-01-01 (dates) to 2000-01-01, Postgres' timestamp epoch:
/// timestamps count microseconds from there as Postgres' do, so their whole
/// range (up to 294276-12-31) fits an `i64`.
const TIMESTAMP_EPOCH_DAY: i64 = 10_957;

/// Microseconds of a timestamp at the start of `day` (days since 1970).
fn day_micros(day: i64) -> Option<i64> {
    day.checked_sub(TIMESTAMP_EPOCH_DAY)?
        .checked_mul(USECS_PER_DAY)
}

/// [`day_micros`] without overflow, for comparisons across types.
pub(crate) fn day_micros_wide(day: i64) -> i128 {
    (i128::from(day) - i128::from(TIMESTAMP_EPOCH_DAY)) * i128::from(USECS_PER_DAY)
}

/// The day (since 1970) a finite timestamp falls on.
fn micros_day(micros: i64) -> i64 {
    micros.div_euclid(USECS_PER_DAY) + TIMESTAMP_EPOCH_DAY
}
pub(crate) const POS_INFINITY: i64 = i64::MAX;

/// Postgres' supported range: 4713-11-24 BC (Julian day 0) onwards.
fn min_day() -> i64 {
    days_from_civil(-4713, 11, 24)
}

fn max_date_day() -> i64 {
    days_from_civil(5_874_897, 12, 31)
}

fn max_timestamp_day() -> i64 {
    days_from_civil(294_276, 12, 31)
}

/// Days since 1970-01-01 of a proleptic Gregorian date with astronomical
/// year numbering (1 BC is year 0). Callers keep `year` within ±10^7.
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if month <= 2 { y + 1 } else { y }, month, day)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(year) => 29,
        _ => 28,
    }
}

/// An interval as Postgres stores it: the three fields never mix, because a
/// month has no fixed number of days nor a day a fixed number of hours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Interval {
    pub months: i32,
    pub days: i32,
    pub micros: i64,
}

impl Interval {
    /// Postgres orders intervals by this span (`interval_cmp_value`), which
    /// counts a month as 30 days and a day as 24 hours: `'1 month' = '30 days'`.
    pub(crate) fn span(&self) -> i128 {
        (i128::from(self.months) * 30 + i128::from(self.days)) * i128::from(USECS_PER_DAY)
            + i128::from(self.micros)
    }

    pub fn compare(&self, other: &Interval) -> Ordering {
        self.span().cmp(&other.span())
    }

    pub fn checked_neg(&self) -> Option<Interval> {
        Some(Interval {
            months: self.months.checked_neg()?,
            days: self.days.checked_neg()?,
            micros: self.micros.checked_neg()?,
        })
    }

    pub fn checked_add(&self, other: &Interval) -> Option<Interval> {
        Some(Interval {
            months: self.months.checked_add(other.months)?,
            days: self.days.checked_add(other.days)?,
            micros: self.micros.checked_add(other.micros)?,
        })
    }

    /// `interval_mi`: field by field, failing only when a field overflows
    /// (`x - x` is zero even for the most negative value).
    pub fn checked_sub(&self, other: &Interval) -> Option<Interval> {
        Some(Interval {
            months: self.months.checked_sub(other.months)?,
            days: self.days.checked_sub(other.days)?,
            micros: self.micros.checked_sub(other.micros)?,
        })
    }

    /// `interval_mul`: fractional months spill into days (30 per month) and
    /// fractional days into time, as Postgres does.
    pub fn checked_mul(&self, factor: f64) -> Option<Interval> {
        if !factor.is_finite() {
            return None;
        }
        let months_f = f64::from(self.months) * factor;
        let days_f = f64::from(self.days) * factor;
        if !(i32::MIN as f64..=i32::MAX as f64).contains(&months_f)
            || !(i32::MIN as f64..=i32::MAX as f64).contains(&days_f)
        {
            return None;
        }
        let months = months_f.trunc();
        let month_remainder_days = (months_f - months) * DAYS_PER_MONTH as f64;
        let days = days_f.trunc();
        let mut sec_remainder = (days_f - days + month_remainder_days
            - month_remainder_days.trunc())
            * (USECS_PER_DAY / USECS_PER_SEC) as f64;
        // Round to microseconds like TSROUND, to avoid e.g. 1 day * 0.1 * 10 != 1 day.
        sec_remainder = (sec_remainder * 1e6).round_ties_even() / 1e6;
        let mut days = days + month_remainder_days.trunc();
        let secs_per_day = (USECS_PER_DAY / USECS_PER_SEC) as f64;
        if sec_remainder.abs() >= secs_per_day {
            let whole = (sec_remainder / secs_per_day).trunc();
            days += whole;
            sec_remainder -= whole * secs_per_day;
        }
        let micros = (self.micros as f64 * factor + sec_remainder * 1e6).round_ties_even();
        if !(i32::MIN as f64..=i32::MAX as f64).contains(&days)
            || !(i64::MIN as f64..i64::MAX as f64).contains(&micros)
        {
            return None;
        }
        Some(Interval {
            months: months as i32,
            days: days as i32,
            micros: micros as i64,
        })
    }

    pub fn checked_div(&self, divisor: f64) -> Option<Interval> {
        if divisor == 0.0 || divisor.is_nan() {
            return None;
        }
        self.checked_mul(1.0 / divisor)
    }

    pub fn justify_hours(&self) -> Interval {
        let mut days = i64::from(self.days) + self.micros / USECS_PER_DAY;
        let mut micros = self.micros % USECS_PER_DAY;
        if days > 0 && micros < 0 {
            micros += USECS_PER_DAY;
            days -= 1;
        } else if days < 0 && micros > 0 {
            micros -= USECS_PER_DAY;
            days += 1;
        }
        Interval {
            months: self.months,
            days: days.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
            micros,
        }
    }

    pub fn justify_days(&self) -> Interval {
        let mut months = i64::from(self.months) + i64::from(self.days) / DAYS_PER_MONTH;
        let mut days = i64::from(self.days) % DAYS_PER_MONTH;
        if months > 0 && days < 0 {
            days += DAYS_PER_MONTH;
            months -= 1;
        } else if months < 0 && days > 0 {
            days -= DAYS_PER_MONTH;
            months += 1;
        }
        Interval {
            months: months.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
            days: days as i32,
            micros: self.micros,
        }
    }

    pub fn justify_interval(&self) -> Interval {
        let hours = self.justify_hours();
        let mut months = i64::from(hours.months) + i64::from(hours.days) / DAYS_PER_MONTH;
        let mut days = i64::from(hours.days) % DAYS_PER_MONTH;
        let mut micros = hours.micros;
        if months > 0 && (days < 0 || (days == 0 && micros < 0)) {
            days += DAYS_PER_MONTH;
            months -= 1;
        } else if months < 0 && (days > 0 || (days == 0 && micros > 0)) {
            days -= DAYS_PER_MONTH;
            months += 1;
        }
        if days > 0 && micros < 0 {
            micros += USECS_PER_DAY;
            days -= 1;
        } else if days < 0 && micros > 0 {
            micros -= USECS_PER_DAY;
            days += 1;
        }
        Interval {
            months: months.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
            days: days as i32,
            micros,
        }
    }
}

/// A tiny cursor over ASCII-oriented date/time text.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Cursor<'a> {
        Cursor {
            bytes: s.as_bytes(),
            pos: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn skip_spaces(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// Unsigned decimal digits, at most `max` of them (to keep values small).
    fn digits(&mut self, max: usize) -> Option<(i64, usize)> {
        let start = self.pos;
        let mut value: i64 = 0;
        while let Some(b @ b'0'..=b'9') = self.peek() {
            if self.pos - start >= max {
                return None;
            }
            value = value * 10 + i64::from(b - b'0');
            self.pos += 1;
        }
        let count = self.pos - start;
        (count > 0).then_some((value, count))
    }

    /// `.ddd` after seconds, rounded to microseconds like Postgres' `rint`.
    fn fraction_micros(&mut self) -> Option<i64> {
        if !self.eat(b'.') {
            return Some(0);
        }
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        let digits = std::str::from_utf8(&self.bytes[start..self.pos]).ok()?;
        if digits.is_empty() {
            return Some(0);
        }
        let frac: f64 = format!("0.{digits}").parse().ok()?;
        Some((frac * 1e6).round_ties_even() as i64)
    }

    fn eat_word_ignore_case(&mut self, word: &str) -> bool {
        let end = self.pos + word.len();
        if self.bytes.len() >= end
            && self.bytes[self.pos..end].eq_ignore_ascii_case(word.as_bytes())
        {
            let next_is_alpha = self.bytes.get(end).is_some_and(|b| b.is_ascii_alphabetic());
            if !next_is_alpha {
                self.pos = end;
                return true;
            }
        }
        false
    }

    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }
}

/// What a date/time string held: the parts are validated on assembly.
struct Parsed {
    /// Days since the epoch, if a date was present.
    day: Option<i64>,
    /// Time of day in microseconds (may reach 24:00:00 or a leap second).
    time: Option<i64>,
    /// Zone offset east of UTC in seconds, if one was written.
    offset_secs: Option<i64>,
}

fn special(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("infinity") || s.eq_ignore_ascii_case("+infinity") {
        Some(POS_INFINITY)
    } else if s.eq_ignore_ascii_case("-infinity") {
        Some(NEG_INFINITY)
    } else {
        None
    }
}

fn parse_date_part(c: &mut Cursor) -> Option<(i64, u32, u32)> {
    let (year, year_digits) = c.digits(9)?;
    if !c.eat(b'-') {
        return None;
    }
    let (month, _) = c.digits(2)?;
    if !c.eat(b'-') {
        return None;
    }
    let (day, _) = c.digits(2)?;
    // Only year-first ISO dates are accepted: with a 3+ digit leading field
    // Postgres reads them the same way under any DateStyle, so the snapshot
    // and our evaluation cannot disagree about which day is meant.
    if year_digits < 3 {
        return None;
    }
    let month = u32::try_from(month).ok()?;
    let day = u32::try_from(day).ok()?;
    Some((year, month, day))
}

fn parse_time_part(c: &mut Cursor) -> Option<i64> {
    let (hour, _) = c.digits(2)?;
    if !c.eat(b':') {
        return None;
    }
    let (minute, _) = c.digits(2)?;
    let (second, fraction) = if c.eat(b':') {
        let (second, _) = c.digits(2)?;
        (second, c.fraction_micros()?)
    } else {
        (0, 0)
    };
    if hour > 24 || minute > 59 || second > 60 {
        return None;
    }
    let micros =
        hour * USECS_PER_HOUR + minute * USECS_PER_MINUTE + second * USECS_PER_SEC + fraction;
    if micros > USECS_PER_DAY && second != 60 {
        return None;
    }
    if hour == 24 && micros != USECS_PER_DAY {
        return None;
    }
    Some(micros)
}

fn parse_zone(c: &mut Cursor) -> Option<Option<i64>> {
    if c.eat_word_ignore_case("z") || c.eat_word_ignore_case("utc") || c.eat_word_ignore_case("gmt")
    {
        return Some(Some(0));
    }
    let sign = match c.peek() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Some(None),
    };
    c.pos += 1;
    let (first, first_digits) = c.digits(6)?;
    let (hours, mut minutes, mut seconds) = match first_digits {
        1 | 2 => (first, 0, 0),
        4 => (first / 100, first % 100, 0),
        6 => (first / 10_000, (first / 100) % 100, first % 100),
        _ => return None,
    };
    if first_digits <= 2 && c.eat(b':') {
        minutes = c.digits(2)?.0;
        if c.eat(b':') {
            seconds = c.digits(2)?.0;
        }
    }
    if hours > 15 || minutes > 59 || seconds > 59 {
        return None;
    }
    Some(Some(sign * (hours * 3600 + minutes * 60 + seconds)))
}

/// Parses `[date][ |T][time][zone][ BC|AD]` in ISO order.
fn parse_datetime(s: &str, want_date: bool) -> Option<Parsed> {
    let mut c = Cursor::new(s.trim());
    let mut civil = None;
    let mut time = None;
    let start = c.pos;
    if let Some(date) = parse_date_part(&mut c) {
        civil = Some(date);
        let had_space = c.skip_spaces();
        let had_t = c.eat(b'T') || c.eat(b't');
        if (had_space || had_t) && matches!(c.peek(), Some(b'0'..=b'9')) {
            time = Some(parse_time_part(&mut c)?);
        } else if had_t {
            return None;
        }
    } else {
        c.pos = start;
        if want_date {
            return None;
        }
        time = Some(parse_time_part(&mut c)?);
    }
    c.skip_spaces();
    let offset_secs = if time.is_some() {
        parse_zone(&mut c)?
    } else {
        None
    };
    c.skip_spaces();
    let mut bc = false;
    if c.eat_word_ignore_case("bc") {
        bc = true;
    } else {
        c.eat_word_ignore_case("ad");
    }
    c.skip_spaces();
    if !c.at_end() {
        return None;
    }
    let day = match civil {
        Some((year, month, day)) => {
            if year == 0 && bc {
                return None;
            }
            let year = if bc { 1 - year } else { year };
            if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
                return None;
            }
            if !bc && year == 0 {
                return None;
            }
            Some(days_from_civil(year, month, day))
        }
        None => None,
    };
    Some(Parsed {
        day,
        time,
        offset_secs,
    })
}

pub(crate) fn parse_date(s: &str) -> Option<i64> {
    if let Some(special) = special(s) {
        return Some(special);
    }
    if s.trim().eq_ignore_ascii_case("epoch") {
        return Some(0);
    }
    let day = parse_datetime(s, true)?.day?;
    (min_day()..=max_date_day()).contains(&day).then_some(day)
}

pub(crate) fn parse_time(s: &str) -> Option<i64> {
    // A date alone is not a time ("invalid input syntax for type time").
    parse_datetime(s, false)?.time
}

/// `timestamp` input ignores a written zone, as Postgres does.
pub(crate) fn parse_timestamp(s: &str) -> Option<i64> {
    parse_timestamp_with(s, false)
}

/// `timestamptz` input: a missing zone means the session zone, UTC.
pub(crate) fn parse_timestamptz(s: &str) -> Option<i64> {
    parse_timestamp_with(s, true)
}

fn parse_timestamp_with(s: &str, apply_zone: bool) -> Option<i64> {
    if let Some(special) = special(s) {
        return Some(special);
    }
    if s.trim().eq_ignore_ascii_case("epoch") {
        return day_micros(0);
    }
    let parsed = parse_datetime(s, true)?;
    let day = parsed.day?;
    let mut micros = day_micros(day)?.checked_add(parsed.time.unwrap_or(0))?;
    if apply_zone {
        let offset = parsed.offset_secs.unwrap_or(0);
        micros = micros.checked_sub(offset.checked_mul(USECS_PER_SEC)?)?;
    }
    timestamp_in_range(micros).then_some(micros)
}

pub(crate) fn timestamp_in_range(micros: i64) -> bool {
    if micros == NEG_INFINITY || micros == POS_INFINITY {
        return true;
    }
    (min_day()..=max_timestamp_day()).contains(&micros_day(micros))
}

fn push_year_month_day(out: &mut String, day: i64) -> bool {
    let (year, month, d) = civil_from_days(day);
    let bc = year <= 0;
    let shown = if bc { 1 - year } else { year };
    out.push_str(&format!("{shown:04}-{month:02}-{d:02}"));
    bc
}

fn push_time_of_day(out: &mut String, micros: i64) {
    let hour = micros / USECS_PER_HOUR;
    let minute = (micros / USECS_PER_MINUTE) % 60;
    let second = (micros / USECS_PER_SEC) % 60;
    let fraction = micros % USECS_PER_SEC;
    out.push_str(&format!("{hour:02}:{minute:02}:{second:02}"));
    push_fraction(out, fraction);
}

/// `.dddddd` with trailing zeros removed, nothing when zero.
fn push_fraction(out: &mut String, fraction_micros: i64) {
    if fraction_micros != 0 {
        let digits = format!("{:06}", fraction_micros.unsigned_abs());
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
}

pub(crate) fn format_date(day: i64) -> String {
    match day {
        POS_INFINITY => "infinity".into(),
        NEG_INFINITY => "-infinity".into(),
        _ => {
            let mut out = String::with_capacity(13);
            if push_year_month_day(&mut out, day) {
                out.push_str(" BC");
            }
            out
        }
    }
}

pub(crate) fn format_time(micros: i64) -> String {
    let mut out = String::with_capacity(15);
    push_time_of_day(&mut out, micros);
    out
}

pub(crate) fn format_timestamp(micros: i64, with_zone: bool) -> String {
    match micros {
        POS_INFINITY => "infinity".into(),
        NEG_INFINITY => "-infinity".into(),
        _ => {
            let day = micros_day(micros);
            let time = micros.rem_euclid(USECS_PER_DAY);
            let mut out = String::with_capacity(32);
            let bc = push_year_month_day(&mut out, day);
            out.push(' ');
            push_time_of_day(&mut out, time);
            if with_zone {
                out.push_str("+00");
            }
            if bc {
                out.push_str(" BC");
            }
            out
        }
    }
}

/// `IntervalStyle=iso_8601` output (`EncodeInterval`, `INTSTYLE_ISO_8601`).
pub(crate) fn format_interval(iv: &Interval) -> String {
    let years = iv.months / 12;
    let months = iv.months % 12;
    let hours = iv.micros / USECS_PER_HOUR;
    let minutes = (iv.micros / USECS_PER_MINUTE) % 60;
    let seconds = (iv.micros / USECS_PER_SEC) % 60;
    let fraction = iv.micros % USECS_PER_SEC;
    if years == 0 && months == 0 && iv.days == 0 && iv.micros == 0 {
        return "PT0S".into();
    }
    let mut out = String::from("P");
    if years != 0 {
        out.push_str(&format!("{years}Y"));
    }
    if months != 0 {
        out.push_str(&format!("{months}M"));
    }
    if iv.days != 0 {
        out.push_str(&format!("{}D", iv.days));
    }
    if hours != 0 || minutes != 0 || seconds != 0 || fraction != 0 {
        out.push('T');
        if hours != 0 {
            out.push_str(&format!("{hours}H"));
        }
        if minutes != 0 {
            out.push_str(&format!("{minutes}M"));
        }
        if seconds != 0 || fraction != 0 {
            if seconds < 0 || fraction < 0 {
                out.push('-');
            }
            out.push_str(&seconds.unsigned_abs().to_string());
            push_fraction(&mut out, fraction);
            out.push('S');
        }
    }
    out
}

/// Accumulates interval fields with Postgres' spilling of fractions:
/// fractional months become days (30 per month), fractional days time.
#[derive(Default)]
struct IntervalBuilder {
    months: f64,
    days: f64,
    micros: f64,
}

impl IntervalBuilder {
    fn add_months(&mut self, value: f64) {
        let whole = value.trunc();
        self.months += whole;
        self.add_days((value - whole) * DAYS_PER_MONTH as f64);
    }

    fn add_days(&mut self, value: f64) {
        let whole = value.trunc();
        self.days += whole;
        self.micros += (value - whole) * USECS_PER_DAY as f64;
    }

    fn add_unit(&mut self, value: f64, unit: &str) -> Option<()> {
        let unit = unit.to_ascii_lowercase();
        match unit.as_str() {
            "microsecond" | "microseconds" | "us" | "usec" | "usecs" | "microsecon" => {
                self.micros += value
            }
            "millisecond" | "milliseconds" | "ms" | "msec" | "msecs" => self.micros += value * 1e3,
            "second" | "seconds" | "s" | "sec" | "secs" => self.micros += value * 1e6,
            "minute" | "minutes" | "m" | "min" | "mins" => {
                self.micros += value * USECS_PER_MINUTE as f64
            }
            "hour" | "hours" | "h" | "hr" | "hrs" => self.micros += value * USECS_PER_HOUR as f64,
            "day" | "days" | "d" => self.add_days(value),
            "week" | "weeks" | "w" => self.add_days(value * 7.0),
            "month" | "months" | "mon" | "mons" => self.add_months(value),
            "year" | "years" | "y" | "yr" | "yrs" => self.add_months(value * 12.0),
            "decade" | "decades" => self.add_months(value * 120.0),
            "century" | "centuries" | "c" => self.add_months(value * 1200.0),
            "millennium" | "millennia" | "millenniums" => self.add_months(value * 12000.0),
            _ => return None,
        }
        Some(())
    }

    fn finish(self, negate: bool) -> Option<Interval> {
        let sign = if negate { -1.0 } else { 1.0 };
        let months = self.months * sign;
        let days = self.days * sign;
        let micros = (self.micros * sign).round_ties_even();
        let in_i32 = |v: f64| (i32::MIN as f64..=i32::MAX as f64).contains(&v);
        if !in_i32(months) || !in_i32(days) || !(i64::MIN as f64..i64::MAX as f64).contains(&micros)
        {
            return None;
        }
        Some(Interval {
            months: months as i32,
            days: days as i32,
            micros: micros as i64,
        })
    }
}

/// Parses Postgres interval input: ISO 8601 (`P1Y2M3DT4H5M6.5S`, as our
/// replication stream sends it) or the traditional `1 day 02:00:00 ago`.
pub(crate) fn parse_interval(s: &str) -> Option<Interval> {
    let s = s.trim();
    if s.is_empty() || s.len() > 256 {
        return None;
    }
    if s.starts_with('P') || s.starts_with('p') {
        return parse_iso_interval(&s[1..]);
    }
    parse_traditional_interval(s)
}

fn split_number(s: &str) -> Option<(f64, &str)> {
    let end = s
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || ((c == '-' || c == '+') && i == 0)))
        .map_or(s.len(), |(i, _)| i);
    let (number, rest) = s.split_at(end);
    if number.is_empty() || number == "-" || number == "+" {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    value.is_finite().then_some((value, rest))
}

fn parse_iso_interval(s: &str) -> Option<Interval> {
    let mut b = IntervalBuilder::default();
    let mut rest = s;
    let mut in_time = false;
    let mut any = false;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix(['T', 't']) {
            if in_time {
                return None;
            }
            in_time = true;
            rest = r;
            continue;
        }
        let (value, r) = split_number(rest)?;
        let mut chars = r.chars();
        let designator = chars.next()?.to_ascii_uppercase();
        rest = chars.as_str();
        any = true;
        match (in_time, designator) {
            (false, 'Y') => b.add_months(value * 12.0),
            (false, 'M') => b.add_months(value),
            (false, 'W') => b.add_days(value * 7.0),
            (false, 'D') => b.add_days(value),
            (true, 'H') => b.micros += value * USECS_PER_HOUR as f64,
            (true, 'M') => b.micros += value * USECS_PER_MINUTE as f64,
            (true, 'S') => b.micros += value * USECS_PER_SEC as f64,
            _ => return None,
        }
    }
    any.then_some(())?;
    b.finish(false)
}

fn parse_clock(token: &str) -> Option<f64> {
    let (negative, body) = match token.as_bytes().first() {
        Some(b'-') => (true, &token[1..]),
        Some(b'+') => (false, &token[1..]),
        _ => (false, token),
    };
    let mut parts = body.split(':');
    let hours: f64 = parts.next()?.parse::<u32>().ok()?.into();
    let minutes: f64 = parts.next()?.parse::<u32>().ok()?.into();
    let seconds: f64 = match parts.next() {
        Some(sec) => {
            if !sec.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
                return None;
            }
            sec.parse().ok()?
        }
        None => 0.0,
    };
    if parts.next().is_some() || minutes >= 60.0 || seconds >= 60.0 {
        return None;
    }
    let micros = (hours * 3600.0 + minutes * 60.0 + seconds) * 1e6;
    Some(if negative { -micros } else { micros })
}

fn parse_traditional_interval(s: &str) -> Option<Interval> {
    let mut b = IntervalBuilder::default();
    let mut tokens: Vec<&str> = s.split_whitespace().collect();
    if tokens.first() == Some(&"@") {
        tokens.remove(0);
    }
    let negate = tokens.last().is_some_and(|t| t.eq_ignore_ascii_case("ago"));
    if negate {
        tokens.pop();
    }
    if tokens.is_empty() {
        return None;
    }
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i];
        if token.contains(':') {
            b.micros += parse_clock(token)?;
            i += 1;
            continue;
        }
        let (value, glued_unit) = split_number(token)?;
        if !glued_unit.is_empty() {
            b.add_unit(value, glued_unit)?;
            i += 1;
        } else if let Some(unit) = tokens
            .get(i + 1)
            .filter(|t| t.chars().all(|c| c.is_alphabetic()))
        {
            b.add_unit(value, unit)?;
            i += 2;
        } else {
            // A bare number counts as seconds, as in Postgres.
            b.micros += value * 1e6;
            i += 1;
        }
    }
    b.finish(negate)
}

/// `timestamp + interval` (`timestamp_pl_interval`): months first with the
/// day clamped to the month's end, then days, then time.
pub(crate) fn timestamp_add_interval(ts: i64, iv: &Interval) -> Option<i64> {
    if ts == NEG_INFINITY || ts == POS_INFINITY {
        return Some(ts);
    }
    let mut day = micros_day(ts);
    let time = ts.rem_euclid(USECS_PER_DAY);
    // Each step's result must be a valid timestamp, as in Postgres (which
    // fails `'294276-12-31 23:00' + '1 day -24 hours'` at the day step).
    let valid = |day: i64| -> Option<()> {
        let micros = day_micros(day)?.checked_add(time)?;
        (timestamp_in_range(micros) && micros != NEG_INFINITY && micros != POS_INFINITY)
            .then_some(())
    };
    if iv.months != 0 {
        let (year, month, d) = civil_from_days(day);
        let total = (year * 12 + i64::from(month) - 1).checked_add(i64::from(iv.months))?;
        let new_year = total.div_euclid(12);
        let new_month = (total.rem_euclid(12) + 1) as u32;
        if new_year.abs() > 10_000_000 {
            return None;
        }
        let new_day = d.min(days_in_month(new_year, new_month));
        day = days_from_civil(new_year, new_month, new_day);
        valid(day)?;
    }
    if iv.days != 0 {
        day = day.checked_add(i64::from(iv.days))?;
        valid(day)?;
    }
    let result = day_micros(day)?.checked_add(time)?.checked_add(iv.micros)?;
    (timestamp_in_range(result) && result != NEG_INFINITY && result != POS_INFINITY)
        .then_some(result)
}

/// `timestamp_mi_interval`: an infinite timestamp stays infinite whatever
/// the interval; otherwise the interval is negated field by field (with C's
/// wrap-around, as Postgres 15 does: the extreme values then overflow the
/// timestamp range and fail there).
pub(crate) fn timestamp_sub_interval(ts: i64, iv: &Interval) -> Option<i64> {
    if ts == NEG_INFINITY || ts == POS_INFINITY {
        return Some(ts);
    }
    let negated = Interval {
        months: iv.months.wrapping_neg(),
        days: iv.days.wrapping_neg(),
        micros: iv.micros.wrapping_neg(),
    };
    timestamp_add_interval(ts, &negated)
}

/// `timestamp - timestamp`, justified into days like `timestamp_mi`.
pub(crate) fn timestamp_diff(a: i64, b: i64) -> Option<Interval> {
    if [a, b]
        .iter()
        .any(|&t| t == NEG_INFINITY || t == POS_INFINITY)
    {
        return None;
    }
    // Postgres 15 subtracts without an overflow check (C wraps around):
    // only timestamps ~292000 years apart get there.
    let micros = a.wrapping_sub(b);
    Some(
        Interval {
            months: 0,
            days: 0,
            micros,
        }
        .justify_hours(),
    )
}

pub(crate) fn date_to_timestamp(day: i64) -> Option<i64> {
    match day {
        NEG_INFINITY | POS_INFINITY => Some(day),
        _ => {
            let micros = day_micros(day)?;
            timestamp_in_range(micros).then_some(micros)
        }
    }
}

pub(crate) fn timestamp_to_date(ts: i64) -> i64 {
    match ts {
        NEG_INFINITY | POS_INFINITY => ts,
        _ => micros_day(ts),
    }
}

pub(crate) fn timestamp_to_time(ts: i64) -> Option<i64> {
    match ts {
        NEG_INFINITY | POS_INFINITY => None,
        _ => Some(ts.rem_euclid(USECS_PER_DAY)),
    }
}

pub(crate) fn date_add_days(day: i64, days: i64) -> Option<i64> {
    if day == NEG_INFINITY || day == POS_INFINITY {
        return Some(day);
    }
    let result = day.checked_add(days)?;
    (min_day()..=max_date_day())
        .contains(&result)
        .then_some(result)
}

/// `time_pl_interval`: the interval's time part, wrapped into one day
/// (64-bit wrap-around included, as in Postgres).
pub(crate) fn time_add_interval(time: i64, iv: &Interval) -> i64 {
    time.wrapping_add(iv.micros).rem_euclid(USECS_PER_DAY)
}

/// `time_mi_interval`.
pub(crate) fn time_sub_interval(time: i64, iv: &Interval) -> i64 {
    time.wrapping_sub(iv.micros).rem_euclid(USECS_PER_DAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_clause_datetime_civil_round_trip() {
        for day in [-1_000_000, -719_468, -1, 0, 1, 10_957, 2_932_896] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        assert_eq!(days_from_civil(2000, 1, 1), 10_957);
    }

    #[test]
    fn where_clause_datetime_parse_and_format() {
        let ts = parse_timestamptz("2024-01-02 03:04:05.123+00").unwrap();
        assert_eq!(format_timestamp(ts, true), "2024-01-02 03:04:05.123+00");
        let shifted = parse_timestamptz("2024-01-02T05:04:05.123+02:00").unwrap();
        assert_eq!(ts, shifted);
        assert_eq!(parse_timestamptz("2024-01-02 03:04:05.123Z"), Some(ts));
        assert_eq!(
            parse_timestamp("2024-01-02 03:04:05+05"),
            parse_timestamp("2024-01-02 03:04:05")
        );
        assert_eq!(
            format_date(parse_date("0044-03-15 BC").unwrap()),
            "0044-03-15 BC"
        );
        assert_eq!(format_date(parse_date("2024-02-29").unwrap()), "2024-02-29");
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("02-01-2024"), None);
        assert_eq!(parse_date("infinity"), Some(POS_INFINITY));
        assert_eq!(format_time(parse_time("10:11:12.5").unwrap()), "10:11:12.5");
        assert_eq!(parse_time("25:00"), None);
        assert_eq!(
            format_timestamp(parse_timestamp("2024-01-01").unwrap(), false),
            "2024-01-01 00:00:00"
        );
    }

    #[test]
    fn where_clause_datetime_intervals() {
        let iv = parse_interval("1 year 2 mons 3 days 04:05:06.5").unwrap();
        assert_eq!(format_interval(&iv), "P1Y2M3DT4H5M6.5S");
        assert_eq!(parse_interval("P1Y2M3DT4H5M6.5S"), Some(iv));
        assert_eq!(
            format_interval(&parse_interval("-1 day +02:00:00").unwrap()),
            "P-1DT2H"
        );
        assert_eq!(
            format_interval(&parse_interval("1 day ago").unwrap()),
            "P-1D"
        );
        assert_eq!(
            format_interval(&parse_interval("-1.5 seconds").unwrap()),
            "PT-1.5S"
        );
        assert_eq!(format_interval(&parse_interval("0").unwrap()), "PT0S");
        assert_eq!(
            parse_interval("1.5 months"),
            parse_interval("1 month 15 days")
        );
        assert_eq!(parse_interval("1 fortnight"), None);
        let month = parse_interval("1 month").unwrap();
        let thirty = parse_interval("30 days").unwrap();
        assert_eq!(month.compare(&thirty), Ordering::Equal);
        let jan31 = parse_timestamp("2024-01-31").unwrap();
        let feb29 = timestamp_add_interval(jan31, &month).unwrap();
        assert_eq!(format_timestamp(feb29, false), "2024-02-29 00:00:00");
        let diff = timestamp_diff(feb29, jan31).unwrap();
        assert_eq!(format_interval(&diff), "P29D");
        assert_eq!(
            format_interval(&iv.checked_mul(2.0).unwrap()),
            "P2Y4M6DT8H10M13S"
        );
    }
}
