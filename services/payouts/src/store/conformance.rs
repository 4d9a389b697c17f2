//! The behaviour every `AccountRepository` must have, run against the embedded store and
//! against MongoDB (the test server, or the one `MONGODB_URI` names).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use payouts_runtime::ErrorKind;
use payouts_runtime::store::store_precision;

use super::*;
use crate::domain::StripeAccountStatus;

fn account(user_id: &str, version: i64) -> Account {
    let created: DateTime<Utc> = store_precision(Utc::now()) - Duration::days(40);
    Account {
        user_id: user_id.to_owned(),
        stripe_account_id: "acct_1".to_owned(),
        account_created_at: created,
        stripe_status: Some(StripeAccountStatus {
            charges_enabled: true,
            payouts_enabled: false,
            details_submitted: true,
            requirements_currently_due: vec!["external_account".to_owned()],
            updated_at: Some(created),
        }),
        bank_payments: vec![crate::domain::CarriedPayment {
            payment: "py_1".to_owned(),
            bank_payout: "po_1".to_owned(),
            failure_code: Some("account_closed".to_owned()),
        }],
        pending_bank_payouts: vec![crate::domain::PendingBankPayout {
            bank_payout: "po_2".to_owned(),
            first_seen_at: created,
            due_at: None,
            attempts: 3,
            reason: "a manual payout".to_owned(),
            alert_raised: true,
        }],
        version,
    }
}

async fn run(repository: Arc<dyn AccountRepository>) {
    stores_and_reads_back(repository.as_ref()).await;
    a_second_creation_conflicts(repository.as_ref()).await;
    a_stale_version_conflicts(repository.as_ref()).await;
    concurrent_writers_of_one_version_one_wins(Arc::clone(&repository)).await;
    bank_looks_are_found_when_due(repository.as_ref()).await;
}

async fn bank_looks_are_found_when_due(repository: &dyn AccountRepository) {
    let now = store_precision(Utc::now());
    let due = |user_id: &str, minutes: Option<i64>| {
        let mut stored = account(user_id, 1);
        stored.stripe_account_id = format!("acct_{user_id}");
        stored.pending_bank_payouts[0].due_at = minutes.map(|m| now + Duration::minutes(m));
        stored.pending_bank_payouts[0].alert_raised = false;
        stored
    };
    // Nothing due, due later, due now, due a while ago; the earliest due first.
    let mut early = None;
    for (user_id, minutes) in [
        ("u-look-none", None),
        ("u-look-later", Some(10)),
        ("u-look-now", Some(0)),
        ("u-look-early", Some(-30)),
    ] {
        let stored = due(user_id, minutes);
        repository.put(&stored, None).await.unwrap();
        early = Some(stored);
    }
    let ids = |accounts: Vec<Account>| -> Vec<String> {
        accounts.into_iter().map(|a| a.user_id).collect()
    };
    assert_eq!(
        ids(repository.due_bank_looks(now, 10).await.unwrap()),
        ["u-look-early", "u-look-now"]
    );
    assert_eq!(
        ids(repository.due_bank_looks(now, 1).await.unwrap()),
        ["u-look-early"]
    );
    let found = repository.get("u-look-early").await.unwrap().unwrap();
    assert_eq!(Some(&found), early.as_ref());
    // Looked at and attributed: no longer due.
    let mut done = found.clone();
    done.pending_bank_payouts.clear();
    done.version = 2;
    repository.put(&done, Some(1)).await.unwrap();
    assert_eq!(
        ids(repository
            .due_bank_looks(now + Duration::minutes(10), 10)
            .await
            .unwrap()),
        ["u-look-now", "u-look-later"]
    );
}

async fn stores_and_reads_back(repository: &dyn AccountRepository) {
    assert_eq!(repository.get("u-read").await.unwrap(), None);
    let mut stored = account("u-read", 1);
    stored.stripe_account_id = "acct_read".to_owned();
    repository.put(&stored, None).await.unwrap();
    assert_eq!(
        repository.get("u-read").await.unwrap(),
        Some(stored.clone())
    );
    let mut no_status = account("u-read", 2);
    no_status.stripe_account_id = "acct_read".to_owned();
    no_status.stripe_status = None;
    repository.put(&no_status, Some(1)).await.unwrap();
    assert_eq!(
        repository.get("u-read").await.unwrap(),
        Some(no_status.clone())
    );
    let found = repository
        .find_by_stripe_account("acct_read")
        .await
        .unwrap();
    assert_eq!(found.map(|a| a.user_id).as_deref(), Some("u-read"));
    // The lookup follows the account to its new connected account.
    let mut moved = account("u-read", 3);
    moved.stripe_account_id = "acct_moved".to_owned();
    repository.put(&moved, Some(2)).await.unwrap();
    let found = repository
        .find_by_stripe_account("acct_moved")
        .await
        .unwrap();
    assert_eq!(found.map(|a| a.user_id).as_deref(), Some("u-read"));
    assert_eq!(
        repository
            .find_by_stripe_account("acct_read")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        repository
            .find_by_stripe_account("acct_none")
            .await
            .unwrap(),
        None
    );
}

