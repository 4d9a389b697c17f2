//! The payout flow: request (admission against the limits), transfer (exactly one Stripe
//! transfer per attempt), approval decisions, and the worker that retries due transfers and
//! recovers interrupted admissions. Every state change is a compare-and-set on the payout,
//! carrying its audit record in the same write.

use std::sync::Arc;

use chrono::Duration;
use payouts_runtime::money::dollars;
use payouts_runtime::shutdown::Shutdown;
use payouts_runtime::{Clock, ErrorKind, Money, ServiceError};

use crate::domain::Account;
use crate::payout::{Payout, PayoutStatus, Transition, transfer_group, transfer_idempotency_key};
use crate::ports::{ApprovalsPort, LimitsPort, Notifier, UserNotice};
use crate::store::{AccountRepository, Inserted, PayoutRepository};
use crate::stripe::{StripeTransfers, TransferRequest};

/// How long a transfer worker holds a payout before another may take it over.
pub const TRANSFER_LEASE: Duration = Duration::minutes(2);
/// How long an admission may be in progress before the worker resumes it.
pub const ADMISSION_GRACE: Duration = Duration::minutes(1);

/// The answer to a payout request.
#[derive(Debug, Clone, PartialEq)]
pub struct Requested {
    /// The payout, when admitted (or found under the idempotency key).
    pub payout: Option<Payout>,
    pub decision: payouts_proto::limits::v1::LimitDecision,
}

/// The payouts service core.
pub struct PayoutFlow {
    pub accounts: Arc<dyn AccountRepository>,
    pub payouts: Arc<dyn PayoutRepository>,
    pub limits: Arc<dyn LimitsPort>,
    pub approvals: Arc<dyn ApprovalsPort>,
    pub notifier: Arc<dyn Notifier>,
    /// `None` when STRIPE_SECRET_KEY is unset.
    pub stripe: Option<Arc<dyn StripeTransfers>>,
    pub clock: Arc<dyn Clock>,
    pub poll_interval: std::time::Duration,
    /// First retry delay (spec: 5 minutes), doubling after each failure.
    pub retry_base: Duration,
}

impl PayoutFlow {
    /// Writes a transition (compare-and-set on the version it started from) and projects
    /// its audit record.
    pub async fn commit(
        &self,
        from: &Payout,
        transition: Transition,
    ) -> Result<Payout, ServiceError> {
        self.payouts
            .replace(&transition.payout, from.version)
            .await?;
        if let Err(error) = self
            .payouts
            .project_audit(std::slice::from_ref(&transition.audit))
            .await
        {
            // The audit record is already in the payout itself; the projection catches up on
            // the payout's next write.
            tracing::warn!(payout_id = %from.id, error = %error, "audit projection lagging");
        }
        tracing::info!(
            payout_id = %from.id,
            from = from.status.as_str(),
            to = transition.payout.status.as_str(),
            event = %transition.audit.event_type,
            "payout state changed"
        );
        metrics::counter!("payouts_payout_transitions_total", "to" => transition.payout.status.as_str()).increment(1);
        Ok(transition.payout)
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
        let candidate = Payout {
            id: format!("payout_{}", uuid::Uuid::now_v7().simple()),
            user_id: user_id.to_owned(),
            amount,
            status: PayoutStatus::Admitting,
            idempotency_key: idempotency_key.to_owned(),
            destination: account.stripe_account_id.clone(),
            stripe_transfer_id: None,
            stripe_payout_id: None,
            approval_required: false,
            flags: Vec::new(),
            hold_reason: None,
            hold_metadata_json: None,
            attempt: 0,
            retry_count: 0,
            next_retry_at: Some(now + ADMISSION_GRACE),
            outcome_unknown: false,
            failure_code: None,
            failure_reason: None,
            amount_reversed_cents: 0,
            requested_at: now,
            completed_at: None,
            webhook_processed_at: None,
            updated_at: now,
            failed_transfer_ids: Vec::new(),
            applied_events: Vec::new(),
            audit_log: Vec::new(),
            version: 1,
        };
        // The same key returns the same payout; the same key for another amount is refused.
        if let Some(existing) = self.existing(&candidate).await? {
            return Ok(existing);
        }
        check_account(&account)?;
        if self.stripe.is_none() {
            return Err(ServiceError::failed_precondition(
                "Stripe is not configured (STRIPE_SECRET_KEY)",
            ));
        }
        match self.payouts.insert(&candidate).await? {
            Inserted::New => {}
            Inserted::Existing(existing) => return self.same_request(*existing, &candidate),
        }
        self.admit(candidate).await
    }

