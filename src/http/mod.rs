//! The HTTP edge: every shard runs its own listener on the shared port
//! (SO_REUSEPORT) and serves HTTP/1.1 with hyper over the runtime's streams.

mod health;
mod io;
mod response;
pub mod shape;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use shards::runtime::{self, net, Shutdown};

use crate::status::ServiceStatus;
use response::Body;

/// Connections one shard serves at once; beyond it, accepting waits and the
/// kernel's backlog absorbs the burst.
pub const MAX_CONNECTIONS_PER_SHARD: usize = 16 * 1024;

/// Bound of a connection's read buffer while a request head is parsed
/// (hyper's `max_buf_size`; its adaptive reads may take a head a few times
/// larger before refusing it). Electric's client sends short heads; a long
/// `where` travels in a POST body (subset snapshots) instead.
pub const MAX_REQUEST_HEAD_BYTES: usize = 64 * 1024;

/// How long in-flight requests get to finish once a stop is requested.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a connection may still receive its request once a stop is
/// requested, before an idle one is closed.
const STOP_GRACE: Duration = Duration::from_millis(100);

/// What every request handler on a shard can reach.
pub struct HttpContext {
    pub shard: usize,
    pub status: Arc<ServiceStatus>,
    /// The secret clients must send; None when insecure.
    pub secret: Option<String>,
    /// Shape routing and serving; None only in tests of the bare edge.
    pub shapes: Option<Rc<shape::forward::Router>>,
    /// Shape requests this shard is serving now, open SSE streams
    /// included (bounded by `shape::MAX_IN_FLIGHT`).
    pub in_flight: Rc<std::cell::Cell<usize>>,
    pub admission: Arc<shape::admission::Admission>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub sse: shape::sse::SseSettings,
    /// Ends open SSE streams on a stop.
    pub shutdown: Shutdown,
    /// A connection idle this long (no request handled, no byte moving)
    /// is dropped.
    pub read_timeout: Duration,
    /// Close each connection after its response (a rolling deploy's
    /// read-only phase: no idle keep-alive may be caught by its end).
    pub close_after_response: bool,
}

