//! Process wiring: the embedded Postgres if needed, the shard executors (each
//! with its HTTP listener and feed), the ingest executor, and signals.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use shards::feed::{FeedEvent, FEED_CAPACITY};
use shards::fence::DurableProgress;
use shards::routes::RouteTable;
use shards::runtime::{self, channel, Shutdown};
use shards::shape::registry::Registry;
use shards::shard::ShardCore;
use shards::storage::commit::CommitConfig;
use shards::storage::meta::MetaStore;
use shards::storage::segment::SegmentWriter;
use shards::Lsn;

use crate::config::{Config, Database};
use crate::devpg::{DevPgOptions, DevPostgres};
use crate::http::shape::forward::Router;
use crate::ingest::{Ingest, IngestConfig};
use crate::pg::connstr::ConnConfig;
use crate::shapes::pool::Pool;
use crate::shapes::service::{ShapeConfig, ShapeService};
use crate::status::ServiceStatus;

/// Runs the server until SIGINT/SIGTERM. Errors are one line for the operator.
pub fn run(config: Config) -> Result<(), String> {
    std::fs::create_dir_all(&config.storage_dir).map_err(|e| {
        format!(
            "cannot create storage directory {}: {e}",
            config.storage_dir.display()
        )
    })?;
    let shutdown = Shutdown::new();
    install_signal_handlers(&shutdown)?;
    // Held until the process exits: one writer per storage directory.
    // While another instance holds it (a rolling deploy), serve what it has
    // checkpointed, read-only (an external database only: an embedded one
    // belongs to the instance that started it).
    let (_lock, read_only) = match try_lock_storage(&config.storage_dir)? {
        Some(lock) => (lock, None),
        None => {
            let phase = match &config.database {
                Database::External(conn) => {
                    match crate::read_only::ReadOnlyPhase::start(&config, conn) {
                        Ok(phase) => Some(phase),
                        Err(e) => {
                            tracing::warn!("not serving read-only while waiting: {e}");
                            None
                        }
                    }
                }
                Database::Embedded => None,
            };
            match lock_storage(&config.storage_dir, &shutdown)? {
                Some(lock) => (lock, phase),
                None => {
                    if let Some(phase) = phase {
                        phase.stop();
                    }
                    return Ok(());
                }
            }
        }
    };

    let mut embedded = None;
    let conn = match &config.database {
        Database::External(conn) => (**conn).clone(),
        Database::Embedded => {
            let pg = DevPostgres::start(
                &config.storage_dir.join("postgres"),
                &DevPgOptions::default(),
            )
            .map_err(|e| e.to_string())?;
            let url = pg.url("postgres");
            tracing::info!("embedded Postgres running: {url}");
            println!("DATABASE_URL={url}");
            let conn = url.parse::<ConnConfig>().map_err(|e| e.to_string())?;
            embedded = Some(pg);
            conn
        }
    };

    let result = run_with_database(&config, conn, shutdown, read_only);
    if let Some(mut pg) = embedded {
        pg.stop();
        tracing::info!("embedded Postgres stopped");
    }
    result
}

