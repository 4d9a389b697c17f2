//! A fake Stripe API on loopback for tests: the endpoints Payouts calls, answering with the
//! shapes of Stripe's fixtures, honouring `Idempotency-Key` as Stripe does (the first result
//! for a key is replayed, errors included; the same key with other parameters is an
//! error), and programmable to fail: error codes, 429, 5xx before or after the transfer is
//! made, a response lost after the transfer was made, failed lookups. Its state is a
//! [`Ledger`], the same model the deterministic simulation uses.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::fixture;
use super::ledger::{Ledger, error_body};

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
    /// Failures of the next `GET /v1/transfers/{id}/reversals`.
    reversal_listing_failures: VecDeque<(u16, String)>,
    create_calls: usize,
    lookup_calls: usize,
    available_cents: i64,
    pending_cents: i64,
    /// Webhook endpoints, in creation order (the list answers newest first, as Stripe does).
    webhook_endpoints: Vec<Value>,
    /// Events, in creation order, with whether every delivery of each succeeded.
    events: Vec<StoredEvent>,
    event_counter: u64,
}

/// An event the fake holds, as `GET /v1/events` lists it.
#[derive(Debug, Clone)]
struct StoredEvent {
    event: Value,
    delivered: bool,
}

impl StripeState {
    /// Records an event about `object` (undelivered: the fake delivers nothing itself), on
    /// a connected account when `account` is given.
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
        self.events.push(StoredEvent {
            event,
            delivered: false,
        });
    }
}

/// A running fake Stripe.
#[derive(Clone)]
pub struct FakeStripe {
    url: String,
    state: Arc<Mutex<StripeState>>,
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
        .filter(|stored| delivery.is_none_or(|delivered| stored.delivered == delivered))
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
    let Some(all) = lock(&state).ledger.balance_transactions(account, payout) else {
        return stripe_error(
            404,
            "resource_missing",
            &format!("No such payout: '{payout}'"),
        );
    };
    paginated(&all, &query, "/v1/balance_transactions")
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
    endpoint["secret"] = json!(format!("whsec_fake_endpoint_secret_{number}"));
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

impl FakeStripe {
    /// Starts the fake on a free loopback port, on the current Tokio runtime.
    #[allow(clippy::expect_used)] // tests: a loopback port is always there
    pub async fn start() -> FakeStripe {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        Self::serve(listener).expect("an address")
    }

    /// Serves the fake on `listener` (`payouts dev fake-stripe`), on the current Tokio runtime.
    pub fn serve(listener: tokio::net::TcpListener) -> std::io::Result<FakeStripe> {
        let state: Shared = Arc::new(Mutex::new(StripeState {
            available_cents: 2_500_000,
            ..StripeState::default()
        }));
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
            .route("/v1/accounts/{id}", get(account))
            .route(
                "/v1/webhook_endpoints",
                post(create_webhook_endpoint).get(list_webhook_endpoints),
            )
            .route(
                "/v1/webhook_endpoints/{id}",
                post(update_webhook_endpoint).get(retrieve_webhook_endpoint),
            )
            .layer(axum::middleware::from_fn(require_secret_key))
            .with_state(Arc::clone(&state));
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(FakeStripe { url, state })
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

    /// Pays the connected account's balance out to its bank: the bank payout object.
    pub fn pay_out(&self, account: &str) -> Option<Value> {
        let mut state = lock(&self.state);
        let payout = state.ledger.pay_out(account, now())?;
        state.emit("payout.paid", payout.clone(), Some(account));
        Some(payout)
    }

    /// The next listing (transfers by date, events) answers with this error.
    pub fn fail_next_listing(&self, status: u16, code: &str) {
        lock(&self.state)
            .listing_failures
            .push_back((status, code.to_owned()));
    }

    /// Holds `event` (its `account` names a connected account's event) as Stripe would,
    /// with whether its deliveries succeeded.
    pub fn record_event(&self, event: Value, delivered: bool) {
        lock(&self.state)
            .events
            .push(StoredEvent { event, delivered });
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
