//! The payout flow through its public API against a fake Stripe over real HTTP, on the
//! embedded store and on MongoDB: at most one transfer per attempt, retries, failures that
//! release quota, the webhook-driven lifecycle, late and duplicate events.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{Duration, Utc};
use payouts_payouts::domain::{Account, StripeAccountStatus};
use payouts_payouts::events::Event;
use payouts_payouts::flow::PayoutFlow;
use payouts_payouts::payout::{Payout, PayoutStatus, RETRY_BASE, retry_delay};
use payouts_payouts::ports::{Admission, ApprovalsPort, LimitsPort, Notifier, UserNotice};
use payouts_payouts::store::{
    AccountRepository, MemoryAccounts, MemoryPayouts, MongoAccounts, MongoPayouts, PayoutRepository,
};
use payouts_payouts::stripe::{StripeClient, StripeTransfers};
use payouts_proto::limits::v1::LimitDecision;
use payouts_runtime::clock::ManualClock;
use payouts_runtime::testing::fake_stripe::{Behaviour, FakeStripe};
use payouts_runtime::testing::stripe;
use payouts_runtime::{Clock as _, ErrorKind, Money, Secret, ServiceError};
use serde_json::json;

/// Limits that admit everything (optionally for approval) and record releases.
#[derive(Default)]
struct FakeLimits {
    requires_approval: bool,
    refuse: bool,
    released: Mutex<Vec<(String, Option<i64>)>>,
}

