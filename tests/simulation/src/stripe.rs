//! A simulated Stripe: the same ledger the HTTP fake uses (transfers in the fixtures' shape,
//! idempotency keys replayed as Stripe does, pruned after 24 hours; connected accounts and
//! their bank payouts), reached without a network and able to fail every way Stripe fails:
//! a definite refusal, a 429, a 5xx before or after the transfer is made, a timeout, an
//! answer lost after the transfer was made, a lookup that fails. Every change it makes is an
//! event in its outbox, which the scheduler delivers late, reordered, duplicated, or (for
//! the events the flow must never depend on) not at all.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use payouts_payouts::domain::StripeAccountStatus;
use payouts_payouts::payout::{SeenTransfer, StripeFailure, is_retryable_code};
use payouts_payouts::stripe::{
    BankPayout, ListedReversal, REVERSAL_INTENT_METADATA, StripeApi, TransferRequest,
    account_status_from_json, bank_payout_from_json, reversal_from_json, seen_from_json,
};
use payouts_runtime::Clock as _;
use payouts_runtime::clock::ManualClock;
use payouts_runtime::testing::stripe::fixture;
use payouts_runtime::testing::stripe_ledger::{AmountRefundedOnFailure, Ledger, error_body};
use serde_json::{Value, json};

use crate::chaos::Chaos;
use crate::stores::Hazard;

/// Stripe faults, in a thousand requests.
const RATE_LIMITED: u32 = 50;
const TIMEOUT_BEFORE: u32 = 40;
const DECLINED: u32 = 50;
const REFUSED: u32 = 10;
const ERROR_BEFORE: u32 = 40;
const ERROR_AFTER: u32 = 40;
const ANSWER_LOST: u32 = 50;
const LOOKUP_FAILS: u32 = 80;
/// Admin reversals are few; the answer of one is lost often enough that the retry after a
/// lost answer (issue 21's double reversal) happens in most runs that reverse.
const REVERSAL_ANSWER_LOST: u32 = 200;

/// A request Stripe has not received this long after it was sent never reaches it, and an
/// answer that comes later than this is never read: the client has given up (its timeout is
/// 20 s). Without this, a request could wander in the network for days.
const REQUEST_TIMEOUT: Duration = Duration::seconds(60);

/// An event Stripe has to deliver.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub id: String,
    pub event_type: String,
    pub payload: String,
    /// Events the flow must not depend on (it learns the same from Stripe's answers and
    /// lookups): these may be lost for good. Every other event is retried by Stripe until
    /// it is acknowledged, however late.
    pub droppable: bool,
}

#[derive(Default)]
struct State {
    ledger: Ledger,
    outbox: Vec<Outgoing>,
    /// Events Stripe gave up delivering: never delivered, still listed by `GET /v1/events`
    /// (`delivery_success=false`) for the backfill to find.
    lost: Vec<Outgoing>,
    events: u64,
    /// When each idempotency key was first used (Stripe prunes keys after 24 hours).
    keys: BTreeMap<String, DateTime<Utc>>,
    /// Transfers that failed (legacy API): their money came back.
    failed: BTreeSet<String>,
    /// What Stripe did, for the trace.
    log: Vec<String>,
    /// What each event about a supporter's charge tells whoever applies it.
    news: BTreeMap<String, News>,
    /// Transfers made by the request being served (id, idempotency key), for the pause watch.
    made: Vec<(String, String)>,
}

/// What an event about a supporter's charge tells: which refunds of the charge it makes
/// known (a refund object: itself; a charge object: every refund made by then, which its
/// `amount_refunded` sums and Stripe's refund list names), and whether it says the dispute
/// was lost. The Stripe-truth invariant counts, for each charge, the refunds and lost
/// disputes the events applied so far made known, at the refunds' status in Stripe now.
#[derive(Debug, Clone, Default)]
pub struct News {
    pub charge: String,
    pub refunds: Vec<String>,
    pub lost: bool,
}

/// The simulated Stripe.
#[derive(Clone)]
pub struct SimStripe {
    state: Arc<Mutex<State>>,
    hazard: Hazard,
    clock: ManualClock,
}

fn declined(code: &str, retryable: bool) -> StripeFailure {
    StripeFailure::Declined {
        code: code.to_owned(),
        message: format!("simulated {code}"),
        retryable,
    }
}

fn unknown(what: &str) -> StripeFailure {
    StripeFailure::Unknown {
        message: format!("simulated {what}"),
    }
}

