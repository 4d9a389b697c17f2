//! Headers every request and answer pass through.
//!
//! In: a caller's `x-request-id` is kept only if it is at most 128 bytes of visible ASCII
//! (otherwise a new UUID replaces it, so an oversized or forged id is never echoed, logged or
//! passed to the services); a `traceparent` that is not the W3C 55-character form is dropped
//! with its `tracestate`, and so is a `tracestate` over 512 bytes (the request starts a new
//! trace).
//!
//! Out: every answer says `X-Content-Type-Options: nosniff` and, unless the route set its
//! own caching (the dashboard's static files: `no-cache`), `Cache-Control: no-store`: answers
//! carry balances, payouts and tokens' results that no shared cache should keep.

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use payouts_runtime::telemetry::{MAX_TRACESTATE_BYTES, acceptable_request_id, valid_traceparent};

use crate::REQUEST_ID;

/// Drops a caller's request id and trace context that are not acceptable.
pub(crate) async fn drop_unacceptable_trace_headers(mut request: Request) -> Request {
    let headers = request.headers_mut();
    if headers
        .get(REQUEST_ID)
        .is_some_and(|value| !acceptable_request_id(value.as_bytes()))
    {
        headers.remove(REQUEST_ID);
    }
    // Two `traceparent`s are as invalid as a malformed one (W3C Trace Context §3.2).
    let mut traceparents = headers.get_all("traceparent").iter();
    let traceparent_valid = traceparents
        .next()
        .is_some_and(|value| valid_traceparent(value.as_bytes()))
        && traceparents.next().is_none();
    if !traceparent_valid {
        headers.remove("traceparent");
        headers.remove("tracestate");
    } else if headers
        .get("tracestate")
        .is_some_and(|value| value.len() > MAX_TRACESTATE_BYTES)
    {
        headers.remove("tracestate");
    }
    request
}

/// `nosniff` on every answer; `no-store` on every answer that set no caching of its own.
pub(crate) async fn no_sniff_no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
