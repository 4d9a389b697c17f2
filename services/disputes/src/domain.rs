//! Allocations: earnings credited to a creator from a supporter's charge (design §3).

use chrono::{DateTime, Utc};
use payouts_runtime::convert::required_id;
use payouts_runtime::{Money, ServiceError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AllocationStatus {
    Active,
    /// Partially refunded: reduced, still payable.
    AtRisk,
    /// Frozen by an open dispute.
    Disputed,
    /// Fully refunded or dispute lost.
    Refunded,
}

impl AllocationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AllocationStatus::Active => "active",
            AllocationStatus::AtRisk => "at_risk",
            AllocationStatus::Disputed => "disputed",
            AllocationStatus::Refunded => "refunded",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(AllocationStatus::Active),
            "at_risk" => Some(AllocationStatus::AtRisk),
            "disputed" => Some(AllocationStatus::Disputed),
            "refunded" => Some(AllocationStatus::Refunded),
            _ => None,
        }
    }
}

/// A creator allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The caller's allocation id (idempotency key).
    pub id: String,
    pub user_id: String,
    pub charge_id: String,
    pub original_amount: Money,
    /// What is still credited after refunds.
    pub amount: Money,
    pub status: AllocationStatus,
    pub refunded_cents: i64,
    pub frozen_cents: i64,
    pub dispute_id: Option<String>,
    /// The supporter whose charge funded it (None for allocations recorded before it was
    /// asked for).
    pub payer_id: Option<String>,
    /// When a refund last took from it.
    pub refunded_at: Option<DateTime<Utc>>,
    /// When a dispute froze it.
    pub disputed_at: Option<DateTime<Utc>>,
    /// "won", "lost", "warning_closed", ...: how the dispute that froze it ended.
    pub dispute_outcome: Option<String>,
    pub dispute_resolved_at: Option<DateTime<Utc>>,
    /// Every change after the credit, oldest first (invariant 8 of docs/design.md).
    pub audit: Vec<AllocationAudit>,
    /// The version of its charge's case it reflects (0: none): never settled back to an
    /// older one by a writer that read the case before another event was merged.
    pub case_version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// One change of an allocation: what, from -> to, why, which event, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationAudit {
    pub at: DateTime<Utc>,
    /// The Stripe event that caused it ("evt_..."), or the caller ("record" for a late
    /// allocation that met its charge's refunds and disputes).
    pub event_id: String,
    pub from_status: AllocationStatus,
    pub to_status: AllocationStatus,
    pub from_cents: i64,
    pub to_cents: i64,
    pub reason: String,
}

impl Allocation {
    /// A new allocation from caller input; every problem names its field.
    pub fn credit(
        id: &str,
        user_id: &str,
        charge_id: &str,
        payer_id: &str,
        amount: Money,
        now: DateTime<Utc>,
    ) -> Result<Self, ServiceError> {
        let amount = Money::positive(amount.cents, amount.currency.as_str(), "amount")?;
        Ok(Self {
            id: required_id(id, "allocation_id")?,
            user_id: required_id(user_id, "user_id")?,
            charge_id: required_id(charge_id, "charge_id")?,
            payer_id: Some(required_id(payer_id, "payer_id")?),
            refunded_at: None,
            disputed_at: None,
            dispute_outcome: None,
            dispute_resolved_at: None,
            audit: Vec::new(),
            case_version: 0,
            original_amount: amount.clone(),
            amount,
            status: AllocationStatus::Active,
            refunded_cents: 0,
            frozen_cents: 0,
            dispute_id: None,
            created_at: now,
            updated_at: now,
            version: 1,
        })
    }

    /// Whether a retried credit says the same thing as the stored one.
    pub fn same_credit(&self, other: &Allocation) -> bool {
        self.id == other.id
            && self.user_id == other.user_id
            && self.charge_id == other.charge_id
            && self.original_amount == other.original_amount
            // Stored before the payer was asked for: the rest says it is the same credit.
            && (self.payer_id.is_none() || self.payer_id == other.payer_id)
    }
}

