//! Stripe operations end to end, against the real binary, the fake Stripe and real HTTP:
//! `payouts stripe setup-webhooks` creates then updates without duplicating; `payouts stripe
//! trigger` delivers every type we handle and the system applies it; an event Stripe never
//! delivered is recovered by the backfill and applied once (a late delivery too); the
//! reconciliation reports over the admin REST; and the admin payouts listing and detail its
//! findings point to.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

mod support;

use std::process::Stdio;
use std::time::Duration;

use payouts_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
use payouts_proto::payouts::v1::{PayoutStatus, RequestPayoutRequest};
use payouts_runtime::testing::fake_stripe::FakeStripe;
use payouts_runtime::testing::stripe;
use payouts_webhooks::domain::{Endpoint, endpoint_for};
use serde_json::{Value, json};
use support::{Payouts, StoreChoice};

const PAYOUTS_SECRET: &str = "whsec_e2e_ops_payouts";
const SUBSCRIPTION_SECRET: &str = "whsec_e2e_ops_subscription";
const TRANSFERS_SECRET: &str = "whsec_e2e_ops_transfers";
const ADMIN_SECRET: &str = "e2e-ops-admin-secret-of-at-least-32-bytes";

struct System {
    process: Payouts,
    stripe: FakeStripe,
}

async fn start(extra: &[(&str, &str)]) -> System {
    let stripe = FakeStripe::start().await;
    let mut env = vec![
        ("STRIPE_SECRET_KEY", "sk_test_e2e_ops"),
        ("STRIPE_API_BASE", stripe.url()),
        ("STRIPE_WEBHOOK_SECRET_PAYOUTS", PAYOUTS_SECRET),
        ("STRIPE_WEBHOOK_SECRET", SUBSCRIPTION_SECRET),
        ("STRIPE_WEBHOOK_SECRET_TRANSFERS", TRANSFERS_SECRET),
        ("ADMIN_JWT_SECRET", ADMIN_SECRET),
        ("WEBHOOK_POLL_MILLISECONDS", "20"),
        ("PAYOUT_POLL_MILLISECONDS", "50"),
        ("WEBHOOK_BACKFILL_INTERVAL", "off"),
        ("RECONCILIATION_INTERVAL", "off"),
    ];
    env.extend_from_slice(extra);
    let process = Payouts::start(&[], StoreChoice::Embedded, &env);
    System { process, stripe }
}

impl System {
    fn base(&self) -> String {
        self.process
            .gateway_url("")
            .trim_end_matches('/')
            .to_owned()
    }

