//! Settings: embedded defaults, then an optional TOML file (`PAYOUTS_CONFIG`), then the
//! environment. Every value is validated at start and a bad one is reported by its
//! environment variable name. The environment is passed in as a map, so tests never touch
//! the process environment.

mod escalation;
pub use escalation::{EscalationSettings, WindowCount};

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// A secret value: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used (signing, comparing, sending to Stripe).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A setting that failed validation, named by its environment variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid setting {variable}: {problem}")]
pub struct ConfigError {
    pub variable: String,
    pub problem: String,
}

impl ConfigError {
    fn new(variable: &str, problem: impl Into<String>) -> Self {
        Self {
            variable: variable.to_owned(),
            problem: problem.into(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON when stdout is not a terminal, human-readable otherwise.
    Auto,
    Json,
    Text,
}

/// The services of Payouts, as named on the command line and in settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceName {
    Webhooks,
    Payouts,
    Limits,
    Approvals,
    Disputes,
    Balance,
    Notifications,
}

impl ServiceName {
    pub const ALL: [ServiceName; 7] = [
        ServiceName::Webhooks,
        ServiceName::Payouts,
        ServiceName::Limits,
        ServiceName::Approvals,
        ServiceName::Disputes,
        ServiceName::Balance,
        ServiceName::Notifications,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Webhooks => "webhooks",
            ServiceName::Payouts => "payouts",
            ServiceName::Limits => "limits",
            ServiceName::Approvals => "approvals",
            ServiceName::Disputes => "disputes",
            ServiceName::Balance => "balance",
            ServiceName::Notifications => "notifications",
        }
    }

    /// The environment variable holding this service's gRPC URL for its clients.
    pub fn url_variable(self) -> &'static str {
        match self {
            ServiceName::Webhooks => "WEBHOOKS_SERVICE_URL",
            ServiceName::Payouts => "PAYOUTS_SERVICE_URL",
            ServiceName::Limits => "LIMITS_SERVICE_URL",
            ServiceName::Approvals => "APPROVALS_SERVICE_URL",
            ServiceName::Disputes => "DISPUTES_SERVICE_URL",
            ServiceName::Balance => "BALANCE_SERVICE_URL",
            ServiceName::Notifications => "NOTIFICATIONS_SERVICE_URL",
        }
    }

    /// The fully qualified gRPC service name it registers (and its health reports under).
    pub fn grpc_name(self) -> &'static str {
        use payouts_proto as pb;
        match self {
            ServiceName::Webhooks => pb::webhooks::v1::webhooks_service_server::SERVICE_NAME,
            ServiceName::Payouts => pb::payouts::v1::payouts_service_server::SERVICE_NAME,
            ServiceName::Limits => pb::limits::v1::payout_limits_service_server::SERVICE_NAME,
            ServiceName::Approvals => pb::approvals::v1::approvals_service_server::SERVICE_NAME,
            ServiceName::Disputes => pb::disputes::v1::disputes_service_server::SERVICE_NAME,
            ServiceName::Balance => pb::balance::v1::balance_service_server::SERVICE_NAME,
            ServiceName::Notifications => {
                pb::notifications::v1::notifications_service_server::SERVICE_NAME
            }
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|service| service.as_str() == name)
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything a Payouts process is configured with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `GATEWAY_ADDR`: where the HTTP gateway listens.
    pub gateway_addr: SocketAddr,
    /// `GRPC_ADDR`: where the gRPC services listen.
    pub grpc_addr: SocketAddr,
    /// `METRICS_ADDR`: where Prometheus metrics are served (`/metrics`); `off` disables.
    pub metrics_addr: Option<SocketAddr>,
    /// `MONGODB_URI`: the MongoDB deployment; `None` runs on the embedded in-process store.
    pub mongodb_uri: Option<Secret>,
    /// `MONGODB_DATABASE`: database name (default `payouts`).
    pub mongodb_database: String,
    /// `PAYOUTS_ALLOW_EMBEDDED`: lets `payouts serve <service>` run on the embedded store
    /// (development only: it cannot be shared between pods and loses everything on restart).
    pub allow_embedded: bool,
    /// `STRIPE_SECRET_KEY`: `None` runs without Stripe (payouts needing it are refused).
    pub stripe_secret_key: Option<Secret>,
    /// `STRIPE_API_BASE`: Stripe's API base URL (a fake Stripe in tests).
    pub stripe_api_base: String,
    /// `STRIPE_WEBHOOK_SECRET_PAYOUTS`: comma-separated signing secrets of the payouts
    /// (Connect) endpoint.
    pub stripe_webhook_secrets_payouts: Vec<Secret>,
    /// `STRIPE_WEBHOOK_SECRET`: comma-separated signing secrets of the subscription endpoint.
    pub stripe_webhook_secrets_subscription: Vec<Secret>,
    /// `STRIPE_WEBHOOK_SECRET_TRANSFERS`: comma-separated signing secrets of the transfers
    /// (account) endpoint.
    pub stripe_webhook_secrets_transfers: Vec<Secret>,
    /// `STRIPE_WEBHOOK_TOLERANCE_SECONDS`: accepted age of a signature timestamp (default 300).
    pub stripe_webhook_tolerance: Duration,
    /// `STRIPE_LIVEMODE`: whether events must be live-mode to be applied (default false).
    pub stripe_livemode: bool,
    /// Whether `STRIPE_LIVEMODE` was set at all (a gateway alone has no Stripe key to tell
    /// live from test by: see [`Settings::known_test_mode`]).
    pub stripe_livemode_set: bool,
    /// `WEBHOOK_MAX_ATTEMPTS`: processing attempts before an event is parked as failed (5).
    pub webhook_max_attempts: u32,
    /// `WEBHOOK_RETRY_BASE_SECONDS`: delay after the first failed attempt, doubling (30).
    pub webhook_retry_base: Duration,
    /// `WEBHOOK_LEASE_SECONDS`: how long a worker's claim on an event lasts (60).
    pub webhook_lease: Duration,
    /// `WEBHOOK_POLL_MILLISECONDS`: how often an idle worker looks for due events (1000).
    pub webhook_poll_interval: Duration,
    /// `WEBHOOK_BACKFILL_INTERVAL`: how often the backfill looks for events Stripe never
    /// delivered (`10m` by default; `s`, `m`, `h` or `d`; `off` disables it).
    pub webhook_backfill_interval: Option<Duration>,
    /// `RECONCILIATION_INTERVAL`: how often payouts are reconciled with Stripe's transfers
    /// (`24h` by default; `off` disables it; an admin can always run one).
    pub reconciliation_interval: Option<Duration>,
    /// `RECONCILIATION_WINDOW_DAYS`: how many days of Stripe transfers a scheduled
    /// reconciliation compares (3: late reversals and unknown outcomes are seen again).
    pub reconciliation_window_days: u32,
    /// `PAYOUT_STUCK_ALERT_DAYS`: a payout processing longer than this is reported as stuck
    /// by the reconciliation, with a critical alert (7).
    pub payout_stuck_alert_days: u32,
    /// `PAYOUT_POLL_MILLISECONDS`: how often the payout worker looks for due transfers (1000).
    pub payout_poll_interval: Duration,
    /// `PAYOUT_RETRY_BASE_SECONDS`: first transfer retry delay, doubling (default 300 = 5 min).
    pub payout_retry_base: Duration,
    /// `PAYOUT_UNKNOWN_ALERT_SECONDS`: how long a transfer's outcome may stay unknown before
    /// a critical alert is raised (3600). The payout is never failed for it.
    pub payout_unknown_alert: Duration,
    /// `BANK_PAYOUT_ATTRIBUTION_ALERT_HOURS`: how long a creator's bank payout may stay
    /// unattributed (Stripe cannot say which transfers it carried: not reconciled yet, a
    /// manual payout, lookups failing) before a critical alert (48). Its payouts stay
    /// processing; nothing is guessed.
    pub bank_payout_attribution_alert: Duration,
    /// `GRPC_TIMEOUT_MILLISECONDS`: deadline of every call from one service to another (10000).
    pub grpc_timeout: Duration,
    /// `MONGODB_WRITE_TIMEOUT_MILLISECONDS`: `wtimeout` of majority writes (10000).
    pub mongodb_write_timeout: Duration,
    /// `CRON_SECRET`: bearer token of the scheduler calling the cron endpoint.
    pub cron_secret: Option<Secret>,
    /// `CRON_API_KEY`: bearer token for manual cron triggers.
    pub cron_api_key: Option<Secret>,
    /// `ADMIN_JWT_SECRET`: HS256 key of admin tokens.
    pub admin_jwt_secret: Option<Secret>,
    /// `PAYOUT_LIMITS_<NAME>`: overrides of the design §6 limits, by name (validated by the
    /// limits service, which knows the names).
    pub payout_limit_overrides: Vec<(String, String)>,
    /// `ADMIN_JWT_PUBLIC_KEY_FILE`: PEM public key (RSA for RS256, P-256 for ES256) of an
    /// identity provider's admin tokens.
    pub admin_jwt_public_key_file: Option<String>,
    /// `ADMIN_JWT_JWKS_FILE`: a JWKS file of an identity provider's keys (by `kid`).
    pub admin_jwt_jwks_file: Option<String>,
    /// `ADMIN_JWT_ISSUER`: when set, admin tokens must carry this `iss`.
    pub admin_jwt_issuer: Option<String>,
    /// `ADMIN_JWT_AUDIENCE`: when set, admin tokens must carry this `aud`.
    pub admin_jwt_audience: Option<String>,
    /// `ADMIN_JWT_JWKS_URL`: the identity provider's JWKS, fetched over HTTPS (plain HTTP
    /// only to a loopback address) and refreshed every `ADMIN_JWT_JWKS_REFRESH_INTERVAL`.
    pub admin_jwt_jwks_url: Option<String>,
    /// `ADMIN_JWT_JWKS_REFRESH_INTERVAL`: how often the JWKS of `ADMIN_JWT_JWKS_URL` is
    /// fetched again (`10m`; at least `30s`). An unknown `kid` also fetches it, at most
    /// once per 30 seconds.
    pub admin_jwt_jwks_refresh: Duration,
    /// `ADMIN_JWT_ALLOW_HS256`: accept `ADMIN_JWT_SECRET` with a live Stripe configuration
    /// (false: refused at start, since whoever holds the secret can mint any admin).
    pub admin_jwt_allow_hs256: bool,
    /// `ADMIN_JWT_ROLE_CLAIM`: the claim naming an admin's role (`approver` or `viewer`);
    /// unset, every admin is an approver.
    pub admin_jwt_role_claim: Option<String>,
    /// `BALANCE_CRITICAL_CENTS`, `BALANCE_WARNING_CENTS`, `BALANCE_HEALTHY_CENTS`: design §5's
    /// balance thresholds ($1,000, $5,000, $10,000).
    pub balance_thresholds_cents: [i64; 3],
    /// `RESERVE_MULTIPLIER`: the reserve kept against obligations, in basis points (default 1.2
    /// = 12000); below 10000 (less than what is owed) is refused.
    pub reserve_multiplier_bps: i64,
    /// `BALANCE_PAUSE_AT`: the balance status at which new transfers pause by themselves
    /// (`depleted`, the default, or `critical`); `off` never pauses.
    pub balance_pause_at: Option<String>,
    /// `BALANCE_CHECK_SCHEDULE`: when the balance check runs by itself (cron syntax, UTC;
    /// five fields as in crontab, `0 6 * * *`, or six with seconds first); `None` (`off`)
    /// disables it.
    pub balance_check_schedule: Option<cron::Schedule>,
    /// `SMTP_URL`: where alert emails go, in lettre's URL form (`smtp://user:pass@host:587?tls=required`
    /// for STARTTLS, `smtps://...` for implicit TLS; plain `smtp://` only to a local relay).
    /// `None`: no emails.
    pub smtp_url: Option<Secret>,
    /// `ALERT_EMAIL_TO`: comma-separated recipients of critical and warning alerts.
    pub alert_email_to: Vec<String>,
    /// `APPROVAL_DUAL_CONTROL_CENTS`: a held payout above this amount needs the approvals of
    /// two different admins (dual control); `None` (unset or `off`, the default): one.
    pub approval_dual_control_cents: Option<i64>,
    /// `ALERT_EMAIL_FROM`: the sender of alert emails.
    pub alert_email_from: String,
    /// `DASHBOARD_URL`: the admin dashboard, linked from alert emails.
    pub dashboard_url: Option<String>,
    /// The escalation policy's thresholds, level 3's recipients and pages
    /// (`ESCALATION_*`, `ALERTMANAGER_URL`, ...; see [`EscalationSettings`]).
    pub escalation: EscalationSettings,
    /// `ADMIN_USER_IDS`: comma-separated user ids of the admins who receive admin notifications.
    pub admin_user_ids: Vec<String>,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: OTLP/gRPC collector; `None` disables trace export.
    pub otlp_endpoint: Option<String>,
    /// `LOG_FORMAT`: auto | json | text.
    pub log_format: LogFormat,
    /// `RUST_LOG`: log filter (default `info`).
    pub log_filter: String,
    /// `GATEWAY_BODY_LIMIT_BYTES`: largest accepted request body (default 512 KiB).
    pub gateway_body_limit_bytes: usize,
    /// `GRPC_REFLECTION`: whether the gRPC servers serve reflection (default true; the chart
    /// turns it off: it lists every RPC to whoever can connect).
    pub grpc_reflection: bool,
    /// `GATEWAY_REQUEST_TIMEOUT_SECONDS`: longest a request may take; then 504 (30).
    pub gateway_request_timeout: Duration,
    /// `GATEWAY_MAX_CONCURRENT_REQUESTS`: requests handled at once on the routes of no other
    /// budget (the OpenAPI document, unknown paths); more are shed with 503 and
    /// `Retry-After` (512). Also the most any budget below defaults to.
    pub gateway_max_concurrent_requests: usize,
    /// `GATEWAY_MAX_CONCURRENT_WEBHOOKS`: requests handled at once on `/api/webhooks/*`
    /// (Stripe retries a refused delivery) (256).
    pub gateway_max_concurrent_webhooks: usize,
    /// `GATEWAY_MAX_CONCURRENT_ADMIN`: requests handled at once on `/api/admin/*` and the
    /// dashboard `/admin` (64).
    pub gateway_max_concurrent_admin: usize,
    /// `GATEWAY_MAX_CONCURRENT_CRON`: requests handled at once on `/api/cron/*` (4).
    pub gateway_max_concurrent_cron: usize,
    /// `GATEWAY_HEADER_READ_TIMEOUT_SECONDS`: how long a connection may take to send a
    /// request's headers (HTTP/1); then it is closed (10).
    pub gateway_header_read_timeout: Duration,
    /// `GATEWAY_MAX_CONNECTIONS`: HTTP connections open at once, all clients together; more
    /// are closed as they come (8192).
    pub gateway_max_connections: usize,
    /// `GATEWAY_MAX_CONNECTIONS_PER_PEER`: HTTP connections one IP address (an IPv6 /64) may
    /// hold open (1024; an ingress controller's pod is one address).
    pub gateway_max_connections_per_peer: usize,
    /// `ADMIN_CORS_ORIGINS`: comma-separated origins (`https://admin.example.com`) whose
    /// browsers may call the API; none by default.
    pub admin_cors_origins: Vec<String>,
    /// `SHUTDOWN_GRACE_SECONDS`: how long in-flight requests may take after SIGTERM.
    pub shutdown_grace: Duration,
    /// `<SERVICE>_SERVICE_URL`: gRPC URL of each service for its clients
    /// (default `http://<GRPC_ADDR>`, the all-in-one process).
    pub service_urls: HashMap<ServiceName, String>,
    /// In the all-in-one process: the services its clients reach without a socket (see
    /// [`crate::grpc::InProcess`]). Empty otherwise.
    pub in_process: crate::grpc::InProcess,
    /// `GRPC_TLS_CERT_FILE`, `GRPC_TLS_KEY_FILE`, `GRPC_TLS_CA_FILE`: mutual TLS for every
    /// gRPC call between processes (this component's certificate and key, and the CA its
    /// peers' certificates are checked against), read again when they change. All three or
    /// none.
    pub grpc_tls: Option<TlsFiles>,
    /// `GRPC_PLATFORM_IDENTITIES`: comma-separated certificate names (DNS or URI SANs) of the
    /// platform's own services, which may call the platform-facing RPCs.
    pub grpc_platform_identities: Vec<String>,
    /// `GRPC_HEALTH_ADDR`: a second, plaintext listener serving only gRPC health, for
    /// probes that cannot present a certificate (Kubernetes' gRPC probes); unset: none.
    pub grpc_health_addr: Option<SocketAddr>,
    /// `GRPC_MAX_CONNECTIONS_PER_PEER`: connections one remote address may hold on the TLS
    /// gRPC port (256); see [`crate::peers`].
    pub grpc_max_connections_per_peer: usize,
    /// `PAYOUTS_ALLOW_PLAINTEXT_GRPC`: lets `payouts serve` and `payouts gateway` run
    /// without mutual TLS (development only: anyone who reaches the port could move money).
    pub allow_plaintext_grpc: bool,
    /// The loaded [`Settings::grpc_tls`] (set by the process at start, shared by its
    /// channels and server, reloaded in place); `None` until then, and without TLS.
    pub mutual_tls: Option<std::sync::Arc<crate::tls::MutualTls>>,
}

