//! The disputes service against the fake Stripe: refunds read from Stripe's refund list (every
//! page, failures classified), and defect 4 of issue 21 played by Stripe's own events, with
//! either behaviour of a charge's `amount_refunded` when a refund fails; a refund whose charge
//! no event carried, shared out once the charge is read (`GET /v1/charges/{id}`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

use std::sync::Arc;

use chrono::{DateTime, Utc};
use payouts_disputes::cases::Cases;
use payouts_disputes::domain::Allocation;
use payouts_disputes::earnings::Ledger;
use payouts_disputes::ports::{Message, NoticesPort, StripeRefunds, StripeRefundsClient};
use payouts_disputes::store::{MemoryAllocations, MemoryChargeCases, MemoryEarningsBooks};
use payouts_runtime::stripe_dev::fake::FakeStripe;
use payouts_runtime::stripe_dev::ledger::AmountRefundedOnFailure;
use payouts_runtime::{Currency, ErrorKind, Money, Secret, ServiceError};
use serde_json::Value;

struct NoNotices;

#[async_trait::async_trait]
impl NoticesPort for NoNotices {
    async fn alert(&self, _: &Message) -> Result<(), ServiceError> {
        Ok(())
    }

    async fn notify_user(&self, _: &str, _: &Message) -> Result<(), ServiceError> {
        Ok(())
    }
}

fn client(stripe: &FakeStripe) -> StripeRefundsClient {
    StripeRefundsClient::new(&Secret::new("sk_test_fake"), stripe.url()).unwrap()
}

fn cases(stripe: &FakeStripe) -> Cases {
    let clock: Arc<dyn payouts_runtime::Clock> = Arc::new(payouts_runtime::clock::SystemClock);
    Cases {
        ledger: Arc::new(Ledger {
            allocations: Arc::new(MemoryAllocations::default()),
            books: Arc::new(MemoryEarningsBooks::default()),
            clock,
        }),
        cases: Arc::new(MemoryChargeCases::default()),
        notices: Arc::new(NoNotices),
        refunds: Some(Arc::new(client(stripe))),
    }
}

#[tokio::test]
async fn a_charges_refunds_are_read_from_every_page_and_failures_are_never_a_no() {
    let stripe = FakeStripe::start().await;
    let charge = stripe.make_charge(500);
    let charge_id = charge["id"].as_str().unwrap();
    let mut failed = 0;
    for i in 0..150 {
        let refund = stripe.refund(charge_id, 1, "succeeded").unwrap();
        if i % 3 == 0 {
            stripe.fail_refund(refund["id"].as_str().unwrap()).unwrap();
            failed += 1;
        }
    }
    let other = stripe.make_charge(300);
    stripe
        .refund(other["id"].as_str().unwrap(), 300, "pending")
        .unwrap();
    let listed = client(&stripe).refunds_of(charge_id).await.unwrap();
    assert_eq!(listed.len(), 150, "two pages of 100");
    assert_eq!(stripe.refund_list_calls(), 2);
    assert!(listed.iter().all(|refund| refund.charge_id == charge_id));
    assert_eq!(
        listed.iter().filter(|refund| refund.failed()).count(),
        failed
    );
    let mut ids: Vec<&str> = listed.iter().map(|refund| refund.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 150, "no refund twice across pages");

    for (status, code, kind) in [
        (500, "api_error", ErrorKind::Unavailable),
        (429, "rate_limit", ErrorKind::Unavailable),
        // Our key revoked or without the permission: fixed by us, never a "no".
        (401, "api_key_expired", ErrorKind::Unavailable),
        (403, "secret_key_required", ErrorKind::Unavailable),
        (404, "resource_missing", ErrorKind::FailedPrecondition),
    ] {
        stripe.fail_next_refund_list(status, code);
        let error = client(&stripe).refunds_of(charge_id).await.unwrap_err();
        assert_eq!(error.kind(), kind, "{status} {code}");
    }
    let error = client(&stripe).refunds_of("ch_unknown").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::FailedPrecondition);
}

/// Applies the fake's events (refunds and charges) in `order` to the service.
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

