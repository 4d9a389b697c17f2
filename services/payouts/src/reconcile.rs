//! Reconciliation, pure: our payouts compared with the transfers Stripe made.
//!
//! Every transfer Stripe made in a window belongs to exactly one payout, in a state that has
//! a transfer, with the same amount, currency and destination, and the same amount reversed;
//! every payout that has a transfer (processing, completed, reversed) has one Stripe knows;
//! no payout stays processing (its bank payout never seen) longer than the stuck threshold.
//! Each difference is a [`Finding`], and a mismatch is a critical alert. The one thing
//! reconciliation changes is what is certain: a transfer Stripe shows for a payout whose
//! transfer request got no answer is adopted, as the lookup or the event would have.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::payout::{Payout, PayoutStatus, SeenTransfer};

/// A transfer as Stripe's list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTransfer {
    pub seen: SeenTransfer,
    pub cents: i64,
    pub currency: String,
    pub destination: String,
    /// The payout it names: `metadata.payout_id`, else its `payout_<id>` transfer group.
    pub payout_id: Option<String>,
    pub created: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A transfer no payout of ours accounts for.
    OrphanTransfer,
    /// A second transfer for a payout that has one: money moved twice.
    DuplicateTransfer,
    /// A payout that should have a transfer Stripe does not know.
    MissingTransfer,
    AmountMismatch,
    DestinationMismatch,
    /// The payout's state does not fit the transfer (e.g. failed, yet Stripe made it).
    StateMismatch,
    ReversalMismatch,
    /// Processing longer than the stuck threshold.
    StuckPayout,
    /// Not a mismatch: the transfer was recorded for a payout whose outcome was unknown.
    Adopted,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::OrphanTransfer => "orphan_transfer",
            FindingKind::DuplicateTransfer => "duplicate_transfer",
            FindingKind::MissingTransfer => "missing_transfer",
            FindingKind::AmountMismatch => "amount_mismatch",
            FindingKind::DestinationMismatch => "destination_mismatch",
            FindingKind::StateMismatch => "state_mismatch",
            FindingKind::ReversalMismatch => "reversal_mismatch",
            FindingKind::StuckPayout => "stuck_payout",
            FindingKind::Adopted => "adopted",
        }
    }

    /// Whether it is a mismatch (raised as a critical alert).
    pub fn is_mismatch(self) -> bool {
        self != FindingKind::Adopted
    }

    /// Whether the mismatch may be news still on its way: a reversal (or the state it
    /// causes) whose event has not been delivered yet. Such a mismatch is alerted when the
    /// next report still shows it; the others at once.
    pub fn may_be_in_flight(self) -> bool {
        matches!(
            self,
            FindingKind::StateMismatch | FindingKind::ReversalMismatch
        )
    }
}

/// One line of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub kind: FindingKind,
    pub payout_id: Option<String>,
    pub transfer_id: Option<String>,
    /// What we recorded, and what Stripe shows.
    pub ours: String,
    pub stripes: String,
    pub detail: String,
}

impl Finding {
    fn new(kind: FindingKind, payout: Option<&str>, transfer: Option<&str>) -> Self {
        Self {
            kind,
            payout_id: payout.map(str::to_owned),
            transfer_id: transfer.map(str::to_owned),
            ours: String::new(),
            stripes: String::new(),
            detail: String::new(),
        }
    }

    fn with(mut self, ours: String, stripes: String, detail: &str) -> Self {
        self.ours = ours;
        self.stripes = stripes;
        self.detail = detail.to_owned();
        self
    }

    /// Whether it is raised as a critical alert now, given the previous report.
    pub fn alerts(&self, previous: Option<&Report>) -> bool {
        self.kind.is_mismatch()
            && (!self.kind.may_be_in_flight()
                || previous.is_some_and(|report| {
                    report
                        .findings
                        .iter()
                        .any(|seen| seen.alert_key() == self.alert_key())
                }))
    }

