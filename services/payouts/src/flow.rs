//! The payout flow: request (admission against the limits), transfer (exactly one Stripe
//! transfer per attempt, re-checked just before money moves), approval decisions, owed side
//! effects, and the worker that drives what is due. Every state change is a compare-and-set
//! on the payout, carrying its audit record and what it owes other services in the same
//! write.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use payouts_runtime::money::dollars;
use payouts_runtime::shutdown::Shutdown;
use payouts_runtime::{Clock, ErrorKind, IdSource, Money, ServiceError};

use crate::domain::{Account, StripeAccountStatus};
use crate::pause::{PauseCause, PauseChange, TransferPause};
use crate::payout::{
    Cause, IDEMPOTENCY_WINDOW, Payout, PayoutStatus, ReversalIntent, ReversalOutcome,
    ReversalRefusal, ReversalState, SeenTransfer, StripeFailure, TransferNews, transfer_group,
    transfer_idempotency_key,
};
use crate::ports::{AlertsPort, ApprovalsPort, LimitsPort, Notifier, Recheck, UserNotice};
use crate::store::{AccountRepository, Inserted, PauseRepository, PayoutRepository};
use crate::stripe::{ReversalRequest, StripeApi, TransferRequest};

/// How long a transfer worker holds a payout before another may take it over.
pub const TRANSFER_LEASE: Duration = Duration::minutes(2);
/// How long an admission may be in progress before the worker resumes it.
pub const ADMISSION_GRACE: Duration = Duration::minutes(1);
/// How many due payouts of each kind a worker pass takes. Due work is ordered by due time
/// and failing work backs off, so the same few stuck payouts never starve the others.
pub(crate) const DUE_BATCH: usize = 32;
/// How long after its last request an unresolved reversal intent is left to that request
/// before the worker looks it up in the transfer's reversals.
const REVERSAL_IN_FLIGHT: Duration = Duration::minutes(1);
/// How often a change lost to a concurrent writer is re-applied on a fresh read.
const MAX_CAS_ATTEMPTS: usize = 8;

/// The answer to a payout request.
#[derive(Debug, Clone, PartialEq)]
pub struct Requested {
    /// The payout, when admitted (or found under the idempotency key).
    pub payout: Option<Payout>,
    pub decision: payouts_proto::limits::v1::LimitDecision,
}

/// Whether an admitted payout can still be paid, just before its money moves.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Payable {
    Yes,
    No {
        code: &'static str,
        reason: String,
    },
    /// The question could not be answered now: nothing is sent, nothing is failed.
    Unknown(String),
}

/// The payouts service core.
pub struct PayoutFlow {
    pub accounts: Arc<dyn AccountRepository>,
    pub payouts: Arc<dyn PayoutRepository>,
    /// Whether new transfers may start ([`crate::pause`]).
    pub pause: Arc<dyn PauseRepository>,
    pub limits: Arc<dyn LimitsPort>,
    pub approvals: Arc<dyn ApprovalsPort>,
    pub notifier: Arc<dyn Notifier>,
    pub alerts: Arc<dyn AlertsPort>,
    /// `None` when STRIPE_SECRET_KEY is unset.
    pub stripe: Option<Arc<dyn StripeApi>>,
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn IdSource>,
    pub poll_interval: std::time::Duration,
    /// First retry delay (default 5 minutes), doubling after each failure.
    pub retry_base: Duration,
    /// How long a transfer's outcome may stay unknown before a critical alert.
    pub unknown_alert_after: Duration,
    /// How long a creator's bank payout may stay unattributed (Stripe cannot say which
    /// transfers it carried) before a critical alert ([`crate::attribution`]).
    pub bank_attribution_alert_after: Duration,
}

impl PayoutFlow {
    /// Writes `to` if the payout is still at `from`'s version, then settles what the change
    /// owes other services (quota, alerts) at once when it can; what it cannot settle now
    /// the worker settles later. Returns the payout as last written.
    pub async fn commit(&self, from: &Payout, to: Payout) -> Result<Payout, ServiceError> {
        self.payouts.replace(&to, from.version).await?;
        if to.audit_log.len() > from.audit_log.len()
            && let Some(entry) = to.audit_log.last()
        {
            tracing::info!(
                payout_id = %to.id,
                from = from.status.as_str(),
                to = to.status.as_str(),
                event = %entry.event_type,
                reason = %entry.reason,
                "payout state changed"
            );
            metrics::counter!("payouts_payout_transitions_total", "to" => to.status.as_str())
                .increment(1);
        }
        if !to.quota.is_settled() || !to.owed_alerts.is_empty() || to.bank_check_owed {
            return Ok(match self.settle(&to).await {
                Ok(settled) => settled,
                Err(error) => {
                    tracing::warn!(payout_id = %to.id, error = %error, "side effects not settled yet; the worker will");
                    to
                }
            });
        }
        Ok(to)
    }