/// A creator's earnings, derived from their allocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Earnings {
    /// Everything credited, after refunds (frozen amounts included).
    pub lifetime: Money,
    /// Payable now: active and partially refunded allocations.
    pub active: Money,
    /// Held by open disputes.
    pub frozen: Money,
    /// Taken back by refunds and lost disputes.
    pub refunded: Money,
}

impl Earnings {
    /// Sums the allocations in `currency`; others are ignored.
    pub fn of(allocations: &[Allocation], currency: &payouts_runtime::Currency) -> Earnings {
        let mine = || {
            allocations
                .iter()
                .filter(|a| &a.amount.currency == currency)
        };
        let sum = |cents: i64| Money::new(cents, currency.clone());
        Earnings {
            lifetime: sum(mine().map(|a| a.amount.cents).sum()),
            active: sum(mine()
                .filter(|a| {
                    matches!(
                        a.status,
                        AllocationStatus::Active | AllocationStatus::AtRisk
                    )
                })
                .map(|a| a.amount.cents)
                .sum()),
            frozen: sum(mine().map(|a| a.frozen_cents).sum()),
            refunded: sum(mine().map(|a| a.refunded_cents).sum()),
        }
    }
}

/// One currency's running totals of a creator's allocations, in cents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Everything credited, after refunds (frozen amounts included).
    pub lifetime: i64,
    /// Payable now: active and partially refunded allocations.
    pub active: i64,
    /// Held by open disputes.
    pub frozen: i64,
    /// Taken back by refunds and lost disputes.
    pub refunded: i64,
    /// How many allocations.
    pub allocations: i64,
}

impl Totals {
    /// What one allocation adds to its currency's totals.
    pub fn of(allocation: &Allocation) -> Totals {
        let payable = matches!(
            allocation.status,
            AllocationStatus::Active | AllocationStatus::AtRisk
        );
        Totals {
            lifetime: allocation.amount.cents,
            active: if payable { allocation.amount.cents } else { 0 },
            frozen: allocation.frozen_cents,
            refunded: allocation.refunded_cents,
            allocations: 1,
        }
    }

    fn plus(self, other: Totals) -> Totals {
        Totals {
            lifetime: self.lifetime + other.lifetime,
            active: self.active + other.active,
            frozen: self.frozen + other.frozen,
            refunded: self.refunded + other.refunded,
            allocations: self.allocations + other.allocations,
        }
    }

    fn minus(self, other: Totals) -> Totals {
        Totals {
            lifetime: self.lifetime - other.lifetime,
            active: self.active - other.active,
            frozen: self.frozen - other.frozen,
            refunded: self.refunded - other.refunded,
            allocations: self.allocations - other.allocations,
        }
    }
}

/// One allocation change counted in a book before it is stored: a credit (`before` None) or a
/// change of a stored allocation (refund, freeze, outcome).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub before: Option<Allocation>,
    pub after: Allocation,
}

impl Change {
    /// What the change adds to its currency's totals.
    pub fn delta(&self) -> Totals {
        let after = Totals::of(&self.after);
        match &self.before {
            Some(before) => after.minus(Totals::of(before)),
            None => after,
        }
    }
}

/// Something that happened to a creator's earnings that admissions look back on (design §7:
/// payouts of creators with recent refunds or disputes are held for approval).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentMark {
    pub kind: MarkKind,
    pub charge_id: String,
    /// When the refund or dispute happened (Stripe's time).
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MarkKind {
    Refund,
    Dispute,
}

impl MarkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MarkKind::Refund => "refund",
            MarkKind::Dispute => "dispute",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "refund" => Some(MarkKind::Refund),
            "dispute" => Some(MarkKind::Dispute),
            _ => None,
        }
    }
}

/// How long a book remembers refunds and disputes (longer than the 30-day look-back).
pub const MARK_RETENTION: chrono::Duration = chrono::Duration::days(90);

