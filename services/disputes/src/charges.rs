//! What refunds and disputes do to the allocations a charge funded (design §3), pure.
//!
//! Every Stripe event about a charge is merged into one [`ChargeCase`]: each refund by id at
//! its furthest status, the charge's `amount_refunded` claims not yet checked against
//! Stripe's refund list, and each dispute's furthest status. Merging is commutative and
//! idempotent (a union by id, a status that only moves forward), so any order of the same
//! events, duplicates included, gives the same case once its claims are checked. The
//! allocations' state is then a function of the case ([`settle`]): it never depends on the
//! order the events came in, and an older event arriving late changes nothing.
//!
//! Decisions (docs/disputes.md, docs/money-safety.md "Refunds counted from refunds"):
//! - Refunded: the sum of the charge's refunds that are not `failed` or `canceled`, by refund
//!   id (from the refund objects of `refund.*` and `charge.refund.updated` events, the
//!   `refunds` list a `charge.refunded` carries on API versions before 2022-11-15, and
//!   Stripe's list `GET /v1/refunds?charge=`), never the charge's `amount_refunded` less
//!   failed refunds: Stripe does not say whether `amount_refunded` drops when a refund fails.
//!   A refund's status only moves forward along [`refund_status_rank`]; the furthest seen wins.
//! - A `charge.refunded` whose refunds list is absent or cut (`has_more`), or whose
//!   `amount_refunded` differs from the refunds we know, is in doubt: its `amount_refunded` is
//!   kept as a claim, the refunded amount is at least every claim (never less reduced than
//!   Stripe said), and the service lists the charge's refunds; the listing settles the
//!   claims. Until Stripe answers, the money stays reduced.
//! - The refunded amount, as a fraction of the charge's amount, of what the charge's
//!   allocations were credited, rounded down to the cent, split over the allocations by
//!   largest remainder of their original amounts. The split is of the cumulative total, not
//!   of each increment: that is what makes it order-independent. A larger refund can leave
//!   one allocation a cent less reduced than a smaller one did (Hamilton's "Alabama
//!   paradox"); sums stay exact and nothing goes below zero.
//! - A refund whose charge we have not seen (refund events carry the charge's id, not its
//!   amount): the case [`ChargeCase::needs_amount`], the service reads the charge from
//!   Stripe and records its amount ([`ChargeCase::with_amount`]); until it is known the
//!   event waits (never "done" with the reduction not taken).
//! - A dispute freezes every allocation of the charge whole (design §3), whatever its amount.
//!   `lost` zeroes them; `won`, `warning_closed` (an inquiry that never became a
//!   chargeback), `prevented` and `charge_refunded` (the refund does the taking) unfreeze
//!   them; any other closing status keeps them frozen for an admin (unknown is not a "no").
//! - A closed dispute stays closed: a `created` or `updated` event arriving after it only
//!   fills in what it did not know.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use payouts_runtime::{Currency, ServiceError};
use serde_json::Value;

use crate::domain::{Allocation, AllocationAudit, AllocationStatus, MarkKind, RecentMark};
use crate::split::{proportional, refunded_share};

/// At most this many event ids are remembered per charge (a charge sees a handful).
pub const MAX_EVENTS: usize = 200;

/// What one Stripe event says about a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeNews {
    /// `charge.refunded`: the charge with its cumulative `amount_refunded`.
    Refunded {
        charge_id: String,
        currency: Currency,
        /// The money the charge took: `amount_captured` (less than `amount` after a partial
        /// capture, https://docs.stripe.com/api/charges/object), which is what refunds
        /// can give back and what the allocations' shares are taken against.
        amount: i64,
        amount_refunded: i64,
        /// Refunds listed on the charge (`refunds.data`), when Stripe included them.
        refunds: Vec<RefundNews>,
        /// Whether `refunds` is every refund of the charge: the list was included (API
        /// versions before 2022-11-15, or expanded) and not cut (`has_more` false).
        refunds_complete: bool,
    },
    /// `refund.created` / `refund.updated` / `refund.failed` / `charge.refund.updated`.
    Refund(RefundNews),
    /// `charge.dispute.*`.
    Dispute(DisputeNews),
}

