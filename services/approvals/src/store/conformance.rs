//! The behaviour every `ApprovalRepository` must have, run against the embedded store and
//! against MongoDB (the test server, or the one `MONGODB_URI` names).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use payouts_runtime::store::store_precision;
use payouts_runtime::{ErrorKind, Money};

use super::*;
use crate::domain::{Action, ApprovalStatus, Filter, HoldMetadata, UserContext, approval_id};

fn at(minute: i64) -> DateTime<Utc> {
    store_precision(Utc::now()) + Duration::minutes(minute)
}

fn approval(payout_id: &str, minute: i64) -> Approval {
    Approval {
        id: approval_id(payout_id),
        payout_id: payout_id.to_owned(),
        user_id: "creator".to_owned(),
        amount: Money::usd(750_000),
        status: ApprovalStatus::Pending,
        reason: "Amount exceeds $5,000".to_owned(),
        flags: vec![
            "REQUIRES_ADMIN_APPROVAL".to_owned(),
            "NEW_ACCOUNT".to_owned(),
        ],
        requested_at: at(minute),
        reviewed_at: None,
        reviewed_by: None,
        review_notes: None,
        metadata: HoldMetadata {
            is_new_account: true,
            account_age_days: 15,
            daily_payout_count: 1,
            daily_payout_amount_cents: 750_000,
            monthly_payout_amount_cents: 800_000,
            lifetime_earnings_cents: 2_000_000,
        },
        user_context: UserContext {
            account_age_days: 15,
            lifetime_earnings_cents: 2_000_000,
            completed_payout_count: 2,
            completed_payout_cents: 30_000,
            recent_refund_count: 1,
            recent_dispute_count: 0,
        },
        approvals_required: 1,
        approvals: Vec::new(),
        applied: false,
        next_attempt_at: None,
        attempts: 0,
        parked: false,
        version: 1,
    }
}

fn filter(status: Option<ApprovalStatus>) -> Filter {
    Filter {
        status,
        limit: 100,
        ..Filter::default()
    }
}

async fn run(repository: Arc<dyn ApprovalRepository>) {
    one_approval_per_payout(repository.as_ref()).await;
    a_stale_decision_conflicts(repository.as_ref()).await;
    concurrent_decisions_one_wins(Arc::clone(&repository)).await;
    lists_pending_oldest_first(repository.as_ref()).await;
    keeps_the_first_of_two_approvals(repository.as_ref()).await;
}

async fn keeps_the_first_of_two_approvals(repository: &dyn ApprovalRepository) {
    let pending = Approval {
        approvals_required: 2,
        ..approval("payout_dual", 1)
    };
    repository.create(&pending).await.unwrap();
    let approved_at = at(5);
    let first = pending
        .decide(
            Action::Approve,
            "admin-1",
            Some("checked the account"),
            approved_at,
        )
        .unwrap();
    repository.replace(&first, pending.version).await.unwrap();
    let stored = repository.get(&pending.id).await.unwrap().unwrap();
    assert_eq!(stored, first);
    assert_eq!(stored.status, ApprovalStatus::Pending);
    assert_eq!(stored.approvals.len(), 1);
    assert_eq!(stored.approvals[0].reviewer, "admin-1");
    assert_eq!(stored.approvals[0].approved_at, approved_at);
    // Still pending: counted, and not due to be carried out.
    assert!(
        repository
            .due(at(60), 10)
            .await
            .unwrap()
            .iter()
            .all(|a| a.id != pending.id)
    );
    // The same admin's second try at the stored state conflicts; a racing copy of the
    // first approval (stale version) conflicts too.
    assert_eq!(
        stored
            .decide(Action::Approve, "admin-1", None, at(6))
            .unwrap_err()
            .kind(),
        ErrorKind::Conflict
    );
    let racing_copy = pending
        .decide(Action::Approve, "admin-1", None, at(6))
        .unwrap();
    assert_eq!(
        repository
            .replace(&racing_copy, pending.version)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Conflict
    );
    let second = stored
        .decide(Action::Approve, "admin-2", None, at(7))
        .unwrap();
    repository.replace(&second, stored.version).await.unwrap();
    let decided = repository.get(&pending.id).await.unwrap().unwrap();
    assert_eq!(decided.status, ApprovalStatus::Approved);
    assert_eq!(decided.approvals, second.approvals);
}

async fn one_approval_per_payout(repository: &dyn ApprovalRepository) {
    let first = approval("payout_once", 1);
    assert_eq!(
        repository.create(&first).await.unwrap(),
        (first.clone(), true)
    );
    let mut second = approval("payout_once", 2);
    second.reason = "another reason".to_owned();
    assert_eq!(
        repository.create(&second).await.unwrap(),
        (first.clone(), false)
    );
    assert_eq!(repository.get(&first.id).await.unwrap(), Some(first));
    assert_eq!(repository.get("approval_none").await.unwrap(), None);
}

async fn a_stale_decision_conflicts(repository: &dyn ApprovalRepository) {
    let pending = approval("payout_stale", 1);
    repository.create(&pending).await.unwrap();
    let approved = pending
        .decide(Action::Approve, "admin-1", None, at(5))
        .unwrap();
    repository
        .replace(&approved, pending.version)
        .await
        .unwrap();
    let rejected = pending
        .decide(Action::Reject, "admin-2", Some("no"), at(6))
        .unwrap();
    let error = repository
        .replace(&rejected, pending.version)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Conflict);
    assert_eq!(repository.get(&pending.id).await.unwrap(), Some(approved));
}

