//! A fake Stripe API on loopback for tests: the endpoints Payouts calls, answering with the
//! shapes of Stripe's fixtures, honouring `Idempotency-Key` as Stripe does (the first result
//! for a key is replayed, errors included; the same key with other parameters is an
//! error), and programmable to fail: error codes, 429, 5xx before or after the transfer is
//! made, a response lost after the transfer was made, failed lookups. Its state is a
//! [`Ledger`], the same model the deterministic simulation uses.
//!
//! It delivers its events itself, as Stripe does (https://docs.stripe.com/webhooks,
//! https://docs.stripe.com/connect/webhooks): to every enabled endpoint registered with it
//! whose kind matches (the platform's events to account endpoints, a connected account's,
//! carrying `account`, to Connect endpoints) and whose `enabled_events` hold the type (or
//! `*`); signed `Stripe-Signature: t=..,v1=..` with that endpoint's secret, rendered with
//! its `api_version`, POSTed over HTTP; any answer but a 2xx (a redirect too) or no answer
//! is retried after the delays of its [`RetrySchedule`] (Stripe: exponential backoff for up
//! to 3 days in live mode, https://docs.stripe.com/webhooks#retries), then given up; an
//! event whose deliveries did not all succeed is listed by `GET /v1/events?delivery_success=false`.
//! Deliveries run in a background task that stops with [`FakeStripe::shutdown`] (or when the
//! last handle is dropped).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::fixture;
use super::ledger::{Ledger, error_body};
use crate::shutdown::{Shutdown, ShutdownTrigger};

/// What the next `POST /v1/transfers` (or `/v1/transfers/{id}/reversals`) does instead of
/// succeeding.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Answer with a Stripe error: status, `error.code`, message. Nothing is created. The
    /// answer is stored under the key (Stripe stores the first result, also a 500), except a
    /// 429, which Stripe never executed.
    Error {
        status: u16,
        code: String,
        message: String,
    },
    /// Create the transfer, then answer with a 5xx (stored under the key, as Stripe would).
    ErrorAfterCreate { status: u16 },
    /// Create the transfer (and remember it under the key), then answer with a garbled body,
    /// as if the response was lost on the way.
    LoseResponse,
}

#[derive(Default)]
struct StripeState {
    ledger: Ledger,
    script: VecDeque<Behaviour>,
    lookup_failures: VecDeque<(u16, String)>,
    /// Failures of the next listings (`GET /v1/transfers` by date, `GET /v1/events`).
    listing_failures: VecDeque<(u16, String)>,
    balance_failures: VecDeque<(u16, String)>,
    /// Failures of the next `GET /v1/payouts/{id}` and `GET /v1/balance_transactions`.
    bank_payout_failures: VecDeque<(u16, String)>,
    balance_transaction_failures: VecDeque<(u16, String)>,
    /// Failures of the next `GET /v1/transfers/{id}/reversals`.
    reversal_listing_failures: VecDeque<(u16, String)>,
    create_calls: usize,
    lookup_calls: usize,
    available_cents: i64,
    pending_cents: i64,
    /// Webhook endpoints, in creation order (the list answers newest first, as Stripe does).
    webhook_endpoints: Vec<Value>,
    /// Each endpoint's signing secret, by endpoint id (Stripe shows it only at creation).
    webhook_secrets: HashMap<String, String>,
    /// Events, in creation order, with their deliveries.
    events: Vec<StoredEvent>,
    event_counter: u64,
    /// Failures of the next refund lists (`GET /v1/refunds`), and how many were asked for.
    refund_list_failures: VecDeque<(u16, String)>,
    refund_list_calls: usize,
    retry_schedule: RetrySchedule,
    /// Wakes the delivery task: a new event, or a schedule changed.
    wake: Arc<tokio::sync::Notify>,
}

/// When a failed delivery is tried again: the delay after the first failure, after the
/// second, ...; after the last the fake gives up (the event stays listed as undelivered,
/// for the backfill). Stripe retries with exponential backoff for up to 3 days in live mode
/// (https://docs.stripe.com/webhooks#retries); the fake compresses that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

impl RetrySchedule {
    /// `first`, doubling, `retries` times.
    pub fn exponential(first: Duration, retries: u32) -> Self {
        Self(
            (0..retries)
                .map(|retry| first.saturating_mul(1 << retry.min(20)))
                .collect(),
        )
    }
}

impl Default for RetrySchedule {
    /// 1 s doubling 8 times (about 4 minutes in all): Stripe's shape, compressed for a
    /// local run.
    fn default() -> Self {
        Self::exponential(Duration::from_secs(1), 8)
    }
}

/// An event the fake holds, as `GET /v1/events` lists it, with its deliveries.
#[derive(Debug, Clone)]
struct StoredEvent {
    event: Value,
    /// The listing state a test chose ([`FakeStripe::record_event`]); otherwise it follows
    /// the deliveries.
    listed_as_delivered: Option<bool>,
    deliveries: Vec<Delivery>,
}

impl StoredEvent {
    /// Whether every delivery succeeded (`delivery_success`). Stripe's documentation does
    /// not say how an event no endpoint wanted is listed: the fake lists it as undelivered,
    /// so the backfill sees it (and dedupes it), the stricter of the two possibilities.
    fn delivered(&self) -> bool {
        self.listed_as_delivered.unwrap_or_else(|| {
            !self.deliveries.is_empty()
                && self
                    .deliveries
                    .iter()
                    .all(|delivery| delivery.state == DeliveryState::Succeeded)
        })
    }
}

/// One event's deliveries to one endpoint.
#[derive(Debug, Clone)]
struct Delivery {
    endpoint_id: String,
    attempts: u32,
    state: DeliveryState,
    due: Instant,
    last_answer: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeliveryState {
    Pending,
    InFlight,
    Succeeded,
    GaveUp,
}

/// What became of an event's deliveries to one endpoint (for tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    pub event_id: String,
    pub event_type: String,
    pub endpoint_url: String,
    pub attempts: u32,
    pub delivered: bool,
    pub gave_up: bool,
    /// The last answer: `"200 OK"`, `"400 Bad Request: <body>"`, or the connection error.
    pub last_answer: Option<String>,
}

