//! Limits service (`payouts.limits.v1.PayoutLimitsService`): payout limits and fraud checks
//! (design §6) and atomic admission. Owns `payoutBlockedAttempts` and `payoutQuotas`.
//!
//! - [`domain`]: the limit configuration, flags, blocked attempts, pure.
//! - [`checks`]: the seven checks, admission and release over a quota document, pure.
//! - [`store`]: the repository traits, their MongoDB and embedded implementations.
//! - [`admission`]: validation and compare-and-set admission against the store.
//! - [`grpc`]: the gRPC surface.

pub mod admission;
pub mod checks;
pub mod domain;
pub mod grpc;
pub mod store;

use std::sync::Arc;

use payouts_runtime::ServiceContext;
use payouts_runtime::grpc::GrpcServer;

/// Builds the service on the context's store and adds it to `server`.
pub async fn mount(context: &ServiceContext, server: &mut GrpcServer) -> anyhow::Result<()> {
    let repositories = store::open(&context.store).await?;
    let config = domain::LimitConfig::from_overrides(&context.settings.payout_limit_overrides)?;
    let limits = admission::Limits::new(
        config,
        repositories.quotas,
        repositories.blocked_attempts,
        Arc::new(admission::GrpcContext::new(&context.settings)?),
        Arc::clone(&context.clock),
        Arc::clone(&context.ids),
    );
    server.add_service(grpc::server(grpc::LimitsGrpc::new(Arc::new(limits))));
    Ok(())
}
