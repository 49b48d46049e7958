//! Requests travel to the shape's owner shard over the mesh and the reply
//! comes back the same way; the owner does all the work, the receiving
//! shard only holds the connection.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use shards::notify::Notify;
use shards::runtime::{self, mesh::MeshLinks};

use super::reply::ShapeReply;
use super::request::ShapeRequest;
use crate::shapes::service::ShapeService;

/// Messages per mesh link before a sender waits.
pub const MESH_CAPACITY: usize = 1024;

pub enum Envelope {
    Request {
        id: u64,
        from: usize,
        request: ShapeRequest,
    },
    Reply {
        id: u64,
        reply: ShapeReply,
    },
}

struct Waiting {
    reply: RefCell<Option<ShapeReply>>,
    done: Rc<Notify>,
}

pub struct Router {
    links: MeshLinks<Envelope>,
    service: Rc<ShapeService>,
    next_id: Cell<u64>,
    /// Forwarded requests awaiting their reply, by id.
    waiting: RefCell<HashMap<u64, Rc<Waiting>>>,
    /// Initial requests in flight to their owner, by what they ask: an
    /// identical one joins instead of crossing the mesh again (a herd on a
    /// new shape costs one message per shard).
    initial: RefCell<HashMap<String, Rc<Waiting>>>,
}

impl Router {
    pub fn new(links: MeshLinks<Envelope>, service: Rc<ShapeService>) -> Rc<Router> {
        let router = Rc::new(Router {
            links,
            service,
            next_id: Cell::new(0),
            waiting: RefCell::new(HashMap::new()),
            initial: RefCell::new(HashMap::new()),
        });
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

    /// Answers `request` on shard `owner`.
    pub async fn dispatch(&self, owner: usize, request: ShapeRequest) -> ShapeReply {
        if owner == self.me() {
            return self.service.serve(request).await;
        }
        let Some(key) = coalescing_key(&request) else {
            return self.forward(owner, request).await;
        };
        let joined = self.initial.borrow().get(&key).cloned();
        if let Some(leader) = joined {
            crate::metrics::Metrics::inc(&self.service.metrics.requests_coalesced);
            loop {
                let done = leader.done.listen();
                if let Some(reply) = leader.reply.borrow().as_ref() {
                    return reply.clone();
                }
                done.await;
            }
        }
        let leader = Rc::new(Waiting {
            reply: RefCell::new(None),
            done: Notify::new(),
        });
        self.initial
            .borrow_mut()
            .insert(key.clone(), leader.clone());
        // Removed and published however this ends (the leader's client may
        // hang up): followers must never wait on a reply that won't come.
        struct Publish<'a> {
            router: &'a Router,
            key: String,
            leader: Rc<Waiting>,
            reply: Option<ShapeReply>,
        }
        impl Drop for Publish<'_> {
            fn drop(&mut self) {
                self.router.initial.borrow_mut().remove(&self.key);
                let reply = self.reply.take().unwrap_or_else(|| {
                    ShapeReply::unavailable("The request was interrupted, please retry", 1)
                });
                *self.leader.reply.borrow_mut() = Some(reply);
                self.leader.done.notify_all();
            }
        }
        let mut publish = Publish {
            router: self,
            key,
            leader,
            reply: None,
        };
        let reply = self.forward(owner, request).await;
        publish.reply = Some(reply.clone());
        drop(publish);
        reply
    }

    async fn forward(&self, owner: usize, request: ShapeRequest) -> ShapeReply {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let waiting = Rc::new(Waiting {
            reply: RefCell::new(None),
            done: Notify::new(),
        });
        self.waiting.borrow_mut().insert(id, waiting.clone());
        let done = waiting.done.listen();
        let message = Envelope::Request {
            id,
            from: self.me(),
            request,
        };
        if self.links.send(owner, message).await.is_err() {
            self.waiting.borrow_mut().remove(&id);
            return ShapeReply::unavailable("The server is shutting down, please retry", 1);
        }
        done.await;
        let reply = waiting.reply.borrow_mut().take();
        reply.unwrap_or_else(|| ShapeReply::unavailable("The request was lost, please retry", 1))
    }

    /// Serves requests from `peer` and delivers its replies. Never blocks
    /// on anything but the link itself: requests run as tasks of their own.
    async fn receive_from(self: Rc<Self>, peer: usize) {
        while let Some(message) = self.links.recv_from(peer).await {
            match message {
                Envelope::Request { id, from, request } => {
                    let router = self.clone();
                    runtime::spawn_detached(async move {
                        let reply = router.service.serve(request).await;
                        // A peer that has gone is shutting down; nobody waits.
                        let _ = router.links.send(from, Envelope::Reply { id, reply }).await;
                    });
                }
                Envelope::Reply { id, reply } => {
                    if let Some(waiting) = self.waiting.borrow_mut().remove(&id) {
                        *waiting.reply.borrow_mut() = Some(reply);
                        waiting.done.notify_all();
                    }
                }
            }
        }
    }
}

/// Initial requests (offset -1, no handle, not live) for the same
/// definition get the same answer, so they may share one.
fn coalescing_key(request: &ShapeRequest) -> Option<String> {
    use super::request::{RequestKind, StartOffset};
    use shards::shape::offset::LogOffset;
    let initial = request.kind == RequestKind::Get
        && request.offset == StartOffset::At(LogOffset::BeforeAll)
        && request.handle.is_none()
        && !request.live;
    let definition = request.definition.as_ref().filter(|_| initial)?;
    Some(format!(
        "{}|inm={}",
        definition.canonical(),
        request.if_none_match.as_deref().unwrap_or("")
    ))
}
