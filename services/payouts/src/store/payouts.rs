//! `usdPayouts` (with each payout's audit trail embedded) and the `payoutAuditLogs`
//! projection: the payout repository, embedded and MongoDB.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::bson::{self, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, IndexModel};
use payouts_runtime::store::{
    after_cursor, find_many, from_bson_time, is_duplicate_key, mongo_error, to_bson_time,
};
use payouts_runtime::{Currency, Money, ServiceError};
use serde::{Deserialize, Serialize};

use crate::payout::{
    AuditEntry, OwedAlert, Payout, PayoutStatus, QuotaRelease, ReversalIntent, ReversalState,
};

/// What inserting a payout did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    New,
    /// The user already has a payout under this idempotency key.
    Existing(Box<Payout>),
}

/// Pending payouts whose transfer's outcome is unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnknownOutcomes {
    pub count: u64,
    /// The earliest `unknown_since` among them.
    pub oldest_since: Option<DateTime<Utc>>,
}

/// Storage of payouts, written by versioned compare-and-set.
#[async_trait]
pub trait PayoutRepository: Send + Sync + 'static {
    /// Stores a new payout unless the user has one under the same idempotency key.
    async fn insert(&self, payout: &Payout) -> Result<Inserted, ServiceError>;

    async fn get(&self, payout_id: &str) -> Result<Option<Payout>, ServiceError>;

    /// The user's payout under an idempotency key.
    async fn find_by_key(
        &self,
        user_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<Payout>, ServiceError>;

    async fn find_by_transfer(&self, transfer_id: &str) -> Result<Option<Payout>, ServiceError>;

    /// Payouts to a connected account in one of `statuses`, oldest first.
    async fn by_destination(
        &self,
        destination: &str,
        statuses: &[PayoutStatus],
    ) -> Result<Vec<Payout>, ServiceError>;

    /// A user's payouts (every user's when `user_id` is `None`: admin listings), newest
    /// first, optionally in one status, after a cursor (`(requested_at, id)` of the last
    /// payout of the previous page). Payouts still being admitted are left out.
    async fn list_by_user(
        &self,
        user_id: Option<&str>,
        status: Option<PayoutStatus>,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Payout>, ServiceError>;

    /// Payouts in `status` whose `next_retry_at` has come, earliest first.
    async fn due(
        &self,
        status: PayoutStatus,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Payout>, ServiceError>;

    /// Payouts in `status` by id, after the id `after` (a page of them all).
    async fn in_status(
        &self,
        status: PayoutStatus,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Payout>, ServiceError>;

    /// Pending payouts whose transfer's outcome is unknown (in flight, or unanswered): how
    /// many, and since when the oldest has been. For the gauges (every 15 seconds): by
    /// default a walk through the pending payouts; MongoDB answers it with two queries.
    async fn unknown_outcomes(&self) -> Result<UnknownOutcomes, ServiceError> {
        let mut unknown = UnknownOutcomes::default();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .in_status(PayoutStatus::Pending, after.as_deref(), 500)
                .await?;
            let Some(last) = page.last() else {
                return Ok(unknown);
            };
            after = Some(last.id.clone());
            for payout in page.iter().filter(|payout| payout.outcome_unknown) {
                unknown.count += 1;
                if let Some(since) = payout.unknown_since {
                    unknown.oldest_since =
                        Some(unknown.oldest_since.map_or(since, |o| o.min(since)));
                }
            }
        }
    }

    /// Payouts whose owed side effects are due (`effects_due_at` has come), earliest first.
    async fn due_effects(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Payout>, ServiceError>;

    /// Replaces the payout if its stored version is `expected_version`; Conflict otherwise.
    async fn replace(&self, payout: &Payout, expected_version: i64) -> Result<(), ServiceError>;

    /// Deletes a payout still at `expected_version` (a refused admission).
    async fn delete(&self, payout_id: &str, expected_version: i64) -> Result<(), ServiceError>;

    /// Writes audit entries to the `payoutAuditLogs` projection (idempotent by entry id).
    async fn project_audit(&self, entries: &[AuditEntry]) -> Result<(), ServiceError>;

    /// What the `payoutAuditLogs` projection holds for a payout, oldest first.
    async fn projected_audit(&self, payout_id: &str) -> Result<Vec<AuditEntry>, ServiceError>;
}

/// An audit entry's position in its payout's trail (its id is "<payout id>:<position>").
fn position(entry: &AuditEntry) -> i64 {
    entry
        .id
        .rsplit_once(':')
        .and_then(|(_, position)| position.parse().ok())
        .unwrap_or(0)
}

fn stale(payout_id: &str) -> ServiceError {
    ServiceError::conflict(format!("payout {payout_id} was changed concurrently"))
}

fn newest_first(a: &Payout, b: &Payout) -> std::cmp::Ordering {
    b.requested_at
        .cmp(&a.requested_at)
        .then_with(|| b.id.cmp(&a.id))
}

/// Embedded store: payouts by id, with the same indexes the MongoDB store declares (the
/// user's idempotency key, the transfer, the user's history by time, the destination, the
/// worker's due times), so no call's cost grows with how many payouts were ever made.
#[derive(Debug, Default)]
pub struct MemoryPayouts {
    state: Mutex<State>,
    audit: Mutex<BTreeMap<String, AuditEntry>>,
}

type Time = DateTime<Utc>;

#[derive(Debug, Default)]
struct State {
    payouts: BTreeMap<String, Payout>,
    by_key: BTreeMap<(String, String), String>,
    by_transfer: BTreeSet<(String, String)>,
    by_user: BTreeSet<(String, Time, String)>,
    by_destination: BTreeSet<(String, String)>,
    by_status: BTreeSet<(PayoutStatus, String)>,
    due: BTreeSet<(PayoutStatus, Time, String)>,
    effects_due: BTreeSet<(Time, String)>,
}

impl State {
    /// Adds (`add`) or removes the index entries of `payout`.
    fn index(&mut self, payout: &Payout, add: bool) {
        fn apply<K: Ord>(set: &mut BTreeSet<K>, key: K, add: bool) {
            if add {
                set.insert(key);
            } else {
                set.remove(&key);
            }
        }
        let id = payout.id.clone();
        let key = (payout.user_id.clone(), payout.idempotency_key.clone());
        if add {
            self.by_key.insert(key, id.clone());
        } else if self.by_key.get(&key) == Some(&id) {
            self.by_key.remove(&key);
        }
        if let Some(transfer) = &payout.stripe_transfer_id {
            apply(&mut self.by_transfer, (transfer.clone(), id.clone()), add);
        }
        let user = (payout.user_id.clone(), payout.requested_at, id.clone());
        apply(&mut self.by_user, user, add);
        let destination = (payout.destination.clone(), id.clone());
        apply(&mut self.by_destination, destination, add);
        apply(&mut self.by_status, (payout.status, id.clone()), add);
        if let Some(at) = payout.next_retry_at {
            apply(&mut self.due, (payout.status, at, id.clone()), add);
        }
        if let Some(at) = payout.effects_due_at {
            apply(&mut self.effects_due, (at, id), add);
        }
    }

    fn put(&mut self, payout: Payout) {
        if let Some(old) = self.payouts.remove(&payout.id) {
            self.index(&old, false);
        }
        self.index(&payout, true);
        self.payouts.insert(payout.id.clone(), payout);
    }

    fn remove(&mut self, payout_id: &str) {
        if let Some(old) = self.payouts.remove(payout_id) {
            self.index(&old, false);
        }
    }

    fn find_by_key(&self, user_id: &str, idempotency_key: &str) -> Option<&Payout> {
        let id = self
            .by_key
            .get(&(user_id.to_owned(), idempotency_key.to_owned()))?;
        self.payouts.get(id)
    }

    fn cloned(&self, ids: impl Iterator<Item = String>) -> Vec<Payout> {
        ids.filter_map(|id| self.payouts.get(&id).cloned())
            .collect()
    }
}

impl MemoryPayouts {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every payout, by id (a snapshot for invariant checks in tests and the simulation).
    pub fn all(&self) -> Vec<Payout> {
        self.lock().payouts.values().cloned().collect()
    }
}

#[async_trait]
impl PayoutRepository for MemoryPayouts {
    async fn insert(&self, payout: &Payout) -> Result<Inserted, ServiceError> {
        let mut state = self.lock();
        if let Some(existing) = state.find_by_key(&payout.user_id, &payout.idempotency_key) {
            return Ok(Inserted::Existing(Box::new(existing.clone())));
        }
        if state.payouts.contains_key(&payout.id) {
            return Err(ServiceError::already_exists(format!(
                "payout {} exists",
                payout.id
            )));
        }
        state.put(payout.clone());
        Ok(Inserted::New)
    }

    async fn get(&self, payout_id: &str) -> Result<Option<Payout>, ServiceError> {
        Ok(self.lock().payouts.get(payout_id).cloned())
    }

    async fn find_by_key(
        &self,
        user_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<Payout>, ServiceError> {
        Ok(self.lock().find_by_key(user_id, idempotency_key).cloned())
    }

    async fn find_by_transfer(&self, transfer_id: &str) -> Result<Option<Payout>, ServiceError> {
        let state = self.lock();
        let found = state
            .by_transfer
            .range((transfer_id.to_owned(), String::new())..)
            .next()
            .filter(|(transfer, _)| transfer == transfer_id)
            .and_then(|(_, id)| state.payouts.get(id).cloned());
        Ok(found)
    }

    async fn by_destination(
        &self,
        destination: &str,
        statuses: &[PayoutStatus],
    ) -> Result<Vec<Payout>, ServiceError> {
        let state = self.lock();
        let ids = state
            .by_destination
            .range((destination.to_owned(), String::new())..)
            .take_while(|(stored, _)| stored == destination)
            .map(|(_, id)| id.clone());
        let mut found: Vec<Payout> = state
            .cloned(ids)
            .into_iter()
            .filter(|p| statuses.contains(&p.status))
            .collect();
        found.sort_by(|a, b| newest_first(b, a));
        Ok(found)
    }

    async fn list_by_user(
        &self,
        user_id: Option<&str>,
        status: Option<PayoutStatus>,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Payout>, ServiceError> {
        let state = self.lock();
        let Some(user_id) = user_id else {
            // Every user's: an admin listing, paged and rare; filtered in memory.
            let mut found: Vec<&Payout> = state
                .payouts
                .values()
                .filter(|p| p.status != PayoutStatus::Admitting)
                .filter(|p| status.is_none_or(|status| p.status == status))
                .filter(|p| {
                    after
                        .as_ref()
                        .is_none_or(|(at, id)| (p.requested_at, &p.id) < (*at, id))
                })
                .collect();
            found.sort_by(|a, b| (b.requested_at, &b.id).cmp(&(a.requested_at, &a.id)));
            return Ok(found.into_iter().take(limit).cloned().collect());
        };
        // The user's history is one key range; newest first is that range backwards, from
        // just before the cursor.
        let lower = Bound::Included((user_id.to_owned(), Time::MIN_UTC, String::new()));
        let upper = match &after {
            Some((at, id)) => Bound::Excluded((user_id.to_owned(), *at, id.clone())),
            None => Bound::Included((user_id.to_owned(), Time::MAX_UTC, String::new())),
        };
        let mut found = Vec::new();
        for (_, _, id) in state.by_user.range((lower, upper)).rev() {
            if found.len() == limit {
                break;
            }
            let Some(payout) = state.payouts.get(id) else {
                continue;
            };
            if payout.status != PayoutStatus::Admitting
                && status.is_none_or(|status| payout.status == status)
            {
                found.push(payout.clone());
            }
        }
        Ok(found)
    }

    async fn due(
        &self,
        status: PayoutStatus,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Payout>, ServiceError> {
        let state = self.lock();
        let ids = state
            .due
            .range((status, Time::MIN_UTC, String::new())..)
            .take_while(|(stored, at, _)| *stored == status && *at <= now)
            .take(limit)
            .map(|(_, _, id)| id.clone());
        Ok(state.cloned(ids))
    }

    async fn in_status(
        &self,
        status: PayoutStatus,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Payout>, ServiceError> {
        let state = self.lock();
        let start = match after {
            Some(after) => Bound::Excluded((status, after.to_owned())),
            None => Bound::Included((status, String::new())),
        };
        let ids = state
            .by_status
            .range((start, Bound::Unbounded))
            .take_while(|(stored, _)| *stored == status)
            .take(limit)
            .map(|(_, id)| id.clone());
        Ok(state.cloned(ids))
    }

    async fn due_effects(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Payout>, ServiceError> {
        let state = self.lock();
        let ids = state
            .effects_due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .take(limit)
            .map(|(_, id)| id.clone());
        Ok(state.cloned(ids))
    }

    async fn replace(&self, payout: &Payout, expected_version: i64) -> Result<(), ServiceError> {
        let mut state = self.lock();
        match state.payouts.get(&payout.id) {
            Some(stored) if stored.version == expected_version => {
                state.put(payout.clone());
                Ok(())
            }
            _ => Err(stale(&payout.id)),
        }
    }

    async fn delete(&self, payout_id: &str, expected_version: i64) -> Result<(), ServiceError> {
        let mut state = self.lock();
        match state.payouts.get(payout_id) {
            Some(stored) if stored.version == expected_version => {
                state.remove(payout_id);
                Ok(())
            }
            _ => Err(stale(payout_id)),
        }
    }

    async fn project_audit(&self, entries: &[AuditEntry]) -> Result<(), ServiceError> {
        let mut audit = self
            .audit
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for entry in entries {
            audit
                .entry(entry.id.clone())
                .or_insert_with(|| entry.clone());
        }
        Ok(())
    }

    async fn projected_audit(&self, payout_id: &str) -> Result<Vec<AuditEntry>, ServiceError> {
        let audit = self
            .audit
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Entry ids are "<payout id>:<position>": the payout's entries are one key range.
        let prefix = format!("{payout_id}:");
        let mut found: Vec<AuditEntry> = audit
            .range(prefix.clone()..)
            .take_while(|(id, _)| id.starts_with(&prefix))
            .map(|(_, entry)| entry)
            .filter(|entry| entry.payout_id == payout_id)
            .cloned()
            .collect();
        found.sort_by_key(position);
        Ok(found)
    }
}

/// MongoDB store: `usdPayouts` and the `payoutAuditLogs` projection.
#[derive(Debug, Clone)]
pub struct MongoPayouts {
    payouts: Collection<PayoutDocument>,
    audit: Collection<AuditDocument>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PayoutDocument {
    #[serde(rename = "_id")]
    id: String,
    user_id: String,
    amount_cents: i64,
    currency: String,
    status: String,
    idempotency_key: String,
    destination: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stripe_transfer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    destination_payment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stripe_payout_id: Option<String>,
    approval_required: bool,
    #[serde(default)]
    held: bool,
    flags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hold_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hold_metadata_json: Option<String>,
    attempt: i64,
    retry_count: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_retry_at: Option<bson::DateTime>,
    #[serde(default)]
    work_attempts: i64,
    #[serde(default)]
    parked: bool,
    outcome_unknown: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unknown_since: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    failure_reason: Option<String>,
    amount_reversed_cents: i64,
    requested_at: bson::DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    completed_at: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    webhook_processed_at: Option<bson::DateTime>,
    updated_at: bson::DateTime,
    #[serde(default)]
    failed_transfer_ids: Vec<String>,
    #[serde(default)]
    stray_transfer_ids: Vec<String>,
    #[serde(default)]
    stray_reversed_ids: Vec<String>,
    #[serde(default)]
    reversal_intents: Vec<ReversalIntentDocument>,
    applied_events: Vec<String>,
    audit_log: Vec<AuditDocument>,
    #[serde(default)]
    audit_projected: i64,
    #[serde(default)]
    quota: QuotaDocument,
    #[serde(default)]
    owed_alerts: Vec<AlertDocument>,
    #[serde(default)]
    raised_alerts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    effects_due_at: Option<bson::DateTime>,
    #[serde(default)]
    effects_attempts: i64,
    #[serde(default)]
    claims: i64,
    #[serde(default)]
    bank_check_owed: bool,
    version: i64,
}

/// An admin's reversal intent (see [`ReversalIntent`]).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReversalIntentDocument {
    id: String,
    client_key: String,
    requested_by: String,
    cents: i64,
    notes: String,
    transfer_id: String,
    created_at: bson::DateTime,
    last_sent_at: bson::DateTime,
    /// pending | unknown | succeeded | refused.
    state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reversal_id: Option<String>,
    /// Why it is unknown or refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

impl From<&ReversalIntent> for ReversalIntentDocument {
    fn from(i: &ReversalIntent) -> Self {
        let (reversal_id, detail) = match &i.state {
            ReversalState::Pending => (None, None),
            ReversalState::Unknown { message } => (None, Some(message.clone())),
            ReversalState::Succeeded { reversal_id } => (Some(reversal_id.clone()), None),
            ReversalState::Refused { reason } => (None, Some(reason.clone())),
        };
        Self {
            id: i.id.clone(),
            client_key: i.client_key.clone(),
            requested_by: i.requested_by.clone(),
            cents: i.cents,
            notes: i.notes.clone(),
            transfer_id: i.transfer_id.clone(),
            created_at: to_bson_time(i.created_at),
            last_sent_at: to_bson_time(i.last_sent_at),
            state: i.state.as_str().to_owned(),
            reversal_id,
            detail,
        }
    }
}

impl ReversalIntentDocument {
    fn into_intent(self, payout_id: &str) -> Result<ReversalIntent, ServiceError> {
        let detail = self.detail.unwrap_or_default();
        let state = match (self.state.as_str(), self.reversal_id) {
            ("pending", _) => ReversalState::Pending,
            ("unknown", _) => ReversalState::Unknown { message: detail },
            ("succeeded", Some(reversal_id)) => ReversalState::Succeeded { reversal_id },
            ("refused", _) => ReversalState::Refused { reason: detail },
            _ => return Err(corrupt(payout_id, "a bad reversal intent state")),
        };
        Ok(ReversalIntent {
            id: self.id,
            client_key: self.client_key,
            requested_by: self.requested_by,
            cents: self.cents,
            notes: self.notes,
            transfer_id: self.transfer_id,
            created_at: from_bson_time(self.created_at),
            last_sent_at: from_bson_time(self.last_sent_at),
            state,
        })
    }
}

/// What the payout owes the limits service, and what it confirmed.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QuotaDocument {
    target_cents: i64,
    sequence: i64,
    confirmed_cents: i64,
    confirmed_sequence: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlertDocument {
    key: String,
    #[serde(rename = "type")]
    kind: String,
    title: String,
    description: String,
}

/// A payoutAuditLogs document (design §2 shape, with from -> to, why, who, when).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditDocument {
    #[serde(rename = "_id")]
    id: String,
    payout_id: String,
    /// Position in the payout's trail (oldest first).
    #[serde(default)]
    position: i64,
    event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    from: Option<String>,
    to: String,
    reason: String,
    actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stripe_event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    transfer_id: Option<String>,
    amount_cents: i64,
    timestamp: bson::DateTime,
}

impl From<&AuditEntry> for AuditDocument {
    fn from(e: &AuditEntry) -> Self {
        Self {
            id: e.id.clone(),
            payout_id: e.payout_id.clone(),
            position: position(e),
            event_type: e.event_type.clone(),
            from: e.from_status.map(|status| status.as_str().to_owned()),
            to: e.to_status.as_str().to_owned(),
            reason: e.reason.clone(),
            actor: e.actor.clone(),
            stripe_event_id: e.stripe_event_id.clone(),
            transfer_id: e.transfer_id.clone(),
            amount_cents: e.amount_cents,
            timestamp: to_bson_time(e.timestamp),
        }
    }
}

fn corrupt(id: &str, what: &str) -> ServiceError {
    ServiceError::internal(anyhow::anyhow!("stored payout {id} has {what}"))
}

impl TryFrom<AuditDocument> for AuditEntry {
    type Error = ServiceError;

    fn try_from(d: AuditDocument) -> Result<Self, Self::Error> {
        Ok(Self {
            from_status: match d.from {
                Some(from) => Some(
                    PayoutStatus::parse(&from)
                        .ok_or_else(|| corrupt(&d.payout_id, "a bad audit status"))?,
                ),
                None => None,
            },
            to_status: PayoutStatus::parse(&d.to)
                .ok_or_else(|| corrupt(&d.payout_id, "a bad audit status"))?,
            id: d.id,
            payout_id: d.payout_id,
            event_type: d.event_type,
            reason: d.reason,
            actor: d.actor,
            stripe_event_id: d.stripe_event_id,
            transfer_id: d.transfer_id,
            amount_cents: d.amount_cents,
            timestamp: from_bson_time(d.timestamp),
        })
    }
}

impl From<&Payout> for PayoutDocument {
    fn from(p: &Payout) -> Self {
        Self {
            id: p.id.clone(),
            user_id: p.user_id.clone(),
            amount_cents: p.amount.cents,
            currency: p.amount.currency.to_string(),
            status: p.status.as_str().to_owned(),
            idempotency_key: p.idempotency_key.clone(),
            destination: p.destination.clone(),
            stripe_transfer_id: p.stripe_transfer_id.clone(),
            destination_payment_id: p.destination_payment_id.clone(),
            stripe_payout_id: p.stripe_payout_id.clone(),
            approval_required: p.approval_required,
            held: p.held,
            flags: p.flags.clone(),
            hold_reason: p.hold_reason.clone(),
            hold_metadata_json: p.hold_metadata_json.clone(),
            attempt: i64::from(p.attempt),
            retry_count: i64::from(p.retry_count),
            next_retry_at: p.next_retry_at.map(to_bson_time),
            work_attempts: i64::from(p.work_attempts),
            parked: p.parked,
            outcome_unknown: p.outcome_unknown,
            unknown_since: p.unknown_since.map(to_bson_time),
            failure_code: p.failure_code.clone(),
            failure_reason: p.failure_reason.clone(),
            amount_reversed_cents: p.amount_reversed_cents,
            requested_at: to_bson_time(p.requested_at),
            completed_at: p.completed_at.map(to_bson_time),
            webhook_processed_at: p.webhook_processed_at.map(to_bson_time),
            updated_at: to_bson_time(p.updated_at),
            failed_transfer_ids: p.failed_transfer_ids.clone(),
            stray_transfer_ids: p.stray_transfer_ids.clone(),
            stray_reversed_ids: p.stray_reversed_ids.clone(),
            reversal_intents: p
                .reversal_intents
                .iter()
                .map(ReversalIntentDocument::from)
                .collect(),
            applied_events: p.applied_events.clone(),
            audit_log: p.audit_log.iter().map(AuditDocument::from).collect(),
            audit_projected: i64::from(p.audit_projected),
            quota: QuotaDocument {
                target_cents: p.quota.target_cents,
                sequence: p.quota.sequence,
                confirmed_cents: p.quota.confirmed_cents,
                confirmed_sequence: p.quota.confirmed_sequence,
            },
            owed_alerts: p
                .owed_alerts
                .iter()
                .map(|a| AlertDocument {
                    key: a.key.clone(),
                    kind: a.kind.clone(),
                    title: a.title.clone(),
                    description: a.description.clone(),
                })
                .collect(),
            raised_alerts: p.raised_alerts.clone(),
            effects_due_at: p.effects_due_at.map(to_bson_time),
            effects_attempts: i64::from(p.effects_attempts),
            claims: i64::from(p.claims),
            bank_check_owed: p.bank_check_owed,
            version: p.version,
        }
    }
}

impl TryFrom<PayoutDocument> for Payout {
    type Error = ServiceError;

    fn try_from(d: PayoutDocument) -> Result<Self, Self::Error> {
        Ok(Self {
            amount: Money::new(d.amount_cents, Currency::parse(&d.currency)?),
            status: PayoutStatus::parse(&d.status).ok_or_else(|| corrupt(&d.id, "a bad status"))?,
            attempt: u32::try_from(d.attempt).map_err(|_| corrupt(&d.id, "a bad attempt"))?,
            retry_count: u32::try_from(d.retry_count)
                .map_err(|_| corrupt(&d.id, "a bad retry count"))?,
            work_attempts: u32::try_from(d.work_attempts)
                .map_err(|_| corrupt(&d.id, "a bad work attempt count"))?,
            audit_projected: u32::try_from(d.audit_projected)
                .map_err(|_| corrupt(&d.id, "a bad audit count"))?,
            effects_attempts: u32::try_from(d.effects_attempts)
                .map_err(|_| corrupt(&d.id, "a bad effects attempt count"))?,
            claims: u32::try_from(d.claims).map_err(|_| corrupt(&d.id, "a bad claim count"))?,
            audit_log: d
                .audit_log
                .into_iter()
                .map(AuditEntry::try_from)
                .collect::<Result<_, _>>()?,
            reversal_intents: d
                .reversal_intents
                .into_iter()
                .map(|intent| intent.into_intent(&d.id))
                .collect::<Result<_, _>>()?,
            id: d.id,
            user_id: d.user_id,
            idempotency_key: d.idempotency_key,
            destination: d.destination,
            stripe_transfer_id: d.stripe_transfer_id,
            destination_payment_id: d.destination_payment_id,
            stripe_payout_id: d.stripe_payout_id,
            approval_required: d.approval_required,
            held: d.held,
            flags: d.flags,
            hold_reason: d.hold_reason,
            hold_metadata_json: d.hold_metadata_json,
            next_retry_at: d.next_retry_at.map(from_bson_time),
            parked: d.parked,
            outcome_unknown: d.outcome_unknown,
            unknown_since: d.unknown_since.map(from_bson_time),
            failure_code: d.failure_code,
            failure_reason: d.failure_reason,
            amount_reversed_cents: d.amount_reversed_cents,
            requested_at: from_bson_time(d.requested_at),
            completed_at: d.completed_at.map(from_bson_time),
            webhook_processed_at: d.webhook_processed_at.map(from_bson_time),
            updated_at: from_bson_time(d.updated_at),
            failed_transfer_ids: d.failed_transfer_ids,
            stray_transfer_ids: d.stray_transfer_ids,
            stray_reversed_ids: d.stray_reversed_ids,
            applied_events: d.applied_events,
            quota: QuotaRelease {
                target_cents: d.quota.target_cents,
                sequence: d.quota.sequence,
                confirmed_cents: d.quota.confirmed_cents,
                confirmed_sequence: d.quota.confirmed_sequence,
            },
            owed_alerts: d
                .owed_alerts
                .into_iter()
                .map(|a| OwedAlert {
                    key: a.key,
                    kind: a.kind,
                    title: a.title,
                    description: a.description,
                })
                .collect(),
            raised_alerts: d.raised_alerts,
            bank_check_owed: d.bank_check_owed,
            effects_due_at: d.effects_due_at.map(from_bson_time),
            version: d.version,
        })
    }
}

impl MongoPayouts {
    /// Opens the collections and ensures their indexes (idempotent).
    pub async fn open(database: &mongodb::Database) -> anyhow::Result<Self> {
        let payouts = database.collection::<PayoutDocument>("usdPayouts");
        payouts
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! { "userId": 1, "idempotencyKey": 1 })
                    .options(IndexOptions::builder().unique(true).build())
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "userId": 1, "requestedAt": -1 })
                    .build(),
                // Admin listings of every user's payouts, by status or all, newest first.
                IndexModel::builder()
                    .keys(doc! { "status": 1, "requestedAt": -1 })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "requestedAt": -1 })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "stripeTransferId": 1 })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "destination": 1, "status": 1 })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "status": 1, "nextRetryAt": 1 })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "effectsDueAt": 1 })
                    .build(),
            ])
            .await?;
        let audit = database.collection::<AuditDocument>("payoutAuditLogs");
        audit
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "payoutId": 1, "position": 1 })
                    .build(),
            )
            .await?;
        Ok(Self { payouts, audit })
    }

    async fn find(
        &self,
        filter: bson::Document,
        sort: bson::Document,
        limit: usize,
    ) -> Result<Vec<Payout>, ServiceError> {
        let documents: Vec<PayoutDocument> = find_many(&self.payouts, filter, sort, limit).await?;
        documents.into_iter().map(Payout::try_from).collect()
    }

    async fn find_one(&self, filter: bson::Document) -> Result<Option<Payout>, ServiceError> {
        self.payouts
            .find_one(filter)
            .await
            .map_err(mongo_error)?
            .map(Payout::try_from)
            .transpose()
    }
}

