//! A fake Stripe API on loopback for tests: the endpoints Payouts calls, answering with the
//! shapes of Stripe's fixtures, honouring `Idempotency-Key` as Stripe does (the first result
//! for a key is replayed; the same key with other parameters is an error), and programmable
//! to fail: error codes, 429, 5xx, or a response lost after the transfer was made.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::stripe::fixture;

/// What the next `POST /v1/transfers` does instead of succeeding.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Answer with a Stripe error: status, `error.code`, message. Nothing is created.
    Error {
        status: u16,
        code: String,
        message: String,
    },
    /// Create the transfer (and remember it under the key), then answer with a garbled body,
    /// as if the response was lost on the way.
    LoseResponse,
}

/// The first answer Stripe gave under an idempotency key, with the parameters it was for.
struct Reply {
    params: Vec<(String, String)>,
    status: u16,
    body: String,
}

#[derive(Default)]
struct StripeState {
    transfers: Vec<Value>,
    replies: HashMap<String, Reply>,
    script: VecDeque<Behaviour>,
    create_calls: usize,
    available_cents: i64,
    pending_cents: i64,
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

fn stripe_error(status: u16, kind: &str, code: &str, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({ "error": { "type": kind, "code": code, "message": message } });
    (status, axum::Json(body)).into_response()
}

fn json_response(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    (status, [("content-type", "application/json")], body).into_response()
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
        return stripe_error(
            401,
            "invalid_request_error",
            "api_key_invalid",
            "Invalid API Key provided",
        );
    }
    next.run(request).await
}

async fn create_transfer(
    State(state): State<Shared>,
    headers: HeaderMap,
    axum::Form(params): axum::Form<Vec<(String, String)>>,
) -> Response {
    let key = headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let mut state = lock(&state);
    state.create_calls += 1;
    if let Some(key) = &key
        && let Some(reply) = state.replies.get(key)
    {
        if reply.params != params {
            return stripe_error(
                400,
                "idempotency_error",
                "idempotency_key_in_use",
                "Keys for idempotent requests can only be used with the same parameters they were first used with.",
            );
        }
        return json_response(reply.status, reply.body.clone());
    }
    let behaviour = state.script.pop_front();
    if let Some(Behaviour::Error {
        status,
        code,
        message,
    }) = &behaviour
    {
        let kind = if *status >= 500 {
            "api_error"
        } else {
            "invalid_request_error"
        };
        let response =
            json!({ "error": { "type": kind, "code": code, "message": message } }).to_string();
        if let Some(key) = key {
            // Stripe stores the first result for a key, errors included.
            state.replies.insert(
                key,
                Reply {
                    params,
                    status: *status,
                    body: response.clone(),
                },
            );
        }
        return json_response(*status, response);
    }
    let param = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let mut transfer = fixture("transfer");
    let id = format!("tr_fake_{}", state.transfers.len() + 1);
    transfer["id"] = json!(id);
    transfer["amount"] = json!(
        param("amount")
            .and_then(|amount| amount.parse::<i64>().ok())
            .unwrap_or(0)
    );
    transfer["currency"] = json!(param("currency").unwrap_or_default());
    transfer["destination"] = json!(param("destination").unwrap_or_default());
    transfer["transfer_group"] = param("transfer_group").map_or(Value::Null, |group| json!(group));
    transfer["description"] = param("description").map_or(Value::Null, |text| json!(text));
    transfer["created"] = json!(chrono::Utc::now().timestamp());
    transfer["reversals"]["url"] = json!(format!("/v1/transfers/{id}/reversals"));
    let metadata: serde_json::Map<String, Value> = params
        .iter()
        .filter_map(|(key, value)| {
            let name = key.strip_prefix("metadata[")?.strip_suffix(']')?;
            Some((name.to_owned(), json!(value)))
        })
        .collect();
    transfer["metadata"] = Value::Object(metadata);
    let body = transfer.to_string();
    state.transfers.push(transfer);
    if let Some(key) = key {
        state.replies.insert(
            key,
            Reply {
                params,
                status: 200,
                body: body.clone(),
            },
        );
    }
    match behaviour {
        Some(Behaviour::LoseResponse) => json_response(200, body[..body.len() / 2].to_owned()),
        _ => json_response(200, body),
    }
}

