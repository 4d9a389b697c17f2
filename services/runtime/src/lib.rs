//! The small kit every Payouts service is built from.
//!
//! - [`config`]: settings from defaults, an optional file and the environment, validated at start.
//! - [`telemetry`]: tracing logs, OpenTelemetry export, W3C trace context across gRPC hops.
//! - [`grpc`]: the gRPC server bootstrap (health, reflection, graceful shutdown) and clients.
//! - [`error`]: one mapping from domain error kinds to gRPC codes and HTTP statuses.
//! - [`store`]: the storage connection (MongoDB or the embedded in-process store).
//! - [`money`]: integer minor units with a currency.
//! - [`context`]: what a service is built from (settings, store, clock).
//! - [`clock`]: injectable time, so domain logic and tests never read the wall clock directly.
//! - [`ids`]: injectable ids, so a simulation makes the same ids from the same seed.
//! - [`backoff`]: capped exponential retry delays with a deterministic jitter.
//! - [`jobs`]: periodic jobs one replica at a time runs, under a lease, with a durable cursor.

#![forbid(unsafe_code)]

pub mod authz;
pub mod backoff;
pub mod clock;
pub mod config;
pub mod context;
pub mod convert;
pub mod error;
pub mod grpc;
pub mod ids;
pub mod jobs;
pub mod money;
pub mod peers;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod tls;

#[cfg(feature = "fake-stripe")]
pub mod stripe_dev;
#[cfg(feature = "testing")]
pub mod testing;

pub use clock::{Clock, SystemClock};
pub use config::{Secret, ServiceName, Settings};
pub use context::ServiceContext;
pub use error::{ErrorKind, ServiceError};
pub use ids::{IdSource, UuidIds};
pub use money::{Currency, Money};
pub use store::Store;
