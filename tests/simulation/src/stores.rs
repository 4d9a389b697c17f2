//! The embedded stores of the real services, each call behind an await point and a fault:
//! the store may not answer (nothing happened), or a write may happen and its answer be
//! lost (as a network error after a MongoDB write). A crash can fall between any two calls.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payouts_approvals::domain::{Approval, Filter};
use payouts_approvals::store::ApprovalRepository;
use payouts_disputes::charges::ChargeCase;
use payouts_disputes::domain::{Allocation, EarningsBook};
use payouts_disputes::store::{AllocationRepository, ChargeCaseRepository, EarningsBookRepository};
use payouts_limits::checks::Quota;
use payouts_limits::domain::BlockedAttempt;
use payouts_limits::store::{BlockedAttemptRepository, QuotaRepository};
use payouts_notifications::alerts::{Alert, AlertStatus};
use payouts_notifications::escalation::Level;
use payouts_notifications::store::AlertRepository;
use payouts_payouts::domain::Account;
use payouts_payouts::pause::TransferPause;
use payouts_payouts::payout::{AuditEntry, Payout, PayoutStatus};
use payouts_payouts::store::{AccountRepository, Inserted, PauseRepository, PayoutRepository};
use payouts_runtime::ServiceError;
use payouts_webhooks::domain::{Endpoint, EventStatus, InboxEvent, Statistics};
use payouts_webhooks::store::{InboxRepository, Inserted as InboxInserted};

use crate::chaos::{Chaos, unavailable};
use crate::executor::Gate;

/// Store faults, in a thousand calls.
const STORE_DOWN: u32 = 6;
const WRITE_ANSWER_LOST: u32 = 4;

/// What every store call goes through.
#[derive(Clone)]
pub struct Hazard {
    pub gate: Gate,
    pub chaos: Chaos,
    /// Services down for a while ([`crate::chaos::Outages`]).
    pub outages: crate::chaos::Outages,
    /// What the transfer pause must mean ([`crate::halts`]).
    pub watch: crate::halts::PauseWatch,
}

impl Hazard {
    async fn before(&self, label: &'static str) -> Result<(), ServiceError> {
        self.gate.point(label).await;
        if self.chaos.fault("store down", STORE_DOWN) {
            return Err(unavailable("the store"));
        }
        Ok(())
    }

