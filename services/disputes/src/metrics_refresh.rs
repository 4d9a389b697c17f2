//! Dispute gauges (design §10): disputes by state, the amount they freeze, the win ratio.
//! Recomputed from the stored cases every minute, so every replica reports the same
//! figures (a gauge moved by each replica's own events would only count that replica).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use payouts_runtime::ServiceError;
use payouts_runtime::shutdown::Shutdown;

use crate::charges::Outcome;
use crate::earnings::Ledger;
use crate::store::{ChargeCaseRepository, MAX_ALLOCATIONS_PER_CHARGE};

const EVERY: Duration = Duration::from_secs(60);

/// Figures of every dispute case.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DisputeFigures {
    pub by_state: BTreeMap<String, u64>,
    pub frozen_cents: i64,
    pub won: u64,
    pub lost: u64,
}

/// Reads every disputed case (they are few: disputes are rare by nature).
pub async fn figures(
    ledger: &Ledger,
    cases: &dyn ChargeCaseRepository,
) -> Result<DisputeFigures, ServiceError> {
    let mut figures = DisputeFigures::default();
    let mut after = None;
    loop {
        let page = cases.list_disputed(after.clone(), 200).await?;
        let done = page.len() < 200;
        for case in page {
            after = Some((case.created_at, case.charge_id.clone()));
            for dispute in case.disputes.values() {
                *figures
                    .by_state
                    .entry(dispute.state().to_owned())
                    .or_default() += 1;
                match dispute.outcome() {
                    Outcome::Lost => figures.lost += 1,
                    Outcome::Released if dispute.status == "won" => figures.won += 1,
                    _ => {}
                }
            }
            if case
                .outcome()
                .is_some_and(|(outcome, _)| matches!(outcome, Outcome::Open | Outcome::Unresolved))
            {
                figures.frozen_cents += ledger
                    .allocations
                    .list_by_charge(&case.charge_id, MAX_ALLOCATIONS_PER_CHARGE)
                    .await?
                    .iter()
                    .map(|a| a.frozen_cents)
                    .sum::<i64>();
            }
        }
        if done {
            return Ok(figures);
        }
    }
}

/// Sets the gauges from fresh figures.
pub fn publish(figures: &DisputeFigures) {
    for (state, count) in &figures.by_state {
        metrics::gauge!("payouts_disputes", "state" => state.clone()).set(*count as f64);
    }
    metrics::gauge!("payouts_disputes_frozen_cents").set(figures.frozen_cents as f64);
    let decided = figures.won + figures.lost;
    if decided > 0 {
        metrics::gauge!("payouts_disputes_win_ratio").set(figures.won as f64 / decided as f64);
    }
}

/// Refreshes the gauges every minute until shutdown.
pub async fn run(ledger: Arc<Ledger>, cases: Arc<dyn ChargeCaseRepository>, shutdown: Shutdown) {
    let stop = shutdown.requested();
    tokio::pin!(stop);
    loop {
        match figures(&ledger, cases.as_ref()).await {
            Ok(figures) => publish(&figures),
            Err(error) => tracing::warn!(error = %error, "dispute figures not refreshed"),
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}
