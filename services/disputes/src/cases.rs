//! Applying refund and dispute events: merge the event into its charge's case, read Stripe's
//! refund list of the charge when the case is in doubt (see [`crate::charges`]), settle the
//! charge's allocations to what the case says (through the creators' earnings books), then
//! deliver the alerts and notifications the case owes.
//!
//! A refund whose charge we have not seen (refund events carry the charge's id and the
//! refund's amount, not the charge's amount) cannot be shared out: the charge is read from
//! Stripe and its amount recorded on the case first. Until it is known (no Stripe key, or
//! Stripe did not answer) the event fails Unavailable and waits in the inbox; nothing is
//! given back meanwhile (no share was ever taken without the amount), and a dispute's freeze
//! still applies.
//!
//! A refund list that cannot be read leaves the case's claims in place: the allocations are
//! settled at the reduction they make (never less than Stripe said), the notices wait, and the
//! event fails with the lookup's error, so the inbox retries it and the retry reads the list
//! again.
//!
//! Each step is idempotent and the case remembers what is left to do, so a crash anywhere
//! is finished by the webhook inbox's retry of the same event: the merge is then a no-op,
//! the settlement finds what is not settled yet, and the notices not yet delivered go out
//! (their keys make a repeat a no-op at the notifications service).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use payouts_runtime::{Currency, ErrorKind, ServiceError};
use serde_json::{Value, json};

use crate::charges::{self, ChargeCase, ChargeNews, Notice, NoticeKind, Outcome};
use crate::domain::{Allocation, Totals};
use crate::earnings::Ledger;
use crate::ports::{Message, NoticesPort, StripeRefunds};
use crate::store::{ChargeCaseRepository, MAX_ALLOCATIONS_PER_CHARGE};

/// Compare-and-set rounds before giving up (the inbox retries the event).
const MAX_ROUNDS: usize = 32;

fn lost_rounds() -> ServiceError {
    crate::earnings::lost_rounds("this charge")
}

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub applied: bool,
    pub detail: String,
}

/// Refund and dispute cases.
pub struct Cases {
    pub ledger: Arc<Ledger>,
    pub cases: Arc<dyn ChargeCaseRepository>,
    pub notices: Arc<dyn NoticesPort>,
    /// Stripe's refund lists and charges; None without a Stripe key (a case in doubt then
    /// keeps its claims: reduced by the highest `amount_refunded` its events said; a refund
    /// whose charge's amount no event told waits, Unavailable).
    pub refunds: Option<Arc<dyn StripeRefunds>>,
}

impl Cases {
    /// Applies one Stripe event (`object`: its `data.object`).
    pub async fn handle(
        &self,
        event_id: &str,
        event_type: &str,
        created: DateTime<Utc>,
        object: &Value,
    ) -> Result<Applied, ServiceError> {
        let news = charges::parse(event_type, object)?;
        let charge_id = news.charge_id().to_owned();
        let merged = self.merge(event_id, &news, created).await?;
        if let Err(error) = self.know_amount(&charge_id).await {
            // No share of the refund can be taken yet (and none was); a dispute's freeze
            // applies. The event is retried until the charge is read.
            self.settle(&charge_id, event_id).await?;
            return Err(error);
        }
        if let Err(error) = self.check_refunds(&charge_id, event_id, created).await {
            // The claims stand: the allocations go to the reduction they make, and the
            // event is retried until Stripe answers.
            self.settle(&charge_id, event_id).await?;
            return Err(error);
        }
        let changed = self.settle(&charge_id, event_id).await?;
        self.deliver(&charge_id).await?;
        let detail = match merged {
            Some(_) => {
                format!("{event_type} for charge {charge_id}: {changed} allocation(s) changed")
            }
            None if changed > 0 => format!(
                "{event_type} {event_id} was merged before; now {changed} allocation(s) of charge {charge_id} changed"
            ),
            None => format!("{event_type} {event_id} was applied before"),
        };
        Ok(Applied {
            applied: true,
            detail,
        })
    }

