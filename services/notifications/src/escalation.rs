//! Escalation (design §10 "Escalation Procedures"): which level a signal sets, pure.
//!
//! ```text
//!   signal ──► recorded (escalationSignals, once per signal id)
//!     │
//!     ├─► its own alert, at the signal's own level        (level 1 or 2, or 3 for depletion)
//!     └─► a windowed rule crossed (N in a window, ...) ──► the rule's escalation alert:
//!            opened at the rule's level, or the open one escalated (never a duplicate)
//!
//!   level 1  recorded           warning balance, one payout failure, a limits flag
//!   level 2  admin team         critical balance, N payout failures in a window, every
//!                               dispute, a refund above ESCALATION_REFUND_CENTS
//!   level 3  finance + eng      balance depleted, Stripe unavailable for a window, N unknown
//!   leads (pages, halts)        outcomes in a window, N disputes in a window, fraud flags
//!                               on N creators in a window, one creator's earnings wiped
//! ```
//!
//! Windows are inclusive at their far end: a signal at exactly `now - window` counts.
//! Money-safety: level 3 halts new transfers (the transfer pause, cause escalation); the
//! halt only makes payouts wait, it never fails one.

use chrono::{DateTime, Duration, Utc};

/// Who an alert is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Recorded on the dashboard; nobody is told.
    Recorded = 1,
    /// The admin team (`ALERT_EMAIL_TO`).
    Admins = 2,
    /// Finance and engineering leads (`ESCALATION_EMAIL_TO`), paged through Alertmanager;
    /// new transfers halt.
    Leads = 3,
}

impl Level {
    pub fn number(self) -> u8 {
        self as u8
    }

    pub fn from_number(number: u8) -> Option<Level> {
        match number {
            1 => Some(Level::Recorded),
            2 => Some(Level::Admins),
            3 => Some(Level::Leads),
            _ => None,
        }
    }
}

/// What happened, as services report it (`CreateCriticalAlertRequest.signal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    /// The balance check: available balance below the warning threshold.
    BalanceWarning,
    /// The balance check: below the critical threshold.
    BalanceCritical,
    /// The balance check: at or below the depletion (pause) threshold.
    BalanceDepleted,
    /// Stripe refused a payout's transfer, or it failed (payouts).
    PayoutFailed,
    /// A limits flag on a payout: suspicious frequency or another limit's flag.
    LimitsFlag,
    /// A limits flag that reads as potential fraud, on one creator (`subject`).
    FraudFlag,
    /// A dispute was opened (disputes).
    DisputeCreated,
    /// A charge was refunded; `amount_cents` is the refunded amount (disputes).
    RefundProcessed,
    /// Stripe could not be reached or refused a transfer for the platform (payouts).
    StripeUnavailable,
    /// A transfer's outcome is unknown (payouts).
    OutcomeUnknown,
    /// One creator's earnings were wiped by refunds and disputes (disputes; `subject`).
    EarningsWiped,
}

impl Signal {
    pub const ALL: [Signal; 11] = [
        Signal::BalanceWarning,
        Signal::BalanceCritical,
        Signal::BalanceDepleted,
        Signal::PayoutFailed,
        Signal::LimitsFlag,
        Signal::FraudFlag,
        Signal::DisputeCreated,
        Signal::RefundProcessed,
        Signal::StripeUnavailable,
        Signal::OutcomeUnknown,
        Signal::EarningsWiped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::BalanceWarning => "balance_warning",
            Signal::BalanceCritical => "balance_critical",
            Signal::BalanceDepleted => "balance_depleted",
            Signal::PayoutFailed => "payout_failed",
            Signal::LimitsFlag => "limits_flag",
            Signal::FraudFlag => "fraud_flag",
            Signal::DisputeCreated => "dispute_created",
            Signal::RefundProcessed => "refund_processed",
            Signal::StripeUnavailable => "stripe_unavailable",
            Signal::OutcomeUnknown => "outcome_unknown",
            Signal::EarningsWiped => "earnings_wiped",
        }
    }

    pub fn parse(text: &str) -> Option<Signal> {
        Signal::ALL
            .into_iter()
            .find(|signal| signal.as_str() == text)
    }
}

/// A windowed rule that crossed its threshold: its alert is opened or escalated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// N payout failures in a window: level 2.
    RepeatedPayoutFailures,
    /// N disputes in a window: level 3.
    DisputeBurst,
    /// Fraud flags on N distinct creators in a window: level 3.
    FraudAcrossCreators,
    /// Stripe unavailable for the whole window: level 3.
    UnableToPay,
    /// N unknown outcomes in a window: level 3.
    UnknownOutcomesPiling,
}

