//! The seven checks of design §6 and atomic admission, as pure functions over one user's quota
//! document. Time is passed in; nothing here does I/O.
//!
//! Admission rule (what holds quota): a payout holds quota from the moment it is admitted
//! (pending, pending approval, processing, completed). The payouts service says how much of
//! a reservation is given back, as a total that only its own sequence can change: all of it
//! for a rejection or a failure before money left, the reversed part for a reversal, none
//! again if a transfer turns up after all. Released quota no longer counts toward the daily
//! and monthly amounts, the daily count, or the committed balance.
//!
//! Every attempt is remembered for 24 hours, refused ones included: the suspicious-frequency
//! check counts them (5 or more in 24 hours, design §6: many attempts in a short time), and a
//! refusal is final for its payout id, so a retried admission of the same payout gets the same
//! answer and can never reserve quota for a payout its first caller already gave up on.

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};

use payouts_runtime::money::dollars;

use crate::domain::{Flag, LimitConfig, LimitMetadata};

/// How long reservations are kept in the quota document: longer than every window (24 h,
/// the calendar month, the minimum gap), so the document's size is bounded by the limits,
/// not by a user's history.
pub const RESERVATION_RETENTION: Duration = Duration::days(400);

/// How long attempts (admitted or refused) are remembered: the suspicious-frequency window.
pub const ATTEMPT_WINDOW: Duration = Duration::hours(24);

/// At most this many attempts are remembered, newest kept, so a user hammering the API
/// cannot grow their document without bound.
pub const MAX_REMEMBERED_ATTEMPTS: usize = 200;

/// A payout requested longer ago than this is no longer admitted: refusals are remembered
/// for [`ATTEMPT_WINDOW`], so an admission resumed later than that (a worker that stalled
/// for a day) could otherwise reserve quota for a payout its first caller was refused and
/// deleted long ago. Such a request is refused; the user asks again. The refusal is written
/// (it moves the quota's version), so an admission of the same payout that read the quota
/// earlier and writes later loses its compare-and-set and decides again: refused.
pub const ADMISSION_WINDOW: Duration = ATTEMPT_WINDOW;

/// One admitted payout in a user's quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub payout_id: String,
    pub amount_cents: i64,
    pub reserved_at: DateTime<Utc>,
    pub requires_approval: bool,
    pub flags: Vec<Flag>,
    /// Given back (rejected, failed before money left, reversed): no longer counts.
    pub released_cents: i64,
    /// The payouts service's sequence of the last release applied (0: none yet).
    pub release_sequence: i64,
}

impl Reservation {
    /// What still counts toward limits and the committed balance.
    pub fn held_cents(&self) -> i64 {
        self.amount_cents - self.released_cents
    }

    pub fn is_released(&self) -> bool {
        self.held_cents() == 0
    }
}

/// One payout attempt: admitted, or refused (and why, so a retry gets the same answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub payout_id: String,
    pub at: DateTime<Utc>,
    pub refusal: Option<Refusal>,
}

/// Why an attempt was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub flags: Vec<Flag>,
    pub reason: String,
    /// Set when the refusal was for the available balance (the RPC answers
    /// FAILED_PRECONDITION for it): what was available then.
    pub available_cents: Option<i64>,
}

/// A user's quota document: recent reservations, recent attempts, the committed total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub user_id: String,
    pub reservations: Vec<Reservation>,
    /// Attempts of the last 24 hours, oldest first.
    pub attempts: Vec<Attempt>,
    /// Cents held by every reservation ever made (paid or in flight), minus releases.
    pub committed_cents: i64,
    /// Admitted payouts ever, released or not (the "first payout" check).
    pub payouts_ever: i64,
    /// Compare-and-set version; 0 for a quota not stored yet.
    pub version: i64,
}

impl Quota {
    pub fn empty(user_id: &str) -> Self {
        Self {
            user_id: user_id.to_owned(),
            reservations: Vec::new(),
            attempts: Vec::new(),
            committed_cents: 0,
            payouts_ever: 0,
            version: 0,
        }
    }

    pub fn find(&self, payout_id: &str) -> Option<&Reservation> {
        self.reservations.iter().find(|r| r.payout_id == payout_id)
    }

    /// The refusal recorded for this payout id, if its attempt was refused.
    pub fn refusal_of(&self, payout_id: &str) -> Option<&Refusal> {
        self.attempts
            .iter()
            .find(|attempt| attempt.payout_id == payout_id)
            .and_then(|attempt| attempt.refusal.as_ref())
    }

    /// The quota with one more attempt remembered (and the ones out of the window dropped).
    fn with_attempt(&self, attempt: Attempt, now: DateTime<Utc>) -> Vec<Attempt> {
        let mut attempts: Vec<Attempt> = self
            .attempts
            .iter()
            .filter(|a| a.at > now - ATTEMPT_WINDOW)
            .cloned()
            .collect();
        attempts.push(attempt);
        let excess = attempts.len().saturating_sub(MAX_REMEMBERED_ATTEMPTS);
        attempts.drain(..excess);
        attempts
    }
}

