//! The money invariants, checked after every step, and the end state, checked once faults
//! are off and everything has settled.

use std::collections::BTreeMap;

use payouts_payouts::payout::{Payout, PayoutStatus};
use payouts_webhooks::domain::EventStatus;
use serde_json::Value;

use payouts_disputes::charges::refund_counts;
use payouts_disputes::split::{proportional, refunded_share};
use payouts_disputes::store::{AllocationRepository, MemoryAllocations};
use payouts_webhooks::store::MemoryInbox;
use std::sync::Arc;

use payouts_notifications::paging::HaltStatus;
use payouts_notifications::store::AlertRepository as _;
use payouts_payouts::store::PauseRepository as _;

use crate::halts::PauseWatch;
use crate::ports::Windows;
use crate::stripe::SimStripe;
use crate::world::Stores;

/// What the checks remember between steps: the last status seen of every payout, and how
/// much of its audit trail is already in the simulation's trace.
#[derive(Default)]
pub struct Observed {
    statuses: BTreeMap<String, PayoutStatus>,
    audited: BTreeMap<String, usize>,
    shapes: BTreeMap<String, String>,
    /// Transfers already checked against their creator's earnings.
    transfers: std::collections::BTreeSet<String>,
}

impl Observed {
    /// The audit entries written since the last step, as trace lines.
    pub fn news(&mut self, stores: &Stores) -> Vec<String> {
        let mut lines = Vec::new();
        for payout in stores.payouts.all() {
            let seen = self.audited.entry(payout.id.clone()).or_default();
            for entry in payout.audit_log.iter().skip(*seen) {
                lines.push(format!(
                    "  {} {} {}->{} by {}: {}",
                    payout.id,
                    entry.event_type,
                    entry.from_status.map_or("-", |s| s.as_str()),
                    entry.to_status.as_str(),
                    entry.actor,
                    entry.reason
                ));
            }
            *seen = payout.audit_log.len();
            let shape = format!(
                "{} attempt {} unknown={} parked={} transfer={}",
                payout.status.as_str(),
                payout.attempt,
                payout.outcome_unknown,
                payout.parked,
                payout.stripe_transfer_id.as_deref().unwrap_or("-")
            );
            if self.shapes.get(&payout.id) != Some(&shape) {
                lines.push(format!("  {} is {shape}", payout.id));
                self.shapes.insert(payout.id.clone(), shape);
            }
        }
        lines
    }
}

/// What the creators earned by Stripe's truth, not by our books: each charge's allocations
/// less the share of the charge Stripe refunded (its refunds by id, at their status in
/// Stripe now, summed; never what our books say) and nothing for a lost dispute. Only
/// news the events applied so far made known counts (an event not yet applied is a race
/// every system has, and the debt rule covers it); within that, a book that counted less
/// than Stripe says is caught.
#[derive(Clone)]
pub struct Truth {
    pub stripe: SimStripe,
    pub inbox: Arc<MemoryInbox>,
    pub allocations: Arc<MemoryAllocations>,
    /// Every supporter's charge: id and amount.
    pub charges: Vec<(String, i64)>,
}

impl Truth {
    /// Lifetime earnings of every creator, by Stripe's truth of the news applied so far.
    pub fn lifetimes(&self) -> BTreeMap<String, i64> {
        let mut known: BTreeMap<String, (std::collections::BTreeSet<String>, bool)> =
            BTreeMap::new();
        for event in self.inbox.all() {
            if event.status != EventStatus::Completed {
                continue;
            }
            if let Some(news) = self.stripe.news(&event.event_id) {
                let entry = known.entry(news.charge).or_default();
                entry.0.extend(news.refunds);
                entry.1 |= news.lost;
            }
        }
        self.of(&known)
    }

    /// Lifetime earnings of every creator once every event Stripe sent was applied.
    pub fn lifetimes_at_end(&self) -> BTreeMap<String, i64> {
        let known = self
            .charges
            .iter()
            .map(|(charge, _)| {
                let refunds = self
                    .stripe
                    .refunds_of(charge)
                    .iter()
                    .filter_map(|r| r["id"].as_str().map(str::to_owned))
                    .collect();
                (charge.clone(), (refunds, self.stripe.lost(charge)))
            })
            .collect();
        self.of(&known)
    }

    pub fn lifetime(&self, user_id: &str) -> i64 {
        self.lifetimes().get(user_id).copied().unwrap_or(0)
    }

