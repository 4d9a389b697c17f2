//! The behaviour every `InboxRepository` must have, run against the embedded store and
//! against MongoDB (the test server, or the one `MONGODB_URI` names).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use futures::TryStreamExt;
use payouts_runtime::store::store_precision;

use super::*;
use crate::domain::EventSource;

/// Times near now: events older than the retention would be removed by the TTL index.
fn at(minute: i64) -> DateTime<Utc> {
    static BASE: std::sync::OnceLock<DateTime<Utc>> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| store_precision(Utc::now()) - Duration::hours(1));
    base + Duration::minutes(minute)
}

fn event(endpoint: Endpoint, id: &str, status: EventStatus, minute: i64) -> InboxEvent {
    InboxEvent {
        endpoint,
        event_id: id.to_owned(),
        event_type: "transfer.created".to_owned(),
        account: Some("acct_1".to_owned()),
        livemode: false,
        api_version: Some("2024-12-18.acacia".to_owned()),
        created: 1_703_865_600,
        payload: format!("{{\"id\":\"{id}\"}}"),
        status,
        attempts: 0,
        deliveries: 1,
        received_at: at(minute),
        next_attempt_at: Some(at(minute)),
        completed_at: (status == EventStatus::Completed).then(|| at(minute)),
        failed_at: None,
        last_error: None,
        outcome: None,
        trace_parent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
        source: EventSource::Delivery,
        refusals: 0,
        waiting: None,
        alert: None,
        version: 1,
    }
}

async fn run(repository: Arc<dyn InboxRepository>) {
    first_insert_is_new_and_second_is_a_duplicate(repository.as_ref()).await;
    the_same_id_on_the_other_endpoint_is_another_event(repository.as_ref()).await;
    concurrent_inserts_of_one_event_store_it_once(Arc::clone(&repository)).await;
    statistics_and_lists_by_status(repository.as_ref()).await;
    due_events_and_versioned_replacement(repository.as_ref()).await;
    concurrent_claims_of_one_event_one_wins(Arc::clone(&repository)).await;
    waiting_events_and_owed_alerts(repository.as_ref()).await;
}