#[async_trait]
impl PayoutRepository for MongoPayouts {
    async fn insert(&self, payout: &Payout) -> Result<Inserted, ServiceError> {
        match self.payouts.insert_one(PayoutDocument::from(payout)).await {
            Ok(_) => Ok(Inserted::New),
            Err(error) if is_duplicate_key(&error) => {
                let existing = self
                    .find_one(doc! { "userId": &payout.user_id, "idempotencyKey": &payout.idempotency_key })
                    .await?
                    .ok_or_else(|| ServiceError::already_exists(format!("payout {} exists", payout.id)))?;
                Ok(Inserted::Existing(Box::new(existing)))
            }
            Err(error) => Err(mongo_error(error)),
        }
    }

    async fn get(&self, payout_id: &str) -> Result<Option<Payout>, ServiceError> {
        self.find_one(doc! { "_id": payout_id }).await
    }

    async fn find_by_key(
        &self,
        user_id: &str,
        idempotency_key: &str,
    ) -> Result<Option<Payout>, ServiceError> {
        self.find_one(doc! { "userId": user_id, "idempotencyKey": idempotency_key })
            .await
    }

    async fn find_by_transfer(&self, transfer_id: &str) -> Result<Option<Payout>, ServiceError> {
        self.find_one(doc! { "stripeTransferId": transfer_id })
            .await
    }

