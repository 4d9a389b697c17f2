//! Atomic admission through the limits service's public API, on the embedded store and on
//! MongoDB: concurrent requests that each fit but together exceed a limit admit exactly as
//! many as fit.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{Duration, Utc};
use payouts_limits::admission::{ContextSource, Limits, UserEarnings};
use payouts_limits::domain::{Flag, LimitConfig};
use payouts_limits::store::{
    BlockedAttemptRepository, MemoryBlockedAttempts, MemoryQuotas, MongoBlockedAttempts,
    MongoQuotas, QuotaRepository,
};
use payouts_runtime::clock::ManualClock;
use payouts_runtime::ids::SequentialIds;
use payouts_runtime::{Clock as _, ErrorKind, ServiceError};

struct Established {
    payable_cents: i64,
}

#[async_trait]
impl ContextSource for Established {
    async fn account_created_at(
        &self,
        _user_id: &str,
    ) -> Result<Option<chrono::DateTime<Utc>>, ServiceError> {
        Ok(Some(Utc::now() - Duration::days(365)))
    }

    async fn earnings(&self, _user_id: &str) -> Result<UserEarnings, ServiceError> {
        Ok(UserEarnings {
            lifetime_cents: 10_000_000_00,
            payable_cents: self.payable_cents,
            recent_refunds_and_disputes: 0,
        })
    }
}

struct Stores {
    quotas: Arc<dyn QuotaRepository>,
    blocked: Arc<dyn BlockedAttemptRepository>,
}

async fn on_both_stores<F, Fut>(name: &str, scenario: F)
where
    F: Fn(Stores) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    scenario(Stores {
        quotas: Arc::new(MemoryQuotas::default()),
        blocked: Arc::new(MemoryBlockedAttempts::default()),
    })
    .await;
    let database = payouts_runtime::testing::mongo_database(name).await;
    scenario(Stores {
        quotas: Arc::new(MongoQuotas::open(&database)),
        blocked: Arc::new(MongoBlockedAttempts::open(&database).await.unwrap()),
    })
    .await;
}

fn limits(
    stores: &Stores,
    config: LimitConfig,
    payable_cents: i64,
    clock: &ManualClock,
) -> Arc<Limits> {
    Arc::new(Limits::new(
        config,
        Arc::clone(&stores.quotas),
        Arc::clone(&stores.blocked),
        Arc::new(Established { payable_cents }),
        Arc::new(clock.clone()),
        Arc::new(SequentialIds::default()),
    ))
}

/// `count` concurrent reservations of `cents` each for one user; the admitted amounts.
async fn concurrently(limits: &Arc<Limits>, user: &str, count: usize, cents: i64) -> Vec<i64> {
    let requests: Vec<_> = (0..count)
        .map(|i| {
            let limits = Arc::clone(limits);
            let (user, payout) = (user.to_owned(), format!("{user}_payout_{i}"));
            tokio::spawn(async move {
                limits
                    .reserve(&user, &payout, cents, Utc::now(), None)
                    .await
            })
        })
        .collect();
    let mut admitted = Vec::new();
    for request in requests {
        match request.await.unwrap() {
            Ok(reserved) if reserved.reserved => admitted.push(cents),
            Ok(_) => {}
            Err(error) => assert_eq!(error.kind(), ErrorKind::FailedPrecondition, "{error}"),
        }
    }
    admitted
}

