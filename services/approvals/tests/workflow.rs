//! The approval workflow through its public API, on the embedded store and on MongoDB: one
//! approval per payout, admins told once, one decision wins, decisions are carried out even
//! when the payouts service was down when they were made.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{Duration, Utc};
use payouts_approvals::domain::{Action, Approval, ApprovalStatus, HoldMetadata, UserContext};
use payouts_approvals::store::{ApprovalRepository, MemoryApprovals, MongoApprovals};
use payouts_approvals::workflow::{AdminNotifier, Hold, PayoutsPort, REDRIVE_AFTER, Workflow};
use payouts_runtime::clock::ManualClock;
use payouts_runtime::{ErrorKind, Money, ServiceError};

/// Payouts that fail the first `failures` resolutions, and count the others.
#[derive(Default)]
struct FakePayouts {
    failures: AtomicUsize,
    resolved: Mutex<Vec<(String, ApprovalStatus)>>,
}

#[async_trait]
impl PayoutsPort for FakePayouts {
    async fn resolve(&self, approval: &Approval) -> Result<Option<String>, ServiceError> {
        if self.failures.load(Ordering::SeqCst) > 0 {
            self.failures.fetch_sub(1, Ordering::SeqCst);
            return Err(ServiceError::unavailable(
                "the payouts service is unavailable",
                std::io::Error::other("down"),
            ));
        }
        self.resolved
            .lock()
            .unwrap()
            .push((approval.payout_id.clone(), approval.status));
        Ok((approval.status == ApprovalStatus::Approved)
            .then(|| format!("tr_{}", approval.payout_id)))
    }

    async fn user_context(&self, _user_id: &str) -> Result<UserContext, ServiceError> {
        Ok(UserContext {
            account_age_days: 15,
            lifetime_earnings_cents: 9_000_00,
            ..UserContext::default()
        })
    }
}

#[derive(Default)]
struct Admins {
    told: Mutex<Vec<String>>,
}

impl AdminNotifier for Admins {
    fn approval_required(&self, approval: &Approval) {
        self.told.lock().unwrap().push(approval.id.clone());
    }
}

struct Fixture {
    workflow: Arc<Workflow>,
    payouts: Arc<FakePayouts>,
    admins: Arc<Admins>,
    clock: ManualClock,
}

fn fixture(repository: Arc<dyn ApprovalRepository>, failures: usize) -> Fixture {
    let payouts = Arc::new(FakePayouts {
        failures: AtomicUsize::new(failures),
        ..FakePayouts::default()
    });
    let admins = Arc::new(Admins::default());
    let clock = ManualClock::new(payouts_runtime::store::store_precision(Utc::now()));
    let workflow = Arc::new(Workflow {
        approvals: repository,
        payouts: Arc::clone(&payouts) as Arc<dyn PayoutsPort>,
        notifier: Arc::clone(&admins) as Arc<dyn AdminNotifier>,
        clock: Arc::new(clock.clone()),
        poll_interval: std::time::Duration::from_millis(10),
    });
    Fixture {
        workflow,
        payouts,
        admins,
        clock,
    }
}

fn hold(payout_id: &str) -> Hold {
    Hold {
        payout_id: payout_id.to_owned(),
        user_id: "creator".to_owned(),
        amount: Money::usd(7_500_00),
        flags: vec!["REQUIRES_ADMIN_APPROVAL".to_owned()],
        reason: "Amount exceeds $5,000.00".to_owned(),
        metadata: HoldMetadata {
            account_age_days: 15,
            ..HoldMetadata::default()
        },
    }
}

async fn on_both_stores<F, Fut>(name: &str, scenario: F)
where
    F: Fn(Arc<dyn ApprovalRepository>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    scenario(Arc::new(MemoryApprovals::default())).await;
    let database = payouts_runtime::testing::mongo_database(name).await;
    scenario(Arc::new(MongoApprovals::open(&database).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_approval_per_payout_and_admins_are_told_once() {
    on_both_stores("wf_once", |repository| async move {
        let f = fixture(repository, 0);
        let (first, created) = f.workflow.create(hold("payout_1")).await.unwrap();
        let (again, created_again) = f.workflow.create(hold("payout_1")).await.unwrap();
        assert!(created && !created_again);
        assert_eq!(first, again);
        assert_eq!(first.user_context.lifetime_earnings_cents, 9_000_00);
        assert_eq!(
            f.admins.told.lock().unwrap().clone(),
            vec!["approval_payout_1".to_owned()]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_decisions_one_wins_and_the_payout_is_resolved_once() {
    on_both_stores("wf_race", |repository| async move {
        let f = fixture(repository, 0);
        let (approval, _) = f.workflow.create(hold("payout_race")).await.unwrap();
        let deciders: Vec<_> = (0..6)
            .map(|i| {
                let workflow = Arc::clone(&f.workflow);
                let id = approval.id.clone();
                tokio::spawn(async move {
                    let action = if i % 2 == 0 {
                        Action::Approve
                    } else {
                        Action::Reject
                    };
                    workflow
                        .decide(&id, action, &format!("admin-{i}"), Some("race"))
                        .await
                })
            })
            .collect();
        let mut winners = 0;
        for decider in deciders {
            match decider.await.unwrap() {
                Ok(_) => winners += 1,
                Err(error) => {
                    assert_eq!(error.kind(), ErrorKind::Conflict);
                    assert!(error.message().contains("was already"), "{error}");
                }
            }
        }
        assert_eq!(winners, 1);
        assert_eq!(f.payouts.resolved.lock().unwrap().len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_made_while_payouts_is_down_is_carried_out_later_once() {
    on_both_stores("wf_redrive", |repository| async move {
        let f = fixture(Arc::clone(&repository), 1);
        let (approval, _) = f.workflow.create(hold("payout_down")).await.unwrap();
        let decided = f
            .workflow
            .decide(&approval.id, Action::Approve, "admin-1", None)
            .await
            .unwrap();
        assert_eq!(decided.approval.status, ApprovalStatus::Approved);
        assert_eq!(decided.transfer_id, None);
        assert!(!decided.approval.applied);

        // Not before the grace period: the deciding request may still be carrying it out.
        assert_eq!(f.workflow.run_due().await.unwrap(), 0);
        f.clock.advance(REDRIVE_AFTER + Duration::seconds(1));
        assert_eq!(f.workflow.run_due().await.unwrap(), 1);
        assert_eq!(
            f.payouts.resolved.lock().unwrap().clone(),
            vec![("payout_down".to_owned(), ApprovalStatus::Approved)]
        );
        assert!(repository.get(&approval.id).await.unwrap().unwrap().applied);
        assert_eq!(f.workflow.run_due().await.unwrap(), 0, "carried out once");
    })
    .await;
}