    fn of(
        &self,
        known: &BTreeMap<String, (std::collections::BTreeSet<String>, bool)>,
    ) -> BTreeMap<String, i64> {
        let mut lifetimes: BTreeMap<String, i64> = BTreeMap::new();
        for (charge, amount) in &self.charges {
            let mut allocations = crate::world::now(self.allocations.list_by_charge(charge, 1_000))
                .unwrap_or_default();
            allocations.sort_by(|a, b| a.id.cmp(&b.id));
            let (refund_ids, lost) = known.get(charge).cloned().unwrap_or_default();
            let refunded: i64 = self
                .stripe
                .refunds_of(charge)
                .iter()
                .filter(|r| r["id"].as_str().is_some_and(|id| refund_ids.contains(id)))
                .filter(|r| refund_counts(r["status"].as_str().unwrap_or_default()))
                .map(|r| r["amount"].as_i64().unwrap_or(0))
                .sum();
            let originals: Vec<i64> = allocations
                .iter()
                .map(|a| a.original_amount.cents)
                .collect();
            let funded: i64 = originals.iter().sum();
            let share = refunded_share(funded, refunded, *amount).unwrap_or(0);
            let reductions = proportional(share, &originals);
            for (allocation, reduction) in allocations.iter().zip(reductions) {
                let left = if lost {
                    0
                } else {
                    allocation.original_amount.cents - reduction
                };
                *lifetimes.entry(allocation.user_id.clone()).or_default() += left;
            }
        }
        lifetimes
    }
}

fn live(transfer: &Value) -> bool {
    transfer["amount_reversed"].as_i64().unwrap_or(0) < transfer["amount"].as_i64().unwrap_or(0)
}

fn metadata<'a>(transfer: &'a Value, key: &str) -> &'a str {
    transfer["metadata"][key].as_str().unwrap_or_default()
}

/// Whether a payout may move from `from` to `to`: forward, or a documented edge. The
/// adoption edge (failed -> processing) is documented too, but in the simulation it would
/// mean a transfer was made for a payout we had failed: a broken rule, so it counts here.
fn may_move(from: PayoutStatus, to: PayoutStatus) -> bool {
    from == to || from.may_move_to(to)
}

