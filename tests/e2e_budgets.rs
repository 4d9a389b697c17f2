//! The gateway under unauthenticated load, end to end on loopback: junk that holds every
//! webhook slot does not take admin's, the scheduler's or the kubelet's; a client that never
//! finishes its headers is disconnected. Bounded (a few dozen connections), no timing
//! assertions: every wait is on a condition, with a generous limit only so a failure ends.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

mod support;

use std::time::{Duration, Instant};

use payouts_runtime::testing::fake_stripe::FakeStripe;
use payouts_runtime::testing::stripe;
use support::{Payouts, StoreChoice, admin_token};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const WEBHOOK_SECRET: &str = "whsec_e2e_budgets";
const CRON_SECRET: &str = "cron-e2e-budgets-secret-of-32-bytes-or-more";
const ADMIN_SECRET: &str = "admin-e2e-budgets-secret-long-enough-for-hs256";
const WEBHOOK_SLOTS: usize = 16;
/// Well-formed, signed by nobody.
/// A well-formed signature header that is not Stripe's, with a timestamp of now (one outside
/// the tolerance is refused before the body is read).
fn junk_signature() -> String {
    format!(
        "t={},v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd",
        chrono::Utc::now().timestamp()
    )
}

/// Waits until `condition` holds (checked every 50 ms), for at most a minute.
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !condition().await {
        assert!(started.elapsed() < Duration::from_secs(60), "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A junk webhook delivery that announces a large body, sends a few bytes of it and then
/// nothing: once the gateway reads its body it holds a webhook slot until dropped.
async fn slow_junk(process: &Payouts) -> TcpStream {
    let mut stream = TcpStream::connect(process.gateway.unwrap()).await.unwrap();
    let head = format!(
        "POST /api/webhooks/stripe-payouts HTTP/1.1\r\nHost: gateway\r\n\
         Stripe-Signature: {}\r\nContent-Type: application/json\r\n\
         Content-Length: 100000\r\n\r\n{{\"id\":",
        junk_signature()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// A complete junk delivery (well-formed signature, not Stripe's): its status.
async fn junk_delivery(http: &reqwest::Client, process: &Payouts) -> reqwest::Response {
    http.post(process.gateway_url("/api/webhooks/stripe-payouts"))
        .header("Stripe-Signature", junk_signature())
        .body(r#"{"id":"evt_junk"}"#)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_cron_and_probes_answer_while_junk_holds_every_webhook_slot() {
    let fake_stripe = FakeStripe::start().await;
    fake_stripe.set_balance(1_000_000_00, 0);
    let slots = WEBHOOK_SLOTS.to_string();
    let process = Payouts::start(
        &[],
        StoreChoice::Embedded,
        &[
            ("STRIPE_SECRET_KEY", "sk_test_e2e_budgets"),
            ("STRIPE_API_BASE", fake_stripe.url()),
            ("STRIPE_WEBHOOK_SECRET_PAYOUTS", WEBHOOK_SECRET),
            ("CRON_SECRET", CRON_SECRET),
            ("ADMIN_JWT_SECRET", ADMIN_SECRET),
            ("GATEWAY_MAX_CONCURRENT_WEBHOOKS", &slots),
            // The one limit there used to be, set as low: it no longer covers webhooks.
            ("GATEWAY_MAX_CONCURRENT_REQUESTS", &slots),
        ],
    );
    let http = reqwest::Client::new();

    // Fill every webhook slot with slow junk, and a few connections more.
    let mut junk = Vec::new();
    for _ in 0..WEBHOOK_SLOTS + 4 {
        junk.push(slow_junk(&process).await);
    }
    // Full once a further delivery is shed rather than answered.
    eventually("the webhook budget is full", || async {
        junk_delivery(&http, &process).await.status() == 503
    })
    .await;
    let shed = junk_delivery(&http, &process).await;
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["retry-after"], "1");

    // Meanwhile admin, cron and the probes are served as usual.
    let token = admin_token(ADMIN_SECRET, "admin-budgets", true);
    let stats = http
        .get(process.gateway_url("/api/admin/webhooks/stats"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 200, "admin under a webhook flood");
    let cron = http
        .get(process.gateway_url("/api/cron/platform-balance-check"))
        .bearer_auth(CRON_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(cron.status(), 200, "cron under a webhook flood");
    let body: serde_json::Value = cron.json().await.unwrap();
    assert_eq!(body["success"], true, "{body}");
    for probe in ["/livez", "/readyz", "/healthz"] {
        let response = http.get(process.gateway_url(probe)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{probe} under a webhook flood");
    }
    // Still full: the junk was holding its slots all along.
    assert_eq!(junk_delivery(&http, &process).await.status(), 503);

    // The sheds are counted by budget.
    let metrics = http
        .get(process.metrics_url())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("payouts_http_shed_total{budget=\"webhooks\"}")),
        "{metrics}"
    );
    assert!(
        !metrics.contains("budget=\"admin\""),
        "admin was never shed"
    );

    // The junk goes away: Stripe's signed deliveries are taken again.
    drop(junk);
    let mut event = stripe::event("evt_e2e_budgets", "account.updated", "account");
    event["account"] = serde_json::json!("acct_e2e_budgets");
    eventually("a signed delivery is acknowledged again", || async {
        support::deliver_webhook(
            &process,
            "/api/webhooks/stripe-payouts",
            WEBHOOK_SECRET,
            &event,
        )
        .await
        .status()
            == 200
    })
    .await;
    assert!(process.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_trickles_its_headers_is_disconnected() {
    let process = Payouts::start(
        &[],
        StoreChoice::Embedded,
        &[("GATEWAY_HEADER_READ_TIMEOUT_SECONDS", "1")],
    );
    let address = process.gateway.unwrap();

    // A client that finishes its headers is answered...
    let mut prompt = TcpStream::connect(address).await.unwrap();
    prompt
        .write_all(b"GET /livez HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    prompt.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // ...one that sends a header line now and then, never the blank line that ends them,
    // is disconnected without an answer.
    let stream = TcpStream::connect(address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer
        .write_all(b"GET /livez HTTP/1.1\r\nHost: gateway\r\n")
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        for line in 0..600 {
            let header = format!("X-Slow-{line}: a\r\n");
            if writer.write_all(header.as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the gateway kept reading headers for a minute");
    });
    let mut received = Vec::new();
    // Closed, or reset (the server closed while header lines were still arriving): either
    // way it ended, which is what is waited for.
    let _closed_or_reset =
        tokio::time::timeout(Duration::from_secs(60), reader.read_to_end(&mut received))
            .await
            .expect("the gateway closes the connection");
    let received = String::from_utf8_lossy(&received);
    assert!(!received.contains(" 200 "), "{received}");
    trickle.abort();
    assert!(process.terminate().success());
}

/// One address cannot hold more than its share of connections: over it, a new connection is
/// closed before anything is read, and the others (the kubelet's probes, the ingress
/// controller) are not affected; a connection given back makes room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_more_than_its_share_of_connections() {
    let process = Payouts::start(
        &[],
        StoreChoice::Embedded,
        &[
            ("GATEWAY_MAX_CONNECTIONS_PER_PEER", "5"),
            ("GATEWAY_HEADER_READ_TIMEOUT_SECONDS", "60"),
        ],
    );
    let address = process.gateway.unwrap();
    let livez = |mut stream: TcpStream| async move {
        stream
            .write_all(b"GET /livez HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_string(&mut answer))
            .await
            .ok()?
            .ok()?;
        Some(answer)
    };
    // Five idle connections from 127.0.0.1 hold its share.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(TcpStream::connect(address).await.unwrap());
    }
    // Let the accept loop take them all before the sixth arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sixth = TcpStream::connect(address).await.unwrap();
    let refused = livez(sixth).await.unwrap_or_default();
    assert!(!refused.starts_with("HTTP/1.1 200"), "{refused}");
    // Give one back: the next connection is served.
    held.pop();
    let mut served = None;
    for _ in 0..50 {
        let stream = TcpStream::connect(address).await.unwrap();
        if let Some(answer) = livez(stream)
            .await
            .filter(|answer| answer.starts_with("HTTP/1.1 200"))
        {
            served = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served.is_some(), "a connection given back makes room again");
    let metrics = reqwest::get(format!("http://{}/metrics", process.metrics.unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("payouts_http_connections_refused_total{reason=\"peer_connections\"}"),
        "{metrics}"
    );
}
