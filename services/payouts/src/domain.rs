//! Creator accounts as values.

use chrono::{DateTime, Utc};
use payouts_runtime::ServiceError;
use payouts_runtime::convert::required_id;

/// Stripe's view of a connected account (spec §2 `stripeAccountStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StripeAccountStatus {
    pub charges_enabled: bool,
    pub payouts_enabled: bool,
    pub details_submitted: bool,
    pub requirements_currently_due: Vec<String>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// A creator who can be paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user_id: String,
    /// Connected account id ("acct_...").
    pub stripe_account_id: String,
    /// When the creator's account was created (drives new-account limits).
    pub account_created_at: DateTime<Utc>,
    /// Unknown until Stripe tells us (`account.updated`, or `GET /v1/accounts/{id}` asked
    /// before the first payout). Unknown is never taken for "payouts enabled".
    pub stripe_status: Option<StripeAccountStatus>,
    /// The payments recent bank payouts of the account carried (newest last): a payout whose
    /// transfer becomes known only after its bank payout's event was processed (Stripe does
    /// not order events) still learns that its money reached the bank.
    pub bank_payments: Vec<CarriedPayment>,
    pub version: i64,
}

/// A payment (`py_...`) a bank payout carried, and whether that bank payout failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarriedPayment {
    pub payment: String,
    pub bank_payout: String,
    pub failure_code: Option<String>,
}

/// How many carried payments an account remembers (weeks of bank payouts), so the document
/// stays bounded.
pub const REMEMBERED_BANK_PAYMENTS: usize = 500;

impl Account {
    /// The payment's bank payout, if a recent one carried it.
    pub fn carried(&self, payment: &str) -> Option<&CarriedPayment> {
        self.bank_payments
            .iter()
            .rev()
            .find(|c| c.payment == payment)
    }

    /// The account with what a bank payout carried recorded (a failure marks the bank
    /// payout's payments failed); `None` when that changes nothing.
    pub fn with_bank_payout(
        &self,
        bank_payout: &str,
        payments: &[String],
        failure_code: Option<&str>,
    ) -> Option<Account> {
        let mut updated = self.clone();
        let mut changed = false;
        for payment in payments.iter().filter(|p| p.starts_with("py_")) {
            match updated
                .bank_payments
                .iter_mut()
                .find(|c| c.payment == *payment && c.bank_payout == bank_payout)
            {
                Some(known) => {
                    if failure_code.is_some() && known.failure_code.is_none() {
                        known.failure_code = failure_code.map(str::to_owned);
                        changed = true;
                    }
                }
                None => {
                    updated.bank_payments.push(CarriedPayment {
                        payment: payment.clone(),
                        bank_payout: bank_payout.to_owned(),
                        failure_code: failure_code.map(str::to_owned),
                    });
                    changed = true;
                }
            }
        }
        let excess = updated
            .bank_payments
            .len()
            .saturating_sub(REMEMBERED_BANK_PAYMENTS);
        updated.bank_payments.drain(..excess);
        updated.version += 1;
        changed.then_some(updated)
    }
}

/// A registration request, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub user_id: String,
    pub stripe_account_id: String,
    pub account_created_at: DateTime<Utc>,
}

