//! The simulated world: every service built from its real core on embedded stores, several
//! replicas of each, users and admins, a simulated Stripe; the scheduler that drives them
//! one step at a time; and the final drain, once faults are off.

use payouts_payouts::reconcile::FindingKind;
use payouts_payouts::reconciler::{Reconciler, accounts_in_flight};
use payouts_payouts::store::{MemoryReports, ReportRepository};
use payouts_webhooks::backfill::{AccountsInFlight, Backfill};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use chrono::{DateTime, Duration};
use payouts_approvals::domain::{Action, ApprovalStatus};
use payouts_approvals::store::{ApprovalRepository, MemoryApprovals};
use payouts_approvals::workflow::Workflow;
use payouts_disputes::cases::Cases;
use payouts_disputes::charges::refund_counts;
use payouts_disputes::domain::Allocation;
use payouts_disputes::earnings::Ledger;
use payouts_disputes::store::{
    AllocationRepository, ChargeCaseRepository, EarningsBookRepository, MemoryAllocations,
    MemoryChargeCases, MemoryEarningsBooks,
};
use payouts_limits::admission::Limits;
use payouts_limits::domain::LimitConfig;
use payouts_limits::store::{
    BlockedAttemptRepository, MemoryBlockedAttempts, MemoryQuotas, QuotaRepository,
};
use payouts_notifications::alerts::{Alert, Severity};
use payouts_notifications::escalation::Level;
use payouts_notifications::escalator::{Escalator, Halter};
use payouts_notifications::paging::{PageLinks, PagePolicy};
use payouts_notifications::store::{AlertRepository, MemoryAlerts};
use payouts_payouts::domain::Account;
use payouts_payouts::flow::PayoutFlow;
use payouts_payouts::pause::{PauseCause, PauseChange};
use payouts_payouts::payout::RETRY_BASE;
use payouts_payouts::store::{
    AccountRepository, MemoryAccounts, MemoryPause, MemoryPayouts, PauseRepository,
    PayoutRepository,
};
use payouts_runtime::clock::ManualClock;
use payouts_runtime::ids::SequentialIds;
use payouts_runtime::testing::stripe::{fixture, signature_header};
use payouts_runtime::testing::stripe_ledger::AmountRefundedOnFailure;
use payouts_runtime::{Clock as _, IdSource, Money, Secret};
use payouts_webhooks::domain::{Endpoint, RetryPolicy, endpoint_for};
use payouts_webhooks::inbox::{Inbox, InboxSettings, Ingested};
use payouts_webhooks::store::{InboxRepository, MemoryInbox};

use crate::chaos::Chaos;
use crate::executor::{Executor, Gate, Progress, TaskFuture};
use crate::halts::PauseWatch;
use crate::invariants::{self, Observed};
use crate::ports::{
    AlertCalls, ApprovalCalls, ContextCalls, DecisionCalls, EventCalls, HaltCalls, LimitsCalls,
    Replicas, Silent, Windows,
};
use crate::stores::{Hazard, Hazardous};
use crate::stripe::SimStripe;

const WEBHOOK_SECRET: &str = "whsec_simulation";
/// Crashes of a parked task, in a thousand resumptions.
const CRASH: u32 = 15;

/// How a run is shaped.
#[derive(Debug, Clone)]
pub struct Options {
    /// Steps with faults on, before the drain.
    pub steps: usize,
    /// Replicas of every service.
    pub replicas: usize,
    pub users: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            steps: 500,
            replicas: 2,
            users: 5,
        }
    }
}

/// What a clean run did.
#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub steps: usize,
    pub payouts: BTreeMap<&'static str, usize>,
    pub transfers: usize,
    pub crashes: u64,
    pub faults: BTreeMap<&'static str, u64>,
    pub alerts: usize,
    pub trace: Vec<String>,
}

/// A broken invariant.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub step: usize,
    pub problem: String,
    pub trace: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "seed {} broke an invariant at step {}: {}",
            self.seed, self.step, self.problem
        )?;
        writeln!(f, "last steps:")?;
        for line in self.trace.iter().rev().take(40).rev() {
            writeln!(f, "  {line}")?;
        }
        write!(
            f,
            "replay: cargo run -p payouts-simulation -- --seed {} --trace",
            self.seed
        )
    }
}

/// Polls a future that cannot wait (an embedded store read outside any task).
pub fn now<T>(future: impl Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000 {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
    }
    panic!("a store call outside the simulation did not complete");
}

struct User {
    id: String,
    account: String,
    keys: Vec<(String, i64)>,
}

/// The embedded stores themselves, read directly by the invariant checks.
pub struct Stores {
    pub payouts: Arc<MemoryPayouts>,
    pub accounts: Arc<MemoryAccounts>,
    pub quotas: Arc<MemoryQuotas>,
    pub inbox: Arc<MemoryInbox>,
    pub approvals: Arc<MemoryApprovals>,
    pub allocations: Arc<MemoryAllocations>,
    pub books: Arc<MemoryEarningsBooks>,
    pub cases: Arc<MemoryChargeCases>,
    /// The transfer pause (`payoutTransferPause`).
    pub pause: Arc<MemoryPause>,
    /// Notifications' alerts (`criticalAlerts`): the level-3 ones owe halts.
    pub alerts: Arc<MemoryAlerts>,
}

/// A supporter's charge that funded allocations (its refunds are Stripe's, in the
/// simulated Stripe's ledger).
struct Charge {
    id: String,
    amount: i64,
    /// The dispute's status, once there is one.
    dispute: Option<&'static str>,
}

/// An admin's reversal request as the admin sent it: retried with the same key after a
/// lost answer, as a person naturally does.
#[derive(Clone)]
struct AdminReversal {
    payout_id: String,
    key: String,
    cents: i64,
}

pub struct World {
    seed: u64,
    options: Options,
    chaos: Chaos,
    clock: ManualClock,
    executor: Executor,
    stripe: SimStripe,
    stores: Stores,
    /// Keeps every service's replicas alive; the calls between services hold them weakly.
    _replicas: Arc<Replicas>,
    payouts: Vec<Arc<PayoutFlow>>,
    inboxes: Vec<Arc<Inbox>>,
    approvals: Vec<Arc<Workflow>>,
    /// Notifications' escalation workers (they halt transfers for level-3 alerts).
    escalators: Vec<Arc<Escalator>>,
    /// The payouts service as notifications calls it.
    halter: Arc<HaltCalls>,
    /// What the transfer pause must mean, watched at the stores and at Stripe.
    watch: PauseWatch,
    /// The level-3 alerts raised so far.
    escalation_alerts: Vec<String>,
    users: Vec<User>,
    charges: Vec<Charge>,
    windows: Windows,
    alerts: Arc<Mutex<Vec<String>>>,
    /// What the services answered each other, for the trace.
    service_log: Arc<Mutex<Vec<String>>>,
    bank_payouts: Vec<(String, String)>,
    admin_reversals: Vec<AdminReversal>,
    outages: crate::chaos::Outages,
    /// Reconciliation reports (the payouts service's `reconciliationReports`).
    reports: Arc<dyn ReportRepository>,
    observed: Observed,
    /// What the creators earned by Stripe's truth.
    truth: invariants::Truth,
    trace: Vec<String>,
    step: usize,
    crashes: u64,
}

