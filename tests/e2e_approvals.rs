//! Design §8 scenario 3 end to end, the reject path, decisions racing, and who may decide:
//! the real binary, a fake Stripe, signed webhooks and the JWT-protected admin REST API.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

mod support;

use std::time::Duration;

use payouts_proto::common::v1::Money;
use payouts_proto::notifications::v1::ListNotificationsRequest;
use payouts_proto::notifications::v1::notifications_service_client::NotificationsServiceClient;
use payouts_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
use payouts_proto::payouts::v1::{GetPayoutRequest, Payout, PayoutStatus, RequestPayoutRequest};
use payouts_runtime::testing::fake_stripe::FakeStripe;
use payouts_runtime::testing::stripe;
use serde_json::{Value, json};
use support::{Payouts, StoreChoice};
use tonic::transport::Channel;

const PAYOUTS_SECRET: &str = "whsec_e2e_approvals";
const TRANSFERS_SECRET: &str = "whsec_e2e_approvals_transfers";
const ADMIN_SECRET: &str = "e2e-approvals-admin-secret-of-32-bytes+";

struct System {
    process: Payouts,
    stripe: FakeStripe,
    channel: Channel,
    http: reqwest::Client,
}

async fn start(store: StoreChoice) -> System {
    start_with(store, &[]).await
}

async fn start_with(store: StoreChoice, extra: &[(&str, &str)]) -> System {
    let stripe = FakeStripe::start().await;
    let mut env = vec![
        ("STRIPE_SECRET_KEY", "sk_test_e2e"),
        ("STRIPE_API_BASE", stripe.url()),
        ("STRIPE_WEBHOOK_SECRET_PAYOUTS", PAYOUTS_SECRET),
        ("STRIPE_WEBHOOK_SECRET_TRANSFERS", TRANSFERS_SECRET),
        ("ADMIN_JWT_SECRET", ADMIN_SECRET),
        ("ADMIN_USER_IDS", "admin-1,admin-2"),
        ("WEBHOOK_POLL_MILLISECONDS", "20"),
        ("PAYOUT_POLL_MILLISECONDS", "50"),
    ];
    env.extend_from_slice(extra);
    let process = Payouts::start(&[], store, &env);
    let channel = process.grpc_channel().await;
    System {
        process,
        stripe,
        channel,
        http: reqwest::Client::new(),
    }
}

fn token(subject: &str, admin: bool) -> String {
    support::admin_token(ADMIN_SECRET, subject, admin)
}

impl System {
    async fn creator(&self, user_id: &str) {
        support::register_creator(&self.channel, user_id, 400, 100_000_00).await;
    }

    async fn request(&self, user_id: &str, cents: i64) -> Payout {
        PayoutsServiceClient::new(self.channel.clone())
            .request_payout(RequestPayoutRequest {
                user_id: user_id.to_owned(),
                amount: Some(Money {
                    cents,
                    currency: "usd".to_owned(),
                }),
                idempotency_key: format!("{user_id}-{cents}"),
            })
            .await
            .unwrap()
            .into_inner()
            .payout
            .unwrap()
    }

