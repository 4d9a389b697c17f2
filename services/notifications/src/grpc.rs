//! The gRPC surface: parse requests into domain values, call the repository, map back.

use std::sync::Arc;

use payouts_proto::notifications::v1 as pb;
use payouts_proto::notifications::v1::notifications_service_server::{
    NotificationsService, NotificationsServiceServer,
};
use payouts_runtime::convert::{
    optional_notes, optional_timestamp, page_size, paginate, parse_page_token, required_id,
    timestamp,
};
use payouts_runtime::{Clock, ErrorKind, IdSource, ServiceError};
use tonic::{Request, Response, Status};

use crate::alerts::{Alert, AlertStatus, Severity};
use crate::domain::{Criticality, NewNotification, Notification};
use crate::escalation::{EscalationPolicy, Level, Rule, Signal, SignalRecord};
use crate::store::{AlertRepository, NotificationRepository, Repositories, SignalRepository};

/// The tonic service.
pub struct NotificationsGrpc {
    repository: Arc<dyn NotificationRepository>,
    alerts: Arc<dyn AlertRepository>,
    signals: Arc<dyn SignalRepository>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
    admin_ids: Vec<String>,
    /// Whether critical and warning alerts owe an email (`SMTP_URL` set).
    emails: bool,
    /// The escalation thresholds.
    policy: EscalationPolicy,
    /// Whether level-3 alerts owe a page (`ALERTMANAGER_URL` set).
    paging: bool,
}

impl NotificationsGrpc {
    pub fn new(
        repositories: Repositories,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdSource>,
        admin_ids: Vec<String>,
    ) -> Self {
        Self {
            repository: repositories.notifications,
            alerts: repositories.alerts,
            signals: repositories.signals,
            clock,
            ids,
            admin_ids,
            emails: false,
            policy: EscalationPolicy::default(),
            paging: false,
        }
    }

    /// The escalation thresholds, and whether level 3 pages.
    pub fn with_escalation(mut self, policy: EscalationPolicy, paging: bool) -> Self {
        self.policy = policy;
        self.paging = paging;
        self
    }

    /// The alert owing what its level owes: an email ([`crate::email::emailed`]), and at
    /// level 3 a page and a halt. An alert without a signal has its level from its severity
    /// (critical 2, warning 1).
    fn owing(&self, alert: Alert) -> Alert {
        let alert = if self.emails && crate::email::emailed(&alert) {
            alert.owing_email(self.clock.now())
        } else {
            alert
        };
        if alert.level == Level::Leads {
            alert.owing_escalation(self.clock.now(), self.paging)
        } else {
            alert
        }
    }

    /// Records a signal, sets its alert's level, stores the alert, and opens or escalates
    /// the alert of the windowed rule it crossed.
    async fn raise_with_signal(
        &self,
        alert: Alert,
        signal: SignalRecord,
    ) -> Result<(Alert, bool), ServiceError> {
        let now = signal.at;
        let new = self.signals.record(&signal).await?;
        let mut history = match self.policy.lookback(signal.signal) {
            Some(lookback) => self.signals.since(signal.signal, now - lookback).await?,
            None => Vec::new(),
        };
        // A retried signal (its answer was lost) keeps the time it was first recorded.
        let signal = match history.iter().find(|s| !new && s.id == signal.id) {
            Some(stored) => stored.clone(),
            None => signal,
        };
        // An episode an admin resolved is over: its rule counts only the signals that came
        // after the resolution, so a retried old signal, or one new signal inside a window
        // that still holds the old ones, does not open (and halt) the episode again.
        let mut before_resolution = false;
        if let Some(rule) = self.policy.rule_of(signal.signal)
            && let Some(latest) = self
                .alerts
                .list(None, Some(rule.kind()), None, None, 1)
                .await?
                .into_iter()
                .next()
            && latest.status == AlertStatus::Resolved
            && let Some(resolved_at) = latest.resolved_at
        {
            history.retain(|s| s.at > resolved_at);
            before_resolution = signal.at <= resolved_at;
        }
        let mut assessment = self.policy.assess(&signal, &history, None, now);
        if before_resolution {
            assessment.escalation = None;
        }
        let mut alert = alert;
        alert.level = assessment.level;
        alert.signal = Some(signal.signal.as_str().to_owned());
        let (stored, created) = self.alerts.create(&self.owing(alert)).await?;
        if let Some((rule, count)) = assessment.escalation {
            self.escalate(rule, count, &signal).await?;
        }
        Ok((stored, created))
    }