/// Limits that leave one rule to bind: no gap, no approval holds.
fn only(config: LimitConfig) -> LimitConfig {
    LimitConfig {
        min_seconds_between_payouts: 0,
        ..config
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_requests_against_three_per_day_admit_exactly_three() {
    on_both_stores("daily_count", |stores| async move {
        let clock = ManualClock::new(Utc::now());
        let limits = limits(&stores, only(LimitConfig::default()), 1_000_000_00, &clock);
        let admitted = concurrently(&limits, "u_count", 20, 100_00).await;
        assert_eq!(admitted.len(), 3);
        let blocked = stores
            .blocked
            .list(Some("u_count"), None, 100)
            .await
            .unwrap();
        assert_eq!(blocked.len(), 17);
        assert!(
            blocked
                .iter()
                .all(|b| b.flags.last() == Some(&Flag::ExceedsDailyCountLimit))
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_exceed_the_daily_amount_together() {
    on_both_stores("daily_amount", |stores| async move {
        let clock = ManualClock::new(Utc::now());
        let config = only(LimitConfig {
            max_payouts_per_day: 100,
            suspicious_pattern_threshold: 1000,
            ..LimitConfig::default()
        });
        let limits = limits(&stores, config, 1_000_000_00, &clock);
        let admitted = concurrently(&limits, "u_amount", 20, 3_000_00).await;
        let total: i64 = admitted.iter().sum();
        assert!(total <= 25_000_00, "admitted {total}");
        assert_eq!(admitted.len(), 8, "as many as fit: 8 x $3,000 = $24,000");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_exceed_the_available_balance_together() {
    on_both_stores("balance", |stores| async move {
        let clock = ManualClock::new(Utc::now());
        let config = only(LimitConfig {
            max_payouts_per_day: 100,
            suspicious_pattern_threshold: 1000,
            ..LimitConfig::default()
        });
        let limits = limits(&stores, config, 1_000_00, &clock);
        let admitted = concurrently(&limits, "u_balance", 10, 300_00).await;
        assert_eq!(
            admitted.iter().sum::<i64>(),
            900_00,
            "three of $300 fit in $1,000"
        );
        // Every refusal for the balance is a blocked attempt like any other.
        let blocked = stores
            .blocked
            .list(Some("u_balance"), None, 100)
            .await
            .unwrap();
        assert_eq!(blocked.len(), 7);
        assert!(
            blocked
                .iter()
                .all(|b| b.flags.last() == Some(&Flag::InsufficientBalance)),
            "{blocked:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_requests_ten_milliseconds_apart_under_the_five_minute_gap_admit_one() {
    on_both_stores("gap", |stores| async move {
        let clock = ManualClock::new(Utc::now());
        let limits = limits(&stores, LimitConfig::default(), 1_000_000_00, &clock);
        let first = limits
            .reserve("u_gap", "gap_1", 100_00, Utc::now(), None)
            .await
            .unwrap();
        clock.advance(Duration::milliseconds(10));
        let second = limits
            .reserve("u_gap", "gap_2", 100_00, Utc::now(), None)
            .await
            .unwrap();
        assert!(first.reserved);
        assert!(!second.reserved);
        assert_eq!(second.decision.flags.last(), Some(&Flag::TooSoon));
        // After the gap it is admitted.
        clock.advance(Duration::seconds(300));
        assert!(
            limits
                .reserve("u_gap", "gap_3", 100_00, Utc::now(), None)
                .await
                .unwrap()
                .reserved
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admission_older_than_a_day_is_refused_and_fences_older_writers() {
    on_both_stores("expired", |stores| async move {
        let clock = ManualClock::new(Utc::now());
        let limits = limits(&stores, LimitConfig::default(), 1_000_000_00, &clock);
        let requested_at = clock.now();
        assert!(
            limits
                .reserve("u_late", "late_1", 100_00, requested_at, None)
                .await
                .unwrap()
                .reserved
        );
        // A second payout's admission reads the quota, then stalls past the day.
        let read_before = stores.quotas.get("u_late").await.unwrap();
        clock.advance(Duration::hours(24) + Duration::seconds(1));
        let late = limits
            .reserve("u_late", "late_2", 100_00, requested_at, None)
            .await
            .unwrap();
        assert!(!late.reserved, "a day-old request is not admitted");
        assert!(
            late.decision.reason.contains("24 hours"),
            "{}",
            late.decision.reason
        );
        let after = stores.quotas.get("u_late").await.unwrap();
        assert_eq!(after.committed_cents, 100_00, "nothing reserved");
        assert_eq!(
            after.version,
            read_before.version + 1,
            "the refusal is written"
        );
        // The stalled admission now writes what it decided before: it loses.
        let mut stale = read_before.clone();
        stale.committed_cents += 100_00;
        stale.version += 1;
        let error = stores
            .quotas
            .put(&stale, read_before.version)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Conflict);
        // An admitted payout stays admitted, however late its retry.
        assert!(
            limits
                .reserve("u_late", "late_1", 100_00, requested_at, None)
                .await
                .unwrap()
                .reserved
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_is_read_only_and_reservation_is_idempotent_and_releasable() {
    on_both_stores("idempotent", |stores| async move {
        let clock = ManualClock::new(Utc::now());
        let limits = limits(&stores, only(LimitConfig::default()), 1_000_000_00, &clock);
        for _ in 0..5 {
            assert!(limits.validate("u_idem", 100_00).await.unwrap().allowed);
        }
        assert_eq!(
            stores.quotas.get("u_idem").await.unwrap().version,
            0,
            "validation reserves nothing"
        );

        let first = limits
            .reserve("u_idem", "idem_1", 100_00, Utc::now(), None)
            .await
            .unwrap();
        let again = limits
            .reserve("u_idem", "idem_1", 100_00, Utc::now(), None)
            .await
            .unwrap();
        assert!(first.reserved && again.reserved);
        let quota = stores.quotas.get("u_idem").await.unwrap();
        assert_eq!(
            (quota.reservations.len(), quota.committed_cents),
            (1, 100_00)
        );

        let released = limits
            .release("u_idem", "idem_1", 100_00, 1, "rejected by admin")
            .await
            .unwrap();
        assert!(released.applied && released.found);
        assert_eq!(released.held_cents, 0);
        // The same call again gives nothing back twice.
        let again = limits
            .release("u_idem", "idem_1", 100_00, 1, "again")
            .await
            .unwrap();
        assert!(again.applied);
        assert_eq!(
            stores.quotas.get("u_idem").await.unwrap().committed_cents,
            0
        );
        let unknown = limits
            .release("u_idem", "nothing", 100_00, 1, "?")
            .await
            .unwrap();
        assert!(!unknown.found);
    })
    .await;
}

#[tokio::test]
async fn a_blocked_validation_is_recorded() {
    let stores = Stores {
        quotas: Arc::new(MemoryQuotas::default()),
        blocked: Arc::new(MemoryBlockedAttempts::default()),
    };
    let clock = ManualClock::new(Utc::now());
    let limits = limits(&stores, LimitConfig::default(), 1_000_000_00, &clock);
    let decision = limits.validate("u_blocked", 10_001_00).await.unwrap();
    assert!(!decision.allowed);
    let recorded = stores
        .blocked
        .list(Some("u_blocked"), None, 10)
        .await
        .unwrap();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].amount_cents, 10_001_00);
    assert_eq!(recorded[0].attempted_at, clock.now());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_for_the_balance_is_recorded_and_final_for_its_payout() {
    on_both_stores("balance_blocked", |stores| async move {
        let clock = ManualClock::new(Utc::now());
        let limits = limits(&stores, only(LimitConfig::default()), 500_00, &clock);
        let error = limits
            .reserve("u_poor", "poor_1", 600_00, Utc::now(), None)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::FailedPrecondition);
        assert!(
            error.message().contains("available balance of 50000 cents"),
            "{error}"
        );
        let recorded = stores.blocked.list(Some("u_poor"), None, 10).await.unwrap();
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].flags.last(), Some(&Flag::InsufficientBalance));
        assert_eq!(recorded[0].amount_cents, 600_00);
        // A retry of the same payout gets the same answer and records nothing new.
        let again = limits
            .reserve("u_poor", "poor_1", 600_00, Utc::now(), None)
            .await
            .unwrap_err();
        assert_eq!(again.kind(), ErrorKind::FailedPrecondition);
        assert_eq!(
            stores
                .blocked
                .list(Some("u_poor"), None, 10)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            stores.quotas.get("u_poor").await.unwrap().committed_cents,
            0
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_attempts_in_a_day_are_held_as_suspicious_with_the_default_limits() {
    on_both_stores("frequency", |stores| async move {
        let clock = ManualClock::new(Utc::now());
        let config = LimitConfig {
            // Keep the other approval triggers out of the way.
            large_first_payout_cents: 1_000_000_00,
            ..LimitConfig::default()
        };
        let limits = limits(&stores, config, 1_000_000_00, &clock);
        assert!(
            limits
                .reserve("u_freq", "f1", 100_00, Utc::now(), None)
                .await
                .unwrap()
                .reserved
        );
        for (minutes, payout) in [(1, "f2"), (2, "f3")] {
            clock.advance(Duration::minutes(minutes));
            let refused = limits
                .reserve("u_freq", payout, 100_00, Utc::now(), None)
                .await
                .unwrap();
            assert_eq!(refused.decision.flags.last(), Some(&Flag::TooSoon));
        }
        clock.advance(Duration::minutes(5));
        let fourth = limits
            .reserve("u_freq", "f4", 100_00, Utc::now(), None)
            .await
            .unwrap();
        assert!(fourth.reserved && !fourth.decision.requires_approval);
        clock.advance(Duration::minutes(5));
        let fifth = limits
            .reserve("u_freq", "f5", 100_00, Utc::now(), None)
            .await
            .unwrap();
        assert!(
            fifth.reserved,
            "two payouts today: the daily count allows it"
        );
        assert!(fifth.decision.requires_approval);
        assert_eq!(fifth.decision.flags, vec![Flag::SuspiciousFrequency]);
        assert_eq!(fifth.decision.metadata.daily_attempt_count, 4);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recheck_sees_earnings_that_shrank_after_admission() {
    on_both_stores("recheck", |stores| async move {
        let clock = ManualClock::new(Utc::now());
        let generous = limits(&stores, only(LimitConfig::default()), 1_000_00, &clock);
        assert!(
            generous
                .reserve("u_re", "re_1", 800_00, Utc::now(), None)
                .await
                .unwrap()
                .reserved
        );
        let rechecked = generous.recheck("u_re", "re_1").await.unwrap();
        assert!(rechecked.payable);
        assert_eq!(rechecked.available_cents, 200_00);
        // A dispute froze $500 of the earnings: the same payout is no longer covered.
        let frozen = limits(&stores, only(LimitConfig::default()), 500_00, &clock);
        let rechecked = frozen.recheck("u_re", "re_1").await.unwrap();
        assert!(!rechecked.payable);
        assert_eq!(rechecked.available_cents, -300_00);
        assert!(
            rechecked.reason.contains("no longer cover"),
            "{}",
            rechecked.reason
        );
        // A payout holding nothing is not payable either.
        assert!(!frozen.recheck("u_re", "unknown").await.unwrap().payable);
    })
    .await;
}

/// A context source that counts what it is asked.
#[derive(Default)]
struct Counting {
    accounts: std::sync::atomic::AtomicUsize,
    earnings: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl ContextSource for Counting {
    async fn account_created_at(
        &self,
        _user_id: &str,
    ) -> Result<Option<chrono::DateTime<Utc>>, ServiceError> {
        self.accounts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Some(Utc::now() - Duration::days(365)))
    }

    async fn earnings(&self, _user_id: &str) -> Result<UserEarnings, ServiceError> {
        self.earnings
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(UserEarnings {
            lifetime_cents: 10_000_000_00,
            payable_cents: 10_000_000_00,
            recent_refunds_and_disputes: 0,
        })
    }
}

#[tokio::test]
async fn the_limits_ask_only_what_their_caller_did_not_say() {
    use std::sync::atomic::Ordering::SeqCst;
    let context = Arc::new(Counting::default());
    let clock = ManualClock::new(Utc::now());
    let limits = Limits::new(
        only(LimitConfig::default()),
        Arc::new(MemoryQuotas::default()),
        Arc::new(MemoryBlockedAttempts::default()),
        Arc::clone(&context) as Arc<dyn ContextSource>,
        Arc::new(clock.clone()),
        Arc::new(SequentialIds::default()),
    );
    let asked = || (context.accounts.load(SeqCst), context.earnings.load(SeqCst));
    // The payouts service says when the account was created: only earnings are asked.
    let created = clock.now() - Duration::days(400);
    assert!(
        limits
            .reserve("u_hops", "hops_1", 100_00, clock.now(), Some(created))
            .await
            .unwrap()
            .reserved
    );
    assert_eq!(asked(), (0, 1));
    // A re-check needs earnings only.
    assert!(limits.recheck("u_hops", "hops_1").await.unwrap().payable);
    assert_eq!(asked(), (0, 2));
    // Not said: both asked.
    limits
        .reserve("u_hops", "hops_2", 100_00, clock.now(), None)
        .await
        .unwrap();
    limits.validate("u_hops", 100_00).await.unwrap();
    assert_eq!(asked(), (2, 4));
    // What the caller says is what the checks use: a new account's limit applies.
    let young = clock.now() - Duration::days(2);
    let held = limits
        .reserve("u_young", "young_1", 150_00, clock.now(), Some(young))
        .await
        .unwrap();
    assert!(
        held.decision.flags.contains(&Flag::NewAccount),
        "{:?}",
        held.decision
    );
    // What each user's payouts hold, for the balance check: admitted and not given back.
    assert_eq!(
        limits
            .held(&["u_hops".to_owned(), "u_nobody".to_owned()])
            .await
            .unwrap(),
        [("u_hops".to_owned(), 200_00), ("u_nobody".to_owned(), 0)]
    );
}