/// What the client makes of a stored answer.
fn answer(status: u16, body: &str) -> Result<SeenTransfer, StripeFailure> {
    let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    if status == 200 {
        return seen_from_json(&body).ok_or_else(|| unknown("unreadable answer"));
    }
    let code = body["error"]["code"].as_str().unwrap_or("api_error");
    if status >= 500 || body["error"]["type"] == "idempotency_error" {
        return Err(unknown(&format!("{status} {code}")));
    }
    Err(declined(code, is_retryable_code(code)))
}

impl SimStripe {
    pub fn new(hazard: Hazard, clock: ManualClock) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
            hazard,
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn chaos(&self) -> &Chaos {
        &self.hazard.chaos
    }

    /// Queues an event about `object`.
    fn emit(
        state: &mut State,
        event_type: &str,
        account: Option<&str>,
        object: Value,
        now: DateTime<Utc>,
        droppable: bool,
    ) {
        state.events += 1;
        let id = format!("evt_sim_{:05}", state.events);
        let mut event = fixture("event");
        event["id"] = json!(id);
        event["type"] = json!(event_type);
        event["created"] = json!(now.timestamp());
        event["livemode"] = json!(false);
        event["api_version"] = json!("2024-12-18.acacia");
        event["data"] = json!({ "object": object });
        event["account"] = account.map_or(Value::Null, |account| json!(account));
        state.outbox.push(Outgoing {
            id,
            event_type: event_type.to_owned(),
            payload: event.to_string(),
            droppable,
        });
    }

    /// Stripe sends news of a supporter's charge (a platform event: refunds, disputes).
    pub fn charge_event(&self, event_type: &str, object: Value, news: News) {
        let now = self.clock.now();
        let mut state = self.lock();
        Self::emit(&mut state, event_type, None, object, now, true);
        let id = format!("evt_sim_{:05}", state.events);
        state.news.insert(id, news);
    }

    /// What Stripe does to `amount_refunded` when a refund fails (its documentation does
    /// not say: each run picks one).
    pub fn set_amount_refunded_on_failure(&self, behaviour: AmountRefundedOnFailure) {
        self.lock().ledger.set_amount_refunded_on_failure(behaviour);
    }

    /// A supporter's captured charge.
    pub fn create_charge(&self, id: &str, cents: i64) {
        let now = self.clock.now();
        self.lock()
            .ledger
            .create_charge_as(id, cents, "usd", now.timestamp());
    }

    /// A refund of `cents` of a charge in `status`: the refund and the charge after it, or
    /// None when there is nothing left to refund.
    pub fn refund(&self, charge_id: &str, cents: i64, status: &str) -> Option<(Value, Value)> {
        let now = self.clock.now();
        self.lock()
            .ledger
            .create_refund(charge_id, Some(cents), status, now.timestamp())
            .ok()
    }

    /// A refund moves to `status`: the refund and its charge after it.
    pub fn set_refund_status(&self, refund_id: &str, status: &str) -> Option<(Value, Value)> {
        self.lock().ledger.set_refund_status(refund_id, status)
    }

    /// The refunds of a charge as Stripe holds them now.
    pub fn refunds_of(&self, charge_id: &str) -> Vec<Value> {
        self.lock()
            .ledger
            .list_refunds(Some(charge_id))
            .unwrap_or_default()
    }

    /// What the event `event_id` tells about a supporter's charge, if it is such an event.
    pub fn news(&self, event_id: &str) -> Option<News> {
        self.lock().news.get(event_id).cloned()
    }

    /// Whether Stripe told of the charge's dispute as lost.
    pub fn lost(&self, charge_id: &str) -> bool {
        self.lock()
            .news
            .values()
            .any(|news| news.charge == charge_id && news.lost)
    }

    /// Every reversal Stripe holds of every transfer.
    pub fn reversals(&self) -> Vec<Value> {
        let state = self.lock();
        state
            .ledger
            .transfers()
            .iter()
            .filter_map(|t| t["id"].as_str())
            .flat_map(|id| state.ledger.reversals_of(id).unwrap_or_default())
            .collect()
    }

    /// The automatic bank payout's reconciliation completes:
    /// `payout.reconciliation_completed` (false when it already had).
    pub fn reconcile(&self, bank_payout_id: &str, account: &str) -> bool {
        let now = self.clock.now();
        let mut state = self.lock();
        let Some(payout) = state.ledger.reconcile(bank_payout_id) else {
            return false;
        };
        Self::emit(
            &mut state,
            "payout.reconciliation_completed",
            Some(account),
            payout,
            now,
            false,
        );
        true
    }

