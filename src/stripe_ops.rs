//! `payouts stripe setup-webhooks` and `payouts stripe trigger`: what a team runs around the
//! service when it meets Stripe (see docs/stripe-operations.md).

use anyhow::{Context as _, bail};
use payouts_runtime::Settings;
use payouts_runtime::stripe_dev;
use payouts_webhooks::domain::{Endpoint, EndpointKind, LEGACY_TRANSFER_EVENTS, endpoint_for};
use serde_json::{Value, json};
use stripe_misc::webhook_endpoint::{
    CreateWebhookEndpoint, CreateWebhookEndpointEnabledEvents, ListWebhookEndpoint,
    UpdateWebhookEndpoint, UpdateWebhookEndpointEnabledEvents,
};

/// One of the webhook endpoints Stripe delivers to (the lists, paths, secrets and kinds are
/// the webhooks domain's: `payouts_webhooks::domain::Endpoint`).
pub struct EndpointSpec {
    pub endpoint: Endpoint,
    pub description: &'static str,
}

impl EndpointSpec {
    fn connect(&self) -> bool {
        self.endpoint.kind() == EndpointKind::Connect
    }
}

/// What `setup-webhooks` creates: a Connect endpoint for the connected accounts' events and
/// two account endpoints for the platform's (https://docs.stripe.com/connect/webhooks).
pub const ENDPOINTS: [EndpointSpec; 3] = [
    EndpointSpec {
        endpoint: Endpoint::StripePayouts,
        description: "Payouts: connected accounts' bank payouts and account events (Connect)",
    },
    EndpointSpec {
        endpoint: Endpoint::StripeTransfers,
        description: "Payouts: the platform's transfer events",
    },
    EndpointSpec {
        endpoint: Endpoint::StripeSubscription,
        description: "Payouts: payment, refund, dispute and subscription events",
    },
];

/// The API version async-stripe sends as `Stripe-Version` (its `ClientConfig` default,
/// `stripe_shared::version::VERSION`): endpoints are pinned to it, so events are rendered in
/// the shapes the client reads (https://docs.stripe.com/api/webhook_endpoints/create).
pub fn client_api_version() -> stripe_shared::ApiVersion {
    stripe_shared::version::VERSION
}

fn stripe_client(settings: &Settings) -> anyhow::Result<(stripe::Client, bool)> {
    let key = settings
        .stripe_secret_key
        .as_ref()
        .context("STRIPE_SECRET_KEY is required: the endpoints are created in its account")?;
    let test_mode = key.expose().starts_with("sk_test_") || key.expose().starts_with("rk_test_");
    let client = stripe::ClientBuilder::new(key.expose())
        .url(format!("{}/", settings.stripe_api_base))
        .build()
        .map_err(|error| anyhow::anyhow!("invalid Stripe configuration: {error}"))?;
    Ok((client, test_mode))
}

/// The base URL, checked: http(s), no query or fragment, https unless the key is a test key.
fn base_url(url: &str, test_mode: bool) -> anyhow::Result<String> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("--url {url:?} is not a URL"))?;
    let secure = parsed.scheme() == "https";
    if !(secure || (test_mode && parsed.scheme() == "http")) {
        bail!("--url must be an https:// URL (http:// only with a test key), got {url:?}");
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || parsed.host().is_none() {
        bail!("--url must be the gateway's base URL (scheme, host, optional path), got {url:?}");
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Whether the gateway answers design §9's health body at `url`.
async fn healthy(http: &reqwest::Client, url: &str) -> Result<(), String> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|error| error.to_string())?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() && body["status"] == "ok" {
        Ok(())
    } else {
        Err(format!("answered {status} {body}"))
    }
}

fn sorted(events: impl IntoIterator<Item = impl AsRef<str>>) -> Vec<String> {
    let mut events: Vec<String> = events.into_iter().map(|e| e.as_ref().to_owned()).collect();
    events.sort();
    events.dedup();
    events
}

