//! Live responses as server-sent events (`live=true&live_sse=true`).
//!
//! As Electric: when the log already has data after the request's offset,
//! the answer is that data as events, then the response ends. Otherwise
//! the response opens at once and stays open: each time the shape's log
//! grows, its new messages go out as events ending with `up-to-date`; a
//! `: keep-alive` comment breaks every `keepalive` of silence; the stream
//! ends at `timeout`, on a stop, or when the shape is gone (the client's
//! next request then gets the 409).
//!
//! The stream is a state machine the connection polls. Between changes it
//! waits on its shard's watch of the shape (`live.rs`: one message from the
//! owner per change per shard) and on the shard's shared deadlines, so an
//! idle stream costs no task, timer or owner request of its own; on a
//! change it reads its new entries from the owner without waiting.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE};
use hyper::Response;
use shards::runtime::Shutdown;
use shards::shape::offset::LogOffset;

use super::forward::Router;
use super::live::{LiveHub, WatchUse};
use super::request::{ShapeRequest, StartOffset};
use crate::http::response::Body;
use crate::metrics::Metrics;
use shards::notify::Deadlines;

/// Electric's interval between `: keep-alive` comments on a silent stream.
pub const KEEPALIVE: Duration = Duration::from_secs(21);

const KEEPALIVE_COMMENT: &[u8] = b": keep-alive\n\n";

#[derive(Clone, Copy, Debug)]
pub struct SseSettings {
    /// How long one SSE response stays open.
    pub timeout: Duration,
    pub keepalive: Duration,
}

impl Default for SseSettings {
    fn default() -> SseSettings {
        SseSettings {
            timeout: Duration::from_secs(60),
            keepalive: KEEPALIVE,
        }
    }
}

/// Answers an SSE request. `guard` (admission and in-flight counts) lives
/// as long as the stream does.
pub async fn respond(
    router: Rc<Router>,
    owner: usize,
    mut request: ShapeRequest,
    settings: SseSettings,
    shutdown: Shutdown,
    metrics: std::sync::Arc<Metrics>,
    guard: Box<dyn std::any::Any>,
) -> Response<Body> {
    let opened = Instant::now();
    let request_offset = match request.offset {
        StartOffset::At(o) => o.to_string(),
        StartOffset::Now => "now".to_string(),
    };
    // First look without waiting: data already there is a one-shot answer.
    request.wait = Some(Duration::ZERO);
    request.if_none_match = None;
    let first = router.dispatch(owner, request.clone()).await;
    if first.status != 200 {
        return first.into_response();
    }
    let has_data = first.header_value("electric-has-data") == Some("true");
    // Electric's etag for a live response, without the uniqueness suffix of
    // a long-poll timeout: an SSE response is never a "no changes" one.
    let etag = format!(
        "\"{}:{request_offset}:{}\"",
        first.header_value("electric-handle").unwrap_or_default(),
        first.header_value("electric-offset").unwrap_or_default()
    );
    let body = if has_data {
        Body::new(events(&first.body))
    } else {
        let Some(offset) = first
            .header_value("electric-offset")
            .and_then(|o| o.parse::<LogOffset>().ok())
        else {
            return first.into_response();
        };
        request.offset = StartOffset::At(offset);
        let handle = first
            .header_value("electric-handle")
            .unwrap_or_default()
            .to_string();
        let follow = LiveHub::follow(&router, owner, &handle).await;
        let open = OpenStream::new(metrics);
        let deadlines = router.deadlines().clone();
        let stream = Stream {
            router,
            owner,
            request,
            follow,
            deadlines,
            deadline: opened + settings.timeout,
            last_sent: Instant::now(),
            keepalive: settings.keepalive,
            shutdown,
            _guard: (guard, open),
        };
        Body::unfold(stream, Stream::next)
    };
    let cache = format!(
        "public, max-age={}",
        settings.timeout.as_secs().saturating_sub(1)
    );
    let mut response = first.into_response();
    *response.body_mut() = body;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
    // nginx (deploy/nginx.conf): pass events through as they come, and
    // never cache a stream.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Ok(value) = HeaderValue::from_str(&cache) {
        headers.insert(CACHE_CONTROL, value);
    }
    headers.remove(hyper::header::CONTENT_LENGTH);
    headers.insert("electric-has-data", HeaderValue::from_static("true"));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(hyper::header::ETAG, value);
    }
    response
}