async fn concurrent_decisions_one_wins(repository: Arc<dyn ApprovalRepository>) {
    let pending = approval("payout_race", 1);
    repository.create(&pending).await.unwrap();
    let deciders = (0..10).map(|i| {
        let repository = Arc::clone(&repository);
        let decided = if i % 2 == 0 {
            pending.decide(Action::Approve, &format!("admin-{i}"), None, at(i))
        } else {
            pending.decide(Action::Reject, &format!("admin-{i}"), Some("no"), at(i))
        }
        .unwrap();
        tokio::spawn(async move { repository.replace(&decided, 1).await.map(|()| decided) })
    });
    let mut winners = Vec::new();
    for decider in deciders {
        match decider.await.unwrap() {
            Ok(decided) => winners.push(decided),
            Err(error) => assert_eq!(error.kind(), ErrorKind::Conflict),
        }
    }
    assert_eq!(winners.len(), 1);
    assert_eq!(
        repository.get(&pending.id).await.unwrap().as_ref(),
        winners.first()
    );
}

async fn lists_pending_oldest_first(repository: &dyn ApprovalRepository) {
    let newer = approval("payout_list_b", 30);
    let older = approval("payout_list_a", 20);
    repository.create(&newer).await.unwrap();
    repository.create(&older).await.unwrap();
    let pending = repository
        .list(&filter(Some(ApprovalStatus::Pending)))
        .await
        .unwrap();
    let ids: Vec<&str> = pending.iter().map(|a| a.payout_id.as_str()).collect();
    assert_eq!(ids, ["payout_once", "payout_list_a", "payout_list_b"]);
    assert_eq!(
        repository.count_pending().await.unwrap(),
        3,
        "decided ones are not pending"
    );
    // payout_stale and payout_race were decided; whichever way the race went, both are gone
    // from the pending queue and appear under their decision.
    let approved = repository
        .list(&filter(Some(ApprovalStatus::Approved)))
        .await
        .unwrap();
    let rejected = repository
        .list(&filter(Some(ApprovalStatus::Rejected)))
        .await
        .unwrap();
    assert_eq!(approved.len() + rejected.len(), 2);
    assert_eq!(repository.list(&filter(None)).await.unwrap().len(), 5);

    // Amount range, flag and paging.
    let mut small = approval("payout_small", 40);
    small.amount = Money::usd(100_000);
    small.flags = vec!["LARGE_FIRST_PAYOUT".to_owned()];
    repository.create(&small).await.unwrap();
    let ids = |approvals: Vec<Approval>| {
        approvals
            .into_iter()
            .map(|a| a.payout_id)
            .collect::<Vec<_>>()
    };
    let cheap = Filter {
        max_amount_cents: Some(100_000),
        limit: 10,
        ..Filter::default()
    };
    assert_eq!(
        ids(repository.list(&cheap).await.unwrap()),
        ["payout_small"]
    );
    let dear = Filter {
        min_amount_cents: Some(100_001),
        status: Some(ApprovalStatus::Pending),
        limit: 10,
        ..Filter::default()
    };
    assert_eq!(
        ids(repository.list(&dear).await.unwrap()),
        ["payout_once", "payout_list_a", "payout_list_b"]
    );
    let flagged = Filter {
        flag: Some("LARGE_FIRST_PAYOUT".to_owned()),
        limit: 10,
        ..Filter::default()
    };
    assert_eq!(
        ids(repository.list(&flagged).await.unwrap()),
        ["payout_small"]
    );
    let first_page = repository
        .list(&Filter {
            status: Some(ApprovalStatus::Pending),
            limit: 2,
            ..Filter::default()
        })
        .await
        .unwrap();
    let last = first_page.last().unwrap();
    let next = Filter {
        status: Some(ApprovalStatus::Pending),
        after: Some((last.requested_at, last.id.clone())),
        limit: 2,
        ..Filter::default()
    };
    assert_eq!(
        ids(repository.list(&next).await.unwrap()),
        ["payout_list_b", "payout_small"]
    );

    // Decided approvals are due to be carried out from their next attempt on, earliest
    // first, until marked applied; a parked one is not due.
    let due = repository.due(at(60), 10).await.unwrap();
    assert_eq!(due.len(), 2);
    assert!(due[0].next_attempt_at <= due[1].next_attempt_at);
    assert!(
        repository.due(at(-60), 10).await.unwrap().is_empty(),
        "not yet"
    );
    let done = due[0].applied();
    repository.replace(&done, due[0].version).await.unwrap();
    assert_eq!(repository.due(at(60), 10).await.unwrap().len(), 1);
    assert_eq!(repository.get(&done.id).await.unwrap(), Some(done));
    let (failed, _) = due[1].carry_out_failed(at(0));
    let parked = failed.parked();
    repository.replace(&parked, due[1].version).await.unwrap();
    assert_eq!(
        repository.get(&parked.id).await.unwrap(),
        Some(parked.clone())
    );
    assert!(repository.due(at(10_000), 10).await.unwrap().is_empty());
    assert_eq!(parked.attempts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_conforms() {
    run(Arc::new(MemoryApprovals::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_store_conforms() {
    let database = payouts_runtime::testing::mongo_database("approvals").await;
    run(Arc::new(MongoApprovals::open(&database).await.unwrap())).await;
}