/// `payouts stripe setup-webhooks --url <base> [--dry-run]`.
pub async fn setup_webhooks(settings: &Settings, url: &str, dry_run: bool) -> anyhow::Result<()> {
    let (client, test_mode) = stripe_client(settings)?;
    let base = base_url(url, test_mode)?;
    println!(
        "Payouts webhook setup{}",
        if dry_run { " (dry run)" } else { "" }
    );
    println!("=====================\n");
    println!("Base URL:   {base}");
    println!(
        "Stripe key: {} mode, API at {}",
        if test_mode { "test" } else { "live" },
        settings.stripe_api_base
    );

    println!("\nTesting webhook endpoint health...");
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let mut unhealthy = Vec::new();
    for spec in &ENDPOINTS {
        let url = format!("{base}{}", spec.endpoint.path());
        match healthy(&http, &url).await {
            Ok(()) => println!("  ok    {url} is healthy"),
            Err(why) => {
                println!("  FAIL  {url}: {why}");
                unhealthy.push(url);
            }
        }
    }
    if !unhealthy.is_empty() {
        bail!(
            "the gateway does not answer at {}: nothing was created (Stripe would deliver into the void)",
            unhealthy.join(", ")
        );
    }

    println!("\nListing existing webhook endpoints...");
    let mut existing = Vec::new();
    let mut list = ListWebhookEndpoint::new().limit(100);
    loop {
        let page = list.send(&client).await.map_err(|error| {
            anyhow::anyhow!("Stripe did not list the webhook endpoints: {error}")
        })?;
        let last = page.data.last().map(|endpoint| endpoint.id.to_string());
        existing.extend(page.data);
        match (page.has_more, last) {
            (true, Some(last)) => list = ListWebhookEndpoint::new().limit(100).starting_after(last),
            _ => break,
        }
    }
    println!("  {} endpoint(s) in the account", existing.len());

    let pinned = client_api_version();
    let mut secrets = Vec::new();
    let mut problems = Vec::new();
    for spec in &ENDPOINTS {
        let url = format!("{base}{}", spec.endpoint.path());
        let events = spec.endpoint.subscribed_events();
        let wanted = sorted(events);
        let matching: Vec<_> = existing.iter().filter(|e| e.url == url).collect();
        println!(
            "\n{} ({} events, connect={}, api_version {})",
            url,
            wanted.len(),
            spec.connect(),
            pinned.as_str()
        );
        match matching.first() {
            None if dry_run => println!("  would create it with: {}", wanted.join(", ")),
            None => {
                let enabled: Vec<CreateWebhookEndpointEnabledEvents> = events
                    .iter()
                    .filter_map(|event| event.parse().ok())
                    .collect();
                let created = CreateWebhookEndpoint::new(enabled, url.clone())
                    .connect(spec.connect())
                    .api_version(pinned.clone())
                    .description(spec.description)
                    .send(&client)
                    .await
                    .map_err(|error| anyhow::anyhow!("Stripe did not create {url}: {error}"))?;
                println!("  created {}", created.id);
                match created.secret {
                    Some(secret) => {
                        secrets.push(format!("{}={secret}", spec.endpoint.secret_variable()))
                    }
                    None => problems.push(format!("{url}: Stripe showed no signing secret")),
                }
            }
            Some(found) => {
                if matching.len() > 1 {
                    problems.push(format!(
                        "{url} has {} endpoints in Stripe (each delivers every event): delete all but {} in the dashboard",
                        matching.len(),
                        found.id
                    ));
                }
                if found.application.is_some() != spec.connect() {
                    problems.push(format!(
                        "{} at {url} is {}a Connect endpoint and Stripe cannot change that: delete it and run again",
                        found.id,
                        if spec.connect() { "not " } else { "" }
                    ));
                }
                if found.api_version.as_deref() != Some(pinned.as_str()) {
                    // Stripe sets an endpoint's version only at creation.
                    println!(
                        "  note: {} renders events with API version {} (Stripe sets it only at creation); to pin {}, delete it in the dashboard and run again (a new secret is printed)",
                        found.id,
                        found
                            .api_version
                            .as_deref()
                            .unwrap_or("the account's default"),
                        pinned.as_str()
                    );
                }
                let current = sorted(&found.enabled_events);
                let misrouted: Vec<&String> = current
                    .iter()
                    .filter(|event| endpoint_for(event).is_some_and(|home| home != spec.endpoint))
                    .collect();
                if !misrouted.is_empty() {
                    println!(
                        "  {} subscribes {} which Stripe never sends it (connect={}): moved to the endpoint Stripe sends them to",
                        found.id,
                        misrouted
                            .iter()
                            .map(|event| event.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        spec.connect()
                    );
                }
                if current == wanted && found.status == "enabled" {
                    println!("  {} is up to date", found.id);
                } else if dry_run {
                    println!(
                        "  would update {}: events {} -> {}{}",
                        found.id,
                        current.join(", "),
                        wanted.join(", "),
                        if found.status == "enabled" {
                            ""
                        } else {
                            ", and enable it"
                        }
                    );
                } else {
                    let enabled: Vec<UpdateWebhookEndpointEnabledEvents> = events
                        .iter()
                        .filter_map(|event| event.parse().ok())
                        .collect();
                    UpdateWebhookEndpoint::new(found.id.clone())
                        .enabled_events(enabled)
                        .disabled(false)
                        .description(spec.description)
                        .send(&client)
                        .await
                        .map_err(|error| {
                            anyhow::anyhow!("Stripe did not update {}: {error}", found.id)
                        })?;
                    println!("  updated {} (its signing secret is unchanged)", found.id);
                }
            }
        }
    }
    println!(
        "\nNot subscribed: {} (legacy: since the 2017-04-06 transfer/payout split a transfer succeeds or fails synchronously and Stripe deprecated them; its SDKs dropped them around 2022. A failed transfer is an error of POST /v1/transfers, money taken back is transfer.reversed, the creator's bank payout is payout.*). Accounts pinned to older API versions may still send them to the transfers endpoint, and they are handled.",
        LEGACY_TRANSFER_EVENTS.join(", ")
    );
    if !secrets.is_empty() {
        println!(
            "\nENVIRONMENT VARIABLES NEEDED (shown once: Stripe shows a secret only at creation)"
        );
        println!("================================");
        for line in &secrets {
            println!("{line}");
        }
    }
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("payouts: {problem}");
        }
        bail!(
            "webhook setup needs attention ({} problem(s) above)",
            problems.len()
        );
    }
    println!(
        "\nWebhook setup {}.",
        if dry_run { "checked" } else { "complete" }
    );
    Ok(())
}

