//! A rolling deploy's new instance, while the old one still holds the
//! storage lock: it serves the shapes the old one has checkpointed, read
//! only, so clients routed to it keep syncing instead of finding nothing.
//!
//! Each shard restores its shapes cold from LMDB (as a restart does, minus
//! the segment log, which belongs to the writer) and answers from the
//! serving files up to the checkpointed lengths, bytes the writer never
//! changes again. Nothing is written: no shape is created (503 with
//! `retry-after`), no segment, checkpoint or metadata. Live requests wait out
//! the long-poll and answer up-to-date; an offset past what the checkpoint
//! holds (a client that read further from the writer) is caught up. Health
//! says `waiting` (202).
//!
//! When the lock comes, the normal start runs beside this phase (its
//! listeners share the port: SO_REUSEPORT) and the phase stops once the
//! normal shards are active, so the port never goes unanswered.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use shards::runtime::{self, Shutdown};
use shards::shape::registry::Registry;
use shards::storage::meta::MetaStore;

use crate::config::Config;
use crate::http::shape::forward::Router;
use crate::pg::connstr::ConnConfig;
use crate::shapes::pool::Pool;
use crate::shapes::service::{ShapeConfig, ShapeService};
use crate::status::{ServiceStatus, Status};

/// The running read-only phase: stopped once the writer this instance
/// becomes is serving.
pub struct ReadOnlyPhase {
    /// Closes the listeners (first, see `stop`).
    unlisten: Shutdown,
    /// Listeners closed so far.
    unlistened: Arc<std::sync::atomic::AtomicUsize>,
    /// Ends everything else: live requests answer, connections close.
    stop: Shutdown,
    shards: runtime::ShardsHandle,
    shard_count: usize,
}

