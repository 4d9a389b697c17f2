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
    /// Why the limits held the payout for approval, and their figures (JSON), for the queue.
    pub hold_reason: Option<String>,
    pub hold_metadata_json: Option<String>,
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
    /// Transfers Stripe reported failed (legacy `transfer.failed`): never adopted by a lookup.
    pub failed_transfer_ids: Vec<String>,
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

/// Spec §2: the first retry comes 5 minutes after the failure, then it doubles.
pub const RETRY_BASE: Duration = Duration::minutes(5);

/// Backoff after the n-th failure: base, 2 x base, 4 x base (5, 10, 20 minutes by default).
pub fn retry_delay(base: Duration, retry_count: u32) -> Duration {
    base * (1_i32 << retry_count.saturating_sub(1).min(10))
}

impl Payout {
    /// Whether money left the platform for good: a transfer exists and was not reversed.
    /// Quota is released only when it did not (rejected, failed before a transfer, reversed).
    pub fn money_left(&self) -> bool {
        self.stripe_transfer_id.is_some() && self.status != PayoutStatus::Reversed
    }

    /// The payout moved to `to`, with `edit` applied, and the audit record of the move (built
    /// after the edit, so it names the transfer the move is about).
    #[allow(clippy::too_many_arguments)]
    fn moved(
        &self,
        to: PayoutStatus,
        event_type: &str,
        reason: String,
        actor: &str,
        stripe_event_id: Option<&str>,
        now: DateTime<Utc>,
        edit: impl FnOnce(&mut Payout),
    ) -> Transition {
        let mut payout = self.clone();
        edit(&mut payout);
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
        self.moved(
            to,
            "admitted",
            reason.to_owned(),
            "service:limits",
            None,
            now,
            |p| {
                p.approval_required = requires_approval;
                p.flags = flags;
                if requires_approval {
                    p.hold_reason = Some(reason.to_owned());
                }
                // Due at once: for the transfer, or for the hand-off to the approval queue.
                p.next_retry_at = Some(now);
            },
        )
    }

    /// The approval queue has the payout: nothing more is due until an admin decides.
    pub fn handed_off(&self, now: DateTime<Utc>) -> Option<Payout> {
        (self.status == PayoutStatus::PendingApproval && self.next_retry_at.is_some()).then(|| {
            Payout {
                next_retry_at: None,
                updated_at: now,
                version: self.version + 1,
                ..self.clone()
            }
        })
    }