impl World {
    pub fn new(seed: u64, options: &Options) -> Self {
        let chaos = Chaos::new(seed);
        let gate = Gate::default();
        let outages = crate::chaos::Outages::default();
        let watch = PauseWatch::default();
        let hazard = Hazard {
            gate: gate.clone(),
            chaos: chaos.clone(),
            outages: outages.clone(),
            watch: watch.clone(),
        };
        let start = DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default();
        let clock = ManualClock::new(start);
        let ids: Arc<dyn IdSource> = Arc::new(SequentialIds::default());
        let stores = Stores {
            payouts: Arc::new(MemoryPayouts::default()),
            accounts: Arc::new(MemoryAccounts::default()),
            quotas: Arc::new(MemoryQuotas::default()),
            inbox: Arc::new(MemoryInbox::default()),
            approvals: Arc::new(MemoryApprovals::default()),
            allocations: Arc::new(MemoryAllocations::default()),
            books: Arc::new(MemoryEarningsBooks::default()),
            cases: Arc::new(MemoryChargeCases::default()),
            pause: Arc::new(MemoryPause::default()),
            alerts: Arc::new(MemoryAlerts::default()),
        };
        let allocations_store: Arc<dyn AllocationRepository> = Hazardous::new(
            Arc::clone(&stores.allocations) as Arc<dyn AllocationRepository>,
            &hazard,
        );
        let books_store: Arc<dyn EarningsBookRepository> = Hazardous::new(
            Arc::clone(&stores.books) as Arc<dyn EarningsBookRepository>,
            &hazard,
        );
        let cases_store: Arc<dyn ChargeCaseRepository> = Hazardous::new(
            Arc::clone(&stores.cases) as Arc<dyn ChargeCaseRepository>,
            &hazard,
        );
        let windows = Windows::new(Arc::clone(&stores.books));
        let payouts_store: Arc<dyn PayoutRepository> = Hazardous::new(
            Arc::clone(&stores.payouts) as Arc<dyn PayoutRepository>,
            &hazard,
        );
        let accounts_store: Arc<dyn AccountRepository> = Hazardous::new(
            Arc::clone(&stores.accounts) as Arc<dyn AccountRepository>,
            &hazard,
        );
        let pause_store: Arc<dyn PauseRepository> = Hazardous::new(
            Arc::clone(&stores.pause) as Arc<dyn PauseRepository>,
            &hazard,
        );
        let alerts_store: Arc<dyn AlertRepository> = Hazardous::new(
            Arc::clone(&stores.alerts) as Arc<dyn AlertRepository>,
            &hazard,
        );
        let quotas_store: Arc<dyn QuotaRepository> = Hazardous::new(
            Arc::clone(&stores.quotas) as Arc<dyn QuotaRepository>,
            &hazard,
        );
        let blocked_store: Arc<dyn BlockedAttemptRepository> = Hazardous::new(
            Arc::new(MemoryBlockedAttempts::default()) as Arc<dyn BlockedAttemptRepository>,
            &hazard,
        );
        let inbox_store: Arc<dyn InboxRepository> = Hazardous::new(
            Arc::clone(&stores.inbox) as Arc<dyn InboxRepository>,
            &hazard,
        );
        let approvals_store: Arc<dyn ApprovalRepository> = Hazardous::new(
            Arc::clone(&stores.approvals) as Arc<dyn ApprovalRepository>,
            &hazard,
        );
        let stripe = SimStripe::new(hazard.clone(), clock.clone());
        // Stripe's documentation does not say what a failed refund does to its charge's
        // `amount_refunded`: each run picks one, and the money must come out the same.
        stripe.set_amount_refunded_on_failure(if chaos.chance(500) {
            AmountRefundedOnFailure::Lowered
        } else {
            AmountRefundedOnFailure::Stays
        });
        let replicas = Arc::new(Replicas::default());
        let alerts = Arc::new(Mutex::new(Vec::new()));
        let service_log = Arc::new(Mutex::new(Vec::new()));
        let count = options.replicas.max(1);

        let limits: Vec<Arc<Limits>> = (0..count)
            .map(|_| {
                Arc::new(Limits::new(
                    LimitConfig::default(),
                    Arc::clone(&quotas_store),
                    Arc::clone(&blocked_store),
                    Arc::new(ContextCalls {
                        hazard: hazard.clone(),
                        clock: clock.clone(),
                        replicas: Arc::downgrade(&replicas),
                        account_created_at: start - Duration::days(400),
                    }),
                    Arc::new(clock.clone()),
                    Arc::clone(&ids),
                ))
            })
            .collect();
        let payouts: Vec<Arc<PayoutFlow>> = (0..count)
            .map(|_| {
                Arc::new(PayoutFlow {
                    accounts: Arc::clone(&accounts_store),
                    payouts: Arc::clone(&payouts_store),
                    pause: Arc::clone(&pause_store),
                    limits: Arc::new(LimitsCalls {
                        hazard: hazard.clone(),
                        clock: clock.clone(),
                        replicas: Arc::downgrade(&replicas),
                        log: Arc::clone(&service_log),
                        windows: windows.clone(),
                    }),
                    approvals: Arc::new(ApprovalCalls {
                        hazard: hazard.clone(),
                        clock: clock.clone(),
                        replicas: Arc::downgrade(&replicas),
                    }),
                    notifier: Arc::new(Silent),
                    alerts: Arc::new(AlertCalls {
                        hazard: hazard.clone(),
                        clock: clock.clone(),
                        raised: Arc::clone(&alerts),
                    }),
                    stripe: Some(Arc::new(stripe.clone())),
                    clock: Arc::new(clock.clone()),
                    ids: Arc::clone(&ids),
                    poll_interval: std::time::Duration::from_secs(1),
                    retry_base: RETRY_BASE,
                    unknown_alert_after: Duration::hours(1),
                    bank_attribution_alert_after: Duration::hours(48),
                })
            })
            .collect();
        let approvals: Vec<Arc<Workflow>> = (0..count)
            .map(|_| {
                Arc::new(Workflow {
                    approvals: Arc::clone(&approvals_store),
                    payouts: Arc::new(DecisionCalls {
                        hazard: hazard.clone(),
                        clock: clock.clone(),
                        replicas: Arc::downgrade(&replicas),
                    }),
                    notifier: Arc::new(AlertCalls {
                        hazard: hazard.clone(),
                        clock: clock.clone(),
                        raised: Arc::clone(&alerts),
                    }),
                    clock: Arc::new(clock.clone()),
                    poll_interval: std::time::Duration::from_secs(1),
                    dual_control_above_cents: None,
                })
            })
            .collect();
        let inboxes: Vec<Arc<Inbox>> = (0..count)
            .map(|_| {
                Arc::new(Inbox::new(
                    Arc::clone(&inbox_store),
                    Arc::new(EventCalls {
                        hazard: hazard.clone(),
                        clock: clock.clone(),
                        replicas: Arc::downgrade(&replicas),
                        raised: Arc::clone(&alerts),
                    }),
                    Arc::new(clock.clone()),
                    InboxSettings {
                        payouts_secrets: vec![Secret::new(WEBHOOK_SECRET)],
                        subscription_secrets: vec![Secret::new(WEBHOOK_SECRET)],
                        transfers_secrets: vec![Secret::new(WEBHOOK_SECRET)],
                        tolerance_seconds: 300,
                        livemode: false,
                        policy: RetryPolicy::default(),
                        poll_interval: std::time::Duration::from_secs(1),
                    },
                ))
            })
            .collect();
        let disputes: Vec<Arc<Cases>> = (0..count)
            .map(|_| {
                Arc::new(Cases {
                    ledger: Arc::new(Ledger {
                        allocations: Arc::clone(&allocations_store),
                        books: Arc::clone(&books_store),
                        clock: Arc::new(clock.clone()),
                    }),
                    cases: Arc::clone(&cases_store),
                    notices: Arc::new(AlertCalls {
                        hazard: hazard.clone(),
                        clock: clock.clone(),
                        raised: Arc::clone(&alerts),
                    }),
                    refunds: Some(Arc::new(stripe.clone())),
                })
            })
            .collect();
        // Notifications' escalation worker, the real one: it delivers the halts level-3 alerts
        // owe through the payouts service (`SetTransferPause`, cause escalation).
        let halter = Arc::new(HaltCalls {
            hazard: hazard.clone(),
            clock: clock.clone(),
            replicas: Arc::downgrade(&replicas),
        });
        let escalators: Vec<Arc<Escalator>> = (0..count)
            .map(|_| {
                Arc::new(Escalator {
                    alerts: Arc::clone(&alerts_store),
                    pager: None,
                    halter: Arc::clone(&halter) as Arc<dyn Halter>,
                    clock: Arc::new(clock.clone()),
                    policy: PagePolicy::new(Duration::minutes(5)),
                    links: PageLinks {
                        runbook_base_url: "docs/runbooks.md".to_owned(),
                        dashboard_url: None,
                    },
                    poll_interval: std::time::Duration::from_secs(1),
                })
            })
            .collect();
        let _ = replicas.disputes.set(disputes);
        let _ = replicas.limits.set(limits);
        let _ = replicas.payouts.set(payouts.clone());
        let _ = replicas.approvals.set(approvals.clone());

        let mut users = Vec::new();
        for i in 0..options.users.max(1) {
            let user = User {
                id: format!("user_{i}"),
                account: format!("acct_sim_{i}"),
                keys: Vec::new(),
            };
            let account = Account {
                user_id: user.id.clone(),
                stripe_account_id: user.account.clone(),
                account_created_at: start - Duration::days(400),
                stripe_status: None,
                bank_payments: Vec::new(),
                pending_bank_payouts: Vec::new(),
                version: 1,
            };
            now(stores.accounts.put(&account, None)).unwrap_or_default();
            users.push(user);
        }
        // Earnings: each creator's own supporters' charges, and charges that funded several
        // creators at once; every charge is a little more than it funded (the platform's
        // share), as real ones are.
        let setup = Ledger {
            allocations: Arc::clone(&stores.allocations) as Arc<dyn AllocationRepository>,
            books: Arc::clone(&stores.books) as Arc<dyn EarningsBookRepository>,
            clock: Arc::new(clock.clone()),
        };
        let mut charges = Vec::new();
        let mut fund = |charge_id: String, shares: Vec<(&User, i64)>| {
            let mut funded = 0;
            for (n, (user, cents)) in shares.into_iter().enumerate() {
                let allocation = Allocation::credit(
                    &format!("alloc_{charge_id}_{n}"),
                    &user.id,
                    &charge_id,
                    "supporter",
                    Money::usd(cents),
                    start,
                );
                if let Ok(allocation) = allocation {
                    funded += cents;
                    now(setup.record(&allocation))
                        .unwrap_or_else(|error| panic!("setting up allocations failed: {error}"));
                }
            }
            let amount = funded + funded / 10;
            stripe.create_charge(&charge_id, amount);
            charges.push(Charge {
                id: charge_id,
                amount,
                dispute: None,
            });
        };
        for (i, user) in users.iter().enumerate() {
            for c in 0..chaos.between(1, 3) {
                fund(
                    format!("ch_sim_{i}_{c}"),
                    vec![(user, chaos.between(5_000_00, 30_000_00))],
                );
            }
        }
        for c in 0..2 {
            let first = chaos.below(users.len());
            let second = (first + 1 + chaos.below(users.len().max(2) - 1)) % users.len();
            let mut shares = vec![(&users[first], chaos.between(1_000_00, 8_000_00))];
            if second != first {
                shares.push((&users[second], chaos.between(1_000_00, 8_000_00)));
            }
            fund(format!("ch_sim_shared_{c}"), shares);
        }
        let truth = invariants::Truth {
            stripe: stripe.clone(),
            inbox: Arc::clone(&stores.inbox),
            allocations: Arc::clone(&stores.allocations),
            charges: charges.iter().map(|c| (c.id.clone(), c.amount)).collect(),
        };
        windows.set_truth(truth.clone());
        Self {
            seed,
            options: options.clone(),
            truth,
            chaos,
            clock,
            executor: Executor::new(gate),
            stripe,
            stores,
            _replicas: replicas,
            payouts,
            inboxes,
            approvals,
            escalators,
            halter,
            watch,
            escalation_alerts: Vec::new(),
            users,
            charges,
            windows,
            alerts,
            reports: Arc::new(MemoryReports::default()),
            service_log,
            bank_payouts: Vec::new(),
            admin_reversals: Vec::new(),
            outages,
            observed: Observed::default(),
            trace: Vec::new(),
            step: 0,
            crashes: 0,
        }
    }

