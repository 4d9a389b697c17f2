//! Stripe's own deliveries, end to end: the fake Stripe delivers every event itself, as
//! Stripe routes it (the platform's transfer events to account endpoints, a connected
//! account's bank payout to the Connect endpoint), to the endpoints the real
//! `payouts stripe setup-webhooks` registered with it, signed with the secrets it printed.
//! No event is posted by hand and the backfill is off: a payout goes from request to
//! completion, then a reversal made outside Payouts (the Stripe Dashboard) is applied.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

mod support;

use std::process::Stdio;
use std::time::Duration;

use payouts_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
use payouts_proto::payouts::v1::{Payout, PayoutStatus, RequestPayoutRequest};
use payouts_runtime::testing::fake_stripe::{FakeStripe, RetrySchedule};
use serde_json::Value;
use support::{Payouts, StoreChoice};

const STRIPE_KEY: &str = "sk_test_e2e_delivery";

/// A loopback address nobody listens on now: the gateway must keep its URL across the
/// restart that gives it the secrets `setup-webhooks` printed (Stripe delivers to a URL).
fn reserved_gateway_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

fn start(stripe: &FakeStripe, gateway: &str, secrets: &[(String, String)]) -> Payouts {
    let mut env: Vec<(&str, &str)> = vec![
        ("STRIPE_SECRET_KEY", STRIPE_KEY),
        ("STRIPE_API_BASE", stripe.url()),
        ("GATEWAY_ADDR", gateway),
        ("WEBHOOK_POLL_MILLISECONDS", "20"),
        ("PAYOUT_POLL_MILLISECONDS", "50"),
        // Only Stripe's deliveries may bring an event in.
        ("WEBHOOK_BACKFILL_INTERVAL", "off"),
        ("RECONCILIATION_INTERVAL", "off"),
    ];
    env.extend(
        secrets
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    );
    Payouts::start(&[], StoreChoice::Embedded, &env)
}

/// Runs the real `payouts stripe setup-webhooks` against the fake: the secrets it printed.
fn setup_webhooks(stripe: &FakeStripe, base: &str) -> Vec<(String, String)> {
    let output = support::command(
        &["stripe", "setup-webhooks", "--url", base],
        &[
            ("STRIPE_SECRET_KEY", STRIPE_KEY),
            ("STRIPE_API_BASE", stripe.url()),
        ],
    )
    .stdout(Stdio::piped())
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let secrets: Vec<(String, String)> = stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .filter(|(name, value)| {
            name.starts_with("STRIPE_WEBHOOK_SECRET") && value.starts_with("whsec_")
        })
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    assert_eq!(secrets.len(), 3, "one secret per endpoint: {stdout}");
    secrets
}

async fn platform_post(stripe: &FakeStripe, path: &str, form: &[(&str, &str)]) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", stripe.url()))
        .bearer_auth(STRIPE_KEY)
        .form(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

async fn payout(process: &Payouts, payout_id: &str) -> Payout {
    support::get_payout(&process.grpc_channel().await, payout_id).await
}

/// Waits until the payout satisfies `done` (Stripe's deliveries come in the background).
async fn wait_for(
    process: &Payouts,
    stripe: &FakeStripe,
    payout_id: &str,
    what: &str,
    done: impl Fn(&Payout) -> bool,
) -> Payout {
    for _ in 0..600 {
        let current = payout(process, payout_id).await;
        if done(&current) {
            return current;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "payout {payout_id} never {what}: {:?}\ndeliveries: {:#?}",
        payout(process, payout_id).await,
        stripe.deliveries()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripes_own_deliveries_take_a_payout_to_completion_and_apply_a_dashboard_reversal() {
    let stripe = FakeStripe::start().await;
    stripe.set_retry_schedule(RetrySchedule::exponential(Duration::from_millis(50), 8));
    let gateway = reserved_gateway_address();
    let base = format!("http://{gateway}");

    // Deploy, register the endpoints, put the printed secrets in the environment, restart.
    let first = start(&stripe, &gateway, &[]);
    let secrets = setup_webhooks(&stripe, &base);
    first.terminate();
    let process = start(&stripe, &gateway, &secrets);

    // The platform asks for a payout: the transfer is made with the platform's key.
    support::register_creator(&process.grpc_channel().await, "nina", 400, 500_00).await;
    let requested = PayoutsServiceClient::new(process.grpc_channel().await)
        .request_payout(RequestPayoutRequest {
            user_id: "nina".to_owned(),
            amount: Some(payouts_proto::common::v1::Money {
                cents: 100_00,
                currency: "usd".to_owned(),
            }),
            idempotency_key: "nina-1".to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .payout
        .unwrap();
    assert_eq!(requested.status(), PayoutStatus::Processing);
    let transfer_id = requested.stripe_transfer_id.clone();

    // Stripe's payout schedule pays the creator's balance out to their bank: payout.paid on
    // the connected account, delivered to the Connect endpoint.
    let bank_payout = platform_post(&stripe, "/_fake/accounts/acct_nina/payouts", &[]).await;
    assert_eq!(bank_payout["amount"], 100_00);
    let completed = wait_for(&process, &stripe, &requested.id, "completed", |p| {
        p.status() == PayoutStatus::Completed
    })
    .await;
    assert_eq!(
        completed.stripe_payout_id,
        bank_payout["id"].as_str().unwrap()
    );

    // Someone reverses part of the transfer in the Stripe Dashboard, then the rest: the
    // platform's transfer.reversed, delivered to the transfers endpoint.
    platform_post(
        &stripe,
        &format!("/v1/transfers/{transfer_id}/reversals"),
        &[("amount", "3000")],
    )
    .await;
    let partly = wait_for(&process, &stripe, &requested.id, "partly reversed", |p| {
        p.amount_reversed.as_ref().is_some_and(|m| m.cents == 30_00)
    })
    .await;
    assert_eq!(partly.status(), PayoutStatus::Completed);
    platform_post(
        &stripe,
        &format!("/v1/transfers/{transfer_id}/reversals"),
        &[],
    )
    .await;
    let reversed = wait_for(&process, &stripe, &requested.id, "reversed", |p| {
        p.status() == PayoutStatus::Reversed
    })
    .await;
    // As Stripe says.
    let transfer = stripe
        .transfers()
        .into_iter()
        .find(|t| t["id"] == transfer_id.as_str())
        .unwrap();
    assert_eq!(transfer["reversed"], true);
    assert_eq!(
        reversed.amount_reversed.unwrap().cents,
        transfer["amount_reversed"].as_i64().unwrap()
    );

    // Every event reached us through Stripe's own deliveries, each to its endpoint.
    let deliveries = stripe.deliveries();
    for (event_type, path) in [
        ("transfer.created", "/api/webhooks/stripe-transfers"),
        ("payout.paid", "/api/webhooks/stripe-payouts"),
        ("transfer.reversed", "/api/webhooks/stripe-transfers"),
    ] {
        let to: Vec<&str> = deliveries
            .iter()
            .filter(|d| d.event_type == event_type)
            .map(|d| d.endpoint_url.as_str())
            .collect();
        assert!(!to.is_empty(), "{event_type}: {deliveries:#?}");
        assert!(
            to.iter().all(|url| url.ends_with(path)),
            "{event_type}: {to:?}"
        );
    }
    for _ in 0..200 {
        if stripe.deliveries().iter().all(|d| d.delivered) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let undelivered: Vec<_> = stripe
        .deliveries()
        .into_iter()
        .filter(|d| !d.delivered)
        .collect();
    assert!(undelivered.is_empty(), "{undelivered:#?}");
    stripe.shutdown().await;
}
