//! Alert emails (design §5 and §10): every critical or warning alert owes one email to
//! `ALERT_EMAIL_TO`, kept on the alert itself as a durable outbox entry. A worker claims
//! what is due, sends it over SMTP and records the result: retried with backoff, failed
//! visibly after its last try, and sent once per alert (a crash between the send and its
//! record can repeat it; the stable Message-ID lets mail systems drop the copy).

use chrono::{DateTime, Duration, Utc};

use crate::alerts::{Alert, Severity};

/// Where an alert's email is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailStatus {
    Pending,
    Sent,
    /// Every try failed; an admin sees it on the alert.
    Failed,
}

impl EmailStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EmailStatus::Pending => "pending",
            EmailStatus::Sent => "sent",
            EmailStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [EmailStatus::Pending, EmailStatus::Sent, EmailStatus::Failed]
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// An alert's email, as its outbox entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailDelivery {
    pub status: EmailStatus,
    /// Tries so far (a claim counts as a try).
    pub attempts: u32,
    /// When the next try is due (also the end of a claim's lease).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// How emails are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmailPolicy {
    pub max_attempts: u32,
    /// Delay after the first failure; doubles, capped at an hour.
    pub retry_base: Duration,
    /// How long a claimed email is left to its sender before another worker may try.
    pub lease: Duration,
}

impl Default for EmailPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            retry_base: Duration::seconds(30),
            lease: Duration::minutes(2),
        }
    }
}

/// Which alerts are emailed (to `ALERT_EMAIL_TO`; at level 3 to `ESCALATION_EMAIL_TO` too):
/// level 2 and 3. Level 1 is recorded (design §10: the dashboard and
/// `payouts_alerts_open{level="1"}`), with one exception: the balance's warnings at level 1
/// (warning balance, depletion risk) are emailed, because design §5 gives each its email and
/// its planned actions (a transfer within 48 hours). A single payout failure or limits flag
/// is not: those come by the dozen and their own rules escalate them.
pub fn emailed(alert: &Alert) -> bool {
    alert.level >= crate::escalation::Level::Admins
        || (alert.kind.starts_with("platform_balance") && alert.severity >= Severity::Warning)
}

impl Alert {
    /// The alert owing its email, due now.
    pub fn owing_email(mut self, now: DateTime<Utc>) -> Alert {
        self.email = Some(EmailDelivery {
            status: EmailStatus::Pending,
            attempts: 0,
            next_attempt_at: Some(now),
            last_error: None,
            sent_at: None,
        });
        self
    }

    fn with_email(&self, edit: impl FnOnce(&mut EmailDelivery)) -> Option<Alert> {
        let mut next = self.clone();
        let email = next.email.as_mut()?;
        edit(email);
        next.version += 1;
        Some(next)
    }

    /// Claimed for a try: `None` unless its email is pending and due.
    pub fn claimed_for_email(&self, now: DateTime<Utc>, policy: &EmailPolicy) -> Option<Alert> {
        let email = self.email.as_ref()?;
        let due = email.status == EmailStatus::Pending
            && email.next_attempt_at.is_none_or(|at| at <= now);
        if !due {
            return None;
        }
        self.with_email(|email| {
            email.attempts += 1;
            email.next_attempt_at = Some(now + policy.lease);
        })
    }

    /// The email went out.
    pub fn email_sent(&self, now: DateTime<Utc>) -> Option<Alert> {
        self.with_email(|email| {
            email.status = EmailStatus::Sent;
            email.next_attempt_at = None;
            email.last_error = None;
            email.sent_at = Some(now);
        })
    }

    /// A try failed: due again after a backoff, or failed for good after the last try.
    pub fn email_failed(
        &self,
        now: DateTime<Utc>,
        error: &str,
        policy: &EmailPolicy,
    ) -> Option<Alert> {
        self.with_email(|email| {
            email.last_error = Some(error.chars().take(500).collect());
            if email.attempts >= policy.max_attempts {
                email.status = EmailStatus::Failed;
                email.next_attempt_at = None;
            } else {
                let doublings = email.attempts.saturating_sub(1).min(16);
                let delay = (policy.retry_base * 2_i32.pow(doublings)).min(Duration::hours(1));
                email.next_attempt_at = Some(now + delay);
            }
        })
    }
}

