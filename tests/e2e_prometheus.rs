//! The alert rules with the real tools (Debian's `prometheus` and `prometheus-alertmanager`,
//! installed by the test harness when missing): `promtool check rules` and `promtool test
//! rules` on the chart's rule file, a unit test and a runbook section for every rule, and the
//! whole path end to end: the real binary scraped by a real Prometheus evaluating those
//! rules, a real Alertmanager, and the notification at a webhook receiver.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test crate: failing loudly is the point

mod support;

use std::path::PathBuf;
use std::process::Command;

use payouts_runtime::testing::prometheus::{self, Monitoring, PATIENCE, PrometheusOptions};
use support::{Payouts, StoreChoice};

const ADMIN_SECRET: &str = "admin-e2e-secret-long-enough-for-hs256";

fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("k8s/payouts/rules")
}

fn rules_file() -> PathBuf {
    rules_dir().join("payouts.rules.yaml")
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{path:?}: {error}"))
}

/// The value after `key:` on a line (trimmed, quotes removed), if the line is that key.
fn value_of<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line
        .trim_start()
        .trim_start_matches("- ")
        .strip_prefix(key)?;
    let rest = rest.strip_prefix(':')?;
    Some(rest.trim().trim_matches(|c| c == '"' || c == '\''))
}

/// The rules' names with their runbook URLs, in file order.
fn rules() -> Vec<(String, String)> {
    let mut rules: Vec<(String, String)> = Vec::new();
    for line in read(&rules_file()).lines() {
        if let Some(name) = value_of(line, "alert") {
            rules.push((name.to_owned(), String::new()));
        } else if let Some(url) = value_of(line, "runbook_url")
            && let Some(last) = rules.last_mut()
        {
            last.1 = url.to_owned();
        }
    }
    rules
}

fn promtool(args: &[&str]) -> String {
    let output = Command::new(prometheus::promtool())
        .args(args)
        .current_dir(rules_dir())
        .output()
        .expect("promtool runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{said}");
    said
}