    /// Records the charge's amount on its case, read from Stripe, when the case needs it (a
    /// refund counts and no event told the amount). Unavailable without a Stripe key; the
    /// lookup's error when Stripe does not answer: the refund waits, never "done" unapplied.
    async fn know_amount(&self, charge_id: &str) -> Result<(), ServiceError> {
        let Some(case) = self.cases.get(charge_id).await? else {
            return Ok(());
        };
        if !case.needs_amount() {
            return Ok(());
        }
        let Some(stripe) = &self.refunds else {
            tracing::warn!(
                charge_id,
                "a refund of a charge whose amount is unknown and no Stripe key to read it: the refund waits"
            );
            return Err(ServiceError::unavailable(
                format!(
                    "charge {charge_id} is refunded but its amount is unknown; the refund waits until it can be read from Stripe"
                ),
                anyhow::anyhow!("STRIPE_SECRET_KEY is not set"),
            ));
        };
        let charge = stripe.charge(charge_id).await?;
        self.update_case(charge_id, |case, now| case.with_amount(&charge, now))
            .await
    }

    /// Replaces the charge's case with `change` of it (compare-and-set, read again on a
    /// conflict) until it is written or `change` has nothing to do (None).
    async fn update_case(
        &self,
        charge_id: &str,
        change: impl Fn(&ChargeCase, DateTime<Utc>) -> Option<ChargeCase>,
    ) -> Result<(), ServiceError> {
        for _ in 0..MAX_ROUNDS {
            let Some(case) = self.cases.get(charge_id).await? else {
                return Ok(());
            };
            let Some(next) = change(&case, self.ledger.clock.now()) else {
                return Ok(());
            };
            match self.cases.put(&next, case.version).await {
                Ok(()) => return Ok(()),
                Err(error) if error.kind() == ErrorKind::Conflict => continue,
                Err(error) => return Err(error),
            }
        }
        Err(lost_rounds())
    }

    /// Settles the case's claims with Stripe's refund list of the charge, if it has any.
    async fn check_refunds(
        &self,
        charge_id: &str,
        event_id: &str,
        at: DateTime<Utc>,
    ) -> Result<(), ServiceError> {
        let Some(case) = self.cases.get(charge_id).await? else {
            return Ok(());
        };
        if !case.in_doubt() {
            return Ok(());
        }
        let Some(stripe) = &self.refunds else {
            tracing::warn!(
                charge_id,
                "refunds in doubt and no Stripe key to list them: the charge stays reduced by the highest amount_refunded seen"
            );
            return Ok(());
        };
        // Claims made before the list is read are the ones it settles.
        let settled: Vec<String> = case.claims.keys().cloned().collect();
        let listed = stripe.refunds_of(charge_id).await?;
        metrics::counter!("payouts_refund_lookups_total").increment(1);
        self.update_case(charge_id, |case, now| {
            case.with_listing(&listed, &settled, event_id, at, now)
        })
        .await
    }

    /// Records a credit (idempotent on its id: the stored one and whether it was new).
    ///
    /// A charge already refunded or disputed: the credit is written as its case has it
    /// (reduced, frozen or zeroed, the charge's refund and dispute marks in the same book
    /// write), so no reader ever sees it payable between two writes. A case merged after it
    /// was read is met by the settlement that follows (as every allocation of the charge is).
    /// A refund of a charge whose amount is unknown is shared out only once the charge is
    /// read: until then the credit is not recorded (Unavailable, the caller retries), as it
    /// would be written payable in full.
    pub async fn record(
        &self,
        allocation: &Allocation,
    ) -> Result<(Allocation, bool), ServiceError> {
        let (credit, marks) = match self.cases.get(&allocation.charge_id).await? {
            Some(case) => {
                let case = if case.needs_amount() {
                    self.know_amount(&allocation.charge_id).await?;
                    self.cases.get(&allocation.charge_id).await?.unwrap_or(case)
                } else {
                    case
                };
                let others = self.allocations_of(&allocation.charge_id).await?;
                let now = self.ledger.clock.now();
                (
                    charges::credit_under(&case, &others, allocation, now),
                    case.marks(),
                )
            }
            None => (allocation.clone(), Vec::new()),
        };
        let (mut allocation, created) = self.ledger.record_with_marks(&credit, &marks).await?;
        if self.settle(&allocation.charge_id, "record").await? > 0
            && let Some(settled) = self.ledger.allocations.get(&allocation.id).await?
        {
            allocation = settled;
        }
        Ok((allocation, created))
    }