/// An alert's email: the subject (design §5's for balance alerts) and a plain-text body with
/// the figures and actions, and a link to the dashboard when `DASHBOARD_URL` is set.
pub fn compose(alert: &Alert, dashboard_url: Option<&str>) -> (String, String) {
    let prefix = match (alert.kind.as_str(), alert.severity) {
        // Design §5 writes the depletion subject without a level.
        ("platform_balance_depletion_risk", _) => "",
        (_, Severity::Critical) => "[CRITICAL] ",
        (_, Severity::Warning) => "[WARNING] ",
        (_, Severity::Info) => "",
    };
    let subject = format!("{prefix}{}", alert.title);
    let mut body = format!(
        "{}\n\n{}\n\nType: {}\nSeverity: {}\nRaised: {}\nAlert: {}\n",
        alert.title,
        alert.description,
        alert.kind,
        alert.severity.as_str(),
        alert.created_at.to_rfc3339(),
        alert.id,
    );
    if alert.data_json != "{}" {
        body.push_str(&format!("Details: {}\n", alert.data_json));
    }
    if let Some(url) = dashboard_url {
        body.push_str(&format!(
            "\nOpen it in the dashboard: {}\n",
            alert.dashboard_link(url)
        ));
    }
    (subject, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn alert(kind: &str, severity: Severity, title: &str) -> Alert {
        Alert::raise(
            "g".into(),
            kind,
            severity,
            title,
            "Available balance $700.00.",
            "{\"level\":\"critical\"}",
            "k",
            now(),
        )
        .unwrap()
    }

    #[test]
    fn subjects_are_the_specs() {
        let subject = |kind, severity, title| compose(&alert(kind, severity, title), None).0;
        assert_eq!(
            subject(
                "platform_balance",
                Severity::Critical,
                "Critical: Platform Balance Below Minimum Threshold"
            ),
            "[CRITICAL] Critical: Platform Balance Below Minimum Threshold"
        );
        assert_eq!(
            subject(
                "platform_balance",
                Severity::Warning,
                "Warning: Platform Balance Below Recommended Level"
            ),
            "[WARNING] Warning: Platform Balance Below Recommended Level"
        );
        assert_eq!(
            subject(
                "platform_balance_depletion_risk",
                Severity::Warning,
                "Risk: Platform Balance May Deplete in 9 Days"
            ),
            "Risk: Platform Balance May Deplete in 9 Days"
        );
        let (_, body) = compose(
            &alert("platform_balance", Severity::Critical, "T"),
            Some("https://admin.example.com/"),
        );
        assert!(body.contains("Available balance $700.00."), "{body}");
        assert!(
            body.contains("https://admin.example.com/admin/#/alerts/alert_k?status=all&level="),
            "{body}"
        );
    }

    #[test]
    fn an_email_is_tried_with_backoff_then_fails_visibly() {
        let policy = EmailPolicy {
            max_attempts: 3,
            ..EmailPolicy::default()
        };
        let owed = alert("t", Severity::Critical, "T").owing_email(now());
        let first = owed.claimed_for_email(now(), &policy).unwrap();
        assert_eq!(
            first.claimed_for_email(now(), &policy),
            None,
            "claimed: leased to its sender"
        );
        let retry = first
            .email_failed(now(), "connection refused", &policy)
            .unwrap();
        let email = retry.email.clone().unwrap();
        assert_eq!(email.status, EmailStatus::Pending);
        assert_eq!(email.next_attempt_at, Some(now() + Duration::seconds(30)));
        let second = retry
            .claimed_for_email(now() + Duration::seconds(30), &policy)
            .unwrap()
            .email_failed(now(), "again", &policy)
            .unwrap();
        assert_eq!(
            second.email.as_ref().unwrap().next_attempt_at,
            Some(now() + Duration::seconds(60)),
            "doubled"
        );
        let last = second
            .claimed_for_email(now() + Duration::hours(1), &policy)
            .unwrap()
            .email_failed(now(), "for good", &policy)
            .unwrap();
        let email = last.email.unwrap();
        assert_eq!(email.status, EmailStatus::Failed);
        assert_eq!(email.last_error.as_deref(), Some("for good"));
        assert_eq!(email.attempts, 3);
    }

    #[test]
    fn a_sent_email_is_never_due_again() {
        let policy = EmailPolicy::default();
        let sent = alert("t", Severity::Warning, "T")
            .owing_email(now())
            .claimed_for_email(now(), &policy)
            .unwrap()
            .email_sent(now())
            .unwrap();
        assert_eq!(sent.email.as_ref().unwrap().status, EmailStatus::Sent);
        assert_eq!(
            sent.claimed_for_email(now() + Duration::days(1), &policy),
            None
        );
        use crate::escalation::Level;
        let at = |kind: &str, severity: Severity, level: Level| Alert {
            level,
            ..alert(kind, severity, "T")
        };
        assert!(!emailed(&at(
            "payout_failed",
            Severity::Critical,
            Level::Recorded
        )));
        assert!(!emailed(&at(
            "payout_limits_flag",
            Severity::Critical,
            Level::Recorded
        )));
        assert!(emailed(&at(
            "payout_failed",
            Severity::Critical,
            Level::Admins
        )));
        assert!(emailed(&at(
            "escalation_dispute_burst",
            Severity::Critical,
            Level::Leads
        )));
        assert!(emailed(&at(
            "platform_balance",
            Severity::Warning,
            Level::Recorded
        )));
        assert!(emailed(&at(
            "platform_balance_depletion_risk",
            Severity::Warning,
            Level::Recorded
        )));
        assert!(!emailed(&at(
            "platform_balance",
            Severity::Info,
            Level::Recorded
        )));
    }
}
