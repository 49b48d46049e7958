//! The seam around glommio. glommio 0.9 is unmaintained since 2024, so every
//! use of it goes through this module: executors, timers, TCP, DMA files and
//! channels. Replacing the runtime means rewriting this folder only.

pub mod dma;
pub mod executor;
pub mod mesh;
pub mod net;
pub mod shutdown;

pub use executor::{spawn_shards, spawn_thread, Placement, ShardsHandle};
pub use shutdown::Shutdown;

use std::future::Future;
use std::time::Duration;

/// Runs `future` on the current executor as a detached local task.
pub fn spawn_detached<F: Future<Output = ()> + 'static>(future: F) {
    glommio::spawn_local(future).detach();
}

/// Spawns a local task whose result can be awaited.
pub fn spawn_local<T: 'static, F: Future<Output = T> + 'static>(future: F) -> Task<T> {
    Task(glommio::spawn_local(future))
}

/// A local task handle; dropping it cancels the task.
pub struct Task<T>(glommio::Task<T>);

impl<T> Task<T> {
    pub async fn join(self) -> T {
        self.0.await
    }
}

pub async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await
}

/// Yields to other tasks of this executor if it has run long enough, so a
/// long loop (a big snapshot, a burst of changes) never starves requests.
pub async fn yield_if_needed() {
    glommio::yield_if_needed().await
}

/// Races `future` against a timer; `None` when the timer fires first.
pub async fn timeout<T>(duration: Duration, future: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(future.await) }, async {
        sleep(duration).await;
        None
    })
    .await
}

/// Bounded single-producer channels between executors (ingest → shard).
pub mod channel {
    pub use glommio::channels::shared_channel::{
        new_bounded, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
    };
}
