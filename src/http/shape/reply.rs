//! A shape response as plain data (it crosses the mesh from the owner shard
//! to the shard holding the connection), and its conversion to HTTP.

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use shards::shape::registry::Liveness;

use crate::http::response::{self, Body};

#[derive(Debug, Clone)]
pub struct ShapeReply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    /// This request created the shape (internal: drives LRU eviction).
    pub created: bool,
    /// A sealed chunk's answer (internal): the same request gets the same
    /// reply as long as this says the shape lives, so any shard may keep
    /// and reuse it.
    pub immutable: Option<Liveness>,
}

/// Errors ≥ 400 other than 409 must never be cached.
const NO_STORE: &str = "no-store";

impl crate::shapes::chunk_cache::Weigh for ShapeReply {
    fn weight(&self) -> usize {
        self.body.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len())
                .sum::<usize>()
    }
}

impl ShapeReply {
    pub fn new(status: u16, body: impl Into<Bytes>) -> ShapeReply {
        ShapeReply {
            status,
            headers: Vec::new(),
            body: body.into(),
            created: false,
            immutable: None,
        }
    }

    /// The value of header `name`, if set.
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> ShapeReply {
        self.headers.push((name, value.into()));
        self
    }

    /// 400 `{"message":"Invalid request","errors":{field:[messages]}}`.
    pub fn invalid(errors: &[(&str, String)]) -> ShapeReply {
        let mut fields: Vec<(&str, Vec<&str>)> = Vec::new();
        for (field, message) in errors {
            match fields.iter_mut().find(|(f, _)| f == field) {
                Some((_, messages)) => messages.push(message),
                None => fields.push((field, vec![message])),
            }
        }
        // Built by hand to keep Electric's key order: message, then errors.
        let mut body = String::from(r#"{"message":"Invalid request","errors":{"#);
        for (n, (field, messages)) in fields.iter().enumerate() {
            if n > 0 {
                body.push(',');
            }
            body.push_str(&serde_json::Value::from(*field).to_string());
            body.push(':');
            body.push_str(&serde_json::json!(messages).to_string());
        }
        body.push_str("}}");
        ShapeReply::error(400, body)
    }

    /// 400 for a subset field: Electric nests these,
    /// `{"message":"Invalid request","errors":{"subset":{field:[message]}}}`.
    pub fn invalid_subset(field: &str, message: &str) -> ShapeReply {
        // By hand: Electric's key order puts the message first.
        ShapeReply::error(
            400,
            format!(
                r#"{{"message":"Invalid request","errors":{{"subset":{{{}:[{}]}}}}}}"#,
                serde_json::Value::from(field),
                serde_json::Value::from(message)
            ),
        )
    }

    /// Any non-409 error: `{"message": ...}` or a prepared body, uncacheable.
    pub fn error(status: u16, body: impl Into<Bytes>) -> ShapeReply {
        ShapeReply::new(status, body)
            .header("cache-control", NO_STORE)
            .header("surrogate-control", NO_STORE)
    }

    pub fn message(status: u16, message: &str) -> ShapeReply {
        ShapeReply::error(
            status,
            serde_json::json!({ "message": message }).to_string(),
        )
    }

    /// 409: the client must start over, with `handle` if there is a shape
    /// for its definition now.
    pub fn must_refetch(handle: Option<&str>) -> ShapeReply {
        let reply = ShapeReply::new(409, shards::shape::encode::MUST_REFETCH);
        match handle {
            Some(h) => reply
                .header("electric-handle", h)
                .header("cache-control", "public, max-age=60, must-revalidate"),
            None => reply.header("cache-control", "public, max-age=1, must-revalidate"),
        }
    }

    /// 503 with `retry-after`, e.g. when Postgres is unreachable.
    pub fn unavailable(message: &str, retry_after_s: u32) -> ShapeReply {
        ShapeReply::message(503, message).header("retry-after", retry_after_s.to_string())
    }

    pub fn into_response(self) -> Response<Body> {
        let has_body = !self.body.is_empty();
        let mut response = Response::new(Body::new(self.body));
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        if has_body {
            headers.insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            );
        }
        for (name, value) in self.headers {
            // Values are built by us from validated parts; a value that is
            // not a valid header (never expected) is dropped, not a panic.
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.append(HeaderName::from_static(name), value);
            }
        }
        response::with_cors(response)
    }
}
