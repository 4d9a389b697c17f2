//! `criticalAlerts`: the alert repository, embedded and MongoDB.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::bson::{self, doc};
use mongodb::{Collection, IndexModel};
use payouts_runtime::ServiceError;
use payouts_runtime::store::{
    after_cursor, find_many, from_bson_time, is_duplicate_key, mongo_error, to_bson_time,
};
use serde::{Deserialize, Serialize};

use crate::alerts::{Alert, AlertStatus, Severity};
use crate::email::{EmailDelivery, EmailStatus};
use crate::escalation::Level;
use crate::paging::{HaltDelivery, HaltStatus, PageDelivery, PageStatus};

/// Storage of critical alerts.
#[async_trait]
pub trait AlertRepository: Send + Sync + 'static {
    /// Stores a new alert; one already stored under the same id (the same dedupe key) is
    /// returned instead (`false`).
    async fn create(&self, alert: &Alert) -> Result<(Alert, bool), ServiceError>;

    async fn get(&self, alert_id: &str) -> Result<Option<Alert>, ServiceError>;

    /// Newest first; only `status`, `kind` and `level` when given; after the (created_at, id)
    /// cursor.
    async fn list(
        &self,
        status: Option<AlertStatus>,
        kind: Option<&str>,
        level: Option<Level>,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Alert>, ServiceError>;

    /// Replaces the alert if its stored version is `expected_version`; Conflict otherwise.
    async fn replace(&self, alert: &Alert, expected_version: i64) -> Result<(), ServiceError>;

    /// How many alerts nobody has taken up yet, by type and level (the open-alerts gauge).
    async fn open_by_type(&self) -> Result<BTreeMap<(String, Level), u64>, ServiceError>;

    /// Alerts whose page is due (not ended, `next_push_at` has come), earliest first.
    async fn pages_due(&self, now: DateTime<Utc>, limit: usize)
    -> Result<Vec<Alert>, ServiceError>;

    /// How many pages are owed and not delivered (pending or failed).
    async fn pages_owed(&self) -> Result<u64, ServiceError>;

    /// Alerts whose transfer halt is owed and due, earliest first.
    async fn halts_due(&self, now: DateTime<Utc>, limit: usize)
    -> Result<Vec<Alert>, ServiceError>;

    /// Alerts whose email is pending and due (`next_attempt_at` has come), earliest first.
    async fn emails_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Alert>, ServiceError>;
}

fn stale(alert_id: &str) -> ServiceError {
    ServiceError::conflict(format!("alert {alert_id} was changed concurrently"))
}

fn newest_first(a: &Alert, b: &Alert) -> std::cmp::Ordering {
    b.created_at
        .cmp(&a.created_at)
        .then_with(|| b.id.cmp(&a.id))
}

/// Embedded store.
#[derive(Debug, Default)]
pub struct MemoryAlerts {
    alerts: Mutex<BTreeMap<String, Alert>>,
}

