//! Inbox events and their states.

use chrono::{DateTime, Duration, Utc};

/// How long a completed event is kept (design §4: 30 days), enforced by a TTL index. Events
/// still processing or parked as failed never expire: they stay until resolved.
pub const RETENTION: Duration = Duration::days(30);

/// The Stripe webhook endpoints, as Stripe routes events. Stripe sends a connected account's
/// events (its bank payouts, its status) only to Connect endpoints (`connect=true`), with
/// `"account"`; the platform's own events (transfers it makes, charges, refunds, disputes)
/// only to account endpoints, without it (https://docs.stripe.com/connect/webhooks). Each
/// endpoint has its own signing secrets and takes only the events Stripe can send it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// Connect: the connected accounts' `payout.*` and `account.*`.
    StripePayouts,
    /// Account: the platform's charge, refund, dispute and billing events (design §9).
    StripeSubscription,
    /// Account: the platform's `transfer.*`.
    StripeTransfers,
}

/// Which account's events an endpoint receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointKind {
    /// `connect=true`: connected accounts' events, each carrying `account`.
    Connect,
    /// The platform account's own events, without `account`.
    Account,
}

impl Endpoint {
    pub const ALL: [Endpoint; 3] = [
        Endpoint::StripePayouts,
        Endpoint::StripeTransfers,
        Endpoint::StripeSubscription,
    ];

    /// The name stored in documents (design §4 `webhookEndpoint`).
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::StripePayouts => "stripe-payouts",
            Endpoint::StripeSubscription => "stripe-subscription",
            Endpoint::StripeTransfers => "stripe-transfers",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|endpoint| endpoint.as_str() == text)
    }

    /// The gateway path Stripe delivers to.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::StripePayouts => "/api/webhooks/stripe-payouts",
            Endpoint::StripeSubscription => "/api/webhooks/stripe-subscription",
            Endpoint::StripeTransfers => "/api/webhooks/stripe-transfers",
        }
    }

    /// The variable holding its signing secrets.
    pub fn secret_variable(self) -> &'static str {
        match self {
            Endpoint::StripePayouts => "STRIPE_WEBHOOK_SECRET_PAYOUTS",
            Endpoint::StripeSubscription => "STRIPE_WEBHOOK_SECRET",
            Endpoint::StripeTransfers => "STRIPE_WEBHOOK_SECRET_TRANSFERS",
        }
    }

    pub fn kind(self) -> EndpointKind {
        match self {
            Endpoint::StripePayouts => EndpointKind::Connect,
            Endpoint::StripeSubscription | Endpoint::StripeTransfers => EndpointKind::Account,
        }
    }

    /// The event types it subscribes (what `payouts stripe setup-webhooks` enables).
    pub fn subscribed_events(self) -> &'static [&'static str] {
        match self {
            Endpoint::StripePayouts => PAYOUTS_ENDPOINT_EVENTS,
            Endpoint::StripeSubscription => SUBSCRIPTION_ENDPOINT_EVENTS,
            Endpoint::StripeTransfers => TRANSFERS_ENDPOINT_EVENTS,
        }
    }

    /// Whether an event of this type and `account` can legitimately arrive here: its type is
    /// not another endpoint's, and it carries `account` exactly when this is the Connect
    /// endpoint. A type on no list (a team subscribed more in the Dashboard) is taken and
    /// acknowledged, never applied ([`route`]). The refusal names where the event belongs.
    pub fn admits(self, event_type: &str, account: Option<&str>) -> Result<(), String> {
        if let Some(home) = endpoint_for(event_type)
            && home != self
        {
            return Err(format!(
                "{event_type} cannot arrive on {}: Stripe sends it to {} ({}); nothing was stored",
                self.path(),
                home.path(),
                home.describe(),
            ));
        }
        match (self.kind(), account) {
            (EndpointKind::Connect, None) => Err(format!(
                "{event_type} without account cannot arrive on {}: a Connect endpoint receives only connected accounts' events, which carry account; the platform's own events go to an account endpoint; nothing was stored",
                self.path()
            )),
            (EndpointKind::Account, Some(account)) => Err(format!(
                "{event_type} of connected account {account} cannot arrive on {}: an account endpoint receives only the platform's own events; a connected account's events go to the Connect endpoint {}; nothing was stored",
                self.path(),
                Endpoint::StripePayouts.path()
            )),
            _ => Ok(()),
        }
    }

    fn describe(self) -> &'static str {
        match self.kind() {
            EndpointKind::Connect => {
                "the Connect endpoint: connected accounts' events, with account"
            }
            EndpointKind::Account => {
                "an account endpoint: the platform's own events, without account"
            }
        }
    }
}

/// The Connect endpoint's events: the connected accounts' bank payouts
/// (`payout.reconciliation_completed` says a payout's balance transactions are complete),
/// their status, and their disconnection. Every one carries `account`.
pub const PAYOUTS_ENDPOINT_EVENTS: &[&str] = &[
    "payout.created",
    "payout.updated",
    "payout.paid",
    "payout.failed",
    "payout.canceled",
    "payout.reconciliation_completed",
    "account.updated",
    "account.application.deauthorized",
];

