//! What a service is built from: settings, its store, and a clock.

use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::ids::{IdSource, UuidIds};
use crate::shutdown::Shutdown;
use crate::store::Store;

/// Everything a service's `build` function needs from the process.
#[derive(Clone, Debug)]
pub struct ServiceContext {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    /// Where new ids come from.
    pub ids: Arc<dyn IdSource>,
    /// Background workers stop when this resolves.
    pub shutdown: Shutdown,
}

impl ServiceContext {
    pub fn new(settings: Arc<Settings>, store: Store, shutdown: Shutdown) -> Self {
        Self {
            settings,
            store,
            clock: Arc::new(SystemClock),
            ids: Arc::new(UuidIds),
            shutdown,
        }
    }

    /// The same context with another clock (tests move time by hand).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}
