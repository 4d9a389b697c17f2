//! Payouts end to end: the real binary, its gRPC services, a fake Stripe over HTTP and signed
//! Stripe webhooks through the gateway. Design §8 scenarios 1 and 2, the design §8 limit cases,
//! concurrent requests against the daily count, bad amounts, no Stripe.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

mod support;

use std::time::Duration;

use payouts_proto::common::v1::Money;
use payouts_proto::limits::v1::payout_limits_service_client::PayoutLimitsServiceClient;
use payouts_proto::limits::v1::{PayoutFlag, ValidatePayoutLimitsRequest};
use payouts_proto::notifications::v1::ListNotificationsRequest;
use payouts_proto::notifications::v1::notifications_service_client::NotificationsServiceClient;
use payouts_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
use payouts_proto::payouts::v1::{
    GetPayoutRequest, ListAuditLogRequest, Payout, PayoutStatus, RequestPayoutRequest,
};
use payouts_proto::webhooks::v1::webhooks_service_client::WebhooksServiceClient;
use payouts_proto::webhooks::v1::{EventStatus, GetEventRequest, WebhookEndpoint};
use payouts_runtime::testing::fake_stripe::FakeStripe;
use payouts_runtime::testing::stripe;
use serde_json::json;
use support::{Payouts, StoreChoice};
use tonic::transport::Channel;

const PAYOUTS_SECRET: &str = "whsec_e2e_payouts";
const TRANSFERS_SECRET: &str = "whsec_e2e_transfers";

struct System {
    process: Payouts,
    stripe: FakeStripe,
    channel: Channel,
}

async fn start(store: StoreChoice, extra: &[(&str, &str)]) -> System {
    let stripe = FakeStripe::start().await;
    let mut env = vec![
        ("STRIPE_SECRET_KEY", "sk_test_e2e"),
        ("STRIPE_API_BASE", stripe.url()),
        ("STRIPE_WEBHOOK_SECRET_PAYOUTS", PAYOUTS_SECRET),
        ("STRIPE_WEBHOOK_SECRET_TRANSFERS", TRANSFERS_SECRET),
        ("WEBHOOK_POLL_MILLISECONDS", "20"),
        ("PAYOUT_POLL_MILLISECONDS", "50"),
        ("PAYOUT_RETRY_BASE_SECONDS", "1"),
    ];
    env.extend_from_slice(extra);
    let process = Payouts::start(&[], store, &env);
    let channel = process.grpc_channel().await;
    System {
        process,
        stripe,
        channel,
    }
}

impl System {
    fn payouts(&self) -> PayoutsServiceClient<Channel> {
        PayoutsServiceClient::new(self.channel.clone())
    }

    /// A creator with an account `age_days` old and `earned_cents` of earnings.
    async fn creator(&self, user_id: &str, age_days: i64, earned_cents: i64) {
        support::register_creator(&self.channel, user_id, age_days, earned_cents).await;
    }

    async fn request(
        &self,
        user_id: &str,
        key: &str,
        cents: i64,
    ) -> Result<Option<Payout>, tonic::Status> {
        let response = self
            .payouts()
            .request_payout(RequestPayoutRequest {
                user_id: user_id.to_owned(),
                amount: Some(Money {
                    cents,
                    currency: "usd".to_owned(),
                }),
                idempotency_key: key.to_owned(),
            })
            .await?;
        Ok(response.into_inner().payout)
    }

