//! Admin REST over critical alerts, the platform balance and the transfer pause.

use crate::body::OptionalJsonBody;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use payouts_proto::balance::v1 as balance_pb;
use payouts_proto::notifications::v1 as pb;
use payouts_proto::payouts::v1 as payouts_pb;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin_auth::Admin;
use crate::{Gateway, error_response, grpc_error, page_limit, rfc3339};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AlertsQuery {
    status: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    /// `1`, `2` or `3`: only alerts of that escalation level.
    level: Option<String>,
    limit: Option<String>,
    page_token: Option<String>,
}

/// An alert as admins see it (design §3's fields, and who took it up).
fn alert_json(alert: pb::CriticalAlert) -> Value {
    let severity = match alert.severity() {
        pb::AlertSeverity::Critical => "critical",
        pb::AlertSeverity::Warning => "warning",
        _ => "info",
    };
    let status = match alert.status() {
        pb::AlertStatus::Acknowledged => "acknowledged",
        pb::AlertStatus::Resolved => "resolved",
        _ => "open",
    };
    let metadata: Value = serde_json::from_str(&alert.data_json).unwrap_or_else(|_| json!({}));
    let text = |value: String| Some(value).filter(|value| !value.is_empty());
    let email = (!alert.email_status.is_empty()).then(|| {
        json!({
            "status": alert.email_status,
            "attempts": alert.email_attempts,
            "lastError": text(alert.email_last_error.clone()),
            "sentAt": rfc3339(alert.email_sent_at),
        })
    });
    let page = (!alert.page_status.is_empty()).then(|| {
        json!({
            "status": alert.page_status,
            "attempts": alert.page_attempts,
            "lastError": text(alert.page_last_error.clone()),
            "lastPushedAt": rfc3339(alert.page_last_pushed_at),
            "endsAt": rfc3339(alert.page_ends_at),
        })
    });
    let halt = (!alert.halt_status.is_empty()).then(|| {
        json!({
            "status": alert.halt_status,
            "attempts": alert.halt_attempts,
            "lastError": text(alert.halt_last_error.clone()),
        })
    });
    json!({
        "id": alert.id,
        "type": alert.r#type,
        "severity": severity,
        "level": alert.level,
        "signal": text(alert.signal.clone()),
        "signalCount": alert.signal_count,
        "title": alert.title,
        "message": alert.description,
        "metadata": metadata,
        "status": status,
        "requiresAttention": alert.requires_attention,
        "resolved": alert.resolved,
        "timestamp": rfc3339(alert.created_at),
        "acknowledgedAt": rfc3339(alert.acknowledged_at),
        "acknowledgedBy": text(alert.acknowledged_by),
        "resolvedAt": rfc3339(alert.resolved_at),
        "resolvedBy": text(alert.resolved_by),
        "resolutionNotes": text(alert.resolution_notes),
        "email": email,
        "page": page,
        "halt": halt,
    })
}