/// What the checks need to know about the user besides their quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserContext {
    /// `None` when no account is registered.
    pub account_created_at: Option<DateTime<Utc>>,
    /// Everything ever credited, after refunds.
    pub lifetime_earnings_cents: i64,
    /// Payable now: active allocations, not frozen, not refunded.
    pub payable_earnings_cents: i64,
    /// Charges that funded the earnings refunded or disputed in the last 30 days.
    pub recent_refunds_and_disputes: i64,
}

/// The result of the checks (design §6 validation result).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub requires_approval: bool,
    pub flags: Vec<Flag>,
    pub reason: String,
    pub metadata: LimitMetadata,
}

/// The result of an admission attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Admitted now: store `quota` (compare-and-set on the version it was read at).
    Admitted { decision: Decision, quota: Quota },
    /// This payout was admitted before: nothing to store, same answer.
    AlreadyAdmitted { decision: Decision },
    /// Refused by a limit now: store `quota` (it remembers the refusal).
    Refused { decision: Decision, quota: Quota },
    /// The amount exceeds what the user can be paid now: store `quota` (it remembers).
    InsufficientBalance {
        available_cents: i64,
        decision: Decision,
        quota: Quota,
    },
    /// This payout was refused before (either way): nothing to store, same answer.
    AlreadyRefused {
        decision: Decision,
        refusal: Refusal,
    },
    /// The payout was requested longer ago than [`ADMISSION_WINDOW`]: refused. The quota to
    /// store is unchanged but for its version, which fences admissions read before it.
    Expired { decision: Decision, quota: Quota },
}

fn start_of_month(now: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(now)
}

/// Figures of the windows before this payout.
pub fn metadata(
    quota: &Quota,
    context: &UserContext,
    config: &LimitConfig,
    now: DateTime<Utc>,
) -> LimitMetadata {
    let day_start = now - Duration::hours(24);
    let month_start = start_of_month(now);
    let held = || quota.reservations.iter().filter(|r| !r.is_released());
    let account_age_days = context
        .account_created_at
        .map(|created| (now - created).num_days().max(0))
        .unwrap_or(0);
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    LimitMetadata {
        is_new_account: account_age_days < config.new_account_days,
        account_age_days,
        daily_payout_count: count(held().filter(|r| r.reserved_at > day_start).count()),
        daily_payout_amount_cents: held()
            .filter(|r| r.reserved_at > day_start)
            .map(Reservation::held_cents)
            .sum(),
        monthly_payout_amount_cents: held()
            .filter(|r| r.reserved_at >= month_start)
            .map(Reservation::held_cents)
            .sum(),
        lifetime_earnings_cents: context.lifetime_earnings_cents,
        daily_attempt_count: count(quota.attempts.iter().filter(|a| a.at > day_start).count()),
    }
}