/// The transfers endpoint's events: the transfers the platform makes are the platform's
/// events, so they reach only an account endpoint, never a Connect one. `transfer.paid` and
/// `transfer.failed` are not subscribed. They describe the legacy Transfer of API versions
/// before the 2017-04-06 transfer/payout split, when a transfer could still fail after it was
/// made; since then a transfer succeeds or fails synchronously and Stripe calls them
/// deprecated (its staff in stripe/stripe-dotnet#2276 and #2390), but they stayed in Stripe's
/// OpenAPI spec and SDK event lists until the SDKs removed them around 2022. An account
/// pinned to an old version can still send them, so they are accepted here
/// ([`LEGACY_TRANSFER_EVENTS`]) and handled.
pub const TRANSFERS_ENDPOINT_EVENTS: &[&str] =
    &["transfer.created", "transfer.updated", "transfer.reversed"];

/// The legacy transfer events current Stripe no longer offers (accepted on the transfers
/// endpoint, never subscribed).
pub const LEGACY_TRANSFER_EVENTS: &[&str] = &["transfer.paid", "transfer.failed"];

/// The subscription endpoint's events (design §9 plus the dispute fund movements and refund
/// updates the disputes service applies): the platform's own charges.
pub const SUBSCRIPTION_ENDPOINT_EVENTS: &[&str] = &[
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.closed",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
    "refund.created",
    "refund.updated",
    "refund.failed",
    "charge.refund.updated",
];

/// The endpoint an event of `event_type` arrives on (and is stored under when backfilled);
/// `None` for a type no endpoint subscribes.
pub fn endpoint_for(event_type: &str) -> Option<Endpoint> {
    if LEGACY_TRANSFER_EVENTS.contains(&event_type) {
        return Some(Endpoint::StripeTransfers);
    }
    Endpoint::ALL
        .into_iter()
        .find(|endpoint| endpoint.subscribed_events().contains(&event_type))
}

/// The event types the backfill asks for on the platform (`GET /v1/events` without
/// `Stripe-Account`): the account endpoints' types a Payouts service applies (the
/// subscription billing events are only recorded; a missed one loses nothing of ours). At
/// most 20, Stripe's limit for `types[]`.
pub fn backfilled_types() -> Vec<&'static str> {
    Endpoint::ALL
        .into_iter()
        .filter(|endpoint| endpoint.kind() == EndpointKind::Account)
        .flat_map(Endpoint::subscribed_events)
        .copied()
        .filter(|event_type| matches!(route(event_type, false, false), Route::Dispatch(_)))
        .collect()
}

/// The event types asked for on a connected account (with `Stripe-Account`): the Connect
/// endpoint's, at most 20.
pub fn connected_account_types() -> Vec<&'static str> {
    PAYOUTS_ENDPOINT_EVENTS
        .iter()
        .copied()
        .filter(|event_type| matches!(route(event_type, false, false), Route::Dispatch(_)))
        .collect()
}

/// Processing status (design §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventStatus {
    Processing,
    Completed,
    Failed,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Processing => "processing",
            EventStatus::Completed => "completed",
            EventStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "processing" => Some(EventStatus::Processing),
            "completed" => Some(EventStatus::Completed),
            "failed" => Some(EventStatus::Failed),
            _ => None,
        }
    }
}

/// How an event reached the inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventSource {
    /// Stripe delivered it to one of our endpoints (signed).
    Delivery,
    /// The backfill found it in Stripe's event list (`GET /v1/events`), undelivered.
    Backfill,
}

impl EventSource {
    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::Delivery => "delivery",
            EventSource::Backfill => "backfill",
        }
    }

    /// Stored events from before sources were recorded were all deliveries.
    pub fn parse(text: Option<&str>) -> Self {
        match text {
            Some("backfill") => EventSource::Backfill,
            _ => EventSource::Delivery,
        }
    }
}

/// A stored Stripe event, keyed by (endpoint, event id).
#[derive(Debug, Clone, PartialEq)]
pub struct InboxEvent {
    pub endpoint: Endpoint,
    pub event_id: String,
    pub event_type: String,
    /// Connected account ("acct_...") for Connect events.
    pub account: Option<String>,
    pub livemode: bool,
    pub api_version: Option<String>,
    /// Stripe's `created` (unix seconds).
    pub created: i64,
    /// The event JSON exactly as received.
    pub payload: String,
    pub status: EventStatus,
    pub attempts: u32,
    pub deliveries: u32,
    /// First stored (`processedAt` in documents and REST).
    pub received_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// What processing concluded ("applied by payouts", "not ours", ...).
    pub outcome: Option<String>,
    /// The W3C `traceparent` of the delivery that stored it: its processing links to it.
    pub trace_parent: Option<String>,
    /// How it reached the inbox.
    pub source: EventSource,
    /// Definite refusals by the owner since the event was last made due: what parking
    /// counts (`attempts` counts every try, including those the owner could not answer).
    pub refusals: u32,
    /// Set while the owner could not answer: the event waits for it, without limit.
    pub waiting: Option<Waiting>,
    /// The critical alert of its parking, owed until the notifications service confirms it.
    pub alert: Option<OwedAlert>,
    /// Compare-and-set version, bumped by every write.
    pub version: i64,
}

