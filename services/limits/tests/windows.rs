//! Property tests of the limit windows at their edges: the rolling 24 hours, the calendar
//! month (month ends, leap days, year ends), and every amount limit exactly at its limit and
//! one cent over.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use payouts_limits::checks::{Attempt, Quota, Reservation, UserContext, evaluate};
use payouts_limits::domain::{Flag, LimitConfig};
use proptest::prelude::*;

/// Limits that leave only the amount windows to bind.
fn amounts_only() -> LimitConfig {
    LimitConfig {
        max_payouts_per_day: 1_000,
        min_seconds_between_payouts: 0,
        require_approval_amount_cents: i64::MAX,
        suspicious_pattern_threshold: 1_000,
        large_first_payout_cents: i64::MAX,
        max_single_payout_cents: 1_000_000_00,
        ..LimitConfig::default()
    }
}

fn established(now: DateTime<Utc>) -> UserContext {
    UserContext {
        account_created_at: Some(now - Duration::days(3_650)),
        lifetime_earnings_cents: 1_000_000_000_00,
        payable_earnings_cents: 1_000_000_000_00,
        recent_refunds_and_disputes: 0,
    }
}

fn quota(reservations: &[(i64, DateTime<Utc>)]) -> Quota {
    let mut quota = Quota::empty("u");
    for (i, (cents, at)) in reservations.iter().enumerate() {
        quota.reservations.push(Reservation {
            payout_id: format!("p{i}"),
            amount_cents: *cents,
            reserved_at: *at,
            requires_approval: false,
            flags: Vec::new(),
            released_cents: 0,
            release_sequence: 0,
        });
        quota.attempts.push(Attempt {
            payout_id: format!("p{i}"),
            at: *at,
            refusal: None,
        });
        quota.committed_cents += cents;
        quota.payouts_ever += 1;
    }
    quota
}

/// Any second from 2020 to 2031: leap years 2020, 2024, 2028 included.
fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
    (1_577_836_800_i64..1_924_992_000).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap())
}

fn first_of_month(at: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(at.year(), at.month(), 1, 0, 0, 0)
        .unwrap()
}

