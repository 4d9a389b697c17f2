//! What a level-3 alert owes besides its email, kept on the alert like the email (durable
//! outbox entries, pure here; [`crate::escalator`] delivers them):
//!
//! - its **page**: pushed to Alertmanager (`POST /api/v2/alerts`) while it is open, again
//!   every `ALERT_PAGE_INTERVAL_SECONDS` with `endsAt` four intervals ahead (Alertmanager
//!   resolves a page whose pusher stopped), and once more with `endsAt` = its resolution time
//!   when it is resolved. Failed pushes are retried with backoff; after
//!   [`PagePolicy::max_attempts`] in a row the page shows `failed` (and is still retried:
//!   a page is never given up while its alert is open).
//!
//! ```text
//!   pending ──push ok──► firing ──every interval──► (push again) ──resolved──► pending(end)
//!      │  ▲                                                                  │ push ok
//!      ▼  │ retry (backoff)                                                  ▼
//!    pending / failed (N in a row; still retried)                          ended
//! ```
//!
//! - its **halt**: the transfer pause with cause escalation (`escalation: <alert id>`), asked
//!   of payouts until payouts answers. An answer not received is not a "no": the halt stays
//!   owed and is asked again (payouts applies it once per alert).

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use crate::alerts::{Alert, AlertStatus};

/// Where an alert's page is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageStatus {
    /// A push is owed (never pushed, the last push failed, or its end is owed).
    Pending,
    /// Pushed; pushed again at `next_push_at` while the alert is open.
    Firing,
    /// The last [`PagePolicy::max_attempts`] pushes failed; still retried.
    Failed,
    /// Its end was pushed: nothing more is owed.
    Ended,
}

impl PageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PageStatus::Pending => "pending",
            PageStatus::Firing => "firing",
            PageStatus::Failed => "failed",
            PageStatus::Ended => "ended",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            PageStatus::Pending,
            PageStatus::Firing,
            PageStatus::Failed,
            PageStatus::Ended,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }

    /// A push is owed and not delivered (the `payouts_alert_pages_owed` gauge).
    pub fn owed(self) -> bool {
        matches!(self, PageStatus::Pending | PageStatus::Failed)
    }
}

/// An alert's page, as its outbox entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageDelivery {
    pub status: PageStatus,
    /// Failed pushes in a row (0 after a push went through).
    pub attempts: u32,
    /// When the next push is due (also the end of a claim's lease).
    pub next_push_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_pushed_at: Option<DateTime<Utc>>,
    /// The `endsAt` the last push said (`None` before the first).
    pub ends_at: Option<DateTime<Utc>>,
}

impl PageDelivery {
    /// Owed now.
    pub fn owed(now: DateTime<Utc>) -> Self {
        Self {
            status: PageStatus::Pending,
            attempts: 0,
            next_push_at: Some(now),
            last_error: None,
            last_pushed_at: None,
            ends_at: None,
        }
    }

    /// The alert was resolved: its end is owed now (nothing when it never reached
    /// Alertmanager, or already ended).
    pub fn end(&mut self, now: DateTime<Utc>) {
        match self.status {
            PageStatus::Ended => {}
            _ if self.last_pushed_at.is_none() => {
                // Never pushed: nothing fires at Alertmanager; nothing to end.
                self.status = PageStatus::Ended;
                self.next_push_at = None;
            }
            _ => {
                self.status = PageStatus::Pending;
                self.attempts = 0;
                self.next_push_at = Some(now);
            }
        }
    }

    fn due(&self, now: DateTime<Utc>) -> bool {
        self.status != PageStatus::Ended && self.next_push_at.is_none_or(|at| at <= now)
    }
}

/// How pages are pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagePolicy {
    /// `ALERT_PAGE_INTERVAL_SECONDS`: how often an open page is pushed again.
    pub interval: Duration,
    /// Failed pushes in a row after which the page shows `failed`.
    pub max_attempts: u32,
    /// Delay after the first failure; doubles, capped at the interval (at least 5 seconds).
    pub retry_base: Duration,
    /// How long a claimed push is left to its pusher before another worker may try.
    pub lease: Duration,
}

impl PagePolicy {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            max_attempts: 5,
            retry_base: Duration::seconds(5),
            lease: Duration::seconds(30),
        }
    }

    /// How far ahead a firing push's `endsAt` is: four intervals, so Alertmanager keeps it
    /// through three missed pushes and resolves it if the pusher is gone.
    pub fn ends_after(&self) -> Duration {
        self.interval * 4
    }

    fn retry_delay(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(16);
        (self.retry_base * 2_i32.pow(doublings)).min(self.interval.max(Duration::seconds(5)))
    }
}