/// The files of a component's mutual-TLS identity, in PEM (as cert-manager mounts them:
/// `tls.crt`, `tls.key`, `ca.crt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    pub ca: std::path::PathBuf,
    /// `GRPC_TLS_PLATFORM_CA_FILE`: the CA of the platform's callers, when it is not ours.
    /// Then component names count only on certificates from `ca`, platform identities only
    /// on certificates from this one.
    pub platform_ca: Option<std::path::PathBuf>,
}

/// Every environment variable the process reads (besides the `<SERVICE>_SERVICE_URL`s of
/// [`ServiceName::url_variable`] and the prefixes of [`VARIABLE_PREFIXES`]). A unit test
/// keeps it equal to what `from_values` reads; `payouts config variables` prints it, and the
/// Helm chart's check refuses a variable that is not here.
pub const VARIABLES: &[&str] = &[
    "PAYOUTS_CONFIG",
    "GATEWAY_ADDR",
    "GRPC_ADDR",
    "METRICS_ADDR",
    "MONGODB_URI",
    "MONGODB_DATABASE",
    "MONGODB_WRITE_TIMEOUT_MILLISECONDS",
    "PAYOUTS_ALLOW_EMBEDDED",
    "STRIPE_SECRET_KEY",
    "STRIPE_API_BASE",
    "STRIPE_WEBHOOK_SECRET_PAYOUTS",
    "STRIPE_WEBHOOK_SECRET",
    "STRIPE_WEBHOOK_SECRET_TRANSFERS",
    "STRIPE_WEBHOOK_TOLERANCE_SECONDS",
    "STRIPE_LIVEMODE",
    "WEBHOOK_MAX_ATTEMPTS",
    "WEBHOOK_RETRY_BASE_SECONDS",
    "WEBHOOK_LEASE_SECONDS",
    "WEBHOOK_POLL_MILLISECONDS",
    "WEBHOOK_BACKFILL_INTERVAL",
    "RECONCILIATION_INTERVAL",
    "RECONCILIATION_WINDOW_DAYS",
    "PAYOUT_STUCK_ALERT_DAYS",
    "PAYOUT_POLL_MILLISECONDS",
    "PAYOUT_RETRY_BASE_SECONDS",
    "PAYOUT_UNKNOWN_ALERT_SECONDS",
    "BANK_PAYOUT_ATTRIBUTION_ALERT_HOURS",
    "GRPC_TIMEOUT_MILLISECONDS",
    "CRON_SECRET",
    "CRON_API_KEY",
    "ADMIN_JWT_SECRET",
    "ADMIN_JWT_PUBLIC_KEY_FILE",
    "ADMIN_JWT_JWKS_FILE",
    "ADMIN_JWT_ISSUER",
    "ADMIN_JWT_AUDIENCE",
    "ADMIN_JWT_JWKS_URL",
    "ADMIN_JWT_JWKS_REFRESH_INTERVAL",
    "ADMIN_JWT_ALLOW_HS256",
    "ADMIN_JWT_ROLE_CLAIM",
    "BALANCE_CRITICAL_CENTS",
    "BALANCE_WARNING_CENTS",
    "BALANCE_HEALTHY_CENTS",
    "RESERVE_MULTIPLIER",
    "BALANCE_PAUSE_AT",
    "BALANCE_CHECK_SCHEDULE",
    "SMTP_URL",
    "ALERT_EMAIL_TO",
    "APPROVAL_DUAL_CONTROL_CENTS",
    "ALERT_EMAIL_FROM",
    "DASHBOARD_URL",
    "ESCALATION_PAYOUT_FAILURES",
    "ESCALATION_DISPUTES",
    "ESCALATION_FRAUD_FLAGS",
    "ESCALATION_REFUND_CENTS",
    "ESCALATION_UNKNOWN_OUTCOMES",
    "ESCALATION_STRIPE_UNAVAILABLE_MINUTES",
    "ESCALATION_EMAIL_TO",
    "ALERTMANAGER_URL",
    "ALERT_PAGE_INTERVAL_SECONDS",
    "RUNBOOK_BASE_URL",
    "ADMIN_USER_IDS",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "LOG_FORMAT",
    "RUST_LOG",
    "GATEWAY_BODY_LIMIT_BYTES",
    "GATEWAY_REQUEST_TIMEOUT_SECONDS",
    "GATEWAY_MAX_CONCURRENT_REQUESTS",
    "GATEWAY_MAX_CONCURRENT_WEBHOOKS",
    "GATEWAY_MAX_CONCURRENT_ADMIN",
    "GATEWAY_MAX_CONCURRENT_CRON",
    "GATEWAY_HEADER_READ_TIMEOUT_SECONDS",
    "GATEWAY_MAX_CONNECTIONS",
    "GATEWAY_MAX_CONNECTIONS_PER_PEER",
    "GRPC_REFLECTION",
    "GRPC_TLS_CERT_FILE",
    "GRPC_TLS_KEY_FILE",
    "GRPC_TLS_CA_FILE",
    "GRPC_TLS_PLATFORM_CA_FILE",
    "GRPC_PLATFORM_IDENTITIES",
    "GRPC_HEALTH_ADDR",
    "GRPC_MAX_CONNECTIONS_PER_PEER",
    "PAYOUTS_ALLOW_PLAINTEXT_GRPC",
    "ADMIN_CORS_ORIGINS",
    "SHUTDOWN_GRACE_SECONDS",
];

/// Families of variables read by prefix (`PAYOUT_LIMITS_MAX_SINGLE_PAYOUT`, ...).
pub const VARIABLE_PREFIXES: &[&str] = &["PAYOUT_LIMITS_"];

/// Whether the process reads `name`.
pub fn is_known_variable(name: &str) -> bool {
    VARIABLES.contains(&name)
        || VARIABLE_PREFIXES
            .iter()
            .any(|prefix| name.starts_with(prefix))
        || ServiceName::ALL
            .iter()
            .any(|service| service.url_variable() == name)
}

/// What a process runs, for the checks that depend on it ([`Settings::check_role`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every service and the gateway in one process (`payouts`).
    AllInOne,
    /// One service alone (`payouts serve <service>`): a Kubernetes Deployment.
    Service(ServiceName),
    /// The HTTP gateway alone (`payouts gateway`).
    Gateway,
}

/// Shortest `CRON_SECRET` / `CRON_API_KEY` accepted: 256 bits, as for HS256 keys.
pub const MIN_CRON_TOKEN_BYTES: usize = 32;

/// Longest `STRIPE_WEBHOOK_TOLERANCE_SECONDS` accepted: Stripe signs every delivery attempt
/// anew, so the tolerance only needs to cover clock skew and transit; longer widens the
/// window in which a captured delivery can be replayed.
pub const MAX_STRIPE_WEBHOOK_TOLERANCE_SECONDS: u64 = 3_600;

/// Longest `GATEWAY_HEADER_READ_TIMEOUT_SECONDS` accepted.
pub const MAX_HEADER_READ_TIMEOUT_SECONDS: u64 = 300;

/// The default of a gateway budget: `default`, or `GATEWAY_MAX_CONCURRENT_REQUESTS` when that
/// is set lower (a deployment that lowered the one limit it had keeps each budget under it).
fn budget_default(values: &Values, default: usize) -> Result<usize, ConfigError> {
    Ok(default.min(values.number("GATEWAY_MAX_CONCURRENT_REQUESTS", usize::MAX)?))
}

/// Shortest HS256 key accepted: 256 bits, the hash's size (RFC 7518 §3.2).
pub const MIN_HS256_SECRET_BYTES: usize = 32;

