//! Services in separate processes (`payouts serve …`, `payouts gateway`) authenticate every
//! gRPC call with mutual TLS on loopback: an authenticated call passes, a call without a
//! certificate is UNAUTHENTICATED, a caller the RPC does not serve is PERMISSION_DENIED, a
//! certificate from another CA is refused at the handshake, health stays open (also on the
//! plaintext health port), and a process without mutual TLS or with another component's
//! certificate refuses to start.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

mod support;

use std::sync::Arc;
use std::time::Duration;

use payouts_proto::common::v1::Money;
use payouts_proto::disputes::v1::disputes_service_client::DisputesServiceClient;
use payouts_proto::disputes::v1::{GetEarningsRequest, RecordAllocationRequest};
use payouts_runtime::config::TlsFiles;
use payouts_runtime::grpc::{TracedChannel, traced_tls_channel};
use payouts_runtime::testing::stripe;
use payouts_runtime::tls::MutualTls;
use support::{Payouts, StoreChoice, tls_env, tls_fixture};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const PAYOUTS_SECRET: &str = "whsec_mtls_payouts";
const SUBSCRIPTION_SECRET: &str = "whsec_mtls_subscription";

fn env_of<'a>(pairs: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    pairs.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// `component`'s identity, as a client of `server` (`payouts-<service>`) at `url`.
fn channel_as(component: &str, url: &str, server: &str) -> TracedChannel {
    let files = TlsFiles {
        cert: tls_fixture(&format!("{component}.crt")).into(),
        key: tls_fixture(&format!("{component}.key")).into(),
        ca: tls_fixture("ca.crt").into(),
        platform_ca: None,
    };
    let tls = MutualTls::load(&files).unwrap();
    traced_tls_channel(url, Duration::from_secs(10), &tls, server).unwrap()
}