#[async_trait]
impl LimitsPort for FakeLimits {
    async fn reserve(
        &self,
        _user_id: &str,
        _payout_id: &str,
        _amount: &Money,
    ) -> Result<Admission, ServiceError> {
        Ok(Admission {
            decision: LimitDecision {
                allowed: !self.refuse,
                requires_approval: self.requires_approval,
                reason: if self.refuse {
                    "Daily payout limit reached".to_owned()
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
        cents: Option<i64>,
        _reason: &str,
    ) -> Result<bool, ServiceError> {
        self.released
            .lock()
            .unwrap()
            .push((payout_id.to_owned(), cents));
        Ok(true)
    }
}

/// An approval queue that records what it was handed.
#[derive(Default)]
struct Queue {
    queued: Mutex<Vec<String>>,
}

#[async_trait]
impl ApprovalsPort for Queue {
    async fn queue(&self, payout: &Payout) -> Result<(), ServiceError> {
        self.queued.lock().unwrap().push(payout.id.clone());
        Ok(())
    }
}

#[derive(Default)]
struct Inbox {
    notices: Mutex<Vec<UserNotice>>,
}

impl Notifier for Inbox {
    fn notify(&self, notice: UserNotice) {
        self.notices.lock().unwrap().push(notice);
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

struct Fixture {
    flow: Arc<PayoutFlow>,
    stripe: FakeStripe,
    limits: Arc<FakeLimits>,
    inbox: Arc<Inbox>,
    clock: ManualClock,
}

struct Stores {
    accounts: Arc<dyn AccountRepository>,
    payouts: Arc<dyn PayoutRepository>,
}

async fn fixture(stores: &Stores, limits: FakeLimits) -> Fixture {
    let stripe_fake = FakeStripe::start().await;
    let clock = ManualClock::new(payouts_runtime::store::store_precision(Utc::now()));
    let limits = Arc::new(limits);
    let inbox = Arc::new(Inbox::default());
    let client = StripeClient::new(&Secret::new("sk_test_fake"), stripe_fake.url()).unwrap();
    let flow = Arc::new(PayoutFlow {
        accounts: Arc::clone(&stores.accounts),
        payouts: Arc::clone(&stores.payouts),
        limits: Arc::clone(&limits) as Arc<dyn LimitsPort>,
        approvals: Arc::new(Queue::default()),
        notifier: Arc::clone(&inbox) as Arc<dyn Notifier>,
        stripe: Some(Arc::new(client) as Arc<dyn StripeTransfers>),
        clock: Arc::new(clock.clone()),
        poll_interval: std::time::Duration::from_millis(10),
        retry_base: RETRY_BASE,
    });
    let account = Account {
        user_id: "creator".to_owned(),
        stripe_account_id: "acct_creator".to_owned(),
        account_created_at: Utc::now() - Duration::days(400),
        stripe_status: None,
        version: 1,
    };
    stores.accounts.put(&account, None).await.unwrap();
    Fixture {
        flow,
        stripe: stripe_fake,
        limits,
        inbox,
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
    })
    .await;
    let database = payouts_runtime::testing::mongo_database(name).await;
    scenario(Stores {
        accounts: Arc::new(MongoAccounts::open(&database).await.unwrap()),
        payouts: Arc::new(MongoPayouts::open(&database).await.unwrap()),
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

    /// A Stripe event about the transfer of `payout`, with `changes` applied to the transfer.
    async fn transfer_event(
        &self,
        id: &str,
        event_type: &str,
        payout: &Payout,
        changes: serde_json::Value,
    ) -> bool {
        let mut event = stripe::event(id, event_type, "transfer");
        let transfer = &mut event["data"]["object"];
        transfer["id"] = json!(
            payout
                .stripe_transfer_id
                .clone()
                .unwrap_or_else(|| "tr_unknown".to_owned())
        );
        transfer["amount"] = json!(payout.amount.cents);
        transfer["metadata"] = json!({ "payout_id": payout.id });
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
        let payload = serde_json::to_vec(event).unwrap();
        let created = event["created"].as_i64().unwrap_or(0);
        let parsed = Event::parse(id, event_type, account, created, &payload).unwrap();
        self.flow.handle_event(&parsed).await.unwrap().applied
    }
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
        assert_eq!(transfers[0]["destination"], "acct_creator");
        assert_eq!(transfers[0]["metadata"]["payout_id"], payout.id.as_str());
        assert_eq!(
            transfers[0]["transfer_group"],
            format!("payout_{}", payout.id)
        );

        // Spec §8 scenario 1: transfer.created, then transfer.paid.
        assert!(
            !f.transfer_event("evt_created", "transfer.created", &payout, json!({}))
                .await,
            "already processing"
        );
        assert!(
            f.transfer_event("evt_paid", "transfer.paid", &payout, json!({}))
                .await
        );
        let done = f.stored(&payout.id).await;
        assert_eq!(done.status, PayoutStatus::Completed);
        assert!(done.completed_at.is_some());
        assert_eq!(f.inbox.kinds(), vec!["payout_completed"]);
        let trail: Vec<(Option<PayoutStatus>, PayoutStatus)> = done
            .audit_log
            .iter()
            .map(|e| (e.from_status, e.to_status))
            .collect();
        assert_eq!(
            trail,
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
            !f.transfer_event("evt_paid", "transfer.paid", &payout, json!({}))
                .await
        );
        assert!(
            !f.transfer_event("evt_created_late", "transfer.created", &payout, json!({}))
                .await
        );
        assert_eq!(f.stored(&payout.id).await, done);
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
async fn a_lost_stripe_response_is_recovered_by_lookup_and_makes_exactly_one_transfer() {
    on_both_stores("lost", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        f.stripe.then(Behaviour::LoseResponse);
        let payout = f.request("lost", 700_00).await.unwrap().unwrap();
        // The outcome is unknown: never failed, due again soon.
        assert_eq!(payout.status, PayoutStatus::Pending);
        assert!(payout.outcome_unknown);
        assert_eq!(f.stripe.transfers().len(), 1, "Stripe made the transfer");

        f.clock.advance(Duration::minutes(1));
        f.flow.run_due().await.unwrap();
        let recovered = f.stored(&payout.id).await;
        assert_eq!(recovered.status, PayoutStatus::Processing);
        assert_eq!(
            recovered.stripe_transfer_id.as_deref(),
            f.stripe.transfers()[0]["id"].as_str()
        );
        assert_eq!(f.stripe.transfers().len(), 1, "exactly one transfer");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_failures_are_retried_on_the_spec_schedule_with_new_attempts() {
    on_both_stores("retry", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        // Spec §8 scenario 2: insufficient funds, then a 429, then success.
        f.stripe.fail_next(400, "balance_insufficient");
        f.stripe.fail_next(429, "rate_limit");
        let payout = f.request("retry", 500_00).await.unwrap().unwrap();
        assert_eq!(
            (payout.status, payout.retry_count, payout.attempt),
            (PayoutStatus::Pending, 1, 1)
        );
        assert_eq!(
            payout.next_retry_at,
            Some(f.clock.now() + retry_delay(RETRY_BASE, 1))
        );
        assert_eq!(retry_delay(RETRY_BASE, 1), Duration::minutes(5));

        f.clock.advance(Duration::minutes(4));
        f.flow.run_due().await.unwrap();
        assert_eq!(
            f.stored(&payout.id).await.retry_count,
            1,
            "not before 5 minutes"
        );
        f.clock.advance(Duration::minutes(1));
        f.flow.run_due().await.unwrap();
        let second = f.stored(&payout.id).await;
        assert_eq!((second.retry_count, second.attempt), (2, 2));
        assert_eq!(
            second.next_retry_at,
            Some(f.clock.now() + Duration::minutes(10))
        );

        f.clock.advance(Duration::minutes(10));
        f.flow.run_due().await.unwrap();
        let done = f.stored(&payout.id).await;
        assert_eq!(done.status, PayoutStatus::Processing);
        assert_eq!(f.stripe.transfers().len(), 1);
        assert_eq!(f.stripe.create_calls(), 3, "one call per attempt");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_fails_the_payout_releases_its_quota_and_tells_the_user() {
    on_both_stores("permanent", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        f.stripe.fail_next(400, "account_invalid");
        let payout = f.request("permanent", 500_00).await.unwrap().unwrap();
        assert_eq!(payout.status, PayoutStatus::Failed);
        assert_eq!(payout.failure_code.as_deref(), Some("account_invalid"));
        assert_eq!(
            f.limits.released.lock().unwrap().clone(),
            vec![(payout.id.clone(), None)]
        );
        assert_eq!(f.inbox.kinds(), vec!["payout_failed"]);

        // After the last retry, a retryable failure is permanent too.
        for _ in 0..4 {
            f.stripe.fail_next(400, "insufficient_funds");
        }
        let payout = f.request("exhausted", 400_00).await.unwrap().unwrap();
        for minutes in [5, 10, 20] {
            f.clock.advance(Duration::minutes(minutes));
            f.flow.run_due().await.unwrap();
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
async fn two_retry_workers_make_one_stripe_call() {
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
    };
    let f = fixture(&stores, FakeLimits::default()).await;
    let flow = PayoutFlow {
        accounts: Arc::clone(&stores.accounts),
        payouts: Arc::clone(&stores.payouts),
        limits: Arc::clone(&f.limits) as Arc<dyn LimitsPort>,
        approvals: Arc::new(Queue::default()),
        notifier: Arc::clone(&f.inbox) as Arc<dyn Notifier>,
        stripe: None,
        clock: Arc::new(f.clock.clone()),
        poll_interval: std::time::Duration::from_millis(10),
        retry_base: RETRY_BASE,
    };
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
        // Paid arrives first, then the created event of the same transfer: still completed.
        assert!(
            f.transfer_event("evt_paid_first", "transfer.paid", &payout, json!({}))
                .await
        );
        assert!(
            !f.transfer_event("evt_created_second", "transfer.created", &payout, json!({}))
                .await
        );
        assert!(
            !f.transfer_event(
                "evt_failed_late",
                "transfer.failed",
                &payout,
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
                json!({ "amount_reversed": 800_00, "reversed": true })
            )
            .await
        );
        assert!(
            !f.transfer_event(
                "evt_rev_old",
                "transfer.reversed",
                &payout,
                json!({ "amount_reversed": 300_00 })
            )
            .await
        );
        let reversed = f.stored(&payout.id).await;
        assert_eq!(reversed.status, PayoutStatus::Reversed);
        assert_eq!(
            f.limits.released.lock().unwrap().clone(),
            vec![
                (payout.id.clone(), Some(300_00)),
                (payout.id.clone(), Some(500_00))
            ]
        );
        assert!(
            !f.transfer_event(
                "evt_paid_after_reversal",
                "transfer.paid",
                &payout,
                json!({})
            )
            .await
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bank_payouts_complete_payouts_and_a_paid_one_can_turn_failed() {
    on_both_stores("bank", |stores| async move {
        let f = fixture(&stores, FakeLimits::default()).await;
        let payout = f.request("bank", 900_00).await.unwrap().unwrap();
        let mut paid = stripe::event("evt_po_paid", "payout.paid", "payout");
        paid["account"] = json!("acct_creator");
        paid["data"]["object"]["id"] = json!("po_bank_1");
        assert!(
            f.apply("evt_po_paid", "payout.paid", "acct_creator", &paid)
                .await
        );
        let completed = f.stored(&payout.id).await;
        assert_eq!(completed.status, PayoutStatus::Completed);
        assert_eq!(completed.stripe_payout_id.as_deref(), Some("po_bank_1"));

        let mut failed = stripe::event("evt_po_failed", "payout.failed", "payout");
        failed["data"]["object"]["id"] = json!("po_bank_1");
        failed["data"]["object"]["failure_code"] = json!("account_closed");
        assert!(
            f.apply("evt_po_failed", "payout.failed", "acct_creator", &failed)
                .await
        );
        let turned = f.stored(&payout.id).await;
        assert_eq!(turned.status, PayoutStatus::Failed);
        assert_eq!(turned.failure_code.as_deref(), Some("account_closed"));
        // The transfer stands (the money is in the creator's Stripe account): no quota back.
        assert!(f.limits.released.lock().unwrap().is_empty());
        assert_eq!(f.inbox.kinds(), vec!["payout_completed", "payout_failed"]);
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
        assert_eq!(
            f.limits.released.lock().unwrap().clone(),
            vec![(other.id.clone(), None)]
        );
        let kinds: HashSet<&str> = f.inbox.kinds().into_iter().collect();
        assert!(kinds.contains("payout_approved") && kinds.contains("payout_rejected"));
    })
    .await;
}