impl ChargeNews {
    pub fn charge_id(&self) -> &str {
        match self {
            ChargeNews::Refunded { charge_id, .. } => charge_id,
            ChargeNews::Refund(refund) => &refund.charge_id,
            ChargeNews::Dispute(dispute) => &dispute.charge_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundNews {
    pub id: String,
    pub charge_id: String,
    pub amount: i64,
    /// "pending", "succeeded", "failed", "canceled", "requires_action".
    pub status: String,
}

impl RefundNews {
    /// Whether the refund gave the money back to nobody: it no longer counts.
    pub fn failed(&self) -> bool {
        !refund_counts(&self.status)
    }
}

/// Where a refund status stands in the order a refund moves (https://docs.stripe.com/api/refunds/object,
/// https://docs.stripe.com/refunds#failed-refunds): `requires_action` → `pending` →
/// `succeeded` → `failed` (a succeeded refund can still fail), and `requires_action` or
/// `pending` → `canceled`. `failed` and `canceled` are final. Of two statuses seen for one
/// refund the higher rank wins, so a late `pending` never undoes a `failed`. A status Stripe
/// may add later ranks above the live ones and below the final ones: it counts as refunded
/// (unknown is not "given back") until a final status says otherwise.
pub fn refund_status_rank(status: &str) -> u8 {
    match status {
        "requires_action" => 0,
        "pending" => 1,
        "succeeded" => 2,
        "canceled" => 4,
        "failed" => 5,
        _ => 3,
    }
}

/// Whether a refund in `status` takes money from the charge: every status but `failed` and
/// `canceled` (pending and requires_action too: the money is on its way back to the payer).
pub fn refund_counts(status: &str) -> bool {
    !matches!(status, "failed" | "canceled")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisputeNews {
    pub id: String,
    pub charge_id: String,
    pub amount: i64,
    pub currency: Currency,
    pub status: String,
    pub reason: String,
    pub kind: DisputeEvent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisputeEvent {
    Created,
    Updated,
    Closed,
    FundsWithdrawn,
    FundsReinstated,
}

/// The event types this service applies.
pub fn handles(event_type: &str) -> bool {
    event_type == "charge.refunded"
        || event_type.starts_with("charge.dispute.")
        || is_refund_event(event_type)
}

/// Events whose object is a refund: `refund.*` (every refund since 2024-10-28.acacia, only
/// refunds without a charge before) and `charge.refund.updated` (charge refunds on earlier
/// API versions, still sent).
fn is_refund_event(event_type: &str) -> bool {
    event_type.starts_with("refund.") || event_type == "charge.refund.updated"
}

fn text<'a>(object: &'a Value, field: &str) -> &'a str {
    object[field].as_str().unwrap_or_default()
}

/// The charge a field names: an id, or an expanded object with one.
fn charge_of(object: &Value) -> &str {
    match &object["charge"] {
        Value::String(id) => id,
        Value::Object(charge) => charge.get("id").and_then(Value::as_str).unwrap_or_default(),
        _ => "",
    }
}

fn amount(object: &Value, field: &str) -> Result<i64, ServiceError> {
    object[field]
        .as_i64()
        .filter(|cents| *cents >= 0)
        .ok_or_else(|| {
            ServiceError::invalid_argument(format!(
                "{} {} has no {field} in cents",
                text(object, "object"),
                text(object, "id")
            ))
        })
}

/// A refund object (an event's, or one of Stripe's refund list) as news of its charge.
pub fn refund_news(object: &Value, charge_id: &str) -> Result<RefundNews, ServiceError> {
    let id = text(object, "id");
    if id.is_empty() {
        return Err(ServiceError::invalid_argument("refund has no id"));
    }
    Ok(RefundNews {
        id: id.to_owned(),
        charge_id: charge_id.to_owned(),
        amount: amount(object, "amount")?,
        status: text(object, "status").to_owned(),
    })
}

/// A charge as Stripe holds it (`GET /v1/charges/{id}`,
/// https://docs.stripe.com/api/charges/retrieve): read when a refund of it arrives before any
/// event carrying the charge, because a refund object names its `charge` and its own `amount`
/// but not the charge's amount (https://docs.stripe.com/api/refunds/object), and a refund's
/// share of the charge's allocations is `refunded / amount`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeAmounts {
    pub charge_id: String,
    pub amount: i64,
    pub amount_captured: i64,
    pub amount_refunded: i64,
    pub currency: Currency,
}

/// Reads a charge object's amounts (InvalidArgument when one is missing).
pub fn charge_amounts(object: &Value) -> Result<ChargeAmounts, ServiceError> {
    let id = text(object, "id");
    if text(object, "object") != "charge" || id.is_empty() {
        return Err(ServiceError::invalid_argument(format!(
            "not a charge: object {:?}, id {id:?}",
            text(object, "object")
        )));
    }
    Ok(ChargeAmounts {
        charge_id: id.to_owned(),
        amount: amount(object, "amount")?,
        amount_captured: amount(object, "amount_captured")?,
        amount_refunded: amount(object, "amount_refunded")?,
        currency: Currency::parse(text(object, "currency"))?,
    })
}

/// The money a charge object took: `amount_captured` (a partial capture takes less than
/// `amount`; a full refund gives back `amount_captured`); `amount` for an object without
/// the field (API versions before it existed captured in full or not at all).
fn captured(object: &Value) -> Result<i64, ServiceError> {
    if object.get("amount_captured").is_some_and(|v| !v.is_null()) {
        amount(object, "amount_captured")
    } else {
        amount(object, "amount")
    }
}

/// Reads an event's `data.object` (InvalidArgument when it is not what the type says: the
/// event is parked as failed, visible, not silently dropped).
pub fn parse(event_type: &str, object: &Value) -> Result<ChargeNews, ServiceError> {
    let kind = text(object, "object");
    let expect = |wanted: &str| {
        if kind == wanted {
            Ok(())
        } else {
            Err(ServiceError::invalid_argument(format!(
                "{event_type} carries a {kind:?} object, not a {wanted}"
            )))
        }
    };
    let charge_id = |id: &str| {
        if id.is_empty() {
            Err(ServiceError::invalid_argument(format!(
                "{event_type} names no charge"
            )))
        } else {
            Ok(id.to_owned())
        }
    };
    if event_type == "charge.refunded" {
        expect("charge")?;
        let charge_id = charge_id(text(object, "id"))?;
        // Absent on API versions from 2022-11-15 unless expanded; cut when `has_more`.
        let listed = object["refunds"]["data"].as_array();
        let refunds_complete =
            listed.is_some() && object["refunds"]["has_more"].as_bool() == Some(false);
        let refunds = listed
            .map(|refunds| {
                refunds
                    .iter()
                    .map(|refund| refund_news(refund, &charge_id))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();
        let (amount, amount_refunded) = (captured(object)?, amount(object, "amount_refunded")?);
        return Ok(ChargeNews::Refunded {
            currency: Currency::parse(text(object, "currency"))?,
            amount,
            amount_refunded,
            refunds,
            refunds_complete,
            charge_id,
        });
    }
    if is_refund_event(event_type) {
        expect("refund")?;
        let charge_id = charge_id(charge_of(object))?;
        return Ok(ChargeNews::Refund(refund_news(object, &charge_id)?));
    }
    if let Some(what) = event_type.strip_prefix("charge.dispute.") {
        expect("dispute")?;
        let id = text(object, "id");
        if id.is_empty() {
            return Err(ServiceError::invalid_argument("dispute has no id"));
        }
        let kind = match what {
            "created" => DisputeEvent::Created,
            "closed" => DisputeEvent::Closed,
            "funds_withdrawn" => DisputeEvent::FundsWithdrawn,
            "funds_reinstated" => DisputeEvent::FundsReinstated,
            _ => DisputeEvent::Updated,
        };
        return Ok(ChargeNews::Dispute(DisputeNews {
            id: id.to_owned(),
            charge_id: charge_id(charge_of(object))?,
            amount: amount(object, "amount")?,
            currency: Currency::parse(text(object, "currency"))?,
            status: text(object, "status").to_owned(),
            reason: text(object, "reason").to_owned(),
            kind,
        }));
    }
    Err(ServiceError::invalid_argument(format!(
        "{event_type} is not a refund or dispute event"
    )))
}

/// A refund of the charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub amount: i64,
    pub status: String,
}

/// A dispute of the charge, as far as it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispute {
    pub id: String,
    pub amount: i64,
    pub currency: Currency,
    pub status: String,
    pub reason: String,
    /// When we first heard of it (Stripe's event time).
    pub opened_at: DateTime<Utc>,
    /// When a `closed` event came (Stripe's event time).
    pub closed_at: Option<DateTime<Utc>>,
    pub funds_withdrawn: bool,
    pub funds_reinstated: bool,
}

/// Where a dispute stands for the money.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Open: allocations frozen.
    Open,
    /// Closed in the creator's favour (won, warning_closed, prevented, charge_refunded).
    Released,
    /// Closed with a status we do not know what to do with: stays frozen for an admin.
    Unresolved,
    /// Lost: allocations zeroed.
    Lost,
}

impl Dispute {
    pub fn is_closed(&self) -> bool {
        self.closed_at.is_some() || is_closing_status(&self.status)
    }

    pub fn outcome(&self) -> Outcome {
        if !self.is_closed() {
            return Outcome::Open;
        }
        match self.status.as_str() {
            "lost" => Outcome::Lost,
            "won" | "warning_closed" | "prevented" | "charge_refunded" => Outcome::Released,
            _ => Outcome::Unresolved,
        }
    }

    /// "open", "won", "lost", or the closing status itself.
    pub fn state(&self) -> &str {
        match self.outcome() {
            Outcome::Open => "open",
            _ => &self.status,
        }
    }
}

/// Statuses only a closed dispute has.
fn is_closing_status(status: &str) -> bool {
    matches!(
        status,
        "won" | "lost" | "warning_closed" | "prevented" | "charge_refunded"
    )
}

/// An alert and the creators' notifications owed for an event, delivered after the
/// allocations are settled (kept in the case so that a crash in between cannot lose them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub kind: NoticeKind,
    pub event_id: String,
    /// The dispute it is about (dispute notices).
    pub dispute_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    RefundProcessed,
    DisputeCreated,
    DisputeClosed,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::RefundProcessed => "refund_processed",
            NoticeKind::DisputeCreated => "dispute_created",
            NoticeKind::DisputeClosed => "dispute_closed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "refund_processed" => Some(NoticeKind::RefundProcessed),
            "dispute_created" => Some(NoticeKind::DisputeCreated),
            "dispute_closed" => Some(NoticeKind::DisputeClosed),
            _ => None,
        }
    }
}