impl InboxEvent {
    /// A verified delivery, stored before it is acknowledged and due at once.
    pub fn received(
        endpoint: Endpoint,
        envelope: Envelope,
        payload: String,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            endpoint,
            event_id: envelope.id,
            event_type: envelope.event_type,
            account: envelope.account,
            livemode: envelope.livemode,
            api_version: envelope.api_version,
            created: envelope.created,
            payload,
            status: EventStatus::Processing,
            attempts: 0,
            deliveries: 1,
            received_at: now,
            next_attempt_at: Some(now),
            completed_at: None,
            failed_at: None,
            last_error: None,
            outcome: None,
            trace_parent: None,
            source: EventSource::Delivery,
            refusals: 0,
            waiting: None,
            alert: None,
            version: 1,
        }
    }

    /// An event the backfill found in Stripe's list: stored as a delivery would be, due at
    /// once, and marked as backfilled (it was never delivered).
    pub fn backfilled(
        endpoint: Endpoint,
        envelope: Envelope,
        payload: String,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            source: EventSource::Backfill,
            deliveries: 0,
            ..Self::received(endpoint, envelope, payload, now)
        }
    }

    /// When the TTL index removes the event: 30 days after it completed. An event being
    /// processed, retried or parked as failed has no expiry (a failed event must stay
    /// visible and retryable until someone resolves it).
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        match (self.status, self.completed_at) {
            (EventStatus::Completed, Some(completed)) => Some(completed + RETENTION),
            _ => None,
        }
    }

    /// Whether a claim made at `claimed` still holds at `now` (the lease has not run out).
    pub fn lease_holds(&self, now: DateTime<Utc>) -> bool {
        self.status == EventStatus::Processing
            && self.next_attempt_at.is_some_and(|until| now < until)
    }

    /// Whether a worker may claim it now: processing, and due (a claim pushes the due time
    /// out by the lease, so a crashed worker's claim simply expires).
    pub fn is_due(&self, now: DateTime<Utc>) -> bool {
        self.status == EventStatus::Processing && self.next_attempt_at.is_some_and(|due| due <= now)
    }

    /// The claimed event: one more attempt, leased until `now + lease`.
    pub fn claim(&self, now: DateTime<Utc>, policy: &RetryPolicy) -> InboxEvent {
        InboxEvent {
            attempts: self.attempts + 1,
            next_attempt_at: Some(now + policy.lease),
            version: self.version + 1,
            ..self.clone()
        }
    }

    /// Processing succeeded (or the event is acknowledged as not ours).
    pub fn complete(&self, now: DateTime<Utc>, outcome: String) -> InboxEvent {
        InboxEvent {
            status: EventStatus::Completed,
            completed_at: Some(now),
            next_attempt_at: None,
            outcome: Some(outcome),
            waiting: None,
            version: self.version + 1,
            ..self.clone()
        }
    }

    /// The owner definitely refused the event (an answer about the event itself, see
    /// [`classify`]): due again after the backoff, or parked as failed after
    /// `max_attempts` refusals (visible, retryable by an admin), owing its critical alert
    /// from the same write.
    pub fn fail(&self, now: DateTime<Utc>, error: String, policy: &RetryPolicy) -> InboxEvent {
        let refusals = self.refusals + 1;
        let parked = refusals >= policy.max_attempts;
        InboxEvent {
            status: if parked {
                EventStatus::Failed
            } else {
                EventStatus::Processing
            },
            failed_at: if parked { Some(now) } else { None },
            next_attempt_at: if parked {
                None
            } else {
                Some(now + policy.backoff(refusals))
            },
            last_error: Some(error),
            refusals,
            waiting: None,
            alert: if parked {
                Some(OwedAlert {
                    due_at: now,
                    attempts: 0,
                })
            } else {
                self.alert.clone()
            },
            version: self.version + 1,
            ..self.clone()
        }
    }

    /// The owner could not answer (down, overloaded, too slow: see [`classify`]). An answer
    /// we did not get is not a "no": the event waits for `owner` as long as it takes, retried
    /// after a backoff capped at `policy.max_wait_delay`, and the try does not count toward
    /// parking.
    pub fn wait(
        &self,
        now: DateTime<Utc>,
        owner: Owner,
        error: String,
        policy: &RetryPolicy,
    ) -> InboxEvent {
        let waiting = match &self.waiting {
            Some(waiting) if waiting.owner == owner => Waiting {
                waits: waiting.waits + 1,
                ..waiting.clone()
            },
            _ => Waiting {
                owner,
                since: now,
                waits: 1,
            },
        };
        InboxEvent {
            status: EventStatus::Processing,
            next_attempt_at: Some(now + policy.wait_backoff(waiting.waits)),
            last_error: Some(error),
            waiting: Some(waiting),
            version: self.version + 1,
            ..self.clone()
        }
    }

    /// A failed event made due again (a Stripe redelivery or an admin's retry), with a fresh
    /// set of attempts. Only failed events can be re-armed. An alert still owed stays owed:
    /// the parking happened.
    pub fn rearm(&self, now: DateTime<Utc>) -> Option<InboxEvent> {
        (self.status == EventStatus::Failed).then(|| InboxEvent {
            status: EventStatus::Processing,
            attempts: 0,
            refusals: 0,
            deliveries: self.deliveries + 1,
            next_attempt_at: Some(now),
            failed_at: None,
            version: self.version + 1,
            ..self.clone()
        })
    }

    /// Whether its parked alert is owed and due at `now` (a claim pushes it out by the lease).
    pub fn alert_is_due(&self, now: DateTime<Utc>) -> bool {
        self.alert.as_ref().is_some_and(|alert| alert.due_at <= now)
    }

    /// When the worker has something to do with the event: its next processing attempt
    /// while processing, or its owed alert, whichever comes first. `None`: nothing to do.
    /// The stores index this (`dueAt`), so one query finds both kinds of work.
    pub fn work_due_at(&self) -> Option<DateTime<Utc>> {
        let processing = match self.status {
            EventStatus::Processing => self.next_attempt_at,
            _ => None,
        };
        let alert = self.alert.as_ref().map(|alert| alert.due_at);
        match (processing, alert) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The owed alert claimed for raising: leased until `now + lease`, so another replica
    /// does not raise it at the same time (the notification's dedupe key would make that
    /// harmless anyway).
    pub fn claim_alert(&self, now: DateTime<Utc>, policy: &RetryPolicy) -> Option<InboxEvent> {
        let alert = self.alert.as_ref()?;
        Some(InboxEvent {
            alert: Some(OwedAlert {
                due_at: now + policy.lease,
                attempts: alert.attempts + 1,
            }),
            version: self.version + 1,
            ..self.clone()
        })
    }

    /// The notifications service confirmed the alert: nothing is owed any more.
    pub fn alert_raised(&self) -> InboxEvent {
        InboxEvent {
            alert: None,
            version: self.version + 1,
            ..self.clone()
        }
    }

    /// The alert could not be raised: owed still, due again after a backoff capped at
    /// `policy.max_wait_delay`.
    pub fn alert_not_raised(&self, now: DateTime<Utc>, policy: &RetryPolicy) -> InboxEvent {
        InboxEvent {
            alert: self.alert.as_ref().map(|alert| OwedAlert {
                due_at: now + policy.wait_backoff(alert.attempts),
                attempts: alert.attempts,
            }),
            version: self.version + 1,
            ..self.clone()
        }
    }
}

