//! The behaviour every `AccountRepository` must have, run against the embedded store and
//! against MongoDB (the test server, or the one `MONGODB_URI` names).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use payouts_runtime::ErrorKind;
use payouts_runtime::store::store_precision;

use super::*;
use crate::domain::StripeAccountStatus;

fn account(user_id: &str, version: i64) -> Account {
    let created: DateTime<Utc> = store_precision(Utc::now()) - Duration::days(40);
    Account {
        user_id: user_id.to_owned(),
        stripe_account_id: "acct_1".to_owned(),
        account_created_at: created,
        stripe_status: Some(StripeAccountStatus {
            charges_enabled: true,
            payouts_enabled: false,
            details_submitted: true,
            requirements_currently_due: vec!["external_account".to_owned()],
            updated_at: Some(created),
        }),
        version,
    }
}

async fn run(repository: Arc<dyn AccountRepository>) {
    stores_and_reads_back(repository.as_ref()).await;
    a_second_creation_conflicts(repository.as_ref()).await;
    a_stale_version_conflicts(repository.as_ref()).await;
    concurrent_writers_of_one_version_one_wins(repository).await;
}

async fn stores_and_reads_back(repository: &dyn AccountRepository) {
    assert_eq!(repository.get("u-read").await.unwrap(), None);
    let mut stored = account("u-read", 1);
    stored.stripe_account_id = "acct_read".to_owned();
    repository.put(&stored, None).await.unwrap();
    assert_eq!(
        repository.get("u-read").await.unwrap(),
        Some(stored.clone())
    );
    let mut no_status = account("u-read", 2);
    no_status.stripe_account_id = "acct_read".to_owned();
    no_status.stripe_status = None;
    repository.put(&no_status, Some(1)).await.unwrap();
    assert_eq!(
        repository.get("u-read").await.unwrap(),
        Some(no_status.clone())
    );
    let found = repository
        .find_by_stripe_account("acct_read")
        .await
        .unwrap();
    assert_eq!(found.map(|a| a.user_id).as_deref(), Some("u-read"));
    assert_eq!(
        repository
            .find_by_stripe_account("acct_none")
            .await
            .unwrap(),
        None
    );
}

async fn a_second_creation_conflicts(repository: &dyn AccountRepository) {
    repository.put(&account("u-twice", 1), None).await.unwrap();
    let error = repository
        .put(&account("u-twice", 1), None)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Conflict);
}

async fn a_stale_version_conflicts(repository: &dyn AccountRepository) {
    repository.put(&account("u-stale", 1), None).await.unwrap();
    repository
        .put(&account("u-stale", 2), Some(1))
        .await
        .unwrap();
    let error = repository
        .put(&account("u-stale", 2), Some(1))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Conflict);
    assert_eq!(
        repository.get("u-stale").await.unwrap().map(|a| a.version),
        Some(2)
    );
}

async fn concurrent_writers_of_one_version_one_wins(repository: Arc<dyn AccountRepository>) {
    repository.put(&account("u-race", 1), None).await.unwrap();
    let writers = (0..20).map(|_| {
        let repository = Arc::clone(&repository);
        tokio::spawn(async move { repository.put(&account("u-race", 2), Some(1)).await })
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
    run(Arc::new(MemoryAccounts::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_store_conforms() {
    let database = payouts_runtime::testing::mongo_database("payouts").await;
    run(Arc::new(MongoAccounts::open(&database).await.unwrap())).await;
}
