//! Critical alerts (design §10 `criticalAlerts`) as values: what needs an admin's attention,
//! raised once per dedupe key, and moved only forward (active -> acknowledged -> resolved).
//!
//! This is the store that services raise their alerts in (a payout whose outcome stays
//! unknown, work that failed too often, a transfer Stripe shows that we did not expect).
//! Email delivery and balance alerts build on it.

use chrono::{DateTime, Utc};
use payouts_runtime::ServiceError;
use payouts_runtime::convert::required_id;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Severity::Info, Severity::Warning, Severity::Critical]
            .into_iter()
            .find(|severity| severity.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertStatus {
    Active,
    Acknowledged,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Active => "active",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Resolved => "resolved",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            AlertStatus::Active,
            AlertStatus::Acknowledged,
            AlertStatus::Resolved,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }

    fn rank(self) -> u8 {
        match self {
            AlertStatus::Active => 0,
            AlertStatus::Acknowledged => 1,
            AlertStatus::Resolved => 2,
        }
    }
}

/// A stored alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// "alert_<dedupe key>" when raised with a key, so a retried raise stores nothing new.
    pub id: String,
    pub kind: String,
    pub severity: Severity,
    pub title: String,
    pub description: String,
    /// JSON object text.
    pub data_json: String,
    pub status: AlertStatus,
    pub dedupe_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// Who acknowledged it ("admin:<subject>", a service).
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    /// What the resolver wrote (why it is over).
    pub resolution_notes: Option<String>,
    /// The alert's email, when it owes one ([`crate::email`]).
    pub email: Option<crate::email::EmailDelivery>,
    /// Who it is for (design §10 escalation; [`crate::escalation`]).
    pub level: crate::escalation::Level,
    /// The signal that set the level (`dispute_created`, ...); `None` for an alert raised
    /// without one (its level comes from its severity).
    pub signal: Option<String>,
    /// How many signals of its rule were in the window when it was last escalated
    /// (escalation alerts), or 1.
    pub signal_count: u32,
    /// Its page to Alertmanager, when it owes one (level 3; [`crate::paging`]).
    pub page: Option<crate::paging::PageDelivery>,
    /// The transfer halt it owes (level 3; [`crate::paging`]).
    pub halt: Option<crate::paging::HaltDelivery>,
    pub version: i64,
}

/// The id an alert is stored under: its dedupe key decides it when there is one.
pub fn alert_id(dedupe_key: Option<&str>, generated: String) -> String {
    match dedupe_key {
        Some(key) => format!("alert_{key}"),
        None => generated,
    }
}

impl Alert {
    /// The alert on the admin dashboard served under `dashboard_url` (`DASHBOARD_URL`, the
    /// gateway's base): the dashboard page (`/admin/`, the only path the gateway serves it
    /// at) on its Alerts route at the alert's level, the alert's id in the route.
    pub fn dashboard_link(&self, dashboard_url: &str) -> String {
        let id: String = self
            .id
            .bytes()
            .map(|byte| {
                if byte.is_ascii_alphanumeric() || b"_-.:".contains(&byte) {
                    char::from(byte).to_string()
                } else {
                    format!("%{byte:02X}")
                }
            })
            .collect();
        format!(
            "{}/admin/#/alerts/{id}?status=all&level={}",
            dashboard_url.trim_end_matches('/'),
            self.level.number()
        )
    }

