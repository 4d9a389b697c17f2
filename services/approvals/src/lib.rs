//! Approvals service (`payouts.approvals.v1.ApprovalsService`): the admin approval workflow
//! (design §7). Owns `payoutApprovalQueue`.
//!
//! - [`domain`]: approvals and the decision rules, pure.
//! - [`store`]: the repository trait, its MongoDB and embedded implementations.
//! - [`workflow`]: queueing, deciding once, carrying decisions out.
//! - [`grpc`]: the gRPC surface.

pub mod domain;
pub mod grpc;
pub mod store;
pub mod workflow;

use std::sync::Arc;

use payouts_runtime::ServiceContext;
use payouts_runtime::grpc::GrpcServer;

/// Builds the service on the context's store, starts its worker, and adds it to `server`.
pub async fn mount(context: &ServiceContext, server: &mut GrpcServer) -> anyhow::Result<()> {
    let workflow = Arc::new(workflow::Workflow {
        approvals: store::open(&context.store).await?,
        payouts: Arc::new(workflow::GrpcPayouts::new(&context.settings)?),
        notifier: Arc::new(workflow::GrpcAdminNotifier::new(&context.settings)?),
        clock: Arc::clone(&context.clock),
        poll_interval: context.settings.payout_poll_interval,
        dual_control_above_cents: context.settings.approval_dual_control_cents,
    });
    context.spawn_worker(
        payouts_runtime::ServiceName::Approvals.grpc_name(),
        "approval hand-offs",
        Arc::clone(&workflow).run_worker(context.shutdown.clone()),
    );
    server.add_service(grpc::server(grpc::ApprovalsGrpc::new(workflow)));
    Ok(())
}
