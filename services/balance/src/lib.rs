//! Balance service (`payouts.balance.v1.BalanceService`): platform balance monitoring
//! (spec §5). Owns `platformBalanceSnapshots`.
//!
//! - [`domain`]: snapshots and threshold statuses, pure.
//! - [`store`]: the repository trait, its MongoDB and embedded implementations.
//! - [`grpc`]: the gRPC surface.

pub mod domain;
pub mod grpc;
pub mod store;

use payouts_runtime::ServiceContext;
use payouts_runtime::grpc::GrpcServer;

/// Builds the service on the context's store and adds it to `server`.
pub async fn mount(context: &ServiceContext, server: &mut GrpcServer) -> anyhow::Result<()> {
    let snapshots = store::open(&context.store).await?;
    server.add_service(grpc::server(grpc::BalanceGrpc::new(snapshots)));
    Ok(())
}