async fn a_second_creation_conflicts(repository: &dyn AccountRepository) {
    repository.put(&account("u-twice", 1), None).await.unwrap();
    let error = repository
        .put(&account("u-twice", 1), None)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Conflict);
}

async fn a_stale_version_conflicts(repository: &dyn AccountRepository) {
    repository.put(&account("u-stale", 1), None).await.unwrap();
    repository
        .put(&account("u-stale", 2), Some(1))
        .await
        .unwrap();
    let error = repository
        .put(&account("u-stale", 2), Some(1))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Conflict);
    assert_eq!(
        repository.get("u-stale").await.unwrap().map(|a| a.version),
        Some(2)
    );
}

async fn concurrent_writers_of_one_version_one_wins(repository: Arc<dyn AccountRepository>) {
    repository.put(&account("u-race", 1), None).await.unwrap();
    let writers = (0..20).map(|_| {
        let repository = Arc::clone(&repository);
        tokio::spawn(async move { repository.put(&account("u-race", 2), Some(1)).await })
    });
    let mut winners = 0;
    for writer in writers {
        match writer.await.unwrap() {
            Ok(()) => winners += 1,
            Err(error) => assert_eq!(error.kind(), ErrorKind::Conflict),
        }
    }
    assert_eq!(winners, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_conforms() {
    run(Arc::new(MemoryAccounts::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_store_conforms() {
    let database = payouts_runtime::testing::mongo_database("payouts").await;
    run(Arc::new(MongoAccounts::open(&database).await.unwrap())).await;
}

mod payouts {
    use std::sync::Arc;

    use chrono::{DateTime, Duration, Utc};
    use payouts_runtime::store::store_precision;
    use payouts_runtime::{ErrorKind, Money};

    use crate::payout::{
        Cause, Payout, PayoutStatus, RETRY_BASE, ReversalIntent, ReversalState, SeenTransfer,
        TransferNews,
    };
    use crate::store::{Inserted, MemoryPayouts, MongoPayouts, PayoutRepository};

    fn at(minute: i64) -> DateTime<Utc> {
        static BASE: std::sync::OnceLock<DateTime<Utc>> = std::sync::OnceLock::new();
        *BASE.get_or_init(|| store_precision(Utc::now())) + Duration::minutes(minute)
    }

    fn payout(id: &str, user: &str, key: &str, status: PayoutStatus, minute: i64) -> Payout {
        let mut base = Payout::requested(
            id.to_owned(),
            user,
            Money::usd(1_000_00),
            key,
            &format!("acct_{user}"),
            at(minute),
            Duration::zero(),
        );
        base.flags = vec!["NEW_ACCOUNT".to_owned()];
        base.hold_reason = Some("Amount exceeds $5,000.00".to_owned());
        base.hold_metadata_json = Some("{\"isNewAccount\":true}".to_owned());
        base.failed_transfer_ids = vec!["tr_failed".to_owned()];
        base.applied_events = vec!["evt_a".to_owned()];
        if status == PayoutStatus::Admitting {
            return base;
        }
        // Through the state machine, so the audit trail and what it owes are real.
        let mut moved = base
            .admitted(
                status == PayoutStatus::PendingApproval,
                Vec::new(),
                "",
                at(minute),
            )
            .unwrap();
        if status == PayoutStatus::Processing {
            let seen = SeenTransfer {
                id: format!("tr_{id}"),
                attempt: Some(0),
                destination_payment: Some(format!("py_{id}")),
                amount_reversed_cents: 0,
                reversed: false,
            };
            moved = moved
                .transfer_seen(
                    &seen,
                    &TransferNews::Exists,
                    RETRY_BASE,
                    Cause::event("stripe", "evt_b", at(minute)),
                )
                .unwrap();
        }
        moved.version = 1;
        moved
    }

    /// A payout with every owed and remembered thing set, to check they all round-trip.
    fn busy(id: &str, minute: i64) -> Payout {
        let claimed = payout(id, "u9", id, PayoutStatus::Pending, minute)
            .claimed_for_transfer(at(minute), Duration::minutes(2))
            .unwrap();
        let later = Cause::new("stripe", at(minute + 120));
        let mut unknown = claimed
            .outcome_still_unknown("timeout", Duration::hours(1), later)
            .unwrap();
        unknown.stray_transfer_ids = vec!["tr_stray".to_owned(), "tr_stray_2".to_owned()];
        unknown.stray_reversed_ids = vec!["tr_stray_2".to_owned()];
        // Admins' reversal intents in every state round-trip.
        let states = [
            ReversalState::Pending,
            ReversalState::Unknown {
                message: "timeout".to_owned(),
            },
            ReversalState::Succeeded {
                reversal_id: "trr_1".to_owned(),
            },
            ReversalState::Refused {
                reason: "balance_insufficient".to_owned(),
            },
        ];
        unknown.reversal_intents = states
            .into_iter()
            .enumerate()
            .map(|(n, state)| ReversalIntent {
                id: format!("{id}-reversal-{n}"),
                client_key: format!("confirm-{n}"),
                requested_by: "admin:ops".to_owned(),
                cents: 100 + i64::try_from(n).unwrap(),
                notes: "clawback".to_owned(),
                transfer_id: "tr_1".to_owned(),
                created_at: at(minute + 1),
                last_sent_at: at(minute + 2),
                state,
            })
            .collect();
        unknown.parked = true;
        unknown.held = true;
        unknown.raised_alerts = vec!["older".to_owned()];
        unknown.quota.confirmed_sequence = 3;
        unknown.quota.sequence = 4;
        unknown.quota.target_cents = 25;
        unknown.version = 1;
        unknown
    }

    async fn run(repository: Arc<dyn PayoutRepository>) {
        // One payout per (user, idempotency key).
        let first = payout("p1", "u1", "k1", PayoutStatus::Processing, 1);
        assert_eq!(repository.insert(&first).await.unwrap(), Inserted::New);
        let same_key = payout("p1-again", "u1", "k1", PayoutStatus::Pending, 2);
        assert_eq!(
            repository.insert(&same_key).await.unwrap(),
            Inserted::Existing(Box::new(first.clone()))
        );
        assert_eq!(repository.get("p1").await.unwrap(), Some(first.clone()));
        assert_eq!(
            repository.find_by_key("u1", "k1").await.unwrap(),
            Some(first.clone())
        );
        assert_eq!(
            repository.find_by_transfer("tr_p1").await.unwrap(),
            Some(first.clone())
        );
        assert_eq!(repository.find_by_transfer("tr_none").await.unwrap(), None);
        assert_eq!(first.audit_log.len(), 2, "the audit trail round-trips");

        // Lists: newest first, by status, in pages, without admissions in progress.
        let pending = payout("p2", "u1", "k2", PayoutStatus::Pending, 2);
        let held = payout("p3", "u1", "k3", PayoutStatus::PendingApproval, 3);
        let admitting = payout("p4", "u1", "k4", PayoutStatus::Admitting, 4);
        for p in [&pending, &held, &admitting] {
            repository.insert(p).await.unwrap();
        }
        let ids = |payouts: Vec<Payout>| payouts.into_iter().map(|p| p.id).collect::<Vec<_>>();
        assert_eq!(
            ids(repository
                .list_by_user(Some("u1"), None, None, 10)
                .await
                .unwrap()),
            ["p3", "p2", "p1"]
        );
        let page = repository
            .list_by_user(Some("u1"), None, None, 2)
            .await
            .unwrap();
        let last = page.last().unwrap();
        let cursor = Some((last.requested_at, last.id.clone()));
        assert_eq!(
            ids(repository
                .list_by_user(Some("u1"), None, cursor, 2)
                .await
                .unwrap()),
            ["p1"]
        );
        assert_eq!(
            ids(repository
                .list_by_user(Some("u1"), Some(PayoutStatus::Pending), None, 10)
                .await
                .unwrap()),
            ["p2"]
        );
        // Every user's (admin listings): newest first, admissions left out, in pages that
        // add up to the whole list.
        let other = payout("p5", "u2", "k5", PayoutStatus::Pending, 5);
        repository.insert(&other).await.unwrap();
        let everyone = ids(repository
            .list_by_user(None, None, None, 1_000)
            .await
            .unwrap());
        let ours: Vec<&String> = everyone
            .iter()
            .filter(|id| ["p1", "p2", "p3", "p4", "p5"].contains(&id.as_str()))
            .collect();
        assert_eq!(ours, ["p5", "p3", "p2", "p1"]);
        let mut paged = Vec::new();
        let mut cursor = None;
        loop {
            let page = repository
                .list_by_user(None, None, cursor, 2)
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            cursor = Some((last.requested_at, last.id.clone()));
            paged.extend(ids(page));
        }
        assert_eq!(paged, everyone);
        let pending_ids = ids(repository
            .list_by_user(None, Some(PayoutStatus::Pending), None, 1_000)
            .await
            .unwrap());
        assert!(pending_ids.contains(&"p2".to_owned()) && pending_ids.contains(&"p5".to_owned()));
        assert!(!pending_ids.contains(&"p3".to_owned()));
        // The other user's payout goes again: the checks below count this user's.
        repository.delete("p5", other.version).await.unwrap();
        assert_eq!(
            ids(repository
                .by_destination(
                    "acct_u1",
                    &[PayoutStatus::Processing, PayoutStatus::Pending]
                )
                .await
                .unwrap()),
            ["p1", "p2"]
        );

        // By status, by id, in pages.
        assert_eq!(
            ids(repository
                .in_status(PayoutStatus::Pending, None, 10)
                .await
                .unwrap()),
            ["p2"]
        );
        assert_eq!(
            ids(repository
                .in_status(PayoutStatus::PendingApproval, None, 10)
                .await
                .unwrap()),
            ["p3"]
        );
        assert_eq!(
            ids(repository
                .in_status(PayoutStatus::PendingApproval, Some("p3"), 10)
                .await
                .unwrap()),
            Vec::<String>::new()
        );

        // Due work, earliest first.
        assert_eq!(
            ids(repository
                .due(PayoutStatus::Pending, at(10), 10)
                .await
                .unwrap()),
            ["p2"]
        );
        assert_eq!(
            ids(repository
                .due(PayoutStatus::Pending, at(1), 10)
                .await
                .unwrap()),
            Vec::<String>::new()
        );
        assert_eq!(
            ids(repository
                .due(PayoutStatus::Admitting, at(10), 10)
                .await
                .unwrap()),
            ["p4"]
        );

        // Versioned writes and deletes.
        let claimed = pending
            .claimed_for_transfer(at(10), Duration::minutes(2))
            .unwrap();
        repository.replace(&claimed, 1).await.unwrap();
        let error = repository.replace(&claimed, 1).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Conflict);
        assert_eq!(repository.get("p2").await.unwrap(), Some(claimed.clone()));
        // Lookups follow writes: the claim moved p2's due time past its lease.
        assert_eq!(
            ids(repository
                .due(PayoutStatus::Pending, at(10), 10)
                .await
                .unwrap()),
            Vec::<String>::new()
        );
        assert_eq!(
            ids(repository
                .due(PayoutStatus::Pending, at(12), 10)
                .await
                .unwrap()),
            ["p2"]
        );
        let mut moved = claimed.clone();
        moved.stripe_transfer_id = Some("tr_moved".to_owned());
        moved.version = claimed.version + 1;
        repository.replace(&moved, claimed.version).await.unwrap();
        assert_eq!(
            repository.find_by_transfer("tr_moved").await.unwrap(),
            Some(moved.clone())
        );
        assert_eq!(
            repository.delete("p4", 7).await.unwrap_err().kind(),
            ErrorKind::Conflict
        );
        repository.delete("p4", 1).await.unwrap();
        assert_eq!(repository.get("p4").await.unwrap(), None);
        // A refused admission's key is free again, and it left no trace in the lists.
        assert_eq!(repository.find_by_key("u1", "k4").await.unwrap(), None);
        assert_eq!(
            ids(repository
                .due(PayoutStatus::Admitting, at(10), 10)
                .await
                .unwrap()),
            Vec::<String>::new()
        );

        // The audit projection is idempotent and keeps the trail's order.
        repository.project_audit(&first.audit_log).await.unwrap();
        repository.project_audit(&first.audit_log).await.unwrap();
        assert_eq!(
            repository.projected_audit("p1").await.unwrap(),
            first.audit_log
        );
        assert_eq!(repository.projected_audit("nothing").await.unwrap(), vec![]);

        // What a payout owes and remembers round-trips; owed effects are due by time.
        let unknown_before = repository.unknown_outcomes().await.unwrap();
        let busy = busy("p6", 6);
        assert!(!busy.owed_alerts.is_empty() && busy.unknown_since.is_some());
        repository.insert(&busy).await.unwrap();
        // It is pending with its outcome unknown since minute 6: counted, and the oldest.
        let unknown = repository.unknown_outcomes().await.unwrap();
        assert_eq!(unknown.count, unknown_before.count + 1);
        assert_eq!(unknown.oldest_since, Some(at(6)), "{unknown:?}");
        assert_eq!(repository.get("p6").await.unwrap(), Some(busy.clone()));
        let due_effects = repository.due_effects(at(500), 100).await.unwrap();
        assert!(
            ids(due_effects.clone()).contains(&"p6".to_owned()),
            "{:?}",
            ids(due_effects)
        );
        assert!(
            !ids(repository.due_effects(at(-100), 100).await.unwrap()).contains(&"p6".to_owned())
        );

        // Concurrent claims: one wins.
        let contested = payout("p5", "u2", "k5", PayoutStatus::Pending, 5);
        repository.insert(&contested).await.unwrap();
        let claims = (0..10).map(|_| {
            let repository = Arc::clone(&repository);
            let claimed = contested
                .claimed_for_transfer(at(10), Duration::minutes(2))
                .unwrap();
            tokio::spawn(async move { repository.replace(&claimed, 1).await })
        });
        let mut winners = 0;
        for claim in claims {
            if claim.await.unwrap().is_ok() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_store_conforms() {
        run(Arc::new(MemoryPayouts::default())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mongo_store_conforms() {
        let database = payouts_runtime::testing::mongo_database("usd_payouts").await;
        let repository = MongoPayouts::open(&database).await.unwrap();
        run(Arc::new(repository)).await;
        let projected = database
            .collection::<mongodb::bson::Document>("payoutAuditLogs")
            .count_documents(mongodb::bson::doc! { "payoutId": "p1" })
            .await
            .unwrap();
        assert_eq!(projected, 2, "each audit record once in payoutAuditLogs");
    }
}

mod pause {
    use chrono::Utc;
    use payouts_runtime::ErrorKind;

    use crate::pause::{PauseCause, PauseChange, TransferPause};
    use crate::store::{MemoryPause, MongoPause, PauseRepository};

    async fn run(repository: &dyn PauseRepository) {
        let running = repository.get().await.unwrap();
        assert_eq!(running, TransferPause::default());
        let change = PauseChange {
            paused: true,
            cause: PauseCause::Automatic,
            reason: "depleted".to_owned(),
            actor: "balance".to_owned(),
        };
        let paused = running
            .changed(&change, payouts_runtime::store::store_precision(Utc::now()))
            .unwrap();
        repository.put(&paused, 0).await.unwrap();
        assert_eq!(
            repository.put(&paused, 0).await.unwrap_err().kind(),
            ErrorKind::Conflict,
            "two writers of one version: one wins"
        );
        assert_eq!(repository.get().await.unwrap(), paused);
        let lifted = paused
            .changed(
                &PauseChange {
                    paused: false,
                    cause: PauseCause::Manual,
                    reason: "funds added".to_owned(),
                    actor: "admin:ops".to_owned(),
                },
                payouts_runtime::store::store_precision(Utc::now()),
            )
            .unwrap();
        repository.put(&lifted, paused.version).await.unwrap();
        let stored = repository.get().await.unwrap();
        assert_eq!(stored, lifted);
        assert!(!stored.paused() && stored.overridden);
        // A halt over an admin's pause keeps what it covers, and the alerts that halted.
        let manual = lifted
            .changed(
                &PauseChange {
                    paused: true,
                    cause: PauseCause::Manual,
                    reason: "investigating".to_owned(),
                    actor: "admin:ops".to_owned(),
                },
                payouts_runtime::store::store_precision(Utc::now()),
            )
            .unwrap();
        repository.put(&manual, lifted.version).await.unwrap();
        let halted = manual
            .changed(
                &PauseChange {
                    paused: true,
                    cause: PauseCause::Escalation,
                    reason: crate::pause::escalation_reason("alert_x"),
                    actor: "notifications".to_owned(),
                },
                payouts_runtime::store::store_precision(Utc::now()),
            )
            .unwrap();
        repository.put(&halted, manual.version).await.unwrap();
        let stored = repository.get().await.unwrap();
        assert_eq!(stored, halted);
        assert_eq!(
            (stored.cause, stored.beneath),
            (Some(PauseCause::Escalation), Some(PauseCause::Manual))
        );
        assert_eq!(stored.escalations, ["alert_x"]);
    }

    #[tokio::test]
    async fn embedded_pause_conforms() {
        run(&MemoryPause::default()).await;
    }

    #[tokio::test]
    async fn mongo_pause_conforms() {
        let database = payouts_runtime::testing::mongo_database("pause").await;
        run(&MongoPause::open(&database)).await;
    }
}
