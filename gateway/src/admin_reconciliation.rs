//! Admin REST over the reconciliation of our payouts with Stripe's transfers.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use payouts_proto::payouts::v1 as pb;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin_auth::Admin;
use crate::body::OptionalJsonBody;
use crate::{Gateway, error_response, grpc_error, rfc3339};

/// A report as JSON.
fn report_json(report: pb::ReconciliationReport) -> Value {
    let findings: Vec<Value> = report
        .findings
        .into_iter()
        .map(|f| {
            json!({
                "kind": f.kind,
                "payoutId": Some(f.payout_id).filter(|id| !id.is_empty()),
                "transferId": Some(f.transfer_id).filter(|id| !id.is_empty()),
                "ours": f.ours,
                "stripe": f.stripes,
                "detail": f.detail,
            })
        })
        .collect();
    json!({
        "id": report.id,
        "status": report.status,
        "startedAt": rfc3339(report.started_at),
        "finishedAt": rfc3339(report.finished_at),
        "since": rfc3339(report.since),
        "until": rfc3339(report.until),
        "triggeredBy": report.triggered_by,
        "transfersChecked": report.transfers_checked,
        "payoutsChecked": report.payouts_checked,
        "findings": findings,
        "error": Some(report.error).filter(|error| !error.is_empty()),
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunBody {
    since: Option<String>,
}

/// `POST /api/admin/reconciliation/run` `{"since"?: RFC 3339}`: runs a reconciliation now
/// (the configured window when `since` is absent, at most 90 days back) and answers its
/// report.
pub(crate) async fn run(
    State(gateway): State<Gateway>,
    admin: Admin,
    OptionalJsonBody(body): OptionalJsonBody<RunBody>,
) -> Response {
    let since = match body
        .since
        .as_deref()
        .map(chrono::DateTime::parse_from_rfc3339)
    {
        None => None,
        Some(Ok(since)) => Some(payouts_runtime::convert::timestamp(
            since.with_timezone(&chrono::Utc),
        )),
        Some(Err(_)) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                format!(
                    "since must be an RFC 3339 time, got {:?}",
                    body.since.unwrap_or_default()
                ),
            );
        }
    };
    let request = pb::RunReconciliationRequest {
        since,
        triggered_by: format!("admin:{}", admin.subject),
    };
    match gateway.payouts().run_reconciliation(request).await {
        Ok(response) => Json(json!({
            "report": response.into_inner().report.map(report_json),
        }))
        .into_response(),
        Err(status) => grpc_error(&status),
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ReportsQuery {
    limit: Option<String>,
}

/// `GET /api/admin/reconciliation?limit=10`: the latest reports, newest first (1..100).
pub(crate) async fn reports(
    State(gateway): State<Gateway>,
    _admin: Admin,
    Query(query): Query<ReportsQuery>,
) -> Response {
    let limit = match query.limit.as_deref() {
        None => 10,
        Some(text) => match text.parse::<i32>() {
            Ok(limit) if (1..=100).contains(&limit) => limit,
            _ => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    format!("limit must be a whole number from 1 to 100, got {text:?}"),
                );
            }
        },
    };
    match gateway
        .payouts()
        .list_reconciliation_reports(pb::ListReconciliationReportsRequest { page_size: limit })
        .await
    {
        Ok(response) => {
            let reports: Vec<Value> = response
                .into_inner()
                .reports
                .into_iter()
                .map(report_json)
                .collect();
            Json(json!({ "reports": reports })).into_response()
        }
        Err(status) => grpc_error(&status),
    }
}
