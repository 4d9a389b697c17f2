//! The reconciliation run: Stripe's transfers of a window and our payouts compared
//! ([`crate::reconcile`]), every mismatch raised as a critical alert (one per mismatch and
//! subject, however many runs see it), the report kept in `reconciliationReports`. Daily by
//! default (`RECONCILIATION_INTERVAL`, one replica at a time under a lease), and on an
//! admin's request.
//!
//! It never moves money. It adopts only what is certain: a transfer Stripe shows for a
//! payout whose transfer request got no answer (the same adoption a lookup or an event
//! makes). A Stripe that does not answer leaves the report `incomplete`: nothing is
//! concluded from an answer that did not come.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use payouts_runtime::jobs::PeriodicJob;
use payouts_runtime::{ServiceError, Settings};

use crate::flow::PayoutFlow;
use crate::payout::{Cause, OwedAlert, Payout, PayoutStatus, StripeFailure, TransferNews};
use crate::reconcile::{
    Finding, FindingKind, ListedTransfer, Report, ReportStatus, check_payout, check_transfer,
    has_transfer_state,
};
use crate::store::ReportRepository;

/// How far back an admin may reconcile.
pub const MAX_WINDOW_DAYS: i64 = 90;
/// Payouts read per page.
const PAGE: usize = 500;

pub struct Reconciler {
    pub flow: Arc<PayoutFlow>,
    pub reports: Arc<dyn ReportRepository>,
    /// The window of a scheduled run.
    pub window: Duration,
    /// A payout processing longer than this is stuck.
    pub stuck_after: Duration,
}

impl Reconciler {
    pub fn new(
        flow: Arc<PayoutFlow>,
        reports: Arc<dyn ReportRepository>,
        settings: &Settings,
    ) -> Self {
        Self {
            flow,
            reports,
            window: Duration::days(i64::from(settings.reconciliation_window_days)),
            stuck_after: Duration::days(i64::from(settings.payout_stuck_alert_days)),
        }
    }

    /// Reconciles the transfers created from `since` until now, stores the report and
    /// raises the alerts of its mismatches.
    pub async fn run(
        &self,
        since: Option<DateTime<Utc>>,
        triggered_by: &str,
    ) -> Result<Report, ServiceError> {
        let Some(stripe) = self.flow.stripe.clone() else {
            return Err(ServiceError::failed_precondition(
                "reconciliation compares with Stripe: set STRIPE_SECRET_KEY",
            ));
        };
        let started_at = self.flow.clock.now();
        let since = since.unwrap_or(started_at - self.window);
        let mut report = Report {
            id: self.flow.ids.next("recon"),
            started_at,
            finished_at: started_at,
            since,
            until: started_at,
            triggered_by: triggered_by.to_owned(),
            transfers_checked: 0,
            payouts_checked: 0,
            status: ReportStatus::Incomplete,
            findings: Vec::new(),
            error: None,
        };
        let mut seen_transfers = HashSet::new();
        match stripe.list_transfers(since, started_at).await {
            Ok(transfers) => {
                for transfer in &transfers {
                    report.transfers_checked += 1;
                    seen_transfers.insert(transfer.seen.id.clone());
                    self.check_transfer(transfer, &mut report).await?;
                }
            }
            Err(failure) => {
                report.error = Some(format!(
                    "Stripe did not list the transfers: {}",
                    failure.describe()
                ));
            }
        }
        if report.error.is_none() {
            self.check_payouts(since, &seen_transfers, &mut report)
                .await?;
        }
        report.finished_at = self.flow.clock.now();
        report.conclude();
        let previous = self.reports.latest(1).await?.into_iter().next();
        self.reports.insert(&report).await?;
        self.raise_alerts(&report, previous.as_ref()).await;
        metrics::counter!("payouts_reconciliation_runs_total", "status" => report.status.as_str())
            .increment(1);
        tracing::info!(
            report = %report.id, status = report.status.as_str(),
            transfers = report.transfers_checked, payouts = report.payouts_checked,
            findings = report.findings.len(), "reconciliation done"
        );
        Ok(report)
    }

    /// The payout a transfer names (metadata, transfer group), or the one recording it.
    async fn payout_of(&self, transfer: &ListedTransfer) -> Result<Option<Payout>, ServiceError> {
        if let Some(payout_id) = &transfer.payout_id
            && let Some(payout) = self.flow.payouts.get(payout_id).await?
        {
            return Ok(Some(payout));
        }
        self.flow.payouts.find_by_transfer(&transfer.seen.id).await
    }