    /// The dedupe key of its alert: one alert per mismatch and subject, however many runs
    /// see it.
    pub fn alert_key(&self) -> String {
        format!(
            "reconciliation:{}:{}:{}",
            self.kind.as_str(),
            self.payout_id.as_deref().unwrap_or("-"),
            self.transfer_id.as_deref().unwrap_or("-")
        )
    }
}

/// How a report came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportStatus {
    /// The books agree.
    Clean,
    Mismatches,
    /// Stripe did not answer for everything: what was compared is reported, the rest is not.
    Incomplete,
}

impl ReportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportStatus::Clean => "clean",
            ReportStatus::Mismatches => "mismatches",
            ReportStatus::Incomplete => "incomplete",
        }
    }
}

/// One reconciliation run (`reconciliationReports`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub triggered_by: String,
    pub transfers_checked: u32,
    pub payouts_checked: u32,
    pub status: ReportStatus,
    pub findings: Vec<Finding>,
    pub error: Option<String>,
}

impl Report {
    /// The status its findings and error make.
    pub fn conclude(&mut self) {
        self.status = if self.error.is_some() {
            ReportStatus::Incomplete
        } else if self.findings.iter().any(|f| f.kind.is_mismatch()) {
            ReportStatus::Mismatches
        } else {
            ReportStatus::Clean
        };
    }
}

fn money(cents: i64, currency: &str) -> String {
    format!("{cents} {currency}")
}

/// Whether reconciliation may adopt `transfer` for `payout`: the payout sent a transfer
/// request whose answer never came, has no transfer yet, and Stripe's transfer is for its
/// amount and destination. Anything less certain is reported, not adopted.
pub fn adoptable(transfer: &ListedTransfer, payout: &Payout) -> bool {
    payout.stripe_transfer_id.is_none()
        && payout.outcome_unknown
        && payout.status == PayoutStatus::Pending
        && transfer.cents == payout.amount.cents
        && transfer
            .currency
            .eq_ignore_ascii_case(payout.amount.currency.as_str())
        && transfer.destination == payout.destination
}

/// What a transfer Stripe made says about our books. `payout` is the payout it names (or,
/// failing that, the payout recording it); `None`: no payout accounts for it. An adoptable
/// transfer is not a finding here (the caller adopts it).
pub fn check_transfer(transfer: &ListedTransfer, payout: Option<&Payout>) -> Vec<Finding> {
    let id = Some(transfer.seen.id.as_str());
    let Some(payout) = payout else {
        let detail = match &transfer.payout_id {
            Some(named) => format!("it names payout {named}, which does not exist"),
            None => "it carries no payout_id metadata or payout transfer group".to_owned(),
        };
        return vec![
            Finding::new(
                FindingKind::OrphanTransfer,
                transfer.payout_id.as_deref(),
                id,
            )
            .with(
                "no payout".to_owned(),
                format!(
                    "{} to {}",
                    money(transfer.cents, &transfer.currency),
                    transfer.destination
                ),
                &format!("Stripe made a transfer no payout accounts for: {detail}"),
            ),
        ];
    };
    let pid = Some(payout.id.as_str());
    if payout.failed_transfer_ids.contains(&transfer.seen.id) {
        // Stripe reported it failed (legacy transfer.failed): its money came back.
        return Vec::new();
    }
    match payout.stripe_transfer_id.as_deref() {
        Some(current) if current != transfer.seen.id => {
            return vec![Finding::new(FindingKind::DuplicateTransfer, pid, id).with(
                format!("transfer {current}"),
                format!("also transfer {}", transfer.seen.id),
                "a second transfer for a payout that has one: the money may have moved twice",
            )];
        }
        None if adoptable(transfer, payout) => return Vec::new(),
        None => {
            return vec![Finding::new(FindingKind::StateMismatch, pid, id).with(
                format!("{} without a transfer", payout.status.as_str()),
                format!("transfer {} exists", transfer.seen.id),
                "Stripe made a transfer for a payout that does not record one",
            )];
        }
        Some(_) => {}
    }
    let mut findings = Vec::new();
    if transfer.cents != payout.amount.cents
        || !transfer
            .currency
            .eq_ignore_ascii_case(payout.amount.currency.as_str())
    {
        findings.push(Finding::new(FindingKind::AmountMismatch, pid, id).with(
            money(payout.amount.cents, payout.amount.currency.as_str()),
            money(transfer.cents, &transfer.currency),
            "the transfer's amount is not the payout's",
        ));
    }
    if transfer.destination != payout.destination {
        findings.push(
            Finding::new(FindingKind::DestinationMismatch, pid, id).with(
                payout.destination.clone(),
                transfer.destination.clone(),
                "the transfer went to another account than the payout's",
            ),
        );
    }
    let fully_reversed =
        transfer.cents > 0 && transfer.seen.amount_reversed_cents >= transfer.cents;
    let state_fits = match payout.status {
        PayoutStatus::Processing | PayoutStatus::Completed => !fully_reversed,
        PayoutStatus::Reversed => fully_reversed,
        // A bank payout that failed leaves the money with the creator's Stripe account.
        PayoutStatus::Failed => payout.failure_code.is_some() && payout.stripe_payout_id.is_some(),
        _ => false,
    };
    if !state_fits {
        findings.push(Finding::new(FindingKind::StateMismatch, pid, id).with(
            payout.status.as_str().to_owned(),
            if fully_reversed {
                "transfer fully reversed".to_owned()
            } else {
                "transfer standing".to_owned()
            },
            "the payout's state does not fit its transfer",
        ));
    }
    if transfer.seen.amount_reversed_cents != payout.amount_reversed_cents {
        findings.push(Finding::new(FindingKind::ReversalMismatch, pid, id).with(
            format!("{} reversed", payout.amount_reversed_cents),
            format!("{} reversed", transfer.seen.amount_reversed_cents),
            "the amount reversed differs",
        ));
    }
    findings
}