/// `GET /api/admin/alerts?status=open|acknowledged|resolved|all&type=&level=1|2|3&limit=&pageToken=`:
/// newest first; `open` (the default) is what nobody has taken up yet; `level` keeps one
/// escalation level.
pub(crate) async fn list(
    State(gateway): State<Gateway>,
    _admin: Admin,
    Query(query): Query<AlertsQuery>,
) -> Response {
    let status = match query.status.as_deref() {
        None | Some("open") => pb::AlertStatus::Active,
        Some("acknowledged") => pb::AlertStatus::Acknowledged,
        Some("resolved") => pb::AlertStatus::Resolved,
        Some("all") => pb::AlertStatus::Unspecified,
        Some(other) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("status must be open, acknowledged, resolved or all, got {other:?}"),
            );
        }
    };
    let level = match query.level.as_deref().map(str::trim) {
        None => 0,
        Some("1") => 1,
        Some("2") => 2,
        Some("3") => 3,
        Some(other) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("level must be 1, 2 or 3, got {other:?}"),
            );
        }
    };
    let page_size = match page_limit(query.limit.as_deref()) {
        Ok(limit) => limit,
        Err(response) => return response,
    };
    let request = pb::ListCriticalAlertsRequest {
        status: status.into(),
        page_size,
        page_token: query.page_token.unwrap_or_default(),
        r#type: query.kind.unwrap_or_default(),
        level,
    };
    match gateway.notifications().list_critical_alerts(request).await {
        Ok(response) => {
            let page = response.into_inner();
            let alerts: Vec<Value> = page.alerts.into_iter().map(alert_json).collect();
            let next = Some(page.next_page_token).filter(|token| !token.is_empty());
            Json(json!({ "alerts": alerts, "nextPageToken": next })).into_response()
        }
        Err(status) => grpc_error(&status),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ResolveBody {
    notes: Option<String>,
}

async fn move_alert(
    gateway: &Gateway,
    admin: Admin,
    alert_id: String,
    status: pb::AlertStatus,
    notes: String,
) -> Response {
    let request = pb::UpdateCriticalAlertRequest {
        alert_id,
        status: status.into(),
        actor: format!("admin:{}", admin.subject),
        notes,
    };
    match gateway.notifications().update_critical_alert(request).await {
        Ok(response) => {
            let alert = response.into_inner().alert.unwrap_or_default();
            Json(json!({ "success": true, "alert": alert_json(alert) })).into_response()
        }
        Err(status) => grpc_error(&status),
    }
}

/// `POST /api/admin/alerts/{id}/acknowledge`.
pub(crate) async fn acknowledge(
    State(gateway): State<Gateway>,
    admin: Admin,
    Path(alert_id): Path<String>,
) -> Response {
    move_alert(
        &gateway,
        admin,
        alert_id,
        pb::AlertStatus::Acknowledged,
        String::new(),
    )
    .await
}

/// `POST /api/admin/alerts/{id}/resolve` with `{"notes": "..."}` (the body is optional).
pub(crate) async fn resolve(
    State(gateway): State<Gateway>,
    admin: Admin,
    Path(alert_id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<ResolveBody>,
) -> Response {
    let notes = body.notes.unwrap_or_default();
    move_alert(&gateway, admin, alert_id, pb::AlertStatus::Resolved, notes).await
}

/// `GET /api/admin/balance`: the latest recorded status in the cron answer's shape, its
/// trend, and the last 30 snapshots (newest first). 404 before the first check.
pub(crate) async fn balance(State(gateway): State<Gateway>, _admin: Admin) -> Response {
    match gateway
        .balance()
        .get_balance_overview(balance_pb::GetBalanceOverviewRequest {})
        .await
    {
        Ok(response) => {
            let overview = response.into_inner();
            let as_check = balance_pb::RunBalanceCheckResponse {
                balance_status: overview.balance_status,
                trend: overview.trend,
                ..Default::default()
            };
            let data = crate::cron::body(&as_check)["data"].clone();
            let snapshots: Vec<Value> = overview.snapshots.into_iter().map(snapshot_json).collect();
            let pause = match gateway
                .payouts()
                .get_transfer_pause(payouts_pb::GetTransferPauseRequest {})
                .await
            {
                Ok(response) => pause_json(response.into_inner().pause.unwrap_or_default()),
                Err(status) => return grpc_error(&status),
            };
            Json(json!({
                "success": true,
                "data": {
                    "balanceStatus": data["balanceStatus"],
                    "trend": data["trend"],
                    "transferPause": pause,
                    "snapshots": snapshots,
                }
            }))
            .into_response()
        }
        Err(status) => grpc_error(&status),
    }
}

/// A snapshot in design §5's shape.
fn snapshot_json(snapshot: balance_pb::BalanceSnapshot) -> Value {
    use payouts_runtime::convert::cents;
    json!({
        "id": snapshot.id,
        "timestamp": rfc3339(snapshot.timestamp),
        "availableBalance": cents(snapshot.available_balance.as_ref()),
        "pendingBalance": cents(snapshot.pending_balance.as_ref()),
        "totalBalance": cents(snapshot.total_balance.as_ref()),
        "pendingObligations": cents(snapshot.pending_obligations.as_ref()),
        "requiredReserve": cents(snapshot.required_reserve.as_ref()),
        "thresholdStatus": crate::cron::threshold_status(snapshot.threshold_status()),
        "metadata": {
            "usersWithUnpaidEarnings": snapshot.users_with_unpaid_earnings,
            "usersWithoutBankAccounts": snapshot.users_without_bank_accounts,
            "daysSinceLastSnapshot": snapshot.days_since_last_snapshot,
        }
    })
}

fn cause_name(cause: payouts_pb::PauseCause) -> Option<&'static str> {
    match cause {
        payouts_pb::PauseCause::Automatic => Some("automatic"),
        payouts_pb::PauseCause::Manual => Some("manual"),
        payouts_pb::PauseCause::Escalation => Some("escalation"),
        payouts_pb::PauseCause::Unspecified => None,
    }
}

fn pause_json(pause: payouts_pb::TransferPause) -> Value {
    json!({
        "paused": pause.paused,
        "cause": cause_name(pause.cause()),
        "beneath": cause_name(pause.beneath()),
        "overridden": pause.overridden,
        "reason": Some(pause.reason).filter(|reason| !reason.is_empty()),
        "changedBy": Some(pause.changed_by).filter(|by| !by.is_empty()),
        "changedAt": rfc3339(pause.changed_at),
    })
}

/// The longest reason a pause or resume records (the API document's `maxLength`).
const MAX_REASON_CHARS: usize = 255;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PauseBody {
    reason: Option<String>,
    /// The cause in force the admin decided on (`automatic`, `manual`, `escalation`): the
    /// change applies only while it still is (409 otherwise), so a resume sent again after
    /// its answer was lost does not also lift the pause the first one left in force.
    cause: Option<String>,
}

async fn set_pause(gateway: &Gateway, admin: Admin, paused: bool, body: PauseBody) -> Response {
    // A blank reason gets a default text from payouts, except when lifting an escalation
    // halt: that takes notes (FAILED_PRECONDITION, 409).
    let reason = body.reason.unwrap_or_default();
    if reason.chars().count() > MAX_REASON_CHARS {
        return error_response(
            StatusCode::BAD_REQUEST,
            format!("reason must be at most {MAX_REASON_CHARS} characters"),
        );
    }
    let reason = reason.trim().to_owned();
    let expected = match body.cause.as_deref() {
        None => payouts_pb::PauseCause::Unspecified,
        Some("automatic") => payouts_pb::PauseCause::Automatic,
        Some("manual") => payouts_pb::PauseCause::Manual,
        Some("escalation") => payouts_pb::PauseCause::Escalation,
        Some(other) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!("cause must be automatic, manual or escalation, got {other:?}"),
            );
        }
    };
    let request = payouts_pb::SetTransferPauseRequest {
        paused,
        cause: payouts_pb::PauseCause::Manual.into(),
        reason,
        actor: format!("admin:{}", admin.subject),
        expected_cause: expected.into(),
    };
    match gateway.payouts().set_transfer_pause(request).await {
        Ok(response) => Json(json!({
            "success": true,
            "transferPause": pause_json(response.into_inner().pause.unwrap_or_default()),
        }))
        .into_response(),
        Err(status) => grpc_error(&status),
    }
}