/// Invariants that hold after every step, faults or not.
pub fn always(
    stores: &Stores,
    stripe: &SimStripe,
    windows: &Windows,
    observed: &mut Observed,
) -> Result<(), String> {
    let payouts: BTreeMap<String, Payout> = stores
        .payouts
        .all()
        .into_iter()
        .map(|p| (p.id.clone(), p))
        .collect();
    let transfers = stripe.transfers();

    // At most one live (not reversed) Stripe transfer per payout.
    let mut live_by_payout: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for transfer in transfers.iter().filter(|t| live(t)) {
        live_by_payout
            .entry(metadata(transfer, "payout_id"))
            .or_default()
            .push(transfer["id"].as_str().unwrap_or_default());
    }
    for (payout, live) in &live_by_payout {
        if live.len() > 1 {
            return Err(format!(
                "payout {payout} has {} live transfers: {live:?}",
                live.len()
            ));
        }
    }

    // Money Stripe moved to a creator <= earnings - refunds + debt repaid: when a transfer
    // is made, what the creator holds from Stripe (transfers less reversals, which repay
    // debt) is within what they had earned after refunds at some moment since that
    // transfer's re-check began. Refunds and lost disputes landing after it make a debt,
    // not an overpayment; a transfer that was never re-checked is a broken rule by itself.
    let mut moved: BTreeMap<&str, i64> = BTreeMap::new();
    for transfer in &transfers {
        let left = transfer["amount"].as_i64().unwrap_or(0)
            - transfer["amount_reversed"].as_i64().unwrap_or(0);
        *moved.entry(metadata(transfer, "user_id")).or_default() += left;
    }
    let mut ceilings: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for transfer in &transfers {
        let id = transfer["id"].as_str().unwrap_or_default();
        if observed.transfers.contains(id) {
            continue;
        }
        let payout = metadata(transfer, "payout_id");
        let Some(ceiling) = windows.ceiling(payout) else {
            return Err(format!(
                "transfer {id} of payout {payout} was made without a re-check of earnings"
            ));
        };
        let user = metadata(transfer, "user_id");
        let entry = ceilings.entry(user).or_insert(ceiling);
        *entry = (entry.0.min(ceiling.0), entry.1.min(ceiling.1));
        observed.transfers.insert(id.to_owned());
    }
    for (user, (book, truth)) in &ceilings {
        let cents = moved.get(user).copied().unwrap_or(0);
        if cents > *truth {
            return Err(format!(
                "{user} holds {cents} cents from Stripe but by Stripe's own refunds and disputes earned at most {truth} since the transfer's re-check (our book said {book})"
            ));
        }
        if cents > *book {
            return Err(format!(
                "{user} holds {cents} cents from Stripe but earned at most {book} (after refunds) since the transfer's re-check"
            ));
        }
    }

    // No event waits parked because a service was down: an outage is waited out, only a
    // definite refusal parks (and nothing in the simulation is refused for good).
    for event in stores.inbox.all() {
        if event.status == EventStatus::Failed {
            return Err(format!(
                "webhook event {} ({}) parked after {} attempts ({} refusals): {:?}",
                event.event_id, event.event_type, event.attempts, event.refusals, event.last_error
            ));
        }
    }

    // One admin reversal intent is at most one reversal at Stripe.
    let mut per_intent: BTreeMap<String, usize> = BTreeMap::new();
    for reversal in stripe.reversals() {
        if let Some(intent) =
            reversal["metadata"][payouts_payouts::stripe::REVERSAL_INTENT_METADATA].as_str()
        {
            *per_intent.entry(intent.to_owned()).or_default() += 1;
        }
    }
    if let Some((intent, count)) = per_intent.iter().find(|(_, count)| **count > 1) {
        return Err(format!(
            "reversal intent {intent} was made {count} times at Stripe"
        ));
    }

    // No payout state moves backwards (and only a payout still admitting may vanish: a
    // refused admission is deleted).
    for (id, previous) in &observed.statuses {
        match payouts.get(id) {
            None if *previous != PayoutStatus::Admitting => {
                return Err(format!("payout {id} vanished while {}", previous.as_str()));
            }
            Some(payout) if !may_move(*previous, payout.status) => {
                return Err(format!(
                    "payout {id} moved backwards: {} -> {}",
                    previous.as_str(),
                    payout.status.as_str()
                ));
            }
            _ => {}
        }
    }
    observed.statuses = payouts
        .iter()
        .map(|(id, payout)| (id.clone(), payout.status))
        .collect();

    // Quota held covers what the holding payouts need (never less: that would let a user
    // be paid more than their limits and balance allow), and the documents add up.
    let quotas: BTreeMap<String, _> = stores
        .quotas
        .all()
        .into_iter()
        .map(|q| (q.user_id.clone(), q))
        .collect();
    for quota in quotas.values() {
        let held: i64 = quota.reservations.iter().map(|r| r.held_cents()).sum();
        if held != quota.committed_cents {
            return Err(format!(
                "quota of {} commits {} but its reservations hold {held}",
                quota.user_id, quota.committed_cents
            ));
        }
        for reservation in &quota.reservations {
            if !payouts.contains_key(&reservation.payout_id) {
                return Err(format!(
                    "quota of {} holds {} for payout {}, which does not exist",
                    quota.user_id,
                    reservation.held_cents(),
                    reservation.payout_id
                ));
            }
        }
    }
    for payout in payouts.values() {
        if payout.status == PayoutStatus::Admitting {
            continue;
        }
        let reservation = quotas
            .get(&payout.user_id)
            .and_then(|quota| quota.find(&payout.id));
        let Some(reservation) = reservation else {
            return Err(format!(
                "payout {} is {} without a reservation",
                payout.id,
                payout.status.as_str()
            ));
        };
        // Quota given back and to be held again (a transfer failed after a partial reversal)
        // is short until the limits confirm; no money moves for the payout until then.
        let rehold_pending = !payout.quota.is_settled() && payout.stripe_transfer_id.is_none();
        if reservation.held_cents() < payout.quota_needed_cents() && !rehold_pending {
            return Err(format!(
                "payout {} ({}) needs {} of quota but only {} is held",
                payout.id,
                payout.status.as_str(),
                payout.quota_needed_cents(),
                reservation.held_cents()
            ));
        }
    }
    Ok(())
}

fn is_final(status: PayoutStatus) -> bool {
    matches!(
        status,
        PayoutStatus::Completed | PayoutStatus::Failed | PayoutStatus::Reversed
    )
}

/// Whether everything has come to rest.
pub fn settled(stores: &Stores, stripe: &SimStripe) -> bool {
    stripe.outbox().is_empty()
        && stores
            .payouts
            .all()
            .iter()
            .all(|p| is_final(p.status) && !p.owes_effects())
        && stores
            .inbox
            .all()
            .iter()
            .all(|e| e.status == EventStatus::Completed)
        && stores.approvals.all().iter().all(|a| a.applied)
}

