//! Payouts and their state machine, pure.
//!
//! ```text
//!  admitting ──> pending_approval ──approve──> pending ──transfer──> processing ──> completed
//!      │               │                        │  ^                     │              │
//!      │               └──reject──> failed <────┘  └─retry (backoff)─────┘              │
//!      └──refused: deleted            │                                                  │
//!  processing | completed ──transfer.reversed (full)──> reversed                         │
//!  processing | completed ──bank payout failed──> failed  (money stays with the creator's │
//!                                                         Stripe account)  <─────────────┘
//!  processing ──legacy transfer.failed (money came back)──> pending (a new attempt)
//!  failed (no money left) ──a transfer for it turns up after all──> processing  (adopted,
//!                                                                   critical alert)
//!
//!  an admin's reversal (processing | completed, no other one unresolved):
//!    intent recorded (pending) ──Stripe made it──> succeeded  (amount reversed, as above)
//!          │        └──────────Stripe refused it──> refused
//!          └──answer lost──> unknown ──listed in the transfer's reversals──> succeeded
//!                                    └──not listed 24 h after its last request──> refused
//! ```
//!
//! States only move forward (by rank); the documented edges above are the only others. A late
//! or out-of-order Stripe event that would move a payout backwards changes nothing.
//!
//! **The unknown-outcome rule.** A transfer request that got no definite answer (a timeout, a
//! 5xx, a lost connection, an unreadable answer, a failed lookup) leaves the payout
//! `outcome_unknown`: it is never failed and its quota never given back while that holds. It
//! is resolved only by Stripe: a lookup that finds the transfer (adopted), the same request
//! again under the same idempotency key (Stripe replays its first answer), or an event naming
//! the transfer. Only a definite refusal (a 4xx with an error code, a legacy `transfer.failed`,
//! a full reversal) fails an attempt.
//!
//! **Admin reversals are intents.** An admin's reversal is recorded on the payout before
//! Stripe is asked ([`ReversalIntent`]); its Stripe idempotency key is derived from the
//! intent and the transfer only, and its id is in the reversal's metadata. An unknown
//! outcome is resolved by listing the transfer's reversals (the worker, or the same request
//! repeated), never by a new key. A stray transfer (a second one naming the payout) holds
//! the payout's quota until Stripe shows it fully reversed.
//!
//! **Side effects owed to other services are state.** Every change records what it owes: the
//! audit entries not yet projected into `payoutAuditLogs`, the quota the limits service must
//! give back (a total under a sequence number), the critical alerts not yet raised. They are
//! settled right away when possible and otherwise by the worker (`effects_due_at`), until
//! each is confirmed: a crash or an unavailable service never loses one.

use chrono::{DateTime, Duration, Utc};
use payouts_runtime::Money;
use payouts_runtime::backoff;

use crate::domain::CarriedPayment;

/// Transfer attempts before a payout fails for good (design §2: at most 3 retries).
pub const MAX_RETRIES: u32 = 3;

/// How many applied Stripe event ids a payout remembers, to ignore redeliveries.
const REMEMBERED_EVENTS: usize = 32;

/// Failed tries of a payout's work (admission, hand-off to the approval queue) before it is
/// parked with a critical alert for an admin to resume.
pub const MAX_WORK_ATTEMPTS: u32 = 12;

/// Backoff of a payout's work after a failure: 30 s doubling, capped at 30 minutes (with
/// [`MAX_WORK_ATTEMPTS`] that is about four hours of trying before it is parked).
pub const WORK_BACKOFF_BASE: Duration = Duration::seconds(30);
pub const WORK_BACKOFF_CAP: Duration = Duration::minutes(30);

/// Backoff of an unresolved unknown outcome: a minute doubling, capped at an hour; never
/// parked (only Stripe can resolve it).
pub const UNKNOWN_BACKOFF_BASE: Duration = Duration::minutes(1);
pub const UNKNOWN_BACKOFF_CAP: Duration = Duration::hours(1);

/// Backoff of owed side effects (audit projection, quota, alerts): 5 s doubling, capped at
/// 10 minutes; retried for as long as it takes.
pub const EFFECTS_BACKOFF_BASE: Duration = Duration::seconds(5);
pub const EFFECTS_BACKOFF_CAP: Duration = Duration::minutes(10);

/// Stripe's idempotency window: after it, a request still in flight when the outcome became
/// unknown has long finished, so a lookup that finds nothing is a definite "no transfer".
pub const IDEMPOTENCY_WINDOW: Duration = Duration::hours(24);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PayoutStatus {
    /// Stored, limits not yet decided (a crash here is recovered by re-admission).
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
    pub const ALL: [PayoutStatus; 7] = [
        PayoutStatus::Admitting,
        PayoutStatus::PendingApproval,
        PayoutStatus::Pending,
        PayoutStatus::Processing,
        PayoutStatus::Completed,
        PayoutStatus::Failed,
        PayoutStatus::Reversed,
    ];

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
        Self::ALL.into_iter().find(|status| status.as_str() == text)
    }

    /// Position in the forward order; terminal states rank highest.
    pub fn rank(self) -> u8 {
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

    /// Whether `self -> to` is a forward move or one of the documented edges (the adoption
    /// edge `failed -> processing` is separate: see [`Payout::transfer_seen`]).
    pub fn may_move_to(self, to: PayoutStatus) -> bool {
        use PayoutStatus::*;
        match (self, to) {
            (Processing | Completed, Reversed) => true,
            (Completed, Failed) => true,
            // A legacy transfer.failed: the transfer's money came back before it reached the
            // bank, and the payout retries with a new attempt (design §2).
            (Processing, Pending) => true,
            (from, _) if from.is_terminal() => false,
            (from, to) => to.rank() > from.rank(),
        }
    }
}

/// What the limits service has confirmed about this payout's reservation, and what it owes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaRelease {
    /// How much of the reservation should be given back, in total (derived from the state).
    pub target_cents: i64,
    /// Increases whenever the target changes; the limits service ignores older sequences.
    pub sequence: i64,
    /// The total the limits service confirmed, and under which sequence.
    pub confirmed_cents: i64,
    pub confirmed_sequence: i64,
}

impl QuotaRelease {
    pub fn is_settled(&self) -> bool {
        self.confirmed_sequence == self.sequence
    }
}

/// A critical alert the payout owes an admin, raised through the notifications service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwedAlert {
    /// Dedupe key: the same alert is raised once.
    pub key: String,
    pub kind: String,
    pub title: String,
    pub description: String,
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
    /// The payment the transfer made on the connected account ("py_..."): how a bank
    /// payout's balance transactions name it.
    pub destination_payment_id: Option<String>,
    /// The creator's bank payout that carried the money, when known.
    pub stripe_payout_id: Option<String>,
    /// Waiting for an admin (cleared by an approval).
    pub approval_required: bool,
    /// The limits held it for approval when it was admitted.
    pub held: bool,
    pub flags: Vec<String>,
    /// Why the limits held the payout for approval, and their figures (JSON), for the queue.
    pub hold_reason: Option<String>,
    pub hold_metadata_json: Option<String>,
    /// Transfer attempt number; part of the Stripe idempotency key. A definite failure moves
    /// to the next attempt (new key); an unknown outcome keeps it (same key).
    pub attempt: u32,
    /// Failed transfer attempts so far (`retryCount`).
    pub retry_count: u32,
    /// When the payout's work is due: the admission to resume, the hand-off to the approval
    /// queue, the transfer (a retry, or a lease that ran out).
    pub next_retry_at: Option<DateTime<Utc>>,
    /// Consecutive failed tries of the due work (backoff, and the bound before parking).
    pub work_attempts: u32,
    /// The work failed [`MAX_WORK_ATTEMPTS`] times and stopped: an admin resumes it.
    pub parked: bool,
    /// A transfer request may have reached Stripe and we do not know what it did.
    pub outcome_unknown: bool,
    /// Since when the current attempt's outcome has been unknown.
    pub unknown_since: Option<DateTime<Utc>>,
    pub failure_code: Option<String>,
    pub failure_reason: Option<String>,
    pub amount_reversed_cents: i64,
    pub requested_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub webhook_processed_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// Transfers Stripe reported failed (legacy `transfer.failed`): never adopted.
    pub failed_transfer_ids: Vec<String>,
    /// Transfers naming this payout besides the one it has: money that should not have
    /// moved, flagged with a critical alert, never dropped.
    pub stray_transfer_ids: Vec<String>,
    /// Stray transfers Stripe showed fully reversed: their money is back, so they no longer
    /// hold quota (a stray transfer not in this list holds the payout's whole amount).
    pub stray_reversed_ids: Vec<String>,
    /// Admins' reversals, oldest first, each recorded before Stripe was asked (at most one
    /// unresolved at a time). See [`ReversalIntent`].
    pub reversal_intents: Vec<ReversalIntent>,
    /// Stripe events already applied (the most recent few).
    pub applied_events: Vec<String>,
    /// Every state change, oldest first: written in the same compare-and-set as the change
    /// itself, so no change is ever without its record.
    pub audit_log: Vec<AuditEntry>,
    /// How many entries of `audit_log` are in `payoutAuditLogs` already.
    pub audit_projected: u32,
    pub quota: QuotaRelease,
    pub owed_alerts: Vec<OwedAlert>,
    /// Keys of the alerts raised already (so an alert is owed once).
    pub raised_alerts: Vec<String>,
    /// When owed side effects are due (None: nothing owed).
    pub effects_due_at: Option<DateTime<Utc>>,
    /// Consecutive failed tries to settle them.
    pub effects_attempts: u32,
    /// Transfer claims so far: identifies a worker's claim. A worker's answer other than a
    /// transfer applies only while its claim is the latest (after its lease ran out, another
    /// worker may have claimed the payout and sent the same attempt).
    pub claims: u32,
    /// The transfer's destination payment became known: whether a bank payout processed
    /// before that carried it is still to be looked up in the account's record (Stripe does
    /// not order events, so `payout.paid` can come first). Owed like the other effects, so a
    /// crash between learning the transfer and looking cannot lose the bank payout.
    pub bank_check_owed: bool,
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

/// An admin's reversal of (part of) the payout's transfer, recorded on the payout by a
/// compare-and-set before Stripe is asked, so that a repeated request, a lost answer or a
/// second admin can never make a second reversal: its Stripe idempotency key is derived
/// from the intent and the transfer only ([`reversal_idempotency_key`]), and its id is in
/// the reversal's metadata (`payouts_reversal_intent`), so a lost answer is resolved by
/// listing the transfer's reversals, never by a new key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReversalIntent {
    /// "<payout id>-reversal-<n>": unique, and what the reversal's metadata names.
    pub id: String,
    /// The admin's `Idempotency-Key`: the same key returns this intent's outcome.
    pub client_key: String,
    /// Who asked ("admin:<subject>").
    pub requested_by: String,
    pub cents: i64,
    pub notes: String,
    /// The transfer it reverses.
    pub transfer_id: String,
    pub created_at: DateTime<Utc>,
    /// When a request of this intent was last sent to Stripe: Stripe's idempotency window
    /// counts from there.
    pub last_sent_at: DateTime<Utc>,
    pub state: ReversalState,
}

