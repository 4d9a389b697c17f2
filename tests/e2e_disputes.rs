//! Refunds and disputes end to end (design §3): signed `charge.refunded`, `refund.*` and
//! `charge.dispute.*` events built from Stripe's fixture shapes, sent through the gateway,
//! change earnings exactly; frozen money blocks payout requests and a pending approval's
//! transfer; a refund after a payout leaves a debt that an admin reversal repays; a refund
//! delivered while the disputes service is down waits for it and is applied when it is back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

mod support;

use std::time::Duration;

use payouts_proto::common::v1::Money;
use payouts_proto::disputes::v1::RecordAllocationRequest;
use payouts_proto::disputes::v1::disputes_service_client::DisputesServiceClient;
use payouts_proto::notifications::v1::notifications_service_client::NotificationsServiceClient;
use payouts_proto::notifications::v1::{
    AlertStatus, ListCriticalAlertsRequest, ListNotificationsRequest,
};
use payouts_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
use payouts_proto::payouts::v1::{GetPayoutRequest, Payout, PayoutStatus, RequestPayoutRequest};
use payouts_proto::webhooks::v1::webhooks_service_client::WebhooksServiceClient;
use payouts_proto::webhooks::v1::{EventStatus, GetEventRequest, WebhookEndpoint};
use payouts_runtime::testing::fake_stripe::FakeStripe;
use payouts_runtime::testing::stripe;
use serde_json::{Value, json};
use support::{Payouts, StoreChoice};
use tonic::transport::Channel;

const SUBSCRIPTION_SECRET: &str = "whsec_e2e_subscription";
const PAYOUTS_SECRET: &str = "whsec_e2e_payouts";
const ADMIN_SECRET: &str = "admin-secret-for-disputes-e2e-32-bytes";

struct System {
    process: Payouts,
    stripe: FakeStripe,
    channel: Channel,
    http: reqwest::Client,
}

async fn start(store: StoreChoice) -> System {
    let stripe = FakeStripe::start().await;
    let process = Payouts::start(
        &[],
        store,
        &[
            ("STRIPE_SECRET_KEY", "sk_test_e2e"),
            ("STRIPE_API_BASE", stripe.url()),
            ("STRIPE_WEBHOOK_SECRET", SUBSCRIPTION_SECRET),
            ("STRIPE_WEBHOOK_SECRET_PAYOUTS", PAYOUTS_SECRET),
            ("ADMIN_JWT_SECRET", ADMIN_SECRET),
            ("WEBHOOK_POLL_MILLISECONDS", "20"),
            ("PAYOUT_POLL_MILLISECONDS", "50"),
            // Payouts back to back: the balance decides, not the minimum gap.
            ("PAYOUT_LIMITS_MIN_TIME_BETWEEN_PAYOUTS", "0"),
        ],
    );
    let channel = process.grpc_channel().await;
    System {
        process,
        stripe,
        channel,
        http: reqwest::Client::new(),
    }
}

/// A `charge.refunded` event's charge: `amount_refunded` of `amount`, cumulative, as current
/// API versions send it (no `refunds` list: the service reads the charge's refunds from the
/// fake Stripe, which must hold them).
fn charge(charge_id: &str, amount: i64, amount_refunded: i64) -> Value {
    let mut charge = stripe::fixture("charge");
    if let Value::Object(fields) = &mut charge {
        fields.remove("refunds");
    }
    charge["id"] = json!(charge_id);
    charge["amount"] = json!(amount);
    charge["amount_captured"] = json!(amount);
    charge["amount_refunded"] = json!(amount_refunded);
    charge["refunded"] = json!(amount_refunded >= amount);
    charge
}

fn refund(refund_id: &str, charge_id: &str, amount: i64, status: &str) -> Value {
    let mut refund = stripe::fixture("refund");
    refund["id"] = json!(refund_id);
    refund["charge"] = json!(charge_id);
    refund["amount"] = json!(amount);
    refund["status"] = json!(status);
    refund
}

fn dispute(dispute_id: &str, charge_id: &str, amount: i64, status: &str) -> Value {
    let mut dispute = stripe::fixture("dispute");
    dispute["id"] = json!(dispute_id);
    dispute["charge"] = json!(charge_id);
    dispute["amount"] = json!(amount);
    dispute["status"] = json!(status);
    dispute
}

