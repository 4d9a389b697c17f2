//! The inbox through its public API, on the embedded store and on MongoDB: signatures,
//! durable storage before acknowledgement, exactly-once processing under concurrent
//! redelivery and several replicas, retries, parking, admin retry, crashed workers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{Duration, Utc};
use payouts_runtime::clock::ManualClock;
use payouts_runtime::testing::stripe;
use payouts_runtime::{Clock as _, ErrorKind, Secret};
use payouts_webhooks::domain::{
    DispatchFailure, Endpoint, EventStatus, InboxEvent, Owner, RetryPolicy,
};
use payouts_webhooks::inbox::{Dispatcher, Inbox, InboxSettings, Ingested};
use payouts_webhooks::store::{InboxRepository, MemoryInbox, MongoInbox};

const PAYOUTS_SECRET: &str = "whsec_payouts_test";
const SUBSCRIPTION_SECRET: &str = "whsec_subscription_test";
const TRANSFERS_SECRET: &str = "whsec_transfers_test";

/// A dispatcher that counts calls per event and refuses the first `failures` calls of each
/// (INVALID_ARGUMENT: a definite "no"). It can be down (`down`: every call answers that
/// code, as a stopped or overloaded owner does). It can be slow: each call moves the clock
/// on by `slowness`, and the call for `interleave.0` first lets another replica claim and
/// process one event (as a second worker would while the owner is busy). It is also the
/// notifications service: the parked alerts it confirmed, by dedupe key (`alerts`), unless
/// `notifications_down`.
#[derive(Default)]
struct FakeOwner {
    calls: Mutex<HashMap<String, usize>>,
    failures: AtomicUsize,
    down: Mutex<Option<tonic::Code>>,
    slowness: Mutex<Option<(ManualClock, Duration)>>,
    interleave: Mutex<Option<(String, Arc<Inbox>)>>,
    alerts: Mutex<HashMap<String, usize>>,
    alert_calls: AtomicUsize,
    notifications_down: std::sync::atomic::AtomicBool,
}

impl FakeOwner {
    fn failing(failures: usize) -> Self {
        Self {
            failures: AtomicUsize::new(failures),
            ..Self::default()
        }
    }

    fn set_down(&self, code: Option<tonic::Code>) {
        *self.down.lock().unwrap() = code;
    }

    /// Distinct alerts confirmed (a re-raise under the same dedupe key is the same alert).
    fn alerts(&self) -> usize {
        self.alerts.lock().unwrap().len()
    }

    fn calls(&self, event_id: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .get(event_id)
            .copied()
            .unwrap_or(0)
    }

    fn total_calls(&self) -> usize {
        self.calls.lock().unwrap().values().sum()
    }
}

#[async_trait]
impl Dispatcher for FakeOwner {
    async fn alert_parked(&self, event: &InboxEvent) -> Result<(), String> {
        self.alert_calls.fetch_add(1, Ordering::SeqCst);
        if self.notifications_down.load(Ordering::SeqCst) {
            return Err("notifications answered Unavailable".to_owned());
        }
        // The dispatcher's dedupe key: one per parking.
        let key = format!(
            "{}:{}",
            event.event_id,
            event.failed_at.map_or(0, |at| at.timestamp_millis())
        );
        *self.alerts.lock().unwrap().entry(key).or_default() += 1;
        Ok(())
    }

    async fn dispatch(&self, _owner: Owner, event: &InboxEvent) -> Result<String, DispatchFailure> {
        let slowness = self.slowness.lock().unwrap().clone();
        if let Some((clock, by)) = slowness {
            clock.advance(by);
        }
        let other = {
            let mut interleave = self.interleave.lock().unwrap();
            match interleave.as_ref() {
                Some((id, _)) if *id == event.event_id => interleave.take().map(|(_, inbox)| inbox),
                _ => None,
            }
        };
        if let Some(other) = other
            && let Some(claimed) = other.claim_next().await.unwrap()
        {
            let _ = other.process_claimed(claimed).await;
        }
        let call = {
            let mut calls = self.calls.lock().unwrap();
            let count = calls.entry(event.event_id.clone()).or_default();
            *count += 1;
            *count
        };
        if let Some(code) = *self.down.lock().unwrap() {
            return Err(DispatchFailure::new(
                code,
                format!("owner down (call {call})"),
            ));
        }
        if call <= self.failures.load(Ordering::SeqCst) {
            Err(DispatchFailure::new(
                tonic::Code::InvalidArgument,
                format!("owner refused (call {call})"),
            ))
        } else {
            Ok("applied".to_owned())
        }
    }
}

