//! Evaluation of a typed expression against one row, with SQL's
//! three-valued logic (`Value::Null` is unknown). Anything Postgres would
//! raise an error for (overflow, division by zero, unparsable input)
//! yields `EvalError`; the caller treats the row as not matching, as
//! Electric's `includes_record?` does.

use std::cell::RefCell;
use std::cmp::Ordering;

use super::array::{ArrayValue, Dim, MAX_DIMENSIONS};
use super::datetime::{self, Interval};
use super::expr::{Expr, Func, FuncKind};
use super::numeric::{self, Numeric};
use super::subquery::Membership;
use super::types::{Scalar, Type};
use super::value::{cast_value, compare_values, int_range, parse_value, values_equal, Value};
use super::Views;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EvalError;

type Result<T> = std::result::Result<T, EvalError>;

fn ok<T>(value: Option<T>) -> Result<T> {
    value.ok_or(EvalError)
}

/// The row being evaluated: its text by column, and the columns parsed so
/// far (an `IN` list compares one column many times; it is parsed once).
pub(crate) struct Row<'a, 'r> {
    lookup: &'a dyn Fn(usize) -> Option<&'r str>,
    parsed: RefCell<Vec<(usize, Value)>>,
    /// The subqueries' current values.
    views: &'a Views<'a>,
}

impl<'a, 'r> Row<'a, 'r> {
    pub fn new(lookup: &'a dyn Fn(usize) -> Option<&'r str>) -> Row<'a, 'r> {
        Row::with_views(lookup, &[])
    }

    pub fn with_views(
        lookup: &'a dyn Fn(usize) -> Option<&'r str>,
        views: &'a Views<'a>,
    ) -> Row<'a, 'r> {
        Row {
            lookup,
            parsed: RefCell::new(Vec::new()),
            views,
        }
    }

    fn column(&self, index: usize, ty: &Type) -> Result<Value> {
        if let Some((_, value)) = self.parsed.borrow().iter().find(|(i, _)| *i == index) {
            return Ok(value.clone());
        }
        let value = match (self.lookup)(index) {
            None => Value::Null,
            Some(text) => ok(parse_value(text, ty))?,
        };
        self.parsed.borrow_mut().push((index, value.clone()));
        Ok(value)
    }
}

