//! A shape's log compared byte for byte across restarts: non-live
//! responses recorded before a restart are requested again after it. The
//! log rebuilt from the segments (and from what Postgres re-sends) must
//! serve the same bytes: a chunk that was complete is identical (body and
//! `electric-offset`), and the open tail of the log may only have grown
//! (its old entries are a byte prefix of the new ones).

use std::time::{Duration, Instant};

use shards::shape::offset::LogOffset;

use crate::server::{Reply, Server};

/// One non-live 200 response.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The shape's definition (query string without offset and handle).
    pub definition: String,
    pub handle: String,
    /// The request's offset.
    pub offset: String,
    /// The response's `electric-offset`.
    pub end: String,
    /// Whether it reached the end of the log (`electric-up-to-date`): the
    /// open tail, which may grow. Otherwise it was a complete chunk.
    pub tail: bool,
    pub body: String,
}

const UP_TO_DATE: &str = r#"{"headers":{"control":"up-to-date""#;

impl Recorded {
    pub fn new(
        definition: &str,
        handle: &str,
        offset: &str,
        reply: &Reply,
    ) -> Result<Recorded, String> {
        Ok(Recorded {
            definition: definition.to_string(),
            handle: handle.to_string(),
            offset: offset.to_string(),
            end: reply
                .header("electric-offset")
                .ok_or("no electric-offset")?
                .to_string(),
            tail: reply.header("electric-up-to-date").is_some(),
            body: reply.body.clone(),
        })
    }

    /// The log entries the body holds: without the brackets and without the
    /// closing up-to-date message (whose `global_last_seen_lsn` moves with
    /// the WAL, not with the shape's log).
    pub fn items(&self) -> &str {
        let inner = self
            .body
            .strip_prefix('[')
            .and_then(|b| b.strip_suffix(']'))
            .unwrap_or(&self.body);
        if !self.tail {
            return inner;
        }
        match inner.rfind(UP_TO_DATE) {
            Some(at) => inner[..at].strip_suffix(',').unwrap_or(&inner[..at]),
            None => inner,
        }
    }

    fn describe(&self) -> String {
        format!(
            "shape `{}` (handle {}), request offset {}",
            self.definition, self.handle, self.offset
        )
    }
}

/// A non-live request for `(handle, offset)` of `definition`.
pub fn fetch(
    server: &Server,
    definition: &str,
    handle: &str,
    offset: &str,
) -> Result<Recorded, String> {
    let mut url = format!("/v1/shape?{definition}&offset={offset}");
    if offset != "-1" {
        url.push_str(&format!("&handle={handle}"));
    }
    let reply = server.try_get(&url)?;
    if reply.status != 200 {
        return Err(format!("GET {url} → {} {}", reply.status, reply.body));
    }
    let got = reply.header("electric-handle").unwrap_or("");
    if got != handle {
        return Err(format!(
            "GET {url}: handle {got} where it was {handle} (the shape was not rebuilt)"
        ));
    }
    Recorded::new(definition, handle, offset, &reply)
}

/// How a response after the restart compares with the one before.
#[derive(Debug)]
pub enum Compared {
    Same,
    /// The new log is still shorter: what Postgres re-sends is on its way.
    Behind,
    Differs(String),
}

/// Whether `whole` starts with the entries `part` (whole entries only).
fn entry_prefix(whole: &str, part: &str) -> bool {
    whole.starts_with(part)
        && (part.is_empty() || whole.len() == part.len() || whole.as_bytes()[part.len()] == b',')
}