    /// Whether an admin's decision was already carried out on this payout (a repeat of the
    /// same decision is answered with the payout as it is).
    pub fn carries_decision(&self, approved: bool) -> bool {
        if approved {
            !self.approval_required
                && matches!(
                    self.status,
                    PayoutStatus::Pending
                        | PayoutStatus::Processing
                        | PayoutStatus::Completed
                        | PayoutStatus::Reversed
                )
                && self.audit_log.iter().any(|e| e.event_type == "approved")
        } else {
            self.status == PayoutStatus::Failed
                && self.audit_log.iter().any(|e| e.event_type == "rejected")
        }
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
            self.moved(
                PayoutStatus::Pending,
                "approved",
                notes.to_owned(),
                &actor,
                None,
                now,
                |p| {
                    p.approval_required = false;
                    p.next_retry_at = Some(now);
                },
            )
        } else {
            let reason = format!("Rejected by admin: {notes}");
            self.moved(
                PayoutStatus::Failed,
                "rejected",
                reason.clone(),
                &actor,
                None,
                now,
                |p| {
                    p.failure_reason = Some(reason);
                    p.completed_at = Some(now);
                    p.next_retry_at = None;
                },
            )
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
                let t = self.moved(
                    self.status,
                    "transfer_created",
                    "transfer id recorded".to_owned(),
                    actor,
                    stripe_event_id,
                    now,
                    |p| {
                        p.stripe_transfer_id = Some(transfer_id.to_owned());
                    },
                );
                return Some(t);
            }
            return None;
        }
        let t = self.moved(
            PayoutStatus::Processing,
            "transfer_created",
            format!("transfer {transfer_id} created"),
            actor,
            stripe_event_id,
            now,
            |p| {
                p.stripe_transfer_id = Some(transfer_id.to_owned());
                p.outcome_unknown = false;
                p.next_retry_at = None;
            },
        );
        Some(t)
    }

    /// A transfer attempt failed (Stripe's answer, or a legacy `transfer.failed` event):
    /// retried on the spec's schedule with a new attempt, or failed for good.
    pub fn transfer_failed(
        &self,
        failure: &TransferFailure,
        retry_base: Duration,
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
                let t = self.moved(
                    PayoutStatus::Pending,
                    "transfer_outcome_unknown",
                    message.clone(),
                    actor,
                    stripe_event_id,
                    now,
                    |p| {
                        p.outcome_unknown = true;
                        p.next_retry_at = Some(now + Duration::minutes(1));
                    },
                );
                Some(t)
            }
            TransferFailure::Retryable { code, message } if self.retry_count < MAX_RETRIES => {
                let retry_count = self.retry_count + 1;
                let reason = format!("{code}: {message}; retry {retry_count} of {MAX_RETRIES}");
                let t = self.moved(
                    PayoutStatus::Pending,
                    "transfer_failed",
                    reason,
                    actor,
                    stripe_event_id,
                    now,
                    |p| {
                        p.failed_transfer_ids.extend(p.stripe_transfer_id.take());
                        p.retry_count = retry_count;
                        p.attempt = self.attempt + 1;
                        p.outcome_unknown = false;
                        p.failure_code = Some(code.clone());
                        p.next_retry_at = Some(now + retry_delay(retry_base, retry_count));
                    },
                );
                Some(t)
            }
            TransferFailure::Retryable { code, message }
            | TransferFailure::Permanent { code, message } => {
                let reason = format!("{code}: {message}");
                let t = self.moved(
                    PayoutStatus::Failed,
                    "transfer_failed",
                    reason.clone(),
                    actor,
                    stripe_event_id,
                    now,
                    |p| {
                        p.failed_transfer_ids.extend(p.stripe_transfer_id.take());
                        p.outcome_unknown = false;
                        p.failure_code = Some(code.clone());
                        p.failure_reason = Some(reason);
                        p.next_retry_at = None;
                        p.completed_at = Some(now);
                    },
                );
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
        let t = self.moved(
            PayoutStatus::Completed,
            "transfer_paid",
            "funds arrived".to_owned(),
            actor,
            stripe_event_id,
            now,
            |p| {
                p.completed_at = Some(now);
                p.next_retry_at = None;
                if let Some(id) = stripe_payout_id {
                    p.stripe_payout_id = Some(id.to_owned());
                }
            },
        );
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
        let t = self.moved(
            PayoutStatus::Failed,
            "payout_failed",
            reason.clone(),
            actor,
            Some(stripe_event_id),
            now,
            |p| {
                p.failure_code = Some(code.to_owned());
                p.failure_reason = Some(reason);
            },
        );
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
        let t = self.moved(
            to,
            "transfer_reversed",
            reason,
            actor,
            Some(stripe_event_id),
            now,
            |p| {
                p.amount_reversed_cents = amount_reversed_cents.min(self.amount.cents);
            },
        );
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn payout(status: PayoutStatus) -> Payout {
        Payout {
            id: "payout_1".to_owned(),
            user_id: "u".to_owned(),
            amount: Money::usd(1_000_00),
            status,
            idempotency_key: "k".to_owned(),
            destination: "acct_1".to_owned(),
            stripe_transfer_id: matches!(
                status,
                PayoutStatus::Processing | PayoutStatus::Completed
            )
            .then(|| "tr_1".to_owned()),
            stripe_payout_id: None,
            approval_required: false,
            flags: Vec::new(),
            hold_reason: None,
            hold_metadata_json: None,
            attempt: 0,
            retry_count: 0,
            next_retry_at: (status == PayoutStatus::Pending).then(now),
            outcome_unknown: false,
            failure_code: None,
            failure_reason: None,
            amount_reversed_cents: 0,
            requested_at: now(),
            completed_at: None,
            webhook_processed_at: None,
            updated_at: now(),
            failed_transfer_ids: Vec::new(),
            applied_events: Vec::new(),
            audit_log: Vec::new(),
            version: 1,
        }
    }

    const ALL: [PayoutStatus; 7] = [
        PayoutStatus::Admitting,
        PayoutStatus::PendingApproval,
        PayoutStatus::Pending,
        PayoutStatus::Processing,
        PayoutStatus::Completed,
        PayoutStatus::Failed,
        PayoutStatus::Reversed,
    ];

    #[test]
    fn states_only_move_forward_except_the_documented_edges() {
        use PayoutStatus::*;
        let edges = [
            (Processing, Reversed),
            (Completed, Reversed),
            (Completed, Failed),
        ];
        for from in ALL {
            for to in ALL {
                let allowed = payout(from).may_move_to(to);
                let forward = !from.is_terminal() && to.rank() > from.rank();
                assert_eq!(
                    allowed,
                    forward || edges.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
        }
        assert!(!payout(Failed).may_move_to(Completed));
        assert!(!payout(Completed).may_move_to(Processing));
    }

    #[test]
    fn every_transition_leaves_its_audit_record_in_the_payout() {
        let admitted = payout(PayoutStatus::Admitting).admitted(false, Vec::new(), "", now());
        assert_eq!(admitted.payout.audit_log, vec![admitted.audit.clone()]);
        assert_eq!(admitted.audit.from_status, Some(PayoutStatus::Admitting));
        assert_eq!(admitted.audit.to_status, PayoutStatus::Pending);
        let created = admitted
            .payout
            .transfer_created("tr_9", "stripe", Some("evt_1"), now())
            .unwrap();
        assert_eq!(created.payout.audit_log.len(), 2);
        assert_eq!(created.audit.stripe_event_id.as_deref(), Some("evt_1"));
        assert_eq!(created.audit.transfer_id.as_deref(), Some("tr_9"));
        assert_eq!(created.payout.version, 3);
    }

    #[test]
    fn an_event_is_applied_once() {
        let created = payout(PayoutStatus::Pending)
            .transfer_created("tr_1", "stripe", Some("evt_1"), now())
            .unwrap()
            .payout;
        let paid = created
            .paid(None, "stripe", Some("evt_2"), now())
            .unwrap()
            .payout;
        assert_eq!(paid.paid(None, "stripe", Some("evt_2"), now()), None);
        assert_eq!(
            paid.transfer_created("tr_1", "stripe", Some("evt_1"), now()),
            None
        );
        let reversed = paid.reversed(100, "stripe", "evt_3", now()).unwrap().payout;
        assert_eq!(reversed.reversed(100, "stripe", "evt_3", now()), None);
    }

    #[test]
    fn an_unknown_outcome_is_never_a_failure_and_keeps_the_attempt() {
        let claimed = payout(PayoutStatus::Pending)
            .claimed_for_transfer(now(), Duration::minutes(2))
            .unwrap();
        let unknown = TransferFailure::Unknown {
            message: "timeout".to_owned(),
        };
        let after = claimed
            .transfer_failed(&unknown, RETRY_BASE, "stripe", None, now())
            .unwrap()
            .payout;
        assert_eq!(after.status, PayoutStatus::Pending);
        assert!(after.outcome_unknown);
        assert_eq!(
            (after.attempt, after.retry_count),
            (0, 0),
            "same attempt, same idempotency key"
        );
        assert_eq!(
            transfer_idempotency_key(&after.id, after.attempt),
            transfer_idempotency_key(&claimed.id, 0)
        );
    }

    #[test]
    fn retryable_failures_follow_the_spec_schedule_then_fail() {
        assert_eq!(
            [
                retry_delay(RETRY_BASE, 1),
                retry_delay(RETRY_BASE, 2),
                retry_delay(RETRY_BASE, 3)
            ],
            [
                Duration::minutes(5),
                Duration::minutes(10),
                Duration::minutes(20)
            ]
        );
        let failure = TransferFailure::Retryable {
            code: "insufficient_funds".to_owned(),
            message: String::new(),
        };
        let mut current = payout(PayoutStatus::Pending);
        for retry in 1..=MAX_RETRIES {
            current = current
                .transfer_failed(&failure, RETRY_BASE, "stripe", None, now())
                .unwrap()
                .payout;
            assert_eq!(
                (current.status, current.retry_count, current.attempt),
                (PayoutStatus::Pending, retry, retry)
            );
        }
        let failed = current
            .transfer_failed(&failure, RETRY_BASE, "stripe", None, now())
            .unwrap()
            .payout;
        assert_eq!(failed.status, PayoutStatus::Failed);
        assert!(!failed.money_left(), "no transfer: its quota is released");
    }

    #[test]
    fn a_lease_hides_a_claimed_payout_until_it_runs_out() {
        let claimed = payout(PayoutStatus::Pending)
            .claimed_for_transfer(now(), Duration::minutes(2))
            .unwrap();
        assert_eq!(
            claimed.claimed_for_transfer(now() + Duration::minutes(1), Duration::minutes(2)),
            None
        );
        assert!(
            claimed
                .claimed_for_transfer(now() + Duration::minutes(2), Duration::minutes(2))
                .is_some()
        );
        assert_eq!(
            payout(PayoutStatus::PendingApproval).claimed_for_transfer(now(), Duration::minutes(2)),
            None
        );
    }

    #[test]
    fn decisions_apply_only_to_held_payouts() {
        assert_eq!(
            payout(PayoutStatus::Pending).decided(true, "a", "", now()),
            None
        );
        let rejected = payout(PayoutStatus::PendingApproval)
            .decided(false, "a", "fraud", now())
            .unwrap();
        assert_eq!(
            rejected.payout.failure_reason.as_deref(),
            Some("Rejected by admin: fraud")
        );
        assert_eq!(rejected.audit.actor, "admin:a");
    }

    #[test]
    fn status_names_round_trip() {
        for status in ALL {
            assert_eq!(PayoutStatus::parse(status.as_str()), Some(status));
        }
    }
}
