//! Admin and cron latency through the real `payouts` binary, alone and while unauthenticated
//! junk saturates the webhook route, printed as figures (not a test).
//!
//! The flood: `BENCH_HOLDERS` (512, twice the default webhook budget) slow junk deliveries
//! that send their headers (a well-formed `Stripe-Signature` signed by nobody) and a few bytes
//! of an announced 100 kB body, then nothing, holding webhook slots (each is let go by the
//! request timeout and starts again); and `BENCH_JUNK_CLIENTS` (64) clients sending complete
//! junk deliveries back to back on keep-alive connections, answered 503 (shed) or, when a slot
//! is free, 401 by the webhooks service. All on loopback, sharing the two cores with the
//! process: what the flood costs admins and the scheduler is CPU, not slots.
//!
//!     cargo bench --bench budgets   # BENCH_ADMIN_CALLS (20000), BENCH_CRON_CALLS (2000),
//!                                   # BENCH_CLIENTS (4), BENCH_HOLDERS (512), BENCH_JUNK_CLIENTS (64)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use payouts_runtime::testing::bench::{
    Figures, drive, report, report_value, rss_mib, setting, title,
};
use payouts_runtime::testing::fake_stripe::FakeStripe;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const ADMIN_SECRET: &str = "bench-admin-jwt-secret-at-least-32-bytes";
const CRON_SECRET: &str = "bench-cron-secret-of-at-least-32-bytes";
/// Well-formed, signed by nobody.
const JUNK_SIGNATURE: &str =
    "t=1700000000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd";

