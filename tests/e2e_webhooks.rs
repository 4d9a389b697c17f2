//! Signed Stripe webhooks over HTTP into the real binary: acknowledgement, duplicates,
//! refusals, concurrent redelivery, dispatch to the owning service over gRPC, parking and
//! admin retry through the JWT-protected admin REST, metrics; on both stores.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

mod support;

use std::time::Duration;

use payouts_runtime::testing::stripe;
use serde_json::{Value, json};
use support::{Payouts, StoreChoice};

const PAYOUTS_SECRET: &str = "whsec_e2e_payouts";
const TRANSFERS_SECRET: &str = "whsec_e2e_transfers";
const SUBSCRIPTION_SECRET: &str = "whsec_e2e_subscription";
const ADMIN_SECRET: &str = "e2e-admin-jwt-secret-at-least-32-bytes";

fn start(store: StoreChoice, extra: &[(&str, &str)]) -> Payouts {
    let mut env = vec![
        ("STRIPE_WEBHOOK_SECRET_PAYOUTS", PAYOUTS_SECRET),
        ("STRIPE_WEBHOOK_SECRET", SUBSCRIPTION_SECRET),
        ("STRIPE_WEBHOOK_SECRET_TRANSFERS", TRANSFERS_SECRET),
        ("ADMIN_JWT_SECRET", ADMIN_SECRET),
        ("WEBHOOK_POLL_MILLISECONDS", "20"),
    ];
    env.extend_from_slice(extra);
    Payouts::start(&[], store, &env)
}

