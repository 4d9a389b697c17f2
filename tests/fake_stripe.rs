//! The fake Stripe itself speaks Stripe: secret keys required, fixture shapes, idempotency
//! keys replayed (errors too) and refused with other parameters, scripted failures.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

use payouts_runtime::testing::fake_stripe::FakeStripe;
use serde_json::Value;

async fn get(stripe: &FakeStripe, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(format!("{}{path}", stripe.url()));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn create(stripe: &FakeStripe, key: &str, amount: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/transfers", stripe.url()))
        .bearer_auth("sk_test_fake")
        .header("Idempotency-Key", key)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("amount={amount}&currency=usd&destination=acct_1&transfer_group=payout_p1&metadata[payout_id]=p1"))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_wants_a_secret_key_and_answers_in_stripes_shapes() {
    let stripe = FakeStripe::start().await;
    let (status, error) = get(&stripe, "/v1/balance", None).await;
    assert_eq!(status, 401);
    assert_eq!(error["error"]["type"], "invalid_request_error");

    stripe.set_balance(12_345, 678);
    let (status, balance) = get(&stripe, "/v1/balance", Some("sk_test_fake")).await;
    assert_eq!(status, 200);
    assert_eq!(balance["object"], "balance");
    assert_eq!(balance["available"][0]["amount"], 12_345);
    assert_eq!(balance["pending"][0]["amount"], 678);

    let (status, account) = get(&stripe, "/v1/accounts/acct_42", Some("sk_test_fake")).await;
    assert_eq!(
        (status, account["id"].as_str(), account["object"].as_str()),
        (200, Some("acct_42"), Some("account"))
    );

    let (status, endpoints) = get(&stripe, "/v1/webhook_endpoints", Some("sk_test_fake")).await;
    assert_eq!((status, endpoints["object"].as_str()), (200, Some("list")));
    assert_eq!(endpoints["data"][0]["object"], "webhook_endpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_replay_the_first_answer_and_refuse_other_parameters() {
    let stripe = FakeStripe::start().await;
    let (status, first) = create(&stripe, "key-1", "500").await;
    assert_eq!(status, 200);
    assert_eq!(first["object"], "transfer");
    assert_eq!(first["metadata"]["payout_id"], "p1");
    let (_, replay) = create(&stripe, "key-1", "500").await;
    assert_eq!(replay, first);
    let (status, refused) = create(&stripe, "key-1", "501").await;
    assert_eq!(status, 400);
    assert_eq!(refused["error"]["type"], "idempotency_error");
    assert_eq!(stripe.transfers().len(), 1);

    // A scripted error is stored under its key too, as Stripe does.
    stripe.fail_next(500, "api_error");
    let (status, error) = create(&stripe, "key-2", "700").await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (500, Some("api_error"))
    );
    let (status, _) = create(&stripe, "key-2", "700").await;
    assert_eq!(status, 500, "the first result for a key is replayed");
    let (status, listed) = get(
        &stripe,
        "/v1/transfers?transfer_group=payout_p1",
        Some("sk_test_fake"),
    )
    .await;
    assert_eq!(
        (status, listed["data"].as_array().map(Vec::len)),
        (200, Some(1))
    );
}
