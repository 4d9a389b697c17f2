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
    pub version: i64,
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
                version: 1,
            },
            Some(existing) => Account {
                stripe_status: if existing.stripe_account_id == self.stripe_account_id {
                    existing.stripe_status
                } else {
                    None
                },
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