    async fn payout(&self, payout_id: &str) -> Payout {
        PayoutsServiceClient::new(self.channel.clone())
            .get_payout(GetPayoutRequest {
                payout_id: payout_id.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .payout
            .unwrap()
    }

    async fn decide(&self, subject: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.process.gateway_url("/api/admin/payout-approval"))
            .bearer_auth(token(subject, true))
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// The approval of `payout_id`, once it is in the queue.
    async fn queued(&self, payout_id: &str) -> Value {
        for _ in 0..1500 {
            let response = self
                .http
                .get(
                    self.process
                        .gateway_url("/api/admin/payout-approvals?status=all&limit=500"),
                )
                .bearer_auth(token("admin-1", true))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let body: Value = response.json().await.unwrap();
            if let Some(found) = body["approvals"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["payoutId"] == payout_id)
            {
                return found.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("payout {payout_id} never reached the approval queue");
    }

    async fn notifications(&self, recipient: &str) -> Vec<Value> {
        NotificationsServiceClient::new(self.channel.clone())
            .list_notifications(ListNotificationsRequest { recipient_id: recipient.to_owned(), unread_only: false, page_size: 100, page_token: String::new() })
            .await
            .unwrap()
            .into_inner()
            .notifications
            .into_iter()
            .map(|n| json!({ "type": n.r#type, "metadata": serde_json::from_str::<Value>(&n.metadata_json).unwrap_or(Value::Null) }))
            .collect()
    }

    async fn wait_for_notification(&self, recipient: &str, kind: &str) -> Value {
        for _ in 0..1500 {
            if let Some(found) = self
                .notifications(recipient)
                .await
                .into_iter()
                .find(|n| n["type"] == kind)
            {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{recipient} never got a {kind} notification");
    }

    async fn paid_webhook(&self, transfer: &Value) {
        let mut event = stripe::event(
            &format!("evt_paid_{}", transfer["id"].as_str().unwrap()),
            "transfer.paid",
            "transfer",
        );
        event["data"]["object"] = transfer.clone();
        let body = serde_json::to_vec(&event).unwrap();
        let header =
            stripe::signature_header(&body, TRANSFERS_SECRET, chrono::Utc::now().timestamp());
        let response = self
            .http
            .post(self.process.gateway_url("/api/webhooks/stripe-transfers"))
            .header("Stripe-Signature", header)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    async fn wait_for_status(&self, payout_id: &str, status: PayoutStatus) -> Payout {
        for _ in 0..1500 {
            let payout = self.payout(payout_id).await;
            if payout.status() == status {
                return payout;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("payout {payout_id} never became {status:?}");
    }
}

async fn scenario_3(system: &System) {
    system.creator("frank").await;
    // A $7,500 request is held for approval, with no Stripe call.
    let held = system.request("frank", 7_500_00).await;
    assert_eq!(held.status(), PayoutStatus::PendingApproval);
    assert!(system.stripe.transfers().is_empty());

    let approval = system.queued(&held.id).await;
    assert_eq!(approval["status"], "pending");
    assert_eq!(approval["amountCents"], 7_500_00);
    assert!(
        approval["flags"]
            .as_array()
            .unwrap()
            .contains(&json!("REQUIRES_ADMIN_APPROVAL"))
    );
    assert_eq!(approval["userContext"]["lifetimeEarnings"], 100_000_00);
    assert!(approval["userContext"]["accountAgeDays"].as_i64().unwrap() >= 399);

    // Every admin is told, with the design §7 metadata.
    for admin in ["admin-1", "admin-2"] {
        let notice = system
            .wait_for_notification(admin, "payout_approval_required")
            .await;
        assert_eq!(notice["metadata"]["approvalId"], approval["id"]);
        assert_eq!(notice["metadata"]["payoutId"], held.id.as_str());
        assert_eq!(notice["metadata"]["amountCents"], 7_500_00);
    }

    // The admin approves: the payout is transferred at once.
    let (status, answer) = system
        .decide(
            "admin-1",
            json!({ "approvalId": approval["id"], "action": "approve", "notes": "verified" }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let transfers = system.stripe.transfers();
    assert_eq!(transfers.len(), 1);
    assert_eq!(answer["success"], true);
    assert_eq!(
        answer["message"],
        "Payout approved and processed successfully"
    );
    assert_eq!(answer["transferId"], transfers[0]["id"]);
    assert_eq!(answer["approval"]["status"], "approved");
    assert_eq!(answer["approval"]["approvalsRequired"], 1);
    assert_eq!(answer["approval"]["approvals"][0]["reviewer"], "admin-1");
    // Deciding again is a conflict with the current state.
    let (status, answer) = system
        .decide(
            "admin-2",
            json!({ "approvalId": approval["id"], "action": "reject", "notes": "late" }),
        )
        .await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["approval"]["status"], "approved");
    assert_eq!(answer["approval"]["reviewedBy"], "admin-1");

    // The signed transfer webhook completes it; the user hears of approval and completion.
    system.paid_webhook(&transfers[0]).await;
    system
        .wait_for_status(&held.id, PayoutStatus::Completed)
        .await;
    system
        .wait_for_notification("frank", "payout_approved")
        .await;
    system
        .wait_for_notification("frank", "payout_completed")
        .await;
    assert_eq!(system.stripe.transfers().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_3_a_held_payout_is_approved_transferred_and_completed_on_the_embedded_store() {
    let system = start(StoreChoice::Embedded).await;
    scenario_3(&system).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_3_on_mongodb() {
    let system = start(StoreChoice::Mongo).await;
    scenario_3(&system).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_payout_fails_with_the_admins_reason_and_releases_its_quota() {
    let system = start(StoreChoice::Embedded).await;
    system.creator("gina").await;
    let held = system.request("gina", 6_000_00).await;
    let approval = system.queued(&held.id).await;

    let (status, answer) = system
        .decide(
            "admin-1",
            json!({ "approvalId": approval["id"], "action": "reject" }),
        )
        .await;
    assert_eq!(status, 400, "notes are required to reject: {answer}");
    let (status, answer) = system
        .decide(
            "admin-1",
            json!({ "approvalId": "approval_nope", "action": "approve" }),
        )
        .await;
    assert_eq!(status, 404, "{answer}");

    let (status, answer) = system
        .decide("admin-1", json!({ "approvalId": approval["id"], "action": "reject", "notes": "Suspicious activity" }))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["message"], "Payout rejected successfully");
    assert_eq!(answer["approval"]["status"], "rejected");
    let failed = system.wait_for_status(&held.id, PayoutStatus::Failed).await;
    assert_eq!(
        failed.failure_reason,
        "Rejected by admin: Suspicious activity"
    );
    system
        .wait_for_notification("gina", "payout_rejected")
        .await;
    assert!(system.stripe.transfers().is_empty());
    // The quota came back: the same amount can be requested again (and is held again).
    let again = PayoutsServiceClient::new(system.channel.clone())
        .request_payout(RequestPayoutRequest {
            user_id: "gina".to_owned(),
            amount: Some(Money {
                cents: 6_000_00,
                currency: "usd".to_owned(),
            }),
            idempotency_key: "gina-again".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let decision = again.decision.unwrap();
    assert!(
        decision.allowed
            || decision
                .flags()
                .any(|f| f == payouts_proto::limits::v1::PayoutFlag::TooSoon),
        "{decision:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_decisions_make_one_decision_and_at_most_one_transfer() {
    let system = start(StoreChoice::Mongo).await;
    for (creator, first, second) in [
        ("hank", "approve", "approve"),
        ("iris", "approve", "reject"),
    ] {
        system.creator(creator).await;
        let held = system.request(creator, 8_000_00).await;
        let approval = system.queued(&held.id).await;
        let body = |action: &str| json!({ "approvalId": approval["id"], "action": action, "notes": "race" });
        let (a, b) = tokio::join!(
            system.decide("admin-1", body(first)),
            system.decide("admin-2", body(second))
        );
        let mut statuses = [a.0, b.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "{creator}: {a:?} {b:?}");
        let transfers_to_creator = system
            .stripe
            .transfers()
            .iter()
            .filter(|t| t["destination"] == format!("acct_{creator}"))
            .count();
        assert!(
            transfers_to_creator <= 1,
            "{creator}: {transfers_to_creator} transfers"
        );
        let payout = system.payout(&held.id).await;
        assert_eq!(
            transfers_to_creator,
            usize::from(payout.status() == PayoutStatus::Processing),
            "{payout:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_admin_who_is_not_the_payee_decides() {
    let system = start(StoreChoice::Embedded).await;
    system.creator("jack").await;
    let held = system.request("jack", 5_500_00).await;
    let approval = system.queued(&held.id).await;
    let body = json!({ "approvalId": approval["id"], "action": "approve" });
    let url = system.process.gateway_url("/api/admin/payout-approval");

    let response = system.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 401, "no token");
    let response = system
        .http
        .post(&url)
        .bearer_auth(token("someone", false))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403, "not an admin");
    let (status, answer) = system.decide("jack", body.clone()).await;
    assert_eq!(
        status, 403,
        "an admin cannot approve their own payout: {answer}"
    );
    assert_eq!(
        system.payout(&held.id).await.status(),
        PayoutStatus::PendingApproval
    );
}

/// Dual control at $6,000: strictly above it, two different admins approve.
const DUAL_CONTROL: [(&str, &str); 1] = [("APPROVAL_DUAL_CONTROL_CENTS", "600000")];

impl System {
    /// The creator's transfers once there is at least one: an approval can be applied with
    /// its transfer left to the worker ("the transfer is being retried", a legitimate answer:
    /// under load the payable re-check can go unanswered, and the transfer is deferred by the
    /// work backoff, 30 s and more).
    async fn transferred_to(&self, creator: &str) -> Vec<Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
        loop {
            let transfers = self.transfers_to(creator);
            if !transfers.is_empty() || std::time::Instant::now() > deadline {
                return transfers;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    fn transfers_to(&self, creator: &str) -> Vec<Value> {
        self.stripe
            .transfers()
            .into_iter()
            .filter(|t| t["destination"] == format!("acct_{creator}"))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_the_dual_control_amount_two_different_admins_approve_before_money_moves() {
    let system = start_with(StoreChoice::Embedded, &DUAL_CONTROL).await;

    // At the amount: one approval decides, as without dual control.
    system.creator("lena").await;
    let at_amount = system.request("lena", 6_000_00).await;
    let approval = system.queued(&at_amount.id).await;
    assert_eq!(approval["approvalsRequired"], 1);
    let (status, answer) = system
        .decide(
            "admin-1",
            json!({ "approvalId": approval["id"], "action": "approve" }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["approval"]["status"], "approved");
    assert_eq!(system.transfers_to("lena").len(), 1);

    // One cent above: the first approval is recorded and waits, with no money moved.
    system.creator("mona").await;
    let held = system.request("mona", 6_000_01).await;
    assert_eq!(held.status(), PayoutStatus::PendingApproval);
    let approval = system.queued(&held.id).await;
    assert_eq!(approval["approvalsRequired"], 2);
    assert_eq!(approval["approvals"], json!([]));
    let (status, answer) = system
        .decide(
            "admin-1",
            json!({ "approvalId": approval["id"], "action": "approve", "notes": "called the creator" }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["transferId"], Value::Null);
    assert!(
        answer["message"].as_str().unwrap().contains("1 of 2"),
        "{answer}"
    );
    assert_eq!(answer["approval"]["status"], "pending");
    let waiting = system.queued(&held.id).await;
    assert_eq!(waiting["status"], "pending");
    assert_eq!(waiting["approvals"].as_array().unwrap().len(), 1);
    assert_eq!(waiting["approvals"][0]["reviewer"], "admin-1");
    assert_eq!(waiting["approvals"][0]["notes"], "called the creator");
    assert!(waiting["approvals"][0]["approvedAt"].is_string());
    assert_eq!(waiting["reviewedBy"], Value::Null);
    assert!(system.transfers_to("mona").is_empty());
    assert_eq!(
        system.payout(&held.id).await.status(),
        PayoutStatus::PendingApproval
    );

    // The same admin again: refused (409), still 1 of 2, still no money.
    let (status, answer) = system
        .decide(
            "admin-1",
            json!({ "approvalId": approval["id"], "action": "approve" }),
        )
        .await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("different admin"),
        "{answer}"
    );
    assert_eq!(answer["approval"]["approvals"].as_array().unwrap().len(), 1);
    // The payee cannot be the second approver either.
    let (status, answer) = system
        .decide(
            "mona",
            json!({ "approvalId": approval["id"], "action": "approve" }),
        )
        .await;
    assert_eq!(status, 403, "{answer}");
    assert!(system.transfers_to("mona").is_empty());

    // A second, different admin decides: the transfer happens now, once.
    let (status, answer) = system
        .decide(
            "admin-2",
            json!({ "approvalId": approval["id"], "action": "approve" }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let transfers = system.transfers_to("mona");
    assert_eq!(transfers.len(), 1);
    assert_eq!(answer["transferId"], transfers[0]["id"]);
    assert_eq!(
        answer["message"],
        "Payout approved and processed successfully"
    );
    assert_eq!(answer["approval"]["status"], "approved");
    assert_eq!(answer["approval"]["reviewedBy"], "admin-2");
    let reviewers: Vec<&str> = answer["approval"]["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["reviewer"].as_str().unwrap())
        .collect();
    assert_eq!(reviewers, ["admin-1", "admin-2"]);
    assert_eq!(
        system.payout(&held.id).await.status(),
        PayoutStatus::Processing
    );

    // After a first approval, a rejection by another admin decides at once.
    system.creator("nora").await;
    let held = system.request("nora", 9_000_00).await;
    let approval = system.queued(&held.id).await;
    let (status, _) = system
        .decide(
            "admin-1",
            json!({ "approvalId": approval["id"], "action": "approve" }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, answer) = system
        .decide(
            "admin-2",
            json!({ "approvalId": approval["id"], "action": "reject", "notes": "not verified" }),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    system.wait_for_status(&held.id, PayoutStatus::Failed).await;
    assert!(system.transfers_to("nora").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_dual_control_approvals_decide_once_and_one_admin_counts_once() {
    let system = start_with(StoreChoice::Mongo, &DUAL_CONTROL).await;
    let approve = |approval: &Value| json!({ "approvalId": approval["id"], "action": "approve" });

    for round in 0..3 {
        // Two admins approve a fresh approval at the same moment: one is the first of two,
        // the other (deciding against the recorded first) the second; one transfer.
        let creator = format!("olga{round}");
        system.creator(&creator).await;
        let held = system.request(&creator, 7_000_00).await;
        let approval = system.queued(&held.id).await;
        let (a, b) = tokio::join!(
            system.decide("admin-1", approve(&approval)),
            system.decide("admin-2", approve(&approval))
        );
        assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
        let decided = [&a.1, &b.1]
            .iter()
            .filter(|answer| answer["approval"]["status"] == "approved")
            .count();
        assert_eq!(decided, 1, "exactly one 2 of 2 decision: {a:?} {b:?}");
        assert_eq!(
            system.transferred_to(&creator).await.len(),
            1,
            "{a:?} {b:?}"
        );

        // One admin approving twice at the same moment is counted once.
        let creator = format!("pia{round}");
        system.creator(&creator).await;
        let held = system.request(&creator, 7_000_00).await;
        let approval = system.queued(&held.id).await;
        let (a, b) = tokio::join!(
            system.decide("admin-1", approve(&approval)),
            system.decide("admin-1", approve(&approval))
        );
        let mut statuses = [a.0, b.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
        let waiting = system.queued(&held.id).await;
        assert_eq!(waiting["status"], "pending");
        assert_eq!(waiting["approvals"].as_array().unwrap().len(), 1);
        assert!(system.transfers_to(&creator).is_empty());

        // Two second approvals racing: one decides, the other finds it decided.
        let (a, b) = tokio::join!(
            system.decide("admin-2", approve(&approval)),
            system.decide("admin-3", approve(&approval))
        );
        let mut statuses = [a.0, b.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
        assert_eq!(
            system.transferred_to(&creator).await.len(),
            1,
            "{a:?} {b:?}"
        );
    }
}
