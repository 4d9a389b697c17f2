//! Stripe events the payouts service owns: `transfer.*`, `payout.*` (the creator's bank
//! payouts, from connected accounts, attributed in [`crate::attribution`]) and
//! `account.updated`. Each is idempotent on the event
//! id, acts only on the transfer it names, and never moves a payout backwards.

use payouts_runtime::{ErrorKind, ServiceError};
use serde_json::Value;

use crate::domain::{Account, StripeAccountStatus};
use crate::flow::PayoutFlow;
use crate::payout::{Cause, Payout, PayoutStatus, TransferNews};
use crate::ports::UserNotice;
use crate::stripe::{account_status_from_json, seen_from_json};

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub applied: bool,
    pub detail: String,
}

pub(crate) fn applied(detail: impl Into<String>) -> Applied {
    Applied {
        applied: true,
        detail: detail.into(),
    }
}

pub(crate) fn ignored(detail: impl Into<String>) -> Applied {
    Applied {
        applied: false,
        detail: detail.into(),
    }
}

/// The parts of an event the handlers read.
pub struct Event<'a> {
    pub id: &'a str,
    pub event_type: &'a str,
    /// Connected account for Connect events.
    pub account: Option<&'a str>,
    /// Stripe's `created` (unix seconds): orders events about one object.
    pub created: i64,
    pub object: Value,
}

impl<'a> Event<'a> {
    pub fn parse(
        id: &'a str,
        event_type: &'a str,
        account: &'a str,
        created: i64,
        payload: &[u8],
    ) -> Result<Self, ServiceError> {
        /// Only `data.object` is read: the rest of the event is skipped, not built.
        #[derive(serde::Deserialize)]
        struct Envelope {
            data: Option<Data>,
        }
        #[derive(serde::Deserialize)]
        struct Data {
            object: Option<Value>,
        }
        let event: Envelope = serde_json::from_slice(payload).map_err(|error| {
            ServiceError::invalid_argument(format!("event payload is not JSON: {error}"))
        })?;
        let object = event
            .data
            .and_then(|data| data.object)
            .filter(Value::is_object)
            .ok_or_else(|| ServiceError::invalid_argument("event payload has no data.object"))?;
        Ok(Self {
            id,
            event_type,
            account: Some(account).filter(|account| !account.is_empty()),
            created,
            object,
        })
    }

    pub(crate) fn str(&self, field: &str) -> Option<&str> {
        self.object.get(field).and_then(Value::as_str)
    }

    pub(crate) fn actor(&self) -> String {
        format!("stripe:{}", self.id)
    }
}

impl PayoutFlow {
    /// Applies one Stripe event. Retried by the webhook inbox on error, so every path is
    /// idempotent.
    pub async fn handle_event(&self, event: &Event<'_>) -> Result<Applied, ServiceError> {
        match event.event_type {
            "transfer.created" | "transfer.updated" | "transfer.paid" | "transfer.failed"
            | "transfer.reversed" => self.handle_transfer(event).await,
            "payout.created"
            | "payout.updated"
            | "payout.paid"
            | "payout.failed"
            | "payout.canceled"
            | "payout.reconciliation_completed" => self.handle_bank_payout(event).await,
            "account.updated" => self.handle_account(event).await,
            other => Ok(ignored(format!("{other} is not a payouts event"))),
        }
    }

    /// The payout a transfer belongs to: its metadata, its transfer group, or its id.
    async fn payout_of_transfer(&self, event: &Event<'_>) -> Result<Option<Payout>, ServiceError> {
        if let Some(payout_id) = event
            .object
            .pointer("/metadata/payout_id")
            .and_then(Value::as_str)
            && let Some(payout) = self.payouts.get(payout_id).await?
        {
            return Ok(Some(payout));
        }
        if let Some(payout_id) = event
            .str("transfer_group")
            .and_then(|group| group.strip_prefix("payout_"))
            && let Some(payout) = self.payouts.get(payout_id).await?
        {
            return Ok(Some(payout));
        }
        match event.str("id") {
            Some(transfer_id) => self.payouts.find_by_transfer(transfer_id).await,
            None => Ok(None),
        }
    }

