//! Concurrency budgets: each class of caller has its own, so one class cannot starve the
//! others. Webhooks are reachable by anyone (their credential is only checked once they
//! are in), so a flood of junk there must not take the slots admins, the scheduler or the
//! kubelet need.
//!
//! | budget | routes | setting (default) |
//! |---|---|---|
//! | `webhooks` | `/api/webhooks/*` | `GATEWAY_MAX_CONCURRENT_WEBHOOKS` (64) |
//! | `admin` | `/api/admin/*` | `GATEWAY_MAX_CONCURRENT_ADMIN` (64) |
//! | `cron` | `/api/cron/*` | `GATEWAY_MAX_CONCURRENT_CRON` (4) |
//! | `other` | everything else (the dashboard's static files, the OpenAPI document, unknown paths) | `GATEWAY_MAX_CONCURRENT_REQUESTS` (512) |
//! | none | `/livez`, `/healthz`, `/readyz` | never shed |
//!
//! The admin and cron budgets are for their callers only: a request to them is authenticated
//! (the admin's token, the cron bearer token) before it takes a slot, and refused without one
//! (401/403), so anonymous junk cannot shed a real admin or the scheduler. Verifying a token
//! never waits on the network (see `admin_auth`: an unknown `kid` never waits for a fetch).
//!
//! A request beyond its budget is shed at once (no queue): 503 with `Retry-After: 1`, counted
//! in `payouts_http_shed_total{budget}`. Health routes are in no budget: a probe that is shed
//! would restart or unready a pod because of someone else's traffic.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use payouts_runtime::Settings;
use tokio::sync::Semaphore;

use crate::error_response;

/// Which budget a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Budget {
    Webhooks,
    Admin,
    Cron,
    Other,
}

impl Budget {
    /// The budget of a request path; `None` for the health routes, which are never shed.
    pub(crate) fn of(path: &str) -> Option<Self> {
        if matches!(path, "/livez" | "/healthz" | "/readyz") {
            None
        } else if path.starts_with("/api/webhooks/") {
            Some(Self::Webhooks)
        } else if path.starts_with("/api/admin/") {
            Some(Self::Admin)
        } else if path.starts_with("/api/cron/") {
            Some(Self::Cron)
        } else {
            Some(Self::Other)
        }
    }

    /// The `budget` label of `payouts_http_shed_total`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Webhooks => "webhooks",
            Self::Admin => "admin",
            Self::Cron => "cron",
            Self::Other => "other",
        }
    }
}

/// The slots of every budget, shared by all connections.
#[derive(Debug, Clone)]
pub(crate) struct Budgets {
    webhooks: Arc<Semaphore>,
    admin: Arc<Semaphore>,
    cron: Arc<Semaphore>,
    other: Arc<Semaphore>,
}

impl Budgets {
    pub(crate) fn from_settings(settings: &Settings) -> Self {
        let slots = |count: usize| Arc::new(Semaphore::new(count));
        Self {
            webhooks: slots(settings.gateway_max_concurrent_webhooks),
            admin: slots(settings.gateway_max_concurrent_admin),
            cron: slots(settings.gateway_max_concurrent_cron),
            other: slots(settings.gateway_max_concurrent_requests),
        }
    }

    fn slots(&self, budget: Budget) -> &Arc<Semaphore> {
        match budget {
            Budget::Webhooks => &self.webhooks,
            Budget::Admin => &self.admin,
            Budget::Cron => &self.cron,
            Budget::Other => &self.other,
        }
    }
}

/// Middleware: serves the request on a slot of its budget (held until its response is
/// ready), or sheds it when the budget is full.
pub(crate) async fn enforce(
    State((budgets, gateway)): State<(Budgets, crate::Gateway)>,
    request: Request,
    next: Next,
) -> Response {
    let Some(budget) = Budget::of(request.uri().path()) else {
        return next.run(request).await;
    };
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    match budget {
        Budget::Admin => {
            if let Err(refused) = gateway.admin_auth().authenticate(authorization).await {
                return axum::response::IntoResponse::into_response(refused);
            }
        }
        Budget::Cron => {
            if let Err(refused) = crate::cron::authorize(&gateway, authorization) {
                return refused;
            }
        }
        Budget::Webhooks | Budget::Other => {}
    }
    match Arc::clone(budgets.slots(budget)).try_acquire_owned() {
        Ok(_slot) => next.run(request).await,
        Err(_) => shed(budget),
    }
}

/// 503 with `Retry-After` for well-behaved clients. Stripe ignores the header: it retries a
/// failed delivery on its own schedule (with backoff, for up to 3 days in live mode), and the
/// backfill recovers what it never delivers, so a shed event is late, never lost.
fn shed(budget: Budget) -> Response {
    metrics::counter!("payouts_http_shed_total", "budget" => budget.as_str()).increment(1);
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the gateway is at capacity for {} requests; retry shortly",
            budget.as_str()
        ),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_its_budget_and_health_none() {
        for (path, budget) in [
            ("/api/webhooks/stripe-payouts", Some(Budget::Webhooks)),
            ("/api/webhooks/stripe-subscription", Some(Budget::Webhooks)),
            ("/api/admin/payout-approvals", Some(Budget::Admin)),
            ("/admin", Some(Budget::Other)),
            ("/admin/app.js", Some(Budget::Other)),
            ("/api/cron/platform-balance-check", Some(Budget::Cron)),
            ("/api/openapi.json", Some(Budget::Other)),
            ("/nope", Some(Budget::Other)),
            ("/administrator", Some(Budget::Other)),
            ("/livez", None),
            ("/healthz", None),
            ("/readyz", None),
        ] {
            assert_eq!(Budget::of(path), budget, "{path}");
        }
    }
}