/// Everything known about one charge's refunds and disputes (collection `chargeCases`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeCase {
    pub charge_id: String,
    /// The charge's amount and currency, once a `charge.refunded` told us or, for a refund
    /// that came first, Stripe's charge was read ([`ChargeCase::with_amount`]).
    pub amount: Option<(i64, Currency)>,
    /// The highest cumulative `amount_refunded` seen (shown, never counted: see `claims`).
    pub amount_refunded: i64,
    /// `amount_refunded` of charge events in doubt (by event id; "legacy" for a case stored
    /// before refunds were counted from refunds) that no refund list from Stripe has settled
    /// yet: the refunded amount is at least each of them.
    pub claims: BTreeMap<String, i64>,
    /// When the refunded amount last grew (Stripe's event time).
    pub refunded_at: Option<DateTime<Utc>>,
    pub refunds: BTreeMap<String, Refund>,
    pub disputes: BTreeMap<String, Dispute>,
    /// Event ids applied, oldest first (at most [`MAX_EVENTS`]).
    pub events: Vec<String>,
    /// Alerts and notifications owed.
    pub notices: Vec<Notice>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Compare-and-set version; 0 for a case not stored yet.
    pub version: i64,
}

impl ChargeCase {
    pub fn new(charge_id: &str, now: DateTime<Utc>) -> Self {
        Self {
            charge_id: charge_id.to_owned(),
            amount: None,
            amount_refunded: 0,
            claims: BTreeMap::new(),
            refunded_at: None,
            refunds: BTreeMap::new(),
            disputes: BTreeMap::new(),
            events: Vec::new(),
            notices: Vec::new(),
            created_at: now,
            updated_at: now,
            version: 0,
        }
    }