impl Settings {
    /// The mode of `STRIPE_SECRET_KEY` by its prefix (secret or restricted key): `Some(true)`
    /// live, `Some(false)` test, `None` no key or another kind.
    fn key_livemode(&self) -> Option<bool> {
        let key = self.stripe_secret_key.as_ref()?.expose();
        if key.starts_with("sk_live_") || key.starts_with("rk_live_") {
            Some(true)
        } else if key.starts_with("sk_test_") || key.starts_with("rk_test_") {
            Some(false)
        } else {
            None
        }
    }

    /// Whether this configuration moves real money: `STRIPE_LIVEMODE=true` or a live (or
    /// restricted live) Stripe key.
    pub fn is_live(&self) -> bool {
        self.stripe_livemode || self.key_livemode() == Some(true)
    }

    /// Whether this configuration is known to move no real money: `STRIPE_LIVEMODE=false`
    /// said, or a test key. Not knowing is not "test": a gateway alone holds no Stripe key, and
    /// without `STRIPE_LIVEMODE` it cannot tell.
    pub fn known_test_mode(&self) -> bool {
        !self.is_live() && (self.stripe_livemode_set || self.key_livemode() == Some(false))
    }

    /// A live key with test events expected, or a test key with live ones: the events Stripe
    /// sends would be acknowledged and never applied.
    fn validate_stripe_mode(&self) -> Result<(), ConfigError> {
        let live = self.key_livemode() == Some(true);
        let test = self.key_livemode() == Some(false);
        if live && !self.stripe_livemode {
            return Err(ConfigError::new(
                "STRIPE_LIVEMODE",
                "is false but STRIPE_SECRET_KEY is a live key: live events would be acknowledged and never applied; set STRIPE_LIVEMODE=true",
            ));
        }
        if test && self.stripe_livemode {
            return Err(ConfigError::new(
                "STRIPE_LIVEMODE",
                "is true but STRIPE_SECRET_KEY is a test key: test events would be acknowledged and never applied; set STRIPE_LIVEMODE=false",
            ));
        }
        Ok(())
    }

    /// An identity provider's keys sign tokens of every tenant: without both the issuer and
    /// the audience checked, another project's admin would be ours. A short HS256 secret can
    /// be guessed offline from one token.
    ///
    /// Exactly one key source: each one is a way in, and a second one (an HS256 secret next
    /// to the identity provider) would be a door around the first. HS256 with a live Stripe
    /// configuration is refused unless `ADMIN_JWT_ALLOW_HS256=true`: the secret sits in the
    /// gateway's pod, and whoever reads it can mint a token for any subject.
    fn validate_admin_keys(&self) -> Result<(), ConfigError> {
        let sources = [
            ("ADMIN_JWT_SECRET", self.admin_jwt_secret.is_some()),
            (
                "ADMIN_JWT_PUBLIC_KEY_FILE",
                self.admin_jwt_public_key_file.is_some(),
            ),
            ("ADMIN_JWT_JWKS_FILE", self.admin_jwt_jwks_file.is_some()),
            ("ADMIN_JWT_JWKS_URL", self.admin_jwt_jwks_url.is_some()),
        ];
        let set: Vec<&str> = sources
            .iter()
            .filter(|(_, set)| *set)
            .map(|(variable, _)| *variable)
            .collect();
        if let [first, second, ..] = set[..] {
            return Err(ConfigError::new(
                second,
                format!(
                    "is set together with {first}: set exactly one admin key source (ADMIN_JWT_SECRET, ADMIN_JWT_PUBLIC_KEY_FILE, ADMIN_JWT_JWKS_FILE or ADMIN_JWT_JWKS_URL); a second source would be a second way in"
                ),
            ));
        }
        if let Some(url) = &self.admin_jwt_jwks_url {
            validate_jwks_url(url)?;
        }
        if self.admin_jwt_jwks_refresh < Duration::from_secs(30) {
            return Err(ConfigError::new(
                "ADMIN_JWT_JWKS_REFRESH_INTERVAL",
                "must be at least 30s: the identity provider is not to be polled harder",
            ));
        }
        if let Some(claim) = &self.admin_jwt_role_claim
            && ["sub", "admin", "exp", "nbf", "iat", "iss", "aud", "jti"].contains(&claim.as_str())
        {
            return Err(ConfigError::new(
                "ADMIN_JWT_ROLE_CLAIM",
                format!("must name a claim of its own, not the registered claim {claim:?}"),
            ));
        }
        if self.admin_jwt_secret.is_some() && self.is_live() && !self.admin_jwt_allow_hs256 {
            return Err(ConfigError::new(
                "ADMIN_JWT_SECRET",
                "is refused with a live Stripe configuration (STRIPE_LIVEMODE=true or a live STRIPE_SECRET_KEY): whoever holds the secret can mint a token for any admin and approve a payout under another name; sign admins in through the identity provider (ADMIN_JWT_JWKS_URL with ADMIN_JWT_ISSUER and ADMIN_JWT_AUDIENCE), or set ADMIN_JWT_ALLOW_HS256=true to accept the risk",
            ));
        }
        let provider_keys = [
            ("ADMIN_JWT_PUBLIC_KEY_FILE", &self.admin_jwt_public_key_file),
            ("ADMIN_JWT_JWKS_FILE", &self.admin_jwt_jwks_file),
            ("ADMIN_JWT_JWKS_URL", &self.admin_jwt_jwks_url),
        ];
        for (variable, file) in provider_keys {
            if file.is_none() {
                continue;
            }
            for (needed, value) in [
                ("ADMIN_JWT_ISSUER", &self.admin_jwt_issuer),
                ("ADMIN_JWT_AUDIENCE", &self.admin_jwt_audience),
            ] {
                if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                    return Err(ConfigError::new(
                        needed,
                        format!(
                            "is required with {variable}: an identity provider signs the tokens of every tenant with the same keys, so without the issuer and the audience checked another project's admin would be accepted"
                        ),
                    ));
                }
            }
        }
        if let Some(secret) = &self.admin_jwt_secret
            && secret.expose().len() < MIN_HS256_SECRET_BYTES
        {
            return Err(ConfigError::new(
                "ADMIN_JWT_SECRET",
                format!(
                    "must be at least {MIN_HS256_SECRET_BYTES} bytes for HS256, got {}: a short key can be guessed offline from a single token",
                    secret.expose().len()
                ),
            ));
        }
        Ok(())
    }

    /// Refuses what would lose or mis-handle money in this role: a service alone on the
    /// embedded store (not shared between pods, gone on restart) unless
    /// `PAYOUTS_ALLOW_EMBEDDED=true`; the webhooks service alone without its three endpoints.
    /// signing secrets (every delivery would be refused until Stripe gives up). The gateway
    /// opens no store, so it needs no `MONGODB_URI`.
    pub fn check_role(&self, role: Role) -> Result<(), ConfigError> {
        let sends_email = matches!(
            role,
            Role::AllInOne | Role::Service(ServiceName::Notifications)
        );
        if sends_email && self.smtp_url.is_none() && !self.escalation.email_to.is_empty() {
            return Err(ConfigError::new(
                "SMTP_URL",
                "is required when ESCALATION_EMAIL_TO is set: level-3 emails would never be sent",
            ));
        }
        if sends_email && self.smtp_url.is_none() && !self.alert_email_to.is_empty() {
            return Err(ConfigError::new(
                "SMTP_URL",
                "is required when ALERT_EMAIL_TO is set: alert emails would never be sent",
            ));
        }
        if matches!(role, Role::AllInOne | Role::Service(_))
            && self.mongodb_uri.is_none()
            && self.is_live()
        {
            return Err(ConfigError::new(
                "MONGODB_URI",
                "is required with a live Stripe configuration (STRIPE_LIVEMODE=true or a live key), in every mode: the embedded store forgets payouts, idempotency keys and approvals when the process restarts, and a forgotten payout can be paid twice (PAYOUTS_ALLOW_EMBEDDED does not lift this)",
            ));
        }
        let grpc_over_network = match role {
            Role::Service(_) | Role::Gateway => true,
            Role::AllInOne => !self.grpc_addr.ip().is_loopback(),
        };
        if grpc_over_network
            && self.grpc_tls.is_none()
            && self.allow_plaintext_grpc
            && self.is_live()
        {
            return Err(ConfigError::new(
                "PAYOUTS_ALLOW_PLAINTEXT_GRPC",
                "is for development only and is refused with a live Stripe configuration (STRIPE_LIVEMODE=true or a live key): gRPC would travel between hosts without mutual TLS, and whoever reaches a port could move real money (set GRPC_TLS_CERT_FILE, GRPC_TLS_KEY_FILE and GRPC_TLS_CA_FILE)",
            ));
        }
        if matches!(role, Role::Service(_) | Role::Gateway)
            && self.grpc_tls.is_none()
            && !self.allow_plaintext_grpc
        {
            return Err(ConfigError::new(
                "GRPC_TLS_CERT_FILE",
                "is required when services run in separate processes: without mutual TLS any workload that reaches a gRPC port could credit earnings, decide approvals or feed made-up Stripe events (set GRPC_TLS_CERT_FILE, GRPC_TLS_KEY_FILE and GRPC_TLS_CA_FILE; PAYOUTS_ALLOW_PLAINTEXT_GRPC=true allows plaintext for development only)",
            ));
        }
        if role == Role::AllInOne
            && !self.grpc_addr.ip().is_loopback()
            && self.grpc_tls.is_none()
            && !self.allow_plaintext_grpc
        {
            return Err(ConfigError::new(
                "GRPC_ADDR",
                format!(
                    "is {}, reachable from other hosts, without mutual TLS: any workload that reaches it could credit earnings, decide approvals, feed made-up Stripe events or request payouts (set GRPC_TLS_CERT_FILE, GRPC_TLS_KEY_FILE and GRPC_TLS_CA_FILE, listen on a loopback address such as 127.0.0.1:50051, or set PAYOUTS_ALLOW_PLAINTEXT_GRPC=true for development only)",
                    self.grpc_addr
                ),
            ));
        }
        if role == Role::Gateway
            && self.admin_jwt_secret.is_some()
            && !self.admin_jwt_allow_hs256
            && !self.known_test_mode()
        {
            return Err(ConfigError::new(
                "STRIPE_LIVEMODE",
                "must be set on a gateway that verifies HS256 admin tokens (ADMIN_JWT_SECRET): the gateway holds no Stripe key, so without it a live deployment would look like a test one and accept tokens anyone holding the secret can mint (set STRIPE_LIVEMODE=false for test money; with live money sign admins in through ADMIN_JWT_JWKS_URL)",
            ));
        }
        let Role::Service(service) = role else {
            return Ok(());
        };
        if self.mongodb_uri.is_none() && !self.allow_embedded {
            return Err(ConfigError::new(
                "MONGODB_URI",
                format!(
                    "is required by `payouts serve {}`: the embedded store cannot be shared between pods and loses everything on restart (PAYOUTS_ALLOW_EMBEDDED=true allows it for development only)",
                    service.as_str()
                ),
            ));
        }
        if service == ServiceName::Webhooks
            && let Some(reason) = self.webhooks_unready_reason()
        {
            return Err(reason);
        }
        Ok(())
    }

    /// Why the webhooks service cannot take deliveries: a signing secret is missing.
    pub fn webhooks_unready_reason(&self) -> Option<ConfigError> {
        for (variable, secrets, endpoint) in [
            (
                "STRIPE_WEBHOOK_SECRET_PAYOUTS",
                &self.stripe_webhook_secrets_payouts,
                "/api/webhooks/stripe-payouts",
            ),
            (
                "STRIPE_WEBHOOK_SECRET_TRANSFERS",
                &self.stripe_webhook_secrets_transfers,
                "/api/webhooks/stripe-transfers",
            ),
            (
                "STRIPE_WEBHOOK_SECRET",
                &self.stripe_webhook_secrets_subscription,
                "/api/webhooks/stripe-subscription",
            ),
        ] {
            if secrets.is_empty() {
                return Some(ConfigError::new(
                    variable,
                    format!(
                        "is required by the webhooks service: without it every delivery to {endpoint} is refused, and Stripe gives up after 3 days"
                    ),
                ));
            }
        }
        None
    }
}

/// Raw values as strings, by lower-cased environment variable name (as `config` sees them).
#[derive(Debug, Default, Deserialize)]
struct Raw {
    #[serde(flatten)]
    values: HashMap<String, config::Value>,
}

impl Settings {
    /// Loads settings from the process environment (and the file `PAYOUTS_CONFIG` names).
    pub fn from_process_env() -> Result<Self, ConfigError> {
        Self::from_env(std::env::vars().collect())
    }