    async fn existing(&self, candidate: &Payout) -> Result<Option<Requested>, ServiceError> {
        let found = self
            .payouts
            .find_by_key(&candidate.user_id, &candidate.idempotency_key)
            .await?;
        found
            .map(|existing| self.same_request(existing, candidate))
            .transpose()
    }

    fn same_request(
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
        let decision = payouts_proto::limits::v1::LimitDecision {
            allowed: true,
            requires_approval: existing.approval_required,
            ..Default::default()
        };
        Ok(Requested {
            payout: Some(existing),
            decision,
        })
    }

    /// Runs (or resumes) the admission of a stored payout.
    async fn admit(&self, payout: Payout) -> Result<Requested, ServiceError> {
        let admission = match self
            .limits
            .reserve(&payout.user_id, &payout.id, &payout.amount)
            .await
        {
            Ok(admission) => admission,
            Err(error) => {
                // Nothing is held for a payout whose admission failed: forget it.
                if error.kind() != ErrorKind::Unavailable {
                    let _ = self.payouts.delete(&payout.id, payout.version).await;
                }
                return Err(error);
            }
        };
        if !admission.reserved {
            self.payouts.delete(&payout.id, payout.version).await?;
            metrics::counter!("payouts_payout_refused_total").increment(1);
            return Ok(Requested {
                payout: None,
                decision: admission.decision,
            });
        }
        let flags = admission
            .decision
            .flags()
            .map(|flag| {
                flag.as_str_name()
                    .trim_start_matches("PAYOUT_FLAG_")
                    .to_owned()
            })
            .collect();
        let now = self.clock.now();
        let mut transition = payout.admitted(
            admission.decision.requires_approval,
            flags,
            &admission.decision.reason,
            now,
        );
        if admission.decision.requires_approval {
            let metadata = admission.decision.metadata.unwrap_or_default();
            transition.payout.hold_metadata_json = Some(
                serde_json::json!({
                    "isNewAccount": metadata.is_new_account,
                    "accountAgeDays": metadata.account_age_days,
                    "dailyPayoutCount": metadata.daily_payout_count,
                    "dailyPayoutAmount": metadata.daily_payout_amount_cents,
                    "monthlyPayoutAmount": metadata.monthly_payout_amount_cents,
                    "lifetimeEarnings": metadata.lifetime_earnings_cents,
                })
                .to_string(),
            );
        }
        let admitted = self.commit(&payout, transition).await?;
        let payout = if admitted.status == PayoutStatus::Pending {
            self.transfer(admitted).await?
        } else {
            self.hand_off(admitted).await
        };
        Ok(Requested {
            payout: Some(payout),
            decision: admission.decision,
        })
    }

    /// Hands a held payout to the approval queue. If the approvals service does not answer,
    /// the payout stays due and the worker hands it off later: no held payout goes unseen.
    pub async fn hand_off(&self, payout: Payout) -> Payout {
        if let Err(error) = self.approvals.queue(&payout).await {
            tracing::warn!(payout_id = %payout.id, error = %error, "approval queue unavailable; will retry");
            return payout;
        }
        let Some(handed) = payout.handed_off(self.clock.now()) else {
            return payout;
        };
        match self.payouts.replace(&handed, payout.version).await {
            Ok(()) => handed,
            // Someone else moved it (a decision may already have arrived): that state stands.
            Err(_) => self
                .payouts
                .get(&payout.id)
                .await
                .ok()
                .flatten()
                .unwrap_or(payout),
        }
    }

