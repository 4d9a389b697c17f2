//! The behaviour every `BlockedAttemptRepository` must have, run against the embedded store
//! and against MongoDB (the test server, or the one `MONGODB_URI` names).

use chrono::{DateTime, Duration, Utc};
use payouts_runtime::store::store_precision;

use super::*;
use crate::domain::{Flag, LimitMetadata};

fn attempt(id: &str, user_id: &str, minute: i64) -> BlockedAttempt {
    let base: DateTime<Utc> = store_precision(Utc::now());
    BlockedAttempt {
        id: id.to_owned(),
        user_id: user_id.to_owned(),
        amount_cents: 10_000_01,
        flags: vec![Flag::ExceedsSingleLimit, Flag::NewAccount],
        reason: "Amount exceeds the $10,000.00 single payout limit".to_owned(),
        metadata: LimitMetadata {
            is_new_account: true,
            account_age_days: 3,
            daily_payout_count: 1,
            daily_payout_amount_cents: 500_00,
            monthly_payout_amount_cents: 900_00,
            lifetime_earnings_cents: 12_000_00,
            daily_attempt_count: 4,
        },
        attempted_at: base + Duration::minutes(minute),
    }
}

async fn run(repository: &dyn BlockedAttemptRepository) {
    let old = attempt("b1", "u1", 1);
    let new = attempt("b2", "u1", 2);
    let other = attempt("b3", "u2", 3);
    for a in [&old, &new, &other] {
        repository.record(a).await.unwrap();
    }
    // Recording again is harmless and changes nothing.
    let mut changed = old.clone();
    changed.reason = "changed".to_owned();
    repository.record(&changed).await.unwrap();

    assert_eq!(
        repository.list(Some("u1"), None, 10).await.unwrap(),
        vec![new.clone(), old.clone()]
    );
    assert_eq!(
        repository.list(None, None, 2).await.unwrap(),
        vec![other, new.clone()]
    );
    // The next page starts after the cursor (the last attempt of the previous page).
    let cursor = Some((new.attempted_at, new.id.clone()));
    assert_eq!(repository.list(None, cursor, 10).await.unwrap(), vec![old]);
    assert_eq!(
        repository.list(Some("nobody"), None, 10).await.unwrap(),
        vec![]
    );
}

#[tokio::test]
async fn embedded_store_conforms() {
    run(&MemoryBlockedAttempts::default()).await;
}

#[tokio::test]
async fn mongo_store_conforms() {
    let database = payouts_runtime::testing::mongo_database("limits").await;
    run(&MongoBlockedAttempts::open(&database).await.unwrap()).await;
}

mod quotas {
    use std::sync::Arc;

    use chrono::{Duration, Utc};
    use payouts_runtime::ErrorKind;
    use payouts_runtime::store::store_precision;

    use crate::checks::{Attempt, Quota, Refusal, Reservation};
    use crate::domain::Flag;
    use crate::store::{MemoryQuotas, MongoQuotas, QuotaRepository};

    fn quota(user_id: &str, version: i64, payouts: usize) -> Quota {
        let now = store_precision(Utc::now());
        Quota {
            user_id: user_id.to_owned(),
            reservations: (0..payouts)
                .map(|i| Reservation {
                    payout_id: format!("p{i}"),
                    amount_cents: 100 * (i as i64 + 1),
                    reserved_at: now - Duration::minutes(i as i64),
                    requires_approval: i % 2 == 0,
                    flags: vec![Flag::RequiresAdminApproval, Flag::NewAccount],
                    released_cents: 50,
                    release_sequence: i as i64,
                })
                .collect(),
            attempts: vec![
                Attempt {
                    payout_id: "refused".to_owned(),
                    at: now - Duration::hours(2),
                    refusal: Some(Refusal {
                        flags: vec![Flag::InsufficientBalance],
                        reason: "Amount exceeds the available balance".to_owned(),
                        available_cents: Some(-5),
                    }),
                },
                Attempt {
                    payout_id: "p0".to_owned(),
                    at: now,
                    refusal: None,
                },
            ],
            committed_cents: 12_345,
            payouts_ever: 7,
            version,
        }
    }

    async fn run(repository: Arc<dyn QuotaRepository>) {
        // Nothing stored: an empty quota at version 0.
        assert_eq!(
            repository.get("q-new").await.unwrap(),
            Quota::empty("q-new")
        );
        let first = quota("q-new", 1, 3);
        repository.put(&first, 0).await.unwrap();
        assert_eq!(repository.get("q-new").await.unwrap(), first);
        let second = quota("q-new", 2, 4);
        repository.put(&second, 1).await.unwrap();
        assert_eq!(repository.get("q-new").await.unwrap(), second);

        // A second creation and a stale version both conflict.
        let error = repository.put(&quota("q-new", 1, 0), 0).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Conflict);
        let error = repository.put(&quota("q-new", 2, 0), 1).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Conflict);
        assert_eq!(repository.get("q-new").await.unwrap(), second);

        // Of concurrent writers of one version, exactly one wins.
        let writers = (0..20).map(|i| {
            let repository = Arc::clone(&repository);
            tokio::spawn(async move { repository.put(&quota("q-new", 3, i), 2).await })
        });
        let mut winners = 0;
        for writer in writers {
            match writer.await.unwrap() {
                Ok(()) => winners += 1,
                Err(error) => assert_eq!(error.kind(), ErrorKind::Conflict),
            }
        }
        assert_eq!(winners, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_store_conforms() {
        run(Arc::new(MemoryQuotas::default())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mongo_store_conforms() {
        let database = payouts_runtime::testing::mongo_database("quotas").await;
        run(Arc::new(MongoQuotas::open(&database))).await;
    }
}
