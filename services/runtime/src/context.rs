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
    /// Services that cannot work (shared with the gRPC server's health reporting).
    pub readiness: crate::grpc::Readiness,
}

impl ServiceContext {
    pub fn new(settings: Arc<Settings>, store: Store, shutdown: Shutdown) -> Self {
        Self {
            settings,
            store,
            clock: Arc::new(SystemClock),
            ids: Arc::new(UuidIds),
            shutdown,
            readiness: crate::grpc::Readiness::default(),
        }
    }

    /// Runs a service's background worker. If it stops (returns or panics) before shutdown,
    /// the service (`service`: its gRPC name) reports NOT_SERVING from then on: a payout
    /// worker that died must not leave a pod that looks healthy and moves no money.
    pub fn spawn_worker<F>(&self, service: &'static str, worker: &'static str, future: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let readiness = self.readiness.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let outcome = tokio::spawn(future).await;
            if shutdown.is_requested() {
                return;
            }
            let reason = match outcome {
                Ok(()) => format!("background worker {worker} stopped"),
                Err(error) if error.is_panic() => format!("background worker {worker} panicked"),
                Err(_) => format!("background worker {worker} was cancelled"),
            };
            tracing::error!(service, worker, reason = %reason, "a background worker died; the service reports NOT_SERVING");
            readiness.mark(service, reason);
        });
    }

    /// The same context with another clock (tests move time by hand).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}