fn admin_token(admin: bool) -> String {
    let claims = json!({
        "sub": "admin-e2e",
        "admin": admin,
        "exp": chrono::Utc::now().timestamp() + 300,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(ADMIN_SECRET.as_bytes()),
    )
    .unwrap()
}

struct Client {
    http: reqwest::Client,
}

impl Client {
    fn new() -> Self {
        Self {
            http: reqwest::Client::new(),
        }
    }

    async fn deliver(
        &self,
        process: &Payouts,
        path: &str,
        body: &[u8],
        secret: &str,
    ) -> (u16, Value) {
        let header = stripe::signature_header(body, secret, chrono::Utc::now().timestamp());
        self.post_raw(process, path, body.to_vec(), Some(header))
            .await
    }

    async fn post_raw(
        &self,
        process: &Payouts,
        path: &str,
        body: Vec<u8>,
        signature: Option<String>,
    ) -> (u16, Value) {
        let mut request = self.http.post(process.gateway_url(path)).body(body);
        if let Some(signature) = signature {
            request = request.header("Stripe-Signature", signature);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn admin_get(&self, process: &Payouts, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(process.gateway_url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn admin_post(&self, process: &Payouts, path: &str, token: &str) -> (u16, Value) {
        let response = self
            .http
            .post(process.gateway_url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// Waits until the admin event list shows `event_id` satisfying `done`.
    async fn wait_for_event(
        &self,
        process: &Payouts,
        event_id: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let token = admin_token(true);
        let mut last = Value::Null;
        for _ in 0..1500 {
            let (status, body) = self
                .admin_get(
                    process,
                    "/api/admin/webhooks/events?limit=500",
                    Some(&token),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            if let Some(event) = body["events"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["eventId"] == event_id)
            {
                if done(event) {
                    return event.clone();
                }
                last = event.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("event {event_id} never reached the expected state; last seen {last}");
    }
}

fn body(id: &str, event_type: &str, object: &str) -> Vec<u8> {
    serde_json::to_vec(&stripe::event(id, event_type, object)).unwrap()
}

async fn acknowledges_duplicates_and_processes(process: &Payouts) {
    let client = Client::new();
    let invoice = body("evt_e2e_invoice", "invoice.paid", "invoice");
    let (status, answer) = client
        .deliver(
            process,
            "/api/webhooks/stripe-subscription",
            &invoice,
            SUBSCRIPTION_SECRET,
        )
        .await;
    assert_eq!((status, answer), (200, json!({ "received": true })));
    let (status, answer) = client
        .deliver(
            process,
            "/api/webhooks/stripe-subscription",
            &invoice,
            SUBSCRIPTION_SECRET,
        )
        .await;
    assert_eq!(
        (status, answer),
        (200, json!({ "received": true, "duplicate": true }))
    );
    let event = client
        .wait_for_event(process, "evt_e2e_invoice", |e| e["status"] == "completed")
        .await;
    assert_eq!(event["webhookEndpoint"], "stripe-subscription");
    assert_eq!(event["attempts"], 1);
    assert!(event["processedAt"].as_str().is_some());
    assert_eq!(event["metadata"]["apiVersion"], "2024-12-18.acacia");

    // A payouts event goes to the payouts service over gRPC, which answers for it.
    let transfer = body("evt_e2e_transfer", "transfer.created", "transfer");
    let (status, _) = client
        .deliver(
            process,
            "/api/webhooks/stripe-transfers",
            &transfer,
            TRANSFERS_SECRET,
        )
        .await;
    assert_eq!(status, 200);
    let event = client
        .wait_for_event(process, "evt_e2e_transfer", |e| e["status"] == "completed")
        .await;
    assert_eq!(
        event["outcome"],
        "no change by payouts: transfer of no known payout"
    );

    // A refund goes to the disputes service, which applies it (this charge funded nobody).
    let refund = body("evt_e2e_refund", "charge.refunded", "charge");
    let (status, _) = client
        .deliver(
            process,
            "/api/webhooks/stripe-subscription",
            &refund,
            SUBSCRIPTION_SECRET,
        )
        .await;
    assert_eq!(status, 200);
    let event = client
        .wait_for_event(process, "evt_e2e_refund", |e| e["status"] == "completed")
        .await;
    assert!(
        event["outcome"]
            .as_str()
            .unwrap()
            .contains("charge.refunded for charge ch_"),
        "{event}"
    );

    // An event its owner refuses (a dispute event carrying a charge) stays due for a retry,
    // with the owner's reason, never lost.
    let wrong = body("evt_e2e_wrong", "charge.dispute.created", "charge");
    let (status, _) = client
        .deliver(
            process,
            "/api/webhooks/stripe-subscription",
            &wrong,
            SUBSCRIPTION_SECRET,
        )
        .await;
    assert_eq!(status, 200);
    let event = client
        .wait_for_event(process, "evt_e2e_wrong", |e| {
            e["attempts"] == 1 && !e["error"].is_null()
        })
        .await;
    assert_eq!(event["status"], "processing");
    assert!(
        event["error"]
            .as_str()
            .unwrap()
            .contains("carries a \"charge\" object, not a dispute"),
        "{event}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_acknowledged_deduplicated_and_dispatched_on_the_embedded_store() {
    let process = start(StoreChoice::Embedded, &[]);
    acknowledges_duplicates_and_processes(&process).await;
    assert!(process.terminate().success());
}

/// The all-in-one process calls its own services in process; as separate processes the same
/// path goes over gRPC: gateway -> webhooks -> payouts, each in a process of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_reach_each_other_over_grpc() {
    let all = start(StoreChoice::Embedded, &[]);
    assert!(
        all.stderr_lines.iter().any(|line| line
            == "payouts: calls to [webhooks, payouts, limits, approvals, disputes, balance, notifications] stay in process (no socket)"),
        "{:#?}",
        all.stderr_lines
    );
    drop(all);

    let payouts = Payouts::start(&["serve", "payouts"], StoreChoice::Embedded, &[]);
    let payouts_url = payouts.grpc_url();
    let webhooks = Payouts::start(
        &["serve", "webhooks"],
        StoreChoice::Embedded,
        &[
            ("STRIPE_WEBHOOK_SECRET_PAYOUTS", PAYOUTS_SECRET),
            ("STRIPE_WEBHOOK_SECRET", SUBSCRIPTION_SECRET),
            ("STRIPE_WEBHOOK_SECRET_TRANSFERS", TRANSFERS_SECRET),
            ("WEBHOOK_POLL_MILLISECONDS", "20"),
            ("PAYOUTS_SERVICE_URL", &payouts_url),
        ],
    );
    let webhooks_url = webhooks.grpc_url();
    let gateway = Payouts::start(
        &["gateway"],
        StoreChoice::Embedded,
        &[
            ("ADMIN_JWT_SECRET", ADMIN_SECRET),
            ("WEBHOOKS_SERVICE_URL", &webhooks_url),
        ],
    );
    for process in [&payouts, &webhooks, &gateway] {
        assert!(
            !process
                .stderr_lines
                .iter()
                .any(|line| line.contains("stay in process")),
            "{:#?}",
            process.stderr_lines
        );
    }
    let client = Client::new();
    let transfer = body("evt_e2e_apart", "transfer.created", "transfer");
    let (status, answer) = client
        .deliver(
            &gateway,
            "/api/webhooks/stripe-transfers",
            &transfer,
            TRANSFERS_SECRET,
        )
        .await;
    assert_eq!((status, answer), (200, json!({ "received": true })));
    let event = client
        .wait_for_event(&gateway, "evt_e2e_apart", |e| e["status"] == "completed")
        .await;
    assert_eq!(
        event["outcome"],
        "no change by payouts: transfer of no known payout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_acknowledged_deduplicated_and_dispatched_on_mongodb() {
    let process = start(StoreChoice::Mongo, &[]);
    acknowledges_duplicates_and_processes(&process).await;
    assert!(process.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_deliveries_get_clear_4xx_answers() {
    let process = start(
        StoreChoice::Embedded,
        &[("GATEWAY_BODY_LIMIT_BYTES", "65536")],
    );
    let client = Client::new();
    let transfer = body("evt_e2e_bad", "transfer.created", "transfer");
    let path = "/api/webhooks/stripe-transfers";

    let (status, answer) = client
        .post_raw(&process, path, transfer.clone(), None)
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("missing Stripe-Signature header"))
    );
    let (status, answer) = client
        .post_raw(&process, path, transfer.clone(), Some("t=1".to_owned()))
        .await;
    assert_eq!(status, 401);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed Stripe-Signature header")
    );
    let (status, _) = client
        .deliver(&process, path, &transfer, SUBSCRIPTION_SECRET)
        .await;
    assert_eq!(
        status, 401,
        "the other endpoint's secret does not sign for this one"
    );
    let stale = stripe::signature_header(
        &transfer,
        TRANSFERS_SECRET,
        chrono::Utc::now().timestamp() - 3600,
    );
    let (status, answer) = client
        .post_raw(&process, path, transfer.clone(), Some(stale))
        .await;
    assert_eq!(status, 401);
    assert!(
        answer["error"].as_str().unwrap().contains("tolerance"),
        "{answer}"
    );
    let (status, answer) = client
        .deliver(&process, path, b"<xml/>", TRANSFERS_SECRET)
        .await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("body is not a Stripe event")
    );

    // An event Stripe cannot send to an endpoint is refused there, naming where it goes:
    // the subscription secret cannot inject a bank payout, a Connect endpoint never gets
    // the platform's transfers.
    let mut bank_payout: serde_json::Value =
        serde_json::from_slice(&body("evt_e2e_injected", "payout.paid", "payout")).unwrap();
    bank_payout["account"] = json!("acct_victim");
    let bank_payout = serde_json::to_vec(&bank_payout).unwrap();
    for (to, payload, secret, names) in [
        (
            "/api/webhooks/stripe-subscription",
            &bank_payout,
            SUBSCRIPTION_SECRET,
            "/api/webhooks/stripe-payouts",
        ),
        (
            "/api/webhooks/stripe-payouts",
            &transfer,
            PAYOUTS_SECRET,
            "/api/webhooks/stripe-transfers",
        ),
    ] {
        let (status, answer) = client.deliver(&process, to, payload, secret).await;
        assert_eq!(status, 400, "{to}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains(names), "{error}");
    }

    let token = admin_token(true);
    let (status, stats) = client
        .admin_get(&process, "/api/admin/webhooks/stats", Some(&token))
        .await;
    assert_eq!(
        (status, stats),
        (
            200,
            json!({ "total": 0, "processing": 0, "completed": 0, "failed": 0, "backfilled": 0, "waiting": 0, "waitingFor": {}, "alertsOwed": 0 })
        )
    );

    // Last, on its own client: the server answers 413 before reading the body and closes
    // the connection, which a pooled client would otherwise try to reuse.
    let oversized = vec![b' '; 70_000];
    let (status, _) = Client::new()
        .deliver(&process, path, &oversized, TRANSFERS_SECRET)
        .await;
    assert_eq!(status, 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_deliveries_over_http_are_stored_and_processed_once() {
    let process = start(StoreChoice::Mongo, &[]);
    let client = Client::new();
    let invoice = body("evt_e2e_fifty", "invoice.paid", "invoice");
    let header = stripe::signature_header(
        &invoice,
        SUBSCRIPTION_SECRET,
        chrono::Utc::now().timestamp(),
    );
    let url = process.gateway_url("/api/webhooks/stripe-subscription");
    let deliveries = (0..50).map(|_| {
        let request = client
            .http
            .post(&url)
            .header("Stripe-Signature", &header)
            .body(invoice.clone());
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    });
    let answers = futures::future::join_all(deliveries).await;
    let first_deliveries = answers
        .iter()
        .filter(|answer| answer.get("duplicate").is_none())
        .count();
    assert_eq!(first_deliveries, 1, "{answers:?}");
    let event = client
        .wait_for_event(&process, "evt_e2e_fifty", |e| e["status"] == "completed")
        .await;
    assert_eq!(event["attempts"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_event_is_visible_and_retried_by_an_admin() {
    let process = start(StoreChoice::Embedded, &[("WEBHOOK_MAX_ATTEMPTS", "1")]);
    let client = Client::new();
    // The disputes service refuses it (a dispute event carrying a charge object).
    let refund = body("evt_e2e_parked", "charge.dispute.created", "charge");
    client
        .deliver(
            &process,
            "/api/webhooks/stripe-subscription",
            &refund,
            SUBSCRIPTION_SECRET,
        )
        .await;
    client
        .wait_for_event(&process, "evt_e2e_parked", |e| e["status"] == "failed")
        .await;

    let token = admin_token(true);
    let (status, failed) = client
        .admin_get(
            &process,
            "/api/admin/webhooks/events?status=failed&limit=50",
            Some(&token),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(failed["events"].as_array().unwrap().len(), 1);
    let (_, stats) = client
        .admin_get(&process, "/api/admin/webhooks/stats", Some(&token))
        .await;
    assert_eq!(stats["failed"], 1);

    let (status, retried) = client
        .admin_post(
            &process,
            "/api/admin/webhooks/events/evt_e2e_parked/retry",
            &token,
        )
        .await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["retried"][0]["status"], "processing");
    assert_eq!(retried["retried"][0]["deliveries"], 2);
    // The owner still refuses, so it parks again: retried, not lost, not swallowed.
    client
        .wait_for_event(&process, "evt_e2e_parked", |e| {
            e["status"] == "failed" && e["deliveries"] == 2
        })
        .await;
    // Each parking raised a critical alert in the one alert store.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (status, alerts) = client
            .admin_get(
                &process,
                "/api/admin/alerts?status=all&type=webhook_event_parked",
                Some(&token),
            )
            .await;
        assert_eq!(status, 200, "{alerts}");
        let alerts = alerts["alerts"].as_array().unwrap().clone();
        if alerts.len() == 2 {
            assert_eq!(alerts[0]["severity"], "critical");
            assert_eq!(alerts[0]["metadata"]["eventId"], "evt_e2e_parked");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{alerts:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let (status, _) = client
        .admin_post(
            &process,
            "/api/admin/webhooks/events/evt_unknown/retry",
            &token,
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_need_an_admin_token_and_valid_queries() {
    let process = start(StoreChoice::Embedded, &[]);
    let client = Client::new();
    let (status, _) = client
        .admin_get(&process, "/api/admin/webhooks/stats", None)
        .await;
    assert_eq!(status, 401);
    let (status, _) = client
        .admin_get(&process, "/api/admin/webhooks/stats", Some("garbage"))
        .await;
    assert_eq!(status, 401);
    let (status, _) = client
        .admin_get(
            &process,
            "/api/admin/webhooks/stats",
            Some(&admin_token(false)),
        )
        .await;
    assert_eq!(status, 403);
    let token = admin_token(true);
    let (status, answer) = client
        .admin_get(
            &process,
            "/api/admin/webhooks/events?status=lost",
            Some(&token),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    let (status, _) = client
        .admin_get(&process, "/api/admin/webhooks/events?limit=0", Some(&token))
        .await;
    assert_eq!(status, 400);

    let invoice = body("evt_e2e_done", "invoice.paid", "invoice");
    client
        .deliver(
            &process,
            "/api/webhooks/stripe-subscription",
            &invoice,
            SUBSCRIPTION_SECRET,
        )
        .await;
    client
        .wait_for_event(&process, "evt_e2e_done", |e| e["status"] == "completed")
        .await;
    let (status, answer) = client
        .admin_post(
            &process,
            "/api/admin/webhooks/events/evt_e2e_done/retry",
            &token,
        )
        .await;
    assert_eq!(status, 409, "only failed events can be retried: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_received_duplicate_and_processed_webhooks() {
    let process = start(StoreChoice::Embedded, &[]);
    let client = Client::new();
    let invoice = body("evt_e2e_metrics", "invoice.paid", "invoice");
    for _ in 0..2 {
        client
            .deliver(
                &process,
                "/api/webhooks/stripe-subscription",
                &invoice,
                SUBSCRIPTION_SECRET,
            )
            .await;
    }
    client
        .deliver(
            &process,
            "/api/webhooks/stripe-subscription",
            &invoice,
            "whsec_wrong",
        )
        .await;
    client
        .wait_for_event(&process, "evt_e2e_metrics", |e| e["status"] == "completed")
        .await;
    let metrics = client
        .http
        .get(process.metrics_url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for expected in [
        "payouts_webhooks_received_total{endpoint=\"stripe-subscription\",type=\"invoice.paid\"} 2",
        "payouts_webhooks_duplicates_total{endpoint=\"stripe-subscription\"} 1",
        "payouts_webhooks_rejected_total{endpoint=\"stripe-subscription\",reason=\"mismatch\"} 1",
        "payouts_webhooks_processed_total{type=\"invoice.paid\",result=\"completed\"} 1",
        "payouts_webhooks_processing_seconds_count{type=\"invoice.paid\"} 1",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected} in\n{metrics}"
        );
    }
}