/// A creator's earnings book: running totals of their allocations, per currency, kept in one
/// document so that reading earnings costs one read however long the creator's history.
///
/// Exact without multi-document transactions: allocation changes (credits, refunds, freezes,
/// outcomes) are first written here as intents (`pending`, counted in the totals in the same
/// compare-and-set), then applied to the allocations, then cleared. Whoever finds an intent
/// finishes it (rolls it forward), or takes it back out of the totals if it cannot be applied
/// (its id was taken by another creator's allocation). Earnings are reported without pending
/// intents, so a total never counts a change that is not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarningsBook {
    pub user_id: String,
    pub totals: std::collections::BTreeMap<payouts_runtime::Currency, Totals>,
    /// Changes counted in `totals` and not yet known to be stored, oldest first.
    pub pending: Vec<Change>,
    /// Refunds and disputes of the last [`MARK_RETENTION`], one per charge and kind.
    pub recent: Vec<RecentMark>,
    /// Compare-and-set version; 0 for a book not stored yet.
    pub version: i64,
}

impl EarningsBook {
    pub fn empty(user_id: &str) -> Self {
        Self {
            user_id: user_id.to_owned(),
            totals: std::collections::BTreeMap::new(),
            pending: Vec::new(),
            recent: Vec::new(),
            version: 0,
        }
    }

    /// The book with `allocation` counted and pending (the intent of a credit).
    pub fn with_credit(&self, allocation: &Allocation) -> EarningsBook {
        self.with_changes(
            vec![Change {
                before: None,
                after: allocation.clone(),
            }],
            &[],
            allocation.created_at,
        )
    }

    /// The book with `changes` counted and pending, `marks` remembered (one per charge and
    /// kind) and marks older than [`MARK_RETENTION`] before `now` forgotten.
    pub fn with_changes(
        &self,
        changes: Vec<Change>,
        marks: &[RecentMark],
        now: DateTime<Utc>,
    ) -> EarningsBook {
        let mut book = self.clone();
        for change in changes {
            let totals = book
                .totals
                .entry(change.after.amount.currency.clone())
                .or_default();
            *totals = totals.plus(change.delta());
            book.pending.push(change);
        }
        for mark in marks {
            if !book.has_mark(mark) {
                book.recent.push(mark.clone());
            }
        }
        book.recent.retain(|mark| now - mark.at <= MARK_RETENTION);
        book.version += 1;
        book
    }

    /// Whether the book remembers a mark of this kind for this charge.
    pub fn has_mark(&self, mark: &RecentMark) -> bool {
        self.recent
            .iter()
            .any(|known| known.kind == mark.kind && known.charge_id == mark.charge_id)
    }

    /// The book once the pending changes were dealt with: `stored` ones (by allocation id)
    /// are settled; the others could not be stored and are taken back out of the totals.
    pub fn with_pending_settled(&self, stored: &[String]) -> EarningsBook {
        let mut book = self.clone();
        for change in std::mem::take(&mut book.pending) {
            if !stored.contains(&change.after.id) {
                let totals = book
                    .totals
                    .entry(change.after.amount.currency.clone())
                    .or_default();
                *totals = totals.minus(change.delta());
            }
        }
        book.version += 1;
        book
    }

    /// Earnings in `currency`: the totals without pending intents.
    pub fn earnings(&self, currency: &payouts_runtime::Currency) -> Earnings {
        let pending = self
            .pending
            .iter()
            .filter(|change| &change.after.amount.currency == currency)
            .fold(Totals::default(), |sum, change| sum.plus(change.delta()));
        let totals = self
            .totals
            .get(currency)
            .copied()
            .unwrap_or_default()
            .minus(pending);
        let money = |cents: i64| Money::new(cents, currency.clone());
        Earnings {
            lifetime: money(totals.lifetime),
            active: money(totals.active),
            frozen: money(totals.frozen),
            refunded: money(totals.refunded),
        }
    }