    async fn payout(&self, payout_id: &str) -> Payout {
        self.payouts()
            .get_payout(GetPayoutRequest {
                payout_id: payout_id.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .payout
            .unwrap()
    }

    async fn wait_for(&self, payout_id: &str, done: impl Fn(&Payout) -> bool) -> Payout {
        let mut last = None;
        for _ in 0..1500 {
            let payout = self.payout(payout_id).await;
            if done(&payout) {
                return payout;
            }
            last = Some(payout);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("payout {payout_id} never reached the expected state; last seen {last:?}");
    }

    /// Stripe delivers a signed webhook about a transfer of ours (a platform event: to the
    /// transfers endpoint).
    async fn webhook(
        &self,
        event_id: &str,
        event_type: &str,
        transfer: &serde_json::Value,
        changes: serde_json::Value,
    ) {
        let mut event = stripe::event(event_id, event_type, "transfer");
        event["data"]["object"] = transfer.clone();
        for (key, value) in changes.as_object().unwrap() {
            event["data"]["object"][key] = value.clone();
        }
        let response = support::deliver_webhook(
            &self.process,
            "/api/webhooks/stripe-transfers",
            TRANSFERS_SECRET,
            &event,
        )
        .await;
        assert_eq!(response.status(), 200);
    }

    async fn notification_types(&self, user_id: &str) -> Vec<String> {
        NotificationsServiceClient::new(self.channel.clone())
            .list_notifications(ListNotificationsRequest {
                recipient_id: user_id.to_owned(),
                unread_only: false,
                page_size: 50,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .notifications
            .into_iter()
            .map(|n| n.r#type)
            .collect()
    }
}

async fn scenario_1_a_normal_payout_completes(system: &System) {
    system.creator("alice", 400, 5_000_00).await;
    let payout = system
        .request("alice", "alice-1", 1_000_00)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(payout.status(), PayoutStatus::Processing);
    let transfers = system.stripe.transfers();
    assert_eq!(transfers.len(), 1);
    assert_eq!(transfers[0]["id"], payout.stripe_transfer_id.as_str());

    system
        .webhook(
            "evt_s1_created",
            "transfer.created",
            &transfers[0],
            json!({}),
        )
        .await;
    system
        .webhook("evt_s1_paid", "transfer.paid", &transfers[0], json!({}))
        .await;
    let done = system
        .wait_for(&payout.id, |p| p.status() == PayoutStatus::Completed)
        .await;
    assert!(done.completed_at.is_some());

    let audit = system
        .payouts()
        .list_audit_log(ListAuditLogRequest {
            payout_id: payout.id.clone(),
            ..ListAuditLogRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let moves: Vec<(PayoutStatus, PayoutStatus)> = audit
        .iter()
        .map(|e| (e.from_status(), e.to_status()))
        .collect();
    assert_eq!(
        moves,
        [
            (PayoutStatus::Admitting, PayoutStatus::Pending),
            (PayoutStatus::Pending, PayoutStatus::Processing),
            (PayoutStatus::Processing, PayoutStatus::Completed),
        ]
    );
    assert_eq!(audit[2].stripe_event_id, "evt_s1_paid");
    for _ in 0..1500 {
        if system
            .notification_types("alice")
            .await
            .contains(&"payout_completed".to_owned())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("alice was not notified of the completed payout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_1_normal_payout_on_the_embedded_store() {
    let system = start(StoreChoice::Embedded, &[]).await;
    scenario_1_a_normal_payout_completes(&system).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_1_normal_payout_on_mongodb() {
    let system = start(StoreChoice::Mongo, &[]).await;
    scenario_1_a_normal_payout_completes(&system).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_2_a_failed_transfer_is_retried_and_succeeds() {
    let system = start(StoreChoice::Embedded, &[]).await;
    system.creator("bob", 400, 5_000_00).await;
    let payout = system
        .request("bob", "bob-1", 500_00)
        .await
        .unwrap()
        .unwrap();
    let first = system.stripe.transfers()[0].clone();
    // The (legacy) transfer.failed webhook: insufficient funds, retryable.
    system
        .webhook(
            "evt_s2_failed",
            "transfer.failed",
            &first,
            json!({ "failure_code": "insufficient_funds" }),
        )
        .await;
    // Retried after the (shortened) backoff with a new attempt: a second transfer.
    let retried = system
        .wait_for(&payout.id, |p| {
            p.retry_count == 1 && p.status() == PayoutStatus::Processing
        })
        .await;
    let transfers = system.stripe.transfers();
    assert_eq!(transfers.len(), 2);
    assert_eq!(
        retried.stripe_transfer_id,
        transfers[1]["id"].as_str().unwrap()
    );
    system
        .webhook("evt_s2_paid", "transfer.paid", &transfers[1], json!({}))
        .await;
    system
        .wait_for(&payout.id, |p| p.status() == PayoutStatus::Completed)
        .await;
    // A late duplicate of the failure does not undo it.
    system
        .webhook(
            "evt_s2_failed",
            "transfer.failed",
            &first,
            json!({ "failure_code": "insufficient_funds" }),
        )
        .await;
    system
        .webhook(
            "evt_s2_failed_again",
            "transfer.failed",
            &transfers[1],
            json!({ "failure_code": "insufficient_funds" }),
        )
        .await;
    // Wait until the inbox has processed the late failure, then check nothing regressed.
    let mut webhooks = WebhooksServiceClient::new(system.channel.clone());
    for _ in 0..1500 {
        let event = webhooks
            .get_event(GetEventRequest {
                endpoint: WebhookEndpoint::StripePayouts.into(),
                event_id: "evt_s2_failed_again".to_owned(),
            })
            .await
            .ok()
            .and_then(|response| response.into_inner().event);
        if event.is_some_and(|e| e.status() == EventStatus::Completed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        system.payout(&payout.id).await.status(),
        PayoutStatus::Completed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spec_limit_cases_over_grpc() {
    let system = start(StoreChoice::Embedded, &[]).await;
    system.creator("user123", 400, 1_000_000_00).await;
    system.creator("newUser", 15, 1_000_000_00).await;
    let mut limits = PayoutLimitsServiceClient::new(system.channel.clone());
    for (user, cents, flag, allowed) in [
        ("user123", 10_001_00, PayoutFlag::ExceedsSingleLimit, false),
        ("user123", 6_000_00, PayoutFlag::RequiresAdminApproval, true),
        (
            "newUser",
            1_500_00,
            PayoutFlag::ExceedsNewAccountLimit,
            false,
        ),
    ] {
        let decision = limits
            .validate_payout_limits(ValidatePayoutLimitsRequest {
                user_id: user.to_owned(),
                amount: Some(Money {
                    cents,
                    currency: "usd".to_owned(),
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .decision
            .unwrap();
        assert_eq!(decision.allowed, allowed, "{user} {cents}");
        assert!(
            decision.flags().any(|f| f == flag),
            "{user} {cents}: {decision:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_requests_admit_exactly_three() {
    let system = start(
        StoreChoice::Mongo,
        &[("PAYOUT_LIMITS_MIN_TIME_BETWEEN_PAYOUTS", "0")],
    )
    .await;
    system.creator("carol", 400, 1_000_000_00).await;
    let requests = (0..20).map(|i| {
        let system = &system;
        async move {
            system
                .request("carol", &format!("carol-{i}"), 100_00)
                .await
                .unwrap()
        }
    });
    let results = futures::future::join_all(requests).await;
    let admitted = results.iter().flatten().count();
    assert_eq!(admitted, 3);
    assert_eq!(system.stripe.transfers().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_amounts_are_invalid_arguments() {
    let system = start(StoreChoice::Embedded, &[]).await;
    system.creator("dave", 400, 5_000_00).await;
    for cents in [0, -1, i64::MAX] {
        let status = system
            .request("dave", &format!("bad-{cents}"), cents)
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{cents}");
        assert!(status.message().contains("amount"), "{}", status.message());
    }
    // Money is one shape everywhere, and a wrong currency is refused naming the field.
    let euros = Some(Money {
        cents: 100_00,
        currency: "eur".to_owned(),
    });
    let status = system
        .payouts()
        .request_payout(RequestPayoutRequest {
            user_id: "dave".to_owned(),
            amount: euros.clone(),
            idempotency_key: "euros".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "amount must be in usd, got eur");
    let status = PayoutLimitsServiceClient::new(system.channel.clone())
        .validate_payout_limits(ValidatePayoutLimitsRequest {
            user_id: "dave".to_owned(),
            amount: euros,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), "amount must be in usd, got eur");
    let status = system
        .request("dave", "over-balance", 5_000_01)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("available balance"),
        "{}",
        status.message()
    );
    assert!(system.stripe.transfers().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_stripe_a_payout_is_refused() {
    let stripe = FakeStripe::start().await;
    let process = Payouts::start(
        &[],
        StoreChoice::Embedded,
        &[("STRIPE_API_BASE", stripe.url())],
    );
    let channel = process.grpc_channel().await;
    let system = System {
        process,
        stripe,
        channel,
    };
    system.creator("erin", 400, 5_000_00).await;
    let status = system.request("erin", "erin-1", 100_00).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "Stripe is not configured (STRIPE_SECRET_KEY)"
    );
}
