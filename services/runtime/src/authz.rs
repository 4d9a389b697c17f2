//! Who may call which RPC, when services run in separate processes with mutual TLS.
//!
//! A caller is known by the names of its client certificate ([`crate::tls`]):
//! `payouts-<component>` for the gateway and each service, or one of
//! `GRPC_PLATFORM_IDENTITIES` for the platform's own services. Each RPC lists the callers it
//! serves ([`allowed_callers`]): the internal RPCs only the components that own those calls
//! (`HandleStripeEvent` from webhooks, `ReservePayout` from payouts, `ResolveApproval` from
//! approvals, ...), the platform-facing ones (`RecordAllocation`, `RequestPayout`,
//! `ValidatePayoutLimits`, ...) the platform. The table is the who-calls-whom of docs/design.md;
//! a unit test keeps it covering every RPC of the contracts.
//!
//! A call without a certificate is UNAUTHENTICATED; a caller the table does not list for
//! the RPC, or a certificate that names nobody we know, is PERMISSION_DENIED. Health (and
//! reflection, when it is served) stays open. Calls inside the all-in-one process never
//! leave it and are not checked here.

use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::body::Body;

use crate::config::ServiceName;
use crate::tls::{PeerIdentity, Vouched, component_identity};

/// Who the authorization layer found a call came from (a request extension). Absent when
/// the call did not cross mutual TLS (inside the all-in-one process, or a plaintext
/// loopback listener): then there is no one to tell apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthenticatedCallers(pub Vec<Caller>);

impl AuthenticatedCallers {
    /// `Ok` when the call did not cross mutual TLS or came from `caller`; otherwise
    /// PERMISSION_DENIED saying what only `caller` may do.
    pub fn require<T>(
        request: &tonic::Request<T>,
        caller: Caller,
        what: &str,
    ) -> Result<(), tonic::Status> {
        match request.extensions().get::<AuthenticatedCallers>() {
            Some(AuthenticatedCallers(callers)) if !callers.contains(&caller) => Err(
                tonic::Status::permission_denied(format!("only {caller} may {what}")),
            ),
            _ => Ok(()),
        }
    }
}

/// A caller of the gRPC services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Caller {
    Gateway,
    Service(ServiceName),
    /// The platform's own services (`GRPC_PLATFORM_IDENTITIES`).
    Platform,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Gateway => f.write_str("gateway"),
            Caller::Service(service) => f.write_str(service.as_str()),
            Caller::Platform => f.write_str("platform"),
        }
    }
}

use Caller::{Gateway, Platform};
const APPROVALS: Caller = Caller::Service(ServiceName::Approvals);
const BALANCE: Caller = Caller::Service(ServiceName::Balance);
const DISPUTES: Caller = Caller::Service(ServiceName::Disputes);
const LIMITS: Caller = Caller::Service(ServiceName::Limits);
const NOTIFICATIONS: Caller = Caller::Service(ServiceName::Notifications);
const PAYOUTS: Caller = Caller::Service(ServiceName::Payouts);
const WEBHOOKS: Caller = Caller::Service(ServiceName::Webhooks);

const WEBHOOKS_SERVICE: &str = "payouts.webhooks.v1.WebhooksService";
const PAYOUTS_SERVICE: &str = "payouts.payouts.v1.PayoutsService";
const LIMITS_SERVICE: &str = "payouts.limits.v1.PayoutLimitsService";
const APPROVALS_SERVICE: &str = "payouts.approvals.v1.ApprovalsService";
const DISPUTES_SERVICE: &str = "payouts.disputes.v1.DisputesService";
const BALANCE_SERVICE: &str = "payouts.balance.v1.BalanceService";
const NOTIFICATIONS_SERVICE: &str = "payouts.notifications.v1.NotificationsService";

