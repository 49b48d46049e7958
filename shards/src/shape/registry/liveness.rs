//! Whether a shape still lives, readable on any shard. Another shard that
//! keeps one of the owner's immutable replies (a sealed chunk, a shape's
//! first response) checks it before answering from its copy, so a deleted,
//! evicted or invalidated shape is never served from a copy: the request
//! goes to the owner again and gets its 409 or the new shape.
//!
//! The one piece of shape state other shards read: set once by the owner
//! (alive → gone, never back), read with no lock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct Liveness(Arc<AtomicBool>);

impl Liveness {
    pub(super) fn new() -> Liveness {
        Liveness(Arc::new(AtomicBool::new(true)))
    }

    pub fn is_alive(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    pub(super) fn end(&self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_once_for_every_copy() {
        let owner = Liveness::new();
        let copy = owner.clone();
        assert!(copy.is_alive());
        owner.end();
        assert!(!copy.is_alive());
    }
}
