//! The payout flow through its public API against a fake Stripe over real HTTP, on the
//! embedded store and on MongoDB: at most one transfer per attempt, unknown outcomes that are
//! never failures, retries, owed side effects that survive failures, the re-check before
//! money moves, the webhook-driven lifecycle, late and duplicate events.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use payouts_payouts::domain::{Account, StripeAccountStatus};
use payouts_payouts::events::Event;
use payouts_payouts::flow::PayoutFlow;
use payouts_payouts::payout::{
    MAX_RETRIES, MAX_WORK_ATTEMPTS, OwedAlert, Payout, PayoutStatus, RETRY_BASE, retry_delay,
};
use payouts_payouts::ports::{
    Admission, AlertsPort, ApprovalsPort, LimitsPort, Notifier, Recheck, ReleaseAnswer, UserNotice,
};
use payouts_payouts::store::{
    AccountRepository, Inserted, MemoryAccounts, MemoryPause, MemoryPayouts, MongoAccounts,
    MongoPause, MongoPayouts, PauseRepository, PayoutRepository,
};
use payouts_payouts::stripe::{StripeApi, StripeClient};
use payouts_proto::limits::v1::LimitDecision;
use payouts_runtime::clock::ManualClock;
use payouts_runtime::ids::SequentialIds;
use payouts_runtime::testing::fake_stripe::{Behaviour, FakeStripe};
use payouts_runtime::testing::stripe;
use payouts_runtime::{Clock as _, ErrorKind, Money, Secret, ServiceError};
use serde_json::json;

/// Limits that admit everything (optionally for approval), answer re-checks as told, and
/// record releases; releases fail while `release_failures` lasts.
#[derive(Default)]
struct FakeLimits {
    requires_approval: bool,
    refuse: bool,
    /// `None`: payable. `Some(Ok(reason))`: not payable. `Some(Err(()))`: unavailable.
    recheck: Mutex<Option<Result<String, ()>>>,
    rechecks: AtomicUsize,
    release_failures: AtomicUsize,
    /// The limits no longer hold the reservations (pruned): releases answer "not found".
    reservations_pruned: std::sync::atomic::AtomicBool,
    /// (payout id, total released, sequence) of every release that got through.
    released: Mutex<Vec<(String, i64, i64)>>,
    /// The account creation time each reservation was told.
    told_account_created_at: Mutex<Vec<Option<DateTime<Utc>>>>,
}

#[async_trait]
impl LimitsPort for FakeLimits {
    async fn reserve(
        &self,
        _user_id: &str,
        _payout_id: &str,
        _amount: &Money,
        _requested_at: DateTime<Utc>,
        account_created_at: Option<DateTime<Utc>>,
    ) -> Result<Admission, ServiceError> {
        self.told_account_created_at
            .lock()
            .unwrap()
            .push(account_created_at);
        Ok(Admission {
            decision: LimitDecision {
                allowed: !self.refuse,
                requires_approval: self.requires_approval,
                reason: if self.refuse {
                    "Daily payout limit reached".to_owned()
                } else if self.requires_approval {
                    "Amount exceeds $5,000.00".to_owned()
                } else {
                    String::new()
                },
                ..Default::default()
            },
            reserved: !self.refuse,
        })
    }

    async fn release(
        &self,
        _user_id: &str,
        payout_id: &str,
        total_released: &Money,
        sequence: i64,
        _reason: &str,
    ) -> Result<ReleaseAnswer, ServiceError> {
        if self
            .release_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(ServiceError::unavailable(
                "the limits service is unavailable",
                anyhow::anyhow!("down"),
            ));
        }
        if self.reservations_pruned.load(Ordering::SeqCst) {
            return Ok(ReleaseAnswer {
                applied: false,
                found: false,
                held_cents: 0,
            });
        }
        self.released
            .lock()
            .unwrap()
            .push((payout_id.to_owned(), total_released.cents, sequence));
        Ok(ReleaseAnswer {
            applied: true,
            found: true,
            held_cents: 0,
        })
    }

    async fn recheck(&self, _user_id: &str, _payout_id: &str) -> Result<Recheck, ServiceError> {
        self.rechecks.fetch_add(1, Ordering::SeqCst);
        match self.recheck.lock().unwrap().clone() {
            None => Ok(Recheck::Payable),
            Some(Ok(reason)) => Ok(Recheck::NotPayable { reason }),
            Some(Err(())) => Err(ServiceError::unavailable(
                "the limits service is unavailable",
                anyhow::anyhow!("down"),
            )),
        }
    }
}

impl FakeLimits {
    fn released(&self) -> Vec<(String, i64, i64)> {
        self.released.lock().unwrap().clone()
    }

    fn set_recheck(&self, answer: Option<Result<String, ()>>) {
        *self.recheck.lock().unwrap() = answer;
    }
}

/// An approval queue that records what it was handed, failing while `failures` lasts.
#[derive(Default)]
struct Queue {
    queued: Mutex<Vec<String>>,
    failures: AtomicUsize,
}

#[async_trait]
impl ApprovalsPort for Queue {
    async fn queue(&self, payout: &Payout) -> Result<(), ServiceError> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(ServiceError::unavailable(
                "the approvals service is unavailable",
                anyhow::anyhow!("down"),
            ));
        }
        self.queued.lock().unwrap().push(payout.id.clone());
        Ok(())
    }
}

#[derive(Default)]
struct Inbox {
    notices: Mutex<Vec<UserNotice>>,
}

impl Notifier for Inbox {
    /// Stored once per dedupe key, as the notifications service stores them.
    fn notify(&self, notice: UserNotice) {
        let mut notices = self.notices.lock().unwrap();
        if !notices.iter().any(|n| n.dedupe_key == notice.dedupe_key) {
            notices.push(notice);
        }
    }
}

impl Inbox {
    fn kinds(&self) -> Vec<&'static str> {
        self.notices
            .lock()
            .unwrap()
            .iter()
            .map(|n| n.kind)
            .collect()
    }
}

/// The critical alerts raised.
#[derive(Default)]
struct Alerts {
    raised: Mutex<Vec<OwedAlert>>,
}

#[async_trait]
impl AlertsPort for Alerts {
    async fn raise(&self, alert: &OwedAlert, _data_json: String) -> Result<(), ServiceError> {
        self.raised.lock().unwrap().push(alert.clone());
        Ok(())
    }
}

impl Alerts {
    fn kinds(&self) -> Vec<String> {
        self.raised
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.kind.clone())
            .collect()
    }
}

struct Fixture {
    flow: Arc<PayoutFlow>,
    stripe: FakeStripe,
    limits: Arc<FakeLimits>,
    queue: Arc<Queue>,
    inbox: Arc<Inbox>,
    alerts: Arc<Alerts>,
    clock: ManualClock,
}

#[derive(Clone)]
struct Stores {
    accounts: Arc<dyn AccountRepository>,
    payouts: Arc<dyn PayoutRepository>,
    pause: Arc<dyn PauseRepository>,
}

fn flow(
    stores: &Stores,
    stripe: Option<Arc<dyn StripeApi>>,
    limits: Arc<FakeLimits>,
    queue: Arc<Queue>,
    inbox: Arc<Inbox>,
    alerts: Arc<Alerts>,
    clock: &ManualClock,
) -> PayoutFlow {
    PayoutFlow {
        accounts: Arc::clone(&stores.accounts),
        payouts: Arc::clone(&stores.payouts),
        pause: Arc::clone(&stores.pause),
        limits,
        approvals: queue,
        notifier: inbox,
        alerts,
        stripe,
        clock: Arc::new(clock.clone()),
        ids: Arc::new(SequentialIds::default()),
        poll_interval: std::time::Duration::from_millis(10),
        retry_base: RETRY_BASE,
        unknown_alert_after: Duration::minutes(30),
        bank_attribution_alert_after: ATTRIBUTION_ALERT_AFTER,
    }
}

async fn fixture(stores: &Stores, limits: FakeLimits) -> Fixture {
    let stripe_fake = FakeStripe::start().await;
    let clock = ManualClock::new(payouts_runtime::store::store_precision(Utc::now()));
    let limits = Arc::new(limits);
    let queue = Arc::new(Queue::default());
    let inbox = Arc::new(Inbox::default());
    let alerts = Arc::new(Alerts::default());
    let client = StripeClient::new(&Secret::new("sk_test_fake"), stripe_fake.url()).unwrap();
    let flow = Arc::new(flow(
        stores,
        Some(Arc::new(client)),
        Arc::clone(&limits),
        Arc::clone(&queue),
        Arc::clone(&inbox),
        Arc::clone(&alerts),
        &clock,
    ));
    // Registered without a Stripe status: the first request asks Stripe for it.
    let account = Account {
        user_id: "creator".to_owned(),
        stripe_account_id: "acct_creator".to_owned(),
        account_created_at: Utc::now() - Duration::days(400),
        stripe_status: None,
        bank_payments: Vec::new(),
        pending_bank_payouts: Vec::new(),
        version: 1,
    };
    stores.accounts.put(&account, None).await.unwrap();
    Fixture {
        flow,
        stripe: stripe_fake,
        limits,
        queue,
        inbox,
        alerts,
        clock,
    }
}

async fn on_both_stores<F, Fut>(name: &str, scenario: F)
where
    F: Fn(Stores) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    scenario(Stores {
        accounts: Arc::new(MemoryAccounts::default()),
        payouts: Arc::new(MemoryPayouts::default()),
        pause: Arc::new(MemoryPause::default()),
    })
    .await;
    let database = payouts_runtime::testing::mongo_database(name).await;
    scenario(Stores {
        accounts: Arc::new(MongoAccounts::open(&database).await.unwrap()),
        payouts: Arc::new(MongoPayouts::open(&database).await.unwrap()),
        pause: Arc::new(MongoPause::open(&database)),
    })
    .await;
}

impl Fixture {
    async fn request(&self, key: &str, cents: i64) -> Result<Option<Payout>, ServiceError> {
        Ok(self
            .flow
            .request("creator", Money::usd(cents), key)
            .await?
            .payout)
    }

    async fn stored(&self, payout_id: &str) -> Payout {
        self.flow.payouts.get(payout_id).await.unwrap().unwrap()
    }

    /// Time passes and the worker runs (as often as it takes to drain what is due now).
    async fn after(&self, by: Duration) {
        self.clock.advance(by);
        for _ in 0..5 {
            if self.flow.run_due().await.unwrap() == 0 {
                break;
            }
        }
    }