    async fn check_transfer(
        &self,
        transfer: &ListedTransfer,
        report: &mut Report,
    ) -> Result<(), ServiceError> {
        let payout = self.payout_of(transfer).await?;
        if let Some(payout) = &payout
            && crate::reconcile::adoptable(transfer, payout)
        {
            let now = self.flow.clock.now();
            let retry_base = self.flow.retry_base;
            let adopted = self
                .flow
                .apply(payout.clone(), |p| {
                    if !crate::reconcile::adoptable(transfer, p) {
                        return None;
                    }
                    p.transfer_seen(
                        &transfer.seen,
                        &TransferNews::Exists,
                        retry_base,
                        Cause::new("reconciliation", now),
                    )
                })
                .await?;
            if let Some(adopted) = adopted {
                report.findings.push(Finding {
                    kind: FindingKind::Adopted,
                    payout_id: Some(adopted.id.clone()),
                    transfer_id: Some(transfer.seen.id.clone()),
                    ours: "outcome unknown".to_owned(),
                    stripes: format!("transfer {} exists", transfer.seen.id),
                    detail: format!("payout is now {}", adopted.status.as_str()),
                });
                return Ok(());
            }
            // Changed under us: compare what is stored now.
            let fresh = self.flow.payouts.get(&payout.id).await?;
            report
                .findings
                .extend(check_transfer(transfer, fresh.as_ref()));
            return Ok(());
        }
        report
            .findings
            .extend(check_transfer(transfer, payout.as_ref()));
        Ok(())
    }

    /// Every payout that should have a transfer (processing ones, and completed or reversed
    /// ones changed in the window) has one Stripe knows; none is stuck.
    async fn check_payouts(
        &self,
        since: DateTime<Utc>,
        listed: &HashSet<String>,
        report: &mut Report,
    ) -> Result<(), ServiceError> {
        let now = report.started_at;
        let stripe = self.flow.stripe.clone();
        for status in [
            PayoutStatus::Processing,
            PayoutStatus::Completed,
            PayoutStatus::Reversed,
        ] {
            let mut after: Option<String> = None;
            loop {
                let page = self
                    .flow
                    .payouts
                    .in_status(status, after.as_deref(), PAGE)
                    .await?;
                let Some(last) = page.last() else { break };
                after = Some(last.id.clone());
                for payout in &page {
                    if status != PayoutStatus::Processing && payout.updated_at < since {
                        continue;
                    }
                    if !has_transfer_state(payout) {
                        continue;
                    }
                    report.payouts_checked += 1;
                    let stripe_knows = match (&payout.stripe_transfer_id, &stripe) {
                        (Some(id), _) if listed.contains(id) => Some(true),
                        (Some(id), Some(stripe)) => match stripe.retrieve_transfer(id).await {
                            Ok(_) => Some(true),
                            Err(StripeFailure::Declined { code, .. })
                                if code == "resource_missing" =>
                            {
                                Some(false)
                            }
                            Err(failure) => {
                                report.error = Some(format!(
                                    "Stripe did not show transfer {id}: {}",
                                    failure.describe()
                                ));
                                None
                            }
                        },
                        _ => None,
                    };
                    report.findings.extend(check_payout(
                        payout,
                        stripe_knows,
                        now,
                        self.stuck_after,
                    ));
                }
                if page.len() < PAGE {
                    break;
                }
            }
        }
        Ok(())
    }

    /// One critical alert per mismatch and subject (deduplicated by key across runs); a
    /// mismatch whose news may still be on its way (a reversal) only when the previous
    /// report showed it too. Best effort: the report is stored whatever happens to its
    /// alerts, and the next run raises what is still missing.
    async fn raise_alerts(&self, report: &Report, previous: Option<&Report>) {
        for finding in report.findings.iter().filter(|f| f.alerts(previous)) {
            let alert = OwedAlert {
                key: finding.alert_key(),
                kind: "reconciliation_mismatch".to_owned(),
                title: format!(
                    "Reconciliation: {}",
                    finding.kind.as_str().replace('_', " ")
                ),
                description: format!(
                    "{} (payout {}, transfer {}). Ours: {}. Stripe: {}. Report {}.",
                    finding.detail,
                    finding.payout_id.as_deref().unwrap_or("none"),
                    finding.transfer_id.as_deref().unwrap_or("none"),
                    finding.ours,
                    finding.stripes,
                    report.id
                ),
            };
            let data = serde_json::json!({
                "reportId": report.id,
                "kind": finding.kind.as_str(),
                "payoutId": finding.payout_id,
                "transferId": finding.transfer_id,
            });
            if let Err(error) = self.flow.alerts.raise(&alert, data.to_string()).await {
                tracing::warn!(%error, key = %alert.key, "reconciliation alert not raised; the next run raises it");
            }
        }
    }
}

#[async_trait]
impl PeriodicJob for Reconciler {
    async fn run_once(
        &self,
        _cursor: Option<DateTime<Utc>>,
    ) -> Result<Option<DateTime<Utc>>, ServiceError> {
        let report = self.run(None, "schedule").await?;
        match report.status {
            // Stripe did not answer: the run is tried again at the next tick.
            ReportStatus::Incomplete => Err(ServiceError::unavailable(
                "reconciliation incomplete",
                anyhow::anyhow!("{}", report.error.unwrap_or_default()),
            )),
            _ => Ok(Some(report.until)),
        }
    }
}

/// The connected accounts with payouts in flight (processing), each once, sorted.
pub async fn accounts_in_flight(flow: &PayoutFlow) -> Result<Vec<String>, ServiceError> {
    let mut accounts = std::collections::BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let page = flow
            .payouts
            .in_status(PayoutStatus::Processing, after.as_deref(), PAGE)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        for payout in &page {
            accounts.insert(payout.destination.clone());
        }
        if page.len() < PAGE {
            break;
        }
    }
    Ok(accounts.into_iter().collect())
}