impl Rule {
    /// The escalation alert's type (also its runbook anchor in docs/runbooks.md).
    pub fn kind(self) -> &'static str {
        match self {
            Rule::RepeatedPayoutFailures => "escalation_payout_failures",
            Rule::DisputeBurst => "escalation_dispute_burst",
            Rule::FraudAcrossCreators => "escalation_potential_fraud",
            Rule::UnableToPay => "escalation_unable_to_pay",
            Rule::UnknownOutcomesPiling => "escalation_unknown_outcomes",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Rule::RepeatedPayoutFailures => "Repeated Payout Failures",
            Rule::DisputeBurst => "Multiple Disputes in a Short Period",
            Rule::FraudAcrossCreators => "Potential Fraud: Flags on Several Creators",
            Rule::UnableToPay => "Platform Unable to Pay: Stripe Unavailable",
            Rule::UnknownOutcomesPiling => "Platform Unable to Pay: Unknown Outcomes Piling Up",
        }
    }

    pub fn level(self) -> Level {
        match self {
            Rule::RepeatedPayoutFailures => Level::Admins,
            _ => Level::Leads,
        }
    }

    /// The signals whose history the rule reads.
    pub fn signal(self) -> Signal {
        match self {
            Rule::RepeatedPayoutFailures => Signal::PayoutFailed,
            Rule::DisputeBurst => Signal::DisputeCreated,
            Rule::FraudAcrossCreators => Signal::FraudFlag,
            Rule::UnableToPay => Signal::StripeUnavailable,
            Rule::UnknownOutcomesPiling => Signal::OutcomeUnknown,
        }
    }
}

/// "N in a window".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold {
    pub count: u32,
    pub window: Duration,
}

impl Threshold {
    pub fn new(count: u32, window_minutes: i64) -> Self {
        Self {
            count,
            window: Duration::minutes(window_minutes),
        }
    }
}

/// The thresholds (configuration; see docs/configuration.md "Escalation").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EscalationPolicy {
    /// `ESCALATION_PAYOUT_FAILURES`: N failures in a window -> level 2 (default 3/60).
    pub payout_failures: Threshold,
    /// `ESCALATION_DISPUTES`: N disputes in a window -> level 3 (default 3/60).
    pub disputes: Threshold,
    /// `ESCALATION_FRAUD_FLAGS`: fraud flags on N distinct creators -> level 3 (default 3/1440).
    pub fraud_flags: Threshold,
    /// `ESCALATION_REFUND_CENTS`: a refund above this is level 2 (default 100_00, $100.00).
    pub refund_cents: i64,
    /// `ESCALATION_UNKNOWN_OUTCOMES`: N unknown outcomes in a window -> level 3 (default 5/60).
    pub unknown_outcomes: Threshold,
    /// `ESCALATION_STRIPE_UNAVAILABLE_MINUTES`: Stripe failing every transfer this long -> level 3
    /// (default 30).
    pub stripe_unavailable: Duration,
}

impl Default for EscalationPolicy {
    fn default() -> Self {
        Self {
            payout_failures: Threshold::new(3, 60),
            disputes: Threshold::new(3, 60),
            fraud_flags: Threshold::new(3, 24 * 60),
            refund_cents: 100_00,
            unknown_outcomes: Threshold::new(5, 60),
            stripe_unavailable: Duration::minutes(30),
        }
    }
}

/// One stored signal (`escalationSignals`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalRecord {
    /// The signal's own id (the caller's dedupe key): a retried signal counts once.
    pub id: String,
    pub signal: Signal,
    /// Whom it is about (a creator's user id), when it is about one.
    pub subject: Option<String>,
    pub amount_cents: i64,
    pub at: DateTime<Utc>,
}

/// What a signal sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    /// The level of the signal's own alert.
    pub level: Level,
    /// A windowed rule it crossed, with the figure that crossed it.
    pub escalation: Option<(Rule, u32)>,
}

impl EscalationPolicy {
    /// The policy of the settings (`ESCALATION_*`).
    pub fn from_settings(settings: &payouts_runtime::config::EscalationSettings) -> Self {
        let threshold = |window: payouts_runtime::config::WindowCount| {
            Threshold::new(window.count, i64::from(window.minutes))
        };
        Self {
            payout_failures: threshold(settings.payout_failures),
            disputes: threshold(settings.disputes),
            fraud_flags: threshold(settings.fraud_flags),
            refund_cents: settings.refund_cents,
            unknown_outcomes: threshold(settings.unknown_outcomes),
            stripe_unavailable: Duration::minutes(i64::from(settings.stripe_unavailable_minutes)),
        }
    }

