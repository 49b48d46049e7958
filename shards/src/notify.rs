//! Wake-ups inside one shard: a shape tells the requests long-polling it that
//! its log grew (or that it is gone). Single-threaded by design: shapes and
//! their readers live on the same executor.

use std::cell::RefCell;
use std::collections::HashMap;
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
    fn a_slot_is_set_once_and_seen_by_every_waiter() {
        let slot = Slot::new();
        assert!(!slot.is_set());
        slot.set(1);
        slot.set(2);
        assert_eq!(futures_lite::future::block_on(slot.get()), 1);
        assert_eq!(futures_lite::future::block_on(slot.get()), 1);
    }
}
