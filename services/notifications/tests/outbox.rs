//! The alert email worker against a mailer that fails on cue: retried with backoff, failed
//! visibly after its last try, and sent once even with two workers racing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{Duration, Utc};
use payouts_notifications::alerts::{Alert, Severity};
use payouts_notifications::email::{EmailPolicy, EmailStatus};
use payouts_notifications::outbox::{Mailer, Outbox, OutgoingEmail};
use payouts_notifications::store::{AlertRepository, MemoryAlerts};
use payouts_runtime::clock::ManualClock;

#[derive(Default)]
struct Mailbox {
    /// How many sends fail before they go through.
    failures: Mutex<usize>,
    sent: Mutex<Vec<OutgoingEmail>>,
}

#[async_trait]
impl Mailer for Mailbox {
    async fn send(&self, email: &OutgoingEmail) -> Result<(), String> {
        let mut failures = self.failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            return Err("421 try again later".to_owned());
        }
        self.sent.lock().unwrap().push(email.clone());
        Ok(())
    }
}

fn outbox(alerts: &Arc<MemoryAlerts>, mailbox: &Arc<Mailbox>, clock: &ManualClock) -> Outbox {
    Outbox {
        alerts: Arc::clone(alerts) as Arc<dyn AlertRepository>,
        mailer: Arc::clone(mailbox) as Arc<dyn Mailer>,
        clock: Arc::new(clock.clone()),
        from: "Payouts <payouts@example.com>".to_owned(),
        to: vec!["ops@example.com".to_owned()],
        escalation_to: vec!["leads@example.com".to_owned()],
        dashboard_url: None,
        policy: EmailPolicy {
            max_attempts: 3,
            ..EmailPolicy::default()
        },
        poll_interval: std::time::Duration::from_millis(10),
    }
}

async fn raise(alerts: &MemoryAlerts, clock: &ManualClock, key: &str) -> Alert {
    use payouts_runtime::Clock as _;
    let alert = Alert::raise(
        "generated".into(),
        "platform_balance",
        Severity::Critical,
        "Critical: Platform Balance Below Minimum Threshold",
        "Available balance $500.00.",
        "{}",
        key,
        clock.now(),
    )
    .unwrap()
    .owing_email(clock.now());
    alerts.create(&alert).await.unwrap().0
}

#[tokio::test]
async fn a_refused_email_is_retried_and_then_sent_once() {
    let (alerts, mailbox) = (
        Arc::new(MemoryAlerts::default()),
        Arc::new(Mailbox::default()),
    );
    let clock = ManualClock::new(Utc::now());
    *mailbox.failures.lock().unwrap() = 1;
    let alert = raise(&alerts, &clock, "retry").await;
    let outbox = outbox(&alerts, &mailbox, &clock);
    assert_eq!(outbox.run_due().await.unwrap(), 1);
    let email = alerts.get(&alert.id).await.unwrap().unwrap().email.unwrap();
    assert_eq!(email.status, EmailStatus::Pending);
    assert_eq!(email.last_error.as_deref(), Some("421 try again later"));
    // Not before its backoff.
    assert_eq!(outbox.run_due().await.unwrap(), 0);
    clock.advance(Duration::seconds(31));
    assert_eq!(outbox.run_due().await.unwrap(), 1);
    let sent = mailbox.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].subject,
        "[CRITICAL] Critical: Platform Balance Below Minimum Threshold"
    );
    let email = alerts.get(&alert.id).await.unwrap().unwrap().email.unwrap();
    assert_eq!((email.status, email.attempts), (EmailStatus::Sent, 2));
    clock.advance(Duration::days(1));
    assert_eq!(outbox.run_due().await.unwrap(), 0, "never again");
}

#[tokio::test]
async fn an_email_that_never_goes_fails_visibly() {
    let (alerts, mailbox) = (
        Arc::new(MemoryAlerts::default()),
        Arc::new(Mailbox::default()),
    );
    let clock = ManualClock::new(Utc::now());
    *mailbox.failures.lock().unwrap() = 100;
    let alert = raise(&alerts, &clock, "never").await;
    let outbox = outbox(&alerts, &mailbox, &clock);
    for _ in 0..5 {
        outbox.run_due().await.unwrap();
        clock.advance(Duration::hours(1));
    }
    let email = alerts.get(&alert.id).await.unwrap().unwrap().email.unwrap();
    assert_eq!((email.status, email.attempts), (EmailStatus::Failed, 3));
    assert!(mailbox.sent.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_send_each_email_once() {
    let (alerts, mailbox) = (
        Arc::new(MemoryAlerts::default()),
        Arc::new(Mailbox::default()),
    );
    let clock = ManualClock::new(Utc::now());
    for n in 0..20 {
        raise(&alerts, &clock, &format!("race_{n}")).await;
    }
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let outbox = outbox(&alerts, &mailbox, &clock);
            tokio::spawn(async move {
                for _ in 0..5 {
                    outbox.run_due().await.unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let mut ids: Vec<String> = mailbox
        .sent
        .lock()
        .unwrap()
        .iter()
        .map(|email| email.message_id.clone())
        .collect();
    assert_eq!(ids.len(), 20);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20, "each once");
}