/// Defect 4: refund A of 100 fails, then refund B of 100 succeeds, on a charge of 1000 that
/// funded one creator's 1000. Whatever Stripe does to `amount_refunded`, in the order the
/// events were made, backwards, and each twice, the creator keeps 900.
#[tokio::test]
async fn a_failed_refund_then_a_successful_one_takes_the_second_against_the_fake_stripe() {
    for behaviour in [
        AmountRefundedOnFailure::Stays,
        AmountRefundedOnFailure::Lowered,
    ] {
        let stripe = FakeStripe::start().await;
        stripe.set_amount_refunded_on_failure(behaviour);
        let charge = stripe.make_charge(1000);
        let charge_id = charge["id"].as_str().unwrap().to_owned();
        let a = stripe.refund(&charge_id, 100, "pending").unwrap();
        stripe.fail_refund(a["id"].as_str().unwrap()).unwrap();
        stripe.refund(&charge_id, 100, "succeeded").unwrap();
        let amount_refunded = stripe.charge(&charge_id).unwrap()["amount_refunded"]
            .as_i64()
            .unwrap();
        let expected = match behaviour {
            AmountRefundedOnFailure::Stays => 200,
            AmountRefundedOnFailure::Lowered => 100,
        };
        assert_eq!(amount_refunded, expected, "{behaviour:?}");
        let events = stripe.events();
        let backwards: Vec<Value> = events.iter().rev().cloned().collect();
        let twice: Vec<Value> = events.iter().flat_map(|e| [e.clone(), e.clone()]).collect();
        for (name, order) in [
            ("made", &events),
            ("backwards", &backwards),
            ("twice", &twice),
        ] {
            let service = cases(&stripe);
            let credit = Allocation::credit(
                "alloc_1",
                "creator_1",
                &charge_id,
                "payer_1",
                Money::usd(1000),
                Utc::now(),
            )
            .unwrap();
            service.record(&credit).await.unwrap();
            apply(&service, order).await;
            let earnings = service
                .ledger
                .earnings("creator_1", &Currency::usd())
                .await
                .unwrap();
            assert_eq!(earnings.active, Money::usd(900), "{behaviour:?} {name}");
            assert_eq!(earnings.refunded, Money::usd(100), "{behaviour:?} {name}");
        }
    }
}

/// A `refund.created` arrives and no event carrying the charge ever does (the refund object
/// has the charge's id and the refund's amount, not the charge's amount): the service reads
/// the charge from Stripe (`GET /v1/charges/{id}`) and takes the refund's share. A charge of
/// 2000 funded 600 + 400; a refund of 500 takes a quarter of that: 150 + 100.
#[tokio::test]
async fn a_refund_whose_charge_was_never_seen_takes_its_share_after_the_charge_is_read() {
    let stripe = FakeStripe::start().await;
    let charge = stripe.make_charge(2000);
    let charge_id = charge["id"].as_str().unwrap().to_owned();
    let service = cases(&stripe);
    for (id, user, cents) in [("alloc_a", "creator_a", 600), ("alloc_b", "creator_b", 400)] {
        let credit = Allocation::credit(
            id,
            user,
            &charge_id,
            "payer_1",
            Money::usd(cents),
            Utc::now(),
        )
        .unwrap();
        service.record(&credit).await.unwrap();
    }
    stripe.refund(&charge_id, 500, "succeeded").unwrap();
    let refund_events: Vec<Value> = stripe
        .events()
        .into_iter()
        .filter(|event| event["type"] == "refund.created")
        .collect();
    assert_eq!(refund_events.len(), 1);
    // Twice: the redelivery changes nothing.
    apply(&service, &refund_events).await;
    apply(&service, &refund_events).await;
    for (user, active, refunded) in [("creator_a", 450, 150), ("creator_b", 300, 100)] {
        let earnings = service
            .ledger
            .earnings(user, &Currency::usd())
            .await
            .unwrap();
        assert_eq!(earnings.active, Money::usd(active), "{user}");
        assert_eq!(earnings.refunded, Money::usd(refunded), "{user}");
    }
    let case = service.cases.get(&charge_id).await.unwrap().unwrap();
    assert_eq!(
        case.amount,
        Some((2000, Currency::usd())),
        "recorded on the case"
    );
}

/// `GET /v1/charges/{id}` as the fake answers it (Stripe's charge fixture): the amounts, and
/// failures classified as for refund lists: an unknown charge is a definite no
/// (FailedPrecondition), a Stripe that cannot be reached is not (Unavailable).
#[tokio::test]
async fn a_charge_is_read_from_stripe_and_failures_are_never_a_no() {
    let stripe = FakeStripe::start().await;
    let charge = stripe.make_charge(2000);
    let charge_id = charge["id"].as_str().unwrap();
    stripe.refund(charge_id, 500, "succeeded").unwrap();
    let read = client(&stripe).charge(charge_id).await.unwrap();
    assert_eq!(read.charge_id, charge_id);
    assert_eq!(read.amount, 2000);
    assert_eq!(read.amount_captured, 2000);
    assert_eq!(read.amount_refunded, 500);
    assert_eq!(read.currency, Currency::usd());
    let error = client(&stripe).charge("ch_unknown").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::FailedPrecondition);
    // Nothing listens on port 9 (discard) here: a transport failure.
    let unreachable =
        StripeRefundsClient::new(&Secret::new("sk_test_fake"), "http://127.0.0.1:9").unwrap();
    let error = unreachable.charge(charge_id).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{}", error.message());
}
