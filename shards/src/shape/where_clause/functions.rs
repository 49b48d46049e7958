//! The operators and functions a `where` clause may use (the scalar ones;
//! polymorphic array ones are resolved in `typecheck`), and Postgres'
//! overload resolution (`func_select_candidate`) to pick one of them.

use super::expr::FuncKind;
use super::types::{implicitly_castable, Category, Scalar, Type};

#[derive(Clone, Debug)]
pub(crate) struct Signature {
    pub kind: FuncKind,
    pub args: Vec<Type>,
    pub ret: Type,
}

fn sig(kind: FuncKind, args: &[Scalar], ret: Scalar) -> Signature {
    Signature {
        kind,
        args: args.iter().cloned().map(Type::scalar).collect(),
        ret: Type::scalar(ret),
    }
}

const NUMERIC_TYPES: [Scalar; 6] = [
    Scalar::Int2,
    Scalar::Int4,
    Scalar::Int8,
    Scalar::Float4,
    Scalar::Float8,
    Scalar::Numeric,
];

const INTEGER_TYPES: [Scalar; 3] = [Scalar::Int2, Scalar::Int4, Scalar::Int8];

/// Types with a btree ordering we evaluate.
pub(crate) const COMPARABLE_TYPES: [Scalar; 15] = [
    Scalar::Bool,
    Scalar::Int2,
    Scalar::Int4,
    Scalar::Int8,
    Scalar::Float4,
    Scalar::Float8,
    Scalar::Numeric,
    Scalar::Text,
    Scalar::Bpchar,
    Scalar::Uuid,
    Scalar::Date,
    Scalar::Time,
    Scalar::Timestamp,
    Scalar::Timestamptz,
    Scalar::Interval,
];

pub(crate) fn is_comparable(ty: &Type) -> bool {
    COMPARABLE_TYPES.contains(&ty.scalar) || (ty.scalar.is_string() && ty.scalar != Scalar::Unknown)
}

fn comparison_kind(op: &str) -> Option<FuncKind> {
    Some(match op {
        "=" => FuncKind::Eq,
        "<>" => FuncKind::Ne,
        "<" => FuncKind::Lt,
        ">" => FuncKind::Gt,
        "<=" => FuncKind::Le,
        ">=" => FuncKind::Ge,
        _ => return None,
    })
}

/// Whether `op` is one of the array-only operators (`@>`, `<@`, `&&`).
pub(crate) fn array_operator_kind(op: &str) -> Option<FuncKind> {
    Some(match op {
        "@>" => FuncKind::Contains,
        "<@" => FuncKind::ContainedBy,
        "&&" => FuncKind::Overlap,
        _ => return None,
    })
}

pub(crate) fn comparison(op: &str) -> Option<FuncKind> {
    comparison_kind(op)
}