/// An event waiting for its owner to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The service that could not answer.
    pub owner: Owner,
    /// When the wait began (the first unanswered try in a row).
    pub since: DateTime<Utc>,
    /// Unanswered tries in a row (the backoff grows with them).
    pub waits: u32,
}

/// The critical alert a parked event owes, until the notifications service confirms it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwedAlert {
    /// When the worker (next) tries to raise it.
    pub due_at: DateTime<Utc>,
    /// Tries so far.
    pub attempts: u32,
}

/// What a failed dispatch means for the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The owner could not answer: wait for it, without limit.
    OwnerUnavailable,
    /// The owner answered "no" about this event: counts toward parking.
    Refused,
}

/// Classifies a failed dispatch by its gRPC code (docs/webhooks.md, "Outages never park an
/// event", says why each code is where it is). The rule: only an answer about the event
/// itself (it is malformed, names what does not exist, or asks what can never be done)
/// counts toward parking. An answer we did not get, or one about the owner's own state
/// (down, overloaded, a conflict, a bug, a caller it does not know yet, an RPC it does not
/// serve yet), is not a "no": a deploy or a restart can change it, so the event waits.
pub fn classify(code: tonic::Code) -> FailureClass {
    use tonic::Code;
    match code {
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::DataLoss => FailureClass::Refused,
        Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::DeadlineExceeded
        | Code::PermissionDenied
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Unimplemented
        | Code::Internal
        | Code::Unavailable
        | Code::Unauthenticated => FailureClass::OwnerUnavailable,
    }
}

/// A dispatch that did not complete: the gRPC code the owner (or the transport) answered,
/// and what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispatchFailure {
    pub code: tonic::Code,
    pub message: String,
}

impl DispatchFailure {
    pub fn new(code: tonic::Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn class(&self) -> FailureClass {
        classify(self.code)
    }
}

impl From<payouts_runtime::ServiceError> for DispatchFailure {
    /// An in-process owner's error, classified by the gRPC code it would have travelled as.
    fn from(error: payouts_runtime::ServiceError) -> Self {
        Self::new(error.kind().grpc_code(), error.to_string())
    }
}

impl Owner {
    /// The service's name, as stored in `waitingFor` and used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Owner::Payouts => "payouts",
            Owner::Disputes => "disputes",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "payouts" => Some(Owner::Payouts),
            "disputes" => Some(Owner::Disputes),
            _ => None,
        }
    }
}

/// How processing is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Definite refusals before an event is parked as failed (an owner that could not
    /// answer never counts).
    pub max_attempts: u32,
    /// Delay after the first failed attempt; doubles after each further one.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// The cap of the delay while waiting for an owner that could not answer (and between
    /// tries to raise an owed alert): the event is applied at most this long after the owner
    /// is back.
    pub max_wait_delay: Duration,
    /// How long a claim holds an event before another worker may take it over.
    pub lease: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::seconds(30),
            max_delay: Duration::hours(1),
            max_wait_delay: Duration::minutes(5),
            lease: Duration::seconds(60),
        }
    }
}

impl RetryPolicy {
    /// The delay after `failed_attempts` failures: base, 2 x base, 4 x base, ... capped.
    pub fn backoff(&self, failed_attempts: u32) -> Duration {
        let doublings = failed_attempts.saturating_sub(1).min(20);
        let factor = 1_i32 << doublings;
        (self.base_delay * factor).min(self.max_delay)
    }