/// An event waiting for its owner keeps who and since, and is counted; a parked event's owed
/// alert is stored with it, makes it due (for its alert only) and is counted until raised.
async fn waiting_events_and_owed_alerts(repository: &dyn InboxRepository) {
    use crate::domain::{OwedAlert, Owner, Waiting};
    let policy = crate::domain::RetryPolicy::default();
    let now = at(200);
    let before = repository.statistics().await.unwrap();
    let before_waiting = repository.waiting_by_owner().await.unwrap();
    let before_backlog = repository.backlog().await.unwrap();

    let stored = event(
        Endpoint::StripeSubscription,
        "evt_wait_disputes",
        EventStatus::Processing,
        200,
    );
    repository.insert_new(stored.clone()).await.unwrap();
    let claimed = stored.claim(now, &policy);
    repository.replace(&claimed, stored.version).await.unwrap();
    let waiting = claimed.wait(
        now,
        Owner::Disputes,
        "disputes answered Unavailable".to_owned(),
        &policy,
    );
    repository.replace(&waiting, claimed.version).await.unwrap();
    let read = repository
        .get(Endpoint::StripeSubscription, "evt_wait_disputes")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read, waiting);
    assert_eq!(
        read.waiting,
        Some(Waiting {
            owner: Owner::Disputes,
            since: now,
            waits: 1
        })
    );

    let parked_source = InboxEvent {
        refusals: policy.max_attempts - 1,
        ..event(
            Endpoint::StripePayouts,
            "evt_alert_owed",
            EventStatus::Processing,
            200,
        )
    };
    repository.insert_new(parked_source.clone()).await.unwrap();
    let parked = parked_source.fail(now, "refused".to_owned(), &policy);
    repository
        .replace(&parked, parked_source.version)
        .await
        .unwrap();
    let read = repository
        .get(Endpoint::StripePayouts, "evt_alert_owed")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read, parked);
    assert_eq!(
        read.alert,
        Some(OwedAlert {
            due_at: now,
            attempts: 0
        })
    );

    let after = repository.statistics().await.unwrap();
    assert_eq!(after.waiting, before.waiting + 1);
    assert_eq!(after.alerts_owed, before.alerts_owed + 1);
    assert_eq!(after.failed, before.failed + 1);
    let count = |map: &std::collections::BTreeMap<String, u64>| map.get("disputes").copied();
    let waiting_now = repository.waiting_by_owner().await.unwrap();
    assert_eq!(
        count(&waiting_now).unwrap_or(0),
        count(&before_waiting).unwrap_or(0) + 1
    );
    assert_eq!(after.waiting_for, waiting_now);
    // The backlog counts the parked one; the waiting one (received at minute 200) is
    // processing, so the oldest processing event is at most that old.
    let backlog = repository.backlog().await.unwrap();
    assert_eq!(backlog.parked, before_backlog.parked + 1);
    let oldest = backlog.oldest_processing.expect("an event is processing");
    assert!(oldest <= at(200), "{oldest} is after the waiting event");
    if before_backlog.oldest_processing.is_none() {
        assert_eq!(oldest, at(200));
    }

    // The parked event is due for its alert; the waiting one only after its backoff.
    let due_ids = |due: Vec<InboxEvent>| -> Vec<String> {
        due.into_iter()
            .map(|e| e.event_id)
            .filter(|id| id == "evt_alert_owed" || id == "evt_wait_disputes")
            .collect()
    };
    assert_eq!(
        due_ids(repository.due(now, 1000).await.unwrap()),
        ["evt_alert_owed"]
    );
    let backoff_over = now + policy.wait_backoff(1);
    assert_eq!(
        due_ids(repository.due(backoff_over, 1000).await.unwrap()),
        ["evt_alert_owed", "evt_wait_disputes"]
    );

    // Claimed, the alert is not due until the lease runs out; raised, it is owed no more.
    let alert_claimed = parked.claim_alert(now, &policy).unwrap();
    repository
        .replace(&alert_claimed, parked.version)
        .await
        .unwrap();
    assert!(due_ids(repository.due(now, 1000).await.unwrap()).is_empty());
    let raised = alert_claimed.alert_raised();
    repository
        .replace(&raised, alert_claimed.version)
        .await
        .unwrap();
    assert!(
        !due_ids(repository.due(now + Duration::days(1), 1000).await.unwrap())
            .contains(&"evt_alert_owed".to_owned())
    );
    assert_eq!(
        repository.statistics().await.unwrap().alerts_owed,
        before.alerts_owed
    );

    // Applied once the owner is back: no longer waiting.
    let back = waiting.claim(backoff_over, &policy);
    repository.replace(&back, waiting.version).await.unwrap();
    let done = back.complete(backoff_over, "applied".to_owned());
    repository.replace(&done, back.version).await.unwrap();
    assert_eq!(repository.waiting_by_owner().await.unwrap(), before_waiting);
    assert_eq!(
        repository.statistics().await.unwrap().waiting,
        before.waiting
    );
}

async fn due_events_and_versioned_replacement(repository: &dyn InboxRepository) {
    let policy = crate::domain::RetryPolicy::default();
    let now = at(100);
    let mut due_later = event(
        Endpoint::StripePayouts,
        "evt_due_later",
        EventStatus::Processing,
        100,
    );
    due_later.next_attempt_at = Some(now + Duration::seconds(5));
    let due_first = event(
        Endpoint::StripePayouts,
        "evt_due_first",
        EventStatus::Processing,
        99,
    );
    let due_second = event(
        Endpoint::StripeSubscription,
        "evt_due_second",
        EventStatus::Processing,
        100,
    );
    for e in [&due_later, &due_first, &due_second] {
        repository.insert_new(e.clone()).await.unwrap();
    }
    let due: Vec<String> = repository
        .due(now, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_id)
        .filter(|id| id.starts_with("evt_due"))
        .collect();
    assert_eq!(due, ["evt_due_first", "evt_due_second"]);

    // A claim leases the event: it is no longer due, and a stale writer cannot overwrite it.
    let claimed = due_first.claim(now, &policy);
    repository
        .replace(&claimed, due_first.version)
        .await
        .unwrap();
    assert!(
        !repository
            .due(now, 100)
            .await
            .unwrap()
            .iter()
            .any(|e| e.event_id == "evt_due_first")
    );
    let error = repository
        .replace(&due_first.claim(now, &policy), due_first.version)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), payouts_runtime::ErrorKind::Conflict);
    // Once the lease runs out it is due again.
    assert!(
        repository
            .due(now + policy.lease, 100)
            .await
            .unwrap()
            .iter()
            .any(|e| e.event_id == "evt_due_first")
    );

    let done = claimed.complete(now, "applied".to_owned());
    repository.replace(&done, claimed.version).await.unwrap();
    assert_eq!(
        repository
            .get(Endpoint::StripePayouts, "evt_due_first")
            .await
            .unwrap(),
        Some(done)
    );
}

