//! Which of our payouts a creator's bank payout carried, only as Stripe says it.
//!
//! A bank payout (`payout.paid`, `payout.failed`, `payout.reconciliation_completed` on the
//! creator's connected account) is first recorded as pending on the account
//! ([`Account::pending_bank_payouts`], versioned compare-and-set), then looked at: the payout
//! is read from Stripe (`GET /v1/payouts/{id}` with `Stripe-Account`) and, only when it is
//! automatic and its `reconciliation_status` is `completed`, its balance transactions
//! (`GET /v1/balance_transactions?payout=`, complete only then) name the payments it
//! carried; exactly the payouts of ours whose destination payment is among them complete (or
//! fail). When Stripe cannot say (a lookup fails with any status, reconciliation still in
//! progress, a manual payout whose transactions are never listed by payout), nothing is
//! guessed: the payouts stay processing, the worker looks again after a backoff, and an
//! alert is owed once the bound passed (`BANK_PAYOUT_ATTRIBUTION_ALERT_HOURS`).
//!
//! One exception needs no list: a bank payout that fails after it was paid fails the payouts
//! it was attributed to when it was paid (their `stripe_payout_id`), which a complete list
//! decided then.

use chrono::{DateTime, Duration, Utc};
use payouts_runtime::{ErrorKind, ServiceError};

use crate::domain::{Account, BankLook};
use crate::events::{Applied, Event, applied, ignored};
use crate::flow::PayoutFlow;
use crate::payout::{Cause, OwedAlert, Payout, PayoutStatus};
use crate::ports::UserNotice;
use crate::stripe::is_bank_payout_id;

/// Default of `BANK_PAYOUT_ATTRIBUTION_ALERT_HOURS`: Stripe reconciles an automatic payout
/// soon after it is paid; two days without being able to say what it carried is worth an
/// admin's look.
pub const ALERT_AFTER: Duration = Duration::hours(48);

/// How many times a look retries the account write lost to a concurrent writer.
const MAX_CAS_ATTEMPTS: usize = 8;

/// Who looks when no event does.
const WORKER: &str = "service:payouts";

impl PayoutFlow {
    /// The creator's bank payout on their connected account (event `account`): recorded as
    /// pending, then looked at. Only recording can fail the event (it is retried then);
    /// what the look cannot settle the worker asks again.
    pub(crate) async fn handle_bank_payout(
        &self,
        event: &Event<'_>,
    ) -> Result<Applied, ServiceError> {
        let Some(account) = event.account else {
            return Ok(ignored("a platform payout, not a creator's"));
        };
        if !matches!(
            event.event_type,
            "payout.paid" | "payout.failed" | "payout.reconciliation_completed"
        ) {
            // created / updated / canceled change no payout of ours.
            return Ok(ignored(format!(
                "{} recorded; no payout changes",
                event.event_type
            )));
        }
        let bank_payout = event.str("id").unwrap_or_default();
        if !is_bank_payout_id(bank_payout) {
            return Err(ServiceError::invalid_argument(format!(
                "data.object.id must be a payout id (po_...), got {bank_payout:?}"
            )));
        }
        if !self.bank_payout_seen(account, bank_payout).await? {
            return Ok(ignored(format!(
                "no creator has connected account {account}"
            )));
        }
        let actor = event.actor();
        let changed = match self
            .look_at_bank_payout(account, bank_payout, &actor, Some(event.id))
            .await
        {
            Ok(changed) => changed,
            Err(error) => {
                // Recorded as pending: the worker looks again.
                tracing::warn!(bank_payout, error = %error, "bank payout not attributed yet");
                Vec::new()
            }
        };
        Ok(if changed.is_empty() {
            ignored(format!(
                "bank payout {bank_payout} recorded; no payout of ours changed (yet)"
            ))
        } else {
            applied(format!("payouts {} updated", changed.join(", ")))
        })
    }

