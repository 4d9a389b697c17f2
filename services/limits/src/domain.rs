//! The limit configuration (design §6, one source of truth) and blocked attempts.

use chrono::{DateTime, Utc};

/// Design §6 `PAYOUT_LIMITS`; amounts in cents, the ratio in basis points (no floats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitConfig {
    pub max_single_payout_cents: i64,
    pub max_payouts_per_day: i64,
    pub max_daily_amount_cents: i64,
    pub max_monthly_amount_cents: i64,
    pub new_account_max_payout_cents: i64,
    pub new_account_days: i64,
    pub require_approval_amount_cents: i64,
    pub min_seconds_between_payouts: i64,
    pub suspicious_pattern_threshold: i64,
    /// 0.8 of lifetime earnings = 8000 basis points.
    pub suspicious_amount_ratio_bps: i64,
    /// Design §6 check 7: "first payout unusually large (>$2,000)".
    pub large_first_payout_cents: i64,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            max_single_payout_cents: 10_000_00,
            max_payouts_per_day: 3,
            max_daily_amount_cents: 25_000_00,
            max_monthly_amount_cents: 100_000_00,
            new_account_max_payout_cents: 1_000_00,
            new_account_days: 30,
            require_approval_amount_cents: 5_000_00,
            min_seconds_between_payouts: 300,
            suspicious_pattern_threshold: 5,
            suspicious_amount_ratio_bps: 8_000,
            large_first_payout_cents: 2_000_00,
        }
    }
}

impl LimitConfig {
    /// The defaults with `PAYOUT_LIMITS_<NAME>` overrides applied; names are design §6's
    /// (`MAX_SINGLE_PAYOUT`, ..., amounts in cents) plus `LARGE_FIRST_PAYOUT`;
    /// `SUSPICIOUS_AMOUNT_RATIO` is a decimal like `0.8`. Unknown names and bad values are
    /// errors naming the variable.
    pub fn from_overrides(overrides: &[(String, String)]) -> anyhow::Result<Self> {
        let mut config = Self::default();
        for (name, value) in overrides {
            let variable = format!("PAYOUT_LIMITS_{name}");
            let invalid = |problem: &str| {
                anyhow::anyhow!("invalid setting {variable}: {problem}, got {value:?}")
            };
            if name == "SUSPICIOUS_AMOUNT_RATIO" {
                config.suspicious_amount_ratio_bps = ratio_to_bps(value).ok_or_else(|| {
                    invalid("must be a decimal from 0 to 1 with at most 4 places")
                })?;
                continue;
            }
            let number: i64 = value
                .trim()
                .parse()
                .ok()
                .filter(|number| *number >= 0)
                .ok_or_else(|| invalid("must be a non-negative whole number"))?;
            let field = match name.as_str() {
                "MAX_SINGLE_PAYOUT" => &mut config.max_single_payout_cents,
                "MAX_PAYOUTS_PER_DAY" => &mut config.max_payouts_per_day,
                "MAX_DAILY_AMOUNT" => &mut config.max_daily_amount_cents,
                "MAX_MONTHLY_AMOUNT" => &mut config.max_monthly_amount_cents,
                "NEW_ACCOUNT_MAX_PAYOUT" => &mut config.new_account_max_payout_cents,
                "NEW_ACCOUNT_DAYS" => &mut config.new_account_days,
                "REQUIRE_APPROVAL_AMOUNT" => &mut config.require_approval_amount_cents,
                "MIN_TIME_BETWEEN_PAYOUTS" => &mut config.min_seconds_between_payouts,
                "SUSPICIOUS_PATTERN_THRESHOLD" => &mut config.suspicious_pattern_threshold,
                "LARGE_FIRST_PAYOUT" => &mut config.large_first_payout_cents,
                _ => return Err(anyhow::anyhow!("unknown setting {variable}")),
            };
            *field = number;
        }
        Ok(config)
    }
}

/// "0.8" -> 8000 basis points, exactly (no floating point).
fn ratio_to_bps(text: &str) -> Option<i64> {
    let text = text.trim();
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 4
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || whole.is_empty() && fraction.is_empty()
    {
        return None;
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let fraction: i64 = if fraction.is_empty() {
        0
    } else {
        format!("{fraction:0<4}").parse().ok()?
    };
    let bps = whole.checked_mul(10_000)?.checked_add(fraction)?;
    (0..=10_000).contains(&bps).then_some(bps)
}

/// Design §6 flag names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flag {
    ExceedsSingleLimit,
    RequiresAdminApproval,
    NewAccount,
    ExceedsNewAccountLimit,
    ExceedsDailyCountLimit,
    ExceedsDailyAmountLimit,
    ExceedsMonthlyAmountLimit,
    TooSoon,
    SuspiciousFrequency,
    LargePercentageOfEarnings,
    LargeFirstPayout,
    /// The amount exceeds the user's available balance (blocks).
    InsufficientBalance,
    /// A charge that funded the earnings was refunded or disputed in the last 30 days
    /// (design §7; needs approval).
    RecentRefundOrDispute,
}