/// The result of one push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushResult {
    Sent,
    Retry,
    Failed,
}

impl PushResult {
    pub fn as_str(self) -> &'static str {
        match self {
            PushResult::Sent => "sent",
            PushResult::Retry => "retry",
            PushResult::Failed => "failed",
        }
    }
}

impl Alert {
    /// The alert owing a page and a halt (it reached level 3). What is owed already stays.
    pub fn owing_escalation(mut self, now: DateTime<Utc>, paging: bool) -> Alert {
        if paging && self.page.is_none() {
            self.page = Some(PageDelivery::owed(now));
        }
        if self.halt.is_none() {
            self.halt = Some(HaltDelivery::owed(now));
        }
        self
    }

    fn with_page(&self, edit: impl FnOnce(&mut PageDelivery)) -> Option<Alert> {
        let mut next = self.clone();
        let page = next.page.as_mut()?;
        edit(page);
        next.version += 1;
        Some(next)
    }

    /// Claimed for a push: `None` unless its page is due.
    pub fn claimed_for_page(&self, now: DateTime<Utc>, policy: &PagePolicy) -> Option<Alert> {
        if !self.page.as_ref()?.due(now) {
            return None;
        }
        self.with_page(|page| page.next_push_at = Some(now + policy.lease))
    }

    /// What the push says `endsAt` is: the resolution time once resolved, else a few
    /// intervals ahead.
    pub fn page_ends_at(&self, now: DateTime<Utc>, policy: &PagePolicy) -> DateTime<Utc> {
        match (self.status, self.resolved_at) {
            (AlertStatus::Resolved, Some(at)) => at.min(now),
            (AlertStatus::Resolved, None) => now,
            _ => now + policy.ends_after(),
        }
    }

    /// A push of `ends_at` went through: pushed again after the interval, or ended.
    pub fn page_pushed(
        &self,
        now: DateTime<Utc>,
        ends_at: DateTime<Utc>,
        policy: &PagePolicy,
    ) -> Option<Alert> {
        let resolved = self.status == AlertStatus::Resolved;
        self.with_page(|page| {
            page.attempts = 0;
            page.last_error = None;
            page.last_pushed_at = Some(now);
            page.ends_at = Some(ends_at);
            if resolved && ends_at <= now {
                page.status = PageStatus::Ended;
                page.next_push_at = None;
            } else if resolved {
                // Resolved while this push (still firing) was out: its end is owed now.
                page.status = PageStatus::Pending;
                page.next_push_at = Some(now);
            } else {
                page.status = PageStatus::Firing;
                page.next_push_at = Some(now + policy.interval);
            }
        })
    }

    /// A push failed: retried after a backoff; `failed` after too many in a row.
    pub fn page_failed(
        &self,
        now: DateTime<Utc>,
        error: &str,
        policy: &PagePolicy,
    ) -> Option<Alert> {
        self.with_page(|page| {
            page.attempts += 1;
            page.last_error = Some(error.chars().take(500).collect());
            page.status = if page.attempts >= policy.max_attempts {
                PageStatus::Failed
            } else {
                PageStatus::Pending
            };
            page.next_push_at = Some(now + policy.retry_delay(page.attempts));
        })
    }
}

/// Whether an alert's transfer halt is in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaltStatus {
    /// Not confirmed by payouts yet: asked again until it is.
    Owed,
    /// Payouts confirmed the halt (or that this alert's halt was applied before).
    Set,
}

impl HaltStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HaltStatus::Owed => "owed",
            HaltStatus::Set => "set",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [HaltStatus::Owed, HaltStatus::Set]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// An alert's transfer halt, as its outbox entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaltDelivery {
    pub status: HaltStatus,
    pub attempts: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub set_at: Option<DateTime<Utc>>,
}

impl HaltDelivery {
    pub fn owed(now: DateTime<Utc>) -> Self {
        Self {
            status: HaltStatus::Owed,
            attempts: 0,
            next_attempt_at: Some(now),
            last_error: None,
            set_at: None,
        }
    }
}

/// How long a claimed halt is left to its caller; retries double from 2 seconds to a minute.
const HALT_LEASE_SECONDS: i64 = 30;

impl Alert {
    fn with_halt(&self, edit: impl FnOnce(&mut HaltDelivery)) -> Option<Alert> {
        let mut next = self.clone();
        let halt = next.halt.as_mut()?;
        edit(halt);
        next.version += 1;
        Some(next)
    }