/// Every event type `payouts stripe trigger` can send: every type an endpoint takes.
pub fn triggerable() -> Vec<&'static str> {
    ENDPOINTS
        .iter()
        .flat_map(|spec| spec.endpoint.subscribed_events())
        .chain(LEGACY_TRANSFER_EVENTS)
        .copied()
        .collect()
}

/// The fixture object an event type carries.
fn object_of(event_type: &str) -> Option<&'static str> {
    let object = match event_type {
        t if t.starts_with("transfer.") => "transfer",
        t if t.starts_with("payout.") => "payout",
        "account.updated" => "account",
        "account.application.deauthorized" => "application",
        "charge.refunded" => "charge",
        t if t.starts_with("charge.dispute.") => "dispute",
        t if t.starts_with("refund.") || t == "charge.refund.updated" => "refund",
        t if t.starts_with("invoice.") => "invoice",
        t if t.starts_with("customer.subscription.") => "subscription",
        "checkout.session.completed" => "checkout.session",
        _ => return None,
    };
    triggerable().contains(&event_type).then_some(object)
}

/// Sets `path` (dotted) in `event` to `value` (JSON if it parses, else a string).
fn set_field(event: &mut Value, assignment: &str) -> anyhow::Result<()> {
    let Some((path, value)) = assignment.split_once('=') else {
        bail!("--set {assignment:?}: expected PATH=VALUE, e.g. data.object.amount=5000");
    };
    if path.is_empty() || path.split('.').any(str::is_empty) {
        bail!("--set {assignment:?}: the path must be dotted field names, e.g. data.object.id");
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
    let mut target = event;
    for field in path.split('.') {
        if !target.is_object() {
            bail!("--set {assignment:?}: {field:?} is inside a value that is not an object");
        }
        target = &mut target[field];
    }
    *target = value;
    Ok(())
}

/// The event `payouts stripe trigger` sends.
pub fn build_event(
    event_type: &str,
    account: Option<&str>,
    livemode: bool,
    sets: &[String],
) -> anyhow::Result<Value> {
    let Some(object) = object_of(event_type) else {
        bail!(
            "{event_type:?} is not an event type Payouts handles; one of: {}",
            triggerable().join(", ")
        );
    };
    if let Some(account) = account
        && !account.starts_with("acct_")
    {
        bail!("--account must be a connected account id (acct_...), got {account:?}");
    }
    // As Stripe sends them: a connected account's event carries its account, the
    // platform's own never does (the endpoint would refuse it).
    let connected = endpoint_for(event_type).map(Endpoint::kind) == Some(EndpointKind::Connect);
    match (connected, account) {
        (true, None) => bail!(
            "{event_type} is a connected account's event: --account acct_... is required (Stripe sends it with its account)"
        ),
        (false, Some(_)) => bail!(
            "{event_type} is the platform's own event: Stripe sends it without an account, so --account is refused"
        ),
        _ => {}
    }
    let id = format!("evt_trigger_{}", uuid::Uuid::new_v4().simple());
    let mut event = stripe_dev::event(&id, event_type, object);
    event["livemode"] = json!(livemode);
    event["data"]["object"]["livemode"] = json!(livemode);
    event["account"] = account.map_or(Value::Null, |account| json!(account));
    for assignment in sets {
        set_field(&mut event, assignment)?;
    }
    Ok(event)
}

/// `payouts stripe trigger <type> [--gateway URL] [--account acct_…] [--set path=value …]`.
pub async fn trigger(
    settings: &Settings,
    event_type: &str,
    gateway: Option<&str>,
    account: Option<&str>,
    sets: &[String],
) -> anyhow::Result<()> {
    if settings.is_live() {
        anyhow::bail!(
            "refusing to trigger {event_type} with a live configuration (STRIPE_LIVEMODE=true or a live STRIPE_SECRET_KEY): a made-up event signed with a live endpoint's secret would be applied to real payouts as if Stripe had sent it; use test-mode settings"
        );
    }
    let event = build_event(event_type, account, settings.stripe_livemode, sets)?;
    let endpoint = endpoint_for(event_type).context("every triggerable type has an endpoint")?;
    let secrets = match endpoint {
        Endpoint::StripePayouts => &settings.stripe_webhook_secrets_payouts,
        Endpoint::StripeSubscription => &settings.stripe_webhook_secrets_subscription,
        Endpoint::StripeTransfers => &settings.stripe_webhook_secrets_transfers,
    };
    let secret = secrets.first().with_context(|| {
        format!(
            "{} is required: {event_type} is signed with it",
            endpoint.secret_variable()
        )
    })?;
    let gateway = gateway
        .map(|url| url.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| format!("http://{}", settings.gateway_addr));
    let url = format!("{gateway}{}", endpoint.path());
    let body = serde_json::to_vec(&event)?;
    let signature =
        stripe_dev::signature_header(&body, secret.expose(), chrono::Utc::now().timestamp());
    let response = reqwest::Client::new()
        .post(&url)
        .header("Stripe-Signature", signature)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .with_context(|| format!("the gateway at {url} did not answer"))?;
    let status = response.status();
    let answer = response.text().await.unwrap_or_default();
    println!(
        "{} {} -> {url}\n{status} {answer}",
        event["type"].as_str().unwrap_or(event_type),
        event["id"].as_str().unwrap_or_default()
    );
    if !status.is_success() {
        bail!("the gateway refused the event ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_we_handle_can_be_triggered_with_its_fixture_object() {
        for event_type in triggerable() {
            let account = (endpoint_for(event_type).map(Endpoint::kind)
                == Some(EndpointKind::Connect))
            .then_some("acct_1");
            let event = build_event(event_type, account, false, &[]).unwrap();
            assert_eq!(event["account"].as_str(), account, "{event_type}");
            assert_eq!(event["type"], event_type);
            assert_eq!(event["object"], "event");
            assert!(event["data"]["object"]["id"].is_string(), "{event_type}");
            assert!(event["id"].as_str().unwrap().starts_with("evt_trigger_"));
        }
        assert!(build_event("customer.created", None, false, &[]).is_err());
        assert!(build_event("payout.paid", Some("cus_1"), false, &[]).is_err());
        let error = build_event("payout.paid", None, false, &[]).unwrap_err();
        assert!(error.to_string().contains("--account"), "{error}");
        let error = build_event("transfer.reversed", Some("acct_1"), false, &[]).unwrap_err();
        assert!(error.to_string().contains("platform"), "{error}");
    }

    #[test]
    fn fields_are_set_by_dotted_path_as_json_or_strings() {
        let sets = [
            "data.object.amount=5000".to_owned(),
            "data.object.metadata.payout_id=p_1".to_owned(),
            "data.object.reversed=true".to_owned(),
        ];
        let event = build_event("payout.failed", Some("acct_1"), true, &sets).unwrap();
        assert_eq!(event["data"]["object"]["amount"], 5000);
        assert_eq!(event["data"]["object"]["metadata"]["payout_id"], "p_1");
        assert_eq!(event["data"]["object"]["reversed"], true);
        assert_eq!(
            (event["account"].as_str(), event["livemode"].as_bool()),
            (Some("acct_1"), Some(true))
        );
        for bad in ["amount", "=5", "data..id=1", "type.sub=1"] {
            assert!(
                build_event("transfer.created", None, false, &[bad.to_owned()]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_base_url_is_https_unless_the_key_is_a_test_key() {
        assert_eq!(
            base_url("https://pay.example.com/", false).unwrap(),
            "https://pay.example.com"
        );
        assert!(base_url("http://127.0.0.1:3000", false).is_err());
        assert!(base_url("http://127.0.0.1:3000", true).is_ok());
        assert!(base_url("https://x.example/?a=1", true).is_err());
        assert!(base_url("ftp://x.example", true).is_err());
        assert!(base_url("pay.example.com", true).is_err());
    }
}
