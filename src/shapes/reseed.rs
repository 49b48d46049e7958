//! After a crash, subquery shapes resume with their handle: their log and
//! client views are durable (`registry/durable_views.rs`), and their truth
//! (each dependency's values, a middle level's rows) is read again here,
//! in a fresh `REPEATABLE READ` snapshot, by the seeding queries of their
//! creation. The registry holds their transactions meanwhile, then skips
//! for the truth those the snapshot saw and moves what differs.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use shards::runtime;
use shards::shape::encode::PgSnapshot;
use shards::shape::registry::ShapeId;

use super::service::ShapeService;
use crate::pg::error::PgError;

/// Shapes read at once (each needs a pooled connection for its query).
const WORKERS: usize = 4;

/// Starts re-reading every shape recovery left waiting for it.
pub fn start(service: &Rc<ShapeService>) {
    let ids = service.registry.borrow().reseeding();
    if ids.is_empty() {
        return;
    }
    tracing::info!(
        shard = service.shard,
        shapes = ids.len(),
        "reading subquery values again after an unclean stop"
    );
    let queue = Rc::new(RefCell::new(VecDeque::from(ids)));
    for _ in 0..WORKERS.min(service.config.pool_size.max(1)) {
        let service = service.clone();
        let queue = queue.clone();
        runtime::spawn_detached(async move {
            loop {
                let Some(id) = queue.borrow_mut().pop_front() else {
                    break;
                };
                let result = reseed(&service, id).await;
                service.registry.borrow_mut().reseeded(id, result);
            }
        });
    }
}

async fn reseed(service: &Rc<ShapeService>, id: ShapeId) -> Result<PgSnapshot, String> {
    let shape = service
        .registry
        .borrow_mut()
        .get(id)
        .ok_or("the shape is gone")?;
    let seeds = super::recover::seeds_of(&shape.spec.persisted, &service.config)?;
    let mut conn = service.pool.get().await.map_err(|e| e.to_string())?;
    conn.set_reusable(false);
    let result: Result<PgSnapshot, PgError> = async {
        let snapshot = super::create::begin_snapshot(&mut conn).await?;
        super::create::seed_views(&mut conn, &shape, &seeds).await?;
        conn.execute("COMMIT").await?;
        Ok(snapshot)
    }
    .await;
    if result.is_ok() {
        conn.set_reusable(true);
    }
    result.map_err(|e| e.to_string())
}
