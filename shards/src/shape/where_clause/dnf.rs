//! The disjunctive normal form of a clause with subqueries, as Electric
//! lays it out for its `tags`, `active_conditions` and move patterns
//! (`Decomposer`, `DnfPlan`): `NOT` pushed to the leaves, `AND` the cross
//! product of its arms' disjuncts, `OR` their concatenation; then every
//! disjunct's leaves numbered left to right across all disjuncts, so a
//! leaf in two disjuncts has two positions. The layout is the wire's:
//! clients match move patterns against tag slots by position.
//!
//! Membership of a row is still the clause's own evaluation (SQL's NULL
//! rules, as the snapshot query has them); the plan only says which
//! conditions a row satisfies, as Electric reports them.

use md5::{Digest, Md5};

use super::ast::BoolTestKind;
use super::error::WhereError;
use super::eval::{evaluate, Row};
use super::expr::Expr;
use super::types::Type;
use super::value::Value;
use super::{Views, WhereColumn};

/// Bound on positions (the sum of disjunct widths): the cross product of
/// `AND`s over `OR`s grows exponentially in the clause's size, and every
/// row of the shape carries one tag slot per position.
pub(crate) const MAX_POSITIONS: usize = 256;

#[derive(Clone, Debug)]
pub(crate) struct Position {
    /// The leaf, in its positive form.
    pub leaf: Expr,
    pub negated: bool,
}

impl Position {
    /// For a subquery leaf: its index and the outer columns it tests.
    fn sublink(&self) -> Option<(usize, &[Expr])> {
        match &self.leaf {
            Expr::Sublink { lhs, subquery } => Some((*subquery, lhs)),
            _ => None,
        }
    }
}

/// A clause's DNF layout.
#[derive(Clone, Debug)]
pub struct DnfPlan {
    positions: Vec<Position>,
    /// Each disjunct's positions, ascending.
    disjuncts: Vec<Vec<usize>>,
}

/// One conjunction of (leaf, negated) terms.
type Conjunction<'e> = Vec<(&'e Expr, bool)>;

fn to_dnf(expr: &Expr, negated: bool) -> Result<Vec<Conjunction<'_>>, WhereError> {
    Ok(match (expr, negated) {
        (Expr::Or(items), false) | (Expr::And(items), true) => {
            let mut all = Vec::new();
            for item in items {
                all.extend(to_dnf(item, negated)?);
                bound(all.iter().map(Vec::len).sum())?;
            }
            all
        }
        (Expr::And(items), false) | (Expr::Or(items), true) => {
            let mut product: Vec<Conjunction> = vec![Vec::new()];
            for item in items {
                let arm = to_dnf(item, negated)?;
                let mut next = Vec::with_capacity(product.len() * arm.len());
                for left in &product {
                    for right in &arm {
                        let mut conjunction = left.clone();
                        conjunction.extend(right.iter().copied());
                        next.push(conjunction);
                    }
                    bound(next.iter().map(Vec::len).sum())?;
                }
                product = next;
            }
            product
        }
        (Expr::Not(arg), _) => to_dnf(arg, !negated)?,
        (leaf, _) => vec![vec![(leaf, negated)]],
    })
}

fn bound(positions: usize) -> Result<(), WhereError> {
    if positions > MAX_POSITIONS {
        return Err(WhereError::plain(format!(
            "WHERE clause with subqueries is too complex: its disjunctive normal form has more than {MAX_POSITIONS} conditions"
        )));
    }
    Ok(())
}

/// `AND`/`OR` of `items`, or the item itself when there is one (no
/// redundant parentheses in the SQL).
fn junction(and: bool, mut items: Vec<Expr>) -> Expr {
    match items.len() {
        1 => items.pop().unwrap_or(Expr::And(Vec::new())),
        _ if and => Expr::And(items),
        _ => Expr::Or(items),
    }
}

/// Electric's value hash: md5 of the stack id, the outer shape's handle
/// and the namespaced value, lower-case hex. The handle salts it, so the
/// same value hashes differently in every shape.
pub fn value_hash(stack_id: &str, handle: &str, namespaced: &str) -> String {
    let mut md5 = Md5::new();
    md5.update(stack_id.as_bytes());
    md5.update(handle.as_bytes());
    md5.update(namespaced.as_bytes());
    let digest = md5.finalize();
    let mut hex = String::with_capacity(32);
    for byte in digest.iter() {
        hex.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        hex.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
    }
    hex
}

/// A value as hashed: `v:<text>`, or `NULL`.
pub fn namespaced(text: Option<&str>) -> String {
    match text {
        Some(text) => format!("v:{text}"),
        None => "NULL".into(),
    }
}

/// A row's values as hashed: `<column>:<namespaced>` per column, joined
/// with nothing, with the outer columns' names.
pub fn namespaced_row(values: &[(&str, Option<&str>)]) -> String {
    let mut out = String::new();
    for (name, text) in values {
        out.push_str(name);
        out.push(':');
        out.push_str(&namespaced(*text));
    }
    out
}