/// Accepts and serves connections on this shard until `shutdown`; then
/// closes the listener (counting it in `unlistened`) and lets open
/// connections finish, bounded.
pub async fn serve(
    addr: SocketAddr,
    context: HttpContext,
    shutdown: Shutdown,
    unlistened: Option<Arc<std::sync::atomic::AtomicUsize>>,
) -> std::io::Result<()> {
    let listener = net::bind_shared(addr)?;
    let context = Rc::new(context);
    let open = Rc::new(std::cell::Cell::new(0usize));
    // Pinged when a connection closes: at the cap, accepting waits for it
    // (new connections wait in the kernel's backlog meanwhile).
    let closed = shards::notify::Notify::new();
    let gauge = context
        .metrics
        .storage
        .get(context.shard)
        .cloned()
        .unwrap_or_default();
    // Connections still open when the drain ends are closed here rather
    // than left to the executor's end: a connection task that outlives its
    // executor keeps its socket, and its client waits for a reply that
    // never comes.
    let abort = shards::notify::Notify::new();
    let aborted = Rc::new(std::cell::Cell::new(false));
    let accept_loop = async {
        loop {
            if open.get() >= MAX_CONNECTIONS_PER_SHARD {
                let freed = closed.listen();
                if open.get() >= MAX_CONNECTIONS_PER_SHARD {
                    freed.await;
                }
                continue;
            }
            let stream = match net::accept(&listener).await {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(shard = context.shard, "accept failed: {e}");
                    runtime::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            open.set(open.get() + 1);
            gauge
                .http_connections
                .store(open.get() as u64, std::sync::atomic::Ordering::Relaxed);
            let context = context.clone();
            let open = open.clone();
            let shutdown = shutdown.clone();
            let closed = closed.clone();
            let gauge = gauge.clone();
            let (abort, aborted) = (abort.clone(), aborted.clone());
            runtime::spawn_detached(async move {
                let abort = async {
                    loop {
                        let woken = abort.listen();
                        if aborted.get() {
                            return;
                        }
                        woken.await;
                    }
                };
                futures_lite::future::or(serve_connection(stream, context, shutdown), abort).await;
                open.set(open.get() - 1);
                gauge
                    .http_connections
                    .store(open.get() as u64, std::sync::atomic::Ordering::Relaxed);
                closed.notify_all();
            });
        }
    };
    futures_lite::future::or(accept_loop, shutdown.wait()).await;
    drop(listener);
    if let Some(unlistened) = unlistened {
        unlistened.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    // Let in-flight requests finish, bounded.
    let deadline = std::time::Instant::now() + DRAIN_TIMEOUT;
    while open.get() > 0 && std::time::Instant::now() < deadline {
        runtime::sleep(Duration::from_millis(10)).await;
    }
    aborted.set(true);
    abort.notify_all();
    // A turn for the aborted connections to drop their sockets.
    runtime::sleep(Duration::from_millis(1)).await;
    Ok(())
}

async fn serve_connection(stream: net::TcpStream, context: Rc<HttpContext>, shutdown: Shutdown) {
    let activity = Rc::new(std::cell::Cell::new(std::time::Instant::now()));
    // Requests whose handler is running (a long-poll waits in there).
    let in_flight = Rc::new(std::cell::Cell::new(0usize));
    let read_timeout = context.read_timeout;
    let deadlines = context.shapes.as_ref().map(|r| r.deadlines().clone());
    let service = {
        let in_flight = in_flight.clone();
        hyper::service::service_fn(move |request| {
            let context = context.clone();
            let busy = Busy::new(in_flight.clone());
            async move {
                let response = route(request, &context).await;
                drop(busy);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let connection = hyper::server::conn::http1::Builder::new()
        // hyper's header timeout needs a Send timer; glommio's is not: the
        // idle watchdog below bounds a slow head instead.
        .header_read_timeout(None)
        // Bounds the connection's read buffer: a request head that cannot
        // be parsed within it is refused (431, or 414 for the URI) instead
        // of being buffered without end.
        .max_buf_size(MAX_REQUEST_HEAD_BYTES)
        .keep_alive(true)
        .serve_connection(io::HyperIo(stream, activity.clone()), service);
    let mut connection = std::pin::pin!(connection);
    // A connection with no request being handled and no byte moving for
    // the read timeout is dropped: an idle keep-alive, a head sent too
    // slowly, or a client that stopped reading its response (SSE
    // keep-alives and long-polls in flight keep theirs). The wait is an
    // entry in the shard's shared deadlines, not a timer per connection.
    let watchdog = async {
        loop {
            let now = std::time::Instant::now();
            let due = activity.get() + read_timeout;
            if in_flight.get() == 0 && now >= due {
                return;
            }
            let wake_at = if in_flight.get() > 0 {
                now + read_timeout
            } else {
                due
            };
            match &deadlines {
                Some(deadlines) => deadlines.at(wake_at).await,
                None => runtime::sleep(wake_at.saturating_duration_since(now)).await,
            }
        }
    };
    enum End<T> {
        Done(T),
        Stop,
        Idle,
    }
    // On a stop, idle keep-alive connections close at once and busy ones
    // after their response (live requests answer early on a stop).
    let ended = futures_lite::future::or(
        async { End::Done(connection.as_mut().await) },
        futures_lite::future::or(
            async {
                shutdown.wait().await;
                End::Stop
            },
            async {
                watchdog.await;
                End::Idle
            },
        ),
    )
    .await;
    let result = match ended {
        End::Done(result) => result,
        End::Idle => {
            tracing::debug!("closing a connection idle for {read_timeout:?}");
            return;
        }
        End::Stop => {
            // A request already sent but not yet read would be cut by the
            // close (the unread bytes make it a reset): give it a moment to
            // be read, and so answered, first.
            let early =
                futures_lite::future::or(async { Some(connection.as_mut().await) }, async {
                    runtime::sleep(STOP_GRACE).await;
                    None
                })
                .await;
            match early {
                Some(result) => result,
                None => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection ended: {e}");
    }
}

/// Counts a request whose handler runs, until dropped.
struct Busy(Rc<std::cell::Cell<usize>>);

impl Busy {
    fn new(count: Rc<std::cell::Cell<usize>>) -> Busy {
        count.set(count.get() + 1);
        Busy(count)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// What the server calls itself on every response (`electric-server`, as
/// Electric names its own): Electric's client ignores it; operators see
/// which server answered behind a proxy.
const SERVER_NAME: &str = concat!("shapeshard/", env!("CARGO_PKG_VERSION"));

async fn route(request: Request<Incoming>, context: &HttpContext) -> Response<Body> {
    let origin = request.headers().get(hyper::header::ORIGIN).cloned();
    let request_id = request_id(request.headers().get("x-request-id"));
    let mut response = route_request(request, context).await;
    let headers = response.headers_mut();
    headers.insert(
        "electric-server",
        hyper::header::HeaderValue::from_static(SERVER_NAME),
    );
    if let Ok(value) = hyper::header::HeaderValue::from_str(&request_id) {
        headers.insert("x-request-id", value);
    }
    if context.close_after_response {
        headers.insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    // Electric echoes the caller's origin (credentials work then); a cache
    // must keep the answers for different origins apart.
    if let Some(origin) = origin {
        if headers.contains_key(hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN) {
            headers.insert(hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.append(
                hyper::header::VARY,
                hyper::header::HeaderValue::from_static("origin"),
            );
        }
    }
    response
}

/// The caller's `x-request-id` when it is a sensible one (20–200 bytes, as
/// Plug accepts), else a fresh one.
fn request_id(given: Option<&hyper::header::HeaderValue>) -> String {
    if let Some(id) = given.and_then(|v| v.to_str().ok()) {
        if (20..=200).contains(&id.len()) {
            return id.to_string();
        }
    }
    thread_local! {
        static NEXT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    let n = NEXT.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{nanos:016x}{:04x}{n:08x}", std::process::id() & 0xffff)
}

async fn route_request(request: Request<Incoming>, context: &HttpContext) -> Response<Body> {
    let path = normalise_path(request.uri().path());
    match (request.method(), path.as_str()) {
        (&Method::GET | &Method::HEAD, "/") => response::with_cors(Response::new(Body::Empty)),
        (&Method::GET | &Method::HEAD, "/v1/health") => {
            health::respond(&context.status, &context.metrics)
        }
        (_, "/v1/shape") => shape::handle(request, context).await,
        (&Method::GET, "/metrics") => response::text(context.metrics.render()),
        (&Method::POST, "/metrics/reset") => reset_latency(&request, context),
        _ => response::not_found(),
    }
}

/// Empties the latency histograms (the perf harness, between workloads);
/// with a secret configured, only for a caller that has it.
fn reset_latency(request: &Request<Incoming>, context: &HttpContext) -> Response<Body> {
    if let Some(secret) = &context.secret {
        let query = shape::request::Query::parse(request.uri().query());
        let given = query.get("secret").or_else(|| query.get("api_secret"));
        if !shape::secret_matches(given, secret) {
            return shape::reply::ShapeReply::message(401, "Unauthorized - Invalid API secret")
                .into_response();
        }
    }
    context.metrics.reset_latency();
    response::text(String::from("reset\n"))
}

/// `/v1//shape/`, `/v1/%73hape` → `/v1/shape`: routes (and so the secret
/// check) see one spelling of each path, as in Electric.
fn normalise_path(path: &str) -> String {
    let decoded: Vec<u8> =
        form_urlencoded::parse(format!("p={}", path.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned().into_bytes())
            .unwrap_or_default();
    let decoded = String::from_utf8_lossy(&decoded);
    let parts: Vec<&str> = decoded.split('/').filter(|p| !p.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn paths_normalise_before_routing() {
        assert_eq!(super::normalise_path("/v1//shape/"), "/v1/shape");
        assert_eq!(super::normalise_path("/v1/%73hape"), "/v1/shape");
        assert_eq!(super::normalise_path("/"), "/");
    }
}