pub fn compare(old: &Recorded, new: &Recorded) -> Compared {
    let (old_items, new_items) = (old.items(), new.items());
    if !old.tail {
        if new.body == old.body && new.end == old.end && !new.tail {
            return Compared::Same;
        }
    } else if entry_prefix(new_items, old_items) {
        let ends = (old.end.parse::<LogOffset>(), new.end.parse::<LogOffset>());
        if let (Ok(old_end), Ok(new_end)) = ends {
            if new_end < old_end {
                return Compared::Differs(format!(
                    "{}: same entries but electric-offset went back from {} to {}",
                    old.describe(),
                    old.end,
                    new.end
                ));
            }
        }
        return Compared::Same;
    }
    // Shorter than before, or (for a chunk that was complete) not yet
    // followed by the entries that closed it.
    let shorter = new_items.len() < old_items.len() || (!old.tail && new_items == old_items);
    if new.tail && shorter && entry_prefix(old_items, new_items) {
        return Compared::Behind;
    }
    let at = old
        .body
        .bytes()
        .zip(new.body.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or(old.body.len().min(new.body.len()));
    let excerpt = |body: &str| {
        let start = (at.saturating_sub(200)..=at)
            .find(|&i| body.is_char_boundary(i))
            .unwrap_or(0);
        let end = (at + 300..body.len())
            .find(|&i| body.is_char_boundary(i))
            .unwrap_or(body.len());
        body[start.min(body.len())..end].to_string()
    };
    Compared::Differs(format!(
        "{}: the {} differs after the restart at byte {at} \
         (electric-offset {} before, {} after; {} bytes before, {} after)\n\
         before: …{}…\nafter:  …{}…",
        old.describe(),
        if old.tail {
            "open tail (old entries must be a prefix)"
        } else {
            "complete chunk (must be identical)"
        },
        old.end,
        new.end,
        old.body.len(),
        new.body.len(),
        excerpt(&old.body),
        excerpt(&new.body),
    ))
}

/// What `verify` compared.
#[derive(Debug, Default)]
pub struct Verified {
    /// Complete chunks found identical.
    pub chunks: usize,
    /// Open tails found grown (or unchanged).
    pub tails: usize,
    /// Requests repeated while the log was still behind.
    pub retries: usize,
}

/// Requests every recorded response again and compares. A log that is
/// still behind (Postgres re-sending what was not durable) is waited for
/// up to `timeout`; anything else that differs fails at once.
pub fn verify(
    server: &Server,
    records: &[Recorded],
    timeout: Duration,
) -> Result<Verified, String> {
    let deadline = Instant::now() + timeout;
    let mut verified = Verified::default();
    for old in records {
        loop {
            let new = fetch(server, &old.definition, &old.handle, &old.offset)
                .map_err(|e| format!("{}: {e}", old.describe()))?;
            match compare(old, &new) {
                Compared::Same if old.tail => {
                    verified.tails += 1;
                    break;
                }
                Compared::Same => {
                    verified.chunks += 1;
                    break;
                }
                Compared::Differs(why) => return Err(why),
                Compared::Behind if Instant::now() > deadline => {
                    return Err(format!(
                        "{}: still behind after {timeout:?}: {} bytes before the restart, {} now \
                         (electric-offset {} before, {} now)",
                        old.describe(),
                        old.body.len(),
                        new.body.len(),
                        old.end,
                        new.end
                    ))
                }
                Compared::Behind => {
                    verified.retries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
    Ok(verified)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(offset: &str, end: &str, tail: bool, entries: &[&str]) -> Recorded {
        let mut body = format!("[{}", entries.join(","));
        if tail {
            if !entries.is_empty() {
                body.push(',');
            }
            body.push_str(r#"{"headers":{"control":"up-to-date","global_last_seen_lsn":"9"}}"#);
        }
        body.push(']');
        Recorded {
            definition: "table=items".into(),
            handle: "1-2".into(),
            offset: offset.into(),
            end: end.into(),
            tail,
            body,
        }
    }

    const A: &str = r#"{"key":"a","value":{"v":"1"}}"#;
    const B: &str = r#"{"key":"b","value":{"v":"2"}}"#;
    const B2: &str = r#"{"key":"b","value":{"v":"3"}}"#;
    const C: &str = r#"{"key":"c","value":{"v":"4"}}"#;

    fn is_same(c: Compared) -> bool {
        matches!(c, Compared::Same)
    }

    #[test]
    fn a_complete_chunk_must_be_identical() {
        let old = response("1_0", "3_0", false, &[A, B]);
        assert!(is_same(compare(&old, &old.clone())));
        let changed = response("1_0", "3_0", false, &[A, B2]);
        assert!(matches!(compare(&old, &changed), Compared::Differs(_)));
        let moved = response("1_0", "4_0", false, &[A, B]);
        assert!(matches!(compare(&old, &moved), Compared::Differs(_)));
        let longer = response("1_0", "4_0", false, &[A, B, C]);
        assert!(matches!(compare(&old, &longer), Compared::Differs(_)));
        // Not rebuilt that far yet: wait.
        let short = response("1_0", "2_0", true, &[A]);
        assert!(matches!(compare(&old, &short), Compared::Behind));
        let unclosed = response("1_0", "3_0", true, &[A, B]);
        assert!(matches!(compare(&old, &unclosed), Compared::Behind));
        let gap = response("1_0", "3_0", true, &[B]);
        assert!(matches!(compare(&old, &gap), Compared::Differs(_)));
    }

    #[test]
    fn an_open_tail_may_only_grow() {
        let old = response("1_0", "3_0", true, &[A, B]);
        assert_eq!(old.items(), format!("{A},{B}"));
        let same = response("1_0", "3_0", true, &[A, B]);
        assert!(is_same(compare(&old, &same)));
        let grown = response("1_0", "4_0", true, &[A, B, C]);
        assert!(is_same(compare(&old, &grown)));
        let sealed = response("1_0", "4_0", false, &[A, B, C]);
        assert!(is_same(compare(&old, &sealed)));
        let short = response("1_0", "2_0", true, &[A]);
        assert!(matches!(compare(&old, &short), Compared::Behind));
        let changed = response("1_0", "4_0", true, &[A, B2, C]);
        assert!(matches!(compare(&old, &changed), Compared::Differs(_)));
        let missing = response("1_0", "4_0", true, &[A, C]);
        assert!(matches!(compare(&old, &missing), Compared::Differs(_)));
        let empty = response("3_0", "3_0", true, &[]);
        assert!(is_same(compare(&empty, &grown)));
    }
}