/// The seven checks of design §6, in its order. A blocking check ends the evaluation; flags that
/// hold a payout for approval accumulate.
pub fn evaluate(
    config: &LimitConfig,
    quota: &Quota,
    context: &UserContext,
    amount_cents: i64,
    now: DateTime<Utc>,
) -> Decision {
    let metadata = metadata(quota, context, config, now);
    let mut flags = Vec::new();
    let mut reasons = Vec::new();
    let blocked = |mut flags: Vec<Flag>, flag: Flag, reason: String, metadata: LimitMetadata| {
        flags.push(flag);
        Decision {
            allowed: false,
            requires_approval: false,
            flags,
            reason,
            metadata,
        }
    };

    // 1. Single transaction limit: a hard limit.
    if amount_cents > config.max_single_payout_cents {
        let reason = format!(
            "Amount {} exceeds the single payout limit of {}",
            dollars(amount_cents),
            dollars(config.max_single_payout_cents)
        );
        return blocked(flags, Flag::ExceedsSingleLimit, reason, metadata);
    }
    // 2. Admin approval threshold.
    if amount_cents > config.require_approval_amount_cents {
        flags.push(Flag::RequiresAdminApproval);
        reasons.push(format!(
            "Amount exceeds {}",
            dollars(config.require_approval_amount_cents)
        ));
    }
    // 3. New account restrictions.
    if metadata.is_new_account {
        flags.push(Flag::NewAccount);
        if amount_cents > config.new_account_max_payout_cents {
            let reason = format!(
                "New account ({} days old): amount {} exceeds the new account limit of {}",
                metadata.account_age_days,
                dollars(amount_cents),
                dollars(config.new_account_max_payout_cents)
            );
            return blocked(flags, Flag::ExceedsNewAccountLimit, reason, metadata);
        }
        reasons.push(format!(
            "New account ({} days old)",
            metadata.account_age_days
        ));
    }
    // 4. Daily payout count.
    if metadata.daily_payout_count >= config.max_payouts_per_day {
        let reason = format!(
            "Daily payout limit reached: {} payouts in the last 24 hours (limit {})",
            metadata.daily_payout_count, config.max_payouts_per_day
        );
        return blocked(flags, Flag::ExceedsDailyCountLimit, reason, metadata);
    }
    // 5. Daily amount (rolling 24 hours).
    if metadata
        .daily_payout_amount_cents
        .saturating_add(amount_cents)
        > config.max_daily_amount_cents
    {
        let reason = format!(
            "Daily amount limit: {} in the last 24 hours plus {} exceeds {}",
            dollars(metadata.daily_payout_amount_cents),
            dollars(amount_cents),
            dollars(config.max_daily_amount_cents)
        );
        return blocked(flags, Flag::ExceedsDailyAmountLimit, reason, metadata);
    }
    // 6. Monthly amount (calendar month, UTC).
    if metadata
        .monthly_payout_amount_cents
        .saturating_add(amount_cents)
        > config.max_monthly_amount_cents
    {
        let reason = format!(
            "Monthly amount limit: {} this month plus {} exceeds {}",
            dollars(metadata.monthly_payout_amount_cents),
            dollars(amount_cents),
            dollars(config.max_monthly_amount_cents)
        );
        return blocked(flags, Flag::ExceedsMonthlyAmountLimit, reason, metadata);
    }
    // Rate limit: minimum time between payout requests.
    if let Some(last) = quota.reservations.iter().map(|r| r.reserved_at).max()
        && now < last + Duration::seconds(config.min_seconds_between_payouts)
    {
        let wait = (last + Duration::seconds(config.min_seconds_between_payouts) - now)
            .num_seconds()
            .max(1);
        let reason = format!(
            "Too soon: payouts must be at least {} seconds apart; try again in {wait} seconds",
            config.min_seconds_between_payouts
        );
        return blocked(flags, Flag::TooSoon, reason, metadata);
    }
    // 7. Suspicious patterns: held for approval. Frequency counts attempts, refused ones
    // included: with the defaults (3 payouts a day), five attempts in 24 hours can only be
    // reached through refusals, which is exactly the pattern worth a human look.
    if metadata.daily_attempt_count + 1 >= config.suspicious_pattern_threshold {
        flags.push(Flag::SuspiciousFrequency);
        reasons.push(format!(
            "{} or more payout attempts in 24 hours",
            config.suspicious_pattern_threshold
        ));
    }
    // amount > ratio x lifetime, in integers: amount x 10000 > lifetime x bps.
    if i128::from(amount_cents) * 10_000
        > i128::from(context.lifetime_earnings_cents)
            * i128::from(config.suspicious_amount_ratio_bps)
    {
        flags.push(Flag::LargePercentageOfEarnings);
        reasons.push(format!(
            "Amount is more than {}% of lifetime earnings",
            config.suspicious_amount_ratio_bps / 100
        ));
    }
    if quota.payouts_ever == 0 && amount_cents > config.large_first_payout_cents {
        flags.push(Flag::LargeFirstPayout);
        reasons.push(format!(
            "First payout above {}",
            dollars(config.large_first_payout_cents)
        ));
    }
    if context.recent_refunds_and_disputes > 0 {
        flags.push(Flag::RecentRefundOrDispute);
        reasons.push(format!(
            "{} refund(s) or dispute(s) of supporters' payments in the last 30 days",
            context.recent_refunds_and_disputes
        ));
    }
    let requires_approval = flags.iter().any(|flag| {
        matches!(
            flag,
            Flag::RequiresAdminApproval
                | Flag::SuspiciousFrequency
                | Flag::LargePercentageOfEarnings
                | Flag::LargeFirstPayout
                | Flag::RecentRefundOrDispute
        )
    });
    Decision {
        allowed: true,
        requires_approval,
        flags,
        reason: if requires_approval {
            reasons.join("; ")
        } else {
            String::new()
        },
        metadata,
    }
}

