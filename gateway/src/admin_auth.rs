//! Admin authentication for every `/api/admin` route: `Authorization: Bearer <JWT>`, HS256
//! with `ADMIN_JWT_SECRET`, the algorithm pinned (a token naming any other algorithm, or
//! `none`, is refused), `exp` required, `nbf` honoured, and the claim `"admin": true`.
//! 401 when the token is missing or invalid; 403 when it is valid but not an admin's.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::{Gateway, error_response};

/// How admin tokens are verified.
#[derive(Clone)]
pub struct AdminAuth {
    key: Option<DecodingKey>,
    validation: Validation,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("configured", &self.key.is_some())
            .finish()
    }
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: Option<String>,
    #[serde(default)]
    admin: serde_json::Value,
}

impl AdminAuth {
    pub fn new(secret: Option<&str>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = 5;
        Self {
            key: secret.map(|secret| DecodingKey::from_secret(secret.as_bytes())),
            validation,
        }
    }

    /// The admin's subject, or why the request is refused.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<String, AuthError> {
        let Some(key) = &self.key else {
            return Err(AuthError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "admin authentication is not configured (ADMIN_JWT_SECRET)",
            });
        };
        let unauthorized = |message: &'static str| AuthError {
            status: StatusCode::UNAUTHORIZED,
            message,
        };
        let header = authorization.ok_or_else(|| unauthorized("missing Authorization header"))?;
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| unauthorized("Authorization must be \"Bearer <token>\""))?;
        let claims = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|error| {
                tracing::info!(reason = %error, "admin token refused");
                unauthorized("invalid or expired admin token")
            })?
            .claims;
        let subject = claims
            .sub
            .filter(|subject| !subject.trim().is_empty())
            .ok_or_else(|| unauthorized("admin token has no subject"))?;
        if claims.admin != serde_json::Value::Bool(true) {
            return Err(AuthError {
                status: StatusCode::FORBIDDEN,
                message: "admin privileges required",
            });
        }
        Ok(subject)
    }
}

/// A refused admin request: 401, 403, or 503 when admin auth is not configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthError {
    pub status: StatusCode,
    pub message: &'static str,
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        error_response(self.status, self.message)
    }
}

/// An authenticated admin; extracting it refuses everyone else.
#[derive(Debug, Clone)]
pub struct Admin {
    pub subject: String,
}

impl FromRequestParts<Gateway> for Admin {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        gateway: &Gateway,
    ) -> Result<Self, Self::Rejection> {
        let authorization = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        let subject = gateway
            .admin_auth
            .authenticate(authorization)
            .map_err(IntoResponse::into_response)?;
        Ok(Admin { subject })
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};

    use super::*;

    const SECRET: &str = "admin-test-secret";

    fn now() -> u64 {
        u64::try_from(chrono::Utc::now().timestamp()).unwrap()
    }

    fn token(claims: serde_json::Value, algorithm: Algorithm, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(algorithm),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn status(auth: &AdminAuth, header: Option<&str>) -> Result<String, StatusCode> {
        auth.authenticate(header).map_err(|error| error.status)
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[test]
    fn a_valid_admin_token_yields_its_subject() {
        let auth = AdminAuth::new(Some(SECRET));
        let valid = token(
            serde_json::json!({"sub": "admin-1", "admin": true, "exp": now() + 60}),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(
            status(&auth, Some(&bearer(&valid))),
            Ok("admin-1".to_owned())
        );
    }

    #[test]
    fn missing_malformed_expired_and_wrongly_signed_tokens_are_401() {
        let auth = AdminAuth::new(Some(SECRET));
        let expired = token(
            serde_json::json!({"sub": "a", "admin": true, "exp": now() - 120}),
            Algorithm::HS256,
            SECRET,
        );
        let no_exp = token(
            serde_json::json!({"sub": "a", "admin": true}),
            Algorithm::HS256,
            SECRET,
        );
        let not_yet = token(
            serde_json::json!({"sub": "a", "admin": true, "exp": now() + 600, "nbf": now() + 300}),
            Algorithm::HS256,
            SECRET,
        );
        let wrong_key = token(
            serde_json::json!({"sub": "a", "admin": true, "exp": now() + 60}),
            Algorithm::HS256,
            "other",
        );
        let other_alg = token(
            serde_json::json!({"sub": "a", "admin": true, "exp": now() + 60}),
            Algorithm::HS512,
            SECRET,
        );
        let no_subject = token(
            serde_json::json!({"admin": true, "exp": now() + 60}),
            Algorithm::HS256,
            SECRET,
        );
        // alg "none": header {"alg":"none","typ":"JWT"}, no signature.
        let unsigned = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            base64_url(
                &serde_json::json!({"sub": "a", "admin": true, "exp": now() + 60}).to_string()
            )
        );
        for header in [
            None,
            Some("Basic abc".to_owned()),
            Some("Bearer ".to_owned()),
            Some(bearer("not.a.jwt")),
            Some(bearer(&expired)),
            Some(bearer(&no_exp)),
            Some(bearer(&not_yet)),
            Some(bearer(&wrong_key)),
            Some(bearer(&other_alg)),
            Some(bearer(&no_subject)),
            Some(bearer(&unsigned)),
        ] {
            assert_eq!(
                status(&auth, header.as_deref()),
                Err(StatusCode::UNAUTHORIZED),
                "{header:?}"
            );
        }
    }

    #[test]
    fn a_valid_token_without_the_admin_claim_is_403() {
        let auth = AdminAuth::new(Some(SECRET));
        for claims in [
            serde_json::json!({"sub": "u", "exp": now() + 60}),
            serde_json::json!({"sub": "u", "admin": false, "exp": now() + 60}),
            serde_json::json!({"sub": "u", "admin": "true", "exp": now() + 60}),
        ] {
            let valid = token(claims.clone(), Algorithm::HS256, SECRET);
            assert_eq!(
                status(&auth, Some(&bearer(&valid))),
                Err(StatusCode::FORBIDDEN),
                "{claims}"
            );
        }
    }

    #[test]
    fn without_a_configured_secret_admin_routes_are_unavailable() {
        let auth = AdminAuth::new(None);
        assert_eq!(
            status(&auth, Some("Bearer x")),
            Err(StatusCode::SERVICE_UNAVAILABLE)
        );
    }

    fn base64_url(text: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }
}
