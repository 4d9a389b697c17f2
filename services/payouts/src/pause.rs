//! The transfer pause: while it holds, no new Stripe transfer starts. Payouts stay admitted
//! and wait (nothing fails, no quota moves), events and lookups still settle what is in
//! flight, and the transfers start again when the pause is lifted.
//!
//! Two hands can pause. The balance check pauses automatically when the platform balance
//! reaches `BALANCE_PAUSE_AT` and lifts its own pause when a later check is healthy enough.
//! An admin pauses and resumes by hand. The rules:
//! - An automatic pause never overrides an admin: it does nothing while an admin's pause
//!   holds, and nothing after an admin lifted an automatic pause, until the balance has
//!   recovered once. Otherwise the next check would re-pause what the admin just lifted.
//! - An automatic resume lifts only an automatic pause. It also re-arms automatic pausing.
//! - An admin's pause or resume always applies.

use chrono::{DateTime, Utc};

/// Who paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseCause {
    /// The balance check.
    Automatic,
    /// An admin.
    Manual,
}

impl PauseCause {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseCause::Automatic => "automatic",
            PauseCause::Manual => "manual",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [PauseCause::Automatic, PauseCause::Manual]
            .into_iter()
            .find(|cause| cause.as_str() == text)
    }
}

/// The pause as stored (`payoutTransferPause`, one document).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferPause {
    /// `None`: transfers run.
    pub cause: Option<PauseCause>,
    /// An admin lifted an automatic pause: automatic pausing waits for a recovery.
    pub overridden: bool,
    pub reason: String,
    /// Who made the last change ("balance", "admin:<subject>").
    pub changed_by: String,
    pub changed_at: Option<DateTime<Utc>>,
    /// The version at which the last change's alert was raised: a change owes its alert until
    /// then (raised by whoever finds it owed, so a crash between the change and its alert
    /// loses nothing).
    pub alerted_version: i64,
    pub version: i64,
}

/// A request to change the pause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PauseChange {
    pub paused: bool,
    pub cause: PauseCause,
    pub reason: String,
    pub actor: String,
}

impl TransferPause {
    pub fn paused(&self) -> bool {
        self.cause.is_some()
    }

    /// The pause after `change`, or `None` when the change does nothing (by the rules above).
    pub fn changed(&self, change: &PauseChange, now: DateTime<Utc>) -> Option<TransferPause> {
        let (cause, overridden) = match (change.cause, change.paused) {
            (PauseCause::Automatic, true) => {
                if self.paused() || self.overridden {
                    return None;
                }
                (Some(PauseCause::Automatic), false)
            }
            (PauseCause::Automatic, false) => match self.cause {
                Some(PauseCause::Automatic) => (None, false),
                Some(PauseCause::Manual) | None if self.overridden => (self.cause, false),
                _ => return None,
            },
            (PauseCause::Manual, true) => {
                if self.cause == Some(PauseCause::Manual) {
                    return None;
                }
                (Some(PauseCause::Manual), self.overridden)
            }
            (PauseCause::Manual, false) => match self.cause {
                None => return None,
                Some(previous) => (None, previous == PauseCause::Automatic || self.overridden),
            },
        };
        if cause == self.cause {
            // Only the override is cleared (the balance recovered under an admin's pause or
            // after an admin's resume): the pause itself, who made it and why, is unchanged,
            // and no alert is owed for it.
            let version = self.version + 1;
            return Some(TransferPause {
                overridden,
                alerted_version: if self.alert_owed() {
                    self.alerted_version
                } else {
                    version
                },
                version,
                ..self.clone()
            });
        }
        Some(TransferPause {
            cause,
            overridden,
            reason: change.reason.clone(),
            changed_by: change.actor.clone(),
            changed_at: Some(now),
            alerted_version: self.alerted_version,
            version: self.version + 1,
        })
    }

    /// Whether the last change's alert is still owed.
    pub fn alert_owed(&self) -> bool {
        self.alerted_version < self.version
    }

    /// The pause with its alert raised.
    pub fn alerted(&self) -> TransferPause {
        TransferPause {
            alerted_version: self.version + 1,
            version: self.version + 1,
            ..self.clone()
        }
    }