struct Fixture {
    inbox: Arc<Inbox>,
    owner: Arc<FakeOwner>,
    clock: ManualClock,
    repository: Arc<dyn InboxRepository>,
}

fn settings(policy: RetryPolicy) -> InboxSettings {
    InboxSettings {
        payouts_secrets: vec![Secret::new(PAYOUTS_SECRET)],
        subscription_secrets: vec![Secret::new(SUBSCRIPTION_SECRET)],
        transfers_secrets: vec![Secret::new(TRANSFERS_SECRET)],
        tolerance_seconds: 300,
        livemode: false,
        policy,
        poll_interval: std::time::Duration::from_millis(10),
    }
}

impl Fixture {
    fn new(repository: Arc<dyn InboxRepository>, owner: FakeOwner, policy: RetryPolicy) -> Self {
        let clock = ManualClock::new(payouts_runtime::store::store_precision(Utc::now()));
        let owner = Arc::new(owner);
        let inbox = Arc::new(Inbox::new(
            Arc::clone(&repository),
            Arc::clone(&owner) as Arc<dyn Dispatcher>,
            Arc::new(clock.clone()),
            settings(policy),
        ));
        Self {
            inbox,
            owner,
            clock,
            repository,
        }
    }

    /// Another replica on the same store and clock.
    fn replica(&self) -> Arc<Inbox> {
        Arc::new(Inbox::new(
            Arc::clone(&self.repository),
            Arc::clone(&self.owner) as Arc<dyn Dispatcher>,
            Arc::new(self.clock.clone()),
            settings(RetryPolicy::default()),
        ))
    }

    fn signed(&self, payload: &[u8], secret: &str) -> String {
        stripe::signature_header(payload, secret, self.clock.now_unix())
    }

    async fn deliver(
        &self,
        endpoint: Endpoint,
        payload: &[u8],
    ) -> Result<Ingested, payouts_runtime::ServiceError> {
        let secret = match endpoint {
            Endpoint::StripePayouts => PAYOUTS_SECRET,
            Endpoint::StripeTransfers => TRANSFERS_SECRET,
            Endpoint::StripeSubscription => SUBSCRIPTION_SECRET,
        };
        self.inbox
            .ingest(endpoint, payload, Some(&self.signed(payload, secret)))
            .await
    }

    async fn stored(&self, endpoint: Endpoint, event_id: &str) -> InboxEvent {
        self.repository
            .get(endpoint, event_id)
            .await
            .unwrap()
            .expect("the event is stored")
    }
}

trait UnixNow {
    fn now_unix(&self) -> i64;
}

impl UnixNow for ManualClock {
    fn now_unix(&self) -> i64 {
        self.now().timestamp()
    }
}

fn transfer_event(id: &str) -> Vec<u8> {
    serde_json::to_vec(&stripe::event(id, "transfer.created", "transfer")).unwrap()
}