/// One attempt to make: where, signed with what, which body.
struct Attempt {
    event_index: usize,
    delivery_index: usize,
    url: String,
    secret: String,
    body: Vec<u8>,
}

/// Whether an endpoint receives an event: enabled, of the event's kind (Connect endpoints get
/// connected accounts' events, account endpoints the platform's own), subscribed to its type.
fn receives(endpoint: &Value, event_type: &str, account: Option<&str>) -> bool {
    let connect = !endpoint["application"].is_null();
    endpoint["status"] == "enabled"
        && connect == account.is_some()
        && endpoint["enabled_events"]
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e == event_type || e == "*"))
}

impl StripeState {
    /// Records an event about `object`, on a connected account when `account` is given, and
    /// schedules its deliveries to the endpoints that receive it.
    fn emit(&mut self, event_type: &str, object: Value, account: Option<&str>) {
        self.event_counter += 1;
        let mut event = super::event(
            &format!("evt_fake{:08}", self.event_counter),
            event_type,
            "transfer",
        );
        event["created"] = json!(now());
        event["data"]["object"] = object;
        event["account"] = account.map_or(Value::Null, |account| json!(account));
        event["livemode"] = json!(false);
        let now = Instant::now();
        let deliveries: Vec<Delivery> = self
            .webhook_endpoints
            .iter()
            .filter(|endpoint| receives(endpoint, event_type, account))
            .filter_map(|endpoint| endpoint["id"].as_str())
            .map(|endpoint_id| Delivery {
                endpoint_id: endpoint_id.to_owned(),
                attempts: 0,
                state: DeliveryState::Pending,
                due: now,
                last_answer: None,
            })
            .collect();
        event["pending_webhooks"] = json!(deliveries.len());
        self.events.push(StoredEvent {
            event,
            listed_as_delivered: None,
            deliveries,
        });
        self.wake.notify_one();
    }

    /// The attempts due at `now` (marked in flight), and when the next one falls due.
    fn take_due(&mut self, now: Instant) -> (Vec<Attempt>, Option<Instant>) {
        let mut attempts = Vec::new();
        let mut next = None::<Instant>;
        for (event_index, stored) in self.events.iter_mut().enumerate() {
            for (delivery_index, delivery) in stored.deliveries.iter_mut().enumerate() {
                if delivery.state != DeliveryState::Pending {
                    continue;
                }
                if delivery.due > now {
                    next = Some(next.map_or(delivery.due, |next| next.min(delivery.due)));
                    continue;
                }
                let endpoint = self
                    .webhook_endpoints
                    .iter()
                    .find(|endpoint| endpoint["id"] == delivery.endpoint_id.as_str());
                let secret = self.webhook_secrets.get(&delivery.endpoint_id);
                let (Some(endpoint), Some(secret)) = (endpoint, secret) else {
                    continue;
                };
                // Rendered with the endpoint's API version, as Stripe renders it.
                let mut body = stored.event.clone();
                if let Some(version) = endpoint["api_version"].as_str() {
                    body["api_version"] = json!(version);
                }
                delivery.state = DeliveryState::InFlight;
                attempts.push(Attempt {
                    event_index,
                    delivery_index,
                    url: endpoint["url"].as_str().unwrap_or_default().to_owned(),
                    secret: secret.clone(),
                    body: body.to_string().into_bytes(),
                });
            }
        }
        (attempts, next)
    }

    /// Records an attempt's answer: delivered, due again after the schedule's delay, or given
    /// up after its last retry.
    fn record_attempt(&mut self, attempt: &Attempt, answer: Result<String, String>) {
        let schedule = self.retry_schedule.0.clone();
        let Some(stored) = self.events.get_mut(attempt.event_index) else {
            return;
        };
        let Some(delivery) = stored.deliveries.get_mut(attempt.delivery_index) else {
            return;
        };
        delivery.attempts += 1;
        match answer {
            Ok(answer) => {
                delivery.state = DeliveryState::Succeeded;
                delivery.last_answer = Some(answer);
                let pending = stored
                    .deliveries
                    .iter()
                    .filter(|delivery| delivery.state != DeliveryState::Succeeded)
                    .count();
                stored.event["pending_webhooks"] = json!(pending);
            }
            Err(answer) => {
                delivery.last_answer = Some(answer);
                match schedule.get(delivery.attempts as usize - 1) {
                    Some(delay) => {
                        delivery.state = DeliveryState::Pending;
                        delivery.due = Instant::now() + *delay;
                    }
                    None => delivery.state = DeliveryState::GaveUp,
                }
            }
        }
    }
}