pub(crate) fn evaluate(expr: &Expr, row: &Row) -> Result<Value> {
    match expr {
        Expr::Const { value, .. } => Ok(value.clone()),
        Expr::Column { index, ty } => row.column(*index, ty),
        Expr::Call { func, args } if is_predicate(func.kind) => {
            let [left, right] = args.as_slice() else {
                return Err(EvalError);
            };
            let (a, b) = (operand(left, row)?, operand(right, row)?);
            if a.get().is_null() || b.get().is_null() {
                return Ok(Value::Null);
            }
            let scalar = func.args.first().map_or(&Scalar::Unknown, |t| &t.scalar);
            predicate(func.kind, scalar, a.get(), b.get()).map(Value::Bool)
        }
        Expr::Call { func, args } => {
            // Every argument is evaluated (and may fail) before a strict
            // function sees a NULL among them, as in Postgres' executor.
            let mut values = Vec::with_capacity(args.len());
            for arg in args {
                values.push(evaluate(arg, row)?);
            }
            call(func, values)
        }
        Expr::Cast { arg, ty } => {
            let value = evaluate(arg, row)?;
            ok(cast_value(value, &arg.ty(), ty))
        }
        Expr::And(items) => {
            let mut unknown = false;
            for item in items {
                match evaluate(item, row)? {
                    Value::Bool(false) => return Ok(Value::Bool(false)),
                    Value::Bool(true) => {}
                    Value::Null => unknown = true,
                    _ => return Err(EvalError),
                }
            }
            Ok(if unknown {
                Value::Null
            } else {
                Value::Bool(true)
            })
        }
        Expr::Or(items) => {
            let mut unknown = false;
            for item in items {
                match evaluate(item, row)? {
                    Value::Bool(true) => return Ok(Value::Bool(true)),
                    Value::Bool(false) => {}
                    Value::Null => unknown = true,
                    _ => return Err(EvalError),
                }
            }
            Ok(if unknown {
                Value::Null
            } else {
                Value::Bool(false)
            })
        }
        Expr::Not(arg) => match evaluate(arg, row)? {
            Value::Bool(b) => Ok(Value::Bool(!b)),
            Value::Null => Ok(Value::Null),
            _ => Err(EvalError),
        },
        Expr::IsNull { arg, negated } => {
            let is_null = evaluate(arg, row)?.is_null();
            Ok(Value::Bool(is_null != *negated))
        }
        Expr::BoolTest { arg, test } => {
            use super::ast::BoolTestKind::*;
            let value = match evaluate(arg, row)? {
                Value::Bool(b) => Some(b),
                Value::Null => None,
                _ => return Err(EvalError),
            };
            Ok(Value::Bool(match test {
                IsTrue => value == Some(true),
                IsNotTrue => value != Some(true),
                IsFalse => value == Some(false),
                IsNotFalse => value != Some(false),
                IsUnknown => value.is_none(),
                IsNotUnknown => value.is_some(),
            }))
        }
        Expr::Distinct {
            left,
            right,
            negated,
        } => {
            let (a, b) = (operand(left, row)?, operand(right, row)?);
            let distinct = match (a.get().is_null(), b.get().is_null()) {
                (true, true) => false,
                (true, false) | (false, true) => true,
                (false, false) => !ok(values_equal(a.get(), b.get(), &left.ty().scalar))?,
            };
            Ok(Value::Bool(distinct != *negated))
        }
        Expr::Quantified {
            func,
            left,
            right,
            all,
        } => {
            let left = operand(left, row)?;
            let array = operand(right, row)?;
            let array = match array.get() {
                Value::Null => return Ok(Value::Null),
                Value::Array(a) => a,
                _ => return Err(EvalError),
            };
            quantified(func, left.get(), array, *all)
        }
        Expr::Coalesce { args, .. } => {
            for arg in args {
                let value = evaluate(arg, row)?;
                if !value.is_null() {
                    return Ok(value);
                }
            }
            Ok(Value::Null)
        }
        Expr::MinMax { args, ty, greatest } => {
            let mut best: Option<Value> = None;
            for arg in args {
                let value = evaluate(arg, row)?;
                if value.is_null() {
                    continue;
                }
                best = Some(match best {
                    None => value,
                    Some(current) => {
                        let ordering = ok(compare_values(&value, &current, &ty.scalar))?;
                        let better = if *greatest {
                            ordering == Ordering::Greater
                        } else {
                            ordering == Ordering::Less
                        };
                        if better {
                            value
                        } else {
                            current
                        }
                    }
                });
            }
            Ok(best.unwrap_or(Value::Null))
        }
        Expr::Sublink { lhs, subquery } => {
            let view = ok(row.views.get(*subquery).copied().flatten())?;
            let values = lhs
                .iter()
                .map(|e| evaluate(e, row))
                .collect::<Result<Vec<Value>>>()?;
            Ok(match view.contains(&values) {
                Membership::In => Value::Bool(true),
                Membership::NotIn => Value::Bool(false),
                Membership::Unknown => Value::Null,
            })
        }
        Expr::ArrayCtor { elements, ty } => {
            let mut values = Vec::with_capacity(elements.len());
            for element in elements {
                values.push(evaluate(element, row)?);
            }
            build_array(values, ty)
        }
    }
}

/// `ANY`: true if any comparison is, else NULL if any was NULL, else false.
/// `ALL`: false if any comparison is, else NULL if any was NULL, else true.
fn quantified(func: &Func, left: &Value, array: &ArrayValue, all: bool) -> Result<Value> {
    if !is_predicate(func.kind) {
        return Err(EvalError);
    }
    let scalar = func.args.first().map_or(&Scalar::Unknown, |t| &t.scalar);
    let mut unknown = false;
    for element in &array.elements {
        if left.is_null() || element.is_null() {
            unknown = true;
            continue;
        }
        let result = predicate(func.kind, scalar, left, element)?;
        if result != all {
            return Ok(Value::Bool(result));
        }
    }
    Ok(if unknown {
        Value::Null
    } else {
        Value::Bool(all)
    })
}