    /// Makes the transfer of a due pending payout, unless another worker holds it. Exactly one
    /// Stripe transfer per attempt: the idempotency key names the payout and the attempt, and
    /// an attempt whose outcome is unknown is looked up before anything is created again.
    pub async fn transfer(&self, payout: Payout) -> Result<Payout, ServiceError> {
        let Some(stripe) = &self.stripe else {
            return Err(ServiceError::failed_precondition(
                "Stripe is not configured (STRIPE_SECRET_KEY)",
            ));
        };
        let now = self.clock.now();
        let Some(claimed) = payout.claimed_for_transfer(now, TRANSFER_LEASE) else {
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
        let looked_up = if payout.outcome_unknown || payout.attempt > 0 {
            // A transfer Stripe reported failed is not adopted.
            stripe.find_transfers(&group).await.map(|found| {
                found
                    .into_iter()
                    .find(|id| !claimed.failed_transfer_ids.contains(id))
                    .map(|id| (id, "stripe:lookup"))
            })
        } else {
            Ok(None)
        };
        let result = match looked_up {
            Ok(Some(found)) => Ok(found),
            Ok(None) => {
                let request = TransferRequest {
                    payout_id: claimed.id.clone(),
                    user_id: claimed.user_id.clone(),
                    amount: claimed.amount.clone(),
                    destination: claimed.destination.clone(),
                    idempotency_key: transfer_idempotency_key(&claimed.id, claimed.attempt),
                    transfer_group: group,
                };
                metrics::counter!("payouts_stripe_transfer_requests_total").increment(1);
                stripe
                    .create_transfer(&request)
                    .await
                    .map(|id| (id, "stripe"))
            }
            Err(failure) => Err(failure),
        };
        let now = self.clock.now();
        let transition = match &result {
            Ok((transfer_id, actor)) => claimed.transfer_created(transfer_id, actor, None, now),
            Err(failure) => claimed.transfer_failed(failure, self.retry_base, "stripe", None, now),
        };
        let Some(transition) = transition else {
            return Ok(claimed);
        };
        let updated = self.commit(&claimed, transition).await?;
        if updated.status == PayoutStatus::Failed {
            self.after_failure(&updated).await;
        }
        Ok(updated)
    }

    /// A payout failed: give back its quota unless money left the platform, tell the user.
    pub async fn after_failure(&self, payout: &Payout) {
        if !payout.money_left()
            && let Err(error) = self
                .limits
                .release(
                    &payout.user_id,
                    &payout.id,
                    None,
                    payout.failure_reason.as_deref().unwrap_or("failed"),
                )
                .await
        {
            tracing::error!(payout_id = %payout.id, error = %error, "quota of a failed payout not released; will not be retried automatically");
        }
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

    /// An admin's decision on a payout held for approval. Exactly one decision applies.
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
            // A repeat of a decision already carried out (the approvals service re-drives).
            return Ok(payout);
        }
        let transition = payout
            .decided(approved, reviewer, notes, self.clock.now())
            .ok_or_else(|| {
                ServiceError::conflict(format!(
                    "payout {payout_id} is {}, not pending approval",
                    payout.status.as_str()
                ))
            })?;
        let decided = self.commit(&payout, transition).await?;
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
            self.transfer(decided).await
        } else {
            if let Err(error) = self
                .limits
                .release(&decided.user_id, &decided.id, None, "rejected by admin")
                .await
            {
                tracing::error!(payout_id = %decided.id, error = %error, "quota of a rejected payout not released");
            }
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

    /// One pass of the worker: due transfers, and admissions interrupted by a crash.
    pub async fn run_due(&self) -> Result<usize, ServiceError> {
        let now = self.clock.now();
        let mut handled = 0;
        for payout in self.payouts.due(PayoutStatus::Pending, now, 32).await? {
            handled += 1;
            if let Err(error) = self.transfer(payout.clone()).await {
                tracing::warn!(payout_id = %payout.id, error = %error, "transfer attempt failed");
            }
        }
        for payout in self
            .payouts
            .due(PayoutStatus::PendingApproval, now, 32)
            .await?
        {
            handled += 1;
            self.hand_off(payout).await;
        }
        for payout in self.payouts.due(PayoutStatus::Admitting, now, 32).await? {
            handled += 1;
            if let Err(error) = self.admit(payout.clone()).await {
                tracing::warn!(payout_id = %payout.id, error = %error, "resumed admission failed");
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

/// A payout to an account whose payouts Stripe disabled is refused with the reason.
fn check_account(account: &Account) -> Result<(), ServiceError> {
    match &account.stripe_status {
        Some(status) if !status.payouts_enabled => {
            let due = if status.requirements_currently_due.is_empty() {
                String::new()
            } else {
                format!(
                    "; requirements currently due: {}",
                    status.requirements_currently_due.join(", ")
                )
            };
            Err(ServiceError::failed_precondition(format!(
                "payouts are disabled on connected account {}{due}",
                account.stripe_account_id
            )))
        }
        _ => Ok(()),
    }
}