    /// What Stripe did since the last call, for the trace.
    pub fn drain_log(&self) -> Vec<String> {
        std::mem::take(&mut self.lock().log)
    }

    // ---- What Stripe does on its own (steps of the scheduler) ----

    /// Events waiting for delivery.
    pub fn outbox(&self) -> Vec<Outgoing> {
        self.lock().outbox.clone()
    }

    /// The event was acknowledged: Stripe stops delivering it.
    pub fn acknowledged(&self, event_id: &str) {
        self.lock().outbox.retain(|event| event.id != event_id);
    }

    /// Stripe gives up delivering the event: it stays in the event list, undelivered.
    pub fn lose(&self, event_id: &str) {
        let mut state = self.lock();
        if let Some(at) = state.outbox.iter().position(|event| event.id == event_id) {
            let event = state.outbox.remove(at);
            state.lost.push(event);
        }
    }

    /// Every transfer Stripe made.
    pub fn transfers(&self) -> Vec<Value> {
        self.lock().ledger.transfers().to_vec()
    }

    pub fn is_failed(&self, transfer_id: &str) -> bool {
        self.lock().failed.contains(transfer_id)
    }

    /// Pays a connected account's balance out to its bank (status paid): `payout.paid`, and
    /// for some of the transfers it carried a legacy `transfer.paid`.
    pub fn pay_out(&self, account: &str) -> Option<String> {
        let now = self.clock.now();
        let mut state = self.lock();
        let payout = state.ledger.pay_out(account, now.timestamp())?;
        let id = payout["id"].as_str().unwrap_or_default().to_owned();
        let carried: Vec<Value> = state
            .ledger
            .transfers()
            .iter()
            .filter(|t| t["destination"] == account)
            .filter(|t| {
                t["destination_payment"]
                    .as_str()
                    .is_some_and(|payment| state.ledger.paid_out(payment))
            })
            .cloned()
            .collect();
        Self::emit(&mut state, "payout.paid", Some(account), payout, now, false);
        for transfer in carried {
            if self.chaos().chance(200) {
                Self::emit(&mut state, "transfer.paid", None, transfer, now, false);
            }
        }
        Some(id)
    }

    /// A bank payout fails (also after it was paid).
    pub fn fail_bank_payout(&self, bank_payout_id: &str, account: &str) -> bool {
        let now = self.clock.now();
        let mut state = self.lock();
        let Some(payout) = state
            .ledger
            .fail_bank_payout(bank_payout_id, "account_closed")
        else {
            return false;
        };
        Self::emit(
            &mut state,
            "payout.failed",
            Some(account),
            payout,
            now,
            false,
        );
        true
    }

    /// Reverses part (or all) of a transfer.
    pub fn reverse(&self, transfer_id: &str, cents: i64) -> bool {
        let now = self.clock.now();
        let mut state = self.lock();
        if state.failed.contains(transfer_id) {
            return false;
        }
        let Some(transfer) = state.ledger.reverse(transfer_id, cents) else {
            return false;
        };
        Self::emit(&mut state, "transfer.reversed", None, transfer, now, false);
        true
    }

    /// A transfer fails before its money reached the bank (legacy API): the money comes
    /// back and `transfer.failed` is sent.
    pub fn fail_transfer(&self, transfer_id: &str) -> bool {
        let now = self.clock.now();
        let mut state = self.lock();
        let Some(transfer) = state.ledger.transfer(transfer_id) else {
            return false;
        };
        let payment = transfer["destination_payment"].as_str().unwrap_or_default();
        let amount = transfer["amount"].as_i64().unwrap_or(0);
        let live = transfer["amount_reversed"].as_i64().unwrap_or(0) < amount;
        if !live || state.ledger.paid_out(payment) || state.failed.contains(transfer_id) {
            return false;
        }
        state.failed.insert(transfer_id.to_owned());
        let mut failed = state
            .ledger
            .reverse(transfer_id, amount)
            .unwrap_or(transfer);
        failed["failure_code"] = json!("insufficient_funds");
        failed["failure_message"] = json!("simulated failure");
        Self::emit(&mut state, "transfer.failed", None, failed, now, false);
        true
    }