impl MemoryAlerts {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Alert>> {
        self.alerts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl AlertRepository for MemoryAlerts {
    async fn create(&self, alert: &Alert) -> Result<(Alert, bool), ServiceError> {
        let mut alerts = self.lock();
        if let Some(existing) = alerts.get(&alert.id) {
            return Ok((existing.clone(), false));
        }
        alerts.insert(alert.id.clone(), alert.clone());
        Ok((alert.clone(), true))
    }

    async fn get(&self, alert_id: &str) -> Result<Option<Alert>, ServiceError> {
        Ok(self.lock().get(alert_id).cloned())
    }

    async fn list(
        &self,
        status: Option<AlertStatus>,
        kind: Option<&str>,
        level: Option<Level>,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Alert>, ServiceError> {
        let mut found: Vec<Alert> = self
            .lock()
            .values()
            .filter(|a| status.is_none_or(|status| a.status == status))
            .filter(|a| kind.is_none_or(|kind| a.kind == kind))
            .filter(|a| level.is_none_or(|level| a.level == level))
            .filter(|a| {
                after
                    .as_ref()
                    .is_none_or(|(at, id)| (a.created_at, &a.id) < (*at, id))
            })
            .cloned()
            .collect();
        found.sort_by(newest_first);
        found.truncate(limit);
        Ok(found)
    }

    async fn open_by_type(&self) -> Result<BTreeMap<(String, Level), u64>, ServiceError> {
        let mut open = BTreeMap::new();
        for alert in self.lock().values() {
            if alert.status == AlertStatus::Active {
                *open.entry((alert.kind.clone(), alert.level)).or_insert(0) += 1;
            }
        }
        Ok(open)
    }

    async fn pages_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Alert>, ServiceError> {
        let mut due: Vec<Alert> = self
            .lock()
            .values()
            .filter(|a| {
                a.page.as_ref().is_some_and(|page| {
                    page.status != PageStatus::Ended && page.next_push_at.is_none_or(|at| at <= now)
                })
            })
            .cloned()
            .collect();
        due.sort_by_key(|a| (a.page.as_ref().and_then(|p| p.next_push_at), a.id.clone()));
        due.truncate(limit);
        Ok(due)
    }

    async fn pages_owed(&self) -> Result<u64, ServiceError> {
        Ok(self
            .lock()
            .values()
            .filter(|a| a.page.as_ref().is_some_and(|page| page.status.owed()))
            .count() as u64)
    }

    async fn halts_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Alert>, ServiceError> {
        let mut due: Vec<Alert> = self
            .lock()
            .values()
            .filter(|a| {
                a.halt.as_ref().is_some_and(|halt| {
                    halt.status == HaltStatus::Owed
                        && halt.next_attempt_at.is_none_or(|at| at <= now)
                })
            })
            .cloned()
            .collect();
        due.sort_by_key(|a| {
            (
                a.halt.as_ref().and_then(|h| h.next_attempt_at),
                a.id.clone(),
            )
        });
        due.truncate(limit);
        Ok(due)
    }

    async fn emails_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Alert>, ServiceError> {
        let mut due: Vec<Alert> = self
            .lock()
            .values()
            .filter(|a| {
                a.email.as_ref().is_some_and(|email| {
                    email.status == EmailStatus::Pending
                        && email.next_attempt_at.is_none_or(|at| at <= now)
                })
            })
            .cloned()
            .collect();
        due.sort_by_key(|a| {
            (
                a.email.as_ref().and_then(|email| email.next_attempt_at),
                a.id.clone(),
            )
        });
        due.truncate(limit);
        Ok(due)
    }

    async fn replace(&self, alert: &Alert, expected_version: i64) -> Result<(), ServiceError> {
        let mut alerts = self.lock();
        match alerts.get_mut(&alert.id) {
            Some(stored) if stored.version == expected_version => {
                *stored = alert.clone();
                Ok(())
            }
            _ => Err(stale(&alert.id)),
        }
    }
}

/// MongoDB store: collection `criticalAlerts` (design §10 shape).
#[derive(Debug, Clone)]
pub struct MongoAlerts {
    collection: Collection<AlertDocument>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlertDocument {
    #[serde(rename = "_id")]
    id: String,
    #[serde(rename = "type")]
    kind: String,
    severity: String,
    title: String,
    message: String,
    /// The alert's structured context (design §3 `metadata`), a JSON object stored as one.
    #[serde(default)]
    metadata: bson::Document,
    status: String,
    /// Design §3: nobody has taken it up yet (status active).
    requires_attention: bool,
    /// Design §3: it is over (status resolved).
    resolved: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dedupe_key: Option<String>,
    /// When it was raised (design §3 `timestamp`).
    timestamp: bson::DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    acknowledged_at: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    acknowledged_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resolved_at: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resolved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resolution_notes: Option<String>,
    /// The owed email (the outbox entry): top-level fields, so the worker's query and its
    /// index are plain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email_status: Option<String>,
    #[serde(default)]
    email_attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email_next_attempt_at: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email_last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    email_sent_at: Option<bson::DateTime>,
    /// Escalation level 1..3 (0 in alerts stored before levels: read by severity).
    #[serde(default)]
    level: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signal: Option<String>,
    #[serde(default)]
    signal_count: u32,
    /// The owed page (outbox entry), top-level fields like the email's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page_status: Option<String>,
    #[serde(default)]
    page_attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page_next_push_at: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page_last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page_last_pushed_at: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    page_ends_at: Option<bson::DateTime>,
    /// The owed transfer halt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    halt_status: Option<String>,
    #[serde(default)]
    halt_attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    halt_next_attempt_at: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    halt_last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    halt_set_at: Option<bson::DateTime>,
    version: i64,
}

impl TryFrom<&Alert> for AlertDocument {
    type Error = ServiceError;

    fn try_from(a: &Alert) -> Result<Self, Self::Error> {
        let metadata: serde_json::Value = serde_json::from_str(&a.data_json)
            .map_err(|_| ServiceError::invalid_argument("data_json must be a JSON object"))?;
        let metadata = match bson::to_bson(&metadata) {
            Ok(bson::Bson::Document(document)) => document,
            _ => {
                return Err(ServiceError::invalid_argument(
                    "data_json must be a JSON object",
                ));
            }
        };
        Ok(Self {
            id: a.id.clone(),
            kind: a.kind.clone(),
            severity: a.severity.as_str().to_owned(),
            title: a.title.clone(),
            message: a.description.clone(),
            metadata,
            status: a.status.as_str().to_owned(),
            requires_attention: a.requires_attention(),
            resolved: a.status == AlertStatus::Resolved,
            dedupe_key: a.dedupe_key.clone(),
            timestamp: to_bson_time(a.created_at),
            acknowledged_at: a.acknowledged_at.map(to_bson_time),
            acknowledged_by: a.acknowledged_by.clone(),
            resolved_at: a.resolved_at.map(to_bson_time),
            resolved_by: a.resolved_by.clone(),
            resolution_notes: a.resolution_notes.clone(),
            email_status: a.email.as_ref().map(|e| e.status.as_str().to_owned()),
            email_attempts: a.email.as_ref().map_or(0, |e| e.attempts),
            email_next_attempt_at: a
                .email
                .as_ref()
                .and_then(|e| e.next_attempt_at)
                .map(to_bson_time),
            email_last_error: a.email.as_ref().and_then(|e| e.last_error.clone()),
            email_sent_at: a.email.as_ref().and_then(|e| e.sent_at).map(to_bson_time),
            level: i32::from(a.level.number()),
            signal: a.signal.clone(),
            signal_count: a.signal_count,
            page_status: a.page.as_ref().map(|p| p.status.as_str().to_owned()),
            page_attempts: a.page.as_ref().map_or(0, |p| p.attempts),
            page_next_push_at: a
                .page
                .as_ref()
                .and_then(|p| p.next_push_at)
                .map(to_bson_time),
            page_last_error: a.page.as_ref().and_then(|p| p.last_error.clone()),
            page_last_pushed_at: a
                .page
                .as_ref()
                .and_then(|p| p.last_pushed_at)
                .map(to_bson_time),
            page_ends_at: a.page.as_ref().and_then(|p| p.ends_at).map(to_bson_time),
            halt_status: a.halt.as_ref().map(|h| h.status.as_str().to_owned()),
            halt_attempts: a.halt.as_ref().map_or(0, |h| h.attempts),
            halt_next_attempt_at: a
                .halt
                .as_ref()
                .and_then(|h| h.next_attempt_at)
                .map(to_bson_time),
            halt_last_error: a.halt.as_ref().and_then(|h| h.last_error.clone()),
            halt_set_at: a.halt.as_ref().and_then(|h| h.set_at).map(to_bson_time),
            version: a.version,
        })
    }
}

impl TryFrom<AlertDocument> for Alert {
    type Error = ServiceError;

    fn try_from(d: AlertDocument) -> Result<Self, Self::Error> {
        let corrupt = |what: &str| {
            ServiceError::internal(anyhow::anyhow!("stored alert {} has {what}", d.id))
        };
        let email_status = d
            .email_status
            .as_deref()
            .map(|text| EmailStatus::parse(text).ok_or_else(|| corrupt("a bad email status")))
            .transpose()?;
        let page_status = d
            .page_status
            .as_deref()
            .map(|text| PageStatus::parse(text).ok_or_else(|| corrupt("a bad page status")))
            .transpose()?;
        let halt_status = d
            .halt_status
            .as_deref()
            .map(|text| HaltStatus::parse(text).ok_or_else(|| corrupt("a bad halt status")))
            .transpose()?;
        let severity = Severity::parse(&d.severity).ok_or_else(|| corrupt("a bad severity"))?;
        let level = match d.level {
            0 => crate::escalation::level_of_severity(severity),
            number => u8::try_from(number)
                .ok()
                .and_then(Level::from_number)
                .ok_or_else(|| corrupt("a bad level"))?,
        };
        Ok(Self {
            severity,
            level,
            signal: d.signal,
            signal_count: d.signal_count.max(1),
            page: page_status.map(|status| PageDelivery {
                status,
                attempts: d.page_attempts,
                next_push_at: d.page_next_push_at.map(from_bson_time),
                last_error: d.page_last_error,
                last_pushed_at: d.page_last_pushed_at.map(from_bson_time),
                ends_at: d.page_ends_at.map(from_bson_time),
            }),
            halt: halt_status.map(|status| HaltDelivery {
                status,
                attempts: d.halt_attempts,
                next_attempt_at: d.halt_next_attempt_at.map(from_bson_time),
                last_error: d.halt_last_error,
                set_at: d.halt_set_at.map(from_bson_time),
            }),
            status: AlertStatus::parse(&d.status).ok_or_else(|| corrupt("a bad status"))?,
            data_json: bson::Bson::Document(d.metadata)
                .into_relaxed_extjson()
                .to_string(),
            id: d.id,
            kind: d.kind,
            title: d.title,
            description: d.message,
            dedupe_key: d.dedupe_key,
            created_at: from_bson_time(d.timestamp),
            acknowledged_at: d.acknowledged_at.map(from_bson_time),
            acknowledged_by: d.acknowledged_by,
            resolved_at: d.resolved_at.map(from_bson_time),
            resolved_by: d.resolved_by,
            resolution_notes: d.resolution_notes,
            email: match email_status {
                None => None,
                Some(status) => Some(EmailDelivery {
                    status,
                    attempts: d.email_attempts,
                    next_attempt_at: d.email_next_attempt_at.map(from_bson_time),
                    last_error: d.email_last_error,
                    sent_at: d.email_sent_at.map(from_bson_time),
                }),
            },
            version: d.version,
        })
    }
}

impl MongoAlerts {
    /// Opens the collection and ensures its indexes (idempotent).
    pub async fn open(database: &mongodb::Database) -> anyhow::Result<Self> {
        let collection = database.collection::<AlertDocument>("criticalAlerts");
        collection
            .create_indexes([
                IndexModel::builder().keys(doc! { "timestamp": -1 }).build(),
                IndexModel::builder()
                    .keys(doc! { "status": 1, "timestamp": -1 })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "type": 1, "timestamp": -1 })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "emailStatus": 1, "emailNextAttemptAt": 1 })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "level": 1, "timestamp": -1 })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "pageStatus": 1, "pageNextPushAt": 1 })
                    .build(),
                IndexModel::builder()
                    .keys(doc! { "haltStatus": 1, "haltNextAttemptAt": 1 })
                    .build(),
            ])
            .await?;
        Ok(Self { collection })
    }
}

