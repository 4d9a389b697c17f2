//! Disputes service (`payouts.disputes.v1.DisputesService`): creator allocations (earnings)
//! and the effect of refunds and disputes on them (spec §3). Owns `usdAllocations`.
//!
//! - [`domain`]: allocations and earnings books, pure.
//! - [`earnings`]: recording allocations and reading earnings through the books.
//! - [`split`]: exact proportional reductions (largest remainder), pure.
//! - [`store`]: the repository traits, their MongoDB and embedded implementations.
//! - [`grpc`]: the gRPC surface.

pub mod domain;
pub mod earnings;
pub mod grpc;
pub mod split;
pub mod store;

use std::sync::Arc;

use payouts_runtime::ServiceContext;
use payouts_runtime::grpc::GrpcServer;

/// Builds the service on the context's store and adds it to `server`.
pub async fn mount(context: &ServiceContext, server: &mut GrpcServer) -> anyhow::Result<()> {
    let repositories = store::open(&context.store).await?;
    server.add_service(grpc::server(grpc::DisputesGrpc::new(earnings::Ledger {
        allocations: repositories.allocations,
        books: repositories.books,
        clock: Arc::clone(&context.clock),
    })));
    Ok(())
}
