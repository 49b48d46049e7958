//! Wake-ups inside one shard: a shape tells the requests long-polling it that
//! its log grew (or that it is gone). Single-threaded by design: shapes and
//! their readers live on the same executor.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Notify {
    inner: RefCell<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Bumped by every `notify_all`; a listener fires once it differs from
    /// the value it was created with, so a wake-up between creating the
    /// listener and awaiting it is never lost.
    generation: u64,
    next_id: u64,
    /// Wakers of pending listeners; a listener removes its own on drop, so
    /// requests that time out leave nothing behind.
    waiting: HashMap<u64, Waker>,
}

impl Notify {
    pub fn new() -> Rc<Notify> {
        Rc::new(Notify::default())
    }

    pub fn notify_all(&self) {
        let wakers: Vec<Waker> = {
            let mut inner = self.inner.borrow_mut();
            inner.generation += 1;
            inner.waiting.drain().map(|(_, w)| w).collect()
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// A future that completes at the next `notify_all` after this call.
    pub fn listen(self: &Rc<Notify>) -> Listener {
        let mut inner = self.inner.borrow_mut();
        inner.next_id += 1;
        Listener {
            notify: self.clone(),
            id: inner.next_id,
            generation: inner.generation,
        }
    }

    /// Listeners currently waiting (for tests and metrics).
    pub fn waiting(&self) -> usize {
        self.inner.borrow().waiting.len()
    }
}

pub struct Listener {
    notify: Rc<Notify>,
    id: u64,
    generation: u64,
}

impl Future for Listener {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.notify.inner.borrow_mut();
        if inner.generation != self.generation {
            return Poll::Ready(());
        }
        inner.waiting.insert(self.id, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.notify.inner.borrow_mut().waiting.remove(&self.id);
    }
}

/// Deadlines of many waiters served by one timer: a waiter is an entry in
/// an ordered map (no timer or task of its own); one driver task per shard
/// wakes those whose time has come, ticking at `resolution` while any wait
/// and sleeping on a wake-up when none do. For long, coarse waits (SSE
/// keep-alives and timeouts), where a few hundred milliseconds late is fine.
pub struct Deadlines {
    inner: RefCell<DeadlinesInner>,
    /// Wakes the driver when the first entry arrives.
    armed: Rc<Notify>,
}

#[derive(Default)]
struct DeadlinesInner {
    next_id: u64,
    waiting: BTreeMap<(std::time::Instant, u64), Waker>,
}

impl Deadlines {
    pub fn new() -> Rc<Deadlines> {
        Rc::new(Deadlines {
            inner: RefCell::new(DeadlinesInner::default()),
            armed: Notify::new(),
        })
    }

    /// Completes at or a little after `when`.
    pub fn at(self: &Rc<Self>, when: std::time::Instant) -> Deadline {
        let mut inner = self.inner.borrow_mut();
        inner.next_id += 1;
        Deadline {
            deadlines: self.clone(),
            key: (when, inner.next_id),
            registered: false,
        }
    }

    /// Waiters now (for tests and metrics).
    pub fn waiting(&self) -> usize {
        self.inner.borrow().waiting.len()
    }

    /// Wakes every waiter whose deadline is at or before `now`; returns
    /// how many.
    pub fn fire(&self, now: std::time::Instant) -> usize {
        let due: Vec<Waker> = {
            let mut inner = self.inner.borrow_mut();
            let later = inner.waiting.split_off(&(now, u64::MAX));
            std::mem::replace(&mut inner.waiting, later)
                .into_values()
                .collect()
        };
        let count = due.len();
        for waker in due {
            waker.wake();
        }
        count
    }

    /// The driver: `sleep(resolution)` is the runtime's timer, awaited by
    /// this one task only.
    pub async fn drive<S, F>(self: Rc<Self>, resolution: std::time::Duration, sleep: S)
    where
        S: Fn(std::time::Duration) -> F,
        F: Future<Output = ()>,
    {
        loop {
            let armed = self.armed.listen();
            if self.waiting() == 0 {
                armed.await;
                continue;
            }
            sleep(resolution).await;
            self.fire(std::time::Instant::now());
        }
    }
}

pub struct Deadline {
    deadlines: Rc<Deadlines>,
    key: (std::time::Instant, u64),
    registered: bool,
}

impl Future for Deadline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if std::time::Instant::now() >= self.key.0 {
            return Poll::Ready(());
        }
        let was_empty = {
            let mut inner = self.deadlines.inner.borrow_mut();
            let was_empty = inner.waiting.is_empty();
            inner.waiting.insert(self.key, cx.waker().clone());
            was_empty
        };
        self.registered = true;
        if was_empty {
            self.deadlines.armed.notify_all();
        }
        Poll::Pending
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        if self.registered {
            self.deadlines.inner.borrow_mut().waiting.remove(&self.key);
        }
    }
}

