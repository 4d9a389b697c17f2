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

impl Cli {
    pub fn mode(&self) -> Mode {
        match &self.command {
            None | Some(Command::All) => Mode::All,
            Some(Command::Serve { service }) => Mode::Service((*service).into()),
            Some(Command::Gateway) => Mode::Gateway,
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
        assert_eq!(Cli::try_parse_from(["payouts"]).unwrap().mode(), Mode::All);
    }

    #[test]
    fn serve_names_one_service() {
        let cli = Cli::try_parse_from(["payouts", "serve", "limits"]).unwrap();
        assert_eq!(cli.mode(), Mode::Service(ServiceName::Limits));
        assert!(Cli::try_parse_from(["payouts", "serve", "ledger"]).is_err());
        assert!(Cli::try_parse_from(["payouts", "launch"]).is_err());
    }
}
