//! Escalation's "one creator's earnings wiped by refunds and disputes" (design §10): played
//! with the fake Stripe's own refund and charge events. The alert goes out when the last
//! payable earning of a creator is refunded, once however often the events arrive, with
//! what was taken back (the escalation policy's level reads it), and never for a creator
//! who still has something payable.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use payouts_disputes::cases::Cases;
use payouts_disputes::domain::Allocation;
use payouts_disputes::earnings::Ledger;
use payouts_disputes::ports::{Message, NoticesPort, StripeRefundsClient};
use payouts_disputes::store::{MemoryAllocations, MemoryChargeCases, MemoryEarningsBooks};
use payouts_runtime::stripe_dev::fake::FakeStripe;
use payouts_runtime::{Money, Secret, ServiceError};
use serde_json::Value;

/// Every alert the service raised, keyed as the notifications service dedupes them.
#[derive(Default)]
struct Alerts(Mutex<Vec<Message>>);

impl Alerts {
    fn wiped(&self) -> Vec<Message> {
        let mut seen = std::collections::BTreeMap::new();
        for message in self.0.lock().unwrap().iter() {
            if message.kind == "creator_earnings_wiped" {
                seen.insert(message.key.clone(), message.clone());
            }
        }
        seen.into_values().collect()
    }
}

#[async_trait::async_trait]
impl NoticesPort for Alerts {
    async fn alert(&self, message: &Message) -> Result<(), ServiceError> {
        self.0.lock().unwrap().push(message.clone());
        Ok(())
    }

    async fn notify_user(&self, _: &str, _: &Message) -> Result<(), ServiceError> {
        Ok(())
    }
}

async fn apply(service: &Cases, events: &[Value]) {
    for event in events {
        let event_type = event["type"].as_str().unwrap();
        if !payouts_disputes::charges::handles(event_type) {
            continue;
        }
        let created =
            DateTime::<Utc>::from_timestamp(event["created"].as_i64().unwrap(), 0).unwrap();
        service
            .handle(
                event["id"].as_str().unwrap(),
                event_type,
                created,
                &event["data"]["object"],
            )
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn the_last_payable_earning_refunded_alerts_once_with_what_was_taken() {
    let stripe = FakeStripe::start().await;
    let alerts = Arc::new(Alerts::default());
    let clock: Arc<dyn payouts_runtime::Clock> = Arc::new(payouts_runtime::clock::SystemClock);
    let service = Cases {
        ledger: Arc::new(Ledger {
            allocations: Arc::new(MemoryAllocations::default()),
            books: Arc::new(MemoryEarningsBooks::default()),
            clock,
        }),
        cases: Arc::new(MemoryChargeCases::default()),
        notices: alerts.clone(),
        refunds: Some(Arc::new(
            StripeRefundsClient::new(&Secret::new("sk_test_fake"), stripe.url()).unwrap(),
        )),
    };
    // creator_1 earned from two charges; creator_2 shares the second one.
    let first = stripe.make_charge(10_000);
    let second = stripe.make_charge(20_000);
    let first = first["id"].as_str().unwrap().to_owned();
    let second = second["id"].as_str().unwrap().to_owned();
    for (id, user, charge, cents) in [
        ("alloc_1", "creator_1", &first, 10_000),
        ("alloc_2", "creator_1", &second, 5_000),
        ("alloc_3", "creator_2", &second, 15_000),
    ] {
        let credit =
            Allocation::credit(id, user, charge, "payer_1", Money::usd(cents), Utc::now()).unwrap();
        service.record(&credit).await.unwrap();
    }

    // The first charge refunded in full: creator_1 still has $50.00 payable. No alert.
    stripe.refund(&first, 10_000, "succeeded").unwrap();
    apply(&service, &stripe.events()).await;
    assert!(alerts.wiped().is_empty(), "{:?}", alerts.wiped());

    // Half the second: creator_1 keeps $25.00, creator_2 $75.00. No alert.
    stripe.refund(&second, 10_000, "succeeded").unwrap();
    apply(&service, &stripe.events()).await;
    assert!(alerts.wiped().is_empty(), "{:?}", alerts.wiped());

    // The rest of the second: both wiped, each alerted once, every event delivered twice.
    stripe.refund(&second, 10_000, "succeeded").unwrap();
    let events = stripe.events();
    apply(&service, &events).await;
    apply(&service, &events).await;
    let wiped = alerts.wiped();
    let users: Vec<(String, i64)> = wiped
        .iter()
        .map(|message| {
            let data: Value = serde_json::from_str(&message.data_json).unwrap();
            (
                data["affectedUserId"].as_str().unwrap().to_owned(),
                data["wipedCents"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        users,
        [
            ("creator_1".to_owned(), 15_000),
            ("creator_2".to_owned(), 15_000)
        ],
        "{wiped:?}"
    );
    let raised = alerts
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|message| message.kind == "creator_earnings_wiped")
        .count();
    assert_eq!(
        raised, 2,
        "each wipe sent once (a resend would reuse its key)"
    );
}
