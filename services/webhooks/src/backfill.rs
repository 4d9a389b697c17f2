//! The backfill: events Stripe never delivered, found in its event list and stored in the
//! inbox as a delivery would store them.
//!
//! Stripe retries a failed delivery for 3 days and keeps events for 30. Every
//! `WEBHOOK_BACKFILL_INTERVAL` (10 minutes by default) one replica, under a lease, lists the
//! events created since its durable cursor whose deliveries did not all succeed
//! (`GET /v1/events?delivery_success=false`, pending retries included), of the types a
//! Payouts service applies: the platform's own (transfers, refunds, disputes) on the
//! platform, and the connected accounts' (bank payouts, account status), with
//! `Stripe-Account`, on every connected account with a payout in flight. An event listed
//! under an account carries that account. Each is stored under the endpoint its type
//! arrives on, with the delivery's dedupe by event id, and marked `source: backfill`; the
//! worker then processes it like any other.
//! A late delivery of the same event is a duplicate: it is applied once.
//!
//! The cursor moves to the start of the run less [`OVERLAP`]: an event too young to have had
//! its first delivery attempt when it was listed is listed again by the next run. The first
//! run reaches back [`RETENTION_DAYS`], all Stripe still holds.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use payouts_runtime::jobs::PeriodicJob;
use payouts_runtime::{Clock, Secret, ServiceError};
use serde_json::Value;

use crate::domain::{backfilled_types, connected_account_types};
use crate::inbox::{Inbox, Ingested};

/// How long Stripe keeps events (and so the furthest a backfill can reach).
pub const RETENTION_DAYS: i64 = 30;
/// How far before the last run's start the next run begins.
pub const OVERLAP: Duration = Duration::hours(1);
/// Pages of 100 events read per account and run at most (a runaway list is cut, with an
/// error: the cursor stays, and the next run tries again).
const MAX_PAGES: usize = 1_000;

/// One page of `GET /v1/events`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventPage {
    pub events: Vec<Value>,
    pub has_more: bool,
}

/// What the backfill asks of Stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventQuery {
    pub types: Vec<&'static str>,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub starting_after: Option<String>,
}

/// Stripe's event list.
#[async_trait]
pub trait StripeEvents: Send + Sync + 'static {
    /// One page (newest first) of undelivered events matching `query`, on the connected
    /// `account` when given.
    async fn undelivered(
        &self,
        account: Option<&str>,
        query: &EventQuery,
    ) -> Result<EventPage, ServiceError>;
}

/// The connected accounts with payouts in flight (the payouts service knows them).
#[async_trait]
pub trait AccountsInFlight: Send + Sync + 'static {
    async fn accounts_in_flight(&self) -> Result<Vec<String>, ServiceError>;
}

/// What a backfill did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackfillReport {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub listed: u32,
    pub stored: u32,
    pub duplicates: u32,
    pub accounts: u32,
}

pub struct Backfill {
    pub inbox: Arc<Inbox>,
    pub stripe: Arc<dyn StripeEvents>,
    pub accounts: Arc<dyn AccountsInFlight>,
    pub clock: Arc<dyn Clock>,
}

impl Backfill {
    /// The oldest `since` an admin may ask for at `now`.
    pub fn earliest(now: DateTime<Utc>) -> DateTime<Utc> {
        now - Duration::days(RETENTION_DAYS)
    }

    /// Backfills the events created from `since` until now.
    pub async fn run(&self, since: DateTime<Utc>) -> Result<BackfillReport, ServiceError> {
        let until = self.clock.now();
        let since = since.max(Self::earliest(until));
        let accounts = self.accounts.accounts_in_flight().await?;
        let mut report = BackfillReport {
            since,
            until,
            accounts: u32::try_from(accounts.len()).unwrap_or(u32::MAX),
            ..BackfillReport::default()
        };
        self.backfill_account(None, backfilled_types(), since, until, &mut report)
            .await?;
        for account in &accounts {
            self.backfill_account(
                Some(account),
                connected_account_types(),
                since,
                until,
                &mut report,
            )
            .await?;
        }
        metrics::counter!("payouts_webhooks_backfill_runs_total").increment(1);
        tracing::info!(
            since = %report.since, until = %report.until, listed = report.listed,
            stored = report.stored, accounts = report.accounts,
            "webhook backfill done"
        );
        Ok(report)
    }

    async fn backfill_account(
        &self,
        account: Option<&str>,
        types: Vec<&'static str>,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        report: &mut BackfillReport,
    ) -> Result<(), ServiceError> {
        let mut query = EventQuery {
            types,
            since,
            until,
            starting_after: None,
        };
        for _ in 0..MAX_PAGES {
            let page = self.stripe.undelivered(account, &query).await?;
            for event in &page.events {
                report.listed += 1;
                let event = attributed(event, account);
                let payload = serde_json::to_string(&event).map_err(|error| {
                    ServiceError::internal(anyhow::anyhow!("an event Stripe listed: {error}"))
                })?;
                match self.inbox.ingest_backfilled(payload).await {
                    Ok(Ingested::Accepted { .. }) => report.stored += 1,
                    Ok(Ingested::Duplicate { .. }) => report.duplicates += 1,
                    // Not an event we can read: logged, and the others are still stored.
                    Err(error) if error.kind() == payouts_runtime::ErrorKind::InvalidArgument => {
                        tracing::warn!(%error, "Stripe listed an event the inbox cannot read");
                    }
                    Err(error) => return Err(error),
                }
            }
            let last = page
                .events
                .last()
                .and_then(|event| event.get("id"))
                .and_then(Value::as_str);
            match (page.has_more, last) {
                (true, Some(last)) => query.starting_after = Some(last.to_owned()),
                _ => return Ok(()),
            }
        }
        Err(ServiceError::unavailable(
            "Stripe's event list never ended; the backfill will run again",
            anyhow::anyhow!("more than {MAX_PAGES} pages"),
        ))
    }
}

