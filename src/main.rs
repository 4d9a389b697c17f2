//! `payouts`: one binary for the whole system. See `payouts --help`.

use std::process::ExitCode;

use clap::Parser as _;

mod app;
mod cli;
mod dev;
mod metrics;
mod stripe_ops;

/// mimalloc instead of the system allocator: a request allocates and frees many small
/// buffers on every thread, and glibc's arenas spent a fifth of the process's time on it
/// under load, with lock waits (see the README's benchmarks).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let command = cli::Cli::parse();
    let mode = match command.invocation() {
        cli::Invocation::Run(mode) => mode,
        cli::Invocation::ConfigVariables => {
            use payouts_runtime::config::{ServiceName, VARIABLE_PREFIXES, VARIABLES};
            for name in VARIABLES {
                println!("{name}");
            }
            for service in ServiceName::ALL {
                println!("{}", service.url_variable());
            }
            for prefix in VARIABLE_PREFIXES {
                println!("{prefix}*");
            }
            return ExitCode::SUCCESS;
        }
        cli::Invocation::ConfigCallers => {
            for service in payouts_runtime::ServiceName::ALL {
                for caller in payouts_runtime::authz::callers_of(service) {
                    println!("{} {caller}", service.as_str());
                }
            }
            return ExitCode::SUCCESS;
        }
        cli::Invocation::ConfigServices => {
            for service in payouts_runtime::ServiceName::ALL {
                println!("{} {}", service.as_str(), service.grpc_name());
            }
            return ExitCode::SUCCESS;
        }
        cli::Invocation::AdminToken { subject, role, ttl } => {
            let token = payouts_runtime::Settings::from_process_env()
                .map_err(anyhow::Error::from)
                .and_then(|settings| {
                    payouts_gateway::mint_admin_token(&settings, &subject, role.into(), ttl)
                });
            return match token {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("payouts: {error:#}");
                    ExitCode::FAILURE
                }
            };
        }
        cli::Invocation::Stripe(action) => {
            return tool(|settings| async move {
                match action {
                    cli::StripeAction::SetupWebhooks { url, dry_run } => {
                        stripe_ops::setup_webhooks(&settings, &url, dry_run).await
                    }
                    cli::StripeAction::Trigger {
                        event_type,
                        gateway,
                        account,
                        sets,
                    } => {
                        stripe_ops::trigger(
                            &settings,
                            &event_type,
                            gateway.as_deref(),
                            account.as_deref(),
                            &sets,
                        )
                        .await
                    }
                }
            });
        }
        cli::Invocation::Dev(action) => {
            return tool(|settings| async move { dev::run(&settings, action).await });
        }
        cli::Invocation::ConfigCheck(role) => {
            return match app::config_check(&role) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("payouts: {error:#}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("payouts: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(app::run(mode)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("payouts: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command-line tool with the process settings on a small runtime.
fn tool<F, Fut>(command: F) -> ExitCode
where
    F: FnOnce(payouts_runtime::Settings) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let result = payouts_runtime::Settings::from_process_env()
        .map_err(anyhow::Error::from)
        .and_then(|settings| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(command(settings))
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("payouts: {error:#}");
            ExitCode::FAILURE
        }
    }
}