    /// Opens the rule's alert, or escalates the open one (a rule that keeps firing never
    /// opens a duplicate: its alerts are `<rule>:<n>`, the next one only after the last is
    /// resolved, and a create that loses the race escalates the winner).
    async fn escalate(
        &self,
        rule: Rule,
        count: u32,
        signal: &SignalRecord,
    ) -> Result<Alert, ServiceError> {
        for _ in 0..8 {
            let now = self.clock.now();
            let latest = self
                .alerts
                .list(None, Some(rule.kind()), None, None, 1)
                .await?
                .into_iter()
                .next();
            match latest {
                Some(open) if open.status != AlertStatus::Resolved => {
                    let Some(escalated) = open.escalated(rule, count, signal) else {
                        return Ok(open);
                    };
                    let escalated = if escalated.level > open.level {
                        self.owing(escalated)
                    } else {
                        escalated
                    };
                    match self.alerts.replace(&escalated, open.version).await {
                        Ok(()) => {
                            if escalated.level > open.level {
                                tracing::error!(alert_id = %escalated.id, level = escalated.level.number(), "alert escalated");
                            }
                            return Ok(escalated);
                        }
                        Err(error) if error.kind() == ErrorKind::Conflict => {}
                        Err(error) => return Err(error),
                    }
                }
                Some(resolved)
                    if resolved
                        .resolved_at
                        .is_some_and(|resolved_at| signal.at <= resolved_at) =>
                {
                    // Resolved after this signal was counted (an admin's resolve between our
                    // read and now): the episode it belongs to is over; no new one from it.
                    return Ok(resolved);
                }
                latest => {
                    let sequence = latest
                        .as_ref()
                        .and_then(|alert| alert.id.rsplit(':').next())
                        .and_then(|n| n.parse::<u64>().ok())
                        .unwrap_or(0)
                        + 1;
                    let alert = Alert::for_rule(
                        self.ids.next("alert"),
                        rule,
                        count,
                        signal,
                        sequence,
                        now,
                    )?;
                    let (stored, created) = self.alerts.create(&self.owing(alert)).await?;
                    if created {
                        tracing::error!(
                            alert_id = %stored.id,
                            kind = %stored.kind,
                            level = stored.level.number(),
                            count,
                            "escalation alert raised"
                        );
                        return Ok(stored);
                    }
                }
            }
        }
        Err(ServiceError::conflict(format!(
            "the {} alert keeps changing; try again",
            rule.kind()
        )))
    }

    /// Critical and warning alerts owe an email (the email worker runs).
    pub fn with_emails(mut self, emails: bool) -> Self {
        self.emails = emails;
        self
    }

    /// Moves an alert forward, retrying when another writer got there first.
    async fn move_alert(
        &self,
        alert_id: &str,
        to: AlertStatus,
        actor: &str,
        notes: Option<&str>,
    ) -> Result<Alert, ServiceError> {
        for _ in 0..8 {
            let alert =
                self.alerts.get(alert_id).await?.ok_or_else(|| {
                    ServiceError::not_found(format!("alert {alert_id} not found"))
                })?;
            let Some(moved) = alert.moved_to(to, self.clock.now(), actor, notes) else {
                if alert.status == to {
                    return Ok(alert);
                }
                return Err(ServiceError::failed_precondition(format!(
                    "alert {alert_id} is {}; alerts only move forward",
                    alert.status.as_str()
                )));
            };
            match self.alerts.replace(&moved, alert.version).await {
                Ok(()) => return Ok(moved),
                Err(error) if error.kind() == ErrorKind::Conflict => {}
                Err(error) => return Err(error),
            }
        }
        Err(ServiceError::conflict(format!(
            "alert {alert_id} keeps changing; try again"
        )))
    }