/// Where a tag's hashes come from.
pub struct TagSalt<'s> {
    /// `ELECTRIC_DATABASE_ID` (Electric's stack id).
    pub stack_id: &'s str,
    /// The outer shape's handle.
    pub handle: &'s str,
}

impl DnfPlan {
    pub(crate) fn new(expr: &Expr) -> Result<DnfPlan, WhereError> {
        let dnf = to_dnf(expr, false)?;
        let mut positions = Vec::new();
        let mut disjuncts = Vec::with_capacity(dnf.len());
        for conjunction in dnf {
            let mut disjunct = Vec::with_capacity(conjunction.len());
            for (leaf, negated) in conjunction {
                disjunct.push(positions.len());
                positions.push(Position {
                    leaf: leaf.clone(),
                    negated,
                });
            }
            disjuncts.push(disjunct);
        }
        Ok(DnfPlan {
            positions,
            disjuncts,
        })
    }

    pub fn position_count(&self) -> usize {
        self.positions.len()
    }

    /// Each disjunct's positions, ascending.
    pub fn disjuncts(&self) -> &[Vec<usize>] {
        &self.disjuncts
    }

    /// The subquery a position tests (its index in the clause's
    /// dependencies), None for a plain condition.
    pub fn subquery_at(&self, position: usize) -> Option<usize> {
        self.positions
            .get(position)
            .and_then(|p| p.sublink().map(|(index, _)| index))
    }

    /// The columns subquery `index` tests, in the order written; None
    /// when no position tests it or a tested side is not a plain column.
    pub fn tested_columns(&self, index: usize) -> Option<Vec<usize>> {
        let position = self.positions_of(index).into_iter().next()?;
        let (_, lhs) = self.positions.get(position)?.sublink()?;
        lhs.iter()
            .map(|e| match e {
                Expr::Column { index, .. } => Some(*index),
                _ => None,
            })
            .collect()
    }

    /// Whether a position holds its leaf negated (`NOT IN`).
    pub fn is_negated(&self, position: usize) -> bool {
        self.positions.get(position).is_some_and(|p| p.negated)
    }

    /// The positions testing subquery `index`, ascending: a move's
    /// patterns pair each with each moved value.
    pub fn positions_of(&self, index: usize) -> Vec<usize> {
        (0..self.positions.len())
            .filter(|&p| self.subquery_at(p) == Some(index))
            .collect()
    }

    /// The hash a subquery position's value has in tags and patterns:
    /// `lhs_texts` are the tested columns' texts (the outer row's, or a
    /// moved dependency value's), `columns` the outer table's.
    pub fn value_hash(
        &self,
        position: usize,
        columns: &[WhereColumn],
        lhs_texts: &[Option<&str>],
        salt: &TagSalt,
    ) -> Option<String> {
        let (_, lhs) = self.positions.get(position)?.sublink()?;
        let namespaced = if let [_] = lhs {
            namespaced(lhs_texts.first().copied().flatten())
        } else {
            let named: Vec<(&str, Option<&str>)> = lhs
                .iter()
                .zip(lhs_texts)
                .map(|(column, text)| match column {
                    Expr::Column { index, .. } => {
                        (columns.get(*index).map_or("", |c| c.name.as_str()), *text)
                    }
                    _ => ("", *text),
                })
                .collect();
            namespaced_row(&named)
        };
        Some(value_hash(salt.stack_id, salt.handle, &namespaced))
    }