/// Runs a scenario on the embedded store and on MongoDB.
async fn on_both_stores<F, Fut>(name: &str, scenario: F)
where
    F: Fn(Arc<dyn InboxRepository>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    scenario(Arc::new(MemoryInbox::default())).await;
    let database = payouts_runtime::testing::mongo_database(name).await;
    scenario(Arc::new(MongoInbox::open(&database).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_delivery_is_stored_before_it_is_acknowledged_and_processed_once() {
    on_both_stores("valid", |repository| async move {
        let f = Fixture::new(repository, FakeOwner::default(), RetryPolicy::default());
        let payload = transfer_event("evt_valid");
        let ingested = f
            .deliver(Endpoint::StripeTransfers, &payload)
            .await
            .unwrap();
        assert_eq!(
            ingested,
            Ingested::Accepted {
                event_id: "evt_valid".to_owned(),
                event_type: "transfer.created".to_owned()
            }
        );
        let stored = f.stored(Endpoint::StripeTransfers, "evt_valid").await;
        assert_eq!(stored.status, EventStatus::Processing);
        assert_eq!(
            stored.payload.as_bytes(),
            payload.as_slice(),
            "the raw body is kept as received"
        );

        assert_eq!(f.inbox.process_due().await.unwrap(), 1);
        let processed = f.stored(Endpoint::StripeTransfers, "evt_valid").await;
        assert_eq!(processed.status, EventStatus::Completed);
        assert_eq!(processed.attempts, 1);
        assert_eq!(f.owner.calls("evt_valid"), 1);
        assert_eq!(
            f.inbox.process_due().await.unwrap(),
            0,
            "nothing is processed twice"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_or_wrongly_signed_deliveries_are_refused_and_nothing_is_stored() {
    on_both_stores("refused", |repository| async move {
        let f = Fixture::new(repository, FakeOwner::default(), RetryPolicy::default());
        let payload = transfer_event("evt_refused");
        let now = f.clock.now_unix();
        let mut tampered = payload.clone();
        let last = tampered.len() - 2;
        tampered[last] ^= 1;
        let cases: Vec<(&str, Vec<u8>, Option<String>)> = vec![
            (
                "tampered byte",
                tampered,
                Some(f.signed(&payload, TRANSFERS_SECRET)),
            ),
            (
                "wrong secret",
                payload.clone(),
                Some(f.signed(&payload, "whsec_wrong")),
            ),
            (
                "other endpoint's secret",
                payload.clone(),
                Some(f.signed(&payload, SUBSCRIPTION_SECRET)),
            ),
            (
                "the Connect endpoint's secret",
                payload.clone(),
                Some(f.signed(&payload, PAYOUTS_SECRET)),
            ),
            (
                "stale",
                payload.clone(),
                Some(stripe::signature_header(
                    &payload,
                    TRANSFERS_SECRET,
                    now - 301,
                )),
            ),
            (
                "future",
                payload.clone(),
                Some(stripe::signature_header(
                    &payload,
                    TRANSFERS_SECRET,
                    now + 301,
                )),
            ),
            ("malformed", payload.clone(), Some("v1=abc,t=".to_owned())),
            ("missing", payload.clone(), None),
        ];
        for (case, body, header) in cases {
            let error = f
                .inbox
                .ingest(
                    Endpoint::StripeTransfers,
                    body.as_slice(),
                    header.as_deref(),
                )
                .await
                .unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Unauthenticated, "{case}: {error}");
        }
        let not_json = b"this is not json".to_vec();
        let error = f
            .deliver(Endpoint::StripeTransfers, &not_json)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidArgument);
        assert!(
            error.message().starts_with("body is not a Stripe event"),
            "{error}"
        );
        assert_eq!(f.repository.statistics().await.unwrap().total, 0);
    })
    .await;
}

#[tokio::test]
async fn two_v1_signatures_with_one_valid_are_accepted() {
    let f = Fixture::new(
        Arc::new(MemoryInbox::default()),
        FakeOwner::default(),
        RetryPolicy::default(),
    );
    let payload = transfer_event("evt_two_v1");
    let now = f.clock.now_unix();
    let header = format!(
        "t={now},v1={},v1={}",
        stripe::sign(&payload, "whsec_old_rotated", now),
        stripe::sign(&payload, TRANSFERS_SECRET, now)
    );
    let ingested = f
        .inbox
        .ingest(Endpoint::StripeTransfers, payload.as_slice(), Some(&header))
        .await
        .unwrap();
    assert!(matches!(ingested, Ingested::Accepted { .. }));
}

#[tokio::test]
async fn an_endpoint_without_a_secret_refuses_with_unavailable_so_stripe_retries() {
    let repository: Arc<dyn InboxRepository> = Arc::new(MemoryInbox::default());
    let mut no_secret = settings(RetryPolicy::default());
    no_secret.transfers_secrets.clear();
    let inbox = Inbox::new(
        Arc::clone(&repository),
        Arc::new(FakeOwner::default()),
        Arc::new(payouts_runtime::SystemClock),
        no_secret,
    );
    let payload = transfer_event("evt_no_secret");
    let header = stripe::signature_header(&payload, TRANSFERS_SECRET, Utc::now().timestamp());
    let error = inbox
        .ingest(Endpoint::StripeTransfers, payload.as_slice(), Some(&header))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    assert!(
        error.message().contains("STRIPE_WEBHOOK_SECRET_TRANSFERS"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_types_and_other_modes_are_stored_and_acknowledged_without_dispatch() {
    on_both_stores("unknown", |repository| async move {
        let f = Fixture::new(repository, FakeOwner::default(), RetryPolicy::default());
        let unknown =
            serde_json::to_vec(&stripe::event("evt_unknown", "plan.created", "plan")).unwrap();
        let mut live = stripe::event("evt_live", "transfer.created", "transfer");
        live["livemode"] = serde_json::json!(true);
        let live = serde_json::to_vec(&live).unwrap();
        f.deliver(Endpoint::StripeSubscription, &unknown)
            .await
            .unwrap();
        f.deliver(Endpoint::StripeTransfers, &live).await.unwrap();
        f.inbox.process_due().await.unwrap();
        for (endpoint, id, outcome) in [
            (Endpoint::StripeSubscription, "evt_unknown", "not ours"),
            (Endpoint::StripeTransfers, "evt_live", "livemode"),
        ] {
            let stored = f.stored(endpoint, id).await;
            assert_eq!(stored.status, EventStatus::Completed);
            assert!(
                stored
                    .outcome
                    .as_deref()
                    .unwrap_or_default()
                    .contains(outcome),
                "{:?}",
                stored.outcome
            );
        }
        assert_eq!(f.owner.total_calls(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_that_cannot_arrive_on_an_endpoint_is_refused_there_and_nothing_is_stored() {
    on_both_stores("topology", |repository| async move {
        let f = Fixture::new(repository, FakeOwner::default(), RetryPolicy::default());
        let mut bank_payout = stripe::event("evt_injected_payout", "payout.paid", "payout");
        bank_payout["account"] = serde_json::json!("acct_victim");
        let bank_payout = serde_json::to_vec(&bank_payout).unwrap();
        let transfer = transfer_event("evt_platform_transfer");
        let unattached =
            serde_json::to_vec(&stripe::event("evt_no_account", "payout.failed", "payout"))
                .unwrap();
        // The subscription secret cannot inject a bank payout or a transfer; a Connect
        // endpoint never gets the platform's transfer events, nor an event without account.
        for (endpoint, payload, event_id, names) in [
            (
                Endpoint::StripeSubscription,
                &bank_payout,
                "evt_injected_payout",
                "/api/webhooks/stripe-payouts",
            ),
            (
                Endpoint::StripeSubscription,
                &transfer,
                "evt_platform_transfer",
                "/api/webhooks/stripe-transfers",
            ),
            (
                Endpoint::StripePayouts,
                &transfer,
                "evt_platform_transfer",
                "/api/webhooks/stripe-transfers",
            ),
            (
                Endpoint::StripePayouts,
                &unattached,
                "evt_no_account",
                "without account",
            ),
        ] {
            let error = f.deliver(endpoint, payload).await.unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidArgument, "{error}");
            assert!(error.message().contains(names), "{error}");
            assert!(
                f.repository
                    .get(endpoint, event_id)
                    .await
                    .unwrap()
                    .is_none(),
                "nothing stored"
            );
        }
        assert_eq!(f.inbox.process_due().await.unwrap(), 0);
        assert_eq!(f.owner.total_calls(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequential_duplicate_is_acknowledged_as_such_and_changes_nothing() {
    on_both_stores("duplicate", |repository| async move {
        let f = Fixture::new(repository, FakeOwner::default(), RetryPolicy::default());
        let payload = transfer_event("evt_dup");
        f.deliver(Endpoint::StripeTransfers, &payload)
            .await
            .unwrap();
        f.inbox.process_due().await.unwrap();
        let before = f.stored(Endpoint::StripeTransfers, "evt_dup").await;
        let again = f
            .deliver(Endpoint::StripeTransfers, &payload)
            .await
            .unwrap();
        assert!(matches!(again, Ingested::Duplicate { .. }));
        assert_eq!(f.stored(Endpoint::StripeTransfers, "evt_dup").await, before);
        f.inbox.process_due().await.unwrap();
        assert_eq!(f.owner.calls("evt_dup"), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_deliveries_of_one_event_are_processed_once() {
    on_both_stores("fifty", |repository| async move {
        let f = Fixture::new(repository, FakeOwner::default(), RetryPolicy::default());
        let payload = transfer_event("evt_fifty");
        let header = f.signed(&payload, TRANSFERS_SECRET);
        let replicas = [Arc::clone(&f.inbox), f.replica(), f.replica()];
        let deliveries: Vec<_> = (0..50)
            .map(|i| {
                let inbox = Arc::clone(&replicas[i % replicas.len()]);
                let (payload, header) = (payload.clone(), header.clone());
                tokio::spawn(async move {
                    inbox
                        .ingest(Endpoint::StripeTransfers, payload.as_slice(), Some(&header))
                        .await
                })
            })
            .collect();
        let mut accepted = 0;
        for delivery in deliveries {
            if let Ingested::Accepted { .. } = delivery.await.unwrap().unwrap() {
                accepted += 1;
            }
        }
        assert_eq!(
            accepted, 1,
            "one delivery stores the event, 49 are duplicates"
        );
        // Every replica's worker tries to process at once.
        let passes: Vec<_> = replicas
            .iter()
            .map(|inbox| {
                let inbox = Arc::clone(inbox);
                tokio::spawn(async move { inbox.process_due().await })
            })
            .collect();
        for pass in passes {
            pass.await.unwrap().unwrap();
        }
        assert_eq!(f.owner.calls("evt_fifty"), 1);
        assert_eq!(
            f.stored(Endpoint::StripeTransfers, "evt_fifty")
                .await
                .attempts,
            1
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_is_retried_with_backoff_until_it_succeeds() {
    on_both_stores("retried", |repository| async move {
        let policy = RetryPolicy::default();
        let f = Fixture::new(repository, FakeOwner::failing(2), policy.clone());
        f.deliver(Endpoint::StripeTransfers, &transfer_event("evt_retry"))
            .await
            .unwrap();

        f.inbox.process_due().await.unwrap();
        let first = f.stored(Endpoint::StripeTransfers, "evt_retry").await;
        assert_eq!((first.status, first.attempts), (EventStatus::Processing, 1));
        assert!(
            first
                .last_error
                .as_deref()
                .unwrap_or_default()
                .contains("owner refused")
        );
        assert_eq!(
            first.next_attempt_at,
            Some(f.clock.now() + policy.backoff(1))
        );

        // Not before the backoff has passed.
        f.clock.advance(policy.backoff(1) - Duration::seconds(1));
        assert_eq!(f.inbox.process_due().await.unwrap(), 0);
        f.clock.advance(Duration::seconds(1));
        assert_eq!(f.inbox.process_due().await.unwrap(), 1);
        f.clock.advance(policy.backoff(2));
        assert_eq!(f.inbox.process_due().await.unwrap(), 1);

        let done = f.stored(Endpoint::StripeTransfers, "evt_retry").await;
        assert_eq!((done.status, done.attempts), (EventStatus::Completed, 3));
        assert_eq!(f.owner.calls("evt_retry"), 3);
    })
    .await;
}

async fn park(f: &Fixture, event_id: &str, policy: &RetryPolicy) {
    f.deliver(Endpoint::StripeTransfers, &transfer_event(event_id))
        .await
        .unwrap();
    for attempt in 1..=policy.max_attempts {
        assert_eq!(f.inbox.process_due().await.unwrap(), 1, "attempt {attempt}");
        f.clock.advance(policy.max_delay);
    }
    let parked = f.stored(Endpoint::StripeTransfers, event_id).await;
    assert_eq!(parked.status, EventStatus::Failed);
    assert!(parked.failed_at.is_some());
    assert_eq!(
        f.inbox.process_due().await.unwrap(),
        0,
        "a parked event is not retried by itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_last_attempt_an_event_is_parked_and_an_admin_can_retry_it() {
    on_both_stores("parked", |repository| async move {
        let policy = RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        };
        let f = Fixture::new(repository, FakeOwner::failing(3), policy.clone());
        park(&f, "evt_parked", &policy).await;
        assert_eq!(f.repository.statistics().await.unwrap().failed, 1);

        let retried = f
            .inbox
            .retry(None, "evt_parked", "admin:alice")
            .await
            .unwrap();
        assert_eq!(retried.len(), 1);
        assert_eq!(f.inbox.process_due().await.unwrap(), 1);
        assert_eq!(
            f.stored(Endpoint::StripeTransfers, "evt_parked")
                .await
                .status,
            EventStatus::Completed
        );

        // Only failed events can be retried; unknown ones are not found.
        let error = f
            .inbox
            .retry(None, "evt_parked", "admin:alice")
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::FailedPrecondition);
        let error = f
            .inbox
            .retry(None, "evt_nope", "admin:alice")
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::NotFound);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_of_a_failed_event_is_not_swallowed_as_a_duplicate() {
    on_both_stores("redelivered", |repository| async move {
        let policy = RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        };
        let f = Fixture::new(repository, FakeOwner::failing(2), policy.clone());
        park(&f, "evt_redelivered", &policy).await;

        let again = f
            .deliver(
                Endpoint::StripeTransfers,
                &transfer_event("evt_redelivered"),
            )
            .await
            .unwrap();
        assert!(matches!(again, Ingested::Accepted { .. }), "{again:?}");
        assert_eq!(f.inbox.process_due().await.unwrap(), 1);
        let done = f.stored(Endpoint::StripeTransfers, "evt_redelivered").await;
        assert_eq!(done.status, EventStatus::Completed);
        assert_eq!(done.deliveries, 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_processing_is_taken_over_and_the_event_is_processed_once() {
    on_both_stores("killed", |repository| async move {
        let policy = RetryPolicy::default();
        let f = Fixture::new(repository, FakeOwner::default(), policy.clone());
        f.deliver(Endpoint::StripeTransfers, &transfer_event("evt_killed"))
            .await
            .unwrap();

        // Worker A claims the event and dies before processing it.
        let claimed_by_a = f.inbox.claim_next().await.unwrap();
        assert!(claimed_by_a.is_some());
        let survivor = f.replica();
        assert_eq!(
            survivor.process_due().await.unwrap(),
            0,
            "the lease holds while it lasts"
        );

        // When the lease runs out, worker B takes over and processes it.
        f.clock.advance(policy.lease);
        assert_eq!(survivor.process_due().await.unwrap(), 1);
        assert_eq!(f.owner.calls("evt_killed"), 1);
        let done = f.stored(Endpoint::StripeTransfers, "evt_killed").await;
        assert_eq!(done.status, EventStatus::Completed);

        // The dead worker waking up late is refused before it calls the owner: its claim is
        // stale, so the owner was called exactly once.
        let late = f.inbox.process_claimed(claimed_by_a.unwrap()).await;
        assert_eq!(late.unwrap_err().kind(), ErrorKind::Conflict);
        assert_eq!(
            f.owner.calls("evt_killed"),
            1,
            "the stale claim never reached the owner"
        );
        assert_eq!(
            f.stored(Endpoint::StripeTransfers, "evt_killed").await,
            done
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_work_and_each_event_is_processed_once() {
    on_both_stores("replicas", |repository| async move {
        let f = Fixture::new(repository, FakeOwner::default(), RetryPolicy::default());
        for i in 0..40 {
            f.deliver(
                Endpoint::StripeTransfers,
                &transfer_event(&format!("evt_many_{i}")),
            )
            .await
            .unwrap();
        }
        let replicas = [Arc::clone(&f.inbox), f.replica(), f.replica()];
        loop {
            let passes: Vec<_> = replicas
                .iter()
                .map(|inbox| {
                    let inbox = Arc::clone(inbox);
                    tokio::spawn(async move { inbox.process_due().await.unwrap() })
                })
                .collect();
            let mut claimed = 0;
            for pass in passes {
                claimed += pass.await.unwrap();
            }
            if claimed == 0 {
                break;
            }
        }
        assert_eq!(f.owner.total_calls(), 40);
        for i in 0..40 {
            assert_eq!(f.owner.calls(&format!("evt_many_{i}")), 1);
        }
        assert_eq!(f.repository.statistics().await.unwrap().completed, 40);
    })
    .await;
}

#[tokio::test]
async fn the_worker_loop_processes_new_deliveries_promptly_and_stops_on_shutdown() {
    let repository: Arc<dyn InboxRepository> = Arc::new(MemoryInbox::default());
    let owner = Arc::new(FakeOwner::default());
    let inbox = Arc::new(Inbox::new(
        Arc::clone(&repository),
        Arc::clone(&owner) as Arc<dyn Dispatcher>,
        Arc::new(payouts_runtime::SystemClock),
        settings(RetryPolicy::default()),
    ));
    let (shutdown, trigger) = payouts_runtime::shutdown::Shutdown::manual();
    let worker = tokio::spawn(Arc::clone(&inbox).run_worker(shutdown));
    let payload = transfer_event("evt_loop");
    let header = stripe::signature_header(&payload, TRANSFERS_SECRET, Utc::now().timestamp());
    inbox
        .ingest(Endpoint::StripeTransfers, payload.as_slice(), Some(&header))
        .await
        .unwrap();
    for _ in 0..3000 {
        if owner.calls("evt_loop") == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(owner.calls("evt_loop"), 1);
    trigger.trigger();
    tokio::time::timeout(std::time::Duration::from_secs(5), worker)
        .await
        .unwrap()
        .unwrap();
}

/// A store that cannot store anything (MongoDB down).
struct BrokenStore;

#[async_trait]
impl InboxRepository for BrokenStore {
    async fn insert_new(
        &self,
        _event: InboxEvent,
    ) -> Result<payouts_webhooks::store::Inserted, payouts_runtime::ServiceError> {
        Err(payouts_runtime::ServiceError::unavailable(
            "store unavailable",
            anyhow_error(),
        ))
    }
    async fn get(
        &self,
        _endpoint: Endpoint,
        _event_id: &str,
    ) -> Result<Option<InboxEvent>, payouts_runtime::ServiceError> {
        Err(payouts_runtime::ServiceError::unavailable(
            "store unavailable",
            anyhow_error(),
        ))
    }
    async fn due(
        &self,
        _now: chrono::DateTime<Utc>,
        _limit: usize,
    ) -> Result<Vec<InboxEvent>, payouts_runtime::ServiceError> {
        Ok(Vec::new())
    }
    async fn replace(
        &self,
        _event: &InboxEvent,
        _expected_version: i64,
    ) -> Result<(), payouts_runtime::ServiceError> {
        Err(payouts_runtime::ServiceError::unavailable(
            "store unavailable",
            anyhow_error(),
        ))
    }
    async fn statistics(
        &self,
    ) -> Result<payouts_webhooks::domain::Statistics, payouts_runtime::ServiceError> {
        Ok(payouts_webhooks::domain::Statistics::default())
    }
    async fn list(
        &self,
        _status: Option<EventStatus>,
        _after: Option<(chrono::DateTime<Utc>, String)>,
        _limit: usize,
    ) -> Result<Vec<InboxEvent>, payouts_runtime::ServiceError> {
        Ok(Vec::new())
    }
}

fn anyhow_error() -> std::io::Error {
    std::io::Error::other("connection refused")
}

#[tokio::test]
async fn a_delivery_that_cannot_be_stored_is_not_acknowledged() {
    let f = Fixture::new(
        Arc::new(BrokenStore),
        FakeOwner::default(),
        RetryPolicy::default(),
    );
    let error = f
        .deliver(Endpoint::StripeTransfers, &transfer_event("evt_unstored"))
        .await
        .unwrap_err();
    // UNAVAILABLE becomes 503 at the gateway, so Stripe delivers the event again later.
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    assert_eq!(error.message(), "store unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_owner_never_lets_a_second_replica_dispatch_an_event_twice() {
    on_both_stores("slow_owner", |repository| async move {
        let policy = RetryPolicy::default();
        let f = Fixture::new(repository, FakeOwner::default(), policy.clone());
        for i in 1..=3 {
            f.deliver(
                Endpoint::StripeTransfers,
                &transfer_event(&format!("evt_slow_{i}")),
            )
            .await
            .unwrap();
        }
        // Each dispatch takes 35 s of a 60 s lease; while the owner handles the second event,
        // another replica claims the next due event (70 s after the start). Had the first
        // worker claimed the whole batch up front, the third event's lease would have run out
        // by then: the other replica would take it, and the first would dispatch it again.
        *f.owner.slowness.lock().unwrap() = Some((f.clock.clone(), Duration::seconds(35)));
        *f.owner.interleave.lock().unwrap() = Some(("evt_slow_2".to_owned(), f.replica()));
        assert_eq!(
            f.inbox.process_due().await.unwrap(),
            2,
            "the other replica took one"
        );
        for i in 1..=3 {
            let id = format!("evt_slow_{i}");
            assert_eq!(f.owner.calls(&id), 1, "{id} dispatched once");
            assert_eq!(
                f.stored(Endpoint::StripeTransfers, &id).await.status,
                EventStatus::Completed
            );
        }
    })
    .await;
}

fn refund_event(id: &str) -> Vec<u8> {
    serde_json::to_vec(&stripe::event(id, "charge.refunded", "charge")).unwrap()
}

/// Runs the worker's passes until nothing more is due at the clock's time.
async fn drain(f: &Fixture) {
    while f.inbox.process_due().await.unwrap() > 0 {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_down_longer_than_the_old_parking_window_never_parks_the_event() {
    on_both_stores("outage", |repository| async move {
        let policy = RetryPolicy::default();
        for code in [
            tonic::Code::Unavailable,
            tonic::Code::DeadlineExceeded,
            tonic::Code::ResourceExhausted,
        ] {
            let f = Fixture::new(
                Arc::clone(&repository),
                FakeOwner::default(),
                policy.clone(),
            );
            let id = format!("evt_outage_{code:?}");
            f.owner.set_down(Some(code));
            f.deliver(Endpoint::StripeSubscription, &refund_event(&id))
                .await
                .unwrap();
            let outage_began = f.clock.now();
            // Two hours of outage: the old rule (5 tries, 30 s doubling) parked it after
            // about 7.5 minutes. Every due try is made.
            while f.clock.now() < outage_began + Duration::hours(2) {
                drain(&f).await;
                let stored = f.stored(Endpoint::StripeSubscription, &id).await;
                assert_eq!(stored.status, EventStatus::Processing, "{code:?} parked it");
                let due = stored.next_attempt_at.unwrap();
                assert!(due - f.clock.now() <= policy.max_wait_delay, "{code:?}");
                f.clock.set(due);
            }
            let waiting = f.stored(Endpoint::StripeSubscription, &id).await;
            assert!(waiting.attempts > 20, "{} tries", waiting.attempts);
            assert_eq!(waiting.refusals, 0);
            let wait = waiting.waiting.clone().expect("recorded as waiting");
            assert_eq!((wait.owner, wait.since), (Owner::Disputes, outage_began));
            let stats = f.repository.statistics().await.unwrap();
            assert_eq!((stats.waiting, stats.failed), (1, 0), "{code:?}");
            assert_eq!(stats.waiting_for.get("disputes"), Some(&1));
            assert_eq!(f.owner.alert_calls.load(Ordering::SeqCst), 0);

            // The owner is back: applied at its next try (at most 5 minutes later), once.
            f.owner.set_down(None);
            let calls = f.owner.calls(&id);
            f.clock.set(waiting.next_attempt_at.unwrap());
            drain(&f).await;
            let done = f.stored(Endpoint::StripeSubscription, &id).await;
            assert_eq!(done.status, EventStatus::Completed, "{code:?}");
            assert_eq!(done.waiting, None);
            assert_eq!(f.owner.calls(&id), calls + 1);
            assert_eq!(f.repository.statistics().await.unwrap().waiting, 0);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_definite_refusal_still_parks_after_max_attempts_even_between_outages() {
    on_both_stores("refusal", |repository| async move {
        let policy = RetryPolicy::default();
        let f = Fixture::new(repository, FakeOwner::failing(100), policy.clone());
        f.deliver(Endpoint::StripeTransfers, &transfer_event("evt_refused"))
            .await
            .unwrap();
        // Refused, then an outage (waits do not count), then refused until parked.
        for refusal in 1..policy.max_attempts {
            drain(&f).await;
            let stored = f.stored(Endpoint::StripeTransfers, "evt_refused").await;
            assert_eq!(
                (stored.status, stored.refusals),
                (EventStatus::Processing, refusal)
            );
            f.owner.set_down(Some(tonic::Code::Unavailable));
            f.clock.set(stored.next_attempt_at.unwrap());
            drain(&f).await;
            let waiting = f.stored(Endpoint::StripeTransfers, "evt_refused").await;
            assert_eq!(waiting.refusals, refusal, "a wait is not a refusal");
            assert!(waiting.waiting.is_some());
            f.owner.set_down(None);
            f.clock.set(waiting.next_attempt_at.unwrap());
        }
        drain(&f).await;
        let parked = f.stored(Endpoint::StripeTransfers, "evt_refused").await;
        assert_eq!(parked.status, EventStatus::Failed);
        assert_eq!(parked.refusals, policy.max_attempts);
        assert_eq!(parked.waiting, None);
        assert_eq!(parked.alert, None, "raised at once and confirmed");
        assert_eq!(f.owner.alerts(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_events_alert_is_owed_until_notifications_confirm_it_and_raised_once() {
    on_both_stores("owed_alert", |repository| async move {
        let policy = RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        };
        let f = Fixture::new(repository, FakeOwner::failing(2), policy.clone());
        f.owner.notifications_down.store(true, Ordering::SeqCst);
        park(&f, "evt_alert", &policy).await;
        let parked = f.stored(Endpoint::StripeTransfers, "evt_alert").await;
        assert!(parked.alert.is_some(), "the alert is owed");
        assert_eq!(f.repository.statistics().await.unwrap().alerts_owed, 1);
        assert_eq!(f.owner.alerts(), 0);

        // Notifications stay down for an hour: the alert is tried again, capped backoff.
        let parked_at = f.clock.now();
        while f.clock.now() < parked_at + Duration::hours(1) {
            drain(&f).await;
            let stored = f.stored(Endpoint::StripeTransfers, "evt_alert").await;
            let due = stored.alert.expect("still owed").due_at;
            assert!(due - f.clock.now() <= policy.max_wait_delay);
            f.clock.set(due);
        }
        let tries = f.owner.alert_calls.load(Ordering::SeqCst);
        assert!(tries > 10, "{tries} tries");

        // A crash between parking and raising is the same: the owed alert is on the event,
        // so a fresh replica (nothing in memory) raises it once notifications are back.
        f.owner.notifications_down.store(false, Ordering::SeqCst);
        let fresh = f.replica();
        assert_eq!(
            fresh.process_due().await.unwrap(),
            0,
            "no event is processed"
        );
        assert_eq!(f.owner.alerts(), 1);
        let raised = f.stored(Endpoint::StripeTransfers, "evt_alert").await;
        assert_eq!(raised.alert, None);
        assert_eq!(
            raised.status,
            EventStatus::Failed,
            "still parked, still retryable"
        );
        assert_eq!(f.repository.statistics().await.unwrap().alerts_owed, 0);

        // Nothing is owed any more: no further tries, however long.
        f.clock.advance(Duration::days(1));
        drain(&f).await;
        assert_eq!(f.owner.alert_calls.load(Ordering::SeqCst), tries + 1);
        assert_eq!(f.owner.alerts(), 1);
    })
    .await;
}
