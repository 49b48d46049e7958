//! Where idle SSE streams wait: on the shard that holds their connection,
//! as a waker in a per-shape list, with no task or timer of their own.
//!
//! A shard's hub keeps one *watch* per shape its streams follow. The first
//! stream to follow a shape asks the shape's owner to watch it; the owner
//! runs one task per watched shape, which wakes once per change of the
//! shape's log and sends one `Changed` message to each watching shard (not
//! one per client); the hub then wakes every local stream of that shape,
//! and each reads its new entries. When the last local stream of a shape
//! ends, the hub tells the owner to stop. A shape that goes away is
//! reported `Gone`, and its streams end.
//!
//! Ordering is what makes this lossless: a stream listens on its watch
//! before it reads, and the watch request travels on the same mesh link as
//! (and before) that read, handled inline by the owner, so any change after
//! the read is reported to the hub.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;

use shards::notify::{Listener, Notify};
use shards::runtime::{self, Task};

use super::forward::{Envelope, Router};

/// One shape followed by this shard's streams.
pub struct Watch {
    changed: Rc<Notify>,
    /// Notifications so far (streams that saw as many may share a read).
    changes: Cell<u64>,
    gone: Cell<bool>,
    streams: Cell<usize>,
}

impl Watch {
    /// Completes at the shape's next change (or when it is gone).
    pub fn listen(&self) -> Listener {
        self.changed.listen()
    }

    pub fn is_gone(&self) -> bool {
        self.gone.get()
    }

    pub fn changes(&self) -> u64 {
        self.changes.get()
    }
}

/// What a shard's streams follow, by (owner shard, handle).
#[derive(Default)]
pub struct LiveHub {
    watches: RefCell<HashMap<(usize, String), Rc<Watch>>>,
    /// Owner side: the watcher task of each shape other shards (or this
    /// one) follow, with the shards following it.
    watched: RefCell<HashMap<String, Watched>>,
}

struct Watched {
    shards: Rc<RefCell<BTreeSet<usize>>>,
    _task: Task<()>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.metrics
            .shapes_watched
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A stream's hold on a watch; the last one to go ends the watch.
pub struct WatchUse {
    router: Rc<Router>,
    owner: usize,
    handle: String,
    pub watch: Rc<Watch>,
}

impl Drop for WatchUse {
    fn drop(&mut self) {
        let left = self.watch.streams.get() - 1;
        self.watch.streams.set(left);
        if left > 0 {
            return;
        }
        self.router
            .live()
            .watches
            .borrow_mut()
            .remove(&(self.owner, self.handle.clone()));
        let router = self.router.clone();
        let (owner, handle) = (self.owner, std::mem::take(&mut self.handle));
        runtime::spawn_detached(async move {
            router.send_watch(owner, handle, false).await;
        });
    }
}

impl LiveHub {
    /// The watch of `handle` (on shard `owner`), asking the owner for it
    /// if this is its first stream here. Awaits only the request's send:
    /// call it before the read it must cover.
    pub async fn follow(router: &Rc<Router>, owner: usize, handle: &str) -> WatchUse {
        let key = (owner, handle.to_string());
        let existing = router.live().watches.borrow().get(&key).cloned();
        let watch = match existing {
            Some(watch) => watch,
            None => {
                let watch = Rc::new(Watch {
                    changed: Notify::new(),
                    changes: Cell::new(0),
                    gone: Cell::new(false),
                    streams: Cell::new(0),
                });
                router
                    .live()
                    .watches
                    .borrow_mut()
                    .insert(key, watch.clone());
                router.send_watch(owner, handle.to_string(), true).await;
                watch
            }
        };
        watch.streams.set(watch.streams.get() + 1);
        WatchUse {
            router: router.clone(),
            owner,
            handle: handle.to_string(),
            watch,
        }
    }

    /// From the owner: the shape changed, or is gone.
    pub fn notify(&self, owner: usize, handle: &str, gone: bool) {
        let watch = self
            .watches
            .borrow()
            .get(&(owner, handle.to_string()))
            .cloned();
        if let Some(watch) = watch {
            if gone {
                watch.gone.set(true);
            }
            watch.changes.set(watch.changes.get() + 1);
            watch.changed.notify_all();
        }
    }

    /// Owner side: shard `from` follows (or stops following) `handle`.
    /// Runs inline in the mesh receive loop: a later read from `from` is
    /// handled after it.
    pub fn watch(router: &Rc<Router>, from: usize, handle: String, follow: bool) {
        let hub = router.live();
        if !follow {
            let mut watched = hub.watched.borrow_mut();
            if let Some(entry) = watched.get(&handle) {
                entry.shards.borrow_mut().remove(&from);
                if entry.shards.borrow().is_empty() {
                    // Dropping the task cancels it.
                    watched.remove(&handle);
                }
            }
            return;
        }
        if let Some(entry) = hub.watched.borrow().get(&handle) {
            entry.shards.borrow_mut().insert(from);
            return;
        }
        let Some(shape) = router.service().shape_by_handle(&handle) else {
            let router = router.clone();
            runtime::spawn_detached(async move {
                router.send_change(from, handle, true).await;
            });
            return;
        };
        let shards = Rc::new(RefCell::new(BTreeSet::from([from])));
        // Listening starts now, before any later read from `from` runs.
        let mut changed = shape.listen();
        let task = {
            let router = router.clone();
            let shards = shards.clone();
            let handle = handle.clone();
            runtime::spawn_local(async move {
                loop {
                    changed.await;
                    changed = shape.listen();
                    let gone = shape.is_gone();
                    let targets: Vec<usize> = shards.borrow().iter().copied().collect();
                    for shard in targets {
                        router.send_change(shard, handle.clone(), gone).await;
                    }
                    if gone {
                        router.live().watched.borrow_mut().remove(&handle);
                        return;
                    }
                }
            })
        };
        let metrics = router.service().metrics.clone();
        crate::metrics::Metrics::inc(&metrics.shapes_watched);
        hub.watched.borrow_mut().insert(
            handle,
            Watched {
                shards,
                _task: task,
                metrics,
            },
        );
    }
}

impl Router {
    /// Asks `owner` to (stop) watch(ing) `handle` for this shard.
    async fn send_watch(self: &Rc<Self>, owner: usize, handle: String, follow: bool) {
        if owner == self.me() {
            LiveHub::watch(self, owner, handle, follow);
        } else {
            let message = Envelope::Watch {
                from: self.me(),
                handle,
                follow,
            };
            // A closed link means a stop: streams end anyway.
            let _ = self.links().send(owner, message).await;
        }
    }

    /// Tells shard `to` that `handle` changed (or is gone).
    async fn send_change(self: &Rc<Self>, to: usize, handle: String, gone: bool) {
        if to == self.me() {
            self.live().notify(to, &handle, gone);
        } else {
            let message = Envelope::Changed {
                owner: self.me(),
                handle,
                gone,
            };
            let _ = self.links().send(to, message).await;
        }
    }
}
