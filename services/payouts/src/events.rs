//! Stripe events the payouts service owns: `transfer.*`, `payout.*` (the creator's bank
//! payouts, from connected accounts) and `account.updated`. Each is idempotent on the event
//! id and never moves a payout backwards.

use payouts_runtime::{ErrorKind, ServiceError};
use serde_json::Value;

use crate::domain::{Account, StripeAccountStatus};
use crate::flow::PayoutFlow;
use crate::payout::{Payout, PayoutStatus, TransferFailure, Transition, is_retryable_code};
use crate::ports::UserNotice;

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub applied: bool,
    pub detail: String,
}

fn applied(detail: impl Into<String>) -> Applied {
    Applied {
        applied: true,
        detail: detail.into(),
    }
}

fn ignored(detail: impl Into<String>) -> Applied {
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
        let event: Value = serde_json::from_slice(payload).map_err(|error| {
            ServiceError::invalid_argument(format!("event payload is not JSON: {error}"))
        })?;
        let object = event
            .pointer("/data/object")
            .cloned()
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

    fn str(&self, field: &str) -> Option<&str> {
        self.object.get(field).and_then(Value::as_str)
    }

    fn actor(&self) -> String {
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
            "payout.created" | "payout.updated" | "payout.paid" | "payout.failed"
            | "payout.canceled" => self.handle_bank_payout(event).await,
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

    /// Applies `change` to the payout, retrying on concurrent writes with a fresh read.
    async fn apply(
        &self,
        payout: Payout,
        change: impl Fn(&Payout) -> Option<Transition>,
    ) -> Result<Option<Payout>, ServiceError> {
        let mut current = payout;
        for _ in 0..8 {
            let Some(transition) = change(&current) else {
                return Ok(None);
            };
            match self.commit(&current, transition).await {
                Ok(updated) => return Ok(Some(updated)),
                Err(error) if error.kind() == ErrorKind::Conflict => {
                    current = self.payouts.get(&current.id).await?.ok_or_else(|| {
                        ServiceError::not_found(format!("payout {} vanished", current.id))
                    })?;
                }
                Err(error) => return Err(error),
            }
        }
        Err(ServiceError::conflict(
            "payout keeps changing; the event will be retried",
        ))
    }

    async fn handle_transfer(&self, event: &Event<'_>) -> Result<Applied, ServiceError> {
        let Some(payout) = self.payout_of_transfer(event).await? else {
            return Ok(ignored("transfer of no known payout"));
        };
        let transfer_id = event.str("id").unwrap_or_default().to_owned();
        let actor = event.actor();
        let now = self.clock.now();
        let updated = match event.event_type {
            "transfer.created" | "transfer.updated" => {
                self.apply(payout, |p| {
                    p.transfer_created(&transfer_id, &actor, Some(event.id), now)
                })
                .await?
            }
            // Legacy events (API versions before 2017-04-06 / removed from SDKs in 2022).
            "transfer.paid" => {
                self.apply(payout, |p| p.paid(None, &actor, Some(event.id), now))
                    .await?
            }
            "transfer.failed" => {
                let code = event
                    .str("failure_code")
                    .unwrap_or("transfer_failed")
                    .to_owned();
                let message = event.str("failure_message").unwrap_or_default().to_owned();
                let failure = if is_retryable_code(&code) {
                    TransferFailure::Retryable { code, message }
                } else {
                    TransferFailure::Permanent { code, message }
                };
                self.apply(payout, |p| {
                    p.transfer_failed(&failure, self.retry_base, &actor, Some(event.id), now)
                })
                .await?
            }
            _ => {
                let reversed = event
                    .object
                    .get("amount_reversed")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                let before = payout.amount_reversed_cents;
                let updated = self
                    .apply(payout, |p| p.reversed(reversed, &actor, event.id, now))
                    .await?;
                if let Some(updated) = &updated {
                    // Money that came back can be paid again: give its quota back.
                    let delta = updated.amount_reversed_cents - before;
                    if delta > 0 {
                        self.limits
                            .release(
                                &updated.user_id,
                                &updated.id,
                                Some(delta),
                                "transfer reversed",
                            )
                            .await?;
                    }
                }
                updated
            }
        };
        Ok(match updated {
            Some(updated) => {
                match updated.status {
                    PayoutStatus::Completed => self.after_completion(&updated),
                    PayoutStatus::Failed => self.after_failure(&updated).await,
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

    /// The creator's bank payout on their connected account (event `account`).
    async fn handle_bank_payout(&self, event: &Event<'_>) -> Result<Applied, ServiceError> {
        let Some(account) = event.account else {
            return Ok(ignored("a platform payout, not a creator's"));
        };
        let bank_payout_id = event.str("id").unwrap_or_default().to_owned();
        let actor = event.actor();
        let now = self.clock.now();
        let mut changed = Vec::new();
        match event.event_type {
            "payout.paid" => {
                // Transfers to this account still in flight were carried by this bank payout.
                for payout in self
                    .payouts
                    .by_destination(account, &[PayoutStatus::Processing])
                    .await?
                {
                    if let Some(updated) = self
                        .apply(payout, |p| {
                            p.paid(Some(&bank_payout_id), &actor, Some(event.id), now)
                        })
                        .await?
                    {
                        self.after_completion(&updated);
                        changed.push(updated.id);
                    }
                }
            }
            "payout.failed" => {
                let code = event
                    .str("failure_code")
                    .unwrap_or("could_not_process")
                    .to_owned();
                let carried: Vec<Payout> = self
                    .payouts
                    .by_destination(
                        account,
                        &[PayoutStatus::Processing, PayoutStatus::Completed],
                    )
                    .await?
                    .into_iter()
                    .filter(|p| p.stripe_payout_id.as_deref() == Some(bank_payout_id.as_str()))
                    .collect();
                for payout in carried {
                    if let Some(updated) = self
                        .apply(payout, |p| {
                            p.bank_payout_failed(&code, &actor, event.id, now)
                        })
                        .await?
                    {
                        self.after_failure(&updated).await;
                        changed.push(updated.id);
                    }
                }
                if changed.is_empty()
                    && let Some(owner) = self.accounts.find_by_stripe_account(account).await?
                {
                    self.notifier.notify(UserNotice {
                        user_id: owner.user_id,
                        kind: "payout_failed",
                        title: "Bank payout failed".to_owned(),
                        body: format!("Your bank could not receive a payout ({code}). Please check your bank details."),
                        metadata_json: serde_json::json!({ "stripePayoutId": bank_payout_id, "failureCode": code }).to_string(),
                        dedupe_key: format!("{bank_payout_id}:failed"),
                    });
                }
            }
            // created / updated / canceled change no payout of ours.
            _ => {
                return Ok(ignored(format!(
                    "{} recorded; no payout changes",
                    event.event_type
                )));
            }
        }
        Ok(if changed.is_empty() {
            ignored("no payout of ours changed")
        } else {
            applied(format!("payouts {} updated", changed.join(", ")))
        })
    }

    async fn handle_account(&self, event: &Event<'_>) -> Result<Applied, ServiceError> {
        let stripe_account_id = event.str("id").unwrap_or_default();
        let status = StripeAccountStatus {
            charges_enabled: event
                .object
                .get("charges_enabled")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            payouts_enabled: event
                .object
                .get("payouts_enabled")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            details_submitted: event
                .object
                .get("details_submitted")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            requirements_currently_due: event
                .object
                .pointer("/requirements/currently_due")
                .and_then(Value::as_array)
                .map(|due| {
                    due.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            updated_at: chrono::DateTime::from_timestamp(event.created, 0)
                .or(Some(self.clock.now())),
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
            let was_enabled = account
                .stripe_status
                .as_ref()
                .is_none_or(|s| s.payouts_enabled);
            let updated = Account {
                stripe_status: Some(status.clone()),
                version: account.version + 1,
                ..account.clone()
            };
            match self.accounts.put(&updated, Some(account.version)).await {
                Ok(()) => {
                    if was_enabled && !status.payouts_enabled {
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
