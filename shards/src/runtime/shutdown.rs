//! Process-wide stop request, set from the signal thread, observed by every
//! executor.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often a waiting executor re-checks the stop flag. Signals arrive on a
/// plain thread that cannot wake a glommio reactor directly; a short poll is
/// the simplest wake-up that works across executors.
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
    pub async fn wait(&self) {
        while !self.is_triggered() {
            super::sleep(POLL_INTERVAL).await;
        }
    }
}
