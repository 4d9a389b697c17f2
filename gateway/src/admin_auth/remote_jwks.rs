//! The identity provider's keys, fetched from `ADMIN_JWT_JWKS_URL` into a bounded cache.
//!
//! ```text
//!   start ──fetch──▶ keys (none yet: admin routes answer 503)
//!     every ADMIN_JWT_JWKS_REFRESH_INTERVAL ──fetch──▶ new keys, or the last good ones kept
//!     a token with an unknown kid ──fetch, at most once per `min_refetch`──▶ verified again
//! ```
//!
//! What keeps it bounded, whoever sends tokens: one fetch at a time, at most one on demand per
//! `min_refetch` (a flood of tokens with random `kid`s costs the identity provider one request
//! per period, and us nothing more); the keys are replaced, never accumulated, and a set of
//! more than `max_keys` keys or a body over `max_bytes` is refused; every fetch has a timeout
//! and follows no redirect. A failed fetch keeps the keys last fetched.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;

use super::{Key, jwks_keys};

/// How hard the identity provider may be asked, and how much of its answer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksLimits {
    /// How often the keys are fetched again (`ADMIN_JWT_JWKS_REFRESH_INTERVAL`).
    pub refresh: Duration,
    /// The shortest time between two fetches asked by requests (an unknown `kid`, or no
    /// keys yet).
    pub min_refetch: Duration,
    /// The whole fetch, connection included.
    pub timeout: Duration,
    /// The largest body read.
    pub max_bytes: usize,
    /// The most keys a set may have.
    pub max_keys: usize,
}

impl JwksLimits {
    pub fn with_refresh(refresh: Duration) -> Self {
        Self {
            refresh,
            min_refetch: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            max_bytes: 1024 * 1024,
            max_keys: 64,
        }
    }
}

pub(super) struct RemoteJwks {
    url: String,
    client: reqwest::Client,
    limits: JwksLimits,
    /// `None` until a fetch has succeeded.
    keys: RwLock<Option<Arc<Vec<Key>>>>,
    last_attempt: std::sync::Mutex<Option<Instant>>,
    /// One fetch at a time; requests asking meanwhile wait for it, then see its keys.
    fetching: tokio::sync::Mutex<()>,
    fetches: AtomicU64,
}

impl RemoteJwks {
    pub(super) fn new(url: &str, limits: JwksLimits) -> anyhow::Result<Self> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|error| anyhow::anyhow!("invalid setting ADMIN_JWT_JWKS_URL: {error}"))?;
        let mut client = reqwest::Client::builder()
            .timeout(limits.timeout)
            .connect_timeout(limits.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("payouts-gateway/", env!("CARGO_PKG_VERSION")));
        if parsed.scheme() == "http" {
            // Only a loopback address (checked by the settings): never through a proxy.
            client = client.no_proxy();
        }
        let client = client.build().map_err(|error| {
            anyhow::anyhow!("invalid setting ADMIN_JWT_JWKS_URL: no HTTP client: {error}")
        })?;
        Ok(Self {
            url: url.to_owned(),
            client,
            limits,
            keys: RwLock::new(None),
            last_attempt: std::sync::Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
        })
    }

    /// The keys of the last successful fetch; `None` before the first.
    pub(super) fn keys(&self) -> Option<Arc<Vec<Key>>> {
        self.keys.read().ok().and_then(|keys| keys.clone())
    }

    /// How many fetches were sent (tests, and the log).
    pub(super) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// A fetch asked by a request: made only when none was tried within `min_refetch`, and
    /// never waited for when another is under way (a request holding an admin slot must not
    /// wait on the identity provider because of someone's made-up `kid`: that request is
    /// refused at once and its caller may try again when the fetch is done).
    pub(super) async fn refetch_if_allowed(&self) {
        let recent = self
            .last_attempt
            .lock()
            .map(|last| last.is_some_and(|at| at.elapsed() < self.limits.min_refetch))
            .unwrap_or(true);
        if recent {
            return;
        }
        let Ok(_one) = self.fetching.try_lock() else {
            return;
        };
        let allowed = match self.last_attempt.lock() {
            Ok(mut last) => {
                let allowed = last.is_none_or(|at| at.elapsed() >= self.limits.min_refetch);
                if allowed {
                    *last = Some(Instant::now());
                }
                allowed
            }
            Err(_) => false,
        };
        if allowed {
            self.fetch_and_log().await;
        }
    }

    /// A fetch now, whatever the last one (the periodic refresh).
    pub(super) async fn refresh(&self) {
        let _one = self.fetching.lock().await;
        if let Ok(mut last) = self.last_attempt.lock() {
            *last = Some(Instant::now());
        }
        self.fetch_and_log().await;
    }

    /// Fetches at once, then every `refresh` (every `min_refetch` while no fetch has
    /// succeeded yet) until `shutdown`.
    pub(super) async fn keep_fresh(self: Arc<Self>, shutdown: payouts_runtime::shutdown::Shutdown) {
        let stop = shutdown.requested();
        tokio::pin!(stop);
        loop {
            self.refresh().await;
            let wait = if self.keys().is_some() {
                self.limits.refresh
            } else {
                self.limits.min_refetch
            };
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn fetch_and_log(&self) {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match self.fetch().await {
            Ok(keys) => {
                let count = keys.len();
                let changed = self
                    .keys()
                    .is_none_or(|current| kids(&current) != kids(&keys));
                if let Ok(mut current) = self.keys.write() {
                    *current = Some(Arc::new(keys));
                }
                metrics::counter!("payouts_admin_jwks_fetches_total", "outcome" => "ok")
                    .increment(1);
                if changed {
                    tracing::info!(keys = count, "admin jwks fetched: its keys changed");
                }
            }
            Err(error) => {
                metrics::counter!("payouts_admin_jwks_fetches_total", "outcome" => "failed")
                    .increment(1);
                let kept = self.keys().map_or(0, |keys| keys.len());
                tracing::warn!(
                    error = %format!("{error:#}"),
                    url = %self.url,
                    kept_keys = kept,
                    "admin jwks not fetched; keeping the keys last fetched"
                );
            }
        }
    }

    async fn fetch(&self) -> anyhow::Result<Vec<Key>> {
        let mut response = self
            .client
            .get(&self.url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "the identity provider answered {}",
            response.status()
        );
        let max = self.limits.max_bytes;
        if let Some(length) = response.content_length() {
            anyhow::ensure!(
                length <= max as u64,
                "the JWKS is {length} bytes, more than {max}"
            );
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            anyhow::ensure!(
                body.len() + chunk.len() <= max,
                "the JWKS is more than {max} bytes"
            );
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet = serde_json::from_slice(&body)
            .map_err(|error| anyhow::anyhow!("the answer is not a JWKS: {error}"))?;
        anyhow::ensure!(
            set.keys.len() <= self.limits.max_keys,
            "the JWKS has {} keys, more than {}",
            set.keys.len(),
            self.limits.max_keys
        );
        let keys = jwks_keys(&set).map_err(|error| anyhow::anyhow!("{error}"))?;
        anyhow::ensure!(!keys.is_empty(), "the JWKS has no RS256 or ES256 key");
        Ok(keys)
    }
}

fn kids(keys: &[Key]) -> Vec<Option<&str>> {
    keys.iter().map(|key| key.kid.as_deref()).collect()
}