    /// Stripe turns payouts of a connected account on or off: `account.updated`.
    pub fn set_payouts_enabled(&self, account: &str, enabled: bool) {
        let now = self.clock.now();
        let mut state = self.lock();
        state.ledger.set_payouts_enabled(account, enabled);
        let object = state.ledger.account(account);
        Self::emit(
            &mut state,
            "account.updated",
            Some(account),
            object,
            now,
            false,
        );
    }

    /// Forgets idempotency keys older than 24 hours, as Stripe does.
    fn prune_keys(state: &mut State, now: DateTime<Utc>) {
        let old: Vec<String> = state
            .keys
            .iter()
            .filter(|(_, first)| now - **first > Duration::hours(24))
            .map(|(key, _)| key.clone())
            .collect();
        for key in old {
            state.keys.remove(&key);
            state.ledger.forget_reply(&key);
        }
    }

    /// Parks at `point` (the request on its way); whether the client had given up by then.
    async fn late(&self, sent: DateTime<Utc>, point: &'static str) -> bool {
        self.hazard.gate.point(point).await;
        self.clock.now() - sent > REQUEST_TIMEOUT
    }

    fn params(request: &TransferRequest) -> Vec<(String, String)> {
        vec![
            ("amount".to_owned(), request.amount.cents.to_string()),
            ("currency".to_owned(), request.amount.currency.to_string()),
            ("destination".to_owned(), request.destination.clone()),
            ("transfer_group".to_owned(), request.transfer_group.clone()),
            (
                "description".to_owned(),
                format!("Payout {}", request.payout_id),
            ),
            ("metadata[payout_id]".to_owned(), request.payout_id.clone()),
            ("metadata[user_id]".to_owned(), request.user_id.clone()),
            ("metadata[attempt]".to_owned(), request.attempt.to_string()),
        ]
    }

    fn create(
        state: &mut State,
        params: &[(String, String)],
        key: &str,
        status: u16,
        now: DateTime<Utc>,
    ) -> Value {
        let transfer = state.ledger.create_transfer(params, now.timestamp());
        let line = format!(
            "  stripe makes {} under {key}",
            transfer["id"].as_str().unwrap_or_default()
        );
        state.log.push(line);
        state.made.push((
            transfer["id"].as_str().unwrap_or_default().to_owned(),
            key.to_owned(),
        ));
        let body = if status == 200 {
            transfer.to_string()
        } else {
            error_body(
                status,
                "api_error",
                "simulated failure after the transfer was made",
            )
        };
        state.ledger.remember(key, params, status, &body);
        Self::emit(state, "transfer.created", None, transfer.clone(), now, true);
        transfer
    }
}

#[async_trait]
impl StripeApi for SimStripe {
    async fn create_transfer(
        &self,
        request: &TransferRequest,
    ) -> Result<SeenTransfer, StripeFailure> {
        let sent = self.clock.now();
        self.hazard.gate.point("stripe.create_transfer").await;
        let now = self.clock.now();
        if now - sent > REQUEST_TIMEOUT {
            return Err(unknown("timeout: the request never reached Stripe"));
        }
        let params = Self::params(request);
        let key = request.idempotency_key.as_str();
        let replayed = self.lock().ledger.replay(key, &params).is_some();
        let result = {
            let mut state = self.lock();
            Self::prune_keys(&mut state, now);
            state.keys.entry(key.to_owned()).or_insert(now);
            if let Some((status, body)) = state.ledger.replay(key, &params) {
                answer(status, &body)
            } else if self.chaos().fault("stripe 429", RATE_LIMITED) {
                Err(StripeFailure::NotExecuted {
                    code: "rate_limit".to_owned(),
                    message: "simulated 429".to_owned(),
                })
            } else if self
                .chaos()
                .fault("stripe timeout before the request", TIMEOUT_BEFORE)
            {
                state.keys.remove(key);
                Err(unknown("timeout"))
            } else if self.chaos().fault("stripe declined", DECLINED) {
                let body = error_body(400, "balance_insufficient", "simulated");
                state.ledger.remember(key, &params, 400, &body);
                Err(declined("balance_insufficient", true))
            } else if self.chaos().fault("stripe refused", REFUSED) {
                let body = error_body(400, "account_invalid", "simulated");
                state.ledger.remember(key, &params, 400, &body);
                Err(declined("account_invalid", false))
            } else if self
                .chaos()
                .fault("stripe 500 before the transfer", ERROR_BEFORE)
            {
                let body = error_body(500, "api_error", "simulated");
                state.ledger.remember(key, &params, 500, &body);
                Err(unknown("500"))
            } else if self
                .chaos()
                .fault("stripe 500 after the transfer", ERROR_AFTER)
            {
                Self::create(&mut state, &params, key, 500, now);
                Err(unknown("500 after the transfer was made"))
            } else if self.chaos().fault("stripe answer lost", ANSWER_LOST) {
                Self::create(&mut state, &params, key, 200, now);
                Err(unknown("lost answer"))
            } else {
                let transfer = Self::create(&mut state, &params, key, 200, now);
                seen_from_json(&transfer).ok_or_else(|| unknown("unreadable answer"))
            }
        };
        let made = std::mem::take(&mut self.lock().made);
        for (transfer, key) in made {
            self.hazard
                .watch
                .transfer_made(self.hazard.gate.current(), &transfer, &key);
        }
        {
            let mut state = self.lock();
            let line = format!(
                "  stripe {} {key}: {}",
                if replayed { "replays" } else { "answers" },
                match &result {
                    Ok(seen) => format!("created {}", seen.id),
                    Err(failure) => failure.describe(),
                }
            );
            state.log.push(line);
        }
        // A crash here is an answer lost after Stripe acted.
        self.hazard
            .gate
            .point("stripe.create_transfer.answer")
            .await;
        result
    }