    /// Runs `payouts <args>` as a command-line tool against this system: (success, stdout,
    /// stderr).
    fn tool(&self, args: &[&str]) -> (bool, String, String) {
        let output = support::command(
            args,
            &[
                ("STRIPE_SECRET_KEY", "sk_test_e2e_ops"),
                ("STRIPE_API_BASE", self.stripe.url()),
                ("STRIPE_WEBHOOK_SECRET_PAYOUTS", PAYOUTS_SECRET),
                ("STRIPE_WEBHOOK_SECRET", SUBSCRIPTION_SECRET),
                ("STRIPE_WEBHOOK_SECRET_TRANSFERS", TRANSFERS_SECRET),
            ],
        )
        .stdout(Stdio::piped())
        .output()
        .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let token = support::admin_token(ADMIN_SECRET, "ops", true);
        let client = reqwest::Client::new();
        let url = self.process.gateway_url(path);
        let mut request = match method {
            "POST" => client.post(url),
            _ => client.get(url),
        }
        .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn payouts(&self) -> PayoutsServiceClient<tonic::transport::Channel> {
        PayoutsServiceClient::new(self.process.grpc_channel().await)
    }

    /// A creator `user` with a processing payout of `cents`: its id and transfer.
    async fn processing_payout(&self, user: &str, cents: i64) -> (String, String) {
        support::register_creator(&self.process.grpc_channel().await, user, 400, 5_000_00).await;
        let payout = self
            .payouts()
            .await
            .request_payout(RequestPayoutRequest {
                user_id: user.to_owned(),
                amount: Some(payouts_proto::common::v1::Money {
                    cents,
                    currency: "usd".to_owned(),
                }),
                idempotency_key: format!("{user}-1"),
            })
            .await
            .unwrap()
            .into_inner()
            .payout
            .unwrap();
        assert_eq!(payout.status(), PayoutStatus::Processing);
        (payout.id, payout.stripe_transfer_id)
    }

    async fn wait_for_status(&self, payout_id: &str, status: PayoutStatus) {
        for _ in 0..400 {
            let payout = support::get_payout(&self.process.grpc_channel().await, payout_id).await;
            if payout.status() == status {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("payout {payout_id} never became {status:?}");
    }

    /// The stored inbox event `event_id`, waiting until it is no longer processing.
    async fn settled_event(&self, event_id: &str) -> Value {
        for _ in 0..400 {
            let (_, page) = self
                .admin("GET", "/api/admin/webhooks/events?limit=500", None)
                .await;
            if let Some(event) = page["events"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["eventId"] == event_id && e["status"] != "processing")
            {
                return event.clone();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("event {event_id} was never processed");
    }

    /// Stripe delivers `event` (signed) to the endpoint its type goes to: the gateway's
    /// answer.
    async fn deliver(&self, event: &Value) -> Value {
        let endpoint = endpoint_for(event["type"].as_str().unwrap()).unwrap();
        let secret = match endpoint {
            Endpoint::StripePayouts => PAYOUTS_SECRET,
            Endpoint::StripeTransfers => TRANSFERS_SECRET,
            Endpoint::StripeSubscription => SUBSCRIPTION_SECRET,
        };
        let response =
            support::deliver_webhook(&self.process, endpoint.path(), secret, event).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}

/// The webhook endpoints the fake Stripe holds, read through its own API.
async fn endpoints(stripe: &FakeStripe) -> Vec<Value> {
    let list: Value = reqwest::Client::new()
        .get(format!("{}/v1/webhook_endpoints?limit=100", stripe.url()))
        .bearer_auth("sk_test_e2e_ops")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["data"].as_array().unwrap().clone()
}

fn events_of(endpoint: &Value) -> Vec<String> {
    let mut events: Vec<String> = endpoint["enabled_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect();
    events.sort();
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_webhooks_creates_the_three_endpoints_then_updates_them_without_duplicating() {
    let system = start(&[]).await;
    let base = system.base();

    // A gateway that does not answer: nothing is created.
    let (ok, _, stderr) = system.tool(&["stripe", "setup-webhooks", "--url", "http://127.0.0.1:9"]);
    assert!(!ok);
    assert!(stderr.contains("nothing was created"), "{stderr}");
    assert!(endpoints(&system.stripe).await.is_empty());

    // A dry run changes nothing.
    let (ok, stdout, stderr) =
        system.tool(&["stripe", "setup-webhooks", "--url", &base, "--dry-run"]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.matches("would create").count(), 3, "{stdout}");
    assert!(endpoints(&system.stripe).await.is_empty());

    let (ok, stdout, stderr) = system.tool(&["stripe", "setup-webhooks", "--url", &base]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("is healthy"), "{stdout}");
    for line in [
        "STRIPE_WEBHOOK_SECRET_PAYOUTS=whsec_fake_endpoint_secret_1",
        "STRIPE_WEBHOOK_SECRET_TRANSFERS=whsec_fake_endpoint_secret_2",
        "STRIPE_WEBHOOK_SECRET=whsec_fake_endpoint_secret_3",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
    assert!(stdout.contains("Not subscribed: transfer.paid, transfer.failed"));
    let created = endpoints(&system.stripe).await;
    assert_eq!(created.len(), 3);
    let at = |path: &str| {
        created
            .iter()
            .find(|e| e["url"] == format!("{base}{path}"))
            .unwrap()
            .clone()
    };
    // The version async-stripe sends (stripe_shared::version::VERSION).
    let pinned = stripe_shared::version::VERSION;
    let payouts = at("/api/webhooks/stripe-payouts");
    assert_eq!(
        payouts["application"], "ca_fake_platform",
        "a Connect endpoint"
    );
    assert_eq!(
        events_of(&payouts),
        [
            "account.application.deauthorized",
            "account.updated",
            "payout.canceled",
            "payout.created",
            "payout.failed",
            "payout.paid",
            "payout.reconciliation_completed",
            "payout.updated",
        ]
    );
    let transfers = at("/api/webhooks/stripe-transfers");
    assert!(transfers["application"].is_null(), "an account endpoint");
    assert_eq!(
        events_of(&transfers),
        ["transfer.created", "transfer.reversed", "transfer.updated"]
    );
    let subscription = at("/api/webhooks/stripe-subscription");
    assert!(subscription["application"].is_null());
    // The platform's own charges: billing, refunds (with every refund status change) and
    // disputes with their fund movements.
    assert_eq!(
        events_of(&subscription),
        [
            "charge.dispute.closed",
            "charge.dispute.created",
            "charge.dispute.funds_reinstated",
            "charge.dispute.funds_withdrawn",
            "charge.refund.updated",
            "charge.refunded",
            "checkout.session.completed",
            "customer.subscription.created",
            "customer.subscription.deleted",
            "customer.subscription.updated",
            "invoice.payment_failed",
            "invoice.payment_succeeded",
            "refund.created",
            "refund.failed",
            "refund.updated",
        ]
    );
    for endpoint in [&payouts, &transfers, &subscription] {
        assert_eq!(endpoint["api_version"], pinned.as_str(), "{endpoint}");
    }

    // Someone narrows an endpoint in the dashboard: the next run puts its events back, in
    // place, and shows no secret (Stripe shows one only at creation).
    let id = payouts["id"].as_str().unwrap();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/webhook_endpoints/{id}", system.stripe.url()))
        .bearer_auth("sk_test_e2e_ops")
        .form(&[("enabled_events[0]", "payout.paid")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (ok, stdout, _) = system.tool(&["stripe", "setup-webhooks", "--url", &base, "--dry-run"]);
    assert!(ok);
    assert!(stdout.contains(&format!("would update {id}")), "{stdout}");
    let (ok, stdout, stderr) = system.tool(&["stripe", "setup-webhooks", "--url", &base]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(&format!("updated {id}")), "{stdout}");
    assert!(
        !stdout.contains("whsec_"),
        "no secret on an update: {stdout}"
    );
    let after = endpoints(&system.stripe).await;
    assert_eq!(after.len(), 3, "updated, not duplicated");
    let restored = after.iter().find(|e| e["id"] == id).unwrap();
    assert_eq!(events_of(restored), events_of(&payouts));
    let (ok, stdout, _) = system.tool(&["stripe", "setup-webhooks", "--url", &base]);
    assert!(ok);
    assert_eq!(stdout.matches("is up to date").count(), 3, "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_webhooks_migrates_a_connect_endpoint_that_subscribed_transfers() {
    let system = start(&[]).await;
    let base = system.base();
    // The old topology: transfer.* on the Connect payouts endpoint, no transfers endpoint.
    let old = reqwest::Client::new()
        .post(format!("{}/v1/webhook_endpoints", system.stripe.url()))
        .bearer_auth("sk_test_e2e_ops")
        .form(&[
            ("url", format!("{base}/api/webhooks/stripe-payouts")),
            ("connect", "true".to_owned()),
            ("enabled_events[0]", "transfer.created".to_owned()),
            ("enabled_events[1]", "transfer.updated".to_owned()),
            ("enabled_events[2]", "transfer.reversed".to_owned()),
            ("enabled_events[3]", "payout.paid".to_owned()),
            ("enabled_events[4]", "account.updated".to_owned()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 200);
    let old: Value = old.json().await.unwrap();
    let id = old["id"].as_str().unwrap();

    let (ok, stdout, stderr) = system.tool(&["stripe", "setup-webhooks", "--url", &base]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(
            "transfer.created, transfer.reversed, transfer.updated which Stripe never sends it"
        ),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("updated {id}")), "{stdout}");
    assert!(
        stdout.contains("renders events with API version the account's default"),
        "an endpoint's version is set only at creation: {stdout}"
    );
    // The Connect endpoint keeps its secret (none printed for it); the transfers endpoint
    // is new, and its secret is printed once.
    assert!(
        !stdout.contains("STRIPE_WEBHOOK_SECRET_PAYOUTS="),
        "{stdout}"
    );
    assert!(
        stdout.contains("STRIPE_WEBHOOK_SECRET_TRANSFERS=whsec_"),
        "{stdout}"
    );
    let after = endpoints(&system.stripe).await;
    assert_eq!(after.len(), 3);
    let connect = after.iter().find(|e| e["id"] == id).unwrap();
    assert!(
        events_of(connect)
            .iter()
            .all(|e| !e.starts_with("transfer.")),
        "{connect}"
    );
    let transfers = after
        .iter()
        .find(|e| e["url"] == format!("{base}/api/webhooks/stripe-transfers"))
        .unwrap();
    assert!(transfers["application"].is_null());
    assert_eq!(
        events_of(transfers),
        ["transfer.created", "transfer.reversed", "transfer.updated"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_delivers_every_type_we_handle_and_the_system_applies_it() {
    let system = start(&[]).await;
    let base = system.base();
    let (payout_id, _) = system.processing_payout("carol", 25_00).await;
    let types = [
        "transfer.created",
        "transfer.updated",
        "transfer.reversed",
        "transfer.paid",
        "transfer.failed",
        "payout.created",
        "payout.updated",
        "payout.failed",
        "payout.canceled",
        "payout.reconciliation_completed",
        "account.updated",
        "account.application.deauthorized",
        "checkout.session.completed",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "invoice.payment_succeeded",
        "invoice.payment_failed",
        "charge.refunded",
        "charge.dispute.created",
        "charge.dispute.closed",
        "charge.dispute.funds_withdrawn",
        "charge.dispute.funds_reinstated",
        "refund.created",
        "refund.updated",
        "refund.failed",
        "charge.refund.updated",
    ];
    let mut sent = Vec::new();
    for event_type in types {
        let mut args = vec!["stripe", "trigger", event_type, "--gateway", &base];
        // A connected account's event carries its account (not carol's: her payout waits).
        if endpoint_for(event_type) == Some(Endpoint::StripePayouts) {
            args.extend(["--account", "acct_bystander"]);
        }
        let (ok, stdout, stderr) = system.tool(&args);
        assert!(ok, "{event_type}: {stderr}");
        assert!(stdout.contains("200 OK"), "{event_type}: {stdout}");
        let id = stdout.split_whitespace().nth(1).unwrap().to_owned();
        sent.push((event_type, id));
    }
    for (event_type, id) in &sent {
        let event = system.settled_event(id).await;
        assert_eq!(event["eventType"], *event_type);
        assert_eq!(event["status"], "completed", "{event_type}: {event}");
        let endpoint = endpoint_for(event_type).unwrap();
        assert_eq!(event["webhookEndpoint"], endpoint.as_str(), "{event_type}");
        let outcome = event["outcome"].as_str().unwrap();
        let owner = if endpoint != Endpoint::StripeSubscription {
            Some("payouts")
        } else if event_type.starts_with("charge.") || event_type.starts_with("refund.") {
            Some("disputes")
        } else {
            None
        };
        match owner {
            Some(owner) => assert!(
                outcome.contains(&format!("by {owner}")),
                "{event_type}: {outcome}"
            ),
            None => assert!(
                outcome.contains("subscription billing"),
                "{event_type}: {outcome}"
            ),
        }
    }
    // The walkthrough's last step: the fake pays the creator's balance out to their bank
    // (reconciled), and its payout.paid completes the payout it carried. (A payout.paid
    // naming a bank payout Stripe does not show completes nothing.)
    let (ok, stdout, stderr) = system.tool(&["dev", "pay-out", "acct_carol"]);
    assert!(ok, "{stderr}");
    let bank_payout = stdout
        .split_whitespace()
        .nth(2)
        .unwrap()
        .trim_end_matches(':')
        .to_owned();
    assert!(bank_payout.starts_with("po_"), "{stdout}");
    let (ok, _, stderr) = system.tool(&[
        "stripe",
        "trigger",
        "payout.paid",
        "--gateway",
        &base,
        "--account",
        "acct_carol",
        "--set",
        &format!("data.object.id={bank_payout}"),
    ]);
    assert!(ok, "{stderr}");
    system
        .wait_for_status(&payout_id, PayoutStatus::Completed)
        .await;
    // Bad input: a type we do not handle, a malformed --set, a missing secret.
    let (ok, _, stderr) =
        system.tool(&["stripe", "trigger", "customer.created", "--gateway", &base]);
    assert!(
        !ok && stderr.contains("not an event type Payouts handles"),
        "{stderr}"
    );
    let (ok, _, stderr) = system.tool(&[
        "stripe",
        "trigger",
        "payout.paid",
        "--gateway",
        &base,
        "--account",
        "acct_carol",
        "--set",
        "amount",
    ]);
    assert!(!ok && stderr.contains("PATH=VALUE"), "{stderr}");
    // Each type as Stripe sends it: a connected account's with its account, the
    // platform's without.
    let (ok, _, stderr) = system.tool(&["stripe", "trigger", "payout.paid", "--gateway", &base]);
    assert!(!ok && stderr.contains("--account"), "{stderr}");
    let (ok, _, stderr) = system.tool(&[
        "stripe",
        "trigger",
        "transfer.reversed",
        "--gateway",
        &base,
        "--account",
        "acct_carol",
    ]);
    assert!(!ok && stderr.contains("platform"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undelivered_event_is_backfilled_and_applied_once_also_when_the_delivery_comes_late() {
    let system = start(&[("WEBHOOK_BACKFILL_INTERVAL", "1s")]).await;
    let (payout_id, transfer_id) = system.processing_payout("dora", 40_00).await;
    // The creator's bank payout is paid; Stripe never manages to deliver the event.
    let bank_payout = system.stripe.pay_out("acct_dora").unwrap();
    let event = system
        .stripe
        .events()
        .into_iter()
        .find(|e| e["type"] == "payout.paid" && e["data"]["object"]["id"] == bank_payout["id"])
        .unwrap();
    assert_eq!(event["account"], "acct_dora");
    // The periodic backfill finds it on the account with a payout in flight.
    system
        .wait_for_status(&payout_id, PayoutStatus::Completed)
        .await;
    let stored = system.settled_event(event["id"].as_str().unwrap()).await;
    assert_eq!(
        (stored["source"].as_str(), stored["deliveries"].as_i64()),
        (Some("backfill"), Some(0))
    );
    assert_eq!(stored["account"], "acct_dora");
    // Stripe's own retry finally gets through: a duplicate, applied once.
    let answer = system.deliver(&event).await;
    assert_eq!(answer, json!({ "received": true, "duplicate": true }));
    let audit = system
        .payouts()
        .await
        .list_audit_log(payouts_proto::payouts::v1::ListAuditLogRequest {
            payout_id: payout_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let completions = audit
        .iter()
        .filter(|e| e.to_status() == PayoutStatus::Completed)
        .count();
    assert_eq!(completions, 1, "applied once");
    let (_, stats) = system.admin("GET", "/api/admin/webhooks/stats", None).await;
    assert!(stats["backfilled"].as_i64().unwrap() >= 2, "{stats}");
    // The transfer's own undelivered event came in the same way (platform events).
    let created = system
        .stripe
        .events()
        .into_iter()
        .find(|e| {
            e["type"] == "transfer.created" && e["data"]["object"]["id"] == transfer_id.as_str()
        })
        .unwrap();
    let stored = system.settled_event(created["id"].as_str().unwrap()).await;
    assert_eq!(stored["source"], "backfill");
    assert_eq!(stored["webhookEndpoint"], "stripe-transfers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_backfills_a_window_and_a_delivered_event_is_not_stored_twice() {
    let system = start(&[]).await;
    let (payout_id, _) = system.processing_payout("erin", 30_00).await;
    // Delivered to us first; Stripe still lists it as undelivered (another endpoint failed).
    let mut reversal = stripe::event("evt_ops_reversed", "transfer.reversed", "transfer");
    reversal["data"]["object"] = system.stripe.transfers()[0].clone();
    system.deliver(&reversal).await;
    system.stripe.record_event(reversal.clone(), false);
    let bank_payout = system.stripe.pay_out("acct_erin").unwrap();

    let now = chrono::Utc::now();
    let since = (now - chrono::Duration::hours(1)).to_rfc3339();
    let (status, answer) = system
        .admin(
            "POST",
            "/api/admin/webhooks/backfill",
            Some(json!({ "since": since })),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    // transfer.created (undelivered), the reversal (delivered already), payout.paid and
    // payout.reconciliation_completed of the bank payout on the account in flight.
    assert_eq!(answer["accounts"], 1, "{answer}");
    assert_eq!(answer["listed"], 4, "{answer}");
    assert_eq!(
        (answer["stored"].as_i64(), answer["duplicates"].as_i64()),
        (Some(3), Some(1)),
        "{answer}"
    );
    system
        .wait_for_status(&payout_id, PayoutStatus::Completed)
        .await;
    assert!(bank_payout["id"].is_string());
    // Run again: what is listed is a duplicate now, and with the payout completed no account
    // has a payout in flight, so the bank payout's account is not asked.
    let (_, again) = system
        .admin(
            "POST",
            "/api/admin/webhooks/backfill",
            Some(json!({ "since": since })),
        )
        .await;
    assert_eq!(
        (
            again["listed"].as_i64(),
            again["stored"].as_i64(),
            again["duplicates"].as_i64(),
            again["accounts"].as_i64()
        ),
        (Some(2), Some(0), Some(2), Some(0)),
        "{again}"
    );

    // Bad input gets a 400 that says what is wrong.
    for (body, says) in [
        (
            json!({ "since": (now - chrono::Duration::days(31)).to_rfc3339() }),
            "30 days",
        ),
        (
            json!({ "since": (now + chrono::Duration::hours(1)).to_rfc3339() }),
            "future",
        ),
        (json!({ "since": "yesterday" }), "RFC 3339"),
        (json!({}), "since"),
    ] {
        let (status, error) = system
            .admin("POST", "/api/admin/webhooks/backfill", Some(body))
            .await;
        assert_eq!(status, 400, "{error}");
        assert!(error["error"].as_str().unwrap().contains(says), "{error}");
    }
    let unauthenticated = reqwest::Client::new()
        .post(system.process.gateway_url("/api/admin/webhooks/backfill"))
        .json(&json!({ "since": since }))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_over_the_admin_api_is_quiet_then_reports_an_orphan_transfer_with_an_alert()
{
    let system = start(&[]).await;
    system.processing_payout("fay", 12_00).await;
    let (status, clean) = system
        .admin("POST", "/api/admin/reconciliation/run", None)
        .await;
    assert_eq!(status, 200, "{clean}");
    assert_eq!(clean["report"]["status"], "clean", "{clean}");
    assert_eq!(clean["report"]["findings"], json!([]));
    assert_eq!(clean["report"]["triggeredBy"], "admin:ops");

    let orphan = system.stripe.make_transfer(3_00, "acct_unknown", &[]);
    let since = (chrono::Utc::now() - chrono::Duration::days(2)).to_rfc3339();
    let (status, run) = system
        .admin(
            "POST",
            "/api/admin/reconciliation/run",
            Some(json!({ "since": since })),
        )
        .await;
    assert_eq!(status, 200, "{run}");
    let report = &run["report"];
    assert_eq!(report["status"], "mismatches");
    assert_eq!(report["findings"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["findings"][0]["kind"], "orphan_transfer");
    assert_eq!(report["findings"][0]["transferId"], orphan["id"]);

    let (_, reports) = system
        .admin("GET", "/api/admin/reconciliation?limit=5", None)
        .await;
    let statuses: Vec<&str> = reports["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["mismatches", "clean"], "newest first");
    let mut alerted = false;
    for _ in 0..200 {
        let (_, alerts) = system.admin("GET", "/api/admin/alerts", None).await;
        alerted = alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["type"] == "reconciliation_mismatch" && a["severity"] == "critical");
        if alerted {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(alerted, "the mismatch is a critical alert");

    for (body, says) in [
        (json!({ "since": "last week" }), "RFC 3339"),
        (
            json!({ "since": (chrono::Utc::now() - chrono::Duration::days(91)).to_rfc3339() }),
            "90 days",
        ),
        (json!({ "window": 3 }), "window"),
    ] {
        let (status, error) = system
            .admin("POST", "/api/admin/reconciliation/run", Some(body))
            .await;
        assert_eq!(status, 400, "{error}");
        assert!(error["error"].as_str().unwrap().contains(says), "{error}");
    }
    let (status, _) = system
        .admin("GET", "/api/admin/reconciliation?limit=0", None)
        .await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_list_payouts_by_status_and_user_and_read_one_with_its_audit_log() {
    let system = start(&[]).await;
    let (gil, gil_transfer) = system.processing_payout("gil", 11_00).await;
    let (hal, _) = system.processing_payout("hal", 22_00).await;
    system.stripe.pay_out("acct_gil").unwrap();
    let mut paid = stripe::event("evt_admin_paid", "payout.paid", "payout");
    paid["account"] = json!("acct_gil");
    paid["data"]["object"] = system
        .stripe
        .events()
        .into_iter()
        .find(|e| e["type"] == "payout.paid")
        .unwrap()["data"]["object"]
        .clone();
    system.deliver(&paid).await;
    system.wait_for_status(&gil, PayoutStatus::Completed).await;

    let ids = |page: &Value| -> Vec<String> {
        page["payouts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, all) = system.admin("GET", "/api/admin/payouts", None).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(ids(&all), [hal.as_str(), gil.as_str()], "newest first");
    let (_, processing) = system
        .admin("GET", "/api/admin/payouts?status=processing", None)
        .await;
    assert_eq!(ids(&processing), [hal.as_str()]);
    let (_, of_gil) = system
        .admin("GET", "/api/admin/payouts?userId=gil", None)
        .await;
    assert_eq!(ids(&of_gil), [gil.as_str()]);
    assert_eq!(of_gil["payouts"][0]["status"], "completed");
    assert_eq!(of_gil["payouts"][0]["amountCents"], 11_00);
    let (_, first) = system
        .admin("GET", "/api/admin/payouts?limit=1", None)
        .await;
    assert_eq!(ids(&first), [hal.as_str()]);
    let token = first["nextPageToken"].as_str().unwrap();
    let (_, second) = system
        .admin(
            "GET",
            &format!("/api/admin/payouts?limit=1&pageToken={token}"),
            None,
        )
        .await;
    assert_eq!(ids(&second), [gil.as_str()]);

    let (status, detail) = system
        .admin("GET", &format!("/api/admin/payouts/{gil}"), None)
        .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["payout"]["stripeTransferId"], gil_transfer.as_str());
    assert!(
        detail["payout"]["stripePayoutId"]
            .as_str()
            .unwrap()
            .starts_with("po_")
    );
    let moves: Vec<(Value, Value)> = detail["auditLog"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["fromStatus"].clone(), e["toStatus"].clone()))
        .collect();
    assert_eq!(
        moves,
        [
            (json!("admitting"), json!("pending")),
            (json!("pending"), json!("processing")),
            (json!("processing"), json!("completed")),
        ]
    );
    // Completed once the bank payout that carried the transfer is reconciled: by the
    // `payout.paid` event when its object says so, otherwise by looking the bank payout up
    // (no event id then); either way the entry names the bank payout.
    let completed = &detail["auditLog"][2];
    let bank_payout = detail["payout"]["stripePayoutId"].as_str().unwrap();
    assert!(
        completed["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("bank payout {bank_payout}")),
        "{completed}"
    );
    assert!(
        completed["stripeEventId"].is_null() || completed["stripeEventId"] == "evt_admin_paid",
        "{completed}"
    );

    for (path, expected) in [
        ("/api/admin/payouts?status=admitting", 400),
        ("/api/admin/payouts?status=PROCESSING", 400),
        ("/api/admin/payouts?limit=0", 400),
        ("/api/admin/payouts?pageToken=nonsense", 400),
        ("/api/admin/payouts?userId=", 400),
        ("/api/admin/payouts/payout_nope", 404),
    ] {
        let (status, error) = system.admin("GET", path, None).await;
        assert_eq!(status, expected, "{path}: {error}");
        assert!(error["error"].is_string(), "{path}: {error}");
    }
}

/// `payouts stripe trigger` signs made-up events with an endpoint's secret: with a live
/// configuration they would be applied to real payouts, so it refuses before sending.
#[test]
fn trigger_refuses_a_live_configuration() {
    for live in [
        &[
            ("STRIPE_SECRET_KEY", "sk_live_ops"),
            ("STRIPE_LIVEMODE", "true"),
        ][..],
        &[("STRIPE_LIVEMODE", "true")][..],
    ] {
        let mut env = live.to_vec();
        env.extend([
            ("STRIPE_WEBHOOK_SECRET_PAYOUTS", PAYOUTS_SECRET),
            ("STRIPE_WEBHOOK_SECRET", SUBSCRIPTION_SECRET),
            ("STRIPE_WEBHOOK_SECRET_TRANSFERS", TRANSFERS_SECRET),
        ]);
        let output = support::command(
            &[
                "stripe",
                "trigger",
                "transfer.created",
                // Nothing listens there: a refusal must come before any request.
                "--gateway",
                "http://127.0.0.1:9",
            ],
            &env,
        )
        .output()
        .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("live configuration"), "{stderr}");
    }
}