    /// Merges the event into its case; the case as merged, None when it was merged before.
    async fn merge(
        &self,
        event_id: &str,
        news: &ChargeNews,
        at: DateTime<Utc>,
    ) -> Result<Option<ChargeCase>, ServiceError> {
        let now = self.ledger.clock.now();
        for _ in 0..MAX_ROUNDS {
            let stored = self.cases.get(news.charge_id()).await?;
            let case = stored.unwrap_or_else(|| ChargeCase::new(news.charge_id(), now));
            let Some(merged) = case.merge(event_id, news, at, now) else {
                return Ok(None);
            };
            match self.cases.put(&merged, case.version).await {
                Ok(()) => {
                    record_metrics(news, &case, &merged);
                    return Ok(Some(merged));
                }
                Err(error) if error.kind() == ErrorKind::Conflict => continue,
                Err(error) => return Err(error),
            }
        }
        Err(lost_rounds())
    }

    /// Brings the charge's allocations to what its case says; how many changed. `cause`
    /// names the event (or the late credit) in the audit entries.
    pub async fn settle(&self, charge_id: &str, cause: &str) -> Result<usize, ServiceError> {
        let mut changed = 0;
        'rounds: for _ in 0..MAX_ROUNDS {
            let Some(case) = self.cases.get(charge_id).await? else {
                return Ok(changed);
            };
            let allocations = self.allocations_of(charge_id).await?;
            let now = self.ledger.clock.now();
            let mut by_user: BTreeMap<&str, Vec<(Allocation, Allocation)>> = allocations
                .iter()
                .map(|a| (a.user_id.as_str(), Vec::new()))
                .collect();
            for (before, after) in charges::settle(&case, &allocations, cause, now) {
                if let Some(changes) = by_user.get_mut(before.user_id.as_str()) {
                    changes.push((before, after));
                }
            }
            let marks = case.marks();
            for (user_id, changes) in &by_user {
                match self.ledger.change(user_id, changes, &marks).await {
                    Ok(()) => changed += changes.len(),
                    Err(error) if error.kind() == ErrorKind::Conflict => continue 'rounds,
                    Err(error) => return Err(error),
                }
            }
            return Ok(changed);
        }
        Err(lost_rounds())
    }

    async fn allocations_of(&self, charge_id: &str) -> Result<Vec<Allocation>, ServiceError> {
        let allocations = self
            .ledger
            .allocations
            .list_by_charge(charge_id, MAX_ALLOCATIONS_PER_CHARGE + 1)
            .await?;
        if allocations.len() > MAX_ALLOCATIONS_PER_CHARGE {
            return Err(ServiceError::failed_precondition(format!(
                "charge {charge_id} funds more than {MAX_ALLOCATIONS_PER_CHARGE} allocations"
            )));
        }
        Ok(allocations)
    }

    /// Delivers what the case owes, oldest first, removing each once delivered.
    async fn deliver(&self, charge_id: &str) -> Result<(), ServiceError> {
        let Some(case) = self.cases.get(charge_id).await? else {
            return Ok(());
        };
        if case.notices.is_empty() {
            return Ok(());
        }
        let allocations = self.allocations_of(charge_id).await?;
        for notice in &case.notices {
            for (user_id, message) in messages(&case, notice, &allocations) {
                match user_id {
                    None => self.notices.alert(&message).await?,
                    Some(user_id) => self.notices.notify_user(&user_id, &message).await?,
                }
            }
            if notice.kind != NoticeKind::DisputeClosed
                || case.outcome().is_some_and(|(o, _)| o == Outcome::Lost)
            {
                self.alert_wiped_earnings(&allocations, notice).await?;
            }
            // Forgotten only once everything it owes went out: a crash before sends it
            // again under the same keys (no duplicates).
            self.forget(charge_id, notice).await?;
        }
        Ok(())
    }

    /// An escalation signal (design §10, potential fraud): a creator this charge funded
    /// whose earnings refunds and disputes have wiped out ([`wiped`]). Keyed by the creator,
    /// currency and number of allocations, so the same wipe alerts once however many events
    /// find it, and a creator who earns again and is wiped again alerts again.
    async fn alert_wiped_earnings(
        &self,
        allocations: &[Allocation],
        notice: &Notice,
    ) -> Result<(), ServiceError> {
        let users: std::collections::BTreeSet<&str> =
            allocations.iter().map(|a| a.user_id.as_str()).collect();
        for user_id in users {
            let book = self.ledger.books.get(user_id).await?;
            // Wiped is about the creator: nothing payable or frozen in any currency.
            if book
                .totals
                .values()
                .any(|totals| totals.active > 0 || totals.frozen > 0)
            {
                continue;
            }
            for (currency, totals) in &book.totals {
                if let Some(message) = wiped(user_id, currency, totals, notice) {
                    self.notices.alert(&message).await?;
                }
            }
        }
        Ok(())
    }

    async fn forget(&self, charge_id: &str, notice: &Notice) -> Result<(), ServiceError> {
        self.update_case(charge_id, |case, now| {
            case.notices
                .contains(notice)
                .then(|| case.without_notice(notice, now))
        })
        .await
    }
}