/// One delivery attempt over HTTP: `Ok` for a 2xx, else what came back (redirects are not
/// followed: Stripe counts a 3xx as a failure).
async fn attempt_delivery(client: &reqwest::Client, attempt: &Attempt) -> Result<String, String> {
    let signature = super::signature_header(
        &attempt.body,
        &attempt.secret,
        chrono::Utc::now().timestamp(),
    );
    let response = client
        .post(&attempt.url)
        .header("Stripe-Signature", signature)
        .header("Content-Type", "application/json; charset=utf-8")
        .header(
            "User-Agent",
            "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        )
        .body(attempt.body.clone())
        .send()
        .await
        .map_err(|error| format!("no answer: {error}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if status.is_success() {
        Ok(status.to_string())
    } else {
        Err(format!("{status}: {body}"))
    }
}

/// The delivery task: attempts what is due (concurrently, as Stripe does: no order is
/// promised), sleeps until the next is due or a new event arrives, stops on shutdown.
async fn deliver_webhooks(state: Shared, shutdown: Shutdown) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "the fake Stripe cannot deliver webhooks");
            return;
        }
    };
    let wake = Arc::clone(&lock(&state).wake);
    let mut in_flight = tokio::task::JoinSet::new();
    let stop = shutdown.requested();
    tokio::pin!(stop);
    loop {
        let (due, next) = lock(&state).take_due(Instant::now());
        for attempt in due {
            let (client, state, wake) = (client.clone(), Arc::clone(&state), Arc::clone(&wake));
            in_flight.spawn(async move {
                let answer = attempt_delivery(&client, &attempt).await;
                lock(&state).record_attempt(&attempt, answer);
                wake.notify_one();
            });
        }
        let idle = next.map_or(Duration::from_secs(3600), |next| {
            next.saturating_duration_since(Instant::now())
        });
        tokio::select! {
            () = &mut stop => break,
            () = wake.notified() => {}
            () = tokio::time::sleep(idle) => {}
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
    in_flight.abort_all();
    while in_flight.join_next().await.is_some() {}
}

/// A running fake Stripe.
#[derive(Clone)]
pub struct FakeStripe {
    url: String,
    state: Arc<Mutex<StripeState>>,
    stopper: Arc<Stopper>,
}

/// Stops the server and the delivery task when asked, or when the last handle is dropped.
struct Stopper {
    trigger: ShutdownTrigger,
    deliveries: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Stopper {
    fn drop(&mut self) {
        self.trigger.trigger();
    }
}

type Shared = Arc<Mutex<StripeState>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, StripeState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn json_response(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    (status, [("content-type", "application/json")], body).into_response()
}

fn stripe_error(status: u16, code: &str, message: &str) -> Response {
    json_response(status, error_body(status, code, message))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Every endpoint wants a secret key, as Stripe's do.
async fn require_secret_key(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let authorised = request
        .headers()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("Bearer sk_"));
    if !authorised {
        return stripe_error(401, "api_key_invalid", "Invalid API Key provided");
    }
    next.run(request).await
}

/// A creating `POST` under `key` as Stripe answers it: the stored answer replayed, else what
/// the script says (an error stored under the key, except a 429; or the object made, then
/// its answer replaced by a 5xx or garbled), else the object `create` makes (or its error).
fn create_scripted(
    state: &mut StripeState,
    key: Option<&str>,
    params: &[(String, String)],
    create: impl FnOnce(&mut Ledger) -> (u16, String),
) -> Response {
    if let Some(key) = key
        && let Some((status, body)) = state.ledger.replay(key, params)
    {
        return json_response(status, body);
    }
    let behaviour = state.script.pop_front();
    if let Some(Behaviour::Error {
        status,
        code,
        message,
    }) = &behaviour
    {
        let body = error_body(*status, code, message);
        if let Some(key) = key
            && *status != 429
        {
            state.ledger.remember(key, params, *status, &body);
        }
        return json_response(*status, body);
    }
    let (status, body) = create(&mut state.ledger);
    let (status, stored) = match behaviour {
        Some(Behaviour::ErrorAfterCreate { status: failed }) if status == 200 => (
            failed,
            error_body(failed, "api_error", "fake failure after create"),
        ),
        _ => (status, body.clone()),
    };
    if let Some(key) = key {
        state.ledger.remember(key, params, status, &stored);
    }
    match behaviour {
        Some(Behaviour::LoseResponse) => json_response(200, body[..body.len() / 2].to_owned()),
        _ => json_response(status, stored),
    }
}

fn idempotency_key(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
}

async fn create_transfer(
    State(state): State<Shared>,
    headers: HeaderMap,
    axum::Form(params): axum::Form<Vec<(String, String)>>,
) -> Response {
    let mut state = lock(&state);
    state.create_calls += 1;
    let mut made = None;
    let response = create_scripted(&mut state, idempotency_key(&headers), &params, |ledger| {
        let transfer = ledger.create_transfer(&params, now());
        made = Some(transfer.clone());
        (200, transfer.to_string())
    });
    if let Some(transfer) = made {
        state.emit("transfer.created", transfer, None);
    }
    response
}

async fn create_reversal(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    axum::Form(params): axum::Form<Vec<(String, String)>>,
) -> Response {
    // Keys are per endpoint at Stripe: a reversal's never replays a transfer's.
    let key = idempotency_key(&headers).map(|key| format!("reversal:{key}"));
    let mut state = lock(&state);
    let mut reversed = false;
    let response = create_scripted(&mut state, key.as_deref(), &params, |ledger| {
        match ledger.create_reversal(&id, &params, now()) {
            Ok(reversal) => {
                reversed = true;
                (200, reversal.to_string())
            }
            Err((status, code, message)) => (status, error_body(status, code, &message)),
        }
    });
    if reversed && let Some(transfer) = state.ledger.transfer(&id) {
        state.emit("transfer.reversed", transfer, None);
    }
    response
}

/// Whether `object`'s `created` is inside the range of `created[gte|gt|lte|lt]` in `query`.
fn created_in_range(object: &Value, query: &HashMap<String, String>) -> bool {
    let created = object["created"].as_i64().unwrap_or(0);
    let bound = |name: &str| {
        query
            .get(&format!("created[{name}]"))
            .and_then(|value| value.parse::<i64>().ok())
    };
    bound("gte").is_none_or(|at| created >= at)
        && bound("gt").is_none_or(|at| created > at)
        && bound("lte").is_none_or(|at| created <= at)
        && bound("lt").is_none_or(|at| created < at)
}

/// A `created[...]` bound that is not unix seconds: Stripe's 400.
fn bad_created_bound(query: &HashMap<String, String>) -> Option<Response> {
    query
        .iter()
        .find(|(key, value)| key.starts_with("created[") && value.parse::<i64>().is_err())
        .map(|(key, _)| {
            stripe_error(
                400,
                "parameter_invalid_integer",
                &format!("Invalid integer: {key}"),
            )
        })
}

/// One page of `all` as Stripe pages a list: `limit` (10 by default, 1 to 100) objects after
/// the one `starting_after` names.
fn paginated(all: &[Value], query: &HashMap<String, String>, url: &str) -> Response {
    let limit: usize = query
        .get("limit")
        .and_then(|limit| limit.parse().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    let start = query
        .get("starting_after")
        .and_then(|after| all.iter().position(|object| object["id"] == after.as_str()))
        .map_or(0, |position| position + 1);
    let page: Vec<Value> = all.iter().skip(start).take(limit).cloned().collect();
    let has_more = start + page.len() < all.len();
    list(page, url, has_more)
}

fn list(data: Vec<Value>, url: &str, has_more: bool) -> Response {
    axum::Json(json!({ "object": "list", "data": data, "has_more": has_more, "url": url }))
        .into_response()
}

/// `GET /v1/transfers`: newest first, by `transfer_group` and `created[gte|gt|lte|lt]`,
/// paginated. A lookup by transfer group is what [`FakeStripe::fail_next_lookup`] fails.
async fn list_transfers(
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = bad_created_bound(&query) {
        return refused;
    }
    let mut state = lock(&state);
    let group = query.get("transfer_group").map(String::as_str);
    if group.is_some() {
        state.lookup_calls += 1;
        if let Some((status, code)) = state.lookup_failures.pop_front() {
            return stripe_error(status, &code, "fake lookup failure");
        }
    } else if let Some((status, code)) = state.listing_failures.pop_front() {
        return stripe_error(status, &code, "fake listing failure");
    }
    let data: Vec<Value> = state
        .ledger
        .list_transfers(group)
        .into_iter()
        .filter(|transfer| created_in_range(transfer, &query))
        .collect();
    paginated(&data, &query, "/v1/transfers")
}

/// `GET /v1/events`: newest first, by `type`, `types[]`, `created[...]` and
/// `delivery_success`, on the platform or, with `Stripe-Account`, on a connected account;
/// paginated. Stripe keeps events for 30 days.
async fn list_events(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let query: HashMap<String, String> = pairs.iter().cloned().collect();
    if let Some(refused) = bad_created_bound(&query) {
        return refused;
    }
    let types: Vec<&str> = pairs
        .iter()
        .filter(|(key, _)| key == "types[]" || key.starts_with("types["))
        .map(|(_, value)| value.as_str())
        .collect();
    if types.len() > 20 {
        return stripe_error(
            400,
            "parameter_invalid_array",
            "types: at most 20 event types",
        );
    }
    let account = headers
        .get("stripe-account")
        .and_then(|value| value.to_str().ok());
    let delivery = query.get("delivery_success").map(|value| value == "true");
    let mut state = lock(&state);
    if let Some((status, code)) = state.listing_failures.pop_front() {
        return stripe_error(status, &code, "fake listing failure");
    }
    let oldest = now() - 30 * 24 * 3600;
    let data: Vec<Value> = state
        .events
        .iter()
        .rev()
        .filter(|stored| stored.event["account"].as_str() == account)
        .filter(|stored| stored.event["created"].as_i64().unwrap_or(0) >= oldest)
        .filter(|stored| delivery.is_none_or(|delivered| stored.delivered() == delivered))
        .filter(|stored| {
            let kind = stored.event["type"].as_str().unwrap_or_default();
            query.get("type").is_none_or(|wanted| wanted == kind)
                && (types.is_empty() || types.contains(&kind))
        })
        .filter(|stored| created_in_range(&stored.event, &query))
        .map(|stored| stored.event.clone())
        .collect();
    paginated(&data, &query, "/v1/events")
}

/// `GET /v1/transfers/{id}/reversals`: the transfer's reversals (with their metadata),
/// newest first, paginated by `limit` and `starting_after` as Stripe does.
async fn list_reversals(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut state = lock(&state);
    if let Some((status, code)) = state.reversal_listing_failures.pop_front() {
        return stripe_error(status, &code, "fake reversal listing failure");
    }
    match state.ledger.reversals_of(&id) {
        Some(all) => paginated(&all, &query, &format!("/v1/transfers/{id}/reversals")),
        None => stripe_error(
            404,
            "resource_missing",
            &format!("No such transfer: '{id}'"),
        ),
    }
}

async fn retrieve_transfer(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    match lock(&state).ledger.transfer(&id) {
        Some(transfer) => axum::Json(transfer).into_response(),
        None => stripe_error(
            404,
            "resource_missing",
            &format!("No such transfer: '{id}'"),
        ),
    }
}

async fn balance(State(state): State<Shared>) -> Response {
    let mut state = lock(&state);
    if let Some((status, code)) = state.balance_failures.pop_front() {
        return stripe_error(status, &code, "fake balance failure");
    }
    let mut balance = fixture("balance");
    balance["available"] = json!([{ "amount": state.available_cents, "currency": "usd", "source_types": { "card": state.available_cents } }]);
    balance["pending"] = json!([{ "amount": state.pending_cents, "currency": "usd", "source_types": { "card": state.pending_cents } }]);
    axum::Json(balance).into_response()
}

async fn account(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    axum::Json(lock(&state).ledger.account(&id)).into_response()
}

/// `GET /v1/balance_transactions?payout=po_...` on behalf of a connected account
/// (`Stripe-Account`), paginated with `limit` and `starting_after` as Stripe does.
async fn balance_transactions(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(account) = headers
        .get("stripe-account")
        .and_then(|value| value.to_str().ok())
    else {
        return stripe_error(
            400,
            "parameter_missing",
            "a payout's transactions are listed on its connected account (Stripe-Account)",
        );
    };
    let Some(payout) = query.get("payout") else {
        return stripe_error(400, "parameter_missing", "payout is required");
    };
    let mut state = lock(&state);
    if let Some((status, code)) = state.balance_transaction_failures.pop_front() {
        return stripe_error(status, &code, "fake balance transaction listing failure");
    }
    match state.ledger.list_balance_transactions(account, payout) {
        Ok(all) => paginated(&all, &query, "/v1/balance_transactions"),
        Err((status, code, message)) => stripe_error(status, code, &message),
    }
}

/// `GET /v1/payouts/{id}` on behalf of a connected account (`Stripe-Account`): a creator's
/// bank payout, with its `status`, `automatic` and `reconciliation_status`. Without the
/// header the platform's payouts are searched, and a connected account's is not among them.
async fn retrieve_payout(
    State(state): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let account = headers
        .get("stripe-account")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let mut state = lock(&state);
    if let Some((status, code)) = state.bank_payout_failures.pop_front() {
        return stripe_error(status, &code, "fake payout lookup failure");
    }
    match state.ledger.retrieve_bank_payout(account, &id) {
        Some(payout) => axum::Json(payout).into_response(),
        None => stripe_error(404, "resource_missing", &format!("No such payout: '{id}'")),
    }
}

/// Pays out and reconciles at once: `payout.paid` (reconciliation `in_progress`), then
/// `payout.reconciliation_completed`, both on the account. The payout after both.
fn pay_out_reconciled(state: &mut StripeState, account: &str) -> Option<Value> {
    let paid = state.ledger.pay_out(account, now())?;
    state.emit("payout.paid", paid.clone(), Some(account));
    let reconciled = state
        .ledger
        .reconcile(paid["id"].as_str().unwrap_or_default())?;
    state.emit(
        "payout.reconciliation_completed",
        reconciled.clone(),
        Some(account),
    );
    Some(reconciled)
}

/// The value of form parameter `name`.
fn form_param(params: &[(String, String)], name: &str) -> Option<String> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.clone())
}

/// Applies the settable fields of a webhook endpoint from form parameters.
fn apply_webhook_endpoint_params(endpoint: &mut Value, params: &[(String, String)]) {
    for field in ["url", "description", "api_version"] {
        if let Some(value) = form_param(params, field) {
            endpoint[field] = json!(value);
        }
    }
    if let Some(disabled) = form_param(params, "disabled") {
        endpoint["status"] = json!(if disabled == "true" {
            "disabled"
        } else {
            "enabled"
        });
    }
    let events: Vec<&String> = params
        .iter()
        .filter(|(key, _)| key.starts_with("enabled_events["))
        .map(|(_, value)| value)
        .collect();
    if !events.is_empty() {
        endpoint["enabled_events"] = json!(events);
    }
}

/// `POST /v1/webhook_endpoints`: the endpoint with its signing secret (shown only here, as
/// Stripe shows it only on creation). `connect=true` makes it a Connect endpoint
/// (`application` set), as Stripe does.
async fn create_webhook_endpoint(
    State(state): State<Shared>,
    headers: HeaderMap,
    axum::Form(params): axum::Form<Vec<(String, String)>>,
) -> Response {
    // Live mode wants https; test mode also takes http (a local gateway).
    let test_mode = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("Bearer sk_test_"));
    let acceptable =
        |url: &str| url.starts_with("https://") || (test_mode && url.starts_with("http://"));
    if form_param(&params, "url").is_none_or(|url| !acceptable(&url)) {
        return stripe_error(
            400,
            "url_invalid",
            "Invalid URL: the URL must be an https:// URL (http:// only in test mode).",
        );
    }
    let mut state = lock(&state);
    let number = state.webhook_endpoints.len() + 1;
    let mut endpoint = fixture("webhook_endpoint");
    endpoint["id"] = json!(format!("we_fake{number:06}"));
    endpoint["status"] = json!("enabled");
    endpoint["created"] = json!(now());
    endpoint["application"] = if form_param(&params, "connect").as_deref() == Some("true") {
        json!("ca_fake_platform")
    } else {
        Value::Null
    };
    endpoint["secret"] = Value::Null;
    apply_webhook_endpoint_params(&mut endpoint, &params);
    state.webhook_endpoints.push(endpoint.clone());
    let secret = format!("whsec_fake_endpoint_secret_{number}");
    if let Some(id) = endpoint["id"].as_str() {
        state.webhook_secrets.insert(id.to_owned(), secret.clone());
    }
    endpoint["secret"] = json!(secret);
    axum::Json(endpoint).into_response()
}

