//! `payouts dev ...`: run the fake Stripe, and play the platform (register a creator, request
//! a payout) without writing a gRPC client, for the README's "try it locally" walkthrough.

use anyhow::Context as _;
use payouts_proto::common::v1::Money;
use payouts_proto::disputes::v1::RecordAllocationRequest;
use payouts_proto::disputes::v1::disputes_service_client::DisputesServiceClient;
use payouts_proto::payouts::v1 as pb;
use payouts_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
use payouts_runtime::grpc::service_channel;
use payouts_runtime::stripe_dev::fake::FakeStripe;
use payouts_runtime::{ServiceName, Settings};

use crate::cli::DevAction;

pub async fn run(settings: &Settings, action: DevAction) -> anyhow::Result<()> {
    match action {
        DevAction::FakeStripe { addr } => fake_stripe(addr).await,
        DevAction::Creator {
            user_id,
            earned_cents,
            age_days,
        } => creator(settings, &user_id, earned_cents, age_days).await,
        DevAction::RequestPayout {
            user_id,
            cents,
            key,
        } => {
            let key = key.unwrap_or_else(|| format!("dev-{}", uuid::Uuid::new_v4().simple()));
            let response = payouts(settings)?
                .request_payout(pb::RequestPayoutRequest {
                    user_id,
                    amount: Some(Money {
                        cents,
                        currency: "usd".to_owned(),
                    }),
                    idempotency_key: key,
                })
                .await
                .map_err(|status| anyhow::anyhow!("RequestPayout: {}", status.message()))?
                .into_inner();
            let decision = response.decision.unwrap_or_default();
            match response.payout {
                Some(payout) => print_payout(&payout),
                None => println!("refused: {}", decision.reason),
            }
            Ok(())
        }
        DevAction::PayOut { account } => pay_out(settings, &account).await,
        DevAction::Payout { payout_id } => {
            let payout = payouts(settings)?
                .get_payout(pb::GetPayoutRequest { payout_id })
                .await
                .map_err(|status| anyhow::anyhow!("GetPayout: {}", status.message()))?
                .into_inner()
                .payout
                .context("no payout in the answer")?;
            print_payout(&payout);
            Ok(())
        }
    }
}

fn payouts(
    settings: &Settings,
) -> anyhow::Result<PayoutsServiceClient<payouts_runtime::grpc::TracedChannel>> {
    Ok(PayoutsServiceClient::new(service_channel(
        settings,
        ServiceName::Payouts,
    )?))
}

fn print_payout(payout: &pb::Payout) {
    let status = format!("{:?}", payout.status()).to_lowercase();
    println!(
        "payout {} for {}: {} cents, {status}{}",
        payout.id,
        payout.user_id,
        payout.amount.as_ref().map_or(0, |amount| amount.cents),
        if payout.stripe_transfer_id.is_empty() {
            String::new()
        } else {
            format!(", transfer {}", payout.stripe_transfer_id)
        }
    );
}

/// Asks the fake Stripe at STRIPE_API_BASE to pay `account`'s balance out to its bank, and
/// prints the bank payout with the trigger that announces it.
async fn pay_out(settings: &Settings, account: &str) -> anyhow::Result<()> {
    if !account.starts_with("acct_") {
        anyhow::bail!("the account must be a connected account id (acct_...), got {account:?}");
    }
    let key = settings
        .stripe_secret_key
        .as_ref()
        .context("STRIPE_SECRET_KEY is not set (the fake takes any sk_test_ key)")?;
    let base = settings.stripe_api_base.trim_end_matches('/');
    let response = reqwest::Client::new()
        .post(format!("{base}/_fake/accounts/{account}/payouts"))
        .bearer_auth(key.expose())
        .send()
        .await
        .with_context(|| format!("the fake Stripe at {base} did not answer"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        anyhow::bail!(
            "the fake Stripe refused ({status}): {}",
            body["error"]["message"].as_str().unwrap_or("no message")
        );
    }
    let id = body["id"].as_str().unwrap_or_default();
    println!(
        "bank payout {id} of {account}: {} cents, {}, reconciliation {}",
        body["amount"],
        body["status"].as_str().unwrap_or_default(),
        body["reconciliation_status"].as_str().unwrap_or_default()
    );
    println!(
        "the fake delivers payout.paid and payout.reconciliation_completed to the Connect endpoint \
         registered by setup-webhooks (or announce it by hand: payouts stripe trigger payout.paid \
         --account {account} --set data.object.id={id})"
    );
    Ok(())
}

async fn fake_stripe(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() {
        anyhow::bail!("--addr must be a loopback address: the fake Stripe takes any test key");
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let stripe = FakeStripe::serve(listener)?;
    println!("Fake Stripe (development only) at {}", stripe.url());
    println!("Point Payouts at it:");
    println!(
        "  export STRIPE_API_BASE={} STRIPE_SECRET_KEY=sk_test_local",
        stripe.url()
    );
    println!(
        "It delivers its events to the endpoints `payouts stripe setup-webhooks` registers with it."
    );
    println!(
        "A creator's bank pays out: payouts dev pay-out acct_<user> (POST {}/_fake/accounts/acct_<user>/payouts)",
        stripe.url()
    );
    println!("Ctrl-C stops it; everything it holds is forgotten.");
    tokio::signal::ctrl_c().await?;
    stripe.shutdown().await;
    Ok(())
}

async fn creator(
    settings: &Settings,
    user_id: &str,
    earned_cents: i64,
    age_days: i64,
) -> anyhow::Result<()> {
    let account = format!("acct_{user_id}");
    let created = chrono::Utc::now() - chrono::Duration::days(age_days);
    payouts(settings)?
        .register_account(pb::RegisterAccountRequest {
            user_id: user_id.to_owned(),
            stripe_account_id: account.clone(),
            account_created_at: Some(payouts_runtime::convert::timestamp(created)),
        })
        .await
        .map_err(|status| anyhow::anyhow!("RegisterAccount: {}", status.message()))?;
    DisputesServiceClient::new(service_channel(settings, ServiceName::Disputes)?)
        .record_allocation(RecordAllocationRequest {
            allocation_id: format!("alloc_{user_id}_{}", uuid::Uuid::new_v4().simple()),
            user_id: user_id.to_owned(),
            charge_id: format!("ch_dev_{user_id}"),
            amount: Some(Money {
                cents: earned_cents,
                currency: "usd".to_owned(),
            }),
            payer_id: format!("supporter_of_{user_id}"),
        })
        .await
        .map_err(|status| anyhow::anyhow!("RecordAllocation: {}", status.message()))?;
    println!("creator {user_id}: connected account {account}, {earned_cents} cents earned");
    Ok(())
}
