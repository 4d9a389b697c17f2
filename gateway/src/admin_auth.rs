//! Admin authentication for every `/api/admin` route: `Authorization: Bearer <JWT>`.
//!
//! Exactly one key source (the settings refuse two), each key with its algorithm pinned:
//! - `ADMIN_JWT_JWKS_URL`: the identity provider's keys (OpenID Connect), fetched over HTTPS
//!   into a bounded cache (see `remote_jwks`): the production sign-in. Before the first
//!   successful fetch admin routes answer 503;
//! - `ADMIN_JWT_JWKS_FILE`: the same keys from a mounted file, read again every minute (a file
//!   that has become unreadable keeps the keys last read);
//! - `ADMIN_JWT_PUBLIC_KEY_FILE`: one RSA (RS256) or P-256 (ES256) public key;
//! - `ADMIN_JWT_SECRET`: HS256, for development (refused with live money unless
//!   `ADMIN_JWT_ALLOW_HS256=true`: whoever holds the secret can mint any admin).
//!
//! A token naming any other algorithm, or `none`, is refused; a public key is never used as
//! an HMAC secret (no algorithm confusion). `exp` is required, `nbf` honoured, `iss`/`aud`
//! checked when configured (and required with an identity provider's keys), and the claim
//! `"admin": true` required. 401 when the token is missing or invalid; 403 when it is valid
//! but not an admin's; 503 when no key is configured or none could be fetched yet.
//!
//! Roles: with `ADMIN_JWT_ROLE_CLAIM` set, that claim must be `approver` or `viewer` (403
//! otherwise); unset, every admin is an approver. The rule is applied once, here, by the
//! [`Admin`] extractor every admin handler takes: reads are `GET`, every change is a `POST`,
//! and a viewer may only read. A new route therefore cannot forget it (a unit test walks
//! every admin route of the router to prove it).

mod remote_jwks;

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use payouts_runtime::Settings;
pub use remote_jwks::JwksLimits;
use remote_jwks::RemoteJwks;

use crate::{Gateway, error_response};

/// One verification key with its pinned algorithm.
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// How often the JWKS file is read again.
pub const JWKS_RELOAD: std::time::Duration = std::time::Duration::from_secs(60);

/// The keys of `ADMIN_JWT_JWKS_FILE`, as last read, with the text they were read from.
struct JwksFile {
    path: String,
    keys: std::sync::RwLock<(String, Vec<Key>)>,
}

/// What an admin may do: read everything, or also change things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRole {
    /// Decides approvals, retries, reverses, pauses and resumes, runs checks: every route.
    Approver,
    /// Reads every admin route and changes nothing.
    Viewer,
}

impl AdminRole {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminRole::Approver => "approver",
            AdminRole::Viewer => "viewer",
        }
    }

    /// `approver` or `viewer`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "approver" => Some(AdminRole::Approver),
            "viewer" => Some(AdminRole::Viewer),
            _ => None,
        }
    }
}

/// How admin tokens are verified.
#[derive(Clone)]
pub struct AdminAuth {
    keys: Vec<Key>,
    jwks: Option<Arc<JwksFile>>,
    remote: Option<Arc<RemoteJwks>>,
    issuer: Option<String>,
    audience: Option<String>,
    role_claim: Option<String>,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algorithms: Vec<Algorithm> = self.keys.iter().map(|key| key.algorithm).collect();
        f.debug_struct("AdminAuth")
            .field("algorithms", &algorithms)
            .field("jwks_file", &self.jwks.is_some())
            .field("jwks_url", &self.remote.is_some())
            .field("role_claim", &self.role_claim)
            .finish()
    }
}

/// A refused admin request: 401, 403, or 503 when admin auth is not configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    pub status: StatusCode,
    pub message: std::borrow::Cow<'static, str>,
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        error_response(self.status, self.message)
    }
}

fn unauthorized(message: &'static str) -> AuthError {
    AuthError {
        status: StatusCode::UNAUTHORIZED,
        message: message.into(),
    }
}

fn forbidden(message: impl Into<std::borrow::Cow<'static, str>>) -> AuthError {
    AuthError {
        status: StatusCode::FORBIDDEN,
        message: message.into(),
    }
}

/// What a viewer is told when it asks for a change.
pub const VIEWER_REFUSED: &str = "this admin is a viewer: it can read every admin page but cannot decide, retry, reverse, pause, resume, run checks, backfill or acknowledge";

/// Why a token was not verified with the keys at hand.
enum Refusal {
    Refused(AuthError),
    /// The token names a key we do not have: the identity provider may have rotated.
    UnknownKey,
    /// The identity provider's keys have not been fetched yet.
    NoKeysYet,
}

impl From<AuthError> for Refusal {
    fn from(error: AuthError) -> Self {
        Refusal::Refused(error)
    }
}

impl Refusal {
    fn into_error(self) -> AuthError {
        match self {
            Refusal::Refused(error) => error,
            Refusal::UnknownKey => unauthorized("invalid or expired admin token"),
            Refusal::NoKeysYet => AuthError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "admin sign-in is unavailable: the identity provider's keys (ADMIN_JWT_JWKS_URL) could not be fetched yet; retry shortly".into(),
            },
        }
    }
}

fn read(variable: &str, path: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|error| anyhow::anyhow!("invalid setting {variable}: cannot read {path}: {error}"))
}

impl AdminAuth {
    /// An HS256-only configuration (tests, and deployments with a shared secret).
    pub fn with_secret(secret: Option<&str>) -> Self {
        Self {
            keys: secret
                .map(|secret| Key {
                    kid: None,
                    algorithm: Algorithm::HS256,
                    key: DecodingKey::from_secret(secret.as_bytes()),
                })
                .into_iter()
                .collect(),
            jwks: None,
            remote: None,
            issuer: None,
            audience: None,
            role_claim: None,
        }
    }

