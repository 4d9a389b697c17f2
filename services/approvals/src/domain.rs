//! Approvals and the rules of deciding them (design §7), with dual control.
//!
//! ```text
//!                    approve (k+1 < required: recorded, waits "k+1 of required")
//!                   +----+
//!                   v    |
//!   create ---> PENDING -+-- approve (k+1 = required, by an admin not yet counted) --> APPROVED
//!                   |
//!                   +-- reject (by any admin, at any count: decides at once) ---------> REJECTED
//! ```
//!
//! The rule that keeps money safe: an approval is APPROVED (and the payout transferred)
//! only once `approvals_required` different admins, none of them the payee, have approved;
//! every step is one versioned compare-and-set, so racing admins make exactly one decision
//! and one admin racing with themselves is counted once.

use chrono::{DateTime, Duration, Utc};
use payouts_runtime::backoff;
use payouts_runtime::{Money, ServiceError};

/// How long a decision is left to the request that made it before the worker re-drives it.
pub const REDRIVE_AFTER: Duration = Duration::seconds(10);
/// Failed tries to carry a decision out before it is parked with a critical alert.
pub const MAX_CARRY_OUT_ATTEMPTS: u32 = 12;
/// Backoff between tries: 30 s doubling, capped at 30 minutes, with a deterministic jitter.
pub const CARRY_OUT_BACKOFF_BASE: Duration = Duration::seconds(30);
pub const CARRY_OUT_BACKOFF_CAP: Duration = Duration::minutes(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Rejected,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Rejected => "rejected",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(ApprovalStatus::Pending),
            "approved" => Some(ApprovalStatus::Approved),
            "rejected" => Some(ApprovalStatus::Rejected),
            _ => None,
        }
    }
}

/// An admin's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Approve,
    Reject,
}

/// The limits' figures when the payout was held (design §7 metadata).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HoldMetadata {
    pub is_new_account: bool,
    pub account_age_days: i64,
    pub daily_payout_count: i64,
    pub daily_payout_amount_cents: i64,
    pub monthly_payout_amount_cents: i64,
    pub lifetime_earnings_cents: i64,
}

/// What an admin sees about the requester (design §7 user context panel), as of the request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserContext {
    pub account_age_days: i64,
    pub lifetime_earnings_cents: i64,
    pub completed_payout_count: i64,
    pub completed_payout_cents: i64,
    pub recent_refund_count: i64,
    pub recent_dispute_count: i64,
}

/// One admin's approval, recorded (a dual-control approval keeps the first while it waits
/// for the second).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminApproval {
    /// The admin's subject.
    pub reviewer: String,
    pub approved_at: DateTime<Utc>,
    pub notes: Option<String>,
}

/// How many different admins must approve a held payout of `amount`: two when dual control
/// is on (`APPROVAL_DUAL_CONTROL_CENTS`) and the amount is strictly above it, else one.
pub fn approvals_required(amount: &Money, dual_control_above_cents: Option<i64>) -> u32 {
    match dual_control_above_cents {
        Some(above) if amount.cents > above => 2,
        _ => 1,
    }
}

/// A payout held for review (payoutApprovalQueue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// "approval_<payout id>", one approval per payout.
    pub id: String,
    pub payout_id: String,
    pub user_id: String,
    pub amount: Money,
    pub status: ApprovalStatus,
    pub reason: String,
    /// Design §6 flag names.
    pub flags: Vec<String>,
    pub requested_at: DateTime<Utc>,
    pub reviewed_at: Option<DateTime<Utc>>,
    pub reviewed_by: Option<String>,
    pub review_notes: Option<String>,
    pub metadata: HoldMetadata,
    pub user_context: UserContext,
    /// Different admins who must approve (1, or 2 under dual control), fixed at creation.
    pub approvals_required: u32,
    /// The approvals so far, oldest first (the deciding one included once approved).
    pub approvals: Vec<AdminApproval>,
    /// The decision has been carried out by the payouts service.
    pub applied: bool,
    /// When the worker next tries to carry the decision out (None: nothing to do).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Failed tries to carry the decision out.
    pub attempts: u32,
    /// Carrying it out failed too often: stopped, an admin was alerted and resumes it.
    pub parked: bool,
    pub version: i64,
}

