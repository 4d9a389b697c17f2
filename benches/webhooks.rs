//! Webhook ingestion throughput and latency, printed as figures (not a test).
//!
//! Signed Stripe webhooks through the real `payouts` binary (gateway -> gRPC -> webhooks
//! service -> embedded store, with the worker processing them) over HTTP on loopback, with N
//! concurrent clients; next to the same load on a bare endpoint of the same HTTP stack (axum
//! on hyper) that does nothing, so the ratio shows what verification, storage and the gRPC
//! hop cost.
//!
//!     cargo bench --bench webhooks                # defaults: 20000 events, 16 clients
//!     BENCH_EVENTS=50000 BENCH_CLIENTS=32 cargo bench --bench webhooks

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use payouts_runtime::testing::stripe;

const SECRET: &str = "whsec_bench";

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

struct Figures {
    events_per_second: f64,
    p50: Duration,
    p99: Duration,
}

/// Sends `events` signed deliveries from `clients` concurrent clients; returns the figures.
async fn load(
    url: &str,
    events: usize,
    clients: usize,
    payloads: Arc<Vec<(Vec<u8>, String)>>,
) -> Figures {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (http, next, payloads, url) = (
                http.clone(),
                Arc::clone(&next),
                Arc::clone(&payloads),
                url.to_owned(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= events {
                        return latencies;
                    }
                    let (body, header) = &payloads[index];
                    let sent = Instant::now();
                    let response = http
                        .post(&url)
                        .header("Stripe-Signature", header)
                        .header("Content-Type", "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                    response.bytes().await.unwrap();
                    latencies.push(sent.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(events);
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |quantile: f64| {
        let index = ((latencies.len() as f64 - 1.0) * quantile).round() as usize;
        latencies[index]
    };
    Figures {
        events_per_second: events as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    }
}

/// A bare endpoint on the same HTTP stack: accepts the body, answers `{"received":true}`.
async fn bare_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = axum::Router::new().route(
        "/api/webhooks/stripe-payouts",
        axum::routing::post(|_body: axum::body::Bytes| async {
            axum::Json(serde_json::json!({ "received": true }))
        }),
    );
    tokio::spawn(async move {
        use axum::serve::ListenerExt as _;
        let listener = listener.tap_io(payouts_runtime::grpc::set_nodelay);
        axum::serve(listener, router).await.unwrap()
    });
    format!("http://{address}/api/webhooks/stripe-payouts")
}

/// The real binary, all in one process on the embedded store.
fn start_payouts() -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_payouts"))
        .env_remove("MONGODB_URI")
        .env("GATEWAY_ADDR", "127.0.0.1:0")
        .env("GRPC_ADDR", "127.0.0.1:0")
        .env("METRICS_ADDR", "off")
        .env("STRIPE_WEBHOOK_SECRET_PAYOUTS", SECRET)
        .env("RUST_LOG", "error")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines() {
        let line = line.unwrap();
        if let Some(address) = line.strip_prefix("payouts: gateway listening on http://") {
            return (
                child,
                format!("http://{address}/api/webhooks/stripe-payouts"),
            );
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("payouts did not start");
}

fn payloads(run: &str, events: usize) -> Arc<Vec<(Vec<u8>, String)>> {
    let template = stripe::event("evt_template", "payout.paid", "payout");
    let now = chrono::Utc::now().timestamp();
    Arc::new(
        (0..events)
            .map(|i| {
                let mut event = template.clone();
                event["id"] = serde_json::json!(format!("evt_bench_{run}_{i}"));
                let body = serde_json::to_vec(&event).unwrap();
                let header = stripe::signature_header(&body, SECRET, now);
                (body, header)
            })
            .collect(),
    )
}

fn main() {
    let events = setting("BENCH_EVENTS", 20_000);
    let clients = setting("BENCH_CLIENTS", 16);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut child, payouts_url) = start_payouts();
    runtime.block_on(async {
        let bare_url = bare_endpoint().await;
        // Warm up both (connections, allocator, lazy gRPC channel).
        load(&bare_url, 500, clients, payloads("warm_bare", 500)).await;
        load(&payouts_url, 500, clients, payloads("warm_payouts", 500)).await;

        let bare = load(&bare_url, events, clients, payloads("bare", events)).await;
        let ours = load(&payouts_url, events, clients, payloads("payouts", events)).await;
        let size = payloads("size", 1)[0].0.len();
        println!();
        println!("webhook ingestion: {events} signed events of {size} bytes, {clients} concurrent clients, loopback HTTP/1.1");
        println!("{:<44} {:>10} {:>10} {:>10}", "endpoint", "events/s", "p50", "p99");
        for (name, figures) in [("bare axum endpoint (does nothing)", &bare), ("payouts gateway -> webhooks (embedded)", &ours)] {
            println!(
                "{:<44} {:>10.0} {:>10.2?} {:>10.2?}",
                name, figures.events_per_second, figures.p50, figures.p99
            );
        }
        println!(
            "overhead: {:.2}x the bare endpoint's time per event at p50, {:.1}% of its throughput",
            ours.p50.as_secs_f64() / bare.p50.as_secs_f64(),
            100.0 * ours.events_per_second / bare.events_per_second
        );
    });
    let _ = child.kill();
    let _ = child.wait();
}
