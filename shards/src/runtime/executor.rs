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

/// io_uring submission depth. Besides I/O concurrency it sizes the
/// kernel's table of pending polls (one per idle connection): the kernel
/// walks a bucket of it on every cancellation, and glommio cancels on every
/// wake-up, so with the default 128 (8 buckets) 10,000 idle connections cost
/// a quarter of a core doing nothing. 4096 gives the maximum 256 buckets.
const RING_DEPTH: usize = 4096;

fn builder(name: &str, placement: GlommioPlacement) -> LocalExecutorBuilder {
    let builder = LocalExecutorBuilder::new(placement)
        .name(name)
        .ring_depth(RING_DEPTH);
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
    let cpus = allowed_cpus();
    let mut handles = Vec::with_capacity(shards.len());
    for (index, fut_gen) in shards.into_iter().enumerate() {
        let placement = match placement {
            Placement::Pinned => GlommioPlacement::Fixed(cpus[index % cpus.len()]),
            Placement::Unbound => GlommioPlacement::Unbound,
        };
        let handle = builder(&format!("shard-{index}"), placement)
            .spawn(fut_gen)
            .map_err(|e| std::io::Error::other(format!("starting shard {index}: {e}")))?;
        handles.push((index, handle));
    }
    Ok(ShardsHandle { handles })
}

/// The CPUs this process may run on, ascending: a container's cpuset need
/// not start at 0 (pinning shard i to CPU i would fail there).
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity
    // writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let ok =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) }
            == 0;
    let cpus: Vec<usize> = if ok {
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
            .collect()
    } else {
        Vec::new()
    };
    if cpus.is_empty() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        return (0..n).collect();
    }
    cpus
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

#[cfg(test)]
mod tests {
    #[test]
    fn allowed_cpus_are_the_affinity_mask() {
        let cpus = super::allowed_cpus();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]), "{cpus:?}");
        // Restrict this thread to its last allowed CPU: the set follows
        // (a container whose cpuset does not start at 0 looks like this).
        let last = *cpus.last().unwrap();
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::CPU_SET(last, &mut set) };
        let rc =
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        assert_eq!(rc, 0);
        assert_eq!(super::allowed_cpus(), vec![last]);
    }
}
