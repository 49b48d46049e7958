//! Requests travel to the shape's owner shard over the mesh and the reply
//! comes back the same way; the owner does the work, the receiving shard
//! holds the connection. A sealed chunk's reply never changes while its
//! shape lives, so the receiving shard keeps it (bounded, LRU) and answers
//! the same request again itself: a hot shape's catch-up reads spread over
//! every core instead of queueing on its owner.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use shards::notify::Slot;
use shards::runtime::{self, mesh::MeshLinks};

use super::reply::ShapeReply;
use super::request::ShapeRequest;
use crate::shapes::chunk_cache::ChunkCache;
use crate::shapes::service::ShapeService;

/// Messages per mesh link before a sender waits.
pub const MESH_CAPACITY: usize = 1024;

pub enum Envelope {
    Request {
        id: u64,
        from: usize,
        /// Boxed: a definition is large beside the other messages.
        request: Box<ShapeRequest>,
    },
    Reply {
        id: u64,
        reply: ShapeReply,
    },
    /// Shard `from` has streams following `handle` (or no longer has).
    Watch {
        from: usize,
        handle: String,
        follow: bool,
    },
    /// From a shape's owner: `handle` changed (or is gone).
    Changed {
        owner: usize,
        handle: String,
        gone: bool,
    },
}

/// How late a coarse deadline (SSE keep-alives, timeouts) may fire.
const DEADLINE_RESOLUTION: Duration = Duration::from_millis(100);

/// How long a shape's kept first response answers for its definition
/// before the owner is asked again.
const INITIAL_KEPT_FOR: Duration = Duration::from_secs(1);

/// An owner's immutable reply kept by another shard.
#[derive(Clone)]
struct Kept {
    reply: ShapeReply,
    /// Answers until then (a first request's), or as long as the shape
    /// lives (a sealed chunk's).
    until: Option<Instant>,
}

impl crate::shapes::chunk_cache::Weigh for Kept {
    fn weight(&self) -> usize {
        self.reply.weight()
    }
}

/// Which identical requests share one owner read (`Router::shared_read`).
#[derive(Clone, Copy)]
enum Shared {
    /// A first request (offset -1, no handle); `keep`: its reply is kept
    /// for `INITIAL_KEPT_FOR`.
    Initial { keep: bool },
    /// A long-poll, or an SSE round.
    Live,
}

impl Shared {
    /// Keeps the two kinds' keys apart in one map.
    fn prefix(self) -> &'static str {
        match self {
            Shared::Initial { .. } => "initial|",
            Shared::Live => "live|",
        }
    }
}

/// A reply some request is waiting for.
type Waiting = Slot<ShapeReply>;

pub struct Router {
    links: MeshLinks<Envelope>,
    service: Rc<ShapeService>,
    next_id: Cell<u64>,
    /// Forwarded requests awaiting their reply, by id.
    waiting: RefCell<HashMap<u64, Rc<Waiting>>>,
    /// Requests in flight from this shard, by what they ask: an identical
    /// one joins instead of asking the owner again (a herd on a new shape
    /// costs one message per shard; 1,000 long-polls at one offset, one
    /// owner read).
    /// What this shard's SSE streams follow, and what others follow here.
    live: super::live::LiveHub,
    /// Keep-alive and timeout deadlines of this shard's streams.
    deadlines: Rc<shards::notify::Deadlines>,
    in_flight: RefCell<HashMap<String, Rc<Waiting>>>,
    /// Sealed-chunk replies from other shards' shapes, by request, and
    /// when they were kept.
    replies: RefCell<ChunkCache<String, Kept>>,
}

impl Router {
    pub fn new(links: MeshLinks<Envelope>, service: Rc<ShapeService>) -> Rc<Router> {
        let router = Rc::new(Router {
            links,
            next_id: Cell::new(0),
            waiting: RefCell::new(HashMap::new()),
            in_flight: RefCell::new(HashMap::new()),
            live: super::live::LiveHub::default(),
            deadlines: shards::notify::Deadlines::new(),
            replies: RefCell::new(ChunkCache::new(service.config().chunk_cache_bytes)),
            service,
        });
        runtime::spawn_detached(
            router
                .deadlines
                .clone()
                .drive(DEADLINE_RESOLUTION, runtime::sleep),
        );
        for peer in 0..router.links.shards() {
            if peer != router.me() {
                let router = router.clone();
                runtime::spawn_detached(async move { router.receive_from(peer).await });
            }
        }
        router
    }

