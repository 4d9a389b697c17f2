//! Disputes service (`payouts.disputes.v1.DisputesService`): creator allocations (earnings)
//! and the effect of refunds and disputes on them (design §3). Owns `usdAllocations`,
//! `creatorEarnings` and `chargeCases`.
//!
//! - [`domain`]: allocations and earnings books, pure.
//! - [`charges`]: what refunds and disputes do to a charge's allocations, pure.
//! - [`earnings`]: recording allocations and reading earnings through the books.
//! - [`cases`]: applying refund and dispute events (merge, settle, notify).
//! - [`ports`]: the notifications service and Stripe's refund lists and charges.
//! - [`split`]: exact proportional reductions (largest remainder), pure.
//! - [`store`]: the repository traits, their MongoDB and embedded implementations.
//! - [`grpc`]: the gRPC surface.

pub mod cases;
pub mod charges;
pub mod domain;
pub mod earnings;
pub mod grpc;
pub mod metrics_refresh;
pub mod ports;
pub mod split;
pub mod store;

use std::sync::Arc;

use payouts_runtime::ServiceContext;
use payouts_runtime::grpc::GrpcServer;

/// Builds the service on the context's store and adds it to `server`.
pub async fn mount(context: &ServiceContext, server: &mut GrpcServer) -> anyhow::Result<()> {
    let repositories = store::open(&context.store).await?;
    let ledger = Arc::new(earnings::Ledger {
        allocations: repositories.allocations,
        books: repositories.books,
        clock: Arc::clone(&context.clock),
    });
    let cases = cases::Cases {
        ledger: Arc::clone(&ledger),
        cases: Arc::clone(&repositories.cases),
        notices: Arc::new(ports::GrpcNotices::new(&context.settings)?),
        refunds: refunds_port(&context.settings)?,
    };
    context.spawn_worker(
        payouts_runtime::ServiceName::Disputes.grpc_name(),
        "dispute figures",
        metrics_refresh::run(
            Arc::clone(&ledger),
            repositories.cases,
            context.shutdown.clone(),
        ),
    );
    server.add_service(grpc::server(grpc::DisputesGrpc::new(cases)));
    Ok(())
}

/// Stripe's refund lists and charges through `STRIPE_SECRET_KEY` and `STRIPE_API_BASE`;
/// without a key, none (a charge whose refunds are in doubt stays reduced by what its events
/// said; a refund of a charge whose amount no event told waits, Unavailable).
fn refunds_port(
    settings: &payouts_runtime::config::Settings,
) -> anyhow::Result<Option<Arc<dyn ports::StripeRefunds>>> {
    Ok(match &settings.stripe_secret_key {
        Some(key) => Some(Arc::new(ports::StripeRefundsClient::new(
            key,
            &settings.stripe_api_base,
        )?)),
        None => {
            tracing::warn!(
                "refunds in doubt are not checked with Stripe: STRIPE_SECRET_KEY is not set"
            );
            None
        }
    })
}
