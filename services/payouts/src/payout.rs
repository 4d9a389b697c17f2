//! Payouts and their state machine, pure.
//!
//! ```text
//!  admitting ──> pending_approval ──approve──> pending ──transfer──> processing ──> completed
//!      │               │                        │  ^                     │              │
//!      │               └──reject──> failed <────┘  └─retry (backoff)─────┘              │
//!      └──refused: deleted                                                               │
//!  processing | completed ──transfer.reversed (full)──> reversed                         │
//!  processing | completed ──bank payout failed──> failed  (money stays with the creator's │
//!                                                         Stripe account)  <─────────────┘
//! ```
//!
//! States only move forward (by rank); the documented edges above are the only others. A late
//! or out-of-order Stripe event that would move a payout backwards changes nothing.

use chrono::{DateTime, Duration, Utc};
use payouts_runtime::Money;

/// Transfer attempts before a payout fails for good (spec §2: at most 3 retries).
pub const MAX_RETRIES: u32 = 3;

/// How many applied Stripe event ids a payout remembers, to ignore redeliveries.
const REMEMBERED_EVENTS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PayoutStatus {
    /// Stored, limits not yet decided (internal; a crash here is recovered by re-admission).
    Admitting,
    PendingApproval,
    /// Admitted; a transfer is being made or will be retried.
    Pending,
    /// The transfer exists in Stripe.
    Processing,
    Completed,
    Failed,
    Reversed,
}

impl PayoutStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PayoutStatus::Admitting => "admitting",
            PayoutStatus::PendingApproval => "pending_approval",
            PayoutStatus::Pending => "pending",
            PayoutStatus::Processing => "processing",
            PayoutStatus::Completed => "completed",
            PayoutStatus::Failed => "failed",
            PayoutStatus::Reversed => "reversed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            PayoutStatus::Admitting,
            PayoutStatus::PendingApproval,
            PayoutStatus::Pending,
            PayoutStatus::Processing,
            PayoutStatus::Completed,
            PayoutStatus::Failed,
            PayoutStatus::Reversed,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }

    /// Position in the forward order; terminal states rank highest.
    fn rank(self) -> u8 {
        match self {
            PayoutStatus::Admitting => 0,
            PayoutStatus::PendingApproval => 1,
            PayoutStatus::Pending => 2,
            PayoutStatus::Processing => 3,
            PayoutStatus::Completed => 4,
            PayoutStatus::Failed | PayoutStatus::Reversed => 5,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, PayoutStatus::Failed | PayoutStatus::Reversed)
    }
}

/// A payout (usdPayouts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payout {
    pub id: String,
    pub user_id: String,
    pub amount: Money,
    pub status: PayoutStatus,
    /// The caller's key: the same key returns the same payout.
    pub idempotency_key: String,
    /// The connected account the money goes to.
    pub destination: String,
    pub stripe_transfer_id: Option<String>,
    /// The creator's bank payout that carried the money, when known.
    pub stripe_payout_id: Option<String>,
    pub approval_required: bool,
    pub flags: Vec<String>,
    /// Transfer attempt number; part of the Stripe idempotency key. A definite failure moves
    /// to the next attempt (new key); an unknown outcome keeps it (same key).
    pub attempt: u32,
    /// Failed transfer attempts so far (spec: retryCount).
    pub retry_count: u32,
    /// When a transfer is due (a retry, or a lease that ran out).
    pub next_retry_at: Option<DateTime<Utc>>,
    /// A transfer request whose outcome we do not know yet (timeout, lost response).
    pub outcome_unknown: bool,
    pub failure_code: Option<String>,
    pub failure_reason: Option<String>,
    pub amount_reversed_cents: i64,
    pub requested_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub webhook_processed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// Stripe events already applied (the most recent few).
    pub applied_events: Vec<String>,
    /// Every state change, oldest first: written in the same compare-and-set as the change
    /// itself, so no change is ever without its record.
    pub audit_log: Vec<AuditEntry>,
    pub version: i64,
}

/// The Stripe idempotency key of a transfer attempt: derived from our ids only, so a retry
/// of the same attempt can never create a second transfer.
pub fn transfer_idempotency_key(payout_id: &str, attempt: u32) -> String {
    format!("payout-{payout_id}-attempt-{attempt}")
}