    fn note(&mut self, line: String) {
        let at = self.clock.now().format("%m-%d %H:%M:%S");
        self.trace.push(format!("{:>4} {at} {line}", self.step));
    }

    fn failure(&self, problem: String) -> Failure {
        Failure {
            seed: self.seed,
            step: self.step,
            problem,
            trace: self.trace.clone(),
        }
    }

    /// Runs the chaotic steps, then the drain, checking the invariants throughout.
    pub fn run(mut self) -> Result<Report, Failure> {
        for _ in 0..self.options.steps {
            self.step += 1;
            self.chaotic_step();
            self.check_now()?;
        }
        self.drain()?;
        let mut payouts = BTreeMap::new();
        for payout in self.stores.payouts.all() {
            *payouts.entry(payout.status.as_str()).or_default() += 1;
        }
        Ok(Report {
            seed: self.seed,
            steps: self.step,
            payouts,
            transfers: self.stripe.transfers().len(),
            crashes: self.crashes,
            faults: {
                let mut faults = self.chaos.injected();
                faults.extend(self.watch.counts());
                faults
            },
            alerts: self.alerts.lock().map(|a| a.len()).unwrap_or(0),
            trace: self.trace,
        })
    }

    fn check_now(&mut self) -> Result<(), Failure> {
        for line in self.stripe.drain_log() {
            self.trace.push(line);
        }
        let service_lines = std::mem::take(
            &mut *self
                .service_log
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        self.trace.extend(service_lines);
        for line in self.observed.news(&self.stores) {
            self.trace.push(line);
        }
        self.windows.observe();
        invariants::always(
            &self.stores,
            &self.stripe,
            &self.windows,
            &mut self.observed,
        )
        .and_then(|()| invariants::halts(&self.stores, &self.watch))
        .map_err(|problem| self.failure(problem))
    }

    fn start(&mut self, label: String, future: TaskFuture) {
        let (id, progress) = self.executor.start(label.clone(), future);
        let line = match progress {
            Progress::Done(line) => format!("task {id} {label}: {line}"),
            Progress::Parked(point) => format!("task {id} {label} waits at {point}"),
        };
        self.note(line);
    }

    fn chaotic_step(&mut self) {
        let parked = self.executor.parked();
        if !parked.is_empty() && self.chaos.chance(550) {
            // One task runs on for a few await points; it may die at any of them.
            let (id, label, mut point) = parked[self.chaos.below(parked.len())].clone();
            for _ in 0..self.chaos.between(1, 6) {
                if self.chaos.fault("crash", CRASH) {
                    self.executor.crash(id);
                    self.crashes += 1;
                    self.note(format!("task {id} {label} CRASHED at {point}"));
                    return;
                }
                match self.executor.resume(id) {
                    Progress::Done(line) => {
                        self.note(format!("task {id} {label}: {line}"));
                        return;
                    }
                    Progress::Parked(next) => point = next,
                }
            }
            self.note(format!("task {id} {label} waits at {point}"));
            return;
        }
        let room = self.executor.in_flight() < 8;
        match self.chaos.below(108) {
            0..=17 if room => self.request(),
            18..=31 if room => self.payouts_pass(),
            32..=43 if room => self.inbox_pass(),
            44..=49 if room => self.approvals_pass(),
            50..=55 if room => self.decide(),
            56..=69 if room => self.deliver(),
            70..=77 => self.advance(),
            78 if room => self.backfill(),
            79 if room => self.reconcile(),
            80..=85 => self.pay_out(),
            86..=87 => self.fail_bank_payout(),
            88..=90 => self.reverse(),
            91..=92 => self.fail_transfer(),
            93..=94 => self.toggle_account(),
            95..=96 => self.charge_news(),
            97 if room => self.toggle_pause(),
            98 if room => self.admin_reverse(),
            99 => self.outage(),
            100..=102 => self.reconcile_bank_payout(),
            103..=106 if room => self.escalate(),
            _ => self.advance(),
        }
    }

    fn request(&mut self) {
        let user_index = self.chaos.below(self.users.len());
        let reuse = !self.users[user_index].keys.is_empty() && self.chaos.chance(150);
        let (key, cents) = if reuse {
            let keys = &self.users[user_index].keys;
            let (key, cents) = keys[self.chaos.below(keys.len())].clone();
            // Mostly a retry of the same request; sometimes the same key for another amount.
            let cents = if self.chaos.chance(800) {
                cents
            } else {
                cents + 1
            };
            (key, cents)
        } else {
            let key = format!("key_{}_{}", user_index, self.users[user_index].keys.len());
            // Mostly ordinary amounts; some above the approval threshold.
            let cents = if self.chaos.chance(150) {
                self.chaos.between(5_000_01, 9_000_00)
            } else {
                self.chaos.between(20_00, 1_900_00)
            };
            self.users[user_index].keys.push((key.clone(), cents));
            (key, cents)
        };
        let user = self.users[user_index].id.clone();
        let flow = Arc::clone(&self.payouts[self.chaos.below(self.payouts.len())]);
        let label = format!("request {user} {key} {cents}");
        self.start(
            label,
            Box::pin(async move {
                match flow.request(&user, Money::usd(cents), &key).await {
                    Ok(requested) => match requested.payout {
                        Some(payout) => format!("{} {}", payout.id, payout.status.as_str()),
                        None => format!("refused: {}", requested.decision.reason),
                    },
                    Err(error) => format!("error {:?}: {}", error.kind(), error.message()),
                }
            }),
        );
    }

    fn payouts_pass(&mut self) {
        let replica = self.chaos.below(self.payouts.len());
        let flow = Arc::clone(&self.payouts[replica]);
        self.start(
            format!("payouts worker {replica}"),
            Box::pin(async move {
                match flow.run_due().await {
                    Ok(count) => format!("worked on {count}"),
                    Err(error) => format!("error: {}", error.message()),
                }
            }),
        );
    }

    fn inbox_pass(&mut self) {
        let replica = self.chaos.below(self.inboxes.len());
        let inbox = Arc::clone(&self.inboxes[replica]);
        self.start(
            format!("webhooks worker {replica}"),
            Box::pin(async move {
                match inbox.process_due().await {
                    Ok(count) => format!("processed {count}"),
                    Err(error) => format!("error: {}", error.message()),
                }
            }),
        );
    }

    fn approvals_pass(&mut self) {
        let replica = self.chaos.below(self.approvals.len());
        let workflow = Arc::clone(&self.approvals[replica]);
        self.start(
            format!("approvals worker {replica}"),
            Box::pin(async move {
                match workflow.run_due().await {
                    Ok(count) => format!("carried out {count}"),
                    Err(error) => format!("error: {}", error.message()),
                }
            }),
        );
    }

    fn decide(&mut self) {
        let pending: Vec<String> = self
            .stores
            .approvals
            .all()
            .into_iter()
            .filter(|a| a.status == ApprovalStatus::Pending)
            .map(|a| a.id)
            .collect();
        if pending.is_empty() {
            return self.advance();
        }
        let approval = pending[self.chaos.below(pending.len())].clone();
        // Sometimes two admins decide at once.
        let admins = if self.chaos.chance(300) { 2 } else { 1 };
        for admin in 0..admins {
            let action = if self.chaos.chance(700) {
                Action::Approve
            } else {
                Action::Reject
            };
            let workflow = Arc::clone(&self.approvals[self.chaos.below(self.approvals.len())]);
            let approval = approval.clone();
            self.start(
                format!("admin_{admin} {action:?} {approval}"),
                Box::pin(async move {
                    match workflow
                        .decide(
                            &approval,
                            action,
                            &format!("admin_{admin}"),
                            Some("checked"),
                        )
                        .await
                    {
                        Ok(decided) => decided.message,
                        Err(error) => format!("error {:?}: {}", error.kind(), error.message()),
                    }
                }),
            );
        }
    }

    fn deliver(&mut self) {
        let outbox = self.stripe.outbox();
        if outbox.is_empty() {
            return self.advance();
        }
        let event = outbox[self.chaos.below(outbox.len())].clone();
        if event.droppable && self.chaos.fault("event never delivered", 100) {
            // Stripe gives up: the event stays in its list, undelivered, for the backfill.
            self.stripe.lose(&event.id);
            self.note(format!("stripe loses {} {}", event.id, event.event_type));
            return;
        }
        let redeliver = self.chaos.fault("event delivered twice", 150);
        // Stripe sends each event to the endpoint subscribed to its type (platform events to
        // the account endpoints, connected accounts' to the Connect one).
        let Some(endpoint) = endpoint_for(&event.event_type) else {
            self.note(format!("stripe has no endpoint for {}", event.event_type));
            return;
        };
        let inbox = Arc::clone(&self.inboxes[self.chaos.below(self.inboxes.len())]);
        let stripe = self.stripe.clone();
        let header = signature_header(
            event.payload.as_bytes(),
            WEBHOOK_SECRET,
            self.clock.now().timestamp(),
        );
        self.start(
            format!("deliver {} {}", event.id, event.event_type),
            Box::pin(async move {
                match inbox
                    .ingest(endpoint, event.payload.as_bytes(), Some(&header))
                    .await
                {
                    Ok(ingested) => {
                        if !redeliver {
                            stripe.acknowledged(&event.id);
                        }
                        match ingested {
                            Ingested::Accepted { .. } => "accepted".to_owned(),
                            Ingested::Duplicate { .. } => "duplicate".to_owned(),
                        }
                    }
                    Err(error) => format!("not acknowledged: {}", error.message()),
                }
            }),
        );
    }

    /// A webhooks replica backfills the events Stripe never delivered, for a window of up
    /// to 30 days (the periodic job, or an admin).
    fn backfill(&mut self) {
        let replica = self.chaos.below(self.inboxes.len());
        let backfill = self.backfill_of(replica, self.chaos.below(self.payouts.len()));
        let since = self.clock.now() - Duration::seconds(self.chaos.between(3_600, 30 * 86_400));
        self.start(
            format!("backfill {replica}"),
            Box::pin(async move {
                match backfill.run(since).await {
                    Ok(report) => format!(
                        "listed {}, stored {}, {} accounts",
                        report.listed, report.stored, report.accounts
                    ),
                    Err(error) => format!("error: {}", error.message()),
                }
            }),
        );
    }

    /// The backfill of webhooks replica `inbox`, asking payouts replica `payouts` which
    /// connected accounts have money in flight.
    fn backfill_of(&self, inbox: usize, payouts: usize) -> Backfill {
        Backfill {
            inbox: Arc::clone(&self.inboxes[inbox]),
            stripe: Arc::new(self.stripe.clone()),
            accounts: Arc::new(InFlight(Arc::clone(&self.payouts[payouts]))),
            clock: Arc::new(self.clock.clone()),
        }
    }

    /// A payouts replica reconciles with Stripe (the daily job, or an admin): it may adopt a
    /// transfer whose answer was lost, and must never move money.
    fn reconcile(&mut self) {
        let replica = self.chaos.below(self.payouts.len());
        let reconciler = self.reconciler(replica);
        self.start(
            format!("reconcile {replica}"),
            Box::pin(async move {
                match reconciler.run(None, "sim").await {
                    Ok(report) => format!(
                        "{} {:?}",
                        report.status.as_str(),
                        report
                            .findings
                            .iter()
                            .map(|f| format!(
                                "{} {} {}: {}",
                                f.kind.as_str(),
                                f.payout_id.as_deref().unwrap_or("-"),
                                f.ours,
                                f.stripes
                            ))
                            .collect::<Vec<_>>()
                    ),
                    Err(error) => format!("error: {}", error.message()),
                }
            }),
        );
    }

    fn reconciler(&self, replica: usize) -> Reconciler {
        Reconciler {
            flow: Arc::clone(&self.payouts[replica]),
            reports: Arc::clone(&self.reports),
            window: Duration::days(3),
            stuck_after: Duration::days(7),
        }
    }

    fn advance(&mut self) {
        let seconds = if self.chaos.chance(200) {
            self.chaos.between(600, 7_200)
        } else {
            self.chaos.between(1, 400)
        };
        self.clock.advance(Duration::seconds(seconds));
        self.note(format!("time +{seconds}s"));
    }

    fn pay_out(&mut self) {
        let user = &self.users[self.chaos.below(self.users.len())];
        let account = user.account.clone();
        match self.stripe.pay_out(&account) {
            Some(bank_payout) => {
                self.note(format!("stripe pays out {account}: {bank_payout}"));
                self.bank_payouts.push((bank_payout, account));
            }
            None => self.advance(),
        }
    }

    /// One of the bank payouts Stripe made, chosen by the seed; None before any.
    fn some_bank_payout(&self) -> Option<(String, String)> {
        if self.bank_payouts.is_empty() {
            return None;
        }
        Some(self.bank_payouts[self.chaos.below(self.bank_payouts.len())].clone())
    }

    fn fail_bank_payout(&mut self) {
        let Some((bank_payout, account)) = self.some_bank_payout() else {
            return self.advance();
        };
        if self.stripe.fail_bank_payout(&bank_payout, &account) {
            self.note(format!("stripe: bank payout {bank_payout} failed"));
        }
    }

    fn live_transfers(&self) -> Vec<(String, i64)> {
        self.stripe
            .transfers()
            .iter()
            .filter_map(|t| {
                let left = t["amount"].as_i64()? - t["amount_reversed"].as_i64()?;
                (left > 0).then(|| (t["id"].as_str().unwrap_or_default().to_owned(), left))
            })
            .collect()
    }

    fn reverse(&mut self) {
        let live = self.live_transfers();
        if live.is_empty() {
            return self.advance();
        }
        let (transfer, left) = live[self.chaos.below(live.len())].clone();
        let cents = if self.chaos.chance(500) {
            left
        } else {
            self.chaos.between(1, left)
        };
        if self.stripe.reverse(&transfer, cents) {
            self.note(format!("stripe reverses {cents} of {transfer}"));
        }
    }

    fn fail_transfer(&mut self) {
        let live = self.live_transfers();
        if live.is_empty() {
            return self.advance();
        }
        let (transfer, _) = live[self.chaos.below(live.len())].clone();
        if self.stripe.fail_transfer(&transfer) {
            self.note(format!("stripe: transfer {transfer} failed (legacy)"));
        }
    }

    fn toggle_account(&mut self) {
        let account = self.users[self.chaos.below(self.users.len())]
            .account
            .clone();
        let enabled = self.chaos.chance(600);
        self.stripe.set_payouts_enabled(&account, enabled);
        self.note(format!("stripe: payouts on {account} enabled={enabled}"));
    }

    /// The balance check or an admin pauses or resumes transfers, as a task (it can be cut
    /// short anywhere, like any other). An admin's resume comes with notes or without (a
    /// resume without notes does not lift an escalation halt; the admin is told).
    fn toggle_pause(&mut self) {
        // Mostly lifts (pauses are short episodes, so transfers still happen in most runs);
        // either hand, so the rules between them are exercised.
        let paused = self.chaos.chance(150);
        let cause = if self.chaos.chance(if paused { 500 } else { 300 }) {
            PauseCause::Automatic
        } else {
            PauseCause::Manual
        };
        let (reason, actor) = match cause {
            PauseCause::Automatic => ("balance check".to_owned(), "balance"),
            _ if paused || self.chaos.chance(500) => {
                ("checked with finance".to_owned(), "admin:sim")
            }
            _ => (String::new(), "admin:sim"),
        };
        self.change_pause(PauseChange {
            paused,
            cause,
            reason,
            actor: actor.to_owned(),
        });
    }

    /// Changes the transfer pause through a payouts replica, as a task; as the gRPC handler
    /// answers, an admin's resume without notes that leaves a halt in place is an error.
    fn change_pause(&mut self, change: PauseChange) {
        let flow = Arc::clone(&self.payouts[self.chaos.below(self.payouts.len())]);
        let hazard = self.halter.hazard.clone();
        self.start(
            format!(
                "pause {} {} {:?}",
                change.cause.as_str(),
                change.paused,
                change.reason
            ),
            Box::pin(async move {
                if !change.paused && change.reason.trim().is_empty() {
                    hazard.watch.resume_without_notes(hazard.gate.current());
                }
                match flow.set_pause(&change).await {
                    Ok(pause)
                        if !change.paused
                            && change.cause == PauseCause::Manual
                            && pause.cause == Some(PauseCause::Escalation) =>
                    {
                        format!("refused: the halt holds ({})", pause.reason)
                    }
                    Ok(pause) => format!(
                        "paused={} ({})",
                        pause.paused(),
                        pause.cause.map_or("running", PauseCause::as_str)
                    ),
                    Err(error) => format!("error: {}", error.message()),
                }
            }),
        );
    }

    /// Level-3 escalations (design §10): notifications raises a level-3 alert, which owes a
    /// transfer halt; its escalation workers (the real ones, two replicas) deliver what is
    /// owed through the payouts service, retried until confirmed; a halt request arrives
    /// again, late or duplicated (a retry whose first answer was lost, an old request still
    /// in the network), for the same alert or another, whatever happened since (an admin's
    /// resume included); the balance check pauses and resumes on its own schedule; an admin
    /// lifts the halt, with notes or without.
    fn escalate(&mut self) {
        match self.chaos.below(24) {
            0..=3 => self.raise_level_three(),
            4..=9 => {
                let replica = self.chaos.below(self.escalators.len());
                let escalator = Arc::clone(&self.escalators[replica]);
                self.start(
                    format!("escalation worker {replica}"),
                    Box::pin(async move {
                        match escalator.run_due().await {
                            Ok(tried) => format!("tried {tried}"),
                            Err(error) => format!("error: {}", error.message()),
                        }
                    }),
                );
            }
            10..=13 if !self.stored_escalations().is_empty() => {
                // Only an alert that was stored can have had its halt sent before.
                let stored = self.stored_escalations();
                let alert = stored[self.chaos.below(stored.len())].clone();
                self.chaos.count("escalation halt sent again");
                let halter = Arc::clone(&self.halter);
                self.start(
                    format!("halt for {alert} again"),
                    Box::pin(async move {
                        match halter.halt(&alert).await {
                            Ok(()) => "halted".to_owned(),
                            Err(error) => format!("error: {}", error.message()),
                        }
                    }),
                );
            }
            14..=17 => {
                // The balance check runs on its own schedule, whatever the halt.
                let paused = self.chaos.chance(300);
                self.change_pause(PauseChange {
                    paused,
                    cause: PauseCause::Automatic,
                    reason: "balance check".to_owned(),
                    actor: "balance".to_owned(),
                });
            }
            _ => {
                let notes = self.chaos.chance(700);
                if !notes {
                    self.chaos.count("admin resumes a halt without notes");
                }
                self.change_pause(PauseChange {
                    paused: false,
                    cause: PauseCause::Manual,
                    reason: if notes {
                        "disputes reviewed with finance".to_owned()
                    } else {
                        String::new()
                    },
                    actor: "admin:lead".to_owned(),
                });
            }
        }
    }

    /// The level-3 alerts notifications stored (a raise cut short stored none).
    fn stored_escalations(&self) -> Vec<String> {
        self.escalation_alerts
            .iter()
            .filter(|id| now(self.stores.alerts.get(id)).ok().flatten().is_some())
            .cloned()
            .collect()
    }

    /// Notifications raises a level-3 alert (a burst of disputes): stored owing a halt, as
    /// a task (it may die before the alert is stored: then nothing is owed).
    fn raise_level_three(&mut self) {
        let id = format!("alert_sim_{}", self.escalation_alerts.len());
        self.escalation_alerts.push(id.clone());
        self.chaos.count("level-3 alert raised");
        let now = self.clock.now();
        let alert = Alert::raise(
            id.clone(),
            "escalation_dispute_burst",
            Severity::Critical,
            "Multiple Disputes in a Short Period",
            "simulated",
            "{}",
            "",
            now,
        );
        let Ok(mut alert) = alert else {
            return self.advance();
        };
        alert.level = Level::Leads;
        alert.signal = Some("dispute_created".to_owned());
        let alert = alert.owing_escalation(now, false);
        let store: Arc<dyn AlertRepository> = Hazardous::new(
            Arc::clone(&self.stores.alerts) as Arc<dyn AlertRepository>,
            &self.halter.hazard,
        );
        self.start(
            format!("raise level-3 {id}"),
            Box::pin(async move {
                match store.create(&alert).await {
                    Ok((_, created)) => format!("stored (new: {created})"),
                    Err(error) => format!("error: {}", error.message()),
                }
            }),
        );
    }

    /// Something happens to a supporter's charge at Stripe, and Stripe sends its events:
    /// a refund (`charge.refunded` with the charge, `refund.created` with the refund), a
    /// pending refund that succeeds or a refund that fails (`charge.refund.updated` or
    /// `refund.updated`, and `refund.failed`), or a dispute opening, closing or moving money.
    /// Delivered like every other event: late, twice, out of order, or only listed.
    fn charge_news(&mut self) {
        let index = self.chaos.below(self.charges.len());
        let pick = self.chaos.below(100);
        let charge_id = self.charges[index].id.clone();
        let refunds = self.stripe.refunds_of(&charge_id);
        let ids = |refunds: &[serde_json::Value]| -> Vec<String> {
            refunds
                .iter()
                .filter_map(|r| r["id"].as_str().map(str::to_owned))
                .collect()
        };
        let news = |refunds: Vec<String>| crate::stripe::News {
            charge: charge_id.clone(),
            refunds,
            lost: false,
        };
        match pick {
            0..=44 => {
                let left = self.charges[index].amount
                    - refunds
                        .iter()
                        .filter(|r| refund_counts(r["status"].as_str().unwrap_or_default()))
                        .map(|r| r["amount"].as_i64().unwrap_or(0))
                        .sum::<i64>();
                if left <= 0 {
                    return self.advance();
                }
                let cents = if self.chaos.chance(200) {
                    left
                } else {
                    self.chaos.between(1, left)
                };
                let status = if self.chaos.chance(300) {
                    "pending"
                } else {
                    "succeeded"
                };
                let Some((refund, charge)) = self.stripe.refund(&charge_id, cents, status) else {
                    return self.advance();
                };
                let refund_id = refund["id"].as_str().unwrap_or_default().to_owned();
                let everything = ids(&self.stripe.refunds_of(&charge_id));
                // Stripe's order between the two is not promised: both are queued now and
                // delivered in any order.
                self.stripe
                    .charge_event("charge.refunded", charge, news(everything));
                self.stripe
                    .charge_event("refund.created", refund, news(vec![refund_id.clone()]));
                self.note(format!(
                    "stripe: refund {refund_id} of {cents} ({status}) for {charge_id}"
                ));
            }
            45..=64 if !refunds.is_empty() => {
                let refund = &refunds[self.chaos.below(refunds.len())];
                let refund_id = refund["id"].as_str().unwrap_or_default().to_owned();
                let status = refund["status"].as_str().unwrap_or_default();
                let next = match status {
                    "pending" if self.chaos.chance(600) => "succeeded",
                    "pending" | "succeeded" => "failed",
                    _ => return self.advance(),
                };
                let Some((refund, _charge)) = self.stripe.set_refund_status(&refund_id, next)
                else {
                    return self.advance();
                };
                let update = if self.chaos.chance(500) {
                    "charge.refund.updated"
                } else {
                    "refund.updated"
                };
                self.stripe
                    .charge_event(update, refund.clone(), news(vec![refund_id.clone()]));
                if next == "failed" {
                    self.stripe.charge_event(
                        "refund.failed",
                        refund,
                        news(vec![refund_id.clone()]),
                    );
                }
                self.note(format!("stripe: refund {refund_id} {next} for {charge_id}"));
            }
            _ => {
                let charge = &mut self.charges[index];
                let (event_type, status) = match (charge.dispute, self.chaos.below(4)) {
                    (None, _) => ("charge.dispute.created", "needs_response"),
                    (Some(_), 0 | 3) => ("charge.dispute.funds_withdrawn", "under_review"),
                    (Some(_), 1) => ("charge.dispute.closed", "won"),
                    (Some(_), _) => ("charge.dispute.closed", "lost"),
                };
                // Stripe closes a dispute once; later news repeats its final status.
                let status = match charge.dispute {
                    Some(closed @ ("won" | "lost")) => closed,
                    _ => status,
                };
                charge.dispute = Some(status);
                let mut dispute = fixture("dispute");
                dispute["id"] = serde_json::json!(format!("dp_{}", charge.id));
                dispute["charge"] = serde_json::json!(charge.id);
                dispute["amount"] = serde_json::json!(charge.amount);
                dispute["status"] = serde_json::json!(status);
                let told = crate::stripe::News {
                    charge: charge_id.clone(),
                    refunds: Vec::new(),
                    lost: status == "lost",
                };
                self.stripe.charge_event(event_type, dispute, told);
                self.note(format!("stripe: {event_type} ({status}) for {charge_id}"));
            }
        }
    }

    /// A service is down for 10 to 30 minutes: longer than the webhook inbox's old parking
    /// window. Nothing it owns may be lost or parked because of it.
    fn outage(&mut self) {
        let service = ["disputes", "payouts", "notifications"][self.chaos.below(3)];
        let minutes = self.chaos.between(10, 30);
        let until = self.clock.now() + Duration::minutes(minutes);
        self.outages.start(service, until);
        self.chaos.count("owner service outage");
        self.note(format!("OUTAGE: {service} down for {minutes} min"));
    }

    /// Stripe finishes reconciling an automatic bank payout:
    /// `payout.reconciliation_completed`; only now is its balance-transaction list complete.
    fn reconcile_bank_payout(&mut self) {
        let Some((bank_payout, account)) = self.some_bank_payout() else {
            return self.advance();
        };
        if self.stripe.reconcile(&bank_payout, &account) {
            self.note(format!("stripe: bank payout {bank_payout} reconciled"));
        }
    }

    /// An admin takes part of a paid payout back from the creator's Stripe account, with
    /// an `Idempotency-Key` per confirmation; or sends a request again after its answer was
    /// lost (the same key and amount, as a person does, whatever happened since); or two
    /// admins confirm different reversals of the same payout at once.
    fn admin_reverse(&mut self) {
        if !self.admin_reversals.is_empty() && self.chaos.chance(400) {
            let again = self.admin_reversals[self.chaos.below(self.admin_reversals.len())].clone();
            self.chaos.count("admin sends a reversal again");
            return self.send_admin_reversal(again, "again");
        }
        let paid: Vec<_> = self
            .stores
            .payouts
            .all()
            .into_iter()
            .filter(|p| p.stripe_transfer_id.is_some() && p.amount_reversed_cents < p.amount.cents)
            .collect();
        if paid.is_empty() {
            return self.advance();
        }
        let payout = &paid[self.chaos.below(paid.len())];
        let admins = if self.chaos.chance(200) {
            self.chaos.count("two admins reverse at once");
            2
        } else {
            1
        };
        for _ in 0..admins {
            let cents = self
                .chaos
                .between(1, payout.amount.cents - payout.amount_reversed_cents);
            let request = AdminReversal {
                payout_id: payout.id.clone(),
                key: format!("sim-{}", self.admin_reversals.len()),
                cents,
            };
            self.admin_reversals.push(request.clone());
            self.send_admin_reversal(request, "");
        }
    }

    fn send_admin_reversal(&mut self, request: AdminReversal, again: &str) {
        let flow = Arc::clone(&self.payouts[self.chaos.below(self.payouts.len())]);
        self.start(
            format!(
                "admin reverses {} of {} {} {again}",
                request.cents, request.payout_id, request.key
            ),
            Box::pin(async move {
                match flow
                    .request_reversal(
                        &request.payout_id,
                        &request.key,
                        request.cents,
                        "simulated clawback",
                        "admin:sim",
                    )
                    .await
                {
                    Ok(payout) => format!("reversed {}", payout.amount_reversed_cents),
                    Err(error) => format!("error {:?}: {}", error.kind(), error.message()),
                }
            }),
        );
    }

    /// Runs a task to its end (no faults are injected once the drain has begun).
    fn complete(&mut self, label: String, future: TaskFuture) -> String {
        let (id, mut progress) = self.executor.start(label.clone(), future);
        loop {
            match progress {
                Progress::Done(line) => {
                    self.note(format!("task {id} {label}: {line}"));
                    return line;
                }
                Progress::Parked(_) => progress = self.executor.resume(id),
            }
        }
    }

    /// Faults off: what an operator and Stripe's retries would do until nothing is left in
    /// flight, then the end-state invariants.
    fn drain(&mut self) -> Result<(), Failure> {
        self.chaos.set_faults(false);
        self.outages.end_all();
        self.note("drain: faults off, every service up".to_owned());
        while let Some((id, label, _)) = self.executor.parked().first().cloned() {
            let line = loop {
                match self.executor.resume(id) {
                    Progress::Done(line) => break line,
                    Progress::Parked(_) => {}
                }
            };
            self.note(format!("task {id} {label}: {line}"));
        }
        // Notifications delivers every halt still owed (a level-3 alert's halt is never
        // lost), before the admin's resume below: a halt owed after it would hold for ever.
        for _ in 0..40 {
            let escalator = Arc::clone(&self.escalators[0]);
            self.complete(
                "drain escalation worker".to_owned(),
                Box::pin(async move {
                    match escalator.run_due().await {
                        Ok(tried) => format!("tried {tried}"),
                        Err(error) => format!("error: {}", error.message()),
                    }
                }),
            );
            if invariants::halts_owed(&self.stores) == 0 {
                break;
            }
            self.clock.advance(Duration::minutes(1));
            self.note("time +1min".to_owned());
        }
        // Transfers run again: an admin lifts any pause (as the runbook says), with notes; a
        // halt first, then the pause it covered.
        let flow = Arc::clone(&self.payouts[0]);
        let lifted = self.complete(
            "lift the transfer pause".to_owned(),
            Box::pin(async move {
                let change = PauseChange {
                    paused: false,
                    cause: PauseCause::Manual,
                    reason: "drain".to_owned(),
                    actor: "admin:sim".to_owned(),
                };
                let mut answer = String::new();
                for _ in 0..2 {
                    answer = match flow.set_pause(&change).await {
                        Ok(pause) if pause.paused() => format!("paused={}", pause.paused()),
                        Ok(pause) => return format!("paused={}", pause.paused()),
                        Err(error) => format!("error: {}", error.message()),
                    };
                }
                answer
            }),
        );
        self.note(format!("drain: {lifted}"));
        for round in 0..80 {
            self.step += 1;
            self.operator_round();
            for event in self.stripe.outbox() {
                let inbox = Arc::clone(&self.inboxes[0]);
                let stripe = self.stripe.clone();
                let endpoint = endpoint_for(&event.event_type).unwrap_or(Endpoint::StripePayouts);
                let header = signature_header(
                    event.payload.as_bytes(),
                    WEBHOOK_SECRET,
                    self.clock.now().timestamp(),
                );
                self.complete(
                    format!("deliver {} {}", event.id, event.event_type),
                    Box::pin(async move {
                        let result = inbox
                            .ingest(endpoint, event.payload.as_bytes(), Some(&header))
                            .await;
                        if result.is_ok() {
                            stripe.acknowledged(&event.id);
                        }
                        format!("{:?}", result.map(|_| "acknowledged"))
                    }),
                );
            }
            // The periodic backfill stores what Stripe gave up delivering.
            let backfill = self.backfill_of(0, 0);
            let since = self.clock.now() - Duration::days(29);
            self.complete(
                "drain backfill".to_owned(),
                Box::pin(async move {
                    match backfill.run(since).await {
                        Ok(report) => format!("listed {}, stored {}", report.listed, report.stored),
                        Err(error) => format!("error: {}", error.message()),
                    }
                }),
            );
            for _ in 0..4 {
                let inbox = Arc::clone(&self.inboxes[0]);
                let flow = Arc::clone(&self.payouts[0]);
                let workflow = Arc::clone(&self.approvals[0]);
                self.complete(
                    "drain passes".to_owned(),
                    Box::pin(async move {
                        let events = inbox.process_due().await.unwrap_or(0);
                        let payouts = flow.run_due().await.unwrap_or(0);
                        let approvals = workflow.run_due().await.unwrap_or(0);
                        format!("{events} events, {payouts} payouts, {approvals} approvals")
                    }),
                );
            }
            let accounts: Vec<String> = self.users.iter().map(|u| u.account.clone()).collect();
            for account in accounts {
                if let Some(bank_payout) = self.stripe.pay_out(&account) {
                    self.note(format!("stripe pays out {account}: {bank_payout}"));
                    self.bank_payouts.push((bank_payout, account));
                }
            }
            // Stripe finishes reconciling every bank payout (within days).
            for (bank_payout, account) in self.bank_payouts.clone() {
                if self.stripe.reconcile(&bank_payout, &account) {
                    self.note(format!("stripe: bank payout {bank_payout} reconciled"));
                }
            }
            self.check_now()?;
            if round > 2 && invariants::settled(&self.stores, &self.stripe) {
                break;
            }
            // Long enough for every backoff, lease and Stripe's idempotency window to pass.
            let hours = if round % 6 == 5 { 25 } else { 2 };
            self.clock.advance(Duration::hours(hours));
            self.note(format!("time +{hours}h"));
        }
        invariants::at_end(&self.stores, &self.stripe, &self.truth)
            .map_err(|problem| self.failure(problem))?;
        self.books_agree()
    }

    /// Once everything settled, a reconciliation of the whole run finds our books and
    /// Stripe's in agreement (a payout processing longer than the stuck threshold is
    /// reported, not a disagreement), and adopts nothing: every unknown outcome was resolved.
    fn books_agree(&mut self) -> Result<(), Failure> {
        let reconciler = self.reconciler(0);
        let since =
            DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default() - Duration::days(1);
        let verdict = self.complete(
            "final reconciliation".to_owned(),
            Box::pin(async move {
                let report = match reconciler.run(Some(since), "sim: end").await {
                    Ok(report) => report,
                    Err(error) => return format!("DISAGREE: the run failed: {}", error.message()),
                };
                let disagreements: Vec<String> = report
                    .findings
                    .iter()
                    .filter(|finding| finding.kind != FindingKind::StuckPayout)
                    .map(|finding| format!("{finding:?}"))
                    .collect();
                if report.error.is_some() || !disagreements.is_empty() {
                    format!("DISAGREE: {:?} {disagreements:#?}", report.error)
                } else {
                    format!(
                        "books agree ({} transfers, {} payouts)",
                        report.transfers_checked, report.payouts_checked
                    )
                }
            }),
        );
        if verdict.starts_with("DISAGREE") {
            return Err(self.failure(format!("the final reconciliation: {verdict}")));
        }
        Ok(())
    }

    /// What an admin does once alerted: resume parked work, retry parked events, decide
    /// what waits for a decision.
    fn operator_round(&mut self) {
        for payout in self.stores.payouts.all() {
            if payout.parked {
                let flow = Arc::clone(&self.payouts[0]);
                self.complete(
                    format!("admin resumes {}", payout.id),
                    Box::pin(async move {
                        format!(
                            "{:?}",
                            flow.resume(&payout.id, "admin:sim").await.map(|p| p.status)
                        )
                    }),
                );
            }
        }
        for approval in self.stores.approvals.all() {
            let workflow = Arc::clone(&self.approvals[0]);
            if approval.parked {
                self.complete(
                    format!("admin retries {}", approval.id),
                    Box::pin(async move {
                        format!(
                            "{:?}",
                            workflow
                                .retry(&approval.id, "admin:sim")
                                .await
                                .map(|a| a.applied)
                        )
                    }),
                );
            } else if approval.status == ApprovalStatus::Pending {
                self.complete(
                    format!("admin approves {}", approval.id),
                    Box::pin(async move {
                        match workflow
                            .decide(&approval.id, Action::Approve, "admin_end", Some("ok"))
                            .await
                        {
                            Ok(decided) => decided.message,
                            Err(error) => format!("error: {}", error.message()),
                        }
                    }),
                );
            }
        }
        // Parked webhook events are not retried here: the inbox must never park an event
        // because a service was down, and the end state checks that none is parked.
    }
}

/// The payouts service answering the backfill which accounts have payouts in flight.
struct InFlight(Arc<PayoutFlow>);

#[async_trait::async_trait]
impl AccountsInFlight for InFlight {
    async fn accounts_in_flight(&self) -> Result<Vec<String>, payouts_runtime::ServiceError> {
        accounts_in_flight(&self.0).await
    }
}