/// A value set once and awaited by any number of tasks on the executor
/// (a creation's result, a forwarded request's reply).
pub struct Slot<T> {
    value: RefCell<Option<T>>,
    set: Rc<Notify>,
}

impl<T: Clone> Slot<T> {
    pub fn new() -> Rc<Slot<T>> {
        Rc::new(Slot {
            value: RefCell::new(None),
            set: Notify::new(),
        })
    }

    /// Sets the value (the first one wins) and wakes every waiter.
    pub fn set(&self, value: T) {
        let mut slot = self.value.borrow_mut();
        if slot.is_none() {
            *slot = Some(value);
            drop(slot);
            self.set.notify_all();
        }
    }

    pub fn is_set(&self) -> bool {
        self.value.borrow().is_some()
    }

    /// The value, once set.
    pub async fn get(&self) -> T {
        loop {
            let set = self.set.listen();
            if let Some(value) = self.value.borrow().as_ref() {
                return value.clone();
            }
            set.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notify_before_the_await_is_not_lost_and_drops_clean_up() {
        let notify = Notify::new();
        let early = notify.listen();
        notify.notify_all();
        futures_lite::future::block_on(early);

        let pending = notify.listen();
        let mut pending = Box::pin(pending);
        let waker = futures_lite::future::block_on(futures_lite::future::poll_fn(|cx| {
            Poll::Ready(cx.waker().clone())
        }));
        let mut cx = Context::from_waker(&waker);
        assert!(pending.as_mut().poll(&mut cx).is_pending());
        assert_eq!(notify.waiting(), 1);
        drop(pending);
        assert_eq!(notify.waiting(), 0);
    }

    #[test]
    fn deadlines_fire_in_order_and_drops_clean_up() {
        let deadlines = Deadlines::new();
        let now = std::time::Instant::now();
        let waker = futures_lite::future::block_on(futures_lite::future::poll_fn(|cx| {
            Poll::Ready(cx.waker().clone())
        }));
        let mut cx = Context::from_waker(&waker);
        let mut soon = Box::pin(deadlines.at(now + std::time::Duration::from_secs(10)));
        let mut late = Box::pin(deadlines.at(now + std::time::Duration::from_secs(20)));
        let mut gone = Box::pin(deadlines.at(now + std::time::Duration::from_secs(5)));
        assert!(soon.as_mut().poll(&mut cx).is_pending());
        assert!(late.as_mut().poll(&mut cx).is_pending());
        assert!(gone.as_mut().poll(&mut cx).is_pending());
        assert_eq!(deadlines.waiting(), 3);
        drop(gone);
        assert_eq!(deadlines.waiting(), 2);
        assert_eq!(deadlines.fire(now + std::time::Duration::from_secs(15)), 1);
        assert_eq!(deadlines.waiting(), 1, "only the later one is left");
        let past = deadlines.at(now);
        futures_lite::future::block_on(past);
        assert_eq!(deadlines.waiting(), 1, "a past deadline never registers");
    }

    #[test]
    fn a_slot_is_set_once_and_seen_by_every_waiter() {
        let slot = Slot::new();
        assert!(!slot.is_set());
        slot.set(1);
        slot.set(2);
        assert_eq!(futures_lite::future::block_on(slot.get()), 1);
        assert_eq!(futures_lite::future::block_on(slot.get()), 1);
    }
}