impl ReadOnlyPhase {
    /// Starts serving `config`'s storage read-only on its port.
    pub fn start(config: &Config, conn: &ConnConfig) -> Result<ReadOnlyPhase, String> {
        let shard_count = config.shards;
        let storage = config.storage_dir.join("shards");
        let on_disk = std::fs::read_to_string(storage.join("count"))
            .ok()
            .and_then(|t| t.trim().parse::<usize>().ok());
        if on_disk != Some(shard_count) {
            return Err(format!(
                "{} holds {} shards, not {shard_count}: nothing to serve read-only",
                storage.display(),
                on_disk.map_or_else(|| "no".to_string(), |n| n.to_string())
            ));
        }
        crate::server::check_storage_format(&storage)?;
        let addr = SocketAddr::new(config.listen_address, config.port);
        let stop = Shutdown::new();
        let unlisten = Shutdown::new();
        let unlistened = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let drained = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let status = Arc::new(ServiceStatus::default());
        status.set(Status::Waiting);
        let metrics = Arc::new(crate::metrics::Metrics::new(shard_count));
        let eviction = Arc::new(crate::shapes::evict::Eviction::new(0, shard_count));
        let admission = crate::http::shape::admission::Admission::new(
            config.max_concurrent_initial,
            config.max_concurrent_existing,
        );
        let shape_config = ShapeConfig {
            pool_size: 1,
            allow_delete: false,
            read_only: true,
            ..ShapeConfig::from_config(config)
        };
        let secret = if config.insecure {
            None
        } else {
            config.secret.clone()
        };
        let mesh = shards::runtime::mesh::Mesh::new(
            shard_count,
            crate::http::shape::forward::MESH_CAPACITY,
        );
        let mut gens = Vec::with_capacity(shard_count);
        for index in 0..shard_count {
            let shard_dir = storage.join(index.to_string());
            let stop = stop.clone();
            let unlisten = unlisten.clone();
            let unlistened = unlistened.clone();
            let drained = drained.clone();
            // A shard that never listens counts as closed and drained.
            let not_listening = {
                let (unlistened, drained) = (unlistened.clone(), drained.clone());
                move || {
                    unlistened.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    drained.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            };
            let mesh = mesh.clone();
            let status = status.clone();
            let metrics = metrics.clone();
            let eviction = eviction.clone();
            let admission = admission.clone();
            let shape_config = shape_config.clone();
            let secret = secret.clone();
            let conn = conn.clone();
            let sse = crate::http::shape::sse::SseSettings {
                timeout: config.sse_timeout,
                keepalive: config.sse_keepalive,
            };
            let read_timeout = config.tcp_read_timeout;
            gens.push(move || async move {
                if let Err(e) = runtime::dma::open_marker_first(&shard_dir).await {
                    tracing::warn!(shard = index, "read-only phase: storage unusable: {e}");
                    not_listening();
                    return;
                }
                let links = match mesh.join().await {
                    Ok(links) => links,
                    Err(e) => {
                        tracing::warn!(shard = index, "read-only phase: {e}");
                        not_listening();
                        return;
                    }
                };
                let registry = match restore(index, &shard_dir, &shape_config) {
                    Ok(registry) => registry,
                    Err(e) => {
                        tracing::warn!(shard = index, "read-only phase: {e}");
                        not_listening();
                        return;
                    }
                };
                let registry = Rc::new(RefCell::new(registry));
                let service = ShapeService::new(
                    index,
                    registry,
                    Pool::new(conn, 1),
                    shape_config,
                    metrics.clone(),
                    eviction,
                    stop.clone(),
                );
                let router = Router::new(links, service);
                let served = crate::http::serve(
                    addr,
                    crate::http::HttpContext {
                        shard: index,
                        status,
                        secret,
                        shapes: Some(router),
                        in_flight: Default::default(),
                        admission,
                        metrics,
                        sse,
                        shutdown: stop.clone(),
                        read_timeout,
                        close_after_response: true,
                    },
                    unlisten,
                    Some(unlistened),
                )
                .await;
                if let Err(e) = served {
                    tracing::warn!(shard = index, "read-only phase: HTTP listener failed: {e}");
                    not_listening();
                    return;
                }
                // Every shard stays up until all have drained: a request
                // may wait on another shard (the shape's owner) over the
                // mesh, and an owner gone first would leave it unanswered.
                drained.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
                while drained.load(std::sync::atomic::Ordering::SeqCst) < shard_count
                    && std::time::Instant::now() < deadline
                {
                    runtime::sleep(std::time::Duration::from_millis(5)).await;
                }
            });
        }
        let shards = runtime::spawn_shards(config.placement, gens)
            .map_err(|e| format!("cannot start the read-only phase: {e}"))?;
        tracing::info!(%addr, "serving checkpointed shapes read-only until the storage lock is free");
        Ok(ReadOnlyPhase {
            unlisten,
            unlistened,
            stop,
            shards,
            shard_count,
        })
    }

    /// Stops serving (open requests end as on a stop) and waits for it.
    ///
    /// Listeners close before anything else ends: a connection waiting in a
    /// listener's backlog when it closes is reset, and clients whose live
    /// request the stop answers come straight back; they must find only
    /// the successor's listeners on the port.
    pub fn stop(self) {
        self.unlisten.trigger();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while self.unlistened.load(std::sync::atomic::Ordering::SeqCst) < self.shard_count
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        self.stop.trigger();
        if let Err(e) = self.shards.join() {
            tracing::warn!("read-only phase ended badly: {e}");
        }
        tracing::info!("read-only phase over");
    }
}

/// A shard's shapes as its last checkpoint left them, cold.
fn restore(
    index: usize,
    shard_dir: &std::path::Path,
    shape_config: &ShapeConfig,
) -> Result<Registry, String> {
    let chunk_bytes = shape_config.chunk_bytes;
    let meta = MetaStore::open(&shard_dir.join("meta"))
        .map_err(|e| format!("cannot open {}: {e}", shard_dir.join("meta").display()))?;
    let mut loaded = meta
        .load()
        .map_err(|e| format!("cannot read {}: {e}", shard_dir.join("meta").display()))?;
    // Routing within this phase only: the writer's routes are its own.
    let routes = Arc::new(shards::routes::RouteTable::new());
    let mut registry = Registry::new(index, routes, chunk_bytes, &shard_dir.join("shapes"));
    registry.set_loader(meta, crate::shapes::recover::spec_loader(shape_config));
    let mut skipped = 0;
    for record in &loaded.shapes {
        // Only shapes whose snapshot the last checkpoint holds whole: the
        // rest of it is in the writer's segment log, not readable here.
        let log = loaded.logs.remove(&record.id).unwrap_or_default();
        if record.snapshot_end.is_none() || log.snapshot_end.is_none() {
            skipped += 1;
            continue;
        }
        registry.restore_cold(record, log);
    }
    tracing::warn!(
        shard = index,
        serving = registry.len(),
        skipped,
        "read-only phase: serving the shapes of the writer's last checkpoint (skipped: snapshot not checkpointed yet)"
    );
    Ok(registry)
}