/// The transfer group naming the payout, for looking a transfer up when a response was lost.
pub fn transfer_group(payout_id: &str) -> String {
    format!("payout_{payout_id}")
}

/// One audit record: what, from -> to, why, who/which event, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: String,
    pub payout_id: String,
    pub event_type: String,
    pub from_status: Option<PayoutStatus>,
    pub to_status: PayoutStatus,
    pub reason: String,
    pub actor: String,
    pub stripe_event_id: Option<String>,
    pub transfer_id: Option<String>,
    pub amount_cents: i64,
    pub timestamp: DateTime<Utc>,
}

/// A change to apply, and the audit record it leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub payout: Payout,
    pub audit: AuditEntry,
}

/// Why a transfer attempt did not create a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferFailure {
    /// Stripe refused for good (e.g. `account_invalid`).
    Permanent { code: String, message: String },
    /// Stripe refused but a later attempt may pass (spec §2 codes, 429, 5xx).
    Retryable { code: String, message: String },
    /// No answer, or an answer we could not read: the transfer may exist.
    Unknown { message: String },
}

/// Stripe error codes the spec retries (plus Stripe's own transient ones).
pub fn is_retryable_code(code: &str) -> bool {
    matches!(
        code,
        "account_closed"
            | "insufficient_funds"
            | "balance_insufficient"
            | "debit_not_authorized"
            | "generic_decline"
            | "processing_error"
            | "rate_limit"
            | "lock_timeout"
            | "api_error"
            | "could_not_process"
    )
}

/// Spec §2 backoff after the n-th failure: 5, 10, 20 minutes.
pub fn retry_delay(retry_count: u32) -> Duration {
    Duration::minutes(5 * (1_i64 << retry_count.saturating_sub(1).min(10)))
}

impl Payout {
    /// Whether money left the platform for good: a transfer exists and was not reversed.
    /// Quota is released only when it did not (rejected, failed before a transfer, reversed).
    pub fn money_left(&self) -> bool {
        self.stripe_transfer_id.is_some() && self.status != PayoutStatus::Reversed
    }

