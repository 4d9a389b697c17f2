//! Prometheus metrics: the `metrics` facade's recorder, rendered at `GET /metrics` on
//! METRICS_ADDR (one endpoint per process; every service's metrics in it).

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use payouts_runtime::shutdown::Shutdown;
use tokio::net::TcpListener;

/// Installs the process-wide recorder.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets(&[
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
        .map_err(|error| anyhow::anyhow!("metrics buckets: {error}"))?
        .install_recorder()
        .map_err(|error| anyhow::anyhow!("cannot install the metrics recorder: {error}"))
}

/// Serves `/metrics` until shutdown.
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let upkeep = handle.clone();
    let upkeep_task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    let router = Router::new().route("/metrics", get(move || std::future::ready(handle.render())));
    use axum::serve::ListenerExt as _;
    let served = axum::serve(listener.tap_io(payouts_runtime::grpc::set_nodelay), router)
        .with_graceful_shutdown(shutdown.requested())
        .await
        .map_err(|error| anyhow::anyhow!("metrics server failed: {error}"));
    upkeep_task.abort();
    served
}