/// Refunds (how many changed a charge's refunded amount, and by how much in all, failed
/// refunds giving back) and dispute events by kind (design §10); the gauges of disputes by
/// state, frozen money and the win ratio are in [`crate::metrics_refresh`].
fn record_metrics(news: &ChargeNews, before: &ChargeCase, after: &ChargeCase) {
    match news {
        ChargeNews::Refunded { .. } | ChargeNews::Refund(_) => {
            let change = after.refunded_cents() - before.refunded_cents();
            if change > 0 {
                metrics::counter!("payouts_refunds_total").increment(1);
                metrics::counter!("payouts_refunded_cents_total").increment(change.unsigned_abs());
            } else if change < 0 {
                metrics::counter!("payouts_refunds_failed_total").increment(1);
                metrics::counter!("payouts_refund_failed_cents_total")
                    .increment(change.unsigned_abs());
            }
        }
        ChargeNews::Dispute(dispute) => {
            let kind = match dispute.kind {
                charges::DisputeEvent::Created => "created",
                charges::DisputeEvent::Updated => "updated",
                charges::DisputeEvent::Closed => "closed",
                charges::DisputeEvent::FundsWithdrawn => "funds_withdrawn",
                charges::DisputeEvent::FundsReinstated => "funds_reinstated",
            };
            metrics::counter!("payouts_dispute_events_total", "event" => kind).increment(1);
        }
    }
}

/// One creator's part of a charge.
#[derive(Default)]
struct Share {
    allocations: i64,
    amount: i64,
    frozen: i64,
    refunded: i64,
}

fn dollars(cents: i64) -> String {
    payouts_runtime::money::dollars(cents)
}

/// The alerts (user None) and creators' notifications a notice becomes: one critical alert
/// per affected creator (design §3's `affectedUserId`; one without a creator when the charge
/// funded nobody we know), and a notification for each creator whose earnings it froze,
/// unfroze or reduced.
/// The alert for a creator whose earnings in `currency` refunds and disputes have wiped out:
/// they had earnings, and all of it was taken back (refunded, or lost in disputes), nothing
/// payable and nothing frozen (a frozen amount may yet come back: a dispute opened is not a
/// wipe until it is lost). Its `amount_cents` (the signal's) is what was taken back; the
/// escalation policy decides its level from it (`ESCALATION_REFUND_CENTS`).
fn wiped(user_id: &str, currency: &Currency, totals: &Totals, notice: &Notice) -> Option<Message> {
    let taken = totals.refunded;
    if totals.allocations == 0 || totals.active > 0 || totals.frozen > 0 || taken <= 0 {
        return None;
    }
    Some(Message {
        key: format!(
            "creator_earnings_wiped:{user_id}:{}:{}",
            currency.as_str(),
            totals.allocations
        ),
        kind: "creator_earnings_wiped".to_owned(),
        title: "Creator Earnings Wiped by Refunds and Disputes".to_owned(),
        body: format!(
            "Every earning of creator {user_id} ({} allocations) was taken back by refunds \
             and lost disputes: {} in all, nothing payable. A creator paid out and then \
             refunded or disputed in full is the pattern of refund fraud: check their payouts.",
            totals.allocations,
            dollars(totals.refunded)
        ),
        data_json: json!({
            "affectedUserId": user_id,
            "currency": currency.as_str(),
            "allocations": totals.allocations,
            "refundedCents": totals.refunded,
            "wipedCents": taken,
            "eventId": notice.event_id,
        })
        .to_string(),
    })
}

