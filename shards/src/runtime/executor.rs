//! Shard executors: one glommio `LocalExecutor` per shard, built together and
//! joined together.

use std::future::Future;

use glommio::{LocalExecutorBuilder, Placement as GlommioPlacement};

/// Where shard executors run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Shard `i` pinned to CPU `i % cpus` (production).
    Pinned,
    /// Not pinned: for tests that start several servers on the same cores.
    Unbound,
}

/// Join handles of the shard executors.
pub struct ShardsHandle {
    handles: Vec<(usize, glommio::ExecutorJoinHandle<()>)>,
}

impl ShardsHandle {
    /// Waits for every shard; returns the first failure, naming the shard.
    pub fn join(self) -> Result<(), String> {
        let mut first_error = None;
        for (index, handle) in self.handles {
            if let Err(e) = handle.join() {
                first_error.get_or_insert(format!("shard {index} failed: {e}"));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// io_uring registered-buffer memory per executor. The locked-memory limit
/// (`ulimit -l`) is small on many hosts (8 MiB here); glommio's default of
/// 10 MiB only works as root, so stay under the limit when we are not root.
fn io_memory_bytes() -> Option<usize> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        None
    } else {
        Some(512 * 1024)
    }
}

fn builder(name: &str, placement: GlommioPlacement) -> LocalExecutorBuilder {
    let builder = LocalExecutorBuilder::new(placement).name(name);
    match io_memory_bytes() {
        Some(bytes) => builder.io_memory(bytes),
        None => builder,
    }
}

/// Starts one executor per entry of `shards`; entry `i` is shard `i`'s main
/// future factory (it runs on the executor thread, so it may build `!Send`
/// state).
pub fn spawn_shards<G, F>(placement: Placement, shards: Vec<G>) -> std::io::Result<ShardsHandle>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = ()> + 'static,
{
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut handles = Vec::with_capacity(shards.len());
    for (index, fut_gen) in shards.into_iter().enumerate() {
        let placement = match placement {
            Placement::Pinned => GlommioPlacement::Fixed(index % cpus),
            Placement::Unbound => GlommioPlacement::Unbound,
        };
        let handle = builder(&format!("shard-{index}"), placement)
            .spawn(fut_gen)
            .map_err(|e| std::io::Error::other(format!("starting shard {index}: {e}")))?;
        handles.push((index, handle));
    }
    Ok(ShardsHandle { handles })
}

/// Starts an unpinned executor on its own thread (the ingest, tests).
pub fn spawn_thread<G, F, T>(
    name: &str,
    fut_gen: G,
) -> std::io::Result<std::thread::JoinHandle<std::io::Result<T>>>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let builder = builder(name, GlommioPlacement::Unbound);
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let executor = builder
                .make()
                .map_err(|e| std::io::Error::other(format!("starting executor: {e}")))?;
            Ok(executor.run(fut_gen()))
        })
}

/// Number of shards to run by default: one per available core.
pub fn default_shard_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