    /// Loads settings from the given environment map (and the file `PAYOUTS_CONFIG` names).
    pub fn from_env(env: HashMap<String, String>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = env.get("PAYOUTS_CONFIG").filter(|path| !path.is_empty()) {
            builder = builder
                .add_source(config::File::new(path, config::FileFormat::Toml).required(true));
        }
        let environment = env
            .into_iter()
            .filter(|(_, value)| !value.is_empty())
            .collect::<HashMap<_, _>>();
        let raw: Raw = builder
            .add_source(config::Environment::default().source(Some(environment)))
            .build()
            .and_then(|loaded| loaded.try_deserialize())
            .map_err(|error| ConfigError::new("PAYOUTS_CONFIG", error.to_string()))?;
        Self::from_values(&Values(raw.values))
    }

    fn from_values(values: &Values) -> Result<Self, ConfigError> {
        let grpc_addr = values.socket_addr("GRPC_ADDR", "127.0.0.1:50051")?;
        let mut service_urls = HashMap::new();
        for service in ServiceName::ALL {
            let variable = service.url_variable();
            let url = values
                .string(variable)?
                .unwrap_or_else(|| format!("http://{grpc_addr}"));
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::new(
                    variable,
                    format!("must be an http:// or https:// URL, got {url:?}"),
                ));
            }
            service_urls.insert(service, url);
        }
        let settings = Settings {
            gateway_addr: values.socket_addr("GATEWAY_ADDR", "127.0.0.1:3000")?,
            grpc_addr,
            metrics_addr: match values.string("METRICS_ADDR")?.as_deref() {
                Some("off") => None,
                _ => Some(values.socket_addr("METRICS_ADDR", "127.0.0.1:9464")?),
            },
            mongodb_uri: values.secret("MONGODB_URI")?,
            mongodb_database: values
                .string("MONGODB_DATABASE")?
                .unwrap_or_else(|| "payouts".to_owned()),
            allow_embedded: values.boolean("PAYOUTS_ALLOW_EMBEDDED", false)?,
            stripe_secret_key: values.secret("STRIPE_SECRET_KEY")?,
            stripe_api_base: values
                .string("STRIPE_API_BASE")?
                .unwrap_or_else(|| "https://api.stripe.com".to_owned())
                .trim_end_matches('/')
                .to_owned(),
            stripe_webhook_secrets_payouts: values.secret_list("STRIPE_WEBHOOK_SECRET_PAYOUTS")?,
            stripe_webhook_secrets_subscription: values.secret_list("STRIPE_WEBHOOK_SECRET")?,
            stripe_webhook_secrets_transfers: values
                .secret_list("STRIPE_WEBHOOK_SECRET_TRANSFERS")?,
            stripe_webhook_tolerance: Duration::from_secs(
                values.number("STRIPE_WEBHOOK_TOLERANCE_SECONDS", 300)?,
            ),
            stripe_livemode: values.boolean("STRIPE_LIVEMODE", false)?,
            stripe_livemode_set: values.string("STRIPE_LIVEMODE")?.is_some(),
            webhook_max_attempts: values.number("WEBHOOK_MAX_ATTEMPTS", 5)?,
            webhook_retry_base: Duration::from_secs(
                values.number("WEBHOOK_RETRY_BASE_SECONDS", 30)?,
            ),
            webhook_lease: Duration::from_secs(values.number("WEBHOOK_LEASE_SECONDS", 60)?),
            webhook_poll_interval: Duration::from_millis(
                values.number("WEBHOOK_POLL_MILLISECONDS", 1000)?,
            ),
            webhook_backfill_interval: values
                .interval("WEBHOOK_BACKFILL_INTERVAL", Duration::from_secs(600))?,
            reconciliation_interval: values
                .interval("RECONCILIATION_INTERVAL", Duration::from_secs(24 * 3600))?,
            reconciliation_window_days: values.number("RECONCILIATION_WINDOW_DAYS", 3)?,
            payout_stuck_alert_days: values.number("PAYOUT_STUCK_ALERT_DAYS", 7)?,
            payout_poll_interval: Duration::from_millis(
                values.number("PAYOUT_POLL_MILLISECONDS", 1000)?,
            ),
            payout_retry_base: Duration::from_secs(
                values.number("PAYOUT_RETRY_BASE_SECONDS", 300)?,
            ),
            payout_unknown_alert: Duration::from_secs(
                values.number("PAYOUT_UNKNOWN_ALERT_SECONDS", 3600)?,
            ),
            bank_payout_attribution_alert: Duration::from_secs(
                values
                    .number("BANK_PAYOUT_ATTRIBUTION_ALERT_HOURS", 48_u64)?
                    .saturating_mul(3600),
            ),
            grpc_timeout: Duration::from_millis(
                values.number("GRPC_TIMEOUT_MILLISECONDS", 10_000)?,
            ),
            mongodb_write_timeout: Duration::from_millis(
                values.number("MONGODB_WRITE_TIMEOUT_MILLISECONDS", 10_000)?,
            ),
            cron_secret: values.secret("CRON_SECRET")?,
            cron_api_key: values.secret("CRON_API_KEY")?,
            admin_jwt_secret: values.secret("ADMIN_JWT_SECRET")?,
            payout_limit_overrides: values.with_prefix("PAYOUT_LIMITS_")?,
            admin_jwt_public_key_file: values.string("ADMIN_JWT_PUBLIC_KEY_FILE")?,
            admin_jwt_jwks_file: values.string("ADMIN_JWT_JWKS_FILE")?,
            admin_jwt_issuer: values.string("ADMIN_JWT_ISSUER")?,
            admin_jwt_audience: values.string("ADMIN_JWT_AUDIENCE")?,
            admin_jwt_jwks_url: values.string("ADMIN_JWT_JWKS_URL")?,
            admin_jwt_jwks_refresh: values
                .interval("ADMIN_JWT_JWKS_REFRESH_INTERVAL", Duration::from_secs(600))?
                .ok_or_else(|| {
                    ConfigError::new(
                        "ADMIN_JWT_JWKS_REFRESH_INTERVAL",
                        "cannot be off: the identity provider's keys rotate",
                    )
                })?,
            admin_jwt_allow_hs256: values.boolean("ADMIN_JWT_ALLOW_HS256", false)?,
            admin_jwt_role_claim: values.string("ADMIN_JWT_ROLE_CLAIM")?,
            balance_thresholds_cents: [
                values.number("BALANCE_CRITICAL_CENTS", 1_000_00)?,
                values.number("BALANCE_WARNING_CENTS", 5_000_00)?,
                values.number("BALANCE_HEALTHY_CENTS", 10_000_00)?,
            ],
            reserve_multiplier_bps: values.number("RESERVE_MULTIPLIER", 12_000)?,
            balance_pause_at: match values.string("BALANCE_PAUSE_AT")?.as_deref() {
                None | Some("depleted") => Some("depleted".to_owned()),
                Some("critical") => Some("critical".to_owned()),
                Some("off") => None,
                Some(other) => {
                    return Err(ConfigError::new(
                        "BALANCE_PAUSE_AT",
                        format!("must be depleted, critical or off, got {other:?}"),
                    ));
                }
            },
            balance_check_schedule: schedule(
                "BALANCE_CHECK_SCHEDULE",
                values
                    .string("BALANCE_CHECK_SCHEDULE")?
                    .as_deref()
                    .unwrap_or("0 6 * * *"),
            )?,
            smtp_url: values.secret("SMTP_URL")?,
            alert_email_to: values
                .secret_list("ALERT_EMAIL_TO")?
                .into_iter()
                .map(|address| address.0)
                .collect(),
            approval_dual_control_cents: match values
                .string("APPROVAL_DUAL_CONTROL_CENTS")?
                .as_deref()
            {
                None | Some("off") => None,
                Some(text) => Some(text.parse::<i64>().map_err(|_| {
                    ConfigError::new(
                        "APPROVAL_DUAL_CONTROL_CENTS",
                        format!("must be a whole number of cents or off, got {text:?}"),
                    )
                })?),
            },
            alert_email_from: values
                .string("ALERT_EMAIL_FROM")?
                .unwrap_or_else(|| "Payouts <payouts@localhost>".to_owned()),
            dashboard_url: values.string("DASHBOARD_URL")?,
            escalation: EscalationSettings::from_values(values)?,
            admin_user_ids: values
                .secret_list("ADMIN_USER_IDS")?
                .into_iter()
                .map(|id| id.0)
                .collect(),
            otlp_endpoint: values.string("OTEL_EXPORTER_OTLP_ENDPOINT")?,
            log_format: match values.string("LOG_FORMAT")?.as_deref() {
                None | Some("auto") => LogFormat::Auto,
                Some("json") => LogFormat::Json,
                Some("text") => LogFormat::Text,
                Some(other) => {
                    return Err(ConfigError::new(
                        "LOG_FORMAT",
                        format!("must be auto, json or text, got {other:?}"),
                    ));
                }
            },
            log_filter: values
                .string("RUST_LOG")?
                .unwrap_or_else(|| "info".to_owned()),
            gateway_body_limit_bytes: values.number("GATEWAY_BODY_LIMIT_BYTES", 512 * 1024)?,
            grpc_reflection: values.boolean("GRPC_REFLECTION", true)?,
            grpc_tls: tls_files(values)?,
            grpc_platform_identities: values
                .string("GRPC_PLATFORM_IDENTITIES")?
                .map(|list| {
                    list.split(',')
                        .map(str::trim)
                        .filter(|name| !name.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            grpc_health_addr: match values.string("GRPC_HEALTH_ADDR")? {
                None => None,
                Some(_) => Some(values.socket_addr("GRPC_HEALTH_ADDR", "")?),
            },
            grpc_max_connections_per_peer: values.number(
                "GRPC_MAX_CONNECTIONS_PER_PEER",
                crate::peers::DEFAULT_MAX_CONNECTIONS_PER_PEER,
            )?,
            allow_plaintext_grpc: values.boolean("PAYOUTS_ALLOW_PLAINTEXT_GRPC", false)?,
            gateway_request_timeout: Duration::from_secs(
                values.number("GATEWAY_REQUEST_TIMEOUT_SECONDS", 30)?,
            ),
            gateway_max_concurrent_requests: values
                .number("GATEWAY_MAX_CONCURRENT_REQUESTS", 512)?,
            gateway_max_concurrent_webhooks: values.number(
                "GATEWAY_MAX_CONCURRENT_WEBHOOKS",
                budget_default(values, 64)?,
            )?,
            gateway_max_concurrent_admin: values
                .number("GATEWAY_MAX_CONCURRENT_ADMIN", budget_default(values, 64)?)?,
            gateway_max_concurrent_cron: values
                .number("GATEWAY_MAX_CONCURRENT_CRON", budget_default(values, 4)?)?,
            gateway_header_read_timeout: Duration::from_secs(
                values.number("GATEWAY_HEADER_READ_TIMEOUT_SECONDS", 10)?,
            ),
            gateway_max_connections: values.number("GATEWAY_MAX_CONNECTIONS", 8192)?,
            gateway_max_connections_per_peer: values
                .number("GATEWAY_MAX_CONNECTIONS_PER_PEER", 1024)?,
            admin_cors_origins: values
                .string("ADMIN_CORS_ORIGINS")?
                .map(|list| {
                    list.split(',')
                        .map(|origin| origin.trim().trim_end_matches('/').to_owned())
                        .filter(|origin| !origin.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            shutdown_grace: Duration::from_secs(values.number("SHUTDOWN_GRACE_SECONDS", 30)?),
            service_urls,
            in_process: crate::grpc::InProcess::default(),
            mutual_tls: None,
        };
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=90).contains(&self.reconciliation_window_days) {
            return Err(ConfigError::new(
                "RECONCILIATION_WINDOW_DAYS",
                "must be 1 to 90 days",
            ));
        }
        if self.payout_stuck_alert_days == 0 {
            return Err(ConfigError::new(
                "PAYOUT_STUCK_ALERT_DAYS",
                "must be at least 1 day",
            ));
        }
        let bank_hours = self.bank_payout_attribution_alert.as_secs() / 3600;
        if !(1..=24 * 30).contains(&bank_hours) {
            return Err(ConfigError::new(
                "BANK_PAYOUT_ATTRIBUTION_ALERT_HOURS",
                format!("must be 1 to 720 hours, got {bank_hours}"),
            ));
        }
        if self.webhook_max_attempts == 0 {
            return Err(ConfigError::new(
                "WEBHOOK_MAX_ATTEMPTS",
                "must be at least 1",
            ));
        }
        if self.webhook_lease.is_zero() {
            return Err(ConfigError::new(
                "WEBHOOK_LEASE_SECONDS",
                "must be at least 1",
            ));
        }
        if self.payout_poll_interval.is_zero() {
            return Err(ConfigError::new(
                "PAYOUT_POLL_MILLISECONDS",
                "must be at least 1",
            ));
        }
        if self.webhook_poll_interval.is_zero() {
            return Err(ConfigError::new(
                "WEBHOOK_POLL_MILLISECONDS",
                "must be at least 1",
            ));
        }
        if self.grpc_timeout.is_zero() {
            return Err(ConfigError::new(
                "GRPC_TIMEOUT_MILLISECONDS",
                "must be at least 1: a call between services without a deadline can hang its caller forever",
            ));
        }
        if self.mongodb_write_timeout.is_zero() {
            return Err(ConfigError::new(
                "MONGODB_WRITE_TIMEOUT_MILLISECONDS",
                "must be at least 1: a majority write without wtimeout can hang forever",
            ));
        }
        if let Some(above) = self.approval_dual_control_cents
            && !(0..=crate::Money::MAX_CENTS).contains(&above)
        {
            return Err(ConfigError::new(
                "APPROVAL_DUAL_CONTROL_CENTS",
                format!(
                    "must be between 0 and {} cents (or off), got {above}",
                    crate::Money::MAX_CENTS
                ),
            ));
        }
        let [critical, warning, healthy] = self.balance_thresholds_cents;
        if critical < 0 {
            return Err(ConfigError::new(
                "BALANCE_CRITICAL_CENTS",
                format!("must not be negative, got {critical}"),
            ));
        }
        if warning < critical {
            return Err(ConfigError::new(
                "BALANCE_WARNING_CENTS",
                format!("must be at least BALANCE_CRITICAL_CENTS ({critical}), got {warning}"),
            ));
        }
        if healthy < warning {
            return Err(ConfigError::new(
                "BALANCE_HEALTHY_CENTS",
                format!("must be at least BALANCE_WARNING_CENTS ({warning}), got {healthy}"),
            ));
        }
        if !(10_000..=100_000).contains(&self.reserve_multiplier_bps) {
            return Err(ConfigError::new(
                "RESERVE_MULTIPLIER",
                format!(
                    "must be between 10000 (1x what is owed) and 100000 basis points, got {}: a reserve below the obligations would let the balance run short",
                    self.reserve_multiplier_bps
                ),
            ));
        }
        self.validate_email()?;
        self.validate_stripe_mode()?;
        self.validate_admin_keys()?;
        if self.gateway_request_timeout.is_zero() {
            return Err(ConfigError::new(
                "GATEWAY_REQUEST_TIMEOUT_SECONDS",
                "must be at least 1",
            ));
        }
        if self.grpc_max_connections_per_peer == 0 {
            return Err(ConfigError::new(
                "GRPC_MAX_CONNECTIONS_PER_PEER",
                "must be at least 1",
            ));
        }
        if self.gateway_max_concurrent_requests == 0 {
            return Err(ConfigError::new(
                "GATEWAY_MAX_CONCURRENT_REQUESTS",
                "must be at least 1",
            ));
        }
        self.validate_gateway_hardening()?;
        for origin in &self.admin_cors_origins {
            let valid = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.contains('*')
                && origin.split("://").nth(1).is_some_and(|rest| {
                    !rest.is_empty() && !rest.contains('/') && !rest.contains('?')
                });
            if !valid {
                return Err(ConfigError::new(
                    "ADMIN_CORS_ORIGINS",
                    format!(
                        "{origin:?} is not an origin (scheme://host[:port], no wildcard, no path)"
                    ),
                ));
            }
        }
        if self.gateway_body_limit_bytes == 0 {
            return Err(ConfigError::new(
                "GATEWAY_BODY_LIMIT_BYTES",
                "must be at least 1",
            ));
        }
        if let Some(uri) = &self.mongodb_uri
            && !(uri.expose().starts_with("mongodb://")
                || uri.expose().starts_with("mongodb+srv://"))
        {
            return Err(ConfigError::new(
                "MONGODB_URI",
                "must start with mongodb:// or mongodb+srv://",
            ));
        }
        if !(self.stripe_api_base.starts_with("http://")
            || self.stripe_api_base.starts_with("https://"))
        {
            return Err(ConfigError::new(
                "STRIPE_API_BASE",
                "must be an http:// or https:// URL",
            ));
        }
        Ok(())
    }

    /// The gateway's budgets, header timeout, cron tokens and signature tolerance.
    fn validate_gateway_hardening(&self) -> Result<(), ConfigError> {
        for (variable, budget) in [
            (
                "GATEWAY_MAX_CONCURRENT_WEBHOOKS",
                self.gateway_max_concurrent_webhooks,
            ),
            (
                "GATEWAY_MAX_CONCURRENT_ADMIN",
                self.gateway_max_concurrent_admin,
            ),
            (
                "GATEWAY_MAX_CONCURRENT_CRON",
                self.gateway_max_concurrent_cron,
            ),
        ] {
            if budget == 0 {
                return Err(ConfigError::new(variable, "must be at least 1"));
            }
        }
        for (variable, bound) in [
            ("GATEWAY_MAX_CONNECTIONS", self.gateway_max_connections),
            (
                "GATEWAY_MAX_CONNECTIONS_PER_PEER",
                self.gateway_max_connections_per_peer,
            ),
        ] {
            if bound == 0 {
                return Err(ConfigError::new(variable, "must be at least 1"));
            }
        }
        let header_seconds = self.gateway_header_read_timeout.as_secs();
        if !(1..=MAX_HEADER_READ_TIMEOUT_SECONDS).contains(&header_seconds) {
            return Err(ConfigError::new(
                "GATEWAY_HEADER_READ_TIMEOUT_SECONDS",
                format!(
                    "must be 1 to {MAX_HEADER_READ_TIMEOUT_SECONDS} seconds, got {header_seconds}: a client that never finishes its headers holds a connection that long"
                ),
            ));
        }
        for (variable, token) in [
            ("CRON_SECRET", &self.cron_secret),
            ("CRON_API_KEY", &self.cron_api_key),
        ] {
            if let Some(token) = token
                && token.expose().len() < MIN_CRON_TOKEN_BYTES
            {
                return Err(ConfigError::new(
                    variable,
                    format!(
                        "must be at least {MIN_CRON_TOKEN_BYTES} bytes (e.g. `openssl rand -hex 32`): a short bearer token can be guessed"
                    ),
                ));
            }
        }
        let tolerance = self.stripe_webhook_tolerance.as_secs();
        if tolerance > MAX_STRIPE_WEBHOOK_TOLERANCE_SECONDS {
            return Err(ConfigError::new(
                "STRIPE_WEBHOOK_TOLERANCE_SECONDS",
                format!(
                    "must be at most {MAX_STRIPE_WEBHOOK_TOLERANCE_SECONDS} seconds, got {tolerance}: a signed delivery can be replayed for that long (Stripe's libraries use 300)"
                ),
            ));
        }
        Ok(())
    }

    /// In the all-in-one process: services whose URL was left at its default (GRPC_ADDR) are
    /// served by this process. Its clients call them in process, without a socket
    /// ([`crate::grpc::InProcess`]); their URL becomes the address the gRPC listener actually
    /// got (GRPC_ADDR may name port 0), which is where other processes reach them.
    pub fn with_local_services(mut self, bound: SocketAddr) -> Self {
        let default = format!("http://{}", self.grpc_addr);
        for (service, url) in &mut self.service_urls {
            if *url == default {
                *url = format!("http://{bound}");
                self.in_process.add(*service);
            }
        }
        self
    }

    /// The gRPC URL clients use to reach `service`.
    pub fn service_url(&self, service: ServiceName) -> &str {
        self.service_urls
            .get(&service)
            .map(String::as_str)
            .unwrap_or("http://127.0.0.1:50051")
    }
}

/// A cron expression (UTC), or `None` for `off`. Five fields (minute first, as crontab
/// writes it) get a leading `0` for the seconds; six or seven are taken as they are.
fn schedule(variable: &str, text: &str) -> Result<Option<cron::Schedule>, ConfigError> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let expression = if text.split_whitespace().count() == 5 {
        format!("0 {text}")
    } else {
        text.to_owned()
    };
    expression
        .parse::<cron::Schedule>()
        .map(Some)
        .map_err(|error| {
            ConfigError::new(
                variable,
                format!(
                    "must be a cron expression (e.g. \"0 6 * * *\") or off, got {text:?}: {error}"
                ),
            )
        })
}

impl Settings {
    /// Emails go somewhere safe, to someone: an SMTP URL without recipients (or recipients
    /// without an SMTP URL) would drop every alert email silently, and plain SMTP to a
    /// remote host would send credentials and alerts in the clear.
    fn validate_email(&self) -> Result<(), ConfigError> {
        match (&self.smtp_url, self.alert_email_to.is_empty()) {
            (None, true) => return Ok(()),
            (Some(_), true) => {
                return Err(ConfigError::new(
                    "ALERT_EMAIL_TO",
                    "is required when SMTP_URL is set: who receives the alert emails?",
                ));
            }
            // Checked where emails are sent (check_role): in a split deployment only the
            // notifications service is given SMTP_URL.
            (None, false) => return Ok(()),
            (Some(_), false) => {}
        }
        for address in &self.alert_email_to {
            if !address.contains('@') {
                return Err(ConfigError::new(
                    "ALERT_EMAIL_TO",
                    format!("{address:?} is not an email address"),
                ));
            }
        }
        let url = self
            .smtp_url
            .as_ref()
            .map(Secret::expose)
            .unwrap_or_default();
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let host = rest
            .rsplit_once('@')
            .map_or(rest, |(_, host)| host)
            .split(['/', '?'])
            .next()
            .unwrap_or_default();
        let host = host
            .strip_prefix('[')
            .and_then(|host| host.split_once(']'))
            .map_or_else(
                || host.split(':').next().unwrap_or_default(),
                |(host, _)| host,
            );
        let local = matches!(host, "localhost" | "127.0.0.1" | "::1");
        let starttls = url.contains("tls=required");
        match scheme {
            "smtps" => Ok(()),
            "smtp" if starttls || local => Ok(()),
            "smtp" => Err(ConfigError::new(
                "SMTP_URL",
                format!(
                    "plain smtp:// to {host} would send alerts and credentials in the clear: use smtps:// or add ?tls=required (plain smtp:// only to a local relay)"
                ),
            )),
            _ => Err(ConfigError::new(
                "SMTP_URL",
                "must start with smtp:// or smtps://",
            )),
        }
    }
}

/// `GRPC_TLS_CERT_FILE`, `GRPC_TLS_KEY_FILE` and `GRPC_TLS_CA_FILE`: all three, or none.
fn tls_files(values: &Values) -> Result<Option<TlsFiles>, ConfigError> {
    const NAMES: [&str; 3] = [
        "GRPC_TLS_CERT_FILE",
        "GRPC_TLS_KEY_FILE",
        "GRPC_TLS_CA_FILE",
    ];
    let [cert, key, ca] = [
        values.string("GRPC_TLS_CERT_FILE")?,
        values.string("GRPC_TLS_KEY_FILE")?,
        values.string("GRPC_TLS_CA_FILE")?,
    ];
    match (cert, key, ca) {
        (None, None, None) if values.string("GRPC_TLS_PLATFORM_CA_FILE")?.is_none() => Ok(None),
        (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles {
            cert: cert.into(),
            key: key.into(),
            ca: ca.into(),
            platform_ca: values.string("GRPC_TLS_PLATFORM_CA_FILE")?.map(Into::into),
        })),
        (None, None, None) if values.string("GRPC_TLS_PLATFORM_CA_FILE")?.is_some() => {
            Err(ConfigError::new(
                "GRPC_TLS_PLATFORM_CA_FILE",
                "is set without GRPC_TLS_CERT_FILE, GRPC_TLS_KEY_FILE and GRPC_TLS_CA_FILE: the platform's CA only means something with mutual TLS",
            ))
        }
        (cert, key, ca) => {
            let missing = [cert.is_none(), key.is_none(), ca.is_none()]
                .iter()
                .position(|missing| *missing)
                .map_or(NAMES[0], |at| NAMES[at]);
            Err(ConfigError::new(
                missing,
                "is required with the other GRPC_TLS_* files: mutual TLS needs a certificate, its key and the CA",
            ))
        }
    }
}

/// `ADMIN_JWT_JWKS_URL`: HTTPS, or plain HTTP to a loopback address only (tests, a local
/// identity provider): keys fetched in the clear could be replaced on the way.
fn validate_jwks_url(url: &str) -> Result<(), ConfigError> {
    let problem =
        |what: &str| ConfigError::new("ADMIN_JWT_JWKS_URL", format!("{what}, got {url:?}"));
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| problem("must be an https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(problem(
            "must be an https:// URL with a host and no credentials",
        ));
    }
    match scheme {
        "https" => Ok(()),
        "http" => {
            let host = match authority.strip_prefix('[') {
                Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
                None => authority.split(':').next().unwrap_or_default(),
            };
            let loopback = host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err(problem(
                    "must be https:// (plain http:// only to a loopback address): keys fetched in the clear could be replaced on the way",
                ))
            }
        }
        _ => Err(problem("must be an https:// URL")),
    }
}