    async fn reverse_transfer(
        &self,
        request: &payouts_payouts::stripe::ReversalRequest,
    ) -> Result<String, StripeFailure> {
        let sent = self.clock.now();
        if self.late(sent, "stripe.reverse_transfer").await {
            return Err(unknown("timeout: the request never reached Stripe"));
        }
        let now = self.clock.now();
        let params = vec![
            ("amount".to_owned(), request.cents.to_string()),
            ("metadata[payout_id]".to_owned(), request.payout_id.clone()),
            ("metadata[requested_by]".to_owned(), request.actor.clone()),
            (
                format!("metadata[{REVERSAL_INTENT_METADATA}]"),
                request.intent_id.clone(),
            ),
        ];
        let key = format!("reversal:{}", request.idempotency_key);
        let (status, body, lost) = {
            let mut state = self.lock();
            Self::prune_keys(&mut state, now);
            state.keys.entry(key.clone()).or_insert(now);
            match state.ledger.replay(&key, &params) {
                Some((status, body)) => (status, body, false),
                None if self
                    .chaos()
                    .fault("stripe 500 before the reversal", ERROR_BEFORE) =>
                {
                    let body = error_body(500, "api_error", "simulated");
                    state.ledger.remember(&key, &params, 500, &body);
                    (500, body, false)
                }
                None => {
                    let answer = match state.ledger.create_reversal(
                        &request.transfer_id,
                        &params,
                        now.timestamp(),
                    ) {
                        Ok(reversal) => (200, reversal.to_string()),
                        Err((status, code, message)) => {
                            (status, error_body(status, code, &message))
                        }
                    };
                    state.ledger.remember(&key, &params, answer.0, &answer.1);
                    if answer.0 == 200
                        && let Some(transfer) = state.ledger.transfer(&request.transfer_id)
                    {
                        Self::emit(&mut state, "transfer.reversed", None, transfer, now, false);
                    }
                    let lost = answer.0 == 200
                        && self
                            .chaos()
                            .fault("stripe reversal answer lost", REVERSAL_ANSWER_LOST);
                    (answer.0, answer.1, lost)
                }
            }
        };
        self.lock()
            .log
            .push(format!("  stripe reversal {key}: {status} lost={lost}"));
        // A crash here is an answer lost after Stripe acted.
        self.hazard
            .gate
            .point("stripe.reverse_transfer.answer")
            .await;
        if lost || self.clock.now() - sent > REQUEST_TIMEOUT {
            return Err(unknown("lost answer"));
        }
        if status != 200 {
            let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let code = body["error"]["code"].as_str().unwrap_or("api_error");
            if status >= 500 || body["error"]["type"] == "idempotency_error" {
                return Err(unknown(&format!("{status} {code}")));
            }
            return Err(declined(code, false));
        }
        let reversal: Value =
            serde_json::from_str(&body).map_err(|_| unknown("unreadable answer"))?;
        Ok(reversal["id"].as_str().unwrap_or_default().to_owned())
    }