/// The approval id of a payout.
pub fn approval_id(payout_id: &str) -> String {
    format!("approval_{payout_id}")
}

impl Approval {
    /// Approvals received so far.
    pub fn approvals_received(&self) -> u32 {
        u32::try_from(self.approvals.len()).unwrap_or(u32::MAX)
    }

    /// Decides a pending approval, or records one approval of several. Decisions are final:
    /// a decided approval is a conflict. Rejecting needs notes and decides at once; nobody
    /// decides on their own payout; an admin who has approved cannot approve again (a
    /// conflict: dual control needs a different admin).
    pub fn decide(
        &self,
        action: Action,
        reviewer: &str,
        notes: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Approval, ServiceError> {
        if self.status != ApprovalStatus::Pending {
            return Err(ServiceError::conflict(format!(
                "approval {} was already {}",
                self.id,
                self.status.as_str()
            )));
        }
        let reviewer = reviewer.trim();
        if reviewer.is_empty() {
            return Err(ServiceError::invalid_argument("reviewer is required"));
        }
        if reviewer == self.user_id {
            return Err(ServiceError::new(
                payouts_runtime::ErrorKind::PermissionDenied,
                "an admin cannot decide on their own payout",
            ));
        }
        if action == Action::Approve
            && self
                .approvals
                .iter()
                .any(|approval| approval.reviewer == reviewer)
        {
            return Err(ServiceError::conflict(format!(
                "{reviewer} has already approved {} ({} of {}); a different admin must approve",
                self.id,
                self.approvals_received(),
                self.approvals_required
            )));
        }
        let notes = notes.map(str::trim).filter(|notes| !notes.is_empty());
        if action == Action::Reject && notes.is_none() {
            return Err(ServiceError::invalid_argument(
                "notes are required to reject a payout",
            ));
        }
        let mut approvals = self.approvals.clone();
        if action == Action::Approve {
            approvals.push(AdminApproval {
                reviewer: reviewer.to_owned(),
                approved_at: now,
                notes: notes.map(str::to_owned),
            });
            if approvals.len() < usize::try_from(self.approvals_required).unwrap_or(usize::MAX) {
                // Recorded; still pending, nothing to carry out until the next admin approves.
                return Ok(Approval {
                    approvals,
                    version: self.version + 1,
                    ..self.clone()
                });
            }
        }
        Ok(Approval {
            status: match action {
                Action::Approve => ApprovalStatus::Approved,
                Action::Reject => ApprovalStatus::Rejected,
            },
            approvals,
            reviewed_at: Some(now),
            reviewed_by: Some(reviewer.to_owned()),
            review_notes: notes.map(str::to_owned),
            // The deciding request carries it out; the worker only if that did not happen.
            next_attempt_at: Some(now + REDRIVE_AFTER),
            attempts: 0,
            version: self.version + 1,
            ..self.clone()
        })
    }

    /// Carrying the decision out failed: try again after a backoff. `true` when the bound
    /// is reached (the caller parks it once the admins are alerted).
    pub fn carry_out_failed(&self, now: DateTime<Utc>) -> (Approval, bool) {
        let attempts = self.attempts + 1;
        let approval = Approval {
            attempts,
            next_attempt_at: Some(
                now + backoff::delay(
                    CARRY_OUT_BACKOFF_BASE,
                    CARRY_OUT_BACKOFF_CAP,
                    attempts,
                    &self.id,
                ),
            ),
            version: self.version + 1,
            ..self.clone()
        };
        (approval, attempts >= MAX_CARRY_OUT_ATTEMPTS)
    }

    /// Parked after too many failures: the worker leaves it until an admin resumes it.
    pub fn parked(&self) -> Approval {
        Approval {
            parked: true,
            next_attempt_at: None,
            version: self.version + 1,
            ..self.clone()
        }
    }

    /// An admin resumed a parked decision: due now, with a fresh set of tries.
    pub fn resumed(&self, now: DateTime<Utc>) -> Option<Approval> {
        (self.parked && !self.applied).then(|| Approval {
            parked: false,
            attempts: 0,
            next_attempt_at: Some(now),
            version: self.version + 1,
            ..self.clone()
        })
    }
}

impl Approval {
    /// The decision was carried out by the payouts service.
    pub fn applied(&self) -> Approval {
        Approval {
            applied: true,
            next_attempt_at: None,
            parked: false,
            version: self.version + 1,
            ..self.clone()
        }
    }