/// Sends a signed event to `gateway` and waits until the inbox processed it.
async fn deliver(
    http: &reqwest::Client,
    gateway: &Payouts,
    webhooks: &Channel,
    event_id: &str,
    event_type: &str,
    object: &Value,
) -> Value {
    let mut event = stripe::event(event_id, event_type, object["object"].as_str().unwrap());
    event["data"]["object"] = object.clone();
    let body = serde_json::to_vec(&event).unwrap();
    let header =
        stripe::signature_header(&body, SUBSCRIPTION_SECRET, chrono::Utc::now().timestamp());
    let response = http
        .post(gateway.gateway_url("/api/webhooks/stripe-subscription"))
        .header("Stripe-Signature", header)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{event_type}");
    for _ in 0..1500 {
        let found = WebhooksServiceClient::new(webhooks.clone())
            .get_event(GetEventRequest {
                endpoint: WebhookEndpoint::StripeSubscription.into(),
                event_id: event_id.to_owned(),
            })
            .await;
        if let Ok(found) = found {
            let found = found.into_inner().event.unwrap();
            if found.status() != EventStatus::Processing {
                return json!({"status": found.status().as_str_name(), "outcome": found.outcome, "error": found.error});
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("event {event_id} was never processed");
}

impl System {
    async fn send(&self, event_id: &str, event_type: &str, object: &Value) {
        let outcome = deliver(
            &self.http,
            &self.process,
            &self.channel,
            event_id,
            event_type,
            object,
        )
        .await;
        assert_eq!(
            outcome["status"], "EVENT_STATUS_COMPLETED",
            "{event_type}: {outcome}"
        );
    }

    async fn creator(&self, user_id: &str, earned_cents: i64) {
        support::register_creator(&self.channel, user_id, 400, earned_cents).await;
    }

    async fn credit(&self, allocation_id: &str, user_id: &str, charge_id: &str, cents: i64) {
        DisputesServiceClient::new(self.channel.clone())
            .record_allocation(RecordAllocationRequest {
                allocation_id: allocation_id.to_owned(),
                user_id: user_id.to_owned(),
                charge_id: charge_id.to_owned(),
                amount: Some(Money {
                    cents,
                    currency: "usd".to_owned(),
                }),
                payer_id: "supporter_1".to_owned(),
            })
            .await
            .unwrap();
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, self.process.gateway_url(path))
            .bearer_auth(support::admin_token(ADMIN_SECRET, "ops@example.com", true));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// `POST /api/admin/payouts/{id}/reverse` under an `Idempotency-Key` (`None`: without).
    async fn reverse(&self, path: &str, body: Value, key: Option<&str>) -> (u16, Value) {
        let mut request = self
            .http
            .post(self.process.gateway_url(path))
            .bearer_auth(support::admin_token(ADMIN_SECRET, "ops@example.com", true))
            .json(&body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn earnings(&self, user_id: &str) -> Value {
        let (status, body) = self
            .admin(
                reqwest::Method::GET,
                &format!("/api/admin/users/{user_id}/earnings"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn request(&self, user_id: &str, key: &str, cents: i64) -> Result<Payout, tonic::Status> {
        let response = PayoutsServiceClient::new(self.channel.clone())
            .request_payout(RequestPayoutRequest {
                user_id: user_id.to_owned(),
                amount: Some(Money {
                    cents,
                    currency: "usd".to_owned(),
                }),
                idempotency_key: key.to_owned(),
            })
            .await?
            .into_inner();
        Ok(response
            .payout
            .unwrap_or_else(|| panic!("refused: {:?}", response.decision)))
    }

    async fn wait_for(&self, payout_id: &str, done: impl Fn(&Payout) -> bool) -> Payout {
        let mut last = None;
        for _ in 0..1500 {
            let payout = PayoutsServiceClient::new(self.channel.clone())
                .get_payout(GetPayoutRequest {
                    payout_id: payout_id.to_owned(),
                })
                .await
                .unwrap()
                .into_inner()
                .payout
                .unwrap();
            if done(&payout) {
                return payout;
            }
            last = Some(payout);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("payout {payout_id} never got there; last seen {last:?}");
    }

    async fn alerts(&self, kind: &str) -> Vec<Value> {
        NotificationsServiceClient::new(self.channel.clone())
            .list_critical_alerts(ListCriticalAlertsRequest {
                status: AlertStatus::Unspecified.into(),
                page_size: 500,
                page_token: String::new(),
                r#type: kind.to_owned(),
                level: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .alerts
            .into_iter()
            .map(|alert| serde_json::from_str(&alert.data_json).unwrap())
            .collect()
    }

    async fn notified(&self, user_id: &str) -> Vec<String> {
        NotificationsServiceClient::new(self.channel.clone())
            .list_notifications(ListNotificationsRequest {
                recipient_id: user_id.to_owned(),
                unread_only: false,
                page_size: 100,
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

/// One allocation as the admin endpoint shows it: (id, status, amount, refunded, frozen).
fn allocation(earnings: &Value, id: &str) -> (String, i64, i64, i64) {
    let found = earnings["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id)
        .unwrap_or_else(|| panic!("no allocation {id} in {earnings}"));
    (
        found["status"].as_str().unwrap().to_owned(),
        found["amountCents"].as_i64().unwrap(),
        found["refundedAmount"].as_i64().unwrap(),
        found["frozenAmount"].as_i64().unwrap(),
    )
}

async fn refunds_change_earnings_exactly(system: &System) {
    system.creator("rita", 1_000).await;
    system.creator("sam", 500).await;
    system.credit("shared_rita", "rita", "ch_shared", 333).await;
    system.credit("shared_sam", "sam", "ch_shared", 667).await;

    // 30%, then 60% in all (cumulative); a late copy of an older state changes nothing.
    system.stripe.make_charge_as("ch_shared", 1_000);
    system.stripe.refund("ch_shared", 300, "succeeded").unwrap();
    system
        .send(
            "evt_rf_1",
            "charge.refunded",
            &charge("ch_shared", 1_000, 300),
        )
        .await;
    let second = system.stripe.refund("ch_shared", 300, "succeeded").unwrap();
    system
        .send(
            "evt_rf_2",
            "charge.refunded",
            &charge("ch_shared", 1_000, 600),
        )
        .await;
    system
        .send(
            "evt_rf_0",
            "charge.refunded",
            &charge("ch_shared", 1_000, 150),
        )
        .await;
    let rita = system.earnings("rita").await;
    let sam = system.earnings("sam").await;
    // 600 of 1000 over 333 : 667 -> 199.8 and 400.2: the cent left goes to the 0.8.
    assert_eq!(
        allocation(&rita, "shared_rita"),
        ("at_risk".into(), 133, 200, 0)
    );
    assert_eq!(
        allocation(&sam, "shared_sam"),
        ("at_risk".into(), 267, 400, 0)
    );
    assert_eq!(rita["lifetimeCents"], 1_000 + 133);
    assert_eq!(rita["refundedCents"], 200);
    assert_eq!(rita["recentRefunds"], 1);
    let audit = rita["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "shared_rita")
        .unwrap()["audit"]
        .clone();
    assert_eq!(audit.as_array().unwrap().len(), 2, "{audit}");
    assert_eq!(audit[1]["eventId"], "evt_rf_2");
    assert_eq!(audit[1]["fromCents"], 233);
    assert_eq!(audit[1]["toCents"], 133);

    // The second refund (300) failed: what it took comes back.
    let second = second["id"].as_str().unwrap();
    system.stripe.fail_refund(second).unwrap();
    system
        .send(
            "evt_rf_fail",
            "refund.failed",
            &refund(second, "ch_shared", 300, "failed"),
        )
        .await;
    let rita = system.earnings("rita").await;
    assert_eq!(
        allocation(&rita, "shared_rita"),
        ("at_risk".into(), 233, 100, 0)
    );
    assert_eq!(
        allocation(&system.earnings("sam").await, "shared_sam"),
        ("at_risk".into(), 467, 200, 0)
    );

    // Admins were alerted once per creator per event, and the creators told.
    let alerts = system.alerts("refund_processed").await;
    let about_rita = alerts
        .iter()
        .filter(|a| a["affectedUserId"] == "rita" && a["chargeId"] == "ch_shared")
        .count();
    assert_eq!(about_rita, 3, "{alerts:?}");
    assert!(
        system
            .notified("rita")
            .await
            .contains(&"earnings_reduced".to_owned())
    );

    // A payout requested within 30 days of a refund is held for approval.
    let held = system.request("rita", "rita-1", 5_00).await.unwrap();
    assert_eq!(held.status(), PayoutStatus::PendingApproval);
    assert!(
        held.flags
            .contains(&(payouts_proto::limits::v1::PayoutFlag::RecentRefundOrDispute as i32)),
        "{held:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_change_earnings_exactly_on_the_embedded_store() {
    let system = start(StoreChoice::Embedded).await;
    refunds_change_earnings_exactly(&system).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refunds_change_earnings_exactly_on_mongodb() {
    let system = start(StoreChoice::Mongo).await;
    refunds_change_earnings_exactly(&system).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispute_freezes_blocks_payouts_and_its_outcome_decides() {
    let system = start(StoreChoice::Embedded).await;
    system.creator("dina", 2_000_00).await;
    system
        .send(
            "evt_dp_dina_1",
            "charge.dispute.created",
            &dispute("dp_dina", "ch_dina", 2_000_00, "needs_response"),
        )
        .await;
    let dina = system.earnings("dina").await;
    assert_eq!(dina["frozenCents"], 2_000_00);
    assert_eq!(dina["payableCents"], 0);
    assert_eq!(
        allocation(&dina, "alloc_dina"),
        ("disputed".into(), 2_000_00, 0, 2_000_00)
    );
    let refused = system.request("dina", "dina-1", 100_00).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("available balance"),
        "{}",
        refused.message()
    );

    let (status, open) = system
        .admin(
            reqwest::Method::GET,
            "/api/admin/disputes?status=open",
            None,
        )
        .await;
    assert_eq!(status, 200);
    let listed = open["disputes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["disputeId"] == "dp_dina")
        .cloned()
        .unwrap_or_else(|| panic!("{open}"));
    assert_eq!(listed["chargeId"], "ch_dina");
    assert_eq!(listed["affectedCreators"][0]["userId"], "dina");
    assert_eq!(listed["affectedCreators"][0]["frozenCents"], 2_000_00);
    let created = system.alerts("dispute_created").await;
    assert!(
        created.iter().any(|a| a["disputeId"] == "dp_dina"
            && a["affectedUserId"] == "dina"
            && a["disputedAmount"] == 2_000_00
            && a["allocationsAffected"] == 1),
        "{created:?}"
    );

    // Won: unfrozen, payable again (held for approval: a dispute in the last 30 days).
    system
        .send(
            "evt_dp_dina_2",
            "charge.dispute.closed",
            &dispute("dp_dina", "ch_dina", 2_000_00, "won"),
        )
        .await;
    let dina = system.earnings("dina").await;
    assert_eq!(
        allocation(&dina, "alloc_dina"),
        ("active".into(), 2_000_00, 0, 0)
    );
    assert_eq!(dina["payableCents"], 2_000_00);
    let held = system.request("dina", "dina-2", 100_00).await.unwrap();
    assert_eq!(held.status(), PayoutStatus::PendingApproval);
    let told = system.notified("dina").await;
    assert!(told.contains(&"earnings_frozen".to_owned()), "{told:?}");
    assert!(told.contains(&"earnings_unfrozen".to_owned()), "{told:?}");

    // Lost, in the right order and with `closed` before `created`: the same end.
    for (creator, order) in [
        ("lia", ["created", "closed"]),
        ("lou", ["closed", "created"]),
    ] {
        system.creator(creator, 700_00).await;
        let charge_id = format!("ch_{creator}");
        for (i, kind) in order.iter().enumerate() {
            let status = if *kind == "closed" {
                "lost"
            } else {
                "needs_response"
            };
            system
                .send(
                    &format!("evt_{creator}_{i}"),
                    &format!("charge.dispute.{kind}"),
                    &dispute(&format!("dp_{creator}"), &charge_id, 700_00, status),
                )
                .await;
        }
        let earnings = system.earnings(creator).await;
        assert_eq!(
            allocation(&earnings, &format!("alloc_{creator}")),
            ("refunded".into(), 0, 700_00, 0),
            "{creator}"
        );
        assert_eq!(earnings["lifetimeCents"], 0);
        assert_eq!(earnings["debtCents"], 0, "nothing was paid out");
        assert!(
            system
                .notified(creator)
                .await
                .contains(&"earnings_reduced".to_owned())
        );
    }
    let (_, lost) = system
        .admin(
            reqwest::Method::GET,
            "/api/admin/disputes?status=lost",
            None,
        )
        .await;
    let lost: Vec<&str> = lost["disputes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["disputeId"].as_str().unwrap())
        .collect();
    assert!(
        lost.contains(&"dp_lia") && lost.contains(&"dp_lou") && !lost.contains(&"dp_dina"),
        "{lost:?}"
    );
    assert!(system.alerts("dispute_closed").await.len() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_after_a_payout_leaves_a_debt_that_an_admin_reversal_repays() {
    let system = start(StoreChoice::Embedded).await;
    system.creator("paul", 1_000_00).await;
    let payout = system.request("paul", "paul-1", 300_00).await.unwrap();
    let paid = system
        .wait_for(&payout.id, |p| !p.stripe_transfer_id.is_empty())
        .await;
    let transfer_id = paid.stripe_transfer_id.clone();

    // The whole charge is refunded after 300 of it was paid out.
    system.stripe.make_charge_as("ch_paul", 1_000_00);
    system
        .stripe
        .refund("ch_paul", 1_000_00, "succeeded")
        .unwrap();
    system
        .send(
            "evt_paul_rf",
            "charge.refunded",
            &charge("ch_paul", 1_000_00, 1_000_00),
        )
        .await;
    let paul = system.earnings("paul").await;
    assert_eq!(paul["lifetimeCents"], 0);
    assert_eq!(paul["committedCents"], 300_00);
    assert_eq!(paul["debtCents"], 300_00);
    assert_eq!(paul["availableCents"], 0);
    assert_eq!(
        allocation(&paul, "alloc_paul"),
        ("refunded".into(), 0, 1_000_00, 0)
    );
    // No payout while in debt; new earnings pay the debt first.
    let refused = system.request("paul", "paul-2", 10_00).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    system
        .credit("paul_new", "paul", "ch_paul_new", 200_00)
        .await;
    let paul = system.earnings("paul").await;
    assert_eq!(
        (paul["debtCents"].as_i64(), paul["availableCents"].as_i64()),
        (Some(100_00), Some(0))
    );

    // Bad reversals are refused and name the problem.
    let path = format!("/api/admin/payouts/{}/reverse", payout.id);
    for (body, status, message) in [
        (
            json!({"amountCents": 0, "notes": "x"}),
            400,
            "amountCents must be between 1 and 30000",
        ),
        (
            json!({"amountCents": 300_01, "notes": "x"}),
            400,
            "amountCents must be between",
        ),
        (
            json!({"amountCents": 100, "notes": " "}),
            400,
            "notes are required",
        ),
        (json!({"amountCents": 100}), 400, "invalid body"),
    ] {
        let (got, answer) = system.reverse(&path, body.clone(), Some("bad")).await;
        assert_eq!(got, status, "{body} {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(message),
            "{answer}"
        );
    }
    let (status, answer) = system
        .reverse(
            "/api/admin/payouts/payout_nope/reverse",
            json!({"amountCents": 1, "notes": "x"}),
            Some("nope"),
        )
        .await;
    assert_eq!(status, 404, "{answer}");
    // Without an Idempotency-Key nothing is reversed.
    let full = json!({"amountCents": 300_00, "notes": "charge ch_paul refunded in full"});
    let (status, answer) = system.reverse(&path, full.clone(), None).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"),
        "{answer}"
    );

    // The admin takes the 300 back from the creator's Stripe account.
    let (status, answer) = system.reverse(&path, full.clone(), Some("confirm-1")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["amountReversedCents"], 300_00);
    assert_eq!(answer["status"], "reversed");
    assert_eq!(answer["reversal"]["state"], "succeeded");
    assert_eq!(answer["reversal"]["requestedBy"], "admin:ops@example.com");
    // The same confirmation again answers the same outcome; the detail shows the intent.
    let (status, again) = system.reverse(&path, full, Some("confirm-1")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["reversal"]["id"], answer["reversal"]["id"]);
    let (status, detail) = system
        .admin(
            reqwest::Method::GET,
            &format!("/api/admin/payouts/{}", payout.id),
            None,
        )
        .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(
        detail["payout"]["reversalIntents"][0]["amountCents"],
        300_00
    );
    assert_eq!(detail["payout"]["reversalIntents"][0]["state"], "succeeded");
    let transfer = system
        .stripe
        .transfers()
        .into_iter()
        .find(|t| t["id"] == transfer_id.as_str())
        .unwrap();
    assert_eq!(transfer["amount_reversed"], 300_00);
    let reversed = system
        .wait_for(&payout.id, |p| p.status() == PayoutStatus::Reversed)
        .await;
    assert_eq!(reversed.amount_reversed.unwrap().cents, 300_00);
    let mut repaid = Value::Null;
    for _ in 0..500 {
        repaid = system.earnings("paul").await;
        if repaid["committedCents"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(repaid["debtCents"], 0, "{repaid}");
    assert_eq!(repaid["availableCents"], 200_00, "{repaid}");
    // Nothing left: 409, and Stripe was not asked again.
    let (status, answer) = system
        .reverse(
            &path,
            json!({"amountCents": 1, "notes": "again"}),
            Some("confirm-2"),
        )
        .await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("nothing left to reverse")
    );
    let (_, audit) = (
        (),
        payouts_proto::payouts::v1::payouts_service_client::PayoutsServiceClient::new(
            system.channel.clone(),
        )
        .list_audit_log(payouts_proto::payouts::v1::ListAuditLogRequest {
            payout_id: payout.id.clone(),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner(),
    );
    let entry = audit
        .entries
        .iter()
        .find(|e| e.event_type == "transfer_reversed_by_admin")
        .unwrap_or_else(|| panic!("{audit:?}"));
    assert_eq!(entry.actor.as_ref().unwrap().id, "admin:ops@example.com");
    assert!(
        entry.reason.contains("charge ch_paul refunded in full"),
        "{}",
        entry.reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispute_blocks_the_transfer_of_a_payout_waiting_for_approval() {
    let system = start(StoreChoice::Embedded).await;
    system.creator("ava", 10_000_00).await;
    // Above the approval amount: held.
    let held = system.request("ava", "ava-1", 6_000_00).await.unwrap();
    assert_eq!(held.status(), PayoutStatus::PendingApproval);
    system
        .send(
            "evt_dp_ava",
            "charge.dispute.created",
            &dispute("dp_ava", "ch_ava", 10_000_00, "needs_response"),
        )
        .await;
    let mut approval = Value::Null;
    for _ in 0..500 {
        let (_, queue) = system
            .admin(
                reqwest::Method::GET,
                "/api/admin/payout-approvals?status=all",
                None,
            )
            .await;
        if let Some(found) = queue["approvals"]
            .as_array()
            .and_then(|all| all.iter().find(|a| a["payoutId"] == held.id.as_str()))
        {
            approval = found.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, answer) = system
        .admin(
            reqwest::Method::POST,
            "/api/admin/payout-approval",
            Some(json!({"approvalId": approval["id"], "action": "approve", "notes": "ok"})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let failed = system
        .wait_for(&held.id, |p| p.status() == PayoutStatus::Failed)
        .await;
    assert_eq!(failed.failure_code, "earnings_not_payable", "{failed:?}");
    assert!(failed.stripe_transfer_id.is_empty());
    assert!(system.stripe.transfers().is_empty(), "no money moved");
}

/// A `charge.refunded` that arrives while the disputes service is down is not parked (an
/// answer we did not get is not a "no"): it waits for the service, visibly, however long,
/// and is applied once the service is back, with no admin action. With one attempt allowed
/// (`WEBHOOK_MAX_ATTEMPTS=1`) the old rule parked it at the first unanswered try: Stripe had
/// its 2xx and never redelivers, so the refund was lost and the refunded money payable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_delivered_while_disputes_is_down_waits_and_is_applied_when_it_is_back() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let disputes_address = free.local_addr().unwrap().to_string();
    drop(free);
    let disputes_url = format!("http://{disputes_address}");
    // The disputes service keeps its allocations in MongoDB, so a restart keeps them.
    let mongo_uri = payouts_runtime::testing::mongo_uri();
    let database = payouts_runtime::testing::unique_database_name("e2e_outage");
    let notifications = Payouts::start(&["serve", "notifications"], StoreChoice::Embedded, &[]);
    let notifications_url = notifications.grpc_url();
    let disputes_env = [
        ("GRPC_ADDR", disputes_address.as_str()),
        ("NOTIFICATIONS_SERVICE_URL", notifications_url.as_str()),
        ("MONGODB_URI", mongo_uri.as_str()),
        ("MONGODB_DATABASE", database.as_str()),
    ];
    let disputes = Payouts::start(&["serve", "disputes"], StoreChoice::Embedded, &disputes_env);
    DisputesServiceClient::new(disputes.grpc_channel().await)
        .record_allocation(RecordAllocationRequest {
            allocation_id: "alloc_outage".to_owned(),
            user_id: "pat".to_owned(),
            charge_id: "ch_outage".to_owned(),
            amount: Some(Money {
                cents: 500_00,
                currency: "usd".to_owned(),
            }),
            payer_id: "supporter_9".to_owned(),
        })
        .await
        .unwrap();
    // The disputes service stops.
    assert!(disputes.terminate().success());

    let webhooks = Payouts::start(
        &["serve", "webhooks"],
        StoreChoice::Embedded,
        &[
            ("STRIPE_WEBHOOK_SECRET", SUBSCRIPTION_SECRET),
            ("STRIPE_WEBHOOK_SECRET_PAYOUTS", PAYOUTS_SECRET),
            ("STRIPE_WEBHOOK_SECRET_TRANSFERS", "whsec_e2e_transfers"),
            ("WEBHOOK_POLL_MILLISECONDS", "20"),
            ("WEBHOOK_MAX_ATTEMPTS", "1"),
            ("WEBHOOK_RETRY_BASE_SECONDS", "1"),
            ("DISPUTES_SERVICE_URL", &disputes_url),
            ("NOTIFICATIONS_SERVICE_URL", &notifications_url),
        ],
    );
    let gateway = Payouts::start(
        &["gateway"],
        StoreChoice::Embedded,
        &[
            ("ADMIN_JWT_SECRET", ADMIN_SECRET),
            ("WEBHOOKS_SERVICE_URL", &webhooks.grpc_url()),
        ],
    );
    let http = reqwest::Client::new();
    let token = support::admin_token(ADMIN_SECRET, "ops@example.com", true);
    let mut event = stripe::event("evt_refund_outage", "charge.refunded", "charge");
    event["data"]["object"] = charge("ch_outage", 500_00, 500_00);
    let delivered = support::deliver_webhook(
        &gateway,
        "/api/webhooks/stripe-subscription",
        SUBSCRIPTION_SECRET,
        &event,
    )
    .await;
    assert_eq!(delivered.status(), 200);

    // Tried again and again while disputes is down: waiting for it, never parked, and so
    // shown by the admin REST (the dashboard's "waiting for disputes since ...").
    let admin_get = |path: &'static str| {
        let (http, token, url) = (http.clone(), token.clone(), gateway.gateway_url(path));
        async move {
            let response = http.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let mut waiting = Value::Null;
    for _ in 0..1500 {
        let stats = admin_get("/api/admin/webhooks/stats").await;
        assert_eq!(
            stats["failed"], 0,
            "nothing is parked for an outage: {stats}"
        );
        let events = admin_get("/api/admin/webhooks/events?status=processing").await;
        let found = events["events"]
            .as_array()
            .and_then(|events| events.iter().find(|e| e["eventId"] == "evt_refund_outage"))
            .cloned();
        if let Some(found) = found
            && found["attempts"].as_i64().unwrap_or(0) >= 3
        {
            assert_eq!(stats["waiting"], 1, "{stats}");
            assert_eq!(stats["waitingFor"]["disputes"], 1, "{stats}");
            waiting = found;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(waiting["waitingFor"], "disputes", "{waiting}");
    assert!(waiting["waitingSince"].is_string(), "{waiting}");
    assert_eq!(waiting["refusals"], 0, "{waiting}");
    assert_eq!(waiting["status"], "processing", "{waiting}");

    // The disputes service is back (same address, same data): the refund is applied at its
    // next try, with no admin action.
    let disputes = Payouts::start(&["serve", "disputes"], StoreChoice::Embedded, &disputes_env);
    let disputes_channel = disputes.grpc_channel().await;
    let mut applied = None;
    for _ in 0..1500 {
        let earnings = DisputesServiceClient::new(disputes_channel.clone())
            .get_earnings(payouts_proto::disputes::v1::GetEarningsRequest {
                user_id: "pat".to_owned(),
                currency: "usd".to_owned(),
            })
            .await
            .unwrap()
            .into_inner();
        if earnings.active.as_ref().is_some_and(|m| m.cents == 0) {
            applied = Some(earnings);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    applied.expect("the refund was applied once disputes was back");
    let mut done = Value::Null;
    for _ in 0..500 {
        let stats = admin_get("/api/admin/webhooks/stats").await;
        if stats["completed"] == 1 {
            done = stats;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        (&done["completed"], &done["failed"], &done["waiting"]),
        (&json!(1), &json!(0), &json!(0)),
        "{done}"
    );
}
