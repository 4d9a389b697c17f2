//! The services as they call each other, without a network: each call parks at a point
//! before it reaches the other service and after it returns, and may fail either way: the
//! service is down (nothing happened), or it acted and its answer was lost (the caller's
//! deadline ran out). The callee is the real service core of a randomly chosen replica.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payouts_approvals::domain::{Approval, ApprovalStatus, HoldMetadata, UserContext as HeldUser};
use payouts_approvals::workflow::{AdminNotifier, Hold, PayoutsPort, Workflow};
use payouts_disputes::cases::Cases;
use payouts_disputes::domain::MarkKind;
use payouts_disputes::store::{EarningsBookRepository, MemoryEarningsBooks};
use payouts_limits::admission::{ContextSource, Limits, UserEarnings};
use payouts_payouts::events::Event;
use payouts_payouts::flow::PayoutFlow;
use payouts_payouts::payout::{OwedAlert, Payout};
use payouts_payouts::ports::{
    Admission, AlertsPort, ApprovalsPort, LimitsPort, Notifier, Recheck, ReleaseAnswer, UserNotice,
};
use payouts_runtime::clock::ManualClock;
use payouts_runtime::{Clock as _, Money, ServiceError};
use payouts_webhooks::domain::{DispatchFailure, InboxEvent, Owner};
use payouts_webhooks::inbox::Dispatcher;

use crate::chaos::unavailable;
use crate::stores::Hazard;

/// Faults of calls between services, in a thousand calls.
const SERVICE_DOWN: u32 = 10;
const ANSWER_LOST: u32 = 6;
/// The deadline of a call between services (GRPC_TIMEOUT_MILLISECONDS).
const DEADLINE: chrono::Duration = chrono::Duration::seconds(10);

/// The replicas of every service, filled in once they are all built (they call each other).
#[derive(Default)]
pub struct Replicas {
    pub disputes: OnceLock<Vec<Arc<Cases>>>,
    pub payouts: OnceLock<Vec<Arc<PayoutFlow>>>,
    pub limits: OnceLock<Vec<Arc<Limits>>>,
    pub approvals: OnceLock<Vec<Arc<Workflow>>>,
}

/// A call to another service: it may not get there, or its answer may not come back. A
/// call carries a deadline: one that has not reached the service by then never does, and an
/// answer later than that is never read (DEADLINE_EXCEEDED, an unknown outcome).
async fn call<T>(
    hazard: &Hazard,
    clock: &ManualClock,
    service: &'static str,
    request: impl Future<Output = Result<T, ServiceError>>,
) -> Result<T, ServiceError> {
    let sent = clock.now();
    let name = service.split('.').next().unwrap_or(service);
    hazard.gate.point(service).await;
    if clock.now() - sent > DEADLINE
        || hazard.outages.is_down(name, clock.now())
        || hazard.chaos.fault("service down", SERVICE_DOWN)
    {
        return Err(unavailable(service));
    }
    let answer = request.await;
    hazard.gate.point(service).await;
    match answer {
        // An outage that began while the request was served: it acted, the answer is lost.
        Ok(_)
            if clock.now() - sent > DEADLINE
                || hazard.outages.is_down(name, clock.now())
                || hazard.chaos.fault("service answer lost", ANSWER_LOST) =>
        {
            Err(unavailable(service))
        }
        other => other,
    }
}

fn pick<T: Clone>(
    hazard: &Hazard,
    replicas: &Weak<Replicas>,
    service: impl Fn(&Replicas) -> &OnceLock<Vec<T>>,
) -> Result<T, ServiceError> {
    let replicas = replicas
        .upgrade()
        .ok_or_else(|| unavailable("a world that has ended"))?;
    let replicas = service(&replicas)
        .get()
        .ok_or_else(|| unavailable("a service not built yet"))?;
    Ok(replicas[hazard.chaos.below(replicas.len())].clone())
}