    /// A Stripe event about transfer `transfer_id` of `payout`, with `changes` applied to it.
    async fn transfer_event(
        &self,
        id: &str,
        event_type: &str,
        payout: &Payout,
        transfer_id: &str,
        changes: serde_json::Value,
    ) -> bool {
        let mut event = stripe::event(id, event_type, "transfer");
        let transfer = &mut event["data"]["object"];
        transfer["id"] = json!(transfer_id);
        transfer["amount"] = json!(payout.amount.cents);
        transfer["metadata"] =
            json!({ "payout_id": payout.id, "attempt": payout.attempt.to_string() });
        transfer["transfer_group"] = json!(format!("payout_{}", payout.id));
        for (key, value) in changes.as_object().unwrap() {
            transfer[key] = value.clone();
        }
        self.apply(id, event_type, "", &event).await
    }

    async fn apply(
        &self,
        id: &str,
        event_type: &str,
        account: &str,
        event: &serde_json::Value,
    ) -> bool {
        self.try_apply(id, event_type, account, event)
            .await
            .unwrap()
    }

    async fn try_apply(
        &self,
        id: &str,
        event_type: &str,
        account: &str,
        event: &serde_json::Value,
    ) -> Result<bool, ServiceError> {
        let payload = serde_json::to_vec(event).unwrap();
        let created = event["created"].as_i64().unwrap_or(0);
        let parsed = Event::parse(id, event_type, account, created, &payload).unwrap();
        Ok(self.flow.handle_event(&parsed).await?.applied)
    }

    /// `payout.paid` of a bank payout on the creator's connected account.
    async fn bank_payout_event(
        &self,
        id: &str,
        event_type: &str,
        bank_payout: &serde_json::Value,
    ) -> bool {
        let mut event = stripe::event(id, event_type, "payout");
        event["account"] = json!("acct_creator");
        event["data"]["object"] = bank_payout.clone();
        self.apply(id, event_type, "acct_creator", &event).await
    }
}