/// `GET /api/admin/balance/pause`: whether new transfers are halted, why and by whom (the
/// dashboard's banner on every page; answers before the first balance check too).
pub(crate) async fn pause_state(State(gateway): State<Gateway>, _admin: Admin) -> Response {
    match gateway
        .payouts()
        .get_transfer_pause(payouts_pb::GetTransferPauseRequest {})
        .await
    {
        Ok(response) => Json(json!({
            "transferPause": pause_json(response.into_inner().pause.unwrap_or_default()),
        }))
        .into_response(),
        Err(status) => grpc_error(&status),
    }
}

/// `POST /api/admin/balance/pause` with `{"reason": "..."}` (optional): no new transfer starts
/// until an admin resumes; the balance check's recovery does not lift an admin's pause.
pub(crate) async fn pause(
    State(gateway): State<Gateway>,
    admin: Admin,
    OptionalJsonBody(body): OptionalJsonBody<PauseBody>,
) -> Response {
    set_pause(&gateway, admin, true, body).await
}

/// `POST /api/admin/balance/resume` with `{"reason": "..."}`: lifts any pause; an automatic one
/// stays lifted until the balance has recovered once (the next low check does not re-pause
/// what an admin lifted). Lifting a level-3 escalation halt requires the reason (the notes).
pub(crate) async fn resume(
    State(gateway): State<Gateway>,
    admin: Admin,
    OptionalJsonBody(body): OptionalJsonBody<PauseBody>,
) -> Response {
    set_pause(&gateway, admin, false, body).await
}

/// `POST /api/admin/balance/check`: a balance check now ("run check now" on the dashboard),
/// recorded as triggered by the admin; the cron endpoint's answer.
pub(crate) async fn run_check(State(gateway): State<Gateway>, admin: Admin) -> Response {
    crate::cron::run_check(&gateway, &format!("admin:{}", admin.subject)).await
}