    /// The level a signal sets on its own alert (no history needed).
    pub fn level_of(&self, signal: &SignalRecord) -> Level {
        match signal.signal {
            Signal::BalanceWarning
            | Signal::PayoutFailed
            | Signal::LimitsFlag
            | Signal::FraudFlag
            | Signal::StripeUnavailable
            | Signal::OutcomeUnknown => Level::Recorded,
            Signal::RefundProcessed if signal.amount_cents <= self.refund_cents => Level::Recorded,
            // A creator wiped out for a few dollars is the admins' to look at; above the
            // refund threshold it is potential fraud, the leads' (and a halt).
            Signal::EarningsWiped if signal.amount_cents <= self.refund_cents => Level::Admins,
            Signal::BalanceCritical | Signal::DisputeCreated | Signal::RefundProcessed => {
                Level::Admins
            }
            Signal::BalanceDepleted | Signal::EarningsWiped => Level::Leads,
        }
    }

    /// The windowed rule a signal's kind feeds, with its threshold.
    fn rule_for(&self, signal: Signal) -> Option<(Rule, Threshold)> {
        match signal {
            Signal::PayoutFailed => Some((Rule::RepeatedPayoutFailures, self.payout_failures)),
            Signal::DisputeCreated => Some((Rule::DisputeBurst, self.disputes)),
            Signal::FraudFlag => Some((Rule::FraudAcrossCreators, self.fraud_flags)),
            Signal::OutcomeUnknown => Some((Rule::UnknownOutcomesPiling, self.unknown_outcomes)),
            Signal::StripeUnavailable => Some((
                Rule::UnableToPay,
                Threshold {
                    count: 1,
                    window: self.stripe_unavailable,
                },
            )),
            _ => None,
        }
    }

    /// The windowed rule `signal` feeds, if any.
    pub fn rule_of(&self, signal: Signal) -> Option<Rule> {
        self.rule_for(signal).map(|(rule, _)| rule)
    }

    /// How far back the store must look for `signal`'s rule (None: no history needed).
    /// (The Stripe rule looks back twice its window for the first failure of a run.)
    pub fn lookback(&self, signal: Signal) -> Option<Duration> {
        match self.rule_for(signal) {
            Some((Rule::UnableToPay, threshold)) => Some(threshold.window * 2),
            other => other.map(|(_, threshold)| threshold.window),
        }
    }

