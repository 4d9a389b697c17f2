//! The gRPC surface: parse requests into domain values, call the flow, map back.

use std::sync::Arc;

use payouts_proto::payouts::v1 as pb;
use payouts_proto::payouts::v1::payouts_service_server::{PayoutsService, PayoutsServiceServer};
use payouts_runtime::authz::{AuthenticatedCallers, Caller};
use payouts_runtime::convert::{
    optional_notes, optional_timestamp, page_size, paginate, parse_page_token, positive_money,
    required_id, required_ids, required_time, timestamp, usd,
};
use payouts_runtime::{Currency, ErrorKind, Money, ServiceError, ServiceName};
use tonic::{Request, Response, Status};

use crate::domain::{Account, Registration};
use crate::events::Event;
use crate::flow::PayoutFlow;
use crate::obligations;
use crate::pause::{PauseCause, PauseChange, TransferPause};
use crate::payout::{AuditEntry, Payout, PayoutStatus, ReversalIntent, ReversalState};
use crate::reconcile::Report;
use crate::reconciler::{MAX_WINDOW_DAYS, Reconciler, accounts_in_flight};

/// How many times a registration is retried when another writer changed the account.
const MAX_WRITE_ATTEMPTS: usize = 5;

/// The tonic service.
pub struct PayoutsGrpc {
    flow: Arc<PayoutFlow>,
    reconciler: Arc<Reconciler>,
}

impl PayoutsGrpc {
    pub fn new(flow: Arc<PayoutFlow>, reconciler: Arc<Reconciler>) -> Self {
        Self { flow, reconciler }
    }

    async fn register(&self, registration: Registration) -> Result<Account, ServiceError> {
        let mut last_conflict = None;
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let existing = self.flow.accounts.get(&registration.user_id).await?;
            let expected_version = existing.as_ref().map(|account| account.version);
            let account = registration.clone().apply(existing);
            match self.flow.accounts.put(&account, expected_version).await {
                Ok(()) => return Ok(account),
                Err(error) if error.kind() == ErrorKind::Conflict => last_conflict = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last_conflict.unwrap_or_else(|| ServiceError::conflict("account changed concurrently")))
    }
}

/// The generated server around the service.
pub fn server(service: PayoutsGrpc) -> PayoutsServiceServer<PayoutsGrpc> {
    PayoutsServiceServer::new(service)
}

fn account_to_proto(a: Account) -> pb::Account {
    pb::Account {
        user_id: a.user_id,
        stripe_account_id: a.stripe_account_id,
        account_created_at: Some(timestamp(a.account_created_at)),
        stripe_account_status: a.stripe_status.map(|s| pb::StripeAccountStatus {
            charges_enabled: s.charges_enabled,
            payouts_enabled: s.payouts_enabled,
            details_submitted: s.details_submitted,
            requirements_currently_due: s.requirements_currently_due,
            updated_at: optional_timestamp(s.updated_at),
        }),
    }
}

fn status_to_proto(status: PayoutStatus) -> pb::PayoutStatus {
    match status {
        PayoutStatus::Admitting => pb::PayoutStatus::Admitting,
        PayoutStatus::Pending => pb::PayoutStatus::Pending,
        PayoutStatus::PendingApproval => pb::PayoutStatus::PendingApproval,
        PayoutStatus::Processing => pb::PayoutStatus::Processing,
        PayoutStatus::Completed => pb::PayoutStatus::Completed,
        PayoutStatus::Failed => pb::PayoutStatus::Failed,
        PayoutStatus::Reversed => pb::PayoutStatus::Reversed,
    }
}

