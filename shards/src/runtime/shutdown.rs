//! Process-wide stop request, set from the signal thread, observed by every
//! executor.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::notify::Notify;

/// How often an executor's watcher re-checks the stop flag. Signals arrive
/// on a plain thread that cannot wake a glommio reactor directly; one short
/// poll per executor is the simplest wake-up that works across executors.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

#[derive(Clone, Default, Debug)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    pub fn trigger(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Completes once a stop was requested. Must run inside an executor.
    ///
    /// Waiters do not poll: each executor runs one watcher per `Shutdown`
    /// that checks the flag every `POLL_INTERVAL` and wakes all of that
    /// executor's waiters at once, so ten thousand parked requests cost
    /// what one does.
    pub async fn wait(&self) {
        if self.is_triggered() {
            return;
        }
        let notify = self.local_notify();
        loop {
            let woken = notify.listen();
            if self.is_triggered() {
                return;
            }
            woken.await;
        }
    }

    /// This executor's wake-up for this stop flag, its watcher started on
    /// first use.
    fn local_notify(&self) -> Rc<Notify> {
        thread_local! {
            static WATCHED: RefCell<Vec<(Arc<AtomicBool>, Rc<Notify>)>> =
                const { RefCell::new(Vec::new()) };
        }
        WATCHED.with(|watched| {
            let mut watched = watched.borrow_mut();
            if let Some((_, notify)) = watched.iter().find(|(flag, _)| Arc::ptr_eq(flag, &self.0)) {
                return notify.clone();
            }
            let notify = Notify::new();
            watched.push((self.0.clone(), notify.clone()));
            let flag = self.0.clone();
            let wake = notify.clone();
            super::spawn_detached(async move {
                while !flag.load(Ordering::SeqCst) {
                    super::sleep(POLL_INTERVAL).await;
                }
                wake.notify_all();
                WATCHED.with(|watched| {
                    watched
                        .borrow_mut()
                        .retain(|(watched, _)| !Arc::ptr_eq(watched, &flag))
                });
            });
            notify
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_waiters_share_one_watcher_and_all_wake() {
        let shutdown = Shutdown::new();
        let trigger = shutdown.clone();
        let handle = super::super::spawn_thread("shutdown-test", move || async move {
            let woken = Rc::new(std::cell::Cell::new(0usize));
            let mut tasks = Vec::new();
            for _ in 0..1_000 {
                let shutdown = shutdown.clone();
                let woken = woken.clone();
                tasks.push(super::super::spawn_local(async move {
                    shutdown.wait().await;
                    woken.set(woken.get() + 1);
                }));
            }
            super::super::sleep(Duration::from_millis(50)).await;
            let watching = shutdown.local_notify().waiting();
            assert_eq!(woken.get(), 0);
            trigger.trigger();
            for task in tasks {
                task.join().await;
            }
            (watching, woken.get())
        })
        .unwrap();
        let (watching, woken) = handle.join().unwrap().unwrap();
        // 1,000 listeners on one notifier (no timer each), all woken.
        assert_eq!(watching, 1_000);
        assert_eq!(woken, 1_000);
    }
}