    /// Applies `change` to the payout, re-reading it whenever a concurrent writer got there
    /// first. `None` when the change does not apply (any more).
    pub async fn apply(
        &self,
        payout: Payout,
        change: impl Fn(&Payout) -> Option<Payout>,
    ) -> Result<Option<Payout>, ServiceError> {
        let mut current = payout;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let Some(changed) = change(&current) else {
                return Ok(None);
            };
            match self.commit(&current, changed).await {
                Ok(updated) => return Ok(Some(updated)),
                Err(error) if error.kind() == ErrorKind::Conflict => {
                    current = self.fresh(&current.id).await?;
                }
                Err(error) => return Err(error),
            }
        }
        Err(ServiceError::conflict(
            "payout keeps changing; the change will be retried",
        ))
    }

    async fn fresh(&self, payout_id: &str) -> Result<Payout, ServiceError> {
        self.payouts
            .get(payout_id)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("payout {payout_id} vanished")))
    }

    /// Settles what the payout owes: audit entries projected into `payoutAuditLogs`, the
    /// quota release confirmed by the limits service, critical alerts raised. Each is
    /// idempotent; what fails stays owed (due again after a backoff).
    pub async fn settle(&self, payout: &Payout) -> Result<Payout, ServiceError> {
        let resolved;
        let payout = if payout.unresolved_reversal().is_some() {
            resolved = self.resolve_reversal(payout).await;
            &resolved
        } else {
            payout
        };
        let checked;
        let payout = if payout.bank_check_owed {
            checked = self.check_bank_payouts(payout).await;
            &checked
        } else {
            payout
        };
        let mut projected = payout.audit_projected;
        let start = usize::try_from(projected).unwrap_or(usize::MAX);
        if let Some(unprojected) = payout.audit_log.get(start..)
            && !unprojected.is_empty()
        {
            match self.payouts.project_audit(unprojected).await {
                Ok(()) => projected = u32::try_from(payout.audit_log.len()).unwrap_or(u32::MAX),
                Err(error) => {
                    tracing::warn!(payout_id = %payout.id, error = %error, "audit projection lagging")
                }
            }
        }
        let mut confirmed = None;
        let mut unapplied = None;
        if !payout.quota.is_settled() {
            let target = Money::new(payout.quota.target_cents, payout.amount.currency.clone());
            let reason = payout
                .failure_reason
                .clone()
                .unwrap_or_else(|| format!("payout {}", payout.status.as_str()));
            match self
                .limits
                .release(
                    &payout.user_id,
                    &payout.id,
                    &target,
                    payout.quota.sequence,
                    &reason,
                )
                .await
            {
                Ok(answer) if !answer.found => {
                    // Nothing was applied: never recorded as confirmed (see
                    // [`Payout::release_not_applied`]).
                    tracing::error!(payout_id = %payout.id, "the limits service holds no reservation for this payout; the release stays owed");
                    unapplied = Some(payout.release_not_applied());
                }
                Ok(_) => {
                    confirmed = Some((payout.quota.target_cents, payout.quota.sequence));
                }
                Err(error) => {
                    tracing::warn!(payout_id = %payout.id, error = %error, "quota release not confirmed yet")
                }
            }
        }
        let payout = unapplied.as_ref().unwrap_or(payout);
        let mut raised = Vec::new();
        for alert in &payout.owed_alerts {
            let data = serde_json::json!({
                "payoutId": payout.id,
                "userId": payout.user_id,
                "amountCents": payout.amount.cents,
                "status": payout.status.as_str(),
                "transferId": payout.stripe_transfer_id,
                "attempt": payout.attempt,
            });
            match self.alerts.raise(alert, data.to_string()).await {
                Ok(()) => raised.push(alert.key.clone()),
                Err(error) => {
                    tracing::error!(payout_id = %payout.id, alert = %alert.key, error = %error, "critical alert not raised yet")
                }
            }
        }
        let settled = payout.effects_settled(projected, confirmed, &raised, self.clock.now());
        self.payouts.replace(&settled, payout.version).await?;
        Ok(settled)
    }

    /// The owed look at the bank payouts recorded for the account (see
    /// [`Payout::bank_check_owed`]): a payout whose transfer became known after its bank
    /// payout's event was processed completes (or fails) now. Returns the payout as it is
    /// after the look, or unchanged when the account could not be read (still owed).
    async fn check_bank_payouts(&self, payout: &Payout) -> Payout {
        let carried = match (
            &payout.destination_payment_id,
            self.accounts
                .find_by_stripe_account(&payout.destination)
                .await,
        ) {
            (Some(payment), Ok(account)) => {
                account.and_then(|account| account.carried(payment).cloned())
            }
            (None, Ok(_)) => None,
            (_, Err(error)) => {
                tracing::warn!(payout_id = %payout.id, error = %error, "bank payouts not checked yet");
                return payout.clone();
            }
        };
        let cause = Cause::new("service:payouts", self.clock.now());
        let Some(updated) = payout.bank_payouts_checked(carried.as_ref(), cause) else {
            return payout.clone();
        };
        // Written here, not through `commit` (which settles, which brought us here); the
        // rest of `settle` goes on from it. A concurrent writer wins and the look is retried.
        match self.payouts.replace(&updated, payout.version).await {
            Ok(()) => {
                match (payout.status, updated.status) {
                    (PayoutStatus::Processing, PayoutStatus::Completed) => {
                        self.after_completion(&updated);
                    }
                    (_, PayoutStatus::Failed) if payout.status != PayoutStatus::Failed => {
                        self.after_failure(&updated);
                    }
                    _ => {}
                }
                updated
            }
            Err(error) => {
                tracing::warn!(payout_id = %payout.id, error = %error, "bank payouts not checked yet");
                payout.clone()
            }
        }
    }

    /// Requests a payout: validated, idempotent on (user, key), admitted atomically by the
    /// limits, then transferred at once or held for approval.
    pub async fn request(
        &self,
        user_id: &str,
        amount: Money,
        idempotency_key: &str,
    ) -> Result<Requested, ServiceError> {
        if amount.currency.as_str() != "usd" {
            return Err(ServiceError::invalid_argument(format!(
                "payouts are in usd; got {}",
                amount.currency
            )));
        }
        let account = self.accounts.get(user_id).await?.ok_or_else(|| {
            ServiceError::failed_precondition(format!(
                "no connected account is registered for {user_id}"
            ))
        })?;
        let now = self.clock.now();
        let candidate = Payout::requested(
            self.ids.next("payout"),
            user_id,
            amount,
            idempotency_key,
            &account.stripe_account_id,
            now,
            ADMISSION_GRACE,
        );
        // The same key returns the same payout; the same key for another amount is refused.
        if let Some(existing) = self
            .payouts
            .find_by_key(&candidate.user_id, &candidate.idempotency_key)
            .await?
        {
            return self.same_request(existing, &candidate).await;
        }
        if self.stripe.is_none() {
            return Err(ServiceError::failed_precondition(
                "Stripe is not configured (STRIPE_SECRET_KEY)",
            ));
        }
        let status = self.known_status(&account).await?;
        check_account(&account.stripe_account_id, &status)?;
        match self.payouts.insert(&candidate).await? {
            Inserted::New => {}
            Inserted::Existing(existing) => return self.same_request(*existing, &candidate).await,
        }
        self.admit(candidate, Some(account.account_created_at))
            .await
    }

    /// The account's Stripe status; asked of Stripe when we have not heard it yet (unknown
    /// is not "enabled").
    async fn known_status(&self, account: &Account) -> Result<StripeAccountStatus, ServiceError> {
        if let Some(status) = &account.stripe_status {
            return Ok(status.clone());
        }
        self.status_from_stripe(account, &account.stripe_account_id)
            .await
    }

    async fn status_from_stripe(
        &self,
        account: &Account,
        stripe_account_id: &str,
    ) -> Result<StripeAccountStatus, ServiceError> {
        let Some(stripe) = &self.stripe else {
            return Err(ServiceError::failed_precondition(
                "Stripe is not configured (STRIPE_SECRET_KEY)",
            ));
        };
        let mut status = match stripe.retrieve_account(stripe_account_id).await {
            Ok(status) => status,
            Err(StripeFailure::Declined { code, message, .. }) => {
                return Err(ServiceError::failed_precondition(format!(
                    "Stripe refused to show connected account {stripe_account_id} ({code}: {message})"
                )));
            }
            Err(failure) => {
                return Err(ServiceError::unavailable(
                    format!(
                        "the status of connected account {stripe_account_id} is not known yet and Stripe did not answer; try again"
                    ),
                    anyhow::anyhow!("{}", failure.describe()),
                ));
            }
        };
        status.updated_at = Some(self.clock.now());
        if account.stripe_account_id == stripe_account_id {
            // Kept like an account.updated (an older snapshot never replaces a newer one).
            let mut updated = account.clone();
            updated.stripe_status = Some(status.clone());
            updated.version += 1;
            if let Err(error) = self.accounts.put(&updated, Some(account.version)).await {
                tracing::info!(user_id = %account.user_id, error = %error, "account status not stored (changed concurrently)");
            }
        }
        Ok(status)
    }

    /// The answer to a repeated key: the stored payout and its decision as it stands, or the
    /// admission resumed when the first request has not finished it.
    async fn same_request(
        &self,
        existing: Payout,
        candidate: &Payout,
    ) -> Result<Requested, ServiceError> {
        if existing.amount != candidate.amount {
            return Err(ServiceError::already_exists(format!(
                "idempotency key {:?} was used for a payout of {} cents; this request asks for {}",
                candidate.idempotency_key, existing.amount.cents, candidate.amount.cents
            )));
        }
        if existing.status == PayoutStatus::Admitting {
            // The first request is still being admitted (or died doing so): resume it. The
            // admission is idempotent on the payout, so this answers what the limits decided.
            return self.admit(existing, None).await;
        }
        Ok(Requested {
            decision: stored_decision(&existing),
            payout: Some(existing),
        })
    }

    /// Runs (or resumes) the admission of a stored payout; `account_created_at` when the
    /// account is at hand.
    async fn admit(
        &self,
        payout: Payout,
        account_created_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Requested, ServiceError> {
        let admission = match self
            .limits
            .reserve(
                &payout.user_id,
                &payout.id,
                &payout.amount,
                payout.requested_at,
                account_created_at,
            )
            .await
        {
            Ok(admission) => admission,
            Err(error) if error.kind() == ErrorKind::Unavailable => {
                // Maybe reserved, maybe not: the payout stays admitting and the worker
                // resumes it after a backoff (the reservation is idempotent).
                let _ = self
                    .apply(payout, |p| {
                        (p.status == PayoutStatus::Admitting)
                            .then(|| p.work_failed("admission", error.message(), self.clock.now()))
                    })
                    .await;
                return Err(error);
            }
            Err(error) => {
                // A definite refusal (the balance, bad input): nothing is held; forget it.
                self.forget(&payout).await;
                return Err(error);
            }
        };
        if !admission.reserved {
            self.forget(&payout).await;
            metrics::counter!("payouts_payout_refused_total").increment(1);
            return Ok(Requested {
                payout: None,
                decision: admission.decision,
            });
        }
        let flags: Vec<String> = admission
            .decision
            .flags()
            .map(|flag| {
                flag.as_str_name()
                    .trim_start_matches("PAYOUT_FLAG_")
                    .to_owned()
            })
            .collect();
        let requires_approval = admission.decision.requires_approval;
        let metadata_json = requires_approval.then(|| hold_metadata_json(&admission.decision));
        let now = self.clock.now();
        let admitted = self
            .apply(payout.clone(), |p| {
                let mut admitted = p.admitted(
                    requires_approval,
                    flags.clone(),
                    &admission.decision.reason,
                    now,
                )?;
                admitted.hold_metadata_json = metadata_json.clone();
                Some(admitted)
            })
            .await?;
        let admitted = match admitted {
            Some(admitted) => admitted,
            // Someone else admitted it first (a resumed admission): that state stands.
            None => self.fresh(&payout.id).await?,
        };
        let payout = match admitted.status {
            PayoutStatus::Pending => self.transfer(admitted).await?,
            PayoutStatus::PendingApproval => self.hand_off(admitted).await,
            _ => admitted,
        };
        Ok(Requested {
            payout: Some(payout),
            decision: admission.decision,
        })
    }

    /// Deletes a refused payout still being admitted (nothing is held for it).
    async fn forget(&self, payout: &Payout) {
        if let Err(error) = self.payouts.delete(&payout.id, payout.version).await {
            // It changed meanwhile (a backoff was recorded): try once more on a fresh read.
            if let Ok(Some(current)) = self.payouts.get(&payout.id).await
                && current.status == PayoutStatus::Admitting
            {
                let _ = self.payouts.delete(&current.id, current.version).await;
            } else {
                tracing::debug!(payout_id = %payout.id, error = %error, "refused payout already gone");
            }
        }
    }

    /// Hands a held payout to the approval queue. If the approvals service does not answer,
    /// the payout stays due and the worker hands it off later (with a backoff, and a
    /// critical alert once it has failed too often): no held payout goes unseen.
    pub async fn hand_off(&self, payout: Payout) -> Payout {
        let queued = self.approvals.queue(&payout).await;
        let now = self.clock.now();
        let change = |p: &Payout| match &queued {
            Ok(()) => p.handed_off(now),
            Err(error) => (p.status == PayoutStatus::PendingApproval && p.next_retry_at.is_some())
                .then(|| p.work_failed("approval hand-off", error.message(), now)),
        };
        if let Err(error) = &queued {
            tracing::warn!(payout_id = %payout.id, error = %error, "approval queue unavailable; will retry");
        }
        match self.apply(payout.clone(), change).await {
            Ok(Some(updated)) => updated,
            // Someone else moved it (a decision may already have arrived): that state stands.
            _ => self
                .payouts
                .get(&payout.id)
                .await
                .ok()
                .flatten()
                .unwrap_or(payout),
        }
    }

    /// Makes the transfer of a due pending payout, unless another worker holds it. Exactly one
    /// Stripe transfer per attempt: the idempotency key names the payout and the attempt; an
    /// attempt whose outcome is unknown is looked up before anything else and is never
    /// failed; money moves only if it is still payable at that moment.
    pub async fn transfer(&self, payout: Payout) -> Result<Payout, ServiceError> {
        let Some(stripe) = self.stripe.clone() else {
            return Err(ServiceError::failed_precondition(
                "Stripe is not configured (STRIPE_SECRET_KEY)",
            ));
        };
        // Paused: the payout stays as it is, admitted and due, and is transferred once the
        // pause is lifted. Not a failure, not a try. (A pause that cannot be read stops the
        // transfer too: this pass ends with the error and the next one asks again.)
        if self.pause.get().await?.paused() {
            return Ok(payout);
        }
        let prior_unknown = payout.outcome_unknown;
        let Some(claimed) = payout.claimed_for_transfer(self.clock.now(), TRANSFER_LEASE) else {
            return Ok(payout);
        };
        match self.payouts.replace(&claimed, payout.version).await {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::Conflict => {
                // Another worker has it.
                return Ok(self.payouts.get(&payout.id).await?.unwrap_or(payout));
            }
            Err(error) => return Err(error),
        }
        let group = transfer_group(&claimed.id);
        if prior_unknown {
            // An earlier request may have made the transfer: ask Stripe before anything else.
            match stripe.find_transfers(&group).await {
                Err(failure) => {
                    let message = format!("lookup failed: {}", failure.describe());
                    return self
                        .attempt_answered(&claimed, None, |p, now| {
                            p.outcome_still_unknown(
                                &message,
                                self.unknown_alert_after,
                                Cause::new("worker", now),
                            )
                        })
                        .await;
                }
                Ok(found) => {
                    let candidates: Vec<SeenTransfer> = found
                        .into_iter()
                        .filter(|t| !claimed.failed_transfer_ids.contains(&t.id))
                        .collect();
                    if !candidates.is_empty() {
                        return self.adopt_found(&claimed, candidates).await;
                    }
                }
            }
        }
        let now = self.clock.now();
        match self.payable(&claimed).await {
            Payable::Yes => {}
            Payable::Unknown(message) => {
                tracing::warn!(payout_id = %claimed.id, %message, "re-check unanswered; transfer deferred");
                return self
                    .attempt_answered(&claimed, None, |p, now| {
                        p.attempt_deferred(prior_unknown, None, now)
                    })
                    .await;
            }
            Payable::No { code, reason } => {
                let settling = claimed
                    .unknown_since
                    .is_some_and(|since| now - since < IDEMPOTENCY_WINDOW);
                if prior_unknown && settling {
                    // An earlier request may still turn into a transfer: never fail it, never
                    // send again; look it up until Stripe's idempotency window has passed.
                    let message = format!(
                        "not sending ({reason}); waiting for Stripe to settle the earlier request"
                    );
                    return self
                        .attempt_answered(&claimed, None, |p, now| {
                            p.outcome_still_unknown(
                                &message,
                                self.unknown_alert_after,
                                Cause::new("worker", now),
                            )
                        })
                        .await;
                }
                return self
                    .attempt_answered(&claimed, None, |p, now| {
                        p.no_longer_payable(code, &reason, now)
                    })
                    .await;
            }
        }
        // The pause once more, just before money moves: the lookup and the re-checks above
        // can take a gRPC deadline each, and a halt applied meanwhile stops the attempt here.
        // The attempt is deferred as it stands (not tried, not failed; its claim lapses), and
        // a pause that cannot be read defers it too. What remains is the request already on
        // its way when a halt lands (docs/balance.md).
        if !matches!(self.pause.get().await, Ok(pause) if !pause.paused()) {
            return self
                .attempt_answered(&claimed, None, |p, now| {
                    p.attempt_deferred(prior_unknown, None, now)
                })
                .await;
        }
        let request = TransferRequest {
            payout_id: claimed.id.clone(),
            user_id: claimed.user_id.clone(),
            attempt: claimed.attempt,
            amount: claimed.amount.clone(),
            destination: claimed.destination.clone(),
            idempotency_key: transfer_idempotency_key(&claimed.id, claimed.attempt),
            transfer_group: group,
        };
        metrics::counter!("payouts_stripe_transfer_requests_total").increment(1);
        let result = stripe.create_transfer(&request).await;
        let retry_base = self.retry_base;
        match result {
            Ok(seen) => {
                self.attempt_answered(&claimed, Some(&seen.id), |p, now| {
                    p.transfer_seen(
                        &seen,
                        &TransferNews::Exists,
                        retry_base,
                        Cause::new("stripe", now),
                    )
                })
                .await
            }
            Err(StripeFailure::Declined {
                code,
                message,
                retryable,
            }) => {
                self.attempt_answered(&claimed, None, |p, now| {
                    p.attempt_declined(
                        &code,
                        &message,
                        retryable,
                        None,
                        retry_base,
                        Cause::new("stripe", now),
                    )
                })
                .await
            }
            Err(StripeFailure::NotExecuted { code, message }) if prior_unknown => {
                // This request was not executed, but an earlier one under the same key may
                // still arrive and be: the attempt's outcome stays unknown.
                let message = format!(
                    "{code}: {message}; an earlier request of this attempt may still be executed"
                );
                self.attempt_answered(&claimed, None, |p, now| {
                    p.outcome_still_unknown(
                        &message,
                        self.unknown_alert_after,
                        Cause::new("stripe", now),
                    )
                })
                .await
            }
            Err(StripeFailure::NotExecuted { code, message }) => {
                // Nothing was sent under this key before our claim: a definite "not now"
                // (design §2 retries rate_limit with a new attempt), as long as our claim is still
                // the latest (another worker's request of the attempt may yet be executed).
                self.attempt_answered(&claimed, None, |p, now| {
                    p.attempt_declined(
                        &code,
                        &message,
                        true,
                        None,
                        retry_base,
                        Cause::new("stripe", now),
                    )
                })
                .await
            }
            Err(StripeFailure::Unauthorized { code, message }) => {
                tracing::error!(payout_id = %claimed.id, %code, %message, "Stripe refused our credentials");
                let description = format!(
                    "Stripe refused the transfer request of payout {} with {code}: {message}. \
                     Nothing was sent; the payout waits until STRIPE_SECRET_KEY is fixed.",
                    claimed.id
                );
                self.attempt_answered(&claimed, None, |p, now| {
                    p.attempt_deferred(
                        prior_unknown,
                        Some(("stripe_credentials_refused", description.clone())),
                        now,
                    )
                })
                .await
            }
            Err(StripeFailure::Unknown { message }) => {
                tracing::warn!(payout_id = %claimed.id, %message, "transfer outcome unknown");
                self.attempt_answered(&claimed, None, |p, now| {
                    p.outcome_still_unknown(
                        &message,
                        self.unknown_alert_after,
                        Cause::new("stripe", now),
                    )
                })
                .await
            }
        }
    }

    /// Records what an attempt concluded on the claimed payout. A transfer Stripe made is
    /// always recorded (adoption is idempotent, whatever happened meanwhile). Any other answer
    /// speaks only for this worker's request: it applies only while this worker's claim is the
    /// payout's latest (once the lease ran out, another worker may have claimed the payout and
    /// sent the same attempt; that worker's answer decides).
    async fn attempt_answered(
        &self,
        claimed: &Payout,
        transfer: Option<&str>,
        outcome: impl Fn(&Payout, DateTime<Utc>) -> Option<Payout>,
    ) -> Result<Payout, ServiceError> {
        let claim = claimed.claims;
        let updated = self
            .apply(claimed.clone(), |p| {
                let same_claim = p.status == PayoutStatus::Pending && p.claims == claim;
                if transfer.is_none() && !same_claim {
                    return None;
                }
                outcome(p, self.clock.now())
            })
            .await?;
        let Some(updated) = updated else {
            return self.fresh(&claimed.id).await;
        };
        match updated.status {
            PayoutStatus::Failed => self.after_failure(&updated),
            PayoutStatus::Completed => self.after_completion(&updated),
            _ => {}
        }
        Ok(updated)
    }

    /// A lookup found transfers of this payout: adopt the one of the current attempt (or the
    /// first), and flag any other as a second payment.
    async fn adopt_found(
        &self,
        claimed: &Payout,
        mut candidates: Vec<SeenTransfer>,
    ) -> Result<Payout, ServiceError> {
        let preferred = candidates
            .iter()
            .position(|t| t.attempt == Some(claimed.attempt))
            .unwrap_or(0);
        let pick = candidates.remove(preferred);
        let retry_base = self.retry_base;
        let mut current = self
            .attempt_answered(claimed, Some(&pick.id), |p, now| {
                p.transfer_seen(
                    &pick,
                    &TransferNews::Exists,
                    retry_base,
                    Cause::new("stripe:lookup", now),
                )
            })
            .await?;
        for other in candidates {
            if let Some(updated) = self
                .apply(current.clone(), |p| {
                    p.transfer_seen(
                        &other,
                        &TransferNews::Exists,
                        retry_base,
                        Cause::new("stripe:lookup", self.clock.now()),
                    )
                })
                .await?
            {
                current = updated;
            }
        }
        Ok(current)
    }

    /// Re-checks just before money moves: the account still takes payouts, and the user's
    /// payable earnings (frozen or refunded ones no longer count) still cover what their
    /// payouts hold.
    async fn payable(&self, payout: &Payout) -> Payable {
        // A change of the quota this payout holds is not confirmed: the limits may have
        // given back part of it (a release sent, its answer not recorded) that must be held
        // again (a transfer failed after a partial reversal). Until they confirm, the re-check
        // could not see it: no money moves.
        if !payout.quota.is_settled() {
            return Payable::Unknown(format!(
                "the limits have not confirmed this payout's quota yet (give back {} cents in total)",
                payout.quota.target_cents
            ));
        }
        let account = match self.accounts.get(&payout.user_id).await {
            Ok(Some(account)) => account,
            Ok(None) => {
                return Payable::No {
                    code: "no_account",
                    reason: format!("no connected account is registered for {}", payout.user_id),
                };
            }
            Err(error) => return Payable::Unknown(error.to_string()),
        };
        let known = (account.stripe_account_id == payout.destination)
            .then(|| account.stripe_status.clone())
            .flatten();
        let status = match known {
            Some(status) => status,
            None => match self.status_from_stripe(&account, &payout.destination).await {
                Ok(status) => status,
                Err(error) if error.kind() == ErrorKind::Unavailable => {
                    return Payable::Unknown(error.to_string());
                }
                Err(error) => {
                    return Payable::No {
                        code: "account_unknown",
                        reason: error.message().to_owned(),
                    };
                }
            },
        };
        if !status.payouts_enabled {
            return Payable::No {
                code: "payouts_disabled",
                reason: format!(
                    "payouts are disabled on connected account {}",
                    payout.destination
                ),
            };
        }
        match self.limits.recheck(&payout.user_id, &payout.id).await {
            Ok(Recheck::Payable) => Payable::Yes,
            Ok(Recheck::NotPayable { reason }) => Payable::No {
                code: "earnings_not_payable",
                reason,
            },
            Err(error) => Payable::Unknown(error.to_string()),
        }
    }

    /// A payout failed: tell the user (its quota is given back through its owed effects).
    pub fn after_failure(&self, payout: &Payout) {
        self.notifier.notify(UserNotice {
            user_id: payout.user_id.clone(),
            kind: "payout_failed",
            title: "Payout failed".to_owned(),
            body: format!(
                "Your payout of {} could not be completed. {}",
                dollars(payout.amount.cents),
                payout.failure_reason.clone().unwrap_or_default()
            ),
            metadata_json:
                serde_json::json!({ "payoutId": payout.id, "failureCode": payout.failure_code })
                    .to_string(),
            dedupe_key: format!("{}:failed", payout.id),
        });
    }

    /// The user is told their payout completed.
    pub fn after_completion(&self, payout: &Payout) {
        self.notifier.notify(UserNotice {
            user_id: payout.user_id.clone(),
            kind: "payout_completed",
            title: "Payout completed".to_owned(),
            body: format!("Your payout of {} has been sent to your bank account.", dollars(payout.amount.cents)),
            metadata_json: serde_json::json!({ "payoutId": payout.id, "transferId": payout.stripe_transfer_id }).to_string(),
            dedupe_key: format!("{}:completed", payout.id),
        });
    }

    /// An admin's decision on a payout held for approval. Exactly one decision applies; a
    /// repeat of the decision carried out answers with the payout as it is now.
    pub async fn resolve_approval(
        &self,
        payout_id: &str,
        approved: bool,
        reviewer: &str,
        notes: &str,
    ) -> Result<Payout, ServiceError> {
        let payout = self
            .payouts
            .get(payout_id)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("payout {payout_id} not found")))?;
        if payout.carries_decision(approved) {
            return Ok(payout);
        }
        if payout.carries_decision(!approved) {
            return Err(ServiceError::conflict(format!(
                "payout {payout_id} was already {}",
                if approved { "rejected" } else { "approved" }
            )));
        }
        let now = self.clock.now();
        let decided = self
            .apply(payout.clone(), |p| {
                p.decided(approved, reviewer, notes, now)
            })
            .await?
            .ok_or_else(|| {
                ServiceError::conflict(format!(
                    "payout {payout_id} is {}, not pending approval",
                    payout.status.as_str()
                ))
            })?;
        if approved {
            self.notifier.notify(UserNotice {
                user_id: decided.user_id.clone(),
                kind: "payout_approved",
                title: "Payout Approved".to_owned(),
                body: format!(
                    "Your payout of {} has been approved and is being processed.",
                    dollars(decided.amount.cents)
                ),
                metadata_json: serde_json::json!({ "payoutId": decided.id }).to_string(),
                dedupe_key: format!("{}:approved", decided.id),
            });
            // The transfer re-checks that the money is still payable before it moves.
            self.transfer(decided).await
        } else {
            self.notifier.notify(UserNotice {
                user_id: decided.user_id.clone(),
                kind: "payout_rejected",
                title: "Payout Rejected".to_owned(),
                body: format!(
                    "Your payout of {} has been rejected. Reason: {notes}",
                    dollars(decided.amount.cents)
                ),
                metadata_json: serde_json::json!({ "payoutId": decided.id }).to_string(),
                dedupe_key: format!("{}:rejected", decided.id),
            });
            Ok(decided)
        }
    }

    /// An admin takes (part of) a payout's money back from the creator's Stripe account, as
    /// a new confirmation (a fresh `Idempotency-Key`): see [`PayoutFlow::request_reversal`].
    /// A repeat of this call is another reversal (409 while this one is unresolved).
    pub async fn reverse(
        &self,
        payout_id: &str,
        cents: i64,
        notes: &str,
        actor: &str,
    ) -> Result<Payout, ServiceError> {
        let client_key = self.ids.next("confirmation");
        self.request_reversal(payout_id, &client_key, cents, notes, actor)
            .await
    }

    /// An admin's reversal under their `Idempotency-Key` (one per confirmation): recorded on
    /// the payout as an intent before Stripe is asked, then made under a Stripe key derived
    /// from the intent and the transfer only. The same key returns the same intent's outcome
    /// (an unresolved one is first looked up in the transfer's reversals, then sent again
    /// under the same Stripe key, which Stripe replays); the same key with another amount
    /// is AlreadyExists. Another reversal while one is unresolved is Conflict naming it.
    /// Unavailable when Stripe's answer was lost (the intent stays unknown; repeat the same
    /// request, or wait for the worker's lookup); FailedPrecondition when Stripe refused it
    /// or nothing is left to reverse.
    pub async fn request_reversal(
        &self,
        payout_id: &str,
        client_key: &str,
        cents: i64,
        notes: &str,
        actor: &str,
    ) -> Result<Payout, ServiceError> {
        let Some(stripe) = self.stripe.clone() else {
            return Err(ServiceError::failed_precondition(
                "Stripe is not configured (STRIPE_SECRET_KEY): nothing can be reversed",
            ));
        };
        if client_key.trim().is_empty() || client_key.len() > 255 {
            return Err(ServiceError::invalid_argument(
                "Idempotency-Key (client_request_id) is required: 1 to 255 characters, one per confirmation",
            ));
        }
        if notes.trim().is_empty() {
            return Err(ServiceError::invalid_argument(
                "notes are required: say why the money is taken back",
            ));
        }
        for _ in 0..MAX_CAS_ATTEMPTS {
            let payout = self.fresh_or_missing(payout_id).await?;
            if let Some(intent) = payout.reversal_by_key(client_key) {
                if intent.cents != cents {
                    return Err(ServiceError::already_exists(format!(
                        "Idempotency-Key {client_key:?} was used for reversal {} of {} cents of payout {payout_id}; this request asks for {cents}",
                        intent.id, intent.cents
                    )));
                }
                let intent_id = intent.id.clone();
                return self.drive_reversal(&stripe, payout, &intent_id, true).await;
            }
            let now = self.clock.now();
            let recorded = payout
                .reversal_requested(client_key, cents, notes, Cause::new(actor, now))
                .map_err(|refusal| reversal_refusal_error(&payout.id, refusal))?;
            let intent_id = recorded
                .reversal_intents
                .last()
                .map(|intent| intent.id.clone())
                .unwrap_or_default();
            match self.commit(&payout, recorded).await {
                Ok(recorded) => {
                    return self
                        .drive_reversal(&stripe, recorded, &intent_id, false)
                        .await;
                }
                // Another request changed the payout first (maybe another admin's intent):
                // decide again on a fresh read.
                Err(error) if error.kind() == ErrorKind::Conflict => continue,
                Err(error) => return Err(error),
            }
        }
        Err(ServiceError::unavailable(
            "the payout keeps changing; send the same request again",
            anyhow::anyhow!("{MAX_CAS_ATTEMPTS} compare-and-set rounds lost"),
        ))
    }

    async fn fresh_or_missing(&self, payout_id: &str) -> Result<Payout, ServiceError> {
        self.payouts
            .get(payout_id)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("payout {payout_id} not found")))
    }

    /// Carries an intent to its outcome: a resolved one answers what it concluded; an
    /// unresolved one that was sent before (`repeat`) is first looked up in the transfer's
    /// reversals; then its request is sent (again) under the intent's Stripe key.
    async fn drive_reversal(
        &self,
        stripe: &Arc<dyn StripeApi>,
        payout: Payout,
        intent_id: &str,
        repeat: bool,
    ) -> Result<Payout, ServiceError> {
        let mut payout = payout;
        let Some(intent) = payout.reversal_intent(intent_id).cloned() else {
            return Err(ServiceError::internal(anyhow::anyhow!(
                "reversal intent {intent_id} vanished from payout {}",
                payout.id
            )));
        };
        if intent.state.is_resolved() {
            return reversal_outcome(payout, intent_id);
        }
        if repeat {
            // It may have been made already: Stripe's list of the transfer's reversals says.
            if let Some(concluded) = self.look_up_reversal(stripe, &payout, &intent).await? {
                return reversal_outcome(concluded, intent_id);
            }
            // Not listed, inside Stripe's idempotency window: the same request again is
            // safe (Stripe replays the first answer under the key, or makes it once).
            let now = self.clock.now();
            let payout_id = payout.id.clone();
            payout = match self
                .apply(payout, |p| p.reversal_resent(intent_id, now))
                .await?
            {
                Some(resent) => resent,
                // Resolved meanwhile: that is the answer.
                None => return reversal_outcome(self.fresh(&payout_id).await?, intent_id),
            };
        }
        let request = ReversalRequest {
            transfer_id: intent.transfer_id.clone(),
            cents: intent.cents,
            idempotency_key: intent.idempotency_key(),
            payout_id: payout.id.clone(),
            actor: intent.requested_by.clone(),
            intent_id: intent.id.clone(),
        };
        let outcome = match stripe.reverse_transfer(&request).await {
            Ok(reversal_id) => {
                // Stripe's running total after it; at least what we knew before plus this.
                let before = payout.amount_reversed_cents + intent.cents;
                let total = match stripe.retrieve_transfer(&intent.transfer_id).await {
                    Ok(seen) => seen.amount_reversed_cents.max(before),
                    Err(_) => before,
                };
                tracing::info!(payout_id = %payout.id, intent = %intent.id, reversal_id = %reversal_id, cents = intent.cents, actor = %intent.requested_by, "transfer reversed by an admin");
                metrics::counter!("payouts_admin_reversals_total").increment(1);
                metrics::counter!("payouts_admin_reversed_cents_total")
                    .increment(intent.cents.unsigned_abs());
                ReversalOutcome::Made {
                    reversal_id,
                    total_reversed_cents: total,
                }
            }
            Err(StripeFailure::Declined { code, message, .. }) => ReversalOutcome::Refused {
                reason: format!("Stripe refused it ({code}: {message})"),
            },
            // No answer, a 5xx, a 429 or refused credentials after an earlier request
            // under the same key: what Stripe did is not known from this answer.
            Err(other) => {
                tracing::warn!(payout_id = %payout.id, intent = %intent.id, failure = %other.describe(), "reversal outcome unknown");
                ReversalOutcome::Unknown {
                    message: other.describe(),
                }
            }
        };
        let now = self.clock.now();
        let recorded = self
            .apply(payout.clone(), |p| {
                p.reversal_answered(intent_id, &outcome, Cause::new("stripe", now))
            })
            .await?;
        let current = match recorded {
            Some(recorded) => recorded,
            // Resolved meanwhile (the worker's lookup), or already unknown.
            None => self.fresh(&payout.id).await?,
        };
        reversal_outcome(current, intent_id)
    }

    /// Looks an unresolved intent up in the transfer's reversals (its id is in their
    /// metadata) and records what that concludes: made, or not made once Stripe's
    /// idempotency window has passed. `None` when it concludes nothing yet.
    async fn look_up_reversal(
        &self,
        stripe: &Arc<dyn StripeApi>,
        payout: &Payout,
        intent: &ReversalIntent,
    ) -> Result<Option<Payout>, ServiceError> {
        let found = listed_reversal(stripe, intent).await?;
        let now = self.clock.now();
        self.apply(payout.clone(), |p| {
            p.reversal_looked_up(&intent.id, found.clone(), Cause::new("stripe:lookup", now))
        })
        .await
    }

    /// The worker's look at an unresolved reversal intent whose request is not in flight any
    /// more (see [`Payout::reversal_looked_up`]). Written here, not through `commit` (which
    /// settles, which brought us here); the rest of `settle` goes on from it. Returns the
    /// payout as it is after the look, or unchanged when nothing was concluded (still owed).
    async fn resolve_reversal(&self, payout: &Payout) -> Payout {
        let (Some(stripe), Some(intent)) = (self.stripe.clone(), payout.unresolved_reversal())
        else {
            return payout.clone();
        };
        if self.clock.now() - intent.last_sent_at < REVERSAL_IN_FLIGHT {
            return payout.clone();
        }
        let found = match listed_reversal(&stripe, intent).await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(payout_id = %payout.id, intent = %intent.id, error = %error, "reversal intent not resolved yet");
                return payout.clone();
            }
        };
        let cause = Cause::new("stripe:lookup", self.clock.now());
        let Some(concluded) = payout.reversal_looked_up(&intent.id, found, cause) else {
            return payout.clone();
        };
        match self.payouts.replace(&concluded, payout.version).await {
            Ok(()) => concluded,
            Err(error) => {
                tracing::warn!(payout_id = %payout.id, error = %error, "reversal intent not resolved yet");
                payout.clone()
            }
        }
    }

    /// An admin resumes a parked payout.
    pub async fn resume(&self, payout_id: &str, by: &str) -> Result<Payout, ServiceError> {
        let payout = self
            .payouts
            .get(payout_id)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("payout {payout_id} not found")))?;
        let now = self.clock.now();
        self.apply(payout.clone(), |p| p.resumed(by, now))
            .await?
            .ok_or_else(|| {
                ServiceError::failed_precondition(format!(
                    "payout {payout_id} is not parked (it is {})",
                    payout.status.as_str()
                ))
            })
    }

    /// Changes the transfer pause (see [`crate::pause`] for who overrides whom) and raises
    /// its alert. The pause as it is afterwards.
    pub async fn set_pause(&self, change: &PauseChange) -> Result<TransferPause, ServiceError> {
        self.set_pause_expecting(change, None).await
    }

    /// [`Self::set_pause`], applied only while the pause's cause is `expected` (when given):
    /// otherwise FAILED_PRECONDITION naming the cause in force, and nothing changes. An
    /// admin's resume names the cause it lifts, so the same resume sent again after a lost
    /// answer does not also lift the pause the first one left in force.
    pub async fn set_pause_expecting(
        &self,
        change: &PauseChange,
        expected: Option<PauseCause>,
    ) -> Result<TransferPause, ServiceError> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let pause = self.pause.get().await?;
            if let Some(expected) = expected
                && pause.cause != Some(expected)
            {
                return Err(ServiceError::failed_precondition(format!(
                    "the transfer pause is {} now, not {}: nothing changed (look at it again \
                     and decide on what is in force)",
                    pause
                        .cause
                        .map_or("off (transfers run)", PauseCause::as_str),
                    expected.as_str()
                )));
            }
            let Some(changed) = pause.changed(change, self.clock.now()) else {
                return self.settle_pause_alert(pause).await;
            };
            match self.pause.put(&changed, pause.version).await {
                Ok(()) => {
                    tracing::warn!(
                        paused = changed.paused(),
                        by = %changed.changed_by,
                        reason = %changed.reason,
                        "transfer pause changed"
                    );
                    crate::record_pause_gauge(&changed);
                    return self.settle_pause_alert(changed).await;
                }
                Err(error) if error.kind() == ErrorKind::Conflict => continue,
                Err(error) => return Err(error),
            }
        }
        Err(ServiceError::unavailable(
            "the transfer pause keeps changing; try again",
            anyhow::anyhow!("{MAX_CAS_ATTEMPTS} compare-and-set rounds lost"),
        ))
    }

    /// Raises the alert the pause's last change owes, if it is still owed. An alert that
    /// cannot be raised now stays owed (the next worker pass tries again).
    async fn settle_pause_alert(
        &self,
        pause: TransferPause,
    ) -> Result<TransferPause, ServiceError> {
        if !pause.alert_owed() {
            return Ok(pause);
        }
        let alert = pause.alert();
        let data = serde_json::json!({
            "paused": pause.paused(),
            "cause": pause.cause.map(|cause| cause.as_str()),
            "changedBy": pause.changed_by,
            "reason": pause.reason,
        })
        .to_string();
        if let Err(error) = self.alerts.raise(&alert, data).await {
            tracing::warn!(%error, "the transfer pause's alert is owed");
            return Ok(pause);
        }
        let alerted = pause.alerted();
        match self.pause.put(&alerted, pause.version).await {
            Ok(()) => Ok(alerted),
            // Changed meanwhile: the newer change owes its own alert.
            Err(error) if error.kind() == ErrorKind::Conflict => Ok(pause),
            Err(error) => Err(error),
        }
    }

    /// One pass of the worker: due transfers, hand-offs, interrupted admissions, and owed
    /// side effects. Returns how many payouts it worked on.
    pub async fn run_due(&self) -> Result<usize, ServiceError> {
        let now = self.clock.now();
        let mut handled = 0;
        self.settle_pause_alert(self.pause.get().await?).await?;
        for payout in self
            .payouts
            .due(PayoutStatus::Pending, now, DUE_BATCH)
            .await?
        {
            handled += 1;
            if let Err(error) = self.transfer(payout.clone()).await {
                tracing::warn!(payout_id = %payout.id, error = %error, "transfer attempt failed");
            }
        }
        for payout in self
            .payouts
            .due(PayoutStatus::PendingApproval, now, DUE_BATCH)
            .await?
        {
            handled += 1;
            self.hand_off(payout).await;
        }
        for payout in self
            .payouts
            .due(PayoutStatus::Admitting, now, DUE_BATCH)
            .await?
        {
            handled += 1;
            if let Err(error) = self.admit(payout.clone(), None).await {
                tracing::warn!(payout_id = %payout.id, error = %error, "resumed admission failed");
            }
        }
        handled += self.run_due_bank_looks(now, DUE_BATCH).await?;
        for payout in self.payouts.due_effects(now, DUE_BATCH).await? {
            handled += 1;
            if let Err(error) = self.settle(&payout).await {
                tracing::debug!(payout_id = %payout.id, error = %error, "side effects not settled in this pass");
            }
        }
        Ok(handled)
    }

    /// The worker loop; safe with several replicas (claims are compare-and-set).
    pub async fn run_worker(self: Arc<Self>, shutdown: Shutdown) {
        let stop = shutdown.requested();
        tokio::pin!(stop);
        loop {
            if let Err(error) = self.run_due().await {
                tracing::warn!(error = %error, "payout worker pass failed");
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }
}

/// The limits' figures of a held payout, for the approval queue (design §7 metadata).
fn hold_metadata_json(decision: &payouts_proto::limits::v1::LimitDecision) -> String {
    use payouts_runtime::convert::cents;
    let metadata = decision.metadata.clone().unwrap_or_default();
    serde_json::json!({
        "isNewAccount": metadata.is_new_account,
        "accountAgeDays": metadata.account_age_days,
        "dailyPayoutCount": metadata.daily_payout_count,
        "dailyPayoutAmount": cents(metadata.daily_payout_amount.as_ref()),
        "monthlyPayoutAmount": cents(metadata.monthly_payout_amount.as_ref()),
        "lifetimeEarnings": cents(metadata.lifetime_earnings.as_ref()),
        "dailyAttemptCount": metadata.daily_attempt_count,
    })
    .to_string()
}

/// The decision a stored payout was admitted with (for a repeated request).
fn stored_decision(payout: &Payout) -> payouts_proto::limits::v1::LimitDecision {
    use payouts_proto::limits::v1::PayoutFlag;
    payouts_proto::limits::v1::LimitDecision {
        allowed: true,
        requires_approval: payout.held,
        flags: payout
            .flags
            .iter()
            .filter_map(|flag| PayoutFlag::from_str_name(&format!("PAYOUT_FLAG_{flag}")))
            .map(i32::from)
            .collect(),
        reason: payout.hold_reason.clone().unwrap_or_default(),
        metadata: None,
    }
}

/// A payout to an account whose payouts Stripe disabled is refused with the reason.
fn check_account(
    stripe_account_id: &str,
    status: &StripeAccountStatus,
) -> Result<(), ServiceError> {
    if status.payouts_enabled {
        return Ok(());
    }
    let due = if status.requirements_currently_due.is_empty() {
        String::new()
    } else {
        format!(
            "; requirements currently due: {}",
            status.requirements_currently_due.join(", ")
        )
    };
    Err(ServiceError::failed_precondition(format!(
        "payouts are disabled on connected account {stripe_account_id}{due}"
    )))
}

/// The answer to an admin's reversal request, from where its intent stands.
fn reversal_outcome(payout: Payout, intent_id: &str) -> Result<Payout, ServiceError> {
    let Some(intent) = payout.reversal_intent(intent_id) else {
        return Err(ServiceError::internal(anyhow::anyhow!(
            "reversal intent {intent_id} vanished from payout {}",
            payout.id
        )));
    };
    match &intent.state {
        ReversalState::Succeeded { .. } => Ok(payout),
        ReversalState::Refused { reason } => Err(ServiceError::failed_precondition(format!(
            "reversal {} of {} cents was not made: {reason}",
            intent.id, intent.cents
        ))),
        ReversalState::Pending | ReversalState::Unknown { .. } => Err(ServiceError::unavailable(
            format!(
                "Stripe's answer was lost, so reversal {} of {} cents is unresolved (it may have been made); send the same request again with the same Idempotency-Key (it cannot reverse twice), or wait: it is looked up in the transfer's reversals",
                intent.id, intent.cents
            ),
            anyhow::anyhow!("reversal outcome unknown"),
        )),
    }
}

/// Why a reversal could not be recorded, as the caller's error.
fn reversal_refusal_error(payout_id: &str, refusal: ReversalRefusal) -> ServiceError {
    match refusal {
        ReversalRefusal::NothingToReverse(why) => {
            ServiceError::failed_precondition(format!("nothing left to reverse: {why}"))
        }
        ReversalRefusal::BadAmount { left } => ServiceError::invalid_argument(format!(
            "amountCents must be between 1 and {left} (what is left to reverse of payout {payout_id})"
        )),
        ReversalRefusal::Unresolved(intent) => ServiceError::conflict(format!(
            "reversal {} of {} cents requested by {} at {} is unresolved ({}): no other reversal of payout {payout_id} until Stripe says what became of it (repeat that request with its Idempotency-Key, or wait for the lookup)",
            intent.id,
            intent.cents,
            intent.requested_by,
            intent.created_at.to_rfc3339(),
            intent.state.as_str()
        )),
    }
}

/// The reversal of the transfer whose metadata names the intent, with the transfer's running
/// total (the sum of its reversals), if Stripe lists one. Unavailable when it cannot be
/// listed (nothing is concluded from that).
async fn listed_reversal(
    stripe: &Arc<dyn StripeApi>,
    intent: &ReversalIntent,
) -> Result<Option<(String, i64)>, ServiceError> {
    let listed = stripe
        .list_reversals(&intent.transfer_id)
        .await
        .map_err(|failure| {
            ServiceError::unavailable(
                format!(
                    "reversal {} of {} cents is unresolved and Stripe's reversals of {} could not be listed; send the same request again later (it cannot reverse twice)",
                    intent.id, intent.cents, intent.transfer_id
                ),
                anyhow::anyhow!("{}", failure.describe()),
            )
        })?;
    let total: i64 = listed.iter().map(|reversal| reversal.cents).sum();
    Ok(listed
        .iter()
        .find(|reversal| reversal.intent_id.as_deref() == Some(intent.id.as_str()))
        .map(|reversal| (reversal.id.clone(), total)))
}