/// The callers an RPC serves, by its path (`package.Service/Method`); `None` for a method
/// not in the table (refused).
pub fn allowed_callers(method: &str) -> Option<&'static [Caller]> {
    let (service, method) = method.split_once('/')?;
    let callers: &'static [Caller] = match (service, method) {
        (
            WEBHOOKS_SERVICE,
            "IngestEvent" | "GetStatistics" | "ListEvents" | "GetEvent" | "RetryEvent"
            | "BackfillEvents",
        ) => &[Gateway],
        (PAYOUTS_SERVICE, "RegisterAccount" | "RequestPayout") => &[Platform],
        (PAYOUTS_SERVICE, "GetAccount") => &[Platform, LIMITS, APPROVALS],
        (PAYOUTS_SERVICE, "GetPayout" | "ListAuditLog") => &[Platform, Gateway],
        (PAYOUTS_SERVICE, "ListPayouts") => &[Platform, Gateway, APPROVALS],
        (PAYOUTS_SERVICE, "ResolveApproval") => &[APPROVALS],
        (PAYOUTS_SERVICE, "HandleStripeEvent" | "ListAccountsInFlight") => &[WEBHOOKS],
        (PAYOUTS_SERVICE, "RunReconciliation" | "ListReconciliationReports") => &[Gateway],
        (PAYOUTS_SERVICE, "ResumePayout" | "ReversePayout") => &[Gateway],
        (PAYOUTS_SERVICE, "SummarizeObligations" | "CountUnpayableUsers") => &[BALANCE],
        (PAYOUTS_SERVICE, "SetTransferPause") => &[Gateway, BALANCE, NOTIFICATIONS],
        (PAYOUTS_SERVICE, "GetTransferPause") => &[Gateway, BALANCE],
        (LIMITS_SERVICE, "ValidatePayoutLimits") => &[Platform],
        (LIMITS_SERVICE, "ReservePayout" | "ReleasePayout" | "RecheckPayout") => &[PAYOUTS],
        (LIMITS_SERVICE, "GetLimitConfig" | "ListBlockedAttempts" | "GetBalance") => {
            &[Platform, Gateway]
        }
        (LIMITS_SERVICE, "GetHeldAmounts") => &[BALANCE],
        (APPROVALS_SERVICE, "CreateApproval") => &[PAYOUTS],
        (
            APPROVALS_SERVICE,
            "GetApproval" | "ListApprovals" | "DecideApproval" | "RetryDecision",
        ) => &[Gateway],
        (DISPUTES_SERVICE, "RecordAllocation") => &[Platform],
        (DISPUTES_SERVICE, "GetEarnings") => &[Platform, Gateway, LIMITS, APPROVALS],
        (DISPUTES_SERVICE, "ListAllocations") => &[Platform, Gateway],
        (DISPUTES_SERVICE, "ListPayableEarnings") => &[BALANCE],
        (DISPUTES_SERVICE, "HandleStripeEvent") => &[WEBHOOKS],
        (DISPUTES_SERVICE, "ListDisputes") => &[Gateway],
        (BALANCE_SERVICE, "RunBalanceCheck" | "ListSnapshots" | "GetBalanceOverview") => &[Gateway],
        (NOTIFICATIONS_SERVICE, "NotifyUser") => &[Platform, PAYOUTS, DISPUTES],
        (NOTIFICATIONS_SERVICE, "NotifyAdmins") => &[Platform, APPROVALS],
        (NOTIFICATIONS_SERVICE, "ListNotifications" | "MarkNotificationRead") => &[Platform],
        (NOTIFICATIONS_SERVICE, "CreateCriticalAlert") => {
            &[WEBHOOKS, PAYOUTS, APPROVALS, DISPUTES, BALANCE]
        }
        (NOTIFICATIONS_SERVICE, "ListCriticalAlerts") => &[Gateway],
        (NOTIFICATIONS_SERVICE, "UpdateCriticalAlert") => &[Gateway, BALANCE],
        _ => return None,
    };
    Some(callers)
}

/// Who calls `service` at all (any of its RPCs), for the NetworkPolicies that must let them
/// through: `payouts config callers` prints it, and the chart's CI check compares.
pub fn callers_of(service: ServiceName) -> Vec<Caller> {
    let set = prost_descriptors();
    let mut callers = Vec::new();
    for (path, _) in set.iter().filter(|(path, _)| {
        path.split_once('/')
            .is_some_and(|(name, _)| name == service.grpc_name())
    }) {
        for caller in allowed_callers(path).unwrap_or_default() {
            if !callers.contains(caller) {
                callers.push(*caller);
            }
        }
    }
    callers
}

/// Every RPC path of the contracts (`package.Service/Method`), with its service.
fn prost_descriptors() -> Vec<(String, String)> {
    use prost::Message as _;
    let Ok(set) = prost_types::FileDescriptorSet::decode(payouts_proto::FILE_DESCRIPTOR_SET) else {
        return Vec::new();
    };
    let mut paths = Vec::new();
    for file in &set.file {
        for service in &file.service {
            let full = format!("{}.{}", file.package(), service.name());
            for method in &service.method {
                paths.push((format!("{full}/{}", method.name()), full.clone()));
            }
        }
    }
    paths
}

/// Paths every connection may call, certificate or not: health's Check (probes, load
/// balancers) and reflection when it is served. Health's Watch is a stream held open for as
/// long as the caller likes, so it needs a certificate (any of ours).
fn is_open(path: &str) -> bool {
    path == "/grpc.health.v1.Health/Check"
        || path.starts_with("/grpc.reflection.v1.ServerReflection/")
        || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
}

/// Maps certificate names to callers.
#[derive(Debug, Clone, Default)]
pub struct Identities {
    platform: Arc<[String]>,
}

