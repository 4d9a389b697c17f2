//! Balance snapshots, threshold statuses, the reserve, the trend and what alerts a check
//! owes (design §5). Pure: amounts in integer cents, time passed in.

use chrono::{DateTime, Duration, Utc};
use payouts_runtime::Currency;
use payouts_runtime::money::dollars;

/// Design §5 threshold status, from best to worst (the order is the severity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    /// Whole days since the previous snapshot; 0 for the first.
    pub days_since_last_snapshot: i64,
}

impl Snapshot {
    /// Available plus pending (`totalBalance`).
    pub fn total_balance_cents(&self) -> i64 {
        self.available_balance_cents
            .saturating_add(self.pending_balance_cents)
    }
}

/// Design §5's thresholds and reserve, overridable by configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Below this the balance is critical (default $1,000).
    pub critical_cents: i64,
    /// Below this the balance is a warning (default $5,000).
    pub warning_cents: i64,
    /// At or above this (and the whole reserve) the balance is healthy (default $10,000).
    pub healthy_cents: i64,
    /// The reserve kept against obligations, in basis points (default 1.2 = 12,000).
    pub reserve_multiplier_bps: i64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            critical_cents: 1_000_00,
            warning_cents: 5_000_00,
            healthy_cents: 10_000_00,
            reserve_multiplier_bps: 12_000,
        }
    }
}

impl Thresholds {
    /// The reserve for `obligations_cents`, rounded up to the cent (never less than owed).
    pub fn required_reserve(&self, obligations_cents: i64) -> i64 {
        let scaled = i128::from(obligations_cents.max(0)) * i128::from(self.reserve_multiplier_bps);
        i64::try_from((scaled + 9_999) / 10_000).unwrap_or(i64::MAX)
    }

    /// Design §5: depleted at or below $0; critical below the critical threshold or below 50%
    /// of the reserve; warning below the warning threshold or below 80% of it; healthy at
    /// the healthy threshold with 100% of it or more; anything between (enough for the
    /// reserve but under the healthy threshold, or above it with 80-100% of the reserve) is
    /// a warning.
    pub fn classify(&self, available_cents: i64, reserve_cents: i64) -> ThresholdStatus {
        // Percentages compared in integers: available < p% of reserve <=> 100 * available < p * reserve.
        let below =
            |percent: i128| 100 * i128::from(available_cents) < percent * i128::from(reserve_cents);
        if available_cents <= 0 {
            ThresholdStatus::Depleted
        } else if available_cents < self.critical_cents || below(50) {
            ThresholdStatus::Critical
        } else if available_cents < self.warning_cents || below(80) {
            ThresholdStatus::Warning
        } else if available_cents >= self.healthy_cents && !below(100) {
            ThresholdStatus::Healthy
        } else {
            ThresholdStatus::Warning
        }
    }
}

/// Which way the balance moves (design §5: ±$1,000 per day).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrendDirection {
    Increasing,
    Stable,
    Decreasing,
}

impl TrendDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            TrendDirection::Increasing => "increasing",
            TrendDirection::Stable => "stable",
            TrendDirection::Decreasing => "decreasing",
        }
    }
}

/// The balance's trend over the last 7 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trend {
    pub direction: TrendDirection,
    /// Average change of the available balance per day, in cents (negative when falling).
    pub average_change_cents: i64,
}

/// How far back the trend looks.
pub const TREND_WINDOW: Duration = Duration::days(7);

/// A change per day beyond which the balance is increasing or decreasing ($1,000, design §5).
pub const TREND_THRESHOLD_CENTS: i64 = 1_000_00;

