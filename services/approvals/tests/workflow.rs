//! The approval workflow through its public API, on the embedded store and on MongoDB: one
//! approval per payout, admins told once, one decision wins, decisions are carried out even
//! when the payouts service was down when they were made.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{Duration, Utc};
use payouts_approvals::domain::{
    Action, Approval, ApprovalStatus, HoldMetadata, MAX_CARRY_OUT_ATTEMPTS, UserContext,
};
use payouts_approvals::store::{ApprovalRepository, MemoryApprovals, MongoApprovals};
use payouts_approvals::workflow::{AdminNotifier, Hold, PayoutsPort, REDRIVE_AFTER, Workflow};
use payouts_runtime::clock::ManualClock;
use payouts_runtime::{Clock as _, ErrorKind, Money, ServiceError};

/// Payouts that fail the first `failures` resolutions and every resolution of the payouts in
/// `refusing`, and count the others.
#[derive(Default)]
struct FakePayouts {
    failures: AtomicUsize,
    refusing: Mutex<Vec<String>>,
    resolved: Mutex<Vec<(String, ApprovalStatus)>>,
}

#[async_trait]
impl PayoutsPort for FakePayouts {
    async fn resolve(&self, approval: &Approval) -> Result<Option<String>, ServiceError> {
        if self.refusing.lock().unwrap().contains(&approval.payout_id) {
            return Err(ServiceError::conflict("payout refuses"));
        }
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
    alerts: Mutex<Vec<String>>,
}

#[async_trait]
impl AdminNotifier for Admins {
    fn approval_required(&self, approval: &Approval) {
        self.told.lock().unwrap().push(approval.id.clone());
    }

    async fn critical_alert(
        &self,
        _key: &str,
        kind: &str,
        _title: &str,
        _description: &str,
    ) -> Result<(), ServiceError> {
        self.alerts.lock().unwrap().push(kind.to_owned());
        Ok(())
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
        dual_control_above_cents: None,
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

        // Not at once: the next try waits a backoff (at least the re-drive grace).
        assert_eq!(f.workflow.run_due().await.unwrap(), 0);
        let stored = repository.get(&approval.id).await.unwrap().unwrap();
        let next = stored.next_attempt_at.unwrap();
        assert!(next - f.clock.now() >= REDRIVE_AFTER, "{next}");
        f.clock.set(next);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_that_keeps_failing_backs_off_then_parks_with_an_alert() {
    on_both_stores("wf_park", |repository| async move {
        let attempts = usize::try_from(MAX_CARRY_OUT_ATTEMPTS).unwrap();
        let f = fixture(Arc::clone(&repository), attempts);
        let (approval, _) = f.workflow.create(hold("payout_stuck")).await.unwrap();
        f.workflow
            .decide(&approval.id, Action::Reject, "admin-1", Some("no"))
            .await
            .unwrap();
        let mut waits = Vec::new();
        loop {
            let stored = repository.get(&approval.id).await.unwrap().unwrap();
            let Some(next) = stored.next_attempt_at else {
                assert!(stored.parked, "stops only by parking");
                break;
            };
            waits.push(next - f.clock.now());
            f.clock.set(next);
            f.workflow.run_due().await.unwrap();
            assert!(waits.len() <= attempts, "bounded");
        }
        assert_eq!(
            waits.len(),
            attempts - 1,
            "the first try was the deciding request's"
        );
        assert!(
            waits
                .windows(2)
                .all(|pair| pair[1] >= pair[0] || pair[1] >= Duration::minutes(30))
        );
        assert_eq!(
            f.admins.alerts.lock().unwrap().clone(),
            vec!["approval_parked".to_owned()]
        );
        // Parked: left alone until an admin retries it; then it is carried out once.
        f.clock.advance(Duration::days(1));
        assert_eq!(f.workflow.run_due().await.unwrap(), 0);
        assert!(f.payouts.resolved.lock().unwrap().is_empty());
        let resumed = f.workflow.retry(&approval.id, "admin:ops").await.unwrap();
        assert!(!resumed.parked);
        assert_eq!(f.workflow.run_due().await.unwrap(), 1);
        assert_eq!(f.payouts.resolved.lock().unwrap().len(), 1);
        assert!(repository.get(&approval.id).await.unwrap().unwrap().applied);
        let error = f
            .workflow
            .retry(&approval.id, "admin:ops")
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::FailedPrecondition);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_decisions_do_not_starve_newer_ones() {
    on_both_stores("wf_starve", |repository| async move {
        // 40 decisions whose payouts keep refusing, decided first...
        let f = fixture(Arc::clone(&repository), 0);
        for i in 0..40 {
            let payout = format!("payout_bad_{i}");
            f.payouts.refusing.lock().unwrap().push(payout.clone());
            let (approval, _) = f.workflow.create(hold(&payout)).await.unwrap();
            f.workflow
                .decide(&approval.id, Action::Reject, "admin-1", Some("no"))
                .await
                .unwrap();
        }
        // ...then one whose carry-out failed only once.
        f.payouts.failures.store(1, Ordering::SeqCst);
        let (good, _) = f.workflow.create(hold("payout_good")).await.unwrap();
        f.workflow
            .decide(&good.id, Action::Approve, "admin-1", None)
            .await
            .unwrap();
        // The failing ones back off, so within a few passes the newer one gets its turn
        // (taking the oldest 32 every time, it never would).
        for _ in 0..4 {
            f.clock.advance(Duration::minutes(1));
            f.workflow.run_due().await.unwrap();
        }
        assert!(repository.get(&good.id).await.unwrap().unwrap().applied);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_pages_without_repeating_an_approval_requested_within_a_millisecond() {
    on_both_stores("wf_pages", |repository| async move {
        let f = fixture(repository, 0);
        // A clock with sub-millisecond time, as the system clock has: page tokens carry
        // milliseconds, so the stored time must too.
        f.clock
            .set(chrono::DateTime::from_timestamp(1_800_000_000, 123_456_789).unwrap());
        for number in 0..5 {
            f.workflow
                .create(hold(&format!("payout_page_{number}")))
                .await
                .unwrap();
            f.clock.advance(Duration::microseconds(10));
        }
        let grpc = payouts_approvals::grpc::ApprovalsGrpc::new(Arc::clone(&f.workflow));
        let mut seen = Vec::new();
        let mut token = String::new();
        for _ in 0..10 {
            let page = payouts_proto::approvals::v1::approvals_service_server::ApprovalsService::list_approvals(
                &grpc,
                tonic::Request::new(payouts_proto::approvals::v1::ListApprovalsRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    ..Default::default()
                }),
            )
            .await
            .unwrap()
            .into_inner();
            seen.extend(page.approvals.into_iter().map(|a| a.payout_id));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let expected: Vec<String> = (0..5).map(|n| format!("payout_page_{n}")).collect();
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(sorted, expected, "every approval once: {seen:?}");
    })
    .await;
}