/// An open stream between rounds.
struct Stream {
    router: Rc<Router>,
    owner: usize,
    /// The next round's read, from the end of what was sent.
    request: ShapeRequest,
    /// Wakes the stream when its shape changes.
    follow: WatchUse,
    deadlines: Rc<Deadlines>,
    deadline: Instant,
    /// When the last frame went out (keep-alives follow silence).
    last_sent: Instant,
    keepalive: Duration,
    shutdown: Shutdown,
    _guard: (Box<dyn std::any::Any>, OpenStream),
}

/// Counts a stream in `/metrics` while it is open.
struct OpenStream(std::sync::Arc<Metrics>);

impl OpenStream {
    fn new(metrics: std::sync::Arc<Metrics>) -> OpenStream {
        Metrics::inc(&metrics.sse_streams_total);
        Metrics::inc(&metrics.sse_streams_open);
        OpenStream(metrics)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0
            .sse_streams_open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Stream {
    /// The next frame: new messages as events, or a keep-alive comment;
    /// None ends the response. Between changes the stream waits as a
    /// waker on its watch and an entry in the shard's deadlines: no task,
    /// no timer, no request to the owner.
    async fn next(mut self) -> Option<(Bytes, Stream)> {
        enum Woke {
            Changed,
            Time,
            Stop,
        }
        loop {
            if Instant::now() >= self.deadline || self.shutdown.is_triggered() {
                return None;
            }
            // Listen before reading: a change after the read wakes us.
            let changed = self.follow.watch.listen();
            if self.follow.watch.is_gone() {
                // The client's next request gets the 409.
                return None;
            }
            self.request.wait = Some(Duration::ZERO);
            let changes = self.follow.watch.changes();
            let reply = self
                .router
                .dispatch_round(self.owner, self.request.clone(), changes)
                .await;
            // A 409 (shape gone or rotated) or any error ends the stream:
            // the client reconnects and its next request gets the answer.
            if reply.status != 200 || self.shutdown.is_triggered() {
                return None;
            }
            if reply.header_value("electric-has-data") == Some("true") {
                let offset = reply
                    .header_value("electric-offset")
                    .and_then(|o| o.parse::<LogOffset>().ok())?;
                self.request.offset = StartOffset::At(offset);
                if let Some(cursor) = reply
                    .header_value("electric-cursor")
                    .and_then(|c| c.parse().ok())
                {
                    self.request.cursor = Some(cursor);
                }
                self.last_sent = Instant::now();
                return Some((events(&reply.body), self));
            }
            let wake_at = (self.last_sent + self.keepalive).min(self.deadline);
            let woke = futures_lite::future::or(
                futures_lite::future::or(
                    async {
                        changed.await;
                        Woke::Changed
                    },
                    async {
                        self.deadlines.at(wake_at).await;
                        Woke::Time
                    },
                ),
                async {
                    self.shutdown.wait().await;
                    Woke::Stop
                },
            )
            .await;
            match woke {
                Woke::Changed => continue,
                Woke::Stop => return None,
                Woke::Time if Instant::now() >= self.deadline => return None,
                Woke::Time => {
                    self.last_sent = Instant::now();
                    return Some((Bytes::from_static(KEEPALIVE_COMMENT), self));
                }
            }
        }
    }
}

/// `[m1,m2,…]` → `data: m1\n\ndata: m2\n\n…`. The messages are our own
/// JSON (no raw newlines: JSON escapes them), split at top-level commas.
pub fn events(array: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(array.len() + 64);
    for message in split_messages(array) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(message);
        out.extend_from_slice(b"\n\n");
    }
    out.freeze()
}

/// The top-level elements of a JSON array of objects.
fn split_messages(array: &[u8]) -> Vec<&[u8]> {
    let inner = match (array.first(), array.last()) {
        (Some(b'['), Some(b']')) => &array[1..array.len() - 1],
        _ => array,
    };
    let mut messages = Vec::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut start = 0usize;
    for (i, &b) in inner.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => {
                messages.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < inner.len() {
        messages.push(&inner[start..]);
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_become_one_event_per_message() {
        let array =
            br#"[{"key":"a,\"}{","value":{"x":"[1,2]"}},{"headers":{"control":"up-to-date"}}]"#;
        assert_eq!(
            &events(array)[..],
            &b"data: {\"key\":\"a,\\\"}{\",\"value\":{\"x\":\"[1,2]\"}}\n\ndata: {\"headers\":{\"control\":\"up-to-date\"}}\n\n"[..]
        );
        assert_eq!(&events(b"[]")[..], b"");
    }
}
