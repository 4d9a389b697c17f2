//! The gateway's accept loop: hyper's HTTP/1 server with a timer, so that a connection
//! which does not finish sending a request's headers within
//! `GATEWAY_HEADER_READ_TIMEOUT_SECONDS` is closed (without a timer hyper cannot enforce
//! that, and `axum::serve` sets none). The gateway speaks HTTP/1.1 only: no HTTP/2 streams to
//! bound (an ingress in front speaks HTTP/2 to browsers and HTTP/1.1 to us).

use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use payouts_runtime::shutdown::Shutdown;
use tokio::net::TcpListener;

/// Serves `router` on `listener` until `shutdown`, then lets the open connections finish
/// what they are serving (idle keep-alive connections close at once).
pub(crate) async fn serve(
    router: Router,
    listener: TcpListener,
    header_read_timeout: Duration,
    shutdown: Shutdown,
) {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    let stop = shutdown.requested();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        let mut stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // A connection reset before it was accepted is the peer's business; running out
                // of file descriptors is ours: wait a little rather than spin.
                tracing::warn!(%error, "gateway cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        payouts_runtime::grpc::set_nodelay(&mut stream);
        let connection = http1.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                // A header read timeout, a client gone mid-request: nothing to answer.
                tracing::debug!(%error, "gateway connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
}
