//! Request bodies of the admin routes, with errors in the same JSON shape as every other
//! answer (`{"error": "invalid body: ..."}`, 400).
//!
//! [`JsonBody`] is a required JSON body. [`OptionalJsonBody`] is a body the route can do
//! without (`reason` of a pause, `notes` of a resolution): no body and no content type means
//! the defaults, but a body that was sent must be JSON with a JSON content type (so an
//! admin's notes sent as `text/plain` are refused rather than silently dropped), and a
//! request that says it carries JSON must carry it.
//!
//! [`whole_cents`] reads an amount in cents as JSON Schema's `integer` means it: a number
//! without a fractional part (`250` or `250.0`), at most `Money::MAX_CENTS` either way.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use payouts_runtime::Money;
use serde::de::DeserializeOwned;

use crate::error_response;

fn invalid(message: impl std::fmt::Display) -> Response {
    error_response(StatusCode::BAD_REQUEST, format!("invalid body: {message}"))
}

/// A body is a JSON object (serde would also read a struct from an array of its fields).
fn from_object<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    if !value.is_object() {
        return Err("the body must be a JSON object".to_owned());
    }
    serde_json::from_value(value).map_err(|error| error.to_string())
}

/// A required JSON body.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<serde_json::Value>::from_request(request, state).await {
            Ok(Json(value)) => from_object(value).map(Self).map_err(invalid),
            Err(rejection) => Err(invalid(rejection.body_text())),
        }
    }
}

/// An optional JSON body: `T::default()` when the request has none.
#[derive(Debug)]
pub(crate) struct OptionalJsonBody<T>(pub T);

impl<T: DeserializeOwned + Default, S: Send + Sync> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_content = request
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| {
                let essence = value.split(';').next().unwrap_or_default().trim();
                essence.to_ascii_lowercase()
            })
            .is_some_and(|essence| {
                essence == "application/json"
                    || (essence.starts_with("application/") && essence.ends_with("+json"))
            });
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        if bytes.is_empty() && !json_content {
            return Ok(Self(T::default()));
        }
        if !json_content {
            return Err(invalid(
                "a body was sent without Content-Type: application/json",
            ));
        }
        let Json(value) = Json::<serde_json::Value>::from_bytes(&bytes)
            .map_err(|rejection| invalid(rejection.body_text()))?;
        from_object(value).map(Self).map_err(invalid)
    }
}

/// Deserializes cents from a JSON integer, or from a number with no fractional part (JSON
/// Schema's `integer` admits `250.0`), refusing anything beyond ±[`Money::MAX_CENTS`] (the
/// OpenAPI document's `maximum` for amounts).
pub(crate) fn whole_cents<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<i64, D::Error> {
    use serde::Deserialize as _;
    use serde::de::Error as _;
    let number = serde_json::Number::deserialize(deserializer)?;
    #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
    let cents = match (number.as_i64(), number.as_f64()) {
        (Some(cents), _) => Some(cents),
        (None, Some(value)) if value.fract() == 0.0 && value.abs() <= Money::MAX_CENTS as f64 => {
            Some(value as i64)
        }
        _ => None,
    };
    cents
        .filter(|cents| cents.abs() <= Money::MAX_CENTS)
        .ok_or_else(|| {
            D::Error::custom(format!(
                "{number} is not a whole number of cents up to {}",
                Money::MAX_CENTS
            ))
        })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    struct Notes {
        notes: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    struct Amount {
        #[serde(deserialize_with = "whole_cents")]
        cents: i64,
    }

    async fn optional(content_type: Option<&str>, body: &str) -> Result<Notes, StatusCode> {
        let mut request = Request::builder().method("POST").uri("/");
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let request = request.body(Body::from(body.to_owned())).unwrap();
        OptionalJsonBody::<Notes>::from_request(request, &())
            .await
            .map(|OptionalJsonBody(notes)| notes)
            .map_err(|response| response.status())
    }

    #[tokio::test]
    async fn an_optional_body_is_absent_or_json() {
        assert_eq!(optional(None, "").await, Ok(Notes::default()));
        let sent = Ok(Notes {
            notes: Some("checked".into()),
        });
        let body = r#"{"notes":"checked"}"#;
        assert_eq!(optional(Some("application/json"), body).await, sent);
        let charset = Some("application/json; charset=utf-8");
        assert_eq!(optional(charset, body).await, sent);
        assert_eq!(
            optional(Some("application/merge-patch+json"), body).await,
            sent
        );
        // Notes sent as text are refused, not dropped; so is a JSON request without JSON.
        let bad = Err(StatusCode::BAD_REQUEST);
        assert_eq!(optional(Some("text/plain"), body).await, bad);
        assert_eq!(optional(None, body).await, bad);
        assert_eq!(optional(Some("application/json"), "").await, bad);
        assert_eq!(optional(Some("application/json"), "{").await, bad);
        assert_eq!(
            optional(Some("application/json"), r#"{"notes":5}"#).await,
            bad
        );
    }

    #[test]
    fn cents_are_whole_numbers_within_two_to_the_53() {
        let cents = |json: &str| serde_json::from_str::<Amount>(json).map(|amount| amount.cents);
        assert_eq!(cents(r#"{"cents": 250}"#).unwrap(), 250);
        assert_eq!(cents(r#"{"cents": 250.0}"#).unwrap(), 250);
        assert_eq!(cents(r#"{"cents": -3}"#).unwrap(), -3);
        assert_eq!(
            cents(r#"{"cents": 100000000000}"#).unwrap(),
            Money::MAX_CENTS
        );
        assert_eq!(
            cents(r#"{"cents": 100000000000.0}"#).unwrap(),
            Money::MAX_CENTS
        );
        for bad in [
            r#"{"cents": 2.5}"#,
            r#"{"cents": 100000000001}"#,
            r#"{"cents": 9007199254740992}"#,
            r#"{"cents": 1e300}"#,
            r#"{"cents": "250"}"#,
            r#"{"cents": null}"#,
        ] {
            assert!(cents(bad).is_err(), "{bad} accepted");
        }
    }
}