/// The limits service, as the payouts service calls it.
pub struct LimitsCalls {
    pub hazard: Hazard,
    pub clock: ManualClock,
    /// Weak: the replicas hold these calls (a strong cycle would never be freed).
    pub replicas: Weak<Replicas>,
    /// What the limits answered, for the trace.
    pub log: Arc<Mutex<Vec<String>>>,
    /// The re-check windows the money invariant reads (see [`Windows`]).
    pub windows: Windows,
}

impl LimitsCalls {
    fn note(&self, line: String) {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(line);
    }
}

#[async_trait]
impl LimitsPort for LimitsCalls {
    async fn reserve(
        &self,
        user_id: &str,
        payout_id: &str,
        amount: &Money,
        requested_at: DateTime<Utc>,
        account_created_at: Option<DateTime<Utc>>,
    ) -> Result<Admission, ServiceError> {
        let limits = pick(&self.hazard, &self.replicas, |r| &r.limits)?;
        let reserved = limits.reserve(
            user_id,
            payout_id,
            amount.cents,
            requested_at,
            account_created_at,
        );
        let reserved = call(&self.hazard, &self.clock, "limits.reserve", async {
            let answer = reserved.await;
            self.note(format!(
                "  limits: reserve {payout_id} {} -> {}",
                amount.cents,
                match &answer {
                    Ok(r) if r.reserved => "reserved".to_owned(),
                    Ok(r) => format!("refused ({})", r.decision.reason),
                    Err(e) => format!("error {:?}", e.kind()),
                }
            ));
            answer
        })
        .await?;
        Ok(Admission {
            decision: payouts_limits::grpc::decision_to_proto(reserved.decision),
            reserved: reserved.reserved,
        })
    }

    async fn release(
        &self,
        user_id: &str,
        payout_id: &str,
        total_released: &Money,
        sequence: i64,
        reason: &str,
    ) -> Result<ReleaseAnswer, ServiceError> {
        let limits = pick(&self.hazard, &self.replicas, |r| &r.limits)?;
        let released = limits.release(user_id, payout_id, total_released.cents, sequence, reason);
        let released = call(&self.hazard, &self.clock, "limits.release", async {
            let answer = released.await;
            self.note(format!(
                "  limits: release {payout_id} total {} seq {sequence} -> {:?}",
                total_released.cents,
                answer.as_ref().map(|r| r.held_cents)
            ));
            answer
        })
        .await?;
        Ok(ReleaseAnswer {
            applied: released.applied,
            found: released.found,
            held_cents: released.held_cents,
        })
    }

    async fn recheck(&self, user_id: &str, payout_id: &str) -> Result<Recheck, ServiceError> {
        // A transfer may follow: its window opens before the limits read the earnings.
        self.windows.open(user_id, payout_id);
        let limits = pick(&self.hazard, &self.replicas, |r| &r.limits)?;
        let rechecked = call(
            &self.hazard,
            &self.clock,
            "limits.recheck",
            limits.recheck(user_id, payout_id),
        )
        .await?;
        Ok(if rechecked.payable {
            Recheck::Payable
        } else {
            Recheck::NotPayable {
                reason: rechecked.reason,
            }
        })
    }
}

/// For each payout whose transfer was re-checked, the most its creator's earnings were from
/// the start of that re-check until now: as the disputes service reports them (lifetime
/// after refunds), and as Stripe's truth has them ([`crate::invariants::Truth`]: the
/// refunds and lost disputes the events applied so far made known, at Stripe's own figures).
/// A transfer made after it is covered by earnings of that window: the limits admit and
/// re-check only while payable earnings cover everything committed, and refunds that land
/// after that moment are the creator's debt, not an overpayment.
#[derive(Clone)]
pub struct Windows {
    books: Arc<MemoryEarningsBooks>,
    truth: Arc<OnceLock<crate::invariants::Truth>>,
    open: Arc<Mutex<BTreeMap<String, Window>>>,
}

/// One payout's window: its creator, and the most their earnings were (book, truth).
#[derive(Debug, Clone)]
struct Window {
    user: String,
    book: i64,
    truth: i64,
}