fn messages(
    case: &ChargeCase,
    notice: &Notice,
    allocations: &[Allocation],
) -> Vec<(Option<String>, Message)> {
    let mut shares: BTreeMap<&str, Share> = BTreeMap::new();
    for a in allocations {
        let share = shares.entry(a.user_id.as_str()).or_default();
        share.allocations += 1;
        share.amount += a.amount.cents;
        share.frozen += a.frozen_cents;
        share.refunded += a.refunded_cents;
    }
    let dispute = notice
        .dispute_id
        .as_ref()
        .and_then(|id| case.disputes.get(id));
    let outcome = case.outcome().map(|(outcome, _)| outcome);
    let kind = notice.kind.as_str();
    let (title, what) = match notice.kind {
        NoticeKind::RefundProcessed => (
            "Charge Refunded".to_owned(),
            format!(
                "charge {} now refunded {} of {}",
                case.charge_id,
                dollars(case.refunded_cents()),
                dollars(case.amount.as_ref().map_or(0, |(amount, _)| *amount))
            ),
        ),
        NoticeKind::DisputeCreated => (
            "Payment Dispute Created".to_owned(),
            format!(
                "CRITICAL: dispute {} filed for {} on charge {}. Its allocations are frozen.",
                notice.dispute_id.as_deref().unwrap_or_default(),
                dollars(dispute.map_or(0, |d| d.amount)),
                case.charge_id
            ),
        ),
        NoticeKind::DisputeClosed => (
            "Payment Dispute Closed".to_owned(),
            format!(
                "dispute {} on charge {} closed: {}",
                notice.dispute_id.as_deref().unwrap_or_default(),
                case.charge_id,
                dispute.map_or("unknown", |d| d.status.as_str())
            ),
        ),
    };
    let alert = |user: Option<&str>, share: Option<&Share>| Message {
        key: format!("{kind}:{}:{}", notice.event_id, user.unwrap_or("-")),
        kind: kind.to_owned(),
        title: title.clone(),
        body: match user {
            Some(user) => format!("{what}; creator {user} affected"),
            None => format!("{what}; it funded no recorded allocations"),
        },
        data_json: json!({
            "affectedUserId": user,
            "chargeId": case.charge_id,
            "disputeId": notice.dispute_id,
            "disputedAmount": dispute.map(|d| d.amount),
            "disputeStatus": dispute.map(|d| d.status.clone()),
            "refundedAmount": case.refunded_cents(),
            "chargeAmount": case.amount.as_ref().map(|(amount, _)| *amount),
            "allocationsAffected": share.map_or(0, |s| s.allocations),
            "frozenCents": share.map(|s| s.frozen),
            "refundedCents": share.map(|s| s.refunded),
            "eventId": notice.event_id,
        })
        .to_string(),
    };
    let mut out = Vec::new();
    if shares.is_empty() {
        out.push((None, alert(None, None)));
    }
    for (user, share) in &shares {
        out.push((None, alert(Some(user), Some(share))));
        let told = match (notice.kind, outcome) {
            (NoticeKind::DisputeCreated, Some(Outcome::Open | Outcome::Unresolved)) => Some((
                "earnings_frozen",
                "Earnings frozen",
                format!(
                    "A supporter disputed a payment. {} of your earnings are frozen until the dispute is resolved.",
                    dollars(share.frozen)
                ),
            )),
            (NoticeKind::DisputeClosed, Some(Outcome::Released)) => Some((
                "earnings_unfrozen",
                "Earnings unfrozen",
                format!(
                    "A dispute was resolved in your favour. {} of your earnings are available again.",
                    dollars(share.amount)
                ),
            )),
            (NoticeKind::DisputeClosed, Some(Outcome::Lost)) => Some((
                "earnings_reduced",
                "Earnings reduced",
                format!(
                    "A dispute was lost. {} of your earnings were taken back.",
                    dollars(share.refunded)
                ),
            )),
            (NoticeKind::RefundProcessed, _) if share.refunded > 0 => Some((
                "earnings_reduced",
                "Earnings reduced",
                format!(
                    "A supporter's payment was refunded. {} of your earnings from it were taken back.",
                    dollars(share.refunded)
                ),
            )),
            (NoticeKind::RefundProcessed, _) => Some((
                "earnings_restored",
                "Earnings restored",
                "A refund of a supporter's payment failed; your earnings from it are restored."
                    .to_owned(),
            )),
            _ => None,
        };
        if let Some((type_, title, body)) = told {
            out.push((
                Some((*user).to_owned()),
                Message {
                    key: format!("{type_}:{}:{user}", notice.event_id),
                    kind: type_.to_owned(),
                    title: title.to_owned(),
                    body,
                    data_json: json!({
                        "chargeId": case.charge_id,
                        "disputeId": notice.dispute_id,
                        "frozenCents": share.frozen,
                        "refundedCents": share.refunded,
                        "amountCents": share.amount,
                    })
                    .to_string(),
                },
            ));
        }
    }
    out
}
