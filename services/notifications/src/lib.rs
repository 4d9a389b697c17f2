//! Notifications service: stores in-app notifications for users and admins and serves them
//! over gRPC (`payouts.notifications.v1.NotificationsService`), and the critical alerts
//! every service raises. Owns `notifications` and `criticalAlerts` (the email outbox arrives
//! with balance monitoring).
//!
//! - [`domain`]: notifications as values, pure.
//! - [`alerts`]: critical alerts as values, pure.
//! - [`store`]: the repository trait, its MongoDB and embedded implementations.
//! - [`grpc`]: the gRPC surface.

pub mod alerts;
pub mod domain;
pub mod grpc;
pub mod store;

use std::sync::Arc;

use payouts_runtime::ServiceContext;
use payouts_runtime::grpc::GrpcServer;

/// Builds the service on the context's store and adds it to `server`.
pub async fn mount(context: &ServiceContext, server: &mut GrpcServer) -> anyhow::Result<()> {
    let repositories = store::open(&context.store).await?;
    let service = grpc::NotificationsGrpc::new(
        repositories,
        Arc::clone(&context.clock),
        Arc::clone(&context.ids),
        context.settings.admin_user_ids.clone(),
    );
    server.add_service(grpc::server(service));
    Ok(())
}