/// `ARRAY[...]`: scalars make a one-dimensional array; sub-arrays stack
/// into one more dimension and must all have the same shape.
pub(crate) fn build_array(values: Vec<Value>, ty: &Type) -> Result<Value> {
    let nested = values.iter().any(|v| matches!(v, Value::Array(_)));
    if !nested {
        return Ok(Value::Array(Box::new(ArrayValue::one_dimensional(values))));
    }
    let mut shape: Option<Vec<Dim>> = None;
    let mut elements = Vec::new();
    let count = values.len();
    for value in values {
        let Value::Array(sub) = value else {
            return Err(EvalError);
        };
        let sub_shape: Vec<Dim> = sub
            .dims
            .iter()
            .map(|d| Dim {
                lower: d.lower,
                len: d.len,
            })
            .collect();
        match &shape {
            None => shape = Some(sub_shape),
            Some(existing) if *existing != sub_shape => return Err(EvalError),
            Some(_) => {}
        }
        elements.extend(sub.elements);
    }
    let inner = shape.unwrap_or_default();
    if inner.is_empty() {
        return Ok(Value::Array(Box::new(ArrayValue::empty())));
    }
    if inner.len() + 1 > MAX_DIMENSIONS {
        return Err(EvalError);
    }
    let _ = ty;
    let mut dims = vec![Dim {
        lower: 1,
        len: count,
    }];
    dims.extend(inner);
    Ok(Value::Array(Box::new(ArrayValue { dims, elements })))
}

fn int_result(value: Option<i64>, ty: &Type) -> Result<Value> {
    let value = ok(value)?;
    let (min, max) = int_range(&ty.scalar);
    if (min..=max).contains(&value) {
        Ok(Value::Int(value))
    } else {
        Err(EvalError)
    }
}

fn float_result(value: f64, a: f64, b: f64, zero_ok: bool, ty: &Type) -> Result<Value> {
    let inputs_infinite = a.is_infinite() || b.is_infinite();
    ok(numeric::check_float(
        value,
        inputs_infinite,
        zero_ok,
        ty.scalar == Scalar::Float4,
    ))
    .map(Value::Float)
}

/// `dpow`: POSIX's rules for NaN and infinities spelled out, Postgres'
/// errors for 0 ^ negative and negative ^ fractional, and overflow or
/// underflow of a finite result as errors.
fn float_pow(x: f64, y: f64) -> Option<f64> {
    if x.is_nan() {
        return Some(if y.is_nan() || y != 0.0 {
            f64::NAN
        } else {
            1.0
        });
    }
    if y.is_nan() {
        return Some(if x != 1.0 { f64::NAN } else { 1.0 });
    }
    if (x == 0.0 && y < 0.0) || (x < 0.0 && y.floor() != y) {
        return None;
    }
    if y.is_infinite() {
        let abs = x.abs();
        return Some(if abs == 1.0 {
            1.0
        } else if y > 0.0 {
            if abs > 1.0 {
                y
            } else {
                0.0
            }
        } else if abs > 1.0 {
            0.0
        } else {
            -y
        });
    }
    if x.is_infinite() {
        if y == 0.0 {
            return Some(1.0);
        }
        if x > 0.0 {
            return Some(if y > 0.0 { x } else { 0.0 });
        }
        let half = y / 2.0;
        let odd = half.floor() != half;
        return Some(if y > 0.0 {
            if odd {
                x
            } else {
                -x
            }
        } else if odd {
            -0.0
        } else {
            0.0
        });
    }
    let result = x.powf(y);
    if result.is_infinite() || result.is_nan() || (result == 0.0 && x != 0.0) {
        return None;
    }
    Some(result)
}

fn ordering_result(kind: FuncKind, ordering: Ordering) -> bool {
    match kind {
        FuncKind::Eq => ordering == Ordering::Equal,
        FuncKind::Ne => ordering != Ordering::Equal,
        FuncKind::Lt => ordering == Ordering::Less,
        FuncKind::Gt => ordering == Ordering::Greater,
        FuncKind::Le => ordering != Ordering::Greater,
        _ => ordering != Ordering::Less,
    }
}