/// Scalar overloads of an operator; None if the operator is unknown.
/// Operators that exist only for arrays return an empty list so that a
/// scalar use reads as an overload failure, not an unknown operator.
pub(crate) fn operator_signatures(op: &str, arity: usize) -> Option<Vec<Signature>> {
    use Scalar::*;
    let mut sigs = Vec::new();
    match (op, arity) {
        (_, 2) if comparison_kind(op).is_some() => {
            let kind = comparison_kind(op)?;
            for t in COMPARABLE_TYPES {
                sigs.push(sig(kind, &[t.clone(), t], Bool));
            }
            // Postgres' cross-type float comparisons (`float48eq` etc.),
            // which decide how `float4 = 0.1` is evaluated.
            sigs.push(sig(kind, &[Float4, Float8], Bool));
            sigs.push(sig(kind, &[Float8, Float4], Bool));
            // ...and the date/timestamp ones (`date_lt_timestamp` etc.),
            // which compare a date beyond the timestamp range as larger
            // than every finite timestamp instead of failing a cast.
            for (a, b) in [
                (Date, Timestamp),
                (Timestamp, Date),
                (Date, Timestamptz),
                (Timestamptz, Date),
                (Timestamp, Timestamptz),
                (Timestamptz, Timestamp),
            ] {
                sigs.push(sig(kind, &[a, b], Bool));
            }
        }
        ("+" | "-" | "*" | "/", 2) => {
            let kind = match op {
                "+" => FuncKind::Add,
                "-" => FuncKind::Sub,
                "*" => FuncKind::Mul,
                _ => FuncKind::Div,
            };
            for t in NUMERIC_TYPES {
                sigs.push(sig(kind, &[t.clone(), t.clone()], t));
            }
            sigs.push(sig(kind, &[Float4, Float8], Float8));
            sigs.push(sig(kind, &[Float8, Float4], Float8));
            match kind {
                FuncKind::Add => {
                    sigs.push(sig(kind, &[Date, Int4], Date));
                    sigs.push(sig(kind, &[Int4, Date], Date));
                    sigs.push(sig(kind, &[Date, Interval], Timestamp));
                    sigs.push(sig(kind, &[Interval, Date], Timestamp));
                    sigs.push(sig(kind, &[Date, Time], Timestamp));
                    sigs.push(sig(kind, &[Time, Date], Timestamp));
                    sigs.push(sig(kind, &[Timestamp, Interval], Timestamp));
                    sigs.push(sig(kind, &[Interval, Timestamp], Timestamp));
                    sigs.push(sig(kind, &[Timestamptz, Interval], Timestamptz));
                    sigs.push(sig(kind, &[Interval, Timestamptz], Timestamptz));
                    sigs.push(sig(kind, &[Time, Interval], Time));
                    sigs.push(sig(kind, &[Interval, Time], Time));
                    sigs.push(sig(kind, &[Interval, Interval], Interval));
                }
                FuncKind::Sub => {
                    sigs.push(sig(kind, &[Date, Int4], Date));
                    sigs.push(sig(kind, &[Date, Date], Int4));
                    sigs.push(sig(kind, &[Date, Interval], Timestamp));
                    sigs.push(sig(kind, &[Timestamp, Interval], Timestamp));
                    sigs.push(sig(kind, &[Timestamptz, Interval], Timestamptz));
                    sigs.push(sig(kind, &[Time, Interval], Time));
                    sigs.push(sig(kind, &[Interval, Interval], Interval));
                    sigs.push(sig(kind, &[Timestamp, Timestamp], Interval));
                    sigs.push(sig(kind, &[Timestamptz, Timestamptz], Interval));
                    sigs.push(sig(kind, &[Time, Time], Interval));
                }
                FuncKind::Mul => {
                    sigs.push(sig(kind, &[Interval, Float8], Interval));
                    sigs.push(sig(kind, &[Float8, Interval], Interval));
                }
                _ => sigs.push(sig(kind, &[Interval, Float8], Interval)),
            }
        }
        ("%", 2) => {
            for t in [Int2, Int4, Int8, Numeric] {
                sigs.push(sig(FuncKind::Mod, &[t.clone(), t.clone()], t));
            }
        }
        ("^", 2) => {
            sigs.push(sig(FuncKind::Pow, &[Float8, Float8], Float8));
            sigs.push(sig(FuncKind::Pow, &[Numeric, Numeric], Numeric));
        }
        ("&" | "|" | "#", 2) => {
            let kind = match op {
                "&" => FuncKind::BitAnd,
                "|" => FuncKind::BitOr,
                _ => FuncKind::BitXor,
            };
            for t in INTEGER_TYPES {
                sigs.push(sig(kind, &[t.clone(), t.clone()], t));
            }
        }
        ("<<" | ">>", 2) => {
            let kind = if op == "<<" {
                FuncKind::ShiftLeft
            } else {
                FuncKind::ShiftRight
            };
            for t in INTEGER_TYPES {
                sigs.push(sig(kind, &[t.clone(), Int4], t));
            }
        }
        ("||", 2) => sigs.push(sig(FuncKind::TextConcat, &[Text, Text], Text)),
        ("~~" | "!~~" | "~~*" | "!~~*", 2) => {
            let kind = match op {
                "~~" => FuncKind::Like,
                "!~~" => FuncKind::NotLike,
                "~~*" => FuncKind::ILike,
                _ => FuncKind::NotILike,
            };
            sigs.push(sig(kind, &[Text, Text], Bool));
            sigs.push(sig(kind, &[Bpchar, Text], Bool));
        }
        ("@>" | "<@" | "&&", 2) => {}
        ("-" | "+" | "@", 1) => {
            let kind = match op {
                "-" => FuncKind::Neg,
                "+" => FuncKind::Plus,
                _ => FuncKind::Abs,
            };
            for t in NUMERIC_TYPES {
                sigs.push(sig(kind, std::slice::from_ref(&t), t.clone()));
            }
            if kind == FuncKind::Neg {
                sigs.push(sig(kind, &[Interval], Interval));
            }
        }
        ("|/", 1) => sigs.push(sig(FuncKind::Sqrt, &[Float8], Float8)),
        ("||/", 1) => sigs.push(sig(FuncKind::Cbrt, &[Float8], Float8)),
        ("~", 1) => {
            for t in INTEGER_TYPES {
                sigs.push(sig(FuncKind::BitNot, std::slice::from_ref(&t), t.clone()));
            }
        }
        _ => return None,
    }
    Some(sigs)
}

