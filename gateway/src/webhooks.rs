//! `POST /api/webhooks/stripe-payouts`, `/api/webhooks/stripe-transfers` and
//! `/api/webhooks/stripe-subscription`: hand the raw body and the Stripe-Signature header to
//! the webhooks service and answer with its verdict (which events each endpoint takes is the
//! webhooks service's rule: an event that cannot arrive there is its 400).
//!
//! Anyone can reach these routes, so the cheap check comes first: a request whose
//! `Stripe-Signature` is missing or not of Stripe's form (`t=<digits>` and at least one
//! `v1=<64 hex>`) is refused with 401 before a byte of its body is read, with the message the
//! webhooks service would give (the signature is the caller's credential). Only then is the
//! body read, at most `GATEWAY_BODY_LIMIT_BYTES` of it (413 beyond), and moved, not copied, into
//! the call. The service verifies the signature itself over the raw bytes.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use payouts_proto::webhooks::v1 as pb;

use crate::{Gateway, error_response, grpc_error};

/// Why a `Stripe-Signature` header is refused before the body is read: the same messages as
/// the webhooks service's `SignatureError` (`missing`, `malformed`).
#[derive(Debug, PartialEq, Eq)]
enum HeaderProblem {
    Missing,
    Malformed(&'static str),
}

impl HeaderProblem {
    fn message(&self) -> String {
        match self {
            Self::Missing => "missing Stripe-Signature header".to_owned(),
            Self::Malformed(why) => format!("malformed Stripe-Signature header: {why}"),
        }
    }

    /// The `reason` label of `payouts_webhooks_rejected_total`, as the service counts it.
    fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed(_) => "malformed",
        }
    }
}

/// Checks the form of a `Stripe-Signature` header (`t=<unix seconds>,v1=<hex>[,...]`, other
/// schemes such as `v0` ignored), not the signature: that needs the body and the secret.
fn well_formed_signature(header: Option<&str>) -> Result<(), HeaderProblem> {
    let header = header
        .map(str::trim)
        .filter(|header| !header.is_empty())
        .ok_or(HeaderProblem::Missing)?;
    let (mut timestamps, mut signatures) = (0, 0);
    for item in header.split(',') {
        let (key, value) = item
            .trim()
            .split_once('=')
            .ok_or(HeaderProblem::Malformed("expected key=value pairs"))?;
        match key {
            "t" => {
                // Unix seconds: digits, at most 19 (they fit an i64).
                if value.is_empty()
                    || value.len() > 19
                    || !value.bytes().all(|byte| byte.is_ascii_digit())
                {
                    return Err(HeaderProblem::Malformed("timestamp is not a number"));
                }
                timestamps += 1;
            }
            // HMAC-SHA256 in hex: 64 characters.
            "v1" if value.len() == 64 && value.bytes().all(|byte| byte.is_ascii_hexdigit()) => {
                signatures += 1;
            }
            _ => {}
        }
    }
    match (timestamps, signatures) {
        (0, _) => Err(HeaderProblem::Malformed("no timestamp")),
        (2.., _) => Err(HeaderProblem::Malformed("more than one timestamp")),
        (_, 0) => Err(HeaderProblem::Malformed("no v1 signature")),
        _ => Ok(()),
    }
}

async fn ingest(gateway: &Gateway, endpoint: pb::WebhookEndpoint, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let signature_header = signature_header(&parts.headers);
    if let Err(problem) = well_formed_signature(signature_header) {
        metrics::counter!(
            "payouts_webhooks_rejected_total",
            "endpoint" => endpoint_label(endpoint),
            "reason" => problem.reason()
        )
        .increment(1);
        return error_response(StatusCode::UNAUTHORIZED, problem.message());
    }
    let signature_header = signature_header.unwrap_or_default().to_owned();
    // A timestamp outside the tolerance is refused before the body is read too: the webhooks
    // service would refuse it anyway, and a made-up header costs no body read.
    let tolerance = gateway.settings().stripe_webhook_tolerance.as_secs();
    if !timestamp_within(&signature_header, chrono::Utc::now().timestamp(), tolerance) {
        metrics::counter!(
            "payouts_webhooks_rejected_total",
            "endpoint" => endpoint_label(endpoint),
            "reason" => "timestamp"
        )
        .increment(1);
        return error_response(
            StatusCode::UNAUTHORIZED,
            "Stripe-Signature timestamp is outside the tolerance (STRIPE_WEBHOOK_TOLERANCE_SECONDS)",
        );
    }
    // The body within a deadline: a client trickling it holds a webhook slot for no longer.
    let read = tokio::time::timeout(
        BODY_READ_DEADLINE,
        read_body(body, gateway.settings().gateway_body_limit_bytes),
    )
    .await;
    let payload = match read {
        Ok(Ok(payload)) => payload,
        Ok(Err(response)) => return response,
        Err(_) => {
            return error_response(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time",
            );
        }
    };
    let request = pb::IngestEventRequest {
        endpoint: endpoint.into(),
        payload,
        signature_header,
    };
    match gateway.webhooks().ingest_event(request).await {
        Ok(response) => match response.into_inner().outcome() {
            pb::IngestOutcome::Duplicate => {
                Json(serde_json::json!({ "received": true, "duplicate": true })).into_response()
            }
            _ => Json(serde_json::json!({ "received": true })).into_response(),
        },
        Err(status) => grpc_error(&status),
    }
}