/// Applies a resolved function to evaluated arguments (strict functions
/// return NULL on a NULL argument).
pub(crate) fn call(func: &Func, args: Vec<Value>) -> Result<Value> {
    use FuncKind::*;
    if func.kind.is_strict() && args.iter().any(Value::is_null) {
        return Ok(Value::Null);
    }
    let ret = &func.ret;
    let arg_scalar = func
        .args
        .first()
        .map_or(Scalar::Unknown, |t| t.scalar.clone());
    let mut args = args.into_iter();
    let a = args.next().unwrap_or(Value::Null);
    let b = args.next().unwrap_or(Value::Null);
    Ok(match func.kind {
        Eq | Ne | Lt | Gt | Le | Ge | Like | NotLike | ILike | NotILike | Contains
        | ContainedBy | Overlap => Value::Bool(predicate(func.kind, &arg_scalar, &a, &b)?),
        Add | Sub | Mul | Div | Mod => arithmetic(func.kind, a, b, ret)?,
        Pow => match (a, b) {
            (Value::Float(x), Value::Float(y)) => Value::Float(ok(float_pow(x, y))?),
            (Value::Numeric(x), Value::Numeric(y)) => Value::Numeric(ok(Numeric::pow(x, y))?),
            _ => return Err(EvalError),
        },
        Neg => match a {
            Value::Int(i) => int_result(i.checked_neg(), ret)?,
            Value::Float(f) => Value::Float(-f),
            Value::Numeric(n) => Value::Numeric(Numeric::neg(n)),
            Value::Interval(iv) => Value::Interval(ok(iv.checked_neg())?),
            _ => return Err(EvalError),
        },
        Plus => a,
        Abs => match a {
            Value::Int(i) => int_result(i.checked_abs(), ret)?,
            Value::Float(f) => Value::Float(f.abs()),
            Value::Numeric(n) => Value::Numeric(Numeric::abs(n)),
            _ => return Err(EvalError),
        },
        Sqrt => match a {
            Value::Float(f) if f >= 0.0 || f.is_nan() => Value::Float(f.sqrt()),
            _ => return Err(EvalError),
        },
        Cbrt => match a {
            Value::Float(f) => Value::Float(f.cbrt()),
            _ => return Err(EvalError),
        },
        BitAnd | BitOr | BitXor => match (a, b) {
            (Value::Int(x), Value::Int(y)) => Value::Int(match func.kind {
                BitAnd => x & y,
                BitOr => x | y,
                _ => x ^ y,
            }),
            _ => return Err(EvalError),
        },
        BitNot => match a {
            Value::Int(x) => Value::Int(!x),
            _ => return Err(EvalError),
        },
        ShiftLeft | ShiftRight => match (a, b) {
            (Value::Int(x), Value::Int(y)) => shift(func.kind == ShiftLeft, x, y, &ret.scalar),
            _ => return Err(EvalError),
        },
        TextConcat => match (a, b) {
            (Value::Text(x), Value::Text(y)) => Value::Text(x + &y),
            _ => return Err(EvalError),
        },
        Lower | Upper => match a {
            // The `C` collation's folding (rendered SQL asks for it).
            Value::Text(t) => Value::Text(if func.kind == Lower {
                t.to_ascii_lowercase()
            } else {
                t.to_ascii_uppercase()
            }),
            _ => return Err(EvalError),
        },
        ArrayConcat => array_concat(a, b)?,
        ArrayAppend => array_push(a, b, false)?,
        ArrayPrepend => array_push(b, a, true)?,
        ArrayNdims => match a {
            Value::Array(x) if x.dims.is_empty() => Value::Null,
            Value::Array(x) => Value::Int(x.dims.len() as i64),
            _ => return Err(EvalError),
        },
        JustifyDays | JustifyHours | JustifyInterval => match a {
            Value::Interval(iv) => Value::Interval(match func.kind {
                JustifyDays => iv.justify_days(),
                JustifyHours => iv.justify_hours(),
                _ => iv.justify_interval(),
            }),
            _ => return Err(EvalError),
        },
    })
}

/// A constant is used in place; anything else is computed for this row.
enum Operand<'e> {
    Borrowed(&'e Value),
    Owned(Value),
}

impl Operand<'_> {
    fn get(&self) -> &Value {
        match self {
            Operand::Borrowed(v) => v,
            Operand::Owned(v) => v,
        }
    }
}

/// Constants are borrowed: a comparison with a literal (or an `IN` list,
/// or `= ANY` of a literal array) allocates nothing per row for it.
fn operand<'e>(expr: &'e Expr, row: &Row) -> Result<Operand<'e>> {
    match expr {
        Expr::Const { value, .. } => Ok(Operand::Borrowed(value)),
        other => evaluate(other, row).map(Operand::Owned),
    }
}

