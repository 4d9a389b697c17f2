//! The command line.

use clap::{Parser, Subcommand, ValueEnum};
use payouts_runtime::ServiceName;

/// Payouts pays creators through Stripe Connect without ever paying twice, paying too much,
/// or losing an event.
///
/// With no command it runs everything in one process: the HTTP gateway on GATEWAY_ADDR
/// (default 127.0.0.1:3000) and every gRPC service on GRPC_ADDR (default 127.0.0.1:50051),
/// on the embedded in-process store unless MONGODB_URI is set.
///
/// Settings come from the environment (and the TOML file PAYOUTS_CONFIG names); see the
/// README's configuration table. A bad setting stops the start with its name.
#[derive(Debug, Parser)]
#[command(name = "payouts", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway and every service in one process (the default).
    All,
    /// Run one gRPC service alone on GRPC_ADDR (what a Kubernetes Deployment runs).
    Serve {
        /// The service to run.
        service: Service,
    },
    /// Run the HTTP gateway alone on GATEWAY_ADDR; it reaches the services at
    /// <SERVICE>_SERVICE_URL (e.g. WEBHOOKS_SERVICE_URL=http://webhooks:50051).
    Gateway,
    /// Admin tools.
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Stripe operations: create the webhook endpoints, send test events.
    Stripe {
        #[command(subcommand)]
        action: StripeAction,
    },
    /// Development tools: a fake Stripe, a creator and a payout without a platform.
    Dev {
        #[command(subcommand)]
        action: DevAction,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum StripeAction {
    /// Create (or bring up to date) the three webhook endpoints of design §9 in the Stripe
    /// account of STRIPE_SECRET_KEY (at STRIPE_API_BASE), after checking that each answers at
    /// the URL. An endpoint that exists for the URL is updated, never duplicated. Prints the
    /// signing secret of an endpoint it creates as the environment line to set.
    SetupWebhooks {
        /// The public base URL of the gateway (https://pay.example.com); http:// only with a
        /// test key.
        #[arg(long)]
        url: String,
        /// Print what would be created or updated, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Send a signed test event of a type Payouts handles to the gateway, like
    /// `stripe trigger`: built from Stripe's fixtures, signed with the endpoint's secret
    /// (STRIPE_WEBHOOK_SECRET_PAYOUTS or STRIPE_WEBHOOK_SECRET).
    Trigger {
        /// The event type (`payouts stripe trigger --help` lists them; e.g. payout.paid).
        event_type: String,
        /// The gateway's base URL (default http://<GATEWAY_ADDR>).
        #[arg(long)]
        gateway: Option<String>,
        /// The connected account the event is from (acct_...).
        #[arg(long)]
        account: Option<String>,
        /// Set a field of the event: a dotted path and a value (JSON, or else a string),
        /// e.g. --set data.object.amount=5000 --set data.object.metadata.payout_id=p1.
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum DevAction {
    /// Run the fake Stripe (the one the tests use) on loopback until Ctrl-C, and print the
    /// settings that point Payouts at it.
    FakeStripe {
        #[arg(long, default_value = "127.0.0.1:12111")]
        addr: std::net::SocketAddr,
    },
    /// Register a creator (connected account acct_<user>) with earnings, over gRPC at
    /// PAYOUTS_SERVICE_URL / DISPUTES_SERVICE_URL (default GRPC_ADDR).
    Creator {
        user_id: String,
        /// Earnings to record, in cents.
        #[arg(long, default_value_t = 500_00)]
        earned_cents: i64,
        /// How old the account is, in days (new accounts have lower limits).
        #[arg(long, default_value_t = 400)]
        age_days: i64,
    },
    /// Request a payout for a creator over gRPC and print it.
    RequestPayout {
        user_id: String,
        /// The amount in cents.
        cents: i64,
        /// The idempotency key (default: a new one).
        #[arg(long)]
        key: Option<String>,
    },
    /// Pay a creator's Stripe balance out to their bank in the fake Stripe (its own control
    /// route, `POST /_fake/accounts/{id}/payouts`, at STRIPE_API_BASE): a reconciled automatic
    /// bank payout, whose `payout.paid` and `payout.reconciliation_completed` the fake
    /// delivers to the Connect endpoint.
    PayOut {
        /// The connected account (acct_...).
        account: String,
    },
    /// Print a payout.
    Payout { payout_id: String },
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Print the effective configuration (secrets redacted) and exit non-zero if the process
    /// would refuse to start with it.
    Check {
        /// What the process would run: `all` (the default), `gateway`, or a service name.
        #[arg(default_value = "all")]
        role: String,
    },
    /// Print every environment variable the process reads, one per line (prefixes end in `*`).
    Variables,
    /// Print the gRPC name each service registers (and reports its health under).
    Services,
    /// Print who may call each service (`<service> <caller>`), from the authorization table
    /// enforced under mutual TLS.
    Callers,
}

#[derive(Debug, Subcommand)]
enum AdminAction {
    /// Print a short-lived HS256 admin token signed with ADMIN_JWT_SECRET (with
    /// ADMIN_JWT_ISSUER, ADMIN_JWT_AUDIENCE and the ADMIN_JWT_ROLE_CLAIM when set), for
    /// development and the dashboard walkthrough. Refused for a live configuration:
    /// production admins sign in through the identity provider (ADMIN_JWT_JWKS_URL).
    Token {
        /// The admin's id, recorded with every decision made with the token.
        #[arg(long)]
        sub: String,
        /// What the admin may do: approver (everything) or viewer (read only; needs
        /// ADMIN_JWT_ROLE_CLAIM).
        #[arg(long, value_enum, default_value_t = TokenRole::Approver)]
        role: TokenRole,
        /// How long the token is valid: seconds, or a number with s, m or h (at most 24h).
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: std::time::Duration,
    },
}

/// The role written in a development admin token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenRole {
    Approver,
    Viewer,
}

impl From<TokenRole> for payouts_gateway::AdminRole {
    fn from(role: TokenRole) -> Self {
        match role {
            TokenRole::Approver => payouts_gateway::AdminRole::Approver,
            TokenRole::Viewer => payouts_gateway::AdminRole::Viewer,
        }
    }
}

/// `90`, `90s`, `15m`, `1h`.
fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 900, 15m or 1h"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{text:?}: the unit must be s, m or h")),
    };
    Ok(std::time::Duration::from_secs(
        number.saturating_mul(seconds),
    ))
}