impl Trend {
    /// From the available balance now and earlier readings `(taken_at, available_cents)`.
    ///
    /// The average change per day is the change since the oldest reading of the last 7 days,
    /// divided by the days between them, counting at least one day: a check that runs every
    /// minute must not turn a $100 dip into "$144,000 a day". With no earlier reading in the
    /// window the trend is stable at 0.
    pub fn over(
        now: DateTime<Utc>,
        available_cents: i64,
        earlier: &[(DateTime<Utc>, i64)],
    ) -> Self {
        let oldest = earlier
            .iter()
            .filter(|(at, _)| *at < now && now - *at <= TREND_WINDOW)
            .min_by_key(|(at, _)| *at);
        let average_change_cents = match oldest {
            None => 0,
            Some((at, then)) => {
                let seconds = (now - *at)
                    .num_seconds()
                    .max(Duration::days(1).num_seconds());
                let change = i128::from(available_cents) - i128::from(*then);
                let per_day = change * 86_400 / i128::from(seconds);
                i64::try_from(per_day).unwrap_or(if per_day < 0 { i64::MIN } else { i64::MAX })
            }
        };
        let direction = if average_change_cents > TREND_THRESHOLD_CENTS {
            TrendDirection::Increasing
        } else if average_change_cents < -TREND_THRESHOLD_CENTS {
            TrendDirection::Decreasing
        } else {
            TrendDirection::Stable
        };
        Self {
            direction,
            average_change_cents,
        }
    }

    /// Days until the available balance is gone at this trend; `None` when it is not falling.
    pub fn days_of_coverage(&self, available_cents: i64) -> Option<i64> {
        (self.average_change_cents < 0).then(|| available_cents.max(0) / -self.average_change_cents)
    }
}

/// What a check concluded (design §5 `balanceStatus`), in cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BalanceStatus {
    pub threshold_status: ThresholdStatus,
    pub available_cents: i64,
    pub pending_cents: i64,
    pub obligations_cents: i64,
    pub required_reserve_cents: i64,
    /// Available minus the reserve; negative when the reserve is not covered (the shortfall).
    pub available_for_payouts_cents: i64,
    /// `None` when the balance is not falling.
    pub days_of_coverage: Option<i64>,
}

impl BalanceStatus {
    pub fn assess(
        thresholds: &Thresholds,
        available_cents: i64,
        pending_cents: i64,
        obligations_cents: i64,
        trend: &Trend,
    ) -> Self {
        let required_reserve_cents = thresholds.required_reserve(obligations_cents);
        Self {
            threshold_status: thresholds.classify(available_cents, required_reserve_cents),
            available_cents,
            pending_cents,
            obligations_cents,
            required_reserve_cents,
            available_for_payouts_cents: available_cents.saturating_sub(required_reserve_cents),
            days_of_coverage: trend.days_of_coverage(available_cents),
        }
    }
}

/// The kinds of alert a balance check raises, one open alert per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertKind {
    /// The balance is under a threshold (warning, critical, depleted).
    Balance,
    /// The balance falls by more than $1,000 a day.
    DepletionRisk,
    /// The scheduled check could not run (Stripe or an owner did not answer) after its
    /// retries. Raised once per slot; never followed like the others.
    CheckFailing,
}

impl AlertKind {
    pub const ALL: [AlertKind; 2] = [AlertKind::Balance, AlertKind::DepletionRisk];

    /// The alert's `type` in `criticalAlerts`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Balance => "platform_balance",
            AlertKind::DepletionRisk => "platform_balance_depletion_risk",
            AlertKind::CheckFailing => "platform_balance_check_failing",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            AlertKind::Balance,
            AlertKind::DepletionRisk,
            AlertKind::CheckFailing,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }

    /// The level this kind is at now: healthy means no alert is needed.
    pub fn level(self, status: &BalanceStatus, trend: &Trend) -> ThresholdStatus {
        match self {
            AlertKind::Balance => status.threshold_status,
            AlertKind::DepletionRisk if trend.direction == TrendDirection::Decreasing => {
                ThresholdStatus::Warning
            }
            AlertKind::DepletionRisk | AlertKind::CheckFailing => ThresholdStatus::Healthy,
        }
    }
}

/// The alert a check opens for `kind` at `level` (design §5's subjects and actions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceAlert {
    pub kind: AlertKind,
    pub level: ThresholdStatus,
    /// "critical" or "warning".
    pub severity: &'static str,
    pub title: String,
    pub message: String,
}

impl BalanceAlert {
    /// The alert of a scheduled check that could not run.
    pub fn check_failing() -> BalanceAlert {
        BalanceAlert {
            kind: AlertKind::CheckFailing,
            level: ThresholdStatus::Critical,
            severity: "critical",
            title: "Platform Balance Check Failing".to_owned(),
            message: "The scheduled balance check could not read Stripe's balance or what is \
                      owed, after its retries. The balance is not being watched: check \
                      Stripe's status and the services, then run the check by hand."
                .to_owned(),
        }
    }

