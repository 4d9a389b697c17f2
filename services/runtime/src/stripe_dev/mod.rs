//! Stripe for development and tests (feature `fake-stripe`): Stripe's own fixtures
//! (`tests/fixtures/stripe/fixtures3.json`, compiled in), events built from them and signed
//! the way Stripe signs them, and a fake Stripe API ([`fake`]) over a [`ledger`] model.
//! `payouts dev fake-stripe` runs the fake as a process; `payouts stripe trigger` sends the
//! events.

pub mod fake;
pub mod ledger;

use std::sync::OnceLock;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// Stripe's fixtures, one canonical object of each type (MIT, see the LICENSE beside them).
const FIXTURES_JSON: &str = include_str!("../../../../tests/fixtures/stripe/fixtures3.json");

static FIXTURES: OnceLock<Value> = OnceLock::new();

/// One canonical Stripe object by its type name ("transfer", "charge", "dispute", ...).
pub fn fixture(object: &str) -> Value {
    // A unit test proves the compiled-in text parses; `Null` is never seen.
    let fixtures =
        FIXTURES.get_or_init(|| serde_json::from_str(FIXTURES_JSON).unwrap_or(Value::Null));
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
    // HMAC takes a key of any length: `new_from_slice` cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(payload);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_compiled_in_fixtures_hold_every_object_the_fakes_build() {
        for object in [
            "event",
            "transfer",
            "transfer_reversal",
            "payout",
            "account",
            "charge",
            "dispute",
            "refund",
            "balance",
            "webhook_endpoint",
            "invoice",
            "subscription",
            "checkout.session",
        ] {
            assert!(super::fixture(object).is_object(), "no fixture {object}");
        }
    }
}