/// Scalar functions by name and arity; None if unknown.
pub(crate) fn function_signatures(name: &str, arity: usize) -> Option<Vec<Signature>> {
    use Scalar::*;
    Some(match (name, arity) {
        ("lower", 1) => vec![sig(FuncKind::Lower, &[Text], Text)],
        ("upper", 1) => vec![sig(FuncKind::Upper, &[Text], Text)],
        ("like", 2) => vec![sig(FuncKind::Like, &[Text, Text], Bool)],
        ("ilike", 2) => vec![sig(FuncKind::ILike, &[Text, Text], Bool)],
        ("justify_days", 1) => vec![sig(FuncKind::JustifyDays, &[Interval], Interval)],
        ("justify_hours", 1) => vec![sig(FuncKind::JustifyHours, &[Interval], Interval)],
        ("justify_interval", 1) => vec![sig(FuncKind::JustifyInterval, &[Interval], Interval)],
        _ => return None,
    })
}

fn count_max<T>(items: Vec<T>, score: impl Fn(&T) -> usize) -> Vec<T> {
    let best = items.iter().map(&score).max().unwrap_or(0);
    items.into_iter().filter(|c| score(c) == best).collect()
}

/// Postgres' overload resolution (`func_select_candidate`, and for
/// operators the "assume the unknown side has the other side's type"
/// exact-match rule). Returns the one candidate chosen, if any.
pub(crate) fn select_overload<'s>(
    candidates: &'s [Signature],
    args: &[Type],
    operator: bool,
) -> Option<&'s Signature> {
    let unknowns: Vec<bool> = args.iter().map(Type::is_unknown).collect();
    let any_unknown = unknowns.iter().any(|u| *u);
    if !any_unknown {
        if let Some(exact) = candidates.iter().find(|c| c.args == args) {
            return Some(exact);
        }
    } else if operator && args.len() == 2 && unknowns.iter().filter(|u| **u).count() == 1 {
        let known = args.iter().find(|t| !t.is_unknown())?;
        if let Some(exact) = candidates
            .iter()
            .find(|c| c.args.iter().all(|a| a == known))
        {
            return Some(exact);
        }
    }
    let mut remaining: Vec<&Signature> = candidates
        .iter()
        .filter(|c| {
            c.args.len() == args.len()
                && c.args
                    .iter()
                    .zip(args)
                    .all(|(want, have)| have.is_unknown() || implicitly_castable(have, want))
        })
        .collect();
    if remaining.len() <= 1 {
        return remaining.pop();
    }
    remaining = count_max(remaining, |c| {
        c.args
            .iter()
            .zip(args)
            .filter(|(want, have)| want == have)
            .count()
    });
    if remaining.len() == 1 {
        return remaining.pop();
    }
    remaining = count_max(remaining, |c| {
        c.args
            .iter()
            .zip(args)
            .filter(|(want, have)| !have.is_unknown() && want != have && want.is_preferred())
            .count()
    });
    if remaining.len() == 1 {
        return remaining.pop();
    }
    if any_unknown {
        for (i, _) in unknowns.iter().enumerate().filter(|(_, u)| **u) {
            let categories: Vec<Category> =
                remaining.iter().map(|c| c.args[i].category()).collect();
            let selected = if categories.contains(&Category::String) {
                Category::String
            } else if categories.windows(2).all(|w| w[0] == w[1]) {
                match categories.first() {
                    Some(c) => *c,
                    None => return None,
                }
            } else {
                return None;
            };
            let wants_preferred = remaining
                .iter()
                .any(|c| c.args[i].category() == selected && c.args[i].is_preferred());
            let filtered: Vec<&Signature> = remaining
                .iter()
                .copied()
                .filter(|c| {
                    c.args[i].category() == selected
                        && (!wants_preferred || c.args[i].is_preferred())
                })
                .collect();
            if !filtered.is_empty() {
                remaining = filtered;
            }
        }
        if remaining.len() == 1 {
            return remaining.pop();
        }
        let known: Vec<&Type> = args.iter().filter(|t| !t.is_unknown()).collect();
        if let Some(first) = known.first() {
            if known.iter().all(|t| t == first) {
                let assumed: Vec<&Signature> = remaining
                    .iter()
                    .copied()
                    .filter(|c| {
                        c.args.iter().zip(args).all(|(want, have)| {
                            implicitly_castable(if have.is_unknown() { first } else { have }, want)
                        })
                    })
                    .collect();
                if assumed.len() == 1 {
                    return assumed.into_iter().next();
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(op: &str, args: &[Scalar]) -> Option<(Vec<Scalar>, Scalar)> {
        let sigs = operator_signatures(op, args.len())?;
        let types: Vec<Type> = args.iter().cloned().map(Type::scalar).collect();
        select_overload(&sigs, &types, true).map(|s| {
            (
                s.args.iter().map(|a| a.scalar.clone()).collect(),
                s.ret.scalar.clone(),
            )
        })
    }

    #[test]
    fn where_clause_functions_overload_resolution_matches_postgres() {
        use Scalar::*;
        assert_eq!(pick("=", &[Int4, Unknown]), Some((vec![Int4, Int4], Bool)));
        assert_eq!(pick("=", &[Int4, Int8]), Some((vec![Int8, Int8], Bool)));
        assert_eq!(
            pick("=", &[Int4, Numeric]),
            Some((vec![Numeric, Numeric], Bool))
        );
        assert_eq!(
            pick("=", &[Float4, Numeric]),
            Some((vec![Float4, Float8], Bool))
        );
        assert_eq!(
            pick("=", &[Varchar, Unknown]),
            Some((vec![Text, Text], Bool))
        );
        assert_eq!(pick("=", &[Text, Int4]), None);
        assert_eq!(
            pick("~~", &[Unknown, Unknown]),
            Some((vec![Text, Text], Bool))
        );
        assert_eq!(
            pick("^", &[Int4, Int4]),
            Some((vec![Float8, Float8], Float8))
        );
        assert_eq!(pick("+", &[Int4, Int8]), Some((vec![Int8, Int8], Int8)));
        assert_eq!(
            pick("-", &[Timestamptz, Unknown]),
            Some((vec![Timestamptz, Timestamptz], Interval))
        );
        assert_eq!(pick("+", &[Date, Int4]), Some((vec![Date, Int4], Date)));
        // Postgres' cross-type operator (`timestamp_lt_date`), not a cast.
        assert_eq!(
            pick("<", &[Timestamp, Date]),
            Some((vec![Timestamp, Date], Bool))
        );
        assert_eq!(pick("=", &[Date, Unknown]), Some((vec![Date, Date], Bool)));
        assert_eq!(
            pick("||", &[Unknown, Unknown]),
            Some((vec![Text, Text], Text))
        );
        assert_eq!(pick("-", &[Int4]), Some((vec![Int4], Int4)));
        assert!(operator_signatures("~", 2).is_none());
        assert_eq!(operator_signatures("@>", 2).map(|s| s.len()), Some(0));
    }
}
