//! What a Stripe account holds, as the fakes of Stripe need it: transfers (in the shape of
//! Stripe's fixtures), the first answer given under each idempotency key, connected
//! accounts and their bank payouts with the balance transactions they carried, and charges
//! with their refunds. One model,
//! shared by the HTTP fake (`fake_stripe`) and the deterministic simulation, so both speak
//! the same Stripe.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::fixture;

/// The first answer Stripe gave under an idempotency key, with the parameters it was for.
#[derive(Debug, Clone)]
struct Reply {
    params: Vec<(String, String)>,
    status: u16,
    body: String,
}

/// A connected account's state.
#[derive(Debug, Clone)]
struct Account {
    payouts_enabled: bool,
}

/// A creator's bank payout and the payments it carried.
#[derive(Debug, Clone)]
struct BankPayout {
    object: Value,
    account: String,
    sources: Vec<String>,
}

/// The state of a (fake) Stripe platform account.
#[derive(Debug, Default)]
pub struct Ledger {
    transfers: Vec<Value>,
    /// Transfer reversals (the API's and the Dashboard's), oldest first.
    reversals: Vec<Value>,
    replies: BTreeMap<String, Reply>,
    accounts: BTreeMap<String, Account>,
    bank_payouts: BTreeMap<String, BankPayout>,
    /// Destination payments already carried by a bank payout.
    paid_out: BTreeSet<String>,
    counter: u64,
    /// Charges (platform payments) by id, with their refunds.
    charges: BTreeMap<String, Charge>,
    /// What a refund's failure does to its charge's `amount_refunded`.
    on_refund_failure: AmountRefundedOnFailure,
}

/// What Stripe does to a charge's `amount_refunded` when one of its refunds fails or is
/// canceled. Its documentation does not say (https://docs.stripe.com/api/charges/object,
/// https://docs.stripe.com/refunds#failed-refunds), so the fake does either, as told.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AmountRefundedOnFailure {
    /// `amount_refunded` keeps counting the failed refund.
    #[default]
    Stays,
    /// `amount_refunded` drops by the failed refund's amount.
    Lowered,
}

/// A charge and its refunds (oldest first), in Stripe's shapes.
#[derive(Debug, Clone)]
struct Charge {
    object: Value,
    refunds: Vec<Value>,
}

/// Whether a refund in `status` takes money from its charge (Stripe: every status but
/// `failed` and `canceled`; https://docs.stripe.com/api/refunds/object).
fn refund_counts(status: &str) -> bool {
    !matches!(status, "failed" | "canceled")
}