    async fn list_reversals(
        &self,
        transfer_id: &str,
    ) -> Result<Vec<ListedReversal>, StripeFailure> {
        if self.late(self.clock.now(), "stripe.list_reversals").await {
            return Err(unknown("timeout"));
        }
        if self.chaos().fault("stripe lookup failed", LOOKUP_FAILS) {
            return Err(unknown("timeout"));
        }
        match self.lock().ledger.reversals_of(transfer_id) {
            Some(reversals) => Ok(reversals.iter().filter_map(reversal_from_json).collect()),
            None => Err(declined("resource_missing", false)),
        }
    }

    async fn find_transfers(
        &self,
        transfer_group: &str,
    ) -> Result<Vec<SeenTransfer>, StripeFailure> {
        if self.late(self.clock.now(), "stripe.find_transfers").await {
            return Err(unknown("timeout"));
        }
        if self.chaos().fault("stripe lookup failed", LOOKUP_FAILS) {
            return Err(if self.chaos().chance(500) {
                StripeFailure::NotExecuted {
                    code: "rate_limit".to_owned(),
                    message: "simulated 429".to_owned(),
                }
            } else {
                unknown("lookup timeout")
            });
        }
        Ok(self
            .lock()
            .ledger
            .list_transfers(Some(transfer_group))
            .iter()
            .filter_map(seen_from_json)
            .collect())
    }

    async fn retrieve_transfer(&self, transfer_id: &str) -> Result<SeenTransfer, StripeFailure> {
        if self
            .late(self.clock.now(), "stripe.retrieve_transfer")
            .await
        {
            return Err(unknown("timeout"));
        }
        if self.chaos().fault("stripe lookup failed", LOOKUP_FAILS) {
            return Err(unknown("timeout"));
        }
        let transfer = self.lock().ledger.transfer(transfer_id);
        match transfer {
            Some(transfer) => seen_from_json(&transfer).ok_or_else(|| unknown("unreadable")),
            None => Err(declined("resource_missing", false)),
        }
    }

    async fn retrieve_account(
        &self,
        account_id: &str,
    ) -> Result<StripeAccountStatus, StripeFailure> {
        if self.late(self.clock.now(), "stripe.retrieve_account").await {
            return Err(unknown("timeout"));
        }
        if self.chaos().fault("stripe lookup failed", LOOKUP_FAILS) {
            return Err(unknown("timeout"));
        }
        Ok(account_status_from_json(
            &self.lock().ledger.account(account_id),
        ))
    }

    async fn list_transfers(
        &self,
        since: chrono::DateTime<chrono::Utc>,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<payouts_payouts::reconcile::ListedTransfer>, StripeFailure> {
        if self.late(self.clock.now(), "stripe.list_transfers").await {
            return Err(unknown("timeout"));
        }
        if self.chaos().fault("stripe lookup failed", LOOKUP_FAILS) {
            return Err(unknown("timeout"));
        }
        let (since, until) = (since.timestamp(), until.timestamp());
        Ok(self
            .lock()
            .ledger
            .list_transfers(None)
            .iter()
            .filter(|t| {
                let created = t["created"].as_i64().unwrap_or(0);
                since <= created && created <= until
            })
            .filter_map(payouts_payouts::stripe::listed_from_json)
            .collect())
    }

    async fn retrieve_bank_payout(
        &self,
        account_id: &str,
        bank_payout_id: &str,
    ) -> Result<BankPayout, StripeFailure> {
        if self.late(self.clock.now(), "stripe.retrieve_payout").await {
            return Err(unknown("timeout"));
        }
        if self.chaos().fault("stripe lookup failed", LOOKUP_FAILS) {
            return Err(unknown("timeout"));
        }
        let payout = self
            .lock()
            .ledger
            .retrieve_bank_payout(account_id, bank_payout_id);
        match payout {
            Some(payout) => bank_payout_from_json(&payout).ok_or_else(|| unknown("unreadable")),
            None => Err(declined("resource_missing", false)),
        }
    }

    /// As Stripe answers: before the payout's reconciliation completed the list may be
    /// partial; a manual payout's cannot be listed.
    async fn bank_payout_sources(
        &self,
        account_id: &str,
        bank_payout_id: &str,
    ) -> Result<Vec<String>, StripeFailure> {
        if self
            .late(self.clock.now(), "stripe.balance_transactions")
            .await
        {
            return Err(unknown("timeout"));
        }
        if self.chaos().fault("stripe lookup failed", LOOKUP_FAILS) {
            return Err(unknown("timeout"));
        }
        match self
            .lock()
            .ledger
            .list_balance_transactions(account_id, bank_payout_id)
        {
            Ok(transactions) => Ok(transactions
                .iter()
                .filter_map(|t| t["source"].as_str().map(str::to_owned))
                .collect()),
            Err((_, code, _)) => Err(declined(code, false)),
        }
    }
}

/// The disputes service's refund lookups (`GET /v1/refunds?charge=`).
#[async_trait]
impl payouts_disputes::ports::StripeRefunds for SimStripe {
    async fn refunds_of(
        &self,
        charge_id: &str,
    ) -> Result<Vec<payouts_disputes::charges::RefundNews>, payouts_runtime::ServiceError> {
        if self.late(self.clock.now(), "stripe.list_refunds").await
            || self
                .chaos()
                .fault("stripe refund list failed", LOOKUP_FAILS)
        {
            return Err(payouts_runtime::ServiceError::unavailable(
                "Stripe's refunds could not be read",
                anyhow::anyhow!("simulated timeout"),
            ));
        }
        let refunds = self.lock().ledger.list_refunds(Some(charge_id));
        let Some(refunds) = refunds else {
            return Err(payouts_runtime::ServiceError::failed_precondition(format!(
                "no such charge: {charge_id}"
            )));
        };
        refunds
            .iter()
            .map(|refund| payouts_disputes::charges::refund_news(refund, charge_id))
            .collect()
    }