/// The end state, faults off and time advanced: nothing stuck, every owed effect settled,
/// quota exactly what the payouts need, every event processed, every transfer Stripe made
/// belonging to exactly one payout.
pub fn at_end(stores: &Stores, stripe: &SimStripe, truth: &Truth) -> Result<(), String> {
    earnings_add_up(stores)?;
    // Every level-3 alert's halt was delivered (a halt is owed until payouts confirms it).
    let owed = halts_owed(stores);
    if owed > 0 {
        return Err(format!("{owed} escalation halts are still owed at the end"));
    }
    // Every event applied: each creator's book is what Stripe's refunds and disputes say.
    let by_stripe = truth.lifetimes_at_end();
    for (user, cents) in &by_stripe {
        let book = crate::world::now(payouts_disputes::store::EarningsBookRepository::get(
            stores.books.as_ref(),
            user,
        ))
        .map_or(0, |book| {
            book.earnings(&payouts_runtime::Currency::usd())
                .lifetime
                .cents
        });
        if book != *cents {
            return Err(format!(
                "the earnings book of {user} says {book} after refunds, Stripe's refunds and disputes {cents}"
            ));
        }
    }
    for payout in stores.payouts.all() {
        for intent in &payout.reversal_intents {
            if !intent.state.is_resolved() {
                return Err(format!(
                    "reversal intent {} of {} is unresolved: {:?}",
                    intent.id, payout.id, intent.state
                ));
            }
        }
    }
    let payouts: BTreeMap<String, Payout> = stores
        .payouts
        .all()
        .into_iter()
        .map(|p| (p.id.clone(), p))
        .collect();
    for payout in payouts.values() {
        if !is_final(payout.status) {
            return Err(format!(
                "payout {} is stuck in {} (outcome unknown: {}, parked: {})",
                payout.id,
                payout.status.as_str(),
                payout.outcome_unknown,
                payout.parked
            ));
        }
        if payout.owes_effects() {
            return Err(format!(
                "payout {} still owes side effects (projected {}/{}, quota {:?}, alerts {})",
                payout.id,
                payout.audit_projected,
                payout.audit_log.len(),
                payout.quota,
                payout.owed_alerts.len()
            ));
        }
        if !payout.stray_transfer_ids.is_empty() {
            return Err(format!(
                "payout {} was paid twice: {:?}",
                payout.id, payout.stray_transfer_ids
            ));
        }
    }
    for quota in stores.quotas.all() {
        for reservation in &quota.reservations {
            if let Some(payout) = payouts.get(&reservation.payout_id)
                && reservation.held_cents() != payout.quota_needed_cents()
            {
                return Err(format!(
                    "payout {} ({}) holds {} of quota at rest but needs {}",
                    payout.id,
                    payout.status.as_str(),
                    reservation.held_cents(),
                    payout.quota_needed_cents()
                ));
            }
        }
    }
    for event in stores.inbox.all() {
        if event.status != EventStatus::Completed {
            return Err(format!(
                "webhook event {} ({}) ended {}: {:?}",
                event.event_id,
                event.event_type,
                event.status.as_str(),
                event.last_error
            ));
        }
    }
    for approval in stores.approvals.all() {
        if !approval.applied {
            return Err(format!(
                "approval {} ({}) was never carried out",
                approval.id,
                approval.status.as_str()
            ));
        }
    }
    if !stripe.outbox().is_empty() {
        return Err(format!(
            "{} Stripe events never delivered",
            stripe.outbox().len()
        ));
    }
    let mut owners: BTreeMap<String, String> = BTreeMap::new();
    for transfer in stripe.transfers() {
        let id = transfer["id"].as_str().unwrap_or_default().to_owned();
        let payout_id = metadata(&transfer, "payout_id");
        let Some(payout) = payouts.get(payout_id) else {
            return Err(format!(
                "transfer {id} names payout {payout_id}, which does not exist"
            ));
        };
        let current = payout.stripe_transfer_id.as_deref() == Some(id.as_str());
        let failed = payout.failed_transfer_ids.contains(&id) && !live(&transfer);
        if !current && !failed {
            return Err(format!(
                "transfer {id} of payout {payout_id} is not the payout's ({:?}) nor a failed one",
                payout.stripe_transfer_id
            ));
        }
        if let Some(other) = owners.insert(id.clone(), payout.id.clone()) {
            return Err(format!(
                "transfer {id} belongs to {other} and {}",
                payout.id
            ));
        }
    }
    for payout in payouts.values() {
        if let Some(transfer) = &payout.stripe_transfer_id
            && !owners.contains_key(transfer)
        {
            return Err(format!(
                "payout {} names transfer {transfer}, which Stripe never made",
                payout.id
            ));
        }
    }
    Ok(())
}

