//! Creator accounts as values.

use chrono::{DateTime, Duration, Utc};
use payouts_runtime::ServiceError;
use payouts_runtime::backoff;
use payouts_runtime::convert::required_id;

/// Stripe's view of a connected account (design §2 `stripeAccountStatus`).
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
    /// Bank payouts seen (paid, failed or reconciled) whose payouts of ours are not
    /// attributed yet: Stripe could not say which transfers they carried (not reconciled, a
    /// manual payout, a lookup that failed). Asked again when due, alerted after a bound;
    /// never guessed.
    pub pending_bank_payouts: Vec<PendingBankPayout>,
    pub version: i64,
}

/// A creator's bank payout we saw but could not attribute yet (see
/// [`Account::pending_bank_payouts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingBankPayout {
    /// "po_...".
    pub bank_payout: String,
    pub first_seen_at: DateTime<Utc>,
    /// When Stripe is asked again; `None`: nothing more to ask (a manual payout whose alert
    /// was raised) until an event about it comes.
    pub due_at: Option<DateTime<Utc>>,
    /// Looks so far that could not attribute it.
    pub attempts: u32,
    /// Why it is not attributed yet (the last look's answer).
    pub reason: String,
    /// The alert for an admin was raised (it is owed once the bound passed until then).
    pub alert_raised: bool,
}

impl PendingBankPayout {
    /// Whether the alert for an admin is owed now: past the bound and not raised yet.
    pub fn alert_due(&self, now: DateTime<Utc>, alert_after: Duration) -> bool {
        !self.alert_raised && now >= self.first_seen_at + alert_after
    }
}

/// What a look at a bank payout found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BankLook {
    /// Stripe said what it carried (or that it carried nothing): done.
    Attributed,
    /// Stripe could not say; `ask_again` when a later look may (reconciliation not done, a
    /// failed lookup), not for a manual payout (never listed).
    NotYet { reason: String, ask_again: bool },
}

/// Looks at a bank payout that could not be attributed: 5 minutes doubling, capped at 6
/// hours (`payout.reconciliation_completed` usually comes first).
pub const BANK_LOOK_BASE: Duration = Duration::minutes(5);
pub const BANK_LOOK_CAP: Duration = Duration::hours(6);

/// How many pending bank payouts an account keeps; beyond, the oldest with nothing more to
/// ask (alerted already) are forgotten first.
pub const REMEMBERED_PENDING_BANK_PAYOUTS: usize = 100;

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

impl Account {
    /// The pending bank payout `bank_payout`, if it is pending.
    pub fn pending_bank_payout(&self, bank_payout: &str) -> Option<&PendingBankPayout> {
        self.pending_bank_payouts
            .iter()
            .find(|p| p.bank_payout == bank_payout)
    }

    /// When the next pending bank payout is to be looked at (what the worker's index is on).
    pub fn bank_look_due_at(&self) -> Option<DateTime<Utc>> {
        self.pending_bank_payouts
            .iter()
            .filter_map(|p| p.due_at)
            .min()
    }

    /// An event about a bank payout came: it is pending (new, or looked at again now) until
    /// a look attributes it. `None` when it is due already.
    pub fn with_bank_payout_seen(&self, bank_payout: &str, now: DateTime<Utc>) -> Option<Account> {
        let mut updated = self.clone();
        match updated
            .pending_bank_payouts
            .iter_mut()
            .find(|p| p.bank_payout == bank_payout)
        {
            Some(known) if known.due_at.is_some_and(|due| due <= now) => return None,
            Some(known) => known.due_at = Some(now),
            None => {
                if updated.pending_bank_payouts.len() >= REMEMBERED_PENDING_BANK_PAYOUTS
                    && let Some(done) = updated
                        .pending_bank_payouts
                        .iter()
                        .position(|p| p.due_at.is_none())
                {
                    updated.pending_bank_payouts.remove(done);
                }
                updated.pending_bank_payouts.push(PendingBankPayout {
                    bank_payout: bank_payout.to_owned(),
                    first_seen_at: now,
                    due_at: Some(now),
                    attempts: 0,
                    reason: "not looked at yet".to_owned(),
                    alert_raised: false,
                });
            }
        }
        updated.version += 1;
        Some(updated)
    }

