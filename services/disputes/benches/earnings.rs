//! GetEarnings over gRPC on loopback for a creator with 1 allocation and one with 100,000:
//! the earnings book keeps running totals, so the cost must not grow with the history.
//!
//!     cargo bench -p payouts-disputes --bench earnings   # BENCH_CALLS (50000), BENCH_CLIENTS (16), BENCH_ALLOCATIONS (100000)
//!
//! Beside it, in the same run, an empty unary RPC (a gRPC health check) on the same server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;

use payouts_disputes::domain::Allocation;
use payouts_disputes::earnings::Ledger;
use payouts_disputes::store::{MemoryAllocations, MemoryEarningsBooks};
use payouts_proto::disputes::v1::GetEarningsRequest;
use payouts_proto::disputes::v1::disputes_service_client::DisputesServiceClient;
use payouts_runtime::grpc::GrpcServer;
use payouts_runtime::shutdown::Shutdown;
use payouts_runtime::testing::bench::{drive, report, report_value, setting, title};
use payouts_runtime::{Clock as _, Money, Store, SystemClock};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

fn main() {
    let calls = setting("BENCH_CALLS", 50_000);
    let clients = setting("BENCH_CLIENTS", 16);
    let history = setting("BENCH_ALLOCATIONS", 100_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ledger = Arc::new(Ledger {
            allocations: Arc::new(MemoryAllocations::default()),
            books: Arc::new(MemoryEarningsBooks::default()),
            clock: Arc::new(SystemClock),
        });
        let credit = |id: String, user: &str| {
            Allocation::credit(&id, user, "ch_bench", "payer_bench", Money::usd(1_00), SystemClock.now()).unwrap()
        };
        ledger.record(&credit("one_0".to_owned(), "creator_one")).await.unwrap();
        for i in 0..history {
            ledger
                .record(&credit(format!("many_{i}"), "creator_many"))
                .await
                .unwrap();
        }
        let mut server = GrpcServer::new();
        server.add_service(payouts_disputes::grpc::server(
            payouts_disputes::grpc::DisputesGrpc::new(payouts_disputes::cases::Cases {
                ledger,
                cases: Arc::new(payouts_disputes::store::MemoryChargeCases::default()),
                notices: Arc::new(NoNotices),
                refunds: None,
            }),
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

        title(&format!(
            "disputes: GetEarnings over gRPC on loopback, {calls} calls per case, {clients} concurrent clients, embedded store"
        ));
        let health = HealthClient::new(channel.clone());
        let empty = drive(calls, clients, move |_, _| {
            let mut health = health.clone();
            async move {
                health.check(HealthCheckRequest::default()).await.unwrap();
            }
        })
        .await;
        report("disputes", "empty unary RPC (health check)", &empty, "baseline");
        let mut p50s = Vec::new();
        for (user, allocations) in [("creator_one", 1), ("creator_many", history)] {
            let client = DisputesServiceClient::new(channel.clone());
            let figures = drive(calls, clients, move |_, _| {
                let mut client = client.clone();
                async move {
                    let earnings = client
                        .get_earnings(GetEarningsRequest {
                            user_id: user.to_owned(),
                            currency: String::new(),
                        })
                        .await
                        .unwrap()
                        .into_inner();
                    assert_eq!(
                        earnings.lifetime.unwrap().cents,
                        i64::try_from(allocations).unwrap() * 1_00
                    );
                }
            })
            .await;
            report(
                "disputes",
                &format!("GetEarnings, {allocations} allocations"),
                &figures,
                &format!(
                    "p50 {:.2}x the empty RPC",
                    figures.p50.as_secs_f64() / empty.p50.as_secs_f64()
                ),
            );
            p50s.push(figures.p50);
        }
        report_value(
            "disputes",
            &format!("GetEarnings p50, {history} / 1 allocations"),
            &format!("{:.2}x", p50s[1].as_secs_f64() / p50s[0].as_secs_f64()),
        );
        trigger.trigger();
        let _ = served.await;
    });
}

/// The bench reads earnings only: nothing to notify.
struct NoNotices;

#[async_trait::async_trait]
impl payouts_disputes::ports::NoticesPort for NoNotices {
    async fn alert(
        &self,
        _: &payouts_disputes::ports::Message,
    ) -> Result<(), payouts_runtime::ServiceError> {
        Ok(())
    }

    async fn notify_user(
        &self,
        _: &str,
        _: &payouts_disputes::ports::Message,
    ) -> Result<(), payouts_runtime::ServiceError> {
        Ok(())
    }
}
