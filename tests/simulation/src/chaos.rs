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

    /// Counts a fault the scheduler chose as a step (an outage, an admin's repeated
    /// request), without drawing from the generator.
    pub fn count(&self, kind: &'static str) {
        *self.lock().injected.entry(kind).or_default() += 1;
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

/// Owner services down for a while: an outage, not a blip. Every call to a service that is
/// down fails as unavailable until it is back. Outages last longer than the old parking
/// window of the webhook inbox (5 attempts, 30 s doubling: about 7.5 minutes), so an event
/// that counted "unavailable" toward parking would park during one.
#[derive(Clone, Default)]
pub struct Outages {
    down: Arc<Mutex<BTreeMap<&'static str, chrono::DateTime<chrono::Utc>>>>,
}

impl Outages {
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, chrono::DateTime<chrono::Utc>>> {
        self.down
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `service` is down until `until`.
    pub fn start(&self, service: &'static str, until: chrono::DateTime<chrono::Utc>) {
        let mut down = self.lock();
        let entry = down.entry(service).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Whether calls to `service` ("disputes", "payouts", ...) fail at `now`.
    pub fn is_down(&self, service: &str, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.lock()
            .iter()
            .any(|(name, until)| *name == service && now < *until)
    }

    /// Every outage over (the drain).
    pub fn end_all(&self) {
        self.lock().clear();
    }
}