impl Flag {
    pub const ALL: [Flag; 13] = [
        Flag::ExceedsSingleLimit,
        Flag::RequiresAdminApproval,
        Flag::NewAccount,
        Flag::ExceedsNewAccountLimit,
        Flag::ExceedsDailyCountLimit,
        Flag::ExceedsDailyAmountLimit,
        Flag::ExceedsMonthlyAmountLimit,
        Flag::TooSoon,
        Flag::SuspiciousFrequency,
        Flag::LargePercentageOfEarnings,
        Flag::LargeFirstPayout,
        Flag::InsufficientBalance,
        Flag::RecentRefundOrDispute,
    ];

    /// The name stored in documents and shown to admins (design §6's names).
    pub fn as_str(self) -> &'static str {
        match self {
            Flag::ExceedsSingleLimit => "EXCEEDS_SINGLE_LIMIT",
            Flag::RequiresAdminApproval => "REQUIRES_ADMIN_APPROVAL",
            Flag::NewAccount => "NEW_ACCOUNT",
            Flag::ExceedsNewAccountLimit => "EXCEEDS_NEW_ACCOUNT_LIMIT",
            Flag::ExceedsDailyCountLimit => "EXCEEDS_DAILY_COUNT_LIMIT",
            Flag::ExceedsDailyAmountLimit => "EXCEEDS_DAILY_AMOUNT_LIMIT",
            Flag::ExceedsMonthlyAmountLimit => "EXCEEDS_MONTHLY_AMOUNT_LIMIT",
            Flag::TooSoon => "TOO_SOON",
            Flag::SuspiciousFrequency => "SUSPICIOUS_FREQUENCY",
            Flag::LargePercentageOfEarnings => "LARGE_PERCENTAGE_OF_EARNINGS",
            Flag::LargeFirstPayout => "LARGE_FIRST_PAYOUT",
            Flag::InsufficientBalance => "INSUFFICIENT_BALANCE",
            Flag::RecentRefundOrDispute => "RECENT_REFUND_OR_DISPUTE",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|flag| flag.as_str() == text)
    }
}

/// Figures behind a decision (design §6 metadata).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitMetadata {
    pub is_new_account: bool,
    pub account_age_days: i64,
    pub daily_payout_count: i64,
    pub daily_payout_amount_cents: i64,
    pub monthly_payout_amount_cents: i64,
    pub lifetime_earnings_cents: i64,
    /// Attempts in the last 24 hours before this one, refused ones included.
    pub daily_attempt_count: i64,
}

/// A payout attempt the limits refused (payoutBlockedAttempts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedAttempt {
    pub id: String,
    pub user_id: String,
    pub amount_cents: i64,
    pub flags: Vec<Flag>,
    pub reason: String,
    pub metadata: LimitMetadata,
    pub attempted_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_spec_values() {
        let config = LimitConfig::default();
        assert_eq!(config.max_single_payout_cents, 1_000_000);
        assert_eq!(config.max_payouts_per_day, 3);
        assert_eq!(config.max_daily_amount_cents, 2_500_000);
        assert_eq!(config.max_monthly_amount_cents, 10_000_000);
        assert_eq!(config.new_account_max_payout_cents, 100_000);
        assert_eq!(config.new_account_days, 30);
        assert_eq!(config.require_approval_amount_cents, 500_000);
        assert_eq!(config.min_seconds_between_payouts, 300);
        assert_eq!(config.suspicious_pattern_threshold, 5);
        assert_eq!(config.suspicious_amount_ratio_bps, 8_000);
        assert_eq!(config.large_first_payout_cents, 200_000);
    }

    #[test]
    fn overrides_use_the_spec_names_and_reject_bad_values() {
        let overrides = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            LimitConfig::from_overrides(&pairs)
        };
        let config = overrides(&[
            ("MAX_PAYOUTS_PER_DAY", "5"),
            ("SUSPICIOUS_AMOUNT_RATIO", "0.75"),
        ])
        .unwrap();
        assert_eq!(config.max_payouts_per_day, 5);
        assert_eq!(config.suspicious_amount_ratio_bps, 7_500);
        for (name, value) in [
            ("MAX_PAYOUTS_PER_DAY", "-1"),
            ("MAX_SINGLE_PAYOUT", "10.5"),
            ("SUSPICIOUS_AMOUNT_RATIO", "1.5"),
            ("SUSPICIOUS_AMOUNT_RATIO", "0.12345"),
            ("NO_SUCH_LIMIT", "1"),
        ] {
            let error = overrides(&[(name, value)]).unwrap_err().to_string();
            assert!(error.contains(&format!("PAYOUT_LIMITS_{name}")), "{error}");
        }
    }

    #[test]
    fn flag_names_round_trip() {
        for flag in Flag::ALL {
            assert_eq!(Flag::parse(flag.as_str()), Some(flag));
        }
    }
}
