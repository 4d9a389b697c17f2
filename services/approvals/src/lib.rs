//! Approvals service (`payouts.approvals.v1.ApprovalsService`): the admin approval workflow
//! (spec §7). Owns `payoutApprovalQueue`.
//!
//! - [`domain`]: approvals and the decision rules, pure.
//! - [`store`]: the repository trait, its MongoDB and embedded implementations.
//! - [`grpc`]: the gRPC surface.

pub mod domain;
pub mod grpc;
pub mod store;

use payouts_runtime::ServiceContext;
use payouts_runtime::grpc::GrpcServer;

/// Builds the service on the context's store and adds it to `server`.
pub async fn mount(context: &ServiceContext, server: &mut GrpcServer) -> anyhow::Result<()> {
    let approvals = store::open(&context.store).await?;
    server.add_service(grpc::server(grpc::ApprovalsGrpc::new(approvals)));
    Ok(())
}