    async fn notify(&self, new: NewNotification) -> Result<Notification, ServiceError> {
        let notification = new.into_notification(self.ids.next("notification"), self.clock.now());
        let (stored, created) = self.repository.insert(notification).await?;
        if created {
            tracing::info!(
                notification_id = %stored.id,
                recipient_id = %stored.recipient_id,
                kind = %stored.kind,
                "notification stored"
            );
        }
        Ok(stored)
    }
}

/// The generated server around the service.
pub fn server(service: NotificationsGrpc) -> NotificationsServiceServer<NotificationsGrpc> {
    NotificationsServiceServer::new(service)
}

fn criticality(value: i32) -> Result<Criticality, ServiceError> {
    match pb::Criticality::try_from(value) {
        Ok(pb::Criticality::Unspecified) => Ok(Criticality::Normal),
        Ok(pb::Criticality::Low) => Ok(Criticality::Low),
        Ok(pb::Criticality::Normal) => Ok(Criticality::Normal),
        Ok(pb::Criticality::High) => Ok(Criticality::High),
        Ok(pb::Criticality::Critical) => Ok(Criticality::Critical),
        Err(_) => Err(ServiceError::invalid_argument(format!(
            "criticality {value} is not defined"
        ))),
    }
}

fn severity(value: i32) -> Result<Severity, ServiceError> {
    match pb::AlertSeverity::try_from(value) {
        Ok(pb::AlertSeverity::Info) => Ok(Severity::Info),
        Ok(pb::AlertSeverity::Warning) => Ok(Severity::Warning),
        Ok(pb::AlertSeverity::Critical) => Ok(Severity::Critical),
        Ok(pb::AlertSeverity::Unspecified) => {
            Err(ServiceError::invalid_argument("severity is required"))
        }
        Err(_) => Err(ServiceError::invalid_argument(format!(
            "severity {value} is not defined"
        ))),
    }
}

fn alert_status(value: i32) -> Result<Option<AlertStatus>, ServiceError> {
    match pb::AlertStatus::try_from(value) {
        Ok(pb::AlertStatus::Unspecified) => Ok(None),
        Ok(pb::AlertStatus::Active) => Ok(Some(AlertStatus::Active)),
        Ok(pb::AlertStatus::Acknowledged) => Ok(Some(AlertStatus::Acknowledged)),
        Ok(pb::AlertStatus::Resolved) => Ok(Some(AlertStatus::Resolved)),
        Err(_) => Err(ServiceError::invalid_argument(format!(
            "status {value} is not defined"
        ))),
    }
}

fn alert_to_proto(a: Alert) -> pb::CriticalAlert {
    let requires_attention = a.requires_attention();
    let severity = match a.severity {
        Severity::Info => pb::AlertSeverity::Info,
        Severity::Warning => pb::AlertSeverity::Warning,
        Severity::Critical => pb::AlertSeverity::Critical,
    };
    let status = match a.status {
        AlertStatus::Active => pb::AlertStatus::Active,
        AlertStatus::Acknowledged => pb::AlertStatus::Acknowledged,
        AlertStatus::Resolved => pb::AlertStatus::Resolved,
    };
    pb::CriticalAlert {
        id: a.id,
        r#type: a.kind,
        severity: severity.into(),
        title: a.title,
        description: a.description,
        data_json: a.data_json,
        status: status.into(),
        created_at: Some(timestamp(a.created_at)),
        acknowledged_at: optional_timestamp(a.acknowledged_at),
        resolved_at: optional_timestamp(a.resolved_at),
        requires_attention,
        resolved: a.status == AlertStatus::Resolved,
        acknowledged_by: a.acknowledged_by.unwrap_or_default(),
        resolved_by: a.resolved_by.unwrap_or_default(),
        resolution_notes: a.resolution_notes.unwrap_or_default(),
        email_status: a
            .email
            .as_ref()
            .map(|email| email.status.as_str().to_owned())
            .unwrap_or_default(),
        email_attempts: a.email.as_ref().map_or(0, |email| email.attempts),
        email_last_error: a
            .email
            .as_ref()
            .and_then(|email| email.last_error.clone())
            .unwrap_or_default(),
        email_sent_at: optional_timestamp(a.email.as_ref().and_then(|email| email.sent_at)),
        level: u32::from(a.level.number()),
        signal: a.signal.unwrap_or_default(),
        signal_count: a.signal_count,
        page_status: a
            .page
            .as_ref()
            .map(|page| page.status.as_str().to_owned())
            .unwrap_or_default(),
        page_attempts: a.page.as_ref().map_or(0, |page| page.attempts),
        page_last_error: a
            .page
            .as_ref()
            .and_then(|page| page.last_error.clone())
            .unwrap_or_default(),
        page_last_pushed_at: optional_timestamp(
            a.page.as_ref().and_then(|page| page.last_pushed_at),
        ),
        page_ends_at: optional_timestamp(a.page.as_ref().and_then(|page| page.ends_at)),
        halt_status: a
            .halt
            .as_ref()
            .map(|halt| halt.status.as_str().to_owned())
            .unwrap_or_default(),
        halt_attempts: a.halt.as_ref().map_or(0, |halt| halt.attempts),
        halt_last_error: a
            .halt
            .as_ref()
            .and_then(|halt| halt.last_error.clone())
            .unwrap_or_default(),
    }
}