#[test]
fn the_rules_are_valid_and_pass_their_unit_tests() {
    let checked = promtool(&["check", "rules", "payouts.rules.yaml"]);
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", rules().len())),
        "{checked}"
    );
    let tested = promtool(&["test", "rules", "payouts.rules.test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// Every rule has a unit test that expects it to fire (an `alert_rule_test` entry with its
/// `alertname` and a non-empty `exp_alerts`), and a section in docs/runbooks.md that its
/// `runbook_url` points at.
#[test]
fn every_rule_has_a_unit_test_that_fires_it_and_a_runbook_section() {
    let tests = read(&rules_dir().join("payouts.rules.test.yaml"));
    let lines: Vec<&str> = tests.lines().collect();
    let mut fired = std::collections::BTreeSet::new();
    let mut current = "";
    for (index, line) in lines.iter().enumerate() {
        if let Some(name) = value_of(line, "alertname") {
            current = name;
        } else if let Some(rest) = value_of(line, "exp_alerts") {
            let expects_one = if rest.is_empty() {
                lines[index + 1..]
                    .iter()
                    .find(|next| !next.trim().is_empty())
                    .is_some_and(|next| next.trim_start().starts_with("- "))
            } else {
                rest != "[]"
            };
            if expects_one {
                fired.insert(current.to_owned());
            }
        }
    }
    let runbooks = read(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/runbooks.md"));
    let anchors: std::collections::BTreeSet<String> = runbooks
        .lines()
        .filter_map(|line| line.strip_prefix("## ").or(line.strip_prefix("### ")))
        .map(|heading| {
            heading
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect();
    let rules = rules();
    assert!(rules.len() >= 15, "{rules:?}");
    for (name, runbook) in &rules {
        assert!(
            fired.contains(name),
            "{name} has no unit test in payouts.rules.test.yaml that expects it to fire"
        );
        let anchor = runbook
            .strip_prefix("https://github.com/payouts/payouts/blob/main/docs/runbooks.md#")
            .unwrap_or_else(|| panic!("{name}'s runbook_url is not docs/runbooks.md: {runbook}"));
        assert!(
            anchors.contains(anchor),
            "{name}'s runbook_url names #{anchor}, which docs/runbooks.md has no heading for"
        );
    }
}

fn dashboard_queries() -> Vec<String> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("k8s/payouts/dashboards/payouts.json");
    let dashboard: serde_json::Value = serde_json::from_str(&read(&path)).unwrap();
    let queries: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| target["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(queries.len() > 20, "{queries:?}");
    queries
}

/// The metric names (`payouts_*`) a text uses, without histogram suffixes.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("payouts_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = tail[..end].trim_end_matches("_bucket");
        names.insert(name.to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every metric the rules and the dashboard use is documented (docs/metrics.md, or the
/// service's page it links to): a renamed metric, or one that does not exist, fails here.
#[test]
fn every_metric_the_rules_and_the_dashboard_use_is_documented() {
    let docs_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs");
    let docs: String = ["metrics.md", "webhooks.md", "disputes.md"]
        .iter()
        .map(|name| read(&docs_dir.join(name)))
        .collect();
    let documented = metric_names(&docs);
    let mut used = metric_names(&read(&rules_file()));
    used.extend(
        dashboard_queries()
            .iter()
            .flat_map(|expr| metric_names(expr)),
    );
    assert!(used.len() > 20, "{used:?}");
    let missing: Vec<&String> = used.difference(&documented).collect();
    assert!(missing.is_empty(), "not in docs/metrics.md: {missing:?}");
}

/// The binary's metrics, scraped by Prometheus evaluating the chart's rules (every `for:` cut
/// to 0 s: the durations are promtool's tests'), an admin's pause fires
/// PayoutsTransfersPaused, Alertmanager delivers it to the receiver, and the resume resolves
/// it there.
#[tokio::test]
async fn an_admins_pause_reaches_the_webhook_receiver_through_prometheus_and_alertmanager() {
    let process = Payouts::start(
        &[],
        StoreChoice::Embedded,
        &[("ADMIN_JWT_SECRET", ADMIN_SECRET)],
    );
    let monitoring = Monitoring::start(PrometheusOptions {
        targets: vec![process.metrics.expect("metrics are served")],
        rules: vec![rules_file()],
        instant_for: true,
        alertmanager: None,
    })
    .await;
    let prometheus = monitoring.prometheus();
    // Scraped, and the pause gauge reads "not paused" for every cause.
    prometheus
        .wait_for_query(r#"up{job="payouts"} == 1"#, PATIENCE)
        .await;
    let causes = prometheus
        .wait_for_query(r#"payouts_transfer_pause_on == 0"#, PATIENCE)
        .await;
    assert_eq!(causes.len(), 3, "{causes:?}");
    assert!(
        !monitoring
            .receiver
            .alerts()
            .iter()
            .any(|alert| alert.name() == "PayoutsTransfersPaused"),
        "{:?}",
        monitoring.receiver.notifications()
    );

    // Every query of the Grafana dashboard is PromQL this Prometheus takes.
    for expr in dashboard_queries() {
        prometheus.query(&expr).await;
    }

    let http = reqwest::Client::new();
    let admin = |path: &str| {
        http.post(process.gateway_url(path))
            .bearer_auth(support::admin_token(ADMIN_SECRET, "ops@example.com", true))
            .json(&serde_json::json!({"reason": "on-call drill"}))
            .send()
    };
    let paused = admin("/api/admin/balance/pause").await.unwrap();
    assert_eq!(paused.status(), 200, "{:?}", paused.text().await);

    let page = monitoring
        .receiver
        .wait_for("PayoutsTransfersPaused firing", PATIENCE, |alert| {
            alert.name() == "PayoutsTransfersPaused" && alert.firing()
        })
        .await;
    assert_eq!(page.label("cause"), "manual", "{page:?}");
    assert_eq!(page.label("severity"), "warning", "{page:?}");
    assert_eq!(
        page.annotations["summary"],
        "Payout transfers are paused (manual)"
    );
    assert!(
        page.annotations["runbook_url"].ends_with("docs/runbooks.md#payoutstransferspaused"),
        "{page:?}"
    );
    // Alertmanager holds it too, as its API shows.
    let held = monitoring.alertmanager.alerts().await;
    assert!(
        held.iter()
            .any(|alert| alert["labels"]["alertname"] == "PayoutsTransfersPaused"),
        "{held:?}"
    );

    let resumed = admin("/api/admin/balance/resume").await.unwrap();
    assert_eq!(resumed.status(), 200, "{:?}", resumed.text().await);
    let resolved = monitoring
        .receiver
        .wait_for("PayoutsTransfersPaused resolved", PATIENCE, |alert| {
            alert.name() == "PayoutsTransfersPaused" && alert.resolved()
        })
        .await;
    assert_eq!(resolved.fingerprint, page.fingerprint);
}
