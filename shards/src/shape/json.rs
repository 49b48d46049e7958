//! Minimal JSON writing for log entries: they are built once per change and
//! then served verbatim, so this path avoids any intermediate value tree.

/// Appends `s` as a JSON string literal (with quotes).
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Most values need no escaping: skip 8 bytes at a time while none of
    // them is a control character, a quote or a backslash.
    let mut clean = 0;
    while let Some(word) = bytes.get(clean..clean + 8) {
        if needs_escape(u64::from_le_bytes(word.try_into().expect("8 bytes"))) {
            break;
        }
        clean += 8;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate().skip(clean) {
        if !SPECIAL[b as usize] {
            continue;
        }
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escape);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The bytes a JSON string must escape.
static SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// Whether any byte of `word` is below 0x20, `"` or `\\` (bit tricks
/// from "Bit Twiddling Hacks": a byte's high bit is set in `x - 0x01…`
/// and clear in `x` only where the byte was zero, or below the bound).
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS != 0;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS != 0;
    below_space || has_zero(word ^ (ONES * b'"' as u64)) || has_zero(word ^ (ONES * b'\\' as u64))
}

/// Appends a JSON string or `null`.
pub fn push_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

pub fn to_string(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len() + 2);
    push_str(&mut out, s);
    String::from_utf8(out).expect("escaping keeps UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_at_a_time_skip_finds_every_special_byte_at_every_position() {
        for special in (0u8..0x20).chain([b'"', b'\\', b'a', 0x7f]) {
            for len in [8, 9, 16, 23, 24, 40] {
                for at in 0..len {
                    let mut bytes = vec![b'x'; len];
                    bytes[at] = special;
                    let s = std::str::from_utf8(&bytes).unwrap();
                    let mut out = Vec::new();
                    push_str(&mut out, s);
                    let back: String = serde_json::from_slice(&out).unwrap();
                    assert_eq!(back, s, "byte {special:#x} at {at} of {len}");
                    assert_eq!(
                        out,
                        serde_json::to_vec(s).unwrap(),
                        "byte {special:#x} at {at}"
                    );
                }
            }
        }
        let mut out = Vec::new();
        push_str(&mut out, "ünïcödé — 8 bytes+ \u{1F600} and more text");
        assert_eq!(
            serde_json::from_slice::<String>(&out).unwrap(),
            "ünïcödé — 8 bytes+ \u{1F600} and more text"
        );
    }

    #[test]
    fn escapes_like_a_json_parser_expects() {
        let cases = [
            ("plain", r#""plain""#),
            ("q\"b\\s/", r#""q\"b\\s/""#),
            ("\n\r\t\u{8}\u{c}\u{1}", r#""\n\r\t\b\f\u0001""#),
            ("ünï💡", "\"ünï💡\""),
        ];
        for (input, want) in cases {
            assert_eq!(to_string(input), want);
        }
    }
}