fn to_proto(n: Notification) -> pb::Notification {
    let criticality = match n.criticality {
        Criticality::Low => pb::Criticality::Low,
        Criticality::Normal => pb::Criticality::Normal,
        Criticality::High => pb::Criticality::High,
        Criticality::Critical => pb::Criticality::Critical,
    };
    pb::Notification {
        read: n.is_read(),
        id: n.id,
        recipient_id: n.recipient_id,
        r#type: n.kind,
        title: n.title,
        body: n.body,
        metadata_json: n.metadata_json,
        criticality: criticality.into(),
        created_at: Some(timestamp(n.created_at)),
        read_at: optional_timestamp(n.read_at),
    }
}

#[tonic::async_trait]
impl NotificationsService for NotificationsGrpc {
    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn notify_user(
        &self,
        request: Request<pb::NotifyUserRequest>,
    ) -> Result<Response<pb::NotifyUserResponse>, Status> {
        let r = request.into_inner();
        let new = NewNotification::parse(
            &r.user_id,
            &r.r#type,
            &r.title,
            &r.body,
            &r.metadata_json,
            criticality(r.criticality)?,
            &r.dedupe_key,
        )?;
        let notification = self.notify(new).await?;
        Ok(Response::new(pb::NotifyUserResponse {
            notification: Some(to_proto(notification)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn notify_admins(
        &self,
        request: Request<pb::NotifyAdminsRequest>,
    ) -> Result<Response<pb::NotifyAdminsResponse>, Status> {
        let r = request.into_inner();
        let criticality = criticality(r.criticality)?;
        if self.admin_ids.is_empty() {
            tracing::warn!(kind = %r.r#type, "admin notification dropped: ADMIN_USER_IDS is empty");
        }
        let mut notifications = Vec::with_capacity(self.admin_ids.len());
        for admin_id in &self.admin_ids {
            let new = NewNotification::parse(
                admin_id,
                &r.r#type,
                &r.title,
                &r.body,
                &r.metadata_json,
                criticality,
                &r.dedupe_key,
            )?;
            notifications.push(to_proto(self.notify(new).await?));
        }
        Ok(Response::new(pb::NotifyAdminsResponse { notifications }))
    }

    async fn list_notifications(
        &self,
        request: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let r = request.into_inner();
        let recipient_id = required_id(&r.recipient_id, "recipient_id")?;
        let size = page_size(r.page_size, 50, 500)?;
        let after = parse_page_token(&r.page_token)?;
        let found = self
            .repository
            .list(&recipient_id, r.unread_only, after, size + 1)
            .await?;
        let (page, next_page_token) = paginate(found, size, |n| (n.created_at, n.id.clone()));
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: page.into_iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn mark_notification_read(
        &self,
        request: Request<pb::MarkNotificationReadRequest>,
    ) -> Result<Response<pb::MarkNotificationReadResponse>, Status> {
        let r = request.into_inner();
        let recipient_id = required_id(&r.recipient_id, "recipient_id")?;
        let notification_id = required_id(&r.notification_id, "notification_id")?;
        let notification = self
            .repository
            .mark_read(&recipient_id, &notification_id, self.clock.now())
            .await?;
        Ok(Response::new(pb::MarkNotificationReadResponse {
            notification: Some(to_proto(notification)),
        }))
    }

    #[tracing::instrument(skip_all, fields(kind = %request.get_ref().r#type))]
    async fn create_critical_alert(
        &self,
        request: Request<pb::CreateCriticalAlertRequest>,
    ) -> Result<Response<pb::CreateCriticalAlertResponse>, Status> {
        let r = request.into_inner();
        let alert = Alert::raise(
            self.ids.next("alert"),
            &r.r#type,
            severity(r.severity)?,
            &r.title,
            &r.description,
            &r.data_json,
            &r.dedupe_key,
            self.clock.now(),
        )?;
        let signal = r.signal.trim();
        let (stored, created) = if signal.is_empty() {
            self.alerts.create(&self.owing(alert)).await?
        } else {
            let signal = Signal::parse(signal).ok_or_else(|| {
                ServiceError::invalid_argument(format!("signal {signal:?} is not defined"))
            })?;
            let id = Some(r.signal_id.trim().to_owned())
                .filter(|id| !id.is_empty())
                .or_else(|| alert.dedupe_key.clone())
                .ok_or_else(|| {
                    ServiceError::invalid_argument(
                        "signal_id or dedupe_key is required with a signal",
                    )
                })?;
            let record = SignalRecord {
                id,
                signal,
                subject: Some(r.subject.trim().to_owned()).filter(|s| !s.is_empty()),
                amount_cents: r.amount_cents,
                at: self.clock.now(),
            };
            self.raise_with_signal(alert, record).await?
        };
        if created {
            // An alert is for people: it is logged loudly as well as stored.
            tracing::error!(
                alert_id = %stored.id,
                kind = %stored.kind,
                severity = stored.severity.as_str(),
                title = %stored.title,
                "critical alert raised"
            );
        }
        Ok(Response::new(pb::CreateCriticalAlertResponse {
            alert: Some(alert_to_proto(stored)),
            created,
        }))
    }

    async fn list_critical_alerts(
        &self,
        request: Request<pb::ListCriticalAlertsRequest>,
    ) -> Result<Response<pb::ListCriticalAlertsResponse>, Status> {
        let r = request.into_inner();
        let status = alert_status(r.status)?;
        let size = page_size(r.page_size, 50, 500)?;
        let after = parse_page_token(&r.page_token)?;
        let kind = Some(r.r#type.trim()).filter(|kind| !kind.is_empty());
        let level = match r.level {
            0 => None,
            number => Some(
                u8::try_from(number)
                    .ok()
                    .and_then(Level::from_number)
                    .ok_or_else(|| ServiceError::invalid_argument("level must be 1, 2 or 3"))?,
            ),
        };
        let found = self
            .alerts
            .list(status, kind, level, after, size + 1)
            .await?;
        let (page, next_page_token) = paginate(found, size, |a| (a.created_at, a.id.clone()));
        Ok(Response::new(pb::ListCriticalAlertsResponse {
            alerts: page.into_iter().map(alert_to_proto).collect(),
            next_page_token,
        }))
    }

    async fn update_critical_alert(
        &self,
        request: Request<pb::UpdateCriticalAlertRequest>,
    ) -> Result<Response<pb::UpdateCriticalAlertResponse>, Status> {
        let r = request.into_inner();
        let alert_id = required_id(&r.alert_id, "alert_id")?;
        let to = match alert_status(r.status)? {
            Some(to @ (AlertStatus::Acknowledged | AlertStatus::Resolved)) => to,
            _ => {
                return Err(ServiceError::invalid_argument(
                    "status must be ACKNOWLEDGED or RESOLVED",
                )
                .into());
            }
        };
        let actor = required_id(&r.actor, "actor")?;
        let notes = optional_notes(&r.notes, "notes")?;
        let alert = self
            .move_alert(&alert_id, to, &actor, notes.as_deref())
            .await?;
        Ok(Response::new(pb::UpdateCriticalAlertResponse {
            alert: Some(alert_to_proto(alert)),
        }))
    }
}