/// `GET /v1/webhook_endpoints`: newest first, paginated by `limit` and `starting_after`.
async fn list_webhook_endpoints(
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let all: Vec<Value> = lock(&state)
        .webhook_endpoints
        .iter()
        .rev()
        .cloned()
        .collect();
    paginated(&all, &query, "/v1/webhook_endpoints")
}

/// `GET /v1/webhook_endpoints/{id}`.
async fn retrieve_webhook_endpoint(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Response {
    match lock(&state)
        .webhook_endpoints
        .iter()
        .find(|e| e["id"] == id.as_str())
    {
        Some(endpoint) => axum::Json(endpoint.clone()).into_response(),
        None => no_such_webhook_endpoint(&id),
    }
}

/// `POST /v1/webhook_endpoints/{id}`: updates url, enabled_events, description, disabled.
async fn update_webhook_endpoint(
    State(state): State<Shared>,
    Path(id): Path<String>,
    axum::Form(params): axum::Form<Vec<(String, String)>>,
) -> Response {
    let mut state = lock(&state);
    match state
        .webhook_endpoints
        .iter_mut()
        .find(|e| e["id"] == id.as_str())
    {
        Some(endpoint) => {
            apply_webhook_endpoint_params(endpoint, &params);
            axum::Json(endpoint.clone()).into_response()
        }
        None => no_such_webhook_endpoint(&id),
    }
}

fn no_such_webhook_endpoint(id: &str) -> Response {
    stripe_error(
        404,
        "resource_missing",
        &format!("No such webhook endpoint: '{id}'"),
    )
}

/// `POST /_fake/accounts/{id}/payouts` (the fake's own control route, not Stripe's API): the
/// connected account's bank pays out what transfers left in its balance, as Stripe's payout
/// schedule would, and Stripe reconciles it: its `payout.paid` and
/// `payout.reconciliation_completed` are delivered to the Connect endpoints (as
/// [`FakeStripe::pay_out`]). 400 when there is nothing to pay out.
async fn fake_bank_payout(State(state): State<Shared>, Path(account): Path<String>) -> Response {
    match pay_out_reconciled(&mut lock(&state), &account) {
        Some(payout) => axum::Json(payout).into_response(),
        None => stripe_error(
            400,
            "balance_insufficient",
            &format!("{account} has nothing to pay out"),
        ),
    }
}

impl FakeStripe {
    /// Starts the fake on a free loopback port, on the current Tokio runtime.
    #[allow(clippy::expect_used)] // tests: a loopback port is always there
    pub async fn start() -> FakeStripe {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        Self::serve(listener).expect("an address")
    }

    /// Serves the fake on `listener` (`payouts dev fake-stripe`), on the current Tokio runtime,
    /// with its webhook deliveries.
    pub fn serve(listener: tokio::net::TcpListener) -> std::io::Result<FakeStripe> {
        let state: Shared = Arc::new(Mutex::new(StripeState {
            available_cents: 2_500_000,
            ..StripeState::default()
        }));
        let (shutdown, trigger) = Shutdown::manual();
        let router = Router::new()
            .route("/v1/transfers", post(create_transfer).get(list_transfers))
            .route("/v1/transfers/{id}", get(retrieve_transfer))
            .route(
                "/v1/transfers/{id}/reversals",
                post(create_reversal).get(list_reversals),
            )
            .route("/v1/events", get(list_events))
            .route("/v1/balance", get(balance))
            .route("/v1/balance_transactions", get(balance_transactions))
            .route("/v1/payouts/{id}", get(retrieve_payout))
            .route("/v1/accounts/{id}", get(account))
            .route(
                "/v1/webhook_endpoints",
                post(create_webhook_endpoint).get(list_webhook_endpoints),
            )
            .route(
                "/v1/webhook_endpoints/{id}",
                post(update_webhook_endpoint).get(retrieve_webhook_endpoint),
            )
            .merge(refund_routes())
            .route("/_fake/accounts/{id}/payouts", post(fake_bank_payout))
            .layer(axum::middleware::from_fn(require_secret_key))
            .with_state(Arc::clone(&state));
        let url = format!("http://{}", listener.local_addr()?);
        let server_stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(server_stop.requested())
                .await;
        });
        let deliveries = tokio::spawn(deliver_webhooks(Arc::clone(&state), shutdown));
        Ok(FakeStripe {
            url,
            state,
            stopper: Arc::new(Stopper {
                trigger,
                deliveries: Mutex::new(Some(deliveries)),
            }),
        })
    }

    /// Stops serving and delivering; returns once the delivery task has ended (attempts in
    /// flight are abandoned, as a crash of Stripe's sender would leave them: pending).
    pub async fn shutdown(&self) {
        self.stopper.trigger.trigger();
        let deliveries = self
            .stopper
            .deliveries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(deliveries) = deliveries {
            let _ = deliveries.await;
        }
    }

    /// Sets when failed deliveries are tried again (tests: short delays).
    pub fn set_retry_schedule(&self, schedule: RetrySchedule) {
        let mut state = lock(&self.state);
        state.retry_schedule = schedule;
        state.wake.notify_one();
    }

    /// Every delivery the fake made or owes, oldest event first.
    pub fn deliveries(&self) -> Vec<DeliveryReport> {
        let state = lock(&self.state);
        state
            .events
            .iter()
            .flat_map(|stored| {
                stored.deliveries.iter().map(|delivery| DeliveryReport {
                    event_id: stored.event["id"].as_str().unwrap_or_default().to_owned(),
                    event_type: stored.event["type"].as_str().unwrap_or_default().to_owned(),
                    endpoint_url: state
                        .webhook_endpoints
                        .iter()
                        .find(|endpoint| endpoint["id"] == delivery.endpoint_id.as_str())
                        .and_then(|endpoint| endpoint["url"].as_str())
                        .unwrap_or_default()
                        .to_owned(),
                    attempts: delivery.attempts,
                    delivered: delivery.state == DeliveryState::Succeeded,
                    gave_up: delivery.state == DeliveryState::GaveUp,
                    last_answer: delivery.last_answer.clone(),
                })
            })
            .collect()
    }

    /// The base URL to set as STRIPE_API_BASE.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Scripts what the next transfer creation does.
    pub fn then(&self, behaviour: Behaviour) {
        lock(&self.state).script.push_back(behaviour);
    }

    /// Shorthand for an error on the next transfer creation.
    pub fn fail_next(&self, status: u16, code: &str) {
        self.then(Behaviour::Error {
            status,
            code: code.to_owned(),
            message: format!("fake {code}"),
        });
    }

    /// The next transfer lookup (`GET /v1/transfers`) answers with this error.
    pub fn fail_next_lookup(&self, status: u16, code: &str) {
        lock(&self.state)
            .lookup_failures
            .push_back((status, code.to_owned()));
    }

    /// The next listing of a transfer's reversals answers with this error.
    pub fn fail_next_reversal_listing(&self, status: u16, code: &str) {
        lock(&self.state)
            .reversal_listing_failures
            .push_back((status, code.to_owned()));
    }

    /// Every reversal of a transfer, newest first (with its metadata).
    pub fn reversals(&self, transfer_id: &str) -> Vec<Value> {
        lock(&self.state)
            .ledger
            .reversals_of(transfer_id)
            .unwrap_or_default()
    }

    /// Every transfer made so far.
    pub fn transfers(&self) -> Vec<Value> {
        lock(&self.state).ledger.transfers().to_vec()
    }

    /// How many transfer creations were requested (replays included).
    pub fn create_calls(&self) -> usize {
        lock(&self.state).create_calls
    }

    /// How many transfer lookups were requested.
    pub fn lookup_calls(&self) -> usize {
        lock(&self.state).lookup_calls
    }

    /// The next balance read (`GET /v1/balance`) answers with this error.
    pub fn fail_next_balance(&self, status: u16, code: &str) {
        lock(&self.state)
            .balance_failures
            .push_back((status, code.to_owned()));
    }

    /// Sets the platform balance `GET /v1/balance` reports.
    pub fn set_balance(&self, available_cents: i64, pending_cents: i64) {
        let mut state = lock(&self.state);
        state.available_cents = available_cents;
        state.pending_cents = pending_cents;
    }

    /// Sets whether a connected account takes payouts (`GET /v1/accounts/{id}`).
    pub fn set_payouts_enabled(&self, account: &str, enabled: bool) {
        lock(&self.state)
            .ledger
            .set_payouts_enabled(account, enabled);
    }

    /// Reverses `cents` more of a transfer; the transfer after it.
    pub fn reverse(&self, transfer_id: &str, cents: i64) -> Option<Value> {
        let mut state = lock(&self.state);
        let transfer = state.ledger.reverse(transfer_id, cents)?;
        state.emit("transfer.reversed", transfer.clone(), None);
        Some(transfer)
    }

    /// Pays the connected account's balance out to its bank and reconciles it, as Stripe
    /// usually does soon after: `payout.paid` (reconciliation `in_progress`), then
    /// `payout.reconciliation_completed`. The bank payout object as it is after both.
    pub fn pay_out(&self, account: &str) -> Option<Value> {
        pay_out_reconciled(&mut lock(&self.state), account)
    }

    /// Pays the connected account's balance out to its bank (`payout.paid`) without
    /// reconciling it yet: its balance transactions are listed only partially until
    /// [`FakeStripe::reconcile`]. The bank payout object.
    pub fn pay_out_unreconciled(&self, account: &str) -> Option<Value> {
        let mut state = lock(&self.state);
        let payout = state.ledger.pay_out(account, now())?;
        state.emit("payout.paid", payout.clone(), Some(account));
        Some(payout)
    }

    /// The reconciliation of a bank payout completes: `payout.reconciliation_completed` on
    /// its connected account. The bank payout object after it.
    pub fn reconcile(&self, account: &str, bank_payout_id: &str) -> Option<Value> {
        let mut state = lock(&self.state);
        let payout = state.ledger.reconcile(bank_payout_id)?;
        state.emit(
            "payout.reconciliation_completed",
            payout.clone(),
            Some(account),
        );
        Some(payout)
    }

    /// The connected account pays its balance out by hand (a manual payout, `automatic:
    /// false`, `reconciliation_status: not_applicable`): `payout.paid`. The bank payout.
    pub fn pay_out_manually(&self, account: &str) -> Option<Value> {
        let mut state = lock(&self.state);
        let payout = state.ledger.pay_out_manually(account, now())?;
        state.emit("payout.paid", payout.clone(), Some(account));
        Some(payout)
    }

    /// A bank payout fails (also after it was paid): `payout.failed`. The bank payout.
    pub fn fail_bank_payout(
        &self,
        account: &str,
        bank_payout_id: &str,
        code: &str,
    ) -> Option<Value> {
        let mut state = lock(&self.state);
        let payout = state.ledger.fail_bank_payout(bank_payout_id, code)?;
        state.emit("payout.failed", payout.clone(), Some(account));
        Some(payout)
    }

    /// The next `GET /v1/payouts/{id}` answers with this error.
    pub fn fail_next_bank_payout_read(&self, status: u16, code: &str) {
        lock(&self.state)
            .bank_payout_failures
            .push_back((status, code.to_owned()));
    }

    /// The next `GET /v1/balance_transactions` answers with this error.
    pub fn fail_next_balance_transactions(&self, status: u16, code: &str) {
        lock(&self.state)
            .balance_transaction_failures
            .push_back((status, code.to_owned()));
    }

    /// The next listing (transfers by date, events) answers with this error.
    pub fn fail_next_listing(&self, status: u16, code: &str) {
        lock(&self.state)
            .listing_failures
            .push_back((status, code.to_owned()));
    }

    /// Holds `event` (its `account` names a connected account's event) as Stripe would,
    /// listed with whether its deliveries succeeded; the fake does not deliver it.
    pub fn record_event(&self, event: Value, delivered: bool) {
        lock(&self.state).events.push(StoredEvent {
            event,
            listed_as_delivered: Some(delivered),
            deliveries: Vec::new(),
        });
    }

    /// Every event held, oldest first.
    pub fn events(&self) -> Vec<Value> {
        lock(&self.state)
            .events
            .iter()
            .map(|stored| stored.event.clone())
            .collect()
    }

    /// Makes a transfer as someone else would (the dashboard, another system): no
    /// idempotency key, the metadata given. The transfer.
    pub fn make_transfer(&self, cents: i64, destination: &str, metadata: &[(&str, &str)]) -> Value {
        let mut params = vec![
            ("amount".to_owned(), cents.to_string()),
            ("currency".to_owned(), "usd".to_owned()),
            ("destination".to_owned(), destination.to_owned()),
        ];
        params.extend(
            metadata
                .iter()
                .map(|(key, value)| (format!("metadata[{key}]"), (*value).to_owned())),
        );
        let mut state = lock(&self.state);
        let transfer = state.ledger.create_transfer(&params, now());
        state.emit("transfer.created", transfer.clone(), None);
        transfer
    }

    /// Changes a transfer in place (a test's way to make Stripe's books differ from ours).
    pub fn edit_transfer(&self, transfer_id: &str, edit: impl FnOnce(&mut Value)) -> bool {
        lock(&self.state).ledger.edit_transfer(transfer_id, edit)
    }

    /// Forgets a transfer (as if it had never been made).
    pub fn remove_transfer(&self, transfer_id: &str) -> bool {
        lock(&self.state).ledger.remove_transfer(transfer_id)
    }

    /// Forgets every idempotency key (Stripe prunes them after 24 hours).
    pub fn forget_idempotency_keys(&self) {
        lock(&self.state).ledger.forget_replies();
    }
}