    /// A new alert from caller input; every problem names its field.
    #[allow(clippy::too_many_arguments)]
    pub fn raise(
        generated_id: String,
        kind: &str,
        severity: Severity,
        title: &str,
        description: &str,
        data_json: &str,
        dedupe_key: &str,
        now: DateTime<Utc>,
    ) -> Result<Self, ServiceError> {
        let data_json = if data_json.trim().is_empty() {
            "{}".to_owned()
        } else {
            data_json.to_owned()
        };
        if !matches!(
            serde_json::from_str::<serde_json::Value>(&data_json),
            Ok(serde_json::Value::Object(_))
        ) {
            return Err(ServiceError::invalid_argument(
                "data_json must be a JSON object",
            ));
        }
        if title.trim().is_empty() {
            return Err(ServiceError::invalid_argument("title is required"));
        }
        let dedupe_key = Some(dedupe_key.trim().to_owned()).filter(|key| !key.is_empty());
        if dedupe_key.as_ref().is_some_and(|key| key.len() > 200) {
            return Err(ServiceError::invalid_argument(
                "dedupe_key is longer than 200 characters",
            ));
        }
        Ok(Self {
            id: alert_id(dedupe_key.as_deref(), generated_id),
            kind: required_id(kind, "type")?,
            severity,
            title: title.trim().to_owned(),
            description: description.to_owned(),
            data_json,
            status: AlertStatus::Active,
            dedupe_key,
            created_at: now,
            acknowledged_at: None,
            acknowledged_by: None,
            resolved_at: None,
            resolved_by: None,
            resolution_notes: None,
            email: None,
            level: crate::escalation::level_of_severity(severity),
            signal: None,
            signal_count: 1,
            page: None,
            halt: None,
            version: 1,
        })
    }

    /// The alert moved to `to` by `actor` (with `notes` when resolving); `None` when that
    /// would move it backwards (or nowhere).
    pub fn moved_to(
        &self,
        to: AlertStatus,
        now: DateTime<Utc>,
        actor: &str,
        notes: Option<&str>,
    ) -> Option<Alert> {
        if to.rank() <= self.status.rank() {
            return None;
        }
        let mut moved = self.clone();
        moved.status = to;
        moved.version += 1;
        match to {
            AlertStatus::Acknowledged => {
                moved.acknowledged_at = Some(now);
                moved.acknowledged_by = Some(actor.to_owned());
            }
            AlertStatus::Resolved => {
                if moved.acknowledged_at.is_none() {
                    moved.acknowledged_at = Some(now);
                    moved.acknowledged_by = Some(actor.to_owned());
                }
                moved.resolved_at = Some(now);
                moved.resolved_by = Some(actor.to_owned());
                moved.resolution_notes = notes
                    .map(str::trim)
                    .filter(|notes| !notes.is_empty())
                    .map(str::to_owned);
                // A page that fired owes its end (endsAt now).
                if let Some(page) = moved.page.as_mut() {
                    page.end(now);
                }
            }
            AlertStatus::Active => {}
        }
        Some(moved)
    }

    /// The alert a windowed rule opens (`<rule kind>:<sequence>`, at the rule's level).
    pub fn for_rule(
        generated_id: String,
        rule: crate::escalation::Rule,
        count: u32,
        signal: &crate::escalation::SignalRecord,
        sequence: u64,
        now: DateTime<Utc>,
    ) -> Result<Alert, ServiceError> {
        let (description, data_json) = rule_figures(rule, count, signal);
        let mut alert = Alert::raise(
            generated_id,
            rule.kind(),
            Severity::Critical,
            rule.title(),
            &description,
            &data_json,
            &format!("{}:{sequence}", rule.kind()),
            now,
        )?;
        alert.level = rule.level();
        alert.signal = Some(signal.signal.as_str().to_owned());
        alert.signal_count = count;
        Ok(alert)
    }

    /// The open alert of `rule` after it fired again: its figures and, when the rule's level
    /// is above it, its level. `None` when nothing changes (the same figure again).
    pub fn escalated(
        &self,
        rule: crate::escalation::Rule,
        count: u32,
        signal: &crate::escalation::SignalRecord,
    ) -> Option<Alert> {
        let level = self.level.max(rule.level());
        if level == self.level && count == self.signal_count {
            return None;
        }
        let (description, data_json) = rule_figures(rule, count, signal);
        let mut next = self.clone();
        next.level = level;
        next.signal = Some(signal.signal.as_str().to_owned());
        next.signal_count = count;
        next.description = description;
        next.data_json = data_json;
        next.version += 1;
        Some(next)
    }

    /// Design §3 `requiresAttention`: nobody has taken it up yet.
    pub fn requires_attention(&self) -> bool {
        self.status == AlertStatus::Active
    }
}

