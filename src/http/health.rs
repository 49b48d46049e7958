//! `GET /v1/health`.

use hyper::{Response, StatusCode};

use super::response::{json, Body};
use crate::metrics::Metrics;
use crate::status::{ServiceStatus, Status};

/// 200 `active` only when replication streams and storage works. While a
/// shard's storage fails (disk full, I/O errors: retried, nothing new
/// confirmed to Postgres) it is 503 `storage_failing` with those shards,
/// whatever the replication status: reads are still served, but a load
/// balancer or an operator should see it.
pub fn respond(status: &ServiceStatus, metrics: &Metrics) -> Response<Body> {
    let failing = metrics.storage_failing();
    if !failing.is_empty() {
        let shards: Vec<String> = failing.iter().map(usize::to_string).collect();
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                r#"{{"status":"storage_failing","shards":[{}]}}"#,
                shards.join(",")
            ),
            "no-cache, no-store, must-revalidate",
        );
    }
    let current = status.get();
    let code = match current {
        Status::Active => StatusCode::OK,
        Status::Starting | Status::Waiting => StatusCode::ACCEPTED,
    };
    json(
        code,
        format!(r#"{{"status":"{}"}}"#, current.as_str()),
        "no-cache, no-store, must-revalidate",
    )
}
