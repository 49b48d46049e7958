//! Postgres array literals (`{1,2,"a b",NULL}`, `[0:1]={a,b}`,
//! `{{1,2},{3,4}}`): parsing, formatting, and `array_cmp` ordering.

use std::cmp::Ordering;

use super::value::Value;

/// Postgres' `MAXDIM`.
pub(crate) const MAX_DIMENSIONS: usize = 6;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Dim {
    pub lower: i32,
    pub len: usize,
}

/// A possibly multi-dimensional array, elements in row-major order.
/// `dims` is empty exactly when there are no elements.
#[derive(Clone, Debug)]
pub(crate) struct ArrayValue {
    pub dims: Vec<Dim>,
    pub elements: Vec<Value>,
}

impl ArrayValue {
    pub fn empty() -> ArrayValue {
        ArrayValue {
            dims: Vec::new(),
            elements: Vec::new(),
        }
    }

    pub fn one_dimensional(elements: Vec<Value>) -> ArrayValue {
        if elements.is_empty() {
            return ArrayValue::empty();
        }
        ArrayValue {
            dims: vec![Dim {
                lower: 1,
                len: elements.len(),
            }],
            elements,
        }
    }
}

/// The raw shape and element texts of an array literal, before the
/// elements are parsed with their type's input function.
pub(crate) struct RawArray {
    pub dims: Vec<Dim>,
    pub elements: Vec<Option<String>>,
}

fn is_array_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{b}' | '\u{c}')
}

struct ArrayParser<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    /// Length seen at each nesting depth; all sub-arrays must agree.
    lens: Vec<Option<usize>>,
    elements: Vec<Option<String>>,
    /// Depth at which elements appear; mixing depths is malformed.
    element_depth: Option<usize>,
}

impl ArrayParser<'_> {
    fn skip_space(&mut self) {
        while self.chars.peek().is_some_and(|c| is_array_space(*c)) {
            self.chars.next();
        }
    }

    fn level(&mut self, depth: usize) -> Option<()> {
        if depth >= MAX_DIMENSIONS {
            return None;
        }
        if self.lens.len() <= depth {
            self.lens.push(None);
        }
        let mut count = 0usize;
        self.skip_space();
        if self.chars.peek() == Some(&'}') {
            self.chars.next();
            // `{}` is only valid as the whole (empty) array.
            return (depth == 0).then_some(());
        }
        loop {
            self.skip_space();
            match self.chars.peek() {
                Some('{') => {
                    self.chars.next();
                    if self.element_depth.is_some_and(|d| d != depth + 1) {
                        return None;
                    }
                    self.level(depth + 1)?;
                }
                Some(_) => {
                    if self.element_depth.is_some_and(|d| d != depth) {
                        return None;
                    }
                    self.element_depth = Some(depth);
                    let element = self.element()?;
                    self.elements.push(element);
                }
                None => return None,
            }
            count += 1;
            self.skip_space();
            match self.chars.next() {
                Some(',') => continue,
                Some('}') => break,
                _ => return None,
            }
        }
        match self.lens[depth] {
            Some(len) if len != count => None,
            _ => {
                self.lens[depth] = Some(count);
                Some(())
            }
        }
    }

    fn element(&mut self) -> Option<Option<String>> {
        let mut text = String::new();
        if self.chars.peek() == Some(&'"') {
            self.chars.next();
            loop {
                match self.chars.next()? {
                    '"' => break,
                    '\\' => text.push(self.chars.next()?),
                    c => text.push(c),
                }
            }
            return Some(Some(text));
        }
        // Unquoted: up to the delimiter, trailing unescaped space trimmed.
        let mut keep = 0usize;
        let mut escaped_any = false;
        while let Some(&c) = self.chars.peek() {
            match c {
                ',' | '}' => break,
                '{' | '"' => return None,
                '\\' => {
                    self.chars.next();
                    text.push(self.chars.next()?);
                    keep = text.len();
                    escaped_any = true;
                    continue;
                }
                _ => {
                    self.chars.next();
                    text.push(c);
                    if !is_array_space(c) {
                        keep = text.len();
                    }
                }
            }
        }
        text.truncate(keep);
        if text.is_empty() {
            return None;
        }
        if !escaped_any && text.eq_ignore_ascii_case("NULL") {
            return Some(None);
        }
        Some(Some(text))
    }
}