impl Registration {
    pub fn parse(
        user_id: &str,
        stripe_account_id: &str,
        account_created_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Self, ServiceError> {
        let stripe_account_id = required_id(stripe_account_id, "stripe_account_id")?;
        if !stripe_account_id.starts_with("acct_") {
            return Err(ServiceError::invalid_argument(format!(
                "stripe_account_id must be a Stripe connected account id (acct_...), got {stripe_account_id:?}"
            )));
        }
        if account_created_at > now {
            return Err(ServiceError::invalid_argument(
                "account_created_at must not be in the future",
            ));
        }
        Ok(Self {
            user_id: required_id(user_id, "user_id")?,
            stripe_account_id,
            account_created_at,
        })
    }

    /// The account after this registration: a new one, or the existing one re-pointed, with
    /// the Stripe status kept only when the connected account is the same. The first
    /// creation time is kept: re-registering never makes an account younger or older, so it
    /// cannot be used to step around (or into) the new-account limits.
    pub fn apply(self, existing: Option<Account>) -> Account {
        match existing {
            None => Account {
                user_id: self.user_id,
                stripe_account_id: self.stripe_account_id,
                account_created_at: self.account_created_at,
                stripe_status: None,
                bank_payments: Vec::new(),
                version: 1,
            },
            Some(existing) => Account {
                stripe_status: if existing.stripe_account_id == self.stripe_account_id {
                    existing.stripe_status
                } else {
                    None
                },
                bank_payments: existing.bank_payments,
                user_id: self.user_id,
                stripe_account_id: self.stripe_account_id,
                account_created_at: existing.account_created_at,
                version: existing.version + 1,
            },
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
    fn registration_rejects_bad_input_naming_the_field() {
        let error = Registration::parse("", "acct_1", now(), now()).unwrap_err();
        assert_eq!(error.message(), "user_id is required");
        let error = Registration::parse("u", "ba_1", now(), now()).unwrap_err();
        assert!(error.message().starts_with("stripe_account_id must be"));
        let tomorrow = now() + chrono::Duration::days(1);
        let error = Registration::parse("u", "acct_1", tomorrow, now()).unwrap_err();
        assert_eq!(
            error.message(),
            "account_created_at must not be in the future"
        );
    }

    #[test]
    fn re_registering_another_connected_account_forgets_the_old_status() {
        let first = Registration::parse("u", "acct_1", now(), now())
            .unwrap()
            .apply(None);
        let mut known = first.clone();
        known.stripe_status = Some(StripeAccountStatus {
            payouts_enabled: true,
            ..Default::default()
        });
        let same = Registration::parse("u", "acct_1", now(), now())
            .unwrap()
            .apply(Some(known.clone()));
        assert_eq!(same.stripe_status, known.stripe_status);
        assert_eq!(same.version, 2);
        let other = Registration::parse("u", "acct_2", now(), now())
            .unwrap()
            .apply(Some(known));
        assert_eq!(other.stripe_status, None);
    }

    #[test]
    fn an_account_remembers_what_its_bank_payouts_carried() {
        let account = Registration::parse("u", "acct_1", now(), now())
            .unwrap()
            .apply(None);
        let paid = account
            .with_bank_payout("po_1", &["py_1".to_owned(), "txn_x".to_owned()], None)
            .unwrap();
        assert_eq!(
            paid.carried("py_1").map(|c| c.bank_payout.as_str()),
            Some("po_1")
        );
        assert_eq!(paid.carried("txn_x"), None, "only payments are kept");
        assert_eq!(
            paid.with_bank_payout("po_1", &["py_1".to_owned()], None),
            None
        );
        let failed = paid
            .with_bank_payout("po_1", &["py_1".to_owned()], Some("account_closed"))
            .unwrap();
        assert_eq!(
            failed
                .carried("py_1")
                .and_then(|c| c.failure_code.as_deref()),
            Some("account_closed")
        );
        let mut many = failed;
        for i in 0..(REMEMBERED_BANK_PAYMENTS + 10) {
            many = many
                .with_bank_payout(&format!("po_{i}"), &[format!("py_n{i}")], None)
                .unwrap();
        }
        assert_eq!(many.bank_payments.len(), REMEMBERED_BANK_PAYMENTS);
    }

    #[test]
    fn re_registering_keeps_the_first_creation_time() {
        let first = Registration::parse("u", "acct_1", now() - chrono::Duration::days(3), now())
            .unwrap()
            .apply(None);
        // Claiming an older account now would skip the new-account limits.
        let older = now() - chrono::Duration::days(400);
        let again = Registration::parse("u", "acct_2", older, now())
            .unwrap()
            .apply(Some(first.clone()));
        assert_eq!(again.account_created_at, first.account_created_at);
        assert_eq!(again.stripe_account_id, "acct_2");
    }
}