impl Windows {
    pub fn new(books: Arc<MemoryEarningsBooks>) -> Self {
        Self {
            books,
            truth: Arc::default(),
            open: Arc::default(),
        }
    }

    /// Stripe's truth, once the simulated Stripe and its charges exist.
    pub fn set_truth(&self, truth: crate::invariants::Truth) {
        let _ = self.truth.set(truth);
    }

    /// Lifetime earnings after refunds, as reported now.
    pub fn lifetime(&self, user_id: &str) -> i64 {
        crate::world::now(self.books.get(user_id))
            .map(|book| {
                book.earnings(&payouts_runtime::Currency::usd())
                    .lifetime
                    .cents
            })
            .unwrap_or(0)
    }

    fn truth(&self, user_id: &str) -> i64 {
        self.truth
            .get()
            .map_or(i64::MAX, |truth| truth.lifetime(user_id))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Window>> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn open(&self, user_id: &str, payout_id: &str) {
        let window = Window {
            user: user_id.to_owned(),
            book: self.lifetime(user_id),
            truth: self.truth(user_id),
        };
        self.lock().insert(payout_id.to_owned(), window);
    }

    /// After every step: each window keeps the most its creator's earnings reached.
    pub fn observe(&self) {
        let users: std::collections::BTreeSet<String> =
            self.lock().values().map(|w| w.user.clone()).collect();
        if users.is_empty() {
            return;
        }
        let truths = self.truth.get().map(|truth| truth.lifetimes());
        let now: BTreeMap<String, (i64, i64)> = users
            .into_iter()
            .map(|user| {
                let book = self.lifetime(&user);
                let truth = truths
                    .as_ref()
                    .map_or(i64::MAX, |t| t.get(&user).copied().unwrap_or(0));
                (user, (book, truth))
            })
            .collect();
        for window in self.lock().values_mut() {
            let (book, truth) = now.get(&window.user).copied().unwrap_or((0, 0));
            window.book = window.book.max(book);
            window.truth = window.truth.max(truth);
        }
    }

    /// The most the payout's creator earned since its last re-check began, (by the book,
    /// by Stripe's truth); None when its transfer was never re-checked.
    pub fn ceiling(&self, payout_id: &str) -> Option<(i64, i64)> {
        self.lock().get(payout_id).map(|w| (w.book, w.truth))
    }
}

/// The payouts and disputes services, as the limits service asks them about a user.
pub struct ContextCalls {
    pub hazard: Hazard,
    pub clock: ManualClock,
    /// Weak: the replicas hold these calls (a strong cycle would never be freed).
    pub replicas: Weak<Replicas>,
    pub account_created_at: DateTime<Utc>,
}

#[async_trait]
impl ContextSource for ContextCalls {
    async fn account_created_at(
        &self,
        _user_id: &str,
    ) -> Result<Option<DateTime<Utc>>, ServiceError> {
        // Not a simulation point: the limits service asks it together with the earnings
        // (one task, two calls at once), and the payouts service usually says it itself.
        Ok(Some(self.account_created_at))
    }

