//! Allocations: earnings credited to a creator from a supporter's charge (spec §3).

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
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

impl Allocation {
    /// A new allocation from caller input; every problem names its field.
    pub fn credit(
        id: &str,
        user_id: &str,
        charge_id: &str,
        amount: Money,
        now: DateTime<Utc>,
    ) -> Result<Self, ServiceError> {
        let amount = Money::positive(amount.cents, amount.currency.as_str(), "amount")?;
        Ok(Self {
            id: required_id(id, "allocation_id")?,
            user_id: required_id(user_id, "user_id")?,
            charge_id: required_id(charge_id, "charge_id")?,
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

/// A creator's earnings book: running totals of their allocations, per currency, kept in one
/// document so that reading earnings costs one read however long the creator's history.
///
/// Exact without multi-document transactions: an allocation change is first written here as
/// an intent (`pending`, counted in the totals in the same compare-and-set), then applied to
/// the allocation, then cleared. Whoever finds an intent finishes it (rolls it forward), or
/// takes it back out of the totals if it cannot be applied (its id was taken by another
/// creator's allocation). Earnings are reported without pending intents, so a total never
/// counts an allocation that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarningsBook {
    pub user_id: String,
    pub totals: std::collections::BTreeMap<payouts_runtime::Currency, Totals>,
    /// Allocations counted in `totals` and not yet known to be stored, oldest first.
    pub pending: Vec<Allocation>,
    /// Compare-and-set version; 0 for a book not stored yet.
    pub version: i64,
}

impl EarningsBook {
    pub fn empty(user_id: &str) -> Self {
        Self {
            user_id: user_id.to_owned(),
            totals: std::collections::BTreeMap::new(),
            pending: Vec::new(),
            version: 0,
        }
    }

    /// The book with `allocation` counted and pending (the intent of a credit).
    pub fn with_credit(&self, allocation: &Allocation) -> EarningsBook {
        let mut book = self.clone();
        let totals = book
            .totals
            .entry(allocation.amount.currency.clone())
            .or_default();
        *totals = totals.plus(Totals::of(allocation));
        book.pending.push(allocation.clone());
        book.version += 1;
        book
    }

    /// The book once the pending allocations were dealt with: `stored` ones are settled;
    /// the others could not be stored and are taken back out of the totals.
    pub fn with_pending_settled(&self, stored: &[String]) -> EarningsBook {
        let mut book = self.clone();
        for allocation in std::mem::take(&mut book.pending) {
            if !stored.contains(&allocation.id) {
                let totals = book
                    .totals
                    .entry(allocation.amount.currency.clone())
                    .or_default();
                *totals = totals.minus(Totals::of(&allocation));
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
            .filter(|a| &a.amount.currency == currency)
            .fold(Totals::default(), |sum, a| sum.plus(Totals::of(a)));
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn a_credit_must_be_positive_and_named() {
        assert!(Allocation::credit("a", "u", "ch_1", Money::usd(0), now()).is_err());
        assert!(Allocation::credit("a", "u", "ch_1", Money::usd(-5), now()).is_err());
        let error = Allocation::credit("a", "", "ch_1", Money::usd(5), now()).unwrap_err();
        assert_eq!(error.message(), "user_id is required");
        let credited = Allocation::credit("a", "u", "ch_1", Money::usd(500), now()).unwrap();
        assert_eq!(credited.status, AllocationStatus::Active);
        assert_eq!(credited.amount, credited.original_amount);
    }

    #[test]
    fn a_retried_credit_is_recognised_by_its_content() {
        let first = Allocation::credit("a", "u", "ch_1", Money::usd(500), now()).unwrap();
        let later = now() + chrono::Duration::minutes(1);
        let retried = Allocation::credit("a", "u", "ch_1", Money::usd(500), later).unwrap();
        assert!(first.same_credit(&retried));
        let different = Allocation::credit("a", "u", "ch_1", Money::usd(501), now()).unwrap();
        assert!(!first.same_credit(&different));
    }

    #[test]
    fn earnings_sum_by_status_in_one_currency() {
        let credit = |id: &str, cents: i64| {
            Allocation::credit(id, "u", "ch_1", Money::usd(cents), now()).unwrap()
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
            Allocation::credit(id, "u", "ch_1", Money::usd(cents), now()).unwrap()
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