fn parse_bounds(s: &str) -> Option<(Vec<(i32, i32)>, &str)> {
    let mut rest = s;
    let mut bounds = Vec::new();
    while let Some(after) = rest.strip_prefix('[') {
        let close = after.find(']')?;
        let inside = &after[..close];
        let (lower, upper) = match inside.split_once(':') {
            Some((l, u)) => (l.trim().parse().ok()?, u.trim().parse().ok()?),
            None => (1, inside.trim().parse().ok()?),
        };
        if upper < lower || bounds.len() >= MAX_DIMENSIONS {
            return None;
        }
        bounds.push((lower, upper));
        rest = after[close + 1..].trim_start();
    }
    if bounds.is_empty() {
        return Some((bounds, s));
    }
    Some((bounds, rest.strip_prefix('=')?.trim_start()))
}

pub(crate) fn parse_array_text(s: &str) -> Option<RawArray> {
    let trimmed = s.trim_matches(is_array_space);
    let (bounds, body) = parse_bounds(trimmed)?;
    let body = body.strip_prefix('{')?;
    let mut parser = ArrayParser {
        chars: body.chars().peekable(),
        lens: Vec::new(),
        elements: Vec::new(),
        element_depth: None,
    };
    parser.level(0)?;
    parser.skip_space();
    if parser.chars.next().is_some() {
        return None;
    }
    if parser.elements.is_empty() {
        return bounds.is_empty().then_some(RawArray {
            dims: Vec::new(),
            elements: Vec::new(),
        });
    }
    let depth = parser.element_depth.unwrap_or(0) + 1;
    let lens: Vec<usize> = parser
        .lens
        .iter()
        .take(depth)
        .map(|l| l.unwrap_or(0))
        .collect();
    let dims = if bounds.is_empty() {
        lens.iter().map(|&len| Dim { lower: 1, len }).collect()
    } else {
        if bounds.len() != lens.len() {
            return None;
        }
        let mut dims = Vec::with_capacity(bounds.len());
        for ((lower, upper), len) in bounds.into_iter().zip(lens) {
            if i64::from(upper) - i64::from(lower) + 1 != len as i64 {
                return None;
            }
            dims.push(Dim { lower, len });
        }
        dims
    };
    Some(RawArray {
        dims,
        elements: parser.elements,
    })
}

