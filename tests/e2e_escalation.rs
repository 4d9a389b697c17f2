//! Escalation level 3 end to end (design §10, issue 23): the real binary, a real Alertmanager
//! it pages through (`ALERTMANAGER_URL`), a real Prometheus scraping it with the chart's rules,
//! and Alertmanager's webhook receiver. A burst of disputes delivered as signed Stripe webhooks
//! raises the level-3 alert: the leads are paged (the receiver gets it, with its labels and
//! links), automated payouts halt (a payout requested then waits in PENDING, no transfer at
//! Stripe), an admin resolves the alert (the page ends at the receiver) and lifts the halt with
//! notes (refused without them), and the waiting payout is transferred once. Along the way:
//! a dispute delivered twice counts once, a fourth escalates the open alert (no second one),
//! an acknowledged alert keeps paging, and Prometheus's PayoutsTransfersHalted fires and ends.
//!
//! Settings: `ALERT_PAGE_INTERVAL_SECONDS=2` (quick re-pushes), `ESCALATION_DISPUTES=3/60`
//! (the default, stated), `RUNBOOK_BASE_URL` left at its default. Every wait polls with a
//! deadline ([`PATIENCE`]); the only fixed window watches that nothing is transferred while
//! halted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use payouts_proto::common::v1::Money;
use payouts_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
use payouts_proto::payouts::v1::{PayoutStatus, RequestPayoutRequest};
use payouts_proto::webhooks::v1::webhooks_service_client::WebhooksServiceClient;
use payouts_proto::webhooks::v1::{EventStatus, GetEventRequest, WebhookEndpoint};
use payouts_runtime::testing::fake_stripe::FakeStripe;
use payouts_runtime::testing::prometheus::{Monitoring, PATIENCE, Prometheus, PrometheusOptions};
use payouts_runtime::testing::stripe;
use serde_json::{Value, json};
use support::{Payouts, StoreChoice};
use tonic::transport::Channel;

const SUBSCRIPTION_SECRET: &str = "whsec_e2e_escalation";
const ADMIN_SECRET: &str = "admin-secret-for-escalation-e2e-32-bytes";
const DASHBOARD_URL: &str = "https://admin.payouts.example";
/// `RUNBOOK_BASE_URL`'s default (not set here), the chart's rules' base too.
const RUNBOOKS: &str = "https://github.com/payouts/payouts/blob/main/docs/runbooks.md";

