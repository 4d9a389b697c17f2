//! The real binary, started on free ports: both webhook health endpoints answer over HTTP,
//! every service reports SERVING over gRPC health and is discoverable through reflection,
//! on the embedded store and on MongoDB; bad starts fail with a message that names the cause.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

mod support;

use serde_json::Value;

use std::collections::BTreeSet;

use support::{Payouts, StoreChoice};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

const SERVICES: [&str; 7] = [
    "payouts.webhooks.v1.WebhooksService",
    "payouts.payouts.v1.PayoutsService",
    "payouts.limits.v1.PayoutLimitsService",
    "payouts.approvals.v1.ApprovalsService",
    "payouts.disputes.v1.DisputesService",
    "payouts.balance.v1.BalanceService",
    "payouts.notifications.v1.NotificationsService",
];

async fn assert_webhook_endpoints_answer(process: &Payouts) {
    let http = reqwest::Client::new();
    for (path, service) in [
        ("/api/webhooks/stripe-payouts", "stripe-payouts-webhook"),
        ("/api/webhooks/stripe-transfers", "stripe-transfers-webhook"),
        (
            "/api/webhooks/stripe-subscription",
            "stripe-subscription-webhook",
        ),
    ] {
        let response = http.get(process.gateway_url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert!(response.headers().contains_key("x-request-id"));
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["status"], "ok");
        assert_eq!(body["service"], service);
        assert!(
            body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{body}"
        );
    }
}