/// Where an admin's reversal stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversalState {
    /// Recorded; its request is on its way (or died with its process).
    Pending,
    /// Stripe's answer was lost (a timeout, a 5xx, an unreadable answer): it may have been
    /// made. Never refused, never sent under another key; resolved by the listing.
    Unknown { message: String },
    /// Stripe made it.
    Succeeded { reversal_id: String },
    /// Stripe refused it, or it was concluded not made (not listed after Stripe's
    /// idempotency window).
    Refused { reason: String },
}

impl ReversalState {
    pub fn as_str(&self) -> &'static str {
        match self {
            ReversalState::Pending => "pending",
            ReversalState::Unknown { .. } => "unknown",
            ReversalState::Succeeded { .. } => "succeeded",
            ReversalState::Refused { .. } => "refused",
        }
    }

    pub fn is_resolved(&self) -> bool {
        matches!(
            self,
            ReversalState::Succeeded { .. } | ReversalState::Refused { .. }
        )
    }
}

impl ReversalIntent {
    /// The Stripe idempotency key of this intent's reversal request.
    pub fn idempotency_key(&self) -> String {
        reversal_idempotency_key(&self.id, &self.transfer_id)
    }
}

/// The Stripe idempotency key of an admin's reversal: the intent and the transfer only, so
/// every request of the intent (a repeat, the worker's) is the same request to Stripe.
pub fn reversal_idempotency_key(intent_id: &str, transfer_id: &str) -> String {
    format!("reversal-{intent_id}-{transfer_id}")
}

/// Why an admin's reversal cannot be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversalRefusal {
    /// No transfer, or nothing left to reverse.
    NothingToReverse(String),
    /// The amount is outside 1..=left.
    BadAmount { left: i64 },
    /// Another reversal is unresolved: this one waits until it is.
    Unresolved(Box<ReversalIntent>),
}

/// What became of an admin's reversal request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReversalOutcome {
    /// Stripe made it; `total_reversed_cents` is the transfer's running total after it.
    Made {
        reversal_id: String,
        total_reversed_cents: i64,
    },
    /// No definite answer.
    Unknown { message: String },
    /// A definite refusal (a 4xx with a code), or not made (not listed after the window).
    Refused { reason: String },
}

/// One audit record: what, from -> to, why, who/which event, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// "<payout id>:<position>": unique, and the same however often it is projected.
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

/// Who or what causes a change, and when.
#[derive(Debug, Clone, Copy)]
pub struct Cause<'a> {
    /// "stripe", "stripe:<event id>", "admin:<subject>", "service:limits", "worker".
    pub actor: &'a str,
    /// The Stripe event that carried the news, when one did (applied once).
    pub stripe_event_id: Option<&'a str>,
    pub now: DateTime<Utc>,
}

impl<'a> Cause<'a> {
    pub fn new(actor: &'a str, now: DateTime<Utc>) -> Self {
        Self {
            actor,
            stripe_event_id: None,
            now,
        }
    }

    pub fn event(actor: &'a str, stripe_event_id: &'a str, now: DateTime<Utc>) -> Self {
        Self {
            actor,
            stripe_event_id: Some(stripe_event_id),
            now,
        }
    }
}

/// What Stripe said about a transfer attempt it did not carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StripeFailure {
    /// A definite refusal: nothing was done. `retryable` follows design §2's list of codes.
    Declined {
        code: String,
        message: String,
        retryable: bool,
    },
    /// Our credentials or permissions were refused (401, 403): nothing was done, and nothing
    /// will be until an operator fixes the configuration.
    Unauthorized { code: String, message: String },
    /// Stripe did not execute this request (429: rate limited) and stored nothing under its
    /// key. It is a definite "no" only when no earlier request under the same key may still
    /// arrive; after an unknown outcome it says nothing about that earlier request.
    NotExecuted { code: String, message: String },
    /// No answer, a 5xx, an unreadable answer, or a concurrent request under the same key:
    /// Stripe may have acted.
    Unknown { message: String },
}

impl StripeFailure {
    pub fn describe(&self) -> String {
        match self {
            StripeFailure::Declined { code, message, .. }
            | StripeFailure::Unauthorized { code, message }
            | StripeFailure::NotExecuted { code, message } => format!("{code}: {message}"),
            StripeFailure::Unknown { message } => format!("outcome unknown: {message}"),
        }
    }
}

/// Stripe error codes retried with a new attempt (design §2) (plus Stripe's own transient ones).
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
            | "could_not_process"
    )
}

/// Stripe refusing the platform rather than the creator: the platform's balance cannot fund
/// the transfer (Stripe's `balance_insufficient`, the error of `POST /v1/transfers` when the
/// platform's available balance is short; `insufficient_funds`, design §2's name for it).
/// Every transfer is refused alike until the balance is topped up.
pub fn is_platform_refusal(code: &str) -> bool {
    matches!(code, "balance_insufficient" | "insufficient_funds")
}

/// Design §2: the first retry comes 5 minutes after the failure, then it doubles.
pub const RETRY_BASE: Duration = Duration::minutes(5);

/// Backoff after the n-th failure: base, 2 x base, 4 x base (5, 10, 20 minutes by default).
pub fn retry_delay(base: Duration, retry_count: u32) -> Duration {
    base * (1_i32 << retry_count.saturating_sub(1).min(10))
}

/// A transfer as Stripe shows it (an API answer, a lookup, or an event's object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenTransfer {
    pub id: String,
    /// The attempt its metadata names (transfers made before attempts were recorded: None).
    pub attempt: Option<u32>,
    pub destination_payment: Option<String>,
    pub amount_reversed_cents: i64,
    /// Stripe's `reversed`: the transfer is reversed in full.
    pub reversed: bool,
}

impl SeenTransfer {
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            attempt: None,
            destination_payment: None,
            amount_reversed_cents: 0,
            reversed: false,
        }
    }
}

/// What Stripe says happened to a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferNews {
    /// It exists (our request's answer, a lookup, `transfer.created`, `transfer.updated`).
    Exists,
    /// Legacy `transfer.paid`.
    Paid,
    /// Legacy `transfer.failed`: the money did not arrive and came back.
    Failed { code: String, message: String },
    /// `transfer.reversed`: `amount_reversed` is Stripe's running total.
    Reversed,
}

impl Payout {
    /// A new payout, stored as admitting until the limits decide.
    #[allow(clippy::too_many_arguments)]
    pub fn requested(
        id: String,
        user_id: &str,
        amount: Money,
        idempotency_key: &str,
        destination: &str,
        now: DateTime<Utc>,
        admission_grace: Duration,
    ) -> Payout {
        Payout {
            id,
            user_id: user_id.to_owned(),
            amount,
            status: PayoutStatus::Admitting,
            idempotency_key: idempotency_key.to_owned(),
            destination: destination.to_owned(),
            stripe_transfer_id: None,
            destination_payment_id: None,
            stripe_payout_id: None,
            approval_required: false,
            held: false,
            flags: Vec::new(),
            hold_reason: None,
            hold_metadata_json: None,
            attempt: 0,
            retry_count: 0,
            next_retry_at: Some(now + admission_grace),
            work_attempts: 0,
            parked: false,
            outcome_unknown: false,
            unknown_since: None,
            failure_code: None,
            failure_reason: None,
            amount_reversed_cents: 0,
            requested_at: now,
            completed_at: None,
            webhook_processed_at: None,
            updated_at: now,
            failed_transfer_ids: Vec::new(),
            stray_transfer_ids: Vec::new(),
            stray_reversed_ids: Vec::new(),
            reversal_intents: Vec::new(),
            applied_events: Vec::new(),
            audit_log: Vec::new(),
            audit_projected: 0,
            quota: QuotaRelease::default(),
            owed_alerts: Vec::new(),
            raised_alerts: Vec::new(),
            bank_check_owed: false,
            effects_due_at: None,
            effects_attempts: 0,
            claims: 0,
            version: 1,
        }
    }

    /// Whether money left the platform for good: a transfer exists and was not reversed.
    pub fn money_left(&self) -> bool {
        self.stripe_transfer_id.is_some() && self.status != PayoutStatus::Reversed
    }

    /// How much of the reservation the state says should be given back: all of it when no
    /// money left (rejected, failed before a transfer, fully reversed), the reversed part
    /// otherwise. Admitting payouts hold nothing yet, so there is nothing to give back. A
    /// stray transfer (a second one naming this payout) not known fully reversed is money
    /// with the creator too: while there is one, nothing is given back (the reservation
    /// cannot hold more than the payout's amount, and it must not hold less).
    pub fn release_target_cents(&self) -> i64 {
        let own = match self.status {
            PayoutStatus::Admitting => return 0,
            PayoutStatus::Failed if self.stripe_transfer_id.is_none() => self.amount.cents,
            PayoutStatus::Reversed => self.amount.cents,
            _ => self.amount_reversed_cents.clamp(0, self.amount.cents),
        };
        if self.live_stray_transfers().next().is_some() {
            return 0;
        }
        own
    }

    /// Stray transfers whose money may still be with the creator.
    pub fn live_stray_transfers(&self) -> impl Iterator<Item = &String> {
        self.stray_transfer_ids
            .iter()
            .filter(|id| !self.stray_reversed_ids.contains(id))
    }

    /// What the reservation must still hold for this payout.
    pub fn quota_needed_cents(&self) -> i64 {
        self.amount.cents - self.release_target_cents()
    }

    /// Whether a Stripe event was applied to this payout already.
    pub fn has_applied(&self, stripe_event_id: Option<&str>) -> bool {
        stripe_event_id.is_some_and(|id| self.applied_events.iter().any(|seen| seen == id))
    }

    /// Whether side effects are owed (audit projection, quota, alerts).
    pub fn owes_effects(&self) -> bool {
        usize::try_from(self.audit_projected).unwrap_or(usize::MAX) < self.audit_log.len()
            || !self.quota.is_settled()
            || !self.owed_alerts.is_empty()
            || self.bank_check_owed
            || self.unresolved_reversal().is_some()
    }

    /// A copy for an internal update (a claim, a backoff): new version, no audit record.
    fn touched(&self, now: DateTime<Utc>) -> Payout {
        let mut payout = self.clone();
        payout.updated_at = now;
        payout.version += 1;
        payout
    }

    /// Recomputes what is owed after a change: the quota target (a new sequence when it
    /// changed) and when the effects are due.
    fn settle_bookkeeping(&mut self, now: DateTime<Utc>) {
        let target = self.release_target_cents();
        if target != self.quota.target_cents {
            self.quota.target_cents = target;
            self.quota.sequence += 1;
        }
        if self.owes_effects() {
            self.effects_due_at = Some(self.effects_due_at.map_or(now, |due| due.min(now)));
        }
    }

