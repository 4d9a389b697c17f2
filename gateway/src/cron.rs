//! `GET`/`POST /api/cron/platform-balance-check` (design §5): runs a balance check and answers
//! design §5's body. The caller shows `Authorization: Bearer <CRON_SECRET or CRON_API_KEY>`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use payouts_proto::balance::v1 as pb;
use payouts_runtime::Secret;
use payouts_runtime::convert::cents;
use serde_json::{Value, json};
use subtle::ConstantTimeEq as _;

use crate::{Gateway, error_response, grpc_error};

/// Whether `presented` is one of the configured tokens, compared in constant time (every
/// configured token is compared, whichever matches).
fn accepted(presented: &str, tokens: &[&Secret]) -> bool {
    tokens.iter().fold(false, |matched, token| {
        matched | bool::from(token.expose().as_bytes().ct_eq(presented.as_bytes()))
    })
}

pub(crate) async fn platform_balance_check(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
) -> Response {
    let settings = gateway.settings();
    let tokens: Vec<&Secret> = [&settings.cron_secret, &settings.cron_api_key]
        .into_iter()
        .flatten()
        .collect();
    if tokens.is_empty() {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "the cron endpoint is disabled: set CRON_SECRET or CRON_API_KEY",
        );
    }
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    if presented.is_empty() || !accepted(presented, &tokens) {
        return error_response(
            StatusCode::UNAUTHORIZED,
            "Authorization: Bearer <CRON_SECRET or CRON_API_KEY> is required",
        );
    }
    run_check(&gateway, "cron").await
}

/// Runs a balance check (a snapshot, the trend, the alerts) and answers design §5's body; 502
/// when Stripe or an owner of the obligations did not answer.
pub(crate) async fn run_check(gateway: &Gateway, triggered_by: &str) -> Response {
    let request = pb::RunBalanceCheckRequest {
        create_snapshot: Some(true),
        check_trend: Some(true),
        triggered_by: triggered_by.to_owned(),
    };
    match gateway.balance().run_balance_check(request).await {
        Ok(response) => Json(body(&response.into_inner())).into_response(),
        // Stripe (or an owner of the obligations) did not answer: the check is upstream's
        // failure, not ours. Nothing was recorded; the next run tries again.
        Err(status) if status.code() == tonic::Code::Unavailable => {
            tracing::warn!(message = status.message(), "balance check failed upstream");
            (
                StatusCode::BAD_GATEWAY,
                Json(json!({ "success": false, "error": status.message() })),
            )
                .into_response()
        }
        Err(status) => grpc_error(&status),
    }
}

pub(crate) fn threshold_status(status: pb::ThresholdStatus) -> &'static str {
    match status {
        pb::ThresholdStatus::Healthy => "healthy",
        pb::ThresholdStatus::Warning => "warning",
        pb::ThresholdStatus::Critical => "critical",
        pb::ThresholdStatus::Depleted => "depleted",
        pb::ThresholdStatus::Unspecified => "unknown",
    }
}

/// Design §5's answer: `{"success":true,"data":{"balanceStatus":{...},"alerts":[...],
/// "alertsCreated":n,"trend":{"direction","averageChange"}}}`. `daysOfCoverage` is null
/// when the balance is not falling.
pub(crate) fn body(response: &pb::RunBalanceCheckResponse) -> Value {
    let status = response.balance_status.clone().unwrap_or_default();
    let level = status.threshold_status();
    let trend = response.trend.clone().unwrap_or_default();
    json!({
        "success": true,
        "data": {
            "balanceStatus": {
                "thresholdStatus": threshold_status(level),
                "availableBalance": cents(status.available_balance.as_ref()),
                "pendingObligations": cents(status.pending_obligations.as_ref()),
                "requiredReserve": cents(status.required_reserve.as_ref()),
                "availableForPayouts": cents(status.available_for_payouts.as_ref()),
                "daysOfCoverage": (status.days_of_coverage >= 0).then_some(status.days_of_coverage),
                "isHealthy": level == pb::ThresholdStatus::Healthy,
                "isWarning": level == pb::ThresholdStatus::Warning,
                "isCritical": matches!(level, pb::ThresholdStatus::Critical | pb::ThresholdStatus::Depleted),
            },
            "alerts": response.alerts.iter().map(|alert| json!({
                "id": alert.id,
                "type": alert.r#type,
                "severity": alert.severity,
                "title": alert.title,
                "message": alert.message,
            })).collect::<Vec<_>>(),
            "alertsCreated": response.alerts.len(),
            "trend": {
                "direction": match trend.direction() {
                    pb::TrendDirection::Increasing => "increasing",
                    pb::TrendDirection::Decreasing => "decreasing",
                    _ => "stable",
                },
                "averageChange": cents(trend.average_change.as_ref()),
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn either_token_is_accepted_and_nothing_else() {
        let secret = Secret::new("cron-secret");
        let key = Secret::new("api-key");
        assert!(accepted("cron-secret", &[&secret, &key]));
        assert!(accepted("api-key", &[&secret, &key]));
        assert!(!accepted("cron-secre", &[&secret, &key]));
        assert!(!accepted("", &[&secret]));
        assert!(!accepted("api-key", &[&secret]));
    }
}