    async fn read<T>(
        &self,
        label: &'static str,
        call: impl Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, ServiceError> {
        self.before(label).await?;
        call.await
    }

    async fn write<T>(
        &self,
        label: &'static str,
        call: impl Future<Output = Result<T, ServiceError>>,
    ) -> Result<T, ServiceError> {
        self.before(label).await?;
        let result = call.await;
        self.gate.point(label).await;
        match result {
            Ok(_)
                if self
                    .chaos
                    .fault("store write answer lost", WRITE_ANSWER_LOST) =>
            {
                Err(unavailable("the store"))
            }
            other => other,
        }
    }
}

/// A store wrapped in hazards.
pub struct Hazardous<R: ?Sized> {
    pub inner: Arc<R>,
    pub hazard: Hazard,
}

impl<R: ?Sized> Hazardous<R> {
    pub fn new(inner: Arc<R>, hazard: &Hazard) -> Arc<Self> {
        Arc::new(Self {
            inner,
            hazard: hazard.clone(),
        })
    }
}

#[async_trait]
impl PayoutRepository for Hazardous<dyn PayoutRepository> {
    async fn insert(&self, payout: &Payout) -> Result<Inserted, ServiceError> {
        self.hazard
            .write("payouts.insert", self.inner.insert(payout))
            .await
    }
    async fn get(&self, payout_id: &str) -> Result<Option<Payout>, ServiceError> {
        self.hazard
            .read("payouts.get", self.inner.get(payout_id))
            .await
    }
    async fn find_by_key(&self, user_id: &str, key: &str) -> Result<Option<Payout>, ServiceError> {
        self.hazard
            .read("payouts.find_by_key", self.inner.find_by_key(user_id, key))
            .await
    }
    async fn find_by_transfer(&self, transfer_id: &str) -> Result<Option<Payout>, ServiceError> {
        self.hazard
            .read(
                "payouts.find_by_transfer",
                self.inner.find_by_transfer(transfer_id),
            )
            .await
    }
    async fn by_destination(
        &self,
        destination: &str,
        statuses: &[PayoutStatus],
    ) -> Result<Vec<Payout>, ServiceError> {
        self.hazard
            .read(
                "payouts.by_destination",
                self.inner.by_destination(destination, statuses),
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
        self.hazard
            .read(
                "payouts.list",
                self.inner.list_by_user(user_id, status, after, limit),
            )
            .await
    }
    async fn due(
        &self,
        status: PayoutStatus,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Payout>, ServiceError> {
        self.hazard
            .read("payouts.due", self.inner.due(status, now, limit))
            .await
    }
    async fn due_effects(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Payout>, ServiceError> {
        self.hazard
            .read("payouts.due_effects", self.inner.due_effects(now, limit))
            .await
    }
    async fn in_status(
        &self,
        status: PayoutStatus,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Payout>, ServiceError> {
        self.hazard
            .read(
                "payouts.in_status",
                self.inner.in_status(status, after, limit),
            )
            .await
    }
    async fn replace(&self, payout: &Payout, expected_version: i64) -> Result<(), ServiceError> {
        let (inner, hazard) = (&self.inner, &self.hazard);
        // Watched at the instant the write applies: a pause is not a failure, nor a try.
        let write = async move {
            let before = inner.get(&payout.id).await?;
            inner.replace(payout, expected_version).await?;
            if let Some(before) = before {
                hazard
                    .watch
                    .payout_written(hazard.gate.current(), &before, payout);
            }
            Ok(())
        };
        self.hazard.write("payouts.replace", write).await
    }
    async fn delete(&self, payout_id: &str, expected_version: i64) -> Result<(), ServiceError> {
        self.hazard
            .write(
                "payouts.delete",
                self.inner.delete(payout_id, expected_version),
            )
            .await
    }
    async fn project_audit(&self, entries: &[AuditEntry]) -> Result<(), ServiceError> {
        self.hazard
            .write("payouts.project_audit", self.inner.project_audit(entries))
            .await
    }
    async fn projected_audit(&self, payout_id: &str) -> Result<Vec<AuditEntry>, ServiceError> {
        self.hazard
            .read(
                "payouts.projected_audit",
                self.inner.projected_audit(payout_id),
            )
            .await
    }
}

#[async_trait]
impl AccountRepository for Hazardous<dyn AccountRepository> {
    async fn get(&self, user_id: &str) -> Result<Option<Account>, ServiceError> {
        self.hazard
            .read("accounts.get", self.inner.get(user_id))
            .await
    }
    async fn find_by_stripe_account(
        &self,
        stripe_account_id: &str,
    ) -> Result<Option<Account>, ServiceError> {
        self.hazard
            .read(
                "accounts.find",
                self.inner.find_by_stripe_account(stripe_account_id),
            )
            .await
    }
    async fn due_bank_looks(
        &self,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<Account>, ServiceError> {
        self.hazard
            .read(
                "accounts.due_bank_looks",
                self.inner.due_bank_looks(now, limit),
            )
            .await
    }
    async fn put(
        &self,
        account: &Account,
        expected_version: Option<i64>,
    ) -> Result<(), ServiceError> {
        self.hazard
            .write("accounts.put", self.inner.put(account, expected_version))
            .await
    }
}

#[async_trait]
impl PauseRepository for Hazardous<dyn PauseRepository> {
    async fn get(&self) -> Result<TransferPause, ServiceError> {
        let pause = self.hazard.read("pause.get", self.inner.get()).await?;
        // The store's state at the instant of the read: what this task's attempt started on.
        self.hazard.watch.read(self.hazard.gate.current(), &pause);
        Ok(pause)
    }
    async fn put(&self, pause: &TransferPause, expected_version: i64) -> Result<(), ServiceError> {
        let (inner, hazard) = (&self.inner, &self.hazard);
        let write = async move {
            let before = inner.get().await?;
            inner.put(pause, expected_version).await?;
            hazard.watch.changed(hazard.gate.current(), &before, pause);
            Ok(())
        };
        self.hazard.write("pause.put", write).await
    }
}

#[async_trait]
impl QuotaRepository for Hazardous<dyn QuotaRepository> {
    async fn get(&self, user_id: &str) -> Result<Quota, ServiceError> {
        self.hazard
            .read("quotas.get", self.inner.get(user_id))
            .await
    }
    async fn put(&self, quota: &Quota, expected_version: i64) -> Result<(), ServiceError> {
        self.hazard
            .write("quotas.put", self.inner.put(quota, expected_version))
            .await
    }
}

#[async_trait]
impl BlockedAttemptRepository for Hazardous<dyn BlockedAttemptRepository> {
    async fn record(&self, attempt: &BlockedAttempt) -> Result<(), ServiceError> {
        self.hazard
            .write("blocked.record", self.inner.record(attempt))
            .await
    }
    async fn list(
        &self,
        user_id: Option<&str>,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<BlockedAttempt>, ServiceError> {
        self.hazard
            .read("blocked.list", self.inner.list(user_id, after, limit))
            .await
    }
}

#[async_trait]
impl InboxRepository for Hazardous<dyn InboxRepository> {
    async fn insert_new(&self, event: InboxEvent) -> Result<InboxInserted, ServiceError> {
        self.hazard
            .write("inbox.insert", self.inner.insert_new(event))
            .await
    }
    async fn get(
        &self,
        endpoint: Endpoint,
        event_id: &str,
    ) -> Result<Option<InboxEvent>, ServiceError> {
        self.hazard
            .read("inbox.get", self.inner.get(endpoint, event_id))
            .await
    }
    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<InboxEvent>, ServiceError> {
        self.hazard
            .read("inbox.due", self.inner.due(now, limit))
            .await
    }
    async fn replace(&self, event: &InboxEvent, expected_version: i64) -> Result<(), ServiceError> {
        self.hazard
            .write("inbox.replace", self.inner.replace(event, expected_version))
            .await
    }
    async fn statistics(&self) -> Result<Statistics, ServiceError> {
        self.hazard
            .read("inbox.statistics", self.inner.statistics())
            .await
    }
    async fn list(
        &self,
        status: Option<EventStatus>,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<InboxEvent>, ServiceError> {
        self.hazard
            .read("inbox.list", self.inner.list(status, after, limit))
            .await
    }
}

#[async_trait]
impl ApprovalRepository for Hazardous<dyn ApprovalRepository> {
    async fn create(&self, approval: &Approval) -> Result<(Approval, bool), ServiceError> {
        self.hazard
            .write("approvals.create", self.inner.create(approval))
            .await
    }
    async fn get(&self, approval_id: &str) -> Result<Option<Approval>, ServiceError> {
        self.hazard
            .read("approvals.get", self.inner.get(approval_id))
            .await
    }
    async fn replace(
        &self,
        approval: &Approval,
        expected_version: i64,
    ) -> Result<(), ServiceError> {
        self.hazard
            .write(
                "approvals.replace",
                self.inner.replace(approval, expected_version),
            )
            .await
    }
    async fn list(&self, filter: &Filter) -> Result<Vec<Approval>, ServiceError> {
        self.hazard
            .read("approvals.list", self.inner.list(filter))
            .await
    }
    async fn due(&self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Approval>, ServiceError> {
        self.hazard
            .read("approvals.due", self.inner.due(now, limit))
            .await
    }
    async fn count_pending(&self) -> Result<u64, ServiceError> {
        self.hazard
            .read("approvals.count_pending", self.inner.count_pending())
            .await
    }
}

#[async_trait]
impl AllocationRepository for Hazardous<dyn AllocationRepository> {
    async fn record(&self, allocation: &Allocation) -> Result<(Allocation, bool), ServiceError> {
        self.hazard
            .write("allocations.record", self.inner.record(allocation))
            .await
    }
    async fn get(&self, allocation_id: &str) -> Result<Option<Allocation>, ServiceError> {
        self.hazard
            .read("allocations.get", self.inner.get(allocation_id))
            .await
    }
    async fn replace(
        &self,
        allocation: &Allocation,
        expected_version: i64,
    ) -> Result<(), ServiceError> {
        self.hazard
            .write(
                "allocations.replace",
                self.inner.replace(allocation, expected_version),
            )
            .await
    }
    async fn list_by_charge(
        &self,
        charge_id: &str,
        limit: usize,
    ) -> Result<Vec<Allocation>, ServiceError> {
        self.hazard
            .read(
                "allocations.list_by_charge",
                self.inner.list_by_charge(charge_id, limit),
            )
            .await
    }
    async fn list_by_user(
        &self,
        user_id: &str,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Allocation>, ServiceError> {
        self.hazard
            .read(
                "allocations.list_by_user",
                self.inner.list_by_user(user_id, after, limit),
            )
            .await
    }
}

#[async_trait]
impl EarningsBookRepository for Hazardous<dyn EarningsBookRepository> {
    async fn get(&self, user_id: &str) -> Result<EarningsBook, ServiceError> {
        self.hazard.read("books.get", self.inner.get(user_id)).await
    }
    async fn put(&self, book: &EarningsBook, expected_version: i64) -> Result<(), ServiceError> {
        self.hazard
            .write("books.put", self.inner.put(book, expected_version))
            .await
    }
    async fn list(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EarningsBook>, ServiceError> {
        self.hazard
            .read("books.list", self.inner.list(after, limit))
            .await
    }
}

#[async_trait]
impl ChargeCaseRepository for Hazardous<dyn ChargeCaseRepository> {
    async fn get(&self, charge_id: &str) -> Result<Option<ChargeCase>, ServiceError> {
        self.hazard
            .read("cases.get", self.inner.get(charge_id))
            .await
    }
    async fn put(&self, case: &ChargeCase, expected_version: i64) -> Result<(), ServiceError> {
        self.hazard
            .write("cases.put", self.inner.put(case, expected_version))
            .await
    }
    async fn list_disputed(
        &self,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<ChargeCase>, ServiceError> {
        self.hazard
            .read(
                "cases.list_disputed",
                self.inner.list_disputed(after, limit),
            )
            .await
    }
}

#[async_trait]
impl AlertRepository for Hazardous<dyn AlertRepository> {
    async fn create(&self, alert: &Alert) -> Result<(Alert, bool), ServiceError> {
        self.hazard
            .write("alerts.create", self.inner.create(alert))
            .await
    }
    async fn get(&self, alert_id: &str) -> Result<Option<Alert>, ServiceError> {
        self.hazard
            .read("alerts.get", self.inner.get(alert_id))
            .await
    }
    async fn list(
        &self,
        status: Option<AlertStatus>,
        kind: Option<&str>,
        level: Option<Level>,
        after: Option<(DateTime<Utc>, String)>,
        limit: usize,
    ) -> Result<Vec<Alert>, ServiceError> {
        self.hazard
            .read(
                "alerts.list",
                self.inner.list(status, kind, level, after, limit),
            )
            .await
    }
    async fn replace(&self, alert: &Alert, expected_version: i64) -> Result<(), ServiceError> {
        self.hazard
            .write(
                "alerts.replace",
                self.inner.replace(alert, expected_version),
            )
            .await
    }
    async fn open_by_type(&self) -> Result<BTreeMap<(String, Level), u64>, ServiceError> {
        self.hazard
            .read("alerts.open_by_type", self.inner.open_by_type())
            .await
    }
    async fn pages_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Alert>, ServiceError> {
        self.hazard
            .read("alerts.pages_due", self.inner.pages_due(now, limit))
            .await
    }
    async fn pages_owed(&self) -> Result<u64, ServiceError> {
        self.hazard
            .read("alerts.pages_owed", self.inner.pages_owed())
            .await
    }
    async fn halts_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Alert>, ServiceError> {
        self.hazard
            .read("alerts.halts_due", self.inner.halts_due(now, limit))
            .await
    }
    async fn emails_due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Alert>, ServiceError> {
        self.hazard
            .read("alerts.emails_due", self.inner.emails_due(now, limit))
            .await
    }
}