    /// Reads the JWKS file again; `true` when its keys changed. On an error the keys last
    /// read stay in use.
    pub fn reload_jwks(&self) -> anyhow::Result<bool> {
        let Some(jwks) = &self.jwks else {
            return Ok(false);
        };
        let text = read("ADMIN_JWT_JWKS_FILE", &jwks.path)?;
        let unchanged = jwks
            .keys
            .read()
            .map(|current| current.0 == text)
            .unwrap_or(false);
        if unchanged {
            return Ok(false);
        }
        let keys = parse_jwks(&jwks.path, &text)?;
        if let Ok(mut current) = jwks.keys.write() {
            *current = (text, keys);
        }
        Ok(true)
    }

    /// Keeps the keys fresh until `shutdown`: the JWKS file read again every
    /// [`JWKS_RELOAD`], the JWKS URL fetched now and every refresh interval.
    pub async fn keep_jwks_fresh(self, shutdown: payouts_runtime::shutdown::Shutdown) {
        if let Some(remote) = &self.remote {
            remote.clone().keep_fresh(shutdown).await;
            return;
        }
        if self.jwks.is_none() {
            return;
        }
        let stop = shutdown.requested();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(JWKS_RELOAD) => {}
            }
            match self.reload_jwks() {
                Ok(true) => tracing::info!("admin JWKS reloaded: its keys changed"),
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(error = %error, "admin JWKS not reloaded; keeping the keys last read");
                }
            }
        }
    }

    /// Every configured key (the JWKS's as last read or fetched).
    fn all_keys(&self) -> Result<Vec<Key>, Refusal> {
        let mut keys = self.keys.clone();
        if let Some(jwks) = &self.jwks
            && let Ok(current) = jwks.keys.read()
        {
            keys.extend(current.1.iter().cloned());
        }
        if let Some(remote) = &self.remote {
            keys.extend(remote.keys().ok_or(Refusal::NoKeysYet)?.iter().cloned());
        }
        Ok(keys)
    }

    /// Every key the settings name; a bad key file stops the start, naming the variable.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        Self::from_settings_with(
            settings,
            JwksLimits::with_refresh(settings.admin_jwt_jwks_refresh),
        )
    }

    /// [`Self::from_settings`] with the JWKS URL's limits given (tests shorten them).
    pub fn from_settings_with(settings: &Settings, limits: JwksLimits) -> anyhow::Result<Self> {
        let mut auth = Self::with_secret(
            settings
                .admin_jwt_secret
                .as_ref()
                .map(|secret| secret.expose()),
        );
        if let Some(path) = &settings.admin_jwt_public_key_file {
            let pem = read("ADMIN_JWT_PUBLIC_KEY_FILE", path)?;
            let key = if let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
                Key {
                    kid: None,
                    algorithm: Algorithm::RS256,
                    key,
                }
            } else if let Ok(key) = DecodingKey::from_ec_pem(pem.as_bytes()) {
                Key {
                    kid: None,
                    algorithm: Algorithm::ES256,
                    key,
                }
            } else {
                anyhow::bail!(
                    "invalid setting ADMIN_JWT_PUBLIC_KEY_FILE: {path} is not an RSA or EC public key in PEM"
                );
            };
            auth.keys.push(key);
        }
        if let Some(path) = &settings.admin_jwt_jwks_file {
            let text = read("ADMIN_JWT_JWKS_FILE", path)?;
            let keys = parse_jwks(path, &text)?;
            auth.jwks = Some(Arc::new(JwksFile {
                path: path.clone(),
                keys: std::sync::RwLock::new((text, keys)),
            }));
        }
        if let Some(url) = &settings.admin_jwt_jwks_url {
            auth.remote = Some(Arc::new(RemoteJwks::new(url, limits)?));
        }
        auth.issuer = settings.admin_jwt_issuer.clone();
        auth.audience = settings.admin_jwt_audience.clone();
        auth.role_claim = settings.admin_jwt_role_claim.clone();
        Ok(auth)
    }

    /// How many times the JWKS URL was fetched (0 without one).
    pub fn jwks_fetches(&self) -> u64 {
        self.remote.as_ref().map_or(0, |remote| remote.fetches())
    }

    /// The admin, or why the request is refused. A token naming a key we do not have (or
    /// any token before the identity provider's keys were first fetched) asks for a fetch
    /// of the JWKS URL, at most once per its minimum interval, and is verified again.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Admin, AuthError> {
        match self.verify(authorization) {
            Ok(admin) => Ok(admin),
            Err(Refusal::Refused(error)) => Err(error),
            Err(refusal) => {
                let Some(remote) = &self.remote else {
                    return Err(refusal.into_error());
                };
                remote.refetch_if_allowed().await;
                self.verify(authorization).map_err(Refusal::into_error)
            }
        }
    }

    /// The admin, verified with the keys at hand.
    fn verify(&self, authorization: Option<&str>) -> Result<Admin, Refusal> {
        if self.keys.is_empty() && self.jwks.is_none() && self.remote.is_none() {
            return Err(AuthError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "admin authentication is not configured (ADMIN_JWT_JWKS_URL, ADMIN_JWT_JWKS_FILE, ADMIN_JWT_PUBLIC_KEY_FILE or ADMIN_JWT_SECRET)".into(),
            }
            .into());
        }
        let keys = self.all_keys()?;
        let header = authorization.ok_or_else(|| unauthorized("missing Authorization header"))?;
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| unauthorized("Authorization must be \"Bearer <token>\""))?;
        let token_header = jsonwebtoken::decode_header(token)
            .map_err(|_| unauthorized("invalid or expired admin token"))?;
        // The key is chosen by the token's algorithm (and kid), among the configured ones only.
        let same_algorithm = keys
            .iter()
            .filter(|key| key.algorithm == token_header.alg)
            .collect::<Vec<_>>();
        if same_algorithm.is_empty() {
            // The identity provider may have rotated to another algorithm.
            let provider_algorithm =
                matches!(token_header.alg, Algorithm::RS256 | Algorithm::ES256);
            if self.remote.is_some() && provider_algorithm {
                return Err(Refusal::UnknownKey);
            }
            return Err(unauthorized("invalid or expired admin token").into());
        }
        let key = same_algorithm
            .into_iter()
            .find(|key| match (&token_header.kid, &key.kid) {
                (Some(wanted), Some(kid)) => wanted == kid,
                _ => true,
            })
            .ok_or(Refusal::UnknownKey)?;
        let mut validation = Validation::new(key.algorithm);
        let mut required = vec!["exp"];
        if self.issuer.is_some() {
            required.push("iss");
        }
        if self.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation.validate_nbf = true;
        validation.leeway = 5;
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        let claims = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key.key,
            &validation,
        )
        .map_err(|error| {
            tracing::info!(reason = %error, "admin token refused");
            unauthorized("invalid or expired admin token")
        })?
        .claims;
        let subject = claims
            .get("sub")
            .and_then(serde_json::Value::as_str)
            .filter(|subject| !subject.trim().is_empty())
            .ok_or_else(|| unauthorized("admin token has no subject"))?
            .to_owned();
        if claims.get("admin") != Some(&serde_json::Value::Bool(true)) {
            return Err(forbidden("admin privileges required").into());
        }
        let role = match &self.role_claim {
            None => AdminRole::Approver,
            Some(claim) => claims
                .get(claim)
                .and_then(serde_json::Value::as_str)
                .and_then(AdminRole::parse)
                .ok_or_else(|| {
                    forbidden(format!(
                        "admin token has no role: its claim {claim:?} must be \"approver\" or \"viewer\""
                    ))
                })?,
        };
        Ok(Admin { subject, role })
    }
}

