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

/// Storage of critical alerts.
#[async_trait]
pub trait AlertRepository: Send + Sync + 'static {
    /// Stores a new alert; one already stored under the same id (the same dedupe key) is
    /// returned instead (`false`).
    async fn create(&self, alert: &Alert) -> Result<(Alert, bool), ServiceError>;

    async fn get(&self, alert_id: &str) -> Result<Option<Alert>, ServiceError>;

    /// Newest first; only `status` and `kind` when given; after the (created_at, id) cursor.
    async fn list(
        &self,
        status: Option<AlertStatus>,
        kind: Option<&str>,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Alert>, ServiceError>;

    /// Replaces the alert if its stored version is `expected_version`; Conflict otherwise.
    async fn replace(&self, alert: &Alert, expected_version: i64) -> Result<(), ServiceError>;

    /// How many alerts nobody has taken up yet, by type (the open-alerts gauge).
    async fn open_by_type(&self) -> Result<BTreeMap<String, u64>, ServiceError>;

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
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Alert>, ServiceError> {
        let mut found: Vec<Alert> = self
            .lock()
            .values()
            .filter(|a| status.is_none_or(|status| a.status == status))
            .filter(|a| kind.is_none_or(|kind| a.kind == kind))
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

    async fn open_by_type(&self) -> Result<BTreeMap<String, u64>, ServiceError> {
        let mut open = BTreeMap::new();
        for alert in self.lock().values() {
            if alert.status == AlertStatus::Active {
                *open.entry(alert.kind.clone()).or_insert(0) += 1;
            }
        }
        Ok(open)
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
        Ok(Self {
            severity: Severity::parse(&d.severity).ok_or_else(|| corrupt("a bad severity"))?,
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

    async fn open_by_type(&self) -> Result<BTreeMap<String, u64>, ServiceError> {
        let mut open = BTreeMap::new();
        for kind in payouts_runtime::store::field_values(
            &self.collection,
            doc! { "status": AlertStatus::Active.as_str() },
            "type",
        )
        .await?
        {
            *open.entry(kind).or_insert(0) += 1;
        }
        Ok(open)
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