    /// The case with the event merged and its notices owed; None when the event was
    /// merged before (idempotent on the Stripe event id). `at` is Stripe's event time.
    pub fn merge(
        &self,
        event_id: &str,
        news: &ChargeNews,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<ChargeCase> {
        if self.events.iter().any(|seen| seen == event_id) {
            return None;
        }
        let mut case = self.clone();
        let refunded_before = case.refunded_cents();
        let notice = |kind, dispute_id: Option<&str>| Notice {
            kind,
            event_id: event_id.to_owned(),
            dispute_id: dispute_id.map(str::to_owned),
        };
        match news {
            ChargeNews::Refunded {
                currency,
                amount,
                amount_refunded,
                refunds,
                refunds_complete,
                ..
            } => {
                case.amount = Some((*amount, currency.clone()));
                case.amount_refunded = case.amount_refunded.max(*amount_refunded);
                for refund in refunds {
                    case.merge_refund(refund);
                }
                if !refunds_complete || *amount_refunded != case.counted_cents() {
                    case.claims.insert(event_id.to_owned(), *amount_refunded);
                }
            }
            ChargeNews::Refund(refund) => case.merge_refund(refund),
            ChargeNews::Dispute(news) => {
                let dispute = case
                    .disputes
                    .entry(news.id.clone())
                    .or_insert_with(|| Dispute {
                        id: news.id.clone(),
                        amount: news.amount,
                        currency: news.currency.clone(),
                        status: news.status.clone(),
                        reason: news.reason.clone(),
                        opened_at: at,
                        closed_at: None,
                        funds_withdrawn: false,
                        funds_reinstated: false,
                    });
                dispute.opened_at = dispute.opened_at.min(at);
                if !dispute.is_closed() {
                    // Open statuses move among themselves; a closing status is final.
                    dispute.status = news.status.clone();
                    dispute.amount = news.amount;
                    dispute.reason = news.reason.clone();
                }
                let closing = news.kind == DisputeEvent::Closed || is_closing_status(&news.status);
                if closing && dispute.closed_at.is_none() {
                    dispute.closed_at = Some(at);
                    if news.kind == DisputeEvent::Closed && !is_closing_status(&dispute.status) {
                        dispute.status = news.status.clone();
                    }
                }
                match news.kind {
                    DisputeEvent::Created => {
                        case.notices
                            .push(notice(NoticeKind::DisputeCreated, Some(&news.id)));
                    }
                    DisputeEvent::Closed => {
                        case.notices
                            .push(notice(NoticeKind::DisputeClosed, Some(&news.id)));
                    }
                    DisputeEvent::FundsWithdrawn => dispute.funds_withdrawn = true,
                    DisputeEvent::FundsReinstated => dispute.funds_reinstated = true,
                    DisputeEvent::Updated => {}
                }
            }
        }
        let refunded_after = case.refunded_cents();
        if refunded_after != refunded_before {
            case.refunded_at = Some(case.refunded_at.map_or(at, |known| known.max(at)));
            case.notices.push(notice(NoticeKind::RefundProcessed, None));
        }
        case.events.push(event_id.to_owned());
        let excess = case.events.len().saturating_sub(MAX_EVENTS);
        case.events.drain(..excess);
        case.updated_at = now;
        case.version += 1;
        Some(case)
    }

    fn merge_refund(&mut self, news: &RefundNews) {
        if news.charge_id != self.charge_id {
            return;
        }
        let refund = self.refunds.entry(news.id.clone()).or_insert(Refund {
            amount: news.amount,
            status: news.status.clone(),
        });
        // The furthest status wins (ties of unknown statuses by name, to stay
        // order-independent); a refund's amount never changes, so the largest seen is it.
        let rank = |status: &str| (refund_status_rank(status), status.to_owned());
        if rank(&news.status) > rank(&refund.status) {
            refund.status = news.status.clone();
        }
        refund.amount = refund.amount.max(news.amount);
    }

    /// The sum of the known refunds that count (not failed or canceled).
    pub fn counted_cents(&self) -> i64 {
        self.refunds
            .values()
            .filter(|refund| refund_counts(&refund.status))
            .map(|refund| refund.amount)
            .sum()
    }

    /// What the charge has refunded and not taken back: its refunds that count, at least
    /// every unsettled claim, within `0..=amount`.
    pub fn refunded_cents(&self) -> i64 {
        let claimed = self.claims.values().copied().max().unwrap_or(0);
        let refunded = self.counted_cents().max(claimed).max(0);
        match &self.amount {
            Some((amount, _)) => refunded.min(*amount),
            None => refunded,
        }
    }

    /// Whether the charge must be read from Stripe before the case can be settled: something
    /// is refunded and no event told the charge's amount (refund events alone do not), so
    /// the share of the allocations it takes is unknown. Until it is known the event waits.
    pub fn needs_amount(&self) -> bool {
        self.amount.is_none() && self.refunded_cents() > 0
    }

    /// The case with the charge's amount and currency as Stripe holds them (`charge`, read
    /// for it); None when it knows them already (an event's, of the same charge, stands) or
    /// `charge` is another charge's.
    pub fn with_amount(&self, charge: &ChargeAmounts, now: DateTime<Utc>) -> Option<ChargeCase> {
        if self.amount.is_some() || charge.charge_id != self.charge_id {
            return None;
        }
        let mut case = self.clone();
        // What the charge took (a partial capture takes less than `amount`).
        case.amount = Some((charge.amount_captured, charge.currency.clone()));
        case.updated_at = now;
        case.version += 1;
        Some(case)
    }

    /// Whether Stripe's refund list must be read: a claim is not settled.
    pub fn in_doubt(&self) -> bool {
        !self.claims.is_empty()
    }

    /// The case once Stripe's refund list of the charge (`listed`: every page, read after the
    /// `settled` claims were made) is merged: the listed refunds by id, those claims dropped.
    /// `cause` names the event being applied (its refund notice, when the amount changed and
    /// none is owed for it yet); `at` is its Stripe time. None when nothing changes.
    pub fn with_listing(
        &self,
        listed: &[RefundNews],
        settled: &[String],
        cause: &str,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<ChargeCase> {
        let mut case = self.clone();
        for refund in listed {
            case.merge_refund(refund);
        }
        for claim in settled {
            case.claims.remove(claim);
        }
        if case.refunds == self.refunds && case.claims == self.claims {
            return None;
        }
        if case.refunded_cents() != self.refunded_cents() {
            case.refunded_at = Some(case.refunded_at.map_or(at, |known| known.max(at)));
            let notice = Notice {
                kind: NoticeKind::RefundProcessed,
                event_id: cause.to_owned(),
                dispute_id: None,
            };
            if !case.notices.contains(&notice) {
                case.notices.push(notice);
            }
        }
        case.updated_at = now;
        case.version += 1;
        Some(case)
    }

    /// The dispute state for the money: lost beats everything, then open or unresolved
    /// (frozen), then released.
    pub fn outcome(&self) -> Option<(Outcome, &Dispute)> {
        self.disputes
            .values()
            .map(|dispute| (dispute.outcome(), dispute))
            .max_by_key(|(outcome, dispute)| {
                let rank = match outcome {
                    Outcome::Released => 0,
                    Outcome::Open => 1,
                    Outcome::Unresolved => 2,
                    Outcome::Lost => 3,
                };
                (rank, dispute.opened_at, dispute.id.clone())
            })
    }

    /// The marks a creator with allocations on this charge gets.
    pub fn marks(&self) -> Vec<RecentMark> {
        let mut marks = Vec::new();
        if let Some(at) = self.refunded_at.filter(|_| self.refunded_cents() > 0) {
            marks.push(RecentMark {
                kind: MarkKind::Refund,
                charge_id: self.charge_id.clone(),
                at,
            });
        }
        if let Some(opened) = self.disputes.values().map(|d| d.opened_at).min() {
            marks.push(RecentMark {
                kind: MarkKind::Dispute,
                charge_id: self.charge_id.clone(),
                at: opened,
            });
        }
        marks
    }

    /// The case with a delivered notice removed.
    pub fn without_notice(&self, delivered: &Notice, now: DateTime<Utc>) -> ChargeCase {
        let mut case = self.clone();
        case.notices.retain(|notice| notice != delivered);
        case.updated_at = now;
        case.version += 1;
        case
    }
}

/// What the case makes of one allocation: its target state, or None when it already is.
fn target(
    allocation: &Allocation,
    reduction: i64,
    full_refund: bool,
    dispute: Option<(Outcome, &Dispute)>,
    case: &ChargeCase,
    event_id: &str,
    now: DateTime<Utc>,
) -> Option<Allocation> {
    if allocation.case_version >= case.version {
        return None;
    }
    let original = allocation.original_amount.cents;
    let mut next = allocation.clone();
    let left = original - reduction;
    next.refunded_cents = reduction;
    next.amount.cents = left;
    next.frozen_cents = 0;
    next.status = if reduction >= original || (full_refund && left == 0) {
        AllocationStatus::Refunded
    } else if reduction > 0 {
        AllocationStatus::AtRisk
    } else {
        AllocationStatus::Active
    };
    next.refunded_at = (reduction > 0).then_some(case.refunded_at).flatten();
    let mut reason = if reduction > 0 {
        format!(
            "charge {} refunded {} of {} cents: {reduction} of {original} taken",
            case.charge_id,
            case.refunded_cents(),
            case.amount.as_ref().map_or(0, |(amount, _)| *amount)
        )
    } else {
        String::from("no refund")
    };
    if let Some((outcome, dispute)) = dispute {
        next.dispute_id = Some(dispute.id.clone());
        next.disputed_at = Some(dispute.opened_at);
        match outcome {
            Outcome::Open | Outcome::Unresolved => {
                next.status = if left == 0 {
                    AllocationStatus::Refunded
                } else {
                    AllocationStatus::Disputed
                };
                next.frozen_cents = left;
                next.dispute_outcome =
                    (outcome == Outcome::Unresolved).then(|| dispute.status.clone());
                next.dispute_resolved_at = None;
                reason = format!(
                    "{reason}; dispute {} {} freezes it",
                    dispute.id,
                    dispute.state()
                );
            }
            Outcome::Released => {
                next.dispute_outcome = Some(dispute.status.clone());
                next.dispute_resolved_at = dispute.closed_at;
                reason = format!("{reason}; dispute {} closed {}", dispute.id, dispute.status);
            }
            Outcome::Lost => {
                next.status = AllocationStatus::Refunded;
                next.amount.cents = 0;
                next.refunded_cents = original;
                next.refunded_at = dispute.closed_at;
                next.dispute_outcome = Some(dispute.status.clone());
                next.dispute_resolved_at = dispute.closed_at;
                reason = format!(
                    "{reason}; dispute {} lost: all {original} taken",
                    dispute.id
                );
            }
        }
    }
    let unchanged = next.status == allocation.status
        && next.amount == allocation.amount
        && next.refunded_cents == allocation.refunded_cents
        && next.frozen_cents == allocation.frozen_cents
        && next.dispute_id == allocation.dispute_id
        && next.dispute_outcome == allocation.dispute_outcome
        && next.dispute_resolved_at == allocation.dispute_resolved_at
        && next.disputed_at == allocation.disputed_at
        && next.refunded_at == allocation.refunded_at;
    if unchanged {
        return None;
    }
    next.audit.push(AllocationAudit {
        at: now,
        event_id: event_id.to_owned(),
        from_status: allocation.status,
        to_status: next.status,
        from_cents: allocation.amount.cents,
        to_cents: next.amount.cents,
        reason,
    });
    next.case_version = case.version;
    next.updated_at = now;
    next.version += 1;
    Some(next)
}

/// The changes the case makes to the charge's allocations (any order in, by id out), each
/// with the audit entry saying why (`event_id`: the event being applied). Allocations of
/// each currency share the refund of their own credited total.
pub fn settle(
    case: &ChargeCase,
    allocations: &[Allocation],
    event_id: &str,
    now: DateTime<Utc>,
) -> Vec<(Allocation, Allocation)> {
    let mut sorted: Vec<&Allocation> = allocations
        .iter()
        .filter(|a| a.charge_id == case.charge_id)
        .collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut by_currency: BTreeMap<&Currency, Vec<&Allocation>> = BTreeMap::new();
    for allocation in sorted {
        by_currency
            .entry(&allocation.original_amount.currency)
            .or_default()
            .push(allocation);
    }
    let refunded = case.refunded_cents();
    let full_refund = case
        .amount
        .as_ref()
        .is_some_and(|(amount, _)| *amount > 0 && refunded >= *amount);
    let dispute = case.outcome();
    let mut changes = Vec::new();
    for group in by_currency.values() {
        let originals: Vec<i64> = group.iter().map(|a| a.original_amount.cents).collect();
        let funded: i64 = originals.iter().sum();
        let share = case
            .amount
            .as_ref()
            .and_then(|(amount, _)| refunded_share(funded, refunded, *amount))
            .unwrap_or(0);
        let reductions = proportional(share, &originals);
        for (allocation, reduction) in group.iter().zip(reductions) {
            if let Some(next) = target(
                allocation,
                reduction,
                full_refund,
                dispute,
                case,
                event_id,
                now,
            ) {
                changes.push(((*allocation).clone(), next));
            }
        }
    }
    changes
}

/// A new credit as its charge's case already has it (`others`: the charge's stored
/// allocations): reduced, frozen or zeroed as [`settle`] would make it, with the audit entry
/// "record", so that the one write recording it never makes payable what the case took.
pub fn credit_under(
    case: &ChargeCase,
    others: &[Allocation],
    credit: &Allocation,
    now: DateTime<Utc>,
) -> Allocation {
    let mut all: Vec<Allocation> = others
        .iter()
        .filter(|a| a.id != credit.id)
        .cloned()
        .collect();
    all.push(credit.clone());
    settle(case, &all, "record", now)
        .into_iter()
        .find(|(before, _)| before.id == credit.id)
        .map(|(_, mut after)| {
            // Still the first version of a new allocation.
            after.version = credit.version;
            after
        })
        .unwrap_or_else(|| credit.clone())
}

#[cfg(test)]
mod tests {
    use payouts_runtime::Money;
    use proptest::prelude::*;

    use super::*;

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + minute * 60, 0).unwrap()
    }