    /// `GET /v1/charges/{id}`: the charge as the ledger holds it now.
    async fn charge(
        &self,
        charge_id: &str,
    ) -> Result<payouts_disputes::charges::ChargeAmounts, payouts_runtime::ServiceError> {
        if self.late(self.clock.now(), "stripe.retrieve_charge").await
            || self
                .chaos()
                .fault("stripe charge lookup failed", LOOKUP_FAILS)
        {
            return Err(payouts_runtime::ServiceError::unavailable(
                "Stripe's charge could not be read",
                anyhow::anyhow!("simulated timeout"),
            ));
        }
        let charge = self.lock().ledger.charge(charge_id);
        let Some(charge) = charge else {
            return Err(payouts_runtime::ServiceError::failed_precondition(format!(
                "no such charge: {charge_id}"
            )));
        };
        payouts_disputes::charges::charge_amounts(&charge)
    }
}

/// `GET /v1/events?delivery_success=false`: the events still being retried and those Stripe
/// gave up on, newest first, by type, account and creation time, in pages of 100.
#[async_trait]
impl payouts_webhooks::backfill::StripeEvents for SimStripe {
    async fn undelivered(
        &self,
        account: Option<&str>,
        query: &payouts_webhooks::backfill::EventQuery,
    ) -> Result<payouts_webhooks::backfill::EventPage, payouts_runtime::ServiceError> {
        if self.late(self.clock.now(), "stripe.list_events").await
            || self.chaos().fault("stripe event list failed", LOOKUP_FAILS)
        {
            return Err(payouts_runtime::ServiceError::unavailable(
                "Stripe's event list could not be read",
                anyhow::anyhow!("simulated timeout"),
            ));
        }
        let state = self.lock();
        let mut events: Vec<Value> = state
            .outbox
            .iter()
            .chain(&state.lost)
            .filter_map(|event| serde_json::from_str::<Value>(&event.payload).ok())
            .filter(|event| event["account"].as_str() == account)
            .filter(|event| {
                let created = event["created"].as_i64().unwrap_or(0);
                query.since.timestamp() <= created && created <= query.until.timestamp()
            })
            .filter(|event| {
                query
                    .types
                    .contains(&event["type"].as_str().unwrap_or_default())
            })
            .collect();
        events.sort_by(|a, b| {
            (b["created"].as_i64(), b["id"].as_str())
                .cmp(&(a["created"].as_i64(), a["id"].as_str()))
        });
        let start = query
            .starting_after
            .as_ref()
            .and_then(|after| {
                events
                    .iter()
                    .position(|event| event["id"] == after.as_str())
            })
            .map_or(0, |at| at + 1);
        let page: Vec<Value> = events.iter().skip(start).take(100).cloned().collect();
        let has_more = start + page.len() < events.len();
        Ok(payouts_webhooks::backfill::EventPage {
            events: page,
            has_more,
        })
    }
}