#[async_trait]
impl AlertRepository for MongoAlerts {
    async fn create(&self, alert: &Alert) -> Result<(Alert, bool), ServiceError> {
        match self
            .collection
            .insert_one(AlertDocument::try_from(alert)?)
            .await
        {
            Ok(_) => Ok((alert.clone(), true)),
            Err(error) if is_duplicate_key(&error) => {
                let existing = self.get(&alert.id).await?.ok_or_else(|| {
                    ServiceError::internal(anyhow::anyhow!("duplicate alert vanished"))
                })?;
                Ok((existing, false))
            }
            Err(error) => Err(mongo_error(error)),
        }
    }

    async fn get(&self, alert_id: &str) -> Result<Option<Alert>, ServiceError> {
        self.collection
            .find_one(doc! { "_id": alert_id })
            .await
            .map_err(mongo_error)?
            .map(Alert::try_from)
            .transpose()
    }

    async fn list(
        &self,
        status: Option<AlertStatus>,
        kind: Option<&str>,
        level: Option<Level>,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Alert>, ServiceError> {
        let mut filter = doc! {};
        if let Some(status) = status {
            filter.insert("status", status.as_str());
        }
        if let Some(kind) = kind {
            filter.insert("type", kind);
        }
        if let Some(level) = level {
            // Alerts stored before levels (level 0) are not found by level.
            filter.insert("level", i32::from(level.number()));
        }
        after_cursor(&mut filter, "timestamp", after, true);
        let documents: Vec<AlertDocument> = find_many(
            &self.collection,
            filter,
            doc! { "timestamp": -1, "_id": -1 },
            limit,
        )
        .await?;
        documents.into_iter().map(Alert::try_from).collect()
    }

    async fn open_by_type(&self) -> Result<BTreeMap<(String, Level), u64>, ServiceError> {
        let mut open = BTreeMap::new();
        for alert in find_many(
            &self.collection,
            doc! { "status": AlertStatus::Active.as_str() },
            doc! { "_id": 1 },
            100_000,
        )
        .await?
        .into_iter()
        .map(Alert::try_from)
        {
            let alert = alert?;
            *open.entry((alert.kind, alert.level)).or_insert(0) += 1;
        }
        Ok(open)
    }

    async fn pages_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Alert>, ServiceError> {
        let documents: Vec<AlertDocument> = find_many(
            &self.collection,
            doc! {
                "pageStatus": { "$in": [PageStatus::Pending.as_str(), PageStatus::Firing.as_str(), PageStatus::Failed.as_str()] },
                "pageNextPushAt": { "$lte": to_bson_time(now) },
            },
            doc! { "pageNextPushAt": 1, "_id": 1 },
            limit,
        )
        .await?;
        documents.into_iter().map(Alert::try_from).collect()
    }

    async fn pages_owed(&self) -> Result<u64, ServiceError> {
        self.collection
            .count_documents(doc! {
                "pageStatus": { "$in": [PageStatus::Pending.as_str(), PageStatus::Failed.as_str()] },
            })
            .await
            .map_err(mongo_error)
    }

    async fn halts_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Alert>, ServiceError> {
        let documents: Vec<AlertDocument> = find_many(
            &self.collection,
            doc! {
                "haltStatus": HaltStatus::Owed.as_str(),
                "haltNextAttemptAt": { "$lte": to_bson_time(now) },
            },
            doc! { "haltNextAttemptAt": 1, "_id": 1 },
            limit,
        )
        .await?;
        documents.into_iter().map(Alert::try_from).collect()
    }

    async fn emails_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Alert>, ServiceError> {
        let documents: Vec<AlertDocument> = find_many(
            &self.collection,
            doc! {
                "emailStatus": EmailStatus::Pending.as_str(),
                "emailNextAttemptAt": { "$lte": to_bson_time(now) },
            },
            doc! { "emailNextAttemptAt": 1, "_id": 1 },
            limit,
        )
        .await?;
        documents.into_iter().map(Alert::try_from).collect()
    }

    async fn replace(&self, alert: &Alert, expected_version: i64) -> Result<(), ServiceError> {
        let result = self
            .collection
            .replace_one(
                doc! { "_id": &alert.id, "version": expected_version },
                AlertDocument::try_from(alert)?,
            )
            .await
            .map_err(mongo_error)?;
        if result.matched_count == 1 {
            Ok(())
        } else {
            Err(stale(&alert.id))
        }
    }
}