fn run_with_database(
    config: &Config,
    conn: ConnConfig,
    shutdown: Shutdown,
    read_only: Option<crate::read_only::ReadOnlyPhase>,
) -> Result<(), String> {
    let shard_count = config.shards;
    crate::shapes::rehome::finish_interrupted(&config.storage_dir)?;
    check_storage_format(&config.storage_dir.join("shards"))?;
    let upgrade_identity = identity_upgrade(&config.storage_dir.join("shards"))?;
    check_shard_count(&config.storage_dir.join("shards"), shard_count)?;
    let descriptors = raise_descriptor_limit();
    let progress = DurableProgress::new(shard_count, Lsn::ZERO);
    let routes = Arc::new(RouteTable::new());
    let status = Arc::new(ServiceStatus::default());
    let addr = SocketAddr::new(config.listen_address, config.port);

    // Check up front so a port in use is a clear start-up error, not a
    // failure inside every shard.
    shards::runtime::net::check_port_free(addr)
        .map_err(|e| format!("cannot listen on {addr}: {e} (set ELECTRIC_PORT to a free port)"))?;

    let mesh =
        shards::runtime::mesh::Mesh::new(shard_count, crate::http::shape::forward::MESH_CAPACITY);
    let shape_config = ShapeConfig::from_config(config);
    let secret = if config.insecure {
        None
    } else {
        config.secret.clone()
    };
    let admission = crate::http::shape::admission::Admission::new(
        config.max_concurrent_initial,
        config.max_concurrent_existing,
    );
    let metrics = Arc::new(crate::metrics::Metrics::new(shard_count));
    let eviction = Arc::new(crate::shapes::evict::Eviction::new(
        config.max_shapes,
        shard_count,
    ));
    let commit_config = CommitConfig {
        interval: std::time::Duration::from_millis(config.flush_interval_ms),
        max_pending: config.flush_bytes,
        checkpoint_interval: std::time::Duration::from_millis(config.checkpoint_interval_ms),
        open_files: ((descriptors / 4) as usize / shard_count)
            .clamp(16, shards::storage::commit::MAX_OPEN_SERVING_FILES),
        fault_flush_delay: std::time::Duration::from_millis(config.fault_flush_delay_ms),
        unload_idle_checkpoints: match config.unload_idle_ms {
            0 => 0,
            ms => ms.div_ceil(config.checkpoint_interval_ms),
        },
    };
    let segment_bytes = config.segment_bytes;
    if let Some(trigger) = &config.fault_sync_eio_file {
        tracing::warn!(
            "fault injection (tests only): segment log fdatasyncs fail with EIO while {} exists",
            trigger.display()
        );
        runtime::dma::fault::fail_syncs_while(trigger.clone());
    }
    // Shards that have restored their shapes (and so subscribed their
    // relations): the ingest may not route a transaction before all have,
    // or one meant for a restored shape would go nowhere while the fence
    // moved past it.
    let recovered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut senders = Vec::with_capacity(shard_count);
    let mut shard_gens = Vec::with_capacity(shard_count);
    for index in 0..shard_count {
        let (sender, receiver) = channel::new_bounded::<FeedEvent>(FEED_CAPACITY);
        senders.push(sender);
        let progress = progress.clone();
        let status = status.clone();
        let shutdown = shutdown.clone();
        let shard_dir = config.storage_dir.join("shards").join(index.to_string());
        let mesh = mesh.clone();
        let routes = routes.clone();
        let shape_config = shape_config.clone();
        let memory_budget = config.shard_memory_bytes;
        let read_timeout = config.tcp_read_timeout;
        let sse_settings = crate::http::shape::sse::SseSettings {
            timeout: config.sse_timeout,
            keepalive: config.sse_keepalive,
        };
        let secret = secret.clone();
        // Snapshots and catalog reads go to the pooled URL when one is set.
        let conn = config
            .pooled_database
            .clone()
            .unwrap_or_else(|| conn.clone());
        let admission = admission.clone();
        let metrics = metrics.clone();
        let recovered = recovered.clone();
        let eviction = eviction.clone();
        shard_gens.push(move || async move {
            if let Err(e) = runtime::dma::open_marker_first(&shard_dir).await {
                tracing::error!(shard = index, "storage unusable: {e}");
                shutdown.trigger();
                return;
            }
            let feed = receiver.connect().await;
            let links = match mesh.join().await {
                Ok(links) => links,
                Err(e) => {
                    tracing::error!(shard = index, "{e}");
                    shutdown.trigger();
                    return;
                }
            };
            let clean_marker = shard_dir.join("clean");
            let was_clean = clean_marker.exists();
            let is_new = !shard_dir.join("meta").exists();
            if let Err(e) = remove_if_present(&clean_marker) {
                tracing::error!(
                    shard = index,
                    "cannot remove {}: {e}",
                    clean_marker.display()
                );
                shutdown.trigger();
                return;
            }
            let meta_dir = shard_dir.join("meta");
            let meta = match MetaStore::open(&meta_dir) {
                Ok(meta) => meta,
                Err(e) => {
                    tracing::error!(shard = index, "cannot open {}: {e}", meta_dir.display());
                    shutdown.trigger();
                    return;
                }
            };
            let registry = Rc::new(RefCell::new(Registry::new(
                index,
                routes,
                shape_config.chunk_bytes,
                &shard_dir.join("shapes"),
            )));
            registry.borrow_mut().set_memory_budget(memory_budget);
            let log_dir = shard_dir.join("log");
            let writer = match SegmentWriter::open(&log_dir, segment_bytes).await {
                Ok((writer, recovered)) => {
                    if let Some(torn) = recovered.torn {
                        tracing::warn!(
                            shard = index,
                            "cut the segment log at byte {}: {torn}",
                            recovered.valid_len
                        );
                    }
                    writer
                }
                Err(e) => {
                    tracing::error!(
                        shard = index,
                        "cannot open the segment log in {}: {e}",
                        log_dir.display()
                    );
                    shutdown.trigger();
                    return;
                }
            };
            registry
                .borrow_mut()
                .set_loader(meta, crate::shapes::recover::spec_loader(&shape_config));
            let started = std::time::Instant::now();
            match crate::shapes::recover::recover(
                &log_dir,
                &meta,
                &mut registry.borrow_mut(),
                upgrade_identity,
                &shape_config,
            ) {
                Ok(r) => tracing::info!(
                    shard = index,
                    shapes = r.shapes,
                    from_metadata = r.from_meta,
                    log_records_replayed = r.records,
                    dropped = r.dropped,
                    subquery_resumed = r.subquery_resumed,
                    subquery_reseeding = r.subquery_reseeding,
                    orphan_files = r.orphans,
                    after = if was_clean {
                        "a clean shutdown"
                    } else if is_new {
                        "nothing (new storage)"
                    } else {
                        "an unclean stop (no clean marker)"
                    },
                    millis = started.elapsed().as_millis() as u64,
                    "shapes restored"
                ),
                Err(e) => {
                    tracing::error!(
                        shard = index,
                        "cannot read the segment log in {}: {e}",
                        log_dir.display()
                    );
                    shutdown.trigger();
                    return;
                }
            }
            recovered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Only now may requests reach this shard (the router starts
            // serving forwarded ones): every shape it had is back.
            let pool = Pool::new(conn, shape_config.pool_size);
            let service = ShapeService::new(
                index,
                registry.clone(),
                pool,
                shape_config,
                metrics.clone(),
                eviction.clone(),
                shutdown.clone(),
            );
            registry
                .borrow_mut()
                .set_move_runner(crate::shapes::movein::runner(Rc::downgrade(&service)));
            crate::shapes::reseed::start(&service);
            eviction.publish(index, &registry.borrow());
            let router = Router::new(links, service);
            let gauges = metrics.storage[index].clone();
            let mut core = ShardCore::new(
                index,
                progress,
                registry,
                shards::shard::ShardStorage { writer, meta },
                commit_config,
                gauges,
                shutdown.clone(),
            );
            let http = crate::http::serve(
                addr,
                crate::http::HttpContext {
                    shard: index,
                    status,
                    secret,
                    shapes: Some(router),
                    in_flight: Default::default(),
                    admission,
                    metrics,
                    sse: sse_settings,
                    shutdown: shutdown.clone(),
                    read_timeout,
                    close_after_response: false,
                },
                shutdown.clone(),
                None,
            );
            let http = runtime::spawn_local(http);
            match core.run(feed).await {
                // The feed drained and the closing checkpoint is durable:
                // the next start knows this shard stopped cleanly.
                Ok(()) => {
                    if let Err(e) = std::fs::write(&clean_marker, b"clean\n") {
                        tracing::warn!(
                            shard = index,
                            "cannot write {}: {e}",
                            clean_marker.display()
                        );
                    }
                }
                Err(e) => {
                    tracing::error!(shard = index, "storage failed, stopping: {e}");
                    shutdown.trigger();
                }
            }
            tracing::debug!(
                shard = index,
                transactions = core.transactions_seen(),
                "feed closed"
            );
            if let Err(e) = http.join().await {
                tracing::error!(shard = index, "HTTP listener failed: {e}");
                shutdown.trigger();
            }
        });
    }
    let shards = runtime::spawn_shards(config.placement, shard_gens)
        .map_err(|e| format!("cannot start shards: {e}"))?;

    let ingest_config = IngestConfig {
        status_interval: std::time::Duration::from_millis(config.status_interval_ms),
        ..IngestConfig::new(conn.clone(), &config.replication_stream_id)
    };
    let ingest_shutdown = shutdown.clone();
    let serving_recovered = recovered.clone();
    // Replication (and so health `active`) starts only once the read-only
    // phase, if any, has ended.
    let handed_over = Arc::new(std::sync::atomic::AtomicBool::new(read_only.is_none()));
    let ingest_handed_over = handed_over.clone();
    let ingest = runtime::spawn_thread("ingest", move || async move {
        let mut feeds = Vec::with_capacity(senders.len());
        for sender in senders {
            feeds.push(sender.connect().await);
        }
        while recovered.load(std::sync::atomic::Ordering::SeqCst) < shard_count
            || !ingest_handed_over.load(std::sync::atomic::Ordering::SeqCst)
        {
            if ingest_shutdown.is_triggered() {
                return;
            }
            runtime::sleep(std::time::Duration::from_millis(5)).await;
        }
        Ingest::new(
            ingest_config,
            feeds,
            progress,
            routes,
            status,
            ingest_shutdown,
            Arc::default(),
        )
        .run()
        .await;
    })
    .map_err(|e| format!("cannot start the ingest: {e}"))?;
    tracing::info!(shards = shard_count, %addr, "shapeshard listening");
    // The read-only phase answers on the same port until this instance's
    // shards have recovered and listen there too (or it stops); then it
    // ends, before health says active, so clients that waited for active
    // never reach it.
    let handover = read_only.map(|phase| {
        let recovered = serving_recovered;
        let shutdown = shutdown.clone();
        std::thread::spawn(move || {
            while recovered.load(std::sync::atomic::Ordering::SeqCst) < shard_count
                && !shutdown.is_triggered()
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            // Each shard binds right after it counts itself recovered.
            std::thread::sleep(std::time::Duration::from_millis(50));
            phase.stop();
            handed_over.store(true, std::sync::atomic::Ordering::SeqCst);
        })
    });

    let ingest_result = ingest.join();
    // The ingest only ends on shutdown; make sure the shards see it too.
    shutdown.trigger();
    if let Some(handover) = handover {
        let _ = handover.join();
    }
    let shards_result = shards.join();
    match ingest_result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("ingest failed: {e}")),
        Err(_) => return Err("ingest thread panicked".into()),
    }
    shards_result
}