    /// How many charges of each kind touched these earnings in the `window` before `now`.
    pub fn recent_count(
        &self,
        kind: MarkKind,
        now: DateTime<Utc>,
        window: chrono::Duration,
    ) -> i64 {
        self.recent
            .iter()
            .filter(|mark| mark.kind == kind && now - mark.at <= window)
            .count() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn a_credit_must_be_positive_and_named() {
        assert!(Allocation::credit("a", "u", "ch_1", "payer", Money::usd(0), now()).is_err());
        assert!(Allocation::credit("a", "u", "ch_1", "payer", Money::usd(-5), now()).is_err());
        let error = Allocation::credit("a", "", "ch_1", "payer", Money::usd(5), now()).unwrap_err();
        assert_eq!(error.message(), "user_id is required");
        let credited =
            Allocation::credit("a", "u", "ch_1", "payer", Money::usd(500), now()).unwrap();
        assert_eq!(credited.status, AllocationStatus::Active);
        assert_eq!(credited.amount, credited.original_amount);
    }

    #[test]
    fn a_retried_credit_is_recognised_by_its_content() {
        let first = Allocation::credit("a", "u", "ch_1", "payer", Money::usd(500), now()).unwrap();
        let later = now() + chrono::Duration::minutes(1);
        let retried =
            Allocation::credit("a", "u", "ch_1", "payer", Money::usd(500), later).unwrap();
        assert!(first.same_credit(&retried));
        let different =
            Allocation::credit("a", "u", "ch_1", "payer", Money::usd(501), now()).unwrap();
        assert!(!first.same_credit(&different));
    }

    #[test]
    fn earnings_sum_by_status_in_one_currency() {
        let credit = |id: &str, cents: i64| {
            Allocation::credit(id, "u", "ch_1", "payer", Money::usd(cents), now()).unwrap()
        };
        let active = credit("a", 1_000);
        let mut at_risk = credit("b", 500);
        at_risk.status = AllocationStatus::AtRisk;
        at_risk.amount = Money::usd(300);
        at_risk.refunded_cents = 200;
        let mut disputed = credit("c", 700);
        disputed.status = AllocationStatus::Disputed;
        disputed.frozen_cents = 700;
        let euros = Allocation::credit(
            "d",
            "u",
            "ch_2",
            "payer",
            Money::new(9_999, payouts_runtime::Currency::parse("eur").unwrap()),
            now(),
        )
        .unwrap();
        let earnings = Earnings::of(
            &[active, at_risk, disputed, euros],
            &payouts_runtime::Currency::usd(),
        );
        assert_eq!(earnings.lifetime, Money::usd(2_000));
        assert_eq!(earnings.active, Money::usd(1_300));
        assert_eq!(earnings.frozen, Money::usd(700));
        assert_eq!(earnings.refunded, Money::usd(200));
    }

    #[test]
    fn a_book_counts_credits_reports_only_settled_ones_and_takes_back_failed_ones() {
        let usd = payouts_runtime::Currency::usd();
        let credit = |id: &str, cents: i64| {
            Allocation::credit(id, "u", "ch_1", "payer", Money::usd(cents), now()).unwrap()
        };
        let book = EarningsBook::empty("u");
        let one = book.with_credit(&credit("a", 1_000));
        assert_eq!(one.version, 1);
        assert_eq!(one.totals[&usd].lifetime, 1_000);
        // Pending: counted in the totals, not reported.
        assert_eq!(one.earnings(&usd).lifetime, Money::usd(0));
        let two = one.with_credit(&credit("b", 500));
        let settled = two.with_pending_settled(&["a".to_owned()]);
        assert!(settled.pending.is_empty());
        assert_eq!(settled.version, 3);
        // "b" could not be stored: taken back.
        let earnings = settled.earnings(&usd);
        assert_eq!(earnings.lifetime, Money::usd(1_000));
        assert_eq!(earnings.active, Money::usd(1_000));
        assert_eq!(settled.totals[&usd].allocations, 1);
        assert_eq!(
            earnings,
            Earnings::of(&[credit("a", 1_000)], &usd),
            "the totals are what the allocations add up to"
        );
    }

    #[test]
    fn status_names_round_trip() {
        for status in [
            AllocationStatus::Active,
            AllocationStatus::AtRisk,
            AllocationStatus::Disputed,
            AllocationStatus::Refunded,
        ] {
            assert_eq!(AllocationStatus::parse(status.as_str()), Some(status));
        }
    }
}
