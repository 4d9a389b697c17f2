//! Real Prometheus and Alertmanager for tests: Debian's `prometheus` (with `promtool`) and
//! `prometheus-alertmanager`, installed with `apt-get` when missing and the tests run as root
//! (a CI machine), like Chromium for the dashboard tests; otherwise the test fails and says how
//! to get them. Never skipped.
//!
//! The pieces, each on a free loopback port, stopped when dropped:
//! - [`WebhookReceiver`]: a small HTTP server collecting what Alertmanager POSTs (its webhook
//!   receiver), readable with labels, annotations and status ([`ReceivedAlert`]).
//! - [`Alertmanager`]: routes every alert, one notification per alert, at once, to a receiver;
//!   its [`Alertmanager::url`] is what Payouts' `ALERTMANAGER_URL` or Prometheus points at.
//! - [`Prometheus`]: scrapes given metrics addresses every second, evaluates the given rule
//!   files every second (optionally with every `for:` cut to 0 s, so a rule fires on the
//!   first evaluation that holds), and sends its alerts to an Alertmanager.
//!
//! Timing-heavy behaviour (`for:` durations, windows of hours) belongs in `promtool test
//! rules`; these are for proving the wiring end to end in seconds.

#![allow(clippy::panic, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{free_port, workspace_target_dir};

/// Where Debian's packages put the tools.
pub const PROMETHEUS: &str = "/usr/bin/prometheus";
pub const PROMTOOL: &str = "/usr/bin/promtool";
pub const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

/// How long the harness waits for something that should happen within seconds (a process
/// ready, a scrape, a rule firing, a notification): generous, for a busy 2-core CI machine.
pub const PATIENCE: Duration = Duration::from_secs(120);

static TOOLS: OnceLock<Result<(), String>> = OnceLock::new();

/// Installs Debian's `prometheus` and `prometheus-alertmanager` when one of the tools is
/// missing (as root only; concurrent test processes wait on a lock), or panics saying how.
pub fn ensure_tools() {
    TOOLS
        .get_or_init(install_tools)
        .clone()
        .unwrap_or_else(|error| {
            panic!(
                "these tests need Prometheus and Alertmanager: {error}. Install Debian's \
                 packages (sudo apt-get install prometheus prometheus-alertmanager) and run \
                 the tests again."
            )
        });
}

/// `promtool`, installed if it can be.
pub fn promtool() -> PathBuf {
    ensure_tools();
    PathBuf::from(PROMTOOL)
}

fn tools_present() -> bool {
    [PROMETHEUS, PROMTOOL, ALERTMANAGER]
        .iter()
        .all(|tool| Path::new(tool).exists())
}

fn install_tools() -> Result<(), String> {
    if tools_present() {
        return Ok(());
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| output.stdout.starts_with(b"0"));
    if !root {
        return Err(format!(
            "{PROMETHEUS}, {PROMTOOL} or {ALERTMANAGER} is missing"
        ));
    }
    let dir = workspace_target_dir().join("prometheus");
    std::fs::create_dir_all(&dir).map_err(|error| format!("cannot create {dir:?}: {error}"))?;
    let lock_path = dir.join("install.lock");
    let lock = std::fs::File::create(&lock_path)
        .map_err(|error| format!("cannot create {lock_path:?}: {error}"))?;
    lock.lock()
        .map_err(|error| format!("cannot lock {lock_path:?}: {error}"))?;
    if tools_present() {
        return Ok(());
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=300"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
    };
    let install = [
        "install",
        "-y",
        "--no-install-recommends",
        "prometheus",
        "prometheus-alertmanager",
    ];
    let mut installed = apt(&install);
    if !tools_present() {
        // A machine whose package lists are old or missing: refresh them once.
        let _ = apt(&["update"]);
        installed = apt(&install);
    }
    if tools_present() {
        Ok(())
    } else {
        Err(format!(
            "apt-get install prometheus prometheus-alertmanager did not install them: {}",
            installed.map_or_else(
                |error| error.to_string(),
                |output| String::from_utf8_lossy(&output.stderr).into_owned()
            )
        ))
    }
}