    fn allocations(amounts: &[i64]) -> Vec<Allocation> {
        amounts
            .iter()
            .enumerate()
            .map(|(i, cents)| {
                Allocation::credit(
                    &format!("a{i}"),
                    &format!("creator{}", i % 2),
                    "ch_1",
                    "payer",
                    Money::usd(*cents),
                    at(0),
                )
                .unwrap()
            })
            .collect()
    }

    /// `charge.refunded` as API versions from 2022-11-15 send it: no refunds list.
    fn refunded(amount_refunded: i64) -> ChargeNews {
        ChargeNews::Refunded {
            charge_id: "ch_1".into(),
            currency: Currency::usd(),
            amount: 1_000,
            amount_refunded,
            refunds: Vec::new(),
            refunds_complete: false,
        }
    }

    fn refund_list(refunds: &[(&str, i64, &str)]) -> Vec<RefundNews> {
        refunds
            .iter()
            .map(|(id, amount, status)| RefundNews {
                id: (*id).into(),
                charge_id: "ch_1".into(),
                amount: *amount,
                status: (*status).into(),
            })
            .collect()
    }

    fn refund(id: &str, amount: i64, status: &str) -> ChargeNews {
        ChargeNews::Refund(RefundNews {
            id: id.into(),
            charge_id: "ch_1".into(),
            amount,
            status: status.into(),
        })
    }

    /// `charge.refunded` with `amount_refunded` and the charge's refunds listed (API versions
    /// before 2022-11-15 expand them), every one of them (`has_more` false).
    fn charge_refunded(amount_refunded: i64, refunds: &[(&str, i64, &str)]) -> ChargeNews {
        ChargeNews::Refunded {
            charge_id: "ch_1".into(),
            currency: Currency::usd(),
            amount: 1_000,
            amount_refunded,
            refunds: refund_list(refunds),
            refunds_complete: true,
        }
    }

