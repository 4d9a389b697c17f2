//! `payouts-simulation`: run seeds of the deterministic simulation.
//!
//! ```text
//! cargo run -p payouts-simulation -- --seed 42 --trace      # replay one seed, print its trace
//! cargo run --release -p payouts-simulation -- --seeds 100000 [--from 0] [--threads 2]
//! ```

use std::process::ExitCode;

use payouts_simulation::{Options, run, run_many};

fn value(args: &[String], name: &str) -> Option<u64> {
    args.iter()
        .position(|arg| arg == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut options = Options::default();
    if let Some(steps) = value(&args, "--steps") {
        options.steps = usize::try_from(steps).unwrap_or(options.steps);
    }
    if let Some(seed) = value(&args, "--seed") {
        return match run(seed, &options) {
            Ok(report) => {
                if args.iter().any(|arg| arg == "--trace") {
                    for line in &report.trace {
                        println!("{line}");
                    }
                }
                println!(
                    "seed {seed}: clean after {} steps; payouts {:?}; {} transfers; {} crashes; {} alerts; faults {:?}",
                    report.steps,
                    report.payouts,
                    report.transfers,
                    report.crashes,
                    report.alerts,
                    report.faults
                );
                ExitCode::SUCCESS
            }
            Err(failure) => {
                if args.iter().any(|arg| arg == "--trace") {
                    for line in &failure.trace {
                        println!("{line}");
                    }
                }
                eprintln!("{failure}");
                ExitCode::FAILURE
            }
        };
    }
    let from = value(&args, "--from").unwrap_or(0);
    let count = value(&args, "--seeds").unwrap_or(1_000);
    let threads = value(&args, "--threads").unwrap_or(2);
    let started = std::time::Instant::now();
    let (clean, failures) = run_many(
        from,
        from + count,
        usize::try_from(threads).unwrap_or(2),
        &options,
    );
    println!(
        "{clean} of {count} seeds ({from}..{}) clean in {:.1} s",
        from + count,
        started.elapsed().as_secs_f64()
    );
    for failure in &failures {
        eprintln!("{failure}\n");
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