/// Every creator's book is settled and says what their allocations add up to, and every
/// charge's allocations are what its case says (nothing left to settle, nothing owed).
fn earnings_add_up(stores: &Stores) -> Result<(), String> {
    use payouts_disputes::store::{
        AllocationRepository, ChargeCaseRepository, EarningsBookRepository,
    };
    let usd = payouts_runtime::Currency::usd();
    let books =
        crate::world::now(stores.books.list(None, usize::MAX)).map_err(|e| e.to_string())?;
    let mut charges = std::collections::BTreeSet::new();
    for book in books {
        if !book.pending.is_empty() {
            return Err(format!(
                "the earnings book of {} still has intents",
                book.user_id
            ));
        }
        let allocations = crate::world::now(stores.allocations.list_by_user(
            &book.user_id,
            None,
            usize::MAX,
        ))
        .map_err(|e| e.to_string())?;
        let rebuilt = payouts_disputes::domain::Earnings::of(&allocations, &usd);
        if book.earnings(&usd) != rebuilt {
            return Err(format!(
                "the earnings book of {} says {:?}, its allocations {:?}",
                book.user_id,
                book.earnings(&usd),
                rebuilt
            ));
        }
        for allocation in &allocations {
            if allocation.amount.cents < 0
                || allocation.amount.cents + allocation.refunded_cents
                    != allocation.original_amount.cents
            {
                return Err(format!(
                    "allocation {} does not add up: {allocation:?}",
                    allocation.id
                ));
            }
            charges.insert(allocation.charge_id.clone());
        }
    }
    for charge in charges {
        let Some(case) = crate::world::now(stores.cases.get(&charge)).map_err(|e| e.to_string())?
        else {
            continue;
        };
        if !case.notices.is_empty() {
            return Err(format!(
                "charge {charge} still owes {} notices: {case:?}",
                case.notices.len()
            ));
        }
        let allocations = crate::world::now(stores.allocations.list_by_charge(&charge, 1_000))
            .map_err(|e| e.to_string())?;
        let now = case.updated_at;
        let unsettled = payouts_disputes::charges::settle(&case, &allocations, "check", now);
        if !unsettled.is_empty() {
            return Err(format!(
                "charge {charge}'s allocations are not what its case says: {:?}",
                unsettled
                    .iter()
                    .map(|(_, after)| &after.id)
                    .collect::<Vec<_>>()
            ));
        }
    }
    Ok(())
}

fn level_three_alerts(stores: &Stores) -> Vec<payouts_notifications::alerts::Alert> {
    crate::world::now(stores.alerts.list(None, None, None, None, 10_000)).unwrap_or_default()
}

/// How many level-3 alerts still owe their transfer halt.
pub fn halts_owed(stores: &Stores) -> usize {
    level_three_alerts(stores)
        .iter()
        .filter(|alert| {
            alert
                .halt
                .as_ref()
                .is_some_and(|halt| halt.status == HaltStatus::Owed)
        })
        .count()
}

/// The transfer pause and the escalation halt, after every step ([`crate::halts`]): no
/// transfer made at Stripe for an attempt that started while transfers were paused; no
/// pending payout failed, tried or claimed by an attempt that read a pause; a halt lifted
/// only by an admin with notes and never replaced; and a halt notifications recorded as
/// confirmed was applied (it is in the pause's memory of the alerts that halted), so a halt
/// is never lost between the two services.
pub fn halts(stores: &Stores, watch: &PauseWatch) -> Result<(), String> {
    if let Some(problem) = watch.violations().into_iter().next() {
        return Err(problem);
    }
    let pause = crate::world::now(stores.pause.get()).map_err(|error| error.to_string())?;
    for alert in level_three_alerts(stores) {
        let confirmed = alert
            .halt
            .as_ref()
            .is_some_and(|halt| halt.status == HaltStatus::Set);
        if confirmed && !pause.escalations.contains(&alert.id) {
            return Err(format!(
                "notifications recorded the halt of {} as confirmed, but payouts never applied \
                 it (the pause remembers {:?})",
                alert.id, pause.escalations
            ));
        }
    }
    Ok(())
}