    /// Records the bank payout as pending on the account (looked at now). False when no
    /// creator has that connected account.
    async fn bank_payout_seen(
        &self,
        account: &str,
        bank_payout: &str,
    ) -> Result<bool, ServiceError> {
        let now = self.clock.now();
        let written = self
            .change_account(account, |owner| {
                owner.with_bank_payout_seen(bank_payout, now)
            })
            .await?;
        Ok(written.is_some())
    }

    /// Applies `change` to the account of connected account `account` by compare-and-set,
    /// re-reading it whenever a concurrent writer got there first. `None` when no creator
    /// has that account; `Some(false)` when the change does not apply.
    async fn change_account(
        &self,
        account: &str,
        change: impl Fn(&Account) -> Option<Account>,
    ) -> Result<Option<bool>, ServiceError> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let Some(owner) = self.accounts.find_by_stripe_account(account).await? else {
                return Ok(None);
            };
            let Some(updated) = change(&owner) else {
                return Ok(Some(false));
            };
            match self.accounts.put(&updated, Some(owner.version)).await {
                Ok(()) => return Ok(Some(true)),
                Err(error) if error.kind() == ErrorKind::Conflict => {}
                Err(error) => return Err(error),
            }
        }
        Err(ServiceError::conflict(
            "account keeps changing; it will be retried",
        ))
    }

    /// One worker pass over the pending bank payouts due by `now`; how many it looked at.
    pub(crate) async fn run_due_bank_looks(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<usize, ServiceError> {
        let mut looked = 0;
        for account in self.accounts.due_bank_looks(now, limit).await? {
            let due: Vec<String> = account
                .pending_bank_payouts
                .iter()
                .filter(|p| p.due_at.is_some_and(|at| at <= now))
                .map(|p| p.bank_payout.clone())
                .collect();
            for bank_payout in due {
                looked += 1;
                if let Err(error) = self
                    .look_at_bank_payout(&account.stripe_account_id, &bank_payout, WORKER, None)
                    .await
                {
                    tracing::warn!(bank_payout, error = %error, "bank payout not attributed yet");
                }
            }
        }
        Ok(looked)
    }

    /// Looks at a pending bank payout: asks Stripe, applies what it says, and records the
    /// look on the account (no longer pending, or due again, with its alert when owed).
    /// The payouts it changed.
    async fn look_at_bank_payout(
        &self,
        account: &str,
        bank_payout: &str,
        actor: &str,
        event_id: Option<&str>,
    ) -> Result<Vec<String>, ServiceError> {
        let mut changed = Vec::new();
        let look = self
            .ask_stripe(account, bank_payout, actor, event_id, &mut changed)
            .await?;
        let now = self.clock.now();
        let Some(owner) = self.accounts.find_by_stripe_account(account).await? else {
            return Ok(changed);
        };
        let Some(pending) = owner.pending_bank_payout(bank_payout) else {
            return Ok(changed);
        };
        let mut alert_raised = false;
        if let BankLook::NotYet { reason, .. } = &look {
            tracing::info!(bank_payout, account, reason = %reason, "bank payout not attributed yet");
            if pending.alert_due(now, self.bank_attribution_alert_after) {
                alert_raised = self.raise_unattributed(&owner, bank_payout, reason).await;
            }
        }
        let alert_after = self.bank_attribution_alert_after;
        self.change_account(account, |current| {
            current.with_bank_payout_looked(bank_payout, &look, alert_raised, now, alert_after)
        })
        .await?;
        metrics::counter!(
            "payouts_bank_payout_looks_total",
            "result" => match look {
                BankLook::Attributed => "attributed",
                BankLook::NotYet { .. } => "not_yet",
            }
        )
        .increment(1);
        Ok(changed)
    }

    /// The critical alert for a bank payout Stripe could not attribute within the bound
    /// (deduplicated by its key). Whether it was raised.
    async fn raise_unattributed(&self, owner: &Account, bank_payout: &str, reason: &str) -> bool {
        let hours = self.bank_attribution_alert_after.num_hours();
        let alert = OwedAlert {
            key: format!("bank-payout:{bank_payout}:unattributed"),
            kind: "bank_payout_unattributed".to_owned(),
            title: format!(
                "Bank payout {bank_payout} of {} not attributed after {hours} hours",
                owner.user_id
            ),
            description: format!(
                "Stripe cannot say which transfers bank payout {bank_payout} on connected account {} \
                 carried ({reason}). The creator's payouts in flight stay processing: none is marked \
                 paid by guessing. Check the payout in the Stripe Dashboard; Payouts keeps asking.",
                owner.stripe_account_id
            ),
        };
        let data = serde_json::json!({
            "userId": owner.user_id,
            "stripeAccountId": owner.stripe_account_id,
            "stripePayoutId": bank_payout,
            "reason": reason,
        });
        match self.alerts.raise(&alert, data.to_string()).await {
            Ok(()) => true,
            Err(error) => {
                tracing::error!(bank_payout, error = %error, "bank payout alert not raised yet");
                false
            }
        }
    }

    /// What Stripe says about the bank payout, applied to our payouts (`changed` collects
    /// the ones that changed). Errors are our store's; Stripe's are a [`BankLook::NotYet`].
    async fn ask_stripe(
        &self,
        account: &str,
        bank_payout: &str,
        actor: &str,
        event_id: Option<&str>,
        changed: &mut Vec<String>,
    ) -> Result<BankLook, ServiceError> {
        let not_yet = |reason: String| BankLook::NotYet {
            reason,
            ask_again: true,
        };
        let Some(stripe) = &self.stripe else {
            return Ok(not_yet("Stripe is not configured".to_owned()));
        };
        let payout = match stripe.retrieve_bank_payout(account, bank_payout).await {
            Ok(payout) => payout,
            Err(failure) => {
                return Ok(not_yet(format!(
                    "Stripe did not show {bank_payout}: {}",
                    failure.describe()
                )));
            }
        };
        let failure_code = (payout.status == "failed").then(|| {
            payout
                .failure_code
                .clone()
                .unwrap_or_else(|| "could_not_process".to_owned())
        });
        if let Some(code) = &failure_code {
            // Payouts attributed to it when it was paid (a complete list decided that).
            let recorded: Vec<Payout> = self
                .payouts
                .by_destination(account, &[PayoutStatus::Completed])
                .await?
                .into_iter()
                .filter(|p| p.stripe_payout_id.as_deref() == Some(bank_payout))
                .collect();
            let rule = format!("the balance transactions of {bank_payout}, read when it was paid");
            self.apply_bank_payout(
                recorded,
                bank_payout,
                Some(code),
                &rule,
                actor,
                event_id,
                changed,
            )
            .await?;
        }
        match payout.status.as_str() {
            "paid" | "failed" => {}
            // Canceled before it left: the money is back in the creator's balance and a
            // later bank payout carries it.
            "canceled" => return Ok(BankLook::Attributed),
            other => {
                return Ok(not_yet(format!("{bank_payout} is {other}, not paid yet")));
            }
        }
        if !payout.automatic {
            let look = BankLook::NotYet {
                reason: format!(
                    "{bank_payout} is a manual payout: Stripe does not list which transfers a manual payout carried"
                ),
                ask_again: false,
            };
            self.tell_bank_failure(account, bank_payout, failure_code.as_deref(), changed)
                .await?;
            return Ok(look);
        }
        if !payout.reconciled() {
            return Ok(not_yet(format!(
                "Stripe has not finished reconciling {bank_payout} (reconciliation_status {:?}): its balance transactions may be incomplete",
                payout.reconciliation_status
            )));
        }
        let payments = match stripe.bank_payout_sources(account, bank_payout).await {
            Ok(payments) => payments,
            Err(failure) => {
                return Ok(not_yet(format!(
                    "Stripe did not list the balance transactions of {bank_payout}: {}",
                    failure.describe()
                )));
            }
        };
        self.record_bank_payout(account, bank_payout, &payments, failure_code.as_deref())
            .await?;
        let statuses: &[PayoutStatus] = if failure_code.is_some() {
            &[PayoutStatus::Processing, PayoutStatus::Completed]
        } else {
            &[PayoutStatus::Processing]
        };
        let candidates = self.payouts.by_destination(account, statuses).await?;
        let carried = match self.carrying(candidates, &payments).await {
            Ok(carried) => carried,
            Err(reason) => return Ok(not_yet(reason)),
        };
        let rule = format!("the balance transactions of {bank_payout}, reconciled");
        self.apply_bank_payout(
            carried,
            bank_payout,
            failure_code.as_deref(),
            &rule,
            actor,
            event_id,
            changed,
        )
        .await?;
        self.tell_bank_failure(account, bank_payout, failure_code.as_deref(), changed)
            .await?;
        Ok(BankLook::Attributed)
    }

    /// Completes (or, for a failed bank payout, fails) `payouts`.
    #[allow(clippy::too_many_arguments)]
    async fn apply_bank_payout(
        &self,
        payouts: Vec<Payout>,
        bank_payout: &str,
        failure_code: Option<&str>,
        rule: &str,
        actor: &str,
        event_id: Option<&str>,
        changed: &mut Vec<String>,
    ) -> Result<(), ServiceError> {
        let now = self.clock.now();
        for payout in payouts {
            let updated = self
                .apply(payout, |p| {
                    let cause = match event_id {
                        Some(id) => Cause::event(actor, id, now),
                        None => Cause::new(actor, now),
                    };
                    match failure_code {
                        None => p.paid(Some(bank_payout), rule, cause),
                        Some(code) => p.bank_payout_failed(code, bank_payout, rule, cause),
                    }
                })
                .await?;
            if let Some(updated) = updated {
                if failure_code.is_some() {
                    self.after_failure(&updated);
                } else {
                    self.after_completion(&updated);
                }
                if !changed.contains(&updated.id) {
                    changed.push(updated.id);
                }
            }
        }
        Ok(())
    }

    /// A failed bank payout that failed no payout of ours is still news for the creator
    /// (once per bank payout).
    async fn tell_bank_failure(
        &self,
        account: &str,
        bank_payout: &str,
        failure_code: Option<&str>,
        changed: &[String],
    ) -> Result<(), ServiceError> {
        let Some(code) = failure_code else {
            return Ok(());
        };
        if !changed.is_empty() {
            return Ok(());
        }
        if let Some(owner) = self.accounts.find_by_stripe_account(account).await? {
            self.notifier.notify(UserNotice {
                user_id: owner.user_id,
                kind: "payout_failed",
                title: "Bank payout failed".to_owned(),
                body: format!(
                    "Your bank could not receive a payout ({code}). Please check your bank details."
                ),
                metadata_json:
                    serde_json::json!({ "stripePayoutId": bank_payout, "failureCode": code })
                        .to_string(),
                dedupe_key: format!("{bank_payout}:failed"),
            });
        }
        Ok(())
    }

    /// Remembers on the account what the bank payout carried (its complete list), before
    /// looking for the payouts it carried: a payout whose transfer becomes known later owes
    /// a look here ([`Payout::bank_check_owed`]). One of the two always sees the other.
    async fn record_bank_payout(
        &self,
        account: &str,
        bank_payout: &str,
        payments: &[String],
        failure_code: Option<&str>,
    ) -> Result<(), ServiceError> {
        self.change_account(account, |owner| {
            owner.with_bank_payout(bank_payout, payments, failure_code)
        })
        .await?;
        Ok(())
    }

    /// Which of `candidates` carry one of `payments` (a payout's destination payment is read
    /// from Stripe when we did not keep it). Why not, when Stripe did not show a transfer.
    async fn carrying(
        &self,
        candidates: Vec<Payout>,
        payments: &[String],
    ) -> Result<Vec<Payout>, String> {
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
                            return Err(format!(
                                "Stripe did not show transfer {transfer_id}: {}",
                                failure.describe()
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
}