    pub fn new(
        kind: AlertKind,
        level: ThresholdStatus,
        status: &BalanceStatus,
        trend: &Trend,
    ) -> Self {
        let figures = format!(
            "Available balance {}, pending obligations {}, required reserve {} (available for payouts {}).",
            dollars(status.available_cents),
            dollars(status.obligations_cents),
            dollars(status.required_reserve_cents),
            dollars(status.available_for_payouts_cents),
        );
        match (kind, level) {
            (AlertKind::CheckFailing, _) => Self::check_failing(),
            (AlertKind::DepletionRisk, _) => {
                let days = status
                    .days_of_coverage
                    .map_or_else(|| "?".to_owned(), |days| days.to_string());
                BalanceAlert {
                    kind,
                    level,
                    severity: "warning",
                    title: format!("Risk: Platform Balance May Deplete in {days} Days"),
                    message: format!(
                        "The balance falls by {} a day on average over the last 7 days. {figures} \
                         Calculate the amount needed, plan a transfer before the depletion date, \
                         check the balance every 4-8 hours, and consider holding non-urgent payouts.",
                        dollars(-trend.average_change_cents),
                    ),
                }
            }
            (AlertKind::Balance, ThresholdStatus::Warning) => BalanceAlert {
                kind,
                level,
                severity: "warning",
                title: "Warning: Platform Balance Below Recommended Level".to_owned(),
                message: format!(
                    "{figures} Schedule a fund transfer within 48 hours, monitor daily until the \
                     balance is healthy, review the upcoming payout schedule, prepare contingency plans."
                ),
            },
            (AlertKind::Balance, _) => BalanceAlert {
                kind,
                level,
                severity: "critical",
                // Design §5's subject for both; the message says when it is gone.
                title: "Critical: Platform Balance Below Minimum Threshold".to_owned(),
                message: format!(
                    "{}{figures} Add funds to the Stripe balance now (enough to exceed $10,000 plus \
                     pending obligations), review pending payouts and delay non-urgent ones, check \
                     recent refunds and chargebacks for unusual activity, notify the finance team.",
                    if level == ThresholdStatus::Depleted {
                        "The platform balance is depleted. "
                    } else {
                        ""
                    }
                ),
            },
        }
    }
}

/// The alert open for one kind, as the balance service remembers it
/// (`platformBalanceAlerts`, one document per kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAlert {
    pub kind: AlertKind,
    /// `None` when no alert of this kind is open.
    pub open: Option<(ThresholdStatus, String)>,
    /// Bumped by every change; the alerts a change opens are keyed by it, so two checks
    /// that race open the same alert, not two.
    pub version: i64,
}

impl OpenAlert {
    pub fn none(kind: AlertKind) -> Self {
        Self {
            kind,
            open: None,
            version: 0,
        }
    }

    /// The key an alert opened from this state is raised under (idempotent per change).
    pub fn dedupe_key(&self, level: ThresholdStatus) -> String {
        format!(
            "{}:{}:{}",
            self.kind.as_str(),
            self.version + 1,
            level.as_str()
        )
    }
}

/// What one kind of balance alert needs now, given the level of the one that is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertStep {
    /// Nothing changes: no alert and none needed, or the open one says enough.
    Keep,
    /// Open an alert at this level.
    Open(ThresholdStatus),
    /// The situation got worse: open one at the worse level and resolve the open one.
    Escalate {
        from: ThresholdStatus,
        to: ThresholdStatus,
    },
    /// The situation is over: resolve the open alert.
    Resolve(ThresholdStatus),
}

/// One open alert per kind: a worse level escalates it, recovery (healthy) resolves it, and
/// anything else (the same level, or better but not healthy yet) keeps it as it is, so a
/// check that runs every minute raises nothing new until something changes.
pub fn alert_step(open: Option<ThresholdStatus>, now: ThresholdStatus) -> AlertStep {
    match (open, now) {
        (None, ThresholdStatus::Healthy) => AlertStep::Keep,
        (None, level) => AlertStep::Open(level),
        (Some(open), ThresholdStatus::Healthy) => AlertStep::Resolve(open),
        (Some(open), level) if level > open => AlertStep::Escalate {
            from: open,
            to: level,
        },
        (Some(_), _) => AlertStep::Keep,
    }
}