async fn list_transfers(
    State(state): State<Shared>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let state = lock(&state);
    let data: Vec<&Value> = state
        .transfers
        .iter()
        .filter(|transfer| {
            query
                .get("transfer_group")
                .is_none_or(|group| transfer["transfer_group"].as_str() == Some(group.as_str()))
        })
        .collect();
    axum::Json(json!({ "object": "list", "data": data, "has_more": false, "url": "/v1/transfers" }))
        .into_response()
}

async fn retrieve_transfer(State(state): State<Shared>, Path(id): Path<String>) -> Response {
    let state = lock(&state);
    match state
        .transfers
        .iter()
        .find(|transfer| transfer["id"] == id.as_str())
    {
        Some(transfer) => axum::Json(transfer.clone()).into_response(),
        None => stripe_error(
            404,
            "invalid_request_error",
            "resource_missing",
            &format!("No such transfer: '{id}'"),
        ),
    }
}

async fn balance(State(state): State<Shared>) -> Response {
    let state = lock(&state);
    let mut balance = fixture("balance");
    balance["available"] = json!([{ "amount": state.available_cents, "currency": "usd", "source_types": { "card": state.available_cents } }]);
    balance["pending"] = json!([{ "amount": state.pending_cents, "currency": "usd", "source_types": { "card": state.pending_cents } }]);
    axum::Json(balance).into_response()
}

async fn account(Path(id): Path<String>) -> Response {
    let mut account = fixture("account");
    account["id"] = json!(id);
    axum::Json(account).into_response()
}

async fn create_webhook_endpoint(
    axum::Form(params): axum::Form<Vec<(String, String)>>,
) -> Response {
    let mut endpoint = fixture("webhook_endpoint");
    let param = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    endpoint["url"] = json!(param("url").unwrap_or_default());
    let events: Vec<&String> = params
        .iter()
        .filter(|(key, _)| key.starts_with("enabled_events["))
        .map(|(_, value)| value)
        .collect();
    endpoint["enabled_events"] = json!(events);
    endpoint["secret"] = json!("whsec_fake_endpoint_secret");
    axum::Json(endpoint).into_response()
}

async fn list_webhook_endpoints() -> Response {
    axum::Json(json!({ "object": "list", "data": [fixture("webhook_endpoint")], "has_more": false, "url": "/v1/webhook_endpoints" }))
        .into_response()
}

impl FakeStripe {
    /// Starts the fake on a free loopback port, on the current Tokio runtime.
    pub async fn start() -> FakeStripe {
        let state: Shared = Arc::new(Mutex::new(StripeState {
            available_cents: 2_500_000,
            ..StripeState::default()
        }));
        let router = Router::new()
            .route("/v1/transfers", post(create_transfer).get(list_transfers))
            .route("/v1/transfers/{id}", get(retrieve_transfer))
            .route("/v1/balance", get(balance))
            .route("/v1/accounts/{id}", get(account))
            .route(
                "/v1/webhook_endpoints",
                post(create_webhook_endpoint).get(list_webhook_endpoints),
            )
            .layer(axum::middleware::from_fn(require_secret_key))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        FakeStripe { url, state }
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

    /// Every transfer made so far.
    pub fn transfers(&self) -> Vec<Value> {
        lock(&self.state).transfers.clone()
    }

    /// How many transfer creations were requested (replays included).
    pub fn create_calls(&self) -> usize {
        lock(&self.state).create_calls
    }

    /// Sets the platform balance `GET /v1/balance` reports.
    pub fn set_balance(&self, available_cents: i64, pending_cents: i64) {
        let mut state = lock(&self.state);
        state.available_cents = available_cents;
        state.pending_cents = pending_cents;
    }
}