proptest! {
    #[test]
    fn the_rolling_day_counts_24_hours_less_a_second_and_not_24_hours(now in any_time(), cents in 1_i64..1_000_00) {
        let config = amounts_only();
        let inside = quota(&[(cents, now - Duration::hours(24) + Duration::seconds(1))]);
        prop_assert_eq!(evaluate(&config, &inside, &established(now), 1, now).metadata.daily_payout_amount_cents, cents);
        let outside = quota(&[(cents, now - Duration::hours(24))]);
        prop_assert_eq!(evaluate(&config, &outside, &established(now), 1, now).metadata.daily_payout_amount_cents, 0);
    }

    #[test]
    fn the_month_starts_at_midnight_utc_on_the_first_whatever_the_month_length(now in any_time(), cents in 1_i64..1_000_00) {
        let config = amounts_only();
        let start = first_of_month(now);
        let this_month = quota(&[(cents, start)]);
        prop_assert_eq!(evaluate(&config, &this_month, &established(now), 1, now).metadata.monthly_payout_amount_cents, cents);
        let last_month = quota(&[(cents, start - Duration::seconds(1))]);
        prop_assert_eq!(evaluate(&config, &last_month, &established(now), 1, now).metadata.monthly_payout_amount_cents, 0);
    }

    #[test]
    fn the_daily_amount_admits_exactly_the_limit_and_refuses_one_cent_more(now in any_time(), earlier in 0_i64..=25_000_00) {
        let config = amounts_only();
        let quota = quota(&[(earlier, now - Duration::hours(1))]);
        let context = established(now);
        let left = config.max_daily_amount_cents - earlier;
        if left > 0 {
            let at_limit = evaluate(&config, &quota, &context, left, now);
            prop_assert!(at_limit.allowed, "{:?}", at_limit);
        }
        let over = evaluate(&config, &quota, &context, left + 1, now);
        prop_assert!(!over.allowed);
        prop_assert_eq!(over.flags.last(), Some(&Flag::ExceedsDailyAmountLimit));
    }

    #[test]
    fn the_monthly_amount_admits_exactly_the_limit_and_refuses_one_cent_more(now in any_time(), earlier in 0_i64..=100_000_00) {
        let config = amounts_only();
        // Earlier this month but outside the rolling day, so only the month binds.
        let start = first_of_month(now);
        let at = if now - start > Duration::hours(25) { now - Duration::hours(25) } else { start };
        let in_day = now - at < Duration::hours(24);
        let quota = quota(&[(earlier, at)]);
        let context = established(now);
        let left = config.max_monthly_amount_cents - earlier;
        let daily_left = config.max_daily_amount_cents - if in_day { earlier } else { 0 };
        prop_assume!(left > 0 && left <= daily_left);
        let at_limit = evaluate(&config, &quota, &context, left, now);
        prop_assert!(at_limit.allowed, "{:?}", at_limit);
        let over = evaluate(&config, &quota, &context, left + 1, now);
        prop_assert!(!over.allowed);
        let flag = over.flags.last().copied();
        prop_assert!(
            flag == Some(Flag::ExceedsMonthlyAmountLimit) || (left + 1 > daily_left && flag == Some(Flag::ExceedsDailyAmountLimit)),
            "{:?}", over
        );
    }

    #[test]
    fn the_single_and_new_account_limits_hold_exactly_at_the_limit(now in any_time(), age_days in 0_i64..60) {
        let config = LimitConfig { min_seconds_between_payouts: 0, ..LimitConfig::default() };
        let context = UserContext {
            account_created_at: Some(now - Duration::days(age_days)),
            ..established(now)
        };
        let empty = Quota { payouts_ever: 1, ..Quota::empty("u") };
        let limit = if age_days < config.new_account_days {
            config.new_account_max_payout_cents
        } else {
            config.max_single_payout_cents
        };
        prop_assert!(evaluate(&config, &empty, &context, limit, now).allowed);
        let over = evaluate(&config, &empty, &context, limit + 1, now);
        prop_assert!(!over.allowed);
    }

    #[test]
    fn the_gap_between_payouts_is_exact(now in any_time(), gap in 0_i64..600) {
        let config = LimitConfig::default();
        let quota = quota(&[(100, now - Duration::seconds(gap))]);
        let decision = evaluate(&config, &quota, &established(now), 100, now);
        prop_assert_eq!(decision.allowed, gap >= config.min_seconds_between_payouts, "{:?}", decision);
    }
}

#[test]
fn leap_days_and_year_ends_belong_to_their_own_month() {
    let config = amounts_only();
    for (now, in_month, last_month) in [
        // 29 February 2028 belongs to February; 1 March starts afresh.
        (
            "2028-03-01T00:00:00Z",
            "2028-03-01T00:00:00Z",
            "2028-02-29T23:59:59Z",
        ),
        (
            "2028-02-29T12:00:00Z",
            "2028-02-01T00:00:00Z",
            "2028-01-31T23:59:59Z",
        ),
        (
            "2027-03-01T00:00:00Z",
            "2027-03-01T00:00:00Z",
            "2027-02-28T23:59:59Z",
        ),
        (
            "2027-01-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
            "2026-12-31T23:59:59Z",
        ),
    ] {
        let at = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&Utc)
        };
        let now = at(now);
        let counted = quota(&[(500, at(in_month))]);
        assert_eq!(
            evaluate(&config, &counted, &established(now), 1, now)
                .metadata
                .monthly_payout_amount_cents,
            500,
            "{now}"
        );
        let not_counted = quota(&[(500, at(last_month))]);
        assert_eq!(
            evaluate(&config, &not_counted, &established(now), 1, now)
                .metadata
                .monthly_payout_amount_cents,
            0,
            "{now}"
        );
    }
}