/// The event as listed, carrying the connected account it was listed under (`Stripe-Account`)
/// when it does not name one itself: it is that account's event, and the Connect endpoint
/// it is stored under takes only events with their account.
fn attributed(event: &Value, listed_under: Option<&str>) -> Value {
    let mut event = event.clone();
    if let Some(account) = listed_under {
        match event.get("account").and_then(Value::as_str) {
            Some(own) if !own.is_empty() => {
                if own != account {
                    tracing::warn!(
                        listed_under = account,
                        account = own,
                        "Stripe listed an event of another account; kept as it names itself"
                    );
                }
            }
            _ => event["account"] = Value::String(account.to_owned()),
        }
    }
    event
}

#[async_trait]
impl PeriodicJob for Backfill {
    async fn run_once(
        &self,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<Option<DateTime<Utc>>, ServiceError> {
        let since = cursor.unwrap_or_else(|| Self::earliest(self.clock.now()));
        let report = self.run(since).await?;
        Ok(Some(report.until - OVERLAP))
    }
}

/// async-stripe against `STRIPE_API_BASE`.
pub struct StripeEventsClient {
    client: stripe::Client,
}

impl StripeEventsClient {
    pub fn new(secret_key: &Secret, api_base: &str) -> anyhow::Result<Self> {
        let client = stripe::ClientBuilder::new(secret_key.expose())
            .url(format!("{api_base}/"))
            .timeout(StdDuration::from_secs(30))
            .build()
            .map_err(|error| anyhow::anyhow!("invalid Stripe configuration: {error}"))?;
        Ok(Self { client })
    }
}

#[async_trait]
impl StripeEvents for StripeEventsClient {
    async fn undelivered(
        &self,
        account: Option<&str>,
        query: &EventQuery,
    ) -> Result<EventPage, ServiceError> {
        use stripe_client_core::{RequestBuilder, StripeMethod};

        /// `GET /v1/events`' parameters, as Stripe's form encoding (`types[0]=...`).
        #[derive(serde::Serialize)]
        struct Created {
            gte: i64,
            lte: i64,
        }
        #[derive(serde::Serialize)]
        struct ListEvents<'a> {
            delivery_success: bool,
            limit: u8,
            created: Created,
            types: &'a [&'static str],
            #[serde(skip_serializing_if = "Option::is_none")]
            starting_after: Option<&'a str>,
        }
        let params = ListEvents {
            delivery_success: false,
            limit: 100,
            created: Created {
                gte: query.since.timestamp(),
                lte: query.until.timestamp(),
            },
            types: &query.types,
            starting_after: query.starting_after.as_deref(),
        };
        let unavailable = |what: String| {
            ServiceError::unavailable(
                "Stripe's event list could not be read; the backfill will run again",
                anyhow::anyhow!("{what}"),
            )
        };
        let mut request = RequestBuilder::new(StripeMethod::Get, "/events")
            .query(&params)
            .customize::<miniserde::json::Value>();
        if let Some(account) = account {
            let account: stripe::AccountId = account.parse().map_err(|_| {
                ServiceError::internal(anyhow::anyhow!("{account:?} is not a Stripe account id"))
            })?;
            request = request.account_id(account);
        }
        let value = request
            .send(&self.client)
            .await
            .map_err(|error| unavailable(error.to_string()))?;
        let page: Value = serde_json::from_str(&miniserde::json::to_string(&value))
            .map_err(|error| unavailable(format!("unreadable answer: {error}")))?;
        Ok(EventPage {
            events: page
                .get("data")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            has_more: page.get("has_more").and_then(Value::as_bool) == Some(true),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::attributed;

    #[test]
    fn an_event_listed_under_an_account_carries_that_account() {
        let bare = json!({ "id": "evt_1", "type": "payout.paid", "account": null });
        assert_eq!(
            attributed(&bare, Some("acct_1"))["account"],
            "acct_1",
            "filled in from Stripe-Account"
        );
        let missing = json!({ "id": "evt_1", "type": "payout.paid" });
        assert_eq!(attributed(&missing, Some("acct_1"))["account"], "acct_1");
        let own = json!({ "id": "evt_1", "type": "payout.paid", "account": "acct_2" });
        assert_eq!(attributed(&own, Some("acct_1"))["account"], "acct_2");
        let platform = json!({ "id": "evt_2", "type": "transfer.created", "account": null });
        assert_eq!(
            attributed(&platform, None),
            platform,
            "platform events untouched"
        );
    }
}