/// Mints a short-lived HS256 admin token from `ADMIN_JWT_SECRET` (`payouts admin token`),
/// with the issuer, audience and role claim the gateway checks when they are set. For
/// development and the README's walkthrough only: refused for a live configuration, where
/// admins sign in through the identity provider.
pub fn mint_admin_token(
    settings: &Settings,
    subject: &str,
    role: AdminRole,
    ttl: std::time::Duration,
) -> anyhow::Result<String> {
    anyhow::ensure!(
        !settings.is_live(),
        "refusing to mint an admin token for a live configuration (STRIPE_LIVEMODE=true or a live STRIPE_SECRET_KEY): a token minted from the shared secret can name any admin, so a decision on real money would not prove who made it; admins sign in through the identity provider (ADMIN_JWT_JWKS_URL, ADMIN_JWT_ISSUER, ADMIN_JWT_AUDIENCE) and use its tokens"
    );
    anyhow::ensure!(
        settings.known_test_mode(),
        "refusing to mint an admin token without knowing the money is test money: set STRIPE_LIVEMODE=false (or a test STRIPE_SECRET_KEY) where you run this (this guard only stops mistakes: whoever holds ADMIN_JWT_SECRET can sign a token elsewhere)"
    );
    let secret = settings.admin_jwt_secret.as_ref().ok_or_else(|| {
        anyhow::anyhow!("ADMIN_JWT_SECRET is not set: there is no HS256 key to sign with")
    })?;
    anyhow::ensure!(
        !subject.trim().is_empty(),
        "the token needs a subject (--sub): the admin's id, recorded with every decision"
    );
    anyhow::ensure!(
        (60..=24 * 3600).contains(&ttl.as_secs()),
        "--ttl must be between 1 minute and 24 hours (an admin token is short-lived)"
    );
    anyhow::ensure!(
        role == AdminRole::Approver || settings.admin_jwt_role_claim.is_some(),
        "--role viewer needs ADMIN_JWT_ROLE_CLAIM: without a role claim the gateway treats every admin as an approver"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut claims = serde_json::json!({
        "sub": subject,
        "admin": true,
        "iat": now,
        "exp": now + ttl.as_secs(),
    });
    if let Some(issuer) = &settings.admin_jwt_issuer {
        claims["iss"] = issuer.clone().into();
    }
    if let Some(audience) = &settings.admin_jwt_audience {
        claims["aud"] = audience.clone().into();
    }
    if let Some(claim) = &settings.admin_jwt_role_claim {
        claims[claim.as_str()] = role.as_str().into();
    }
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.expose().as_bytes()),
    )?)
}

/// The RS256 and ES256 (P-256) keys of a JWKS file; other kinds are skipped.
fn parse_jwks(path: &str, text: &str) -> anyhow::Result<Vec<Key>> {
    let set: JwkSet = serde_json::from_str(text).map_err(|error| {
        anyhow::anyhow!("invalid setting ADMIN_JWT_JWKS_FILE: {path} is not a JWKS: {error}")
    })?;
    jwks_keys(&set)
        .map_err(|error| anyhow::anyhow!("invalid setting ADMIN_JWT_JWKS_FILE: {path}: {error}"))
}

/// The RS256 and ES256 (P-256) keys of a JWKS; other kinds are skipped.
fn jwks_keys(set: &JwkSet) -> Result<Vec<Key>, String> {
    let mut keys = Vec::new();
    for jwk in &set.keys {
        // A key published for encryption (`use: enc`, or `key_ops` without `verify`) never
        // verifies a signature (RFC 7517 §4.2, §4.3).
        if matches!(
            jwk.common.public_key_use,
            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
                | Some(jsonwebtoken::jwk::PublicKeyUse::Other(_))
        ) {
            continue;
        }
        if let Some(operations) = &jwk.common.key_operations
            && !operations.contains(&jsonwebtoken::jwk::KeyOperations::Verify)
        {
            continue;
        }
        let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
            (Some(KeyAlgorithm::RS256), _) | (None, AlgorithmParameters::RSA(_)) => {
                Algorithm::RS256
            }
            (Some(KeyAlgorithm::ES256), _) => Algorithm::ES256,
            (None, AlgorithmParameters::EllipticCurve(params))
                if params.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            _ => continue,
        };
        // One unusable key (a provider publishing a new kind) must not freeze rotation for
        // the others: it is skipped and logged.
        let key = match DecodingKey::from_jwk(jwk) {
            Ok(key) => key,
            Err(error) => {
                tracing::warn!(kid = ?jwk.common.key_id, %error, "a key of the admin JWKS is unusable; skipped");
                continue;
            }
        };
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            algorithm,
            key,
        });
    }
    Ok(keys)
}

/// An authenticated admin with its role; extracting it refuses everyone else, and refuses a
/// viewer on any request that is not a read (`GET`, `HEAD`).
#[derive(Debug, Clone)]
pub struct Admin {
    pub subject: String,
    pub role: AdminRole,
}