/// Strict boolean functions of two arguments, computed on borrowed values.
fn is_predicate(kind: FuncKind) -> bool {
    use FuncKind::*;
    matches!(
        kind,
        Eq | Ne
            | Lt
            | Gt
            | Le
            | Ge
            | Like
            | NotLike
            | ILike
            | NotILike
            | Contains
            | ContainedBy
            | Overlap
    )
}

fn predicate(kind: FuncKind, scalar: &Scalar, a: &Value, b: &Value) -> Result<bool> {
    use FuncKind::*;
    match kind {
        Eq | Ne | Lt | Gt | Le | Ge => Ok(ordering_result(kind, ok(compare_values(a, b, scalar))?)),
        Like | NotLike | ILike | NotILike => {
            let (Value::Text(text), Value::Text(pattern)) = (a, b) else {
                return Err(EvalError);
            };
            let matched = if matches!(kind, ILike | NotILike) {
                // As Postgres under `COLLATE "C"`: lower() both, ASCII only.
                like(&text.to_ascii_lowercase(), &pattern.to_ascii_lowercase())?
            } else {
                like(text, pattern)?
            };
            Ok(matched != matches!(kind, NotLike | NotILike))
        }
        Contains | ContainedBy | Overlap => {
            let (Value::Array(x), Value::Array(y)) = (a, b) else {
                return Err(EvalError);
            };
            match kind {
                Contains => array_contains(x, y, scalar),
                ContainedBy => array_contains(y, x, scalar),
                _ => array_overlaps(x, y, scalar),
            }
        }
        _ => Err(EvalError),
    }
}

fn shift(left: bool, x: i64, y: i64, scalar: &Scalar) -> Value {
    // Postgres shifts in the C type of the operand (shift count masked by
    // the hardware), so do the same width-wise.
    let amount = y as u32;
    Value::Int(match scalar {
        Scalar::Int2 => {
            let v = x as i32;
            i64::from(
                (if left {
                    v.wrapping_shl(amount)
                } else {
                    v.wrapping_shr(amount)
                }) as i16,
            )
        }
        Scalar::Int4 => {
            let v = x as i32;
            i64::from(if left {
                v.wrapping_shl(amount)
            } else {
                v.wrapping_shr(amount)
            })
        }
        _ => {
            if left {
                x.wrapping_shl(amount)
            } else {
                x.wrapping_shr(amount)
            }
        }
    })
}