fn status_from_proto(value: i32) -> Result<Option<PayoutStatus>, ServiceError> {
    Ok(match pb::PayoutStatus::try_from(value) {
        Ok(pb::PayoutStatus::Unspecified) => None,
        Ok(pb::PayoutStatus::Admitting) => Some(PayoutStatus::Admitting),
        Ok(pb::PayoutStatus::PendingApproval) => Some(PayoutStatus::PendingApproval),
        Ok(pb::PayoutStatus::Pending) => Some(PayoutStatus::Pending),
        Ok(pb::PayoutStatus::Processing) => Some(PayoutStatus::Processing),
        Ok(pb::PayoutStatus::Completed) => Some(PayoutStatus::Completed),
        Ok(pb::PayoutStatus::Failed) => Some(PayoutStatus::Failed),
        Ok(pb::PayoutStatus::Reversed) => Some(PayoutStatus::Reversed),
        Err(_) => {
            return Err(ServiceError::invalid_argument(format!(
                "status {value} is not defined"
            )));
        }
    })
}

fn reversal_intent_to_proto(i: &ReversalIntent, currency: &Currency) -> pb::ReversalIntent {
    let (state, reversal_id, detail) = match &i.state {
        ReversalState::Pending => (pb::ReversalIntentState::Pending, "", ""),
        ReversalState::Unknown { message } => {
            (pb::ReversalIntentState::Unknown, "", message.as_str())
        }
        ReversalState::Succeeded { reversal_id } => {
            (pb::ReversalIntentState::Succeeded, reversal_id.as_str(), "")
        }
        ReversalState::Refused { reason } => {
            (pb::ReversalIntentState::Refused, "", reason.as_str())
        }
    };
    pb::ReversalIntent {
        id: i.id.clone(),
        client_request_id: i.client_key.clone(),
        requested_by: i.requested_by.clone(),
        amount: Some(Money::new(i.cents, currency.clone()).into()),
        notes: i.notes.clone(),
        transfer_id: i.transfer_id.clone(),
        created_at: Some(timestamp(i.created_at)),
        state: state.into(),
        reversal_id: reversal_id.to_owned(),
        detail: detail.to_owned(),
    }
}

fn payout_to_proto(p: Payout) -> pb::Payout {
    pb::Payout {
        reversal_intents: p
            .reversal_intents
            .iter()
            .map(|intent| reversal_intent_to_proto(intent, &p.amount.currency))
            .collect(),
        status: status_to_proto(p.status).into(),
        amount_reversed: Some(
            Money::new(p.amount_reversed_cents, p.amount.currency.clone()).into(),
        ),
        amount: Some(p.amount.into()),
        outcome_unknown: p.outcome_unknown,
        parked: p.parked,
        stripe_transfer_id: p.stripe_transfer_id.unwrap_or_default(),
        stripe_payout_id: p.stripe_payout_id.unwrap_or_default(),
        approval_required: p.approval_required,
        retry_count: i32::try_from(p.retry_count).unwrap_or(i32::MAX),
        next_retry_at: if p.status == PayoutStatus::Pending {
            optional_timestamp(p.next_retry_at)
        } else {
            None
        },
        failure_code: p.failure_code.unwrap_or_default(),
        failure_reason: p.failure_reason.unwrap_or_default(),
        flags: p
            .flags
            .iter()
            .filter_map(|flag| {
                payouts_proto::limits::v1::PayoutFlag::from_str_name(&format!("PAYOUT_FLAG_{flag}"))
            })
            .map(i32::from)
            .collect(),
        requested_at: Some(timestamp(p.requested_at)),
        completed_at: optional_timestamp(p.completed_at),
        webhook_processed_at: optional_timestamp(p.webhook_processed_at),
        idempotency_key: p.idempotency_key,
        id: p.id,
        user_id: p.user_id,
    }
}

fn audit_to_proto(e: AuditEntry, currency: &Currency) -> pb::AuditEntry {
    pb::AuditEntry {
        id: e.id,
        payout_id: e.payout_id,
        event_type: e.event_type,
        from_status: e
            .from_status
            .map_or(pb::PayoutStatus::Unspecified, status_to_proto)
            .into(),
        to_status: status_to_proto(e.to_status).into(),
        reason: e.reason,
        actor: Some(payouts_proto::common::v1::Actor { id: e.actor }),
        stripe_event_id: e.stripe_event_id.unwrap_or_default(),
        transfer_id: e.transfer_id.unwrap_or_default(),
        amount: Some(Money::new(e.amount_cents, currency.clone()).into()),
        timestamp: Some(timestamp(e.timestamp)),
    }
}

