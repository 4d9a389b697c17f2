//! The platform balance check end to end (design §5): the real binary, the fake Stripe's
//! `/v1/balance` scripted to each level, the cron endpoint over HTTP, snapshots and alerts
//! read back over gRPC.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

mod support;

use payouts_proto::balance::v1::balance_service_client::BalanceServiceClient;
use payouts_proto::balance::v1::{BalanceSnapshot, ListSnapshotsRequest};
use payouts_proto::notifications::v1::notifications_service_client::NotificationsServiceClient;
use payouts_proto::notifications::v1::{AlertStatus, CriticalAlert, ListCriticalAlertsRequest};
use payouts_runtime::testing::fake_stripe::FakeStripe;
use serde_json::{Value, json};
use support::{Payouts, StoreChoice, register_creator};
use tonic::transport::Channel;

const CRON_SECRET: &str = "cron-e2e-secret-of-at-least-32-bytes";
const CRON_API_KEY: &str = "cron-e2e-api-key-of-at-least-32-bytes";
const ADMIN_SECRET: &str = "admin-e2e-secret-long-enough-for-hs256";

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
        ("CRON_SECRET", CRON_SECRET),
        ("CRON_API_KEY", CRON_API_KEY),
        ("ADMIN_JWT_SECRET", ADMIN_SECRET),
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

