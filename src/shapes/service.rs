//! The owner shard's side of `/v1/shape`: find or create the shape, then
//! answer from its log with Electric's offsets, headers and long-poll.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use shards::notify::Slot;
use shards::runtime;
use shards::shape::definition::ShapeDefinition;
use shards::shape::encode;
use shards::shape::log::LogRead;
use shards::shape::offset::LogOffset;
use shards::shape::registry::{Registry, Shape};

use super::create;
use super::evict::Eviction;
use super::pool::Pool;
use crate::http::shape::reply::ShapeReply;
use crate::http::shape::request::{RequestKind, ShapeRequest, StartOffset};
use crate::metrics::Metrics;

/// Settings of the shape API (Electric's names in README).
#[derive(Clone, Debug)]
pub struct ShapeConfig {
    pub long_poll: Duration,
    pub chunk_bytes: usize,
    pub cache_max_age: u32,
    pub cache_stale_age: u32,
    /// `ELECTRIC_DATABASE_ID`: the salt of subquery shapes' tags.
    pub database_id: String,
    /// `ELECTRIC_SUBQUERY_BUFFER_MAX_TRANSACTIONS`.
    pub subquery_buffer_max: usize,
    pub allow_delete: bool,
    pub publication: String,
    /// Postgres connections per shard for catalog reads and snapshots.
    pub pool_size: usize,
    /// Another instance holds the storage (a rolling deploy): serve the
    /// shapes it checkpointed, create none (503, retry), and take any
    /// offset past what is known as caught up.
    pub read_only: bool,
    /// Bytes of immutable response bodies kept per shard (`ChunkCache`).
    pub chunk_cache_bytes: usize,
}

impl ShapeConfig {
    /// The settings the server's configuration gives (the writer's; the
    /// read-only phase adjusts its copy).
    pub fn from_config(config: &crate::config::Config) -> ShapeConfig {
        ShapeConfig {
            long_poll: config.long_poll_timeout,
            chunk_bytes: config.chunk_bytes_threshold,
            chunk_cache_bytes: config.chunk_cache_bytes,
            cache_max_age: config.cache_max_age,
            cache_stale_age: config.cache_stale_age,
            database_id: config.database_id.clone(),
            subquery_buffer_max: config.subquery_buffer_max_transactions,
            allow_delete: config.enable_integration_testing,
            pool_size: config.snapshot_pool_size,
            ..ShapeConfig::new(config.publication_name())
        }
    }

