//! ValidatePayoutLimits over gRPC on loopback: calls/s and p50/p99 with 10,000 users, at
//! 1,000 and at 1,000,000 historical payouts, to show the cost does not grow with history
//! (each user's quota document is bounded by the limits, not by their history).
//!
//!     cargo bench -p payouts-limits --bench validate     # BENCH_CALLS (50000), BENCH_CLIENTS (16)
//!
//! Beside it, in the same run, an empty unary RPC (a gRPC health check) on the same server
//! with the same clients: what any call costs on this stack.
//!
//! The limits service runs on the embedded store; the account age and earnings, which come
//! from the payouts and disputes services in production, come from an in-process source, so
//! the figures are the limits service's own cost.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::{Duration, Utc};
use payouts_limits::admission::{ContextSource, Limits, UserEarnings};
use payouts_limits::checks::{Quota, RESERVATION_RETENTION, Reservation};
use payouts_limits::domain::LimitConfig;
use payouts_limits::store::{MemoryBlockedAttempts, MemoryQuotas, QuotaRepository};
use payouts_proto::limits::v1::ValidatePayoutLimitsRequest;
use payouts_proto::limits::v1::payout_limits_service_client::PayoutLimitsServiceClient;
use payouts_runtime::authz::Identities;
use payouts_runtime::grpc::{GrpcServer, traced_channel, traced_tls_channel};
use payouts_runtime::shutdown::Shutdown;
use payouts_runtime::testing::bench::{drive, report, report_value, setting, title};
use payouts_runtime::tls::MutualTls;
use payouts_runtime::{ServiceError, Store, SystemClock};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const USERS: usize = 10_000;

struct Established;

#[async_trait]
impl ContextSource for Established {
    async fn account_created_at(
        &self,
        _user_id: &str,
    ) -> Result<Option<chrono::DateTime<Utc>>, ServiceError> {
        Ok(Some(Utc::now() - Duration::days(1_000)))
    }

    async fn earnings(&self, _user_id: &str) -> Result<UserEarnings, ServiceError> {
        Ok(UserEarnings {
            lifetime_cents: 1_000_000_00,
            payable_cents: 1_000_000_00,
            recent_refunds_and_disputes: 0,
        })
    }
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

/// The test PKI's files of `component` (tests/fixtures/tls).
fn tls_files(component: &str) -> payouts_runtime::config::TlsFiles {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tls");
    payouts_runtime::config::TlsFiles {
        cert: dir.join(format!("{component}.crt")),
        key: dir.join(format!("{component}.key")),
        ca: dir.join("ca.crt"),
        platform_ca: None,
    }
}

/// Runs the limits service on a fresh store with `history` payouts; measures an empty unary
/// RPC (a health check) on the same server, then ValidatePayoutLimits. With `tls`, the server
/// speaks mutual TLS and checks the caller (the platform's test identity), as a deployment
/// with its services apart does. Returns the p50s.
async fn run(
    history: usize,
    calls: usize,
    clients: usize,
    tls: bool,
) -> (StdDuration, StdDuration) {
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
    let deadline = StdDuration::from_secs(10);
    let channel = if tls {
        let server_tls = MutualTls::load(&tls_files("limits")).unwrap();
        server.set_mutual_tls(server_tls, Identities::new(&["creator-api".to_owned()]));
        let client_tls = MutualTls::load(&tls_files("creator-api")).unwrap();
        traced_tls_channel(&url, deadline, &client_tls, "payouts-limits").unwrap()
    } else {
        traced_channel(&url, deadline).unwrap()
    };
    let (shutdown, trigger) = Shutdown::manual();
    let served = tokio::spawn(server.serve(listener, Store::Embedded, shutdown));
    let transport = if tls { "mutual TLS" } else { "plaintext" };

    let health = HealthClient::new(channel.clone());
    let empty = drive(calls, clients, move |_, _| {
        let mut health = health.clone();
        async move {
            health.check(HealthCheckRequest::default()).await.unwrap();
        }
    })
    .await;
    report(
        "limits",
        &format!("empty unary RPC (health check), {history} payouts, {transport}"),
        &empty,
        "baseline: the same server and clients",
    );
    let client = PayoutLimitsServiceClient::new(channel);
    let validate = drive(calls, clients, move |_, call| {
        let mut client = client.clone();
        async move {
            let request = ValidatePayoutLimitsRequest {
                user_id: format!("user_{}", (call * 7_919) % USERS),
                amount: Some(payouts_runtime::convert::usd(50_00)),
            };
            client.validate_payout_limits(request).await.unwrap();
        }
    })
    .await;
    report(
        "limits",
        &format!("ValidatePayoutLimits, {history} payouts, {transport}"),
        &validate,
        &format!(
            "{kept} reservations in quota documents; p50 {:.2}x the empty RPC",
            validate.p50.as_secs_f64() / empty.p50.as_secs_f64()
        ),
    );
    trigger.trigger();
    let _ = served.await;
    (empty.p50, validate.p50)
}

fn main() {
    let calls = setting("BENCH_CALLS", 50_000);
    let clients = setting("BENCH_CLIENTS", 16);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        title(&format!(
            "limits: gRPC on loopback, {USERS} users, {calls} calls per case, {clients} concurrent clients, embedded store"
        ));
        let (_, small) = run(1_000, calls, clients, false).await;
        let (_, large) = run(1_000_000, calls, clients, false).await;
        report_value(
            "limits",
            "ValidatePayoutLimits p50, 1,000,000 / 1,000 payouts",
            &format!("{:.2}x", large.as_secs_f64() / small.as_secs_f64()),
        );
        let (_, secured) = run(1_000, calls, clients, true).await;
        report_value(
            "limits",
            "ValidatePayoutLimits p50, mutual TLS / plaintext (1,000 payouts)",
            &format!("{:.2}x", secured.as_secs_f64() / small.as_secs_f64()),
        );
    });
}
