//! Admin sign-in as production runs it, end to end: the real binary verifies admins with an
//! identity provider's keys fetched from `ADMIN_JWT_JWKS_URL` (a JWKS served on loopback by
//! this test), reads the role claim, refuses a viewer every change; admin routes answer 503
//! while the provider's keys could not be fetched; with live money, HS256 is refused at start
//! and `payouts admin token` refuses to mint.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use support::{Payouts, StoreChoice};

const ISSUER: &str = "https://idp.example.test";
const AUDIENCE: &str = "payouts";
const ROLE_CLAIM: &str = "payouts_role";

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// An identity provider's JWKS on loopback, answering `status` with the fixture's key (kid
/// `test-rsa`); counts its requests.
async fn identity_provider(status: u16) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let jwks = std::fs::read_to_string(fixture("jwks.json")).unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = requests.clone();
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let (jwks, counted) = (jwks.clone(), counted.clone());
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                (axum::http::StatusCode::from_u16(status).unwrap(), jwks)
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}/.well-known/jwks.json"), requests)
}

/// A token of the identity provider (RS256, kid `test-rsa`), with these claims added.
fn idp_token(subject: &str, extra: serde_json::Value) -> String {
    let mut claims = serde_json::json!({
        "sub": subject,
        "admin": true,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "exp": chrono::Utc::now().timestamp() + 300,
    });
    for (key, value) in extra.as_object().unwrap() {
        claims[key] = value.clone();
    }
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("test-rsa".to_owned());
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(
        &std::fs::read(fixture("rsa_private.pem")).unwrap(),
    )
    .unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn start(jwks_url: &str) -> Payouts {
    Payouts::start(
        &[],
        StoreChoice::Embedded,
        &[
            ("ADMIN_JWT_JWKS_URL", jwks_url),
            ("ADMIN_JWT_ISSUER", ISSUER),
            ("ADMIN_JWT_AUDIENCE", AUDIENCE),
            ("ADMIN_JWT_ROLE_CLAIM", ROLE_CLAIM),
            ("WEBHOOK_BACKFILL_INTERVAL", "off"),
            ("RECONCILIATION_INTERVAL", "off"),
        ],
    )
}

async fn call(
    process: &Payouts,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .request(method, process.gateway_url(path))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_sign_in_with_the_identity_providers_keys_and_a_viewer_only_reads() {
    let (jwks_url, requests) = identity_provider(200).await;
    let process = start(&jwks_url);
    let approver = idp_token(
        "alice@example.com",
        serde_json::json!({ROLE_CLAIM: "approver"}),
    );
    let viewer = idp_token(
        "victor@example.com",
        serde_json::json!({ROLE_CLAIM: "viewer"}),
    );

    let (status, me) = call(
        &process,
        reqwest::Method::GET,
        "/api/admin/me",
        &approver,
        None,
    )
    .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        me,
        serde_json::json!({"subject": "alice@example.com", "role": "approver"})
    );
    let (status, me) = call(
        &process,
        reqwest::Method::GET,
        "/api/admin/me",
        &viewer,
        None,
    )
    .await;
    assert_eq!((status, me["role"].as_str()), (200, Some("viewer")));
    assert!(requests.load(Ordering::SeqCst) >= 1, "the JWKS was fetched");

    // A viewer reads every page...
    for path in [
        "/api/admin/payout-approvals",
        "/api/admin/alerts",
        "/api/admin/payouts",
        "/api/admin/webhooks/stats",
    ] {
        let (status, body) = call(&process, reqwest::Method::GET, path, &viewer, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    // ...and changes nothing: a decision, a pause, a retry, a reconciliation.
    let decision = serde_json::json!({"approvalId": "apr_missing", "action": "approve"});
    for (path, body) in [
        ("/api/admin/payout-approval", Some(decision.clone())),
        (
            "/api/admin/balance/pause",
            Some(serde_json::json!({"reason": "x"})),
        ),
        ("/api/admin/payouts/pay_missing/resume", None),
        ("/api/admin/reconciliation/run", None),
    ] {
        let (status, answer) = call(&process, reqwest::Method::POST, path, &viewer, body).await;
        assert_eq!(status, 403, "{path}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("viewer"),
            "{path}: {answer}"
        );
    }
    // The approver gets past the gate: the approval does not exist.
    let (status, answer) = call(
        &process,
        reqwest::Method::POST,
        "/api/admin/payout-approval",
        &approver,
        Some(decision),
    )
    .await;
    assert_eq!(status, 404, "{answer}");

    // No role, an unknown role, another issuer, an HS256 token: refused.
    let no_role = idp_token("nobody", serde_json::json!({}));
    let (status, answer) = call(
        &process,
        reqwest::Method::GET,
        "/api/admin/me",
        &no_role,
        None,
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains(ROLE_CLAIM));
    let owner = idp_token("o", serde_json::json!({ROLE_CLAIM: "owner"}));
    let (status, _) = call(
        &process,
        reqwest::Method::GET,
        "/api/admin/me",
        &owner,
        None,
    )
    .await;
    assert_eq!(status, 403);
    let foreign = idp_token(
        "mallory",
        serde_json::json!({"iss": "https://other.example", ROLE_CLAIM: "approver"}),
    );
    let (status, _) = call(
        &process,
        reqwest::Method::GET,
        "/api/admin/me",
        &foreign,
        None,
    )
    .await;
    assert_eq!(status, 401);
    let minted = support::admin_token("any-secret-of-at-least-32-bytes-long", "mallory", true);
    let (status, _) = call(
        &process,
        reqwest::Method::GET,
        "/api/admin/me",
        &minted,
        None,
    )
    .await;
    assert_eq!(status, 401);
    process.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_are_unavailable_while_the_identity_provider_is_down() {
    let (jwks_url, requests) = identity_provider(503).await;
    let process = start(&jwks_url);
    let approver = idp_token("alice", serde_json::json!({ROLE_CLAIM: "approver"}));
    let (status, answer) = call(
        &process,
        reqwest::Method::GET,
        "/api/admin/payout-approvals",
        &approver,
        None,
    )
    .await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("ADMIN_JWT_JWKS_URL"),
        "{answer}"
    );
    // Webhooks and health do not depend on it.
    let health = reqwest::get(process.gateway_url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(requests.load(Ordering::SeqCst) >= 1);
    process.terminate();
}

fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let output = support::command(args, env)
        .stdout(std::process::Stdio::piped())
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn live_money_refuses_a_shared_admin_secret_and_minting() {
    let secret = "admin-secret-of-at-least-32-bytes-long";
    let live = [
        ("STRIPE_SECRET_KEY", "sk_live_e2e"),
        ("STRIPE_LIVEMODE", "true"),
        ("ADMIN_JWT_SECRET", secret),
        ("PAYOUTS_ALLOW_PLAINTEXT_GRPC", "true"),
    ];
    // HS256 with live money: refused at start, naming the setting and the way out.
    for args in [&["gateway"][..], &["config", "check", "gateway"][..]] {
        let (ok, _, stderr) = run(args, &live);
        assert!(!ok, "{args:?}");
        assert!(
            stderr.contains("invalid setting ADMIN_JWT_SECRET"),
            "{stderr}"
        );
        assert!(stderr.contains("ADMIN_JWT_ALLOW_HS256"), "{stderr}");
    }
    let (ok, stdout, stderr) = run(&["admin", "token", "--sub", "alice"], &live);
    assert!(!ok && stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("ADMIN_JWT_SECRET"), "{stderr}");
    // Explicitly allowed, the gateway accepts the secret, but nothing mints a token with it.
    let mut allowed = live.to_vec();
    allowed.push(("ADMIN_JWT_ALLOW_HS256", "true"));
    let (_, _, stderr) = run(&["config", "check", "gateway"], &allowed);
    assert!(!stderr.contains("ADMIN_JWT_SECRET"), "{stderr}");
    let (ok, stdout, stderr) = run(&["admin", "token", "--sub", "alice"], &allowed);
    assert!(!ok && stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("refusing to mint"), "{stderr}");
    assert!(stderr.contains("identity provider"), "{stderr}");
    // A test configuration mints, with the role asked for.
    let (ok, stdout, stderr) = run(
        &["admin", "token", "--sub", "vera", "--role", "viewer"],
        &[
            ("STRIPE_SECRET_KEY", "sk_test_e2e"),
            ("ADMIN_JWT_SECRET", secret),
            ("ADMIN_JWT_ROLE_CLAIM", ROLE_CLAIM),
        ],
    );
    assert!(ok, "{stderr}");
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        stdout.trim(),
        &jsonwebtoken::DecodingKey::from_secret(secret.as_bytes()),
        &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256),
    )
    .unwrap()
    .claims;
    assert_eq!(claims["sub"], "vera");
    assert_eq!(claims[ROLE_CLAIM], "viewer");
}