    /// Every order of `events`, each delivered twice.
    fn orders_with_duplicates<'a>(
        events: &[(&'a str, ChargeNews)],
    ) -> Vec<Vec<(&'a str, ChargeNews)>> {
        let mut orders: Vec<Vec<usize>> = vec![vec![]];
        for _ in 0..events.len() {
            orders = orders
                .into_iter()
                .flat_map(|order| {
                    (0..events.len())
                        .filter(|i| !order.contains(i))
                        .map(|i| [order.clone(), vec![i]].concat())
                        .collect::<Vec<_>>()
                })
                .collect();
        }
        orders
            .into_iter()
            .map(|order| {
                order
                    .iter()
                    .flat_map(|i| [events[*i].clone(), events[*i].clone()])
                    .collect()
            })
            .collect()
    }

    /// Defect 4: refund A of 100 fails, then refund B of 100 succeeds. Whether Stripe lowers
    /// `amount_refunded` when A fails (100 after B) or leaves it (200 after B), 100 is
    /// refunded, in any order of the events, each delivered twice, with the charge's refunds
    /// in its events (old API versions) or not (current ones).
    #[test]
    fn a_failed_refund_then_a_successful_one_refunds_the_second_whatever_amount_refunded_does() {
        let stripe = [("re_a", 100, "failed"), ("re_b", 100, "succeeded")];
        for after_b in [100, 200] {
            let listed = [
                ("evt_a", charge_refunded(100, &[("re_a", 100, "pending")])),
                ("evt_a_failed", refund("re_a", 100, "failed")),
                (
                    "evt_b",
                    charge_refunded(
                        after_b,
                        &[("re_b", 100, "succeeded"), ("re_a", 100, "failed")],
                    ),
                ),
            ];
            let unlisted = [
                ("evt_a", refunded(100)),
                ("evt_a_created", refund("re_a", 100, "pending")),
                ("evt_a_failed", refund("re_a", 100, "failed")),
                ("evt_b", refunded(after_b)),
            ];
            for events in [&listed[..], &unlisted[..]] {
                for sequence in orders_with_duplicates(events) {
                    let names: Vec<&str> = sequence.iter().map(|(id, _)| *id).collect();
                    let (case, after) = run_listed(&sequence, &[700, 300], &stripe);
                    assert_eq!(case.refunded_cents(), 100, "after B {after_b}: {names:?}");
                    let taken: i64 = after.iter().map(|a| a.refunded_cents).sum();
                    assert_eq!(taken, 100, "after B {after_b}: {names:?}");
                }
            }
        }
    }

    /// Stripe's list cannot be read: the charge stays reduced by what its events said (never
    /// less than what Stripe holds), and the listing, once read, settles it.
    #[test]
    fn an_unanswered_lookup_never_gives_earnings_back() {
        for after_b in [100, 200] {
            let events = [
                ("evt_a", refunded(100)),
                ("evt_a_failed", refund("re_a", 100, "failed")),
                ("evt_b", refunded(after_b)),
            ];
            let (case, _) = run(&events, &[1_000]);
            assert!(case.in_doubt());
            assert_eq!(case.refunded_cents(), after_b, "held at the highest claim");
            let settled: Vec<String> = case.claims.keys().cloned().collect();
            let listed = refund_list(&[("re_a", 100, "failed"), ("re_b", 100, "succeeded")]);
            let checked = case
                .with_listing(&listed, &settled, "evt_b", at(5), at(5))
                .unwrap();
            assert_eq!(checked.refunded_cents(), 100);
            assert!(!checked.in_doubt());
        }
        // A refund we know of that Stripe's late list does not show yet still counts.
        let (case, _) = run_listed(
            &[
                ("evt_c", refund("re_c", 300, "pending")),
                ("evt_r", refunded(300)),
            ],
            &[1_000],
            &[],
        );
        assert_eq!(case.refunded_cents(), 300);
    }

    /// The furthest status of a refund wins, whatever order its statuses arrive in.
    #[test]
    fn a_refunds_furthest_status_wins() {
        let histories: [(&[&str], i64); 6] = [
            (&["pending", "succeeded"], 250),
            (&["pending", "succeeded", "failed"], 0),
            (&["requires_action", "pending", "succeeded"], 250),
            (&["requires_action", "canceled"], 0),
            (&["pending", "failed"], 0),
            // A status Stripe adds later counts until a final one says otherwise.
            (&["pending", "something_new"], 250),
        ];
        for (history, refunded) in histories {
            let events: Vec<(String, ChargeNews)> = history
                .iter()
                .enumerate()
                .map(|(i, status)| (format!("evt_{i}"), refund("re_1", 250, status)))
                .collect();
            let named: Vec<(&str, ChargeNews)> = events
                .iter()
                .map(|(id, e)| (id.as_str(), e.clone()))
                .collect();
            for sequence in orders_with_duplicates(&named) {
                let (case, _) = run(&sequence, &[1_000]);
                assert_eq!(case.refunded_cents(), refunded, "{history:?}");
            }
        }
    }

    fn dispute(kind: DisputeEvent, status: &str) -> ChargeNews {
        ChargeNews::Dispute(DisputeNews {
            id: "dp_1".into(),
            charge_id: "ch_1".into(),
            amount: 1_000,
            currency: Currency::usd(),
            status: status.into(),
            reason: "fraudulent".into(),
            kind,
        })
    }

    /// Applies the events in order, settling after each as the service does; the case and
    /// the allocations at the end. Stripe's refund list is never read (every lookup fails).
    fn run(events: &[(&str, ChargeNews)], amounts: &[i64]) -> (ChargeCase, Vec<Allocation>) {
        run_with(events, amounts, None)
    }

    /// As [`run`], reading Stripe's refund list (`stripe`) after each event that leaves the
    /// case in doubt, as the service does.
    fn run_listed(
        events: &[(&str, ChargeNews)],
        amounts: &[i64],
        stripe: &[(&str, i64, &str)],
    ) -> (ChargeCase, Vec<Allocation>) {
        run_with(events, amounts, Some(&refund_list(stripe)))
    }

    fn run_with(
        events: &[(&str, ChargeNews)],
        amounts: &[i64],
        stripe: Option<&[RefundNews]>,
    ) -> (ChargeCase, Vec<Allocation>) {
        let mut case = ChargeCase::new("ch_1", at(0));
        let mut stored = allocations(amounts);
        for (minute, (id, news)) in events.iter().enumerate() {
            let when = at(minute as i64 + 1);
            if let Some(merged) = case.merge(id, news, when, at(100)) {
                case = merged;
            }
            if let Some(listed) = stripe.filter(|_| case.in_doubt()) {
                let settled: Vec<String> = case.claims.keys().cloned().collect();
                if let Some(next) = case.with_listing(listed, &settled, id, when, at(100)) {
                    case = next;
                }
                assert!(!case.in_doubt());
            }
            for (before, after) in settle(&case, &stored, id, at(100)) {
                assert_eq!(after.version, before.version + 1);
                let slot = stored.iter_mut().find(|a| a.id == before.id).unwrap();
                *slot = after;
            }
        }
        (case, stored)
    }

    /// What an allocation is for the money (not how it got there).
    fn money(allocations: &[Allocation]) -> Vec<(String, i64, i64, i64, AllocationStatus)> {
        allocations
            .iter()
            .map(|a| {
                (
                    a.id.clone(),
                    a.amount.cents,
                    a.refunded_cents,
                    a.frozen_cents,
                    a.status,
                )
            })
            .collect()
    }

    #[test]
    fn a_partial_refund_takes_its_exact_share_and_leaves_them_at_risk() {
        // 30% of a $10 charge that funded 333 + 333 + 334 = 1000.
        let (_, after) = run(&[("evt_1", refunded(300))], &[333, 333, 334]);
        let taken: i64 = after.iter().map(|a| a.refunded_cents).sum();
        assert_eq!(taken, 300);
        assert!(after.iter().all(|a| a.status == AllocationStatus::AtRisk));
        assert!(
            after
                .iter()
                .all(|a| a.amount.cents + a.refunded_cents == a.original_amount.cents)
        );
        assert_eq!(after[0].audit.len(), 1);
        assert_eq!(after[0].audit[0].event_id, "evt_1");
        assert_eq!(after[0].audit[0].from_status, AllocationStatus::Active);
        assert_eq!(after[0].refunded_at, Some(at(1)));
    }

    #[test]
    fn a_second_refund_applies_the_difference_and_an_older_one_late_changes_nothing() {
        let (_, twice) = run(
            &[("evt_1", refunded(300)), ("evt_2", refunded(500))],
            &[600, 400],
        );
        assert_eq!(money(&twice)[0].2 + money(&twice)[1].2, 500);
        let (_, late) = run(
            &[("evt_2", refunded(500)), ("evt_1", refunded(300))],
            &[600, 400],
        );
        assert_eq!(money(&twice), money(&late));
        assert_eq!(late[0].audit.len(), 1, "the late event changed nothing");
    }

    #[test]
    fn a_full_refund_zeroes_them_and_a_failed_refund_gives_back_what_it_took() {
        let (_, full) = run(&[("evt_1", refunded(1_000))], &[700, 300]);
        assert!(
            full.iter()
                .all(|a| a.status == AllocationStatus::Refunded && a.amount.cents == 0)
        );
        let (case, restored) = run_listed(
            &[
                ("evt_1", refunded(400)),
                ("evt_2", refund("re_1", 400, "failed")),
            ],
            &[700, 300],
            &[("re_1", 400, "failed")],
        );
        assert_eq!(case.refunded_cents(), 0);
        assert!(
            restored
                .iter()
                .all(|a| a.status == AllocationStatus::Active)
        );
        assert_eq!(money(&restored), money(&allocations(&[700, 300])));
        // A failed refund stays failed whatever comes after (Stripe's list read before the
        // failure still says succeeded).
        let (case, _) = run_listed(
            &[
                ("evt_2", refund("re_1", 400, "failed")),
                ("evt_3", refund("re_1", 400, "succeeded")),
                ("evt_1", refunded(400)),
            ],
            &[700, 300],
            &[("re_1", 400, "succeeded")],
        );
        assert_eq!(case.refunded_cents(), 0);
    }

    #[test]
    fn a_dispute_freezes_everything_and_its_outcome_restores_or_zeroes_it() {
        let (_, open) = run(
            &[("evt_1", dispute(DisputeEvent::Created, "needs_response"))],
            &[700, 300],
        );
        for a in &open {
            assert_eq!(a.status, AllocationStatus::Disputed);
            assert_eq!(a.frozen_cents, a.original_amount.cents);
            assert_eq!(a.dispute_id.as_deref(), Some("dp_1"));
        }
        let (_, won) = run(
            &[
                ("evt_1", dispute(DisputeEvent::Created, "needs_response")),
                ("evt_2", dispute(DisputeEvent::Closed, "won")),
            ],
            &[700, 300],
        );
        for a in &won {
            assert_eq!(a.status, AllocationStatus::Active);
            assert_eq!(a.frozen_cents, 0);
            assert_eq!(a.dispute_outcome.as_deref(), Some("won"));
            assert_eq!(a.dispute_resolved_at, Some(at(2)));
        }
        let (_, lost) = run(
            &[
                ("evt_1", dispute(DisputeEvent::Created, "needs_response")),
                ("evt_2", dispute(DisputeEvent::Closed, "lost")),
            ],
            &[700, 300],
        );
        for a in &lost {
            assert_eq!(a.status, AllocationStatus::Refunded);
            assert_eq!(a.amount.cents, 0);
            assert_eq!(a.refunded_cents, a.original_amount.cents);
        }
        let (_, inquiry) = run(
            &[("evt_1", dispute(DisputeEvent::Closed, "warning_closed"))],
            &[700],
        );
        assert_eq!(inquiry[0].status, AllocationStatus::Active);
        let (_, odd) = run(
            &[("evt_1", dispute(DisputeEvent::Closed, "something_new"))],
            &[700],
        );
        assert_eq!(
            odd[0].status,
            AllocationStatus::Disputed,
            "unknown is not a no"
        );
    }

    #[test]
    fn an_event_is_merged_once() {
        let case = ChargeCase::new("ch_1", at(0));
        let once = case.merge("evt_1", &refunded(100), at(1), at(1)).unwrap();
        assert!(once.merge("evt_1", &refunded(100), at(1), at(2)).is_none());
        assert_eq!(once.notices.len(), 1);
        assert_eq!(once.notices[0].kind, NoticeKind::RefundProcessed);
    }

    #[test]
    fn each_out_of_order_pair_ends_as_the_right_order() {
        let events = [
            ("evt_r1", refunded(250)),
            ("evt_r2", refunded(600)),
            ("evt_f", refund("re_2", 350, "failed")),
            ("evt_dc", dispute(DisputeEvent::Created, "needs_response")),
            ("evt_du", dispute(DisputeEvent::Updated, "under_review")),
            (
                "evt_fw",
                dispute(DisputeEvent::FundsWithdrawn, "needs_response"),
            ),
            ("evt_won", dispute(DisputeEvent::Closed, "won")),
            ("evt_lost", dispute(DisputeEvent::Closed, "lost")),
        ];
        for first in 0..events.len() {
            for second in first + 1..events.len() {
                // The lost and won closings are different histories, not an order.
                if events[first].0 == "evt_won" && events[second].0 == "evt_lost" {
                    continue;
                }
                let right = [events[first].clone(), events[second].clone()];
                let wrong = [events[second].clone(), events[first].clone()];
                let (_, a) = run(&right, &[500, 300, 200]);
                let (_, b) = run(&wrong, &[500, 300, 200]);
                assert_eq!(money(&a), money(&b), "{} then {}", right[0].0, right[1].0);
            }
        }
    }

    #[test]
    fn a_refund_after_a_lost_dispute_changes_nothing() {
        let (_, lost) = run(
            &[
                ("evt_1", dispute(DisputeEvent::Closed, "lost")),
                ("evt_2", refunded(1_000)),
            ],
            &[700, 300],
        );
        assert!(
            lost.iter()
                .all(|a| a.amount.cents == 0 && a.refunded_cents == a.original_amount.cents)
        );
        assert_eq!(lost[0].audit.len(), 1);
    }

    #[test]
    fn events_parse_from_stripe_shapes_and_bad_ones_are_named() {
        let charge = serde_json::json!({
            "object": "charge", "id": "ch_1", "amount": 1000, "amount_refunded": 300,
            "currency": "usd",
            "refunds": {"object": "list", "data": [
                {"object": "refund", "id": "re_1", "amount": 300, "charge": "ch_1", "status": "succeeded"}
            ]}
        });
        let news = parse("charge.refunded", &charge).unwrap();
        assert_eq!(news.charge_id(), "ch_1");
        let ChargeNews::Refunded { refunds, .. } = news else {
            panic!()
        };
        assert_eq!(refunds.len(), 1);
        let dispute = serde_json::json!({
            "object": "dispute", "id": "dp_1", "charge": "ch_1", "amount": 1000,
            "currency": "usd", "status": "lost", "reason": "fraudulent"
        });
        let ChargeNews::Dispute(d) = parse("charge.dispute.closed", &dispute).unwrap() else {
            panic!()
        };
        assert_eq!(d.kind, DisputeEvent::Closed);
        let error = parse("charge.dispute.created", &charge).unwrap_err();
        assert!(
            error.message().contains("not a dispute"),
            "{}",
            error.message()
        );
        let error = parse(
            "charge.refunded",
            &serde_json::json!({"object":"charge","id":"ch_1"}),
        )
        .unwrap_err();
        assert!(error.message().contains("amount"), "{}", error.message());
    }

    /// Refund events alone do not say the charge's amount: the case needs it before any
    /// share is taken, and once Stripe's charge gives it the share is the refund's part of
    /// the charge (500 of 2000 takes a quarter of 600 + 400), as a `charge.refunded` would.
    #[test]
    fn a_partially_captured_charge_shares_refunds_against_what_it_took() {
        // Authorised 1000, captured 600, funding 300 + 200; refunded in full (600).
        let mut object = payouts_runtime::stripe_dev::fixture("charge");
        object["id"] = "ch_1".into();
        object["amount"] = 1_000.into();
        object["amount_captured"] = 600.into();
        object["amount_refunded"] = 600.into();
        object["refunded"] = true.into();
        let news = parse("charge.refunded", &object).unwrap();
        let (_, after) = run(&[("evt_1", news)], &[300, 200]);
        let left: Vec<i64> = after.iter().map(|a| a.amount.cents).collect();
        assert_eq!(
            left,
            [0, 0],
            "a full refund of what was captured takes everything"
        );
        // Half of what was captured: half of each share.
        object["amount_refunded"] = 300.into();
        object["refunded"] = false.into();
        let news = parse("charge.refunded", &object).unwrap();
        let (_, after) = run(&[("evt_1", news)], &[300, 200]);
        let left: Vec<i64> = after.iter().map(|a| a.amount.cents).collect();
        assert_eq!(left, [150, 100]);
        // Read from Stripe (a refund event first): the same base.
        let mut amounts = charge_amounts(&object).unwrap();
        assert_eq!((amounts.amount, amounts.amount_captured), (1_000, 600));
        amounts.charge_id = "ch_1".into();
        let (case, _) = run(&[("evt_1", refund("re_1", 300, "succeeded"))], &[300, 200]);
        let known = case.with_amount(&amounts, at(2)).unwrap();
        assert_eq!(known.amount, Some((600, Currency::usd())));
    }

    #[test]
    fn a_refund_before_its_charge_needs_the_charges_amount() {
        let first = [("evt_1", refund("re_1", 500, "succeeded"))];
        let (case, before) = run(&first, &[600, 400]);
        assert!(case.needs_amount());
        assert_eq!(
            money(&before),
            money(&allocations(&[600, 400])),
            "no share yet"
        );
        let mut stripe = charge_amounts(&payouts_runtime::stripe_dev::fixture("charge")).unwrap();
        assert_eq!(stripe.currency, Currency::usd());
        stripe.charge_id = "ch_other".into();
        assert!(
            case.with_amount(&stripe, at(2)).is_none(),
            "another charge's"
        );
        stripe.charge_id = "ch_1".into();
        stripe.amount = 2_000;
        stripe.amount_captured = 2_000;
        let known = case.with_amount(&stripe, at(2)).unwrap();
        assert!(!known.needs_amount());
        assert_eq!(known.amount, Some((2_000, Currency::usd())));
        assert_eq!(known.version, case.version + 1);
        assert!(known.with_amount(&stripe, at(3)).is_none(), "read once");
        let after: Vec<Allocation> = settle(&known, &before, "evt_1", at(2))
            .into_iter()
            .map(|(_, after)| after)
            .collect();
        let taken: Vec<i64> = after.iter().map(|a| a.refunded_cents).collect();
        assert_eq!(taken, [150, 100]);
        // The same as when a charge event told the amount.
        let mut told = refunded(500);
        if let ChargeNews::Refunded { amount, .. } = &mut told {
            *amount = 2_000;
        }
        let (_, charged) = run(
            &[("evt_1", refund("re_1", 500, "succeeded")), ("evt_2", told)],
            &[600, 400],
        );
        assert_eq!(money(&after), money(&charged));
        // Nothing refunded (a failed refund), nothing to share: no need to ask.
        let (failed, _) = run(&[("evt_1", refund("re_1", 500, "failed"))], &[600, 400]);
        assert!(!failed.needs_amount());
        // A charge object without its amounts is named.
        let error =
            charge_amounts(&serde_json::json!({"object": "charge", "id": "ch_1"})).unwrap_err();
        assert!(error.message().contains("amount"), "{}", error.message());
    }

    fn any_event() -> impl Strategy<Value = ChargeNews> {
        prop_oneof![
            (0i64..=1_000).prop_map(refunded),
            (0i64..=1_000, prop::bool::ANY).prop_map(|(cents, failed)| refund(
                "re_x",
                cents,
                if failed { "failed" } else { "succeeded" }
            )),
            Just(dispute(DisputeEvent::Created, "needs_response")),
            Just(dispute(DisputeEvent::Updated, "under_review")),
            Just(dispute(DisputeEvent::Closed, "won")),
        ]
    }

    /// A refund's life in Stripe: its amount and the statuses it went through.
    fn any_refund_history() -> impl Strategy<Value = (i64, Vec<&'static str>)> {
        (
            1i64..=300,
            prop_oneof![
                Just(vec!["succeeded"]),
                Just(vec!["pending"]),
                Just(vec!["pending", "succeeded"]),
                Just(vec!["pending", "failed"]),
                Just(vec!["pending", "succeeded", "failed"]),
                Just(vec!["succeeded", "failed"]),
                Just(vec!["requires_action", "canceled"]),
                Just(vec!["requires_action", "pending", "succeeded"]),
            ],
        )
    }

    proptest! {
        /// Refunds living their lives in Stripe, reported by refund events and by charge
        /// events (with or without the refunds list) whose `amount_refunded` either drops when
        /// a refund fails or does not, all shuffled and some twice: once Stripe's list is
        /// read, the refunded amount is the sum of the refunds that did not fail or cancel.
        #[test]
        fn refunded_is_what_the_refunds_add_up_to(
            histories in prop::collection::vec(any_refund_history(), 1..4),
            lowers in any::<bool>(),
            listed in any::<bool>(),
            seed in any::<u64>(),
        ) {
            // Stripe's timeline: each refund's statuses in turn, a charge event after each.
            let mut current: Vec<(String, i64, &str)> = Vec::new();
            let mut events: Vec<(String, ChargeNews)> = Vec::new();
            for (n, (amount, history)) in histories.iter().enumerate() {
                let id = format!("re_{n}");
                for status in history {
                    match current.iter_mut().find(|(known, _, _)| *known == id) {
                        Some(refund) => refund.2 = status,
                        None => current.push((id.clone(), *amount, status)),
                    }
                    events.push((format!("evt_{}", events.len()), refund(&id, *amount, status)));
                    let amount_refunded: i64 = current
                        .iter()
                        .filter(|(_, _, status)| {
                            if lowers { refund_counts(status) } else { *status != "canceled" }
                        })
                        .map(|(_, cents, _)| cents)
                        .sum();
                    let list: Vec<(&str, i64, &str)> =
                        current.iter().map(|(id, cents, status)| (id.as_str(), *cents, *status)).collect();
                    let charge = if listed {
                        charge_refunded(amount_refunded, &list)
                    } else {
                        refunded(amount_refunded)
                    };
                    events.push((format!("evt_{}", events.len()), charge));
                }
            }
            let truth: i64 = current
                .iter()
                .filter(|(_, _, status)| refund_counts(status))
                .map(|(_, cents, _)| cents)
                .sum();
            let mut shuffled = events.clone();
            let mut state = seed;
            for i in (1..shuffled.len()).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (state >> 33) as usize % (i + 1));
            }
            let twice = shuffled[(state >> 7) as usize % shuffled.len()].clone();
            shuffled.push(twice);
            let stripe: Vec<(&str, i64, &str)> =
                current.iter().map(|(id, cents, status)| (id.as_str(), *cents, *status)).collect();
            let borrowed: Vec<(&str, ChargeNews)> =
                shuffled.iter().map(|(id, e)| (id.as_str(), e.clone())).collect();
            let (case, after) = run_listed(&borrowed, &[600, 400], &stripe);
            prop_assert_eq!(case.refunded_cents(), truth);
            let taken: i64 = after.iter().map(|a| a.refunded_cents).sum();
            prop_assert_eq!(taken, truth);
            // Without Stripe's list the charge is never less reduced than the truth.
            let (unchecked, _) = run(&borrowed, &[600, 400]);
            prop_assert!(unchecked.refunded_cents() >= truth);
        }

