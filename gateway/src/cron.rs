//! `GET`/`POST /api/cron/platform-balance-check` (design §5): runs a balance check and answers
//! design §5's body. The caller shows `Authorization: Bearer <CRON_SECRET or CRON_API_KEY>`
//! (each at least 32 bytes, refused at start otherwise).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use payouts_proto::balance::v1 as pb;
use payouts_runtime::Settings;
use payouts_runtime::convert::cents;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::{Gateway, error_response, grpc_error};

/// The configured cron tokens, kept as their SHA-256 digests: a presented token is hashed and
/// compared digest to digest in constant time, so neither its bytes nor the tokens' length
/// show in the time an answer takes (comparing the raw bytes stops at a length mismatch).
#[derive(Clone)]
pub(crate) struct CronTokens {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for CronTokens {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "CronTokens({} configured)", self.digests.len())
    }
}

impl CronTokens {
    pub(crate) fn from_settings(settings: &Settings) -> Self {
        let digests = [&settings.cron_secret, &settings.cron_api_key]
            .into_iter()
            .flatten()
            .map(|token| Sha256::digest(token.expose().as_bytes()).into())
            .collect();
        Self { digests }
    }

    fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// Whether `presented` is one of the tokens (every token is compared, whichever matches).
    fn accepts(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.digests.iter().fold(false, |matched, digest| {
            matched | bool::from(digest.ct_eq(&presented))
        })
    }
}

/// Whether the `Authorization` header carries a cron token: `Ok`, or the answer that refuses
/// it (503 when no token is configured, 401 otherwise). Checked before the request takes a
/// cron slot (see `budgets`) and again by the handler.
#[allow(clippy::result_large_err)] // the error is the answer itself
pub(crate) fn authorize(gateway: &Gateway, authorization: Option<&str>) -> Result<(), Response> {
    let tokens = gateway.cron_tokens();
    if tokens.is_empty() {
        return Err(error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "the cron endpoint is disabled: set CRON_SECRET or CRON_API_KEY",
        ));
    }
    let presented = authorization
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    if presented.is_empty() || !tokens.accepts(presented) {
        return Err(error_response(
            StatusCode::UNAUTHORIZED,
            "Authorization: Bearer <CRON_SECRET or CRON_API_KEY> is required",
        ));
    }
    Ok(())
}

pub(crate) async fn platform_balance_check(
    State(gateway): State<Gateway>,
    headers: HeaderMap,
) -> Response {
    let authorization = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if let Err(refused) = authorize(&gateway, authorization) {
        return refused;
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

    const SECRET: &str = "cron-secret-of-at-least-32-bytes-0001";
    const KEY: &str = "cron-api-key-of-at-least-32-bytes-0002";

    fn tokens(pairs: &[(&str, &str)]) -> CronTokens {
        let env = pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        CronTokens::from_settings(&Settings::from_env(env).unwrap())
    }

    #[test]
    fn either_token_is_accepted_and_nothing_else() {
        let both = tokens(&[("CRON_SECRET", SECRET), ("CRON_API_KEY", KEY)]);
        assert!(both.accepts(SECRET));
        assert!(both.accepts(KEY));
        assert!(!both.accepts(&SECRET[..SECRET.len() - 1]));
        assert!(!both.accepts(&format!("{SECRET}x")));
        assert!(!both.accepts(""));
        let secret_only = tokens(&[("CRON_SECRET", SECRET)]);
        assert!(!secret_only.accepts(KEY));
        assert!(tokens(&[]).is_empty());
    }

    #[test]
    fn tokens_are_kept_and_compared_as_fixed_size_digests() {
        // What is compared has the same length whatever was presented or configured: the
        // comparison cannot stop early at a length mismatch.
        let both = tokens(&[("CRON_SECRET", SECRET), ("CRON_API_KEY", KEY)]);
        let digest = |token: &str| -> [u8; 32] { Sha256::digest(token.as_bytes()).into() };
        assert_eq!(both.digests, [digest(SECRET), digest(KEY)]);
        assert!(!format!("{both:?}").contains("cron-secret"));
    }
}