// Charges and refunds: a supporter's payment refunded from the Dashboard (or the API), its
// refunds listed by charge, a refund scripted to fail with either behaviour of the charge's
// `amount_refunded` (https://docs.stripe.com/api/refunds/object,
// https://docs.stripe.com/api/refunds/list, https://docs.stripe.com/refunds#failed-refunds).

fn refund_routes() -> Router<Shared> {
    Router::new()
        .route("/v1/charges/{id}", get(retrieve_charge))
        .route("/v1/refunds", post(create_refund).get(list_refunds))
        .route("/v1/refunds/{id}", get(retrieve_refund))
}

impl StripeState {
    /// The events of a new refund: `refund.created` and `charge.refunded` (the charge as
    /// current API versions render it, without its refunds).
    fn emit_refund_created(&mut self, refund: Value, charge: Value) {
        self.emit("refund.created", refund, None);
        self.emit("charge.refunded", charge, None);
    }

    /// The events of a refund's new status: `refund.updated` and `charge.refund.updated`, and
    /// `refund.failed` when it failed.
    fn emit_refund_updated(&mut self, refund: &Value) {
        self.emit("refund.updated", refund.clone(), None);
        self.emit("charge.refund.updated", refund.clone(), None);
        if refund["status"] == "failed" {
            self.emit("refund.failed", refund.clone(), None);
        }
    }
}

