//! `GET /v1/health`.

use hyper::{Response, StatusCode};

use super::response::{json, Body};
use crate::status::{ServiceStatus, Status};

pub fn respond(status: &ServiceStatus) -> Response<Body> {
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