fn arithmetic(kind: FuncKind, a: Value, b: Value, ret: &Type) -> Result<Value> {
    use FuncKind::*;
    Ok(match (a, b) {
        (Value::Int(x), Value::Int(y)) => int_result(
            match kind {
                Add => x.checked_add(y),
                Sub => x.checked_sub(y),
                Mul => x.checked_mul(y),
                Div => x.checked_div(y),
                _ => {
                    if y == -1 {
                        // Postgres special-cases this to avoid INT_MIN % -1 traps.
                        Some(0)
                    } else {
                        x.checked_rem(y)
                    }
                }
            },
            ret,
        )?,
        (Value::Float(x), Value::Float(y)) => {
            let (value, zero_ok) = match kind {
                Add => (x + y, true),
                Sub => (x - y, true),
                Mul => (x * y, x == 0.0 || y == 0.0),
                Div => {
                    // `float8_div`: NaN / 0 is NaN, not an error.
                    if y == 0.0 && !x.is_nan() {
                        return Err(EvalError);
                    }
                    (x / y, x == 0.0 || y.is_infinite())
                }
                _ => return Err(EvalError),
            };
            float_result(value, x, y, zero_ok, ret)?
        }
        (Value::Numeric(x), Value::Numeric(y)) => Value::Numeric(ok(match kind {
            Add => Numeric::add(x, y),
            Sub => Numeric::sub(x, y),
            Mul => Numeric::mul(x, y),
            Div => Numeric::div(x, y),
            _ => Numeric::rem(x, y),
        })?),
        (Value::Date(d), Value::Int(n)) | (Value::Int(n), Value::Date(d))
            if kind != Sub || ret.scalar == Scalar::Date =>
        {
            let days = if kind == Sub { ok(n.checked_neg())? } else { n };
            Value::Date(ok(datetime::date_add_days(d, days))?)
        }
        (Value::Date(x), Value::Date(y)) => {
            if [x, y]
                .iter()
                .any(|d| *d == datetime::NEG_INFINITY || *d == datetime::POS_INFINITY)
            {
                return Err(EvalError);
            }
            int_result(x.checked_sub(y), ret)?
        }
        (Value::Date(d), Value::Interval(iv)) | (Value::Interval(iv), Value::Date(d)) => {
            let ts = ok(datetime::date_to_timestamp(d))?;
            Value::Timestamp(timestamp_interval(kind, ts, &iv)?)
        }
        (Value::Date(d), Value::Time(t)) | (Value::Time(t), Value::Date(d)) => {
            let ts = ok(datetime::date_to_timestamp(d))?;
            if ts == datetime::NEG_INFINITY || ts == datetime::POS_INFINITY {
                Value::Timestamp(ts)
            } else {
                let result = ok(ts.checked_add(t))?;
                if !datetime::timestamp_in_range(result) {
                    return Err(EvalError);
                }
                Value::Timestamp(result)
            }
        }
        (Value::Timestamp(ts), Value::Interval(iv))
        | (Value::Interval(iv), Value::Timestamp(ts)) => {
            Value::Timestamp(timestamp_interval(kind, ts, &iv)?)
        }
        (Value::Timestamptz(ts), Value::Interval(iv))
        | (Value::Interval(iv), Value::Timestamptz(ts)) => {
            Value::Timestamptz(timestamp_interval(kind, ts, &iv)?)
        }
        (Value::Time(t), Value::Interval(iv)) | (Value::Interval(iv), Value::Time(t)) => {
            Value::Time(if kind == Sub {
                datetime::time_sub_interval(t, &iv)
            } else {
                datetime::time_add_interval(t, &iv)
            })
        }
        (Value::Interval(x), Value::Interval(y)) => Value::Interval(ok(match kind {
            Add => x.checked_add(&y),
            _ => x.checked_sub(&y),
        })?),
        (Value::Timestamp(x), Value::Timestamp(y))
        | (Value::Timestamptz(x), Value::Timestamptz(y)) => {
            Value::Interval(ok(datetime::timestamp_diff(x, y))?)
        }
        (Value::Time(x), Value::Time(y)) => Value::Interval(Interval {
            months: 0,
            days: 0,
            micros: x - y,
        }),
        (Value::Interval(iv), Value::Float(f)) | (Value::Float(f), Value::Interval(iv)) => {
            Value::Interval(ok(match kind {
                Mul => iv.checked_mul(f),
                _ => iv.checked_div(f),
            })?)
        }
        _ => return Err(EvalError),
    })
}

fn timestamp_interval(kind: FuncKind, ts: i64, iv: &Interval) -> Result<i64> {
    ok(if kind == FuncKind::Sub {
        datetime::timestamp_sub_interval(ts, iv)
    } else {
        datetime::timestamp_add_interval(ts, iv)
    })
}

/// `array_cat`: NULL inputs are ignored; equal-rank arrays stack along the
/// first dimension, an array one rank lower joins as one more slice.
fn array_concat(a: Value, b: Value) -> Result<Value> {
    let (x, y) = match (a, b) {
        (Value::Null, other) | (other, Value::Null) => return Ok(other),
        (Value::Array(x), Value::Array(y)) => (x, y),
        _ => return Err(EvalError),
    };
    if x.dims.is_empty() {
        return Ok(Value::Array(y));
    }
    if y.dims.is_empty() {
        return Ok(Value::Array(x));
    }
    // Inner dimensions must agree in length and lower bound, as in
    // Postgres ("cannot concatenate incompatible arrays").
    let (xd, yd) = (x.dims.len(), y.dims.len());
    let dims = if xd == yd {
        if x.dims[1..] != y.dims[1..] {
            return Err(EvalError);
        }
        let mut dims = x.dims.clone();
        dims[0].len += y.dims[0].len;
        dims
    } else if xd + 1 == yd {
        if x.dims[..] != y.dims[1..] {
            return Err(EvalError);
        }
        let mut dims = y.dims.clone();
        dims[0].len += 1;
        dims
    } else if xd == yd + 1 {
        if y.dims[..] != x.dims[1..] {
            return Err(EvalError);
        }
        let mut dims = x.dims.clone();
        dims[0].len += 1;
        dims
    } else {
        return Err(EvalError);
    };
    let mut elements = x.elements;
    elements.extend(y.elements);
    Ok(Value::Array(Box::new(ArrayValue { dims, elements })))
}

