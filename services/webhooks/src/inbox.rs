//! The inbox: ingest a delivery (verify, store, acknowledge), and the worker that processes
//! due events exactly once across any number of replicas.
//!
//! Exactly once, precisely: the unique (endpoint, event id) key lets exactly one delivery
//! store an event; a worker processes an event only after winning a versioned claim, which
//! leases it (`next_attempt_at = now + lease`). A worker claims one event at a time, just
//! before it processes it, and checks again right before the dispatch that its claim is the
//! stored version and its lease has not run out: a slow owner can no longer let a batch of
//! leases expire behind it while a second replica dispatches the same events. A worker that
//! dies mid-processing loses the lease when it runs out and another worker claims the event;
//! a worker whose lease ran out cannot record its result (its version is stale). The
//! dispatch itself is bounded by half the lease. The owners' handlers are idempotent on the
//! Stripe event id, so even the one remaining window (a dispatch that outlives its lease)
//! cannot apply an effect twice.

use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use async_trait::async_trait;
use payouts_runtime::shutdown::Shutdown;
use payouts_runtime::{Clock, ErrorKind, Secret, ServiceError};
use tokio::sync::Notify;

use crate::domain::{
    DispatchFailure, Endpoint, Envelope, EventStatus, FailureClass, InboxEvent, Owner, RetryPolicy,
    Route, endpoint_for, route,
};
use crate::signature::{self, SignatureError};
use crate::store::{InboxRepository, Inserted};

/// Delivers an event to the service that owns its effect.
#[async_trait]
pub trait Dispatcher: Send + Sync + 'static {
    /// `Ok(outcome)` when the owner applied (or deliberately ignored) the event; `Err` with
    /// the gRPC code the owner (or the transport) answered otherwise: the code decides
    /// whether the event waits for the owner or the refusal counts toward parking
    /// ([`crate::domain::classify`]).
    async fn dispatch(&self, owner: Owner, event: &InboxEvent) -> Result<String, DispatchFailure>;

    /// Raises the critical alert of an event parked as failed (`webhook_event_parked`) with
    /// a dedupe key fixed per parking, so raising it again is not a second alert. `Ok` only
    /// once the notifications service confirmed it: until then the alert stays owed on the
    /// event and the worker raises it again.
    async fn alert_parked(&self, event: &InboxEvent) -> Result<(), String>;
}

/// How the inbox is configured.
#[derive(Debug, Clone)]
pub struct InboxSettings {
    pub payouts_secrets: Vec<Secret>,
    pub subscription_secrets: Vec<Secret>,
    pub transfers_secrets: Vec<Secret>,
    pub tolerance_seconds: i64,
    /// Whether this deployment applies live-mode events (else test-mode ones).
    pub livemode: bool,
    pub policy: RetryPolicy,
    /// How often an idle worker looks for due events (new deliveries wake it at once).
    pub poll_interval: StdDuration,
}

/// What ingesting a delivery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// Stored for the first time, or a failed event made due again by Stripe's redelivery.
    Accepted {
        event_id: String,
        event_type: String,
    },
    /// Already stored and not failed: nothing written.
    Duplicate {
        event_id: String,
        event_type: String,
    },
}

/// The inbox service core.
pub struct Inbox {
    repository: Arc<dyn InboxRepository>,
    dispatcher: Arc<dyn Dispatcher>,
    clock: Arc<dyn Clock>,
    settings: InboxSettings,
    wake: Notify,
}

/// How many events a worker processes per pass (claiming each just before processing it).
const BATCH: usize = 16;
/// How often a compare-and-set lost to a concurrent writer is retried.
const MAX_CAS_ATTEMPTS: usize = 8;

impl Inbox {
    pub fn new(
        repository: Arc<dyn InboxRepository>,
        dispatcher: Arc<dyn Dispatcher>,
        clock: Arc<dyn Clock>,
        settings: InboxSettings,
    ) -> Self {
        Self {
            repository,
            dispatcher,
            clock,
            settings,
            wake: Notify::new(),
        }
    }