/// A Stripe error body.
pub fn error_body(status: u16, code: &str, message: &str) -> String {
    let kind = if status >= 500 {
        "api_error"
    } else if code == "idempotency_key_in_use" {
        "idempotency_error"
    } else {
        "invalid_request_error"
    };
    json!({ "error": { "type": kind, "code": code, "message": message } }).to_string()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn id_of(object: &Value) -> String {
    object["id"].as_str().unwrap_or_default().to_owned()
}

fn sorted(params: &[(String, String)]) -> Vec<(String, String)> {
    let mut params = params.to_vec();
    params.sort();
    params
}

impl Ledger {
    fn next(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}_fake_{}", self.counter)
    }

    /// The answer stored under `key`, to replay: the first answer for the same parameters, an
    /// `idempotency_error` for other ones; `None` when the key is new. Parameters compare as
    /// Stripe compares them, by name and value, not by order (clients send `metadata` from a
    /// hash map, in any order).
    pub fn replay(&self, key: &str, params: &[(String, String)]) -> Option<(u16, String)> {
        let reply = self.replies.get(key)?;
        if reply.params != sorted(params) {
            return Some((
                400,
                json!({ "error": {
                    "type": "idempotency_error",
                    "code": "idempotency_key_in_use",
                    "message": "Keys for idempotent requests can only be used with the same parameters they were first used with."
                } })
                .to_string(),
            ));
        }
        Some((reply.status, reply.body.clone()))
    }

    /// Stores the first answer under `key` (Stripe stores errors too).
    pub fn remember(&mut self, key: &str, params: &[(String, String)], status: u16, body: &str) {
        self.replies.entry(key.to_owned()).or_insert_with(|| Reply {
            params: sorted(params),
            status,
            body: body.to_owned(),
        });
    }

    /// Forgets every stored answer (Stripe prunes keys after 24 hours).
    pub fn forget_replies(&mut self) {
        self.replies.clear();
    }

    /// Forgets the answer stored under one key.
    pub fn forget_reply(&mut self, key: &str) {
        self.replies.remove(key);
    }

    /// Whether a bank payout already carried this destination payment.
    pub fn paid_out(&self, payment: &str) -> bool {
        self.paid_out.contains(payment)
    }

    /// Makes a transfer from `POST /v1/transfers` parameters (form fields, `metadata[...]`).
    pub fn create_transfer(&mut self, params: &[(String, String)], created: i64) -> Value {
        let id = self.next("tr");
        let payment = self.next("py");
        let mut transfer = fixture("transfer");
        transfer["id"] = json!(id);
        transfer["amount"] = json!(
            param(params, "amount")
                .and_then(|amount| amount.parse::<i64>().ok())
                .unwrap_or(0)
        );
        transfer["currency"] = json!(param(params, "currency").unwrap_or_default());
        transfer["destination"] = json!(param(params, "destination").unwrap_or_default());
        transfer["destination_payment"] = json!(payment);
        transfer["transfer_group"] =
            param(params, "transfer_group").map_or(Value::Null, |group| json!(group));
        transfer["description"] = param(params, "description").map_or(Value::Null, |d| json!(d));
        transfer["created"] = json!(created);
        transfer["balance_transaction"] = json!(self.next("txn"));
        transfer["reversals"]["url"] = json!(format!("/v1/transfers/{id}/reversals"));
        let metadata: serde_json::Map<String, Value> = params
            .iter()
            .filter_map(|(key, value)| {
                let name = key.strip_prefix("metadata[")?.strip_suffix(']')?;
                Some((name.to_owned(), json!(value)))
            })
            .collect();
        transfer["metadata"] = Value::Object(metadata);
        self.transfers.push(transfer.clone());
        transfer
    }

    /// Every transfer made, oldest first.
    pub fn transfers(&self) -> &[Value] {
        &self.transfers
    }

    /// Transfers of a transfer group (every transfer without one), newest first as Stripe lists.
    pub fn list_transfers(&self, group: Option<&str>) -> Vec<Value> {
        self.transfers
            .iter()
            .rev()
            .filter(|t| group.is_none_or(|group| t["transfer_group"].as_str() == Some(group)))
            .cloned()
            .collect()
    }

    /// Changes a transfer in place; false when there is none.
    pub fn edit_transfer(&mut self, id: &str, edit: impl FnOnce(&mut Value)) -> bool {
        match self.transfers.iter_mut().find(|t| t["id"] == id) {
            Some(transfer) => {
                edit(transfer);
                true
            }
            None => false,
        }
    }

    /// Forgets a transfer; false when there is none.
    pub fn remove_transfer(&mut self, id: &str) -> bool {
        let before = self.transfers.len();
        self.transfers.retain(|t| t["id"] != id);
        self.transfers.len() < before
    }

    pub fn transfer(&self, id: &str) -> Option<Value> {
        self.transfers.iter().find(|t| t["id"] == id).cloned()
    }

    /// Reverses `cents` more of a transfer (at most what is left): the transfer after it.
    pub fn reverse(&mut self, id: &str, cents: i64) -> Option<Value> {
        let transfer = self.transfers.iter_mut().find(|t| t["id"] == id)?;
        let amount = transfer["amount"].as_i64().unwrap_or(0);
        let reversed = transfer["amount_reversed"].as_i64().unwrap_or(0);
        let total = (reversed + cents.max(0)).min(amount);
        transfer["amount_reversed"] = json!(total);
        transfer["reversed"] = json!(total >= amount);
        let after = transfer.clone();
        // A reversal made outside the API (the Dashboard) is a reversal object too, without
        // our metadata.
        if total > reversed {
            let id = self.next("trr");
            let mut reversal = fixture("transfer_reversal");
            reversal["id"] = json!(id);
            reversal["amount"] = json!(total - reversed);
            reversal["currency"] = after["currency"].clone();
            reversal["created"] = after["created"].clone();
            reversal["transfer"] = json!(id_of(&after));
            self.reversals.push(reversal);
        }
        Some(after)
    }

    /// The reversals of a transfer, newest first as Stripe lists them; `None` for an
    /// unknown transfer.
    pub fn reversals_of(&self, transfer_id: &str) -> Option<Vec<Value>> {
        self.transfer(transfer_id)?;
        Some(
            self.reversals
                .iter()
                .rev()
                .filter(|reversal| reversal["transfer"] == transfer_id)
                .cloned()
                .collect(),
        )
    }

    /// `POST /v1/transfers/{id}/reversals`: the reversal object, or Stripe's error (status,
    /// code, message) when the transfer is unknown or the amount is more than is left.
    pub fn create_reversal(
        &mut self,
        transfer_id: &str,
        params: &[(String, String)],
        created: i64,
    ) -> Result<Value, (u16, &'static str, String)> {
        let id = self.next("trr");
        let transfer = self
            .transfers
            .iter_mut()
            .find(|t| t["id"] == transfer_id)
            .ok_or((
                404,
                "resource_missing",
                format!("No such transfer: '{transfer_id}'"),
            ))?;
        let amount = transfer["amount"].as_i64().unwrap_or(0);
        let reversed = transfer["amount_reversed"].as_i64().unwrap_or(0);
        let left = amount - reversed;
        let cents = params
            .iter()
            .find(|(name, _)| name == "amount")
            .map_or(Ok(left), |(_, value)| value.parse::<i64>())
            .map_err(|_| {
                (
                    400,
                    "parameter_invalid_integer",
                    "Invalid integer: amount".to_owned(),
                )
            })?;
        if cents <= 0 || cents > left {
            return Err((
                400,
                "parameter_invalid_integer",
                format!("Amount must be no more than {left} (the transfer's unreversed amount)"),
            ));
        }
        transfer["amount_reversed"] = json!(reversed + cents);
        transfer["reversed"] = json!(reversed + cents >= amount);
        let mut reversal = fixture("transfer_reversal");
        reversal["id"] = json!(id);
        reversal["amount"] = json!(cents);
        reversal["created"] = json!(created);
        reversal["currency"] = transfer["currency"].clone();
        reversal["transfer"] = json!(transfer_id);
        let metadata: serde_json::Map<String, Value> = params
            .iter()
            .filter_map(|(name, value)| {
                let key = name.strip_prefix("metadata[")?.strip_suffix(']')?;
                Some((key.to_owned(), json!(value)))
            })
            .collect();
        reversal["metadata"] = Value::Object(metadata);
        self.reversals.push(reversal.clone());
        Ok(reversal)
    }

    /// Sets whether a connected account takes payouts (accounts not set do).
    pub fn set_payouts_enabled(&mut self, account: &str, enabled: bool) {
        self.accounts.insert(
            account.to_owned(),
            Account {
                payouts_enabled: enabled,
            },
        );
    }

    /// A connected account object.
    pub fn account(&self, id: &str) -> Value {
        let enabled = self.accounts.get(id).is_none_or(|a| a.payouts_enabled);
        let mut account = fixture("account");
        account["id"] = json!(id);
        account["payouts_enabled"] = json!(enabled);
        account["charges_enabled"] = json!(enabled);
        account["details_submitted"] = json!(true);
        if enabled {
            account["requirements"]["currently_due"] = json!([]);
            account["requirements"]["disabled_reason"] = Value::Null;
        }
        account
    }

    /// Pays out what transfers left in a connected account's balance to its bank: an
    /// automatic bank payout (status paid) carrying every payment not carried yet, whose
    /// reconciliation is still `in_progress` (its balance transactions are listed completely
    /// only once [`Ledger::reconcile`] made it `completed`). `None` when there is nothing to
    /// pay out.
    pub fn pay_out(&mut self, account: &str, created: i64) -> Option<Value> {
        self.bank_payout(account, created, true)
    }

    /// A manual payout (`POST /v1/payouts` by the connected account: `automatic: false`,
    /// `reconciliation_status: not_applicable`) of everything transfers left in its balance.
    /// Stripe does not list which transactions a manual payout carried.
    pub fn pay_out_manually(&mut self, account: &str, created: i64) -> Option<Value> {
        self.bank_payout(account, created, false)
    }

    fn bank_payout(&mut self, account: &str, created: i64, automatic: bool) -> Option<Value> {
        let carried: Vec<(String, i64)> = self
            .transfers
            .iter()
            .filter(|t| t["destination"] == account)
            .filter_map(|t| {
                let payment = t["destination_payment"].as_str()?.to_owned();
                let left = t["amount"].as_i64()? - t["amount_reversed"].as_i64().unwrap_or(0);
                (left > 0 && !self.paid_out.contains(&payment)).then_some((payment, left))
            })
            .collect();
        if carried.is_empty() {
            return None;
        }
        let id = self.next("po");
        let mut payout = fixture("payout");
        payout["id"] = json!(id);
        payout["amount"] = json!(carried.iter().map(|(_, cents)| cents).sum::<i64>());
        payout["currency"] = json!("usd");
        payout["status"] = json!("paid");
        payout["created"] = json!(created);
        payout["arrival_date"] = json!(created);
        payout["automatic"] = json!(automatic);
        payout["reconciliation_status"] = json!(if automatic {
            "in_progress"
        } else {
            "not_applicable"
        });
        payout["failure_code"] = Value::Null;
        payout["failure_message"] = Value::Null;
        for (payment, _) in &carried {
            self.paid_out.insert(payment.clone());
        }
        self.bank_payouts.insert(
            id,
            BankPayout {
                object: payout.clone(),
                account: account.to_owned(),
                sources: carried.into_iter().map(|(payment, _)| payment).collect(),
            },
        );
        Some(payout)
    }

    /// A bank payout turns failed (also after it was paid), with the bank's code.
    pub fn fail_bank_payout(&mut self, id: &str, code: &str) -> Option<Value> {
        let payout = self.bank_payouts.get_mut(id)?;
        payout.object["status"] = json!("failed");
        payout.object["failure_code"] = json!(code);
        Some(payout.object.clone())
    }

    /// The reconciliation of an automatic bank payout completes: from now on its balance
    /// transactions are listed completely. The payout after it; `None` when there is no such
    /// automatic payout or it was reconciled already.
    pub fn reconcile(&mut self, id: &str) -> Option<Value> {
        let payout = self.bank_payouts.get_mut(id)?;
        if payout.object["reconciliation_status"] != "in_progress" {
            return None;
        }
        payout.object["reconciliation_status"] = json!("completed");
        Some(payout.object.clone())
    }

    /// A bank payout as `GET /v1/payouts/{id}` with `Stripe-Account` shows it: `None` when
    /// the connected account has no such payout.
    pub fn retrieve_bank_payout(&self, account: &str, id: &str) -> Option<Value> {
        self.bank_payouts
            .get(id)
            .filter(|payout| payout.account == account)
            .map(|payout| payout.object.clone())
    }

    /// `GET /v1/balance_transactions?payout=po_...` with `Stripe-Account`: Stripe's error
    /// (status, code, message) for an unknown or a manual payout (the parameter is for
    /// automatic payouts only); before the payout's reconciliation completed, a partial list
    /// (the last payment it carried is not listed yet), as Stripe may answer.
    pub fn list_balance_transactions(
        &self,
        account: &str,
        bank_payout_id: &str,
    ) -> Result<Vec<Value>, (u16, &'static str, String)> {
        let payout = self
            .bank_payouts
            .get(bank_payout_id)
            .filter(|payout| payout.account == account)
            .ok_or_else(|| {
                (
                    404,
                    "resource_missing",
                    format!("No such payout: '{bank_payout_id}'"),
                )
            })?;
        if payout.object["automatic"] == false {
            return Err((
                400,
                "invalid_request_error",
                format!(
                    "Balance transactions can be listed by payout only for automatic payouts; {bank_payout_id} is a manual payout"
                ),
            ));
        }
        let mut transactions = self
            .balance_transactions(account, bank_payout_id)
            .unwrap_or_default();
        if payout.object["reconciliation_status"] != "completed" {
            // The payout's own transaction is last; drop the last payment before it.
            let payments = transactions.len().saturating_sub(1);
            if payments > 0 {
                transactions.remove(payments - 1);
            }
        }
        Ok(transactions)
    }

    /// Every balance transaction of a bank payout on its connected account (the payments it
    /// carried, and the payout itself), in Stripe's shape, whatever its reconciliation says:
    /// the truth, for simulations (Stripe's API answers as [`Ledger::list_balance_transactions`]).
    pub fn balance_transactions(&self, account: &str, bank_payout_id: &str) -> Option<Vec<Value>> {
        let payout = self.bank_payouts.get(bank_payout_id)?;
        if payout.account != account {
            return None;
        }
        let transaction = |id: String, source: &str, kind: &str| {
            let mut transaction = fixture("balance_transaction");
            transaction["id"] = json!(id);
            transaction["source"] = json!(source);
            transaction["type"] = json!(kind);
            transaction["reporting_category"] = json!(kind);
            transaction
        };
        let mut transactions: Vec<Value> = payout
            .sources
            .iter()
            .enumerate()
            .map(|(i, source)| transaction(format!("txn_{bank_payout_id}_{i}"), source, "payment"))
            .collect();
        transactions.push(transaction(
            format!("txn_{bank_payout_id}_out"),
            bank_payout_id,
            "payout",
        ));
        Some(transactions)
    }

    /// Sets what a refund's failure does to its charge's `amount_refunded`.
    pub fn set_amount_refunded_on_failure(&mut self, behaviour: AmountRefundedOnFailure) {
        self.on_refund_failure = behaviour;
    }

    /// Makes a captured charge of `cents` (a supporter's payment). Its object is as current
    /// API versions render it: `refunds` is not included (not expanded since 2022-11-15).
    pub fn create_charge(&mut self, cents: i64, currency: &str, created: i64) -> Value {
        let id = self.next("ch");
        self.create_charge_as(&id, cents, currency, created)
    }

    /// [`Ledger::create_charge`] under a given id (tests that name their charges).
    pub fn create_charge_as(
        &mut self,
        id: &str,
        cents: i64,
        currency: &str,
        created: i64,
    ) -> Value {
        let mut charge = fixture("charge");
        if let Value::Object(fields) = &mut charge {
            fields.remove("refunds");
        }
        charge["id"] = json!(id);
        charge["amount"] = json!(cents);
        charge["amount_captured"] = json!(cents);
        charge["amount_refunded"] = json!(0);
        charge["refunded"] = json!(false);
        charge["captured"] = json!(true);
        charge["paid"] = json!(true);
        charge["status"] = json!("succeeded");
        charge["currency"] = json!(currency);
        charge["created"] = json!(created);
        self.charges.insert(
            id.to_owned(),
            Charge {
                object: charge.clone(),
                refunds: Vec::new(),
            },
        );
        charge
    }

    pub fn charge(&self, id: &str) -> Option<Value> {
        self.charges.get(id).map(|charge| charge.object.clone())
    }

    /// `POST /v1/refunds`: refunds `cents` of a charge (all that is left when None), the
    /// refund in `status` ("succeeded", "pending", "requires_action"). The refund and the
    /// charge after it, or Stripe's error (status, code, message).
    pub fn create_refund(
        &mut self,
        charge_id: &str,
        cents: Option<i64>,
        status: &str,
        created: i64,
    ) -> Result<(Value, Value), (u16, &'static str, String)> {
        let id = self.next("re");
        let charge = self.charges.get_mut(charge_id).ok_or((
            404,
            "resource_missing",
            format!("No such charge: '{charge_id}'"),
        ))?;
        let amount = charge.object["amount"].as_i64().unwrap_or(0);
        let refunded: i64 = charge
            .refunds
            .iter()
            .filter(|refund| refund_counts(refund["status"].as_str().unwrap_or_default()))
            .map(|refund| refund["amount"].as_i64().unwrap_or(0))
            .sum();
        let left = amount - refunded;
        if left <= 0 {
            return Err((
                400,
                "charge_already_refunded",
                format!("Charge {charge_id} has already been refunded."),
            ));
        }
        let cents = cents.unwrap_or(left);
        if cents <= 0 || cents > left {
            return Err((
                400,
                "amount_too_large",
                format!(
                    "Refund amount ({cents}) is greater than unrefunded amount on charge ({left})"
                ),
            ));
        }
        let mut refund = fixture("refund");
        refund["id"] = json!(id);
        refund["amount"] = json!(cents);
        refund["charge"] = json!(charge_id);
        refund["currency"] = charge.object["currency"].clone();
        refund["created"] = json!(created);
        refund["status"] = json!(status);
        refund["failure_reason"] = Value::Null;
        charge.refunds.push(refund.clone());
        let total = charge.object["amount_refunded"].as_i64().unwrap_or(0) + cents;
        charge.object["amount_refunded"] = json!(total);
        charge.object["refunded"] = json!(total >= amount);
        Ok((refund, charge.object.clone()))
    }

    /// A refund moves to `status` (a pending one succeeds; any fails or is canceled: the
    /// money comes back to the platform, and the charge's `amount_refunded` does what
    /// [`Ledger::set_amount_refunded_on_failure`] said). The refund and its charge after it.
    pub fn set_refund_status(&mut self, refund_id: &str, status: &str) -> Option<(Value, Value)> {
        let lowers = self.on_refund_failure == AmountRefundedOnFailure::Lowered;
        let charge = self
            .charges
            .values_mut()
            .find(|charge| charge.refunds.iter().any(|r| r["id"] == refund_id))?;
        let refund = charge.refunds.iter_mut().find(|r| r["id"] == refund_id)?;
        let was_counted = refund_counts(refund["status"].as_str().unwrap_or_default());
        refund["status"] = json!(status);
        if status == "failed" {
            refund["failure_reason"] = json!("unknown");
        }
        let cents = refund["amount"].as_i64().unwrap_or(0);
        let refund = refund.clone();
        if was_counted && !refund_counts(status) && lowers {
            let amount = charge.object["amount"].as_i64().unwrap_or(0);
            let total = charge.object["amount_refunded"].as_i64().unwrap_or(0) - cents;
            charge.object["amount_refunded"] = json!(total.max(0));
            charge.object["refunded"] = json!(total >= amount);
        }
        Some((refund, charge.object.clone()))
    }

    pub fn refund(&self, refund_id: &str) -> Option<Value> {
        self.charges
            .values()
            .flat_map(|charge| charge.refunds.iter())
            .find(|refund| refund["id"] == refund_id)
            .cloned()
    }

    /// `GET /v1/refunds`: the refunds of one charge (every charge's when None), newest first
    /// as Stripe lists them; None when the charge is unknown.
    pub fn list_refunds(&self, charge_id: Option<&str>) -> Option<Vec<Value>> {
        let mut refunds: Vec<Value> = match charge_id {
            Some(id) => self.charges.get(id)?.refunds.clone(),
            None => self
                .charges
                .values()
                .flat_map(|charge| charge.refunds.iter().cloned())
                .collect(),
        };
        // Newest first; ids grow with creation.
        refunds.sort_by_key(|refund| {
            (
                refund["created"].as_i64().unwrap_or(0),
                refund["id"]
                    .as_str()
                    .and_then(|id| id.rsplit('_').next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0),
            )
        });
        refunds.reverse();
        Some(refunds)
    }

    /// The connected accounts transfers went to.
    pub fn destinations(&self) -> Vec<String> {
        let mut accounts: Vec<String> = self
            .transfers
            .iter()
            .filter_map(|t| t["destination"].as_str().map(str::to_owned))
            .collect();
        accounts.sort();
        accounts.dedup();
        accounts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(ledger: &mut Ledger, account: &str, cents: i64) -> String {
        let params = [
            ("amount".to_owned(), cents.to_string()),
            ("currency".to_owned(), "usd".to_owned()),
            ("destination".to_owned(), account.to_owned()),
        ];
        let made = ledger.create_transfer(&params, 1);
        made["destination_payment"].as_str().unwrap().to_owned()
    }

    fn sources(transactions: &[Value]) -> Vec<&str> {
        transactions
            .iter()
            .filter(|t| t["type"] == "payment")
            .filter_map(|t| t["source"].as_str())
            .collect()
    }

    #[test]
    fn a_bank_payout_lists_every_payment_only_once_reconciled() {
        let mut ledger = Ledger::default();
        let first = transfer(&mut ledger, "acct_1", 100);
        let second = transfer(&mut ledger, "acct_1", 200);
        let payout = ledger.pay_out("acct_1", 2).unwrap();
        assert_eq!(
            (&payout["automatic"], &payout["reconciliation_status"]),
            (&json!(true), &json!("in_progress"))
        );
        let id = payout["id"].as_str().unwrap();
        let partial = ledger.list_balance_transactions("acct_1", id).unwrap();
        assert_eq!(
            sources(&partial),
            [first.as_str()],
            "partial until reconciled"
        );
        assert!(ledger.list_balance_transactions("acct_2", id).is_err());
        assert_eq!(ledger.retrieve_bank_payout("acct_2", id), None);
        let reconciled = ledger.reconcile(id).unwrap();
        assert_eq!(reconciled["reconciliation_status"], "completed");
        assert_eq!(ledger.reconcile(id), None, "once");
        let complete = ledger.list_balance_transactions("acct_1", id).unwrap();
        assert_eq!(sources(&complete), [first.as_str(), second.as_str()]);
        assert_eq!(
            ledger.retrieve_bank_payout("acct_1", id).unwrap()["reconciliation_status"],
            "completed"
        );
    }

    #[test]
    fn a_manual_payout_cannot_be_listed_by_payout() {
        let mut ledger = Ledger::default();
        let payment = transfer(&mut ledger, "acct_1", 100);
        let manual = ledger.pay_out_manually("acct_1", 2).unwrap();
        assert_eq!(manual["automatic"], false);
        assert_eq!(manual["reconciliation_status"], "not_applicable");
        let id = manual["id"].as_str().unwrap();
        let (status, _, _) = ledger.list_balance_transactions("acct_1", id).unwrap_err();
        assert_eq!(status, 400);
        assert!(ledger.paid_out(&payment), "its money left the balance");
        assert_eq!(ledger.pay_out("acct_1", 3), None);
    }
}
