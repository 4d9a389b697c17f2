use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::bson::{self, doc};
use mongodb::{Collection, IndexModel};
use payouts_runtime::store::{
    after_cursor, find_many, from_bson_time, is_duplicate_key, mongo_error, put_versioned,
    to_bson_time,
};
use payouts_runtime::{Currency, Money, ServiceError};
use serde::{Deserialize, Serialize};

use super::{
    AllocationRepository, ChargeCaseRepository, EarningsBookRepository, repeated, stale_allocation,
    stale_book, stale_case,
};
use crate::charges::{ChargeCase, Dispute, Notice, NoticeKind, Refund};
use crate::domain::{
    Allocation, AllocationAudit, AllocationStatus, Change, EarningsBook, MarkKind, RecentMark,
    Totals,
};

fn opt_time(time: Option<DateTime<Utc>>) -> Option<bson::DateTime> {
    time.map(to_bson_time)
}

fn corrupt(what: &str, id: &str, value: &str) -> ServiceError {
    ServiceError::internal(anyhow::anyhow!("{what} {id} has {value:?}"))
}

/// MongoDB store: collection `usdAllocations` (design §3 fields).
#[derive(Debug, Clone)]
pub struct MongoAllocations {
    collection: Collection<AllocationDocument>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AllocationDocument {
    #[serde(rename = "_id")]
    id: String,
    user_id: String,
    charge_id: String,
    currency: String,
    original_usd_cents: i64,
    usd_cents: i64,
    status: String,
    refunded_amount: i64,
    frozen_amount: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dispute_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refunded_at: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    disputed_at: Option<bson::DateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dispute_outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dispute_resolved_at: Option<bson::DateTime>,
    #[serde(default)]
    audit: Vec<AuditDocument>,
    #[serde(default)]
    charge_case_version: i64,
    created_at: bson::DateTime,
    updated_at: bson::DateTime,
    version: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditDocument {
    at: bson::DateTime,
    event_id: String,
    from_status: String,
    to_status: String,
    from_cents: i64,
    to_cents: i64,
    reason: String,
}

impl From<&Allocation> for AllocationDocument {
    fn from(a: &Allocation) -> Self {
        Self {
            id: a.id.clone(),
            user_id: a.user_id.clone(),
            charge_id: a.charge_id.clone(),
            currency: a.amount.currency.to_string(),
            original_usd_cents: a.original_amount.cents,
            usd_cents: a.amount.cents,
            status: a.status.as_str().to_owned(),
            refunded_amount: a.refunded_cents,
            frozen_amount: a.frozen_cents,
            dispute_id: a.dispute_id.clone(),
            payer_id: a.payer_id.clone(),
            refunded_at: opt_time(a.refunded_at),
            disputed_at: opt_time(a.disputed_at),
            dispute_outcome: a.dispute_outcome.clone(),
            dispute_resolved_at: opt_time(a.dispute_resolved_at),
            audit: a
                .audit
                .iter()
                .map(|entry| AuditDocument {
                    at: to_bson_time(entry.at),
                    event_id: entry.event_id.clone(),
                    from_status: entry.from_status.as_str().to_owned(),
                    to_status: entry.to_status.as_str().to_owned(),
                    from_cents: entry.from_cents,
                    to_cents: entry.to_cents,
                    reason: entry.reason.clone(),
                })
                .collect(),
            charge_case_version: a.case_version,
            created_at: to_bson_time(a.created_at),
            updated_at: to_bson_time(a.updated_at),
            version: a.version,
        }
    }
}

impl TryFrom<AllocationDocument> for Allocation {
    type Error = ServiceError;

    fn try_from(d: AllocationDocument) -> Result<Self, Self::Error> {
        let currency = Currency::parse(&d.currency)?;
        let status = |text: &str| {
            AllocationStatus::parse(text).ok_or_else(|| corrupt("allocation", &d.id, text))
        };
        let audit = d
            .audit
            .iter()
            .map(|entry| {
                Ok(AllocationAudit {
                    at: from_bson_time(entry.at),
                    event_id: entry.event_id.clone(),
                    from_status: status(&entry.from_status)?,
                    to_status: status(&entry.to_status)?,
                    from_cents: entry.from_cents,
                    to_cents: entry.to_cents,
                    reason: entry.reason.clone(),
                })
            })
            .collect::<Result<Vec<_>, ServiceError>>()?;
        let status = status(&d.status)?;
        Ok(Self {
            original_amount: Money::new(d.original_usd_cents, currency.clone()),
            amount: Money::new(d.usd_cents, currency),
            id: d.id,
            user_id: d.user_id,
            charge_id: d.charge_id,
            status,
            refunded_cents: d.refunded_amount,
            frozen_cents: d.frozen_amount,
            dispute_id: d.dispute_id,
            payer_id: d.payer_id,
            refunded_at: d.refunded_at.map(from_bson_time),
            disputed_at: d.disputed_at.map(from_bson_time),
            dispute_outcome: d.dispute_outcome,
            dispute_resolved_at: d.dispute_resolved_at.map(from_bson_time),
            audit,
            case_version: d.charge_case_version,
            created_at: from_bson_time(d.created_at),
            updated_at: from_bson_time(d.updated_at),
            version: d.version,
        })
    }
}

impl MongoAllocations {
    /// Opens the collection and ensures its indexes (idempotent).
    pub async fn open(database: &mongodb::Database) -> anyhow::Result<Self> {
        let collection = database.collection::<AllocationDocument>("usdAllocations");
        collection
            .create_indexes([
                IndexModel::builder()
                    .keys(doc! { "userId": 1, "createdAt": -1 })
                    .build(),
                IndexModel::builder().keys(doc! { "chargeId": 1 }).build(),
            ])
            .await?;
        Ok(Self { collection })
    }
}

#[async_trait]
impl AllocationRepository for MongoAllocations {
    async fn record(&self, allocation: &Allocation) -> Result<(Allocation, bool), ServiceError> {
        match self
            .collection
            .insert_one(AllocationDocument::from(allocation))
            .await
        {
            Ok(_) => Ok((allocation.clone(), true)),
            Err(error) if is_duplicate_key(&error) => {
                let stored = self.get(&allocation.id).await?.ok_or_else(|| {
                    ServiceError::internal(anyhow::anyhow!("duplicate allocation vanished"))
                })?;
                repeated(stored, allocation)
            }
            Err(error) => Err(mongo_error(error)),
        }
    }

    async fn get(&self, allocation_id: &str) -> Result<Option<Allocation>, ServiceError> {
        self.collection
            .find_one(doc! { "_id": allocation_id })
            .await
            .map_err(mongo_error)?
            .map(Allocation::try_from)
            .transpose()
    }

    async fn replace(
        &self,
        allocation: &Allocation,
        expected_version: i64,
    ) -> Result<(), ServiceError> {
        let replaced = self
            .collection
            .replace_one(
                doc! { "_id": &allocation.id, "version": expected_version },
                AllocationDocument::from(allocation),
            )
            .await
            .map_err(mongo_error)?;
        if replaced.matched_count == 1 {
            return Ok(());
        }
        match self.get(&allocation.id).await? {
            Some(_) => Err(stale_allocation(&allocation.id)),
            None => Err(ServiceError::not_found(format!(
                "allocation {} not found",
                allocation.id
            ))),
        }
    }

    async fn list_by_charge(
        &self,
        charge_id: &str,
        limit: usize,
    ) -> Result<Vec<Allocation>, ServiceError> {
        let documents: Vec<AllocationDocument> = find_many(
            &self.collection,
            doc! { "chargeId": charge_id },
            doc! { "_id": 1 },
            limit,
        )
        .await?;
        documents.into_iter().map(Allocation::try_from).collect()
    }

    async fn list_by_user(
        &self,
        user_id: &str,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Allocation>, ServiceError> {
        let mut filter = doc! { "userId": user_id };
        after_cursor(&mut filter, "createdAt", after, true);
        let documents: Vec<AllocationDocument> = find_many(
            &self.collection,
            filter,
            doc! { "createdAt": -1, "_id": -1 },
            limit,
        )
        .await?;
        documents.into_iter().map(Allocation::try_from).collect()
    }
}

/// MongoDB store: collection `creatorEarnings`, one document per creator.
#[derive(Debug, Clone)]
pub struct MongoEarningsBooks {
    collection: Collection<BookDocument>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BookDocument {
    /// The creator's user id.
    #[serde(rename = "_id")]
    id: String,
    totals: Vec<TotalsDocument>,
    #[serde(default)]
    pending: Vec<PendingDocument>,
    #[serde(default)]
    recent: Vec<MarkDocument>,
    version: i64,
}

/// A pending change: the allocation after it, and before it (none for a credit).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PendingDocument {
    #[serde(flatten)]
    after: AllocationDocument,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    before: Option<AllocationDocument>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MarkDocument {
    kind: String,
    charge_id: String,
    at: bson::DateTime,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TotalsDocument {
    currency: String,
    lifetime_cents: i64,
    active_cents: i64,
    frozen_cents: i64,
    refunded_cents: i64,
    allocations: i64,
}

impl From<&EarningsBook> for BookDocument {
    fn from(book: &EarningsBook) -> Self {
        Self {
            id: book.user_id.clone(),
            totals: book
                .totals
                .iter()
                .map(|(currency, t)| TotalsDocument {
                    currency: currency.to_string(),
                    lifetime_cents: t.lifetime,
                    active_cents: t.active,
                    frozen_cents: t.frozen,
                    refunded_cents: t.refunded,
                    allocations: t.allocations,
                })
                .collect(),
            pending: book
                .pending
                .iter()
                .map(|change| PendingDocument {
                    after: AllocationDocument::from(&change.after),
                    before: change.before.as_ref().map(AllocationDocument::from),
                })
                .collect(),
            recent: book
                .recent
                .iter()
                .map(|mark| MarkDocument {
                    kind: mark.kind.as_str().to_owned(),
                    charge_id: mark.charge_id.clone(),
                    at: to_bson_time(mark.at),
                })
                .collect(),
            version: book.version,
        }
    }
}

impl TryFrom<BookDocument> for EarningsBook {
    type Error = ServiceError;

    fn try_from(d: BookDocument) -> Result<Self, Self::Error> {
        let mut totals = std::collections::BTreeMap::new();
        for t in d.totals {
            totals.insert(
                Currency::parse(&t.currency)?,
                Totals {
                    lifetime: t.lifetime_cents,
                    active: t.active_cents,
                    frozen: t.frozen_cents,
                    refunded: t.refunded_cents,
                    allocations: t.allocations,
                },
            );
        }
        let user_id = d.id.clone();
        Ok(Self {
            user_id,
            totals,
            pending: d
                .pending
                .into_iter()
                .map(|pending| {
                    Ok(Change {
                        after: Allocation::try_from(pending.after)?,
                        before: pending.before.map(Allocation::try_from).transpose()?,
                    })
                })
                .collect::<Result<_, ServiceError>>()?,
            recent: d
                .recent
                .into_iter()
                .map(|mark| {
                    Ok(RecentMark {
                        kind: MarkKind::parse(&mark.kind)
                            .ok_or_else(|| corrupt("earnings book", &d.id, &mark.kind))?,
                        charge_id: mark.charge_id,
                        at: from_bson_time(mark.at),
                    })
                })
                .collect::<Result<_, ServiceError>>()?,
            version: d.version,
        })
    }
}

impl MongoEarningsBooks {
    pub fn open(database: &mongodb::Database) -> Self {
        Self {
            collection: database.collection::<BookDocument>("creatorEarnings"),
        }
    }
}

#[async_trait]
impl EarningsBookRepository for MongoEarningsBooks {
    async fn get(&self, user_id: &str) -> Result<EarningsBook, ServiceError> {
        match self
            .collection
            .find_one(doc! { "_id": user_id })
            .await
            .map_err(mongo_error)?
        {
            Some(document) => EarningsBook::try_from(document),
            None => Ok(EarningsBook::empty(user_id)),
        }
    }

    async fn put(&self, book: &EarningsBook, expected_version: i64) -> Result<(), ServiceError> {
        let document = BookDocument::from(book);
        if put_versioned(&self.collection, &book.user_id, document, expected_version).await? {
            Ok(())
        } else {
            Err(stale_book(&book.user_id))
        }
    }

    async fn list(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EarningsBook>, ServiceError> {
        let filter = match after {
            Some(after) => doc! { "_id": { "$gt": after } },
            None => doc! {},
        };
        find_many(&self.collection, filter, doc! { "_id": 1 }, limit)
            .await?
            .into_iter()
            .map(EarningsBook::try_from)
            .collect()
    }
}

/// MongoDB store: collection `chargeCases`, one document per charge with refunds or disputes.
#[derive(Debug, Clone)]
pub struct MongoChargeCases {
    collection: Collection<CaseDocument>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CaseDocument {
    /// The charge id.
    #[serde(rename = "_id")]
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    currency: Option<String>,
    amount_refunded: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refunded_at: Option<bson::DateTime>,
    refunds: Vec<RefundDocument>,
    /// Unsettled `amount_refunded` claims; absent in a case stored before refunds were
    /// counted from refunds (read as one "legacy" claim of what it counted then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    claims: Option<Vec<ClaimDocument>>,
    disputes: Vec<DisputeDocument>,
    /// Whether any dispute is recorded (the disputes list's filter).
    disputed: bool,
    events: Vec<String>,
    notices: Vec<NoticeDocument>,
    created_at: bson::DateTime,
    updated_at: bson::DateTime,
    version: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefundDocument {
    id: String,
    amount: i64,
    status: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimDocument {
    event_id: String,
    amount_refunded: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DisputeDocument {
    id: String,
    amount: i64,
    currency: String,
    status: String,
    reason: String,
    opened_at: bson::DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    closed_at: Option<bson::DateTime>,
    funds_withdrawn: bool,
    funds_reinstated: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NoticeDocument {
    kind: String,
    event_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dispute_id: Option<String>,
}

impl From<&ChargeCase> for CaseDocument {
    fn from(case: &ChargeCase) -> Self {
        Self {
            id: case.charge_id.clone(),
            amount: case.amount.as_ref().map(|(cents, _)| *cents),
            currency: case
                .amount
                .as_ref()
                .map(|(_, currency)| currency.to_string()),
            amount_refunded: case.amount_refunded,
            refunded_at: opt_time(case.refunded_at),
            refunds: case
                .refunds
                .iter()
                .map(|(id, refund)| RefundDocument {
                    id: id.clone(),
                    amount: refund.amount,
                    status: refund.status.clone(),
                })
                .collect(),
            claims: Some(
                case.claims
                    .iter()
                    .map(|(event_id, cents)| ClaimDocument {
                        event_id: event_id.clone(),
                        amount_refunded: *cents,
                    })
                    .collect(),
            ),
            disputes: case
                .disputes
                .values()
                .map(|dispute| DisputeDocument {
                    id: dispute.id.clone(),
                    amount: dispute.amount,
                    currency: dispute.currency.to_string(),
                    status: dispute.status.clone(),
                    reason: dispute.reason.clone(),
                    opened_at: to_bson_time(dispute.opened_at),
                    closed_at: opt_time(dispute.closed_at),
                    funds_withdrawn: dispute.funds_withdrawn,
                    funds_reinstated: dispute.funds_reinstated,
                })
                .collect(),
            disputed: !case.disputes.is_empty(),
            events: case.events.clone(),
            notices: case
                .notices
                .iter()
                .map(|notice| NoticeDocument {
                    kind: notice.kind.as_str().to_owned(),
                    event_id: notice.event_id.clone(),
                    dispute_id: notice.dispute_id.clone(),
                })
                .collect(),
            created_at: to_bson_time(case.created_at),
            updated_at: to_bson_time(case.updated_at),
            version: case.version,
        }
    }
}

impl TryFrom<CaseDocument> for ChargeCase {
    type Error = ServiceError;

    fn try_from(d: CaseDocument) -> Result<Self, Self::Error> {
        let amount = match (d.amount, d.currency.as_deref()) {
            (Some(cents), Some(currency)) => Some((cents, Currency::parse(currency)?)),
            _ => None,
        };
        let mut disputes = std::collections::BTreeMap::new();
        for dispute in d.disputes {
            disputes.insert(
                dispute.id.clone(),
                Dispute {
                    currency: Currency::parse(&dispute.currency)?,
                    id: dispute.id,
                    amount: dispute.amount,
                    status: dispute.status,
                    reason: dispute.reason,
                    opened_at: from_bson_time(dispute.opened_at),
                    closed_at: dispute.closed_at.map(from_bson_time),
                    funds_withdrawn: dispute.funds_withdrawn,
                    funds_reinstated: dispute.funds_reinstated,
                },
            );
        }
        let notices = d
            .notices
            .into_iter()
            .map(|notice| {
                Ok(Notice {
                    kind: NoticeKind::parse(&notice.kind)
                        .ok_or_else(|| corrupt("charge case", &d.id, &notice.kind))?,
                    event_id: notice.event_id,
                    dispute_id: notice.dispute_id,
                })
            })
            .collect::<Result<_, ServiceError>>()?;
        let refunds: std::collections::BTreeMap<String, Refund> = d
            .refunds
            .into_iter()
            .map(|refund| {
                (
                    refund.id,
                    Refund {
                        amount: refund.amount,
                        status: refund.status,
                    },
                )
            })
            .collect();
        let claims = match d.claims {
            Some(claims) => claims
                .into_iter()
                .map(|claim| (claim.event_id, claim.amount_refunded))
                .collect(),
            None => legacy_claim(d.amount_refunded, &refunds),
        };
        Ok(Self {
            amount,
            amount_refunded: d.amount_refunded,
            claims,
            refunded_at: d.refunded_at.map(from_bson_time),
            refunds,
            disputes,
            events: d.events,
            notices,
            created_at: from_bson_time(d.created_at),
            updated_at: from_bson_time(d.updated_at),
            version: d.version,
            charge_id: d.id,
        })
    }
}

/// A case stored before refunds were counted from refunds reduced its allocations by the
/// highest `amount_refunded` less failed refunds: kept as a claim, so reading it never gives
/// money back before Stripe's refund list is read for the charge (its next event).
fn legacy_claim(
    amount_refunded: i64,
    refunds: &std::collections::BTreeMap<String, Refund>,
) -> std::collections::BTreeMap<String, i64> {
    let failed: i64 = refunds
        .values()
        .filter(|refund| !crate::charges::refund_counts(&refund.status))
        .map(|refund| refund.amount)
        .sum();
    let counted = (amount_refunded - failed).max(0);
    let mut claims = std::collections::BTreeMap::new();
    if counted > 0 {
        claims.insert("legacy".to_owned(), counted);
    }
    claims
}

impl MongoChargeCases {
    /// Opens the collection and ensures its index (idempotent).
    pub async fn open(database: &mongodb::Database) -> anyhow::Result<Self> {
        let collection = database.collection::<CaseDocument>("chargeCases");
        collection
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "disputed": 1, "createdAt": -1 })
                    .build(),
            )
            .await?;
        Ok(Self { collection })
    }
}

#[async_trait]
impl ChargeCaseRepository for MongoChargeCases {
    async fn get(&self, charge_id: &str) -> Result<Option<ChargeCase>, ServiceError> {
        self.collection
            .find_one(doc! { "_id": charge_id })
            .await
            .map_err(mongo_error)?
            .map(ChargeCase::try_from)
            .transpose()
    }

    async fn put(&self, case: &ChargeCase, expected_version: i64) -> Result<(), ServiceError> {
        let document = CaseDocument::from(case);
        if put_versioned(
            &self.collection,
            &case.charge_id,
            document,
            expected_version,
        )
        .await?
        {
            Ok(())
        } else {
            Err(stale_case(&case.charge_id))
        }
    }

    async fn list_disputed(
        &self,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<ChargeCase>, ServiceError> {
        let mut filter = doc! { "disputed": true };
        after_cursor(&mut filter, "createdAt", after, true);
        find_many(
            &self.collection,
            filter,
            doc! { "createdAt": -1, "_id": -1 },
            limit,
        )
        .await?
        .into_iter()
        .map(ChargeCase::try_from)
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A case stored before refunds were counted from refunds (no `claims`) keeps reducing by
    /// what it counted then (`amount_refunded` less failed refunds) until Stripe's refund list
    /// is read: reading it never gives money back.
    #[test]
    fn a_case_stored_before_claims_reads_as_its_old_reduction() {
        let stored = doc! {
            "_id": "ch_old", "amount": 1000_i64, "currency": "usd", "amountRefunded": 300_i64,
            "refunds": [{"id": "re_1", "amount": 100_i64, "status": "failed"}],
            "disputes": [], "disputed": false, "events": ["evt_1"], "notices": [],
            "createdAt": bson::DateTime::from_millis(0), "updatedAt": bson::DateTime::from_millis(0),
            "version": 3_i64,
        };
        let document: CaseDocument = bson::from_document(stored).unwrap();
        let case = ChargeCase::try_from(document).unwrap();
        assert_eq!(case.claims.get("legacy"), Some(&200));
        assert_eq!(case.refunded_cents(), 200);
        assert!(
            case.in_doubt(),
            "the next event of the charge reads Stripe's list"
        );
        // Written back, the claims are explicit and read the same.
        let again = ChargeCase::try_from(CaseDocument::from(&case)).unwrap();
        assert_eq!(again, case);
    }
}