    async fn handle_transfer(&self, event: &Event<'_>) -> Result<Applied, ServiceError> {
        let Some(seen) = seen_from_json(&event.object) else {
            return Err(ServiceError::invalid_argument(
                "a transfer event without a transfer id",
            ));
        };
        let Some(payout) = self.payout_of_transfer(event).await? else {
            return Ok(ignored("transfer of no known payout"));
        };
        let news = match event.event_type {
            // Legacy events (API versions before 2017-04-06 / removed from SDKs in 2022).
            "transfer.paid" => TransferNews::Paid,
            "transfer.failed" => TransferNews::Failed {
                code: event
                    .str("failure_code")
                    .unwrap_or("transfer_failed")
                    .to_owned(),
                message: event.str("failure_message").unwrap_or_default().to_owned(),
            },
            "transfer.reversed" => TransferNews::Reversed,
            _ => TransferNews::Exists,
        };
        let actor = event.actor();
        let now = self.clock.now();
        let retry_base = self.retry_base;
        let updated = self
            .apply(payout, |p| {
                p.transfer_seen(
                    &seen,
                    &news,
                    retry_base,
                    Cause::event(&actor, event.id, now),
                )
            })
            .await?;
        Ok(match updated {
            Some(updated) => {
                match updated.status {
                    PayoutStatus::Completed => self.after_completion(&updated),
                    PayoutStatus::Failed => self.after_failure(&updated),
                    _ => {}
                }
                applied(format!(
                    "payout {} is {}",
                    updated.id,
                    updated.status.as_str()
                ))
            }
            None => ignored("late, duplicate or out-of-order event: nothing changed"),
        })
    }

    async fn handle_account(&self, event: &Event<'_>) -> Result<Applied, ServiceError> {
        let stripe_account_id = event.str("id").unwrap_or_default();
        let status = StripeAccountStatus {
            updated_at: chrono::DateTime::from_timestamp(event.created, 0)
                .or(Some(self.clock.now())),
            ..account_status_from_json(&event.object)
        };
        for _ in 0..8 {
            let Some(account) = self
                .accounts
                .find_by_stripe_account(stripe_account_id)
                .await?
            else {
                return Ok(ignored(format!(
                    "no creator has connected account {stripe_account_id}"
                )));
            };
            // Stripe does not order events: an older snapshot never replaces a newer one.
            if let (Some(known), Some(incoming)) = (
                account.stripe_status.as_ref().and_then(|s| s.updated_at),
                status.updated_at,
            ) && incoming < known
            {
                return Ok(ignored("an older account snapshot than the one we have"));
            }
            // Unknown is not "enabled": a first status that is disabled is news for the user.
            let was_disabled = account
                .stripe_status
                .as_ref()
                .is_some_and(|s| !s.payouts_enabled);
            let updated = Account {
                stripe_status: Some(status.clone()),
                version: account.version + 1,
                ..account.clone()
            };
            match self.accounts.put(&updated, Some(account.version)).await {
                Ok(()) => {
                    if !was_disabled && !status.payouts_enabled {
                        self.notifier.notify(UserNotice {
                            user_id: account.user_id.clone(),
                            kind: "payout_account_disabled",
                            title: "Bank account verification needed".to_owned(),
                            body: "Payouts are paused until Stripe has the details it needs."
                                .to_owned(),
                            metadata_json: serde_json::json!({
                                "stripeAccountId": stripe_account_id,
                                "requirementsCurrentlyDue": status.requirements_currently_due,
                            })
                            .to_string(),
                            dedupe_key: format!("{stripe_account_id}:disabled:{}", event.id),
                        });
                    }
                    return Ok(applied(format!("account of {} updated", account.user_id)));
                }
                Err(error) if error.kind() == ErrorKind::Conflict => {}
                Err(error) => return Err(error),
            }
        }
        Err(ServiceError::conflict(
            "account keeps changing; the event will be retried",
        ))
    }
}
