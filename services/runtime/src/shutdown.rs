//! Graceful shutdown: resolves on SIGTERM (Kubernetes) or Ctrl-C, or when asked to.

use tokio::sync::watch;

/// A shutdown signal that many servers can wait on.
#[derive(Clone, Debug)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
}

/// Triggers a [`Shutdown`] by hand (tests, or a server that failed).
#[derive(Clone, Debug)]
pub struct ShutdownTrigger {
    sender: std::sync::Arc<watch::Sender<bool>>,
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.sender.send_replace(true);
    }
}

impl Shutdown {
    /// A shutdown that only a trigger ends.
    pub fn manual() -> (Shutdown, ShutdownTrigger) {
        let (sender, receiver) = watch::channel(false);
        (
            Shutdown { receiver },
            ShutdownTrigger {
                sender: std::sync::Arc::new(sender),
            },
        )
    }

    /// A shutdown ended by SIGTERM, Ctrl-C or the returned trigger.
    pub fn on_signals() -> (Shutdown, ShutdownTrigger) {
        let (shutdown, trigger) = Self::manual();
        let signal_trigger = trigger.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received; finishing in-flight requests");
            signal_trigger.trigger();
        });
        (shutdown, trigger)
    }

    /// Whether shutdown has been requested.
    pub fn is_requested(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Resolves once shutdown has been requested.
    pub async fn requested(mut self) {
        // An error means every trigger is gone: nothing can ask any more, so shut down.
        let _ = self.receiver.wait_for(|requested| *requested).await;
    }
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
