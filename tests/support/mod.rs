//! Starting the real `payouts` binary for end-to-end tests: on free ports (port 0), with a
//! chosen environment, reading where it listens from its start-up lines.

#![allow(dead_code, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `payouts` process; killed when dropped.
pub struct Payouts {
    child: Child,
    pub gateway: Option<SocketAddr>,
    pub grpc: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    /// Every stderr line seen so far, for failure messages.
    pub stderr_lines: Vec<String>,
    lines: mpsc::Receiver<String>,
}

/// Which store the process runs on.
pub enum StoreChoice {
    Embedded,
    /// The MongoDB test server (or `MONGODB_URI`), in a database of its own.
    Mongo,
}

pub fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_payouts"));
    command
        .args(args)
        .env_remove("MONGODB_URI")
        .env_remove("PAYOUTS_CONFIG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("GATEWAY_ADDR", "127.0.0.1:0")
        .env("GRPC_ADDR", "127.0.0.1:0")
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    command
}

impl Payouts {
    /// Starts `payouts <args>` and waits until it has announced every listener it opens.
    pub fn start(args: &[&str], store: StoreChoice, env: &[(&str, &str)]) -> Payouts {
        let mut command = command(args, env);
        if matches!(store, StoreChoice::Embedded) && args.contains(&"serve") {
            // A service alone on the embedded store is refused unless allowed: the tests
            // that run services apart on it allow it, as a developer would.
            if !env.iter().any(|(key, _)| *key == "PAYOUTS_ALLOW_EMBEDDED") {
                command.env("PAYOUTS_ALLOW_EMBEDDED", "true");
            }
        }
        let separate = args.contains(&"serve") || args.contains(&"gateway");
        let decides_tls = env
            .iter()
            .any(|(key, _)| *key == "GRPC_TLS_CERT_FILE" || *key == "PAYOUTS_ALLOW_PLAINTEXT_GRPC");
        if args.contains(&"gateway") && !env.iter().any(|(key, _)| *key == "STRIPE_LIVEMODE") {
            // A gateway alone holds no Stripe key: it must be told the money is test money.
            command.env("STRIPE_LIVEMODE", "false");
        }
        if separate && !decides_tls {
            // Processes apart need mutual TLS unless allowed; tests that are not about it
            // allow plaintext, as a developer would (tests/e2e_mtls.rs is about it).
            command.env("PAYOUTS_ALLOW_PLAINTEXT_GRPC", "true");
        }
        if let StoreChoice::Mongo = store {
            command
                .env("MONGODB_URI", payouts_runtime::testing::mongo_uri())
                .env(
                    "MONGODB_DATABASE",
                    payouts_runtime::testing::unique_database_name("e2e"),
                );
        }
        let mut child = command.spawn().expect("the payouts binary starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut process = Payouts {
            child,
            gateway: None,
            grpc: None,
            metrics: None,
            stderr_lines: Vec::new(),
            lines,
        };
        let expects_gateway = !args.contains(&"serve");
        let expects_grpc = !args.contains(&"gateway");
        while (expects_gateway && process.gateway.is_none())
            || (expects_grpc && process.grpc.is_none())
        {
            let line = process
                .next_line(Duration::from_secs(60))
                .unwrap_or_else(|| {
                    panic!(
                        "payouts did not announce its listeners:\n{}",
                        process.stderr_lines.join("\n")
                    )
                });
            if let Some(rest) = line.strip_prefix("payouts: metrics at http://") {
                let address = rest.trim_end_matches("/metrics");
                process.metrics = Some(address.parse().expect("a socket address"));
            } else if let Some(address) = line.strip_prefix("payouts: gateway listening on http://")
            {
                process.gateway = Some(address.parse().expect("a socket address"));
            } else if let Some(rest) = line.strip_prefix("payouts: gRPC services [") {
                let address = rest.rsplit(" listening on ").next().expect("an address");
                process.grpc = Some(address.parse().expect("a socket address"));
            }
        }
        process
    }

