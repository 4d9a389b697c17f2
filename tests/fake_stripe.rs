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
    assert_eq!(endpoints["data"], serde_json::json!([]), "none yet");
}

async fn post_form(stripe: &FakeStripe, path: &str, form: &str) -> (u16, Value) {
    post_form_as(stripe, "sk_test_fake", path, form).await
}

async fn post_form_as(stripe: &FakeStripe, key: &str, path: &str, form: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", stripe.url()))
        .bearer_auth(key)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_endpoints_are_created_listed_retrieved_and_updated() {
    let stripe = FakeStripe::start().await;
    let (status, created) = post_form(
        &stripe,
        "/v1/webhook_endpoints",
        "url=https%3A%2F%2Fpay.example.com%2Fapi%2Fwebhooks%2Fstripe-payouts&connect=true&enabled_events[0]=transfer.created&enabled_events[1]=payout.paid",
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["object"], "webhook_endpoint");
    assert_eq!(
        created["url"],
        "https://pay.example.com/api/webhooks/stripe-payouts"
    );
    assert_eq!(
        created["enabled_events"],
        serde_json::json!(["transfer.created", "payout.paid"])
    );
    assert!(created["application"].is_string(), "a Connect endpoint");
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let id = created["id"].as_str().unwrap().to_owned();

    let (_, second) = post_form(
        &stripe,
        "/v1/webhook_endpoints",
        "url=https%3A%2F%2Fpay.example.com%2Fapi%2Fwebhooks%2Fstripe-subscription&enabled_events[0]=charge.refunded",
    )
    .await;
    assert!(second["application"].is_null(), "an account endpoint");
    assert_ne!(second["secret"], created["secret"]);

    // Listed newest first, without secrets, page by page.
    let (_, page) = get(
        &stripe,
        "/v1/webhook_endpoints?limit=1",
        Some("sk_test_fake"),
    )
    .await;
    assert_eq!(page["data"][0]["id"], second["id"]);
    assert_eq!(page["has_more"], true);
    assert!(page["data"][0]["secret"].is_null());
    let next = format!(
        "/v1/webhook_endpoints?limit=1&starting_after={}",
        second["id"].as_str().unwrap()
    );
    let (_, page) = get(&stripe, &next, Some("sk_test_fake")).await;
    assert_eq!(page["data"][0]["id"], id.as_str());
    assert_eq!(page["has_more"], false);

    // Updated in place: events replaced, the secret unchanged and not shown.
    let (status, updated) = post_form(
        &stripe,
        &format!("/v1/webhook_endpoints/{id}"),
        "enabled_events[0]=transfer.created&enabled_events[1]=transfer.updated",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        updated["enabled_events"],
        serde_json::json!(["transfer.created", "transfer.updated"])
    );
    assert!(updated["secret"].is_null());
    let (status, retrieved) = get(
        &stripe,
        &format!("/v1/webhook_endpoints/{id}"),
        Some("sk_test_fake"),
    )
    .await;
    assert_eq!(
        (status, &retrieved["enabled_events"]),
        (200, &updated["enabled_events"])
    );

    let (status, missing) = get(
        &stripe,
        "/v1/webhook_endpoints/we_nope",
        Some("sk_test_fake"),
    )
    .await;
    assert_eq!(
        (status, missing["error"]["code"].as_str()),
        (404, Some("resource_missing"))
    );
    // Live mode wants https; test mode takes a local http gateway too, as Stripe does.
    let (status, refused) = post_form_as(
        &stripe,
        "sk_live_fake",
        "/v1/webhook_endpoints",
        "url=http%3A%2F%2Finsecure",
    )
    .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("url_invalid"))
    );
    let (status, _) = post_form(
        &stripe,
        "/v1/webhook_endpoints",
        "url=http%3A%2F%2F127.0.0.1%3A3000%2Fapi%2Fwebhooks%2Fstripe-payouts",
    )
    .await;
    assert_eq!(status, 200);
    let (status, refused) = post_form(&stripe, "/v1/webhook_endpoints", "url=ftp%3A%2F%2Fx").await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("url_invalid"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_listed_newest_first_by_type_delivery_account_and_time_in_pages() {
    use payouts_runtime::testing::stripe;
    let stripe_api = FakeStripe::start().await;
    let now = chrono::Utc::now().timestamp();
    let event = |id: &str, kind: &str, created: i64, account: Option<&str>| {
        let mut event = stripe::event(id, kind, "transfer");
        event["created"] = serde_json::json!(created);
        event["account"] = serde_json::json!(account);
        event
    };
    stripe_api.record_event(
        event("evt_old", "transfer.created", now - 31 * 86_400, None),
        false,
    );
    stripe_api.record_event(event("evt_a", "transfer.created", now - 100, None), false);
    stripe_api.record_event(event("evt_b", "transfer.updated", now - 50, None), true);
    stripe_api.record_event(event("evt_c", "charge.refunded", now - 40, None), false);
    stripe_api.record_event(
        event("evt_d", "payout.paid", now - 30, Some("acct_1")),
        false,
    );
    stripe_api.record_event(event("evt_e", "transfer.reversed", now - 20, None), false);
    let ids = |list: &Value| -> Vec<String> {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let key = Some("sk_test_fake");
    let (status, all) = get(&stripe_api, "/v1/events", key).await;
    assert_eq!(status, 200);
    // Newest first, the platform's only, none older than 30 days.
    assert_eq!(ids(&all), ["evt_e", "evt_c", "evt_b", "evt_a"]);
    let (_, undelivered) = get(
        &stripe_api,
        "/v1/events?delivery_success=false&types[]=transfer.created&types[]=transfer.reversed&types[]=transfer.updated",
        key,
    )
    .await;
    assert_eq!(ids(&undelivered), ["evt_e", "evt_a"]);
    let (_, window) = get(
        &stripe_api,
        &format!(
            "/v1/events?created[gte]={}&created[lt]={}",
            now - 60,
            now - 20
        ),
        key,
    )
    .await;
    assert_eq!(ids(&window), ["evt_c", "evt_b"]);
    let (_, first) = get(&stripe_api, "/v1/events?limit=3", key).await;
    assert_eq!(
        (ids(&first).len(), first["has_more"].as_bool()),
        (3, Some(true))
    );
    let (_, second) = get(&stripe_api, "/v1/events?limit=3&starting_after=evt_b", key).await;
    assert_eq!(
        (ids(&second), second["has_more"].as_bool()),
        (vec!["evt_a".to_owned()], Some(false))
    );
    // A connected account's events, with Stripe-Account.
    let response = reqwest::Client::new()
        .get(format!("{}/v1/events", stripe_api.url()))
        .bearer_auth("sk_test_fake")
        .header("Stripe-Account", "acct_1")
        .send()
        .await
        .unwrap();
    assert_eq!(ids(&response.json().await.unwrap()), ["evt_d"]);
    let (status, refused) = get(&stripe_api, "/v1/events?created[gte]=yesterday", key).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("parameter_invalid_integer"))
    );
    stripe_api.fail_next_listing(500, "api_error");
    let (status, _) = get(&stripe_api, "/v1/events", key).await;
    assert_eq!(status, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_are_listed_by_creation_time_and_record_their_events() {
    let stripe_api = FakeStripe::start().await;
    let (status, first) = create(&stripe_api, "key-a", "500").await;
    assert_eq!(status, 200);
    let other = stripe_api.make_transfer(700, "acct_2", &[]);
    let reversed = stripe_api
        .reverse(other["id"].as_str().unwrap(), 200)
        .unwrap();
    assert_eq!(reversed["amount_reversed"], 200);
    let key = Some("sk_test_fake");
    let created = first["created"].as_i64().unwrap();
    let (_, listed) = get(
        &stripe_api,
        &format!("/v1/transfers?created[gte]={created}&limit=1"),
        key,
    )
    .await;
    assert_eq!(listed["data"][0]["id"], other["id"], "newest first");
    assert_eq!(listed["has_more"], true);
    let (_, none) = get(
        &stripe_api,
        &format!("/v1/transfers?created[gt]={}", created + 3600),
        key,
    )
    .await;
    assert_eq!(none["data"], serde_json::json!([]));
    let kinds: Vec<String> = stripe_api
        .events()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        kinds,
        ["transfer.created", "transfer.created", "transfer.reversed"]
    );
    assert!(stripe_api.remove_transfer(first["id"].as_str().unwrap()));
    assert_eq!(stripe_api.transfers().len(), 1);
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

/// One delivery as received: path, `Stripe-Signature`, body.
type Received = (String, String, Vec<u8>);

/// A webhook receiver on loopback: records each delivery and answers 500 to the first
/// `failures` deliveries on each path, then 200.
#[derive(Clone, Default)]
struct Receiver {
    received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    failures: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

impl Receiver {
    async fn start(failures: &[(&str, usize)]) -> (Receiver, String) {
        let receiver = Receiver::default();
        for (path, count) in failures {
            receiver
                .failures
                .lock()
                .unwrap()
                .insert((*path).to_owned(), *count);
        }
        let state = receiver.clone();
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let state = state.clone();
                async move {
                    let path = uri.path().to_owned();
                    let signature = headers
                        .get("stripe-signature")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    state
                        .received
                        .lock()
                        .unwrap()
                        .push((path.clone(), signature, body.to_vec()));
                    let mut failures = state.failures.lock().unwrap();
                    match failures.get_mut(&path) {
                        Some(left) if *left > 0 => {
                            *left -= 1;
                            axum::http::StatusCode::INTERNAL_SERVER_ERROR
                        }
                        _ => axum::http::StatusCode::OK,
                    }
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    /// The deliveries to `path`: (event type, account, signature header, body).
    fn on(&self, path: &str) -> Vec<(String, Value, String, Vec<u8>)> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, signature, body)| {
                let event: Value = serde_json::from_slice(body).unwrap();
                (
                    event["type"].as_str().unwrap().to_owned(),
                    event["account"].clone(),
                    signature.clone(),
                    body.clone(),
                )
            })
            .collect()
    }
}

/// Waits until `done` holds (the fake delivers in the background).
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_delivers_each_event_to_the_endpoints_stripe_routes_it_to_signed_and_retried() {
    use payouts_runtime::testing::fake_stripe::RetrySchedule;
    use payouts_runtime::testing::stripe;
    let (receiver, base) = Receiver::start(&[("/account", 2)]).await;
    let stripe_api = FakeStripe::start().await;
    stripe_api.set_retry_schedule(RetrySchedule(vec![
        std::time::Duration::from_millis(20),
        std::time::Duration::from_millis(40),
    ]));
    let encode = |text: &str| text.replace(':', "%3A").replace('/', "%2F");
    // The old topology's Connect endpoint, subscribing transfer.* as well as payout.paid.
    let (_, connect) = post_form(
        &stripe_api,
        "/v1/webhook_endpoints",
        &format!(
            "url={}&connect=true&api_version=2099-01-01.test&enabled_events[0]=transfer.created&enabled_events[1]=transfer.reversed&enabled_events[2]=payout.paid",
            encode(&format!("{base}/connect"))
        ),
    )
    .await;
    let (_, account) = post_form(
        &stripe_api,
        "/v1/webhook_endpoints",
        &format!(
            "url={}&enabled_events[0]=*",
            encode(&format!("{base}/account"))
        ),
    )
    .await;
    let (_, _narrow) = post_form(
        &stripe_api,
        "/v1/webhook_endpoints",
        &format!(
            "url={}&enabled_events[0]=charge.refunded",
            encode(&format!("{base}/narrow"))
        ),
    )
    .await;

    let transfer = stripe_api.make_transfer(900, "acct_9", &[]);
    let transfer_id = transfer["id"].as_str().unwrap();
    // A reversal made in the Stripe Dashboard: the API, with the platform's key.
    let (status, _) = post_form(
        &stripe_api,
        &format!("/v1/transfers/{transfer_id}/reversals"),
        "amount=300",
    )
    .await;
    assert_eq!(status, 200);
    // The connected account's bank pays out (the fake's own control route).
    let (status, bank_payout) = post_form(&stripe_api, "/_fake/accounts/acct_9/payouts", "").await;
    assert_eq!((status, bank_payout["amount"].as_i64()), (200, Some(600)));

    until("the account endpoint took its two events", || {
        stripe_api
            .deliveries()
            .iter()
            .filter(|d| d.endpoint_url.ends_with("/account") && d.delivered)
            .count()
            == 2
    })
    .await;
    until("the Connect endpoint took the bank payout", || {
        receiver.on("/connect").len() == 1
    })
    .await;
    // The platform's transfer events never reach a Connect endpoint, whatever it subscribes;
    // the connected account's bank payout reaches only the Connect endpoint, with account.
    let connect_got = receiver.on("/connect");
    assert_eq!(connect_got[0].0, "payout.paid");
    assert_eq!(connect_got[0].1, "acct_9");
    let account_got = receiver.on("/account");
    let kinds: Vec<&str> = account_got.iter().map(|(kind, ..)| kind.as_str()).collect();
    assert_eq!(kinds.len(), 4, "two refused, then retried: {kinds:?}");
    assert!(
        kinds.iter().all(|kind| kind.starts_with("transfer.")),
        "{kinds:?}"
    );
    assert!(account_got.iter().all(|(_, account, ..)| account.is_null()));
    assert!(receiver.on("/narrow").is_empty(), "not subscribed");
    // Each signed with its endpoint's secret, rendered with its API version.
    for (path, endpoint) in [("/connect", &connect), ("/account", &account)] {
        for (_, _, signature, body) in receiver.on(path) {
            let (t, v1) = signature.split_once(",v1=").unwrap();
            let t: i64 = t.strip_prefix("t=").unwrap().parse().unwrap();
            assert_eq!(
                v1,
                stripe::sign(&body, endpoint["secret"].as_str().unwrap(), t),
                "{path}"
            );
        }
    }
    let rendered: Value = serde_json::from_slice(&connect_got[0].3).unwrap();
    assert_eq!(rendered["api_version"], "2099-01-01.test");

    // Delivered everywhere: nothing is listed as undelivered.
    let (_, undelivered) = get(
        &stripe_api,
        "/v1/events?delivery_success=false",
        Some("sk_test_fake"),
    )
    .await;
    assert_eq!(undelivered["data"], serde_json::json!([]), "{undelivered}");
    let deliveries = stripe_api.deliveries();
    assert!(deliveries.iter().all(|d| d.delivered && !d.gave_up));
    assert_eq!(
        deliveries
            .iter()
            .filter(|d| d.endpoint_url.ends_with("/account"))
            .map(|d| d.attempts)
            .sum::<u32>(),
        4
    );
    stripe_api.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_keeps_failing_is_given_up_and_stays_listed_as_undelivered() {
    use payouts_runtime::testing::fake_stripe::RetrySchedule;
    let (receiver, base) = Receiver::start(&[("/down", 100)]).await;
    let stripe_api = FakeStripe::start().await;
    stripe_api.set_retry_schedule(RetrySchedule(vec![std::time::Duration::from_millis(10); 2]));
    post_form(
        &stripe_api,
        "/v1/webhook_endpoints",
        &format!(
            "url={}&enabled_events[0]=transfer.created",
            format!("{base}/down")
                .replace(':', "%3A")
                .replace('/', "%2F")
        ),
    )
    .await;
    let transfer = stripe_api.make_transfer(100, "acct_1", &[]);
    until("the fake gave up", || {
        stripe_api.deliveries().first().is_some_and(|d| d.gave_up)
    })
    .await;
    let delivery = &stripe_api.deliveries()[0];
    assert_eq!(delivery.attempts, 3, "the first try and two retries");
    assert!(
        delivery.last_answer.as_deref().unwrap().starts_with("500"),
        "{delivery:?}"
    );
    assert_eq!(receiver.on("/down").len(), 3);
    let (_, undelivered) = get(
        &stripe_api,
        "/v1/events?delivery_success=false",
        Some("sk_test_fake"),
    )
    .await;
    assert_eq!(
        undelivered["data"][0]["data"]["object"]["id"],
        transfer["id"]
    );
    assert_eq!(undelivered["data"][0]["pending_webhooks"], 1);
    // Shutting down waits for the delivery task to end.
    tokio::time::timeout(std::time::Duration::from_secs(5), stripe_api.shutdown())
        .await
        .expect("the delivery task stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfers_reversals_are_listed_with_their_metadata_newest_first_in_pages() {
    let stripe = FakeStripe::start().await;
    let (_, transfer) = create(&stripe, "key-rev", "1000").await;
    let id = transfer["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/transfers/{id}/reversals");
    let reverse = |key: &'static str, form: &'static str| {
        let stripe = stripe.clone();
        let path = path.clone();
        async move {
            let response = reqwest::Client::new()
                .post(format!("{}{path}", stripe.url()))
                .bearer_auth("sk_test_fake")
                .header("Idempotency-Key", key)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, first) = reverse(
        "r-1",
        "amount=100&metadata[payouts_reversal_intent]=p1-reversal-1",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(first["object"], "transfer_reversal");
    // Its answer lost: the reversal is made all the same, and listed.
    stripe.then(payouts_runtime::testing::fake_stripe::Behaviour::LoseResponse);
    let response = reqwest::Client::new()
        .post(format!("{}{path}", stripe.url()))
        .bearer_auth("sk_test_fake")
        .header("Idempotency-Key", "r-2")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("amount=200&metadata[payouts_reversal_intent]=p1-reversal-2")
        .send()
        .await
        .unwrap();
    assert!(response.json::<Value>().await.is_err(), "garbled answer");
    // One made in the Dashboard: a reversal without our metadata.
    stripe.reverse(&id, 300).unwrap();
    let (status, listed) = get(&stripe, &path, Some("sk_test_fake")).await;
    assert_eq!(status, 200);
    assert_eq!(listed["object"], "list");
    assert_eq!(listed["url"], path.as_str());
    let amounts: Vec<i64> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, [300, 200, 100], "newest first");
    assert_eq!(
        listed["data"][1]["metadata"]["payouts_reversal_intent"],
        "p1-reversal-2"
    );
    assert_eq!(listed["data"][1]["transfer"], id.as_str());
    assert_eq!(listed["data"][0]["metadata"], serde_json::json!({}));
    // In pages.
    let (_, page) = get(&stripe, &format!("{path}?limit=2"), Some("sk_test_fake")).await;
    assert_eq!(page["has_more"], true);
    let last = page["data"][1]["id"].as_str().unwrap();
    let (_, rest) = get(
        &stripe,
        &format!("{path}?limit=2&starting_after={last}"),
        Some("sk_test_fake"),
    )
    .await;
    assert_eq!(
        (
            rest["has_more"].as_bool(),
            rest["data"][0]["amount"].as_i64()
        ),
        (Some(false), Some(100))
    );
    // The same key replays the first answer: no second reversal.
    let (_, replay) = reverse(
        "r-1",
        "amount=100&metadata[payouts_reversal_intent]=p1-reversal-1",
    )
    .await;
    assert_eq!(replay["id"], first["id"]);
    assert_eq!(stripe.reversals(&id).len(), 3);
    let (status, _) = get(
        &stripe,
        "/v1/transfers/tr_nope/reversals",
        Some("sk_test_fake"),
    )
    .await;
    assert_eq!(status, 404);
}