    /// The alert the last change owes (its key names the change, so raising it twice raises
    /// it once). The criticalAlerts record is the pause's audit trail: who, why, when.
    pub fn alert(&self) -> crate::payout::OwedAlert {
        let (kind, title) = match self.cause {
            Some(PauseCause::Automatic) => (
                "payout_transfers_paused",
                "Payout Transfers Paused: Platform Balance Too Low",
            ),
            Some(PauseCause::Manual) => (
                "payout_transfers_paused",
                "Payout Transfers Paused by an Admin",
            ),
            None => ("payout_transfers_resumed", "Payout Transfers Resumed"),
        };
        let what = if self.paused() {
            "No new Stripe transfer starts; admitted payouts wait (nothing fails) until the pause is lifted."
        } else {
            "Admitted payouts are transferred again."
        };
        crate::payout::OwedAlert {
            key: format!("transfer_pause:{}", self.version),
            kind: kind.to_owned(),
            title: title.to_owned(),
            description: format!(
                "{what} By {} at {}: {}",
                self.changed_by,
                self.changed_at
                    .map(|at| at.to_rfc3339())
                    .unwrap_or_default(),
                self.reason
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(paused: bool, cause: PauseCause) -> PauseChange {
        PauseChange {
            paused,
            cause,
            reason: "why".to_owned(),
            actor: match cause {
                PauseCause::Automatic => "balance".to_owned(),
                PauseCause::Manual => "admin:ops".to_owned(),
            },
        }
    }

    fn apply(pause: &TransferPause, paused: bool, cause: PauseCause) -> TransferPause {
        pause
            .changed(&change(paused, cause), Utc::now())
            .unwrap_or_else(|| pause.clone())
    }

    use PauseCause::{Automatic, Manual};

    #[test]
    fn the_balance_pauses_and_lifts_its_own_pause() {
        let running = TransferPause::default();
        let paused = apply(&running, true, Automatic);
        assert_eq!(paused.cause, Some(Automatic));
        assert_eq!(paused.version, 1);
        assert_eq!(
            paused.changed(&change(true, Automatic), Utc::now()),
            None,
            "once"
        );
        let lifted = apply(&paused, false, Automatic);
        assert!(!lifted.paused());
        assert_eq!(lifted.changed(&change(false, Automatic), Utc::now()), None);
    }

    #[test]
    fn each_change_owes_one_alert_until_it_is_raised() {
        let paused = apply(&TransferPause::default(), true, Automatic);
        assert!(paused.alert_owed());
        assert_eq!(paused.alert().key, "transfer_pause:1");
        assert_eq!(paused.alert().kind, "payout_transfers_paused");
        let alerted = paused.alerted();
        assert!(!alerted.alert_owed() && alerted.paused());
        let lifted = apply(&alerted, false, Automatic);
        assert!(lifted.alert_owed());
        assert_eq!(lifted.alert().kind, "payout_transfers_resumed");
        assert_ne!(lifted.alert().key, paused.alert().key);
    }

    #[test]
    fn an_admins_pause_outlasts_the_balance() {
        let manual = apply(&TransferPause::default(), true, Manual);
        // The balance recovers: an admin's pause stays.
        assert_eq!(apply(&manual, false, Automatic).cause, Some(Manual));
        assert_eq!(manual.changed(&change(false, Automatic), Utc::now()), None);
        // An automatic pause under an admin's changes nothing.
        assert_eq!(manual.changed(&change(true, Automatic), Utc::now()), None);
        assert!(!apply(&manual, false, Manual).paused());
    }

    #[test]
    fn an_admin_who_lifts_an_automatic_pause_is_not_overruled_until_recovery() {
        let paused = apply(&TransferPause::default(), true, Automatic);
        let lifted = apply(&paused, false, Manual);
        assert!(!lifted.paused());
        assert!(lifted.overridden);
        // Still depleted at the next check: no re-pause.
        assert_eq!(lifted.changed(&change(true, Automatic), Utc::now()), None);
        // Recovered: automatic pausing is armed again.
        let recovered = apply(&lifted, false, Automatic);
        assert!(!recovered.overridden && !recovered.paused());
        assert_eq!(apply(&recovered, true, Automatic).cause, Some(Automatic));
    }

    #[test]
    fn an_admin_can_take_over_an_automatic_pause() {
        let paused = apply(&TransferPause::default(), true, Automatic);
        let manual = apply(&paused, true, Manual);
        assert_eq!(manual.cause, Some(Manual));
        // The balance recovering does not lift it now.
        assert_eq!(apply(&manual, false, Automatic).cause, Some(Manual));
        // An automatic pause lifted by an admin, then paused by them: the balance's recovery
        // clears the override but leaves the admin's pause and its author, and owes no alert.
        let lifted = apply(&paused, false, Manual);
        let again = apply(&lifted, true, Manual).alerted();
        assert!(again.overridden);
        let cleared = apply(&again, false, Automatic);
        assert_eq!(cleared.cause, Some(Manual));
        assert!(!cleared.overridden);
        assert_eq!(cleared.changed_by, "admin:ops");
        assert!(!cleared.alert_owed());
    }
}