    /// The inbox's clock's time.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    pub fn repository(&self) -> &Arc<dyn InboxRepository> {
        &self.repository
    }

    /// Verifies, stores and classifies one delivery. The event is durably stored before this
    /// returns `Ok`; a store failure is `Unavailable` so the caller answers 5xx and Stripe
    /// retries.
    pub async fn ingest(
        &self,
        endpoint: Endpoint,
        payload: impl Into<Vec<u8>>,
        signature_header: Option<&str>,
    ) -> Result<Ingested, ServiceError> {
        let payload: Vec<u8> = payload.into();
        let secrets = match endpoint {
            Endpoint::StripePayouts => &self.settings.payouts_secrets,
            Endpoint::StripeSubscription => &self.settings.subscription_secrets,
            Endpoint::StripeTransfers => &self.settings.transfers_secrets,
        };
        if secrets.is_empty() {
            // Refusing with 5xx keeps Stripe retrying until the secret is configured.
            let variable = endpoint.secret_variable();
            return Err(ServiceError::unavailable(
                format!("{variable} is not configured; the delivery was not accepted"),
                anyhow::anyhow!("no signing secret for {}", endpoint.as_str()),
            ));
        }
        let now = self.clock.now();
        if let Err(error) = signature::verify(
            signature_header,
            &payload,
            secrets,
            self.settings.tolerance_seconds,
            now.timestamp(),
        ) {
            metrics::counter!("payouts_webhooks_rejected_total", "endpoint" => endpoint.as_str(), "reason" => error.reason())
                .increment(1);
            tracing::warn!(
                endpoint = endpoint.as_str(),
                reason = error.reason(),
                "webhook signature refused"
            );
            return Err(signature_refused(&error));
        }
        let envelope = Envelope::parse(&payload).map_err(|reason| {
            metrics::counter!("payouts_webhooks_rejected_total", "endpoint" => endpoint.as_str(), "reason" => "not_an_event")
                .increment(1);
            ServiceError::invalid_argument(reason)
        })?;
        // An event Stripe cannot send to this endpoint is refused before it is stored: an
        // endpoint's secret only vouches for what Stripe routes there.
        admitted(endpoint, &envelope)?;
        let payload = String::from_utf8(payload)
            .map_err(|_| ServiceError::invalid_argument("body is not a Stripe event: not UTF-8"))?;
        let event_id = envelope.id.clone();
        let event_type = envelope.event_type.clone();
        metrics::counter!("payouts_webhooks_received_total", "endpoint" => endpoint.as_str(), "type" => event_type.clone())
            .increment(1);

        let mut event = InboxEvent::received(endpoint, envelope, payload, now);
        event.trace_parent = payouts_runtime::telemetry::current_traceparent();
        match self.repository.insert_new(event).await? {
            Inserted::New => {
                tracing::info!(event_id = %event_id, event_type = %event_type, endpoint = endpoint.as_str(), "webhook stored");
                self.wake.notify_one();
                Ok(Ingested::Accepted {
                    event_id,
                    event_type,
                })
            }
            Inserted::Duplicate(stored) if stored.status == EventStatus::Failed => {
                // A redelivery of a failed event is another chance, not a duplicate.
                if self.rearm(*stored).await?.is_some() {
                    tracing::info!(event_id = %event_id, "failed webhook redelivered; due again");
                    self.wake.notify_one();
                    Ok(Ingested::Accepted {
                        event_id,
                        event_type,
                    })
                } else {
                    Ok(Ingested::Duplicate {
                        event_id,
                        event_type,
                    })
                }
            }
            Inserted::Duplicate(_) => {
                metrics::counter!("payouts_webhooks_duplicates_total", "endpoint" => endpoint.as_str()).increment(1);
                Ok(Ingested::Duplicate {
                    event_id,
                    event_type,
                })
            }
        }
    }

    /// Stores an event the backfill found in Stripe's event list (read from Stripe's API
    /// with our key: no signature to verify), under the endpoint its type arrives on, with
    /// the same dedupe by event id as a delivery. A stored copy, whatever its status, is a
    /// duplicate: the backfill never re-arms a failed event (a redelivery or an admin does).
    /// An event that endpoint would refuse (a type no endpoint takes, a connected account's
    /// event without its account) is refused here too (`InvalidArgument`).
    pub async fn ingest_backfilled(&self, payload: String) -> Result<Ingested, ServiceError> {
        let envelope =
            Envelope::parse(payload.as_bytes()).map_err(ServiceError::invalid_argument)?;
        let endpoint = endpoint_for(&envelope.event_type).ok_or_else(|| {
            ServiceError::invalid_argument(format!(
                "{} is not a type any webhook endpoint takes",
                envelope.event_type
            ))
        })?;
        admitted(endpoint, &envelope)?;
        let event_id = envelope.id.clone();
        let event_type = envelope.event_type.clone();
        let event = InboxEvent::backfilled(endpoint, envelope, payload, self.clock.now());
        match self.repository.insert_new(event).await? {
            Inserted::New => {
                metrics::counter!("payouts_webhooks_backfilled_total", "endpoint" => endpoint.as_str(), "type" => event_type.clone())
                    .increment(1);
                tracing::info!(event_id = %event_id, event_type = %event_type, endpoint = endpoint.as_str(), "undelivered event recovered by the backfill");
                self.wake.notify_one();
                Ok(Ingested::Accepted {
                    event_id,
                    event_type,
                })
            }
            Inserted::Duplicate(_) => Ok(Ingested::Duplicate {
                event_id,
                event_type,
            }),
        }
    }

    /// Makes a failed event due again; `None` if it is not failed (any more).
    async fn rearm(&self, mut event: InboxEvent) -> Result<Option<InboxEvent>, ServiceError> {
        for _ in 0..MAX_CAS_ATTEMPTS {
            let Some(rearmed) = event.rearm(self.clock.now()) else {
                return Ok(None);
            };
            match self.repository.replace(&rearmed, event.version).await {
                Ok(()) => return Ok(Some(rearmed)),
                Err(error) if error.kind() == ErrorKind::Conflict => {
                    match self.repository.get(event.endpoint, &event.event_id).await? {
                        Some(current) => event = current,
                        None => return Ok(None),
                    }
                }
                Err(error) => return Err(error),
            }
        }
        Err(ServiceError::conflict(format!(
            "webhook event {} keeps changing; try again",
            event.event_id
        )))
    }

    /// An admin's retry of failed events with this id (on one endpoint, or on both).
    pub async fn retry(
        &self,
        endpoint: Option<Endpoint>,
        event_id: &str,
        requested_by: &str,
    ) -> Result<Vec<InboxEvent>, ServiceError> {
        let endpoints = match endpoint {
            Some(endpoint) => vec![endpoint],
            None => Endpoint::ALL.to_vec(),
        };
        let mut found = Vec::new();
        for endpoint in endpoints {
            if let Some(event) = self.repository.get(endpoint, event_id).await? {
                found.push(event);
            }
        }
        if found.is_empty() {
            return Err(ServiceError::not_found(format!(
                "webhook event {event_id} not found"
            )));
        }
        let mut retried = Vec::new();
        for event in &found {
            if let Some(rearmed) = self.rearm(event.clone()).await? {
                tracing::info!(
                    event_id,
                    requested_by,
                    endpoint = event.endpoint.as_str(),
                    "failed webhook retried by admin"
                );
                retried.push(rearmed);
            }
        }
        if retried.is_empty() {
            let statuses: Vec<&str> = found.iter().map(|event| event.status.as_str()).collect();
            return Err(ServiceError::failed_precondition(format!(
                "only failed events can be retried; webhook event {event_id} is {}",
                statuses.join(" and ")
            )));
        }
        self.wake.notify_one();
        Ok(retried)
    }

    /// Claims the next due event: the returned event is leased to the caller. `None` when
    /// nothing is due (or every due event was claimed by another worker first).
    pub async fn claim_next(&self) -> Result<Option<InboxEvent>, ServiceError> {
        let now = self.clock.now();
        // A few candidates, so that losing a race to another replica does not end the pass.
        for event in self.repository.due(now, 4).await? {
            if !event.is_due(now) {
                // Only its owed alert is due: raise it here, so a pass does both kinds of work.
                self.raise_alert(event).await;
                continue;
            }
            let lease = event.claim(now, &self.settings.policy);
            match self.repository.replace(&lease, event.version).await {
                Ok(()) => return Ok(Some(lease)),
                // Another worker claimed it first.
                Err(error) if error.kind() == ErrorKind::Conflict => {}
                Err(error) => return Err(error),
            }
        }
        Ok(None)
    }

    /// Whether the claim is still ours: the stored event is the claimed version and the
    /// lease has not run out. Checked right before the dispatch.
    async fn still_ours(&self, claimed: &InboxEvent) -> Result<bool, ServiceError> {
        let stored = self
            .repository
            .get(claimed.endpoint, &claimed.event_id)
            .await?;
        Ok(
            stored.is_some_and(|stored| stored.version == claimed.version)
                && claimed.lease_holds(self.clock.now()),
        )
    }

    /// Processes one claimed event and records the result, unless the lease was lost (then
    /// the owner is not called at all).
    pub async fn process_claimed(&self, claimed: InboxEvent) -> Result<InboxEvent, ServiceError> {
        if !self.still_ours(&claimed).await? {
            tracing::warn!(event_id = %claimed.event_id, "lease lost before the dispatch; another worker owns the event");
            return Err(ServiceError::conflict(format!(
                "the claim on webhook event {} is no longer held",
                claimed.event_id
            )));
        }
        let started = Instant::now();
        let result: Result<String, (Owner, DispatchFailure)> = match route(
            &claimed.event_type,
            claimed.livemode,
            self.settings.livemode,
        ) {
            Route::Acknowledge(reason) => Ok(reason.to_owned()),
            Route::Dispatch(owner) => {
                let deadline = self
                    .settings
                    .policy
                    .lease
                    .to_std()
                    .unwrap_or(StdDuration::from_secs(60))
                    / 2;
                match tokio::time::timeout(deadline, self.dispatcher.dispatch(owner, &claimed))
                    .await
                {
                    Ok(result) => result.map_err(|failure| (owner, failure)),
                    Err(_) => Err((
                        owner,
                        DispatchFailure::new(
                            tonic::Code::DeadlineExceeded,
                            format!("{} did not answer within {deadline:?}", owner.as_str()),
                        ),
                    )),
                }
            }
        };
        let now = self.clock.now();
        let policy = &self.settings.policy;
        let (next, outcome_label) = match result {
            Ok(outcome) => (claimed.complete(now, outcome), "completed"),
            Err((owner, failure)) => match failure.class() {
                FailureClass::OwnerUnavailable => {
                    (claimed.wait(now, owner, failure.message, policy), "waiting")
                }
                FailureClass::Refused => {
                    let next = claimed.fail(now, failure.message, policy);
                    let label = if next.status == EventStatus::Failed {
                        "parked"
                    } else {
                        "retry"
                    };
                    (next, label)
                }
            },
        };
        metrics::histogram!("payouts_webhooks_processing_seconds", "type" => claimed.event_type.clone())
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("payouts_webhooks_processed_total", "type" => claimed.event_type.clone(), "result" => outcome_label)
            .increment(1);
        match self.repository.replace(&next, claimed.version).await {
            Ok(()) => {
                match (next.status, &next.waiting) {
                    (EventStatus::Completed, _) => {
                        tracing::info!(event_id = %next.event_id, outcome = next.outcome.as_deref().unwrap_or(""), "webhook processed")
                    }
                    (EventStatus::Failed, _) => {
                        tracing::error!(event_id = %next.event_id, error = next.last_error.as_deref().unwrap_or(""), attempts = next.attempts, refusals = next.refusals, "webhook parked as failed");
                        // Owed from the write that parked it; raised now if possible, else
                        // by a later pass.
                        self.raise_alert(next.clone()).await;
                    }
                    (EventStatus::Processing, Some(waiting)) => {
                        tracing::warn!(event_id = %next.event_id, owner = waiting.owner.as_str(), since = %waiting.since, error = next.last_error.as_deref().unwrap_or(""), "owner could not answer; the webhook waits for it")
                    }
                    (EventStatus::Processing, None) => {
                        tracing::warn!(event_id = %next.event_id, error = next.last_error.as_deref().unwrap_or(""), refusals = next.refusals, "webhook refused by its owner; will retry")
                    }
                }
                Ok(next)
            }
            Err(error) if error.kind() == ErrorKind::Conflict => {
                tracing::warn!(event_id = %claimed.event_id, "lease lost before the result was recorded; another worker owns the event");
                Err(error)
            }
            Err(error) => Err(error),
        }
    }

    /// Raises the owed alert of a parked event: claims it (a lease, by compare-and-set),
    /// asks the notifications service, and records the answer. Whatever fails leaves the
    /// alert owed, due again after a backoff; a crash between parking and raising leaves it
    /// owed too. Returns whether the alert is now confirmed.
    pub async fn raise_alert(&self, event: InboxEvent) -> bool {
        let now = self.clock.now();
        let policy = &self.settings.policy;
        let Some(claimed) = event.claim_alert(now, policy) else {
            return false;
        };
        if let Err(error) = self.repository.replace(&claimed, event.version).await {
            // Another replica claimed it, or the store is down: a later pass tries again.
            tracing::debug!(event_id = %event.event_id, %error, "parked alert not claimed");
            return false;
        }
        let (next, raised) = match self.dispatcher.alert_parked(&claimed).await {
            Ok(()) => (claimed.alert_raised(), true),
            Err(error) => {
                tracing::error!(event_id = %claimed.event_id, %error, "the parked event's alert was not raised; it stays owed");
                (claimed.alert_not_raised(self.clock.now(), policy), false)
            }
        };
        metrics::counter!("payouts_webhooks_parked_alerts_total", "result" => if raised { "raised" } else { "retry" })
            .increment(1);
        if let Err(error) = self.repository.replace(&next, claimed.version).await {
            // The claim runs out and the alert is raised again, under the same dedupe key.
            tracing::warn!(event_id = %claimed.event_id, %error, "parked alert outcome not recorded");
            return false;
        }
        raised
    }

    /// Sets `payouts_webhooks_events_waiting{owner}`, `payouts_webhooks_events_parked` and
    /// `payouts_webhooks_oldest_unprocessed_seconds` (0 with nothing processing) from the
    /// store (every replica agrees), every `interval` until shutdown; an owner with none
    /// waiting reads 0.
    pub async fn run_waiting_gauge(self: Arc<Self>, shutdown: Shutdown, interval: StdDuration) {
        let stop = shutdown.requested();
        tokio::pin!(stop);
        loop {
            match self.repository.waiting_by_owner().await {
                Ok(waiting) => {
                    for owner in [Owner::Payouts, Owner::Disputes] {
                        #[allow(clippy::cast_precision_loss)] // a count far below 2^53
                        let count = waiting.get(owner.as_str()).copied().unwrap_or(0) as f64;
                        metrics::gauge!("payouts_webhooks_events_waiting", "owner" => owner.as_str())
                            .set(count);
                    }
                }
                Err(error) => tracing::debug!(%error, "waiting webhook events not counted"),
            }
            match self.repository.backlog().await {
                Ok(backlog) => {
                    #[allow(clippy::cast_precision_loss)] // a count far below 2^53
                    metrics::gauge!("payouts_webhooks_events_parked").set(backlog.parked as f64);
                    let age = backlog.oldest_processing.map_or(0.0, |received| {
                        (self.clock.now() - received).num_milliseconds().max(0) as f64 / 1000.0
                    });
                    metrics::gauge!("payouts_webhooks_oldest_unprocessed_seconds").set(age);
                }
                Err(error) => tracing::debug!(%error, "webhook backlog not counted"),
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// One pass: claim the next due event and process it, up to a batch. Returns how many
    /// events were claimed.
    pub async fn process_due(&self) -> Result<usize, ServiceError> {
        let mut count = 0;
        while count < BATCH {
            let Some(event) = self.claim_next().await? else {
                break;
            };
            count += 1;
            // Its own trace, linked to the delivery's (which ended at the acknowledgement).
            let span = tracing::info_span!(
                "webhook event",
                otel.name = %format!("process {}", event.event_type),
                otel.kind = "consumer",
                messaging.system = "stripe",
                messaging.message.id = %event.event_id,
                event_type = %event.event_type,
            );
            payouts_runtime::telemetry::link_to(&span, event.trace_parent.as_deref());
            // A lost lease or a store failure for one event must not stop the others.
            let _ = tracing::Instrument::instrument(self.process_claimed(event), span).await;
            // On the embedded store and with in-process owners nothing above ever waits, so
            // a busy worker would keep its thread from the deliveries being acknowledged.
            tokio::task::yield_now().await;
        }
        Ok(count)
    }

    /// The worker loop; several may run, in this process and in other replicas.
    pub async fn run_worker(self: Arc<Self>, shutdown: Shutdown) {
        let stop = shutdown.requested();
        tokio::pin!(stop);
        loop {
            let busy = match self.process_due().await {
                Ok(count) => count == BATCH,
                Err(error) => {
                    tracing::warn!(error = %error, "webhook worker pass failed");
                    false
                }
            };
            if busy {
                continue;
            }
            tokio::select! {
                () = &mut stop => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
    }
}

/// Whether `endpoint` takes this event ([`Endpoint::admits`]); a refusal is counted and is
/// `InvalidArgument` (400: Stripe keeps the event listed as undelivered).
fn admitted(endpoint: Endpoint, envelope: &Envelope) -> Result<(), ServiceError> {
    endpoint
        .admits(&envelope.event_type, envelope.account.as_deref())
        .map_err(|reason| {
            metrics::counter!("payouts_webhooks_rejected_total", "endpoint" => endpoint.as_str(), "reason" => "wrong_endpoint")
                .increment(1);
            tracing::warn!(
                endpoint = endpoint.as_str(),
                event_id = %envelope.id,
                event_type = %envelope.event_type,
                "webhook refused: it cannot arrive on this endpoint"
            );
            ServiceError::invalid_argument(reason)
        })
}

/// A delivery whose signature does not prove it comes from Stripe: unauthenticated (401).
fn signature_refused(error: &SignatureError) -> ServiceError {
    ServiceError::unauthenticated(error.to_string())
}
