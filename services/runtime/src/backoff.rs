//! Retry delays: exponential, capped, with a deterministic jitter.
//!
//! The jitter spreads retries of many items that failed together (a dependency came back)
//! without a random number generator: it is derived from the item's id and attempt, so the
//! same item always waits the same time. That keeps simulations reproducible and still
//! de-synchronises a herd.

use chrono::Duration;

/// `base` doubled per earlier attempt (`attempt` 1 waits `base`), capped at `cap`, plus a
/// jitter of up to a quarter of that, derived from `key` and `attempt`.
pub fn delay(base: Duration, cap: Duration, attempt: u32, key: &str) -> Duration {
    let doublings = attempt.saturating_sub(1).min(30);
    let millis = base
        .num_milliseconds()
        .max(1)
        .saturating_mul(1_i64 << doublings)
        .min(cap.num_milliseconds().max(1));
    let spread = (millis / 4).max(1);
    let jitter = i64::try_from(fnv1a(key, attempt) % spread.unsigned_abs()).unwrap_or(0);
    Duration::milliseconds(millis + jitter)
}

/// FNV-1a over the key and the attempt: stable across runs, platforms and releases.
fn fnv1a(key: &str, attempt: u32) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes().chain(attempt.to_le_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_a_bounded_jitter() {
        let base = Duration::seconds(30);
        let cap = Duration::minutes(30);
        for attempt in 1..=12 {
            let nominal = (base * (1 << (attempt - 1).min(20))).min(cap);
            let waited = delay(base, cap, attempt, "payout_1");
            assert!(waited >= nominal, "attempt {attempt}: {waited} < {nominal}");
            assert!(
                waited <= nominal + nominal / 4,
                "attempt {attempt}: {waited}"
            );
        }
    }

    #[test]
    fn the_jitter_is_deterministic_and_differs_between_items() {
        let base = Duration::seconds(30);
        let cap = Duration::hours(1);
        assert_eq!(delay(base, cap, 3, "a"), delay(base, cap, 3, "a"));
        let spread: std::collections::HashSet<_> = (0..20)
            .map(|i| delay(base, cap, 3, &format!("payout_{i}")))
            .collect();
        assert!(spread.len() > 10, "{spread:?}");
    }
}