    async fn earnings(&self, user_id: &str) -> Result<UserEarnings, ServiceError> {
        let cases = pick(&self.hazard, &self.replicas, |r| &r.disputes)?;
        let (earnings, book) = call(
            &self.hazard,
            &self.clock,
            "disputes.get_earnings",
            cases
                .ledger
                .earnings_and_book(user_id, &payouts_runtime::Currency::usd()),
        )
        .await?;
        let now = self.clock.now();
        let window = payouts_disputes::grpc::RECENT_WINDOW;
        Ok(UserEarnings {
            lifetime_cents: earnings.lifetime.cents,
            payable_cents: earnings.active.cents,
            recent_refunds_and_disputes: book.recent_count(MarkKind::Refund, now, window)
                + book.recent_count(MarkKind::Dispute, now, window),
        })
    }
}

/// The approvals service, as the payouts service hands it held payouts.
pub struct ApprovalCalls {
    pub hazard: Hazard,
    pub clock: ManualClock,
    /// Weak: the replicas hold these calls (a strong cycle would never be freed).
    pub replicas: Weak<Replicas>,
}

#[async_trait]
impl ApprovalsPort for ApprovalCalls {
    async fn queue(&self, payout: &Payout) -> Result<(), ServiceError> {
        let workflow = pick(&self.hazard, &self.replicas, |r| &r.approvals)?;
        let hold = Hold {
            payout_id: payout.id.clone(),
            user_id: payout.user_id.clone(),
            amount: payout.amount.clone(),
            flags: payout.flags.clone(),
            reason: payout.hold_reason.clone().unwrap_or_default(),
            metadata: HoldMetadata::default(),
        };
        call(
            &self.hazard,
            &self.clock,
            "approvals.create",
            workflow.create(hold),
        )
        .await?;
        Ok(())
    }
}

/// The payouts service, as the approvals service carries decisions out.
pub struct DecisionCalls {
    pub hazard: Hazard,
    pub clock: ManualClock,
    /// Weak: the replicas hold these calls (a strong cycle would never be freed).
    pub replicas: Weak<Replicas>,
}

#[async_trait]
impl PayoutsPort for DecisionCalls {
    async fn resolve(&self, approval: &Approval) -> Result<Option<String>, ServiceError> {
        let flow = pick(&self.hazard, &self.replicas, |r| &r.payouts)?;
        let payout = call(
            &self.hazard,
            &self.clock,
            "payouts.resolve_approval",
            flow.resolve_approval(
                &approval.payout_id,
                approval.status == ApprovalStatus::Approved,
                approval.reviewed_by.as_deref().unwrap_or("admin"),
                approval.review_notes.as_deref().unwrap_or(""),
            ),
        )
        .await?;
        Ok(payout.stripe_transfer_id)
    }