    pub fn me(&self) -> usize {
        self.links.me()
    }

    pub fn shards(&self) -> usize {
        self.links.shards()
    }

    pub fn service(&self) -> &Rc<ShapeService> {
        &self.service
    }

    pub fn live(&self) -> &super::live::LiveHub {
        &self.live
    }

    pub fn deadlines(&self) -> &Rc<shards::notify::Deadlines> {
        &self.deadlines
    }

    pub(super) fn links(&self) -> &MeshLinks<Envelope> {
        &self.links
    }

    /// Answers `request` on shard `owner`.
    pub async fn dispatch(self: &Rc<Self>, owner: usize, request: ShapeRequest) -> ShapeReply {
        if let Some(key) = live_key(&request, None) {
            return self.shared_read(owner, request, key, Shared::Live).await;
        }
        if owner == self.me() {
            return self.service.serve(request).await;
        }
        if let Some(key) = reusable_key(&request) {
            if let Some(reply) = self.kept(&key) {
                return reply;
            }
            let reply = self.forward(owner, request).await;
            self.keep(key, &reply, false);
            return reply;
        }
        let Some(key) = coalescing_key(&request) else {
            return self.forward(owner, request).await;
        };
        // A shape's first response (its snapshot's first chunk) is sealed
        // too, but which shape a definition names can change: kept briefly
        // and only while that shape lives (its owner also sees the reads
        // again, for its LRU, once per `INITIAL_KEPT_FOR`).
        let kept_initial = request.if_none_match.is_none();
        if kept_initial {
            if let Some(reply) = self.kept(&key) {
                return reply;
            }
        }
        self.shared_read(owner, request, key, Shared::Initial { keep: kept_initial })
            .await
    }

    /// One round of an SSE stream (`request.wait` zero) after its watch saw
    /// `changes` notifications: rounds of streams that saw the same ones
    /// ask the same and share one owner read. (A stream that saw a newer
    /// change must not join a read that may predate it.)
    pub async fn dispatch_round(
        self: &Rc<Self>,
        owner: usize,
        request: ShapeRequest,
        changes: u64,
    ) -> ShapeReply {
        match live_key(&request, Some(changes)) {
            Some(key) => self.shared_read(owner, request, key, Shared::Live).await,
            None => self.dispatch(owner, request).await,
        }
    }

    /// Joins the identical request in flight from this shard, or starts it
    /// as a task of its own: a follower never depends on the client that
    /// started it staying connected.
    async fn shared_read(
        self: &Rc<Self>,
        owner: usize,
        request: ShapeRequest,
        key: String,
        shared: Shared,
    ) -> ShapeReply {
        let key = format!("{}{key}", shared.prefix());
        let joined = self.in_flight.borrow().get(&key).cloned();
        if let Some(read) = joined {
            let metrics = &self.service.metrics;
            crate::metrics::Metrics::inc(match shared {
                Shared::Initial { .. } => &metrics.requests_coalesced,
                Shared::Live => &metrics.live_reads_joined,
            });
            return read.get().await;
        }
        let read = Waiting::new();
        self.in_flight
            .borrow_mut()
            .insert(key.clone(), read.clone());
        let router = self.clone();
        let leader = read.clone();
        runtime::spawn_detached(async move {
            let reply = match owner == router.me() {
                true => router.service.serve(request).await,
                false => router.forward(owner, request).await,
            };
            router.in_flight.borrow_mut().remove(&key);
            if let Shared::Initial { keep: true } = shared {
                let kept = key[shared.prefix().len()..].to_string();
                router.keep(kept, &reply, true);
            }
            leader.set(reply);
        });
        read.get().await
    }

    /// A kept copy of the owner's reply to the same request, if its shape
    /// still lives (and, for a first request, it was kept recently).
    fn kept(&self, key: &String) -> Option<ShapeReply> {
        let mut replies = self.replies.borrow_mut();
        let kept = replies.get(key)?;
        let fresh = kept.reply.immutable.as_ref().is_some_and(|l| l.is_alive())
            && kept.until.is_none_or(|until| Instant::now() < until);
        if !fresh {
            replies.remove(key);
            return None;
        }
        crate::metrics::Metrics::inc(&self.service.metrics.replies_reused);
        Some(kept.reply)
    }

