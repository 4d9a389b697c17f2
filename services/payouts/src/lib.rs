//! Payouts service (`payouts.payouts.v1.PayoutsService`): creator accounts, payout requests,
//! Stripe transfers and the payout lifecycle. Owns `accounts` (and, as the payout flow lands,
//! `usdPayouts` and `payoutAuditLogs`).
//!
//! - [`domain`]: accounts as values, pure.
//! - [`store`]: the repository trait, its MongoDB and embedded implementations.
//! - [`grpc`]: the gRPC surface.

pub mod domain;
pub mod grpc;
pub mod store;

use std::sync::Arc;

use payouts_runtime::ServiceContext;
use payouts_runtime::grpc::GrpcServer;

/// Builds the service on the context's store and adds it to `server`.
pub async fn mount(context: &ServiceContext, server: &mut GrpcServer) -> anyhow::Result<()> {
    let accounts = store::open(&context.store).await?;
    server.add_service(grpc::server(grpc::PayoutsGrpc::new(
        accounts,
        Arc::clone(&context.clock),
    )));
    Ok(())
}
