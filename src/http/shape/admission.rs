//! Admission control as Electric does it (`ELECTRIC_MAX_CONCURRENT_REQUESTS`):
//! separate budgets for initial requests (no handle yet: they may create a
//! shape and run a snapshot) and for requests on existing shapes (mostly
//! live long-polls). Budgets are for the whole server, shared by shards.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::reply::ShapeReply;
use crate::metrics::Metrics;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Initial,
    Existing,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Initial => "initial",
            Kind::Existing => "existing",
        }
    }
}

#[derive(Debug)]
pub struct Admission {
    initial_limit: usize,
    existing_limit: usize,
    initial: AtomicUsize,
    existing: AtomicUsize,
}

impl Admission {
    pub fn new(initial_limit: usize, existing_limit: usize) -> Arc<Admission> {
        Arc::new(Admission {
            initial_limit,
            existing_limit,
            initial: AtomicUsize::new(0),
            existing: AtomicUsize::new(0),
        })
    }

    /// A permit, or the 503 Electric sends past the budget (its client
    /// retries it, honouring `retry-after`).
    pub fn admit(self: &Arc<Self>, kind: Kind, metrics: &Metrics) -> Result<Permit, ShapeReply> {
        let (count, limit) = match kind {
            Kind::Initial => (&self.initial, self.initial_limit),
            Kind::Existing => (&self.existing, self.existing_limit),
        };
        let before = count.fetch_add(1, Ordering::AcqRel);
        if before >= limit {
            count.fetch_sub(1, Ordering::AcqRel);
            metrics.rejected(kind);
            // Spread retries over 6–10 s, as Electric does, so a herd does
            // not come back at once.
            let retry_after = 6
                + (std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos())
                    % 5);
            return Err(ShapeReply::error(
                503,
                serde_json::json!({
                    "code": "concurrent_request_limit_exceeded",
                    "message": format!(
                        "Concurrent {} request limit exceeded (limit: {limit}), please retry",
                        kind.name()
                    ),
                })
                .to_string(),
            )
            .header("retry-after", retry_after.to_string()));
        }
        Ok(Permit {
            admission: self.clone(),
            kind,
        })
    }
}

pub struct Permit {
    admission: Arc<Admission>,
    kind: Kind,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let count = match self.kind {
            Kind::Initial => &self.admission.initial,
            Kind::Existing => &self.admission.existing,
        };
        count.fetch_sub(1, Ordering::AcqRel);
    }
}