/// A fresh directory for one process's files under `target/prometheus/`.
fn run_dir(kind: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = workspace_target_dir().join("prometheus").join(format!(
        "{kind}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("cannot create {dir:?}: {error}"));
    dir
}

/// A tool's process with its log, killed (and its directory removed) when dropped.
struct Process {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
}

impl Process {
    fn spawn(program: &str, args: &[String], dir: PathBuf) -> Process {
        let log = dir.join("log.txt");
        let file = std::fs::File::create(&log)
            .unwrap_or_else(|error| panic!("cannot create {log:?}: {error}"));
        let child = Command::new(program)
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {program}: {error}"));
        Process { child, dir, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `url` answers 200, or panics with the log.
    async fn wait_ready(&mut self, name: &str, url: &str) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{name} exited ({status}):\n{}", self.log());
            }
            if let Ok(response) = client.get(url).timeout(Duration::from_secs(2)).send().await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} was not ready at {url} within {PATIENCE:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One alert of a notification Alertmanager sent (its webhook format, version 4).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedAlert {
    /// `firing` or `resolved`.
    pub status: String,
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub starts_at: String,
    /// `0001-01-01T00:00:00Z` while firing with no end given.
    #[serde(default)]
    pub ends_at: String,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
    #[serde(default)]
    pub fingerprint: String,
}

impl ReceivedAlert {
    /// The `alertname` label ("" without one).
    pub fn name(&self) -> &str {
        self.label("alertname")
    }

    /// A label's value ("" when absent).
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }

    pub fn firing(&self) -> bool {
        self.status == "firing"
    }

    pub fn resolved(&self) -> bool {
        self.status == "resolved"
    }
}

/// One POST Alertmanager made to the receiver.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// `firing` or `resolved` (the group's).
    pub status: String,
    pub receiver: String,
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    pub alerts: Vec<ReceivedAlert>,
}

/// Alertmanager's webhook receiver: a loopback HTTP server keeping every notification POSTed
/// to it, in order. Stops with the test's runtime, or when dropped.
pub struct WebhookReceiver {
    address: SocketAddr,
    received: Arc<Mutex<Vec<Notification>>>,
    /// Bodies that were not notifications (kept for failure messages).
    rejected: Arc<Mutex<Vec<String>>>,
    server: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    /// Starts the receiver on a free loopback port (inside a Tokio runtime).
    pub async fn start() -> WebhookReceiver {
        let received = Arc::new(Mutex::new(Vec::new()));
        let rejected = Arc::new(Mutex::new(Vec::new()));
        let (keep, refuse) = (Arc::clone(&received), Arc::clone(&rejected));
        let app = axum::Router::new().fallback(move |body: String| {
            let (keep, refuse) = (Arc::clone(&keep), Arc::clone(&refuse));
            async move {
                match serde_json::from_str::<Notification>(&body) {
                    Ok(notification) => {
                        lock(&keep).push(notification);
                        axum::http::StatusCode::OK
                    }
                    Err(_) => {
                        lock(&refuse).push(body);
                        axum::http::StatusCode::BAD_REQUEST
                    }
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the webhook receiver");
        let address = listener.local_addr().expect("the receiver's address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WebhookReceiver {
            address,
            received,
            rejected,
            server,
        }
    }

    /// The URL Alertmanager posts to.
    pub fn url(&self) -> String {
        format!("http://{}/", self.address)
    }

    /// Every notification so far, in the order received.
    pub fn notifications(&self) -> Vec<Notification> {
        lock(&self.received).clone()
    }

    /// Every alert of every notification so far, in the order received.
    pub fn alerts(&self) -> Vec<ReceivedAlert> {
        self.notifications()
            .into_iter()
            .flat_map(|notification| notification.alerts)
            .collect()
    }

    /// Waits (at most `timeout`) until an alert matching `matches` has been received, and
    /// returns the first one; panics with everything received, saying what was awaited.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&ReceivedAlert) -> bool,
    ) -> ReceivedAlert {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(alert) = self.alerts().into_iter().find(|alert| matches(alert)) {
                return alert;
            }
            assert!(
                Instant::now() < deadline,
                "no notification of {what} within {timeout:?}; received: {:#?}; not \
                 notifications: {:?}",
                self.notifications(),
                lock(&self.rejected)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A real Alertmanager routing every alert to one webhook receiver: one notification per
/// alert (grouped by all its labels), sent at once (`group_wait` 0 s, `group_interval`
/// 1 s), resolved ones too. No clustering (no gossip port).
pub struct Alertmanager {
    process: Process,
    port: u16,
}

impl Alertmanager {
    pub async fn start(receiver: &WebhookReceiver) -> Alertmanager {
        ensure_tools();
        let dir = run_dir("alertmanager");
        let config = format!(
            "route:\n  receiver: test\n  group_by: ['...']\n  group_wait: 0s\n  \
             group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: test\n    \
             webhook_configs:\n      - url: '{}'\n        send_resolved: true\n",
            receiver.url()
        );
        write(&dir.join("alertmanager.yml"), &config);
        let port = free_port().unwrap_or_else(|error| panic!("{error}"));
        let args = vec![
            "--config.file=alertmanager.yml".to_owned(),
            "--storage.path=data".to_owned(),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=".to_owned(),
            "--log.level=warn".to_owned(),
        ];
        let mut process = Process::spawn(ALERTMANAGER, &args, dir);
        process
            .wait_ready("alertmanager", &format!("http://127.0.0.1:{port}/-/ready"))
            .await;
        Alertmanager { process, port }
    }

    /// Its base URL (`http://127.0.0.1:<port>`): `ALERTMANAGER_URL` for Payouts; its API
    /// is under `/api/v2/`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The alerts it holds now (`GET /api/v2/alerts`, active and resolved-but-kept).
    pub async fn alerts(&self) -> Vec<serde_json::Value> {
        get_json(&format!("{}/api/v2/alerts", self.url())).await
    }

    /// What it has logged so far (for failure messages).
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// What a [`Prometheus`] scrapes and evaluates.
#[derive(Debug, Clone, Default)]
pub struct PrometheusOptions {
    /// Metrics addresses (`host:port`, path `/metrics`), scraped every second as job
    /// `payouts` (what the rules select).
    pub targets: Vec<SocketAddr>,
    /// Rule files, loaded as they are, or with every `for:` set to 0 s (see `instant_for`).
    pub rules: Vec<PathBuf>,
    /// Cut every `for:` to 0 s: a rule fires on the first evaluation where it holds (the
    /// durations themselves are `promtool test rules`' business).
    pub instant_for: bool,
    /// Where alerts are sent (an [`Alertmanager::url`]).
    pub alertmanager: Option<String>,
}

/// A real Prometheus: scrape and evaluation every second.
pub struct Prometheus {
    process: Process,
    port: u16,
}

impl Prometheus {
    pub async fn start(options: &PrometheusOptions) -> Prometheus {
        ensure_tools();
        let dir = run_dir("prometheus");
        let mut rule_files = Vec::new();
        for (index, path) in options.rules.iter().enumerate() {
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|error| panic!("cannot read the rules {path:?}: {error}"));
            let text = if options.instant_for {
                without_for(&text)
            } else {
                text
            };
            let name = format!("rules-{index}.yaml");
            write(&dir.join(&name), &text);
            rule_files.push(name);
        }
        let targets: Vec<String> = options
            .targets
            .iter()
            .map(|target| format!("'{target}'"))
            .collect();
        let alerting = options.alertmanager.as_ref().map_or(String::new(), |url| {
            let host = url.trim_start_matches("http://").trim_end_matches('/');
            format!("alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{host}']\n")
        });
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files: [{}]\n{alerting}scrape_configs:\n  - job_name: payouts\n    \
             static_configs:\n      - targets: [{}]\n",
            rule_files.join(", "),
            targets.join(", ")
        );
        write(&dir.join("prometheus.yml"), &config);
        let port = free_port().unwrap_or_else(|error| panic!("{error}"));
        let args = vec![
            "--config.file=prometheus.yml".to_owned(),
            "--storage.tsdb.path=data".to_owned(),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".to_owned(),
        ];
        let mut process = Process::spawn(PROMETHEUS, &args, dir);
        process
            .wait_ready("prometheus", &format!("http://127.0.0.1:{port}/-/ready"))
            .await;
        Prometheus { process, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// An instant query's result (`/api/v1/query`): the series of a vector, or a scalar's
    /// `[time, value]`. Panics when Prometheus refuses the query (not PromQL).
    pub async fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.url()),
            [("query", promql)],
        )
        .expect("a query URL");
        let body: serde_json::Value = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|error| panic!("query `{promql}`: {error}"))
            .json()
            .await
            .unwrap_or_else(|error| panic!("query `{promql}`: not JSON: {error}"));
        assert_eq!(body["status"], "success", "query `{promql}`: {body}");
        body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Its alerts now (`/api/v1/alerts`): each with `labels`, `annotations`, `state`
    /// (`pending`, `firing`).
    pub async fn alerts(&self) -> Vec<serde_json::Value> {
        let body: serde_json::Value = get_json(&format!("{}/api/v1/alerts", self.url())).await;
        body["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Waits (at most `timeout`) until `promql` returns at least one series; panics with
    /// the log otherwise. The series.
    pub async fn wait_for_query(&self, promql: &str, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let result = self.query(promql).await;
            if !result.is_empty() {
                return result;
            }
            assert!(
                Instant::now() < deadline,
                "`{promql}` returned nothing within {timeout:?}; Prometheus said:\n{}",
                self.process.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What it has logged so far (for failure messages).
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// A receiver, an Alertmanager sending to it, and (with targets or rules) a Prometheus
/// sending to that Alertmanager: what an end-to-end on-call test needs.
pub struct Monitoring {
    pub receiver: WebhookReceiver,
    pub alertmanager: Alertmanager,
    pub prometheus: Option<Prometheus>,
}

impl Monitoring {
    /// Starts the receiver and Alertmanager, and Prometheus unless `options` has neither
    /// targets nor rules (`options.alertmanager` is set to this Alertmanager).
    pub async fn start(options: PrometheusOptions) -> Monitoring {
        let receiver = WebhookReceiver::start().await;
        let alertmanager = Alertmanager::start(&receiver).await;
        let prometheus = if options.targets.is_empty() && options.rules.is_empty() {
            None
        } else {
            let options = PrometheusOptions {
                alertmanager: Some(alertmanager.url()),
                ..options
            };
            Some(Prometheus::start(&options).await)
        };
        Monitoring {
            receiver,
            alertmanager,
            prometheus,
        }
    }

    /// `ALERTMANAGER_URL` for a Payouts process that pages through this Alertmanager.
    pub fn alertmanager_url(&self) -> String {
        self.alertmanager.url()
    }

    /// The Prometheus (panics when it was not started).
    pub fn prometheus(&self) -> &Prometheus {
        self.prometheus
            .as_ref()
            .expect("Prometheus runs (give targets or rules)")
    }
}

/// The rules with every `for: <duration>` set to `for: 0s`.
pub fn without_for(rules: &str) -> String {
    rules
        .lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("for:") {
                format!("{}for: 0s", &line[..line.len() - trimmed.len()])
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|error| panic!("cannot write {path:?}: {error}"));
}

async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> T {
    reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"))
        .json()
        .await
        .unwrap_or_else(|error| panic!("GET {url}: not the JSON expected: {error}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_for_is_cut_to_zero_and_nothing_else_changes() {
        let rules = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        for: 5m\n        labels:\n          format: 'for: x'\n";
        assert_eq!(
            super::without_for(rules),
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        for: 0s\n        labels:\n          format: 'for: x'"
        );
    }
}
