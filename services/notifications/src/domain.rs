//! Notifications as values.

use chrono::{DateTime, Utc};
use payouts_runtime::ServiceError;
use payouts_runtime::convert::required_id;

/// How urgent a notification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criticality {
    Low,
    Normal,
    High,
    Critical,
}

impl Criticality {
    pub fn as_str(self) -> &'static str {
        match self {
            Criticality::Low => "low",
            Criticality::Normal => "normal",
            Criticality::High => "high",
            Criticality::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "low" => Some(Criticality::Low),
            "normal" => Some(Criticality::Normal),
            "high" => Some(Criticality::High),
            "critical" => Some(Criticality::Critical),
            _ => None,
        }
    }
}

/// A stored notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub id: String,
    pub recipient_id: String,
    pub kind: String,
    pub title: String,
    pub body: String,
    /// JSON object text.
    pub metadata_json: String,
    pub criticality: Criticality,
    /// Same key, same notification.
    pub dedupe_key: Option<String>,
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl Notification {
    pub fn is_read(&self) -> bool {
        self.read_at.is_some()
    }
}

/// What a caller asks to be said to one recipient, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNotification {
    pub recipient_id: String,
    pub kind: String,
    pub title: String,
    pub body: String,
    pub metadata_json: String,
    pub criticality: Criticality,
    pub dedupe_key: Option<String>,
}

impl NewNotification {
    /// Parses caller input; every problem names its field.
    pub fn parse(
        recipient_id: &str,
        kind: &str,
        title: &str,
        body: &str,
        metadata_json: &str,
        criticality: Criticality,
        dedupe_key: &str,
    ) -> Result<Self, ServiceError> {
        let metadata_json = if metadata_json.trim().is_empty() {
            "{}".to_owned()
        } else {
            metadata_json.to_owned()
        };
        if !(metadata_json.trim_start().starts_with('{') && metadata_json.trim_end().ends_with('}'))
        {
            return Err(ServiceError::invalid_argument(
                "metadata_json must be a JSON object",
            ));
        }
        if title.trim().is_empty() {
            return Err(ServiceError::invalid_argument("title is required"));
        }
        Ok(Self {
            recipient_id: required_id(recipient_id, "recipient")?,
            kind: required_id(kind, "type")?,
            title: title.trim().to_owned(),
            body: body.to_owned(),
            metadata_json,
            criticality,
            dedupe_key: Some(dedupe_key.trim().to_owned()).filter(|key| !key.is_empty()),
        })
    }

    pub fn into_notification(self, id: String, created_at: DateTime<Utc>) -> Notification {
        Notification {
            id,
            recipient_id: self.recipient_id,
            kind: self.kind,
            title: self.title,
            body: self.body,
            metadata_json: self.metadata_json,
            criticality: self.criticality,
            dedupe_key: self.dedupe_key,
            read_at: None,
            created_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names_the_bad_field() {
        let error =
            NewNotification::parse("", "t", "T", "", "", Criticality::Normal, "").unwrap_err();
        assert_eq!(error.message(), "recipient is required");
        let error =
            NewNotification::parse("u", "t", "T", "", "[1]", Criticality::Normal, "").unwrap_err();
        assert_eq!(error.message(), "metadata_json must be a JSON object");
        let error =
            NewNotification::parse("u", "t", " ", "", "", Criticality::Normal, "").unwrap_err();
        assert_eq!(error.message(), "title is required");
    }

    #[test]
    fn blank_metadata_and_dedupe_key_get_defaults() {
        let parsed =
            NewNotification::parse("u", "t", "T", "b", " ", Criticality::High, " ").unwrap();
        assert_eq!(parsed.metadata_json, "{}");
        assert_eq!(parsed.dedupe_key, None);
    }

    #[test]
    fn criticality_round_trips_through_text() {
        for criticality in [
            Criticality::Low,
            Criticality::Normal,
            Criticality::High,
            Criticality::Critical,
        ] {
            assert_eq!(Criticality::parse(criticality.as_str()), Some(criticality));
        }
    }
}