    pub fn new(publication: String) -> ShapeConfig {
        ShapeConfig {
            long_poll: Duration::from_secs(20),
            chunk_bytes: 10 * 1024 * 1024,
            cache_max_age: 60,
            cache_stale_age: 300,
            database_id: "single_stack".into(),
            subquery_buffer_max: shards::shape::registry::DEFAULT_BUFFER_MAX_TRANSACTIONS,
            allow_delete: false,
            publication,
            pool_size: 4,
            read_only: false,
            chunk_cache_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A creation in progress: everyone asking for the definition meanwhile
/// waits for this one result.
type Creation = Slot<Result<Rc<Shape>, ShapeReply>>;

pub struct ShapeService {
    pub(super) shard: usize,
    pub(super) registry: Rc<RefCell<Registry>>,
    pub(super) pool: Rc<Pool>,
    pub(super) config: ShapeConfig,
    creating: RefCell<HashMap<String, Rc<Creation>>>,
    /// Last handle timestamp, so handles from this shard never repeat.
    pub(super) last_handle_micros: Cell<u64>,
    /// Suffix of etags for responses that must not revalidate.
    etag_counter: Cell<u64>,
    /// Per shape, the last live body built: every long-poll waiting at the
    /// same offset when the log grows gets the same bytes, read and
    /// encoded once (fan-out to a thousand clients is one encode).
    fanout: RefCell<HashMap<u64, FanoutBody>>,
    /// Bodies of sealed chunks, built once for every request asking them.
    chunks: RefCell<super::chunk_cache::ChunkCache>,
    pub metrics: Arc<Metrics>,
    pub eviction: Arc<Eviction>,
    shutdown: runtime::Shutdown,
}

impl ShapeService {
    pub fn new(
        shard: usize,
        registry: Rc<RefCell<Registry>>,
        pool: Rc<Pool>,
        config: ShapeConfig,
        metrics: Arc<Metrics>,
        eviction: Arc<Eviction>,
        shutdown: runtime::Shutdown,
    ) -> Rc<ShapeService> {
        Rc::new(ShapeService {
            shutdown,
            metrics,
            eviction,
            shard,
            registry,
            pool,
            creating: RefCell::new(HashMap::new()),
            last_handle_micros: Cell::new(0),
            etag_counter: Cell::new(0),
            fanout: RefCell::new(HashMap::new()),
            chunks: RefCell::new(super::chunk_cache::ChunkCache::new(
                config.chunk_cache_bytes,
            )),
            config,
        })
    }

    pub async fn serve(self: &Rc<Self>, request: ShapeRequest) -> ShapeReply {
        match request.kind {
            RequestKind::Get => self.get(request).await,
            RequestKind::Delete => self.delete(request),
            RequestKind::Evict => self.evict_oldest(),
        }
    }

    async fn get(self: &Rc<Self>, request: ShapeRequest) -> ShapeReply {
        let Some(definition) = &request.definition else {
            return ShapeReply::invalid(&[("table", "can't be blank".into())]);
        };
        let (shape, created) = match self.get_or_create(definition).await {
            Ok(found) => found,
            Err(reply) => return reply,
        };
        {
            let mut registry = self.registry.borrow_mut();
            registry.touch(shape.id, self.eviction.stamp());
            self.eviction.publish(self.shard, &registry);
        }
        if let Some(queryable) = &request.queryable {
            if let Err(reply) = super::subset::check_queryable(&shape.spec.schema, queryable) {
                return reply;
            }
        }
        let mut reply = match (&request.handle, &request.subset) {
            (Some(handle), _) if handle != shape.handle() => {
                ShapeReply::must_refetch(Some(shape.handle()))
            }
            (_, Some(_)) if self.config.read_only => read_only_refusal(),
            (_, Some(subset)) => self.subset(&request, subset, &shape).await,
            _ => self.read(&request, &shape).await,
        };
        reply.created = created;
        reply
    }

    pub fn config(&self) -> &ShapeConfig {
        &self.config
    }

    /// The live shape with this handle, if this shard has one.
    pub fn shape_by_handle(&self, handle: &str) -> Option<Rc<Shape>> {
        self.registry.borrow_mut().by_handle(handle)
    }

    /// Evicts this shard's least recently read shape (LRU over the limit).
    fn evict_oldest(&self) -> ShapeReply {
        let mut registry = self.registry.borrow_mut();
        if let Some((_, id)) = registry.oldest_read() {
            registry.remove(id, "evicted: ELECTRIC_MAX_SHAPES reached");
            Metrics::inc(&self.metrics.shapes_evicted);
        }
        self.eviction.publish(self.shard, &registry);
        ShapeReply::new(200, Bytes::new())
    }

    /// The live shape for `definition`, created (once, however many ask at
    /// the same time) when there is none. `created` is true when this call
    /// started or joined a creation.
    pub async fn get_or_create(
        self: &Rc<Self>,
        definition: &ShapeDefinition,
    ) -> Result<(Rc<Shape>, bool), ShapeReply> {
        let canonical = definition.canonical();
        if let Some(shape) = self.registry.borrow_mut().by_definition(&canonical) {
            return Ok((shape, false));
        }
        if self.config.read_only {
            return Err(read_only_refusal());
        }
        let existing = self.creating.borrow().get(&canonical).cloned();
        let creation = match existing {
            Some(creation) => {
                Metrics::inc(&self.metrics.creations_joined);
                creation
            }
            None => {
                Metrics::inc(&self.metrics.creations_started);
                Metrics::inc(&self.metrics.creations_in_flight);
                let creation = Creation::new();
                self.creating
                    .borrow_mut()
                    .insert(canonical.clone(), creation.clone());
                // A task of its own: the creation must finish even if the
                // request that started it goes away.
                let service = self.clone();
                let definition = definition.clone();
                let task_creation = creation.clone();
                runtime::spawn_detached(async move {
                    let result = create::create(&service, definition).await;
                    service.creating.borrow_mut().remove(&canonical);
                    service
                        .metrics
                        .creations_in_flight
                        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    if result.is_err() {
                        Metrics::inc(&service.metrics.creations_failed);
                    }
                    task_creation.set(result);
                });
                creation
            }
        };
        creation.get().await.map(|shape| (shape, true))
    }

    fn delete(&self, request: ShapeRequest) -> ShapeReply {
        if !self.config.allow_delete {
            return ShapeReply::message(405, "DELETE not allowed");
        }
        if self.config.read_only {
            return read_only_refusal();
        }
        let shape = {
            let mut registry = self.registry.borrow_mut();
            match &request.definition {
                Some(definition) => registry.by_definition(&definition.canonical()),
                None => request
                    .handle
                    .as_deref()
                    .and_then(|h| registry.by_handle(h)),
            }
        };
        let Some(shape) = shape else {
            return ShapeReply::message(404, "No existing shape found");
        };
        if let Some(handle) = &request.handle {
            if handle != shape.handle() {
                return ShapeReply::invalid(&[(
                    "handle",
                    "The specified shape definition and handle do not match. Please ensure the shape definition is correct or omit the shape handle from the request to obtain a new one".into(),
                )]);
            }
        }
        self.registry
            .borrow_mut()
            .remove(shape.id, "deleted by request");
        self.eviction.publish(self.shard, &self.registry.borrow());
        ShapeReply::new(202, Bytes::new()).header("cache-control", "no-cache")
    }

    /// Serves `(offset, chunk end]` of the shape's log, waiting where
    /// Electric waits: for the snapshot's first chunk, for new changes on a
    /// live request, and briefly for an offset from a log not yet rebuilt.
    async fn read(&self, request: &ShapeRequest, shape: &Rc<Shape>) -> ShapeReply {
        let offset = match request.offset {
            StartOffset::Now => {
                let last = shape.last_offset();
                let global = self.global_lsn(last);
                let body = json_body(&[], Some(global));
                return self.ok(request, shape, body, last, Outcome::NoData, true);
            }
            StartOffset::At(offset) => offset,
        };
        let started = std::time::Instant::now();
        let mut waited_out_of_bounds = false;
        loop {
            let changed = shape.listen();
            if shape.is_gone() {
                return ShapeReply::must_refetch(None);
            }
            let last = shape.last_offset();
            let read = match shape.read(offset) {
                // Past the shape's last entry but not past what this shard
                // has processed: nothing can come at or before it any more,
                // so it is caught up. (Electric's client resumes SSE at
                // `<global_last_seen_lsn>_0`, which may lie there.)
                LogRead::OutOfBounds
                    if !offset.is_snapshot_region()
                        && shape.snapshot_done()
                        && (offset.tx() <= self.registry.borrow().last_seen().0
                            // Read-only: the client read further from the
                            // instance that writes; nothing here is newer.
                            || self.config.read_only
                            // Past what this shard has processed: after a
                            // crash a live client may hold changes it was
                            // served before they were durable (a storage
                            // outage makes that window long). Postgres
                            // sends them again and they come back with the
                            // same offsets; until then the client waits
                            // like any live request.
                            || request.live) =>
                {
                    (Bytes::new(), offset)
                }
                LogRead::Items(view) if request.live => {
                    let key = FanoutKey {
                        from: offset,
                        end: view.end,
                        up_to_date: view.end >= last.max(offset) && offset != LogOffset::BeforeAll,
                        sse: request.sse,
                    };
                    if let Some(body) = self.fanout_body(shape.id, &key) {
                        Metrics::inc(&self.metrics.live_bodies_shared);
                        return self.ok(
                            request,
                            shape,
                            body,
                            key.end,
                            Outcome::Data,
                            key.up_to_date,
                        );
                    }
                    match self.load(shape, view).await {
                        Ok(items) if items.is_empty() => (items, key.end),
                        Ok(items) => {
                            let body = live_body(&items, &key);
                            Metrics::inc(&self.metrics.live_bodies_built);
                            self.keep_fanout_body(shape.id, key.clone(), body.clone());
                            return self.ok(
                                request,
                                shape,
                                body,
                                key.end,
                                Outcome::Data,
                                key.up_to_date,
                            );
                        }
                        Err(reply) => return reply,
                    }
                }
                LogRead::Items(view)
                    if view.sealed
                        && !(view.end >= last.max(offset) && offset != LogOffset::BeforeAll) =>
                {
                    let end = view.end;
                    match self.sealed_body(shape, offset, view).await {
                        Ok(body) => {
                            let mut reply =
                                self.ok(request, shape, body, end, Outcome::Data, false);
                            if reply.status == 200 {
                                reply.immutable = self.registry.borrow_mut().liveness(shape.id);
                            }
                            return reply;
                        }
                        Err(reply) => return reply,
                    }
                }
                LogRead::Items(view) => {
                    let end = view.end;
                    match self.load(shape, view).await {
                        Ok(items) => (items, end),
                        Err(reply) => return reply,
                    }
                }
                // Read-only, nothing here writes the rest of a snapshot.
                LogRead::NotYet if self.config.read_only => return read_only_refusal(),
                LogRead::NotYet => {
                    // The snapshot is still being read; its chunk is coming.
                    changed.await;
                    continue;
                }
                LogRead::OutOfBounds => {
                    if waited_out_of_bounds {
                        return ShapeReply::invalid(&[(
                            "offset",
                            "out of bounds for this shape".into(),
                        )]);
                    }
                    waited_out_of_bounds = true;
                    runtime::timeout(self.config.long_poll / 2, changed).await;
                    continue;
                }
            };
            let (items, end) = read;
            if items.is_empty() && request.live {
                let wait = request.wait.unwrap_or(self.config.long_poll);
                let left = wait.saturating_sub(started.elapsed());
                // A stop ends the wait like a timeout: the client
                // just polls again (the next server answers).
                let woken = futures_lite::future::or(
                    async { runtime::timeout(left, changed).await.is_some() },
                    async {
                        self.shutdown.wait().await;
                        false
                    },
                );
                if left.is_zero() || !woken.await {
                    let global = self.registry.borrow().last_seen().0.max(offset.tx());
                    let body = json_body(&[], Some(global));
                    return self.ok(request, shape, body, offset, Outcome::TimedOut, true);
                }
                continue;
            }
            // Electric: up to date once the chunk reaches the log's
            // end, never for the first (long-cached) response.
            let up_to_date = end >= last.max(offset) && offset != LogOffset::BeforeAll;
            let global = match request.live {
                true => live_global(end, request.sse),
                false => self.global_lsn(end),
            };
            let body = json_body(&items, up_to_date.then_some(global));
            return self.ok(request, shape, body, end, Outcome::Data, up_to_date);
        }
    }

    /// A read view's bytes. The view was taken with no await since; the
    /// file bytes it names never change, so the read cannot come back empty
    /// or partial whatever a checkpoint does.
    async fn load(
        &self,
        shape: &Rc<Shape>,
        view: shards::shape::log::ReadView,
    ) -> Result<Bytes, ShapeReply> {
        match view.load().await {
            Ok(items) => Ok(items),
            Err(_) if shape.is_gone() => Err(ShapeReply::must_refetch(None)),
            // A frame failing its checksum: never serve a wrong byte. The
            // shape goes; its clients re-sync.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                tracing::error!(
                    shard = self.shard,
                    handle = shape.handle(),
                    "corrupt serving file, dropping the shape (its clients re-sync): {e}"
                );
                Metrics::inc(&self.metrics.serving_files_corrupt);
                self.registry
                    .borrow_mut()
                    .remove(shape.id, "its serving file is corrupt");
                Err(ShapeReply::must_refetch(None))
            }
            Err(e) => {
                tracing::error!(handle = shape.handle(), "cannot read the shape's log: {e}");
                Err(ShapeReply::message(500, "Unable to read the shape log"))
            }
        }
    }

    /// The body of a sealed chunk's items after `offset` (not the log's
    /// end, so no `up-to-date`): from the chunk cache, or built and kept.
    async fn sealed_body(
        &self,
        shape: &Rc<Shape>,
        offset: LogOffset,
        view: shards::shape::log::ReadView,
    ) -> Result<Bytes, ShapeReply> {
        let key = (shape.id, offset, view.end);
        let cached = self.chunks.borrow_mut().get(&key);
        if let Some(body) = cached {
            Metrics::inc(&self.metrics.chunk_cache_hits);
            return Ok(body);
        }
        Metrics::inc(&self.metrics.chunk_cache_misses);
        let body = json_body(&self.load(shape, view).await?, None);
        let mut chunks = self.chunks.borrow_mut();
        let before = chunks.bytes();
        chunks.put(key, body.clone());
        let after = chunks.bytes();
        self.metrics
            .chunk_cache_bytes
            .fetch_add(after as u64, std::sync::atomic::Ordering::Relaxed);
        self.metrics
            .chunk_cache_bytes
            .fetch_sub(before as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(body)
    }

    fn fanout_body(&self, shape: u64, key: &FanoutKey) -> Option<Bytes> {
        let fanout = self.fanout.borrow();
        let kept = fanout.get(&shape)?;
        (kept.key == *key).then(|| kept.body.clone())
    }

    fn keep_fanout_body(&self, shape: u64, key: FanoutKey, body: Bytes) {
        let mut fanout = self.fanout.borrow_mut();
        // Bounded: entries of shapes gone idle or removed are dropped
        // wholesale now and then (a miss only costs one encode).
        if fanout.len() >= MAX_FANOUT_BODIES && !fanout.contains_key(&shape) {
            fanout.clear();
        }
        fanout.insert(shape, FanoutBody { key, body });
    }

    fn global_lsn(&self, end: LogOffset) -> u64 {
        self.registry.borrow().last_seen().0.max(end.tx())
    }

    fn ok(
        &self,
        request: &ShapeRequest,
        shape: &Shape,
        body: Bytes,
        end: LogOffset,
        outcome: Outcome,
        up_to_date: bool,
    ) -> ShapeReply {
        let request_offset = match request.offset {
            StartOffset::Now => "now".to_string(),
            StartOffset::At(o) => o.to_string(),
        };
        let mut etag = format!("{}:{request_offset}:{end}", shape.handle());
        if outcome == Outcome::TimedOut {
            // Never revalidated by a CDN: each timeout is its own answer.
            self.etag_counter.set(self.etag_counter.get() + 1);
            etag.push_str(&format!(
                ":{}",
                monotonic_micros() + self.etag_counter.get()
            ));
        }
        let matched = request.if_none_match.as_deref().is_some_and(|header| {
            header
                .split(',')
                .any(|tag| tag.trim().trim_start_matches("W/").trim_matches('"') == etag)
        });
        let mut reply = if matched {
            ShapeReply::new(304, Bytes::new())
        } else {
            ShapeReply::new(200, body)
        };
        reply = reply
            .header("electric-handle", shape.handle())
            .header("electric-offset", end.to_string())
            .header("etag", format!("\"{etag}\""))
            .header(
                "electric-has-data",
                if outcome == Outcome::Data {
                    "true"
                } else {
                    "false"
                },
            );
        if up_to_date {
            reply = reply.header("electric-up-to-date", "");
        }
        if request.live {
            reply = reply
                .header(
                    "electric-cursor",
                    next_cursor(self.config.long_poll, request.cursor).to_string(),
                )
                .header(
                    "cache-control",
                    "public, max-age=5, stale-while-revalidate=5",
                );
        } else {
            if !matched {
                reply = reply.header("electric-schema", shape.spec.schema_header.clone());
            }
            let cache = if request.offset == StartOffset::At(LogOffset::BeforeAll) {
                "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746".to_string()
            } else {
                format!(
                    "public, max-age={}, stale-while-revalidate={}",
                    self.config.cache_max_age, self.config.cache_stale_age
                )
            };
            reply = reply.header("cache-control", cache);
        }
        reply
    }
}

/// What a read-only instance answers for anything that needs the writer:
/// the client retries, and reaches the writer once the deploy is done.
fn read_only_refusal() -> ShapeReply {
    ShapeReply::unavailable(
        "This instance is read-only while another one holds the storage; retry shortly",
        1,
    )
}

/// The `global_last_seen_lsn` of an SSE batch's `up-to-date`. Electric's
/// client resumes an SSE stream at `<that lsn>_0`; the batch's end
/// transaction's LSN (Electric's choice) would have it re-read that
/// transaction's later operations, forever in a loop when it is the last
/// one. One past it is still below the next transaction's commit LSN (commit
/// records are far more than a byte apart) and no less true.
fn sse_resume_lsn(end: LogOffset) -> u64 {
    if end.is_snapshot_region() || end.op() == 0 {
        end.tx()
    } else {
        end.tx() + 1
    }
}

/// Shapes whose last live body is kept per shard (bytes: one log read each).
const MAX_FANOUT_BODIES: usize = 4096;

/// What a live body depends on besides the log's bytes.
#[derive(Clone, PartialEq, Eq)]
struct FanoutKey {
    from: LogOffset,
    end: LogOffset,
    up_to_date: bool,
    sse: bool,
}

struct FanoutBody {
    key: FanoutKey,
    body: Bytes,
}

/// A live answer's body: the items, then `up-to-date` when they reach the
/// log's end.
fn live_body(items: &[u8], key: &FanoutKey) -> Bytes {
    json_body(items, key.up_to_date.then(|| live_global(key.end, key.sse)))
}

/// The `global_last_seen_lsn` of a live answer ending at `end`.
fn live_global(end: LogOffset, sse: bool) -> u64 {
    if sse {
        sse_resume_lsn(end)
    } else {
        end.tx()
    }
}

/// A response body: `[items]`, closed by an `up-to-date` carrying
/// `global_last_seen_lsn` when one is given.
fn json_body(items: &[u8], up_to_date: Option<u64>) -> Bytes {
    let mut body = BytesMut::with_capacity(items.len() + 96);
    body.put_u8(b'[');
    body.extend_from_slice(items);
    if let Some(global) = up_to_date {
        if !items.is_empty() {
            body.put_u8(b',');
        }
        body.extend_from_slice(encode::up_to_date(global).as_bytes());
    }
    body.put_u8(b']');
    body.freeze()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Data,
    NoData,
    TimedOut,
}

/// 2024-10-09T00:00:00Z, the epoch of Electric's live cursors.
const CURSOR_EPOCH_S: u64 = 1_728_432_000;

/// The next long-poll interval boundary (seconds since the cursor epoch);
/// strictly above the client's previous cursor so a CDN never serves a
/// stale live response from an earlier interval.
pub fn next_cursor(long_poll: Duration, previous: Option<u64>) -> u64 {
    let interval = long_poll.as_secs();
    if interval == 0 {
        return 0;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .saturating_sub(CURSOR_EPOCH_S);
    let next = now.div_ceil(interval) * interval;
    match previous {
        Some(prev) if next <= prev => prev + 1 + (monotonic_micros() % 3600),
        _ => next,
    }
}

fn monotonic_micros() -> u64 {
    thread_local! {
        static START: std::time::Instant = std::time::Instant::now();
    }
    START.with(|s| s.elapsed().as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_move_forward() {
        let t = Duration::from_secs(20);
        let a = next_cursor(t, None);
        assert_eq!(a % 20, 0);
        let b = next_cursor(t, Some(a));
        assert!(b > a && b <= a + 3600, "{a} {b}");
        assert_eq!(next_cursor(Duration::ZERO, Some(5)), 0);
    }
}
