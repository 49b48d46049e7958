//! The service status `GET /v1/health` reports.

use std::sync::atomic::{AtomicU8, Ordering};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Starting up: storage and connections being set up.
    Starting,
    /// Connected, waiting for the replication stream (e.g. the slot is held
    /// by another instance).
    Waiting,
    /// Replication is streaming; shapes are served.
    Active,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Waiting => "waiting",
            Status::Active => "active",
        }
    }
}

#[derive(Debug)]
pub struct ServiceStatus(AtomicU8);

impl Default for ServiceStatus {
    fn default() -> Self {
        ServiceStatus(AtomicU8::new(Status::Starting as u8))
    }
}

impl ServiceStatus {
    pub fn get(&self) -> Status {
        match self.0.load(Ordering::Acquire) {
            0 => Status::Starting,
            1 => Status::Waiting,
            _ => Status::Active,
        }
    }

    pub fn set(&self, status: Status) {
        self.0.store(status as u8, Ordering::Release);
    }
}