    /// The delay after `waits` unanswered tries in a row: base, 2 x base, ... capped at
    /// `max_wait_delay`.
    pub fn wait_backoff(&self, waits: u32) -> Duration {
        self.backoff(waits).min(self.max_wait_delay)
    }
}

/// The parts of a Stripe event the inbox needs, parsed from the verified body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: String,
    pub event_type: String,
    pub created: i64,
    pub livemode: bool,
    /// Connected account for Connect events.
    pub account: Option<String>,
    pub api_version: Option<String>,
}

#[derive(serde::Deserialize)]
struct RawEnvelope {
    id: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    object: Option<String>,
    #[serde(default)]
    created: i64,
    #[serde(default)]
    livemode: bool,
    account: Option<String>,
    api_version: Option<String>,
}

impl Envelope {
    /// Parses a verified body; a body that is not a Stripe event is refused with the reason.
    pub fn parse(payload: &[u8]) -> Result<Self, String> {
        let raw: RawEnvelope = serde_json::from_slice(payload)
            .map_err(|error| format!("body is not a Stripe event: {error}"))?;
        if raw
            .object
            .as_deref()
            .is_some_and(|object| object != "event")
        {
            return Err("body is not a Stripe event: object is not \"event\"".to_owned());
        }
        let id = raw
            .id
            .filter(|id| !id.trim().is_empty() && id.len() <= 255)
            .ok_or("body is not a Stripe event: no id")?;
        let event_type = raw
            .event_type
            .filter(|event_type| !event_type.trim().is_empty() && event_type.len() <= 255)
            .ok_or("body is not a Stripe event: no type")?;
        Ok(Self {
            id,
            event_type,
            created: raw.created,
            livemode: raw.livemode,
            account: raw.account.filter(|account| !account.is_empty()),
            api_version: raw.api_version,
        })
    }
}

/// Who owns an event type's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// transfer.*, payout.*, account.updated, account.application.deauthorized
    Payouts,
    /// charge.refunded, charge.dispute.*, refund.*
    Disputes,
}

/// Where an event goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Dispatch to the owning service.
    Dispatch(Owner),
    /// Stored and acknowledged, nothing to apply; the reason is recorded as the outcome.
    Acknowledge(&'static str),
}

/// Routes an event by type, and by mode: an event whose livemode differs from ours is stored
/// and acknowledged but never applied (Connect endpoints in live mode also get test events).
/// Only a type an endpoint subscribes (or a legacy transfer type) is ever dispatched: an
/// unknown `payout.*` taken on an account endpoint reaches no owner.
pub fn route(event_type: &str, event_livemode: bool, our_livemode: bool) -> Route {
    if event_livemode != our_livemode {
        return Route::Acknowledge("not applied: livemode differs from this deployment's");
    }
    match endpoint_for(event_type) {
        Some(Endpoint::StripePayouts | Endpoint::StripeTransfers) => {
            return Route::Dispatch(Owner::Payouts);
        }
        Some(Endpoint::StripeSubscription) => {}
        None => return Route::Acknowledge("not ours: no Payouts service handles this event type"),
    }
    if event_type == "charge.refunded"
        || event_type == "charge.refund.updated"
        || event_type.starts_with("charge.dispute.")
        || event_type.starts_with("refund.")
    {
        return Route::Dispatch(Owner::Disputes);
    }
    if event_type.starts_with("invoice.")
        || event_type.starts_with("customer.subscription.")
        || event_type == "checkout.session.completed"
    {
        // Subscription billing belongs to the platform's billing system, not to Payouts.
        return Route::Acknowledge("recorded: subscription billing is handled outside Payouts");
    }
    Route::Acknowledge("not ours: no Payouts service handles this event type")
}

/// Counts by status (design §4 statistics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Statistics {
    pub total: u64,
    pub processing: u64,
    pub completed: u64,
    pub failed: u64,
    /// Of the total, how many the backfill recovered.
    pub backfilled: u64,
    /// Of the processing ones, how many wait for an owner that could not answer.
    pub waiting: u64,
    /// The waiting ones by owner ("payouts", "disputes"); an owner with none is absent.
    pub waiting_for: std::collections::BTreeMap<String, u64>,
    /// Parked events whose critical alert is not raised yet.
    pub alerts_owed: u64,
}