    /// The next stderr line, waiting at most `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(timeout).ok()?;
        self.stderr_lines.push(line.clone());
        Some(line)
    }

    pub fn gateway_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.expect("the gateway runs"))
    }

    pub fn metrics_url(&self) -> String {
        format!(
            "http://{}/metrics",
            self.metrics.expect("metrics are served")
        )
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc.expect("gRPC services run"))
    }

    /// A connected channel to the process's gRPC services.
    pub async fn grpc_channel(&self) -> tonic::transport::Channel {
        connect(&self.grpc_url()).await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exit = self.child.wait().expect("payouts exits");
        // Drain what it said on the way out.
        while let Some(_line) = self.next_line(Duration::from_millis(200)) {}
        exit
    }
}

impl Drop for Payouts {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test PKI (`tests/fixtures/tls`, see its generate.sh): a file's path.
pub fn tls_fixture(name: &str) -> String {
    format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The `GRPC_TLS_*` settings of `component` (`gateway`, a service name, `creator-api`).
pub fn tls_env(component: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "GRPC_TLS_CERT_FILE",
            tls_fixture(&format!("{component}.crt")),
        ),
        (
            "GRPC_TLS_KEY_FILE",
            tls_fixture(&format!("{component}.key")),
        ),
        ("GRPC_TLS_CA_FILE", tls_fixture("ca.crt")),
    ]
}

/// A connected gRPC channel to `url`.
pub async fn connect(url: &str) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(url.to_owned())
        .expect("a gRPC URL")
        .connect()
        .await
        .expect("the gRPC server accepts connections")
}

/// A creator with a connected account `age_days` old (`acct_<user_id>`) and one allocation of
/// `earned_cents`, registered over gRPC.
pub async fn register_creator(
    channel: &tonic::transport::Channel,
    user_id: &str,
    age_days: i64,
    earned_cents: i64,
) {
    use payouts_proto::common::v1::Money;
    use payouts_proto::disputes::v1::RecordAllocationRequest;
    use payouts_proto::disputes::v1::disputes_service_client::DisputesServiceClient;
    use payouts_proto::payouts::v1::RegisterAccountRequest;
    use payouts_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;

    let created = chrono::Utc::now() - chrono::Duration::days(age_days);
    PayoutsServiceClient::new(channel.clone())
        .register_account(RegisterAccountRequest {
            user_id: user_id.to_owned(),
            stripe_account_id: format!("acct_{user_id}"),
            account_created_at: Some(prost_types::Timestamp {
                seconds: created.timestamp(),
                nanos: 0,
            }),
        })
        .await
        .expect("the account is registered");
    DisputesServiceClient::new(channel.clone())
        .record_allocation(RecordAllocationRequest {
            allocation_id: format!("alloc_{user_id}"),
            user_id: user_id.to_owned(),
            charge_id: format!("ch_{user_id}"),
            amount: Some(Money {
                cents: earned_cents,
                currency: "usd".to_owned(),
            }),
            payer_id: format!("supporter_of_{user_id}"),
        })
        .await
        .expect("the allocation is recorded");
}

/// The payout `payout_id`, read over gRPC (`GetPayout`).
pub async fn get_payout(
    channel: &tonic::transport::Channel,
    payout_id: &str,
) -> payouts_proto::payouts::v1::Payout {
    use payouts_proto::payouts::v1::GetPayoutRequest;
    use payouts_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
    PayoutsServiceClient::new(channel.clone())
        .get_payout(GetPayoutRequest {
            payout_id: payout_id.to_owned(),
        })
        .await
        .expect("the payout is read")
        .into_inner()
        .payout
        .expect("the answer holds the payout")
}

/// Stripe delivers `event` to the gateway's webhook `path`, signed with `secret` now: the
/// gateway's answer.
pub async fn deliver_webhook(
    process: &Payouts,
    path: &str,
    secret: &str,
    event: &serde_json::Value,
) -> reqwest::Response {
    use payouts_runtime::testing::stripe;
    let body = serde_json::to_vec(event).expect("an event is JSON");
    let header = stripe::signature_header(&body, secret, chrono::Utc::now().timestamp());
    reqwest::Client::new()
        .post(process.gateway_url(path))
        .header("Stripe-Signature", header)
        .body(body)
        .send()
        .await
        .expect("the gateway answers")
}

/// An admin JWT (HS256 with `secret`) for `subject`, valid five minutes.
pub fn admin_token(secret: &str, subject: &str, admin: bool) -> String {
    let claims = serde_json::json!({
        "sub": subject,
        "admin": admin,
        "exp": chrono::Utc::now().timestamp() + 300,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("a token")
}