/// A page token: the (requested_at millis, id) of the last payout of a page.
#[tonic::async_trait]
impl PayoutsService for PayoutsGrpc {
    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn register_account(
        &self,
        request: Request<pb::RegisterAccountRequest>,
    ) -> Result<Response<pb::RegisterAccountResponse>, Status> {
        let r = request.into_inner();
        let created_at = required_time(r.account_created_at, "account_created_at")?;
        let registration = Registration::parse(
            &r.user_id,
            &r.stripe_account_id,
            created_at,
            self.flow.clock.now(),
        )?;
        let account = self.register(registration).await?;
        tracing::info!(stripe_account_id = %account.stripe_account_id, "account registered");
        Ok(Response::new(pb::RegisterAccountResponse {
            account: Some(account_to_proto(account)),
        }))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        let user_id = required_id(&request.get_ref().user_id, "user_id")?;
        let account = self
            .flow
            .accounts
            .get(&user_id)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("account {user_id} not found")))?;
        Ok(Response::new(pb::GetAccountResponse {
            account: Some(account_to_proto(account)),
        }))
    }

    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn request_payout(
        &self,
        request: Request<pb::RequestPayoutRequest>,
    ) -> Result<Response<pb::RequestPayoutResponse>, Status> {
        let r = request.into_inner();
        let user_id = required_id(&r.user_id, "user_id")?;
        let idempotency_key = required_id(&r.idempotency_key, "idempotency_key")?;
        let amount = positive_money(r.amount, "amount", &Currency::usd())?;
        let requested = self
            .flow
            .request(&user_id, amount, &idempotency_key)
            .await?;
        Ok(Response::new(pb::RequestPayoutResponse {
            payout: requested.payout.map(payout_to_proto),
            decision: Some(requested.decision),
        }))
    }

    async fn get_payout(
        &self,
        request: Request<pb::GetPayoutRequest>,
    ) -> Result<Response<pb::GetPayoutResponse>, Status> {
        let payout_id = required_id(&request.get_ref().payout_id, "payout_id")?;
        let payout = self
            .flow
            .payouts
            .get(&payout_id)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("payout {payout_id} not found")))?;
        Ok(Response::new(pb::GetPayoutResponse {
            payout: Some(payout_to_proto(payout)),
        }))
    }

    async fn list_payouts(
        &self,
        request: Request<pb::ListPayoutsRequest>,
    ) -> Result<Response<pb::ListPayoutsResponse>, Status> {
        let r = request.into_inner();
        // No user: every user's payouts (admins).
        let user_id = match r.user_id.trim() {
            "" => None,
            _ => Some(required_id(&r.user_id, "user_id")?),
        };
        let status = status_from_proto(r.status)?;
        let size = page_size(r.page_size, 50, 500)?;
        let after = parse_page_token(&r.page_token)?;
        let found = self
            .flow
            .payouts
            .list_by_user(user_id.as_deref(), status, after, size + 1)
            .await?;
        let (page, next_page_token) = paginate(found, size, |p| (p.requested_at, p.id.clone()));
        Ok(Response::new(pb::ListPayoutsResponse {
            payouts: page.into_iter().map(payout_to_proto).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(payout_id = %request.get_ref().payout_id))]
    async fn resolve_approval(
        &self,
        request: Request<pb::ResolveApprovalRequest>,
    ) -> Result<Response<pb::ResolveApprovalResponse>, Status> {
        let r = request.into_inner();
        let payout_id = required_id(&r.payout_id, "payout_id")?;
        let reviewer = required_id(&r.reviewer, "reviewer")?;
        optional_notes(&r.notes, "notes")?;
        let payout = self
            .flow
            .resolve_approval(&payout_id, r.approved, &reviewer, &r.notes)
            .await?;
        Ok(Response::new(pb::ResolveApprovalResponse {
            transfer_id: payout.stripe_transfer_id.clone().unwrap_or_default(),
            payout: Some(payout_to_proto(payout)),
        }))
    }

    #[tracing::instrument(skip_all, fields(event_id = tracing::field::Empty))]
    async fn handle_stripe_event(
        &self,
        request: Request<pb::HandleStripeEventRequest>,
    ) -> Result<Response<pb::HandleStripeEventResponse>, Status> {
        let event = request
            .into_inner()
            .event
            .ok_or_else(|| ServiceError::invalid_argument("event is required"))?;
        tracing::Span::current().record("event_id", event.id.as_str());
        let parsed = Event::parse(
            &event.id,
            &event.r#type,
            &event.account,
            event.created,
            &event.payload_json,
        )?;
        let outcome = self.flow.handle_event(&parsed).await?;
        Ok(Response::new(pb::HandleStripeEventResponse {
            applied: outcome.applied,
            detail: outcome.detail,
        }))
    }

    async fn list_audit_log(
        &self,
        request: Request<pb::ListAuditLogRequest>,
    ) -> Result<Response<pb::ListAuditLogResponse>, Status> {
        let r = request.into_inner();
        let payout_id = required_id(&r.payout_id, "payout_id")?;
        let size = page_size(r.page_size, 100, 500)?;
        // The trail lives in the payout (written with each change); a token is a position.
        let start: usize = if r.page_token.is_empty() {
            0
        } else {
            r.page_token.parse().map_err(|_| {
                ServiceError::invalid_argument("page_token is not one this service issued")
            })?
        };
        let payout = self
            .flow
            .payouts
            .get(&payout_id)
            .await?
            .ok_or_else(|| ServiceError::not_found(format!("payout {payout_id} not found")))?;
        let currency = payout.amount.currency.clone();
        let total = payout.audit_log.len();
        let end = start.saturating_add(size).min(total);
        let entries = payout
            .audit_log
            .into_iter()
            .skip(start)
            .take(end.saturating_sub(start))
            .map(|entry| audit_to_proto(entry, &currency))
            .collect();
        Ok(Response::new(pb::ListAuditLogResponse {
            entries,
            next_page_token: if end < total {
                end.to_string()
            } else {
                String::new()
            },
        }))
    }

    async fn summarize_obligations(
        &self,
        _request: Request<pb::SummarizeObligationsRequest>,
    ) -> Result<Response<pb::SummarizeObligationsResponse>, Status> {
        let owed = obligations::owed(&*self.flow.payouts).await?;
        Ok(Response::new(pb::SummarizeObligationsResponse {
            awaiting_transfer: Some(usd(owed.awaiting_transfer_cents)),
            awaiting_transfer_count: owed.awaiting_transfer_count,
            pending_approval: Some(usd(owed.pending_approval_cents)),
            pending_approval_count: owed.pending_approval_count,
        }))
    }

    async fn count_unpayable_users(
        &self,
        request: Request<pb::CountUnpayableUsersRequest>,
    ) -> Result<Response<pb::CountUnpayableUsersResponse>, Status> {
        let user_ids = required_ids(&request.into_inner().user_ids, "user_ids", 1_000)?;
        let mut unpayable = 0;
        for user_id in &user_ids {
            let account = self.flow.accounts.get(user_id).await?;
            if !obligations::can_be_paid(account.as_ref()) {
                unpayable += 1;
            }
        }
        Ok(Response::new(pb::CountUnpayableUsersResponse { unpayable }))
    }

    async fn set_transfer_pause(
        &self,
        request: Request<pb::SetTransferPauseRequest>,
    ) -> Result<Response<pb::SetTransferPauseResponse>, Status> {
        // Each cause has one owner: the balance check pauses automatically, an admin (through
        // the gateway) manually, notifications halts for a level-3 alert. Across mutual TLS a
        // caller may set only its own cause, so a compromised notifications service cannot
        // lift an admin's pause, nor the balance check lift a halt.
        let owner = match request.get_ref().cause() {
            pb::PauseCause::Automatic => Some((
                Caller::Service(ServiceName::Balance),
                "set an automatic pause",
            )),
            pb::PauseCause::Manual => Some((Caller::Gateway, "set a manual pause")),
            pb::PauseCause::Escalation => Some((
                Caller::Service(ServiceName::Notifications),
                "halt for an escalation",
            )),
            pb::PauseCause::Unspecified => None,
        };
        if let Some((caller, what)) = owner {
            AuthenticatedCallers::require(&request, caller, what)?;
        }
        let r = request.into_inner();
        let cause = match r.cause() {
            pb::PauseCause::Automatic => PauseCause::Automatic,
            pb::PauseCause::Manual => PauseCause::Manual,
            pb::PauseCause::Escalation => {
                if !r.paused {
                    return Err(ServiceError::invalid_argument(
                        "an escalation halt is lifted only by an admin (cause MANUAL)",
                    )
                    .into());
                }
                if crate::pause::escalation_alert(&r.reason).is_none() {
                    return Err(ServiceError::invalid_argument(
                        "reason must be \"escalation: <alert id>\" for an escalation halt",
                    )
                    .into());
                }
                PauseCause::Escalation
            }
            pb::PauseCause::Unspecified => {
                return Err(ServiceError::invalid_argument(
                    "cause must be AUTOMATIC, MANUAL or ESCALATION",
                )
                .into());
            }
        };
        let reason = r.reason.trim().to_owned();
        if reason.is_empty() && cause != PauseCause::Manual {
            return Err(ServiceError::invalid_argument("reason is required").into());
        }
        let expected = match r.expected_cause() {
            pb::PauseCause::Unspecified => None,
            pb::PauseCause::Automatic => Some(PauseCause::Automatic),
            pb::PauseCause::Manual => Some(PauseCause::Manual),
            pb::PauseCause::Escalation => Some(PauseCause::Escalation),
        };
        let change = PauseChange {
            paused: r.paused,
            cause,
            reason,
            actor: required_id(&r.actor, "actor")?,
        };
        let pause = self.flow.set_pause_expecting(&change, expected).await?;
        if cause == PauseCause::Manual && !r.paused && pause.cause == Some(PauseCause::Escalation) {
            return Err(ServiceError::failed_precondition(
                "notes are required to lift an escalation halt (reason): say what was checked",
            )
            .into());
        }
        Ok(Response::new(pb::SetTransferPauseResponse {
            pause: Some(pause_to_proto(pause)),
        }))
    }

    async fn get_transfer_pause(
        &self,
        _request: Request<pb::GetTransferPauseRequest>,
    ) -> Result<Response<pb::GetTransferPauseResponse>, Status> {
        let pause = self.flow.pause.get().await?;
        Ok(Response::new(pb::GetTransferPauseResponse {
            pause: Some(pause_to_proto(pause)),
        }))
    }

    #[tracing::instrument(skip_all, fields(payout_id = %request.get_ref().payout_id))]
    async fn resume_payout(
        &self,
        request: Request<pb::ResumePayoutRequest>,
    ) -> Result<Response<pb::ResumePayoutResponse>, Status> {
        let r = request.into_inner();
        let payout_id = required_id(&r.payout_id, "payout_id")?;
        let requested_by = required_id(&r.requested_by, "requested_by")?;
        let payout = self.flow.resume(&payout_id, &requested_by).await?;
        Ok(Response::new(pb::ResumePayoutResponse {
            payout: Some(payout_to_proto(payout)),
        }))
    }

    #[tracing::instrument(skip_all, fields(payout_id = %request.get_ref().payout_id))]
    async fn reverse_payout(
        &self,
        request: Request<pb::ReversePayoutRequest>,
    ) -> Result<Response<pb::ReversePayoutResponse>, Status> {
        let r = request.into_inner();
        let payout_id = required_id(&r.payout_id, "payout_id")?;
        let requested_by = required_id(&r.requested_by, "requested_by")?;
        optional_notes(&r.notes, "notes")?;
        let client_request_id = required_id(&r.client_request_id, "client_request_id")?;
        let payout = self
            .flow
            .request_reversal(
                &payout_id,
                &client_request_id,
                r.amount_cents,
                &r.notes,
                &requested_by,
            )
            .await?;
        Ok(Response::new(pb::ReversePayoutResponse {
            payout: Some(payout_to_proto(payout)),
        }))
    }

    async fn list_accounts_in_flight(
        &self,
        _request: Request<pb::ListAccountsInFlightRequest>,
    ) -> Result<Response<pb::ListAccountsInFlightResponse>, Status> {
        Ok(Response::new(pb::ListAccountsInFlightResponse {
            stripe_account_ids: accounts_in_flight(&self.flow).await?,
        }))
    }

    async fn run_reconciliation(
        &self,
        request: Request<pb::RunReconciliationRequest>,
    ) -> Result<Response<pb::RunReconciliationResponse>, Status> {
        let r = request.into_inner();
        let since = match r.since {
            None => None,
            Some(since) => {
                let since = required_time(Some(since), "since")?;
                let now = self.flow.clock.now();
                if since < now - chrono::Duration::days(MAX_WINDOW_DAYS) {
                    return Err(ServiceError::invalid_argument(format!(
                        "since must be at most {MAX_WINDOW_DAYS} days back"
                    ))
                    .into());
                }
                if since > now {
                    return Err(ServiceError::invalid_argument("since is in the future").into());
                }
                Some(since)
            }
        };
        let triggered_by = required_id(&r.triggered_by, "triggered_by")?;
        let report = self.reconciler.run(since, &triggered_by).await?;
        Ok(Response::new(pb::RunReconciliationResponse {
            report: Some(report_to_proto(report)),
        }))
    }

    async fn list_reconciliation_reports(
        &self,
        request: Request<pb::ListReconciliationReportsRequest>,
    ) -> Result<Response<pb::ListReconciliationReportsResponse>, Status> {
        let limit = page_size(request.into_inner().page_size, 10, 100)?;
        let reports = self.reconciler.reports.latest(limit).await?;
        Ok(Response::new(pb::ListReconciliationReportsResponse {
            reports: reports.into_iter().map(report_to_proto).collect(),
        }))
    }
}

fn report_to_proto(report: Report) -> pb::ReconciliationReport {
    let count = |value: u32| i32::try_from(value).unwrap_or(i32::MAX);
    pb::ReconciliationReport {
        id: report.id,
        started_at: Some(timestamp(report.started_at)),
        finished_at: Some(timestamp(report.finished_at)),
        since: Some(timestamp(report.since)),
        until: Some(timestamp(report.until)),
        triggered_by: report.triggered_by,
        transfers_checked: count(report.transfers_checked),
        payouts_checked: count(report.payouts_checked),
        status: report.status.as_str().to_owned(),
        findings: report
            .findings
            .into_iter()
            .map(|f| pb::ReconciliationFinding {
                kind: f.kind.as_str().to_owned(),
                payout_id: f.payout_id.unwrap_or_default(),
                transfer_id: f.transfer_id.unwrap_or_default(),
                ours: f.ours,
                stripes: f.stripes,
                detail: f.detail,
            })
            .collect(),
        error: report.error.unwrap_or_default(),
    }
}

fn cause_to_proto(cause: Option<PauseCause>) -> pb::PauseCause {
    match cause {
        None => pb::PauseCause::Unspecified,
        Some(PauseCause::Automatic) => pb::PauseCause::Automatic,
        Some(PauseCause::Manual) => pb::PauseCause::Manual,
        Some(PauseCause::Escalation) => pb::PauseCause::Escalation,
    }
}

fn pause_to_proto(pause: TransferPause) -> pb::TransferPause {
    pb::TransferPause {
        paused: pause.paused(),
        cause: cause_to_proto(pause.cause).into(),
        beneath: cause_to_proto(pause.beneath).into(),
        overridden: pause.overridden,
        reason: pause.reason,
        changed_by: pause.changed_by,
        changed_at: optional_timestamp(pause.changed_at),
    }
}
