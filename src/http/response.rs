//! Response building shared by every route: CORS as Electric does it.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, CACHE_CONTROL,
    CONTENT_TYPE,
};
use hyper::{Response, StatusCode};

pub type Body = Full<Bytes>;

/// Headers a browser client may read across origins.
const EXPOSED_HEADERS: &str = "electric-cursor,electric-handle,electric-has-data,electric-offset,electric-schema,electric-up-to-date,electric-internal-known-error,retry-after";

pub fn json(
    status: StatusCode,
    body: impl Into<Bytes>,
    cache_control: &'static str,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static(cache_control));
    with_cors(response)
}

pub fn with_cors(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    headers.insert(
        ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSED_HEADERS),
    );
    response
}

pub fn text(body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub fn not_found() -> Response<Body> {
    json(
        StatusCode::NOT_FOUND,
        r#"{"message":"Not found"}"#,
        "no-store",
    )
}

/// CORS preflight for `/v1/shape`, as Electric answers it: 204, a day of
/// max-age, and only `if-none-match`/`traceparent` echoed as allowed headers.
pub fn preflight<B>(request: &hyper::Request<B>) -> Response<Body> {
    let mut response = Response::new(Body::default());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, HEAD, DELETE, OPTIONS"),
    );
    headers.insert(
        hyper::header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    headers.insert(
        hyper::header::CONNECTION,
        HeaderValue::from_static("keep-alive"),
    );
    for value in request
        .headers()
        .get_all(hyper::header::ACCESS_CONTROL_REQUEST_HEADERS)
    {
        let allowed = value
            .to_str()
            .map(|v| v.trim().to_ascii_lowercase())
            .is_ok_and(|v| v == "if-none-match" || v == "traceparent");
        if allowed {
            headers.append(hyper::header::ACCESS_CONTROL_ALLOW_HEADERS, value.clone());
        }
    }
    with_cors(response)
}