    /// Whether the approval passes the admin's filter.
    pub fn matches(&self, filter: &Filter) -> bool {
        filter.status.is_none_or(|status| self.status == status)
            && filter
                .min_amount_cents
                .is_none_or(|min| self.amount.cents >= min)
            && filter
                .max_amount_cents
                .is_none_or(|max| self.amount.cents <= max)
            && filter
                .flag
                .as_ref()
                .is_none_or(|flag| self.flags.contains(flag))
    }
}

/// The admin queue's filter and page (oldest request first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub status: Option<ApprovalStatus>,
    pub min_amount_cents: Option<i64>,
    pub max_amount_cents: Option<i64>,
    /// A flag name ("NEW_ACCOUNT").
    pub flag: Option<String>,
    /// The (requested_at, id) of the last approval of the previous page.
    pub after: Option<(DateTime<Utc>, String)>,
    pub limit: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use payouts_runtime::ErrorKind;

    fn pending() -> Approval {
        Approval {
            id: approval_id("payout_1"),
            payout_id: "payout_1".to_owned(),
            user_id: "creator".to_owned(),
            amount: Money::usd(750_000),
            status: ApprovalStatus::Pending,
            reason: "Amount exceeds $5,000".to_owned(),
            flags: vec!["REQUIRES_ADMIN_APPROVAL".to_owned()],
            requested_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
            reviewed_at: None,
            reviewed_by: None,
            review_notes: None,
            metadata: HoldMetadata::default(),
            user_context: UserContext::default(),
            approvals_required: 1,
            approvals: Vec::new(),
            applied: false,
            next_attempt_at: None,
            attempts: 0,
            parked: false,
            version: 1,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_100, 0).unwrap()
    }

    #[test]
    fn approving_records_reviewer_time_and_notes() {
        let approved = pending()
            .decide(Action::Approve, "admin-1", Some(" ok "), now())
            .unwrap();
        assert_eq!(approved.status, ApprovalStatus::Approved);
        assert_eq!(approved.reviewed_by.as_deref(), Some("admin-1"));
        assert_eq!(approved.reviewed_at, Some(now()));
        assert_eq!(approved.review_notes.as_deref(), Some("ok"));
        assert_eq!(approved.version, 2);
    }