async fn concurrent_claims_of_one_event_one_wins(repository: Arc<dyn InboxRepository>) {
    let policy = crate::domain::RetryPolicy::default();
    let contested = event(
        Endpoint::StripePayouts,
        "evt_claim_race",
        EventStatus::Processing,
        1,
    );
    repository.insert_new(contested.clone()).await.unwrap();
    let claims = (0..20).map(|_| {
        let repository = Arc::clone(&repository);
        let claimed = contested.claim(at(2), &policy);
        tokio::spawn(async move { repository.replace(&claimed, 1).await })
    });
    let mut winners = 0;
    for claim in claims {
        if claim.await.unwrap().is_ok() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one worker claims an event");
}

async fn first_insert_is_new_and_second_is_a_duplicate(repository: &dyn InboxRepository) {
    let first = event(
        Endpoint::StripePayouts,
        "evt_dup",
        EventStatus::Processing,
        1,
    );
    assert_eq!(
        repository.insert_new(first.clone()).await.unwrap(),
        Inserted::New
    );
    let mut again = first.clone();
    again.payload = "{\"id\":\"evt_dup\",\"changed\":true}".to_owned();
    match repository.insert_new(again.clone()).await.unwrap() {
        Inserted::Duplicate(stored) => assert_eq!(*stored, first),
        Inserted::New => panic!("a second insert of evt_dup was stored"),
    }
    assert_eq!(
        repository
            .get(Endpoint::StripePayouts, "evt_dup")
            .await
            .unwrap(),
        Some(first)
    );
    assert_eq!(
        repository
            .get(Endpoint::StripePayouts, "evt_none")
            .await
            .unwrap(),
        None
    );
}

async fn the_same_id_on_the_other_endpoint_is_another_event(repository: &dyn InboxRepository) {
    let payouts = event(
        Endpoint::StripePayouts,
        "evt_both",
        EventStatus::Processing,
        1,
    );
    let subscription = event(
        Endpoint::StripeSubscription,
        "evt_both",
        EventStatus::Processing,
        1,
    );
    assert_eq!(
        repository.insert_new(payouts.clone()).await.unwrap(),
        Inserted::New
    );
    assert_eq!(
        repository.insert_new(subscription.clone()).await.unwrap(),
        Inserted::New
    );
}

async fn concurrent_inserts_of_one_event_store_it_once(repository: Arc<dyn InboxRepository>) {
    let contested = event(
        Endpoint::StripePayouts,
        "evt_race",
        EventStatus::Processing,
        1,
    );
    let attempts = (0..20).map(|_| {
        let repository = Arc::clone(&repository);
        let contested = contested.clone();
        tokio::spawn(async move { repository.insert_new(contested.clone()).await })
    });
    let mut new = 0;
    for attempt in attempts {
        if attempt.await.unwrap().unwrap() == Inserted::New {
            new += 1;
        }
    }
    assert_eq!(new, 1, "exactly one concurrent insert stores the event");
}

async fn statistics_and_lists_by_status(repository: &dyn InboxRepository) {
    let before = repository.statistics().await.unwrap();
    let completed = event(
        Endpoint::StripeSubscription,
        "evt_done",
        EventStatus::Completed,
        10,
    );
    let failed_old = event(
        Endpoint::StripePayouts,
        "evt_failed_old",
        EventStatus::Failed,
        11,
    );
    let failed_new = InboxEvent {
        source: EventSource::Backfill,
        ..event(
            Endpoint::StripePayouts,
            "evt_failed_new",
            EventStatus::Failed,
            12,
        )
    };
    for e in [&completed, &failed_old, &failed_new] {
        repository.insert_new(e.clone()).await.unwrap();
    }
    let after = repository.statistics().await.unwrap();
    assert_eq!(after.total, before.total + 3);
    assert_eq!(after.completed, before.completed + 1);
    assert_eq!(after.failed, before.failed + 2);
    assert_eq!(after.processing, before.processing);
    // The source is kept, and the backfilled ones are counted.
    assert_eq!(after.backfilled, before.backfilled + 1);

    let failed = repository
        .list(Some(EventStatus::Failed), None, 10)
        .await
        .unwrap();
    assert_eq!(failed, vec![failed_new.clone(), failed_old]);
    assert_eq!(
        repository
            .list(Some(EventStatus::Failed), None, 1)
            .await
            .unwrap(),
        vec![failed_new.clone()]
    );
    let recent = repository.list(None, None, 2).await.unwrap();
    assert_eq!(
        recent,
        vec![failed_new.clone(), failed_old_again(repository).await]
    );
    // The next page starts after the cursor of the last event of the previous one.
    let cursor = Some((
        failed_new.received_at,
        storage_id(failed_new.endpoint, &failed_new.event_id),
    ));
    assert_eq!(
        repository
            .list(Some(EventStatus::Failed), cursor, 10)
            .await
            .unwrap(),
        vec![failed_old_again(repository).await]
    );
}

async fn failed_old_again(repository: &dyn InboxRepository) -> InboxEvent {
    repository
        .get(Endpoint::StripePayouts, "evt_failed_old")
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_conforms() {
    run(Arc::new(MemoryInbox::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_store_conforms() {
    let database = payouts_runtime::testing::mongo_database("webhooks").await;
    run(Arc::new(MongoInbox::open(&database).await.unwrap())).await;
}

#[tokio::test]
async fn mongo_store_expires_only_completed_events_thirty_days_after_completion() {
    let database = payouts_runtime::testing::mongo_database("webhooks_ttl").await;
    let repository = MongoInbox::open(&database).await.unwrap();
    // Opening twice is fine: indexes are ensured idempotently.
    MongoInbox::open(&database).await.unwrap();
    let collection = database.collection::<mongodb::bson::Document>("processedWebhookEvents");
    let indexes: Vec<_> = collection
        .list_indexes()
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let ttl = indexes
        .iter()
        .find(|index| index.keys.contains_key("expiresAt"))
        .expect("a TTL index on expiresAt");
    assert_eq!(
        ttl.options
            .as_ref()
            .and_then(|options| options.expire_after),
        Some(std::time::Duration::ZERO)
    );
    // A parked failed event and one still being retried carry no expiry: the TTL index
    // never removes them. A completed one expires 30 days after it completed.
    for (id, status) in [
        ("evt_ttl_failed", EventStatus::Failed),
        ("evt_ttl_processing", EventStatus::Processing),
        ("evt_ttl_completed", EventStatus::Completed),
    ] {
        let stored = event(Endpoint::StripePayouts, id, status, 0);
        repository.insert_new(stored.clone()).await.unwrap();
        let document = collection
            .find_one(mongodb::bson::doc! { "eventId": id })
            .await
            .unwrap()
            .unwrap();
        match status {
            EventStatus::Completed => {
                let completed = stored.completed_at.unwrap();
                assert_eq!(
                    stored.expires_at(),
                    Some(completed + crate::domain::RETENTION)
                );
                assert_eq!(
                    document
                        .get_datetime("expiresAt")
                        .unwrap()
                        .timestamp_millis(),
                    (completed + crate::domain::RETENTION).timestamp_millis()
                );
            }
            _ => {
                assert_eq!(stored.expires_at(), None, "{id}");
                assert!(!document.contains_key("expiresAt"), "{id}: {document:?}");
            }
        }
    }
}