/// Quotes an element the way `array_out` does.
fn push_element(out: &mut String, text: &str) {
    let needs_quotes = text.is_empty()
        || text.eq_ignore_ascii_case("NULL")
        || text
            .chars()
            .any(|c| matches!(c, '"' | '\\' | '{' | '}' | ',') || is_array_space(c));
    if !needs_quotes {
        out.push_str(text);
        return;
    }
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// `array_out`, given each element's text (None for NULL).
pub(crate) fn format_array_text(dims: &[Dim], elements: &[Option<String>]) -> String {
    if dims.is_empty() || elements.is_empty() {
        return "{}".into();
    }
    let mut out = String::new();
    if dims.iter().any(|d| d.lower != 1) {
        for d in dims {
            let upper = i64::from(d.lower) + d.len as i64 - 1;
            out.push_str(&format!("[{}:{}]", d.lower, upper));
        }
        out.push('=');
    }
    let mut index = 0usize;
    format_level(&mut out, dims, elements, &mut index);
    out
}

fn format_level(out: &mut String, dims: &[Dim], elements: &[Option<String>], index: &mut usize) {
    out.push('{');
    if let Some((first, rest)) = dims.split_first() {
        for i in 0..first.len {
            if i > 0 {
                out.push(',');
            }
            if rest.is_empty() {
                match elements.get(*index) {
                    Some(Some(text)) => push_element(out, text),
                    _ => out.push_str("NULL"),
                }
                *index += 1;
            } else {
                format_level(out, rest, elements, index);
            }
        }
    }
    out.push('}');
}

/// `array_cmp`: element-wise (NULLs equal each other and sort last), then
/// by element count, dimensionality, dimension lengths and lower bounds.
pub(crate) fn compare_arrays(
    a: &ArrayValue,
    b: &ArrayValue,
    compare: &dyn Fn(&Value, &Value) -> Option<Ordering>,
) -> Option<Ordering> {
    for (x, y) in a.elements.iter().zip(&b.elements) {
        let ordering = match (x, y) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Null, _) => Ordering::Greater,
            (_, Value::Null) => Ordering::Less,
            _ => compare(x, y)?,
        };
        if ordering != Ordering::Equal {
            return Some(ordering);
        }
    }
    let ordering = a
        .elements
        .len()
        .cmp(&b.elements.len())
        .then(a.dims.len().cmp(&b.dims.len()))
        .then_with(|| {
            a.dims
                .iter()
                .zip(&b.dims)
                .map(|(x, y)| x.len.cmp(&y.len))
                .find(|o| *o != Ordering::Equal)
                .unwrap_or(Ordering::Equal)
        })
        .then_with(|| {
            a.dims
                .iter()
                .zip(&b.dims)
                .map(|(x, y)| x.lower.cmp(&y.lower))
                .find(|o| *o != Ordering::Equal)
                .unwrap_or(Ordering::Equal)
        });
    Some(ordering)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(raw: &RawArray) -> Vec<Option<&str>> {
        raw.elements.iter().map(|e| e.as_deref()).collect()
    }

    #[test]
    fn where_clause_array_parse() {
        let raw = parse_array_text(r#"{1, "a b" ,NULL,"NULL",  c d ,"q\"x"}"#).unwrap();
        assert_eq!(
            texts(&raw),
            vec![
                Some("1"),
                Some("a b"),
                None,
                Some("NULL"),
                Some("c d"),
                Some("q\"x")
            ]
        );
        assert_eq!(raw.dims, vec![Dim { lower: 1, len: 6 }]);
        let raw = parse_array_text("{{1,2},{3,4},{5,6}}").unwrap();
        assert_eq!(
            raw.dims,
            vec![Dim { lower: 1, len: 3 }, Dim { lower: 1, len: 2 }]
        );
        let raw = parse_array_text("[0:1]={a,b}").unwrap();
        assert_eq!(raw.dims, vec![Dim { lower: 0, len: 2 }]);
        assert!(parse_array_text("{}").unwrap().elements.is_empty());
        for bad in [
            "{{1},{2,3}}",
            "{1,{2}}",
            "{1",
            "1,2",
            "{1}}",
            "{,}",
            "[1:3]={1,2}",
            "{{{{{{{1}}}}}}}",
            "{\"a}",
        ] {
            assert!(parse_array_text(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn where_clause_array_format() {
        let dims = [Dim { lower: 1, len: 4 }];
        let elements = [
            Some("a".to_string()),
            None,
            Some("".to_string()),
            Some("x,\"y\\".to_string()),
        ];
        assert_eq!(
            format_array_text(&dims, &elements),
            r#"{a,NULL,"","x,\"y\\"}"#
        );
        let dims = [Dim { lower: 0, len: 1 }, Dim { lower: 1, len: 2 }];
        let elements = [Some("1".to_string()), Some("2".to_string())];
        assert_eq!(format_array_text(&dims, &elements), "[0:0][1:2]={{1,2}}");
        assert_eq!(format_array_text(&[], &[]), "{}");
    }
}