    #[test]
    fn rejecting_needs_notes() {
        let error = pending()
            .decide(Action::Reject, "admin-1", Some("  "), now())
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidArgument);
        assert!(
            pending()
                .decide(Action::Reject, "admin-1", Some("fraud"), now())
                .is_ok()
        );
    }

    #[test]
    fn decisions_are_final() {
        let approved = pending()
            .decide(Action::Approve, "admin-1", None, now())
            .unwrap();
        let error = approved
            .decide(Action::Reject, "admin-2", Some("no"), now())
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Conflict);
    }

    #[test]
    fn nobody_decides_on_their_own_payout() {
        let error = pending()
            .decide(Action::Approve, "creator", None, now())
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::PermissionDenied);
    }

    fn dual(cents: i64) -> Approval {
        let amount = Money::usd(cents);
        Approval {
            approvals_required: approvals_required(&amount, Some(1_000_000)),
            amount,
            ..pending()
        }
    }

    #[test]
    fn dual_control_starts_one_cent_above_the_amount() {
        assert_eq!(
            approvals_required(&Money::usd(1_000_000), Some(1_000_000)),
            1
        );
        assert_eq!(
            approvals_required(&Money::usd(1_000_001), Some(1_000_000)),
            2
        );
        assert_eq!(approvals_required(&Money::usd(i64::MAX), None), 1);
        assert_eq!(approvals_required(&Money::usd(1), Some(0)), 2);
    }

    #[test]
    fn at_the_amount_one_approval_decides() {
        let approved = dual(1_000_000)
            .decide(Action::Approve, "admin-1", None, now())
            .unwrap();
        assert_eq!(approved.status, ApprovalStatus::Approved);
        assert_eq!(approved.approvals_received(), 1);
    }

    #[test]
    fn above_the_amount_the_first_approval_is_recorded_and_waits() {
        let first = dual(1_000_001)
            .decide(Action::Approve, "admin-1", Some(" checked "), now())
            .unwrap();
        assert_eq!(first.status, ApprovalStatus::Pending);
        assert_eq!(
            first.approvals,
            vec![AdminApproval {
                reviewer: "admin-1".to_owned(),
                approved_at: now(),
                notes: Some("checked".to_owned()),
            }]
        );
        assert_eq!(
            (first.approvals_received(), first.approvals_required),
            (1, 2)
        );
        assert_eq!(first.reviewed_by, None);
        assert_eq!(first.next_attempt_at, None, "nothing to carry out yet");
        assert_eq!(first.version, 2);

        let later = now() + Duration::minutes(3);
        let second = first
            .decide(Action::Approve, "admin-2", None, later)
            .unwrap();
        assert_eq!(second.status, ApprovalStatus::Approved);
        assert_eq!(second.reviewed_by.as_deref(), Some("admin-2"));
        assert_eq!(second.reviewed_at, Some(later));
        assert_eq!(second.approvals_received(), 2);
        assert_eq!(second.approvals[0].reviewer, "admin-1");
        assert_eq!(second.next_attempt_at, Some(later + REDRIVE_AFTER));
        assert_eq!(second.version, 3);
    }

    #[test]
    fn the_same_admin_cannot_approve_twice() {
        let first = dual(1_000_001)
            .decide(Action::Approve, "admin-1", None, now())
            .unwrap();
        let error = first
            .decide(Action::Approve, " admin-1 ", None, now())
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Conflict);
        assert!(error.to_string().contains("different admin"), "{error}");
    }

    #[test]
    fn a_rejection_decides_at_once_even_after_a_first_approval() {
        let first = dual(1_000_001)
            .decide(Action::Approve, "admin-1", None, now())
            .unwrap();
        let rejected = first
            .decide(Action::Reject, "admin-2", Some("too large"), now())
            .unwrap();
        assert_eq!(rejected.status, ApprovalStatus::Rejected);
        assert_eq!(rejected.reviewed_by.as_deref(), Some("admin-2"));
        // The first approver may also change their mind and reject.
        let own = first
            .decide(Action::Reject, "admin-1", Some("on reflection"), now())
            .unwrap();
        assert_eq!(own.status, ApprovalStatus::Rejected);
        let straight = dual(1_000_001)
            .decide(Action::Reject, "admin-1", Some("no"), now())
            .unwrap();
        assert_eq!(straight.status, ApprovalStatus::Rejected);
    }

    #[test]
    fn the_payee_cannot_give_either_approval() {
        let error = dual(1_000_001)
            .decide(Action::Approve, "creator", None, now())
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::PermissionDenied);
        let first = dual(1_000_001)
            .decide(Action::Approve, "admin-1", None, now())
            .unwrap();
        let error = first
            .decide(Action::Approve, "creator", None, now())
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::PermissionDenied);
    }
}