    /// The signal's level and the rule it crossed, given the stored signals of its kind
    /// (`history`, which may include the signal itself; duplicates by id count once).
    /// `transfers_succeeded_since` is the last time Stripe accepted a transfer (only the
    /// Stripe rule reads it: one accepted transfer means Stripe is not refusing every one).
    pub fn assess(
        &self,
        signal: &SignalRecord,
        history: &[SignalRecord],
        last_transfer_succeeded_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Assessment {
        let level = self.level_of(signal);
        let Some((rule, threshold)) = self.rule_for(signal.signal) else {
            return Assessment {
                level,
                escalation: None,
            };
        };
        let from = now - threshold.window;
        let mut seen = std::collections::BTreeSet::new();
        let in_window: Vec<&SignalRecord> = history
            .iter()
            .chain(std::iter::once(signal))
            .filter(|s| s.signal == signal.signal && s.at >= from && s.at <= now)
            .filter(|s| seen.insert(s.id.clone()))
            .collect();
        let escalation = match rule {
            Rule::UnableToPay => {
                // Unavailable for the whole window: the earliest failure since Stripe last
                // accepted a transfer (this signal is the latest) is at least the window old.
                let earliest = history
                    .iter()
                    .chain(std::iter::once(signal))
                    .filter(|s| s.signal == Signal::StripeUnavailable && s.at <= now)
                    .filter(|s| last_transfer_succeeded_at.is_none_or(|success| s.at > success))
                    .map(|s| s.at)
                    .min();
                match earliest {
                    Some(earliest) if now - earliest >= threshold.window => {
                        let minutes =
                            u32::try_from((now - earliest).num_minutes()).unwrap_or(u32::MAX);
                        Some((rule, minutes))
                    }
                    _ => None,
                }
            }
            Rule::FraudAcrossCreators => {
                let creators: std::collections::BTreeSet<&str> = in_window
                    .iter()
                    .filter_map(|s| s.subject.as_deref())
                    .collect();
                let count = u32::try_from(creators.len()).unwrap_or(u32::MAX);
                (count >= threshold.count).then_some((rule, count))
            }
            _ => {
                let count = u32::try_from(in_window.len()).unwrap_or(u32::MAX);
                (count >= threshold.count).then_some((rule, count))
            }
        };
        Assessment { level, escalation }
    }
}

/// The level of an alert raised without a signal: by its severity, as before escalation
/// (critical alerts went to the admin team, the rest were recorded).
pub fn level_of_severity(severity: crate::alerts::Severity) -> Level {
    match severity {
        crate::alerts::Severity::Critical => Level::Admins,
        _ => Level::Recorded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn record(id: &str, signal: Signal, at: DateTime<Utc>) -> SignalRecord {
        SignalRecord {
            id: id.to_owned(),
            signal,
            subject: None,
            amount_cents: 0,
            at,
        }
    }

    fn about(mut record: SignalRecord, subject: &str) -> SignalRecord {
        record.subject = Some(subject.to_owned());
        record
    }

    /// `count` earlier signals spread inside the window, then one now.
    fn burst(signal: Signal, earlier: u32) -> (SignalRecord, Vec<SignalRecord>) {
        let history = (0..earlier)
            .map(|i| {
                record(
                    &format!("s{i}"),
                    signal,
                    now() - Duration::minutes(i64::from(i) + 1),
                )
            })
            .collect();
        (record("now", signal, now()), history)
    }

    fn policy() -> EscalationPolicy {
        EscalationPolicy::default()
    }

    fn assess(signal: &SignalRecord, history: &[SignalRecord]) -> Assessment {
        policy().assess(signal, history, None, now())
    }

    #[test]
    fn level_one_signals_are_recorded() {
        for signal in [
            Signal::BalanceWarning,
            Signal::PayoutFailed,
            Signal::LimitsFlag,
            Signal::FraudFlag,
        ] {
            let assessment = assess(&record("x", signal, now()), &[]);
            assert_eq!(assessment.level, Level::Recorded, "{signal:?}");
            assert_eq!(assessment.escalation, None, "{signal:?}");
        }
    }

    #[test]
    fn level_two_signals_reach_the_admins() {
        for signal in [Signal::BalanceCritical, Signal::DisputeCreated] {
            assert_eq!(
                assess(&record("x", signal, now()), &[]).level,
                Level::Admins,
                "{signal:?}"
            );
        }
    }

    #[test]
    fn level_three_signals_reach_the_leads_on_their_own() {
        assert_eq!(
            assess(&record("x", Signal::BalanceDepleted, now()), &[]).level,
            Level::Leads
        );
        // Earnings wiped: above the refund threshold (what was taken back), the
        // leads; at it, the admins.
        let wiped = |cents| SignalRecord {
            amount_cents: cents,
            ..record("w", Signal::EarningsWiped, now())
        };
        assert_eq!(assess(&wiped(100_01), &[]).level, Level::Leads, "$100.01");
        assert_eq!(assess(&wiped(100_00), &[]).level, Level::Admins, "$100.00");
    }

    #[test]
    fn a_refund_above_one_hundred_dollars_is_level_two() {
        let refund = |cents| SignalRecord {
            amount_cents: cents,
            ..record("r", Signal::RefundProcessed, now())
        };
        assert_eq!(
            assess(&refund(100_00), &[]).level,
            Level::Recorded,
            "$100.00"
        );
        assert_eq!(assess(&refund(100_01), &[]).level, Level::Admins, "$100.01");
    }

    #[test]
    fn repeated_payout_failures_are_level_two_at_n_in_the_window() {
        let (signal, history) = burst(Signal::PayoutFailed, 1); // N-1 = 2 with the default 3
        assert_eq!(assess(&signal, &history).escalation, None);
        let (signal, history) = burst(Signal::PayoutFailed, 2);
        assert_eq!(
            assess(&signal, &history).escalation,
            Some((Rule::RepeatedPayoutFailures, 3))
        );
        assert_eq!(Rule::RepeatedPayoutFailures.level(), Level::Admins);
    }

    #[test]
    fn disputes_burst_is_level_three_at_n_in_the_window() {
        let (signal, history) = burst(Signal::DisputeCreated, 1);
        let assessment = assess(&signal, &history);
        assert_eq!(assessment.level, Level::Admins, "every dispute is level 2");
        assert_eq!(assessment.escalation, None, "N-1");
        let (signal, history) = burst(Signal::DisputeCreated, 2);
        assert_eq!(
            assess(&signal, &history).escalation,
            Some((Rule::DisputeBurst, 3))
        );
        assert_eq!(Rule::DisputeBurst.level(), Level::Leads);
    }

    #[test]
    fn the_window_is_inclusive_at_its_far_end() {
        let window = policy().disputes.window;
        let signal = record("now", Signal::DisputeCreated, now());
        let inside = [
            record("a", Signal::DisputeCreated, now() - Duration::minutes(1)),
            record("b", Signal::DisputeCreated, now() - window),
        ];
        assert_eq!(
            assess(&signal, &inside).escalation,
            Some((Rule::DisputeBurst, 3)),
            "exactly the window old: inside"
        );
        let outside = [
            record("a", Signal::DisputeCreated, now() - Duration::minutes(1)),
            record(
                "b",
                Signal::DisputeCreated,
                now() - window - Duration::seconds(1),
            ),
        ];
        assert_eq!(
            assess(&signal, &outside).escalation,
            None,
            "one second older: outside"
        );
    }

    #[test]
    fn a_retried_signal_counts_once() {
        let signal = record("d1", Signal::DisputeCreated, now());
        let history = [
            record("d1", Signal::DisputeCreated, now()),
            record("d2", Signal::DisputeCreated, now()),
            record("d2", Signal::DisputeCreated, now()),
        ];
        assert_eq!(
            assess(&signal, &history).escalation,
            None,
            "two distinct ids"
        );
    }

    #[test]
    fn other_signals_do_not_count_towards_a_rule() {
        let signal = record("d", Signal::DisputeCreated, now());
        let history = [
            record("f1", Signal::PayoutFailed, now()),
            record("f2", Signal::PayoutFailed, now()),
        ];
        assert_eq!(assess(&signal, &history).escalation, None);
    }

    #[test]
    fn fraud_flags_count_distinct_creators() {
        let flag = |id: &str, creator: &str| about(record(id, Signal::FraudFlag, now()), creator);
        let signal = flag("f3", "creator_b");
        let same_creator = [flag("f1", "creator_a"), flag("f2", "creator_a")];
        assert_eq!(
            assess(&signal, &same_creator).escalation,
            None,
            "N flags on N-1 creators"
        );
        let three = [flag("f1", "creator_a"), flag("f2", "creator_c")];
        assert_eq!(
            assess(&signal, &three).escalation,
            Some((Rule::FraudAcrossCreators, 3))
        );
        let window = policy().fraud_flags.window;
        let old = [
            flag("f1", "creator_a"),
            about(
                record(
                    "f2",
                    Signal::FraudFlag,
                    now() - window - Duration::seconds(1),
                ),
                "creator_c",
            ),
        ];
        assert_eq!(assess(&signal, &old).escalation, None, "just outside");
    }

    #[test]
    fn unknown_outcomes_piling_up_are_level_three() {
        let (signal, history) = burst(Signal::OutcomeUnknown, 3);
        assert_eq!(assess(&signal, &history).escalation, None, "N-1 = 4");
        let (signal, history) = burst(Signal::OutcomeUnknown, 4);
        assert_eq!(
            assess(&signal, &history).escalation,
            Some((Rule::UnknownOutcomesPiling, 5))
        );
    }

    #[test]
    fn stripe_unavailable_for_the_whole_window_is_level_three() {
        let window = policy().stripe_unavailable;
        let signal = record("now", Signal::StripeUnavailable, now());
        let just_short = [record(
            "first",
            Signal::StripeUnavailable,
            now() - window + Duration::seconds(1),
        )];
        assert_eq!(assess(&signal, &just_short).escalation, None);
        let whole = [record("first", Signal::StripeUnavailable, now() - window)];
        assert_eq!(
            assess(&signal, &whole).escalation,
            Some((Rule::UnableToPay, 30))
        );
        // A transfer Stripe accepted meanwhile: it is not refusing every transfer.
        let accepted = now() - Duration::minutes(5);
        assert_eq!(
            policy()
                .assess(&signal, &whole, Some(accepted), now())
                .escalation,
            None
        );
        // Accepted before the first failure: still unavailable for the whole window.
        let before = now() - window - Duration::seconds(1);
        assert_eq!(
            policy()
                .assess(&signal, &whole, Some(before), now())
                .escalation,
            Some((Rule::UnableToPay, 30))
        );
    }

    #[test]
    fn the_default_settings_are_the_default_policy() {
        let settings = payouts_runtime::config::EscalationSettings::default();
        assert_eq!(EscalationPolicy::from_settings(&settings), policy());
    }

    #[test]
    fn names_round_trip() {
        for signal in Signal::ALL {
            assert_eq!(Signal::parse(signal.as_str()), Some(signal));
        }
        for level in [Level::Recorded, Level::Admins, Level::Leads] {
            assert_eq!(Level::from_number(level.number()), Some(level));
        }
        assert_eq!(Level::from_number(0), None);
        assert_eq!(Level::from_number(4), None);
    }
}
