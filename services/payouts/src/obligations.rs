//! What the platform still owes through payouts, for the balance check (design §5 "pending
//! obligations").
//!
//! What counts: payouts admitted and waiting for their transfer (`PENDING`, including those
//! whose outcome is unknown, parked or not: their money may still leave) and payouts held for
//! approval (`PENDING_APPROVAL`). What does not: `PROCESSING` and `COMPLETED` payouts, whose
//! transfer already took the money out of the platform balance (counting them would reserve
//! it twice); `FAILED` payouts; admissions still in progress (`ADMITTING`, not admitted yet).

use payouts_runtime::ServiceError;

use crate::domain::Account;
use crate::payout::PayoutStatus;
use crate::store::PayoutRepository;

/// Owed by payouts and not transferred yet, in USD cents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Owed {
    pub awaiting_transfer_cents: i64,
    pub awaiting_transfer_count: i64,
    pub pending_approval_cents: i64,
    pub pending_approval_count: i64,
}

/// How many payouts one read takes.
const PAGE: usize = 500;

/// Adds up the payouts that still owe their transfer, a page at a time.
pub async fn owed(payouts: &dyn PayoutRepository) -> Result<Owed, ServiceError> {
    let mut owed = Owed::default();
    for status in [PayoutStatus::Pending, PayoutStatus::PendingApproval] {
        let mut after: Option<String> = None;
        loop {
            let page = payouts.in_status(status, after.as_deref(), PAGE).await?;
            let (cents, count) = if status == PayoutStatus::Pending {
                (
                    &mut owed.awaiting_transfer_cents,
                    &mut owed.awaiting_transfer_count,
                )
            } else {
                (
                    &mut owed.pending_approval_cents,
                    &mut owed.pending_approval_count,
                )
            };
            for payout in &page {
                *cents = cents.saturating_add(payout.amount.cents);
                *count += 1;
            }
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some(last.id.clone()),
                _ => break,
            }
        }
    }
    Ok(owed)
}

/// Whether a creator can be paid: an account whose payouts Stripe has enabled. No account,
/// or a status Stripe has not told us yet, cannot.
pub fn can_be_paid(account: Option<&Account>) -> bool {
    account
        .and_then(|account| account.stripe_status.as_ref())
        .is_some_and(|status| status.payouts_enabled)
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};
    use payouts_runtime::Money;

    use super::*;
    use crate::domain::StripeAccountStatus;
    use crate::payout::Payout;
    use crate::store::MemoryPayouts;

    fn payout(id: &str, cents: i64, status: PayoutStatus) -> Payout {
        let now = Utc::now();
        let mut payout = Payout::requested(
            id.to_owned(),
            "u1",
            Money::usd(cents),
            id,
            "acct_u1",
            now,
            Duration::zero(),
        );
        payout.status = status;
        payout
    }

    #[tokio::test]
    async fn only_payouts_whose_money_has_not_left_are_owed() {
        let store = MemoryPayouts::default();
        // More than one page of admitted payouts, so the paging is exercised.
        for n in 0..(2 * PAGE + 1) {
            let id = format!("pending_{n:04}");
            store
                .insert(&payout(&id, 100, PayoutStatus::Pending))
                .await
                .unwrap();
        }
        store
            .insert(&payout("held", 7_000_00, PayoutStatus::PendingApproval))
            .await
            .unwrap();
        for (id, status) in [
            ("moving", PayoutStatus::Processing),
            ("paid", PayoutStatus::Completed),
            ("failed", PayoutStatus::Failed),
            ("admitting", PayoutStatus::Admitting),
        ] {
            store.insert(&payout(id, 1_000_000, status)).await.unwrap();
        }
        let owed = owed(&store).await.unwrap();
        let pages = i64::try_from(2 * PAGE + 1).unwrap();
        assert_eq!(
            owed,
            Owed {
                awaiting_transfer_cents: 100 * pages,
                awaiting_transfer_count: pages,
                pending_approval_cents: 7_000_00,
                pending_approval_count: 1,
            }
        );
    }

    #[test]
    fn only_an_account_stripe_enabled_can_be_paid() {
        let account = |status: Option<bool>| Account {
            user_id: "u1".to_owned(),
            stripe_account_id: "acct_u1".to_owned(),
            account_created_at: Utc::now(),
            stripe_status: status.map(|payouts_enabled| StripeAccountStatus {
                payouts_enabled,
                ..StripeAccountStatus::default()
            }),
            bank_payments: Vec::new(),
            pending_bank_payouts: Vec::new(),
            version: 1,
        };
        assert!(can_be_paid(Some(&account(Some(true)))));
        assert!(!can_be_paid(Some(&account(Some(false)))));
        assert!(!can_be_paid(Some(&account(None))), "unknown is not enabled");
        assert!(!can_be_paid(None));
    }
}
