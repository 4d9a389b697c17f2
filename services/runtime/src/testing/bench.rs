//! What every benchmark shares: its settings from the environment, driving concurrent calls
//! and measuring each, and its result lines. A benchmark prints its own lines; with
//! `BENCH_REPORT` set it also appends them to that file, so `benches/run` prints every
//! benchmark of the workspace in one table. Figures, never assertions.

#![allow(clippy::print_stdout)]

use std::future::Future;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A numeric setting of a benchmark (`BENCH_*`), or its default.
pub fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// A latency above which a call counts as a stall.
pub const STALL: Duration = Duration::from_millis(20);

/// What a measured run did.
#[derive(Debug, Clone)]
pub struct Figures {
    pub calls: usize,
    pub per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// Calls slower than [`STALL`].
    pub stalls: usize,
}

impl Figures {
    /// The figures of `latencies`, measured over `elapsed`.
    pub fn of(mut latencies: Vec<Duration>, elapsed: Duration) -> Self {
        latencies.sort();
        let at = |quantile: f64| {
            let last = latencies.len().saturating_sub(1);
            // A quantile's index: the nearest rank, in range by construction.
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let index = ((last as f64) * quantile).round() as usize;
            latencies.get(index).copied().unwrap_or_default()
        };
        #[allow(clippy::cast_precision_loss)]
        let per_second = latencies.len() as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        Self {
            calls: latencies.len(),
            per_second,
            p50: at(0.50),
            p99: at(0.99),
            max: latencies.last().copied().unwrap_or_default(),
            stalls: latencies.iter().filter(|l| **l > STALL).count(),
        }
    }
}

/// Makes `calls` calls from `clients` concurrent tasks (`call(client, i)` makes call `i`
/// from client `client`) and measures each one.
pub async fn drive<F, Fut>(calls: usize, clients: usize, call: F) -> Figures
where
    F: Fn(usize, usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients.max(1))
        .map(|client| {
            let (next, call) = (Arc::clone(&next), call.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= calls {
                        return latencies;
                    }
                    let sent = Instant::now();
                    call(client, index).await;
                    latencies.push(sent.elapsed());
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(calls);
    for worker in workers {
        latencies.extend(worker.await.expect("a benchmark client panicked"));
    }
    Figures::of(latencies, started.elapsed())
}

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1_000.0)
}

/// Prints one measured case (and appends it to `BENCH_REPORT`).
pub fn report(bench: &str, case: &str, figures: &Figures, note: &str) {
    let note = if figures.stalls > 0 {
        format!("{} over {}; {note}", figures.stalls, millis(STALL))
    } else {
        note.to_owned()
    };
    line(
        bench,
        case,
        &[
            format!("{:.0}/s", figures.per_second),
            millis(figures.p50),
            millis(figures.p99),
            millis(figures.max),
            note.trim_end_matches("; ").to_owned(),
        ],
    );
}

/// Prints one unmeasured figure (memory, a count) of a case.
pub fn report_value(bench: &str, case: &str, note: &str) {
    line(
        bench,
        case,
        &[
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            note.to_owned(),
        ],
    );
}

fn line(bench: &str, case: &str, columns: &[String]) {
    let [rate, p50, p99, max, note] = columns else {
        return;
    };
    println!("{case:<52} {rate:>10} {p50:>10} {p99:>10} {max:>10}  {note}");
    if let Ok(path) = std::env::var("BENCH_REPORT") {
        let appended = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| {
                writeln!(file, "{bench}\t{case}\t{rate}\t{p50}\t{p99}\t{max}\t{note}")
            });
        if let Err(error) = appended {
            println!("(cannot append to BENCH_REPORT {path}: {error})");
        }
    }
}

/// Prints a benchmark's title and the column names.
pub fn title(text: &str) {
    println!();
    println!("{text}");
    println!(
        "{:<52} {:>10} {:>10} {:>10} {:>10}  notes",
        "case", "rate", "p50", "p99", "max"
    );
}

/// The resident memory of process `pid` in MiB (Linux), if it can be read.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_take_nearest_ranks_and_count_stalls() {
        let latencies: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let figures = Figures::of(latencies, Duration::from_secs(2));
        assert_eq!(figures.calls, 100);
        assert!((figures.per_second - 50.0).abs() < 1e-9);
        assert_eq!(figures.p50, Duration::from_millis(51));
        assert_eq!(figures.p99, Duration::from_millis(99));
        assert_eq!(figures.max, Duration::from_millis(100));
        assert_eq!(figures.stalls, 80, "21 ms to 100 ms");
    }

    #[test]
    fn this_process_has_a_resident_size() {
        let rss = rss_mib(std::process::id()).unwrap();
        assert!(rss > 0.5 && rss < 100_000.0, "{rss}");
    }
}