    /// The payout moved to `to` (or stayed, with a record), with `edit` applied, recording
    /// its audit entry (built after the edit, so it names the transfer the move is about).
    fn moved(
        &self,
        to: PayoutStatus,
        event_type: &str,
        reason: String,
        cause: Cause<'_>,
        edit: impl FnOnce(&mut Payout),
    ) -> Payout {
        let mut payout = self.touched(cause.now);
        edit(&mut payout);
        payout.status = to;
        if let Some(event_id) = cause.stripe_event_id {
            payout.applied_events.push(event_id.to_owned());
            if payout.applied_events.len() > REMEMBERED_EVENTS {
                payout.applied_events.remove(0);
            }
            payout.webhook_processed_at = Some(cause.now);
        }
        let entry = AuditEntry {
            id: format!("{}:{}", self.id, payout.audit_log.len()),
            payout_id: self.id.clone(),
            event_type: event_type.to_owned(),
            from_status: Some(self.status),
            to_status: to,
            reason,
            actor: cause.actor.to_owned(),
            stripe_event_id: cause.stripe_event_id.map(str::to_owned),
            transfer_id: payout.stripe_transfer_id.clone(),
            amount_cents: self.amount.cents,
            timestamp: cause.now,
        };
        payout.audit_log.push(entry);
        payout.settle_bookkeeping(cause.now);
        payout
    }

    /// Records an alert the payout owes (once per key).
    fn owe_alert(&mut self, key: String, kind: &str, title: String, description: String) {
        if self.raised_alerts.contains(&key) || self.owed_alerts.iter().any(|a| a.key == key) {
            return;
        }
        self.owed_alerts.push(OwedAlert {
            key,
            kind: kind.to_owned(),
            title,
            description,
        });
    }