fn workspace_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The anchors docs/runbooks.md has: its headings' GitHub slugs and explicit `<a id="...">`s.
fn runbook_anchors() -> std::collections::BTreeSet<String> {
    let path = workspace_file("docs/runbooks.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path:?}: {error}"));
    let mut anchors = std::collections::BTreeSet::new();
    for line in text.lines() {
        if let Some(heading) = line.trim_start_matches('#').strip_prefix(' ')
            && line.starts_with('#')
        {
            anchors.insert(
                heading
                    .to_lowercase()
                    .chars()
                    .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                    .map(|c| if c == ' ' { '-' } else { c })
                    .collect(),
            );
        }
        let mut rest = line;
        while let Some(start) = rest.find("<a id=\"") {
            let tail = &rest[start + 7..];
            let end = tail.find('"').unwrap_or(tail.len());
            anchors.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    anchors
}

/// A page's `runbook_url` is `<RUNBOOK_BASE_URL>#<alert type>`: every type that can reach
/// level 3 (the windowed rules' escalation alerts, and the balance alert at depletion) has
/// its section in docs/runbooks.md, so the link the leads are paged with leads somewhere.
#[test]
fn every_paged_alert_type_has_a_runbook_section() {
    use payouts_notifications::escalation::Rule;
    let anchors = runbook_anchors();
    let kinds = [
        Rule::RepeatedPayoutFailures,
        Rule::DisputeBurst,
        Rule::FraudAcrossCreators,
        Rule::UnableToPay,
        Rule::UnknownOutcomesPiling,
    ]
    .map(Rule::kind);
    for kind in kinds
        .iter()
        .copied()
        .chain(["platform_balance", "creator_earnings_wiped"])
    {
        assert!(
            anchors.contains(kind),
            "docs/runbooks.md has no anchor #{kind} for the pages' runbook_url"
        );
    }
}

struct System {
    process: Payouts,
    stripe: FakeStripe,
    monitoring: Monitoring,
    prometheus: Prometheus,
    channel: Channel,
    http: reqwest::Client,
}

impl System {
    async fn start() -> System {
        // The receiver and Alertmanager first (the binary pages there), then the binary,
        // then Prometheus scraping it and alerting through the same Alertmanager.
        let monitoring = Monitoring::start(PrometheusOptions::default()).await;
        let stripe = FakeStripe::start().await;
        let alertmanager_url = monitoring.alertmanager_url();
        let process = Payouts::start(
            &[],
            StoreChoice::Embedded,
            &[
                ("STRIPE_SECRET_KEY", "sk_test_e2e"),
                ("STRIPE_API_BASE", stripe.url()),
                ("STRIPE_WEBHOOK_SECRET", SUBSCRIPTION_SECRET),
                ("ADMIN_JWT_SECRET", ADMIN_SECRET),
                ("WEBHOOK_POLL_MILLISECONDS", "20"),
                ("PAYOUT_POLL_MILLISECONDS", "50"),
                ("ALERTMANAGER_URL", &alertmanager_url),
                // Pushed again every 2 s while open (endsAt 8 s ahead): quick to see.
                ("ALERT_PAGE_INTERVAL_SECONDS", "2"),
                // The default, stated: 3 disputes within 60 minutes make level 3.
                ("ESCALATION_DISPUTES", "3/60"),
                ("DASHBOARD_URL", DASHBOARD_URL),
            ],
        );
        let prometheus = Prometheus::start(&PrometheusOptions {
            targets: vec![process.metrics.expect("metrics are served")],
            rules: vec![workspace_file("k8s/payouts/rules/payouts.rules.yaml")],
            instant_for: true,
            alertmanager: Some(alertmanager_url),
        })
        .await;
        let channel = process.grpc_channel().await;
        System {
            process,
            stripe,
            monitoring,
            prometheus,
            channel,
            http: reqwest::Client::new(),
        }
    }

    /// Stripe delivers a signed event to the gateway; waits until the inbox completed it.
    async fn deliver(&self, event_id: &str, event_type: &str, object: &Value) {
        let mut event = stripe::event(event_id, event_type, object["object"].as_str().unwrap());
        event["data"]["object"] = object.clone();
        let answer = support::deliver_webhook(
            &self.process,
            "/api/webhooks/stripe-subscription",
            SUBSCRIPTION_SECRET,
            &event,
        )
        .await;
        assert_eq!(answer.status(), 200, "{event_type} {event_id}");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let found = WebhooksServiceClient::new(self.channel.clone())
                .get_event(GetEventRequest {
                    endpoint: WebhookEndpoint::StripeSubscription.into(),
                    event_id: event_id.to_owned(),
                })
                .await;
            if let Ok(found) = found {
                let found = found.into_inner().event.unwrap();
                if found.status() != EventStatus::Processing {
                    assert_eq!(
                        found.status(),
                        EventStatus::Completed,
                        "{event_id}: {found:?}"
                    );
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "event {event_id} was not processed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An admin's call: the status and the JSON body.
    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, self.process.gateway_url(path))
            .bearer_auth(support::admin_token(ADMIN_SECRET, "lead@example.com", true));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.admin(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// `GET /api/admin/balance/pause`'s `transferPause`.
    async fn pause(&self) -> Value {
        self.get("/api/admin/balance/pause").await["transferPause"].clone()
    }

    /// The alert `id` as `GET /api/admin/alerts?status=all&level=3` lists it.
    async fn level_three_alert(&self, id: &str) -> Value {
        let listed = self.get("/api/admin/alerts?status=all&level=3").await;
        listed["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|alert| alert["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("alert {id} is not listed at level 3: {listed}"))
    }

    /// Polls the alert until `done` holds (at most [`PATIENCE`]); the alert then.
    async fn wait_for_alert(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let alert = self.level_three_alert(id).await;
            if done(&alert) {
                return alert;
            }
            assert!(Instant::now() < deadline, "alert {id}: not {what}: {alert}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn payout(&self, payout_id: &str) -> payouts_proto::payouts::v1::Payout {
        support::get_payout(&self.channel, payout_id).await
    }
}

fn dispute(dispute_id: &str, charge_id: &str, amount: i64) -> Value {
    let mut dispute = stripe::fixture("dispute");
    dispute["id"] = json!(dispute_id);
    dispute["charge"] = json!(charge_id);
    dispute["amount"] = json!(amount);
    dispute["status"] = json!("needs_response");
    dispute
}

/// `value` has only the properties the OpenAPI document's schema `name` lists, and each
/// enum-valued one holds a value the document allows (what a client generated from it reads).
fn conforms(value: &Value, name: &str) {
    let document: Value = serde_json::from_str(payouts_gateway::OPENAPI).unwrap();
    let properties = &document["components"]["schemas"][name]["properties"];
    for (key, field) in value.as_object().unwrap() {
        let declared = &properties[key];
        assert!(
            declared.is_object(),
            "{name}.{key} is not in gateway/openapi.json: {value}"
        );
        if let Some(allowed) = declared["enum"].as_array() {
            assert!(
                allowed.contains(field),
                "{name}.{key} = {field} is not one of {allowed:?}"
            );
        }
    }
}

fn time(text: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|error| panic!("{text:?}: {error}"))
        .to_utc()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispute_burst_pages_the_leads_halts_payouts_and_an_admin_ends_both() {
    let system = System::start().await;
    let prometheus = &system.prometheus;
    let receiver = &system.monitoring.receiver;
    prometheus
        .wait_for_query(r#"up{job="payouts"} == 1"#, PATIENCE)
        .await;
    assert_eq!(system.pause().await["paused"], false);

    // Three creators whose supporters dispute their charges, and one who will ask for a
    // payout while the halt holds.
    for creator in ["dora", "dirk", "dana", "wes"] {
        support::register_creator(&system.channel, creator, 400, 1_000_00).await;
    }
    system.stripe.set_payouts_enabled("acct_wes", true);

    // The burst: three disputes within the hour, as Stripe delivers them. The first one
    // arrives three times (a retried delivery, and the same dispute in a second event): a
    // dispute counts once.
    for (event_id, creator) in [
        ("evt_dp_dora", "dora"),
        ("evt_dp_dora", "dora"),
        ("evt_dp_dora_again", "dora"),
        ("evt_dp_dirk", "dirk"),
        ("evt_dp_dana", "dana"),
    ] {
        system
            .deliver(
                event_id,
                "charge.dispute.created",
                &dispute(&format!("dp_{creator}"), &format!("ch_{creator}"), 1_000_00),
            )
            .await;
    }

    // The leads are paged: Alertmanager delivers the level-3 alert to the receiver.
    let page = receiver
        .wait_for("the dispute burst's page", PATIENCE, |alert| {
            alert.name() == "PayoutsEscalation"
                && alert.label("kind") == "escalation_dispute_burst"
                && alert.firing()
        })
        .await;
    let alert_id = page.label("alert_id").to_owned();
    assert!(!alert_id.is_empty(), "{page:?}");
    assert_eq!(page.label("severity"), "critical", "{page:?}");
    assert_eq!(page.label("level"), "3", "{page:?}");
    assert_eq!(page.label("team"), "finance-engineering-leads", "{page:?}");
    assert_eq!(
        page.annotations["summary"], "Multiple Disputes in a Short Period",
        "{page:?}"
    );
    assert_eq!(
        page.annotations["runbook_url"],
        format!("{RUNBOOKS}#escalation_dispute_burst"),
        "{page:?}"
    );
    assert!(
        runbook_anchors().contains("escalation_dispute_burst"),
        "the page's runbook link has no section in docs/runbooks.md"
    );
    assert_eq!(
        page.annotations["dashboard"],
        format!("{DASHBOARD_URL}/admin/#/alerts/{alert_id}?status=all&level=3"),
        "{page:?}"
    );
    // The link is the dashboard page the gateway serves (the route is the fragment's).
    let link = page.annotations["dashboard"].replacen(
        DASHBOARD_URL,
        system.process.gateway_url("").as_str(),
        1,
    );
    let dashboard = system.http.get(&link).send().await.unwrap();
    assert_eq!(dashboard.status(), 200, "{link}");
    assert!(
        dashboard.text().await.unwrap().contains("/admin/app.js"),
        "{link} is not the dashboard"
    );
    assert_eq!(page.annotations["signal"], "dispute_created", "{page:?}");
    assert_eq!(page.annotations["signal_count"], "3", "{page:?}");
    assert_eq!(page.generator_url, page.annotations["dashboard"]);

    // The alert over the admin API: level 3, the signal that set it, its page and halt.
    let alert = system
        .wait_for_alert(&alert_id, "paged and halting", |alert| {
            alert["page"]["status"] == "firing" && alert["halt"]["status"] == "set"
        })
        .await;
    assert_eq!(alert["type"], "escalation_dispute_burst", "{alert}");
    assert_eq!(alert["level"], 3, "{alert}");
    assert_eq!(alert["signal"], "dispute_created", "{alert}");
    assert_eq!(alert["signalCount"], 3, "{alert}");
    assert_eq!(alert["status"], "open", "{alert}");
    assert!(alert["page"]["lastError"].is_null(), "{alert}");
    conforms(&alert, "Alert");
    // The level filter keeps level 3 only: the disputes' own alerts are level 2.
    let open_three = system.get("/api/admin/alerts?level=3").await;
    let open_three = open_three["alerts"].as_array().unwrap();
    assert!(
        open_three
            .iter()
            .any(|listed| listed["id"] == alert_id.as_str()),
        "{open_three:?}"
    );
    assert!(
        open_three.iter().all(|listed| listed["level"] == 3),
        "{open_three:?}"
    );
    let open_two = system
        .get("/api/admin/alerts?level=2&type=dispute_created")
        .await;
    let disputes_alerted = open_two["alerts"].as_array().unwrap();
    // (The disputes service raises its alert per event: the dispute's second event has
    // its own. The escalation signal is per dispute, as the count of 3 above shows.)
    let disputed: std::collections::BTreeSet<&str> = disputes_alerted
        .iter()
        .map(|listed| listed["metadata"]["disputeId"].as_str().unwrap())
        .collect();
    assert_eq!(
        disputed.into_iter().collect::<Vec<_>>(),
        ["dp_dana", "dp_dirk", "dp_dora"],
        "{open_two}"
    );
    assert!(
        disputes_alerted
            .iter()
            .all(|listed| listed["level"] == 2 && listed["signal"] == "dispute_created"),
        "{open_two}"
    );

    // A fourth dispute while it is open escalates it (its figure), never a second alert;
    // its page stays the same alert at Alertmanager.
    support::register_creator(&system.channel, "dov", 400, 1_000_00).await;
    system
        .deliver(
            "evt_dp_dov",
            "charge.dispute.created",
            &dispute("dp_dov", "ch_dov", 1_000_00),
        )
        .await;
    let alert = system
        .wait_for_alert(&alert_id, "escalated to 4 disputes", |alert| {
            alert["signalCount"] == 4
        })
        .await;
    let bursts = system
        .get("/api/admin/alerts?status=all&type=escalation_dispute_burst")
        .await;
    assert_eq!(bursts["alerts"].as_array().unwrap().len(), 1, "{bursts}");
    // (Alertmanager notifies again only at its repeat interval; its API shows the figure.)
    let deadline = Instant::now() + PATIENCE;
    loop {
        let held: Vec<Value> = system
            .monitoring
            .alertmanager
            .alerts()
            .await
            .into_iter()
            .filter(|held| held["labels"]["kind"] == "escalation_dispute_burst")
            .collect();
        assert_eq!(held.len(), 1, "one page: {held:?}");
        assert_eq!(
            held[0]["fingerprint"],
            page.fingerprint.as_str(),
            "{held:?}"
        );
        if held[0]["annotations"]["signal_count"] == "4" {
            break;
        }
        assert!(Instant::now() < deadline, "the page never said 4: {held:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The dashboard's "alerts by level" series counts it while nobody has taken it up.
    prometheus
        .wait_for_query(
            r#"payouts_alerts_open{type="escalation_dispute_burst",level="3"} == 1"#,
            PATIENCE,
        )
        .await;

    // Re-pushed while open, acknowledged too: taking it up is not ending it.
    let first_push = time(alert["page"]["lastPushedAt"].as_str().unwrap());
    let (status, acknowledged) = system
        .admin(
            reqwest::Method::POST,
            &format!("/api/admin/alerts/{alert_id}/acknowledge"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{acknowledged}");
    assert_eq!(acknowledged["alert"]["status"], "acknowledged");
    let acknowledged_at = time(acknowledged["alert"]["acknowledgedAt"].as_str().unwrap());
    let alert = system
        .wait_for_alert(
            &alert_id,
            "pushed again after its acknowledgement",
            |alert| {
                alert["page"]["lastPushedAt"]
                    .as_str()
                    .is_some_and(|at| time(at) > first_push.max(acknowledged_at))
            },
        )
        .await;
    assert_eq!(alert["page"]["status"], "firing", "{alert}");
    assert!(
        time(alert["page"]["endsAt"].as_str().unwrap()) > acknowledged_at,
        "{alert}"
    );

    // The halt: the transfer pause, cause escalation, naming the alert.
    let pause = system.pause().await;
    assert_eq!(pause["paused"], true, "{pause}");
    assert_eq!(pause["cause"], "escalation", "{pause}");
    assert_eq!(
        pause["reason"],
        format!("escalation: {alert_id}"),
        "{pause}"
    );
    assert_eq!(pause["changedBy"], "notifications", "{pause}");
    conforms(&pause, "TransferPause");
    // Prometheus sees it too, and the chart's rule pages it through Alertmanager.
    prometheus
        .wait_for_query(
            r#"payouts_transfer_pause_on{cause="escalation"} == 1"#,
            PATIENCE,
        )
        .await;
    let halted = receiver
        .wait_for("PayoutsTransfersHalted firing", PATIENCE, |alert| {
            alert.name() == "PayoutsTransfersHalted" && alert.firing()
        })
        .await;
    assert_eq!(halted.label("severity"), "critical", "{halted:?}");
    // Pages pushed, as the dashboard's pages panel reads them.
    prometheus
        .wait_for_query(r#"payouts_alert_pages_total{result="sent"} > 0"#, PATIENCE)
        .await;
    assert!(
        halted.annotations["runbook_url"].ends_with("docs/runbooks.md#payoutstransfershalted"),
        "{halted:?}"
    );

    // A payout asked for now is admitted and waits: PENDING, never failed, no transfer.
    let requested = PayoutsServiceClient::new(system.channel.clone())
        .request_payout(RequestPayoutRequest {
            user_id: "wes".to_owned(),
            amount: Some(Money {
                cents: 100_00,
                currency: "usd".to_owned(),
            }),
            idempotency_key: "wes-during-halt".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    let payout = requested
        .payout
        .unwrap_or_else(|| panic!("refused: {:?}", requested.decision));
    assert_eq!(payout.status(), PayoutStatus::Pending, "{payout:?}");
    // Watched over many of the transfer worker's passes (every 50 ms) while the halt holds.
    let watch_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < watch_until {
        let now = system.payout(&payout.id).await;
        assert_eq!(now.status(), PayoutStatus::Pending, "{now:?}");
        assert!(now.stripe_transfer_id.is_empty(), "{now:?}");
        assert!(
            system.stripe.transfers().is_empty(),
            "a transfer while halted: {:?}",
            system.stripe.transfers()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An admin resolves the alert with notes: the page ends at the receiver, at the
    // resolution time (not by lapsing).
    let (status, resolved) = system
        .admin(
            reqwest::Method::POST,
            &format!("/api/admin/alerts/{alert_id}/resolve"),
            Some(json!({"notes": "three disputes from one stolen card batch; answered in Stripe"})),
        )
        .await;
    assert_eq!(status, 200, "{resolved}");
    let resolved = &resolved["alert"];
    assert_eq!(resolved["status"], "resolved", "{resolved}");
    assert_eq!(
        resolved["resolvedBy"], "admin:lead@example.com",
        "{resolved}"
    );
    let resolved_at = time(resolved["resolvedAt"].as_str().unwrap());
    let ended = receiver
        .wait_for("the dispute burst's page resolved", PATIENCE, |alert| {
            alert.label("alert_id") == alert_id
                && alert.resolved()
                && chrono::DateTime::parse_from_rfc3339(&alert.ends_at)
                    .is_ok_and(|at| at.to_utc() == resolved_at)
        })
        .await;
    assert_eq!(ended.fingerprint, page.fingerprint);
    let alert = system
        .wait_for_alert(&alert_id, "its page ended", |alert| {
            alert["page"]["status"] == "ended"
        })
        .await;
    assert_eq!(
        alert["resolutionNotes"],
        "three disputes from one stolen card batch; answered in Stripe"
    );

    // The halt outlasts the alert: only an admin lifts it, and only with notes.
    let pause = system.pause().await;
    assert_eq!(pause["cause"], "escalation", "{pause}");
    assert_eq!(
        system.payout(&payout.id).await.status(),
        PayoutStatus::Pending
    );
    let (status, refused) = system
        .admin(reqwest::Method::POST, "/api/admin/balance/resume", None)
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(
        refused["error"],
        "notes are required to lift an escalation halt (reason): say what was checked",
        "{refused}"
    );
    let (status, refused) = system
        .admin(
            reqwest::Method::POST,
            "/api/admin/balance/resume",
            Some(json!({"reason": "   "})),
        )
        .await;
    assert_eq!(status, 409, "blank notes: {refused}");
    assert_eq!(system.pause().await["cause"], "escalation");
    assert!(system.stripe.transfers().is_empty());

    let (status, lifted) = system
        .admin(
            reqwest::Method::POST,
            "/api/admin/balance/resume",
            Some(json!({"reason": "disputes reviewed with finance; the pattern is one payer"})),
        )
        .await;
    assert_eq!(status, 200, "{lifted}");
    assert_eq!(lifted["transferPause"]["paused"], false, "{lifted}");
    assert_eq!(
        lifted["transferPause"]["reason"],
        "disputes reviewed with finance; the pattern is one payer"
    );
    assert_eq!(
        lifted["transferPause"]["changedBy"],
        "admin:lead@example.com"
    );

    // The waiting payout goes, once.
    let deadline = Instant::now() + PATIENCE;
    let paid = loop {
        let now = system.payout(&payout.id).await;
        assert_ne!(now.status(), PayoutStatus::Failed, "{now:?}");
        if !now.stripe_transfer_id.is_empty() {
            break now;
        }
        assert!(Instant::now() < deadline, "never transferred: {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let transfers = system.stripe.transfers();
    assert_eq!(transfers.len(), 1, "{transfers:?}");
    assert_eq!(transfers[0]["id"], paid.stripe_transfer_id.as_str());
    assert_eq!(transfers[0]["amount"], 100_00);
    assert_eq!(transfers[0]["destination"], "acct_wes");

    // And Prometheus's halt rule ends too.
    prometheus
        .wait_for_query(
            r#"payouts_transfer_pause_on{cause="escalation"} == 0"#,
            PATIENCE,
        )
        .await;
    receiver
        .wait_for("PayoutsTransfersHalted resolved", PATIENCE, |alert| {
            alert.name() == "PayoutsTransfersHalted" && alert.resolved()
        })
        .await;
}
