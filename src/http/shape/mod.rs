//! `/v1/shape`: authentication, validation, routing to the owner shard.

pub mod admission;
pub mod forward;
pub mod reply;
pub mod request;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use super::response::Body;
use super::HttpContext;
use reply::ShapeReply;
use request::{Query, RequestKind};

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
    // Counted down on drop too: a client may hang up mid long-poll.
    struct Admitted<'a>(&'a std::cell::Cell<usize>);
    impl Drop for Admitted<'_> {
        fn drop(&mut self) {
            self.0.set(self.0.get() - 1);
        }
    }
    let _admitted = Admitted(&context.in_flight);
    handle_admitted(request, context).await
}

async fn handle_admitted(request: Request<Incoming>, context: &HttpContext) -> Response<Body> {
    let kind = match *request.method() {
        Method::GET | Method::HEAD => RequestKind::Get,
        Method::DELETE => RequestKind::Delete,
        Method::OPTIONS => return super::response::preflight(&request),
        _ => return ShapeReply::message(405, "Method not allowed").into_response(),
    };
    let query = Query::parse(request.uri().query());
    if let Some(secret) = &context.secret {
        let given = query.get("secret").or_else(|| query.get("api_secret"));
        if given != Some(secret.as_str()) {
            return ShapeReply::message(401, "Unauthorized - Invalid API secret").into_response();
        }
    }
    let if_none_match = request
        .headers()
        .get(hyper::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    let parsed = match request::parse(kind, &query, if_none_match) {
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
    let _permit = match context.admission.admit(kind, &context.metrics) {
        Ok(permit) => permit,
        Err(reply) => return reply.into_response(),
    };
    let owner = shards::owner::shard_of(parsed.owner_key(), router.shards());
    let parsed_kind = parsed.kind;
    let mut reply = router.dispatch(owner, parsed).await;
    if reply.created {
        evict_if_over(router).await;
    }
    if parsed_kind == RequestKind::Delete && reply.status < 400 {
        reply.headers.retain(|(n, _)| *n != "cache-control");
        reply = reply.header("cache-control", "no-cache");
    }
    let head = request.method() == Method::HEAD;
    let mut response = reply.into_response();
    if head {
        *response.body_mut() = Body::default();
    }
    response
}

/// After a creation: while over `ELECTRIC_MAX_SHAPES`, the shard holding the
/// least recently read shape evicts it. Awaited, so the next creation sees
/// the count it left (bounded: one eviction per shape over the limit).
async fn evict_if_over(router: &forward::Router) {
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
            cursor: None,
            if_none_match: None,
        };
        router.dispatch(victim, request).await;
    }
}