    async fn user_context(&self, _user_id: &str) -> Result<HeldUser, ServiceError> {
        Ok(HeldUser::default())
    }
}

/// The owner services, as the webhook inbox dispatches events to them.
pub struct EventCalls {
    pub hazard: Hazard,
    pub clock: ManualClock,
    /// Weak: the replicas hold these calls (a strong cycle would never be freed).
    pub replicas: Weak<Replicas>,
    /// Critical alerts raised (a parked event's).
    pub raised: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl Dispatcher for EventCalls {
    async fn dispatch(&self, owner: Owner, event: &InboxEvent) -> Result<String, DispatchFailure> {
        if owner == Owner::Disputes {
            let cases = pick(&self.hazard, &self.replicas, |r| &r.disputes)?;
            let payload: serde_json::Value =
                serde_json::from_str(&event.payload).map_err(|error| {
                    DispatchFailure::new(tonic::Code::InvalidArgument, error.to_string())
                })?;
            let created = DateTime::from_timestamp(event.created, 0).unwrap_or_default();
            return call(
                &self.hazard,
                &self.clock,
                "disputes.handle_stripe_event",
                cases.handle(
                    &event.event_id,
                    &event.event_type,
                    created,
                    &payload["data"]["object"],
                ),
            )
            .await
            .map(|applied| applied.detail)
            .map_err(DispatchFailure::from);
        }
        let flow = pick(&self.hazard, &self.replicas, |r| &r.payouts)?;
        let parsed = Event::parse(
            &event.event_id,
            &event.event_type,
            event.account.as_deref().unwrap_or(""),
            event.created,
            event.payload.as_bytes(),
        )
        .map_err(DispatchFailure::from)?;
        call(
            &self.hazard,
            &self.clock,
            "payouts.handle_stripe_event",
            flow.handle_event(&parsed),
        )
        .await
        .map(|applied| applied.detail)
        .map_err(DispatchFailure::from)
    }

    async fn alert_parked(&self, event: &InboxEvent) -> Result<(), String> {
        call(&self.hazard, &self.clock, "notifications.alert", async {
            self.raised
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(format!("webhook_event_parked {}", event.event_id));
            Ok(())
        })
        .await
        .map_err(|error| error.to_string())
    }
}

/// Critical alerts and admin notifications: recorded, and sometimes not delivered.
pub struct AlertCalls {
    pub hazard: Hazard,
    pub clock: ManualClock,
    pub raised: Arc<Mutex<Vec<String>>>,
}

impl AlertCalls {
    async fn raise_key(&self, key: &str, kind: &str) -> Result<(), ServiceError> {
        call(&self.hazard, &self.clock, "notifications.alert", async {
            self.raised
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(format!("{kind} {key}"));
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl AlertsPort for AlertCalls {
    async fn raise(&self, alert: &OwedAlert, _data_json: String) -> Result<(), ServiceError> {
        self.raise_key(&alert.key, &alert.kind).await
    }
}

#[async_trait]
impl AdminNotifier for AlertCalls {
    fn approval_required(&self, _approval: &Approval) {}

    async fn critical_alert(
        &self,
        key: &str,
        kind: &str,
        _title: &str,
        _description: &str,
    ) -> Result<(), ServiceError> {
        self.raise_key(key, kind).await
    }
}

#[async_trait]
impl payouts_disputes::ports::NoticesPort for AlertCalls {
    async fn alert(&self, message: &payouts_disputes::ports::Message) -> Result<(), ServiceError> {
        self.raise_key(&message.key, &message.kind).await
    }

    async fn notify_user(
        &self,
        _user_id: &str,
        message: &payouts_disputes::ports::Message,
    ) -> Result<(), ServiceError> {
        call(
            &self.hazard,
            &self.clock,
            "notifications.notify_user",
            async {
                let _ = &message.key;
                Ok(())
            },
        )
        .await
    }
}

/// User notifications: nothing to simulate (they never block or fail a payout).
pub struct Silent;

impl Notifier for Silent {
    fn notify(&self, _notice: UserNotice) {}
}

/// The payouts service, as notifications' escalator halts transfers through it
/// (`SetTransferPause`, cause escalation, reason `escalation: <alert id>`): the gRPC
/// handler's checks, then the payouts flow's `set_pause`, on a randomly chosen replica. Down,
/// or acted with its answer lost, like every call between services.
pub struct HaltCalls {
    pub hazard: Hazard,
    pub clock: ManualClock,
    /// Weak: the replicas hold these calls (a strong cycle would never be freed).
    pub replicas: Weak<Replicas>,
}

impl HaltCalls {
    /// `SetTransferPause` as the gRPC handler takes it (cause escalation: paused, a reason
    /// naming the alert, an actor).
    pub async fn set_transfer_pause(
        &self,
        change: payouts_payouts::pause::PauseChange,
    ) -> Result<payouts_payouts::pause::TransferPause, ServiceError> {
        use payouts_payouts::pause::{PauseCause, escalation_alert};
        if change.cause == PauseCause::Escalation
            && (!change.paused || escalation_alert(&change.reason).is_none())
        {
            return Err(ServiceError::invalid_argument(
                "an escalation halt pauses and names its alert",
            ));
        }
        let flow = pick(&self.hazard, &self.replicas, |r| &r.payouts)?;
        call(
            &self.hazard,
            &self.clock,
            "payouts.set_transfer_pause",
            async move { flow.set_pause(&change).await },
        )
        .await
    }
}

#[async_trait]
impl payouts_notifications::escalator::Halter for HaltCalls {
    async fn halt(&self, alert_id: &str) -> Result<(), ServiceError> {
        self.set_transfer_pause(payouts_payouts::pause::PauseChange {
            paused: true,
            cause: payouts_payouts::pause::PauseCause::Escalation,
            reason: payouts_payouts::pause::escalation_reason(alert_id),
            actor: "notifications".to_owned(),
        })
        .await
        .map(|_| ())
    }
}
