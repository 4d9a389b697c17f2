//! The gateway's accept loop: hyper's HTTP/1 server with a timer, so that a connection
//! which does not finish sending a request's headers within
//! `GATEWAY_HEADER_READ_TIMEOUT_SECONDS` is closed (without a timer hyper cannot enforce
//! that, and `axum::serve` sets none). The gateway speaks HTTP/1.1 only: no HTTP/2 streams to
//! bound (an ingress in front speaks HTTP/2 to browsers and HTTP/1.1 to us).
//!
//! Connections are bounded too, before any request is read: at most
//! `GATEWAY_MAX_CONNECTIONS` open at once and `GATEWAY_MAX_CONNECTIONS_PER_PEER` from one
//! address (an IPv6 /64 counts as one), so one client cannot exhaust the process's file
//! descriptors and leave probes, admins and the scheduler unable to connect. A connection
//! over either bound is closed at once (counted in
//! `payouts_http_connections_refused_total{reason}`). And a response the client does not read
//! is abandoned after [`WRITE_DEADLINE`]: a client that never reads cannot hold its
//! connection (and the response's memory) forever.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use payouts_runtime::peers::PeerBudget;
use payouts_runtime::shutdown::Shutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long a write may wait for the client to read before the connection is dropped.
pub(crate) const WRITE_DEADLINE: Duration = Duration::from_secs(30);

/// The bounds of the accept loop.
pub(crate) struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
}

/// Serves `router` on `listener` until `shutdown`, then lets the open connections finish
/// what they are serving (idle keep-alive connections close at once).
pub(crate) async fn serve(
    router: Router,
    listener: TcpListener,
    limits: Limits,
    shutdown: Shutdown,
) {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let peers = PeerBudget::new(limits.max_connections_per_peer);
    let stop = shutdown.requested();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        let (mut stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // A connection reset before it was accepted is the peer's business; running out
                // of file descriptors is ours: wait a little rather than spin.
                tracing::warn!(%error, "gateway cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            metrics::counter!("payouts_http_connections_refused_total", "reason" => "connections")
                .increment(1);
            continue;
        };
        let Ok(mut slot) = peers.admit(peer.ip()) else {
            metrics::counter!("payouts_http_connections_refused_total", "reason" => "peer_connections")
                .increment(1);
            continue;
        };
        // HTTP has no handshake of its own to bound: the slot counts the connection only.
        slot.handshake_done();
        payouts_runtime::grpc::set_nodelay(&mut stream);
        let connection = http1.serve_connection(
            TokioIo::new(WriteDeadline::new(stream, WRITE_DEADLINE)),
            TowerToHyperService::new(router.clone()),
        );
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                // A header read timeout, a client gone mid-request: nothing to answer.
                tracing::debug!(%error, "gateway connection ended with an error");
            }
            drop((permit, slot));
        });
    }
    drop(listener);
    connections.shutdown().await;
}

/// An IO whose writes fail with `TimedOut` once one has waited [`WRITE_DEADLINE`] for the
/// peer to make room (reads pass through: their deadlines are hyper's header-read timeout
/// and the request timeout).
pub(crate) struct WriteDeadline<T> {
    inner: T,
    limit: Duration,
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> WriteDeadline<T> {
    pub(crate) fn new(inner: T, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            waiting: None,
        }
    }

    /// After a write that could not proceed: pending until the deadline, then `TimedOut`.
    fn wait<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        let limit = self.limit;
        let waiting = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match waiting.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read the response in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed<R>(&mut self, ready: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        self.waiting = None;
        ready
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.wait(cx),
            ready => self.progressed(ready),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.wait(cx),
            ready => self.progressed(ready),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.wait(cx),
            ready => self.progressed(ready),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    /// A peer that never reads: the writer's buffer fills, and the deadline ends the write.
    #[tokio::test]
    async fn a_write_the_peer_never_reads_times_out() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let mut io = WriteDeadline::new(ours, Duration::from_millis(200));
        let error = io.write_all(&[0_u8; 4096]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
    }

    /// A peer that reads, slowly: every bit of progress restarts the deadline.
    #[tokio::test]
    async fn a_slow_reader_that_keeps_reading_is_served() {
        use tokio::io::AsyncReadExt as _;
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut io = WriteDeadline::new(ours, Duration::from_secs(5));
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            let mut chunk = [0_u8; 1024];
            while received.len() < 4096 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let n = theirs.read(&mut chunk).await.unwrap();
                received.extend_from_slice(&chunk[..n]);
            }
            received.len()
        });
        io.write_all(&[1_u8; 4096]).await.unwrap();
        assert_eq!(reader.await.unwrap(), 4096);
    }
}