async fn retrieve_charge(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    match lock(&state).ledger.charge(&id) {
        Some(charge) => axum::Json(charge).into_response(),
        None => stripe_error(404, "resource_missing", &format!("No such charge: '{id}'")),
    }
}

async fn retrieve_refund(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    match lock(&state).ledger.refund(&id) {
        Some(refund) => axum::Json(refund).into_response(),
        None => stripe_error(404, "resource_missing", &format!("No such refund: '{id}'")),
    }
}

/// `POST /v1/refunds` (`charge`, optional `amount`): a succeeded refund, replayed under its
/// `Idempotency-Key`.
async fn create_refund(
    State(state): State<Shared>,
    headers: HeaderMap,
    axum::Form(params): axum::Form<Vec<(String, String)>>,
) -> Response {
    let key = idempotency_key(&headers).map(|key| format!("refund:{key}"));
    let mut state = lock(&state);
    if let Some(key) = &key
        && let Some((status, body)) = state.ledger.replay(key, &params)
    {
        return json_response(status, body);
    }
    let Some(charge_id) = form_param(&params, "charge") else {
        return stripe_error(400, "parameter_missing", "Missing required param: charge.");
    };
    let cents = match form_param(&params, "amount").map(|amount| amount.parse::<i64>()) {
        None => None,
        Some(Ok(cents)) => Some(cents),
        Some(Err(_)) => {
            return stripe_error(400, "parameter_invalid_integer", "Invalid integer: amount");
        }
    };
    let (status, body) = match state
        .ledger
        .create_refund(&charge_id, cents, "succeeded", now())
    {
        Ok((refund, charge)) => {
            let body = refund.to_string();
            state.emit_refund_created(refund, charge);
            (200, body)
        }
        Err((status, code, message)) => (status, error_body(status, code, &message)),
    };
    if let Some(key) = &key {
        state.ledger.remember(key, &params, status, &body);
    }
    json_response(status, body)
}

