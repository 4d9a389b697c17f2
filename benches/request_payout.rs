//! RequestPayout end to end through the real `payouts` binary (all in one process, embedded
//! store): payouts -> limits -> disputes -> reservation -> re-check -> a transfer at a fake
//! Stripe over HTTP on loopback. Calls/s, p50, p99, and how many gRPC calls one request makes
//! inside the system (counted by every server, in process or not, from its metrics).
//!
//!     cargo bench --bench request_payout    # BENCH_CALLS (10000), BENCH_CLIENTS (16), BENCH_USERS (1000)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod support;

use std::collections::BTreeMap;

use payouts_proto::common::v1::Money;
use payouts_proto::disputes::v1::RecordAllocationRequest;
use payouts_proto::disputes::v1::disputes_service_client::DisputesServiceClient;
use payouts_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
use payouts_proto::payouts::v1::{RegisterAccountRequest, RequestPayoutRequest};
use payouts_runtime::testing::bench::{drive, report, report_value, rss_mib, setting, title};
use payouts_runtime::testing::fake_stripe::FakeStripe;

/// The real binary with limits that let one creator be paid often (the figures are the
/// path's cost, not the default limits).
fn start_payouts(stripe_url: &str) -> support::Payouts {
    support::Payouts::start(&[
        ("METRICS_ADDR", "127.0.0.1:0"),
        ("STRIPE_SECRET_KEY", "sk_test_bench"),
        ("STRIPE_API_BASE", stripe_url),
        ("PAYOUT_LIMITS_MIN_TIME_BETWEEN_PAYOUTS", "0"),
        ("PAYOUT_LIMITS_MAX_PAYOUTS_PER_DAY", "1000000"),
        ("PAYOUT_LIMITS_MAX_DAILY_AMOUNT", "100000000000"),
        ("PAYOUT_LIMITS_MAX_MONTHLY_AMOUNT", "100000000000"),
        ("PAYOUT_LIMITS_SUSPICIOUS_PATTERN_THRESHOLD", "1000000"),
    ])
}

/// gRPC requests served so far, by method.
async fn served(metrics_url: &str) -> BTreeMap<String, f64> {
    let text = reqwest::get(metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("payouts_grpc_server_requests_total{method=\"")?;
            let (method, value) = rest.split_once("\"} ")?;
            Some((method.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

fn main() {
    let calls = setting("BENCH_CALLS", 10_000);
    let clients = setting("BENCH_CLIENTS", 16);
    let users = setting("BENCH_USERS", 1_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let stripe = FakeStripe::start().await;
        let payouts_process = start_payouts(stripe.url());
        let metrics_url = payouts_process.announced("metrics at ").to_owned();
        let grpc_url = format!(
            "http://{}",
            payouts_process
                .announced("gRPC services [")
                .rsplit(" listening on ")
                .next()
                .unwrap()
        );
        let channel = tonic::transport::Channel::from_shared(grpc_url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let created = chrono::Utc::now() - chrono::Duration::days(400);
        for user in 0..users {
            PayoutsServiceClient::new(channel.clone())
                .register_account(RegisterAccountRequest {
                    user_id: format!("creator_{user}"),
                    stripe_account_id: format!("acct_creator_{user}"),
                    account_created_at: Some(prost_types::Timestamp {
                        seconds: created.timestamp(),
                        nanos: 0,
                    }),
                })
                .await
                .unwrap();
            DisputesServiceClient::new(channel.clone())
                .record_allocation(RecordAllocationRequest {
                    allocation_id: format!("alloc_{user}"),
                    user_id: format!("creator_{user}"),
                    charge_id: format!("ch_bench_{user}"),
                    amount: Some(Money {
                        cents: 100_000_000_00,
                        currency: "usd".to_owned(),
                    }),
                    payer_id: format!("supporter_{user}"),
                })
                .await
                .unwrap();
        }
        let payouts = PayoutsServiceClient::new(channel);
        let request = move |run: &'static str| {
            let payouts = payouts.clone();
            move |_client: usize, call: usize| {
                let mut payouts = payouts.clone();
                async move {
                    let answer = payouts
                        .request_payout(RequestPayoutRequest {
                            user_id: format!("creator_{}", call % users),
                            amount: Some(Money {
                                cents: 10_00,
                                currency: "usd".to_owned(),
                            }),
                            idempotency_key: format!("{run}_{call}"),
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    assert_eq!(
                        answer.payout.map(|payout| payout.status),
                        Some(payouts_proto::payouts::v1::PayoutStatus::Processing.into()),
                        "the transfer was made"
                    );
                }
            }
        };
        // Warm up (each account's first payout asks Stripe for its status).
        drive(users, clients, request("warm")).await;
        let before = served(&metrics_url).await;
        let transfers_before = stripe.transfers().len();

        title(&format!(
            "RequestPayout end to end: {calls} calls from {clients} concurrent clients over gRPC, {users} creators, all-in-one binary, embedded store, fake Stripe over HTTP"
        ));
        let figures = drive(calls, clients, request("bench")).await;
        let after = served(&metrics_url).await;
        assert_eq!(stripe.transfers().len() - transfers_before, calls);
        report(
            "request_payout",
            "RequestPayout -> transfer created",
            &figures,
            "one Stripe transfer each",
        );
        let mut hops = Vec::new();
        let mut total = 0.0;
        for (method, count) in &after {
            let per_call = (count - before.get(method).copied().unwrap_or(0.0)) / calls as f64;
            if per_call > 0.001 {
                total += per_call;
                let name = method.rsplit('/').next().unwrap_or(method);
                hops.push(format!("{name} {per_call:.2}"));
            }
        }
        report_value(
            "request_payout",
            "gRPC calls served per RequestPayout",
            &format!("{total:.2}: {}", hops.join(", ")),
        );
        report_value(
            "request_payout",
            "resident memory of the process",
            &format!(
                "{:.1} MiB after {} payouts",
                rss_mib(payouts_process.pid()).unwrap_or_default(),
                calls + users
            ),
        );
    });
}