    /// Claimed for asking payouts: `None` unless its halt is owed and due. (A resolved
    /// alert's owed halt is still asked: payouts may have applied it already, and an admin
    /// lifts it with notes either way.)
    pub fn claimed_for_halt(&self, now: DateTime<Utc>) -> Option<Alert> {
        let halt = self.halt.as_ref()?;
        if halt.status != HaltStatus::Owed || halt.next_attempt_at.is_some_and(|at| at > now) {
            return None;
        }
        self.with_halt(|halt| {
            halt.attempts += 1;
            halt.next_attempt_at = Some(now + Duration::seconds(HALT_LEASE_SECONDS));
        })
    }

    pub fn halt_set(&self, now: DateTime<Utc>) -> Option<Alert> {
        self.with_halt(|halt| {
            halt.status = HaltStatus::Set;
            halt.next_attempt_at = None;
            halt.last_error = None;
            halt.set_at = Some(now);
        })
    }

    pub fn halt_failed(&self, now: DateTime<Utc>, error: &str) -> Option<Alert> {
        self.with_halt(|halt| {
            let doublings = halt.attempts.saturating_sub(1).min(5);
            let delay = (Duration::seconds(2) * 2_i32.pow(doublings)).min(Duration::minutes(1));
            halt.last_error = Some(error.chars().take(500).collect());
            halt.next_attempt_at = Some(now + delay);
        })
    }
}

/// Where the links of a page point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageLinks {
    /// `RUNBOOK_BASE_URL` (docs/runbooks.md on GitHub by default): `runbook_url` is
    /// `<base>#<type>`.
    pub runbook_base_url: String,
    /// `DASHBOARD_URL`: `dashboard` is the alert on the dashboard
    /// ([`Alert::dashboard_link`]), and `generatorURL`.
    pub dashboard_url: Option<String>,
}

