//! Stripe, as the payout flow needs it: create a transfer under an idempotency key, look a
//! transfer up by its transfer group, and classify every failure as permanent, retryable or
//! unknown. The real client is async-stripe pointed at `STRIPE_API_BASE`.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use payouts_runtime::{Money, Secret};
use stripe::{IdempotencyKey, RequestStrategy, StripeError, StripeRequest as _};
use stripe_connect::transfer::{CreateTransfer, ListTransfer};

use crate::payout::{TransferFailure, is_retryable_code};

/// A transfer to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRequest {
    pub payout_id: String,
    pub user_id: String,
    pub amount: Money,
    pub destination: String,
    pub idempotency_key: String,
    pub transfer_group: String,
}

/// The Stripe calls the payout flow makes.
#[async_trait]
pub trait StripeTransfers: Send + Sync + 'static {
    /// Creates the transfer; the same idempotency key never creates a second one.
    async fn create_transfer(&self, request: &TransferRequest) -> Result<String, TransferFailure>;

    /// The ids of the transfers in `transfer_group` that were not fully reversed.
    async fn find_transfers(&self, transfer_group: &str) -> Result<Vec<String>, TransferFailure>;
}

/// async-stripe against `STRIPE_API_BASE`.
pub struct StripeClient {
    client: stripe::Client,
}

impl StripeClient {
    pub fn new(secret_key: &Secret, api_base: &str) -> anyhow::Result<Self> {
        let client = stripe::ClientBuilder::new(secret_key.expose())
            .url(format!("{api_base}/"))
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|error| anyhow::anyhow!("invalid Stripe configuration: {error}"))?;
        Ok(Self { client })
    }
}

/// How a Stripe error is treated.
pub fn classify(error: StripeError) -> TransferFailure {
    match error {
        StripeError::Stripe(errors, status) => {
            let code = errors
                .code
                .as_ref()
                .map(|code| code.as_str().to_owned())
                .unwrap_or_else(|| match status {
                    429 => "rate_limit".to_owned(),
                    500.. => "api_error".to_owned(),
                    _ => format!("http_{status}"),
                });
            let message = errors.message.clone().unwrap_or_default();
            if status == 429 || status >= 500 || is_retryable_code(&code) {
                TransferFailure::Retryable { code, message }
            } else {
                TransferFailure::Permanent { code, message }
            }
        }
        // No answer, or one we could not read: the transfer may exist.
        StripeError::ClientError(message) | StripeError::JSONDeserialize(message) => {
            TransferFailure::Unknown { message }
        }
        StripeError::Timeout => TransferFailure::Unknown {
            message: "timeout communicating with Stripe".to_owned(),
        },
        StripeError::ConfigError(message) => TransferFailure::Permanent {
            code: "configuration".to_owned(),
            message,
        },
    }
}

#[async_trait]
impl StripeTransfers for StripeClient {
    async fn create_transfer(&self, request: &TransferRequest) -> Result<String, TransferFailure> {
        let currency: stripe_types::Currency =
            request
                .amount
                .currency
                .as_str()
                .parse()
                .map_err(|_| TransferFailure::Permanent {
                    code: "invalid_currency".to_owned(),
                    message: format!("Stripe does not know currency {}", request.amount.currency),
                })?;
        let key = IdempotencyKey::new(&request.idempotency_key).map_err(|error| {
            TransferFailure::Permanent {
                code: "idempotency_key".to_owned(),
                message: error.to_string(),
            }
        })?;
        let metadata = HashMap::from([
            ("payout_id".to_owned(), request.payout_id.clone()),
            ("user_id".to_owned(), request.user_id.clone()),
        ]);
        let transfer = CreateTransfer::new(currency, request.destination.clone())
            .amount(request.amount.cents)
            .metadata(metadata)
            .transfer_group(request.transfer_group.clone())
            .description(format!("Payout {}", request.payout_id))
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key))
            .send(&self.client)
            .await
            .map_err(classify)?;
        Ok(transfer.id.as_str().to_owned())
    }

    async fn find_transfers(&self, transfer_group: &str) -> Result<Vec<String>, TransferFailure> {
        let transfers = ListTransfer::new()
            .transfer_group(transfer_group)
            .limit(10)
            .send(&self.client)
            .await
            .map_err(classify)?;
        Ok(transfers
            .data
            .into_iter()
            .filter(|transfer| transfer.amount_reversed < transfer.amount)
            .map(|transfer| transfer.id.as_str().to_owned())
            .collect())
    }
}
