//! Webhook ingestion through the real `payouts` binary, printed as figures (not a test).
//!
//! Signed Stripe webhooks over HTTP/1.1 on loopback into the all-in-one process (gateway ->
//! webhooks service in process -> embedded store, its worker processing them as they arrive),
//! with N concurrent clients; in the same run, the same load on a bare endpoint of the same
//! HTTP stack (axum on hyper, TCP_NODELAY) that does nothing, so the ratio shows what
//! verification, storage, the service call and processing cost. Also the process's resident
//! memory: idle, right after the events were acknowledged, and once they were all processed.
//!
//!     cargo bench --bench webhooks          # BENCH_EVENTS (100000), BENCH_CLIENTS (64)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use payouts_runtime::testing::bench::{
    Figures, drive, report, report_value, rss_mib, setting, title,
};
use payouts_runtime::testing::stripe;

const SECRET: &str = "whsec_bench";
const ADMIN_SECRET: &str = "bench-admin-jwt-secret-at-least-32-bytes";

type Payloads = Arc<Vec<(Vec<u8>, String)>>;

/// Sends every payload to `url` from `clients` concurrent clients, each on a keep-alive
/// connection of its own; each delivery must be acknowledged. The client is hyper's own
/// HTTP/1.1 connection, the leanest standard one: the load generator shares the two cores
/// with the server, so every microsecond it spends is one the server does not get.
async fn load(url: &str, clients: usize, payloads: Payloads) -> Figures {
    use http_body_util::{BodyExt as _, Full};
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;

    let uri: hyper::Uri = url.parse().unwrap();
    let authority = uri.authority().unwrap().to_string();
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        let stream = tokio::net::TcpStream::connect(&authority).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        connections.push(tokio::sync::Mutex::new(sender));
    }
    let connections = Arc::new(connections);
    let path: Arc<str> = Arc::from(uri.path());
    let authority: Arc<str> = Arc::from(authority.as_str());
    drive(payloads.len(), clients, move |client, index| {
        let (connections, payloads) = (Arc::clone(&connections), Arc::clone(&payloads));
        let (path, authority) = (Arc::clone(&path), Arc::clone(&authority));
        async move {
            let (body, header) = &payloads[index];
            let request = hyper::Request::post(&*path)
                .header("host", &*authority)
                .header("stripe-signature", header)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::copy_from_slice(body)))
                .unwrap();
            let mut sender = connections[client].lock().await;
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), 200);
            response.into_body().collect().await.unwrap();
        }
    })
    .await
}

/// A bare endpoint on the same HTTP stack: accepts the body, answers `{"received":true}`.
async fn bare_endpoint() -> String {
    use axum::serve::ListenerExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = axum::Router::new().route(
        "/api/webhooks/stripe-payouts",
        axum::routing::post(|_body: axum::body::Bytes| async {
            axum::Json(serde_json::json!({ "received": true }))
        }),
    );
    let listener = listener.tap_io(payouts_runtime::grpc::set_nodelay);
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}/api/webhooks/stripe-payouts")
}

fn payloads(run: &str, events: usize) -> Payloads {
    // A connected account's bank payout, as the Connect endpoint receives it.
    let mut template = stripe::event("evt_template", "payout.paid", "payout");
    template["account"] = serde_json::json!("acct_bench");
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

/// Waits until the process has processed every event it stored; how long that took.
async fn drained(gateway: &str, total: i64) -> Duration {
    let claims = serde_json::json!({
        "sub": "bench",
        "admin": true,
        "exp": chrono::Utc::now().timestamp() + 3_600,
    });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(ADMIN_SECRET.as_bytes()),
    )
    .unwrap();
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        let stats: serde_json::Value = http
            .get(format!("{gateway}/api/admin/webhooks/stats"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if std::env::var("BENCH_NO_WORKER").is_ok() || stats["completed"].as_i64() == Some(total) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "events not processed: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn main() {
    let events = setting("BENCH_EVENTS", 100_000);
    let clients = setting("BENCH_CLIENTS", 64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let payouts = support::Payouts::start(&[
        ("STRIPE_WEBHOOK_SECRET_PAYOUTS", SECRET),
        ("ADMIN_JWT_SECRET", ADMIN_SECRET),
        ("WEBHOOK_POLL_MILLISECONDS", "50"),
    ]);
    let gateway = payouts.announced("gateway listening on ").to_owned();
    let payouts_url = format!("{gateway}/api/webhooks/stripe-payouts");
    runtime.block_on(async {
        let bare_url = bare_endpoint().await;
        let size = payloads("size", 1)[0].0.len();
        title(&format!(
            "webhooks: {events} signed events of {size} bytes, {clients} concurrent clients, loopback HTTP/1.1, all-in-one binary, embedded store"
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle = rss_mib(payouts.pid()).unwrap_or_default();
        // Warm up both (connections, allocator).
        let warm = 1_000.min(events);
        load(&bare_url, clients, payloads("warm_bare", warm)).await;
        load(&payouts_url, clients, payloads("warm_payouts", warm)).await;

        let bare = load(&bare_url, clients, payloads("bare", events)).await;
        report("webhooks", "bare axum endpoint (does nothing)", &bare, "baseline");
        let ours = load(&payouts_url, clients, payloads("payouts", events)).await;
        report(
            "webhooks",
            "gateway -> webhooks in process -> embedded store",
            &ours,
            &format!(
                "{:.2}x the bare rate; p50 {:.2}x",
                ours.per_second / bare.per_second,
                ours.p50.as_secs_f64() / bare.p50.as_secs_f64()
            ),
        );
        let acknowledged = rss_mib(payouts.pid()).unwrap_or_default();
        let total = i64::try_from(events + warm).unwrap();
        let processing = drained(&gateway, total).await;
        let processed = rss_mib(payouts.pid()).unwrap_or_default();
        report_value(
            "webhooks",
            "processing after the last acknowledgement",
            &format!("all {total} processed {:.1} s later", processing.as_secs_f64()),
        );
        report_value(
            "webhooks",
            "resident memory of the process",
            &format!(
                "idle {idle:.1} MiB; {acknowledged:.1} MiB after {events} events; {processed:.1} MiB once processed"
            ),
        );
    });
}
