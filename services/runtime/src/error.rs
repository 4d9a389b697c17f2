//! One table from error kinds to gRPC codes and HTTP statuses, shared by services and gateway.
//! Internal causes are logged with their chain and never sent to callers.

use std::fmt;

use http::StatusCode;
use tonic::{Code, Status};

/// What went wrong, in terms a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input: a field is missing, malformed or out of range.
    InvalidArgument,
    /// The caller is not authenticated (missing or invalid credentials or signature).
    Unauthenticated,
    /// The caller is authenticated but not allowed.
    PermissionDenied,
    /// The thing named does not exist.
    NotFound,
    /// The thing already exists (unique key taken with different content).
    AlreadyExists,
    /// The request conflicts with the current state (a decided approval, a stale version).
    Conflict,
    /// The system is not in a state to do this (e.g. Stripe not configured).
    FailedPrecondition,
    /// A limit refused the request.
    ResourceExhausted,
    /// A dependency (store, Stripe, another service) is unavailable; retrying may succeed.
    Unavailable,
    /// A bug or an unexpected failure; details are in the logs only.
    Internal,
}

impl ErrorKind {
    pub fn grpc_code(self) -> Code {
        match self {
            ErrorKind::InvalidArgument => Code::InvalidArgument,
            ErrorKind::Unauthenticated => Code::Unauthenticated,
            ErrorKind::PermissionDenied => Code::PermissionDenied,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::AlreadyExists => Code::AlreadyExists,
            ErrorKind::Conflict => Code::Aborted,
            ErrorKind::FailedPrecondition => Code::FailedPrecondition,
            ErrorKind::ResourceExhausted => Code::ResourceExhausted,
            ErrorKind::Unavailable => Code::Unavailable,
            ErrorKind::Internal => Code::Internal,
        }
    }

    pub fn http_status(self) -> StatusCode {
        match self {
            ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::AlreadyExists | ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::FailedPrecondition => StatusCode::CONFLICT,
            ErrorKind::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The kind a gRPC status came from, so the gateway maps a service's answer without
    /// knowing its business meaning.
    pub fn from_grpc_code(code: Code) -> Self {
        match code {
            Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
            Code::Unauthenticated => ErrorKind::Unauthenticated,
            Code::PermissionDenied => ErrorKind::PermissionDenied,
            Code::NotFound => ErrorKind::NotFound,
            Code::AlreadyExists => ErrorKind::AlreadyExists,
            Code::Aborted => ErrorKind::Conflict,
            Code::FailedPrecondition => ErrorKind::FailedPrecondition,
            Code::ResourceExhausted => ErrorKind::ResourceExhausted,
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        }
    }
}

/// An error a service returns: a kind, a message safe to show the caller, and optionally an
/// internal cause that is only logged.
#[derive(Debug)]
pub struct ServiceError {
    kind: ErrorKind,
    message: String,
    source: Option<anyhow::Error>,
}

impl PartialEq for ServiceError {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.message == other.message
    }
}

impl ServiceError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// The caller did not prove who it is (no or a bad credential, a bad signature).
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unauthenticated, message)
    }

    /// The caller is known but may not do this.
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PermissionDenied, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, message)
    }

    /// A dependency failed in a way that may pass on retry; the cause is logged, not shown.
    pub fn unavailable(message: impl Into<String>, cause: impl Into<anyhow::Error>) -> Self {
        Self {
            kind: ErrorKind::Unavailable,
            message: message.into(),
            source: Some(cause.into()),
        }
    }

    /// An unexpected failure; the caller sees only "internal error".
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self {
            kind: ErrorKind::Internal,
            message: "internal error".to_owned(),
            source: Some(cause.into()),
        }
    }

    /// Another service's gRPC error as ours: its kind and message pass through, except that
    /// an internal or unavailable peer becomes "the <service> service is unavailable" with the
    /// peer's answer kept as the (logged, never shown) cause.
    pub fn from_remote(service: &str, status: &Status) -> Self {
        match ErrorKind::from_grpc_code(status.code()) {
            ErrorKind::Internal | ErrorKind::Unavailable => Self::unavailable(
                format!("the {service} service is unavailable"),
                anyhow::anyhow!(
                    "{service} answered {:?}: {}",
                    status.code(),
                    status.message()
                ),
            ),
            kind => Self::new(kind, status.message()),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ServiceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|cause| cause.as_ref() as _)
    }
}

impl From<ServiceError> for Status {
    fn from(error: ServiceError) -> Self {
        if let Some(cause) = &error.source {
            tracing::error!(kind = ?error.kind, error = %error.message, cause = ?cause, "request failed");
        }
        Status::new(error.kind.grpc_code(), error.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorKind; 10] = [
        ErrorKind::InvalidArgument,
        ErrorKind::Unauthenticated,
        ErrorKind::PermissionDenied,
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::Conflict,
        ErrorKind::FailedPrecondition,
        ErrorKind::ResourceExhausted,
        ErrorKind::Unavailable,
        ErrorKind::Internal,
    ];

    #[test]
    fn every_kind_survives_a_grpc_round_trip() {
        for kind in ALL {
            assert_eq!(ErrorKind::from_grpc_code(kind.grpc_code()), kind);
        }
    }

    #[test]
    fn internal_causes_never_reach_the_caller() {
        let status = Status::from(ServiceError::internal(anyhow::anyhow!("password=hunter2")));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }

    #[test]
    fn a_peers_answer_keeps_its_kind_but_not_its_internals() {
        let refused =
            ServiceError::from_remote("limits", &Status::failed_precondition("over the balance"));
        assert_eq!(
            (refused.kind(), refused.message()),
            (ErrorKind::FailedPrecondition, "over the balance")
        );
        let down = ServiceError::from_remote("limits", &Status::internal("panic at line 7"));
        assert_eq!(
            (down.kind(), down.message()),
            (ErrorKind::Unavailable, "the limits service is unavailable")
        );
    }

    #[test]
    fn client_errors_map_to_4xx_and_dependency_errors_to_5xx() {
        assert_eq!(
            ErrorKind::InvalidArgument.http_status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(ErrorKind::Conflict.http_status(), StatusCode::CONFLICT);
        assert_eq!(
            ErrorKind::Unavailable.http_status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