    /// Keeps `reply` if it is immutable; `initial`: it answers a first
    /// request (no handle), kept for `INITIAL_KEPT_FOR`.
    fn keep(&self, key: String, reply: &ShapeReply, initial: bool) {
        if reply.immutable.is_some() {
            let mut reply = reply.clone();
            // A reused reply creates nothing (the count drives eviction).
            reply.created = false;
            let until = initial.then(|| Instant::now() + INITIAL_KEPT_FOR);
            self.replies.borrow_mut().put(key, Kept { reply, until });
        }
    }

    async fn forward(&self, owner: usize, request: ShapeRequest) -> ShapeReply {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let waiting = Waiting::new();
        self.waiting.borrow_mut().insert(id, waiting.clone());
        let message = Envelope::Request {
            id,
            from: self.me(),
            request: Box::new(request),
        };
        if self.links.send(owner, message).await.is_err() {
            self.waiting.borrow_mut().remove(&id);
            return ShapeReply::unavailable("The server is shutting down, please retry", 1);
        }
        waiting.get().await
    }

    /// Serves requests from `peer` and delivers its replies. Never blocks
    /// on anything but the link itself: requests run as tasks of their own.
    async fn receive_from(self: Rc<Self>, peer: usize) {
        while let Some(message) = self.links.recv_from(peer).await {
            match message {
                Envelope::Request { id, from, request } => {
                    let router = self.clone();
                    runtime::spawn_detached(async move {
                        let reply = router.service.serve(*request).await;
                        // A peer that has gone is shutting down; nobody waits.
                        let _ = router.links.send(from, Envelope::Reply { id, reply }).await;
                    });
                }
                Envelope::Reply { id, reply } => {
                    let waiting = self.waiting.borrow_mut().remove(&id);
                    if let Some(waiting) = waiting {
                        waiting.set(reply);
                    }
                }
                // Inline, not a task: a read `from` sends after this is
                // handled after it (see `live.rs`).
                Envelope::Watch {
                    from,
                    handle,
                    follow,
                } => super::live::LiveHub::watch(&self, from, handle, follow),
                Envelope::Changed {
                    owner,
                    handle,
                    gone,
                } => self.live.notify(owner, &handle, gone),
            }
        }
    }
}

/// Non-live reads of a known shape (handle given) that a sealed chunk may
/// answer: the same request always gets the same reply while the shape
/// lives. (Without a handle the shape a definition names may change; with
/// `if-none-match` the answer may be a 304.)
fn reusable_key(request: &ShapeRequest) -> Option<String> {
    use super::request::RequestKind;
    let reusable = request.kind == RequestKind::Get
        && !request.live
        && request.subset.is_none()
        && request.if_none_match.is_none();
    let handle = request.handle.as_deref().filter(|_| reusable)?;
    let definition = request.definition.as_ref()?;
    Some(format!(
        "{}|handle={handle}|offset={:?}",
        definition.canonical(),
        request.offset
    ))
}

/// Live reads of a known shape that get the same answer: the same offset,
/// cursor and wait. A long-poll waits on the owner's log itself, so one
/// joining later loses nothing; an SSE round (`wait` zero) reads at once
/// and must name the changes its stream saw (`changes`).
fn live_key(request: &ShapeRequest, changes: Option<u64>) -> Option<String> {
    use super::request::RequestKind;
    let shared = request.kind == RequestKind::Get
        && request.live
        && request.subset.is_none()
        && request.if_none_match.is_none()
        && (request.wait.is_none() || changes.is_some());
    let handle = request.handle.as_deref().filter(|_| shared)?;
    let definition = request.definition.as_ref()?;
    Some(format!(
        "{}|handle={handle}|offset={:?}|sse={}|cursor={:?}|wait={:?}|changes={changes:?}",
        definition.canonical(),
        request.offset,
        request.sse,
        request.cursor,
        request.wait,
    ))
}

/// Initial requests (offset -1, no handle, not live) for the same
/// definition get the same answer, so they may share one.
fn coalescing_key(request: &ShapeRequest) -> Option<String> {
    use super::request::{RequestKind, StartOffset};
    use shards::shape::offset::LogOffset;
    let initial = request.kind == RequestKind::Get
        && request.offset == StartOffset::At(LogOffset::BeforeAll)
        && request.handle.is_none()
        && !request.live
        && request.subset.is_none();
    let definition = request.definition.as_ref().filter(|_| initial)?;
    Some(format!(
        "{}|inm={}",
        definition.canonical(),
        request.if_none_match.as_deref().unwrap_or("")
    ))
}
