//! The seven checks of spec §6 and atomic admission, as pure functions over one user's quota
//! document. Time is passed in; nothing here does I/O.
//!
//! Admission rule (what holds quota): a payout holds quota from the moment it is admitted
//! (pending, pending approval, processing, completed). A payout rejected by an admin, failed
//! permanently, or reversed gives its quota back (`release`), so it no longer counts toward
//! the daily and monthly amounts, the daily count, or the committed balance.

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};

use payouts_runtime::money::dollars;

use crate::domain::{Flag, LimitConfig, LimitMetadata};

/// How long reservations are kept in the quota document: longer than every window (24 h,
/// the calendar month, the minimum gap), so the document's size is bounded by the limits,
/// not by a user's history.
pub const RESERVATION_RETENTION: Duration = Duration::days(400);

/// One admitted payout in a user's quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub payout_id: String,
    pub amount_cents: i64,
    pub reserved_at: DateTime<Utc>,
    pub requires_approval: bool,
    pub flags: Vec<Flag>,
    /// Released quota no longer counts (rejected, permanently failed, reversed).
    pub released_cents: i64,
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

/// A user's quota document: recent reservations and the running committed total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    pub user_id: String,
    pub reservations: Vec<Reservation>,
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
            committed_cents: 0,
            payouts_ever: 0,
            version: 0,
        }
    }

    pub fn find(&self, payout_id: &str) -> Option<&Reservation> {
        self.reservations.iter().find(|r| r.payout_id == payout_id)
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
}

/// The result of the checks (spec §6 validation result).
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
    /// Refused by a limit.
    Refused { decision: Decision },
    /// The amount exceeds what the user can be paid now.
    InsufficientBalance {
        available_cents: i64,
        decision: Decision,
    },
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
    LimitMetadata {
        is_new_account: account_age_days < config.new_account_days,
        account_age_days,
        daily_payout_count: i64::try_from(held().filter(|r| r.reserved_at > day_start).count())
            .unwrap_or(i64::MAX),
        daily_payout_amount_cents: held()
            .filter(|r| r.reserved_at > day_start)
            .map(Reservation::held_cents)
            .sum(),
        monthly_payout_amount_cents: held()
            .filter(|r| r.reserved_at >= month_start)
            .map(Reservation::held_cents)
            .sum(),
        lifetime_earnings_cents: context.lifetime_earnings_cents,
    }
}

/// The seven checks in the spec's order. A blocking check ends the evaluation; flags that
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
    // 7. Suspicious patterns: held for approval.
    if metadata.daily_payout_count + 1 >= config.suspicious_pattern_threshold {
        flags.push(Flag::SuspiciousFrequency);
        reasons.push(format!(
            "{} or more payouts in 24 hours",
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
    let requires_approval = flags.iter().any(|flag| {
        matches!(
            flag,
            Flag::RequiresAdminApproval
                | Flag::SuspiciousFrequency
                | Flag::LargePercentageOfEarnings
                | Flag::LargeFirstPayout
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
/// id. The caller stores `Admitted.quota` with a compare-and-set on the version it read, so
/// concurrent admissions of one user serialise and together never exceed a limit.
pub fn admit(
    config: &LimitConfig,
    quota: &Quota,
    context: &UserContext,
    payout_id: &str,
    amount_cents: i64,
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
    let decision = evaluate(config, quota, context, amount_cents, now);
    if !decision.allowed {
        return Admission::Refused { decision };
    }
    let available_cents = context.payable_earnings_cents - quota.committed_cents;
    if amount_cents > available_cents {
        return Admission::InsufficientBalance {
            available_cents,
            decision,
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
    });
    let quota = Quota {
        user_id: quota.user_id.clone(),
        reservations,
        committed_cents: quota.committed_cents + amount_cents,
        payouts_ever: quota.payouts_ever + 1,
        version: quota.version + 1,
    };
    Admission::Admitted { decision, quota }
}

/// Gives back `cents` of a payout's quota (all of it for a rejection or a permanent failure,
/// part of it for a partial reversal). `None` when there is nothing (more) to release.
pub fn release(quota: &Quota, payout_id: &str, cents: Option<i64>) -> Option<Quota> {
    let index = quota
        .reservations
        .iter()
        .position(|r| r.payout_id == payout_id)?;
    let held = quota.reservations[index].held_cents();
    let releasing = cents.map_or(held, |cents| cents.clamp(0, held));
    if releasing == 0 {
        return None;
    }
    let mut updated = quota.clone();
    updated.reservations[index].released_cents += releasing;
    updated.committed_cents -= releasing;
    updated.version += 1;
    Some(updated)
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

    #[test]
    fn admission_reserves_once_per_payout_and_respects_the_balance() {
        let config = LimitConfig::default();
        let context = UserContext {
            payable_earnings_cents: 1_000_00,
            ..established()
        };
        let Admission::Admitted { quota, decision } =
            admit(&config, &veteran(), &context, "p1", 600_00, now())
        else {
            panic!("admitted");
        };
        assert!(decision.allowed);
        assert_eq!(
            (
                quota.committed_cents,
                quota.version,
                quota.reservations.len()
            ),
            (600_00, 1, 1)
        );
        // The same payout again: same answer, nothing new to store.
        assert!(matches!(
            admit(&config, &quota, &context, "p1", 600_00, now()),
            Admission::AlreadyAdmitted { .. }
        ));
        // Another payout beyond what is left: 400 available.
        let later = now() + Duration::hours(1);
        match admit(&config, &quota, &context, "p2", 400_01, later) {
            Admission::InsufficientBalance {
                available_cents, ..
            } => assert_eq!(available_cents, 400_00),
            other => panic!("expected insufficient balance, got {other:?}"),
        }
        assert!(matches!(
            admit(&config, &quota, &context, "p2", 400_00, later),
            Admission::Admitted { .. }
        ));
    }

    #[test]
    fn release_gives_quota_back_once() {
        let config = LimitConfig::default();
        let Admission::Admitted { quota, .. } =
            admit(&config, &veteran(), &established(), "p1", 600_00, now())
        else {
            panic!("admitted");
        };
        let partly = release(&quota, "p1", Some(100_00)).unwrap();
        assert_eq!(partly.committed_cents, 500_00);
        let fully = release(&partly, "p1", None).unwrap();
        assert_eq!(fully.committed_cents, 0);
        assert_eq!(release(&fully, "p1", None), None, "nothing left to release");
        assert_eq!(release(&fully, "unknown", None), None);
        // A released payout no longer counts toward the windows.
        assert_eq!(
            metadata(&fully, &established(), &config, now()).daily_payout_count,
            0
        );
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
            admit(&config, &old, &established(), "p", 100, now())
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