/// The services `payouts serve` can run.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Service {
    /// Stripe webhook inbox: signatures, storage, exactly-once processing, dispatch.
    Webhooks,
    /// Accounts, payout requests, Stripe transfers, the payout lifecycle.
    Payouts,
    /// Payout limits and fraud checks, atomic quota reservation.
    Limits,
    /// The admin approval queue.
    Approvals,
    /// Allocations (earnings), refunds and disputes.
    Disputes,
    /// Platform balance monitoring.
    Balance,
    /// In-app notifications, critical alerts, email.
    Notifications,
}

impl From<Service> for ServiceName {
    fn from(service: Service) -> Self {
        match service {
            Service::Webhooks => ServiceName::Webhooks,
            Service::Payouts => ServiceName::Payouts,
            Service::Limits => ServiceName::Limits,
            Service::Approvals => ServiceName::Approvals,
            Service::Disputes => ServiceName::Disputes,
            Service::Balance => ServiceName::Balance,
            Service::Notifications => ServiceName::Notifications,
        }
    }
}

/// What the process runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Gateway and every service.
    All,
    /// One service.
    Service(ServiceName),
    /// The gateway alone.
    Gateway,
}

/// What was asked: run the process, or check the configuration for a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    Run(Mode),
    /// `payouts config check <role>`: check the configuration for that role, run nothing.
    ConfigCheck(Role),
    /// `payouts config variables`.
    ConfigVariables,
    /// `payouts config services`.
    ConfigServices,
    /// `payouts config callers`.
    ConfigCallers,
    /// `payouts admin token`.
    AdminToken {
        subject: String,
        role: TokenRole,
        ttl: std::time::Duration,
    },
    /// `payouts stripe ...`.
    Stripe(StripeAction),
    /// `payouts dev ...`.
    Dev(DevAction),
}

/// What `payouts config check` checks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    All,
    Gateway,
    Service(ServiceName),
    /// A name that is none of those (reported as an error).
    Unknown(String),
}