impl Statistics {
    pub fn count(&mut self, event: &InboxEvent) {
        self.total += 1;
        if event.source == EventSource::Backfill {
            self.backfilled += 1;
        }
        match event.status {
            EventStatus::Processing => self.processing += 1,
            EventStatus::Completed => self.completed += 1,
            EventStatus::Failed => self.failed += 1,
        }
        if event.status == EventStatus::Processing
            && let Some(waiting) = &event.waiting
        {
            self.waiting += 1;
            *self
                .waiting_for
                .entry(waiting.owner.as_str().to_owned())
                .or_default() += 1;
        }
        if event.alert.is_some() {
            self.alerts_owed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(id: &str) -> Envelope {
        Envelope {
            id: id.to_owned(),
            event_type: "transfer.created".to_owned(),
            created: 1,
            livemode: false,
            account: None,
            api_version: None,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn envelope_parses_a_stripe_event_and_refuses_anything_else() {
        let parsed = Envelope::parse(
            br#"{"id":"evt_1","object":"event","type":"payout.paid","created":5,"livemode":true,"account":"acct_9","api_version":null}"#,
        )
        .unwrap();
        assert_eq!(parsed.id, "evt_1");
        assert_eq!(parsed.event_type, "payout.paid");
        assert_eq!(parsed.account.as_deref(), Some("acct_9"));
        assert!(parsed.livemode);
        for bad in [
            &b"not json"[..],
            br#"[1]"#,
            br#"{"type":"x"}"#,
            br#"{"id":"evt_1"}"#,
            br#"{"id":"evt_1","type":"x","object":"charge"}"#,
        ] {
            let error = Envelope::parse(bad).unwrap_err();
            assert!(error.starts_with("body is not a Stripe event"), "{error}");
        }
    }

    #[test]
    fn routes_follow_ownership_and_mode() {
        assert_eq!(
            route("transfer.created", false, false),
            Route::Dispatch(Owner::Payouts)
        );
        assert_eq!(
            route("payout.failed", false, false),
            Route::Dispatch(Owner::Payouts)
        );
        assert_eq!(
            route("account.updated", false, false),
            Route::Dispatch(Owner::Payouts)
        );
        assert_eq!(
            route("charge.refunded", false, false),
            Route::Dispatch(Owner::Disputes)
        );
        assert_eq!(
            route("charge.dispute.closed", false, false),
            Route::Dispatch(Owner::Disputes)
        );
        assert_eq!(
            route("refund.failed", false, false),
            Route::Dispatch(Owner::Disputes)
        );
        assert!(matches!(
            route("invoice.paid", false, false),
            Route::Acknowledge(_)
        ));
        assert!(matches!(
            route("plan.created", false, false),
            Route::Acknowledge(_)
        ));
        assert!(matches!(
            route("transfer.created", true, false),
            Route::Acknowledge(_)
        ));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.backoff(1), Duration::seconds(30));
        assert_eq!(policy.backoff(2), Duration::seconds(60));
        assert_eq!(policy.backoff(3), Duration::seconds(120));
        assert_eq!(policy.backoff(100), Duration::hours(1));
    }

    #[test]
    fn failing_retries_then_parks_and_only_a_failed_event_can_be_rearmed() {
        let policy = RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        };
        let event = InboxEvent::received(
            Endpoint::StripePayouts,
            envelope("evt_1"),
            "{}".to_owned(),
            now(),
        );
        assert!(event.is_due(now()));
        assert_eq!(event.rearm(now()), None);

        let first = event.claim(now(), &policy);
        assert!(!first.is_due(now()), "a claimed event is leased");
        assert!(
            first.is_due(now() + policy.lease),
            "an expired lease makes it due again"
        );
        let retry = first.fail(now(), "boom".to_owned(), &policy);
        assert_eq!(retry.status, EventStatus::Processing);
        assert_eq!(retry.next_attempt_at, Some(now() + policy.backoff(1)));

        let second = retry.claim(now() + policy.backoff(1), &policy);
        let parked = second.fail(now(), "boom again".to_owned(), &policy);
        assert_eq!(parked.status, EventStatus::Failed);
        assert_eq!(parked.failed_at, Some(now()));
        assert!(!parked.is_due(now() + Duration::days(1)));

        let rearmed = parked.rearm(now()).unwrap();
        assert_eq!(
            (rearmed.status, rearmed.attempts, rearmed.deliveries),
            (EventStatus::Processing, 0, 2)
        );
        assert!(rearmed.is_due(now()));
        assert!(rearmed.version > parked.version);
    }

    #[test]
    fn only_an_answer_about_the_event_counts_toward_parking() {
        use tonic::Code;
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::AlreadyExists,
            Code::FailedPrecondition,
            Code::OutOfRange,
            Code::DataLoss,
        ] {
            assert_eq!(classify(code), FailureClass::Refused, "{code:?}");
        }
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Aborted,
            Code::Cancelled,
            Code::Unknown,
            Code::Internal,
            Code::Unimplemented,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::Ok,
        ] {
            assert_eq!(classify(code), FailureClass::OwnerUnavailable, "{code:?}");
        }
        let from_owner: DispatchFailure =
            payouts_runtime::ServiceError::unavailable("disputes store down", anyhow::anyhow!("x"))
                .into();
        assert_eq!(from_owner.class(), FailureClass::OwnerUnavailable);
        let refused: DispatchFailure =
            payouts_runtime::ServiceError::invalid_argument("event has no data.object").into();
        assert_eq!(refused.class(), FailureClass::Refused);
    }