impl Identities {
    pub fn new(platform: &[String]) -> Self {
        Self {
            platform: platform.into(),
        }
    }

    /// Every caller the names prove (a certificate could carry several names), counting
    /// only the kinds of name the certificate's CA may vouch for ([`Vouched`]).
    pub fn callers(&self, names: &[String], vouched: Vouched) -> Vec<Caller> {
        let mut callers = Vec::new();
        for name in names {
            if vouched.component {
                if *name == component_identity("gateway") {
                    callers.push(Gateway);
                }
                for service in ServiceName::ALL {
                    if *name == component_identity(service.as_str()) {
                        callers.push(Caller::Service(service));
                    }
                }
            }
            if vouched.platform && self.platform.iter().any(|platform| platform == name) {
                callers.push(Platform);
            }
        }
        callers
    }

    /// Whether a peer may call `path`: `Ok` or the status that refuses it.
    pub fn check(&self, path: &str, peer: Option<&PeerIdentity>) -> Result<(), tonic::Status> {
        if is_open(path) {
            return Ok(());
        }
        let names = peer.map(|peer| &*peer.names).unwrap_or_default();
        if names.is_empty() {
            return Err(tonic::Status::unauthenticated(
                "a client certificate is required (mutual TLS)",
            ));
        }
        let vouched = peer.map(|peer| peer.vouched).unwrap_or_default();
        if path == "/grpc.health.v1.Health/Watch" {
            return if self.callers(names, vouched).is_empty() {
                Err(tonic::Status::permission_denied(format!(
                    "{names:?} may not watch health: no known caller"
                )))
            } else {
                Ok(())
            };
        }
        let method = path.trim_start_matches('/');
        let callers = self.callers(names, vouched);
        let allowed = allowed_callers(method).unwrap_or_default();
        if callers.iter().any(|caller| allowed.contains(caller)) {
            return Ok(());
        }
        let who = if callers.is_empty() {
            format!("{names:?} (no known caller from the CA that signed it)")
        } else {
            callers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        Err(tonic::Status::permission_denied(format!(
            "{who} may not call {method}"
        )))
    }
}

/// The server layer that enforces [`Identities::check`] on every request.
#[derive(Debug, Clone)]
pub struct AuthorizationLayer {
    identities: Identities,
}

impl AuthorizationLayer {
    pub fn new(identities: Identities) -> Self {
        Self { identities }
    }
}

impl<S> tower::Layer<S> for AuthorizationLayer {
    type Service = Authorization<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorization {
            inner,
            identities: self.identities.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Authorization<S> {
    inner: S,
    identities: Identities,
}

impl<S, RequestBody> tower::Service<http::Request<RequestBody>> for Authorization<S>
where
    S: tower::Service<http::Request<RequestBody>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = futures::future::Either<
        S::Future,
        std::future::Ready<Result<http::Response<Body>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<RequestBody>) -> Self::Future {
        let peer = request.extensions().get::<PeerIdentity>();
        match self.identities.check(request.uri().path(), peer) {
            Ok(()) => {
                // The handler may narrow further by who called (SetTransferPause binds each
                // cause to the one caller that owns it).
                let callers = peer
                    .map(|peer| self.identities.callers(&peer.names, peer.vouched))
                    .unwrap_or_default();
                request
                    .extensions_mut()
                    .insert(AuthenticatedCallers(callers));
                futures::future::Either::Left(self.inner.call(request))
            }
            Err(status) => {
                metrics::counter!(
                    "payouts_grpc_server_refused_total",
                    "code" => format!("{:?}", status.code())
                )
                .increment(1);
                // Without a certificate it is anyone's noise (debug); with one of ours it is a
                // misconfigured caller (a warning).
                let unauthenticated = status.code() == tonic::Code::Unauthenticated;
                if unauthenticated {
                    tracing::debug!(
                        path = %crate::grpc::metric_label(request.uri().path()),
                        remote = ?peer.and_then(|peer| peer.remote),
                        "gRPC call refused: no client certificate"
                    );
                } else {
                    tracing::warn!(
                        path = request.uri().path(),
                        names = ?peer.map(|peer| peer.names.clone()),
                        remote = ?peer.and_then(|peer| peer.remote),
                        code = ?status.code(),
                        "gRPC call refused"
                    );
                }
                futures::future::Either::Right(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(names: &[&str]) -> PeerIdentity {
        PeerIdentity {
            remote: None,
            names: names.iter().map(|name| (*name).to_owned()).collect(),
            vouched: Vouched::ANY,
        }
    }

    #[test]
    fn a_name_counts_only_from_the_ca_that_may_vouch_for_it() {
        let identities = Identities::new(&["creator-api".to_owned()]);
        let stripe_event = "/payouts.payouts.v1.PayoutsService/HandleStripeEvent";
        let allocation = "/payouts.disputes.v1.DisputesService/RecordAllocation";
        let from = |names: &[&str], component: bool, platform: bool| PeerIdentity {
            vouched: Vouched {
                component,
                platform,
            },
            ..peer(names)
        };
        let code = |path: &str, peer: PeerIdentity| {
            identities
                .check(path, Some(&peer))
                .map_err(|status| status.code())
        };
        let denied = Err(tonic::Code::PermissionDenied);
        // The webhooks service's name on a certificate from the platform's CA: nobody.
        assert_eq!(
            code(stripe_event, from(&["payouts-webhooks"], false, true)),
            denied
        );
        assert_eq!(
            code(stripe_event, from(&["payouts-webhooks"], true, false)),
            Ok(())
        );
        // A platform identity on a certificate from the components' CA: nobody.
        assert_eq!(
            code(allocation, from(&["creator-api"], true, false)),
            denied
        );
        assert_eq!(
            code(allocation, from(&["creator-api"], false, true)),
            Ok(())
        );
        assert_eq!(
            code(allocation, from(&["creator-api"], false, false)),
            denied
        );
    }

    #[test]
    fn every_rpc_of_the_contracts_has_callers() {
        let paths = prost_descriptors();
        assert!(paths.len() > 40, "only {} methods found", paths.len());
        for (path, _) in &paths {
            let callers = allowed_callers(path);
            assert!(
                callers.is_some_and(|callers| !callers.is_empty()),
                "{path} has no callers in the authorization table"
            );
        }
        assert_eq!(
            callers_of(ServiceName::Webhooks),
            vec![Gateway],
            "only the gateway calls the webhooks service"
        );
        let limits = callers_of(ServiceName::Limits);
        for caller in [Gateway, PAYOUTS, BALANCE, Platform] {
            assert!(limits.contains(&caller), "{caller} calls limits");
        }
        assert_eq!(limits.len(), 4, "{limits:?}");
        assert_eq!(
            allowed_callers("payouts.payouts.v1.PayoutsService/Nope"),
            None
        );
    }

    #[test]
    fn internal_rpcs_only_from_their_owners_platform_rpcs_from_the_platform() {
        let identities = Identities::new(&["creator-api".to_owned()]);
        let code = |path: &str, names: &[&str]| {
            identities
                .check(path, Some(&peer(names)))
                .map_err(|status| status.code())
        };
        let denied = Err(tonic::Code::PermissionDenied);
        let stripe_event = "/payouts.payouts.v1.PayoutsService/HandleStripeEvent";
        assert_eq!(code(stripe_event, &["payouts-webhooks"]), Ok(()));
        assert_eq!(code(stripe_event, &["payouts-gateway"]), denied);
        assert_eq!(code(stripe_event, &["creator-api"]), denied);
        let reserve = "/payouts.limits.v1.PayoutLimitsService/ReservePayout";
        assert_eq!(code(reserve, &["payouts-payouts"]), Ok(()));
        assert_eq!(code(reserve, &["creator-api"]), denied);
        let resolve = "/payouts.payouts.v1.PayoutsService/ResolveApproval";
        assert_eq!(code(resolve, &["payouts-approvals"]), Ok(()));
        assert_eq!(code(resolve, &["payouts-gateway"]), denied);
        let allocation = "/payouts.disputes.v1.DisputesService/RecordAllocation";
        assert_eq!(code(allocation, &["creator-api"]), Ok(()));
        assert_eq!(code(allocation, &["payouts-balance"]), denied);
        // A certificate from our CA with a name nobody is.
        assert_eq!(code(allocation, &["someone-else"]), denied);
        // Several names: any one that is allowed.
        assert_eq!(code(allocation, &["other", "creator-api"]), Ok(()));
    }

    #[test]
    fn no_certificate_is_unauthenticated_but_health_stays_open() {
        let identities = Identities::new(&[]);
        let path = "/payouts.limits.v1.PayoutLimitsService/ValidatePayoutLimits";
        assert_eq!(
            identities.check(path, None).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            identities.check(path, Some(&peer(&[]))).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(
            identities
                .check("/grpc.health.v1.Health/Check", None)
                .is_ok()
        );
        // Watch holds a stream open: only for a certificate of ours.
        assert_eq!(
            identities
                .check("/grpc.health.v1.Health/Watch", None)
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
        assert!(
            identities
                .check(
                    "/grpc.health.v1.Health/Watch",
                    Some(&peer(&["payouts-gateway"]))
                )
                .is_ok()
        );
        assert_eq!(
            identities
                .check("/grpc.health.v1.Health/Watch", Some(&peer(&["stranger"])))
                .unwrap_err()
                .code(),
            tonic::Code::PermissionDenied
        );
    }
}
