//! Escalation settings (design §10 "Escalation Procedures"; docs/configuration.md
//! "Escalation"): the thresholds of the escalation policy, who level 3 reaches, and where
//! its pages go.

use std::time::Duration;

use super::{ConfigError, Values};

/// "N in a window": `N/MINUTES` in the environment (`3/60`: three within an hour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCount {
    pub count: u32,
    pub minutes: u32,
}

impl WindowCount {
    /// Parses `N/MINUTES` (N >= 1, 1 <= MINUTES <= a week), naming `variable` on error.
    pub fn parse(variable: &str, text: &str) -> Result<Self, ConfigError> {
        let bad = || {
            ConfigError::new(
                variable,
                format!(
                    "must be N/MINUTES (N at least 1, MINUTES 1 to 10080), e.g. 3/60, got {text:?}"
                ),
            )
        };
        let (count, minutes) = text.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let minutes: u32 = minutes.trim().parse().map_err(|_| bad())?;
        if count == 0 || !(1..=7 * 24 * 60).contains(&minutes) {
            return Err(bad());
        }
        Ok(Self { count, minutes })
    }
}

/// The escalation settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationSettings {
    /// `ESCALATION_PAYOUT_FAILURES`: payout failures in a window that make level 2 (`3/60`).
    pub payout_failures: WindowCount,
    /// `ESCALATION_DISPUTES`: disputes in a window that make level 3 (`3/60`).
    pub disputes: WindowCount,
    /// `ESCALATION_FRAUD_FLAGS`: creators with a fraud flag in a window that make level 3
    /// (`3/1440`).
    pub fraud_flags: WindowCount,
    /// `ESCALATION_REFUND_CENTS`: a refund above this is level 2 (`10000`, $100.00).
    pub refund_cents: i64,
    /// `ESCALATION_UNKNOWN_OUTCOMES`: transfers of unknown outcome in a window that make
    /// level 3 (`5/60`).
    pub unknown_outcomes: WindowCount,
    /// `ESCALATION_STRIPE_UNAVAILABLE_MINUTES`: Stripe unreachable or refusing every transfer
    /// this long makes level 3 (`30`).
    pub stripe_unavailable_minutes: u32,
    /// `ESCALATION_EMAIL_TO`: comma-separated recipients of level-3 alerts (finance and
    /// engineering leads), besides `ALERT_EMAIL_TO`.
    pub email_to: Vec<String>,
    /// `ALERTMANAGER_URL`: the Alertmanager every level-3 alert is pushed to
    /// (`POST <url>/api/v2/alerts`); unset: no pages (the halt and the emails still happen).
    pub alertmanager_url: Option<String>,
    /// `ALERT_PAGE_INTERVAL_SECONDS`: how often an open level-3 alert is pushed again (`60`);
    /// each push says it ends four intervals later, so Alertmanager resolves a page whose
    /// pusher died.
    pub page_interval: Duration,
    /// `RUNBOOK_BASE_URL`: where docs/runbooks.md is published; a page's `runbook_url` is
    /// `<base>#<alert type>` (default: the repository's file on GitHub, as the chart's
    /// Prometheus rules link it; a bare path would be no link in a page).
    pub runbook_base_url: String,
}

impl Default for EscalationSettings {
    fn default() -> Self {
        Self {
            payout_failures: WindowCount {
                count: 3,
                minutes: 60,
            },
            disputes: WindowCount {
                count: 3,
                minutes: 60,
            },
            fraud_flags: WindowCount {
                count: 3,
                minutes: 24 * 60,
            },
            refund_cents: 100_00,
            unknown_outcomes: WindowCount {
                count: 5,
                minutes: 60,
            },
            stripe_unavailable_minutes: 30,
            email_to: Vec::new(),
            alertmanager_url: None,
            page_interval: Duration::from_secs(60),
            runbook_base_url: "https://github.com/payouts/payouts/blob/main/docs/runbooks.md"
                .to_owned(),
        }
    }
}

