//! Webhooks service: the durable inbox of Stripe events (`payouts.webhooks.v1.WebhooksService`).
//! Owns the `processedWebhookEvents` collection.
//!
//! - [`domain`]: inbox events and their states, pure.
//! - [`store`]: the repository trait, its MongoDB and embedded implementations.
//! - [`grpc`]: the gRPC surface.

pub mod domain;
pub mod grpc;
pub mod store;

use payouts_runtime::ServiceContext;
use payouts_runtime::grpc::GrpcServer;

/// Builds the service on the context's store and adds it to `server`.
pub async fn mount(context: &ServiceContext, server: &mut GrpcServer) -> anyhow::Result<()> {
    let repository = store::open(&context.store).await?;
    server.add_service(grpc::server(grpc::WebhooksGrpc::new(repository)));
    Ok(())
}
