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
        repository.list(Some("u1"), 10).await.unwrap(),
        vec![new.clone(), old]
    );
    assert_eq!(repository.list(None, 2).await.unwrap(), vec![other, new]);
    assert_eq!(repository.list(Some("nobody"), 10).await.unwrap(), vec![]);
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