impl Cli {
    pub fn invocation(&self) -> Invocation {
        match &self.command {
            None | Some(Command::All) => Invocation::Run(Mode::All),
            Some(Command::Serve { service }) => Invocation::Run(Mode::Service((*service).into())),
            Some(Command::Gateway) => Invocation::Run(Mode::Gateway),
            Some(Command::Admin {
                action: AdminAction::Token { sub, role, ttl },
            }) => Invocation::AdminToken {
                subject: sub.clone(),
                role: *role,
                ttl: *ttl,
            },
            Some(Command::Stripe { action }) => Invocation::Stripe(action.clone()),
            Some(Command::Dev { action }) => Invocation::Dev(action.clone()),
            Some(Command::Config {
                action: ConfigAction::Variables,
            }) => Invocation::ConfigVariables,
            Some(Command::Config {
                action: ConfigAction::Services,
            }) => Invocation::ConfigServices,
            Some(Command::Config {
                action: ConfigAction::Callers,
            }) => Invocation::ConfigCallers,
            Some(Command::Config {
                action: ConfigAction::Check { role },
            }) => Invocation::ConfigCheck(match role.as_str() {
                "all" => Role::All,
                "gateway" => Role::Gateway,
                name => Service::from_str(name, true)
                    .map(|service| Role::Service(service.into()))
                    .unwrap_or_else(|_| Role::Unknown(name.to_owned())),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn no_arguments_run_everything() {
        assert_eq!(
            Cli::try_parse_from(["payouts"]).unwrap().invocation(),
            Invocation::Run(Mode::All)
        );
    }

    #[test]
    fn stripe_and_dev_commands_take_their_arguments() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|cli| cli.invocation());
        assert_eq!(
            parse(&[
                "payouts",
                "stripe",
                "setup-webhooks",
                "--url",
                "https://x",
                "--dry-run"
            ])
            .unwrap(),
            Invocation::Stripe(StripeAction::SetupWebhooks {
                url: "https://x".into(),
                dry_run: true
            })
        );
        assert!(
            parse(&["payouts", "stripe", "setup-webhooks"]).is_err(),
            "--url is required"
        );
        assert_eq!(
            parse(&[
                "payouts",
                "stripe",
                "trigger",
                "payout.paid",
                "--account",
                "acct_1",
                "--set",
                "data.object.amount=5",
                "--set",
                "id=evt_1"
            ])
            .unwrap(),
            Invocation::Stripe(StripeAction::Trigger {
                event_type: "payout.paid".into(),
                gateway: None,
                account: Some("acct_1".into()),
                sets: vec!["data.object.amount=5".into(), "id=evt_1".into()],
            })
        );
        assert!(parse(&["payouts", "dev", "request-payout", "alice", "ten"]).is_err());
        assert!(parse(&["payouts", "dev", "fake-stripe", "--addr", "nowhere"]).is_err());
    }

    #[test]
    fn serve_names_one_service() {
        let cli = Cli::try_parse_from(["payouts", "serve", "limits"]).unwrap();
        assert_eq!(
            cli.invocation(),
            Invocation::Run(Mode::Service(ServiceName::Limits))
        );
        assert!(Cli::try_parse_from(["payouts", "serve", "ledger"]).is_err());
        assert!(Cli::try_parse_from(["payouts", "launch"]).is_err());
    }

    #[test]
    fn admin_token_takes_a_subject_and_a_lifetime() {
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|cli| cli.invocation());
        assert_eq!(
            parse(&["payouts", "admin", "token", "--sub", "alice"]).unwrap(),
            Invocation::AdminToken {
                subject: "alice".into(),
                role: TokenRole::Approver,
                ttl: std::time::Duration::from_secs(3600)
            }
        );
        assert_eq!(
            parse(&[
                "payouts", "admin", "token", "--sub", "v", "--role", "viewer"
            ])
            .unwrap(),
            Invocation::AdminToken {
                subject: "v".into(),
                role: TokenRole::Viewer,
                ttl: std::time::Duration::from_secs(3600)
            }
        );
        assert!(parse(&["payouts", "admin", "token", "--sub", "v", "--role", "owner"]).is_err());
        for (ttl, seconds) in [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200)] {
            assert_eq!(
                parse(&["payouts", "admin", "token", "--sub", "a", "--ttl", ttl]).unwrap(),
                Invocation::AdminToken {
                    subject: "a".into(),
                    role: TokenRole::Approver,
                    ttl: std::time::Duration::from_secs(seconds)
                }
            );
        }
        for bad in ["", "h", "1d", "-5m", "1.5h"] {
            assert!(
                parse(&["payouts", "admin", "token", "--sub", "a", "--ttl", bad]).is_err(),
                "{bad:?} accepted"
            );
        }
        assert!(parse(&["payouts", "admin", "token"]).is_err());
    }

    #[test]
    fn config_check_names_a_role() {
        let role = |args: &[&str]| Cli::try_parse_from(args).unwrap().invocation();
        assert_eq!(
            role(&["payouts", "config", "check"]),
            Invocation::ConfigCheck(Role::All)
        );
        assert_eq!(
            role(&["payouts", "config", "check", "webhooks"]),
            Invocation::ConfigCheck(Role::Service(ServiceName::Webhooks))
        );
        assert_eq!(
            role(&["payouts", "config", "check", "gateway"]),
            Invocation::ConfigCheck(Role::Gateway)
        );
        assert_eq!(
            role(&["payouts", "config", "check", "ledger"]),
            Invocation::ConfigCheck(Role::Unknown("ledger".into()))
        );
    }
}
