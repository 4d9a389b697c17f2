//! The admin dashboard end to end, in a real headless Chromium: the real binary on the
//! embedded store and the fake Stripe, seeded through its APIs (gRPC as the platform, signed
//! webhooks as Stripe, the admin REST), then `tests/browser/dashboard.py` (Playwright) signs
//! in (an approver; a viewer, with `ADMIN_JWT_ROLE_CLAIM`, sees every page and no action),
//! approves one payout and rejects another (a rejection without notes is refused in the
//! page), sees the 409 when two tabs decide the same approval, retries a failed webhook
//! event, resolves an alert, reads the balance chart, runs a reconciliation, and checks phone
//! width; with dual control on (`APPROVAL_DUAL_CONTROL_CENTS`), sees "1 of 2" and the first
//! approver on a large payout and gives the second approval; pages through more than 100
//! approvals and alerts; filters alerts by level; and sees the transfer halt (an escalation's
//! reason) as a banner on every page until it resumes transfers. Screenshots go to `target/screenshots/`; with `UPDATE_SCREENSHOTS=1` also to
//! `docs/screenshots/` (the README's).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

mod support;

use payouts_proto::common::v1::Money;
use payouts_proto::notifications::v1::notifications_service_client::NotificationsServiceClient;
use payouts_proto::notifications::v1::{AlertSeverity, CreateCriticalAlertRequest};
use payouts_proto::payouts::v1::RequestPayoutRequest;
use payouts_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
use payouts_runtime::testing::fake_stripe::FakeStripe;
use payouts_runtime::testing::{browser, stripe};
use support::{Payouts, StoreChoice};

const PAYOUTS_SECRET: &str = "whsec_dashboard_payouts";
const TRANSFERS_SECRET: &str = "whsec_dashboard_transfers";
const ADMIN_SECRET: &str = "dashboard-admin-secret-of-at-least-32-bytes";
const ROLE_CLAIM: &str = "payouts_role";