    #[test]
    fn the_wait_backoff_doubles_and_is_capped_at_five_minutes() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.wait_backoff(1), Duration::seconds(30));
        assert_eq!(policy.wait_backoff(4), Duration::seconds(240));
        assert_eq!(policy.wait_backoff(5), Duration::minutes(5));
        assert_eq!(policy.wait_backoff(u32::MAX), Duration::minutes(5));
    }

    #[test]
    fn an_owner_that_cannot_answer_never_parks_the_event() {
        let policy = RetryPolicy::default();
        let mut event = InboxEvent::received(
            Endpoint::StripeSubscription,
            envelope("evt_wait"),
            "{}".to_owned(),
            now(),
        );
        let mut at = now();
        // A day of tries, far past the old parking window (5 tries, about 7.5 minutes).
        for _ in 0..300 {
            event = event.claim(at, &policy).wait(
                at,
                Owner::Disputes,
                "disputes answered Unavailable".to_owned(),
                &policy,
            );
            assert_eq!(event.status, EventStatus::Processing);
            let due = event.next_attempt_at.unwrap();
            assert!(due - at <= Duration::minutes(5), "waited {}", due - at);
            at = due;
        }
        assert_eq!((event.attempts, event.refusals), (300, 0));
        assert_eq!(event.alert, None);
        let waiting = event.waiting.clone().unwrap();
        assert_eq!(
            (waiting.owner, waiting.since, waiting.waits),
            (Owner::Disputes, now(), 300)
        );
        assert!(event.is_due(at));

        // Back: the event completes and is no longer waiting.
        let done = event.claim(at, &policy).complete(at, "applied".to_owned());
        assert_eq!(done.status, EventStatus::Completed);
        assert_eq!(done.waiting, None);

        // Waiting for another owner starts a new wait; a refusal ends the wait.
        let other = event.wait(at, Owner::Payouts, "payouts down".to_owned(), &policy);
        let other_wait = other.waiting.clone().unwrap();
        assert_eq!(
            (other_wait.owner, other_wait.since, other_wait.waits),
            (Owner::Payouts, at, 1)
        );
        let refused = event.fail(at, "invalid".to_owned(), &policy);
        assert_eq!((refused.waiting, refused.refusals), (None, 1));
        assert_eq!(refused.next_attempt_at, Some(at + policy.backoff(1)));
    }

    #[test]
    fn the_last_refusal_parks_and_owes_the_alert_in_the_same_write() {
        let policy = RetryPolicy::default();
        let event = InboxEvent::received(
            Endpoint::StripePayouts,
            envelope("evt_refused"),
            "{}".to_owned(),
            now(),
        );
        let almost = InboxEvent {
            refusals: policy.max_attempts - 2,
            ..event.clone()
        }
        .fail(now(), "no".to_owned(), &policy);
        assert_eq!(almost.status, EventStatus::Processing);
        assert_eq!(almost.alert, None);
        assert_eq!(almost.work_due_at(), almost.next_attempt_at);

        let parked = almost.fail(now(), "no".to_owned(), &policy);
        assert_eq!(parked.status, EventStatus::Failed);
        assert_eq!(parked.refusals, policy.max_attempts);
        assert_eq!(
            parked.alert,
            Some(OwedAlert {
                due_at: now(),
                attempts: 0
            })
        );
        assert!(parked.alert_is_due(now()));
        assert_eq!(parked.work_due_at(), Some(now()));
        assert!(
            !parked.is_due(now()),
            "a parked event is not processed by itself"
        );

        // Raising: claimed (leased), then not raised (backoff), then raised (nothing owed).
        let claimed = parked.claim_alert(now(), &policy).unwrap();
        assert!(!claimed.alert_is_due(now()));
        assert!(claimed.alert_is_due(now() + policy.lease));
        let later = claimed.alert_not_raised(now(), &policy);
        assert_eq!(
            later.alert.as_ref().map(|alert| alert.due_at),
            Some(now() + policy.wait_backoff(1))
        );
        let raised = later.claim_alert(now(), &policy).unwrap().alert_raised();
        assert_eq!(raised.alert, None);
        assert_eq!(raised.work_due_at(), None);
        assert_eq!(raised.claim_alert(now(), &policy), None);

        // A re-armed event keeps an alert still owed, and gets a fresh set of refusals.
        let rearmed = parked.rearm(now()).unwrap();
        assert_eq!((rearmed.refusals, rearmed.alert.is_some()), (0, true));
    }

    #[test]
    fn completing_records_the_outcome() {
        let event = InboxEvent::received(
            Endpoint::StripePayouts,
            envelope("evt_1"),
            "{}".to_owned(),
            now(),
        );
        let done = event
            .claim(now(), &RetryPolicy::default())
            .complete(now(), "applied".to_owned());
        assert_eq!(done.status, EventStatus::Completed);
        assert_eq!(done.outcome.as_deref(), Some("applied"));
        assert!(!done.is_due(now() + Duration::days(1)));
    }

    #[test]
    fn every_type_has_one_endpoint_and_the_backfill_asks_for_what_we_apply() {
        let mut seen = std::collections::BTreeSet::new();
        for endpoint in Endpoint::ALL {
            for event_type in endpoint.subscribed_events() {
                assert!(seen.insert(*event_type), "{event_type} on two endpoints");
                assert_eq!(endpoint_for(event_type), Some(endpoint), "{event_type}");
            }
        }
        for event_type in LEGACY_TRANSFER_EVENTS {
            assert_eq!(endpoint_for(event_type), Some(Endpoint::StripeTransfers));
            assert!(
                !seen.contains(event_type),
                "legacy types are never subscribed"
            );
        }
        assert_eq!(endpoint_for("plan.created"), None);

        let platform = backfilled_types();
        let connected = connected_account_types();
        assert!(platform.len() <= 20, "Stripe takes at most 20 types");
        assert!(connected.len() <= 20, "Stripe takes at most 20 types");
        for endpoint in Endpoint::ALL {
            let asked = match endpoint.kind() {
                EndpointKind::Connect => &connected,
                EndpointKind::Account => &platform,
            };
            for event_type in endpoint.subscribed_events() {
                let applied = matches!(route(event_type, false, false), Route::Dispatch(_));
                assert_eq!(asked.contains(event_type), applied, "{event_type}");
            }
        }
        assert!(platform.contains(&"charge.dispute.funds_withdrawn"));
        assert!(platform.contains(&"transfer.reversed"));
        assert!(
            !platform.contains(&"payout.paid"),
            "a connected account's event"
        );
        assert!(!platform.contains(&"invoice.payment_failed"));
        assert_eq!(
            connected,
            [
                "payout.created",
                "payout.updated",
                "payout.paid",
                "payout.failed",
                "payout.canceled",
                "payout.reconciliation_completed",
                "account.updated",
                "account.application.deauthorized"
            ]
        );
        for source in [EventSource::Delivery, EventSource::Backfill] {
            assert_eq!(EventSource::parse(Some(source.as_str())), source);
        }
        assert_eq!(EventSource::parse(None), EventSource::Delivery);
    }

    #[test]
    fn an_endpoint_admits_only_what_stripe_can_send_it() {
        let payouts = Endpoint::StripePayouts;
        let transfers = Endpoint::StripeTransfers;
        let subscription = Endpoint::StripeSubscription;
        assert_eq!(payouts.admits("payout.paid", Some("acct_1")), Ok(()));
        assert_eq!(
            payouts.admits("account.application.deauthorized", Some("acct_1")),
            Ok(())
        );
        assert_eq!(transfers.admits("transfer.reversed", None), Ok(()));
        assert_eq!(transfers.admits("transfer.paid", None), Ok(()));
        assert_eq!(subscription.admits("charge.refunded", None), Ok(()));
        assert_eq!(subscription.admits("plan.created", None), Ok(()));

        // A platform transfer event on the Connect endpoint never comes from Stripe.
        let error = payouts.admits("transfer.reversed", None).unwrap_err();
        assert!(
            error.contains("transfer.reversed") && error.contains("/api/webhooks/stripe-transfers"),
            "{error}"
        );
        let error = payouts
            .admits("transfer.reversed", Some("acct_1"))
            .unwrap_err();
        assert!(error.contains("/api/webhooks/stripe-transfers"), "{error}");
        // The subscription secret cannot inject payout or transfer events.
        for (event_type, account) in [
            ("payout.paid", Some("acct_1")),
            ("payout.paid", None),
            ("account.updated", None),
            ("transfer.created", None),
            ("transfer.failed", None),
        ] {
            let error = subscription.admits(event_type, account).unwrap_err();
            assert!(error.contains(event_type), "{error}");
        }
        let error = subscription.admits("payout.failed", None).unwrap_err();
        assert!(error.contains("/api/webhooks/stripe-payouts"), "{error}");
        // The kind: account exactly on the Connect endpoint.
        let error = payouts.admits("payout.paid", None).unwrap_err();
        assert!(error.contains("without account"), "{error}");
        let error = transfers
            .admits("transfer.created", Some("acct_1"))
            .unwrap_err();
        assert!(error.contains("acct_1"), "{error}");
        assert!(subscription.admits("plan.created", Some("acct_1")).is_err());
        assert!(payouts.admits("plan.created", Some("acct_1")).is_ok());
    }

    #[test]
    fn only_subscribed_types_reach_an_owner() {
        assert_eq!(
            route("payout.reconciliation_completed", false, false),
            Route::Dispatch(Owner::Payouts)
        );
        assert_eq!(
            route("account.application.deauthorized", false, false),
            Route::Dispatch(Owner::Payouts)
        );
        assert_eq!(
            route("transfer.paid", false, false),
            Route::Dispatch(Owner::Payouts)
        );
        assert!(matches!(
            route("payout.invented", false, false),
            Route::Acknowledge(_)
        ));
        assert!(matches!(
            route("transfer.invented", false, false),
            Route::Acknowledge(_)
        ));
    }

    #[test]
    fn names_round_trip() {
        for endpoint in Endpoint::ALL {
            assert_eq!(Endpoint::parse(endpoint.as_str()), Some(endpoint));
            assert!(endpoint.path().ends_with(endpoint.as_str()));
        }
        for status in [
            EventStatus::Processing,
            EventStatus::Completed,
            EventStatus::Failed,
        ] {
            assert_eq!(EventStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(Endpoint::parse("stripe"), None);
    }

    #[test]
    fn statistics_count_every_status_into_the_total() {
        let policy = RetryPolicy::default();
        let mut stats = Statistics::default();
        let received = InboxEvent::received(
            Endpoint::StripePayouts,
            envelope("evt_1"),
            "{}".to_owned(),
            now(),
        );
        let parked = InboxEvent {
            refusals: policy.max_attempts - 1,
            ..received.clone()
        }
        .fail(now(), "no".to_owned(), &policy);
        let waiting = received.wait(now(), Owner::Disputes, "down".to_owned(), &policy);
        for event in [&received, &parked, &parked, &waiting] {
            stats.count(event);
        }
        stats.count(&InboxEvent {
            source: EventSource::Backfill,
            ..received.complete(now(), "applied".to_owned())
        });
        assert_eq!(
            stats,
            Statistics {
                total: 5,
                processing: 2,
                completed: 1,
                failed: 2,
                backfilled: 1,
                waiting: 1,
                waiting_for: [("disputes".to_owned(), 1)].into_iter().collect(),
                alerts_owed: 2,
            }
        );
    }
}