    async fn by_destination(
        &self,
        destination: &str,
        statuses: &[PayoutStatus],
    ) -> Result<Vec<Payout>, ServiceError> {
        let statuses: Vec<&str> = statuses.iter().map(|status| status.as_str()).collect();
        self.find(
            doc! { "destination": destination, "status": { "$in": statuses } },
            doc! { "requestedAt": 1, "_id": 1 },
            10_000,
        )
        .await
    }

    async fn list_by_user(
        &self,
        user_id: Option<&str>,
        status: Option<PayoutStatus>,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Payout>, ServiceError> {
        let mut filter = match user_id {
            Some(user_id) => doc! { "userId": user_id },
            None => doc! {},
        };
        match status {
            Some(status) => filter.insert("status", status.as_str()),
            None => filter.insert("status", doc! { "$ne": PayoutStatus::Admitting.as_str() }),
        };
        after_cursor(&mut filter, "requestedAt", after, true);
        self.find(filter, doc! { "requestedAt": -1, "_id": -1 }, limit)
            .await
    }

    async fn due(
        &self,
        status: PayoutStatus,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Payout>, ServiceError> {
        self.find(
            doc! { "status": status.as_str(), "nextRetryAt": { "$lte": to_bson_time(now) } },
            doc! { "nextRetryAt": 1, "_id": 1 },
            limit,
        )
        .await
    }

    async fn in_status(
        &self,
        status: PayoutStatus,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Payout>, ServiceError> {
        let mut filter = doc! { "status": status.as_str() };
        if let Some(after) = after {
            filter.insert("_id", doc! { "$gt": after });
        }
        self.find(filter, doc! { "_id": 1 }, limit).await
    }

    async fn unknown_outcomes(&self) -> Result<UnknownOutcomes, ServiceError> {
        // Both on the `{status, nextRetryAt}` index's prefix: pending payouts only.
        let filter = doc! { "status": PayoutStatus::Pending.as_str(), "outcomeUnknown": true };
        let count = self
            .payouts
            .count_documents(filter.clone())
            .await
            .map_err(mongo_error)?;
        let oldest = find_many(&self.payouts, filter, doc! { "unknownSince": 1 }, 1).await?;
        Ok(UnknownOutcomes {
            count,
            oldest_since: oldest
                .first()
                .and_then(|document| document.unknown_since.map(from_bson_time)),
        })
    }

    async fn due_effects(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Payout>, ServiceError> {
        self.find(
            doc! { "effectsDueAt": { "$lte": to_bson_time(now) } },
            doc! { "effectsDueAt": 1, "_id": 1 },
            limit,
        )
        .await
    }

    async fn replace(&self, payout: &Payout, expected_version: i64) -> Result<(), ServiceError> {
        let result = self
            .payouts
            .replace_one(
                doc! { "_id": &payout.id, "version": expected_version },
                PayoutDocument::from(payout),
            )
            .await
            .map_err(mongo_error)?;
        if result.matched_count == 1 {
            Ok(())
        } else {
            Err(stale(&payout.id))
        }
    }

    async fn delete(&self, payout_id: &str, expected_version: i64) -> Result<(), ServiceError> {
        let result = self
            .payouts
            .delete_one(doc! { "_id": payout_id, "version": expected_version })
            .await
            .map_err(mongo_error)?;
        if result.deleted_count == 1 {
            Ok(())
        } else {
            Err(stale(payout_id))
        }
    }

    async fn project_audit(&self, entries: &[AuditEntry]) -> Result<(), ServiceError> {
        for entry in entries {
            match self.audit.insert_one(AuditDocument::from(entry)).await {
                Ok(_) => {}
                Err(error) if is_duplicate_key(&error) => {}
                Err(error) => return Err(mongo_error(error)),
            }
        }
        Ok(())
    }

    async fn projected_audit(&self, payout_id: &str) -> Result<Vec<AuditEntry>, ServiceError> {
        let documents: Vec<AuditDocument> = find_many(
            &self.audit,
            doc! { "payoutId": payout_id },
            doc! { "position": 1 },
            100_000,
        )
        .await?;
        documents.into_iter().map(AuditEntry::try_from).collect()
    }
}