/// `array_append` / `array_prepend`: one-dimensional (or empty) arrays only.
fn array_push(array: Value, element: Value, front: bool) -> Result<Value> {
    let mut array = match array {
        Value::Null => Box::new(ArrayValue::empty()),
        Value::Array(a) => a,
        _ => return Err(EvalError),
    };
    match array.dims.len() {
        0 => Ok(Value::Array(Box::new(ArrayValue::one_dimensional(vec![
            element,
        ])))),
        1 => {
            array.dims[0].len += 1;
            if front {
                // Postgres keeps the input's lower bound on prepend.
                array.elements.insert(0, element);
            } else {
                array.elements.push(element);
            }
            Ok(Value::Array(array))
        }
        _ => Err(EvalError),
    }
}

fn contains_element(haystack: &ArrayValue, needle: &Value, scalar: &Scalar) -> Result<bool> {
    for candidate in &haystack.elements {
        if candidate.is_null() {
            continue;
        }
        if ok(values_equal(candidate, needle, scalar))? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `arraycontains`: every element of `inner` is in `outer`; a NULL element
/// matches nothing, so makes the result false.
fn array_contains(outer: &ArrayValue, inner: &ArrayValue, scalar: &Scalar) -> Result<bool> {
    for element in &inner.elements {
        if element.is_null() || !contains_element(outer, element, scalar)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn array_overlaps(x: &ArrayValue, y: &ArrayValue, scalar: &Scalar) -> Result<bool> {
    for element in &x.elements {
        if !element.is_null() && contains_element(y, element, scalar)? {
            return Ok(true);
        }
    }
    Ok(false)
}

enum PatternToken {
    Literal(char),
    AnyChar,
    AnySequence,
}

/// `LIKE` with the default escape character `\`. Matching is the classic
/// two-pointer wildcard scan: linear memory, no recursion, and at worst
/// O(text × pattern) time on adversarial patterns.
pub(crate) fn like(text: &str, pattern: &str) -> Result<bool> {
    let mut tokens = Vec::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            '%' => {
                if matches!(tokens.last(), Some(PatternToken::AnySequence)) {
                    continue;
                }
                PatternToken::AnySequence
            }
            '_' => PatternToken::AnyChar,
            '\\' => PatternToken::Literal(chars.next().ok_or(EvalError)?),
            c => PatternToken::Literal(c),
        });
    }
    let text: Vec<char> = text.chars().collect();
    let (mut t, mut p) = (0usize, 0usize);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match tokens.get(p) {
            Some(PatternToken::AnySequence) => {
                backtrack = Some((p, t));
                p += 1;
                continue;
            }
            Some(PatternToken::AnyChar) => {
                t += 1;
                p += 1;
                continue;
            }
            Some(PatternToken::Literal(c)) if *c == text[t] => {
                t += 1;
                p += 1;
                continue;
            }
            _ => {}
        }
        match backtrack {
            Some((star, matched)) => {
                p = star + 1;
                t = matched + 1;
                backtrack = Some((star, matched + 1));
            }
            None => return Ok(false),
        }
    }
    Ok(tokens[p.min(tokens.len())..]
        .iter()
        .all(|tok| matches!(tok, PatternToken::AnySequence)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn where_clause_eval_like_patterns() {
        let cases = [
            ("hello", "h%o", true),
            ("hello", "h_llo", true),
            ("hello", "h_lo", false),
            ("hello", "%", true),
            ("", "%", true),
            ("", "_", false),
            ("a%b", "a\\%b", true),
            ("axb", "a\\%b", false),
            ("abcabc", "%abc", true),
            ("mississippi", "%iss%ppi", true),
            ("mississippi", "m%x%", false),
            ("héllo", "h_llo", true),
        ];
        for (text, pattern, expected) in cases {
            assert_eq!(like(text, pattern), Ok(expected), "{text} LIKE {pattern}");
        }
        assert_eq!(like("a", "a\\"), Err(EvalError));
        let long = "a".repeat(5000);
        assert_eq!(like(&long, &format!("{}b", "%a".repeat(50))), Ok(false));
    }
}