struct Values(HashMap<String, config::Value>);

impl Values {
    fn string(&self, variable: &str) -> Result<Option<String>, ConfigError> {
        match self.0.get(&variable.to_ascii_lowercase()) {
            None => Ok(None),
            Some(value) => value
                .clone()
                .into_string()
                .map(|text| Some(text.trim().to_owned()).filter(|text| !text.is_empty()))
                .map_err(|error| ConfigError::new(variable, error.to_string())),
        }
    }

    /// Every `<prefix><NAME>` variable as (NAME, value), sorted by name.
    fn with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, ConfigError> {
        let lower = prefix.to_ascii_lowercase();
        let mut found = Vec::new();
        for key in self.0.keys() {
            if let Some(name) = key.strip_prefix(&lower) {
                let variable = format!("{prefix}{}", name.to_ascii_uppercase());
                if let Some(value) = self.string(&variable)? {
                    found.push((name.to_ascii_uppercase(), value));
                }
            }
        }
        found.sort();
        Ok(found)
    }

    fn secret(&self, variable: &str) -> Result<Option<Secret>, ConfigError> {
        Ok(self.string(variable)?.map(Secret))
    }

    fn secret_list(&self, variable: &str) -> Result<Vec<Secret>, ConfigError> {
        Ok(self
            .string(variable)?
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|secret| !secret.is_empty())
                    .map(|secret| Secret(secret.to_owned()))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn socket_addr(&self, variable: &str, default: &str) -> Result<SocketAddr, ConfigError> {
        let text = self.string(variable)?.unwrap_or_else(|| default.to_owned());
        text.parse().map_err(|_| {
            ConfigError::new(
                variable,
                format!("must be an address like 127.0.0.1:3000, got {text:?}"),
            )
        })
    }

    fn number<T: std::str::FromStr>(&self, variable: &str, default: T) -> Result<T, ConfigError> {
        match self.string(variable)? {
            None => Ok(default),
            Some(text) => text.parse().map_err(|_| {
                ConfigError::new(
                    variable,
                    format!("must be a non-negative whole number, got {text:?}"),
                )
            }),
        }
    }

    /// A duration such as `90s`, `10m`, `24h`, `1d` (a bare number is seconds), at least a
    /// second; `off` is `None`.
    fn interval(&self, variable: &str, default: Duration) -> Result<Option<Duration>, ConfigError> {
        let Some(text) = self.string(variable)? else {
            return Ok(Some(default));
        };
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let (number, unit) = text.split_at(
            text.find(|c: char| !c.is_ascii_digit())
                .unwrap_or(text.len()),
        );
        let seconds = match unit {
            "" | "s" => Some(1),
            "m" => Some(60),
            "h" => Some(3600),
            "d" => Some(86_400),
            _ => None,
        };
        match (number.parse::<u64>(), seconds) {
            (Ok(number), Some(seconds)) if number > 0 => {
                Ok(Some(Duration::from_secs(number.saturating_mul(seconds))))
            }
            _ => Err(ConfigError::new(
                variable,
                format!("must be a duration such as 90s, 10m, 24h or 1d, or off; got {text:?}"),
            )),
        }
    }

    fn boolean(&self, variable: &str, default: bool) -> Result<bool, ConfigError> {
        match self.string(variable)?.as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(other) => Err(ConfigError::new(
                variable,
                format!("must be true or false, got {other:?}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_work_on_a_laptop() {
        let settings = Settings::from_env(HashMap::new()).unwrap();
        assert_eq!(settings.gateway_addr.to_string(), "127.0.0.1:3000");
        assert_eq!(settings.grpc_addr.to_string(), "127.0.0.1:50051");
        assert!(settings.mongodb_uri.is_none());
        assert_eq!(settings.stripe_webhook_tolerance, Duration::from_secs(300));
        assert_eq!(
            settings.service_url(ServiceName::Limits),
            "http://127.0.0.1:50051"
        );
    }

    #[test]
    fn the_balance_check_runs_daily_at_six_utc_unless_told_otherwise() {
        use chrono::TimeZone as _;
        let next = |settings: &Settings, after: chrono::DateTime<chrono::Utc>| {
            settings
                .balance_check_schedule
                .as_ref()
                .and_then(|schedule| schedule.after(&after).next())
        };
        let evening = chrono::Utc
            .with_ymd_and_hms(2026, 12, 2, 18, 30, 0)
            .unwrap();
        let settings = Settings::from_env(HashMap::new()).unwrap();
        assert_eq!(
            next(&settings, evening),
            Some(chrono::Utc.with_ymd_and_hms(2026, 12, 3, 6, 0, 0).unwrap())
        );
        let settings =
            Settings::from_env(env(&[("BALANCE_CHECK_SCHEDULE", "*/15 * * * *")])).unwrap();
        assert_eq!(
            next(&settings, evening),
            Some(
                chrono::Utc
                    .with_ymd_and_hms(2026, 12, 2, 18, 45, 0)
                    .unwrap()
            )
        );
        let settings = Settings::from_env(env(&[("BALANCE_CHECK_SCHEDULE", "off")])).unwrap();
        assert!(settings.balance_check_schedule.is_none());
    }

    #[test]
    fn alert_emails_need_a_safe_relay_and_recipients() {
        let check = |pairs: &[(&str, &str)]| Settings::from_env(env(pairs)).map(|_| ());
        let to = ("ALERT_EMAIL_TO", "ops@example.com, finance@example.com");
        assert!(check(&[to, ("SMTP_URL", "smtps://u:p@mail.example.com:465")]).is_ok());
        assert!(
            check(&[
                to,
                ("SMTP_URL", "smtp://u:p@mail.example.com:587?tls=required")
            ])
            .is_ok()
        );
        assert!(check(&[to, ("SMTP_URL", "smtp://127.0.0.1:2525")]).is_ok());
        let refused = |pairs: &[(&str, &str)]| check(pairs).unwrap_err().variable;
        assert_eq!(
            refused(&[to, ("SMTP_URL", "smtp://u:p@mail.example.com:25")]),
            "SMTP_URL"
        );
        assert_eq!(
            refused(&[("SMTP_URL", "smtps://mail.example.com")]),
            "ALERT_EMAIL_TO"
        );
        // Recipients without a relay: refused where emails are sent (all in one, or the
        // notifications service alone), accepted where they are not.
        let recipients_only =
            Settings::from_env(env(&[to, ("PAYOUTS_ALLOW_PLAINTEXT_GRPC", "true")])).unwrap();
        for role in [Role::AllInOne, Role::Service(ServiceName::Notifications)] {
            assert_eq!(
                recipients_only.check_role(role).unwrap_err().variable,
                "SMTP_URL"
            );
        }
        assert!(recipients_only.check_role(Role::Gateway).is_ok());
        assert_eq!(
            refused(&[
                ("ALERT_EMAIL_TO", "ops"),
                ("SMTP_URL", "smtps://mail.example.com")
            ]),
            "ALERT_EMAIL_TO"
        );
        let settings =
            Settings::from_env(env(&[to, ("SMTP_URL", "smtps://mail.example.com")])).unwrap();
        assert_eq!(
            settings.alert_email_to,
            ["ops@example.com", "finance@example.com"]
        );
    }

    #[test]
    fn service_urls_follow_grpc_addr_unless_set() {
        let settings = Settings::from_env(env(&[
            ("GRPC_ADDR", "127.0.0.1:7000"),
            ("LIMITS_SERVICE_URL", "http://limits:50051"),
        ]))
        .unwrap();
        assert_eq!(
            settings.service_url(ServiceName::Payouts),
            "http://127.0.0.1:7000"
        );
        assert_eq!(
            settings.service_url(ServiceName::Limits),
            "http://limits:50051"
        );
        assert!(
            settings.in_process.services().is_empty(),
            "only the all-in-one process calls in process"
        );
    }

    #[test]
    fn an_invalid_value_is_reported_by_its_variable_name() {
        let cases = [
            ("GATEWAY_ADDR", "not-an-address"),
            ("GRPC_ADDR", "127.0.0.1:99999"),
            ("STRIPE_WEBHOOK_TOLERANCE_SECONDS", "-5"),
            ("LOG_FORMAT", "yaml"),
            ("MONGODB_URI", "postgres://x"),
            ("STRIPE_LIVEMODE", "maybe"),
            ("PAYOUTS_SERVICE_URL", "payouts:50051"),
            ("GRPC_TIMEOUT_MILLISECONDS", "0"),
            ("MONGODB_WRITE_TIMEOUT_MILLISECONDS", "0"),
            ("PAYOUT_UNKNOWN_ALERT_SECONDS", "soon"),
            ("RESERVE_MULTIPLIER", "9999"),
            ("BALANCE_CHECK_SCHEDULE", "every morning"),
            ("BALANCE_PAUSE_AT", "warning"),
            ("APPROVAL_DUAL_CONTROL_CENTS", "-1"),
            ("APPROVAL_DUAL_CONTROL_CENTS", "$10,000"),
            ("WEBHOOK_BACKFILL_INTERVAL", "0"),
            ("WEBHOOK_BACKFILL_INTERVAL", "10 minutes"),
            ("RECONCILIATION_INTERVAL", "-1h"),
            ("RECONCILIATION_WINDOW_DAYS", "0"),
            ("RECONCILIATION_WINDOW_DAYS", "91"),
            ("PAYOUT_STUCK_ALERT_DAYS", "0"),
            ("BANK_PAYOUT_ATTRIBUTION_ALERT_HOURS", "0"),
            ("BANK_PAYOUT_ATTRIBUTION_ALERT_HOURS", "721"),
            ("BANK_PAYOUT_ATTRIBUTION_ALERT_HOURS", "two days"),
            ("BALANCE_CHECK_SCHEDULE", "61 6 * * *"),
            ("RESERVE_MULTIPLIER", "1.2"),
            ("BALANCE_WARNING_CENTS", "1"),
            ("BALANCE_HEALTHY_CENTS", "100"),
        ];
        for (variable, value) in cases {
            let error = Settings::from_env(env(&[(variable, value)])).unwrap_err();
            assert_eq!(error.variable, variable, "{error}");
            assert!(error.to_string().contains(variable));
        }
    }

    #[test]
    fn dual_control_is_off_unless_an_amount_is_set() {
        assert_eq!(
            Settings::from_env(env(&[]))
                .unwrap()
                .approval_dual_control_cents,
            None
        );
        assert_eq!(
            Settings::from_env(env(&[("APPROVAL_DUAL_CONTROL_CENTS", "off")]))
                .unwrap()
                .approval_dual_control_cents,
            None
        );
        assert_eq!(
            Settings::from_env(env(&[("APPROVAL_DUAL_CONTROL_CENTS", "1000000")]))
                .unwrap()
                .approval_dual_control_cents,
            Some(1_000_000)
        );
    }

    #[test]
    fn the_all_in_one_process_reaches_its_services_where_they_listen() {
        let settings = Settings::from_env(env(&[
            ("GRPC_ADDR", "127.0.0.1:0"),
            ("LIMITS_SERVICE_URL", "http://limits:50051"),
        ]))
        .unwrap()
        .with_local_services("127.0.0.1:4321".parse().unwrap());
        assert_eq!(
            settings.service_url(ServiceName::Payouts),
            "http://127.0.0.1:4321"
        );
        assert_eq!(
            settings.service_url(ServiceName::Limits),
            "http://limits:50051"
        );
        assert!(settings.in_process.serves(ServiceName::Payouts));
        assert!(
            !settings.in_process.serves(ServiceName::Limits),
            "set elsewhere"
        );
    }

    #[test]
    fn webhook_secrets_are_a_comma_separated_list_for_rotation() {
        let settings = Settings::from_env(env(&[(
            "STRIPE_WEBHOOK_SECRET_PAYOUTS",
            "whsec_new, whsec_old",
        )]))
        .unwrap();
        let secrets: Vec<_> = settings
            .stripe_webhook_secrets_payouts
            .iter()
            .map(Secret::expose)
            .collect();
        assert_eq!(secrets, ["whsec_new", "whsec_old"]);
    }

    #[test]
    fn the_list_of_variables_is_what_is_read() {
        let code = [
            include_str!("config.rs"),
            include_str!("config/escalation.rs"),
        ]
        .map(|source| source.split("#[cfg(test)]").next().unwrap())
        .concat();
        let code = code.as_str();
        let mut read = std::collections::BTreeSet::new();
        for method in [
            ".string(",
            ".secret(",
            ".secret_list(",
            ".socket_addr(",
            ".number(",
            ".boolean(",
            ".interval(",
            ".with_prefix(",
            " window(",
        ] {
            for (at, _) in code.match_indices(method) {
                let rest = code[at + method.len()..].trim_start();
                if let Some(name) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                    read.insert(name.to_owned());
                }
            }
        }
        assert!(read.len() > 40, "{read:?}");
        for name in &read {
            assert!(
                VARIABLES.contains(&name.as_str()) || VARIABLE_PREFIXES.contains(&name.as_str()),
                "{name} is read but not listed in VARIABLES"
            );
        }
        for name in VARIABLES {
            assert!(
                read.contains(*name) || *name == "PAYOUTS_CONFIG",
                "{name} is listed but never read"
            );
        }
        assert!(is_known_variable("PAYOUT_LIMITS_MAX_SINGLE_PAYOUT"));
        assert!(is_known_variable("DISPUTES_SERVICE_URL"));
        assert!(!is_known_variable("STRIPE_SECRET"));
    }

    #[test]
    fn a_gateway_with_an_hs256_secret_must_be_told_the_money_is_test_money() {
        let secret = ("ADMIN_JWT_SECRET", "k".repeat(32));
        let plain = ("PAYOUTS_ALLOW_PLAINTEXT_GRPC", "true".to_owned());
        let start = |extra: &[(&str, &str)]| {
            let mut pairs: Vec<(&str, String)> = vec![secret.clone(), plain.clone()];
            pairs.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
            let map = pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<HashMap<_, _>>();
            Settings::from_env(map).unwrap().check_role(Role::Gateway)
        };
        assert_eq!(start(&[]).unwrap_err().variable, "STRIPE_LIVEMODE");
        assert!(start(&[("STRIPE_LIVEMODE", "false")]).is_ok());
        assert!(start(&[("STRIPE_SECRET_KEY", "sk_test_x")]).is_ok());
        assert!(start(&[("ADMIN_JWT_ALLOW_HS256", "true")]).is_ok());
    }

    #[test]
    fn gateway_budgets_default_under_the_one_limit_and_are_checked() {
        let defaults = Settings::from_env(HashMap::new()).unwrap();
        assert_eq!(
            (
                defaults.gateway_max_concurrent_requests,
                defaults.gateway_max_concurrent_webhooks,
                defaults.gateway_max_concurrent_admin,
                defaults.gateway_max_concurrent_cron,
            ),
            (512, 64, 64, 4)
        );
        assert_eq!(
            defaults.gateway_header_read_timeout,
            Duration::from_secs(10)
        );
        // A deployment that lowered the one limit it had keeps every budget under it...
        let lowered =
            Settings::from_env(env(&[("GATEWAY_MAX_CONCURRENT_REQUESTS", "32")])).unwrap();
        assert_eq!(
            (
                lowered.gateway_max_concurrent_webhooks,
                lowered.gateway_max_concurrent_admin,
                lowered.gateway_max_concurrent_cron,
            ),
            (32, 32, 4)
        );
        // ...and a budget set explicitly is taken as set.
        let explicit = Settings::from_env(env(&[
            ("GATEWAY_MAX_CONCURRENT_REQUESTS", "32"),
            ("GATEWAY_MAX_CONCURRENT_WEBHOOKS", "1000"),
        ]))
        .unwrap();
        assert_eq!(explicit.gateway_max_concurrent_webhooks, 1000);
        let refused = |pairs: &[(&str, &str)]| Settings::from_env(env(pairs)).unwrap_err().variable;
        for variable in [
            "GATEWAY_MAX_CONCURRENT_WEBHOOKS",
            "GATEWAY_MAX_CONCURRENT_ADMIN",
            "GATEWAY_MAX_CONCURRENT_CRON",
            "GATEWAY_HEADER_READ_TIMEOUT_SECONDS",
        ] {
            assert_eq!(refused(&[(variable, "0")]), variable);
        }
        assert_eq!(
            refused(&[("GATEWAY_HEADER_READ_TIMEOUT_SECONDS", "301")]),
            "GATEWAY_HEADER_READ_TIMEOUT_SECONDS"
        );
    }

    #[test]
    fn cron_tokens_shorter_than_32_bytes_are_refused_by_name() {
        let long = "0123456789abcdef0123456789abcdef";
        for variable in ["CRON_SECRET", "CRON_API_KEY"] {
            let error = Settings::from_env(env(&[(variable, &long[..31])])).unwrap_err();
            assert_eq!(error.variable, variable);
            assert!(error.to_string().contains("32 bytes"), "{error}");
            let settings = Settings::from_env(env(&[(variable, long)])).unwrap();
            assert!(settings.cron_secret.is_some() || settings.cron_api_key.is_some());
        }
    }

    #[test]
    fn the_webhook_tolerance_has_an_upper_bound() {
        let tolerance = |seconds: &str| {
            Settings::from_env(env(&[("STRIPE_WEBHOOK_TOLERANCE_SECONDS", seconds)]))
                .map(|settings| settings.stripe_webhook_tolerance.as_secs())
                .map_err(|error| error.variable)
        };
        assert_eq!(tolerance("300"), Ok(300));
        assert_eq!(tolerance("3600"), Ok(3600));
        assert_eq!(
            tolerance("3601"),
            Err("STRIPE_WEBHOOK_TOLERANCE_SECONDS".to_owned())
        );
        assert_eq!(
            tolerance("86400"),
            Err("STRIPE_WEBHOOK_TOLERANCE_SECONDS".to_owned())
        );
    }

    #[test]
    fn gateway_limits_and_cors_origins_are_checked() {
        let refused = |pairs: &[(&str, &str)]| Settings::from_env(env(pairs)).unwrap_err().variable;
        for bad in [
            "*",
            "https://*.example.com",
            "https://admin.example.com/path",
            "admin.example.com",
        ] {
            assert_eq!(
                refused(&[("ADMIN_CORS_ORIGINS", bad)]),
                "ADMIN_CORS_ORIGINS",
                "{bad}"
            );
        }
        assert_eq!(
            refused(&[("GATEWAY_MAX_CONCURRENT_REQUESTS", "0")]),
            "GATEWAY_MAX_CONCURRENT_REQUESTS"
        );
        assert_eq!(
            refused(&[("GATEWAY_REQUEST_TIMEOUT_SECONDS", "0")]),
            "GATEWAY_REQUEST_TIMEOUT_SECONDS"
        );
        let settings = Settings::from_env(env(&[(
            "ADMIN_CORS_ORIGINS",
            "https://admin.example.com/, http://localhost:5173",
        )]))
        .unwrap();
        assert_eq!(
            settings.admin_cors_origins,
            ["https://admin.example.com", "http://localhost:5173"]
        );
    }

    #[test]
    fn a_stripe_key_of_the_other_mode_is_refused() {
        let refused = |pairs: &[(&str, &str)]| Settings::from_env(env(pairs)).unwrap_err();
        for key in ["sk_live_abc", "rk_live_abc"] {
            let error = refused(&[("STRIPE_SECRET_KEY", key)]);
            assert_eq!(error.variable, "STRIPE_LIVEMODE");
            assert!(error.problem.contains("live key"), "{}", error.problem);
        }
        let error = refused(&[
            ("STRIPE_SECRET_KEY", "sk_test_abc"),
            ("STRIPE_LIVEMODE", "true"),
        ]);
        assert_eq!(error.variable, "STRIPE_LIVEMODE");
        assert!(error.problem.contains("test key"), "{}", error.problem);
        for ok in [
            vec![
                ("STRIPE_SECRET_KEY", "sk_live_abc"),
                ("STRIPE_LIVEMODE", "true"),
            ],
            vec![("STRIPE_SECRET_KEY", "rk_test_abc")],
        ] {
            assert!(Settings::from_env(env(&ok)).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn admin_keys_must_be_pinned_to_us() {
        let refused = |pairs: &[(&str, &str)]| Settings::from_env(env(pairs)).unwrap_err();
        let error = refused(&[("ADMIN_JWT_SECRET", "short")]);
        assert_eq!(error.variable, "ADMIN_JWT_SECRET");
        assert!(
            error.problem.contains("at least 32 bytes"),
            "{}",
            error.problem
        );
        for file in [
            "ADMIN_JWT_PUBLIC_KEY_FILE",
            "ADMIN_JWT_JWKS_FILE",
            "ADMIN_JWT_JWKS_URL",
        ] {
            let file_or_url = if file == "ADMIN_JWT_JWKS_URL" {
                "https://idp.example.com/jwks.json"
            } else {
                "/keys"
            };
            let file = (file, file_or_url);
            assert_eq!(refused(&[file]).variable, "ADMIN_JWT_ISSUER");
            assert_eq!(
                refused(&[file, ("ADMIN_JWT_ISSUER", "https://idp")]).variable,
                "ADMIN_JWT_AUDIENCE"
            );
            let pinned = [
                file,
                ("ADMIN_JWT_ISSUER", "https://idp"),
                ("ADMIN_JWT_AUDIENCE", "payouts"),
            ];
            assert!(Settings::from_env(env(&pinned)).is_ok());
        }
        assert!(Settings::from_env(env(&[("ADMIN_JWT_SECRET", &"k".repeat(32))])).is_ok());
    }

    #[test]
    fn exactly_one_admin_key_source_is_accepted() {
        let pinned = [
            ("ADMIN_JWT_ISSUER", "https://idp"),
            ("ADMIN_JWT_AUDIENCE", "payouts"),
        ];
        let secret = "k".repeat(32);
        let sources = [
            ("ADMIN_JWT_SECRET", secret.as_str()),
            ("ADMIN_JWT_PUBLIC_KEY_FILE", "/key.pem"),
            ("ADMIN_JWT_JWKS_FILE", "/jwks.json"),
            ("ADMIN_JWT_JWKS_URL", "https://idp.example.com/jwks.json"),
        ];
        for (i, first) in sources.iter().enumerate() {
            for second in &sources[i + 1..] {
                let mut pairs = pinned.to_vec();
                pairs.extend([*first, *second]);
                let error = Settings::from_env(env(&pairs)).unwrap_err();
                assert_eq!(error.variable, second.0, "{first:?} {second:?}");
                assert!(error.problem.contains(first.0), "{}", error.problem);
                assert!(error.problem.contains("exactly one"), "{}", error.problem);
            }
        }
    }

    #[test]
    fn the_jwks_url_is_https_or_loopback_http() {
        let pinned = [
            ("ADMIN_JWT_ISSUER", "https://idp"),
            ("ADMIN_JWT_AUDIENCE", "payouts"),
        ];
        let with = |url: &str, extra: &[(&str, &str)]| {
            let mut pairs = pinned.to_vec();
            pairs.push(("ADMIN_JWT_JWKS_URL", url));
            pairs.extend_from_slice(extra);
            Settings::from_env(env(&pairs))
        };
        for good in [
            "https://idp.example.com/.well-known/jwks.json",
            "http://127.0.0.1:8080/jwks",
            "http://localhost/jwks",
            "http://[::1]:9/jwks",
        ] {
            assert!(with(good, &[]).is_ok(), "{good}");
        }
        for bad in [
            "http://idp.example.com/jwks",
            "http://10.0.0.1/jwks",
            "http://127.0.0.1.evil.example/jwks",
            "ftp://idp.example.com/jwks",
            "idp.example.com/jwks",
            "https://user:pass@idp.example.com/jwks",
            "https:///jwks",
        ] {
            assert_eq!(
                with(bad, &[]).unwrap_err().variable,
                "ADMIN_JWT_JWKS_URL",
                "{bad}"
            );
        }
        let url = "https://idp.example.com/jwks";
        for (interval, ok) in [("29s", false), ("30s", true), ("off", false), ("1h", true)] {
            let result = with(url, &[("ADMIN_JWT_JWKS_REFRESH_INTERVAL", interval)]);
            assert_eq!(result.is_ok(), ok, "{interval}");
            if let Err(error) = result {
                assert_eq!(error.variable, "ADMIN_JWT_JWKS_REFRESH_INTERVAL");
            }
        }
        let settings = with(url, &[]).unwrap();
        assert_eq!(settings.admin_jwt_jwks_refresh, Duration::from_secs(600));
        assert_eq!(
            with(url, &[("ADMIN_JWT_ROLE_CLAIM", "admin")])
                .unwrap_err()
                .variable,
            "ADMIN_JWT_ROLE_CLAIM"
        );
        let settings = with(url, &[("ADMIN_JWT_ROLE_CLAIM", "payouts_role")]).unwrap();
        assert_eq!(
            settings.admin_jwt_role_claim.as_deref(),
            Some("payouts_role")
        );
    }

    #[test]
    fn hs256_with_a_live_configuration_needs_an_explicit_opt_in() {
        let secret = "k".repeat(32);
        let live_configurations: [&[(&str, &str)]; 3] = [
            &[("STRIPE_LIVEMODE", "true")],
            &[
                ("STRIPE_SECRET_KEY", "sk_live_abc"),
                ("STRIPE_LIVEMODE", "true"),
            ],
            &[
                ("STRIPE_SECRET_KEY", "rk_live_abc"),
                ("STRIPE_LIVEMODE", "true"),
            ],
        ];
        for live in live_configurations {
            let mut pairs = live.to_vec();
            assert!(Settings::from_env(env(&pairs)).unwrap().is_live());
            pairs.push(("ADMIN_JWT_SECRET", &secret));
            let error = Settings::from_env(env(&pairs)).unwrap_err();
            assert_eq!(error.variable, "ADMIN_JWT_SECRET", "{live:?}");
            assert!(
                error.problem.contains("ADMIN_JWT_ALLOW_HS256"),
                "{}",
                error.problem
            );
            assert!(
                error.problem.contains("ADMIN_JWT_JWKS_URL"),
                "{}",
                error.problem
            );
            pairs.push(("ADMIN_JWT_ALLOW_HS256", "true"));
            assert!(Settings::from_env(env(&pairs)).is_ok(), "{live:?}");
        }
        // A test configuration keeps HS256 without asking.
        let test = Settings::from_env(env(&[
            ("STRIPE_SECRET_KEY", "sk_test_abc"),
            ("ADMIN_JWT_SECRET", &secret),
        ]))
        .unwrap();
        assert!(!test.is_live());
    }

    #[test]
    fn a_role_that_would_lose_money_is_refused() {
        // Mutual TLS is the next test's; here plaintext gRPC is allowed.
        let settings = |pairs: &[(&str, &str)]| {
            let mut pairs = pairs.to_vec();
            pairs.push(("PAYOUTS_ALLOW_PLAINTEXT_GRPC", "true"));
            Settings::from_env(env(&pairs)).unwrap()
        };
        let embedded = settings(&[]);
        let error = embedded
            .check_role(Role::Service(ServiceName::Limits))
            .unwrap_err();
        assert_eq!(error.variable, "MONGODB_URI");
        assert!(
            error.problem.contains("payouts serve limits"),
            "{}",
            error.problem
        );
        assert!(embedded.check_role(Role::AllInOne).is_ok());
        assert!(
            embedded.check_role(Role::Gateway).is_ok(),
            "the gateway opens no store"
        );
        let allowed = settings(&[("PAYOUTS_ALLOW_EMBEDDED", "true")]);
        assert!(
            allowed
                .check_role(Role::Service(ServiceName::Limits))
                .is_ok()
        );
        let error = allowed
            .check_role(Role::Service(ServiceName::Webhooks))
            .unwrap_err();
        assert_eq!(error.variable, "STRIPE_WEBHOOK_SECRET_PAYOUTS");
        let one = settings(&[
            ("PAYOUTS_ALLOW_EMBEDDED", "true"),
            ("STRIPE_WEBHOOK_SECRET_PAYOUTS", "whsec_a"),
        ]);
        assert_eq!(
            one.check_role(Role::Service(ServiceName::Webhooks))
                .unwrap_err()
                .variable,
            "STRIPE_WEBHOOK_SECRET_TRANSFERS"
        );
        let two = settings(&[
            ("PAYOUTS_ALLOW_EMBEDDED", "true"),
            ("STRIPE_WEBHOOK_SECRET_PAYOUTS", "whsec_a"),
            ("STRIPE_WEBHOOK_SECRET_TRANSFERS", "whsec_c"),
        ]);
        assert_eq!(
            two.check_role(Role::Service(ServiceName::Webhooks))
                .unwrap_err()
                .variable,
            "STRIPE_WEBHOOK_SECRET"
        );
        let both = settings(&[
            ("MONGODB_URI", "mongodb://db:27017"),
            ("STRIPE_WEBHOOK_SECRET_PAYOUTS", "whsec_a"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_b"),
            ("STRIPE_WEBHOOK_SECRET_TRANSFERS", "whsec_c"),
        ]);
        assert!(
            both.check_role(Role::Service(ServiceName::Webhooks))
                .is_ok()
        );
        assert!(both.webhooks_unready_reason().is_none());
        assert!(embedded.webhooks_unready_reason().is_some());
    }

    #[test]
    fn the_all_in_one_on_a_public_grpc_address_needs_mutual_tls() {
        let settings = |pairs: &[(&str, &str)]| Settings::from_env(env(pairs)).unwrap();
        for addr in ["0.0.0.0:50051", "10.1.2.3:50051", "[::]:50051"] {
            let error = settings(&[("GRPC_ADDR", addr)])
                .check_role(Role::AllInOne)
                .unwrap_err();
            assert_eq!(error.variable, "GRPC_ADDR", "{addr}");
            assert!(error.problem.contains("mutual TLS"), "{}", error.problem);
        }
        for loopback in ["127.0.0.1:50051", "[::1]:50051", "127.0.0.1:0"] {
            assert!(
                settings(&[("GRPC_ADDR", loopback)])
                    .check_role(Role::AllInOne)
                    .is_ok(),
                "{loopback}"
            );
        }
        let tls = settings(&[
            ("GRPC_ADDR", "0.0.0.0:50051"),
            ("GRPC_TLS_CERT_FILE", "/tls/tls.crt"),
            ("GRPC_TLS_KEY_FILE", "/tls/tls.key"),
            ("GRPC_TLS_CA_FILE", "/tls/ca.crt"),
        ]);
        assert!(tls.check_role(Role::AllInOne).is_ok());
        let allowed = settings(&[
            ("GRPC_ADDR", "0.0.0.0:50051"),
            ("PAYOUTS_ALLOW_PLAINTEXT_GRPC", "true"),
        ]);
        assert!(allowed.check_role(Role::AllInOne).is_ok());
        // The development escape does not hold with live money, on loopback it needs none.
        let live = [
            ("STRIPE_SECRET_KEY", "sk_live_abc"),
            ("STRIPE_LIVEMODE", "true"),
            ("MONGODB_URI", "mongodb://db:27017"),
            ("PAYOUTS_ALLOW_PLAINTEXT_GRPC", "true"),
        ];
        let public = settings(&[live.as_slice(), &[("GRPC_ADDR", "0.0.0.0:50051")]].concat());
        for role in [
            Role::AllInOne,
            Role::Gateway,
            Role::Service(ServiceName::Payouts),
        ] {
            assert_eq!(
                public.check_role(role).unwrap_err().variable,
                "PAYOUTS_ALLOW_PLAINTEXT_GRPC",
                "{role:?}"
            );
        }
        let loopback = settings(&live);
        assert!(loopback.check_role(Role::AllInOne).is_ok());
    }

    #[test]
    fn a_live_configuration_needs_mongodb_in_every_mode_that_stores() {
        let settings = |pairs: &[(&str, &str)]| Settings::from_env(env(pairs)).unwrap();
        let plain = ("PAYOUTS_ALLOW_PLAINTEXT_GRPC", "true");
        let embedded = ("PAYOUTS_ALLOW_EMBEDDED", "true");
        let live_key = ("STRIPE_SECRET_KEY", "sk_live_abc");
        let livemode = ("STRIPE_LIVEMODE", "true");
        for live in [
            settings(&[live_key, livemode, plain, embedded]),
            settings(&[
                ("STRIPE_SECRET_KEY", "rk_live_abc"),
                livemode,
                plain,
                embedded,
            ]),
            settings(&[livemode, plain, embedded]),
        ] {
            assert!(live.is_live());
            for role in [Role::AllInOne, Role::Service(ServiceName::Payouts)] {
                let error = live.check_role(role).unwrap_err();
                assert_eq!(error.variable, "MONGODB_URI", "{role:?}");
                assert!(error.problem.contains("live"), "{}", error.problem);
            }
            // The gateway opens no store; but plaintext gRPC with live money is refused.
            assert_eq!(
                live.check_role(Role::Gateway).unwrap_err().variable,
                "PAYOUTS_ALLOW_PLAINTEXT_GRPC"
            );
        }
        let test = settings(&[("STRIPE_SECRET_KEY", "sk_test_abc"), plain, embedded]);
        assert!(!test.is_live());
        assert!(test.check_role(Role::AllInOne).is_ok());
        let stored = settings(&[live_key, livemode, ("MONGODB_URI", "mongodb://db:27017")]);
        assert!(stored.check_role(Role::AllInOne).is_ok());
    }

    #[test]
    fn processes_apart_need_mutual_tls_unless_plaintext_is_allowed() {
        let settings = |pairs: &[(&str, &str)]| Settings::from_env(env(pairs)).unwrap();
        let mongo = ("MONGODB_URI", "mongodb://db:27017");
        let plain = settings(&[mongo]);
        for role in [Role::Gateway, Role::Service(ServiceName::Disputes)] {
            let error = plain.check_role(role).unwrap_err();
            assert_eq!(error.variable, "GRPC_TLS_CERT_FILE", "{role:?}");
            assert!(error.problem.contains("mutual TLS"), "{}", error.problem);
        }
        assert!(
            plain.check_role(Role::AllInOne).is_ok(),
            "one process: no network calls"
        );
        let allowed = settings(&[mongo, ("PAYOUTS_ALLOW_PLAINTEXT_GRPC", "true")]);
        assert!(allowed.check_role(Role::Gateway).is_ok());
        let tls = settings(&[
            mongo,
            ("GRPC_TLS_CERT_FILE", "/tls/tls.crt"),
            ("GRPC_TLS_KEY_FILE", "/tls/tls.key"),
            ("GRPC_TLS_CA_FILE", "/tls/ca.crt"),
        ]);
        assert!(tls.check_role(Role::Service(ServiceName::Disputes)).is_ok());
        // All three files or none.
        let half = Settings::from_env(env(&[("GRPC_TLS_CERT_FILE", "/tls/tls.crt")])).unwrap_err();
        assert_eq!(half.variable, "GRPC_TLS_KEY_FILE");
        let no_ca = Settings::from_env(env(&[
            ("GRPC_TLS_CERT_FILE", "/tls/tls.crt"),
            ("GRPC_TLS_KEY_FILE", "/tls/tls.key"),
        ]))
        .unwrap_err();
        assert_eq!(no_ca.variable, "GRPC_TLS_CA_FILE");
        let identities = settings(&[("GRPC_PLATFORM_IDENTITIES", " creator-api, ,spiffe://x/y ")]);
        assert_eq!(
            identities.grpc_platform_identities,
            vec!["creator-api".to_owned(), "spiffe://x/y".to_owned()]
        );
    }

    #[test]
    fn secrets_never_print() {
        let settings = Settings::from_env(env(&[
            ("STRIPE_SECRET_KEY", "sk_test_supersecret"),
            ("ADMIN_JWT_SECRET", "jwt-supersecret-of-at-least-32-bytes"),
            ("MONGODB_URI", "mongodb://user:supersecret@db:27017"),
        ]))
        .unwrap();
        let printed = format!("{settings:?}");
        assert!(!printed.contains("supersecret"), "{printed}");
    }

    #[test]
    fn a_config_file_is_read_and_the_environment_wins() {
        let dir = std::env::temp_dir().join(format!("payouts-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("payouts.toml");
        std::fs::write(
            &path,
            "grpc_addr = \"127.0.0.1:6000\"\ngateway_addr = \"127.0.0.1:6001\"\n",
        )
        .unwrap();
        let settings = Settings::from_env(env(&[
            ("PAYOUTS_CONFIG", path.to_str().unwrap()),
            ("GATEWAY_ADDR", "127.0.0.1:6002"),
        ]))
        .unwrap();
        assert_eq!(settings.grpc_addr.to_string(), "127.0.0.1:6000");
        assert_eq!(settings.gateway_addr.to_string(), "127.0.0.1:6002");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let error = Settings::from_env(env(&[("PAYOUTS_CONFIG", "/nonexistent/payouts.toml")]))
            .unwrap_err();
        assert_eq!(error.variable, "PAYOUTS_CONFIG");
    }
}