/// The checks and the reservation as one step on one user's quota. Idempotent on the payout
/// id, both ways: an admitted payout stays admitted and a refused one stays refused. The
/// caller stores the returned quota with a compare-and-set on the version it read, so
/// concurrent admissions of one user serialise and together never exceed a limit.
pub fn admit(
    config: &LimitConfig,
    quota: &Quota,
    context: &UserContext,
    payout_id: &str,
    amount_cents: i64,
    requested_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Admission {
    if let Some(existing) = quota.find(payout_id) {
        return Admission::AlreadyAdmitted {
            decision: Decision {
                allowed: true,
                requires_approval: existing.requires_approval,
                flags: existing.flags.clone(),
                reason: String::new(),
                metadata: metadata(quota, context, config, now),
            },
        };
    }
    if let Some(refusal) = quota.refusal_of(payout_id) {
        return Admission::AlreadyRefused {
            decision: Decision {
                allowed: false,
                requires_approval: false,
                flags: refusal.flags.clone(),
                reason: refusal.reason.clone(),
                metadata: metadata(quota, context, config, now),
            },
            refusal: refusal.clone(),
        };
    }
    if now - requested_at > ADMISSION_WINDOW {
        return Admission::Expired {
            decision: Decision {
                allowed: false,
                requires_approval: false,
                flags: Vec::new(),
                reason: "The request is more than 24 hours old; request the payout again"
                    .to_owned(),
                metadata: metadata(quota, context, config, now),
            },
            quota: Quota {
                version: quota.version + 1,
                ..quota.clone()
            },
        };
    }
    let decision = evaluate(config, quota, context, amount_cents, now);
    let refused = |refusal: Refusal| Quota {
        attempts: quota.with_attempt(
            Attempt {
                payout_id: payout_id.to_owned(),
                at: now,
                refusal: Some(refusal),
            },
            now,
        ),
        version: quota.version + 1,
        ..quota.clone()
    };
    if !decision.allowed {
        let quota = refused(Refusal {
            flags: decision.flags.clone(),
            reason: decision.reason.clone(),
            available_cents: None,
        });
        return Admission::Refused { decision, quota };
    }
    let available_cents = context.payable_earnings_cents - quota.committed_cents;
    if amount_cents > available_cents {
        let reason = format!(
            "Amount {} exceeds the available balance of {}",
            dollars(amount_cents),
            dollars(available_cents.max(0))
        );
        let mut flags = decision.flags.clone();
        flags.push(Flag::InsufficientBalance);
        let decision = Decision {
            allowed: false,
            requires_approval: false,
            flags: flags.clone(),
            reason: reason.clone(),
            metadata: decision.metadata,
        };
        let quota = refused(Refusal {
            flags,
            reason,
            available_cents: Some(available_cents),
        });
        return Admission::InsufficientBalance {
            available_cents,
            decision,
            quota,
        };
    }
    let retention_start = now - RESERVATION_RETENTION;
    let mut reservations: Vec<Reservation> = quota
        .reservations
        .iter()
        .filter(|r| r.reserved_at >= retention_start)
        .cloned()
        .collect();
    reservations.push(Reservation {
        payout_id: payout_id.to_owned(),
        amount_cents,
        reserved_at: now,
        requires_approval: decision.requires_approval,
        flags: decision.flags.clone(),
        released_cents: 0,
        release_sequence: 0,
    });
    let quota = Quota {
        user_id: quota.user_id.clone(),
        reservations,
        attempts: quota.with_attempt(
            Attempt {
                payout_id: payout_id.to_owned(),
                at: now,
                refusal: None,
            },
            now,
        ),
        committed_cents: quota.committed_cents + amount_cents,
        payouts_ever: quota.payouts_ever + 1,
        version: quota.version + 1,
    };
    Admission::Admitted { decision, quota }
}

/// What setting a release did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    /// Store this quota: the reservation now gives back the total asked for.
    Changed(Quota),
    /// Nothing to store: the reservation already gives it back, or the sequence is stale.
    Unchanged { held_cents: i64 },
    /// No reservation for this payout in the document.
    NotFound,
}

/// Sets how much of a payout's reservation is given back, in total (0 up to its amount).
/// Absolute and sequenced: a repeated call changes nothing, and a late call carrying an
/// older sequence never undoes a newer total.
pub fn release(
    quota: &Quota,
    payout_id: &str,
    total_released_cents: i64,
    sequence: i64,
) -> Release {
    let Some(index) = quota
        .reservations
        .iter()
        .position(|r| r.payout_id == payout_id)
    else {
        return Release::NotFound;
    };
    let reservation = &quota.reservations[index];
    let total = total_released_cents.clamp(0, reservation.amount_cents);
    if sequence <= reservation.release_sequence {
        return Release::Unchanged {
            held_cents: reservation.held_cents(),
        };
    }
    // A newer sequence is stored even when the total is the same, so that an older call
    // still on its way can no longer change anything.
    let delta = total - reservation.released_cents;
    let mut updated = quota.clone();
    updated.reservations[index].released_cents = total;
    updated.reservations[index].release_sequence = sequence;
    updated.committed_cents -= delta;
    updated.version += 1;
    Release::Changed(updated)
}

/// A creator's balance against their earnings, in cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    pub committed_cents: i64,
    /// Payable earnings less committed, at least zero.
    pub available_cents: i64,
    /// Committed beyond everything earned (frozen included): money paid out and then taken
    /// back by refunds or lost disputes. Netted against future earnings (a payout needs
    /// payable earnings above everything committed), never paid as a negative payout.
    pub debt_cents: i64,
}

pub fn balance(
    quota: &Quota,
    lifetime_earnings_cents: i64,
    payable_earnings_cents: i64,
) -> Balance {
    Balance {
        committed_cents: quota.committed_cents,
        available_cents: (payable_earnings_cents - quota.committed_cents).max(0),
        debt_cents: (quota.committed_cents - lifetime_earnings_cents).max(0),
    }
}

