//! A seeded, deterministic simulation of Payouts under faults.
//!
//! It runs the real domain code and embedded stores of the webhooks, payouts, limits and
//! approvals services (and notifications' escalation worker), several replicas of each,
//! against a simulated Stripe, with users requesting (and retrying, and reusing keys) at once,
//! admins deciding at once, and transfers paused and halted (level-3 escalations). A seeded
//! scheduler decides every step: which parked operation resumes, which one crashes at its
//! await point (its in-flight state dropped), which Stripe event is delivered (late,
//! reordered, twice, or for some never), how Stripe answers each request, how much time
//! passes. After every step it checks the money invariants; at the end, with faults off and
//! time advanced, it checks that nothing is stuck and everything adds up.
//!
//! Deterministic means the simulation, not tokio, decides what runs next: operations are
//! futures polled by hand ([`executor`]), time is a manual clock, ids are sequential, and
//! every choice comes from one seeded generator ([`chaos`]). The same seed gives the same
//! run, byte for byte in its trace.
//!
//! - [`executor`]: tasks, await points, crashes.
//! - [`chaos`]: the seeded generator and fault switches.
//! - [`stores`]: the embedded stores behind points and faults.
//! - [`ports`]: the services calling each other, with faults.
//! - [`stripe`]: the simulated Stripe.
//! - [`invariants`]: what must hold.
//! - [`halts`]: what the transfer pause and the escalation halt must mean, watched at the
//!   stores and at Stripe.
//! - [`world`]: wiring, the scheduler, the drain.

pub mod chaos;
pub mod executor;
pub mod halts;
pub mod invariants;
pub mod ports;
pub mod stores;
pub mod stripe;
pub mod world;

pub use world::{Failure, Options, Report};

/// Runs one seed.
pub fn run(seed: u64, options: &Options) -> Result<Report, Failure> {
    // Code under test creates tokio timers (deadlines); they need a runtime to register
    // with. The simulation never yields to it, so no timer fires: time is the manual clock.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            return Err(Failure {
                seed,
                step: 0,
                problem: format!("no tokio runtime: {error}"),
                trace: Vec::new(),
            });
        }
    };
    let _context = runtime.enter();
    world::World::new(seed, options).run()
}

/// Runs seeds `from..to` on `threads` threads; the failures, by seed.
pub fn run_many(from: u64, to: u64, threads: usize, options: &Options) -> (usize, Vec<Failure>) {
    let threads = threads.max(1) as u64;
    let mut failures = Vec::new();
    let mut clean = 0;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|lane| {
                scope.spawn(move || {
                    let mut clean = 0;
                    let mut failures = Vec::new();
                    let mut seed = from + lane;
                    while seed < to {
                        match run(seed, options) {
                            Ok(_) => clean += 1,
                            Err(mut failure) => {
                                // Enough to see what happened; the seed replays in full.
                                let keep = failure.trace.len().saturating_sub(60);
                                failure.trace.drain(..keep);
                                failures.push(failure);
                            }
                        }
                        seed += threads;
                    }
                    (clean, failures)
                })
            })
            .collect();
        for worker in workers {
            if let Ok((lane_clean, lane_failures)) = worker.join() {
                clean += lane_clean;
                failures.extend(lane_failures);
            }
        }
    });
    failures.sort_by_key(|failure| failure.seed);
    (clean, failures)
}
