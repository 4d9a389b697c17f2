//! The behaviour every `AllocationRepository` must have, run against the embedded store and
//! against MongoDB (the test server, or the one `MONGODB_URI` names).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use payouts_runtime::store::store_precision;
use payouts_runtime::{ErrorKind, Money};

use super::*;

fn at(minute: i64) -> DateTime<Utc> {
    store_precision(Utc::now()) + Duration::minutes(minute)
}

fn credit(id: &str, user_id: &str, cents: i64, minute: i64) -> Allocation {
    Allocation::credit(id, user_id, "ch_1", Money::usd(cents), at(minute)).unwrap()
}

async fn run(repository: Arc<dyn AllocationRepository>) {
    a_retried_credit_is_stored_once(repository.as_ref()).await;
    a_different_credit_under_a_used_id_is_refused(repository.as_ref()).await;
    concurrent_credits_of_one_id_store_one(Arc::clone(&repository)).await;
    lists_a_creators_allocations_newest_first(repository.as_ref()).await;
}

async fn a_retried_credit_is_stored_once(repository: &dyn AllocationRepository) {
    let first = credit("alloc_retry", "u-retry", 500, 1);
    assert_eq!(
        repository.record(&first).await.unwrap(),
        (first.clone(), true)
    );
    let retried = credit("alloc_retry", "u-retry", 500, 2);
    assert_eq!(
        repository.record(&retried).await.unwrap(),
        (first.clone(), false)
    );
    assert_eq!(repository.get("alloc_retry").await.unwrap(), Some(first));
}

async fn a_different_credit_under_a_used_id_is_refused(repository: &dyn AllocationRepository) {
    repository
        .record(&credit("alloc_diff", "u-diff", 500, 1))
        .await
        .unwrap();
    let error = repository
        .record(&credit("alloc_diff", "u-diff", 501, 1))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::AlreadyExists);
    assert_eq!(
        repository
            .get("alloc_diff")
            .await
            .unwrap()
            .map(|a| a.amount.cents),
        Some(500)
    );
}

async fn concurrent_credits_of_one_id_store_one(repository: Arc<dyn AllocationRepository>) {
    let writers = (0..20).map(|_| {
        let repository = Arc::clone(&repository);
        tokio::spawn(async move {
            repository
                .record(&credit("alloc_race", "u-race", 700, 1))
                .await
        })
    });
    let mut created = 0;
    for writer in writers {
        if writer.await.unwrap().unwrap().1 {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    assert_eq!(
        repository
            .list_by_user("u-race", None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn lists_a_creators_allocations_newest_first(repository: &dyn AllocationRepository) {
    let old = credit("alloc_l1", "u-list", 100, 1);
    let new = credit("alloc_l2", "u-list", 200, 2);
    repository.record(&old).await.unwrap();
    repository.record(&new).await.unwrap();
    repository
        .record(&credit("alloc_l3", "u-other", 300, 3))
        .await
        .unwrap();
    assert_eq!(
        repository.list_by_user("u-list", None, 10).await.unwrap(),
        vec![new.clone(), old.clone()]
    );
    assert_eq!(
        repository.list_by_user("u-list", None, 1).await.unwrap(),
        vec![new.clone()]
    );
    let cursor = Some((new.created_at, new.id.clone()));
    assert_eq!(
        repository.list_by_user("u-list", cursor, 10).await.unwrap(),
        vec![old]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_conforms() {
    run(Arc::new(MemoryAllocations::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_store_conforms() {
    let database = payouts_runtime::testing::mongo_database("disputes").await;
    run(Arc::new(MongoAllocations::open(&database).await.unwrap())).await;
}