fn admin_token() -> String {
    let claims = serde_json::json!({
        "sub": "bench",
        "admin": true,
        "exp": chrono::Utc::now().timestamp() + 3_600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(ADMIN_SECRET.as_bytes()),
    )
    .unwrap()
}

/// `calls` GETs of `url` with `Authorization: Bearer <token>` from `clients` keep-alive
/// clients; each must answer 200.
async fn measure(url: &str, token: &str, calls: usize, clients: usize) -> Figures {
    let http = reqwest::Client::new();
    let (url, token): (Arc<str>, Arc<str>) = (Arc::from(url), Arc::from(token));
    drive(calls, clients, move |_, _| {
        let (http, url, token) = (http.clone(), Arc::clone(&url), Arc::clone(&token));
        async move {
            let response = http.get(&*url).bearer_auth(&*token).send().await.unwrap();
            assert_eq!(response.status(), 200, "{url}");
            response.bytes().await.unwrap();
        }
    })
    .await
}

/// The junk flood, until `stop`: what it sent, by answer.
#[derive(Default)]
struct Flood {
    stop: AtomicBool,
    shed: AtomicUsize,
    refused: AtomicUsize,
    other: AtomicUsize,
    /// Answers to the flat-out clients.
    flat_out: AtomicUsize,
}

/// A slow junk delivery, again and again: headers, a few bytes of the body, then silence
/// until the gateway gives up on it (504 after the request timeout).
async fn hold_a_slot(gateway: std::net::SocketAddr, flood: Arc<Flood>) {
    let head = format!(
        "POST /api/webhooks/stripe-payouts HTTP/1.1\r\nHost: gateway\r\n\
         Stripe-Signature: {JUNK_SIGNATURE}\r\nContent-Type: application/json\r\n\
         Content-Length: 100000\r\n\r\n{{\"id\":"
    );
    while !flood.stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = tokio::net::TcpStream::connect(gateway).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if stream.write_all(head.as_bytes()).await.is_err() {
            continue;
        }
        let mut answer = [0_u8; 512];
        tokio::select! {
            read = stream.read(&mut answer) => {
                if read.is_ok_and(|read| answer[..read].starts_with(b"HTTP/1.1 503")) {
                    flood.shed.fetch_add(1, Ordering::Relaxed);
                    // Shed: it comes back after the Retry-After second, as a client would.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            () = async { while !flood.stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            } } => {}
        }
    }
}

/// Complete junk deliveries back to back on one keep-alive connection.
async fn send_junk(gateway: std::net::SocketAddr, flood: Arc<Flood>) {
    use http_body_util::{BodyExt as _, Full};
    use hyper::body::Bytes;
    use hyper_util::rt::TokioIo;
    'connection: while !flood.stop.load(Ordering::Relaxed) {
        let Ok(stream) = tokio::net::TcpStream::connect(gateway).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        stream.set_nodelay(true).unwrap();
        let Ok((mut sender, connection)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            continue;
        };
        tokio::spawn(connection);
        while !flood.stop.load(Ordering::Relaxed) {
            let request = hyper::Request::post("/api/webhooks/stripe-payouts")
                .header("host", "gateway")
                .header("stripe-signature", JUNK_SIGNATURE)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(br#"{"id":"evt_junk"}"#)))
                .unwrap();
            let Ok(response) = sender.send_request(request).await else {
                continue 'connection;
            };
            let counter = match response.status().as_u16() {
                503 => &flood.shed,
                401 => &flood.refused,
                _ => &flood.other,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            flood.flat_out.fetch_add(1, Ordering::Relaxed);
            if response.into_body().collect().await.is_err() {
                continue 'connection;
            }
        }
    }
}

/// The process under measurement.
struct Target<'a> {
    address: std::net::SocketAddr,
    admin_url: &'a str,
    cron_url: &'a str,
    token: &'a str,
    admin_calls: usize,
    cron_calls: usize,
    clients: usize,
    pid: u32,
}

impl Target<'_> {
    /// Admin's and cron's figures while `holders` slow junk deliveries (and `junk_clients`
    /// flat-out junk clients) run, and what the junk got.
    async fn under_flood(&self, holders: usize, junk_clients: usize) -> (Figures, Figures, String) {
        let (address, admin_url, cron_url, token) =
            (self.address, self.admin_url, self.cron_url, self.token);
        let (admin_calls, cron_calls, clients) = (self.admin_calls, self.cron_calls, self.clients);
        let flood = Arc::new(Flood::default());
        let mut flooders = Vec::new();
        for _ in 0..holders {
            flooders.push(tokio::spawn(hold_a_slot(address, Arc::clone(&flood))));
        }
        for _ in 0..junk_clients {
            flooders.push(tokio::spawn(send_junk(address, Arc::clone(&flood))));
        }
        // The flood is on once junk is being shed and every flat-out client is sending.
        let started = Instant::now();
        while flood.shed.load(Ordering::Relaxed) == 0
            || flood.flat_out.load(Ordering::Relaxed) < junk_clients * 100
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "junk never shed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let flood_started = Instant::now();
        let answered_before = flood.shed.load(Ordering::Relaxed)
            + flood.refused.load(Ordering::Relaxed)
            + flood.other.load(Ordering::Relaxed);
        let admin_flood = measure(admin_url, token, admin_calls, clients).await;
        let cron_flood = measure(cron_url, CRON_SECRET, cron_calls, 1).await;
        let flood_seconds = flood_started.elapsed().as_secs_f64();
        let resident = rss_mib(self.pid).unwrap_or_default();
        flood.stop.store(true, Ordering::Relaxed);
        let (shed, refused, other) = (
            flood.shed.load(Ordering::Relaxed),
            flood.refused.load(Ordering::Relaxed),
            flood.other.load(Ordering::Relaxed),
        );
        for flooder in flooders {
            flooder.abort();
        }

        #[allow(clippy::cast_precision_loss)]
        let junk_rate = (shed + refused + other - answered_before) as f64 / flood_seconds;
        let note = format!(
            "{holders} slow deliveries, {junk_clients} flat-out clients: {junk_rate:.0} junk answers/s; in all {shed} shed (503), {refused} refused by the webhooks service (401), {other} other; the process at {resident:.1} MiB resident"
        );
        (admin_flood, cron_flood, note)
    }
}

fn main() {
    let admin_calls = setting("BENCH_ADMIN_CALLS", 20_000);
    let cron_calls = setting("BENCH_CRON_CALLS", 2_000);
    let clients = setting("BENCH_CLIENTS", 4);
    let holders = setting("BENCH_HOLDERS", 512);
    let junk_clients = setting("BENCH_JUNK_CLIENTS", 64);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let stripe = FakeStripe::start().await;
        stripe.set_balance(1_000_000_00, 0);
        let payouts = support::Payouts::start(&[
            ("STRIPE_SECRET_KEY", "sk_test_bench"),
            ("STRIPE_API_BASE", stripe.url()),
            ("STRIPE_WEBHOOK_SECRET_PAYOUTS", "whsec_bench"),
            ("ADMIN_JWT_SECRET", ADMIN_SECRET),
            ("CRON_SECRET", CRON_SECRET),
            // The slow junk holds a slot this long before it starts again.
            ("GATEWAY_REQUEST_TIMEOUT_SECONDS", "5"),
        ]);
        let gateway = payouts.announced("gateway listening on ").to_owned();
        let address: std::net::SocketAddr = gateway.trim_start_matches("http://").parse().unwrap();
        let admin_url = format!("{gateway}/api/admin/webhooks/stats");
        let cron_url = format!("{gateway}/api/cron/platform-balance-check");
        let token = admin_token();
        title(&format!(
            "budgets: admin ({clients} clients) and cron (1 client) alone, then under a junk flood on the webhook route ({holders} slow deliveries + {junk_clients} junk clients), loopback HTTP/1.1, all-in-one binary, embedded store"
        ));
        // Warm up (connections, allocator).
        measure(&admin_url, &token, 200, clients).await;
        measure(&cron_url, CRON_SECRET, 20, 1).await;

        let admin_alone = measure(&admin_url, &token, admin_calls, clients).await;
        let cron_alone = measure(&cron_url, CRON_SECRET, cron_calls, 1).await;

        let quiet = Target { address, admin_url: &admin_url, cron_url: &cron_url, token: &token, admin_calls, cron_calls, clients, pid: payouts.pid() };
        let (admin_held, cron_held, held) = quiet.under_flood(holders, 0).await;
        let (admin_flood, cron_flood, flooded) = quiet.under_flood(holders, junk_clients).await;
        let ratio = |flooded: &Figures, alone: &Figures| {
            format!(
                "p50 {:.2}x, p99 {:.2}x alone",
                flooded.p50.as_secs_f64() / alone.p50.as_secs_f64(),
                flooded.p99.as_secs_f64() / alone.p99.as_secs_f64()
            )
        };
        report("budgets", "admin GET /api/admin/webhooks/stats, alone", &admin_alone, "baseline");
        report(
            "budgets",
            "admin, every webhook slot held by slow junk",
            &admin_held,
            &format!("{}; never shed", ratio(&admin_held, &admin_alone)),
        );
        report(
            "budgets",
            "admin, slots held and junk sent flat out",
            &admin_flood,
            &format!("{}; never shed", ratio(&admin_flood, &admin_alone)),
        );
        report("budgets", "cron platform-balance-check, alone", &cron_alone, "baseline");
        report(
            "budgets",
            "cron, every webhook slot held by slow junk",
            &cron_held,
            &format!("{}; never shed", ratio(&cron_held, &cron_alone)),
        );
        report(
            "budgets",
            "cron, slots held and junk sent flat out",
            &cron_flood,
            &format!("{}; never shed", ratio(&cron_flood, &cron_alone)),
        );
        report_value("budgets", "slow junk meanwhile", &held);
        report_value("budgets", "slow and flat-out junk meanwhile", &flooded);
    });
}