async fn serving_status(grpc_url: &str, service: &str) -> ServingStatus {
    let mut health = HealthClient::new(support::connect(grpc_url).await);
    // SERVING is set once the store answers; wait for it rather than sleep.
    for _ in 0..600 {
        let response = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await;
        if let Ok(response) = response {
            let status = response.into_inner().status();
            if status == ServingStatus::Serving {
                return status;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    ServingStatus::NotServing
}

async fn reflected_services(grpc_url: &str) -> BTreeSet<String> {
    let mut reflection = ServerReflectionClient::new(support::connect(grpc_url).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses
        .message()
        .await
        .unwrap()
        .expect("a reflection answer");
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => list
            .service
            .into_iter()
            .map(|service| service.name)
            .collect(),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

async fn assert_every_service_serves(process: &Payouts) {
    let grpc_url = process.grpc_url();
    for service in SERVICES {
        assert_eq!(
            serving_status(&grpc_url, service).await,
            ServingStatus::Serving,
            "{service}"
        );
    }
    let reflected = reflected_services(&grpc_url).await;
    for service in SERVICES {
        assert!(
            reflected.contains(service),
            "{service} missing from {reflected:?}"
        );
    }
    assert!(reflected.contains("grpc.health.v1.Health"));
    // What `payouts config services` says (the chart's probes use it) is what is registered.
    let output = support::command(&["config", "services"], &[])
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    let listed: BTreeSet<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1).map(str::to_owned))
        .collect();
    let ours: BTreeSet<String> = reflected
        .into_iter()
        .filter(|name| name.starts_with("payouts."))
        .collect();
    assert_eq!(listed, ours);
}

// Multi-threaded: `terminate` blocks one thread while the clients' connections, driven by the
// other, answer the server's shutdown.
/// The endpoints' signing secrets: without them the webhooks service cannot take deliveries.
const WEBHOOK_SECRETS: [(&str, &str); 3] = [
    ("STRIPE_WEBHOOK_SECRET_PAYOUTS", "whsec_health_payouts"),
    ("STRIPE_WEBHOOK_SECRET", "whsec_health_subscription"),
    ("STRIPE_WEBHOOK_SECRET_TRANSFERS", "whsec_health_transfers"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_in_one_on_the_embedded_store_serves_health_everywhere() {
    let process = Payouts::start(&[], StoreChoice::Embedded, &WEBHOOK_SECRETS);
    assert!(
        process
            .stderr_lines
            .iter()
            .any(|line| line.contains("store: embedded")),
        "{:?}",
        process.stderr_lines
    );
    assert_webhook_endpoints_answer(&process).await;
    assert_every_service_serves(&process).await;
    let ready = reqwest::get(process.gateway_url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    let exit = process.terminate();
    assert!(exit.success(), "graceful shutdown exits 0, got {exit}");
}

// Multi-threaded: `terminate` blocks one thread while the clients' connections, driven by the
// other, answer the server's shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_in_one_on_mongodb_serves_health_everywhere() {
    let process = Payouts::start(&[], StoreChoice::Mongo, &WEBHOOK_SECRETS);
    assert!(
        process
            .stderr_lines
            .iter()
            .any(|line| line.contains("store: MongoDB database")),
        "{:?}",
        process.stderr_lines
    );
    assert_webhook_endpoints_answer(&process).await;
    assert_every_service_serves(&process).await;
    assert!(process.terminate().success());
}

/// All in one without the webhook secrets starts (the other services work), but the
/// webhooks service's health says it cannot take deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_webhook_secrets_the_webhooks_service_is_not_ready() {
    let process = Payouts::start(&[], StoreChoice::Embedded, &WEBHOOK_SECRETS[..1]);
    let grpc_url = process.grpc_url();
    assert_eq!(
        serving_status(&grpc_url, SERVICES[1]).await,
        ServingStatus::Serving
    );
    let mut health = HealthClient::new(support::connect(&grpc_url).await);
    let status = health
        .check(HealthCheckRequest {
            service: SERVICES[0].to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::NotServing);
    assert!(process.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_can_be_turned_off() {
    let process = Payouts::start(
        &["serve", "limits"],
        StoreChoice::Embedded,
        &[("GRPC_REFLECTION", "false")],
    );
    let mut reflection = ServerReflectionClient::new(support::connect(&process.grpc_url()).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let refused = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented);
    assert_eq!(
        serving_status(&process.grpc_url(), "payouts.limits.v1.PayoutLimitsService").await,
        ServingStatus::Serving,
        "health stays open"
    );
}

#[tokio::test]
async fn one_service_alone_serves_only_itself() {
    let process = Payouts::start(&["serve", "limits"], StoreChoice::Embedded, &[]);
    let grpc_url = process.grpc_url();
    assert_eq!(
        serving_status(&grpc_url, "payouts.limits.v1.PayoutLimitsService").await,
        ServingStatus::Serving
    );
    let mut health = HealthClient::new(support::connect(&grpc_url).await);
    let unknown = health
        .check(HealthCheckRequest {
            service: SERVICES[0].to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    assert!(process.gateway.is_none());
}

#[tokio::test]
async fn the_gateway_alone_answers_health() {
    // One service up, the others nowhere: live, not ready, and it says which.
    let limits = Payouts::start(&["serve", "limits"], StoreChoice::Embedded, &[]);
    let process = Payouts::start(
        &["gateway"],
        StoreChoice::Embedded,
        &[("LIMITS_SERVICE_URL", &limits.grpc_url())],
    );
    assert_webhook_endpoints_answer(&process).await;
    assert!(process.grpc.is_none());
    let http = reqwest::Client::new();
    let live = http
        .get(process.gateway_url("/livez"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let mut ready = Value::Null;
    for _ in 0..200 {
        let response = http
            .get(process.gateway_url("/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        ready = response.json().await.unwrap();
        if ready["services"]["limits"] == "SERVING" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(ready["status"], "not ready", "{ready}");
    assert_eq!(ready["services"]["limits"], "SERVING", "{ready}");
    assert!(
        ready["services"]["payouts"]
            .as_str()
            .unwrap()
            .starts_with("unreachable"),
        "{ready}"
    );
}

fn failed_start(args: &[&str], env: &[(&str, &str)]) -> String {
    let output = support::command(args, env).output().expect("payouts runs");
    assert!(!output.status.success(), "{args:?} {env:?} should fail");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn an_unknown_command_is_named() {
    let stderr = failed_start(&["launch"], &[]);
    assert!(
        stderr.contains("unrecognized subcommand 'launch'"),
        "{stderr}"
    );
    let stderr = failed_start(&["serve", "ledger"], &[]);
    assert!(stderr.contains("invalid value 'ledger'"), "{stderr}");
}

/// A refused configuration: the command, its environment, and what the refusal says.
type Refused<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);

/// Each configuration that would lose or mis-handle money is refused at start, naming the
/// setting; `payouts config check` says the same without starting anything.
#[test]
fn configurations_that_would_lose_money_are_refused() {
    let long_secret = "x".repeat(32);
    // The cases below are about other settings: plaintext gRPC between processes is allowed
    // in them (the first two cases are about mutual TLS itself).
    let plaintext = ("PAYOUTS_ALLOW_PLAINTEXT_GRPC", "true");
    let mongo = ("MONGODB_URI", "mongodb://db:27017");
    let mut cases: Vec<Refused> = vec![
        (
            vec!["serve", "limits"],
            vec![mongo],
            "invalid setting GRPC_TLS_CERT_FILE",
        ),
        (
            vec!["gateway"],
            vec![],
            "invalid setting GRPC_TLS_CERT_FILE",
        ),
        // The image's old default: every RPC open to whoever reaches the port.
        (
            vec![],
            vec![("GRPC_ADDR", "0.0.0.0:0")],
            "invalid setting GRPC_ADDR",
        ),
    ];
    let mut other_settings: Vec<Refused> = vec![
        (
            vec!["serve", "limits"],
            vec![],
            "invalid setting MONGODB_URI",
        ),
        (
            vec!["serve", "webhooks"],
            vec![
                ("PAYOUTS_ALLOW_EMBEDDED", "true"),
                WEBHOOK_SECRETS[1],
                WEBHOOK_SECRETS[2],
            ],
            "invalid setting STRIPE_WEBHOOK_SECRET_PAYOUTS",
        ),
        (
            vec![],
            vec![("STRIPE_SECRET_KEY", "sk_live_123")],
            "invalid setting STRIPE_LIVEMODE",
        ),
        (
            vec![],
            vec![
                ("STRIPE_SECRET_KEY", "sk_live_123"),
                ("STRIPE_LIVEMODE", "true"),
                ("PAYOUTS_ALLOW_EMBEDDED", "true"),
            ],
            "invalid setting MONGODB_URI",
        ),
        (
            vec![],
            vec![
                ("STRIPE_SECRET_KEY", "sk_test_123"),
                ("STRIPE_LIVEMODE", "true"),
            ],
            "invalid setting STRIPE_LIVEMODE",
        ),
        (
            vec!["gateway"],
            vec![("ADMIN_JWT_JWKS_FILE", "/etc/jwks.json")],
            "invalid setting ADMIN_JWT_ISSUER",
        ),
        (
            vec!["gateway"],
            vec![("ADMIN_JWT_SECRET", "too-short")],
            "invalid setting ADMIN_JWT_SECRET",
        ),
    ];
    for (_, env, _) in &mut other_settings {
        env.push(plaintext);
    }
    cases.extend(other_settings);
    for (args, env, expected) in cases {
        let stderr = failed_start(&args, &env);
        assert!(stderr.contains(expected), "{args:?} {env:?}: {stderr}");
        let role = args.last().copied().unwrap_or("all");
        let output = support::command(&["config", "check", role], &env)
            .stdout(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert!(!output.status.success(), "config check {role} {env:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
    // A good configuration: printed with its secrets redacted, exit 0.
    let output = support::command(
        &["config", "check", "webhooks"],
        &[
            ("MONGODB_URI", "mongodb://user:hunter2@db:27017"),
            ("ADMIN_JWT_SECRET", &long_secret),
            WEBHOOK_SECRETS[0],
            WEBHOOK_SECRETS[1],
            WEBHOOK_SECRETS[2],
            plaintext,
        ],
    )
    .stdout(std::process::Stdio::piped())
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("configuration OK"), "{stdout}");
    assert!(stdout.contains("mongodb_uri"), "{stdout}");
    for secret in [
        "hunter2",
        long_secret.as_str(),
        "whsec_health_payouts",
        "whsec_health_transfers",
    ] {
        assert!(!stdout.contains(secret), "{secret} printed");
    }
    let unknown = failed_start(&["config", "check", "ledger"], &[]);
    assert!(
        unknown.contains("say all, gateway or a service"),
        "{unknown}"
    );
}

#[test]
fn an_invalid_setting_is_named() {
    let stderr = failed_start(&[], &[("GRPC_ADDR", "localhost")]);
    assert!(stderr.contains("invalid setting GRPC_ADDR"), "{stderr}");
    let stderr = failed_start(&[], &[("STRIPE_WEBHOOK_TOLERANCE_SECONDS", "soon")]);
    assert!(
        stderr.contains("invalid setting STRIPE_WEBHOOK_TOLERANCE_SECONDS"),
        "{stderr}"
    );
}

#[test]
fn a_port_in_use_is_reported_as_such() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let stderr = failed_start(&[], &[("GATEWAY_ADDR", address.as_str())]);
    assert!(
        stderr.contains(&format!("GATEWAY_ADDR {address} is already in use")),
        "{stderr}"
    );
}

#[test]
fn help_explains_the_modes() {
    let output = support::command(&["--help"], &[])
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "serve",
        "gateway",
        "GATEWAY_ADDR",
        "GRPC_ADDR",
        "MONGODB_URI",
    ] {
        assert!(
            help.contains(expected),
            "--help does not mention {expected}"
        );
    }
}

/// A fresh deployment starts every pod at once: the webhooks service's first backfill runs
/// before the payouts service answers. That is expected, not a warning: the first start of a
/// service whose peers are still coming up logs no warning (and the job runs again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_before_its_peers_are_up_logs_no_warning() {
    use std::io::{BufRead as _, Read as _};
    let stripe = payouts_runtime::testing::fake_stripe::FakeStripe::start().await;
    // Nothing listens on the payouts service's address yet.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let payouts_url = format!("http://{}", unused.local_addr().unwrap());
    drop(unused);
    let mut env = WEBHOOK_SECRETS.to_vec();
    env.extend([
        ("STRIPE_SECRET_KEY", "sk_test_first_start"),
        ("STRIPE_API_BASE", stripe.url()),
        ("PAYOUTS_SERVICE_URL", payouts_url.as_str()),
        ("PAYOUTS_ALLOW_EMBEDDED", "true"),
        ("PAYOUTS_ALLOW_PLAINTEXT_GRPC", "true"),
        ("GRPC_TIMEOUT_MILLISECONDS", "500"),
        ("RUST_LOG", "info"),
    ]);
    let mut child = support::command(&["serve", "webhooks"], &env)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Read stderr to its end on a thread: a closed pipe would fail the process's writes.
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (sender, announced) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("payouts: metrics at ") {
                let _ = sender.send(url.to_owned());
            }
        }
    });
    let metrics = announced
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the metrics address is announced");
    // Wait until the backfill has run once and failed for want of the payouts service.
    let failed = "payouts_jobs_runs_total{job=\"webhook-backfill\",result=\"failed\"}";
    let mut seen = false;
    for _ in 0..200 {
        let text = match reqwest::get(&metrics).await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(failed) {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    let mut logs = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    child.wait().unwrap();
    assert!(seen, "the backfill never ran:\n{logs}");
    assert!(
        logs.contains("waits for a service that is still starting"),
        "{logs}"
    );
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("\"level\":\"WARN\"") || line.contains("\"level\":\"ERROR\""))
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}