/// A scheduled balance check's slot, claimed by one replica under a lease
/// (`balanceCheckRuns`): however many replicas run the scheduler, one check runs per slot,
/// and a replica that dies mid-run leaves the slot to another once its lease is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledRun {
    /// The time the schedule named.
    pub slot: DateTime<Utc>,
    /// The replica running it.
    pub holder: String,
    pub lease_until: DateTime<Utc>,
    pub done: bool,
    pub version: i64,
}

impl ScheduledRun {
    /// The stored id of a slot's run.
    pub fn id_of(slot: DateTime<Utc>) -> String {
        format!(
            "balance-check:{}",
            slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    }

    /// The run `holder` may start for `slot`: none when the slot is done or another replica's
    /// lease on it still holds.
    pub fn claim(
        existing: Option<&ScheduledRun>,
        slot: DateTime<Utc>,
        holder: &str,
        now: DateTime<Utc>,
        lease: Duration,
    ) -> Option<ScheduledRun> {
        match existing {
            Some(run) if run.done || (run.lease_until > now && run.holder != holder) => None,
            _ => Some(ScheduledRun {
                slot,
                holder: holder.to_owned(),
                lease_until: now + lease,
                done: false,
                version: existing.map_or(0, |run| run.version) + 1,
            }),
        }
    }

    /// The run, done.
    pub fn finished(&self) -> ScheduledRun {
        ScheduledRun {
            done: true,
            version: self.version + 1,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOLLAR: i64 = 100;

    #[test]
    fn the_reserve_is_120_percent_rounded_up() {
        let t = Thresholds::default();
        assert_eq!(t.required_reserve(15_000 * DOLLAR), 18_000 * DOLLAR);
        assert_eq!(
            t.required_reserve(1),
            2,
            "1.2 cents is 2 cents: never less than owed"
        );
        assert_eq!(t.required_reserve(0), 0);
        assert_eq!(t.required_reserve(-5), 0);
        assert_eq!(t.required_reserve(i64::MAX), i64::MAX, "no overflow");
    }

    #[test]
    fn each_threshold_admits_its_amount_and_not_one_cent_less() {
        use ThresholdStatus::*;
        let t = Thresholds::default();
        // No reserve: the dollar thresholds alone.
        assert_eq!(t.classify(0, 0), Depleted);
        assert_eq!(t.classify(-1, 0), Depleted);
        assert_eq!(t.classify(1, 0), Critical);
        assert_eq!(t.classify(1_000 * DOLLAR - 1, 0), Critical);
        assert_eq!(t.classify(1_000 * DOLLAR, 0), Warning);
        assert_eq!(t.classify(5_000 * DOLLAR - 1, 0), Warning);
        assert_eq!(
            t.classify(5_000 * DOLLAR, 0),
            Warning,
            "between warning and healthy"
        );
        assert_eq!(t.classify(10_000 * DOLLAR - 1, 0), Warning);
        assert_eq!(t.classify(10_000 * DOLLAR, 0), Healthy);
        // A reserve of $100,000: 50%, 80% and 100% of it.
        let reserve = 100_000 * DOLLAR;
        assert_eq!(t.classify(50_000 * DOLLAR - 1, reserve), Critical);
        assert_eq!(t.classify(50_000 * DOLLAR, reserve), Warning);
        assert_eq!(t.classify(80_000 * DOLLAR - 1, reserve), Warning);
        assert_eq!(
            t.classify(80_000 * DOLLAR, reserve),
            Warning,
            "80-100% is a warning"
        );
        assert_eq!(t.classify(100_000 * DOLLAR - 1, reserve), Warning);
        assert_eq!(t.classify(100_000 * DOLLAR, reserve), Healthy);
    }

    #[test]
    fn the_spec_example_is_healthy_with_7000_for_payouts() {
        let trend = Trend::over(Utc::now(), 25_000 * DOLLAR, &[]);
        let status = BalanceStatus::assess(
            &Thresholds::default(),
            25_000 * DOLLAR,
            5_000 * DOLLAR,
            15_000 * DOLLAR,
            &trend,
        );
        assert_eq!(status.threshold_status, ThresholdStatus::Healthy);
        assert_eq!(status.required_reserve_cents, 18_000 * DOLLAR);
        assert_eq!(status.available_for_payouts_cents, 7_000 * DOLLAR);
        assert_eq!(status.days_of_coverage, None, "not falling");
    }

    #[test]
    fn the_trend_turns_at_1000_dollars_a_day() {
        let now = Utc::now();
        let days_ago = |days: i64| now - Duration::days(days);
        let at = |change_per_day: i64| {
            Trend::over(
                now,
                50_000 * DOLLAR,
                &[(days_ago(2), 50_000 * DOLLAR - 2 * change_per_day)],
            )
        };
        assert_eq!(at(1_000 * DOLLAR).direction, TrendDirection::Stable);
        assert_eq!(at(1_000 * DOLLAR + 1).direction, TrendDirection::Increasing);
        assert_eq!(at(-1_000 * DOLLAR).direction, TrendDirection::Stable);
        let falling = at(-1_000 * DOLLAR - 1);
        assert_eq!(falling.direction, TrendDirection::Decreasing);
        assert_eq!(falling.average_change_cents, -1_000 * DOLLAR - 1);
        assert_eq!(falling.days_of_coverage(50_000 * DOLLAR), Some(49));
    }

    #[test]
    fn the_trend_looks_back_seven_days_and_never_extrapolates_a_minute() {
        let now = Utc::now();
        // Readings older than 7 days do not count; the oldest within them does.
        let readings = [
            (now - Duration::days(30), 0),
            (now - Duration::days(5), 60_000 * DOLLAR),
            (now - Duration::days(1), 10 * DOLLAR),
        ];
        let trend = Trend::over(now, 50_000 * DOLLAR, &readings);
        assert_eq!(trend.average_change_cents, -2_000 * DOLLAR);
        // A dip a minute ago counts as that much in a day, not 1,440 times it.
        let trend = Trend::over(
            now,
            49_900 * DOLLAR,
            &[(now - Duration::minutes(1), 50_000 * DOLLAR)],
        );
        assert_eq!(trend.average_change_cents, -100 * DOLLAR);
        assert_eq!(trend.direction, TrendDirection::Stable);
        assert_eq!(Trend::over(now, 1, &[]).average_change_cents, 0);
    }

    #[test]
    fn one_open_alert_per_kind_escalates_and_resolves() {
        use ThresholdStatus::*;
        assert_eq!(alert_step(None, Healthy), AlertStep::Keep);
        assert_eq!(alert_step(None, Warning), AlertStep::Open(Warning));
        assert_eq!(
            alert_step(Some(Warning), Warning),
            AlertStep::Keep,
            "no storm"
        );
        assert_eq!(
            alert_step(Some(Warning), Depleted),
            AlertStep::Escalate {
                from: Warning,
                to: Depleted
            }
        );
        assert_eq!(
            alert_step(Some(Critical), Warning),
            AlertStep::Keep,
            "better, not healthy"
        );
        assert_eq!(
            alert_step(Some(Critical), Healthy),
            AlertStep::Resolve(Critical)
        );
    }

    #[test]
    fn one_replica_holds_a_slot_until_done_or_its_lease_ends() {
        let slot = Utc::now();
        let lease = Duration::minutes(10);
        let first = ScheduledRun::claim(None, slot, "a", slot, lease).unwrap();
        assert_eq!(first.version, 1);
        assert_eq!(
            ScheduledRun::claim(Some(&first), slot, "b", slot, lease),
            None
        );
        // The holder dies; once its lease is over another replica takes the slot.
        let later = slot + lease + Duration::seconds(1);
        let taken = ScheduledRun::claim(Some(&first), slot, "b", later, lease).unwrap();
        assert_eq!((taken.holder.as_str(), taken.version), ("b", 2));
        // Done is done, for everyone.
        let done = taken.finished();
        assert_eq!(
            ScheduledRun::claim(Some(&done), slot, "b", later, lease),
            None
        );
        assert_eq!(
            ScheduledRun::claim(Some(&done), slot, "c", later + lease * 2, lease),
            None
        );
    }

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