/// `GET /v1/refunds?charge=ch_...`: newest first, paginated by `limit` and `starting_after`.
async fn list_refunds(
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut state = lock(&state);
    state.refund_list_calls += 1;
    if let Some((status, code)) = state.refund_list_failures.pop_front() {
        return stripe_error(status, &code, "fake refund list failure");
    }
    let charge = query.get("charge").map(String::as_str);
    match state.ledger.list_refunds(charge) {
        Some(all) => paginated(&all, &query, "/v1/refunds"),
        None => stripe_error(
            404,
            "resource_missing",
            &format!("No such charge: '{}'", charge.unwrap_or_default()),
        ),
    }
}

impl FakeStripe {
    /// A supporter's payment of `cents` (USD) to the platform: the charge.
    pub fn make_charge(&self, cents: i64) -> Value {
        lock(&self.state).ledger.create_charge(cents, "usd", now())
    }

    /// [`FakeStripe::make_charge`] under a given id (tests that name their charges).
    pub fn make_charge_as(&self, charge_id: &str, cents: i64) -> Value {
        lock(&self.state)
            .ledger
            .create_charge_as(charge_id, cents, "usd", now())
    }

    /// A charge as Stripe holds it now.
    pub fn charge(&self, charge_id: &str) -> Option<Value> {
        lock(&self.state).ledger.charge(charge_id)
    }