/// Whether a request only reads: the one thing a viewer may do.
fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
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
        let admin = gateway
            .admin_auth()
            .authenticate(authorization)
            .await
            .map_err(IntoResponse::into_response)?;
        if admin.role == AdminRole::Viewer && !is_read(&parts.method) {
            tracing::info!(subject = %admin.subject, method = %parts.method, "a viewer asked for a change");
            return Err(forbidden(VIEWER_REFUSED).into_response());
        }
        Ok(admin)
    }
}

/// `GET /api/admin/me`: who the token says the admin is, and what it may do (the dashboard
/// hides the actions a viewer cannot take).
pub(crate) async fn me(admin: Admin) -> Response {
    Json(serde_json::json!({
        "subject": admin.subject,
        "role": admin.role.as_str(),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use jsonwebtoken::{EncodingKey, Header};

    use super::*;

    const SECRET: &str = "admin-test-secret-of-at-least-32-bytes";

    fn fixture(name: &str) -> String {
        format!(
            "{}/../tests/fixtures/jwt/{name}",
            env!("CARGO_MANIFEST_DIR")
        )
    }

    fn now() -> u64 {
        u64::try_from(chrono::Utc::now().timestamp()).unwrap()
    }

    fn claims(admin: bool) -> serde_json::Value {
        serde_json::json!({"sub": "admin-1", "admin": admin, "exp": now() + 60})
    }

    fn hs256(claims: serde_json::Value, algorithm: Algorithm, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(algorithm),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn signed(claims: &serde_json::Value, algorithm: Algorithm, kid: Option<&str>) -> String {
        let (pem, key) = match algorithm {
            Algorithm::RS256 => {
                let pem = std::fs::read(fixture("rsa_private.pem")).unwrap();
                let key = EncodingKey::from_rsa_pem(&pem).unwrap();
                (pem, key)
            }
            _ => {
                let pem = std::fs::read(fixture("ec_private.pem")).unwrap();
                let key = EncodingKey::from_ec_pem(&pem).unwrap();
                (pem, key)
            }
        };
        drop(pem);
        let mut header = Header::new(algorithm);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    const ISSUER: &str = "https://idp.example.test";
    const AUDIENCE: &str = "payouts";

    /// Settings from `env`; with an identity provider's keys, our issuer and audience too
    /// (required with them) unless `env` names its own.
    fn settings(env: &[(&str, String)]) -> Settings {
        let mut map: HashMap<String, String> = HashMap::new();
        if env
            .iter()
            .any(|(k, _)| k.starts_with("ADMIN_JWT_PUBLIC_KEY") || k.starts_with("ADMIN_JWT_JWKS"))
        {
            map.insert("ADMIN_JWT_ISSUER".to_owned(), ISSUER.to_owned());
            map.insert("ADMIN_JWT_AUDIENCE".to_owned(), AUDIENCE.to_owned());
        }
        // Test money, said (a gateway must know; see `Settings::known_test_mode`).
        map.insert("STRIPE_LIVEMODE".to_owned(), "false".to_owned());
        for (k, v) in env {
            map.insert((*k).to_owned(), v.clone());
        }
        Settings::from_env(map).unwrap()
    }

    /// An identity provider's admin claims: ours as issuer and audience.
    fn idp_claims() -> serde_json::Value {
        let mut claims = claims(true);
        claims["iss"] = serde_json::json!(ISSUER);
        claims["aud"] = serde_json::json!(AUDIENCE);
        claims
    }

    async fn status(auth: &AdminAuth, header: Option<&str>) -> Result<String, StatusCode> {
        auth.authenticate(header)
            .await
            .map(|admin| admin.subject)
            .map_err(|error| error.status)
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    fn base64_url(text: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    #[tokio::test]
    async fn a_valid_admin_token_yields_its_subject() {
        let auth = AdminAuth::with_secret(Some(SECRET));
        let valid = hs256(claims(true), Algorithm::HS256, SECRET);
        assert_eq!(
            status(&auth, Some(&bearer(&valid))).await,
            Ok("admin-1".to_owned())
        );
    }

    #[tokio::test]
    async fn missing_malformed_expired_and_wrongly_signed_tokens_are_401() {
        let auth = AdminAuth::with_secret(Some(SECRET));
        let expired = hs256(
            serde_json::json!({"sub": "a", "admin": true, "exp": now() - 120}),
            Algorithm::HS256,
            SECRET,
        );
        let no_exp = hs256(
            serde_json::json!({"sub": "a", "admin": true}),
            Algorithm::HS256,
            SECRET,
        );
        let not_yet = hs256(
            serde_json::json!({"sub": "a", "admin": true, "exp": now() + 600, "nbf": now() + 300}),
            Algorithm::HS256,
            SECRET,
        );
        let wrong_key = hs256(claims(true), Algorithm::HS256, "other");
        let other_alg = hs256(claims(true), Algorithm::HS512, SECRET);
        let no_subject = hs256(
            serde_json::json!({"admin": true, "exp": now() + 60}),
            Algorithm::HS256,
            SECRET,
        );
        // alg "none": header {"alg":"none","typ":"JWT"}, no signature.
        let unsigned = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            base64_url(&claims(true).to_string())
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
                status(&auth, header.as_deref()).await,
                Err(StatusCode::UNAUTHORIZED),
                "{header:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_valid_token_without_the_admin_claim_is_403() {
        let auth = AdminAuth::with_secret(Some(SECRET));
        for claims in [
            serde_json::json!({"sub": "u", "exp": now() + 60}),
            serde_json::json!({"sub": "u", "admin": false, "exp": now() + 60}),
            serde_json::json!({"sub": "u", "admin": "true", "exp": now() + 60}),
        ] {
            let valid = hs256(claims.clone(), Algorithm::HS256, SECRET);
            assert_eq!(
                status(&auth, Some(&bearer(&valid))).await,
                Err(StatusCode::FORBIDDEN),
                "{claims}"
            );
        }
    }

    #[tokio::test]
    async fn without_a_configured_key_admin_routes_are_unavailable() {
        let auth = AdminAuth::with_secret(None);
        assert_eq!(
            status(&auth, Some("Bearer x")).await,
            Err(StatusCode::SERVICE_UNAVAILABLE)
        );
    }

    #[tokio::test]
    async fn identity_provider_tokens_verify_with_a_public_key_or_a_jwks() {
        let rsa = AdminAuth::from_settings(&settings(&[(
            "ADMIN_JWT_PUBLIC_KEY_FILE",
            fixture("rsa_public.pem"),
        )]))
        .unwrap();
        let ec = AdminAuth::from_settings(&settings(&[(
            "ADMIN_JWT_PUBLIC_KEY_FILE",
            fixture("ec_public.pem"),
        )]))
        .unwrap();
        let jwks =
            AdminAuth::from_settings(&settings(&[("ADMIN_JWT_JWKS_FILE", fixture("jwks.json"))]))
                .unwrap();
        let rs256 = signed(&idp_claims(), Algorithm::RS256, Some("test-rsa"));
        let es256 = signed(&idp_claims(), Algorithm::ES256, None);
        assert_eq!(
            status(&rsa, Some(&bearer(&rs256))).await,
            Ok("admin-1".to_owned())
        );
        assert_eq!(
            status(&ec, Some(&bearer(&es256))).await,
            Ok("admin-1".to_owned())
        );
        assert_eq!(
            status(&jwks, Some(&bearer(&rs256))).await,
            Ok("admin-1".to_owned())
        );
        // Each key verifies only its own algorithm.
        assert_eq!(
            status(&rsa, Some(&bearer(&es256))).await,
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(&ec, Some(&bearer(&rs256))).await,
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(
                &rsa,
                Some(&bearer(&signed(
                    &{
                        let mut claims = idp_claims();
                        claims["admin"] = serde_json::json!(false);
                        claims
                    },
                    Algorithm::RS256,
                    None
                )))
            )
            .await,
            Err(StatusCode::FORBIDDEN)
        );
    }

    #[tokio::test]
    async fn an_hmac_token_keyed_with_the_public_key_is_refused() {
        // Algorithm confusion: HS256 "signed" with the RSA public key's bytes.
        let public = std::fs::read_to_string(fixture("rsa_public.pem")).unwrap();
        let auth = AdminAuth::from_settings(&settings(&[(
            "ADMIN_JWT_PUBLIC_KEY_FILE",
            fixture("rsa_public.pem"),
        )]))
        .unwrap();
        let confused = hs256(claims(true), Algorithm::HS256, &public);
        assert_eq!(
            status(&auth, Some(&bearer(&confused))).await,
            Err(StatusCode::UNAUTHORIZED)
        );
    }

    #[tokio::test]
    async fn issuer_and_audience_are_checked_when_configured() {
        let auth = AdminAuth::from_settings(&settings(&[
            ("ADMIN_JWT_SECRET", SECRET.to_owned()),
            (
                "ADMIN_JWT_ISSUER",
                "https://securetoken.google.com/app".to_owned(),
            ),
            ("ADMIN_JWT_AUDIENCE", "app".to_owned()),
        ]))
        .unwrap();
        let good = hs256(
            serde_json::json!({"sub": "a", "admin": true, "exp": now() + 60, "iss": "https://securetoken.google.com/app", "aud": "app"}),
            Algorithm::HS256,
            SECRET,
        );
        let wrong_issuer = hs256(
            serde_json::json!({"sub": "a", "admin": true, "exp": now() + 60, "iss": "https://evil", "aud": "app"}),
            Algorithm::HS256,
            SECRET,
        );
        let no_audience = hs256(
            serde_json::json!({"sub": "a", "admin": true, "exp": now() + 60, "iss": "https://securetoken.google.com/app"}),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(
            status(&auth, Some(&bearer(&good))).await,
            Ok("a".to_owned())
        );
        assert_eq!(
            status(&auth, Some(&bearer(&wrong_issuer))).await,
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(&auth, Some(&bearer(&no_audience))).await,
            Err(StatusCode::UNAUTHORIZED)
        );
    }

    #[tokio::test]
    async fn a_minted_token_passes_the_gateways_own_checks() {
        let hour = std::time::Duration::from_secs(3600);
        let plain = settings(&[("ADMIN_JWT_SECRET", SECRET.to_owned())]);
        let token = mint_admin_token(&plain, "alice", AdminRole::Approver, hour).unwrap();
        let auth = AdminAuth::from_settings(&plain).unwrap();
        assert_eq!(
            status(&auth, Some(&bearer(&token))).await,
            Ok("alice".to_owned())
        );
        // With an issuer and audience configured, the minted token carries both.
        let scoped = settings(&[
            ("ADMIN_JWT_SECRET", SECRET.to_owned()),
            ("ADMIN_JWT_ISSUER", ISSUER.to_owned()),
            ("ADMIN_JWT_AUDIENCE", AUDIENCE.to_owned()),
        ]);
        let token = mint_admin_token(&scoped, "bob", AdminRole::Approver, hour).unwrap();
        let auth = AdminAuth::from_settings(&scoped).unwrap();
        assert_eq!(
            status(&auth, Some(&bearer(&token))).await,
            Ok("bob".to_owned())
        );
        // Another secret's token is not ours.
        let other = settings(&[(
            "ADMIN_JWT_SECRET",
            "another-secret-of-at-least-32-bytes!!".to_owned(),
        )]);
        let foreign = mint_admin_token(&other, "mallory", AdminRole::Approver, hour).unwrap();
        assert_eq!(
            status(&auth, Some(&bearer(&foreign))).await,
            Err(StatusCode::UNAUTHORIZED)
        );
    }

    #[test]
    fn minting_needs_a_secret_a_subject_and_a_short_lifetime() {
        let hour = std::time::Duration::from_secs(3600);
        let error =
            mint_admin_token(&settings(&[]), "alice", AdminRole::Approver, hour).unwrap_err();
        assert!(error.to_string().contains("ADMIN_JWT_SECRET"), "{error}");
        let with_secret = settings(&[("ADMIN_JWT_SECRET", SECRET.to_owned())]);
        let error = mint_admin_token(&with_secret, " ", AdminRole::Approver, hour).unwrap_err();
        assert!(error.to_string().contains("--sub"), "{error}");
        let error =
            mint_admin_token(&with_secret, "alice", AdminRole::Approver, hour * 48).unwrap_err();
        assert!(error.to_string().contains("--ttl"), "{error}");
    }

    #[tokio::test]
    async fn the_jwks_is_read_again_so_keys_rotate_without_a_restart() {
        let dir = std::env::temp_dir().join(format!("payouts-jwks-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jwks.json");
        let current = std::fs::read_to_string(fixture("jwks.json")).unwrap();
        // Before the rotation the provider publishes the same key under an older kid.
        std::fs::write(&path, current.replace("test-rsa", "retired-kid")).unwrap();
        let auth = AdminAuth::from_settings(&settings(&[(
            "ADMIN_JWT_JWKS_FILE",
            path.to_str().unwrap().to_owned(),
        )]))
        .unwrap();
        let token = bearer(&signed(&idp_claims(), Algorithm::RS256, Some("test-rsa")));
        assert_eq!(
            status(&auth, Some(&token)).await,
            Err(StatusCode::UNAUTHORIZED)
        );
        assert!(!auth.reload_jwks().unwrap(), "nothing changed yet");
        std::fs::write(&path, &current).unwrap();
        assert!(auth.reload_jwks().unwrap());
        assert_eq!(status(&auth, Some(&token)).await, Ok("admin-1".to_owned()));
        // A broken file keeps the keys last read.
        std::fs::write(&path, "not json").unwrap();
        assert!(auth.reload_jwks().is_err());
        assert_eq!(status(&auth, Some(&token)).await, Ok("admin-1".to_owned()));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_bad_key_file_is_reported_by_its_variable() {
        let error = AdminAuth::from_settings(&settings(&[(
            "ADMIN_JWT_PUBLIC_KEY_FILE",
            fixture("jwks.json"),
        )]))
        .unwrap_err();
        assert!(
            error.to_string().contains("ADMIN_JWT_PUBLIC_KEY_FILE"),
            "{error}"
        );
        let error = AdminAuth::from_settings(&settings(&[(
            "ADMIN_JWT_JWKS_FILE",
            "/nonexistent.json".to_owned(),
        )]))
        .unwrap_err();
        assert!(error.to_string().contains("ADMIN_JWT_JWKS_FILE"), "{error}");
    }

    /// An identity provider on loopback: answers `GET /jwks` with what `answer` holds,
    /// counting the requests.
    struct FakeIdp {
        url: String,
        answer: std::sync::Arc<std::sync::Mutex<(StatusCode, String)>>,
        requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl FakeIdp {
        async fn start(body: String) -> Self {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let answer = std::sync::Arc::new(std::sync::Mutex::new((StatusCode::OK, body)));
            let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let (served, counted) = (answer.clone(), requests.clone());
            let app = axum::Router::new().route(
                "/jwks",
                axum::routing::get(move || {
                    let (served, counted) = (served.clone(), counted.clone());
                    async move {
                        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        served.lock().unwrap().clone()
                    }
                }),
            );
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            Self {
                url: format!("http://{address}/jwks"),
                answer,
                requests,
            }
        }

        fn answer(&self, status: StatusCode, body: String) {
            *self.answer.lock().unwrap() = (status, body);
        }

        fn requests(&self) -> usize {
            self.requests.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    /// The fixture JWKS, its one key published under `kid`.
    fn jwks_with_kid(kid: &str) -> String {
        std::fs::read_to_string(fixture("jwks.json"))
            .unwrap()
            .replace("test-rsa", kid)
    }

    fn limits(min_refetch: std::time::Duration) -> JwksLimits {
        JwksLimits {
            min_refetch,
            ..JwksLimits::with_refresh(std::time::Duration::from_secs(600))
        }
    }

    fn from_url(url: &str, limits: JwksLimits) -> AdminAuth {
        AdminAuth::from_settings_with(&settings(&[("ADMIN_JWT_JWKS_URL", url.to_owned())]), limits)
            .unwrap()
    }

    fn rs256_with_kid(kid: &str) -> String {
        bearer(&signed(&idp_claims(), Algorithm::RS256, Some(kid)))
    }

    #[tokio::test]
    async fn a_rotated_kid_is_fetched_from_the_jwks_url() {
        let idp = FakeIdp::start(jwks_with_kid("retired-kid")).await;
        let auth = from_url(&idp.url, limits(std::time::Duration::ZERO));
        let token = rs256_with_kid("test-rsa");
        // The first request fetches the keys: the provider has not published this kid yet.
        assert_eq!(
            status(&auth, Some(&token)).await,
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(idp.requests(), 1);
        // The provider rotates: the unknown kid makes the gateway fetch again.
        idp.answer(StatusCode::OK, jwks_with_kid("test-rsa"));
        assert_eq!(status(&auth, Some(&token)).await, Ok("admin-1".to_owned()));
        assert_eq!(idp.requests(), 2);
        // A known kid fetches nothing.
        assert_eq!(status(&auth, Some(&token)).await, Ok("admin-1".to_owned()));
        assert_eq!(idp.requests(), 2);
        assert_eq!(auth.jwks_fetches(), 2);
    }

    #[tokio::test]
    async fn a_flood_of_unknown_kids_fetches_at_most_once_per_period() {
        let idp = FakeIdp::start(jwks_with_kid("test-rsa")).await;
        let auth = from_url(&idp.url, limits(std::time::Duration::from_secs(3600)));
        let flood: Vec<String> = (0..200)
            .map(|i| rs256_with_kid(&format!("random-{i}-{}", uuid::Uuid::new_v4())))
            .collect();
        let answers = futures::future::join_all(
            flood
                .iter()
                .map(|token| status(&auth, Some(token.as_str()))),
        )
        .await;
        // Refused, every one: 401 (the keys are in and the kid is not among them) or 503 for
        // those that came while the first fetch was under way (no request waits for it).
        assert!(
            answers.iter().all(|answer| matches!(
                answer,
                Err(StatusCode::UNAUTHORIZED | StatusCode::SERVICE_UNAVAILABLE)
            )),
            "{answers:?}"
        );
        // One fetch (the first request, before any keys), and no more within the period.
        assert_eq!(idp.requests(), 1);
        for token in flood.iter().take(20) {
            assert_eq!(
                status(&auth, Some(token.as_str())).await,
                Err(StatusCode::UNAUTHORIZED)
            );
        }
        assert_eq!(idp.requests(), 1);
        let kept = auth.remote.as_ref().unwrap().keys().unwrap();
        assert_eq!(kept.len(), 1, "the keys are replaced, never accumulated");
        assert_eq!(
            status(&auth, Some(&rs256_with_kid("test-rsa"))).await,
            Ok("admin-1".to_owned())
        );
        assert_eq!(idp.requests(), 1);
    }

    #[tokio::test]
    async fn the_last_good_keys_are_kept_while_the_identity_provider_fails() {
        let idp = FakeIdp::start(jwks_with_kid("test-rsa")).await;
        let auth = from_url(
            &idp.url,
            JwksLimits {
                max_bytes: 4096,
                max_keys: 2,
                ..limits(std::time::Duration::ZERO)
            },
        );
        let remote = auth.remote.clone().unwrap();
        let token = rs256_with_kid("test-rsa");
        remote.refresh().await;
        assert_eq!(status(&auth, Some(&token)).await, Ok("admin-1".to_owned()));
        let key =
            serde_json::from_str::<serde_json::Value>(&jwks_with_kid("other")).unwrap()["keys"][0]
                .clone();
        let too_many = serde_json::json!({"keys": [key.clone(), key.clone(), key]}).to_string();
        let too_big = format!("{}{}", jwks_with_kid("other"), " ".repeat(5000));
        for (answer, body) in [
            (StatusCode::INTERNAL_SERVER_ERROR, jwks_with_kid("other")),
            (StatusCode::OK, "not json".to_owned()),
            (StatusCode::OK, too_big),
            (StatusCode::OK, too_many),
            (StatusCode::OK, r#"{"keys": []}"#.to_owned()),
        ] {
            idp.answer(answer, body.clone());
            let before = idp.requests();
            remote.refresh().await;
            assert_eq!(idp.requests(), before + 1, "{answer} {body:.40}");
            assert_eq!(
                status(&auth, Some(&token)).await,
                Ok("admin-1".to_owned()),
                "{answer} {body:.40}"
            );
            // A token of a key it does not have is still 401, not "unavailable".
            assert_eq!(
                status(&auth, Some(&rs256_with_kid("other"))).await,
                Err(StatusCode::UNAUTHORIZED)
            );
        }
    }

    #[tokio::test]
    async fn before_the_first_fetch_admin_routes_answer_503() {
        // Nothing listens there: the identity provider is down from the start.
        let address = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let auth = from_url(
            &format!("http://{address}/jwks"),
            limits(std::time::Duration::ZERO),
        );
        for header in [None, Some(rs256_with_kid("test-rsa"))] {
            let error = auth.authenticate(header.as_deref()).await.unwrap_err();
            assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(
                error.message.contains("ADMIN_JWT_JWKS_URL"),
                "{}",
                error.message
            );
        }
        assert_eq!(auth.jwks_fetches(), 2, "each request asked for a fetch");
    }

    const ROLE_CLAIM: &str = "payouts_role";

    fn with_role(role: Option<&str>) -> String {
        let mut claims = claims(true);
        if let Some(role) = role {
            claims[ROLE_CLAIM] = serde_json::json!(role);
        }
        bearer(&hs256(claims, Algorithm::HS256, SECRET))
    }

    #[tokio::test]
    async fn the_role_claim_makes_an_admin_an_approver_or_a_viewer() {
        let without =
            AdminAuth::from_settings(&settings(&[("ADMIN_JWT_SECRET", SECRET.to_owned())]))
                .unwrap();
        // No role claim configured: every admin is an approver, whatever the token says.
        for role in [None, Some("viewer"), Some("owner")] {
            let admin = without.authenticate(Some(&with_role(role))).await.unwrap();
            assert_eq!(admin.role, AdminRole::Approver, "{role:?}");
        }
        let with = AdminAuth::from_settings(&settings(&[
            ("ADMIN_JWT_SECRET", SECRET.to_owned()),
            ("ADMIN_JWT_ROLE_CLAIM", ROLE_CLAIM.to_owned()),
        ]))
        .unwrap();
        for (role, expected) in [
            ("approver", AdminRole::Approver),
            ("viewer", AdminRole::Viewer),
        ] {
            let admin = with
                .authenticate(Some(&with_role(Some(role))))
                .await
                .unwrap();
            assert_eq!(admin.role, expected);
        }
        for role in [None, Some("owner"), Some("Approver"), Some("")] {
            let error = with.authenticate(Some(&with_role(role))).await.unwrap_err();
            assert_eq!(error.status, StatusCode::FORBIDDEN, "{role:?}");
            assert!(error.message.contains(ROLE_CLAIM), "{}", error.message);
        }
        let mut not_a_string = claims(true);
        not_a_string[ROLE_CLAIM] = serde_json::json!(["approver"]);
        let error = with
            .authenticate(Some(&bearer(&hs256(
                not_a_string,
                Algorithm::HS256,
                SECRET,
            ))))
            .await
            .unwrap_err();
        assert_eq!(error.status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn minting_is_refused_for_live_money_and_carries_the_role() {
        let hour = std::time::Duration::from_secs(3600);
        for live in [
            vec![("STRIPE_LIVEMODE", "true".to_owned())],
            vec![
                ("STRIPE_LIVEMODE", "true".to_owned()),
                ("STRIPE_SECRET_KEY", "sk_live_abc".to_owned()),
            ],
        ] {
            let mut env = live.clone();
            env.push(("ADMIN_JWT_SECRET", SECRET.to_owned()));
            env.push(("ADMIN_JWT_ALLOW_HS256", "true".to_owned()));
            let error = mint_admin_token(&settings(&env), "alice", AdminRole::Approver, hour)
                .unwrap_err()
                .to_string();
            assert!(error.contains("live configuration"), "{error}");
            assert!(error.contains("identity provider"), "{error}");
        }
        // Not knowing whether the money is live is not "test": refused too.
        let unknown = Settings::from_env(HashMap::from([(
            "ADMIN_JWT_SECRET".to_owned(),
            SECRET.to_owned(),
        )]))
        .unwrap();
        let error = mint_admin_token(&unknown, "alice", AdminRole::Approver, hour)
            .unwrap_err()
            .to_string();
        assert!(error.contains("STRIPE_LIVEMODE=false"), "{error}");
        let plain = settings(&[("ADMIN_JWT_SECRET", SECRET.to_owned())]);
        let error = mint_admin_token(&plain, "v", AdminRole::Viewer, hour)
            .unwrap_err()
            .to_string();
        assert!(error.contains("ADMIN_JWT_ROLE_CLAIM"), "{error}");
        let roles = settings(&[
            ("ADMIN_JWT_SECRET", SECRET.to_owned()),
            ("ADMIN_JWT_ROLE_CLAIM", ROLE_CLAIM.to_owned()),
        ]);
        let auth = AdminAuth::from_settings(&roles).unwrap();
        for role in [AdminRole::Viewer, AdminRole::Approver] {
            let token = mint_admin_token(&roles, "v", role, hour).unwrap();
            let admin = auth.authenticate(Some(&bearer(&token))).await.unwrap();
            assert_eq!(admin.role, role);
        }
    }

    /// The admin routes the router declares: every `.route("/api/admin...", ...)` in the
    /// gateway's sources (outside tests), with their parameters blanked (`{}`), so they
    /// compare with the OpenAPI document's.
    fn declared_admin_routes() -> std::collections::BTreeSet<String> {
        let mut routes = std::collections::BTreeSet::new();
        let mut files = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            if path.extension().is_none_or(|extension| extension != "rs") {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            let code = source.split("#[cfg(test)]").next().unwrap_or_default();
            for call in code.split(".route(").skip(1) {
                let call = call.trim_start();
                if let Some(rest) = call.strip_prefix('"')
                    && let Some((path, _)) = rest.split_once('"')
                    && path.starts_with("/api/admin")
                {
                    routes.insert(blank_parameters(path));
                }
            }
        }
        routes
    }

    fn blank_parameters(path: &str) -> String {
        path.split('/')
            .map(|part| if part.starts_with('{') { "{}" } else { part })
            .collect::<Vec<_>>()
            .join("/")
    }

    #[tokio::test]
    async fn every_admin_route_lets_a_viewer_read_and_refuses_it_any_change() {
        use tower::ServiceExt as _;
        // The services are down: an admitted request gets the service's 503.
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let gateway = crate::Gateway::new(std::sync::Arc::new(settings(&[
            ("ADMIN_JWT_SECRET", SECRET.to_owned()),
            ("ADMIN_JWT_ROLE_CLAIM", ROLE_CLAIM.to_owned()),
            ("GRPC_ADDR", dead.to_string()),
            ("GRPC_TIMEOUT_MILLISECONDS", "2000".to_owned()),
        ])))
        .unwrap()
        .router();
        let viewer = with_role(Some("viewer"));
        let approver = with_role(Some("approver"));
        let call = |method: &str, path: &str, token: &str| {
            let request = axum::http::Request::builder()
                .method(method)
                .uri(path)
                .header("authorization", token)
                .header("content-type", "application/json")
                .header("idempotency-key", "walk-1")
                .body(axum::body::Body::from("{}"))
                .unwrap();
            let gateway = gateway.clone();
            async move {
                let response = gateway.oneshot(request).await.unwrap();
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                    .await
                    .unwrap();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
        };
        let document: serde_json::Value = serde_json::from_str(crate::OPENAPI).unwrap();
        let documented = document["paths"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(path, _)| path.starts_with("/api/admin"))
            .collect::<Vec<_>>();
        // The router's admin routes are the documented ones: a new route must be walked.
        let documented_paths: std::collections::BTreeSet<String> = documented
            .iter()
            .map(|(path, _)| blank_parameters(path))
            .collect();
        assert_eq!(declared_admin_routes(), documented_paths);
        let (mut reads, mut changes) = (0, 0);
        for (path, operations) in documented {
            let concrete = path
                .split('/')
                .map(|part| if part.starts_with('{') { "x1" } else { part })
                .collect::<Vec<_>>()
                .join("/");
            for method in ["GET", "POST"] {
                let declared = operations.get(method.to_lowercase()).is_some();
                let (as_viewer, viewer_body) = call(method, &concrete, &viewer).await;
                if !declared {
                    // Every method the router takes is documented, so walked here.
                    assert_eq!(as_viewer, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                    continue;
                }
                let (as_approver, approver_body) = call(method, &concrete, &approver).await;
                assert!(
                    as_approver != StatusCode::UNAUTHORIZED && as_approver != StatusCode::FORBIDDEN,
                    "{method} {path}: an approver was refused: {as_approver} {approver_body}"
                );
                if method == "GET" {
                    reads += 1;
                    // A viewer reads as an approver does (who-am-I answers each its role).
                    let same_body = path == "/api/admin/me" || viewer_body == approver_body;
                    assert!(
                        as_viewer == as_approver && same_body,
                        "{method} {path}: a viewer read {as_viewer} {viewer_body}, an approver {as_approver} {approver_body}"
                    );
                } else {
                    changes += 1;
                    assert_eq!(
                        as_viewer,
                        StatusCode::FORBIDDEN,
                        "{method} {path}: {viewer_body}"
                    );
                    assert!(
                        viewer_body.contains("viewer"),
                        "{method} {path}: {viewer_body}"
                    );
                }
            }
        }
        assert!(
            reads >= 11 && changes >= 12,
            "{reads} reads, {changes} changes walked"
        );
        // Who am I: the dashboard reads the role here.
        let (me, body) = call("GET", "/api/admin/me", &viewer).await;
        assert_eq!(me, StatusCode::OK);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({"subject": "admin-1", "role": "viewer"})
        );
    }
}
