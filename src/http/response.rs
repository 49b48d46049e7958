//! Response building shared by every route: CORS as Electric does it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, CACHE_CONTROL,
    CONTENT_TYPE,
};
use hyper::{Response, StatusCode};

/// A response body: whole bytes, or a stream of frames pulled by the
/// connection as it can write them (SSE). A stream is a state machine
/// polled by the connection's own task: waiting costs no task of its own,
/// and a client hanging up drops it (and whatever it waits on).
#[derive(Default)]
pub enum Body {
    #[default]
    Empty,
    Full(Option<Bytes>),
    Stream(Pin<Box<dyn BodyStream>>),
}

/// The next frame of a streamed body; `None` ends the body.
pub trait BodyStream {
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>>;
}

/// A body stream driven by `next(state)`: each call yields a frame and
/// the state for the next one (`futures` `unfold`, with no extra crate).
pub struct Unfold<S, F, Fut> {
    state: Option<S>,
    next: F,
    pending: Option<Pin<Box<Fut>>>,
}

impl<S: Unpin, F: Unpin, Fut> BodyStream for Unfold<S, F, Fut>
where
    F: FnMut(S) -> Fut,
    Fut: Future<Output = Option<(Bytes, S)>>,
{
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = self.get_mut();
        if this.pending.is_none() {
            let Some(state) = this.state.take() else {
                return Poll::Ready(None);
            };
            this.pending = Some(Box::pin((this.next)(state)));
        }
        let pending = this.pending.as_mut().expect("set above");
        match pending.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(step) => {
                this.pending = None;
                Poll::Ready(step.map(|(frame, state)| {
                    this.state = Some(state);
                    frame
                }))
            }
        }
    }
}

impl Body {
    pub fn new(bytes: impl Into<Bytes>) -> Body {
        Body::Full(Some(bytes.into()))
    }

    /// A streamed body: `next(state)` yields the next frame and state.
    pub fn unfold<S, F, Fut>(state: S, next: F) -> Body
    where
        S: Unpin + 'static,
        F: FnMut(S) -> Fut + Unpin + 'static,
        Fut: Future<Output = Option<(Bytes, S)>> + 'static,
    {
        Body::Stream(Box::pin(Unfold {
            state: Some(state),
            next,
            pending: None,
        }))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(hyper::body::Frame::data(b)))),
            Body::Stream(stream) => stream
                .as_mut()
                .poll_next(cx)
                .map(|frame| frame.map(|b| Ok(hyper::body::Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(bytes) => bytes.is_none(),
            Body::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Body::Empty => hyper::body::SizeHint::with_exact(0),
            Body::Full(Some(bytes)) => hyper::body::SizeHint::with_exact(bytes.len() as u64),
            Body::Full(None) => hyper::body::SizeHint::with_exact(0),
            Body::Stream(_) => hyper::body::SizeHint::default(),
        }
    }
}

/// Headers a browser client may read across origins.
const EXPOSED_HEADERS: &str = "electric-cursor,electric-handle,electric-has-data,electric-offset,electric-schema,electric-up-to-date,electric-internal-known-error,retry-after";

pub fn json(
    status: StatusCode,
    body: impl Into<Bytes>,
    cache_control: &'static str,
) -> Response<Body> {
    let mut response = Response::new(Body::new(body));
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
    let mut response = Response::new(Body::new(body));
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