impl EscalationSettings {
    pub(super) fn from_values(values: &Values) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let window = |variable: &str, default: WindowCount| -> Result<WindowCount, ConfigError> {
            match values.string(variable)? {
                None => Ok(default),
                Some(text) => WindowCount::parse(variable, &text),
            }
        };
        let refund_cents: i64 = values.number("ESCALATION_REFUND_CENTS", defaults.refund_cents)?;
        if refund_cents < 0 {
            return Err(ConfigError::new(
                "ESCALATION_REFUND_CENTS",
                "must be zero or more cents",
            ));
        }
        let stripe_unavailable_minutes: u32 = values.number(
            "ESCALATION_STRIPE_UNAVAILABLE_MINUTES",
            defaults.stripe_unavailable_minutes,
        )?;
        if !(1..=7 * 24 * 60).contains(&stripe_unavailable_minutes) {
            return Err(ConfigError::new(
                "ESCALATION_STRIPE_UNAVAILABLE_MINUTES",
                "must be 1 to 10080 minutes",
            ));
        }
        let email_to: Vec<String> = values
            .secret_list("ESCALATION_EMAIL_TO")?
            .into_iter()
            .map(|address| address.0)
            .collect();
        if let Some(address) = email_to.iter().find(|address| !address.contains('@')) {
            return Err(ConfigError::new(
                "ESCALATION_EMAIL_TO",
                format!("{address:?} is not an email address"),
            ));
        }
        let alertmanager_url = values
            .string("ALERTMANAGER_URL")?
            .map(|url| url.trim_end_matches('/').to_owned());
        if let Some(url) = &alertmanager_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::new(
                "ALERTMANAGER_URL",
                format!("must be an http:// or https:// URL, got {url:?}"),
            ));
        }
        let page_seconds: u64 = values.number("ALERT_PAGE_INTERVAL_SECONDS", 60)?;
        if !(1..=3600).contains(&page_seconds) {
            return Err(ConfigError::new(
                "ALERT_PAGE_INTERVAL_SECONDS",
                "must be 1 to 3600 seconds",
            ));
        }
        Ok(Self {
            payout_failures: window("ESCALATION_PAYOUT_FAILURES", defaults.payout_failures)?,
            disputes: window("ESCALATION_DISPUTES", defaults.disputes)?,
            fraud_flags: window("ESCALATION_FRAUD_FLAGS", defaults.fraud_flags)?,
            refund_cents,
            unknown_outcomes: window("ESCALATION_UNKNOWN_OUTCOMES", defaults.unknown_outcomes)?,
            stripe_unavailable_minutes,
            email_to,
            alertmanager_url,
            page_interval: Duration::from_secs(page_seconds),
            runbook_base_url: values
                .string("RUNBOOK_BASE_URL")?
                .unwrap_or(defaults.runbook_base_url),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::Settings;
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_env(
            pairs
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect::<HashMap<_, _>>(),
        )
    }

    #[test]
    fn the_defaults_are_documented_ones() {
        let escalation = settings(&[]).unwrap().escalation;
        assert_eq!(escalation, EscalationSettings::default());
        assert_eq!(escalation.refund_cents, 100_00);
        assert_eq!(
            escalation.disputes,
            WindowCount {
                count: 3,
                minutes: 60
            }
        );
        // A page's runbook link is an absolute URL by default (the chart's rules' base).
        assert_eq!(
            escalation.runbook_base_url,
            "https://github.com/payouts/payouts/blob/main/docs/runbooks.md"
        );
    }

    #[test]
    fn thresholds_are_read() {
        let escalation = settings(&[
            ("ESCALATION_DISPUTES", "5/15"),
            ("ESCALATION_REFUND_CENTS", "25000"),
            ("ALERTMANAGER_URL", "http://alertmanager:9093/"),
            ("ESCALATION_EMAIL_TO", "cfo@example.com, cto@example.com"),
        ])
        .unwrap()
        .escalation;
        assert_eq!(
            escalation.disputes,
            WindowCount {
                count: 5,
                minutes: 15
            }
        );
        assert_eq!(escalation.refund_cents, 25_000);
        assert_eq!(
            escalation.alertmanager_url.as_deref(),
            Some("http://alertmanager:9093")
        );
        assert_eq!(escalation.email_to, ["cfo@example.com", "cto@example.com"]);
    }

    #[test]
    fn a_bad_setting_is_refused_by_name() {
        for (variable, value) in [
            ("ESCALATION_PAYOUT_FAILURES", "3"),
            ("ESCALATION_DISPUTES", "0/60"),
            ("ESCALATION_FRAUD_FLAGS", "3/0"),
            ("ESCALATION_UNKNOWN_OUTCOMES", "x/60"),
            ("ESCALATION_DISPUTES", "3/10081"),
            ("ESCALATION_REFUND_CENTS", "-1"),
            ("ESCALATION_STRIPE_UNAVAILABLE_MINUTES", "0"),
            ("ESCALATION_EMAIL_TO", "leads"),
            ("ALERTMANAGER_URL", "alertmanager:9093"),
            ("ALERT_PAGE_INTERVAL_SECONDS", "0"),
        ] {
            let error = settings(&[(variable, value)]).unwrap_err();
            assert_eq!(error.variable, variable, "{value}: {error}");
        }
    }
}