/// A TLS client that trusts our CA but presents no certificate.
fn channel_without_certificate(url: &str) -> tonic::transport::Channel {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for ca in rustls_pki_types::CertificateDer::pem_file_iter(tls_fixture("ca.crt")).unwrap() {
        roots.add(ca.unwrap()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let connect = tower::service_fn(move |uri: http::Uri| {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect((
                uri.host().unwrap().to_owned(),
                uri.port_u16().unwrap(),
            ))
            .await?;
            let name = rustls_pki_types::ServerName::try_from("payouts-disputes").unwrap();
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect_with_connector_lazy(connect)
}

fn allocation(id: &str) -> RecordAllocationRequest {
    RecordAllocationRequest {
        allocation_id: id.to_owned(),
        user_id: "creator_mtls".to_owned(),
        charge_id: format!("ch_{id}"),
        amount: Some(Money {
            cents: 2_500,
            currency: "usd".to_owned(),
        }),
        payer_id: "supporter_mtls".to_owned(),
    }
}

/// The test creator's earnings, read with the platform's identity.
async fn earnings_of_creator(
    platform: &mut DisputesServiceClient<TracedChannel>,
) -> payouts_proto::disputes::v1::GetEarningsResponse {
    platform
        .get_earnings(GetEarningsRequest {
            user_id: "creator_mtls".to_owned(),
            currency: "usd".to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Posts `event`, signed, to the gateway's subscription endpoint; it must be stored.
async fn deliver_subscription_event(gateway: &Payouts, event: &serde_json::Value) {
    let body = serde_json::to_vec(event).unwrap();
    let signature =
        stripe::signature_header(&body, SUBSCRIPTION_SECRET, chrono::Utc::now().timestamp());
    let response = reqwest::Client::new()
        .post(gateway.gateway_url("/api/webhooks/stripe-subscription"))
        .header("stripe-signature", signature)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
}

fn start_disputes() -> Payouts {
    let mut env = tls_env("disputes");
    env.push(("GRPC_PLATFORM_IDENTITIES", "creator-api".to_owned()));
    env.push(("GRPC_HEALTH_ADDR", "127.0.0.1:0".to_owned()));
    Payouts::start(&["serve", "disputes"], StoreChoice::Embedded, &env_of(&env))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_is_authenticated_and_allowed_only_its_rpcs() {
    let disputes = start_disputes();
    let url = format!("https://{}", disputes.grpc.unwrap());

    // The platform's identity may credit earnings.
    let mut platform =
        DisputesServiceClient::new(channel_as("creator-api", &url, "payouts-disputes"));
    let recorded = platform.record_allocation(allocation("alloc_mtls_1")).await;
    assert!(recorded.is_ok(), "{recorded:?}");
    let earnings = earnings_of_creator(&mut platform).await;
    assert_eq!(earnings.lifetime.unwrap().cents, 2_500);

    // No certificate: UNAUTHENTICATED, and nothing credited.
    let mut anonymous = DisputesServiceClient::new(channel_without_certificate(&url));
    let refused = anonymous
        .record_allocation(allocation("alloc_mtls_2"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    // One of ours, but not a caller of RecordAllocation: PERMISSION_DENIED.
    let mut balance = DisputesServiceClient::new(channel_as("balance", &url, "payouts-disputes"));
    let refused = balance
        .record_allocation(allocation("alloc_mtls_3"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("balance may not call"),
        "{refused:?}"
    );

    // A certificate naming payouts-gateway, signed by another CA: refused at the handshake.
    let rogue_files = TlsFiles {
        cert: tls_fixture("rogue-gateway.crt").into(),
        key: tls_fixture("rogue-gateway.key").into(),
        ca: tls_fixture("ca.crt").into(),
        platform_ca: None,
    };
    let rogue = MutualTls::load(&rogue_files).unwrap();
    let mut rogue = DisputesServiceClient::new(
        traced_tls_channel(&url, Duration::from_secs(10), &rogue, "payouts-disputes").unwrap(),
    );
    let refused = rogue
        .record_allocation(allocation("alloc_mtls_6"))
        .await
        .unwrap_err();
    // TLS 1.3: the server checks the client's certificate after the client's side of the
    // handshake is done, so the refusal arrives as an UnknownCA alert or the connection
    // closing, whichever the client reads first.
    assert!(
        matches!(
            refused.code(),
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
        ),
        "{refused:?}"
    );

    // Plaintext to the TLS port: no answer.
    let plain =
        tonic::transport::Endpoint::from_shared(format!("http://{}", disputes.grpc.unwrap()))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
    let refused = DisputesServiceClient::new(plain)
        .record_allocation(allocation("alloc_mtls_4"))
        .await
        .unwrap_err();
    assert_ne!(refused.code(), tonic::Code::Ok);

    // Only the authenticated allocation was credited.
    let earnings = earnings_of_creator(&mut platform).await;
    assert_eq!(earnings.lifetime.unwrap().cents, 2_500);

    // Health stays open: over TLS without a certificate, and on the plaintext health port.
    let health = HealthClient::new(channel_without_certificate(&url))
        .check(HealthCheckRequest {
            service: "payouts.disputes.v1.DisputesService".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);
    let health_line = disputes
        .stderr_lines
        .iter()
        .find_map(|line| line.strip_prefix("payouts: gRPC health (plaintext, health only) on "))
        .expect("the health port is announced")
        .to_owned();
    let health = HealthClient::new(support::connect(&format!("http://{health_line}")).await)
        .check(HealthCheckRequest {
            service: "payouts.disputes.v1.DisputesService".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);
    let not_health =
        DisputesServiceClient::new(support::connect(&format!("http://{health_line}")).await)
            .record_allocation(allocation("alloc_mtls_5"))
            .await
            .unwrap_err();
    // The plaintext health port carries no certificate: nothing but health's Check.
    assert_eq!(
        not_health.code(),
        tonic::Code::Unauthenticated,
        "{not_health:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_reaches_a_service_in_another_process_over_mutual_tls() {
    let mut webhooks_env = tls_env("webhooks");
    webhooks_env.push(("STRIPE_WEBHOOK_SECRET_PAYOUTS", PAYOUTS_SECRET.to_owned()));
    webhooks_env.push(("STRIPE_WEBHOOK_SECRET", SUBSCRIPTION_SECRET.to_owned()));
    webhooks_env.push((
        "STRIPE_WEBHOOK_SECRET_TRANSFERS",
        "whsec_mtls_transfers".to_owned(),
    ));
    let webhooks = Payouts::start(
        &["serve", "webhooks"],
        StoreChoice::Embedded,
        &env_of(&webhooks_env),
    );
    let url = format!("https://{}", webhooks.grpc.unwrap());
    let mut gateway_env = tls_env("gateway");
    gateway_env.push(("WEBHOOKS_SERVICE_URL", url.clone()));
    let gateway = Payouts::start(&["gateway"], StoreChoice::Embedded, &env_of(&gateway_env));

    deliver_subscription_event(
        &gateway,
        &stripe::event("evt_mtls_1", "invoice.paid", "invoice"),
    )
    .await;

    // The same call from the platform's identity is not the gateway's to make.
    let mut platform =
        payouts_proto::webhooks::v1::webhooks_service_client::WebhooksServiceClient::new(
            channel_as("creator-api", &url, "payouts-webhooks"),
        );
    let refused = platform
        .get_statistics(payouts_proto::webhooks::v1::GetStatisticsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
}

#[test]
fn a_process_apart_refuses_to_start_without_mutual_tls_or_as_someone_else() {
    let output = support::command(&["serve", "limits"], &[("PAYOUTS_ALLOW_EMBEDDED", "true")])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("GRPC_TLS_CERT_FILE"), "{stderr}");

    let output = support::command(&["gateway"], &[]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("GRPC_TLS_CERT_FILE"));

    // The limits service with the balance service's certificate.
    let env = tls_env("balance");
    let mut pairs = env_of(&env);
    pairs.push(("PAYOUTS_ALLOW_EMBEDDED", "true"));
    let output = support::command(&["serve", "limits"], &pairs)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("GRPC_TLS_CERT_FILE") && stderr.contains("payouts-limits"),
        "{stderr}"
    );

    // Half a configuration.
    let output = support::command(
        &["serve", "limits"],
        &[
            ("PAYOUTS_ALLOW_EMBEDDED", "true"),
            ("GRPC_TLS_CERT_FILE", &tls_fixture("limits.crt")),
        ],
    )
    .output()
    .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("GRPC_TLS_KEY_FILE"));
}

/// A dispute travels every hop between processes over mutual TLS, each caller checked
/// against the RPC it calls: the gateway stores the delivery in webhooks (IngestEvent),
/// webhooks hands it to disputes (HandleStripeEvent), disputes alerts and tells the creator
/// through notifications (CreateCriticalAlert, NotifyUser); the platform records the
/// allocation and reads the frozen earnings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispute_crosses_every_process_over_mutual_tls() {
    let with = |component: &str, extra: &[(&'static str, String)]| {
        let mut env = tls_env(component);
        env.push(("GRPC_PLATFORM_IDENTITIES", "creator-api".to_owned()));
        env.extend(extra.iter().cloned());
        env
    };
    let notifications_env = with("notifications", &[]);
    let notifications = Payouts::start(
        &["serve", "notifications"],
        StoreChoice::Embedded,
        &env_of(&notifications_env),
    );
    let notifications_url = format!("https://{}", notifications.grpc.unwrap());
    let disputes_env = with(
        "disputes",
        &[("NOTIFICATIONS_SERVICE_URL", notifications_url.clone())],
    );
    let disputes = Payouts::start(
        &["serve", "disputes"],
        StoreChoice::Embedded,
        &env_of(&disputes_env),
    );
    let disputes_url = format!("https://{}", disputes.grpc.unwrap());
    let webhooks_env = with(
        "webhooks",
        &[
            ("STRIPE_WEBHOOK_SECRET_PAYOUTS", PAYOUTS_SECRET.to_owned()),
            ("STRIPE_WEBHOOK_SECRET", SUBSCRIPTION_SECRET.to_owned()),
            (
                "STRIPE_WEBHOOK_SECRET_TRANSFERS",
                "whsec_mtls_transfers".to_owned(),
            ),
            ("WEBHOOK_POLL_MILLISECONDS", "20".to_owned()),
            ("DISPUTES_SERVICE_URL", disputes_url.clone()),
            ("NOTIFICATIONS_SERVICE_URL", notifications_url),
        ],
    );
    let webhooks = Payouts::start(
        &["serve", "webhooks"],
        StoreChoice::Embedded,
        &env_of(&webhooks_env),
    );
    let gateway_env = with(
        "gateway",
        &[(
            "WEBHOOKS_SERVICE_URL",
            format!("https://{}", webhooks.grpc.unwrap()),
        )],
    );
    let gateway = Payouts::start(&["gateway"], StoreChoice::Embedded, &env_of(&gateway_env));

    let mut platform =
        DisputesServiceClient::new(channel_as("creator-api", &disputes_url, "payouts-disputes"));
    let mut credit = allocation("alloc_mtls_dispute");
    credit.charge_id = "ch_mtls_dispute".to_owned();
    platform.record_allocation(credit).await.unwrap();

    let mut dispute = stripe::fixture("dispute");
    dispute["id"] = serde_json::json!("dp_mtls");
    dispute["charge"] = serde_json::json!("ch_mtls_dispute");
    dispute["amount"] = serde_json::json!(2_500);
    dispute["status"] = serde_json::json!("needs_response");
    let mut event = stripe::event("evt_mtls_dispute", "charge.dispute.created", "dispute");
    event["data"]["object"] = dispute;
    deliver_subscription_event(&gateway, &event).await;

    let mut frozen = 0;
    for _ in 0..500 {
        let earnings = earnings_of_creator(&mut platform).await;
        frozen = earnings.frozen.map_or(0, |money| money.cents);
        if frozen == 2_500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        frozen, 2_500,
        "the dispute reached disputes through webhooks over mutual TLS"
    );

    // The dispute's alert reached notifications (disputes -> CreateCriticalAlert), read as
    // the gateway reads it.
    let mut alerts = payouts_proto::notifications::v1::notifications_service_client::NotificationsServiceClient::new(
        channel_as("gateway", &format!("https://{}", notifications.grpc.unwrap()), "payouts-notifications"),
    );
    let mut found = Vec::new();
    for _ in 0..500 {
        found = alerts
            .list_critical_alerts(
                payouts_proto::notifications::v1::ListCriticalAlertsRequest::default(),
            )
            .await
            .unwrap()
            .into_inner()
            .alerts;
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        found.iter().any(|alert| alert.r#type == "dispute_created"),
        "{found:?}"
    );
}

/// `name`'s certificate from the test PKI, as a client of `server` at `url`.
fn channel_with(cert: &str, url: &str, server: &str) -> TracedChannel {
    let files = TlsFiles {
        cert: tls_fixture(&format!("{cert}.crt")).into(),
        key: tls_fixture(&format!("{cert}.key")).into(),
        ca: tls_fixture("ca.crt").into(),
        platform_ca: None,
    };
    let tls = MutualTls::load(&files).unwrap();
    traced_tls_channel(url, Duration::from_secs(10), &tls, server).unwrap()
}

/// A made-up Stripe event, as a forger would send it straight to the gRPC port.
fn forged_dispute_event() -> payouts_proto::disputes::v1::HandleStripeEventRequest {
    payouts_proto::disputes::v1::HandleStripeEventRequest {
        event: Some(payouts_proto::common::v1::StripeEvent {
            id: "evt_forged".to_owned(),
            r#type: "charge.dispute.created".to_owned(),
            ..Default::default()
        }),
    }
}

/// With the platform's own CA (`GRPC_TLS_PLATFORM_CA_FILE`), a component's name counts only
/// on a certificate from the components' CA and a platform identity only on one from the
/// platform's: whoever can get a certificate for `payouts-webhooks` from the platform's
/// issuer does not become the webhooks service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_components_name_from_the_platforms_issuer_is_refused() {
    let mut env = tls_env("disputes");
    env.push(("GRPC_PLATFORM_IDENTITIES", "creator-api".to_owned()));
    env.push(("GRPC_TLS_PLATFORM_CA_FILE", tls_fixture("platform-ca.crt")));
    let disputes = Payouts::start(&["serve", "disputes"], StoreChoice::Embedded, &env_of(&env));
    let url = format!("https://{}", disputes.grpc.unwrap());

    // The platform's caller, from the platform's CA: served.
    let mut platform = DisputesServiceClient::new(channel_with(
        "platform-creator-api",
        &url,
        "payouts-disputes",
    ));
    let recorded = platform.record_allocation(allocation("alloc_ca_1")).await;
    assert!(recorded.is_ok(), "{recorded:?}");

    // The webhooks service's name on a certificate from the platform's CA: nobody.
    let mut forger =
        DisputesServiceClient::new(channel_with("platform-webhooks", &url, "payouts-disputes"));
    let refused = forger
        .handle_stripe_event(forged_dispute_event())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    // The real webhooks service, from the components' CA, passes authorization (its made-up
    // event is then judged on its content, not refused for who sent it).
    let mut webhooks =
        DisputesServiceClient::new(channel_with("webhooks", &url, "payouts-disputes"));
    let answered = webhooks.handle_stripe_event(forged_dispute_event()).await;
    assert!(
        !matches!(
            answered.as_ref().map_err(tonic::Status::code),
            Err(tonic::Code::PermissionDenied | tonic::Code::Unauthenticated)
        ),
        "{answered:?}"
    );

    // A platform identity on a certificate from the components' CA: nobody either.
    let mut impostor =
        DisputesServiceClient::new(channel_with("creator-api", &url, "payouts-disputes"));
    let refused = impostor
        .record_allocation(allocation("alloc_ca_2"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    // Only the platform's allocation was credited.
    let earnings = earnings_of_creator(&mut platform).await;
    assert_eq!(earnings.lifetime.unwrap().cents, 2_500);
}

/// The all-in-one process on a public gRPC address: refused without mutual TLS (the image's
/// old default was exactly that), and with it every RPC goes through the caller table, like
/// services apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_all_in_one_on_a_public_address_serves_only_through_the_caller_table() {
    let output = support::command(&[], &[("GRPC_ADDR", "0.0.0.0:0")])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid setting GRPC_ADDR"), "{stderr}");

    let mut env = tls_env("disputes");
    env.push(("GRPC_ADDR", "0.0.0.0:0".to_owned()));
    env.push(("GRPC_PLATFORM_IDENTITIES", "creator-api".to_owned()));
    let all = Payouts::start(&[], StoreChoice::Embedded, &env_of(&env));
    let port = all.grpc.unwrap().port();
    let url = format!("https://127.0.0.1:{port}");

    // Without a certificate: nothing but health.
    let refused = DisputesServiceClient::new(channel_without_certificate(&url))
        .record_allocation(allocation("alloc_all_1"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");

    // The platform may credit earnings, but not feed Stripe events.
    let mut platform =
        DisputesServiceClient::new(channel_as("creator-api", &url, "payouts-disputes"));
    let recorded = platform.record_allocation(allocation("alloc_all_2")).await;
    assert!(recorded.is_ok(), "{recorded:?}");
    let refused = platform
        .handle_stripe_event(forged_dispute_event())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let earnings = earnings_of_creator(&mut platform).await;
    assert_eq!(earnings.lifetime.unwrap().cents, 2_500);

    // Made-up paths without a certificate: refused, and no metrics series per path (they are
    // never evicted: one per path would grow memory without bound).
    use tower::ServiceExt as _;
    let anonymous = channel_without_certificate(&url);
    for n in 0..20 {
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("{url}/made.up.Service{n}/Method{n}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(tonic::body::Body::empty())
            .unwrap();
        let response = anonymous.clone().oneshot(request).await.unwrap();
        assert_eq!(
            response
                .headers()
                .get("grpc-status")
                .map(|v| v.to_str().unwrap()),
            Some("16"),
            "UNAUTHENTICATED"
        );
    }
    let metrics = reqwest::get(format!("http://{}/metrics", all.metrics.unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!metrics.contains("made.up"), "{metrics}");
    assert!(
        metrics.contains("payouts_grpc_server_refused_total{code=\"Unauthenticated\"}"),
        "{metrics}"
    );
}

/// `SetTransferPause` serves three callers, each for its own cause: across mutual TLS the
/// notifications service may halt for an escalation but not lift an admin's pause or pause
/// "automatically", the balance check may not lift a halt, and the gateway (an admin) may.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pause_cause_belongs_to_its_caller() {
    use payouts_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
    use payouts_proto::payouts::v1::{PauseCause, SetTransferPauseRequest};

    let env = tls_env("payouts");
    let payouts = Payouts::start(&["serve", "payouts"], StoreChoice::Embedded, &env_of(&env));
    let url = format!("https://{}", payouts.grpc.unwrap());
    let client =
        |component: &str| PayoutsServiceClient::new(channel_as(component, &url, "payouts-payouts"));
    let change = |cause: PauseCause, paused: bool, reason: &str| SetTransferPauseRequest {
        paused,
        cause: cause.into(),
        reason: reason.to_owned(),
        actor: "mtls-test".to_owned(),
        expected_cause: PauseCause::Unspecified.into(),
    };
    let code = |result: Result<tonic::Response<_>, tonic::Status>| match result {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    };

    // Notifications may not pause manually, nor automatically.
    let manual = client("notifications")
        .set_transfer_pause(change(PauseCause::Manual, true, "not mine"))
        .await;
    assert_eq!(code(manual), tonic::Code::PermissionDenied);
    let automatic = client("notifications")
        .set_transfer_pause(change(PauseCause::Automatic, true, "not mine"))
        .await;
    assert_eq!(code(automatic), tonic::Code::PermissionDenied);
    // The balance check may not halt for an escalation.
    let forged = client("balance")
        .set_transfer_pause(change(PauseCause::Escalation, true, "escalation: alert_x"))
        .await;
    assert_eq!(code(forged), tonic::Code::PermissionDenied);
    // Notifications halts; the balance check's resume and notifications' own lift fail.
    let halted = client("notifications")
        .set_transfer_pause(change(
            PauseCause::Escalation,
            true,
            "escalation: alert_mtls",
        ))
        .await
        .unwrap()
        .into_inner();
    let pause = halted.pause.unwrap();
    assert!(pause.paused);
    assert_eq!(pause.cause(), PauseCause::Escalation);
    let resumed = client("balance")
        .set_transfer_pause(change(PauseCause::Automatic, false, "balance healthy"))
        .await;
    if let Ok(answer) = resumed {
        assert!(
            answer.into_inner().pause.unwrap().paused,
            "an automatic resume lifted a halt"
        );
    }
    let lifted = client("notifications")
        .set_transfer_pause(change(PauseCause::Manual, false, "lifted"))
        .await;
    assert_eq!(code(lifted), tonic::Code::PermissionDenied);
    // An admin, through the gateway, lifts it with notes.
    let lifted = client("gateway")
        .set_transfer_pause(change(
            PauseCause::Manual,
            false,
            "checked the disputes: a test burst",
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!lifted.pause.unwrap().paused);
}
