//! The seeded source of every decision the simulation makes, and the fault switches.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use payouts_runtime::ServiceError;

struct State {
    rng: fastrand::Rng,
    faults: bool,
    injected: BTreeMap<&'static str, u64>,
}

/// One seeded generator shared by the scheduler and every stand-in: the same seed makes
/// the same choices in the same order.
#[derive(Clone)]
pub struct Chaos {
    state: Arc<Mutex<State>>,
}

impl Chaos {
    pub fn new(seed: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                rng: fastrand::Rng::with_seed(seed),
                faults: true,
                injected: BTreeMap::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            self.lock().rng.usize(0..n)
        }
    }

    /// A number in `low..=high`.
    pub fn between(&self, low: i64, high: i64) -> i64 {
        self.lock().rng.i64(low..=high)
    }

    /// True `per_mille` times in a thousand.
    pub fn chance(&self, per_mille: u32) -> bool {
        self.lock().rng.u32(0..1000) < per_mille
    }

    /// Whether to inject the fault `kind` now (never once faults are off).
    pub fn fault(&self, kind: &'static str, per_mille: u32) -> bool {
        let mut state = self.lock();
        if !state.faults {
            return false;
        }
        let hit = state.rng.u32(0..1000) < per_mille;
        if hit {
            *state.injected.entry(kind).or_default() += 1;
        }
        hit
    }

    pub fn set_faults(&self, on: bool) {
        self.lock().faults = on;
    }

    pub fn faults_on(&self) -> bool {
        self.lock().faults
    }

    /// How many faults of each kind were injected.
    pub fn injected(&self) -> BTreeMap<&'static str, u64> {
        self.lock().injected.clone()
    }
}

/// The error a stand-in returns for a dependency that did not answer.
pub fn unavailable(what: &str) -> ServiceError {
    ServiceError::unavailable(
        format!("{what} is unavailable"),
        std::io::Error::other("simulated fault"),
    )
}
