//! Stripe events the payouts service owns: `transfer.*`, `payout.*` (the creator's bank
//! payouts, from connected accounts) and `account.updated`. Each is idempotent on the event
//! id, acts only on the transfer it names, and never moves a payout backwards.

use payouts_runtime::{ErrorKind, ServiceError};
use serde_json::Value;

use crate::domain::{Account, StripeAccountStatus};
use crate::flow::PayoutFlow;
use crate::payout::{Cause, Payout, PayoutStatus, StripeFailure, TransferNews};
use crate::ports::UserNotice;
use crate::stripe::{account_status_from_json, seen_from_json};

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

    /// The payments a bank payout carried, asked of Stripe (its balance transactions on the
    /// connected account). `None` when Stripe cannot be asked (not configured, or it refuses
    /// us the account's records): the old rule decides then. An answer that does not come is
    /// an error: the event is retried, nothing is guessed.
    async fn bank_payout_payments(
        &self,
        account: &str,
        bank_payout_id: &str,
    ) -> Result<Result<Vec<String>, String>, ServiceError> {
        let Some(stripe) = &self.stripe else {
            return Ok(Err("Stripe is not configured".to_owned()));
        };
        match stripe.bank_payout_sources(account, bank_payout_id).await {
            Ok(sources) => Ok(Ok(sources)),
            Err(StripeFailure::Unknown { message }) => Err(ServiceError::unavailable(
                format!(
                    "Stripe did not list what bank payout {bank_payout_id} carried; the event will be retried"
                ),
                anyhow::anyhow!("{message}"),
            )),
            Err(failure) => Ok(Err(format!(
                "Stripe could not be asked: {}",
                failure.describe()
            ))),
        }
    }

    /// Remembers on the account what the bank payout carried, before looking for the payouts
    /// it carried: a payout whose transfer becomes known later owes a look here
    /// ([`Payout::bank_check_owed`]). One of the two always sees the other.
    async fn record_bank_payout(
        &self,
        account: &str,
        bank_payout_id: &str,
        payments: &[String],
        failure_code: Option<&str>,
    ) -> Result<(), ServiceError> {
        for _ in 0..8 {
            let Some(owner) = self.accounts.find_by_stripe_account(account).await? else {
                return Ok(());
            };
            let Some(updated) = owner.with_bank_payout(bank_payout_id, payments, failure_code)
            else {
                return Ok(());
            };
            match self.accounts.put(&updated, Some(owner.version)).await {
                Ok(()) => return Ok(()),
                Err(error) if error.kind() == ErrorKind::Conflict => {}
                Err(error) => return Err(error),
            }
        }
        Err(ServiceError::conflict(
            "account keeps changing; the event will be retried",
        ))
    }

    /// Which of `candidates` carry one of `payments` (a payout's destination payment is read
    /// from Stripe when we did not keep it).
    async fn carrying(
        &self,
        candidates: Vec<Payout>,
        payments: &[String],
    ) -> Result<Vec<Payout>, ServiceError> {
        let mut carried = Vec::new();
        for payout in candidates {
            let payment = match (&payout.destination_payment_id, &payout.stripe_transfer_id) {
                (Some(payment), _) => payment.clone(),
                (None, Some(transfer_id)) => {
                    let Some(stripe) = &self.stripe else { continue };
                    match stripe.retrieve_transfer(transfer_id).await {
                        Ok(seen) => match seen.destination_payment {
                            Some(payment) => payment,
                            None => continue,
                        },
                        Err(failure) => {
                            return Err(ServiceError::unavailable(
                                format!(
                                    "Stripe did not show transfer {transfer_id}; the event will be retried"
                                ),
                                anyhow::anyhow!("{}", failure.describe()),
                            ));
                        }
                    }
                }
                (None, None) => continue,
            };
            if payments.contains(&payment) {
                carried.push(payout);
            }
        }
        Ok(carried)
    }

    /// The creator's bank payout on their connected account (event `account`).
    async fn handle_bank_payout(&self, event: &Event<'_>) -> Result<Applied, ServiceError> {
        let Some(account) = event.account else {
            return Ok(ignored("a platform payout, not a creator's"));
        };
        let bank_payout_id = event.str("id").unwrap_or_default().to_owned();
        let failure_code = match event.event_type {
            "payout.paid" => None,
            "payout.failed" => Some(
                event
                    .str("failure_code")
                    .unwrap_or("could_not_process")
                    .to_owned(),
            ),
            // created / updated / canceled change no payout of ours.
            _ => {
                return Ok(ignored(format!(
                    "{} recorded; no payout changes",
                    event.event_type
                )));
            }
        };
        let statuses: &[PayoutStatus] = if failure_code.is_some() {
            &[PayoutStatus::Processing, PayoutStatus::Completed]
        } else {
            &[PayoutStatus::Processing]
        };
        let payments = self.bank_payout_payments(account, &bank_payout_id).await?;
        if let Ok(payments) = &payments {
            self.record_bank_payout(account, &bank_payout_id, payments, failure_code.as_deref())
                .await?;
        }
        let candidates = self.payouts.by_destination(account, statuses).await?;
        let (carried, rule) = match &payments {
            Ok(payments) => (
                self.carrying(candidates, payments).await?,
                format!("the balance transactions of {bank_payout_id}"),
            ),
            Err(why) => match &failure_code {
                None => (
                    candidates,
                    format!("account: every transfer to it still processing ({why})"),
                ),
                Some(_) => (
                    candidates
                        .into_iter()
                        .filter(|p| p.stripe_payout_id.as_deref() == Some(bank_payout_id.as_str()))
                        .collect(),
                    format!("the bank payout recorded when it was paid ({why})"),
                ),
            },
        };
        let actor = event.actor();
        let now = self.clock.now();
        let mut changed = Vec::new();
        for payout in carried {
            let updated = self
                .apply(payout, |p| {
                    let cause = Cause::event(&actor, event.id, now);
                    match &failure_code {
                        None => p.paid(Some(&bank_payout_id), &rule, cause),
                        Some(code) => p.bank_payout_failed(code, &bank_payout_id, &rule, cause),
                    }
                })
                .await?;
            if let Some(updated) = updated {
                if failure_code.is_some() {
                    self.after_failure(&updated);
                } else {
                    self.after_completion(&updated);
                }
                changed.push(updated.id);
            }
        }
        if let Some(code) = &failure_code
            && changed.is_empty()
            && let Some(owner) = self.accounts.find_by_stripe_account(account).await?
        {
            self.notifier.notify(UserNotice {
                user_id: owner.user_id,
                kind: "payout_failed",
                title: "Bank payout failed".to_owned(),
                body: format!(
                    "Your bank could not receive a payout ({code}). Please check your bank details."
                ),
                metadata_json:
                    serde_json::json!({ "stripePayoutId": bank_payout_id, "failureCode": code })
                        .to_string(),
                dedupe_key: format!("{bank_payout_id}:failed"),
            });
        }
        Ok(if changed.is_empty() {
            ignored(if payments.is_ok() {
                "recorded for the account; no payout of ours changed (yet)"
            } else {
                "no payout of ours changed"
            })
        } else {
            applied(format!("payouts {} updated", changed.join(", ")))
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
