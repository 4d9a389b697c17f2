//! What a Stripe account holds, as the fakes of Stripe need it: transfers (in the shape of
//! Stripe's fixtures), the first answer given under each idempotency key, connected
//! accounts and their bank payouts with the balance transactions they carried. One model,
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

    /// Pays out what transfers left in a connected account's balance to its bank: a bank
    /// payout (status paid) carrying every payment not carried yet. `None` when there is
    /// nothing to pay out.
    pub fn pay_out(&mut self, account: &str, created: i64) -> Option<Value> {
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

    /// The balance transactions of a bank payout on its connected account (the payments it
    /// carried, and the payout itself), in Stripe's shape.
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
