//! `/v1/shape`: authentication, validation, routing to the owner shard.

pub mod admission;
pub mod forward;
pub mod live;
pub mod reply;
pub mod request;
pub mod sse;
pub mod subset;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use super::response::Body;
use super::HttpContext;
use reply::ShapeReply;
use request::{Query, RequestKind};
use shards::shape::offset::LogOffset;

/// Shape requests one shard accepts at once (live ones included); past it
/// the client is told to retry, as Electric's admission control does.
pub const MAX_IN_FLIGHT: usize = 10_000;

pub async fn handle(request: Request<Incoming>, context: &HttpContext) -> Response<Body> {
    if context.in_flight.get() >= MAX_IN_FLIGHT {
        return ShapeReply::error(
            503,
            format!(
                r#"{{"code":"concurrent_request_limit_exceeded","message":"Concurrent request limit exceeded (limit: {MAX_IN_FLIGHT}), please retry"}}"#
            ),
        )
        .header("retry-after", "5")
        .into_response();
    }
    context.in_flight.set(context.in_flight.get() + 1);
    let admitted = Admitted(context.in_flight.clone());
    handle_admitted(request, context, admitted).await
}

/// Counts a request in flight until dropped: when its response is built,
/// or when its SSE stream ends (a client may hang up mid long-poll too).
struct Admitted(std::rc::Rc<std::cell::Cell<usize>>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

async fn handle_admitted(
    request: Request<Incoming>,
    context: &HttpContext,
    admitted: Admitted,
) -> Response<Body> {
    let kind = match *request.method() {
        Method::GET | Method::HEAD | Method::POST => RequestKind::Get,
        Method::DELETE => RequestKind::Delete,
        Method::OPTIONS => return super::response::preflight(&request),
        _ => {
            return ShapeReply::message(405, "Method not allowed")
                .header("allow", "GET, POST, HEAD, DELETE, OPTIONS")
                .into_response()
        }
    };
    let query = Query::parse(request.uri().query());
    if let Some(secret) = &context.secret {
        let given = query.get("secret").or_else(|| query.get("api_secret"));
        if !secret_matches(given, secret) {
            return ShapeReply::message(401, "Unauthorized - Invalid API secret").into_response();
        }
    }
    let if_none_match = request
        .headers()
        .get(hyper::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    let mut subset = subset::RawSubset::from_query(&query);
    let post = request.method() == Method::POST;
    let head = request.method() == Method::HEAD;
    let if_none_match = if_none_match.map(str::to_string);
    if post {
        let body = match read_body(request.into_body()).await {
            Ok(body) => body,
            Err(reply) => return reply.into_response(),
        };
        if let Err(reply) = subset.merge_body(&body) {
            return reply.into_response();
        }
    }
    let parsed = match request::parse_with_subset(kind, &query, if_none_match.as_deref(), subset) {
        Ok(parsed) => parsed,
        Err(reply) => return reply.into_response(),
    };
    let Some(router) = &context.shapes else {
        return ShapeReply::unavailable("Shapes are not being served yet", 5).into_response();
    };
    let kind = if parsed.handle.is_some() {
        admission::Kind::Existing
    } else {
        admission::Kind::Initial
    };
    let permit = match context.admission.admit(kind, &context.metrics) {
        Ok(permit) => permit,
        Err(reply) => return reply.into_response(),
    };
    let owner = shards::owner::shard_of(parsed.owner_key(), router.shards());
    if parsed.sse {
        return sse::respond(
            router.clone(),
            owner,
            parsed,
            context.sse,
            context.shutdown.clone(),
            context.metrics.clone(),
            Box::new((admitted, permit)),
        )
        .await;
    }
    let _guard = (admitted, permit);
    let parsed_kind = parsed.kind;
    let latency_kind = latency_kind(&parsed);
    let started = std::time::Instant::now();
    let mut reply = router.dispatch(owner, parsed).await;
    if reply.created {
        evict_if_over(router).await;
    }
    // Electric: whatever is not a GET (or HEAD) is never cached.
    if (parsed_kind == RequestKind::Delete || post) && reply.status < 400 {
        reply.headers.retain(|(n, _)| *n != "cache-control");
        reply = reply.header("cache-control", "no-cache");
    }
    if let (Some(kind), Some(shard)) = (latency_kind, context.metrics.storage.get(context.shard)) {
        shard.latency.request(kind).record(started.elapsed());
    }
    let mut response = reply.into_response();
    if head {
        *response.body_mut() = Body::Empty;
    }
    response
}

/// Which latency histogram a shape read goes to (deletes and evictions
/// are not timed).
fn latency_kind(parsed: &request::ShapeRequest) -> Option<shards::latency::RequestKind> {
    use shards::latency::RequestKind as Timed;
    Some(match parsed.kind {
        RequestKind::Get if parsed.subset.is_some() => Timed::Subset,
        RequestKind::Get
            if matches!(
                parsed.offset,
                request::StartOffset::At(LogOffset::BeforeAll) | request::StartOffset::Now
            ) =>
        {
            Timed::Initial
        }
        RequestKind::Get if parsed.live => Timed::Live,
        RequestKind::Get => Timed::CatchUp,
        _ => return None,
    })
}

/// After a creation: while over `ELECTRIC_MAX_SHAPES`, the shard holding the
/// least recently read shape evicts it. Awaited, so the next creation sees
/// the count it left (bounded: one eviction per shape over the limit).
async fn evict_if_over(router: &std::rc::Rc<forward::Router>) {
    let eviction = &router.service().eviction;
    let mut rounds = 0;
    while eviction.over_limit() && rounds < 16 {
        rounds += 1;
        let Some(victim) = eviction.victim_shard() else {
            return;
        };
        let request = request::ShapeRequest {
            kind: RequestKind::Evict,
            definition: None,
            handle: None,
            offset: request::StartOffset::Now,
            live: false,
            sse: false,
            wait: None,
            cursor: None,
            if_none_match: None,
            subset: None,
            queryable: None,
        };
        router.dispatch(victim, request).await;
    }
}

/// A POST body, whole, up to `subset::MAX_BODY_BYTES` (then a 413).
async fn read_body(body: Incoming) -> Result<bytes::Bytes, ShapeReply> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, subset::MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ShapeReply::error(
            413,
            r#"{"error":"Request body too large"}"#,
        )),
        Err(_) => Err(ShapeReply::error(
            400,
            r#"{"error":"Failed to read request body"}"#,
        )),
    }
}

/// Compares in time independent of where the strings differ, so response
/// timing does not reveal the secret byte by byte (its length may show).
pub(crate) fn secret_matches(given: Option<&str>, secret: &str) -> bool {
    use subtle::ConstantTimeEq;
    given.is_some_and(|given| bool::from(given.as_bytes().ct_eq(secret.as_bytes())))
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_compare_whole() {
        assert!(super::secret_matches(Some("s3cret"), "s3cret"));
        assert!(!super::secret_matches(Some("s3cre"), "s3cret"));
        assert!(!super::secret_matches(Some("s3creT"), "s3cret"));
        assert!(!super::secret_matches(None, "s3cret"));
        assert!(!super::secret_matches(Some(""), "s3cret"));
    }
}
