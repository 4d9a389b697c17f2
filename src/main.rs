//! `payouts`: one binary for the whole system. See `payouts --help`.

use std::process::ExitCode;

use clap::Parser as _;

mod app;
mod cli;
mod metrics;

fn main() -> ExitCode {
    let command = cli::Cli::parse();
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
    match runtime.block_on(app::run(command.mode())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("payouts: {error:#}");
            ExitCode::FAILURE
        }
    }
}