    /// Refunds `cents` of a charge as someone would from the Dashboard, the refund in
    /// `status` ("succeeded", "pending", "requires_action"): the refund (`refund.created` and
    /// `charge.refunded` are emitted). None when Stripe would refuse it.
    pub fn refund(&self, charge_id: &str, cents: i64, status: &str) -> Option<Value> {
        let mut state = lock(&self.state);
        let (refund, charge) = state
            .ledger
            .create_refund(charge_id, Some(cents), status, now())
            .ok()?;
        state.emit_refund_created(refund.clone(), charge);
        Some(refund)
    }

    /// A refund moves to `status` ("succeeded", "failed", "canceled"): the refund after it
    /// (`refund.updated`, `charge.refund.updated` and, failed, `refund.failed` are emitted).
    pub fn set_refund_status(&self, refund_id: &str, status: &str) -> Option<Value> {
        let mut state = lock(&self.state);
        let (refund, _) = state.ledger.set_refund_status(refund_id, status)?;
        state.emit_refund_updated(&refund);
        Some(refund)
    }

    /// A refund fails (as a card closed since the payment makes it fail).
    pub fn fail_refund(&self, refund_id: &str) -> Option<Value> {
        self.set_refund_status(refund_id, "failed")
    }

    /// What a refund's failure does to its charge's `amount_refunded` from now on.
    pub fn set_amount_refunded_on_failure(
        &self,
        behaviour: super::ledger::AmountRefundedOnFailure,
    ) {
        lock(&self.state)
            .ledger
            .set_amount_refunded_on_failure(behaviour);
    }

    /// The next refund list (`GET /v1/refunds`) answers with this error.
    pub fn fail_next_refund_list(&self, status: u16, code: &str) {
        lock(&self.state)
            .refund_list_failures
            .push_back((status, code.to_owned()));
    }

    /// How many refund lists were asked for (failed ones included).
    pub fn refund_list_calls(&self) -> usize {
        lock(&self.state).refund_list_calls
    }
}
