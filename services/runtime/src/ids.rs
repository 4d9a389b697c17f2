//! Identifiers as a dependency: services take an [`IdSource`] so that a simulation (and a
//! test) can make every id deterministic, as it makes time deterministic with a clock.

use std::sync::atomic::{AtomicU64, Ordering};

/// Makes new unique ids.
pub trait IdSource: Send + Sync + std::fmt::Debug {
    /// A new id starting with `prefix` and an underscore ("payout_...").
    fn next(&self, prefix: &str) -> String;
}

/// Time-ordered random ids (UUID v7): unique across processes and replicas.
#[derive(Debug, Default, Clone, Copy)]
pub struct UuidIds;

impl IdSource for UuidIds {
    fn next(&self, prefix: &str) -> String {
        format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
    }
}

/// Ids from a counter ("payout_000001", ...): the same program makes the same ids.
#[derive(Debug, Default)]
pub struct SequentialIds {
    next: AtomicU64,
}

impl IdSource for SequentialIds {
    fn next(&self, prefix: &str) -> String {
        let number = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{prefix}_{number:06}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_count_and_uuid_ids_differ() {
        let ids = SequentialIds::default();
        assert_eq!(ids.next("payout"), "payout_000001");
        assert_eq!(ids.next("attempt"), "attempt_000002");
        let a = UuidIds.next("payout");
        assert!(
            a.starts_with("payout_") && a.len() == "payout_".len() + 32,
            "{a}"
        );
        assert_ne!(a, UuidIds.next("payout"));
    }
}