        /// Any order of the same events ends in the same money, sums exact, nothing negative.
        #[test]
        fn order_never_matters(
            events in prop::collection::vec(any_event(), 1..6),
            amounts in prop::collection::vec(1i64..10_000, 1..6),
            seed in any::<u64>(),
        ) {
            let named: Vec<(String, ChargeNews)> = events
                .into_iter()
                .enumerate()
                .map(|(i, e)| (format!("evt_{i}"), e))
                .collect();
            let mut shuffled = named.clone();
            // A deterministic shuffle from the seed.
            let mut state = seed;
            for i in (1..shuffled.len()).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (state >> 33) as usize % (i + 1));
            }
            fn borrow(list: &[(String, ChargeNews)]) -> Vec<(&str, ChargeNews)> {
                list.iter().map(|(id, e)| (id.as_str(), e.clone())).collect()
            }
            let (case, a) = run(&borrow(&named), &amounts);
            let (_, b) = run(&borrow(&shuffled), &amounts);
            prop_assert_eq!(money(&a), money(&b));
            let funded: i64 = amounts.iter().sum();
            let taken: i64 = a.iter().map(|x| x.refunded_cents).sum();
            let lost = matches!(case.outcome(), Some((Outcome::Lost, _)));
            // Refund events alone do not say the charge's amount: nothing to take a share of
            // until a charge event does.
            if !lost && case.amount.is_some() {
                prop_assert_eq!(taken, refunded_share(funded, case.refunded_cents(), 1_000).unwrap());
            }
            for x in &a {
                prop_assert!(x.amount.cents >= 0 && x.refunded_cents >= 0 && x.frozen_cents >= 0);
                prop_assert_eq!(x.amount.cents + x.refunded_cents, x.original_amount.cents);
            }
        }
    }
}