    /// A look at a pending bank payout is done: attributed ones are no longer pending; the
    /// others are asked again after a backoff (never later than their alert is owed), or,
    /// when no look can tell (a manual payout), only once more when the alert is owed.
    /// `alert_raised`: this look raised its alert. `None` when it is not pending (any more).
    pub fn with_bank_payout_looked(
        &self,
        bank_payout: &str,
        look: &BankLook,
        alert_raised: bool,
        now: DateTime<Utc>,
        alert_after: Duration,
    ) -> Option<Account> {
        let position = self
            .pending_bank_payouts
            .iter()
            .position(|p| p.bank_payout == bank_payout)?;
        let mut updated = self.clone();
        match look {
            BankLook::Attributed => {
                updated.pending_bank_payouts.remove(position);
            }
            BankLook::NotYet { reason, ask_again } => {
                let pending = &mut updated.pending_bank_payouts[position];
                pending.attempts += 1;
                pending.reason = reason.clone();
                pending.alert_raised |= alert_raised;
                let alert_at = pending.first_seen_at + alert_after;
                let owed_alert = (!pending.alert_raised).then_some(alert_at);
                let again = ask_again.then(|| {
                    now + backoff::delay(
                        BANK_LOOK_BASE,
                        BANK_LOOK_CAP,
                        pending.attempts,
                        bank_payout,
                    )
                });
                pending.due_at = match (again, owed_alert) {
                    // An alert owed already (raising it failed) waits like a look.
                    (Some(again), Some(alert_at)) if alert_at > now => Some(again.min(alert_at)),
                    (None, Some(alert_at)) if alert_at > now => Some(alert_at),
                    (None, Some(_)) => Some(
                        now + backoff::delay(
                            BANK_LOOK_BASE,
                            BANK_LOOK_CAP,
                            pending.attempts,
                            bank_payout,
                        ),
                    ),
                    (again, _) => again,
                };
            }
        }
        updated.version += 1;
        Some(updated)
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
                pending_bank_payouts: Vec::new(),
                version: 1,
            },
            Some(existing) => Account {
                stripe_status: if existing.stripe_account_id == self.stripe_account_id {
                    existing.stripe_status
                } else {
                    None
                },
                bank_payments: existing.bank_payments,
                pending_bank_payouts: existing.pending_bank_payouts,
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
    fn a_bank_payout_stays_pending_until_a_look_attributes_it_and_alerts_once_after_the_bound() {
        let bound = Duration::hours(48);
        let account = Registration::parse("u", "acct_1", now(), now())
            .unwrap()
            .apply(None);
        let seen = account.with_bank_payout_seen("po_1", now()).unwrap();
        assert_eq!(seen.bank_look_due_at(), Some(now()));
        assert_eq!(
            seen.with_bank_payout_seen("po_1", now()),
            None,
            "due already"
        );
        // Not reconciled yet: asked again after a backoff.
        let not_yet = BankLook::NotYet {
            reason: "reconciling".to_owned(),
            ask_again: true,
        };
        let later = seen
            .with_bank_payout_looked("po_1", &not_yet, false, now(), bound)
            .unwrap();
        let due = later.bank_look_due_at().unwrap();
        assert!(due > now() && due <= now() + BANK_LOOK_BASE + BANK_LOOK_BASE / 4);
        assert_eq!(later.pending_bank_payout("po_1").unwrap().attempts, 1);
        // An event brings the look forward.
        let again = later.with_bank_payout_seen("po_1", now() + Duration::minutes(1));
        assert_eq!(
            again.unwrap().bank_look_due_at(),
            Some(now() + Duration::minutes(1))
        );
        // Looks never wait past the moment the alert is owed.
        let mut late = later.clone();
        for attempt in 0..20 {
            let at = now() + Duration::hours(47) + Duration::minutes(attempt);
            late = late
                .with_bank_payout_looked("po_1", &not_yet, false, at, bound)
                .unwrap();
            assert!(late.bank_look_due_at().unwrap() <= now() + bound);
        }
        let entry = late.pending_bank_payout("po_1").unwrap();
        assert!(!entry.alert_due(now() + Duration::hours(47), bound));
        assert!(entry.alert_due(now() + bound, bound));
        let alerted = late
            .with_bank_payout_looked("po_1", &not_yet, true, now() + bound, bound)
            .unwrap();
        assert!(
            !alerted
                .pending_bank_payout("po_1")
                .unwrap()
                .alert_due(now() + bound, bound)
        );
        // Attributed: no longer pending; a look at it after that changes nothing.
        let done = alerted
            .with_bank_payout_looked("po_1", &BankLook::Attributed, false, now(), bound)
            .unwrap();
        assert!(done.pending_bank_payouts.is_empty());
        assert_eq!(done.bank_look_due_at(), None);
        assert_eq!(
            done.with_bank_payout_looked("po_1", &BankLook::Attributed, false, now(), bound),
            None
        );
    }

    #[test]
    fn a_manual_payout_is_looked_at_again_only_when_its_alert_is_owed() {
        let bound = Duration::hours(48);
        let account = Registration::parse("u", "acct_1", now(), now())
            .unwrap()
            .apply(None)
            .with_bank_payout_seen("po_m", now())
            .unwrap();
        let manual = BankLook::NotYet {
            reason: "manual".to_owned(),
            ask_again: false,
        };
        let waiting = account
            .with_bank_payout_looked("po_m", &manual, false, now(), bound)
            .unwrap();
        assert_eq!(waiting.bank_look_due_at(), Some(now() + bound));
        // The alert could not be raised: tried again after a backoff.
        let retry = waiting
            .with_bank_payout_looked("po_m", &manual, false, now() + bound, bound)
            .unwrap();
        assert!(retry.bank_look_due_at().unwrap() > now() + bound);
        let alerted = retry
            .with_bank_payout_looked("po_m", &manual, true, now() + bound, bound)
            .unwrap();
        assert_eq!(alerted.bank_look_due_at(), None, "nothing more to ask");
        // A later event about it looks again (a failure, say).
        assert!(
            alerted
                .with_bank_payout_seen("po_m", now() + bound * 2)
                .is_some()
        );
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