    fn moved(
        &self,
        to: PayoutStatus,
        event_type: &str,
        reason: String,
        actor: &str,
        stripe_event_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Transition {
        let mut payout = self.clone();
        payout.status = to;
        payout.updated_at = now;
        payout.version += 1;
        if let Some(event_id) = stripe_event_id {
            payout.applied_events.push(event_id.to_owned());
            if payout.applied_events.len() > REMEMBERED_EVENTS {
                payout.applied_events.remove(0);
            }
            payout.webhook_processed_at = Some(now);
        }
        let audit = AuditEntry {
            id: uuid::Uuid::now_v7().to_string(),
            payout_id: self.id.clone(),
            event_type: event_type.to_owned(),
            from_status: Some(self.status),
            to_status: to,
            reason,
            actor: actor.to_owned(),
            stripe_event_id: stripe_event_id.map(str::to_owned),
            transfer_id: payout.stripe_transfer_id.clone(),
            amount_cents: self.amount.cents,
            timestamp: now,
        };
        payout.audit_log.push(audit.clone());
        Transition { payout, audit }
    }

    /// Whether a move to `to` is allowed: forward by rank, or a documented edge.
    pub fn may_move_to(&self, to: PayoutStatus) -> bool {
        use PayoutStatus::*;
        match (self.status, to) {
            (Processing | Completed, Reversed) => true,
            (Completed, Failed) => true,
            (from, _) if from.is_terminal() => false,
            (from, to) => to.rank() > from.rank(),
        }
    }

    /// Limits decided: admitted to pending or held for approval.
    pub fn admitted(
        &self,
        requires_approval: bool,
        flags: Vec<String>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Transition {
        let to = if requires_approval {
            PayoutStatus::PendingApproval
        } else {
            PayoutStatus::Pending
        };
        let mut transition = self.moved(
            to,
            "admitted",
            reason.to_owned(),
            "service:limits",
            None,
            now,
        );
        transition.payout.approval_required = requires_approval;
        transition.payout.flags = flags;
        if !requires_approval {
            transition.payout.next_retry_at = Some(now);
        }
        transition
    }

    /// An admin's decision on a held payout.
    pub fn decided(
        &self,
        approved: bool,
        reviewer: &str,
        notes: &str,
        now: DateTime<Utc>,
    ) -> Option<Transition> {
        if self.status != PayoutStatus::PendingApproval {
            return None;
        }
        let actor = format!("admin:{reviewer}");
        Some(if approved {
            let mut t = self.moved(
                PayoutStatus::Pending,
                "approved",
                notes.to_owned(),
                &actor,
                None,
                now,
            );
            t.payout.approval_required = false;
            t.payout.next_retry_at = Some(now);
            t
        } else {
            let reason = format!("Rejected by admin: {notes}");
            let mut t = self.moved(
                PayoutStatus::Failed,
                "rejected",
                reason.clone(),
                &actor,
                None,
                now,
            );
            t.payout.failure_reason = Some(reason);
            t.payout.completed_at = Some(now);
            t.payout.next_retry_at = None;
            t
        })
    }

    /// A transfer worker took the payout: leased until `now + lease`, outcome unknown until
    /// Stripe answers.
    pub fn claimed_for_transfer(&self, now: DateTime<Utc>, lease: Duration) -> Option<Payout> {
        let due =
            self.status == PayoutStatus::Pending && self.next_retry_at.is_some_and(|at| at <= now);
        due.then(|| Payout {
            next_retry_at: Some(now + lease),
            outcome_unknown: true,
            updated_at: now,
            version: self.version + 1,
            ..self.clone()
        })
    }

    /// Stripe created the transfer (answered the request, or a lookup found it).
    pub fn transfer_created(
        &self,
        transfer_id: &str,
        actor: &str,
        stripe_event_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Option<Transition> {
        if let Some(event_id) = stripe_event_id
            && self.applied_events.iter().any(|seen| seen == event_id)
        {
            return None;
        }
        if !self.may_move_to(PayoutStatus::Processing) {
            // Late or duplicate: keep the transfer id if we did not know it.
            if self.stripe_transfer_id.is_none() && self.status != PayoutStatus::Failed {
                let mut t = self.moved(
                    self.status,
                    "transfer_created",
                    "transfer id recorded".to_owned(),
                    actor,
                    stripe_event_id,
                    now,
                );
                t.payout.stripe_transfer_id = Some(transfer_id.to_owned());
                return Some(t);
            }
            return None;
        }
        let mut t = self.moved(
            PayoutStatus::Processing,
            "transfer_created",
            format!("transfer {transfer_id} created"),
            actor,
            stripe_event_id,
            now,
        );
        t.payout.stripe_transfer_id = Some(transfer_id.to_owned());
        t.payout.outcome_unknown = false;
        t.payout.next_retry_at = None;
        Some(t)
    }

    /// A transfer attempt failed (Stripe's answer, or a legacy `transfer.failed` event):
    /// retried on the spec's schedule with a new attempt, or failed for good.
    pub fn transfer_failed(
        &self,
        failure: &TransferFailure,
        actor: &str,
        stripe_event_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Option<Transition> {
        if let Some(event_id) = stripe_event_id
            && self.applied_events.iter().any(|seen| seen == event_id)
        {
            return None;
        }
        if !matches!(
            self.status,
            PayoutStatus::Pending | PayoutStatus::Processing
        ) {
            return None;
        }
        match failure {
            TransferFailure::Unknown { message } => {
                // Never fail a transfer whose outcome is unknown: retry the same attempt (same
                // idempotency key) after a short delay.
                let mut t = self.moved(
                    PayoutStatus::Pending,
                    "transfer_outcome_unknown",
                    message.clone(),
                    actor,
                    stripe_event_id,
                    now,
                );
                t.payout.outcome_unknown = true;
                t.payout.next_retry_at = Some(now + Duration::minutes(1));
                Some(t)
            }
            TransferFailure::Retryable { code, message } if self.retry_count < MAX_RETRIES => {
                let retry_count = self.retry_count + 1;
                let reason = format!("{code}: {message}; retry {retry_count} of {MAX_RETRIES}");
                let mut t = self.moved(
                    PayoutStatus::Pending,
                    "transfer_failed",
                    reason,
                    actor,
                    stripe_event_id,
                    now,
                );
                t.payout.retry_count = retry_count;
                t.payout.attempt = self.attempt + 1;
                t.payout.stripe_transfer_id = None;
                t.payout.outcome_unknown = false;
                t.payout.failure_code = Some(code.clone());
                t.payout.next_retry_at = Some(now + retry_delay(retry_count));
                Some(t)
            }
            TransferFailure::Retryable { code, message }
            | TransferFailure::Permanent { code, message } => {
                let reason = format!("{code}: {message}");
                let mut t = self.moved(
                    PayoutStatus::Failed,
                    "transfer_failed",
                    reason.clone(),
                    actor,
                    stripe_event_id,
                    now,
                );
                t.payout.stripe_transfer_id = None;
                t.payout.outcome_unknown = false;
                t.payout.failure_code = Some(code.clone());
                t.payout.failure_reason = Some(reason);
                t.payout.next_retry_at = None;
                t.payout.completed_at = Some(now);
                Some(t)
            }
        }
    }

    /// The money arrived (legacy `transfer.paid`, or the creator's bank payout was paid).
    pub fn paid(
        &self,
        stripe_payout_id: Option<&str>,
        actor: &str,
        stripe_event_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Option<Transition> {
        if let Some(event_id) = stripe_event_id
            && self.applied_events.iter().any(|seen| seen == event_id)
        {
            return None;
        }
        if !self.may_move_to(PayoutStatus::Completed)
            || self.stripe_transfer_id.is_none()
                && stripe_payout_id.is_none()
                && self.status != PayoutStatus::Processing
        {
            return None;
        }
        let mut t = self.moved(
            PayoutStatus::Completed,
            "transfer_paid",
            "funds arrived".to_owned(),
            actor,
            stripe_event_id,
            now,
        );
        t.payout.completed_at = Some(now);
        t.payout.next_retry_at = None;
        if let Some(id) = stripe_payout_id {
            t.payout.stripe_payout_id = Some(id.to_owned());
        }
        Some(t)
    }

    /// The creator's bank payout failed (also after it was paid): the money stays in their
    /// Stripe account; the payout is failed with the bank's code, quota is not given back.
    pub fn bank_payout_failed(
        &self,
        code: &str,
        actor: &str,
        stripe_event_id: &str,
        now: DateTime<Utc>,
    ) -> Option<Transition> {
        if self
            .applied_events
            .iter()
            .any(|seen| seen == stripe_event_id)
        {
            return None;
        }
        if !matches!(
            self.status,
            PayoutStatus::Processing | PayoutStatus::Completed
        ) {
            return None;
        }
        let reason = format!("bank payout failed: {code}");
        let mut t = self.moved(
            PayoutStatus::Failed,
            "payout_failed",
            reason.clone(),
            actor,
            Some(stripe_event_id),
            now,
        );
        t.payout.failure_code = Some(code.to_owned());
        t.payout.failure_reason = Some(reason);
        Some(t)
    }

    /// Stripe reversed (part of) the transfer. A full reversal ends the payout as reversed.
    pub fn reversed(
        &self,
        amount_reversed_cents: i64,
        actor: &str,
        stripe_event_id: &str,
        now: DateTime<Utc>,
    ) -> Option<Transition> {
        if self
            .applied_events
            .iter()
            .any(|seen| seen == stripe_event_id)
        {
            return None;
        }
        // Reversals only grow; a stale event with a smaller total changes nothing.
        if amount_reversed_cents <= self.amount_reversed_cents || self.stripe_transfer_id.is_none()
        {
            return None;
        }
        let full = amount_reversed_cents >= self.amount.cents;
        let to = if full && self.may_move_to(PayoutStatus::Reversed) {
            PayoutStatus::Reversed
        } else {
            self.status
        };
        let reason = format!(
            "{amount_reversed_cents} of {} cents reversed",
            self.amount.cents
        );
        let mut t = self.moved(
            to,
            "transfer_reversed",
            reason,
            actor,
            Some(stripe_event_id),
            now,
        );
        t.payout.amount_reversed_cents = amount_reversed_cents.min(self.amount.cents);
        Some(t)
    }
}