    /// The row's `tags`: one string per disjunct of `position_count` slots
    /// joined by `/` (a subquery position of the disjunct holds the hash of
    /// the row's tested columns, a plain one `1`, others nothing). They
    /// depend on the row's own columns only, never on the views.
    pub fn tags<'r>(
        &self,
        columns: &[WhereColumn],
        value: &dyn Fn(usize) -> Option<&'r str>,
        salt: &TagSalt,
    ) -> Vec<String> {
        let slots: Vec<String> = (0..self.positions.len())
            .map(|position| match self.positions[position].sublink() {
                Some((_, lhs)) => {
                    let texts: Vec<Option<&str>> = lhs
                        .iter()
                        .map(|column| match column {
                            Expr::Column { index, .. } => value(*index),
                            _ => None,
                        })
                        .collect();
                    self.value_hash(position, columns, &texts, salt)
                        .unwrap_or_default()
                }
                None => "1".into(),
            })
            .collect();
        self.disjuncts
            .iter()
            .map(|disjunct| {
                let mut tag = String::new();
                for (position, slot) in slots.iter().enumerate() {
                    if position > 0 {
                        tag.push('/');
                    }
                    if disjunct.binary_search(&position).is_ok() {
                        tag.push_str(slot);
                    }
                }
                tag
            })
            .collect()
    }

    /// The row's `active_conditions`: per position whether its condition
    /// holds under the views, a NULL or an error counting as false before
    /// a negation is applied (`NOT COALESCE(leaf, false)`), as Electric
    /// computes them.
    pub fn active_conditions<'r>(
        &self,
        value: &dyn Fn(usize) -> Option<&'r str>,
        views: &Views<'_>,
    ) -> Vec<bool> {
        let row = Row::with_views(value, views);
        self.positions
            .iter()
            .map(|p| {
                let holds = matches!(evaluate(&p.leaf, &row), Ok(Value::Bool(true)));
                holds != p.negated
            })
            .collect()
    }

    /// The where of a move-in query for subquery `trigger` (Electric's
    /// `move_in_where_clause`), as a tree over the positions' leaves:
    /// `candidate AND NOT exclusion`. The candidate is the OR of the
    /// disjuncts testing `trigger`, each the AND of its positions, the
    /// triggering one positive whatever its polarity (the caller binds it
    /// to the moved values only); the exclusion is the OR of the other
    /// disjuncts (rows already in the shape through them), NULL counting
    /// as not in. None when no position tests `trigger`.
    ///
    /// A negated triggering position (a value left a `NOT IN` set) also
    /// requires `NOT (lhs IN after)`, `after` being subquery index
    /// `after_index` bound to the post-move view: when a NULL stays in the
    /// set, `NOT IN` is unknown and the rows do not enter (Electric's query
    /// takes them).
    ///
    /// When a NULL left a single-column `NOT IN` set (`null_moved`), every
    /// row that the set after the move does not hold may enter (the NULL
    /// made them all unknown), so the moved values do not restrict the
    /// candidate; when the set became empty (`after_empty`), rows whose
    /// (single) tested column is NULL enter too (`NULL NOT IN ()` holds).
    /// A row form's moved values restrict the candidate to the rows they
    /// do not surely differ from (`(a, b) IN moved IS NOT FALSE`), which
    /// covers both cases and rows half NULL (`(1, NULL)` was kept out by
    /// `(1, 2)`). Electric's query misses all three.
    pub(crate) fn move_in_tree(
        &self,
        trigger: usize,
        after_index: usize,
        null_moved: bool,
        after_empty: bool,
    ) -> Option<Expr> {
        let conjunction = |disjunct: &[usize]| {
            junction(
                true,
                disjunct
                    .iter()
                    .map(|&p| {
                        let position = &self.positions[p];
                        let triggering = self.subquery_at(p) == Some(trigger);
                        match (position.negated, triggering, &position.leaf) {
                            (true, false, leaf) => Expr::Not(Box::new(leaf.clone())),
                            (true, true, Expr::Sublink { lhs, .. }) => {
                                let not_after = Expr::Not(Box::new(Expr::Sublink {
                                    lhs: lhs.clone(),
                                    subquery: after_index,
                                }));
                                let moved_values = match (after_empty, lhs.as_slice()) {
                                    (true, [column]) => Expr::Or(vec![
                                        position.leaf.clone(),
                                        Expr::IsNull {
                                            arg: Box::new(column.clone()),
                                            negated: false,
                                        },
                                    ]),
                                    // A row: the rows a moved value kept
                                    // out are those it does not surely
                                    // differ from, `(a, b) IN moved` true
                                    // or unknown (a NULL on either side
                                    // in a column the others match).
                                    (_, [_, _, ..]) => Expr::BoolTest {
                                        arg: Box::new(position.leaf.clone()),
                                        test: BoolTestKind::IsNotFalse,
                                    },
                                    _ => position.leaf.clone(),
                                };
                                if null_moved && lhs.len() == 1 {
                                    not_after
                                } else {
                                    Expr::And(vec![moved_values, not_after])
                                }
                            }
                            (_, _, leaf) => leaf.clone(),
                        }
                    })
                    .collect(),
            )
        };
        let (candidates, others): (Vec<&Vec<usize>>, Vec<&Vec<usize>>) = self
            .disjuncts
            .iter()
            .partition(|d| d.iter().any(|&p| self.subquery_at(p) == Some(trigger)));
        if candidates.is_empty() {
            return None;
        }
        let candidate = junction(false, candidates.iter().map(|d| conjunction(d)).collect());
        if others.is_empty() {
            return Some(candidate);
        }
        let exclusion = junction(false, others.iter().map(|d| conjunction(d)).collect());
        // "Not already in the shape" is "the other disjuncts were not
        // true": a NULL exclusion must not drop the row (Electric writes a
        // bare NOT, which loses such rows).
        let not_excluded = Expr::Not(Box::new(Expr::Coalesce {
            args: vec![
                exclusion,
                Expr::Const {
                    value: Value::Bool(false),
                    ty: Type::BOOL,
                    param: None,
                },
            ],
            ty: Type::BOOL,
        }));
        Some(Expr::And(vec![candidate, not_excluded]))
    }

    /// Whether some disjunct has all its positions active (Electric's
    /// `compute_inclusion`; the client's rule for keeping a row).
    pub fn included(&self, active: &[bool]) -> bool {
        self.disjuncts
            .iter()
            .any(|d| d.iter().all(|&p| active.get(p).copied().unwrap_or(false)))
    }
}
