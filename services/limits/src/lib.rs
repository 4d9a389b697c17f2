//! Limits service (`payouts.limits.v1.PayoutLimitsService`): payout limits and fraud checks
//! (spec §6). Owns `payoutBlockedAttempts` (and, as admission lands, the per-user quota state).
//!
//! - [`domain`]: the limit configuration and blocked attempts, pure.
//! - [`store`]: the repository trait, its MongoDB and embedded implementations.
//! - [`grpc`]: the gRPC surface.

pub mod domain;
pub mod grpc;
pub mod store;

use payouts_runtime::ServiceContext;
use payouts_runtime::grpc::GrpcServer;

/// Builds the service on the context's store and adds it to `server`.
pub async fn mount(context: &ServiceContext, server: &mut GrpcServer) -> anyhow::Result<()> {
    let blocked_attempts = store::open(&context.store).await?;
    let config = domain::LimitConfig::default();
    server.add_service(grpc::server(grpc::LimitsGrpc::new(
        config,
        blocked_attempts,
    )));
    Ok(())
}