/// How long a webhook's body may take to arrive once its headers are in (Stripe sends a few
/// kilobytes at once).
const BODY_READ_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether the header's timestamp (`t=`, already known to be digits) is within `tolerance`
/// seconds of `now`.
fn timestamp_within(header: &str, now: i64, tolerance: u64) -> bool {
    header
        .split(',')
        .filter_map(|part| part.trim().strip_prefix("t="))
        .filter_map(|digits| digits.parse::<i64>().ok())
        .any(|timestamp| now.abs_diff(timestamp) <= tolerance)
}

fn signature_header(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("stripe-signature")
        .and_then(|value| value.to_str().ok())
}

/// The body, at most `limit` bytes (413 beyond: the body-limit layer has already refused a
/// declared length over it; this bounds a chunked one), as the bytes the call carries.
#[allow(clippy::result_large_err)] // the error is the answer itself
async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, Response> {
    match axum::body::to_bytes(body, limit).await {
        // One allocation: a body that arrived in one chunk is moved, not copied.
        Ok(bytes) => Ok(Vec::from(bytes)),
        Err(error) => {
            // The limit's error, ours or the body-limit layer's, is somewhere in the chain.
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
            let mut too_large = false;
            while let Some(error) = cause {
                too_large |= error.is::<http_body_util::LengthLimitError>();
                cause = error.source();
            }
            Err(if too_large {
                error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "the body is larger than GATEWAY_BODY_LIMIT_BYTES",
                )
            } else {
                error_response(StatusCode::BAD_REQUEST, "the body could not be read")
            })
        }
    }
}

/// The `endpoint` label the webhooks service gives its rejections.
fn endpoint_label(endpoint: pb::WebhookEndpoint) -> &'static str {
    match endpoint {
        pb::WebhookEndpoint::StripePayouts => "stripe-payouts",
        pb::WebhookEndpoint::StripeTransfers => "stripe-transfers",
        pb::WebhookEndpoint::StripeSubscription => "stripe-subscription",
        pb::WebhookEndpoint::Unspecified => "unspecified",
    }
}

pub(crate) async fn stripe_payouts(State(gateway): State<Gateway>, request: Request) -> Response {
    ingest(&gateway, pb::WebhookEndpoint::StripePayouts, request).await
}

pub(crate) async fn stripe_subscription(
    State(gateway): State<Gateway>,
    request: Request,
) -> Response {
    ingest(&gateway, pb::WebhookEndpoint::StripeSubscription, request).await
}

pub(crate) async fn stripe_transfers(State(gateway): State<Gateway>, request: Request) -> Response {
    ingest(&gateway, pb::WebhookEndpoint::StripeTransfers, request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd";

    #[test]
    fn a_timestamp_is_judged_before_the_body_at_the_tolerance_boundary() {
        let header = |t: i64| format!("t={t},v1={V1}");
        let now = 1_800_000_000;
        assert!(timestamp_within(&header(now - 300), now, 300));
        assert!(timestamp_within(&header(now + 300), now, 300));
        assert!(!timestamp_within(&header(now - 301), now, 300));
        assert!(!timestamp_within(&header(now + 301), now, 300));
        assert!(!timestamp_within(&header(0), now, 300));
    }

    #[test]
    fn a_signature_header_of_stripes_form_passes() {
        for header in [
            format!("t=1492774577,v1={V1}"),
            format!("t=1492774577, v1={V1}, v0=6ffbb59b2300aae63f2"),
            format!("v1={},t=1492774577,v1={V1}", V1.to_uppercase()),
            format!("t=1492774577,v1=00,v1={V1}"),
        ] {
            assert_eq!(well_formed_signature(Some(&header)), Ok(()), "{header}");
        }
    }

    #[test]
    fn a_missing_or_malformed_signature_header_is_refused() {
        assert_eq!(well_formed_signature(None), Err(HeaderProblem::Missing));
        assert_eq!(
            well_formed_signature(Some("  ")),
            Err(HeaderProblem::Missing)
        );
        for (header, why) in [
            (format!("v1={V1}"), "no timestamp"),
            ("t=1492774577".to_owned(), "no v1 signature"),
            ("t=1492774577,v1=00".to_owned(), "no v1 signature"),
            (format!("t=1492774577,v1={}", &V1[1..]), "no v1 signature"),
            (format!("t=1492774577,v1={V1}0"), "no v1 signature"),
            (format!("t=1492774577,v1={}g", &V1[1..]), "no v1 signature"),
            (format!("t=1492774577,v0={V1}"), "no v1 signature"),
            (format!("t=-5,v1={V1}"), "timestamp is not a number"),
            (format!("t=,v1={V1}"), "timestamp is not a number"),
            (
                format!("t=12345678901234567890,v1={V1}"),
                "timestamp is not a number",
            ),
            (format!("t=1,t=2,v1={V1}"), "more than one timestamp"),
            (format!("t=1,v1={V1},junk"), "expected key=value pairs"),
        ] {
            assert_eq!(
                well_formed_signature(Some(&header)),
                Err(HeaderProblem::Malformed(why)),
                "{header}"
            );
        }
    }
}