/// A rule's alert text and figures.
fn rule_figures(
    rule: crate::escalation::Rule,
    count: u32,
    signal: &crate::escalation::SignalRecord,
) -> (String, String) {
    use crate::escalation::Rule;
    let description = match rule {
        Rule::RepeatedPayoutFailures => format!("{count} payout failures within the window."),
        Rule::DisputeBurst => format!(
            "{count} disputes within the window: new Stripe transfers are halted until an admin lifts the halt."
        ),
        Rule::FraudAcrossCreators => format!(
            "Fraud flags on {count} creators within the window: new Stripe transfers are halted until an admin lifts the halt."
        ),
        Rule::UnableToPay => format!(
            "Stripe has been unreachable or refusing transfers for {count} minutes: new Stripe transfers are halted until an admin lifts the halt."
        ),
        Rule::UnknownOutcomesPiling => format!(
            "{count} transfers of unknown outcome within the window: new Stripe transfers are halted until an admin lifts the halt."
        ),
    };
    let data = serde_json::json!({
        "rule": rule.kind(),
        "signal": signal.signal.as_str(),
        "count": count,
        "latestSignalId": signal.id,
        "latestSubject": signal.subject,
        "latestAt": signal.at.to_rfc3339(),
    });
    (description, data.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn alert(key: &str) -> Alert {
        Alert::raise(
            "generated".to_owned(),
            "payout_outcome_unknown",
            Severity::Critical,
            "Payout outcome unknown",
            "",
            "",
            key,
            now(),
        )
        .unwrap()
    }

    #[test]
    fn the_dashboard_link_is_the_dashboard_page_at_the_alerts_route() {
        let alert = alert("payout_1:unknown");
        assert_eq!(
            alert.dashboard_link("https://ops.example.com/"),
            "https://ops.example.com/admin/#/alerts/alert_payout_1:unknown?status=all&level=2"
        );
        let odd = super::Alert {
            id: "alert_a b?c#d/é".to_owned(),
            ..alert
        };
        assert_eq!(
            odd.dashboard_link("https://ops.example.com"),
            "https://ops.example.com/admin/#/alerts/alert_a%20b%3Fc%23d%2F%C3%A9?status=all&level=2"
        );
    }

    #[test]
    fn the_dedupe_key_decides_the_id() {
        assert_eq!(alert("payout_1:unknown").id, "alert_payout_1:unknown");
        assert_eq!(alert(" ").id, "generated");
    }

    #[test]
    fn bad_input_names_the_field() {
        let error =
            Alert::raise("g".into(), "", Severity::Info, "T", "", "", "", now()).unwrap_err();
        assert_eq!(error.message(), "type is required");
        for bad in ["[]", "{not json}", "{\"a\":1"] {
            let error =
                Alert::raise("g".into(), "t", Severity::Info, "T", "", bad, "", now()).unwrap_err();
            assert_eq!(error.message(), "data_json must be a JSON object", "{bad}");
        }
    }

    #[test]
    fn alerts_only_move_forward() {
        let active = alert("k");
        let acknowledged = active
            .moved_to(AlertStatus::Acknowledged, now(), "admin:ops", None)
            .unwrap();
        assert_eq!(acknowledged.acknowledged_at, Some(now()));
        assert_eq!(acknowledged.acknowledged_by.as_deref(), Some("admin:ops"));
        assert!(!acknowledged.requires_attention());
        let resolved = acknowledged
            .moved_to(
                AlertStatus::Resolved,
                now(),
                "admin:lead",
                Some(" funds added "),
            )
            .unwrap();
        assert_eq!(resolved.resolved_at, Some(now()));
        assert_eq!(resolved.resolved_by.as_deref(), Some("admin:lead"));
        assert_eq!(resolved.resolution_notes.as_deref(), Some("funds added"));
        assert_eq!(
            resolved.acknowledged_by.as_deref(),
            Some("admin:ops"),
            "who acknowledged it stays"
        );
        for backwards in [AlertStatus::Acknowledged, AlertStatus::Active] {
            assert_eq!(resolved.moved_to(backwards, now(), "x", None), None);
        }
        assert_eq!(active.moved_to(AlertStatus::Active, now(), "x", None), None);
        // Resolved straight away: acknowledged by the resolver too.
        let direct = active
            .moved_to(AlertStatus::Resolved, now(), "balance", None)
            .unwrap();
        assert_eq!(direct.acknowledged_by.as_deref(), Some("balance"));
        assert_eq!(direct.resolution_notes, None);
    }
}
