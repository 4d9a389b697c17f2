//! Stripe, as the payouts service needs it: create a transfer under an idempotency key, look
//! transfers up by their transfer group, read a transfer, a connected account's status, and
//! which payments a creator's bank payout carried. Every failure is classified as a definite
//! refusal, refused credentials, or an unknown outcome (see [`crate::payout::StripeFailure`]).
//! The real client is async-stripe pointed at `STRIPE_API_BASE`.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use payouts_runtime::{Money, Secret};
use serde_json::Value;
use stripe::{AccountId, IdempotencyKey, RequestStrategy, StripeError, StripeRequest as _};
use stripe_client_core::{RequestBuilder, StripeMethod};
use stripe_connect::transfer::{CreateTransfer, ListTransfer, RetrieveTransfer};
use stripe_connect::transfer_reversal::CreateIdTransferReversal;

use chrono::{DateTime, Utc};

use crate::domain::StripeAccountStatus;
use crate::payout::{SeenTransfer, StripeFailure, is_retryable_code};
use crate::reconcile::ListedTransfer;

/// A transfer to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRequest {
    pub payout_id: String,
    pub user_id: String,
    pub attempt: u32,
    pub amount: Money,
    pub destination: String,
    pub idempotency_key: String,
    pub transfer_group: String,
}

/// A transfer reversal to create (an admin taking money back from a creator's account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReversalRequest {
    pub transfer_id: String,
    pub cents: i64,
    /// Derived from the intent and the transfer only
    /// ([`crate::payout::reversal_idempotency_key`]).
    pub idempotency_key: String,
    pub payout_id: String,
    pub actor: String,
    /// The admin's reversal intent, sent as metadata `payouts_reversal_intent`: how the
    /// listing finds the reversal after a lost answer.
    pub intent_id: String,
}

/// Metadata key of a reversal naming the admin's intent it was made for.
pub const REVERSAL_INTENT_METADATA: &str = "payouts_reversal_intent";

/// A transfer reversal as Stripe lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedReversal {
    pub id: String,
    pub cents: i64,
    /// The intent its metadata names (`payouts_reversal_intent`), if any.
    pub intent_id: Option<String>,
}

