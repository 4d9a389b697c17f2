//! ValidatePayoutLimits over gRPC on loopback: calls/s and p50/p99 with 10,000 users, at
//! 1,000 and at 1,000,000 historical payouts, to show the cost does not grow with history
//! (each user's quota document is bounded by the limits, not by their history).
//!
//!     cargo bench -p payouts-limits --bench validate     # BENCH_CALLS (50000), BENCH_CLIENTS (16)
//!
//! The limits service runs on the embedded store; the account age and earnings, which come
//! from the payouts and disputes services in production, come from an in-process source, so
//! the figures are the limits service's own cost.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration as StdDuration, Instant};

use async_trait::async_trait;
use chrono::{Duration, Utc};
use payouts_limits::admission::{ContextSource, Limits};
use payouts_limits::checks::{Quota, RESERVATION_RETENTION, Reservation, UserContext};
use payouts_limits::domain::LimitConfig;
use payouts_limits::store::{MemoryBlockedAttempts, MemoryQuotas, QuotaRepository};
use payouts_proto::limits::v1::ValidatePayoutLimitsRequest;
use payouts_proto::limits::v1::payout_limits_service_client::PayoutLimitsServiceClient;
use payouts_runtime::grpc::GrpcServer;
use payouts_runtime::shutdown::Shutdown;
use payouts_runtime::{ServiceError, Store, SystemClock};

const USERS: usize = 10_000;

struct Established;

#[async_trait]
impl ContextSource for Established {
    async fn context(&self, _user_id: &str) -> Result<UserContext, ServiceError> {
        Ok(UserContext {
            account_created_at: Some(Utc::now() - Duration::days(1_000)),
            lifetime_earnings_cents: 1_000_000_00,
            payable_earnings_cents: 1_000_000_00,
        })
    }
}

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Quotas for `USERS` users sharing `history` payouts spread over the last 1,000 days; a
/// document keeps what admission keeps (the retention window).
async fn seed(quotas: &MemoryQuotas, history: usize) -> usize {
    let now = Utc::now();
    let mut kept = 0;
    for user in 0..USERS {
        let payouts = history / USERS + usize::from(user < history % USERS);
        let mut quota = Quota::empty(&format!("user_{user}"));
        for i in 0..payouts {
            let age = Duration::minutes(
                i64::try_from((i * 1_000 * 24 * 60) / payouts.max(1)).unwrap() + 10,
            );
            if age < RESERVATION_RETENTION {
                quota.reservations.push(Reservation {
                    payout_id: format!("p_{user}_{i}"),
                    amount_cents: 100_00,
                    reserved_at: now - age,
                    requires_approval: false,
                    flags: Vec::new(),
                    released_cents: 0,
                    release_sequence: 0,
                });
            }
            quota.committed_cents += 100_00;
            quota.payouts_ever += 1;
        }
        kept += quota.reservations.len();
        quota.version = 1;
        quotas.put(&quota, 0).await.unwrap();
    }
    kept
}

async fn run(history: usize, calls: usize, clients: usize) {
    let quotas = Arc::new(MemoryQuotas::default());
    let kept = seed(&quotas, history).await;
    let limits = Limits::new(
        LimitConfig::default(),
        quotas,
        Arc::new(MemoryBlockedAttempts::default()),
        Arc::new(Established),
        Arc::new(SystemClock),
        Arc::new(payouts_runtime::UuidIds),
    );
    let mut server = GrpcServer::new();
    server.add_service(payouts_limits::grpc::server(
        payouts_limits::grpc::LimitsGrpc::new(Arc::new(limits)),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (shutdown, trigger) = Shutdown::manual();
    let served = tokio::spawn(server.serve(listener, Store::Embedded, shutdown));

    let channel = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let mut client = PayoutLimitsServiceClient::new(channel.clone());
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let call = next.fetch_add(1, Ordering::Relaxed);
                    if call >= calls {
                        return latencies;
                    }
                    let request = ValidatePayoutLimitsRequest {
                        user_id: format!("user_{}", (call * 7_919) % USERS),
                        amount: Some(payouts_runtime::convert::usd(50_00)),
                    };
                    let sent = Instant::now();
                    client.validate_payout_limits(request).await.unwrap();
                    latencies.push(sent.elapsed());
                }
            })
        })
        .collect();
    let mut latencies: Vec<StdDuration> = Vec::with_capacity(calls);
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "{:>12} {:>14} {:>12.0} {:>10.2?} {:>10.2?}",
        history,
        kept,
        calls as f64 / elapsed.as_secs_f64(),
        at(0.50),
        at(0.99)
    );
    trigger.trigger();
    let _ = served.await;
}

fn main() {
    let calls = setting("BENCH_CALLS", 50_000);
    let clients = setting("BENCH_CLIENTS", 16);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!();
        println!("ValidatePayoutLimits over gRPC: {USERS} users, {calls} calls, {clients} concurrent clients, embedded store");
        println!("{:>12} {:>14} {:>12} {:>10} {:>10}", "payouts", "kept in docs", "calls/s", "p50", "p99");
        for history in [1_000, 1_000_000] {
            run(history, calls, clients).await;
        }
    });
}