/// The storage directory's exclusive lock if it is free now.
fn try_lock_storage(dir: &std::path::Path) -> Result<Option<std::fs::File>, String> {
    let file = open_lock_file(dir)?;
    Ok(flock_now(&file, &dir.join("lock"))?.then_some(file))
}

fn open_lock_file(dir: &std::path::Path) -> Result<std::fs::File, String> {
    let path = dir.join("lock");
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

/// One non-blocking attempt at the lock: false while another holds it.
fn flock_now(file: &std::fs::File, path: &std::path::Path) -> Result<bool, String> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
        return Err(format!("cannot lock {}: {err}", path.display()));
    }
    Ok(false)
}

/// Takes the storage directory's exclusive lock, waiting (and saying so)
/// while another instance holds it — a rolling deploy's new instance takes
/// over when the old one exits. None if asked to stop while waiting.
fn lock_storage(
    dir: &std::path::Path,
    shutdown: &Shutdown,
) -> Result<Option<std::fs::File>, String> {
    let path = dir.join("lock");
    let file = open_lock_file(dir)?;
    let mut said = false;
    loop {
        if flock_now(&file, &path)? {
            if said {
                tracing::info!("storage directory lock acquired; taking over");
            }
            return Ok(Some(file));
        }
        if !said {
            tracing::warn!(
                "waiting for the storage directory lock: another shapeshard instance is using {}",
                dir.display()
            );
            said = true;
        }
        if shutdown.is_triggered() {
            return Ok(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// `shapeshard rehome`: re-homes the storage directory's shapes onto
/// `shards` shards, refusing while a server holds the directory.
pub fn rehome(storage_dir: &std::path::Path, shards: usize) -> Result<String, String> {
    if shards == 0 || shards > shards::routes::MAX_SHARDS {
        return Err(format!(
            "--shards must be between 1 and {} (got {shards})",
            shards::routes::MAX_SHARDS
        ));
    }
    let shutdown = Shutdown::new();
    shutdown.trigger();
    // Triggered: the lock is tried once instead of waited for.
    let Some(_lock) = lock_storage(storage_dir, &shutdown)? else {
        return Err(format!(
            "a shapeshard server is running on {}: stop it first",
            storage_dir.display()
        ));
    };
    let done = crate::shapes::rehome::rehome(storage_dir, shards)?;
    Ok(if done.from == done.to {
        format!(
            "{} already has {shards} shards: nothing to do",
            storage_dir.display()
        )
    } else {
        format!(
            "re-homed {} shapes from {} to {} shards in {}",
            done.shapes,
            done.from,
            done.to,
            storage_dir.display()
        )
    })
}

/// Shapes live on the shard that owns their definition hash, so a storage
/// directory written with N shards only makes sense with N shards: on a
/// change, refuse to start (rather than lose shapes) and name the command
/// that re-homes them (`shapes::rehome`).
fn check_shard_count(dir: &std::path::Path, shards: usize) -> Result<(), String> {
    let path = dir.join("count");
    match std::fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse::<usize>() {
            Ok(n) if n == shards => Ok(()),
            Ok(n) => Err(format!(
                "{} holds shapes of {n} shards but {shards} were asked for: run `shapeshard rehome --shards {shards}` with the server stopped to move them (or start with --shards {n})",
                dir.display(),
            )),
            Err(_) => Err(format!("{} is not a shard count: remove it", path.display())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(&path, format!("{shards}\n")))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Serving files changed layout (frames gained checksums): a storage
/// directory written before cannot be read. Refuse it with what to do
/// rather than misread it; a new one is marked with the layout it holds.
pub fn check_storage_format(dir: &std::path::Path) -> Result<(), String> {
    let path = dir.join("format");
    let want = shards::shape::log::SERVING_FORMAT;
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim() == want => Ok(()),
        Ok(text) => Err(format!(
            "{} holds serving files of layout {} but this build reads layout {want}: remove {} (clients re-sync) or run the matching version",
            dir.display(),
            text.trim(),
            dir.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dir.join("count").exists() {
                return Err(format!(
                    "{} was written by an older shapeshard (serving files without checksums): remove {} to start over (clients re-sync)",
                    dir.display(),
                    dir.display()
                ));
            }
            std::fs::create_dir_all(dir)
                .and_then(|()| std::fs::write(&path, format!("{want}\n")))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Marks a storage directory whose shapes are identified by
/// `where_clause::identity` (the parser that also decides their meaning).
pub const IDENTITY_FILE: &str = "identity";
pub const IDENTITY_VERSION: &str = "2";

/// Whether this start must upgrade shape identities: storage written before
/// shapes were identified by our own parser keeps `where` shapes under
/// another canonical form (and owner shard), so requests would no longer
/// find them. Those shapes are dropped once at recovery (their clients get
/// a 409 and re-sync); shapes without a `where` clause keep their identity.
/// The marker is written now: a crash before the drops are committed
/// leaves such shapes unreachable by definition, never wrong.
fn identity_upgrade(dir: &std::path::Path) -> Result<bool, String> {
    let path = dir.join(IDENTITY_FILE);
    let needed = match std::fs::read_to_string(&path) {
        Ok(text) if text.trim() == IDENTITY_VERSION => return Ok(false),
        Ok(text) => {
            return Err(format!(
                "{} is shape identity version {} but this build knows {IDENTITY_VERSION}: run the matching version",
                path.display(),
                text.trim()
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => dir.join("count").exists(),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, format!("{IDENTITY_VERSION}\n")))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    if needed {
        tracing::warn!(
            "upgrading shape identities in {}: shapes with a where clause are dropped once (their clients re-sync)",
            dir.display()
        );
    }
    Ok(needed)
}

/// Raises the soft descriptor limit to the hard one (the common soft
/// default, 1024, runs out under load) and returns it. Each shard keeps a
/// quarter of its share for open serving files, the rest for sockets.
fn raise_descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            ..limit
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    if limit.rlim_cur < 16_384 {
        tracing::warn!(
            "open file limit is {}: raise it (ulimit -n, LimitNOFILE=) or clients may be refused under load",
            limit.rlim_cur
        );
    }
    limit.rlim_cur
}

fn install_signal_handlers(shutdown: &Shutdown) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let shutdown = shutdown.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                tracing::info!(signal, "stopping");
                shutdown.trigger();
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

fn remove_if_present(path: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