fn trail(payout: &Payout) -> Vec<(Option<PayoutStatus>, PayoutStatus)> {
    payout
        .audit_log
        .iter()
        .map(|e| (e.from_status, e.to_status))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_payout_transfers_once_and_completes_from_webhooks() {
    on_both_stores("normal", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        let payout = f.request("key-1", 1_000_00).await.unwrap().unwrap();
        assert_eq!(payout.status, PayoutStatus::Processing);
        let transfers = f.stripe.transfers();
        assert_eq!(transfers.len(), 1);
        assert_eq!(transfers[0]["amount"], 1_000_00);
        // The limits were told the account's age: they need not ask it back.
        let account = stores.accounts.get("creator").await.unwrap().unwrap();
        assert_eq!(
            *f.limits.told_account_created_at.lock().unwrap(),
            vec![Some(account.account_created_at)]
        );
        assert_eq!(transfers[0]["destination"], "acct_creator");
        assert_eq!(transfers[0]["metadata"]["payout_id"], payout.id.as_str());
        assert_eq!(transfers[0]["metadata"]["attempt"], "0");
        assert_eq!(
            transfers[0]["transfer_group"],
            format!("payout_{}", payout.id)
        );
        let transfer_id = transfers[0]["id"].as_str().unwrap();
        assert_eq!(
            payout.destination_payment_id.as_deref(),
            transfers[0]["destination_payment"].as_str()
        );
        assert_eq!(
            f.limits.rechecks.load(Ordering::SeqCst),
            1,
            "re-checked once"
        );

        // Design §8 scenario 1: transfer.created, then transfer.paid.
        assert!(
            !f.transfer_event(
                "evt_created",
                "transfer.created",
                &payout,
                transfer_id,
                json!({})
            )
            .await,
            "already processing"
        );
        assert!(
            f.transfer_event("evt_paid", "transfer.paid", &payout, transfer_id, json!({}))
                .await
        );
        let done = f.stored(&payout.id).await;
        assert_eq!(done.status, PayoutStatus::Completed);
        assert!(done.completed_at.is_some());
        assert_eq!(f.inbox.kinds(), vec!["payout_completed"]);
        assert_eq!(
            trail(&done),
            vec![
                (Some(PayoutStatus::Admitting), PayoutStatus::Pending),
                (Some(PayoutStatus::Pending), PayoutStatus::Processing),
                (Some(PayoutStatus::Processing), PayoutStatus::Completed),
            ]
        );
        assert_eq!(
            done.audit_log[2].stripe_event_id.as_deref(),
            Some("evt_paid")
        );

        // A duplicate and a late event change nothing.
        assert!(
            !f.transfer_event("evt_paid", "transfer.paid", &payout, transfer_id, json!({}))
                .await
        );
        assert!(
            !f.transfer_event(
                "evt_created_late",
                "transfer.created",
                &payout,
                transfer_id,
                json!({})
            )
            .await
        );
        assert_eq!(f.stored(&payout.id).await, done);
        // The worker projects the trail into payoutAuditLogs.
        f.after(Duration::seconds(1)).await;
        assert_eq!(
            f.flow.payouts.projected_audit(&payout.id).await.unwrap(),
            done.audit_log
        );
        assert!(f.limits.released().is_empty(), "money left: no quota back");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_returns_the_same_payout_and_another_amount_is_refused() {
    on_both_stores("idempotency", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        let first = f.request("same-key", 500_00).await.unwrap().unwrap();
        let again = f.request("same-key", 500_00).await.unwrap().unwrap();
        assert_eq!(again.id, first.id);
        let error = f.request("same-key", 600_00).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::AlreadyExists);
        assert_eq!(f.stripe.transfers().len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_key_while_the_first_request_is_admitting_answers_the_real_decision() {
    on_both_stores("admitting_key", |stores| async move {
        // The first request stored its payout and died before the limits answered.
        let held = FakeLimits {
            requires_approval: true,
            ..FakeLimits::default()
        };
        let f = fixture(&stores, held).await;
        let stranded = Payout::requested(
            "payout_stranded".to_owned(),
            "creator",
            Money::usd(7_000_00),
            "stranded-key",
            "acct_creator",
            f.clock.now(),
            Duration::minutes(1),
        );
        assert_eq!(
            f.flow.payouts.insert(&stranded).await.unwrap(),
            Inserted::New
        );
        // The retry resumes the admission and answers what the limits decided (held for
        // approval), not a hard-coded "allowed".
        let answer = f
            .flow
            .request("creator", Money::usd(7_000_00), "stranded-key")
            .await
            .unwrap();
        assert!(answer.decision.requires_approval);
        assert_eq!(answer.decision.reason, "Amount exceeds $5,000.00");
        let payout = answer.payout.unwrap();
        assert_eq!(payout.id, "payout_stranded");
        assert_eq!(payout.status, PayoutStatus::PendingApproval);
        assert_eq!(
            f.queue.queued.lock().unwrap().clone(),
            vec!["payout_stranded"]
        );
        // Asked again later, the stored decision is the answer.
        let again = f
            .flow
            .request("creator", Money::usd(7_000_00), "stranded-key")
            .await
            .unwrap();
        assert!(again.decision.requires_approval);
        assert!(f.stripe.transfers().is_empty());

        // A stranded payout the limits refuse disappears, and the retry says so.
        let refusing = fixture_with(
            &stores,
            &f,
            FakeLimits {
                refuse: true,
                ..FakeLimits::default()
            },
        );
        let stranded = Payout::requested(
            "payout_refused".to_owned(),
            "creator",
            Money::usd(100_00),
            "refused-key",
            "acct_creator",
            f.clock.now(),
            Duration::minutes(1),
        );
        refusing.payouts.insert(&stranded).await.unwrap();
        let answer = refusing
            .request("creator", Money::usd(100_00), "refused-key")
            .await
            .unwrap();
        assert_eq!(answer.payout, None);
        assert!(!answer.decision.allowed);
        assert_eq!(refusing.payouts.get("payout_refused").await.unwrap(), None);
    })
    .await;
}

/// Another flow on the same stores and Stripe, with other limits.
fn fixture_with(stores: &Stores, f: &Fixture, limits: FakeLimits) -> PayoutFlow {
    let client = StripeClient::new(&Secret::new("sk_test_fake"), f.stripe.url()).unwrap();
    let other = flow(
        stores,
        Some(Arc::new(client)),
        Arc::new(limits),
        Arc::new(Queue::default()),
        Arc::new(Inbox::default()),
        Arc::new(Alerts::default()),
        &f.clock,
    );
    // Its own ids, so they never collide with the first flow's.
    PayoutFlow {
        ids: Arc::new(payouts_runtime::UuidIds),
        ..other
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_reversal_whose_answer_was_lost_is_repeated_without_reversing_twice() {
    on_both_stores("reverse", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        let payout = f.request("key-rev", 1_000_00).await.unwrap().unwrap();
        let transfer_id = payout.stripe_transfer_id.clone().unwrap();
        let reversed = |f: &Fixture| {
            f.stripe
                .transfers()
                .into_iter()
                .find(|t| t["id"] == transfer_id.as_str())
                .unwrap()["amount_reversed"]
                .as_i64()
                .unwrap()
        };
        // Stripe reverses, and its answer is lost: the intent is unknown, nothing else is
        // recorded.
        f.stripe.then(Behaviour::LoseResponse);
        let error = f
            .flow
            .request_reversal(
                &payout.id,
                "confirm-1",
                300_00,
                "refund clawback",
                "admin:ops",
            )
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unavailable, "{}", error.message());
        assert!(
            error.message().contains("-reversal-1"),
            "{}",
            error.message()
        );
        assert_eq!(reversed(&f), 300_00, "Stripe did reverse");
        let unknown = f.stored(&payout.id).await;
        assert_eq!(unknown.amount_reversed_cents, 0);
        assert_eq!(unknown.reversal_intents.len(), 1);
        assert_eq!(unknown.reversal_intents[0].state.as_str(), "unknown");
        // The same request again: found in the transfer's reversals, recorded once.
        let done = f
            .flow
            .request_reversal(
                &payout.id,
                "confirm-1",
                300_00,
                "refund clawback",
                "admin:ops",
            )
            .await
            .unwrap();
        assert_eq!(done.amount_reversed_cents, 300_00);
        assert_eq!(reversed(&f), 300_00, "never reversed twice");
        let entry = done.audit_log.last().unwrap();
        assert_eq!(entry.event_type, "transfer_reversed_by_admin");
        assert!(
            entry.reason.contains("asked by admin:ops"),
            "{}",
            entry.reason
        );
        let listed = f.stripe.reversals(&transfer_id);
        assert_eq!(listed.len(), 1);
        assert_eq!(
            listed[0]["metadata"]["payouts_reversal_intent"],
            done.reversal_intents[0].id.as_str()
        );
        assert_eq!(
            done.reversal_intents[0].state,
            payouts_payouts::payout::ReversalState::Succeeded {
                reversal_id: listed[0]["id"].as_str().unwrap().to_owned()
            }
        );
        // Asked once more, it answers the same outcome without asking Stripe to reverse.
        let again = f
            .flow
            .request_reversal(
                &payout.id,
                "confirm-1",
                300_00,
                "refund clawback",
                "admin:ops",
            )
            .await
            .unwrap();
        assert_eq!(again.amount_reversed_cents, 300_00);
        // The same key for another amount is refused, like a reused payout key.
        let error = f
            .flow
            .request_reversal(&payout.id, "confirm-1", 200_00, "x", "admin:ops")
            .await
            .unwrap_err();
        assert_eq!(
            error.kind(),
            ErrorKind::AlreadyExists,
            "{}",
            error.message()
        );
        // Bad amounts, missing notes and a missing key are refused before Stripe is asked.
        for (key, cents, notes) in [
            ("k2", 0, "x"),
            ("k3", 700_01, "x"),
            ("k4", 1, " "),
            (" ", 1, "x"),
        ] {
            let error = f
                .flow
                .request_reversal(&payout.id, key, cents, notes, "admin:ops")
                .await
                .unwrap_err();
            assert_eq!(
                error.kind(),
                ErrorKind::InvalidArgument,
                "{cents} {notes:?}"
            );
        }
        assert_eq!(reversed(&f), 300_00);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_stripe_response_is_recovered_by_lookup_and_makes_exactly_one_transfer() {
    on_both_stores("lost", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        f.stripe.then(Behaviour::LoseResponse);
        let payout = f.request("lost", 700_00).await.unwrap().unwrap();
        // The outcome is unknown: never failed, due again soon.
        assert_eq!(payout.status, PayoutStatus::Pending);
        assert!(payout.outcome_unknown);
        assert_eq!(f.stripe.transfers().len(), 1, "Stripe made the transfer");

        f.after(Duration::minutes(2)).await;
        let recovered = f.stored(&payout.id).await;
        assert_eq!(recovered.status, PayoutStatus::Processing);
        assert_eq!(
            recovered.stripe_transfer_id.as_deref(),
            f.stripe.transfers()[0]["id"].as_str()
        );
        assert!(!recovered.outcome_unknown);
        assert_eq!(f.stripe.transfers().len(), 1, "exactly one transfer");
        assert_eq!(
            f.stripe.create_calls(),
            1,
            "found by lookup, not made again"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_is_an_unknown_outcome_never_a_failure_and_never_gives_quota_back() {
    on_both_stores("unknown_5xx", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        // Stripe answers 500 and stores that answer under the key: every retry of the same
        // attempt gets the same 500 back, for as long as Stripe keeps the key.
        f.stripe.fail_next(500, "api_error");
        let payout = f.request("five-hundred", 400_00).await.unwrap().unwrap();
        assert_eq!(payout.status, PayoutStatus::Pending);
        assert!(payout.outcome_unknown);
        // Far more rounds than the retry budget of definite failures (3): still unknown.
        for _ in 0..(MAX_RETRIES + 3) {
            f.after(Duration::hours(1) + Duration::minutes(16)).await;
            let current = f.stored(&payout.id).await;
            assert_eq!(current.status, PayoutStatus::Pending);
            assert!(current.outcome_unknown);
            assert_eq!(
                (current.attempt, current.retry_count),
                (0, 0),
                "same attempt, same key"
            );
        }
        assert!(
            f.limits.released().is_empty(),
            "the quota is kept while unknown"
        );
        assert!(f.stripe.transfers().is_empty());
        assert!(f.inbox.kinds().is_empty(), "the user is not told it failed");
        // After the threshold an admin is alerted, once.
        assert_eq!(f.alerts.kinds(), vec!["payout_outcome_unknown".to_owned()]);
        // Stripe forgets the key after 24 hours; the lookup still finds nothing, so the same
        // attempt is sent again and goes through: one transfer, of attempt 0.
        f.stripe.forget_idempotency_keys();
        f.after(Duration::hours(2)).await;
        let done = f.stored(&payout.id).await;
        assert_eq!(done.status, PayoutStatus::Processing);
        assert_eq!(f.stripe.transfers().len(), 1);
        assert_eq!(f.stripe.transfers()[0]["metadata"]["attempt"], "0");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5xx_after_stripe_made_the_transfer_is_resolved_by_the_lookup() {
    on_both_stores("unknown_made", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        f.stripe.then(Behaviour::ErrorAfterCreate { status: 502 });
        let payout = f.request("made-then-502", 400_00).await.unwrap().unwrap();
        assert!(payout.outcome_unknown);
        assert_eq!(payout.status, PayoutStatus::Pending);
        f.after(Duration::minutes(2)).await;
        let found = f.stored(&payout.id).await;
        assert_eq!(found.status, PayoutStatus::Processing);
        assert_eq!(
            found.stripe_transfer_id.as_deref(),
            f.stripe.transfers()[0]["id"].as_str()
        );
        assert_eq!(f.stripe.transfers().len(), 1);
        assert!(f.limits.released().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_lookup_is_not_a_failure_and_consumes_no_attempt() {
    on_both_stores("lookup", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        f.stripe.then(Behaviour::LoseResponse);
        let payout = f.request("lookups", 300_00).await.unwrap().unwrap();
        for (status, code) in [
            (429, "rate_limit"),
            (500, "api_error"),
            (401, "api_key_invalid"),
        ] {
            f.stripe.fail_next_lookup(status, code);
            f.after(Duration::hours(2)).await;
            let current = f.stored(&payout.id).await;
            assert_eq!(
                current.status,
                PayoutStatus::Pending,
                "after a {status} lookup"
            );
            assert!(current.outcome_unknown);
            assert_eq!((current.attempt, current.retry_count), (0, 0));
        }
        assert_eq!(
            f.stripe.create_calls(),
            1,
            "nothing is created while the lookup fails"
        );
        f.after(Duration::hours(2)).await;
        let found = f.stored(&payout.id).await;
        assert_eq!(found.status, PayoutStatus::Processing);
        assert_eq!(f.stripe.transfers().len(), 1);
        assert!(f.limits.released().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definite_refusals_are_retried_on_the_spec_schedule_with_new_attempts() {
    on_both_stores("retry", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        // Design §8 scenario 2: insufficient funds, then a 429, then success.
        f.stripe.fail_next(400, "balance_insufficient");
        f.stripe.fail_next(429, "rate_limit");
        let payout = f.request("retry", 500_00).await.unwrap().unwrap();
        assert_eq!(
            (payout.status, payout.retry_count, payout.attempt),
            (PayoutStatus::Pending, 1, 1)
        );
        assert!(!payout.outcome_unknown, "a definite refusal is not unknown");
        assert_eq!(
            payout.next_retry_at,
            Some(f.clock.now() + retry_delay(RETRY_BASE, 1))
        );

        f.after(Duration::minutes(4)).await;
        assert_eq!(
            f.stored(&payout.id).await.retry_count,
            1,
            "not before 5 minutes"
        );
        f.after(Duration::minutes(1)).await;
        let second = f.stored(&payout.id).await;
        assert_eq!((second.retry_count, second.attempt), (2, 2));
        assert_eq!(
            second.next_retry_at,
            Some(f.clock.now() + Duration::minutes(10))
        );

        f.after(Duration::minutes(10)).await;
        let done = f.stored(&payout.id).await;
        assert_eq!(done.status, PayoutStatus::Processing);
        assert_eq!(f.stripe.transfers().len(), 1);
        assert_eq!(f.stripe.transfers()[0]["metadata"]["attempt"], "2");
        assert_eq!(f.stripe.create_calls(), 3, "one call per attempt");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_refusal_fails_the_payout_gives_its_quota_back_and_tells_the_user() {
    on_both_stores("permanent", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        f.stripe.fail_next(400, "account_invalid");
        let payout = f.request("permanent", 500_00).await.unwrap().unwrap();
        assert_eq!(payout.status, PayoutStatus::Failed);
        assert_eq!(payout.failure_code.as_deref(), Some("account_invalid"));
        assert_eq!(f.limits.released(), vec![(payout.id.clone(), 500_00, 1)]);
        assert!(payout.quota.is_settled());
        assert_eq!(f.inbox.kinds(), vec!["payout_failed"]);

        // After the last retry, a retryable refusal is final too.
        for _ in 0..4 {
            f.stripe.fail_next(400, "insufficient_funds");
        }
        let payout = f.request("exhausted", 400_00).await.unwrap().unwrap();
        for minutes in [5, 10, 20] {
            f.after(Duration::minutes(minutes)).await;
        }
        let failed = f.stored(&payout.id).await;
        assert_eq!(
            (failed.status, failed.retry_count),
            (PayoutStatus::Failed, 3)
        );
        assert!(f.stripe.transfers().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn giving_quota_back_is_durable_and_retried_until_the_limits_confirm() {
    on_both_stores("durable_release", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        f.limits.release_failures.store(3, Ordering::SeqCst);
        f.stripe.fail_next(400, "account_invalid");
        let payout = f.request("release-later", 500_00).await.unwrap().unwrap();
        assert_eq!(payout.status, PayoutStatus::Failed);
        assert!(
            f.limits.released().is_empty(),
            "the limits service was down"
        );
        let owed = f.stored(&payout.id).await;
        assert!(!owed.quota.is_settled(), "the release is owed, durably");
        assert!(owed.effects_due_at.is_some());
        // The worker keeps trying (with a backoff) until the limits service confirms.
        for _ in 0..4 {
            f.after(Duration::minutes(10)).await;
        }
        assert_eq!(f.limits.released(), vec![(payout.id.clone(), 500_00, 1)]);
        let settled = f.stored(&payout.id).await;
        assert!(settled.quota.is_settled() && !settled.owes_effects());
        assert_eq!(settled.effects_due_at, None);

        // A reversal applied while the limits service is down: the event is applied, and the
        // release it owes still happens later.
        let live = f.request("reversed-later", 600_00).await.unwrap().unwrap();
        let transfer_id = live.stripe_transfer_id.clone().unwrap();
        f.limits.release_failures.store(1, Ordering::SeqCst);
        assert!(
            f.transfer_event(
                "evt_rev_down",
                "transfer.reversed",
                &live,
                &transfer_id,
                json!({ "amount_reversed": 600_00, "reversed": true })
            )
            .await
        );
        assert_eq!(f.stored(&live.id).await.status, PayoutStatus::Reversed);
        f.after(Duration::minutes(10)).await;
        assert!(f.limits.released().contains(&(live.id.clone(), 600_00, 1)));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_money_moves_while_quota_given_back_is_not_held_again() {
    on_both_stores("rehold", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        let payout = f.request("rehold", 800_00).await.unwrap().unwrap();
        let first = payout.stripe_transfer_id.clone().unwrap();
        // Part of the transfer is reversed: that part of the quota is given back.
        assert!(
            f.transfer_event(
                "evt_part",
                "transfer.reversed",
                &payout,
                &first,
                json!({ "amount_reversed": 300_00 })
            )
            .await
        );
        assert_eq!(f.limits.released(), vec![(payout.id.clone(), 300_00, 1)]);
        // Then the transfer fails (legacy): a new attempt will move all 800 again, so the
        // 300 must be held again first. The limits service is down.
        f.limits.release_failures.store(2, Ordering::SeqCst);
        assert!(
            f.transfer_event(
                "evt_legacy_failed",
                "transfer.failed",
                &payout,
                &first,
                json!({ "failure_code": "insufficient_funds" })
            )
            .await
        );
        let retrying = f.stored(&payout.id).await;
        assert_eq!(
            (retrying.status, retrying.attempt),
            (PayoutStatus::Pending, 1)
        );
        assert_eq!(retrying.amount_reversed_cents, 0);
        assert!(!retrying.quota.is_settled());
        // The retry is due, but no transfer is made while the limits have not held it again.
        f.after(Duration::minutes(6)).await;
        assert_eq!(f.stripe.transfers().len(), 1, "nothing sent");
        assert_eq!(f.stored(&payout.id).await.status, PayoutStatus::Pending);
        // The limits come back: the quota is held again (a total of 0 given back, a newer
        // sequence), and then the new attempt moves the money.
        for _ in 0..6 {
            f.after(Duration::minutes(10)).await;
        }
        assert_eq!(f.limits.released().last(), Some(&(payout.id.clone(), 0, 2)));
        let moved = f.stored(&payout.id).await;
        assert_eq!(
            moved.status,
            PayoutStatus::Processing,
            "{:?}",
            trail(&moved)
        );
        assert_eq!(f.stripe.transfers().len(), 2);
        assert_eq!(f.stripe.transfers()[1]["metadata"]["attempt"], "1");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn money_moves_only_if_still_payable_when_it_moves() {
    on_both_stores("recheck", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        // Earnings were frozen after admission: the re-check refuses, nothing is sent.
        f.limits.set_recheck(Some(Ok(
            "payable earnings no longer cover the $500.00 held".to_owned(),
        )));
        let frozen = f.request("frozen", 500_00).await.unwrap().unwrap();
        assert_eq!(frozen.status, PayoutStatus::Failed);
        assert_eq!(frozen.failure_code.as_deref(), Some("earnings_not_payable"));
        assert!(frozen.failure_reason.unwrap().contains("no longer cover"));
        assert_eq!(f.stripe.create_calls(), 0);
        assert_eq!(f.limits.released(), vec![(frozen.id.clone(), 500_00, 1)]);

        // The re-check cannot be answered: nothing is sent, nothing failed; later it is.
        f.limits.set_recheck(Some(Err(())));
        let waiting = f.request("waiting", 300_00).await.unwrap().unwrap();
        assert_eq!(waiting.status, PayoutStatus::Pending);
        assert!(!waiting.outcome_unknown, "nothing was sent");
        assert_eq!(f.stripe.create_calls(), 0);
        f.limits.set_recheck(None);
        f.after(Duration::minutes(2)).await;
        assert_eq!(f.stored(&waiting.id).await.status, PayoutStatus::Processing);

        // Stripe disabled payouts on the account after admission: failed before money moves.
        let held = fixture_with(
            &stores,
            &f,
            FakeLimits {
                requires_approval: true,
                ..FakeLimits::default()
            },
        );
        let on_hold = held
            .request("creator", Money::usd(6_000_00), "held")
            .await
            .unwrap()
            .payout
            .unwrap();
        assert_eq!(on_hold.status, PayoutStatus::PendingApproval);
        let mut disabled = stripe::event("evt_disabled", "account.updated", "account");
        disabled["data"]["object"]["id"] = json!("acct_creator");
        disabled["data"]["object"]["payouts_enabled"] = json!(false);
        disabled["created"] = json!((f.clock.now() + Duration::minutes(1)).timestamp());
        assert!(
            f.apply("evt_disabled", "account.updated", "", &disabled)
                .await
        );
        let calls = f.stripe.create_calls();
        let approved = held
            .resolve_approval(&on_hold.id, true, "admin-1", "ok")
            .await
            .unwrap();
        assert_eq!(approved.status, PayoutStatus::Failed);
        assert_eq!(approved.failure_code.as_deref(), Some("payouts_disabled"));
        assert_eq!(
            f.stripe.create_calls(),
            calls,
            "the approval re-checked first"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_account_status_is_asked_of_stripe_never_assumed_enabled() {
    on_both_stores("account_status", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        f.stripe.set_payouts_enabled("acct_creator", false);
        let error = f.request("disabled", 100_00).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::FailedPrecondition);
        assert!(error.message().contains("payouts are disabled"), "{error}");
        let account = f.flow.accounts.get("creator").await.unwrap().unwrap();
        assert_eq!(
            account.stripe_status.map(|s| s.payouts_enabled),
            Some(false),
            "Stripe's answer is kept"
        );
        assert!(f.stripe.transfers().is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_make_one_stripe_call() {
    on_both_stores("workers", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        f.stripe.fail_next(429, "rate_limit");
        let payout = f.request("workers", 300_00).await.unwrap().unwrap();
        let calls_before = f.stripe.create_calls();
        f.clock.advance(Duration::minutes(5));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let flow = Arc::clone(&f.flow);
                tokio::spawn(async move { flow.run_due().await.unwrap() })
            })
            .collect();
        for worker in workers {
            worker.await.unwrap();
        }
        assert_eq!(f.stripe.create_calls() - calls_before, 1);
        assert_eq!(f.stored(&payout.id).await.status, PayoutStatus::Processing);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_bad_accounts_leave_nothing_behind() {
    on_both_stores("refusals", |stores| async move {
        let f = fixture(
            &stores,
            FakeLimits {
                refuse: true,
                ..FakeLimits::default()
            },
        )
        .await;
        let refused = f
            .flow
            .request("creator", Money::usd(100_00), "refused")
            .await
            .unwrap();
        assert_eq!(refused.payout, None);
        assert_eq!(refused.decision.reason, "Daily payout limit reached");
        assert_eq!(
            f.flow
                .payouts
                .find_by_key("creator", "refused")
                .await
                .unwrap(),
            None
        );

        let error = f
            .flow
            .request("nobody", Money::usd(100_00), "k")
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::FailedPrecondition);

        let mut disabled = f.flow.accounts.get("creator").await.unwrap().unwrap();
        let version = disabled.version;
        disabled.stripe_status = Some(StripeAccountStatus {
            payouts_enabled: false,
            requirements_currently_due: vec!["external_account".to_owned()],
            ..StripeAccountStatus::default()
        });
        disabled.version += 1;
        f.flow.accounts.put(&disabled, Some(version)).await.unwrap();
        let error = f
            .flow
            .request("creator", Money::usd(100_00), "disabled")
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::FailedPrecondition);
        assert!(error.message().contains("payouts are disabled"), "{error}");
        assert!(f.stripe.transfers().is_empty());
    })
    .await;
}

#[tokio::test]
async fn without_stripe_a_payout_is_refused_and_nothing_is_stored() {
    let stores = Stores {
        accounts: Arc::new(MemoryAccounts::default()),
        payouts: Arc::new(MemoryPayouts::default()),
        pause: Arc::new(MemoryPause::default()),
    };
    let f = fixture(&stores, FakeLimits::default()).await;
    let flow = flow(
        &stores,
        None,
        Arc::clone(&f.limits),
        Arc::new(Queue::default()),
        Arc::clone(&f.inbox),
        Arc::new(Alerts::default()),
        &f.clock,
    );
    let error = flow
        .request("creator", Money::usd(100_00), "no-stripe")
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::FailedPrecondition);
    assert_eq!(
        error.message(),
        "Stripe is not configured (STRIPE_SECRET_KEY)"
    );
    assert_eq!(
        stores
            .payouts
            .find_by_key("creator", "no-stripe")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_events_never_regress_a_payout() {
    on_both_stores("order", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        let payout = f.request("order", 800_00).await.unwrap().unwrap();
        let tr = payout.stripe_transfer_id.clone().unwrap();
        // Paid arrives first, then the created event of the same transfer: still completed.
        assert!(
            f.transfer_event("evt_paid_first", "transfer.paid", &payout, &tr, json!({}))
                .await
        );
        assert!(
            !f.transfer_event(
                "evt_created_second",
                "transfer.created",
                &payout,
                &tr,
                json!({})
            )
            .await
        );
        assert!(
            !f.transfer_event(
                "evt_failed_late",
                "transfer.failed",
                &payout,
                &tr,
                json!({ "failure_code": "account_closed" })
            )
            .await
        );
        assert_eq!(f.stored(&payout.id).await.status, PayoutStatus::Completed);

        // A partial reversal keeps it completed and gives the reversed part back; the full
        // reversal ends it; a stale smaller reversal changes nothing.
        assert!(
            f.transfer_event(
                "evt_rev_1",
                "transfer.reversed",
                &payout,
                &tr,
                json!({ "amount_reversed": 300_00 })
            )
            .await
        );
        let partly = f.stored(&payout.id).await;
        assert_eq!(
            (partly.status, partly.amount_reversed_cents),
            (PayoutStatus::Completed, 300_00)
        );
        assert!(
            f.transfer_event(
                "evt_rev_2",
                "transfer.reversed",
                &payout,
                &tr,
                json!({ "amount_reversed": 800_00, "reversed": true })
            )
            .await
        );
        assert!(
            !f.transfer_event(
                "evt_rev_old",
                "transfer.reversed",
                &payout,
                &tr,
                json!({ "amount_reversed": 300_00 })
            )
            .await
        );
        let reversed = f.stored(&payout.id).await;
        assert_eq!(reversed.status, PayoutStatus::Reversed);
        // Totals under a sequence: 300, then all 800 (never 300 + 800).
        assert_eq!(
            f.limits.released(),
            vec![
                (payout.id.clone(), 300_00, 1),
                (payout.id.clone(), 800_00, 2)
            ]
        );
        assert!(
            !f.transfer_event(
                "evt_paid_after_reversal",
                "transfer.paid",
                &payout,
                &tr,
                json!({})
            )
            .await
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_events_act_only_on_the_transfer_they_name() {
    on_both_stores("late_events", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        let payout = f.request("legacy", 900_00).await.unwrap().unwrap();
        let first = payout.stripe_transfer_id.clone().unwrap();
        // Legacy API: the first transfer failed; the payout retries with a new attempt.
        assert!(
            f.transfer_event(
                "evt_failed_1",
                "transfer.failed",
                &payout,
                &first,
                json!({ "failure_code": "insufficient_funds" })
            )
            .await
        );
        let retrying = f.stored(&payout.id).await;
        assert_eq!(
            (retrying.status, retrying.attempt),
            (PayoutStatus::Pending, 1)
        );
        f.after(Duration::minutes(5)).await;
        let second = f.stored(&payout.id).await;
        assert_eq!(second.status, PayoutStatus::Processing);
        let second_id = second.stripe_transfer_id.clone().unwrap();
        assert_ne!(second_id, first);
        // Late news of the failed transfer (paid, reversed, updated) changes nothing.
        for (id, event_type) in [
            ("evt_late_paid", "transfer.paid"),
            ("evt_late_updated", "transfer.updated"),
            ("evt_late_reversed", "transfer.reversed"),
        ] {
            assert!(
                !f.transfer_event(
                    id,
                    event_type,
                    &payout,
                    &first,
                    json!({ "amount_reversed": 900_00 })
                )
                .await,
                "{event_type}"
            );
        }
        let still = f.stored(&payout.id).await;
        assert_eq!(still.status, PayoutStatus::Processing);
        assert_eq!(
            still.stripe_transfer_id.as_deref(),
            Some(second_id.as_str())
        );
        // And a failure of the current transfer fails only the current attempt.
        assert_eq!(still.attempt, 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reversal_that_arrives_before_the_transfer_is_known_is_applied() {
    on_both_stores("early_reversal", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        f.stripe.then(Behaviour::LoseResponse);
        let payout = f.request("early", 450_00).await.unwrap().unwrap();
        assert!(payout.outcome_unknown && payout.stripe_transfer_id.is_none());
        let made = f.stripe.transfers()[0]["id"].as_str().unwrap().to_owned();
        // Stripe reverses the transfer before we learned its id.
        assert!(
            f.transfer_event(
                "evt_rev_early",
                "transfer.reversed",
                &payout,
                &made,
                json!({ "amount_reversed": 450_00, "reversed": true })
            )
            .await
        );
        let reversed = f.stored(&payout.id).await;
        assert_eq!(reversed.status, PayoutStatus::Reversed);
        assert_eq!(reversed.stripe_transfer_id.as_deref(), Some(made.as_str()));
        assert_eq!(f.limits.released(), vec![(payout.id.clone(), 450_00, 1)]);
        // The worker has nothing left to do for it, and makes nothing new.
        f.after(Duration::minutes(3)).await;
        assert_eq!(f.stored(&payout.id).await.status, PayoutStatus::Reversed);
        assert_eq!(f.stripe.transfers().len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_for_a_failed_payout_is_adopted_with_a_critical_alert() {
    on_both_stores("adopted", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        f.stripe.fail_next(400, "account_invalid");
        let payout = f
            .request("failed-then-found", 250_00)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(payout.status, PayoutStatus::Failed);
        assert_eq!(f.limits.released(), vec![(payout.id.clone(), 250_00, 1)]);
        // Yet Stripe reports a transfer of this payout (made outside, or by a Stripe bug).
        assert!(
            f.transfer_event(
                "evt_surprise",
                "transfer.created",
                &payout,
                "tr_surprise",
                json!({})
            )
            .await
        );
        let adopted = f.stored(&payout.id).await;
        assert_eq!(adopted.status, PayoutStatus::Processing);
        assert_eq!(adopted.stripe_transfer_id.as_deref(), Some("tr_surprise"));
        // The failure's own alert (escalation's payout-failure signal), then the adoption's.
        assert_eq!(
            f.alerts.kinds(),
            vec![
                "payout_failed".to_owned(),
                "payout_transfer_adopted".to_owned()
            ]
        );
        // The money left: its quota is held again (a total of 0 released, a newer sequence).
        assert_eq!(f.limits.released().last(), Some(&(payout.id.clone(), 0, 2)));
        // A second transfer naming the same payout is flagged, never dropped or adopted.
        assert!(
            f.transfer_event(
                "evt_second",
                "transfer.created",
                &payout,
                "tr_second",
                json!({})
            )
            .await
        );
        let flagged = f.stored(&payout.id).await;
        assert_eq!(flagged.stripe_transfer_id.as_deref(), Some("tr_surprise"));
        assert_eq!(flagged.stray_transfer_ids, vec!["tr_second".to_owned()]);
        assert!(
            f.alerts
                .kinds()
                .contains(&"payout_stray_transfer".to_owned())
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_payout_completes_only_the_payouts_it_carried() {
    on_both_stores("bank", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        let first = f.request("bank-1", 900_00).await.unwrap().unwrap();
        let bank_payout = f.stripe.pay_out("acct_creator").unwrap();
        // A second transfer after the bank payout left: not carried by it.
        f.clock.advance(Duration::minutes(10));
        let second = f.request("bank-2", 100_00).await.unwrap().unwrap();
        assert_eq!(second.status, PayoutStatus::Processing);

        assert!(
            f.bank_payout_event("evt_po_paid", "payout.paid", &bank_payout)
                .await
        );
        let completed = f.stored(&first.id).await;
        assert_eq!(completed.status, PayoutStatus::Completed);
        assert_eq!(
            completed.stripe_payout_id,
            bank_payout["id"].as_str().map(str::to_owned)
        );
        assert!(
            completed
                .audit_log
                .last()
                .unwrap()
                .reason
                .contains("balance transactions"),
            "{}",
            completed.audit_log.last().unwrap().reason
        );
        assert_eq!(f.stored(&second.id).await.status, PayoutStatus::Processing);

        // The bank payout that did carry the second completes it.
        let later = f.stripe.pay_out("acct_creator").unwrap();
        assert!(
            f.bank_payout_event("evt_po_paid_2", "payout.paid", &later)
                .await
        );
        assert_eq!(f.stored(&second.id).await.status, PayoutStatus::Completed);

        // The first bank payout fails after it was paid: only the payout it carried fails,
        // and its quota stays held (the money is in the creator's Stripe account).
        let failed = f
            .stripe
            .fail_bank_payout(
                "acct_creator",
                bank_payout["id"].as_str().unwrap(),
                "account_closed",
            )
            .unwrap();
        assert!(
            f.bank_payout_event("evt_po_failed", "payout.failed", &failed)
                .await
        );
        let turned = f.stored(&first.id).await;
        assert_eq!(turned.status, PayoutStatus::Failed);
        assert_eq!(turned.failure_code.as_deref(), Some("account_closed"));
        assert_eq!(f.stored(&second.id).await.status, PayoutStatus::Completed);
        assert!(f.limits.released().is_empty());
        assert_eq!(
            f.inbox.kinds(),
            vec!["payout_completed", "payout_completed", "payout_failed"]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_payout_paid_before_its_transfer_is_known_completes_the_payout_later() {
    on_both_stores("bank_early", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        f.stripe.then(Behaviour::LoseResponse);
        let payout = f.request("bank-early", 700_00).await.unwrap().unwrap();
        assert!(payout.outcome_unknown && payout.stripe_transfer_id.is_none());
        // Stripe made the transfer, paid it out to the bank and says so before we learned
        // the transfer's id: no payout of ours is processing on it yet, so the event changes
        // none (it is recorded for the account).
        let bank_payout = f.stripe.pay_out("acct_creator").unwrap();
        assert!(
            !f.bank_payout_event("evt_po_early", "payout.paid", &bank_payout)
                .await
        );
        assert_eq!(f.stored(&payout.id).await.status, PayoutStatus::Pending);
        // The worker's lookup finds the transfer, and the bank payout already recorded for
        // the account completes the payout: the event is not needed a second time.
        f.after(Duration::minutes(3)).await;
        let completed = f.stored(&payout.id).await;
        assert_eq!(
            completed.status,
            PayoutStatus::Completed,
            "{:?}",
            trail(&completed)
        );
        assert_eq!(
            completed.stripe_payout_id,
            bank_payout["id"].as_str().map(str::to_owned)
        );
        assert_eq!(f.stripe.transfers().len(), 1);
        assert_eq!(f.inbox.kinds(), vec!["payout_completed"]);
    })
    .await;
}

/// The bound after which a bank payout Stripe cannot attribute raises an alert.
const ATTRIBUTION_ALERT_AFTER: Duration = Duration::hours(48);

impl Fixture {
    /// The event Stripe recorded last of `event_type` about bank payout `bank_payout_id`,
    /// delivered (with its own id); whether it changed a payout.
    async fn deliver_bank_event(
        &self,
        event_type: &str,
        bank_payout_id: &str,
    ) -> Result<bool, ServiceError> {
        let event = self
            .stripe
            .events()
            .into_iter()
            .rev()
            .find(|e| e["type"] == event_type && e["data"]["object"]["id"] == bank_payout_id)
            .unwrap();
        assert_eq!(event["account"], "acct_creator");
        let id = event["id"].as_str().unwrap().to_owned();
        self.try_apply(&id, event_type, "acct_creator", &event)
            .await
    }

    fn unattributed_alerts(&self) -> usize {
        self.alerts
            .kinds()
            .iter()
            .filter(|kind| *kind == "bank_payout_unattributed")
            .count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_lookup_completes_nothing_and_alerts_after_the_bound() {
    on_both_stores("bank_refused", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        let payout = f.request("bank-unknown", 500_00).await.unwrap().unwrap();
        // A bank payout Stripe will not show us (404): no payout of ours is guessed paid.
        let mut unknown = stripe::fixture("payout");
        unknown["id"] = json!("po_not_visible");
        unknown["status"] = json!("paid");
        let mut event = stripe::event("evt_po_unknown", "payout.paid", "payout");
        event["account"] = json!("acct_creator");
        event["data"]["object"] = unknown;
        let changed = f
            .try_apply("evt_po_unknown", "payout.paid", "acct_creator", &event)
            .await
            .unwrap_or(false);
        assert!(!changed);
        assert_eq!(f.stored(&payout.id).await.status, PayoutStatus::Processing);
        // Stripe is asked again later, and still cannot say: processing, no alert yet.
        f.after(Duration::hours(6)).await;
        assert_eq!(f.stored(&payout.id).await.status, PayoutStatus::Processing);
        assert_eq!(f.unattributed_alerts(), 0);
        // Past the bound: one alert for an admin, raised once however often it is asked.
        f.after(ATTRIBUTION_ALERT_AFTER).await;
        f.after(Duration::hours(7)).await;
        assert_eq!(f.unattributed_alerts(), 1, "{:?}", f.alerts.kinds());
        assert_eq!(f.stored(&payout.id).await.status, PayoutStatus::Processing);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_balance_transaction_listing_is_asked_again_until_it_answers() {
    on_both_stores("bank_retry", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        let payout = f.request("bank-retry", 400_00).await.unwrap().unwrap();
        let bank_payout = f.stripe.pay_out("acct_creator").unwrap();
        let id = bank_payout["id"].as_str().unwrap();
        f.stripe.fail_next_balance_transactions(500, "api_error");
        let _ = f.deliver_bank_event("payout.paid", id).await;
        assert_eq!(f.stored(&payout.id).await.status, PayoutStatus::Processing);
        // Nobody delivers anything again: the worker asks Stripe again, which answers now.
        f.after(Duration::minutes(7)).await;
        let completed = f.stored(&payout.id).await;
        assert_eq!(
            completed.status,
            PayoutStatus::Completed,
            "{:?}",
            trail(&completed)
        );
        assert_eq!(completed.stripe_payout_id.as_deref(), Some(id));
        assert_eq!(f.unattributed_alerts(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_payout_is_attributed_only_once_its_reconciliation_completed() {
    on_both_stores("bank_reconciled", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        let first = f.request("bank-r1", 300_00).await.unwrap().unwrap();
        let second = f.request("bank-r2", 200_00).await.unwrap().unwrap();
        let bank_payout = f.stripe.pay_out_unreconciled("acct_creator").unwrap();
        assert_eq!(bank_payout["reconciliation_status"], "in_progress");
        let id = bank_payout["id"].as_str().unwrap().to_owned();
        // A third transfer after the bank payout left: not carried by it.
        let third = f.request("bank-r3", 100_00).await.unwrap().unwrap();
        // payout.paid while Stripe is still reconciling: its list may be partial, so it
        // attributes nothing (Stripe's partial list names only the first).
        assert!(
            !f.deliver_bank_event("payout.paid", &id)
                .await
                .unwrap_or(false)
        );
        for payout in [&first, &second, &third] {
            assert_eq!(f.stored(&payout.id).await.status, PayoutStatus::Processing);
        }
        // The worker asks again while it is still reconciling: still nothing.
        f.after(Duration::minutes(30)).await;
        assert_eq!(f.stored(&first.id).await.status, PayoutStatus::Processing);
        // Reconciled: exactly the payouts the complete list names complete.
        f.stripe.reconcile("acct_creator", &id).unwrap();
        assert!(
            f.deliver_bank_event("payout.reconciliation_completed", &id)
                .await
                .unwrap()
        );
        for payout in [&first, &second] {
            let completed = f.stored(&payout.id).await;
            assert_eq!(
                completed.status,
                PayoutStatus::Completed,
                "{:?}",
                trail(&completed)
            );
            assert_eq!(completed.stripe_payout_id.as_deref(), Some(id.as_str()));
        }
        assert_eq!(f.stored(&third.id).await.status, PayoutStatus::Processing);
        // A late duplicate of payout.paid changes nothing more; nothing is left to alert.
        assert!(!f.deliver_bank_event("payout.paid", &id).await.unwrap());
        f.after(ATTRIBUTION_ALERT_AFTER + Duration::hours(1)).await;
        assert_eq!(f.unattributed_alerts(), 0);
        assert_eq!(f.stored(&third.id).await.status, PayoutStatus::Processing);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_payout_is_never_attributed_and_alerts_after_the_bound() {
    on_both_stores("bank_manual", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        let payout = f.request("bank-manual", 250_00).await.unwrap().unwrap();
        let manual = f.stripe.pay_out_manually("acct_creator").unwrap();
        assert_eq!(manual["automatic"], false);
        let id = manual["id"].as_str().unwrap().to_owned();
        assert!(
            !f.deliver_bank_event("payout.paid", &id)
                .await
                .unwrap_or(false)
        );
        assert_eq!(f.stored(&payout.id).await.status, PayoutStatus::Processing);
        f.after(ATTRIBUTION_ALERT_AFTER - Duration::hours(1)).await;
        assert_eq!(f.unattributed_alerts(), 0);
        f.after(Duration::hours(2)).await;
        f.after(Duration::hours(24)).await;
        assert_eq!(f.unattributed_alerts(), 1, "{:?}", f.alerts.kinds());
        assert_eq!(f.stored(&payout.id).await.status, PayoutStatus::Processing);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_processing_payouts_a_bank_payout_completes_only_the_one_it_carried_even_after_a_refusal()
 {
    on_both_stores("bank_two", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        let carried = f.request("bank-two-1", 600_00).await.unwrap().unwrap();
        let bank_payout = f.stripe.pay_out("acct_creator").unwrap();
        let id = bank_payout["id"].as_str().unwrap().to_owned();
        let other = f.request("bank-two-2", 150_00).await.unwrap().unwrap();
        // Stripe refuses the listing once (a 4xx): neither payout is taken for paid.
        f.stripe
            .fail_next_balance_transactions(400, "invalid_request_error");
        assert!(
            !f.deliver_bank_event("payout.paid", &id)
                .await
                .unwrap_or(false)
        );
        assert_eq!(f.stored(&carried.id).await.status, PayoutStatus::Processing);
        assert_eq!(f.stored(&other.id).await.status, PayoutStatus::Processing);
        // Asked again: only the one the bank payout carried completes.
        f.after(Duration::minutes(7)).await;
        assert_eq!(f.stored(&carried.id).await.status, PayoutStatus::Completed);
        assert_eq!(f.stored(&other.id).await.status, PayoutStatus::Processing);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_updates_keep_the_stripe_status_and_warn_when_payouts_stop() {
    on_both_stores("account", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        let mut event = stripe::event("evt_acct", "account.updated", "account");
        event["data"]["object"]["id"] = json!("acct_creator");
        event["data"]["object"]["payouts_enabled"] = json!(false);
        event["data"]["object"]["requirements"]["currently_due"] = json!(["external_account"]);
        assert!(f.apply("evt_acct", "account.updated", "", &event).await);
        let status = f
            .flow
            .accounts
            .get("creator")
            .await
            .unwrap()
            .unwrap()
            .stripe_status
            .unwrap();
        assert!(!status.payouts_enabled);
        assert_eq!(
            status.requirements_currently_due,
            vec!["external_account".to_owned()]
        );
        assert_eq!(f.inbox.kinds(), vec!["payout_account_disabled"]);

        // An older snapshot arriving late does not undo the newer one.
        let mut older = event.clone();
        older["created"] = json!(event["created"].as_i64().unwrap() - 60);
        older["data"]["object"]["payouts_enabled"] = json!(true);
        assert!(!f.apply("evt_acct_old", "account.updated", "", &older).await);
        assert!(
            !f.flow
                .accounts
                .get("creator")
                .await
                .unwrap()
                .unwrap()
                .stripe_status
                .unwrap()
                .payouts_enabled
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_transfer_on_approve_and_release_on_reject_exactly_once() {
    on_both_stores("approval", |stores| async move {
        let f = fixture(
            &stores,
            FakeLimits {
                requires_approval: true,
                ..FakeLimits::default()
            },
        )
        .await;
        let held = f.request("big", 7_500_00).await.unwrap().unwrap();
        assert_eq!(held.status, PayoutStatus::PendingApproval);
        assert!(
            f.stripe.transfers().is_empty(),
            "no Stripe call before a decision"
        );

        let approved = f
            .flow
            .resolve_approval(&held.id, true, "admin-1", "verified")
            .await
            .unwrap();
        assert_eq!(approved.status, PayoutStatus::Processing);
        let error = f
            .flow
            .resolve_approval(&held.id, false, "admin-2", "too late")
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Conflict);
        // The same decision again (a re-drive) answers with the payout as it is.
        let repeat = f
            .flow
            .resolve_approval(&held.id, true, "admin-1", "verified")
            .await
            .unwrap();
        assert_eq!(repeat.status, PayoutStatus::Processing);
        assert_eq!(f.stripe.transfers().len(), 1);

        let other = f.request("big-2", 6_000_00).await.unwrap().unwrap();
        let rejected = f
            .flow
            .resolve_approval(&other.id, false, "admin-1", "suspicious")
            .await
            .unwrap();
        assert_eq!(rejected.status, PayoutStatus::Failed);
        assert_eq!(
            rejected.failure_reason.as_deref(),
            Some("Rejected by admin: suspicious")
        );
        assert_eq!(f.limits.released(), vec![(other.id.clone(), 6_000_00, 1)]);
        let kinds: HashSet<&str> = f.inbox.kinds().into_iter().collect();
        assert!(kinds.contains("payout_approved") && kinds.contains("payout_rejected"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_payout_that_failed_later_still_counts_as_carried_out() {
    on_both_stores("approved_failed", |stores| async move {
        let f = fixture(
            &stores,
            FakeLimits {
                requires_approval: true,
                ..FakeLimits::default()
            },
        )
        .await;
        let held = f.request("approve-fail", 7_000_00).await.unwrap().unwrap();
        f.stripe.fail_next(400, "account_invalid");
        let failed = f
            .flow
            .resolve_approval(&held.id, true, "admin-1", "ok")
            .await
            .unwrap();
        assert_eq!(failed.status, PayoutStatus::Failed);
        // The approvals service re-drives the decision: it is carried out, not a conflict
        // (which made it re-drive forever).
        let again = f
            .flow
            .resolve_approval(&held.id, true, "admin-1", "ok")
            .await
            .unwrap();
        assert_eq!(again.status, PayoutStatus::Failed);
        assert_eq!(f.stripe.create_calls(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_hand_off_backs_off_then_parks_with_an_alert_and_resumes() {
    on_both_stores("hand_off", |stores| async move {
        let f = fixture(
            &stores,
            FakeLimits {
                requires_approval: true,
                ..FakeLimits::default()
            },
        )
        .await;
        f.queue.failures.store(
            usize::try_from(MAX_WORK_ATTEMPTS).unwrap(),
            Ordering::SeqCst,
        );
        let held = f.request("queue-down", 6_500_00).await.unwrap().unwrap();
        let mut due: Vec<DateTime<Utc>> = Vec::new();
        let mut current = f.stored(&held.id).await;
        while !current.parked {
            let next = current.next_retry_at.unwrap();
            assert!(
                due.last()
                    .is_none_or(|previous| next - *previous >= Duration::seconds(30)),
                "retries back off"
            );
            due.push(next);
            f.clock.set(next);
            f.flow.run_due().await.unwrap();
            current = f.stored(&held.id).await;
            assert!(
                due.len() <= usize::try_from(MAX_WORK_ATTEMPTS).unwrap(),
                "bounded"
            );
        }
        assert_eq!(current.work_attempts, MAX_WORK_ATTEMPTS);
        assert_eq!(current.next_retry_at, None);
        assert_eq!(f.alerts.kinds(), vec!["payout_parked".to_owned()]);
        // Parked: the worker leaves it alone until an admin resumes it.
        f.after(Duration::days(1)).await;
        assert!(f.queue.queued.lock().unwrap().is_empty());
        let resumed = f.flow.resume(&held.id, "admin:ops").await.unwrap();
        assert!(!resumed.parked);
        f.after(Duration::seconds(1)).await;
        assert_eq!(
            f.queue.queued.lock().unwrap().clone(),
            vec![held.id.clone()]
        );
        assert_eq!(
            f.flow
                .resume(&held.id, "admin:ops")
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::FailedPrecondition
        );
    })
    .await;
}

/// A payout store whose `payoutAuditLogs` projection fails the first `failures` times.
struct FlakyProjection {
    inner: Arc<dyn PayoutRepository>,
    failures: AtomicUsize,
}

#[async_trait]
impl PayoutRepository for FlakyProjection {
    async fn insert(&self, payout: &Payout) -> Result<Inserted, ServiceError> {
        self.inner.insert(payout).await
    }
    async fn get(&self, payout_id: &str) -> Result<Option<Payout>, ServiceError> {
        self.inner.get(payout_id).await
    }
    async fn find_by_key(&self, user_id: &str, key: &str) -> Result<Option<Payout>, ServiceError> {
        self.inner.find_by_key(user_id, key).await
    }
    async fn find_by_transfer(&self, transfer_id: &str) -> Result<Option<Payout>, ServiceError> {
        self.inner.find_by_transfer(transfer_id).await
    }
    async fn by_destination(
        &self,
        destination: &str,
        statuses: &[PayoutStatus],
    ) -> Result<Vec<Payout>, ServiceError> {
        self.inner.by_destination(destination, statuses).await
    }
    async fn list_by_user(
        &self,
        user_id: Option<&str>,
        status: Option<PayoutStatus>,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Payout>, ServiceError> {
        self.inner.list_by_user(user_id, status, after, limit).await
    }
    async fn due(
        &self,
        status: PayoutStatus,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Payout>, ServiceError> {
        self.inner.due(status, now, limit).await
    }
    async fn due_effects(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Payout>, ServiceError> {
        self.inner.due_effects(now, limit).await
    }
    async fn in_status(
        &self,
        status: PayoutStatus,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Payout>, ServiceError> {
        self.inner.in_status(status, after, limit).await
    }
    async fn replace(&self, payout: &Payout, expected_version: i64) -> Result<(), ServiceError> {
        self.inner.replace(payout, expected_version).await
    }
    async fn delete(&self, payout_id: &str, expected_version: i64) -> Result<(), ServiceError> {
        self.inner.delete(payout_id, expected_version).await
    }
    async fn project_audit(
        &self,
        entries: &[payouts_payouts::payout::AuditEntry],
    ) -> Result<(), ServiceError> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(ServiceError::unavailable(
                "store unavailable",
                anyhow::anyhow!("down"),
            ));
        }
        self.inner.project_audit(entries).await
    }
    async fn projected_audit(
        &self,
        payout_id: &str,
    ) -> Result<Vec<payouts_payouts::payout::AuditEntry>, ServiceError> {
        self.inner.projected_audit(payout_id).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_projection_catches_up_after_it_failed() {
    on_both_stores("projection", |stores| async move {
        let flaky = Stores {
            accounts: Arc::clone(&stores.accounts),
            payouts: Arc::new(FlakyProjection {
                inner: Arc::clone(&stores.payouts),
                failures: AtomicUsize::new(3),
            }),
            pause: Arc::clone(&stores.pause),
        };
        let f = fixture(&flaky, FakeLimits::default()).await;
        let payout = f.request("projected", 200_00).await.unwrap().unwrap();
        f.after(Duration::seconds(1)).await;
        assert!(
            f.flow
                .payouts
                .projected_audit(&payout.id)
                .await
                .unwrap()
                .is_empty(),
            "the projection failed"
        );
        assert!(
            f.stored(&payout.id).await.owes_effects(),
            "and is still owed"
        );
        for _ in 0..4 {
            f.after(Duration::minutes(1)).await;
        }
        let current = f.stored(&payout.id).await;
        assert_eq!(
            f.flow.payouts.projected_audit(&payout.id).await.unwrap(),
            current.audit_log
        );
        assert!(!current.owes_effects());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_transfer_waits_admitted_and_goes_when_the_pause_is_lifted() {
    use payouts_payouts::pause::{PauseCause, PauseChange};
    on_both_stores("pause", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        let change = |paused: bool, cause: PauseCause| PauseChange {
            paused,
            cause,
            reason: "balance depleted".to_owned(),
            actor: "balance".to_owned(),
        };
        let paused = f
            .flow
            .set_pause(&change(true, PauseCause::Automatic))
            .await
            .unwrap();
        assert!(paused.paused() && !paused.alert_owed());
        // Requested while paused: admitted, waiting, no transfer, nothing failed.
        let payout = f.request("paused", 300_00).await.unwrap().unwrap();
        assert_eq!(payout.status, PayoutStatus::Pending);
        for _ in 0..3 {
            f.after(Duration::minutes(10)).await;
        }
        let waiting = f.stored(&payout.id).await;
        assert_eq!(waiting.status, PayoutStatus::Pending);
        assert_eq!(waiting.work_attempts, 0, "waiting is not a try");
        assert!(f.stripe.transfers().is_empty());
        assert!(f.limits.released().is_empty(), "its quota stays held");
        // The balance recovers: its own pause is lifted, the payout goes.
        f.flow
            .set_pause(&change(false, PauseCause::Automatic))
            .await
            .unwrap();
        f.after(Duration::minutes(10)).await;
        assert_eq!(f.stored(&payout.id).await.status, PayoutStatus::Processing);
        assert_eq!(f.stripe.transfers().len(), 1);
        // Each change raised its alert, once.
        let kinds = f.alerts.kinds();
        assert_eq!(
            kinds
                .iter()
                .filter(|kind| *kind == "payout_transfers_paused")
                .count(),
            1,
            "{kinds:?}"
        );
        assert_eq!(
            kinds
                .iter()
                .filter(|kind| *kind == "payout_transfers_resumed")
                .count(),
            1,
            "{kinds:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_is_quiet_when_the_books_agree_reports_every_mismatch_and_adopts_an_unknown_outcome()
 {
    use payouts_payouts::reconcile::{FindingKind, ReportStatus};
    use payouts_payouts::reconciler::Reconciler;
    use payouts_payouts::store::{MemoryReports, ReportRepository};

    on_both_stores("reconcile", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        let reports: Arc<dyn ReportRepository> = Arc::new(MemoryReports::default());
        let reconciler = Reconciler {
            flow: Arc::clone(&f.flow),
            reports: Arc::clone(&reports),
            window: Duration::days(3),
            stuck_after: Duration::days(7),
        };
        let first = f.request("first", 100_00).await.unwrap().unwrap();
        assert_eq!(first.status, PayoutStatus::Processing);
        f.clock.advance(Duration::minutes(1));

        // The books agree: a clean report, no alert.
        let clean = reconciler.run(None, "schedule").await.unwrap();
        assert_eq!(clean.status, ReportStatus::Clean, "{clean:?}");
        assert_eq!((clean.transfers_checked, clean.payouts_checked), (1, 1));
        assert!(clean.findings.is_empty());
        assert!(f.alerts.kinds().is_empty());

        // A transfer whose answer was lost: the payout's outcome is unknown.
        f.stripe.then(Behaviour::LoseResponse);
        let unknown = f.request("unknown", 50_00).await.unwrap().unwrap();
        assert!(unknown.outcome_unknown);
        // A transfer nobody asked for; an amount Stripe holds differently; a transfer Stripe
        // does not have; and, after eight days, two payouts still processing.
        let orphan = f.stripe.make_transfer(7_00, "acct_stranger", &[]);
        let first_transfer = first.stripe_transfer_id.clone().unwrap();
        assert!(
            f.stripe
                .edit_transfer(&first_transfer, |t| t["amount"] = json!(90_00))
        );
        let third = f.request("third", 20_00).await.unwrap().unwrap();
        let third_transfer = third.stripe_transfer_id.clone().unwrap();
        assert!(f.stripe.remove_transfer(&third_transfer));
        f.clock.advance(Duration::days(8));

        let report = reconciler
            .run(Some(f.clock.now() - Duration::days(30)), "admin:ops")
            .await
            .unwrap();
        assert_eq!(report.status, ReportStatus::Mismatches);
        let mut found: Vec<(FindingKind, Option<String>, Option<String>)> = report
            .findings
            .iter()
            .map(|f| (f.kind, f.payout_id.clone(), f.transfer_id.clone()))
            .collect();
        found.sort_by_key(|(kind, payout, _)| (kind.as_str(), payout.clone()));
        let adopted_transfer = f
            .stripe
            .transfers()
            .iter()
            .find(|t| t["metadata"]["payout_id"] == unknown.id.as_str())
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut expected = vec![
            (
                FindingKind::Adopted,
                Some(unknown.id.clone()),
                Some(adopted_transfer.clone()),
            ),
            (
                FindingKind::AmountMismatch,
                Some(first.id.clone()),
                Some(first_transfer.clone()),
            ),
            (
                FindingKind::MissingTransfer,
                Some(third.id.clone()),
                Some(third_transfer.clone()),
            ),
            (
                FindingKind::OrphanTransfer,
                None,
                orphan["id"].as_str().map(str::to_owned),
            ),
            (
                FindingKind::StuckPayout,
                Some(first.id.clone()),
                Some(first_transfer),
            ),
            (
                FindingKind::StuckPayout,
                Some(third.id.clone()),
                Some(third_transfer),
            ),
        ];
        expected.sort_by_key(|(kind, payout, _)| (kind.as_str(), payout.clone()));
        assert_eq!(found, expected, "{:#?}", report.findings);
        // The adoption is the one change: the payout now has Stripe's transfer. No money moved.
        let adopted = f.stored(&unknown.id).await;
        assert_eq!(adopted.status, PayoutStatus::Processing);
        assert_eq!(adopted.stripe_transfer_id, Some(adopted_transfer));
        assert!(!adopted.outcome_unknown);
        // first, the unknown outcome's and the orphan (the third's was removed): nothing new.
        assert_eq!(f.stripe.transfers().len(), 3, "nothing was transferred");
        // One critical alert per mismatch.
        let raised = f.alerts.raised.lock().unwrap().clone();
        let mismatch_alerts: Vec<&OwedAlert> = raised
            .iter()
            .filter(|a| a.kind == "reconciliation_mismatch")
            .collect();
        assert_eq!(mismatch_alerts.len(), 5);
        // Stripe does not answer: the report is incomplete, and nothing is concluded.
        f.stripe.fail_next_listing(500, "api_error");
        let incomplete = reconciler.run(None, "schedule").await.unwrap();
        assert_eq!(incomplete.status, ReportStatus::Incomplete);
        assert!(incomplete.findings.is_empty());
        assert!(incomplete.error.unwrap().contains("500"));
        let latest = reports.latest(10).await.unwrap();
        assert_eq!(
            latest.iter().map(|r| r.status).collect::<Vec<_>>(),
            [
                ReportStatus::Incomplete,
                ReportStatus::Mismatches,
                ReportStatus::Clean
            ],
            "newest first"
        );
        // A reversal whose event has not arrived: reported at once, alerted only when the
        // next report still shows it (the event may have been on its way).
        let adopted_transfer = adopted.stripe_transfer_id.clone().unwrap();
        f.stripe.reverse(&adopted_transfer, 10_00).unwrap();
        let reversal_alerts = || {
            f.alerts
                .raised
                .lock()
                .unwrap()
                .iter()
                .filter(|a| a.key.starts_with("reconciliation:reversal_mismatch"))
                .count()
        };
        let since = Some(f.clock.now() - Duration::days(30));
        let seen = reconciler.run(since, "schedule").await.unwrap();
        assert!(
            seen.findings
                .iter()
                .any(|finding| finding.kind == FindingKind::ReversalMismatch
                    && finding.payout_id.as_deref() == Some(unknown.id.as_str()))
        );
        assert_eq!(reversal_alerts(), 0);
        reconciler.run(since, "schedule").await.unwrap();
        assert_eq!(reversal_alerts(), 1);
    })
    .await;
}

/// Stripe's running total of a transfer's reversals, and how many reversal objects it made.
fn stripe_reversed(f: &Fixture, transfer_id: &str) -> i64 {
    f.stripe
        .transfers()
        .into_iter()
        .find(|t| t["id"] == transfer_id)
        .unwrap()["amount_reversed"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reversal_repeated_after_its_event_arrived_reverses_once() {
    // Issue 21, defect 1: reverse $30, the answer is lost (500), `transfer.reversed` is
    // applied, then the admin sends the identical request again.
    on_both_stores("reverse_after_event", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        let payout = f.request("key-defect-1", 1_000_00).await.unwrap().unwrap();
        let transfer_id = payout.stripe_transfer_id.clone().unwrap();
        f.stripe.then(Behaviour::ErrorAfterCreate { status: 500 });
        let error = f
            .flow
            .request_reversal(&payout.id, "confirm-30", 30_00, "clawback", "admin:ops")
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unavailable, "{}", error.message());
        assert_eq!(stripe_reversed(&f, &transfer_id), 30_00);
        assert!(
            f.transfer_event(
                "evt_rev_30",
                "transfer.reversed",
                &payout,
                &transfer_id,
                json!({ "amount_reversed": 30_00 })
            )
            .await
        );
        let repeated = f
            .flow
            .request_reversal(&payout.id, "confirm-30", 30_00, "clawback", "admin:ops")
            .await
            .unwrap();
        assert_eq!(stripe_reversed(&f, &transfer_id), 30_00, "one reversal");
        assert_eq!(f.stripe.reversals(&transfer_id).len(), 1);
        assert_eq!(repeated.amount_reversed_cents, 30_00);
        assert_eq!(f.stored(&payout.id).await.amount_reversed_cents, 30_00);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_admin_reversal_while_one_is_unresolved_is_refused() {
    on_both_stores("two_admins", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        let payout = f
            .request("key-two-admins", 1_000_00)
            .await
            .unwrap()
            .unwrap();
        let transfer_id = payout.stripe_transfer_id.clone().unwrap();
        // Admin A's reversal is made, its answer lost: unresolved.
        f.stripe.then(Behaviour::LoseResponse);
        let first = f
            .flow
            .request_reversal(&payout.id, "key-a", 300_00, "clawback", "admin:a")
            .await
            .unwrap_err();
        assert_eq!(first.kind(), ErrorKind::Unavailable);
        // Admin B, who saw the same screen, reverses too.
        let second = f
            .flow
            .request_reversal(&payout.id, "key-b", 200_00, "clawback too", "admin:b")
            .await
            .unwrap_err();
        assert_eq!(second.kind(), ErrorKind::Conflict, "{}", second.message());
        assert!(
            second.message().contains("-reversal-1") && second.message().contains("admin:a"),
            "names the unresolved intent: {}",
            second.message()
        );
        assert_eq!(stripe_reversed(&f, &transfer_id), 300_00, "one reversal");
        // Both at once, from the same screen: one intent is recorded, the other is refused.
        let other = f
            .request("key-two-admins-2", 1_000_00)
            .await
            .unwrap()
            .unwrap();
        let other_transfer = other.stripe_transfer_id.clone().unwrap();
        f.stripe.then(Behaviour::LoseResponse);
        let (a, b) = tokio::join!(
            f.flow
                .request_reversal(&other.id, "key-c", 300_00, "clawback", "admin:c"),
            f.flow
                .request_reversal(&other.id, "key-d", 200_00, "clawback", "admin:d"),
        );
        let kinds = [a.unwrap_err().kind(), b.unwrap_err().kind()];
        assert!(
            kinds.contains(&ErrorKind::Conflict) && kinds.contains(&ErrorKind::Unavailable),
            "{kinds:?}"
        );
        assert_eq!(f.stripe.reversals(&other_transfer).len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_the_limits_cannot_apply_is_never_recorded_as_confirmed() {
    on_both_stores("pruned_release", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        let payout = f.request("key-pruned", 400_00).await.unwrap().unwrap();
        let transfer_id = payout.stripe_transfer_id.clone().unwrap();
        // The limits pruned the reservation (past its retention); then the transfer is
        // reversed, which owes a release of 400.
        f.limits.reservations_pruned.store(true, Ordering::SeqCst);
        assert!(
            f.transfer_event(
                "evt_rev_pruned",
                "transfer.reversed",
                &payout,
                &transfer_id,
                json!({ "amount_reversed": 400_00, "reversed": true })
            )
            .await
        );
        f.after(Duration::minutes(15)).await;
        let stored = f.stored(&payout.id).await;
        assert!(
            !stored.quota.is_settled(),
            "the limits applied nothing: still owed"
        );
        assert_eq!(stored.quota.confirmed_cents, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_reversal_is_resolved_by_the_listing_never_by_a_new_key() {
    on_both_stores("reversal_listing", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        let payout = f.request("key-listing", 1_000_00).await.unwrap().unwrap();
        let transfer_id = payout.stripe_transfer_id.clone().unwrap();
        // Made, answer lost; the worker's first look fails: still unknown, never refused.
        f.stripe.then(Behaviour::ErrorAfterCreate { status: 500 });
        f.flow
            .request_reversal(&payout.id, "k-made", 250_00, "clawback", "admin:ops")
            .await
            .unwrap_err();
        f.stripe.fail_next_reversal_listing(500, "api_error");
        f.after(Duration::minutes(2)).await;
        let still = f.stored(&payout.id).await;
        assert_eq!(still.reversal_intents[0].state.as_str(), "unknown");
        assert!(still.owes_effects(), "owed until Stripe says");
        // The next look finds it in the transfer's reversals by its metadata.
        f.after(Duration::minutes(10)).await;
        let resolved = f.stored(&payout.id).await;
        assert_eq!(resolved.reversal_intents[0].state.as_str(), "succeeded");
        assert_eq!(resolved.amount_reversed_cents, 250_00);
        assert_eq!(
            f.limits.released().last(),
            Some(&(payout.id.clone(), 250_00, 1))
        );
        assert!(!resolved.owes_effects());

        // A request that never reached Stripe (a 5xx before anything was made, then no
        // answer at all): unknown for Stripe's whole idempotency window, then "not made".
        f.stripe.fail_next(503, "api_error");
        f.flow
            .request_reversal(&payout.id, "k-lost", 100_00, "clawback", "admin:ops")
            .await
            .unwrap_err();
        f.after(Duration::hours(23)).await;
        assert_eq!(
            f.stored(&payout.id).await.reversal_intents[1]
                .state
                .as_str(),
            "unknown"
        );
        for _ in 0..20 {
            f.after(Duration::minutes(10)).await;
        }
        let concluded = f.stored(&payout.id).await;
        assert_eq!(concluded.reversal_intents[1].state.as_str(), "refused");
        assert_eq!(concluded.amount_reversed_cents, 250_00);
        // Its key answers the same conclusion, and sends nothing.
        let error = f
            .flow
            .request_reversal(&payout.id, "k-lost", 100_00, "clawback", "admin:ops")
            .await
            .unwrap_err();
        assert_eq!(
            error.kind(),
            ErrorKind::FailedPrecondition,
            "{}",
            error.message()
        );
        assert_eq!(f.stripe.reversals(&transfer_id).len(), 1);
        assert_eq!(stripe_reversed(&f, &transfer_id), 250_00);
        // Another reversal is possible again.
        let next = f
            .flow
            .request_reversal(&payout.id, "k-next", 100_00, "clawback", "admin:ops")
            .await
            .unwrap();
        assert_eq!(next.amount_reversed_cents, 350_00);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_transfer_keeps_the_quota_held_when_the_payouts_own_is_reversed() {
    on_both_stores("stray_quota", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        let payout = f.request("key-stray", 500_00).await.unwrap().unwrap();
        let own = payout.stripe_transfer_id.clone().unwrap();
        // A second transfer names the payout: the creator has the money twice.
        assert!(
            f.transfer_event(
                "evt_stray",
                "transfer.created",
                &payout,
                "tr_stray",
                json!({})
            )
            .await
        );
        // The payout's own transfer is reversed in full: the stray money is still out, so
        // nothing is given back.
        assert!(
            f.transfer_event(
                "evt_own_reversed",
                "transfer.reversed",
                &payout,
                &own,
                json!({ "amount_reversed": 500_00, "reversed": true })
            )
            .await
        );
        f.after(Duration::minutes(1)).await;
        assert_eq!(f.stored(&payout.id).await.status, PayoutStatus::Reversed);
        assert!(
            f.limits.released().iter().all(|(_, cents, _)| *cents == 0),
            "{:?}",
            f.limits.released()
        );
        // Stripe shows the stray transfer reversed in full: now the quota goes back.
        assert!(
            f.transfer_event(
                "evt_stray_reversed",
                "transfer.reversed",
                &payout,
                "tr_stray",
                json!({ "amount_reversed": 500_00, "reversed": true })
            )
            .await
        );
        f.after(Duration::minutes(1)).await;
        assert_eq!(
            f.limits.released().last().map(|(_, cents, _)| *cents),
            Some(500_00)
        );
    })
    .await;
}