/// Whether the user's payable earnings still cover everything their payouts hold (checked
/// again just before money moves: frozen or refunded earnings may have shrunk them).
pub fn recheck(quota: &Quota, payable_earnings_cents: i64) -> Result<i64, (i64, String)> {
    let available = payable_earnings_cents - quota.committed_cents;
    if available >= 0 {
        Ok(available)
    } else {
        Err((
            available,
            format!(
                "payable earnings of {} no longer cover the {} held by payouts ({} short)",
                dollars(payable_earnings_cents),
                dollars(quota.committed_cents),
                dollars(-available)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-03-15 12:00 UTC.
    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 15, 12, 0, 0).unwrap()
    }

    fn established() -> UserContext {
        UserContext {
            account_created_at: Some(now() - Duration::days(365)),
            lifetime_earnings_cents: 1_000_000_00,
            payable_earnings_cents: 1_000_000_00,
            recent_refunds_and_disputes: 0,
        }
    }

    fn new_account(days: i64) -> UserContext {
        UserContext {
            account_created_at: Some(now() - Duration::days(days)),
            ..established()
        }
    }

    /// A user with earlier payouts (so no "first payout" flag), none recent.
    fn veteran() -> Quota {
        Quota {
            payouts_ever: 10,
            ..Quota::empty("u")
        }
    }

    fn with(mut quota: Quota, reservations: &[(i64, Duration)]) -> Quota {
        for (i, (cents, ago)) in reservations.iter().enumerate() {
            quota.reservations.push(Reservation {
                payout_id: format!("earlier_{i}"),
                amount_cents: *cents,
                reserved_at: now() - *ago,
                requires_approval: false,
                flags: Vec::new(),
                released_cents: 0,
                release_sequence: 0,
            });
            quota.attempts.push(Attempt {
                payout_id: format!("earlier_{i}"),
                at: now() - *ago,
                refusal: None,
            });
            quota.committed_cents += cents;
            quota.payouts_ever += 1;
        }
        quota
    }

    fn check(quota: &Quota, context: &UserContext, cents: i64) -> Decision {
        evaluate(&LimitConfig::default(), quota, context, cents, now())
    }

    #[test]
    fn debt_is_what_was_paid_beyond_earnings_and_future_earnings_net_it() {
        let paid = Quota {
            committed_cents: 100_00,
            ..veteran()
        };
        // Paid 100, then 30 refunded: 30 of debt, nothing available.
        let refunded = balance(&paid, 70_00, 70_00);
        assert_eq!(refunded.debt_cents, 30_00);
        assert_eq!(refunded.available_cents, 0);
        // 50 earned since: the debt is netted first, 20 is available.
        let earned = balance(&paid, 120_00, 120_00);
        assert_eq!((earned.debt_cents, earned.available_cents), (0, 20_00));
        // Frozen is not debt: it may come back.
        let frozen = balance(&paid, 100_00, 60_00);
        assert_eq!((frozen.debt_cents, frozen.available_cents), (0, 0));
        // A payout against the debt is refused at admission and at the re-check.
        assert!(recheck(&paid, 70_00).is_err());
    }

    #[test]
    fn a_recent_refund_or_dispute_holds_the_payout_for_approval() {
        let calm = check(&veteran(), &established(), 100_00);
        assert!(calm.allowed && !calm.requires_approval);
        let touched = UserContext {
            recent_refunds_and_disputes: 2,
            ..established()
        };
        let held = check(&veteran(), &touched, 100_00);
        assert!(held.allowed && held.requires_approval);
        assert_eq!(held.flags, [Flag::RecentRefundOrDispute]);
        assert!(
            held.reason.contains("2 refund(s) or dispute(s)"),
            "{}",
            held.reason
        );
    }

    #[test]
    fn spec_cases_of_section_8_4() {
        let single = check(&veteran(), &established(), 10_001_00);
        assert!(!single.allowed);
        assert_eq!(single.flags.last(), Some(&Flag::ExceedsSingleLimit));

        let approval = check(&veteran(), &established(), 6_000_00);
        assert!(approval.allowed && approval.requires_approval);
        assert!(approval.flags.contains(&Flag::RequiresAdminApproval));

        let fresh = check(&veteran(), &new_account(15), 1_500_00);
        assert!(!fresh.allowed);
        assert_eq!(
            fresh.flags,
            vec![Flag::NewAccount, Flag::ExceedsNewAccountLimit]
        );
        assert!(fresh.metadata.is_new_account);
        assert_eq!(fresh.metadata.account_age_days, 15);
    }

    #[test]
    fn each_amount_limit_holds_at_the_limit_and_refuses_one_cent_over() {
        let cases: [(Quota, UserContext, i64, Flag); 4] = [
            (
                veteran(),
                established(),
                10_000_00,
                Flag::ExceedsSingleLimit,
            ),
            (
                veteran(),
                new_account(29),
                1_000_00,
                Flag::ExceedsNewAccountLimit,
            ),
            (
                with(
                    veteran(),
                    &[
                        (9_000_00, Duration::hours(23)),
                        (9_000_00, Duration::hours(20)),
                    ],
                ),
                established(),
                7_000_00,
                Flag::ExceedsDailyAmountLimit,
            ),
            (
                with(
                    veteran(),
                    &[
                        (30_000_00, Duration::days(10)),
                        (30_000_00, Duration::days(9)),
                        (32_000_00, Duration::days(2)),
                    ],
                ),
                established(),
                8_000_00,
                Flag::ExceedsMonthlyAmountLimit,
            ),
        ];
        for (quota, context, at_limit, flag) in cases {
            let allowed = check(&quota, &context, at_limit);
            assert!(allowed.allowed, "{flag:?} at the limit: {allowed:?}");
            let refused = check(&quota, &context, at_limit + 1);
            assert!(!refused.allowed, "{flag:?} one cent over");
            assert_eq!(refused.flags.last(), Some(&flag));
        }
    }

    #[test]
    fn the_approval_threshold_holds_at_the_limit() {
        assert!(!check(&veteran(), &established(), 5_000_00).requires_approval);
        assert!(check(&veteran(), &established(), 5_000_01).requires_approval);
    }

    #[test]
    fn the_daily_count_blocks_the_fourth_payout_in_24_hours() {
        let three = with(
            veteran(),
            &[
                (100, Duration::hours(23)),
                (100, Duration::hours(10)),
                (100, Duration::hours(1)),
            ],
        );
        let refused = check(&three, &established(), 100);
        assert_eq!(refused.flags.last(), Some(&Flag::ExceedsDailyCountLimit));
        assert_eq!(refused.metadata.daily_payout_count, 3);
        // One of them 24 hours old exactly has left the rolling window.
        let aged = with(
            veteran(),
            &[
                (100, Duration::hours(24)),
                (100, Duration::hours(10)),
                (100, Duration::hours(1)),
            ],
        );
        assert!(check(&aged, &established(), 100).allowed);
    }

    #[test]
    fn the_day_window_rolls_and_the_month_window_is_the_calendar_month() {
        // 24 h and one second ago: outside the day, inside the month.
        let quota = with(
            veteran(),
            &[(20_000_00, Duration::hours(24) + Duration::seconds(1))],
        );
        let decision = check(&quota, &established(), 10_000_00);
        assert!(decision.allowed);
        assert_eq!(decision.metadata.daily_payout_amount_cents, 0);
        assert_eq!(decision.metadata.monthly_payout_amount_cents, 20_000_00);

        // Last month's payouts do not count this month.
        let month_start = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        let mut quota = with(
            veteran(),
            &[(95_000_00, now() - month_start + Duration::seconds(1))],
        );
        assert_eq!(
            check(&quota, &established(), 10_000_00)
                .metadata
                .monthly_payout_amount_cents,
            0
        );
        quota.reservations[0].reserved_at = month_start;
        let decision = check(&quota, &established(), 10_000_00);
        assert_eq!(
            decision.flags.last(),
            Some(&Flag::ExceedsMonthlyAmountLimit)
        );
    }

    #[test]
    fn payouts_closer_than_the_minimum_gap_are_too_soon() {
        let quota = with(veteran(), &[(100, Duration::seconds(299))]);
        assert_eq!(
            check(&quota, &established(), 100).flags.last(),
            Some(&Flag::TooSoon)
        );
        let quota = with(veteran(), &[(100, Duration::seconds(300))]);
        assert!(check(&quota, &established(), 100).allowed);
    }

    #[test]
    fn suspicious_patterns_hold_for_approval() {
        let config = LimitConfig {
            max_payouts_per_day: 10,
            min_seconds_between_payouts: 0,
            ..LimitConfig::default()
        };
        let four = with(
            veteran(),
            &[
                (100, Duration::hours(4)),
                (100, Duration::hours(3)),
                (100, Duration::hours(2)),
                (100, Duration::hours(1)),
            ],
        );
        let frequent = evaluate(&config, &four, &established(), 100, now());
        assert!(frequent.allowed && frequent.requires_approval);
        assert!(frequent.flags.contains(&Flag::SuspiciousFrequency));

        let small_earner = UserContext {
            lifetime_earnings_cents: 1_000_00,
            ..established()
        };
        let at_ratio = evaluate(&config, &veteran(), &small_earner, 800_00, now());
        assert!(!at_ratio.requires_approval, "80% exactly is not above 80%");
        let over_ratio = evaluate(&config, &veteran(), &small_earner, 800_01, now());
        assert_eq!(over_ratio.flags, vec![Flag::LargePercentageOfEarnings]);
        assert!(over_ratio.requires_approval);

        let first = evaluate(&config, &Quota::empty("u"), &established(), 2_000_01, now());
        assert!(first.flags.contains(&Flag::LargeFirstPayout) && first.requires_approval);
        assert!(
            !evaluate(&config, &Quota::empty("u"), &established(), 2_000_00, now())
                .requires_approval
        );
    }

    /// Refused attempts `ago` before now, for the frequency window.
    fn with_refusals(mut quota: Quota, agos: &[Duration]) -> Quota {
        for (i, ago) in agos.iter().enumerate() {
            quota.attempts.push(Attempt {
                payout_id: format!("refused_{i}"),
                at: now() - *ago,
                refusal: Some(Refusal {
                    flags: vec![Flag::TooSoon],
                    reason: "Too soon".to_owned(),
                    available_cents: None,
                }),
            });
        }
        quota.attempts.sort_by_key(|attempt| attempt.at);
        quota
    }

    #[test]
    fn suspicious_frequency_fires_with_the_default_limits_when_refused_attempts_count() {
        // Two payouts and two refused attempts in 24 hours: the fifth attempt is suspicious
        // (design §6: 5+ in 24 h). Counting only admitted payouts, as before, it never could
        // be: the daily count of 3 refuses long before 5 admitted payouts exist.
        let busy = with_refusals(
            with(
                veteran(),
                &[(100, Duration::hours(6)), (100, Duration::hours(5))],
            ),
            &[
                Duration::hours(5) - Duration::minutes(1),
                Duration::hours(4),
            ],
        );
        let decision = check(&busy, &established(), 100);
        assert!(
            decision.allowed && decision.requires_approval,
            "{decision:?}"
        );
        assert_eq!(decision.flags, vec![Flag::SuspiciousFrequency]);
        assert_eq!(decision.metadata.daily_attempt_count, 4);
        // Four attempts with this one are not yet suspicious.
        let calmer = with_refusals(
            with(
                veteran(),
                &[(100, Duration::hours(6)), (100, Duration::hours(5))],
            ),
            &[Duration::hours(4)],
        );
        assert!(!check(&calmer, &established(), 100).requires_approval);
        // Attempts older than 24 hours have left the window.
        let old = with_refusals(
            with(
                veteran(),
                &[(100, Duration::hours(6)), (100, Duration::hours(5))],
            ),
            &[Duration::hours(25), Duration::hours(24)],
        );
        assert!(!check(&old, &established(), 100).requires_approval);
    }

    #[test]
    fn admission_reserves_once_per_payout_and_respects_the_balance() {
        let config = LimitConfig::default();
        let context = UserContext {
            payable_earnings_cents: 1_000_00,
            recent_refunds_and_disputes: 0,
            ..established()
        };
        let Admission::Admitted { quota, decision } =
            admit(&config, &veteran(), &context, "p1", 600_00, now(), now())
        else {
            panic!("admitted");
        };
        assert!(decision.allowed);
        assert_eq!(
            (
                quota.committed_cents,
                quota.version,
                quota.reservations.len(),
                quota.attempts.len()
            ),
            (600_00, 1, 1, 1)
        );
        // The same payout again: same answer, nothing new to store.
        assert!(matches!(
            admit(&config, &quota, &context, "p1", 600_00, now(), now()),
            Admission::AlreadyAdmitted { .. }
        ));
        // Another payout beyond what is left: 400 available; the refusal is remembered.
        let later = now() + Duration::hours(1);
        let refused = match admit(&config, &quota, &context, "p2", 400_01, later, later) {
            Admission::InsufficientBalance {
                available_cents,
                decision,
                quota,
            } => {
                assert_eq!(available_cents, 400_00);
                assert_eq!(decision.flags.last(), Some(&Flag::InsufficientBalance));
                quota
            }
            other => panic!("expected insufficient balance, got {other:?}"),
        };
        assert_eq!(refused.committed_cents, 600_00);
        assert!(matches!(
            admit(&config, &refused, &context, "p3", 400_00, later, later),
            Admission::Admitted { .. }
        ));
    }

    #[test]
    fn a_refusal_is_final_for_its_payout() {
        let config = LimitConfig::default();
        let soon = with(veteran(), &[(100, Duration::seconds(10))]);
        let Admission::Refused { quota, decision } =
            admit(&config, &soon, &established(), "p", 100, now(), now())
        else {
            panic!("too soon");
        };
        assert_eq!(decision.flags.last(), Some(&Flag::TooSoon));
        // Later the same payout would pass the checks, but its first answer stands: a retried
        // admission can never reserve quota for a payout its first caller deleted.
        let later = now() + Duration::hours(1);
        match admit(&config, &quota, &established(), "p", 100, later, later) {
            Admission::AlreadyRefused { decision, refusal } => {
                assert!(!decision.allowed);
                assert_eq!(refusal.flags, vec![Flag::TooSoon]);
            }
            other => panic!("expected the same refusal, got {other:?}"),
        }
        assert!(matches!(
            admit(&config, &quota, &established(), "other", 100, later, later),
            Admission::Admitted { .. }
        ));
    }

    #[test]
    fn an_admission_resumed_after_the_refusal_memory_is_refused() {
        let config = LimitConfig::default();
        let requested = now() - Duration::hours(25);
        match admit(
            &config,
            &veteran(),
            &established(),
            "stale",
            100,
            requested,
            now(),
        ) {
            Admission::Expired { decision, quota } => {
                assert!(!decision.allowed);
                // Nothing reserved, nothing counted; only the version moves.
                assert_eq!(quota.committed_cents, veteran().committed_cents);
                assert_eq!(quota.attempts, veteran().attempts);
                assert_eq!(quota.version, veteran().version + 1);
            }
            other => panic!("expected expired, got {other:?}"),
        }
        // An admitted payout stays admitted, however late the retry.
        let Admission::Admitted { quota, .. } = admit(
            &config,
            &veteran(),
            &established(),
            "p",
            100,
            requested,
            requested,
        ) else {
            panic!("admitted");
        };
        assert!(matches!(
            admit(&config, &quota, &established(), "p", 100, requested, now()),
            Admission::AlreadyAdmitted { .. }
        ));
    }

    #[test]
    fn attempts_are_bounded() {
        let mut quota = veteran();
        for i in 0..(MAX_REMEMBERED_ATTEMPTS + 50) {
            quota.attempts = quota.with_attempt(
                Attempt {
                    payout_id: format!("p{i}"),
                    at: now(),
                    refusal: None,
                },
                now(),
            );
        }
        assert_eq!(quota.attempts.len(), MAX_REMEMBERED_ATTEMPTS);
        assert_eq!(quota.attempts.last().unwrap().payout_id, "p249");
    }

    fn released_cents(quota: &Quota, payout_id: &str) -> i64 {
        quota.find(payout_id).unwrap().released_cents
    }

    #[test]
    fn release_sets_a_sequenced_total_and_never_gives_back_twice() {
        let config = LimitConfig::default();
        let Admission::Admitted { quota, .. } = admit(
            &config,
            &veteran(),
            &established(),
            "p1",
            600_00,
            now(),
            now(),
        ) else {
            panic!("admitted");
        };
        // A partial reversal of 100.
        let Release::Changed(partly) = release(&quota, "p1", 100_00, 1) else {
            panic!("changed");
        };
        assert_eq!(partly.committed_cents, 500_00);
        // The same call again (a retry after a lost answer) changes nothing.
        assert_eq!(
            release(&partly, "p1", 100_00, 1),
            Release::Unchanged { held_cents: 500_00 }
        );
        // The full reversal: the total is 600, not 600 more.
        let Release::Changed(fully) = release(&partly, "p1", 600_00, 2) else {
            panic!("changed");
        };
        assert_eq!(fully.committed_cents, 0);
        assert_eq!(released_cents(&fully, "p1"), 600_00);
        // A late call of an older sequence does not undo the newer total.
        assert_eq!(
            release(&fully, "p1", 100_00, 1),
            Release::Unchanged { held_cents: 0 }
        );
        // Totals are clamped to the reservation.
        let Release::Changed(restored) = release(&fully, "p1", -5, 3) else {
            panic!("changed");
        };
        assert_eq!(
            restored.committed_cents, 600_00,
            "a transfer turned up: held again"
        );
        assert_eq!(release(&fully, "unknown", 0, 1), Release::NotFound);
        // A released payout no longer counts toward the windows.
        assert_eq!(
            metadata(&fully, &established(), &config, now()).daily_payout_count,
            0
        );
    }

    #[test]
    fn an_equal_total_under_a_newer_sequence_still_fences_older_calls() {
        let config = LimitConfig::default();
        let Admission::Admitted { quota, .. } = admit(
            &config,
            &veteran(),
            &established(),
            "p1",
            600_00,
            now(),
            now(),
        ) else {
            panic!("admitted");
        };
        let Release::Changed(first) = release(&quota, "p1", 600_00, 1) else {
            panic!("changed");
        };
        let Release::Changed(fenced) = release(&first, "p1", 600_00, 3) else {
            panic!("the newer sequence is stored");
        };
        assert_eq!(fenced.committed_cents, 0);
        assert!(matches!(
            release(&fenced, "p1", 0, 2),
            Release::Unchanged { .. }
        ));
    }

    #[test]
    fn recheck_compares_payable_earnings_with_everything_held() {
        let config = LimitConfig::default();
        let context = UserContext {
            payable_earnings_cents: 1_000_00,
            recent_refunds_and_disputes: 0,
            ..established()
        };
        let Admission::Admitted { quota, .. } =
            admit(&config, &veteran(), &context, "p1", 600_00, now(), now())
        else {
            panic!("admitted");
        };
        assert_eq!(recheck(&quota, context.payable_earnings_cents), Ok(400_00));
        // Earnings frozen since: 500 payable no longer cover the 600 held.
        let (available, reason) = recheck(&quota, 500_00).unwrap_err();
        assert_eq!(available, -100_00);
        assert!(reason.contains("$100.00 short"), "{reason}");
    }

    #[test]
    fn old_reservations_are_pruned_so_the_document_stays_bounded() {
        let config = LimitConfig {
            min_seconds_between_payouts: 0,
            ..LimitConfig::default()
        };
        let old = with(
            veteran(),
            &[
                (100, RESERVATION_RETENTION + Duration::days(1)),
                (100, Duration::days(40)),
            ],
        );
        let Admission::Admitted { quota, .. } =
            admit(&config, &old, &established(), "p", 100, now(), now())
        else {
            panic!("admitted");
        };
        assert_eq!(
            quota.reservations.len(),
            2,
            "the reservation past retention is dropped"
        );
        assert_eq!(quota.committed_cents, 300, "but its amount stays committed");
    }
}