/// One alert as Alertmanager's API v2 takes it (`POST /api/v2/alerts` takes an array of
/// these: labels, annotations, startsAt, endsAt, generatorURL). The labels identify the
/// alert (Alertmanager groups and deduplicates by them), so they never change while it is
/// open; the figures are annotations.
pub fn alertmanager_alert(alert: &Alert, ends_at: DateTime<Utc>, links: &PageLinks) -> Value {
    let dashboard = links
        .dashboard_url
        .as_deref()
        .map(|url| alert.dashboard_link(url));
    let mut annotations = json!({
        "summary": alert.title,
        "description": alert.description,
        "figures": alert.data_json,
        "runbook_url": format!("{}#{}", links.runbook_base_url, alert.kind),
        "signal": alert.signal.clone().unwrap_or_default(),
        "signal_count": alert.signal_count.to_string(),
    });
    if let Some(dashboard) = &dashboard {
        annotations["dashboard"] = json!(dashboard);
    }
    let mut body = json!({
        "labels": {
            "alertname": "PayoutsEscalation",
            "severity": "critical",
            "level": alert.level.number().to_string(),
            "kind": alert.kind,
            "team": "finance-engineering-leads",
            "alert_id": alert.id,
            "service": "payouts",
        },
        "annotations": annotations,
        "startsAt": alert.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "endsAt": ends_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    if let Some(dashboard) = dashboard {
        body["generatorURL"] = json!(dashboard);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::Severity;
    use crate::escalation::Level;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn level_three() -> Alert {
        let mut alert = Alert::raise(
            "g".into(),
            "escalation_dispute_burst",
            Severity::Critical,
            "Multiple Disputes in a Short Period",
            "3 disputes in 60 minutes",
            "{\"count\":3}",
            "escalation_dispute_burst:1",
            now(),
        )
        .unwrap();
        alert.level = Level::Leads;
        alert.signal = Some("dispute_created".to_owned());
        alert.owing_escalation(now(), true)
    }

    fn policy() -> PagePolicy {
        PagePolicy::new(Duration::seconds(60))
    }

    #[test]
    fn an_open_page_is_pushed_again_every_interval_until_it_ends() {
        let alert = level_three();
        let claimed = alert.claimed_for_page(now(), &policy()).unwrap();
        assert_eq!(claimed.claimed_for_page(now(), &policy()), None, "leased");
        let ends_at = claimed.page_ends_at(now(), &policy());
        assert_eq!(ends_at, now() + Duration::seconds(240));
        let firing = claimed.page_pushed(now(), ends_at, &policy()).unwrap();
        let page = firing.page.clone().unwrap();
        assert_eq!(page.status, PageStatus::Firing);
        assert!(!page.status.owed());
        assert_eq!(page.next_push_at, Some(now() + Duration::seconds(60)));
        assert_eq!(
            firing.claimed_for_page(now() + Duration::seconds(59), &policy()),
            None
        );
        let again = firing
            .claimed_for_page(now() + Duration::seconds(60), &policy())
            .unwrap();
        // Resolved: the end is owed, pushed with endsAt = the resolution time, then nothing.
        let later = now() + Duration::seconds(90);
        let resolved = again
            .moved_to(AlertStatus::Resolved, later, "admin:lead", Some("reviewed"))
            .unwrap();
        assert_eq!(resolved.page.as_ref().unwrap().status, PageStatus::Pending);
        let claimed = resolved.claimed_for_page(later, &policy()).unwrap();
        let ends_at = claimed.page_ends_at(later, &policy());
        assert_eq!(ends_at, later);
        let ended = claimed.page_pushed(later, ends_at, &policy()).unwrap();
        assert_eq!(ended.page.as_ref().unwrap().status, PageStatus::Ended);
        assert_eq!(
            ended.claimed_for_page(later + Duration::days(1), &policy()),
            None
        );
    }

    #[test]
    fn a_failing_push_is_retried_with_backoff_and_shows_failed() {
        let mut alert = level_three();
        let mut delays = Vec::new();
        let mut at = now();
        for _ in 0..policy().max_attempts {
            let claimed = alert.claimed_for_page(at, &policy()).unwrap();
            alert = claimed
                .page_failed(at, "connection refused", &policy())
                .unwrap();
            let next = alert.page.as_ref().unwrap().next_push_at.unwrap();
            delays.push((next - at).num_seconds());
            at = next;
        }
        assert_eq!(
            delays,
            [5, 10, 20, 40, 60],
            "doubling, capped at the interval"
        );
        let page = alert.page.clone().unwrap();
        assert_eq!(page.status, PageStatus::Failed);
        assert!(page.status.owed());
        assert_eq!(page.last_error.as_deref(), Some("connection refused"));
        // Still retried; a success clears it.
        let claimed = alert.claimed_for_page(at, &policy()).unwrap();
        let sent = claimed
            .page_pushed(at, claimed.page_ends_at(at, &policy()), &policy())
            .unwrap();
        assert_eq!(sent.page.as_ref().unwrap().status, PageStatus::Firing);
        assert_eq!(sent.page.as_ref().unwrap().attempts, 0);
    }

    #[test]
    fn a_page_resolved_before_its_first_push_owes_nothing() {
        let resolved = level_three()
            .moved_to(AlertStatus::Resolved, now(), "admin:lead", None)
            .unwrap();
        assert_eq!(resolved.page.as_ref().unwrap().status, PageStatus::Ended);
        assert_eq!(resolved.claimed_for_page(now(), &policy()), None);
    }

    #[test]
    fn a_halt_is_asked_until_payouts_answers() {
        let alert = level_three();
        let claimed = alert.claimed_for_halt(now()).unwrap();
        assert_eq!(claimed.claimed_for_halt(now()), None, "leased");
        let failed = claimed.halt_failed(now(), "unavailable").unwrap();
        let halt = failed.halt.clone().unwrap();
        assert_eq!(halt.status, HaltStatus::Owed, "no answer is not a no");
        assert_eq!(halt.next_attempt_at, Some(now() + Duration::seconds(2)));
        let set = failed
            .claimed_for_halt(now() + Duration::seconds(2))
            .unwrap()
            .halt_set(now())
            .unwrap();
        assert_eq!(set.halt.as_ref().unwrap().status, HaltStatus::Set);
        assert_eq!(set.claimed_for_halt(now() + Duration::days(1)), None);
    }

    #[test]
    fn the_alertmanager_body_carries_the_labels_and_links() {
        let alert = level_three();
        let links = PageLinks {
            runbook_base_url: "https://docs.example.com/runbooks".to_owned(),
            dashboard_url: Some("https://admin.example.com/".to_owned()),
        };
        let body = alertmanager_alert(&alert, now(), &links);
        assert_eq!(body["labels"]["severity"], "critical");
        assert_eq!(body["labels"]["level"], "3");
        assert_eq!(body["labels"]["kind"], "escalation_dispute_burst");
        assert_eq!(body["labels"]["alertname"], "PayoutsEscalation");
        assert!(body["labels"]["team"].is_string());
        assert_eq!(
            body["annotations"]["runbook_url"],
            "https://docs.example.com/runbooks#escalation_dispute_burst"
        );
        assert_eq!(
            body["annotations"]["dashboard"],
            format!(
                "https://admin.example.com/admin/#/alerts/{}?status=all&level=3",
                alert.id
            )
        );
        assert_eq!(body["annotations"]["figures"], "{\"count\":3}");
        assert_eq!(body["endsAt"], "2027-01-15T08:00:00.000Z");
        assert_eq!(body["generatorURL"], body["annotations"]["dashboard"]);
    }
}