/// An admin token with its role in `ROLE_CLAIM`, valid five minutes.
fn token_with_role(subject: &str, role: &str) -> String {
    let claims = serde_json::json!({
        "sub": subject,
        "admin": true,
        ROLE_CLAIM: role,
        "exp": chrono::Utc::now().timestamp() + 300,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(ADMIN_SECRET.as_bytes()),
    )
    .unwrap()
}

/// Requests a payout that waits for an admin.
async fn request(
    channel: &tonic::transport::Channel,
    user: &str,
    cents: i64,
) -> payouts_proto::payouts::v1::Payout {
    let payout = PayoutsServiceClient::new(channel.clone())
        .request_payout(RequestPayoutRequest {
            user_id: user.to_owned(),
            amount: Some(Money {
                cents,
                currency: "usd".to_owned(),
            }),
            idempotency_key: format!("{user}-dashboard"),
        })
        .await
        .unwrap()
        .into_inner()
        .payout
        .unwrap();
    assert!(
        payout.approval_required,
        "{user}'s payout waits for an admin"
    );
    payout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_works_the_dashboard_in_a_real_browser() {
    // The browser first: a machine without one fails here, saying how to get it.
    let chromium = browser::chromium();
    let python = browser::playwright_python();

    let stripe_api = FakeStripe::start().await;
    let process = Payouts::start(
        &[],
        StoreChoice::Embedded,
        &[
            ("STRIPE_SECRET_KEY", "sk_test_dashboard"),
            ("STRIPE_API_BASE", stripe_api.url()),
            ("STRIPE_WEBHOOK_SECRET_PAYOUTS", PAYOUTS_SECRET),
            ("STRIPE_WEBHOOK_SECRET_TRANSFERS", TRANSFERS_SECRET),
            ("ADMIN_JWT_SECRET", ADMIN_SECRET),
            ("ADMIN_JWT_ROLE_CLAIM", ROLE_CLAIM),
            ("WEBHOOK_POLL_MILLISECONDS", "20"),
            ("WEBHOOK_MAX_ATTEMPTS", "1"),
            ("WEBHOOK_BACKFILL_INTERVAL", "off"),
            ("RECONCILIATION_INTERVAL", "off"),
            ("APPROVAL_DUAL_CONTROL_CENTS", "700000"),
        ],
    );
    let channel = process.grpc_channel().await;
    // 101 alerts, older than every other: the alerts page pages past its first 100 to reach
    // the oldest.
    for number in 0..=100 {
        NotificationsServiceClient::new(channel.clone())
            .create_critical_alert(CreateCriticalAlertRequest {
                r#type: "dashboard_filler".to_owned(),
                // Even: a limits flag (level 1, its signal shown); odd: a critical alert
                // without a signal (level 2, from its severity).
                severity: if number % 2 == 0 {
                    AlertSeverity::Warning
                } else {
                    AlertSeverity::Critical
                }
                .into(),
                title: format!("Filler alert {number:03}"),
                description: "Seeded for paging".to_owned(),
                data_json: String::new(),
                dedupe_key: format!("dashboard-filler-{number}"),
                signal: if number % 2 == 0 { "limits_flag" } else { "" }.to_owned(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    // Three creators whose payouts wait for an admin (above $5,000).
    for user in ["alice", "bob", "carol"] {
        support::register_creator(&channel, user, 400, 9_000_00).await;
        request(&channel, user, 6_000_00).await;
    }
    // Above the dual-control amount ($7,000): two different admins approve. "first-admin"
    // gives the first approval before the browser looks.
    support::register_creator(&channel, "dora", 400, 20_000_00).await;
    let large = request(&channel, "dora", 8_000_00).await;
    // 101 more approvals after those four: the queue (oldest first) pages past its first 100.
    for number in 0..=100 {
        let user = format!("filler-{number:03}");
        support::register_creator(&channel, &user, 400, 9_000_00).await;
        request(&channel, &user, 5_500_00).await;
    }
    // A Stripe event no owner can apply: parked as failed (one attempt), with its alert.
    let mut broken = stripe::event("evt_dashboard_broken", "transfer.created", "transfer");
    broken["data"]["object"] = serde_json::json!({ "object": "transfer" });
    let delivered = support::deliver_webhook(
        &process,
        "/api/webhooks/stripe-transfers",
        TRANSFERS_SECRET,
        &broken,
    )
    .await;
    assert_eq!(delivered.status(), 200);
    let http = reqwest::Client::new();
    // Two balance checks: two snapshots for the chart.
    let token = token_with_role("dashboard-admin", "approver");
    let viewer = token_with_role("dashboard-viewer", "viewer");
    for _ in 0..2 {
        let checked = http
            .post(process.gateway_url("/api/admin/balance/check"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(checked.status(), 200);
    }
    // (The approval may reach the queue just after the request answers: 404 until then.)
    let mut first = serde_json::Value::Null;
    for attempt in 0.. {
        let answer = http
            .post(process.gateway_url("/api/admin/payout-approval"))
            .bearer_auth(token_with_role("first-admin", "approver"))
            .json(&serde_json::json!({
                "approvalId": format!("approval_{}", large.id),
                "action": "approve",
                "notes": "checked the bank account",
            }))
            .send()
            .await
            .unwrap();
        if answer.status() == 200 {
            first = answer.json().await.unwrap();
            break;
        }
        assert_eq!(answer.status(), 404, "the first approval");
        assert!(attempt < 200, "dora's approval never reached the queue");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(first["approval"]["status"], "pending", "{first}");
    // The event is parked (and its alert raised) before the browser looks.
    for attempt in 0.. {
        let failed: serde_json::Value = http
            .get(process.gateway_url("/api/admin/webhooks/events?status=failed"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if failed["events"]
            .as_array()
            .is_some_and(|events| !events.is_empty())
        {
            break;
        }
        assert!(attempt < 200, "the broken event was never parked");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }

    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let base = process.gateway_url("").trim_end_matches('/').to_owned();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.py");
    let output = tokio::task::spawn_blocking({
        let (chromium, python, shots) = (chromium.clone(), python.clone(), shots.clone());
        move || {
            std::process::Command::new(python)
                .arg(script)
                .arg(chromium)
                .arg(&base)
                .arg(&token)
                .arg(&shots)
                .arg(&viewer)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the dashboard in Chromium:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("every step as expected"), "{stdout}");
    if std::env::var("UPDATE_SCREENSHOTS").is_ok_and(|value| value == "1") {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&docs).unwrap();
        for entry in std::fs::read_dir(&shots).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, docs.join(path.file_name().unwrap())).unwrap();
        }
    }
}
