//! `reconciliationReports`: the reports of the reconciliation runs, newest first.

use std::sync::Mutex;

use async_trait::async_trait;
use mongodb::Collection;
use mongodb::bson::{self, doc};
use payouts_runtime::ServiceError;
use payouts_runtime::store::{find_many, mongo_error, to_bson_time};
use serde::{Deserialize, Serialize};

use crate::reconcile::Report;

#[async_trait]
pub trait ReportRepository: Send + Sync + 'static {
    async fn insert(&self, report: &Report) -> Result<(), ServiceError>;

    /// The latest `limit` reports, newest first.
    async fn latest(&self, limit: usize) -> Result<Vec<Report>, ServiceError>;
}

/// Embedded store.
#[derive(Debug, Default)]
pub struct MemoryReports {
    reports: Mutex<Vec<Report>>,
}

#[async_trait]
impl ReportRepository for MemoryReports {
    async fn insert(&self, report: &Report) -> Result<(), ServiceError> {
        self.reports
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(report.clone());
        Ok(())
    }

    async fn latest(&self, limit: usize) -> Result<Vec<Report>, ServiceError> {
        let mut reports = self
            .reports
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        reports.sort_by(|a, b| (b.started_at, &b.id).cmp(&(a.started_at, &a.id)));
        reports.truncate(limit);
        Ok(reports)
    }
}

/// MongoDB store: collection `reconciliationReports`, kept 400 days (TTL on `startedAt`).
#[derive(Debug, Clone)]
pub struct MongoReports {
    collection: Collection<ReportDocument>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReportDocument {
    #[serde(rename = "_id")]
    id: String,
    started_at: bson::DateTime,
    report: Report,
}

impl MongoReports {
    pub async fn open(database: &mongodb::Database) -> anyhow::Result<Self> {
        let collection = database.collection::<ReportDocument>("reconciliationReports");
        collection
            .create_index(
                mongodb::IndexModel::builder()
                    .keys(doc! { "startedAt": -1 })
                    .options(
                        mongodb::options::IndexOptions::builder()
                            .expire_after(std::time::Duration::from_secs(400 * 24 * 3600))
                            .build(),
                    )
                    .build(),
            )
            .await?;
        Ok(Self { collection })
    }
}

#[async_trait]
impl ReportRepository for MongoReports {
    async fn insert(&self, report: &Report) -> Result<(), ServiceError> {
        self.collection
            .insert_one(ReportDocument {
                id: report.id.clone(),
                started_at: to_bson_time(report.started_at),
                report: report.clone(),
            })
            .await
            .map_err(mongo_error)?;
        Ok(())
    }

    async fn latest(&self, limit: usize) -> Result<Vec<Report>, ServiceError> {
        let documents = find_many(
            &self.collection,
            doc! {},
            doc! { "startedAt": -1, "_id": -1 },
            limit,
        )
        .await?;
        Ok(documents.into_iter().map(|d| d.report).collect())
    }
}
