//! Balance snapshots and threshold statuses (spec §5).

use chrono::{DateTime, Utc};
use payouts_runtime::Currency;

/// Spec §5 threshold status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThresholdStatus {
    Healthy,
    Warning,
    Critical,
    Depleted,
}

impl ThresholdStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ThresholdStatus::Healthy => "healthy",
            ThresholdStatus::Warning => "warning",
            ThresholdStatus::Critical => "critical",
            ThresholdStatus::Depleted => "depleted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "healthy" => Some(ThresholdStatus::Healthy),
            "warning" => Some(ThresholdStatus::Warning),
            "critical" => Some(ThresholdStatus::Critical),
            "depleted" => Some(ThresholdStatus::Depleted),
            _ => None,
        }
    }
}

/// A recorded platform balance (platformBalanceSnapshots); amounts in cents of `currency`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: String,
    pub taken_at: DateTime<Utc>,
    pub currency: Currency,
    pub available_balance_cents: i64,
    pub pending_balance_cents: i64,
    pub pending_obligations_cents: i64,
    pub required_reserve_cents: i64,
    pub threshold_status: ThresholdStatus,
    pub users_with_unpaid_earnings: i64,
    pub users_without_bank_accounts: i64,
}

impl Snapshot {
    /// Available plus pending (spec: totalBalance).
    pub fn total_balance_cents(&self) -> i64 {
        self.available_balance_cents
            .saturating_add(self.pending_balance_cents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for status in [
            ThresholdStatus::Healthy,
            ThresholdStatus::Warning,
            ThresholdStatus::Critical,
            ThresholdStatus::Depleted,
        ] {
            assert_eq!(ThresholdStatus::parse(status.as_str()), Some(status));
        }
    }
}