/// A reversal object of an answer or a list, as JSON.
pub fn reversal_from_json(reversal: &Value) -> Option<ListedReversal> {
    Some(ListedReversal {
        id: reversal.get("id")?.as_str()?.to_owned(),
        cents: reversal.get("amount")?.as_i64()?,
        intent_id: reversal
            .pointer(&format!("/metadata/{REVERSAL_INTENT_METADATA}"))
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// The Stripe calls the payouts service makes.
#[async_trait]
pub trait StripeApi: Send + Sync + 'static {
    /// Creates the transfer; the same idempotency key never creates a second one.
    async fn create_transfer(
        &self,
        request: &TransferRequest,
    ) -> Result<SeenTransfer, StripeFailure>;

    /// Every transfer in `transfer_group` (reversed ones included).
    async fn find_transfers(
        &self,
        transfer_group: &str,
    ) -> Result<Vec<SeenTransfer>, StripeFailure>;

    /// Reverses part of a transfer (`POST /v1/transfers/{id}/reversals`); the same key never
    /// reverses twice. The reversal's id.
    async fn reverse_transfer(&self, request: &ReversalRequest) -> Result<String, StripeFailure>;

    /// Every reversal of a transfer, every page (`GET /v1/transfers/{id}/reversals`).
    /// Implementations that cannot list answer an unknown outcome (nothing is concluded
    /// from it).
    async fn list_reversals(
        &self,
        transfer_id: &str,
    ) -> Result<Vec<ListedReversal>, StripeFailure> {
        Err(StripeFailure::Unknown {
            message: format!("the reversals of {transfer_id} cannot be listed here"),
        })
    }

    /// One transfer.
    async fn retrieve_transfer(&self, transfer_id: &str) -> Result<SeenTransfer, StripeFailure>;

    /// A connected account's status (`GET /v1/accounts/{id}`).
    async fn retrieve_account(
        &self,
        account_id: &str,
    ) -> Result<StripeAccountStatus, StripeFailure>;

    /// Every transfer created from `since` to `until` (both included), newest first, every
    /// page (`GET /v1/transfers?created[gte]=...&created[lte]=...`).
    async fn list_transfers(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<ListedTransfer>, StripeFailure>;

    /// A creator's bank payout (`GET /v1/payouts/{id}` with `Stripe-Account`): its status,
    /// whether it is automatic, and whether Stripe finished reconciling it.
    async fn retrieve_bank_payout(
        &self,
        account_id: &str,
        bank_payout_id: &str,
    ) -> Result<BankPayout, StripeFailure>;

    /// The sources ("py_..." payments, among others) of the balance transactions a bank
    /// payout of a connected account carried (`GET /v1/balance_transactions?payout=po_...`
    /// with `Stripe-Account`), every page.
    async fn bank_payout_sources(
        &self,
        account_id: &str,
        bank_payout_id: &str,
    ) -> Result<Vec<String>, StripeFailure>;
}

/// A creator's bank payout as Stripe shows it, the fields attribution reads
/// (<https://docs.stripe.com/api/payouts/object>).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankPayout {
    pub id: String,
    /// pending, in_transit, paid, failed, canceled.
    pub status: String,
    /// Made by Stripe's payout schedule; a manual payout (`false`) cannot have its balance
    /// transactions listed by payout.
    pub automatic: bool,
    /// not_applicable, in_progress, completed: its balance transactions are listed
    /// completely only once `completed`.
    pub reconciliation_status: String,
    pub failure_code: Option<String>,
}

impl BankPayout {
    pub fn reconciled(&self) -> bool {
        self.reconciliation_status == "completed"
    }
}

/// A bank payout from Stripe's JSON; a missing `automatic` is not taken for automatic, a
/// missing `reconciliation_status` not for completed. `None` without an id or status.
pub fn bank_payout_from_json(payout: &Value) -> Option<BankPayout> {
    let text = |field: &str| payout.get(field).and_then(Value::as_str).map(str::to_owned);
    Some(BankPayout {
        id: text("id")?,
        status: text("status")?,
        automatic: payout.get("automatic").and_then(Value::as_bool) == Some(true),
        reconciliation_status: text("reconciliation_status").unwrap_or_default(),
        failure_code: text("failure_code"),
    })
}

/// Whether `id` can be a bank payout id in a request path ("po_" and letters, digits, `_`).
pub fn is_bank_payout_id(id: &str) -> bool {
    id.strip_prefix("po_").is_some_and(|rest| {
        !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
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

    /// A GET of `path` as JSON, on behalf of a connected account when one is given.
    async fn get_json(
        &self,
        path: &str,
        query: &BTreeMap<&str, String>,
        account: Option<&str>,
    ) -> Result<Value, StripeFailure> {
        let mut builder = RequestBuilder::new(StripeMethod::Get, path);
        if !query.is_empty() {
            builder = builder.query(query);
        }
        let mut request = builder.customize::<miniserde::json::Value>();
        if let Some(account) = account {
            let account: AccountId = account.parse().map_err(|_| StripeFailure::Declined {
                code: "invalid_account".to_owned(),
                message: format!("{account:?} is not a Stripe account id"),
                retryable: false,
            })?;
            request = request.account_id(account);
        }
        let value = request.send(&self.client).await.map_err(classify)?;
        serde_json::from_str(&miniserde::json::to_string(&value)).map_err(|error| {
            StripeFailure::Unknown {
                message: format!("unreadable answer from Stripe: {error}"),
            }
        })
    }
}

/// How a Stripe error is treated. A 5xx, a timeout, an unreadable answer, a concurrent
/// request under the same key (409) or the same key with other parameters are *unknown*:
/// Stripe may have acted. 401/403 mean our credentials were refused: nothing was done. A 429
/// means this request was not executed (nothing is stored under its key). Every other 4xx
/// with its code is a definite refusal, the key's answer.
pub fn classify(error: StripeError) -> StripeFailure {
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
            let idempotency_error = errors.type_.as_str() == "idempotency_error";
            match status {
                500.. | 409 => StripeFailure::Unknown {
                    message: format!("Stripe answered {status} {code}: {message}"),
                },
                _ if idempotency_error => StripeFailure::Unknown {
                    message: format!("Stripe refused the idempotency key ({code}): {message}"),
                },
                401 | 403 => StripeFailure::Unauthorized { code, message },
                429 => StripeFailure::NotExecuted { code, message },
                _ => StripeFailure::Declined {
                    retryable: is_retryable_code(&code),
                    code,
                    message,
                },
            }
        }
        // No answer, or one we could not read: the transfer may exist.
        StripeError::ClientError(message) | StripeError::JSONDeserialize(message) => {
            StripeFailure::Unknown { message }
        }
        StripeError::Timeout => StripeFailure::Unknown {
            message: "timeout communicating with Stripe".to_owned(),
        },
        // The request could not even be built: nothing was sent, and nothing will be until
        // the configuration is fixed.
        StripeError::ConfigError(message) => StripeFailure::Unauthorized {
            code: "configuration".to_owned(),
            message,
        },
    }
}

fn seen(transfer: &stripe_shared::Transfer) -> SeenTransfer {
    SeenTransfer {
        id: transfer.id.as_str().to_owned(),
        attempt: transfer
            .metadata
            .get("attempt")
            .and_then(|attempt| attempt.parse().ok()),
        destination_payment: transfer
            .destination_payment
            .as_ref()
            .map(|payment| payment.id().as_str().to_owned()),
        amount_reversed_cents: transfer.amount_reversed,
        reversed: transfer.reversed,
    }
}

/// A transfer object of an event or an answer, as JSON.
pub fn seen_from_json(transfer: &Value) -> Option<SeenTransfer> {
    Some(SeenTransfer {
        id: transfer.get("id")?.as_str()?.to_owned(),
        attempt: transfer
            .pointer("/metadata/attempt")
            .and_then(Value::as_str)
            .and_then(|attempt| attempt.parse().ok()),
        destination_payment: transfer
            .get("destination_payment")
            .and_then(|payment| payment.as_str().or_else(|| payment.get("id")?.as_str()))
            .map(str::to_owned),
        amount_reversed_cents: transfer
            .get("amount_reversed")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        reversed: transfer.get("reversed").and_then(Value::as_bool) == Some(true),
    })
}

/// A transfer object of a list, with what reconciliation compares.
pub fn listed_from_json(transfer: &Value) -> Option<ListedTransfer> {
    let text = |name: &str| {
        transfer
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let payout_id = transfer
        .pointer("/metadata/payout_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            text("transfer_group")
                .and_then(|group| group.strip_prefix("payout_").map(str::to_owned))
        });
    Some(ListedTransfer {
        seen: seen_from_json(transfer)?,
        cents: transfer.get("amount")?.as_i64()?,
        currency: text("currency")?,
        destination: transfer
            .get("destination")
            .and_then(|d| d.as_str().or_else(|| d.get("id")?.as_str()))
            .unwrap_or_default()
            .to_owned(),
        payout_id,
        created: DateTime::from_timestamp(transfer.get("created")?.as_i64()?, 0)?,
    })
}

/// A connected account object as its status.
pub fn account_status_from_json(account: &Value) -> StripeAccountStatus {
    let flag = |name: &str| account.get(name).and_then(Value::as_bool).unwrap_or(false);
    StripeAccountStatus {
        charges_enabled: flag("charges_enabled"),
        payouts_enabled: flag("payouts_enabled"),
        details_submitted: flag("details_submitted"),
        requirements_currently_due: account
            .pointer("/requirements/currently_due")
            .and_then(Value::as_array)
            .map(|due| {
                due.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        updated_at: None,
    }
}

#[async_trait]
impl StripeApi for StripeClient {
    async fn create_transfer(
        &self,
        request: &TransferRequest,
    ) -> Result<SeenTransfer, StripeFailure> {
        let currency: stripe_types::Currency =
            request
                .amount
                .currency
                .as_str()
                .parse()
                .map_err(|_| StripeFailure::Declined {
                    code: "invalid_currency".to_owned(),
                    message: format!("Stripe does not know currency {}", request.amount.currency),
                    retryable: false,
                })?;
        let key = IdempotencyKey::new(&request.idempotency_key).map_err(|error| {
            StripeFailure::Unauthorized {
                code: "idempotency_key".to_owned(),
                message: error.to_string(),
            }
        })?;
        let metadata = HashMap::from([
            ("payout_id".to_owned(), request.payout_id.clone()),
            ("user_id".to_owned(), request.user_id.clone()),
            ("attempt".to_owned(), request.attempt.to_string()),
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
        Ok(seen(&transfer))
    }

    async fn find_transfers(
        &self,
        transfer_group: &str,
    ) -> Result<Vec<SeenTransfer>, StripeFailure> {
        let transfers = ListTransfer::new()
            .transfer_group(transfer_group)
            .limit(100)
            .send(&self.client)
            .await
            .map_err(classify)?;
        Ok(transfers.data.iter().map(seen).collect())
    }

    async fn reverse_transfer(&self, request: &ReversalRequest) -> Result<String, StripeFailure> {
        let key = IdempotencyKey::new(&request.idempotency_key).map_err(|error| {
            StripeFailure::Unauthorized {
                code: "idempotency_key".to_owned(),
                message: error.to_string(),
            }
        })?;
        let metadata = HashMap::from([
            ("payout_id".to_owned(), request.payout_id.clone()),
            ("requested_by".to_owned(), request.actor.clone()),
            (
                REVERSAL_INTENT_METADATA.to_owned(),
                request.intent_id.clone(),
            ),
        ]);
        let reversal = CreateIdTransferReversal::new(request.transfer_id.as_str())
            .amount(request.cents)
            .metadata(metadata)
            .customize()
            .request_strategy(RequestStrategy::Idempotent(key))
            .send(&self.client)
            .await
            .map_err(classify)?;
        Ok(reversal.id.to_string())
    }

    async fn list_reversals(
        &self,
        transfer_id: &str,
    ) -> Result<Vec<ListedReversal>, StripeFailure> {
        let path = format!("/transfers/{transfer_id}/reversals");
        let mut reversals: Vec<ListedReversal> = Vec::new();
        let mut query = BTreeMap::from([("limit", "100".to_owned())]);
        // Pages until Stripe says there are no more (bounded, in case it never does).
        for _ in 0..1_000 {
            let page = self.get_json(&path, &query, None).await?;
            let data = page
                .get("data")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for reversal in &data {
                reversals.push(reversal_from_json(reversal).ok_or_else(|| {
                    StripeFailure::Unknown {
                        message: "Stripe listed a reversal without id or amount".to_owned(),
                    }
                })?);
            }
            let more = page.get("has_more").and_then(Value::as_bool) == Some(true);
            match (more, reversals.last()) {
                (true, Some(last)) => {
                    query.insert("starting_after", last.id.clone());
                }
                _ => return Ok(reversals),
            }
        }
        Err(StripeFailure::Unknown {
            message: format!("the reversals of {transfer_id} never ended"),
        })
    }

    async fn retrieve_transfer(&self, transfer_id: &str) -> Result<SeenTransfer, StripeFailure> {
        let transfer = RetrieveTransfer::new(transfer_id)
            .send(&self.client)
            .await
            .map_err(classify)?;
        Ok(seen(&transfer))
    }

    async fn retrieve_account(
        &self,
        account_id: &str,
    ) -> Result<StripeAccountStatus, StripeFailure> {
        let account = self
            .get_json(&format!("/accounts/{account_id}"), &BTreeMap::new(), None)
            .await?;
        Ok(account_status_from_json(&account))
    }

    async fn list_transfers(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<ListedTransfer>, StripeFailure> {
        let mut transfers = Vec::new();
        let mut query = BTreeMap::from([
            ("created[gte]", since.timestamp().to_string()),
            ("created[lte]", until.timestamp().to_string()),
            ("limit", "100".to_owned()),
        ]);
        // Pages until Stripe says there are no more (bounded, in case it never does).
        for _ in 0..10_000 {
            let page = self.get_json("/transfers", &query, None).await?;
            let data = page
                .get("data")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for transfer in &data {
                transfers.push(listed_from_json(transfer).ok_or_else(|| {
                    StripeFailure::Unknown {
                        message: "Stripe listed a transfer without id, amount, currency or created"
                            .to_owned(),
                    }
                })?);
            }
            let more = page.get("has_more").and_then(Value::as_bool) == Some(true);
            match (more, transfers.last()) {
                (true, Some(last)) => {
                    query.insert("starting_after", last.seen.id.clone());
                }
                _ => return Ok(transfers),
            }
        }
        Err(StripeFailure::Unknown {
            message: "the transfer list never ended".to_owned(),
        })
    }

    async fn retrieve_bank_payout(
        &self,
        account_id: &str,
        bank_payout_id: &str,
    ) -> Result<BankPayout, StripeFailure> {
        if !is_bank_payout_id(bank_payout_id) {
            return Err(StripeFailure::Declined {
                code: "invalid_payout_id".to_owned(),
                message: format!("{bank_payout_id:?} is not a Stripe payout id"),
                retryable: false,
            });
        }
        let payout = self
            .get_json(
                &format!("/payouts/{bank_payout_id}"),
                &BTreeMap::new(),
                Some(account_id),
            )
            .await?;
        bank_payout_from_json(&payout).ok_or_else(|| StripeFailure::Unknown {
            message: format!("Stripe showed payout {bank_payout_id} without id or status"),
        })
    }

    async fn bank_payout_sources(
        &self,
        account_id: &str,
        bank_payout_id: &str,
    ) -> Result<Vec<String>, StripeFailure> {
        let mut sources = Vec::new();
        let mut query = BTreeMap::from([
            ("payout", bank_payout_id.to_owned()),
            ("limit", "100".to_owned()),
        ]);
        // Pages until Stripe says there are no more (bounded, in case it never does).
        for _ in 0..1_000 {
            let page = self
                .get_json("/balance_transactions", &query, Some(account_id))
                .await?;
            let data = page
                .get("data")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for transaction in &data {
                let source = transaction
                    .get("source")
                    .and_then(|source| source.as_str().or_else(|| source.get("id")?.as_str()));
                sources.extend(source.map(str::to_owned));
            }
            let more = page.get("has_more").and_then(Value::as_bool) == Some(true);
            let last = data
                .last()
                .and_then(|transaction| transaction.get("id"))
                .and_then(Value::as_str);
            match (more, last) {
                (true, Some(last)) => {
                    query.insert("starting_after", last.to_owned());
                }
                _ => return Ok(sources),
            }
        }
        Err(StripeFailure::Unknown {
            message: format!("balance transactions of {bank_payout_id} never ended"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_and_accounts_are_read_from_stripe_shapes() {
        let transfer = serde_json::json!({
            "id": "tr_1", "object": "transfer", "amount_reversed": 250,
            "destination_payment": "py_1", "metadata": { "payout_id": "p", "attempt": "2" }
        });
        assert_eq!(
            seen_from_json(&transfer),
            Some(SeenTransfer {
                id: "tr_1".to_owned(),
                attempt: Some(2),
                destination_payment: Some("py_1".to_owned()),
                amount_reversed_cents: 250,
                reversed: false,
            })
        );
        let expanded = serde_json::json!({ "id": "tr_2", "destination_payment": { "id": "py_2" } });
        assert_eq!(
            seen_from_json(&expanded)
                .unwrap()
                .destination_payment
                .as_deref(),
            Some("py_2")
        );
        let payout = serde_json::json!({
            "id": "po_1", "object": "payout", "status": "paid", "automatic": true,
            "reconciliation_status": "in_progress", "failure_code": null
        });
        let read = bank_payout_from_json(&payout).unwrap();
        assert!(read.automatic && !read.reconciled() && read.failure_code.is_none());
        let bare = bank_payout_from_json(&serde_json::json!({ "id": "po_2", "status": "paid" }));
        let bare = bare.unwrap();
        assert!(!bare.automatic && !bare.reconciled(), "never assumed");
        assert!(is_bank_payout_id("po_1Pgc79B7WZ01zgkW"));
        assert!(
            !is_bank_payout_id("po_1/../x")
                && !is_bank_payout_id("tr_1")
                && !is_bank_payout_id("po_")
        );
        let account = serde_json::json!({
            "id": "acct_1", "payouts_enabled": true,
            "requirements": { "currently_due": ["external_account"] }
        });
        let status = account_status_from_json(&account);
        assert!(status.payouts_enabled && !status.charges_enabled);
        assert_eq!(
            status.requirements_currently_due,
            vec!["external_account".to_owned()]
        );
    }
}