impl System {
    /// Runs the cron with `token`; the status and the JSON body.
    async fn cron(&self, method: reqwest::Method, token: &str) -> (u16, Value) {
        let response = self
            .http
            .request(
                method,
                self.process.gateway_url("/api/cron/platform-balance-check"),
            )
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn check(&self, available_dollars: i64) -> Value {
        self.stripe.set_balance(available_dollars * 100, 5_000_00);
        let (status, body) = self.cron(reqwest::Method::GET, CRON_SECRET).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// An admin call: the status and the JSON body.
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
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn alerts(&self, status: AlertStatus) -> Vec<CriticalAlert> {
        NotificationsServiceClient::new(self.channel.clone())
            .list_critical_alerts(ListCriticalAlertsRequest {
                status: status.into(),
                page_size: 100,
                page_token: String::new(),
                r#type: String::new(),
                level: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .alerts
    }

    async fn snapshots(&self) -> usize {
        snapshots(&self.channel, 500).await.len()
    }

    /// Whether new transfers are paused, as `GET /api/admin/balance` shows it.
    async fn transfer_pause(&self) -> Value {
        let (status, overview) = self
            .admin(reqwest::Method::GET, "/api/admin/balance", None)
            .await;
        assert_eq!(status, 200, "{overview}");
        overview["data"]["transferPause"].clone()
    }
}

/// The newest `count` snapshots, newest first.
async fn snapshots(channel: &Channel, count: i32) -> Vec<BalanceSnapshot> {
    BalanceServiceClient::new(channel.clone())
        .list_snapshots(ListSnapshotsRequest {
            page_size: count,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .snapshots
}

fn titles(body: &Value) -> Vec<String> {
    body["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|alert| alert["title"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cron_answers_each_level_and_alerts_follow_without_duplicates() {
    // The balance's own alerts only (the transfer pause and its alerts are the next test's).
    let system = start_with(StoreChoice::Embedded, &[("BALANCE_PAUSE_AT", "off")]).await;
    // A creator with $3,000 of earnings not yet requested, on an account Stripe has not
    // enabled yet: $3,000 owed, a $3,600 reserve.
    register_creator(&system.channel, "creator_owed", 400, 3_000_00).await;

    // Healthy: design §5's body exactly.
    let body = system.check(25_000).await;
    assert_eq!(
        body,
        json!({
            "success": true,
            "data": {
                "balanceStatus": {
                    "thresholdStatus": "healthy",
                    "availableBalance": 2_500_000,
                    "pendingObligations": 300_000,
                    "requiredReserve": 360_000,
                    "availableForPayouts": 2_140_000,
                    "daysOfCoverage": null,
                    "isHealthy": true,
                    "isWarning": false,
                    "isCritical": false
                },
                "alerts": [],
                "alertsCreated": 0,
                "trend": { "direction": "stable", "averageChange": 0 }
            }
        })
    );
    let snapshot = snapshots(&system.channel, 1).await.remove(0);
    assert_eq!(snapshot.users_with_unpaid_earnings, 1);
    assert_eq!(snapshot.users_without_bank_accounts, 1);
    assert_eq!(snapshot.total_balance.unwrap().cents, 3_000_000);

    // Warning, and the fall of $18,000 since the last check is a depletion risk.
    let body = system.check(7_000).await;
    let status = &body["data"]["balanceStatus"];
    assert_eq!(status["thresholdStatus"], "warning");
    assert_eq!(status["isWarning"], true);
    assert_eq!(body["data"]["trend"]["direction"], "decreasing");
    assert_eq!(body["data"]["alertsCreated"], 2);
    let mut raised = titles(&body);
    raised.sort();
    assert_eq!(
        raised,
        [
            "Risk: Platform Balance May Deplete in 0 Days",
            "Warning: Platform Balance Below Recommended Level"
        ]
    );
    // The cron again, and with the other token, by POST: nothing new.
    let body = system.check(7_000).await;
    assert_eq!(body["data"]["alertsCreated"], 0);
    system.stripe.set_balance(7_000_00, 5_000_00);
    let (status, body) = system.cron(reqwest::Method::POST, CRON_API_KEY).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["alertsCreated"], 0);

    // Critical: the warning escalates (resolved, a critical one opened).
    let body = system.check(500).await;
    assert_eq!(body["data"]["balanceStatus"]["thresholdStatus"], "critical");
    assert_eq!(body["data"]["balanceStatus"]["isCritical"], true);
    assert_eq!(
        titles(&body),
        ["Critical: Platform Balance Below Minimum Threshold"]
    );
    assert_eq!(body["data"]["alerts"][0]["severity"], "critical");
    let active = system.alerts(AlertStatus::Active).await;
    assert_eq!(active.len(), 2, "{active:?}");
    let resolved = system.alerts(AlertStatus::Resolved).await;
    assert_eq!(resolved.len(), 1);
    assert_eq!(
        resolved[0].title,
        "Warning: Platform Balance Below Recommended Level"
    );
    assert_eq!(resolved[0].resolved_by, "balance");
    assert!(
        resolved[0]
            .resolution_notes
            .starts_with("escalated from warning to critical"),
        "{:?}",
        resolved[0].resolution_notes
    );

    // Depleted: worse again, one more alert.
    let body = system.check(0).await;
    assert_eq!(body["data"]["balanceStatus"]["thresholdStatus"], "depleted");
    assert_eq!(body["data"]["alertsCreated"], 1);

    // Admins see the open alerts, acknowledge the depletion risk; the balance as last seen.
    let (status, open) = system
        .admin(
            reqwest::Method::GET,
            "/api/admin/alerts?type=platform_balance_depletion_risk",
            None,
        )
        .await;
    assert_eq!(status, 200, "{open}");
    let risk = &open["alerts"][0];
    assert_eq!(open["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(risk["requiresAttention"], true);
    assert_eq!(risk["resolved"], false);
    let risk_id = risk["id"].as_str().unwrap().to_owned();
    let (status, acknowledged) = system
        .admin(
            reqwest::Method::POST,
            &format!("/api/admin/alerts/{risk_id}/acknowledge"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{acknowledged}");
    assert_eq!(acknowledged["alert"]["status"], "acknowledged");
    assert_eq!(
        acknowledged["alert"]["acknowledgedBy"],
        "admin:ops@example.com"
    );
    assert_eq!(acknowledged["alert"]["requiresAttention"], false);
    let (status, bad) = system
        .admin(
            reqwest::Method::GET,
            "/api/admin/alerts?status=closed",
            None,
        )
        .await;
    assert_eq!(status, 400);
    assert!(bad["error"].as_str().unwrap().contains("status must be"));
    let (status, overview) = system
        .admin(reqwest::Method::GET, "/api/admin/balance", None)
        .await;
    assert_eq!(status, 200, "{overview}");
    assert_eq!(
        overview["data"]["balanceStatus"]["thresholdStatus"],
        "depleted"
    );
    assert_eq!(overview["data"]["snapshots"].as_array().unwrap().len(), 6);
    assert_eq!(
        overview["data"]["snapshots"][0]["metadata"]["usersWithUnpaidEarnings"],
        1
    );

    // Funds added: healthy and rising, every alert resolved.
    let body = system.check(60_000).await;
    assert_eq!(body["data"]["balanceStatus"]["thresholdStatus"], "healthy");
    assert_eq!(body["data"]["trend"]["direction"], "increasing");
    assert_eq!(body["data"]["alertsCreated"], 0);
    assert!(system.alerts(AlertStatus::Active).await.is_empty());
    assert_eq!(system.alerts(AlertStatus::Resolved).await.len(), 4);
    // An admin's resolution keeps their notes; resolving again changes nothing.
    let (_, all) = system
        .admin(
            reqwest::Method::GET,
            "/api/admin/alerts?status=all&limit=2",
            None,
        )
        .await;
    assert_eq!(all["alerts"].as_array().unwrap().len(), 2);
    assert!(all["nextPageToken"].is_string());
    let (status, resolved) = system
        .admin(
            reqwest::Method::POST,
            &format!("/api/admin/alerts/{risk_id}/resolve"),
            Some(json!({ "notes": "funds added" })),
        )
        .await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["alert"]["status"], "resolved");
    assert_eq!(
        resolved["alert"]["resolvedBy"], "balance",
        "balance resolved it first"
    );
    let (status, missing) = system
        .admin(
            reqwest::Method::POST,
            "/api/admin/alerts/alert_nothing/acknowledge",
            None,
        )
        .await;
    assert_eq!(status, 404, "{missing}");
    assert_eq!(system.snapshots().await, 7, "one snapshot per check");

    // Stripe does not answer: 502, nothing recorded.
    system.stripe.fail_next_balance(500, "api_error");
    let (status, body) = system.cron(reqwest::Method::GET, CRON_SECRET).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["success"], false);
    assert_eq!(system.snapshots().await, 7);

    // A wrong token.
    let (status, _) = system.cron(reqwest::Method::GET, "not-the-secret").await;
    assert_eq!(status, 401);

    // Design §10's figures on /metrics: the last check's balance, and the HTTP routes by
    // template.
    let metrics = system
        .http
        .get(system.process.metrics_url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "payouts_balance_available_cents 6000000",
        "payouts_balance_pending_obligations_cents 300000",
        "payouts_balance_threshold_status 0",
        "payouts_balance_days_of_coverage -1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} not in\n{metrics}"
        );
    }
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("payouts_http_requests_total")
                && l.contains("route=\"/api/cron/platform-balance-check\"")
                && l.contains("status=\"401\"")),
        "{metrics}"
    );
    // And every gRPC method's answers by status code (the failed check was Unavailable).
    let answered = |code: &str| {
        metrics.lines().any(|l| {
            l.starts_with("payouts_grpc_server_responses_total")
                && l.contains("method=\"/payouts.balance.v1.BalanceService/RunBalanceCheck\"")
                && l.contains(&format!("code=\"{code}\""))
        })
    };
    assert!(answered("Ok") && answered("Unavailable"), "{metrics}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("payouts_grpc_server_duration_seconds")),
        "{metrics}"
    );
}

/// Two replicas on one MongoDB database, the check scheduled every second: each slot is run
/// by one of them (two runs of one slot would be two snapshots a few milliseconds apart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_check_runs_once_per_slot_with_two_replicas() {
    let stripe = FakeStripe::start().await;
    stripe.set_balance(25_000_00, 0);
    let uri = payouts_runtime::testing::mongo_uri();
    let database = payouts_runtime::testing::unique_database_name("e2e_schedule");
    let env = [
        ("STRIPE_SECRET_KEY", "sk_test_e2e"),
        ("STRIPE_API_BASE", stripe.url()),
        ("MONGODB_URI", uri.as_str()),
        ("MONGODB_DATABASE", database.as_str()),
        ("BALANCE_CHECK_SCHEDULE", "* * * * * *"),
    ];
    let first = Payouts::start(&[], StoreChoice::Embedded, &env);
    let second = Payouts::start(&[], StoreChoice::Embedded, &env);
    tokio::time::sleep(std::time::Duration::from_millis(4_500)).await;
    let channel = first.grpc_channel().await;
    let mut taken: Vec<i64> = snapshots(&channel, 500)
        .await
        .into_iter()
        .map(|snapshot| {
            let at = snapshot.timestamp.unwrap();
            at.seconds * 1_000 + i64::from(at.nanos / 1_000_000)
        })
        .collect();
    drop(second);
    drop(first);
    taken.sort_unstable();
    assert!(taken.len() >= 2, "the schedule ran: {taken:?}");
    for pair in taken.windows(2) {
        assert!(
            pair[1] - pair[0] >= 500,
            "one run per slot, not one per replica: {taken:?}"
        );
    }
}

/// At depleted, new transfers pause by themselves: a payout requested then is admitted and
/// waits. Depletion is level 3 (design §10): the notifications service halts transfers too,
/// so a healthy balance alone does not restart them; an admin lifts the halt with notes (not
/// without), and the payout is transferred. An admin can pause and resume by hand, and the
/// balance does not undo an admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_pause_at_depleted_and_resume_when_the_balance_recovers() {
    use payouts_proto::common::v1::Money;
    use payouts_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
    use payouts_proto::payouts::v1::{GetPayoutRequest, PayoutStatus, RequestPayoutRequest};

    let system = start(StoreChoice::Embedded).await;
    register_creator(&system.channel, "creator_waits", 400, 1_000_00).await;
    system
        .stripe
        .set_payouts_enabled("acct_creator_waits", true);
    let body = system.check(0).await;
    assert_eq!(body["data"]["balanceStatus"]["thresholdStatus"], "depleted");
    let pause = &system.transfer_pause().await;
    assert_eq!(pause["paused"], true, "{pause}");
    assert_eq!(pause["cause"], "automatic");
    assert_eq!(pause["changedBy"], "balance");

    let mut payouts = PayoutsServiceClient::new(system.channel.clone());
    let payout = payouts
        .request_payout(RequestPayoutRequest {
            user_id: "creator_waits".to_owned(),
            amount: Some(Money {
                cents: 100_00,
                currency: "usd".to_owned(),
            }),
            idempotency_key: "waits_1".to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .payout
        .unwrap();
    assert_eq!(payout.status(), PayoutStatus::Pending, "admitted, waiting");
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    assert!(
        system.stripe.transfers().is_empty(),
        "no transfer while paused"
    );

    // The level-3 halt follows (owed by notifications, applied by its worker).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let pause = system.transfer_pause().await;
        if pause["cause"] == "escalation" {
            assert_eq!(pause["paused"], true, "{pause}");
            assert_eq!(pause["changedBy"], "notifications", "{pause}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never halted: {pause}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The balance recovers: its own pause would lift, but the halt holds.
    system.check(50_000).await;
    let pause = system.transfer_pause().await;
    assert_eq!(pause["paused"], true, "{pause}");
    assert_eq!(pause["cause"], "escalation", "{pause}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        system.stripe.transfers().is_empty(),
        "no transfer while halted"
    );
    // Only an admin lifts it, saying what was checked.
    let (status, refused) = system
        .admin(reqwest::Method::POST, "/api/admin/balance/resume", None)
        .await;
    assert_eq!(status, 409, "{refused}");
    assert!(system.stripe.transfers().is_empty());
    let (status, lifted) = system
        .admin(
            reqwest::Method::POST,
            "/api/admin/balance/resume",
            Some(json!({ "reason": "funds added; checked the Stripe balance" })),
        )
        .await;
    assert_eq!(status, 200, "{lifted}");
    assert_eq!(lifted["transferPause"]["paused"], false, "{lifted}");
    // The payout goes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = payouts
            .get_payout(GetPayoutRequest {
                payout_id: payout.id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .payout
            .unwrap();
        if now.status() == PayoutStatus::Processing {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still {:?}",
            now.status()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(system.stripe.transfers().len(), 1);

    // Depleted again: a new episode, a new level-3 alert and its halt. Lifting the halt
    // (with notes) is not overriding the balance check: the balance's pause it covered
    // stays. An admin then lifts that pause by hand: the next still-depleted check does not
    // pause again what the admin lifted, and the same open alert does not halt twice.
    system.check(0).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while system.transfer_pause().await["cause"] != "escalation" {
        assert!(
            std::time::Instant::now() < deadline,
            "the new episode never halted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        system.transfer_pause().await["beneath"],
        "automatic",
        "the halt covers the balance's pause"
    );
    let (status, lifted) = system
        .admin(
            reqwest::Method::POST,
            "/api/admin/balance/resume",
            Some(json!({
                "reason": "checked: a known depletion, funds are on their way",
                "cause": "escalation"
            })),
        )
        .await;
    assert_eq!(status, 200, "{lifted}");
    assert_eq!(lifted["transferPause"]["paused"], true, "{lifted}");
    assert_eq!(lifted["transferPause"]["cause"], "automatic", "{lifted}");
    assert_eq!(lifted["transferPause"]["beneath"], Value::Null, "{lifted}");
    assert_eq!(lifted["transferPause"]["overridden"], false);
    // The same resume again (its answer was lost, the admin presses again): refused, the
    // balance's pause it left in force stays.
    let (status, again) = system
        .admin(
            reqwest::Method::POST,
            "/api/admin/balance/resume",
            Some(json!({
                "reason": "checked: a known depletion, funds are on their way",
                "cause": "escalation"
            })),
        )
        .await;
    assert_eq!(status, 409, "{again}");
    assert!(again.to_string().contains("automatic"), "{again}");
    assert_eq!(system.transfer_pause().await["cause"], "automatic");
    system.check(0).await;
    let pause = system.transfer_pause().await;
    assert_eq!(
        (&pause["paused"], &pause["cause"]),
        (&json!(true), &json!("automatic")),
        "{pause}"
    );
    let (status, resumed) = system
        .admin(
            reqwest::Method::POST,
            "/api/admin/balance/resume",
            Some(json!({ "reason": "funds are on their way" })),
        )
        .await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed["transferPause"]["paused"], false);
    assert_eq!(resumed["transferPause"]["overridden"], true);
    system.check(0).await;
    assert_eq!(system.transfer_pause().await["paused"], false);

    // Bad input changes nothing: a reason longer than the API document allows, an empty
    // level filter.
    let (status, refused) = system
        .admin(
            reqwest::Method::POST,
            "/api/admin/balance/pause",
            Some(json!({ "reason": "x".repeat(256) })),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused.to_string().contains("255"), "{refused}");
    assert_eq!(system.transfer_pause().await["paused"], false);
    let (status, refused) = system
        .admin(reqwest::Method::GET, "/api/admin/alerts?level=", None)
        .await;
    assert_eq!(status, 400, "{refused}");

    // An admin's pause outlasts a healthy balance; every change raised an alert.
    let (status, _) = system
        .admin(reqwest::Method::POST, "/api/admin/balance/pause", None)
        .await;
    assert_eq!(status, 200);
    system.check(50_000).await;
    let pause = &system.transfer_pause().await;
    assert_eq!(pause["paused"], true);
    assert_eq!(pause["cause"], "manual");
    assert_eq!(pause["changedBy"], "admin:ops@example.com");
    let (_, alerts) = system
        .admin(
            reqwest::Method::GET,
            "/api/admin/alerts?status=all&type=payout_transfers_paused",
            None,
        )
        .await;
    // Newest first: the balance's pause, the halt, the balance's pause, the halt of the new
    // episode, the balance's pause again, the admin's.
    let causes: Vec<&str> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|alert| alert["metadata"]["cause"].as_str().unwrap())
        .collect();
    assert_eq!(
        causes,
        [
            "automatic",
            "escalation",
            "automatic",
            "escalation",
            "automatic",
            "manual"
        ],
        "{alerts}"
    );
    let (_, alerts) = system
        .admin(
            reqwest::Method::GET,
            "/api/admin/alerts?status=all&type=payout_transfers_resumed",
            None,
        )
        .await;
    // Every lift was an admin's, with the notes given: the recovered balance lifted nothing
    // while the halt held, and lifting the second halt left the balance's pause (a change
    // recorded as a pause, above).
    let reasons: Vec<&str> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|alert| alert["metadata"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "funds added; checked the Stripe balance",
            "funds are on their way"
        ],
        "{alerts}"
    );
}

/// Alert emails reach a real SMTP server (aiosmtpd) with design §5's subjects, each once, to
/// every recipient, with the figures and a link to the dashboard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_emails_arrive_with_the_spec_subjects() {
    use payouts_runtime::testing::smtp::SmtpServer;

    let smtp = SmtpServer::start();
    let url = smtp.url();
    let system = start_with(
        StoreChoice::Embedded,
        &[
            ("BALANCE_PAUSE_AT", "off"),
            ("SMTP_URL", url.as_str()),
            ("ALERT_EMAIL_TO", "ops@example.com,finance@example.com"),
            ("ALERT_EMAIL_FROM", "Payouts <payouts@example.com>"),
            ("DASHBOARD_URL", "https://admin.example.com"),
        ],
    )
    .await;
    system.check(25_000).await;
    system.check(7_000).await; // a warning, and a fall of $18,000: a depletion risk
    system.check(7_000).await; // nothing new
    system.check(500).await; // critical
    let received = tokio::task::spawn_blocking(move || {
        let received = smtp.wait_for(3, std::time::Duration::from_secs(30));
        // Anything more would be a duplicate: give it a moment to show up.
        std::thread::sleep(std::time::Duration::from_millis(1_500));
        (received.len(), smtp.received())
    })
    .await
    .unwrap();
    let (_, received) = received;
    let mut subjects: Vec<&str> = received
        .iter()
        .map(|email| email.subject.as_str())
        .collect();
    subjects.sort_unstable();
    assert_eq!(
        subjects,
        [
            "Risk: Platform Balance May Deplete in 0 Days",
            "[CRITICAL] Critical: Platform Balance Below Minimum Threshold",
            "[WARNING] Warning: Platform Balance Below Recommended Level",
        ],
        "each alert emailed once"
    );
    for email in &received {
        assert_eq!(email.to, ["ops@example.com", "finance@example.com"]);
        assert!(
            email
                .body
                .contains("https://admin.example.com/admin/#/alerts/alert_platform_balance"),
            "{}",
            email.body
        );
    }
    let critical = received
        .iter()
        .find(|email| email.subject.starts_with("[CRITICAL]"))
        .unwrap();
    assert!(
        critical.body.contains("Available balance $500.00")
            && critical.body.contains("Add funds to the Stripe balance"),
        "{}",
        critical.body
    );
    let (_, alerts) = system
        .admin(reqwest::Method::GET, "/api/admin/alerts?status=all", None)
        .await;
    for alert in alerts["alerts"].as_array().unwrap() {
        assert_eq!(alert["email"]["status"], "sent", "{alert}");
        assert_eq!(alert["email"]["attempts"], 1, "{alert}");
    }
}
