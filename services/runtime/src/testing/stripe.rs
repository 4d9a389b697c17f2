//! Stripe as tests see it: events built from Stripe's own fixtures
//! (`tests/fixtures/stripe/fixtures3.json`) and signed the way Stripe signs them.

use std::sync::OnceLock;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

static FIXTURES: OnceLock<Value> = OnceLock::new();

/// One canonical Stripe object by its type name ("transfer", "charge", "dispute", ...).
pub fn fixture(object: &str) -> Value {
    let fixtures = FIXTURES.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/stripe/fixtures3.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("cannot read {path:?}: {error}"));
        serde_json::from_str(&text).unwrap_or_else(|error| panic!("{path:?} is not JSON: {error}"))
    });
    fixtures["resources"][object].clone()
}

/// A Stripe event of `event_type` whose `data.object` is the fixture `object`.
pub fn event(id: &str, event_type: &str, object: &str) -> Value {
    let mut event = fixture("event");
    event["id"] = json!(id);
    event["type"] = json!(event_type);
    event["created"] = json!(chrono::Utc::now().timestamp());
    event["api_version"] = json!("2024-12-18.acacia");
    event["pending_webhooks"] = json!(1);
    event["data"] = json!({ "object": fixture(object) });
    event
}

/// The `Stripe-Signature` header Stripe would send for `payload` signed with `secret` at
/// `timestamp` (unix seconds).
pub fn signature_header(payload: &[u8], secret: &str, timestamp: i64) -> String {
    format!("t={timestamp},v1={}", sign(payload, secret, timestamp))
}

/// hex(HMAC-SHA256(secret, "<timestamp>.<payload>")).
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(payload);
    hex::encode(mac.finalize().into_bytes())
}