    /// Limits decided: admitted to pending or held for approval.
    pub fn admitted(
        &self,
        requires_approval: bool,
        flags: Vec<String>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Option<Payout> {
        if self.status != PayoutStatus::Admitting {
            return None;
        }
        let to = if requires_approval {
            PayoutStatus::PendingApproval
        } else {
            PayoutStatus::Pending
        };
        let cause = Cause::new("service:limits", now);
        Some(self.moved(to, "admitted", reason.to_owned(), cause, |p| {
            p.approval_required = requires_approval;
            p.held = requires_approval;
            // Escalation signals (design §10): a payout that limits flagged is recorded
            // (level 1); flags that read as fraud also count towards "fraud flags on several
            // creators in a window" (level 3) in notifications.
            if let Some((kind, what)) = flag_signal(&flags) {
                p.owe_alert(
                    format!("{}:{kind}", p.id),
                    kind,
                    format!("Payout {} flagged by limits: {what}", p.id),
                    format!(
                        "Limits flagged payout {} ({} to creator {}): {}.",
                        p.id,
                        p.amount,
                        p.user_id,
                        flags.join(", ")
                    ),
                );
            }
            p.flags = flags;
            if requires_approval {
                p.hold_reason = Some(reason.to_owned());
            }
            // Due at once: for the transfer, or for the hand-off to the approval queue.
            p.next_retry_at = Some(now);
            p.work_attempts = 0;
        }))
    }

    /// The payout's due work (resuming its admission, handing it to the approval queue)
    /// failed: try again after a backoff, or park it with a critical alert after
    /// [`MAX_WORK_ATTEMPTS`] tries.
    pub fn work_failed(&self, what: &str, message: &str, now: DateTime<Utc>) -> Payout {
        let attempts = self.work_attempts + 1;
        if attempts >= MAX_WORK_ATTEMPTS {
            let reason = format!("{what} failed {attempts} times ({message}); parked for an admin");
            let cause = Cause::new("worker", now);
            return self.moved(self.status, "parked", reason.clone(), cause, |p| {
                p.work_attempts = attempts;
                p.parked = true;
                p.next_retry_at = None;
                p.owe_alert(
                    format!("{}:parked:{}", p.id, p.audit_log.len()),
                    "payout_parked",
                    format!("Payout {} needs an admin: {what} keeps failing", p.id),
                    format!(
                        "{reason}. Resume it with POST /api/admin/payouts/{}/resume once the cause is fixed.",
                        p.id
                    ),
                );
            });
        }
        let mut payout = self.touched(now);
        payout.work_attempts = attempts;
        payout.next_retry_at =
            Some(now + backoff::delay(WORK_BACKOFF_BASE, WORK_BACKOFF_CAP, attempts, &self.id));
        payout
    }

    /// An admin resumed a parked payout: its work is due again with a fresh set of tries.
    pub fn resumed(&self, by: &str, now: DateTime<Utc>) -> Option<Payout> {
        if !self.parked {
            return None;
        }
        let cause = Cause::new(by, now);
        Some(self.moved(
            self.status,
            "resumed",
            "resumed by an admin".to_owned(),
            cause,
            |p| {
                p.parked = false;
                p.work_attempts = 0;
                p.next_retry_at = Some(now);
            },
        ))
    }

    /// The approval queue has the payout: nothing more is due until an admin decides.
    pub fn handed_off(&self, now: DateTime<Utc>) -> Option<Payout> {
        (self.status == PayoutStatus::PendingApproval && self.next_retry_at.is_some()).then(|| {
            let mut payout = self.touched(now);
            payout.next_retry_at = None;
            payout.work_attempts = 0;
            payout
        })
    }

    /// Whether an admin's decision was already carried out on this payout, whatever happened
    /// to the payout since (an approved payout may have failed later: the decision was still
    /// carried out).
    pub fn carries_decision(&self, approved: bool) -> bool {
        let decision = if approved { "approved" } else { "rejected" };
        self.audit_log.iter().any(|e| e.event_type == decision)
    }

    /// An admin's decision on a held payout.
    pub fn decided(
        &self,
        approved: bool,
        reviewer: &str,
        notes: &str,
        now: DateTime<Utc>,
    ) -> Option<Payout> {
        if self.status != PayoutStatus::PendingApproval {
            return None;
        }
        let actor = format!("admin:{reviewer}");
        let cause = Cause::new(&actor, now);
        Some(if approved {
            self.moved(
                PayoutStatus::Pending,
                "approved",
                notes.to_owned(),
                cause,
                |p| {
                    p.approval_required = false;
                    p.parked = false;
                    p.work_attempts = 0;
                    p.next_retry_at = Some(now);
                },
            )
        } else {
            let reason = format!("Rejected by admin: {notes}");
            self.moved(
                PayoutStatus::Failed,
                "rejected",
                reason.clone(),
                cause,
                |p| {
                    p.failure_code = Some("rejected".to_owned());
                    p.failure_reason = Some(reason);
                    p.completed_at = Some(now);
                    p.next_retry_at = None;
                    p.parked = false;
                },
            )
        })
    }

    /// A transfer worker took the payout: leased until `now + lease`. From here until Stripe
    /// answers, the attempt's outcome is unknown (a crash leaves it so, and the next worker
    /// looks the transfer up before anything else).
    pub fn claimed_for_transfer(&self, now: DateTime<Utc>, lease: Duration) -> Option<Payout> {
        let due = self.status == PayoutStatus::Pending
            && !self.parked
            && self.next_retry_at.is_some_and(|at| at <= now);
        due.then(|| {
            let mut payout = self.touched(now);
            payout.next_retry_at = Some(now + lease);
            payout.claims = self.claims + 1;
            payout.outcome_unknown = true;
            payout.unknown_since = Some(self.unknown_since.unwrap_or(now));
            payout
        })
    }

    /// The attempt's outcome is (still) unknown: the same attempt, under the same key, after a
    /// backoff; a critical alert once it has been unknown for `alert_after`. Never a failure.
    pub fn outcome_still_unknown(
        &self,
        message: &str,
        alert_after: Duration,
        cause: Cause<'_>,
    ) -> Option<Payout> {
        if self.status != PayoutStatus::Pending {
            return None;
        }
        let now = cause.now;
        let attempts = self.work_attempts + 1;
        let edit = |p: &mut Payout| {
            p.outcome_unknown = true;
            p.unknown_since = Some(self.unknown_since.unwrap_or(now));
            p.work_attempts = attempts;
            p.next_retry_at = Some(
                now + backoff::delay(UNKNOWN_BACKOFF_BASE, UNKNOWN_BACKOFF_CAP, attempts, &p.id),
            );
            if p.unknown_since
                .is_some_and(|since| now - since >= alert_after)
            {
                p.owe_alert(
                    format!("{}:unknown:{}", p.id, p.attempt),
                    "payout_outcome_unknown",
                    format!("Payout {}: Stripe has not said what became of its transfer", p.id),
                    format!(
                        "Attempt {} of payout {} ({} to {}) has had no definite answer since {}: {message}. \
                         It is never failed while unknown; it is looked up again every hour at most.",
                        p.attempt,
                        p.id,
                        p.amount,
                        p.destination,
                        p.unknown_since.map(|t| t.to_rfc3339()).unwrap_or_default()
                    ),
                );
            }
        };
        // The first unknown answer of an attempt is a change worth a record; the retries of
        // the same unknown are not.
        Some(if self.work_attempts == 0 {
            self.moved(
                PayoutStatus::Pending,
                "transfer_outcome_unknown",
                message.to_owned(),
                cause,
                edit,
            )
        } else {
            let mut payout = self.touched(now);
            edit(&mut payout);
            payout.settle_bookkeeping(now);
            payout
        })
    }

    /// Stripe did nothing, for a reason that is not the payout's (our credentials, a
    /// re-check that could not be answered): the same attempt later, nothing failed. The
    /// attempt's outcome goes back to what it was before this try (`prior_unknown`).
    pub fn attempt_deferred(
        &self,
        prior_unknown: bool,
        alert: Option<(&str, String)>,
        now: DateTime<Utc>,
    ) -> Option<Payout> {
        if self.status != PayoutStatus::Pending {
            return None;
        }
        let attempts = self.work_attempts + 1;
        let mut payout = self.touched(now);
        payout.outcome_unknown = prior_unknown;
        if !prior_unknown {
            payout.unknown_since = None;
        }
        payout.work_attempts = attempts;
        payout.next_retry_at =
            Some(now + backoff::delay(WORK_BACKOFF_BASE, WORK_BACKOFF_CAP, attempts, &self.id));
        if let Some((kind, description)) = alert {
            payout.owe_alert(
                format!("{}:{kind}:{}", self.id, self.attempt),
                kind,
                format!("Payout {} is waiting: {kind}", self.id),
                description,
            );
        }
        payout.settle_bookkeeping(now);
        Some(payout)
    }

    /// The attempt was definitely refused (a 4xx with an error code, a legacy
    /// `transfer.failed`): retried on design §2's schedule with a new attempt (a new key), or
    /// failed for good.
    pub fn attempt_declined(
        &self,
        code: &str,
        message: &str,
        retryable: bool,
        failed_transfer: Option<&str>,
        retry_base: Duration,
        cause: Cause<'_>,
    ) -> Option<Payout> {
        if self.has_applied(cause.stripe_event_id)
            || !matches!(
                self.status,
                PayoutStatus::Pending | PayoutStatus::Processing
            )
        {
            return None;
        }
        let forget_transfer = |p: &mut Payout| {
            p.failed_transfer_ids.extend(p.stripe_transfer_id.take());
            p.failed_transfer_ids
                .extend(failed_transfer.map(str::to_owned));
            p.failed_transfer_ids.dedup();
            p.destination_payment_id = None;
            // Reversals were of the forgotten transfer: the next attempt's starts at none.
            p.amount_reversed_cents = 0;
            p.bank_check_owed = false;
            p.outcome_unknown = false;
            p.unknown_since = None;
            p.work_attempts = 0;
            p.failure_code = Some(code.to_owned());
        };
        let mut declined =
            self.declined_moved(code, message, retryable, cause, forget_transfer, retry_base)?;
        if is_platform_refusal(code) {
            // An escalation signal (design §10, "the platform unable to pay"): Stripe refused
            // the platform itself, not this creator; a run of these across
            // ESCALATION_STRIPE_UNAVAILABLE_MINUTES reaches the leads.
            declined.owe_alert(
                format!("{}:stripe_refusing:{}", self.id, self.attempt),
                "payout_stripe_refusing",
                format!(
                    "Stripe refused the platform's transfer for payout {}",
                    self.id
                ),
                format!(
                    "Stripe refused attempt {} of payout {} ({} to {}) with {code}: {message}. \
                     The platform's Stripe balance cannot fund transfers; the payout {}.",
                    self.attempt,
                    self.id,
                    self.amount,
                    self.destination,
                    if declined.status == PayoutStatus::Failed {
                        "failed after its retries"
                    } else {
                        "is retried on schedule"
                    }
                ),
            );
        }
        Some(declined)
    }

    /// [`Payout::attempt_declined`]'s move: retried with a new attempt, or failed.
    fn declined_moved(
        &self,
        code: &str,
        message: &str,
        retryable: bool,
        cause: Cause<'_>,
        forget_transfer: impl Fn(&mut Payout),
        retry_base: Duration,
    ) -> Option<Payout> {
        let now = cause.now;
        if retryable && self.retry_count < MAX_RETRIES {
            let retry_count = self.retry_count + 1;
            let reason = format!("{code}: {message}; retry {retry_count} of {MAX_RETRIES}");
            Some(self.moved(
                PayoutStatus::Pending,
                "transfer_failed",
                reason,
                cause,
                |p| {
                    forget_transfer(p);
                    p.retry_count = retry_count;
                    p.attempt = self.attempt + 1;
                    p.next_retry_at = Some(now + retry_delay(retry_base, retry_count));
                },
            ))
        } else {
            let reason = format!("{code}: {message}");
            Some(self.moved(
                PayoutStatus::Failed,
                "transfer_failed",
                reason.clone(),
                cause,
                |p| {
                    forget_transfer(p);
                    // An escalation signal (design §10): one failure is recorded; repeated
                    // failures in a window reach the admin team.
                    p.owe_alert(
                        format!("{}:payout_failed:{}", p.id, self.attempt),
                        "payout_failed",
                        format!("Payout {} failed: Stripe refused its transfer", p.id),
                        format!(
                            "Payout {} ({} to {}) failed: {reason}.",
                            p.id, p.amount, p.destination
                        ),
                    );
                    p.failure_reason = Some(reason);
                    p.next_retry_at = None;
                    p.completed_at = Some(now);
                },
            ))
        }
    }

    /// The re-check before the transfer found the payout no longer payable (earnings frozen
    /// or refunded, payouts disabled on the account). Only for an attempt nothing was sent
    /// for: an attempt whose outcome is unknown is never failed (see [`IDEMPOTENCY_WINDOW`]).
    pub fn no_longer_payable(
        &self,
        code: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Option<Payout> {
        if self.status != PayoutStatus::Pending {
            return None;
        }
        let cause = Cause::new("service:payouts", now);
        let reason = format!("no longer payable: {reason}");
        Some(self.moved(
            PayoutStatus::Failed,
            "not_payable",
            reason.clone(),
            cause,
            |p| {
                p.outcome_unknown = false;
                p.unknown_since = None;
                p.failure_code = Some(code.to_owned());
                p.failure_reason = Some(reason);
                p.next_retry_at = None;
                p.completed_at = Some(now);
            },
        ))
    }

    /// Stripe shows a transfer naming this payout: the answer to our request, a lookup, or an
    /// event's object. Acts only on the transfer the payout has; adopts one only when the
    /// payout has none; never adopts a transfer Stripe reported failed; flags a second live
    /// transfer (money that should not have moved) with a critical alert.
    pub fn transfer_seen(
        &self,
        seen: &SeenTransfer,
        news: &TransferNews,
        retry_base: Duration,
        cause: Cause<'_>,
    ) -> Option<Payout> {
        if self.has_applied(cause.stripe_event_id) || self.failed_transfer_ids.contains(&seen.id) {
            return None;
        }
        if self.stray_transfer_ids.contains(&seen.id) {
            return self.stray_seen(seen, cause);
        }
        match self.stripe_transfer_id.as_deref() {
            Some(current) if current == seen.id => {
                self.news_of_current(seen, news, retry_base, cause)
            }
            Some(current) => {
                if let TransferNews::Failed { .. } = news {
                    // A failed transfer moved no money: nothing to flag.
                    return None;
                }
                let current = current.to_owned();
                Some(self.moved(
                    self.status,
                    "stray_transfer",
                    format!("a second transfer {} names this payout (it has {current})", seen.id),
                    cause,
                    |p| {
                        p.stray_transfer_ids.push(seen.id.clone());
                        if seen.reversed {
                            p.stray_reversed_ids.push(seen.id.clone());
                        }
                        p.owe_alert(
                            format!("{}:stray:{}", p.id, seen.id),
                            "payout_stray_transfer",
                            format!("Payout {} was paid twice", p.id),
                            format!(
                                "Stripe transfer {} names payout {} ({} to {}), which already has transfer {current}. \
                                 Reverse one of them in Stripe.",
                                seen.id, p.id, p.amount, p.destination
                            ),
                        );
                    },
                ))
            }
            None => self.news_without_transfer(seen, news, retry_base, cause),
        }
    }

    /// News of a stray transfer: only its full reversal matters (its money is back, so it
    /// no longer holds quota).
    fn stray_seen(&self, seen: &SeenTransfer, cause: Cause<'_>) -> Option<Payout> {
        if !seen.reversed || self.stray_reversed_ids.contains(&seen.id) {
            return None;
        }
        Some(self.moved(
            self.status,
            "stray_transfer_reversed",
            format!("stray transfer {} is reversed in full", seen.id),
            cause,
            |p| p.stray_reversed_ids.push(seen.id.clone()),
        ))
    }

    fn news_of_current(
        &self,
        seen: &SeenTransfer,
        news: &TransferNews,
        retry_base: Duration,
        cause: Cause<'_>,
    ) -> Option<Payout> {
        match news {
            TransferNews::Exists => {
                // Only worth a write if it tells us the destination payment we lacked.
                let learned =
                    seen.destination_payment.is_some() && self.destination_payment_id.is_none();
                learned.then(|| {
                    let mut payout = self.touched(cause.now);
                    payout.destination_payment_id = seen.destination_payment.clone();
                    payout.bank_check_owed = true;
                    payout.settle_bookkeeping(cause.now);
                    payout
                })
            }
            TransferNews::Paid => self.paid(None, "legacy transfer.paid", cause),
            TransferNews::Failed { code, message } => {
                // Only while the money has not arrived (legacy API): a retry or a failure.
                if self.status != PayoutStatus::Processing {
                    return None;
                }
                self.attempt_declined(
                    code,
                    message,
                    is_retryable_code(code),
                    Some(&seen.id),
                    retry_base,
                    cause,
                )
            }
            TransferNews::Reversed => self.reversed(seen.amount_reversed_cents, cause),
        }
    }

    fn news_without_transfer(
        &self,
        seen: &SeenTransfer,
        news: &TransferNews,
        retry_base: Duration,
        cause: Cause<'_>,
    ) -> Option<Payout> {
        if let TransferNews::Failed { code, message } = news {
            // The attempt this transfer belongs to failed: definite news of the current
            // attempt while it is pending; otherwise it only joins the failed list.
            let current_attempt = seen.attempt.is_none_or(|attempt| attempt == self.attempt);
            if current_attempt && self.status == PayoutStatus::Pending {
                return self.attempt_declined(
                    code,
                    message,
                    is_retryable_code(code),
                    Some(&seen.id),
                    retry_base,
                    cause,
                );
            }
            let mut payout = self.touched(cause.now);
            payout.failed_transfer_ids.push(seen.id.clone());
            return Some(payout);
        }
        // The transfer exists, so the money moved: adopt it.
        let expected = self.status == PayoutStatus::Pending
            && seen.attempt.is_none_or(|attempt| attempt == self.attempt);
        let unexpected = match self.status {
            PayoutStatus::Pending if expected => None,
            PayoutStatus::Pending => Some(format!(
                "it belongs to attempt {} while the payout is at attempt {}",
                seen.attempt.unwrap_or_default(),
                self.attempt
            )),
            PayoutStatus::Failed => Some("the payout had failed".to_owned()),
            PayoutStatus::Admitting | PayoutStatus::PendingApproval => {
                Some(format!("the payout was {}", self.status.as_str()))
            }
            // Processing/Completed always have a transfer; Reversed is final.
            _ => return None,
        };
        let reason = match &unexpected {
            None => format!("transfer {} created", seen.id),
            Some(why) => format!("transfer {} adopted although {why}", seen.id),
        };
        let event_type = if unexpected.is_some() {
            "transfer_adopted"
        } else {
            "transfer_created"
        };
        let now = cause.now;
        let adopted = self.moved(PayoutStatus::Processing, event_type, reason, cause, |p| {
            p.stripe_transfer_id = Some(seen.id.clone());
            p.destination_payment_id = seen.destination_payment.clone();
            p.bank_check_owed = p.destination_payment_id.is_some();
            p.outcome_unknown = false;
            p.unknown_since = None;
            p.work_attempts = 0;
            p.next_retry_at = None;
            p.approval_required = false;
            if unexpected.is_some() {
                p.failure_code = None;
                p.failure_reason = None;
                p.completed_at = None;
            }
            if let Some(why) = &unexpected {
                p.owe_alert(
                    format!("{}:adopted:{}", p.id, seen.id),
                    "payout_transfer_adopted",
                    format!("Payout {}: Stripe made a transfer we did not expect", p.id),
                    format!(
                        "Stripe transfer {} ({} to {}) names payout {}, and {why}. The payout now \
                         follows that transfer and holds its quota again; check whether it \
                         should be reversed.",
                        seen.id, p.amount, p.destination, p.id
                    ),
                );
            }
        });
        // The news may already say more than "it exists".
        let follow_up = match news {
            TransferNews::Paid => adopted.paid(
                None,
                "legacy transfer.paid",
                Cause {
                    stripe_event_id: None,
                    ..cause
                },
            ),
            TransferNews::Reversed | TransferNews::Exists if seen.amount_reversed_cents > 0 => {
                adopted.reversed(
                    seen.amount_reversed_cents,
                    Cause {
                        stripe_event_id: None,
                        now,
                        ..cause
                    },
                )
            }
            _ => None,
        };
        Some(follow_up.unwrap_or(adopted))
    }

    /// The money arrived (legacy `transfer.paid`, or the creator's bank payout was paid);
    /// `rule` says how the bank payout was attributed to this payout.
    pub fn paid(
        &self,
        stripe_payout_id: Option<&str>,
        rule: &str,
        cause: Cause<'_>,
    ) -> Option<Payout> {
        if self.has_applied(cause.stripe_event_id)
            || self.status != PayoutStatus::Processing
            || self.stripe_transfer_id.is_none()
        {
            return None;
        }
        let now = cause.now;
        let reason = match stripe_payout_id {
            Some(po) => format!("funds arrived with bank payout {po} (attributed by {rule})"),
            None => format!("funds arrived ({rule})"),
        };
        Some(self.moved(
            PayoutStatus::Completed,
            "transfer_paid",
            reason,
            cause,
            |p| {
                p.completed_at = Some(now);
                p.next_retry_at = None;
                if let Some(id) = stripe_payout_id {
                    p.stripe_payout_id = Some(id.to_owned());
                }
            },
        ))
    }

    /// The owed look at the account's bank payouts is done: `carried` is the bank payout that
    /// carried this payout's destination payment, if one did. A paid one completes the
    /// payout, a failed one fails it (as its event would have); either way nothing is owed.
    pub fn bank_payouts_checked(
        &self,
        carried: Option<&CarriedPayment>,
        cause: Cause<'_>,
    ) -> Option<Payout> {
        if !self.bank_check_owed {
            return None;
        }
        let moved = carried.and_then(|carried| {
            let rule = format!(
                "the balance transactions of {}, recorded before the transfer was known",
                carried.bank_payout
            );
            match &carried.failure_code {
                None => self.paid(Some(&carried.bank_payout), &rule, cause),
                Some(code) => self.bank_payout_failed(code, &carried.bank_payout, &rule, cause),
            }
        });
        let mut payout = moved.unwrap_or_else(|| self.touched(cause.now));
        payout.bank_check_owed = false;
        Some(payout)
    }

    /// The creator's bank payout failed (also after it was paid): the money stays in their
    /// Stripe account; the payout is failed with the bank's code, quota is not given back.
    pub fn bank_payout_failed(
        &self,
        code: &str,
        stripe_payout_id: &str,
        rule: &str,
        cause: Cause<'_>,
    ) -> Option<Payout> {
        if self.has_applied(cause.stripe_event_id)
            || !matches!(
                self.status,
                PayoutStatus::Processing | PayoutStatus::Completed
            )
        {
            return None;
        }
        let reason =
            format!("bank payout {stripe_payout_id} failed: {code} (attributed by {rule})");
        Some(self.moved(
            PayoutStatus::Failed,
            "payout_failed",
            reason.clone(),
            cause,
            |p| {
                p.stripe_payout_id = Some(stripe_payout_id.to_owned());
                p.failure_code = Some(code.to_owned());
                p.failure_reason = Some(reason);
            },
        ))
    }

    /// Stripe reversed (part of) the transfer; `amount_reversed_cents` is Stripe's running
    /// total. A full reversal ends the payout as reversed.
    pub fn reversed(&self, amount_reversed_cents: i64, cause: Cause<'_>) -> Option<Payout> {
        // Reversals only grow; a stale event with a smaller total changes nothing.
        if self.has_applied(cause.stripe_event_id)
            || amount_reversed_cents <= self.amount_reversed_cents
            || self.stripe_transfer_id.is_none()
        {
            return None;
        }
        let full = amount_reversed_cents >= self.amount.cents;
        let to = if full && self.status.may_move_to(PayoutStatus::Reversed) {
            PayoutStatus::Reversed
        } else {
            self.status
        };
        let reason = format!(
            "{amount_reversed_cents} of {} cents reversed",
            self.amount.cents
        );
        Some(self.moved(to, "transfer_reversed", reason, cause, |p| {
            p.amount_reversed_cents = amount_reversed_cents.min(self.amount.cents);
        }))
    }

    /// The reversal intent not resolved yet, if there is one (at most one at a time).
    pub fn unresolved_reversal(&self) -> Option<&ReversalIntent> {
        self.reversal_intents
            .iter()
            .find(|intent| !intent.state.is_resolved())
    }

    /// The reversal intent recorded under an admin's `Idempotency-Key`.
    pub fn reversal_by_key(&self, client_key: &str) -> Option<&ReversalIntent> {
        self.reversal_intents
            .iter()
            .find(|intent| intent.client_key == client_key)
    }

    pub fn reversal_intent(&self, intent_id: &str) -> Option<&ReversalIntent> {
        self.reversal_intents
            .iter()
            .find(|intent| intent.id == intent_id)
    }

    /// An admin asks to reverse `cents` of the transfer: the intent is recorded (pending)
    /// before Stripe is asked. Refused while another intent is unresolved, when nothing is
    /// left to reverse, or for an amount outside 1..=left.
    pub fn reversal_requested(
        &self,
        client_key: &str,
        cents: i64,
        notes: &str,
        cause: Cause<'_>,
    ) -> Result<Payout, ReversalRefusal> {
        let Some(transfer_id) = self.stripe_transfer_id.clone() else {
            return Err(ReversalRefusal::NothingToReverse(format!(
                "payout {} has no Stripe transfer (it is {})",
                self.id,
                self.status.as_str()
            )));
        };
        if let Some(open) = self.unresolved_reversal() {
            return Err(ReversalRefusal::Unresolved(Box::new(open.clone())));
        }
        let left = self.amount.cents - self.amount_reversed_cents;
        if left <= 0 || self.status == PayoutStatus::Reversed {
            return Err(ReversalRefusal::NothingToReverse(format!(
                "all {} cents of payout {} are reversed",
                self.amount.cents, self.id
            )));
        }
        if !(1..=left).contains(&cents) {
            return Err(ReversalRefusal::BadAmount { left });
        }
        let intent = ReversalIntent {
            id: format!("{}-reversal-{}", self.id, self.reversal_intents.len() + 1),
            client_key: client_key.to_owned(),
            requested_by: cause.actor.to_owned(),
            cents,
            notes: notes.to_owned(),
            transfer_id,
            created_at: cause.now,
            last_sent_at: cause.now,
            state: ReversalState::Pending,
        };
        let reason = format!("reversal {} of {cents} cents requested: {notes}", intent.id);
        Ok(
            self.moved(self.status, "reversal_requested", reason, cause, |p| {
                p.reversal_intents.push(intent);
            }),
        )
    }

    /// A request of the unresolved intent is sent again (the same key): Stripe's idempotency
    /// window counts from now.
    pub fn reversal_resent(&self, intent_id: &str, now: DateTime<Utc>) -> Option<Payout> {
        self.reversal_intent(intent_id)
            .filter(|intent| !intent.state.is_resolved())?;
        let mut payout = self.touched(now);
        for intent in &mut payout.reversal_intents {
            if intent.id == intent_id {
                intent.last_sent_at = now;
            }
        }
        Some(payout)
    }

    /// What Stripe said about an unresolved intent (its request's answer, or the listing).
    /// A made reversal is recorded with who asked, the reversal and the notes, also when a
    /// `transfer.reversed` event got here first (then only the record is added). Nothing
    /// changes for an intent already resolved, or for an unknown answer of an intent
    /// already unknown.
    pub fn reversal_answered(
        &self,
        intent_id: &str,
        outcome: &ReversalOutcome,
        cause: Cause<'_>,
    ) -> Option<Payout> {
        let intent = self
            .reversal_intent(intent_id)
            .filter(|intent| !intent.state.is_resolved())?
            .clone();
        let set_state = |payout: &mut Payout, state: ReversalState| {
            for stored in &mut payout.reversal_intents {
                if stored.id == intent.id {
                    stored.state = state.clone();
                }
            }
        };
        match outcome {
            ReversalOutcome::Made {
                reversal_id,
                total_reversed_cents,
            } => {
                let record = format!(
                    "admin reversal {reversal_id} of {} cents ({total_reversed_cents} of {} reversed in all), intent {}, asked by {}: {}",
                    intent.cents, self.amount.cents, intent.id, intent.requested_by, intent.notes
                );
                // The admin who asked is who reversed (the record says how it became known).
                let cause = Cause {
                    actor: &intent.requested_by,
                    ..cause
                };
                let same_transfer =
                    self.stripe_transfer_id.as_deref() == Some(intent.transfer_id.as_str());
                let applied = same_transfer
                    .then(|| self.reversed(*total_reversed_cents, cause))
                    .flatten();
                let mut payout = match applied {
                    Some(mut payout) => {
                        if let Some(entry) = payout.audit_log.last_mut() {
                            entry.event_type = "transfer_reversed_by_admin".to_owned();
                            entry.reason = record;
                        }
                        payout
                    }
                    None => self.moved(
                        self.status,
                        "transfer_reversed_by_admin",
                        record,
                        cause,
                        |_| {},
                    ),
                };
                set_state(
                    &mut payout,
                    ReversalState::Succeeded {
                        reversal_id: reversal_id.clone(),
                    },
                );
                payout.settle_bookkeeping(cause.now);
                Some(payout)
            }
            ReversalOutcome::Unknown { message } => {
                if !matches!(intent.state, ReversalState::Pending) {
                    return None;
                }
                let reason = format!(
                    "reversal {} of {} cents: outcome unknown ({message}); looked up in the transfer's reversals",
                    intent.id, intent.cents
                );
                Some(self.moved(
                    self.status,
                    "reversal_outcome_unknown",
                    reason,
                    cause,
                    |p| {
                        set_state(
                            p,
                            ReversalState::Unknown {
                                message: message.clone(),
                            },
                        )
                    },
                ))
            }
            ReversalOutcome::Refused { reason } => {
                let record = format!(
                    "reversal {} of {} cents not made: {reason}",
                    intent.id, intent.cents
                );
                Some(
                    self.moved(self.status, "reversal_refused", record, cause, |p| {
                        set_state(
                            p,
                            ReversalState::Refused {
                                reason: reason.clone(),
                            },
                        )
                    }),
                )
            }
        }
    }

    /// The transfer's reversals were listed: `found` is the reversal whose metadata names
    /// the intent, with the transfer's running total. Not found is a definite "not made"
    /// only once Stripe's idempotency window has passed since the intent's last request
    /// (before that, a request in flight may still be executed); until then nothing changes.
    pub fn reversal_looked_up(
        &self,
        intent_id: &str,
        found: Option<(String, i64)>,
        cause: Cause<'_>,
    ) -> Option<Payout> {
        let intent = self
            .reversal_intent(intent_id)
            .filter(|intent| !intent.state.is_resolved())?;
        let outcome = match found {
            Some((reversal_id, total_reversed_cents)) => ReversalOutcome::Made {
                reversal_id,
                total_reversed_cents,
            },
            None if cause.now - intent.last_sent_at >= IDEMPOTENCY_WINDOW => {
                ReversalOutcome::Refused {
                    reason: format!(
                        "not among the reversals of {} {} hours after its last request (Stripe's idempotency window)",
                        intent.transfer_id,
                        IDEMPOTENCY_WINDOW.num_hours()
                    ),
                }
            }
            None => return None,
        };
        self.reversal_answered(intent_id, &outcome, cause)
    }

    /// The limits service holds no reservation for this payout (it was pruned past its
    /// retention, or lost), so it applied nothing: the release is not confirmed and stays
    /// owed, and an admin is alerted once per sequence, since what the limits hold for the
    /// user is now off by an amount only they can correct. (Not even an unchanged target is
    /// "nothing to release": a later total the limits applied and whose answer was lost
    /// may differ from the last one they confirmed.) Same version: part of the settling
    /// write.
    pub fn release_not_applied(&self) -> Payout {
        let mut payout = self.clone();
        let sequence = self.quota.sequence;
        payout.owe_alert(
            format!("{}:quota_unapplied:{sequence}", self.id),
            "payout_quota_release_unapplied",
            format!("Payout {}: the limits hold no reservation to release", self.id),
            format!(
                "Payout {} ({} of user {}) owes the limits service a release of {} cents in total (sequence {sequence}), \
                 but the limits service holds no reservation for it (pruned past its retention?). Nothing was applied: \
                 the user's committed quota is off by up to {} cents. The release stays owed.",
                self.id,
                self.amount,
                self.user_id,
                self.quota.target_cents,
                (self.quota.target_cents - self.quota.confirmed_cents).abs()
            ),
        );
        payout
    }

    /// Records what settling the owed effects achieved: audit entries projected, the quota
    /// release confirmed under a sequence, alerts raised. Whatever is still owed is due
    /// again after a backoff.
    pub fn effects_settled(
        &self,
        projected: u32,
        confirmed: Option<(i64, i64)>,
        raised: &[String],
        now: DateTime<Utc>,
    ) -> Payout {
        let mut payout = self.touched(now);
        payout.audit_projected = payout.audit_projected.max(projected);
        if let Some((cents, sequence)) = confirmed
            && sequence >= payout.quota.confirmed_sequence
        {
            payout.quota.confirmed_cents = cents;
            payout.quota.confirmed_sequence = sequence;
        }
        for key in raised {
            if let Some(position) = payout.owed_alerts.iter().position(|a| &a.key == key) {
                payout.owed_alerts.remove(position);
                payout.raised_alerts.push(key.clone());
            }
        }
        if payout.owes_effects() {
            payout.effects_attempts += 1;
            payout.effects_due_at = Some(
                now + backoff::delay(
                    EFFECTS_BACKOFF_BASE,
                    EFFECTS_BACKOFF_CAP,
                    payout.effects_attempts,
                    &payout.id,
                ),
            );
        } else {
            payout.effects_attempts = 0;
            payout.effects_due_at = None;
        }
        payout
    }
}

// The limits' suspicious-pattern flags (design §6) are `SUSPICIOUS_FREQUENCY` and the size
// flags `LARGE_FIRST_PAYOUT`, `LARGE_PERCENTAGE_OF_EARNINGS`: each alone is a risk an admin
// reviews (level 1), not fraud: three creators a day with a large first payout is an
// ordinary day.

/// The flag that reads as potential fraud by itself: cashing out while the earnings are
/// being refunded or disputed (the stolen-card pattern).
const FRAUD_FLAG: &str = "RECENT_REFUND_OR_DISPUTE";

/// Limits flags that are escalation signals, besides the pattern ones (the rest, such as
/// NEW_ACCOUNT or REQUIRES_ADMIN_APPROVAL, describe the payout rather than a risk).
const SIGNAL_FLAGS: [&str; 4] = [
    "TOO_SOON",
    "EXCEEDS_DAILY_COUNT_LIMIT",
    "EXCEEDS_DAILY_AMOUNT_LIMIT",
    "EXCEEDS_MONTHLY_AMOUNT_LIMIT",
];

/// The alert kind a payout's limits flags raise, and what it says: `payout_fraud_flag`
/// (potential fraud, counted towards ESCALATION_FRAUD_FLAGS) for `RECENT_REFUND_OR_DISPUTE`
/// or two suspicious patterns at once (a burst of requests and a large one); `payout_limits_flag` (level 1) for one pattern or
/// another signal flag; none otherwise.
fn flag_signal(flags: &[String]) -> Option<(&'static str, &'static str)> {
    let has = |flag: &str| flags.iter().any(|f| f == flag);
    // A first cash-out above the large-payout amount is nearly always most of what the
    // creator has earned too: the two size flags count as one pattern, frequency as another.
    let size = has("LARGE_FIRST_PAYOUT") || has("LARGE_PERCENTAGE_OF_EARNINGS");
    let patterns = usize::from(size) + usize::from(has("SUSPICIOUS_FREQUENCY"));
    if has(FRAUD_FLAG) || patterns >= 2 {
        Some(("payout_fraud_flag", "potential fraud"))
    } else if patterns == 1 || SIGNAL_FLAGS.iter().any(|flag| has(flag)) {
        Some(("payout_limits_flag", "a limits flag"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn fraud_is_a_refunded_cash_out_or_two_patterns_at_once_and_one_pattern_is_a_flag() {
        let of = |flags: &[&str]| {
            flag_signal(&flags.iter().map(|f| (*f).to_owned()).collect::<Vec<_>>())
                .map(|(kind, _)| kind)
        };
        assert_eq!(of(&["REQUIRES_ADMIN_APPROVAL", "NEW_ACCOUNT"]), None);
        assert_eq!(
            of(&["REQUIRES_ADMIN_APPROVAL", "LARGE_FIRST_PAYOUT"]),
            Some("payout_limits_flag")
        );
        assert_eq!(of(&["SUSPICIOUS_FREQUENCY"]), Some("payout_limits_flag"));
        assert_eq!(of(&["TOO_SOON"]), Some("payout_limits_flag"));
        // The size flags together are one pattern (a first cash-out is most of the
        // earnings): an ordinary day, not fraud. With a burst of requests, it is.
        assert_eq!(
            of(&["LARGE_FIRST_PAYOUT", "LARGE_PERCENTAGE_OF_EARNINGS"]),
            Some("payout_limits_flag")
        );
        assert_eq!(
            of(&["SUSPICIOUS_FREQUENCY", "LARGE_PERCENTAGE_OF_EARNINGS"]),
            Some("payout_fraud_flag")
        );
        assert_eq!(
            of(&["SUSPICIOUS_FREQUENCY", "LARGE_FIRST_PAYOUT"]),
            Some("payout_fraud_flag")
        );
        assert_eq!(of(&["RECENT_REFUND_OR_DISPUTE"]), Some("payout_fraud_flag"));
    }

    fn cause() -> Cause<'static> {
        Cause::new("stripe", now())
    }

    fn payout(status: PayoutStatus) -> Payout {
        let mut payout = Payout::requested(
            "payout_1".to_owned(),
            "u",
            Money::usd(1_000_00),
            "k",
            "acct_1",
            now(),
            Duration::minutes(1),
        );
        payout.status = status;
        payout.stripe_transfer_id =
            matches!(status, PayoutStatus::Processing | PayoutStatus::Completed)
                .then(|| "tr_1".to_owned());
        payout.next_retry_at = (status == PayoutStatus::Pending).then(now);
        payout
    }

    fn seen(id: &str) -> SeenTransfer {
        SeenTransfer {
            id: id.to_owned(),
            attempt: Some(0),
            destination_payment: Some(format!("py_{id}")),
            amount_reversed_cents: 0,
            reversed: false,
        }
    }

    fn event(id: &'static str) -> Cause<'static> {
        Cause::event("stripe", id, now())
    }

    #[test]
    fn states_only_move_forward_except_the_documented_edges() {
        use PayoutStatus::*;
        let edges = [
            (Processing, Reversed),
            (Completed, Reversed),
            (Completed, Failed),
            (Processing, Pending),
        ];
        for from in PayoutStatus::ALL {
            for to in PayoutStatus::ALL {
                let allowed = from.may_move_to(to);
                let forward = !from.is_terminal() && to.rank() > from.rank();
                assert_eq!(
                    allowed,
                    forward || edges.contains(&(from, to)),
                    "{from:?} -> {to:?}"
                );
            }
        }
        assert!(!Failed.may_move_to(Completed));
        assert!(!Completed.may_move_to(Processing));
    }

    #[test]
    fn every_change_leaves_its_audit_record_with_a_stable_id_and_owes_its_projection() {
        let admitted = payout(PayoutStatus::Admitting)
            .admitted(false, Vec::new(), "", now())
            .unwrap();
        assert_eq!(admitted.audit_log.len(), 1);
        assert_eq!(admitted.audit_log[0].id, "payout_1:0");
        assert_eq!(
            admitted.audit_log[0].from_status,
            Some(PayoutStatus::Admitting)
        );
        assert_eq!(admitted.audit_log[0].to_status, PayoutStatus::Pending);
        assert!(admitted.owes_effects());
        assert_eq!(admitted.effects_due_at, Some(now()));
        let created = admitted
            .transfer_seen(
                &seen("tr_9"),
                &TransferNews::Exists,
                RETRY_BASE,
                event("evt_1"),
            )
            .unwrap();
        assert_eq!(created.audit_log.len(), 2);
        assert_eq!(created.audit_log[1].id, "payout_1:1");
        assert_eq!(
            created.audit_log[1].stripe_event_id.as_deref(),
            Some("evt_1")
        );
        assert_eq!(created.audit_log[1].transfer_id.as_deref(), Some("tr_9"));
        assert_eq!(created.destination_payment_id.as_deref(), Some("py_tr_9"));
        assert!(
            created.bank_check_owed,
            "a known payment owes a look at bank payouts"
        );
        let checked = created
            .bank_payouts_checked(None, Cause::new("service:payouts", now()))
            .unwrap();
        assert_eq!(checked.status, PayoutStatus::Processing);
        let settled = checked.effects_settled(2, Some((0, 0)), &[], now());
        assert!(!settled.owes_effects());
        assert_eq!(settled.effects_due_at, None);
    }

    #[test]
    fn a_bank_payout_recorded_before_the_transfer_was_known_decides_the_payout() {
        let created = payout(PayoutStatus::Pending)
            .transfer_seen(&seen("tr_9"), &TransferNews::Exists, RETRY_BASE, event("e"))
            .unwrap();
        let cause = Cause::new("service:payouts", now());
        let paid = CarriedPayment {
            payment: "py_tr_9".to_owned(),
            bank_payout: "po_1".to_owned(),
            failure_code: None,
        };
        let completed = created.bank_payouts_checked(Some(&paid), cause).unwrap();
        assert_eq!(completed.status, PayoutStatus::Completed);
        assert_eq!(completed.stripe_payout_id.as_deref(), Some("po_1"));
        assert!(!completed.bank_check_owed);
        assert_eq!(
            completed.audit_log.last().unwrap().event_type,
            "transfer_paid"
        );
        // Looked at once: nothing owed any more, a second look changes nothing.
        assert!(completed.bank_payouts_checked(Some(&paid), cause).is_none());

        let failed = CarriedPayment {
            failure_code: Some("account_closed".to_owned()),
            ..paid
        };
        let turned = created.bank_payouts_checked(Some(&failed), cause).unwrap();
        assert_eq!(turned.status, PayoutStatus::Failed);
        assert_eq!(turned.failure_code.as_deref(), Some("account_closed"));
        assert_eq!(
            turned.quota_needed_cents(),
            created.amount.cents,
            "quota stays held"
        );
    }

    #[test]
    fn an_event_is_applied_once() {
        let created = payout(PayoutStatus::Pending)
            .transfer_seen(
                &seen("tr_1"),
                &TransferNews::Exists,
                RETRY_BASE,
                event("evt_1"),
            )
            .unwrap();
        let paid = created
            .transfer_seen(
                &seen("tr_1"),
                &TransferNews::Paid,
                RETRY_BASE,
                event("evt_2"),
            )
            .unwrap();
        assert_eq!(paid.status, PayoutStatus::Completed);
        assert_eq!(
            paid.transfer_seen(
                &seen("tr_1"),
                &TransferNews::Paid,
                RETRY_BASE,
                event("evt_2")
            ),
            None
        );
        let mut reversal = seen("tr_1");
        reversal.amount_reversed_cents = 100;
        let reversed = paid
            .transfer_seen(
                &reversal,
                &TransferNews::Reversed,
                RETRY_BASE,
                event("evt_3"),
            )
            .unwrap();
        assert_eq!(
            reversed.transfer_seen(
                &reversal,
                &TransferNews::Reversed,
                RETRY_BASE,
                event("evt_3")
            ),
            None
        );
    }

    #[test]
    fn an_unknown_outcome_is_never_a_failure_and_keeps_the_attempt() {
        let claimed = payout(PayoutStatus::Pending)
            .claimed_for_transfer(now(), Duration::minutes(2))
            .unwrap();
        assert!(claimed.outcome_unknown, "a claim is an attempt in flight");
        let mut current = claimed.clone();
        for round in 1..=20 {
            current = current
                .outcome_still_unknown("timeout", Duration::hours(1), cause())
                .unwrap();
            assert_eq!(current.status, PayoutStatus::Pending, "round {round}");
            assert!(current.outcome_unknown);
            assert_eq!((current.attempt, current.retry_count), (0, 0));
            assert_eq!(current.release_target_cents(), 0, "quota kept");
        }
        assert_eq!(
            transfer_idempotency_key(&current.id, current.attempt),
            transfer_idempotency_key(&claimed.id, 0),
            "same attempt, same idempotency key"
        );
        // Retries back off up to an hour, and only the first unknown answer is audited.
        assert!(current.next_retry_at.unwrap() - now() <= Duration::minutes(75));
        assert!(current.next_retry_at.unwrap() - now() >= Duration::hours(1));
        assert_eq!(current.audit_log.len(), 1);
    }

    #[test]
    fn an_unknown_outcome_raises_one_alert_after_the_threshold() {
        let claimed = payout(PayoutStatus::Pending)
            .claimed_for_transfer(now(), Duration::minutes(2))
            .unwrap();
        let early = claimed
            .outcome_still_unknown("timeout", Duration::hours(1), cause())
            .unwrap();
        assert!(early.owed_alerts.is_empty());
        let later = Cause::new("stripe", now() + Duration::minutes(61));
        let alerted = early
            .outcome_still_unknown("timeout", Duration::hours(1), later)
            .unwrap();
        assert_eq!(alerted.owed_alerts.len(), 1);
        assert_eq!(alerted.owed_alerts[0].kind, "payout_outcome_unknown");
        let raised = alerted.effects_settled(0, None, &[alerted.owed_alerts[0].key.clone()], now());
        let again = raised
            .outcome_still_unknown("timeout", Duration::hours(1), later)
            .unwrap();
        assert!(again.owed_alerts.is_empty(), "raised once");
    }

    #[test]
    fn a_refusal_of_the_platform_signals_stripe_unable_to_pay_and_a_creators_does_not() {
        let kinds = |payout: &Payout| -> Vec<String> {
            payout.owed_alerts.iter().map(|a| a.kind.clone()).collect()
        };
        // The platform's balance: every attempt owes the signal, retried or failed.
        let retried = payout(PayoutStatus::Pending)
            .attempt_declined("balance_insufficient", "", true, None, RETRY_BASE, cause())
            .unwrap();
        assert_eq!(retried.status, PayoutStatus::Pending);
        assert_eq!(kinds(&retried), ["payout_stripe_refusing"]);
        let again = retried
            .attempt_declined("balance_insufficient", "", true, None, RETRY_BASE, cause())
            .unwrap();
        assert_eq!(again.owed_alerts.len(), 2, "one per attempt");
        assert_ne!(again.owed_alerts[0].key, again.owed_alerts[1].key);
        // The creator's account: a payout failure, not the platform.
        let creators = payout(PayoutStatus::Pending)
            .attempt_declined("account_closed", "", false, None, RETRY_BASE, cause())
            .unwrap();
        assert_eq!(kinds(&creators), ["payout_failed"]);
        assert!(
            is_platform_refusal("insufficient_funds") && !is_platform_refusal("account_closed")
        );
    }

    #[test]
    fn definite_refusals_follow_the_spec_schedule_then_fail_and_give_the_quota_back() {
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
        let mut current = payout(PayoutStatus::Pending);
        for retry in 1..=MAX_RETRIES {
            current = current
                .attempt_declined("insufficient_funds", "", true, None, RETRY_BASE, cause())
                .unwrap();
            assert_eq!(
                (current.status, current.retry_count, current.attempt),
                (PayoutStatus::Pending, retry, retry)
            );
            assert_eq!(current.quota.sequence, 0, "nothing to give back yet");
        }
        let failed = current
            .attempt_declined("insufficient_funds", "", true, None, RETRY_BASE, cause())
            .unwrap();
        assert_eq!(failed.status, PayoutStatus::Failed);
        assert!(!failed.money_left());
        assert_eq!(failed.release_target_cents(), failed.amount.cents);
        assert_eq!(failed.quota.target_cents, failed.amount.cents);
        assert_eq!(failed.quota.sequence, 1);
        assert!(!failed.quota.is_settled(), "owed until the limits confirm");
        let settled = failed.effects_settled(
            u32::try_from(failed.audit_log.len()).unwrap(),
            Some((failed.amount.cents, 1)),
            &[],
            now(),
        );
        assert!(settled.quota.is_settled());
        // The failure's escalation signal and, the platform's balance being short, one
        // "Stripe refusing" signal per attempt are the only effects owed.
        let kinds: Vec<&str> = settled
            .owed_alerts
            .iter()
            .map(|a| a.kind.as_str())
            .collect();
        let attempts = usize::try_from(MAX_RETRIES).unwrap() + 1;
        assert_eq!(
            kinds.iter().filter(|k| **k == "payout_failed").count(),
            1,
            "{kinds:?}"
        );
        assert_eq!(
            kinds
                .iter()
                .filter(|k| **k == "payout_stripe_refusing")
                .count(),
            attempts,
            "{kinds:?}"
        );
        assert_eq!(kinds.len(), attempts + 1, "{kinds:?}");
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
    fn decisions_apply_only_to_held_payouts_and_count_as_carried_out_forever() {
        assert_eq!(
            payout(PayoutStatus::Pending).decided(true, "a", "", now()),
            None
        );
        let rejected = payout(PayoutStatus::PendingApproval)
            .decided(false, "a", "fraud", now())
            .unwrap();
        assert_eq!(
            rejected.failure_reason.as_deref(),
            Some("Rejected by admin: fraud")
        );
        assert_eq!(rejected.audit_log[0].actor, "admin:a");
        assert_eq!(rejected.release_target_cents(), rejected.amount.cents);
        assert!(rejected.carries_decision(false));
        // An approved payout that failed later still carries its approval.
        let approved = payout(PayoutStatus::PendingApproval)
            .decided(true, "a", "ok", now())
            .unwrap();
        let failed_later = approved
            .attempt_declined("account_invalid", "", false, None, RETRY_BASE, cause())
            .unwrap();
        assert_eq!(failed_later.status, PayoutStatus::Failed);
        assert!(failed_later.carries_decision(true));
        assert!(!failed_later.carries_decision(false));
    }

    #[test]
    fn a_failed_transfer_takes_its_reversals_with_it() {
        let first = payout(PayoutStatus::Pending)
            .transfer_seen(&seen("tr_1"), &TransferNews::Exists, RETRY_BASE, cause())
            .unwrap();
        let partly = first.reversed(300_00, event("evt_rev")).unwrap();
        assert_eq!(partly.release_target_cents(), 300_00);
        let failed = partly
            .transfer_seen(
                &seen("tr_1"),
                &TransferNews::Failed {
                    code: "insufficient_funds".to_owned(),
                    message: String::new(),
                },
                RETRY_BASE,
                event("evt_failed"),
            )
            .unwrap();
        assert_eq!((failed.status, failed.attempt), (PayoutStatus::Pending, 1));
        // The next attempt moves the whole amount: its quota is held in full again, under a
        // newer sequence than the partial release.
        assert_eq!(failed.amount_reversed_cents, 0);
        assert_eq!(failed.quota_needed_cents(), failed.amount.cents);
        assert!(failed.quota.sequence > partly.quota.sequence);
        assert!(!failed.quota.is_settled(), "owed until the limits confirm");
    }

    #[test]
    fn late_events_act_only_on_the_transfer_they_name() {
        // Attempt 0's transfer failed (legacy); attempt 1 made tr_2.
        let first = payout(PayoutStatus::Pending)
            .transfer_seen(&seen("tr_1"), &TransferNews::Exists, RETRY_BASE, cause())
            .unwrap();
        let failed_first = first
            .transfer_seen(
                &seen("tr_1"),
                &TransferNews::Failed {
                    code: "insufficient_funds".to_owned(),
                    message: String::new(),
                },
                RETRY_BASE,
                event("evt_failed"),
            )
            .unwrap();
        assert_eq!(
            (failed_first.status, failed_first.attempt),
            (PayoutStatus::Pending, 1)
        );
        let mut second = seen("tr_2");
        second.attempt = Some(1);
        let processing = failed_first
            .transfer_seen(&second, &TransferNews::Exists, RETRY_BASE, cause())
            .unwrap();
        assert_eq!(processing.stripe_transfer_id.as_deref(), Some("tr_2"));
        // Late news of the failed transfer changes nothing at all.
        for news in [
            TransferNews::Exists,
            TransferNews::Paid,
            TransferNews::Failed {
                code: "account_closed".to_owned(),
                message: String::new(),
            },
            TransferNews::Reversed,
        ] {
            assert_eq!(
                processing.transfer_seen(&seen("tr_1"), &news, RETRY_BASE, event("evt_late")),
                None,
                "{news:?}"
            );
        }
    }

    #[test]
    fn a_second_live_transfer_is_flagged_never_dropped() {
        let processing = payout(PayoutStatus::Processing);
        let flagged = processing
            .transfer_seen(
                &seen("tr_other"),
                &TransferNews::Exists,
                RETRY_BASE,
                cause(),
            )
            .unwrap();
        assert_eq!(flagged.status, PayoutStatus::Processing);
        assert_eq!(flagged.stripe_transfer_id.as_deref(), Some("tr_1"));
        assert_eq!(flagged.stray_transfer_ids, vec!["tr_other".to_owned()]);
        assert_eq!(flagged.owed_alerts[0].kind, "payout_stray_transfer");
        assert_eq!(
            flagged.transfer_seen(
                &seen("tr_other"),
                &TransferNews::Exists,
                RETRY_BASE,
                cause()
            ),
            None,
            "flagged once"
        );
    }

    #[test]
    fn an_admin_reversal_is_an_intent_resolved_only_by_stripe() {
        let processing = payout(PayoutStatus::Processing);
        let admin = Cause::new("admin:a", now());
        let recorded = processing
            .reversal_requested("confirm-1", 300_00, "clawback", admin)
            .unwrap();
        let intent = recorded.reversal_intents[0].clone();
        assert_eq!(intent.state, ReversalState::Pending);
        assert_eq!(
            intent.idempotency_key(),
            format!("reversal-{}-tr_1", intent.id)
        );
        assert!(recorded.owes_effects(), "an unresolved intent is owed work");
        assert_eq!(
            recorded.audit_log.last().unwrap().event_type,
            "reversal_requested"
        );
        // A second reversal waits while the first is unresolved.
        let refused = recorded.reversal_requested("confirm-2", 100_00, "again", admin);
        assert!(matches!(refused, Err(ReversalRefusal::Unresolved(open)) if open.id == intent.id));
        // Unknown, then not listed: nothing is concluded inside Stripe's idempotency window.
        let unknown = recorded
            .reversal_answered(
                &intent.id,
                &ReversalOutcome::Unknown {
                    message: "timeout".to_owned(),
                },
                cause(),
            )
            .unwrap();
        let early = Cause::new("stripe:lookup", now() + Duration::hours(23));
        assert_eq!(unknown.reversal_looked_up(&intent.id, None, early), None);
        // Meanwhile `transfer.reversed` arrives; then the listing finds the reversal: only the
        // record is added, the total is not counted twice.
        let mut event = seen("tr_1");
        event.amount_reversed_cents = 300_00;
        let applied = unknown
            .transfer_seen(
                &event,
                &TransferNews::Reversed,
                RETRY_BASE,
                self::event("evt_r"),
            )
            .unwrap();
        let found = applied
            .reversal_looked_up(&intent.id, Some(("trr_1".to_owned(), 300_00)), early)
            .unwrap();
        assert_eq!(found.amount_reversed_cents, 300_00);
        assert_eq!(
            found.reversal_intents[0].state,
            ReversalState::Succeeded {
                reversal_id: "trr_1".to_owned()
            }
        );
        assert_eq!(found.quota.target_cents, 300_00);
        assert_eq!(found.quota.sequence, applied.quota.sequence, "counted once");
        assert_eq!(
            found.reversal_answered(
                &intent.id,
                &ReversalOutcome::Unknown {
                    message: String::new()
                },
                early
            ),
            None,
            "resolved for good"
        );
        // Not listed after the window: not made.
        let late = Cause::new("stripe:lookup", now() + Duration::hours(24));
        let not_made = unknown.reversal_looked_up(&intent.id, None, late).unwrap();
        assert_eq!(not_made.reversal_intents[0].state.as_str(), "refused");
        assert!(
            not_made
                .reversal_requested("confirm-3", 100_00, "again", admin)
                .is_ok()
        );
    }

    #[test]
    fn a_stray_transfer_keeps_its_quota_held_until_it_is_reversed() {
        let flagged = payout(PayoutStatus::Processing)
            .transfer_seen(
                &seen("tr_stray"),
                &TransferNews::Exists,
                RETRY_BASE,
                cause(),
            )
            .unwrap();
        // The payout's own transfer is reversed in full: its money is back, but the stray
        // transfer's is still with the creator, so the quota stays held.
        let mut own = seen("tr_1");
        own.amount_reversed_cents = 1_000_00;
        let reversed = flagged
            .transfer_seen(&own, &TransferNews::Reversed, RETRY_BASE, event("evt_own"))
            .unwrap();
        assert_eq!(reversed.status, PayoutStatus::Reversed);
        assert_eq!(reversed.release_target_cents(), 0, "the stray money is out");
        assert_eq!(reversed.quota_needed_cents(), reversed.amount.cents);
        // Once Stripe says the stray transfer is reversed in full too, the quota goes back.
        let mut stray = seen("tr_stray");
        stray.amount_reversed_cents = 1_000_00;
        stray.reversed = true;
        let both = reversed
            .transfer_seen(
                &stray,
                &TransferNews::Reversed,
                RETRY_BASE,
                event("evt_stray"),
            )
            .unwrap();
        assert_eq!(both.release_target_cents(), both.amount.cents);
        assert!(both.quota.sequence > reversed.quota.sequence);
    }

    #[test]
    fn a_transfer_for_a_failed_payout_is_adopted_with_an_alert_and_holds_quota_again() {
        let failed = payout(PayoutStatus::Pending)
            .attempt_declined("account_invalid", "", false, None, RETRY_BASE, cause())
            .unwrap();
        assert_eq!(failed.quota.target_cents, failed.amount.cents);
        let adopted = failed
            .transfer_seen(
                &seen("tr_late"),
                &TransferNews::Exists,
                RETRY_BASE,
                event("evt_c"),
            )
            .unwrap();
        assert_eq!(adopted.status, PayoutStatus::Processing);
        assert_eq!(adopted.stripe_transfer_id.as_deref(), Some("tr_late"));
        assert_eq!(
            adopted.audit_log.last().unwrap().event_type,
            "transfer_adopted"
        );
        assert_eq!(
            adopted.owed_alerts.last().unwrap().kind,
            "payout_transfer_adopted"
        );
        assert_eq!(
            adopted.quota.target_cents, 0,
            "the money left: quota held again"
        );
        assert_eq!(adopted.quota.sequence, 2);
        assert_eq!(adopted.failure_code, None);
    }

    #[test]
    fn a_reversal_that_arrives_before_the_transfer_is_known_is_applied_by_adopting_it() {
        let claimed = payout(PayoutStatus::Pending)
            .claimed_for_transfer(now(), Duration::minutes(2))
            .unwrap();
        let mut reversal = seen("tr_1");
        reversal.amount_reversed_cents = 1_000_00;
        let reversed = claimed
            .transfer_seen(
                &reversal,
                &TransferNews::Reversed,
                RETRY_BASE,
                event("evt_rev"),
            )
            .unwrap();
        assert_eq!(reversed.status, PayoutStatus::Reversed);
        assert_eq!(reversed.stripe_transfer_id.as_deref(), Some("tr_1"));
        assert!(!reversed.outcome_unknown);
        assert_eq!(reversed.release_target_cents(), reversed.amount.cents);
        // The worker's late answer for the same transfer changes nothing.
        assert_eq!(
            reversed.transfer_seen(&seen("tr_1"), &TransferNews::Exists, RETRY_BASE, cause()),
            None
        );
    }

    #[test]
    fn a_legacy_failure_of_the_unknown_attempt_resolves_it() {
        let claimed = payout(PayoutStatus::Pending)
            .claimed_for_transfer(now(), Duration::minutes(2))
            .unwrap();
        let failed = claimed
            .transfer_seen(
                &seen("tr_x"),
                &TransferNews::Failed {
                    code: "account_closed".to_owned(),
                    message: "closed".to_owned(),
                },
                RETRY_BASE,
                event("evt_f"),
            )
            .unwrap();
        assert_eq!((failed.status, failed.attempt), (PayoutStatus::Pending, 1));
        assert!(!failed.outcome_unknown);
        assert_eq!(failed.failed_transfer_ids, vec!["tr_x".to_owned()]);
    }

    #[test]
    fn partial_and_full_reversals_set_the_release_target() {
        let processing = payout(PayoutStatus::Processing);
        let partly = processing.reversed(300_00, cause()).unwrap();
        assert_eq!(partly.status, PayoutStatus::Processing);
        assert_eq!(
            (partly.quota.target_cents, partly.quota.sequence),
            (300_00, 1)
        );
        assert_eq!(partly.reversed(300_00, cause()), None, "stale total");
        let fully = partly.reversed(1_000_00, cause()).unwrap();
        assert_eq!(fully.status, PayoutStatus::Reversed);
        assert_eq!(
            (fully.quota.target_cents, fully.quota.sequence),
            (1_000_00, 2)
        );
    }

    #[test]
    fn work_backs_off_with_jitter_then_parks_with_an_alert() {
        let mut current = payout(PayoutStatus::Admitting);
        for attempt in 1..MAX_WORK_ATTEMPTS {
            current = current.work_failed("admission", "limits unavailable", now());
            let waited = current.next_retry_at.unwrap() - now();
            let nominal = (WORK_BACKOFF_BASE * (1 << (attempt - 1))).min(WORK_BACKOFF_CAP);
            assert!(waited >= nominal, "attempt {attempt}: backs off");
            assert!(
                waited <= nominal + nominal / 4,
                "attempt {attempt}: bounded jitter"
            );
            assert!(!current.parked);
        }
        let parked = current.work_failed("admission", "limits unavailable", now());
        assert!(parked.parked);
        assert_eq!(parked.next_retry_at, None);
        assert_eq!(parked.owed_alerts[0].kind, "payout_parked");
        let resumed = parked.resumed("admin:a", now()).unwrap();
        assert!(!resumed.parked);
        assert_eq!(
            (resumed.work_attempts, resumed.next_retry_at),
            (0, Some(now()))
        );
        assert_eq!(
            payout(PayoutStatus::Admitting).resumed("admin:a", now()),
            None
        );
    }

    #[test]
    fn status_names_round_trip() {
        for status in PayoutStatus::ALL {
            assert_eq!(PayoutStatus::parse(status.as_str()), Some(status));
        }
    }
}
