//! Inbox events and their states.

use chrono::{DateTime, Duration, Utc};

/// How long a stored event is kept (spec §4: 30 days), enforced by a TTL index.
pub const RETENTION: Duration = Duration::days(30);

/// The two Stripe webhook endpoints; each has its own signing secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    StripePayouts,
    StripeSubscription,
}

impl Endpoint {
    /// The name stored in documents (spec §4 `webhookEndpoint`).
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::StripePayouts => "stripe-payouts",
            Endpoint::StripeSubscription => "stripe-subscription",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "stripe-payouts" => Some(Endpoint::StripePayouts),
            "stripe-subscription" => Some(Endpoint::StripeSubscription),
            _ => None,
        }
    }
}

/// Processing status (spec §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventStatus {
    Processing,
    Completed,
    Failed,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Processing => "processing",
            EventStatus::Completed => "completed",
            EventStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "processing" => Some(EventStatus::Processing),
            "completed" => Some(EventStatus::Completed),
            "failed" => Some(EventStatus::Failed),
            _ => None,
        }
    }
}

/// A stored Stripe event, keyed by (endpoint, event id).
#[derive(Debug, Clone, PartialEq)]
pub struct InboxEvent {
    pub endpoint: Endpoint,
    pub event_id: String,
    pub event_type: String,
    /// Connected account ("acct_...") for Connect events.
    pub account: Option<String>,
    pub livemode: bool,
    pub api_version: Option<String>,
    /// Stripe's `created` (unix seconds).
    pub created: i64,
    /// The event JSON exactly as received.
    pub payload: String,
    pub status: EventStatus,
    pub attempts: u32,
    pub deliveries: u32,
    /// First stored (spec: processedAt).
    pub received_at: DateTime<Utc>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// Compare-and-set version, bumped by every write.
    pub version: i64,
}

impl InboxEvent {
    /// When the TTL index removes the event.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.received_at + RETENTION
    }
}

/// Counts by status (spec §4 statistics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Statistics {
    pub total: u64,
    pub processing: u64,
    pub completed: u64,
    pub failed: u64,
}

impl Statistics {
    pub fn count(&mut self, status: EventStatus) {
        self.total += 1;
        match status {
            EventStatus::Processing => self.processing += 1,
            EventStatus::Completed => self.completed += 1,
            EventStatus::Failed => self.failed += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for endpoint in [Endpoint::StripePayouts, Endpoint::StripeSubscription] {
            assert_eq!(Endpoint::parse(endpoint.as_str()), Some(endpoint));
        }
        for status in [
            EventStatus::Processing,
            EventStatus::Completed,
            EventStatus::Failed,
        ] {
            assert_eq!(EventStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(Endpoint::parse("stripe"), None);
    }

    #[test]
    fn statistics_count_every_status_into_the_total() {
        let mut stats = Statistics::default();
        for status in [
            EventStatus::Processing,
            EventStatus::Failed,
            EventStatus::Failed,
        ] {
            stats.count(status);
        }
        assert_eq!(
            stats,
            Statistics {
                total: 3,
                processing: 1,
                completed: 0,
                failed: 2
            }
        );
    }
}