/// When the payout became processing (its transfer known), from its audit log.
pub fn processing_since(payout: &Payout) -> Option<DateTime<Utc>> {
    payout
        .audit_log
        .iter()
        .rev()
        .find(|entry| entry.to_status == PayoutStatus::Processing)
        .map(|entry| entry.timestamp)
}

/// Whether a payout should have a transfer: it is past the transfer.
pub fn has_transfer_state(payout: &Payout) -> bool {
    matches!(
        payout.status,
        PayoutStatus::Processing | PayoutStatus::Completed | PayoutStatus::Reversed
    )
}

/// A payout that should have a transfer and records none, or one Stripe does not know
/// (`stripe_knows`: `Some(false)` when Stripe answered that it has no such transfer).
pub fn check_payout(
    payout: &Payout,
    stripe_knows: Option<bool>,
    now: DateTime<Utc>,
    stuck_after: Duration,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let pid = Some(payout.id.as_str());
    if has_transfer_state(payout) {
        match (&payout.stripe_transfer_id, stripe_knows) {
            (None, _) => findings.push(Finding::new(FindingKind::MissingTransfer, pid, None).with(
                format!("{} without a transfer id", payout.status.as_str()),
                "nothing".to_owned(),
                "the payout records no transfer, yet its state says the money moved",
            )),
            (Some(transfer), Some(false)) => findings.push(
                Finding::new(FindingKind::MissingTransfer, pid, Some(transfer)).with(
                    format!("transfer {transfer}"),
                    "no such transfer".to_owned(),
                    "Stripe does not know the payout's transfer",
                ),
            ),
            _ => {}
        }
    }
    if payout.status == PayoutStatus::Processing {
        let since = processing_since(payout).unwrap_or(payout.requested_at);
        if now - since > stuck_after {
            findings.push(
                Finding::new(
                    FindingKind::StuckPayout,
                    pid,
                    payout.stripe_transfer_id.as_deref(),
                )
                .with(
                    format!("processing since {}", since.to_rfc3339()),
                    "no bank payout seen".to_owned(),
                    &format!(
                        "processing for {} days: its bank payout never arrived",
                        (now - since).num_days()
                    ),
                ),
            );
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use payouts_runtime::Money;

    use super::*;
    use crate::payout::AuditEntry;

    fn at(days: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + Duration::days(days)
    }

    fn payout(status: PayoutStatus, transfer: Option<&str>) -> Payout {
        let mut payout = Payout::requested(
            "p1".to_owned(),
            "alice",
            Money::usd(100_00),
            "key",
            "acct_alice",
            at(0),
            Duration::minutes(1),
        );
        payout.status = status;
        payout.stripe_transfer_id = transfer.map(str::to_owned);
        payout
    }

    fn transfer(id: &str, cents: i64) -> ListedTransfer {
        ListedTransfer {
            seen: SeenTransfer::new(id),
            cents,
            currency: "usd".to_owned(),
            destination: "acct_alice".to_owned(),
            payout_id: Some("p1".to_owned()),
            created: at(0),
        }
    }

    fn kinds(findings: &[Finding]) -> Vec<FindingKind> {
        findings.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn a_transfer_matching_its_payout_is_quiet() {
        for status in [PayoutStatus::Processing, PayoutStatus::Completed] {
            let p = payout(status, Some("tr_1"));
            assert_eq!(check_transfer(&transfer("tr_1", 100_00), Some(&p)), vec![]);
        }
        let mut reversed = payout(PayoutStatus::Reversed, Some("tr_1"));
        reversed.amount_reversed_cents = 100_00;
        let mut t = transfer("tr_1", 100_00);
        t.seen.amount_reversed_cents = 100_00;
        assert_eq!(check_transfer(&t, Some(&reversed)), vec![]);
    }

    #[test]
    fn every_kind_of_difference_is_a_mismatch() {
        let p = payout(PayoutStatus::Processing, Some("tr_1"));
        let orphan = check_transfer(&transfer("tr_x", 5_00), None);
        assert_eq!(kinds(&orphan), [FindingKind::OrphanTransfer]);
        assert!(orphan[0].detail.contains("names payout p1"));
        assert_eq!(
            kinds(&check_transfer(&transfer("tr_2", 100_00), Some(&p))),
            [FindingKind::DuplicateTransfer]
        );
        assert_eq!(
            kinds(&check_transfer(&transfer("tr_1", 99_00), Some(&p))),
            [FindingKind::AmountMismatch]
        );
        let mut elsewhere = transfer("tr_1", 100_00);
        elsewhere.destination = "acct_mallory".to_owned();
        assert_eq!(
            kinds(&check_transfer(&elsewhere, Some(&p))),
            [FindingKind::DestinationMismatch]
        );
        let mut partly = transfer("tr_1", 100_00);
        partly.seen.amount_reversed_cents = 30_00;
        assert_eq!(
            kinds(&check_transfer(&partly, Some(&p))),
            [FindingKind::ReversalMismatch]
        );
        let mut fully = transfer("tr_1", 100_00);
        fully.seen.amount_reversed_cents = 100_00;
        assert_eq!(
            kinds(&check_transfer(&fully, Some(&p))),
            [FindingKind::StateMismatch, FindingKind::ReversalMismatch]
        );
        // A transfer Stripe reported failed (legacy) is accounted for.
        let mut retried = payout(PayoutStatus::Processing, Some("tr_2"));
        retried.failed_transfer_ids.push("tr_1".to_owned());
        assert_eq!(
            check_transfer(&transfer("tr_1", 100_00), Some(&retried)),
            vec![]
        );
        // Failed by us, made by Stripe.
        let failed = payout(PayoutStatus::Failed, None);
        assert_eq!(
            kinds(&check_transfer(&transfer("tr_1", 100_00), Some(&failed))),
            [FindingKind::StateMismatch]
        );
        assert!(orphan.iter().all(|f| f.kind.is_mismatch()));
        assert!(!FindingKind::Adopted.is_mismatch());
    }

    #[test]
    fn only_a_transfer_for_an_unknown_outcome_of_the_same_amount_and_account_is_adopted() {
        let mut unknown = payout(PayoutStatus::Pending, None);
        unknown.outcome_unknown = true;
        let t = transfer("tr_1", 100_00);
        assert!(adoptable(&t, &unknown));
        assert_eq!(check_transfer(&t, Some(&unknown)), vec![]);
        assert!(!adoptable(&transfer("tr_1", 99_00), &unknown));
        let mut known = unknown.clone();
        known.outcome_unknown = false;
        assert!(!adoptable(&t, &known));
        assert_eq!(
            kinds(&check_transfer(&t, Some(&known))),
            [FindingKind::StateMismatch]
        );
    }

    #[test]
    fn a_payout_past_its_transfer_needs_one_stripe_knows_and_a_processing_one_gets_stuck() {
        let stuck_after = Duration::days(7);
        let mut p = payout(PayoutStatus::Processing, Some("tr_1"));
        p.audit_log.push(AuditEntry {
            id: "p1:1".to_owned(),
            payout_id: "p1".to_owned(),
            event_type: "transfer_created".to_owned(),
            from_status: Some(PayoutStatus::Pending),
            to_status: PayoutStatus::Processing,
            reason: String::new(),
            actor: "worker".to_owned(),
            stripe_event_id: None,
            transfer_id: Some("tr_1".to_owned()),
            amount_cents: 100_00,
            timestamp: at(2),
        });
        assert_eq!(check_payout(&p, Some(true), at(9), stuck_after), vec![]);
        assert_eq!(
            kinds(&check_payout(&p, Some(true), at(10), stuck_after)),
            [FindingKind::StuckPayout]
        );
        assert_eq!(
            kinds(&check_payout(&p, Some(false), at(3), stuck_after)),
            [FindingKind::MissingTransfer]
        );
        // Stripe could not be asked: nothing is concluded.
        assert_eq!(check_payout(&p, None, at(3), stuck_after), vec![]);
        let completed = payout(PayoutStatus::Completed, None);
        assert_eq!(
            kinds(&check_payout(&completed, None, at(3), stuck_after)),
            [FindingKind::MissingTransfer]
        );
        let pending = payout(PayoutStatus::Pending, None);
        assert_eq!(check_payout(&pending, None, at(30), stuck_after), vec![]);
    }

    #[test]
    fn a_report_is_clean_only_without_mismatches_and_errors() {
        let mut report = Report {
            id: "r".to_owned(),
            started_at: at(0),
            finished_at: at(0),
            since: at(0),
            until: at(0),
            triggered_by: "test".to_owned(),
            transfers_checked: 0,
            payouts_checked: 0,
            status: ReportStatus::Incomplete,
            findings: vec![Finding::new(FindingKind::Adopted, Some("p"), Some("t"))],
            error: None,
        };
        report.conclude();
        assert_eq!(report.status, ReportStatus::Clean);
        report
            .findings
            .push(Finding::new(FindingKind::StuckPayout, Some("p"), None));
        report.conclude();
        assert_eq!(report.status, ReportStatus::Mismatches);
        report.error = Some("Stripe down".to_owned());
        report.conclude();
        assert_eq!(report.status, ReportStatus::Incomplete);
        assert_eq!(
            report.findings[1].alert_key(),
            "reconciliation:stuck_payout:p:-"
        );
        // A stuck payout is alerted at once; a reversal mismatch (its event may be on its
        // way) when the next report still shows it; an adoption never.
        assert!(report.findings[1].alerts(None));
        assert!(!report.findings[0].alerts(Some(&report)));
        let reversal = Finding::new(FindingKind::ReversalMismatch, Some("p"), Some("t"));
        assert!(!reversal.alerts(None));
        assert!(!reversal.alerts(Some(&report)));
        report.findings.push(reversal.clone());
        assert!(reversal.alerts(Some(&report)));
    }
}
