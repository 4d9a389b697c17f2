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
//! - An admin's pause or resume always applies, but for one exception below.
//!
//! A third hand halts: notifications, when an alert reaches escalation level 3 (design §10;
//! reason `escalation: <alert id>`). The halt is the strongest cause:
//! - It applies over a running, automatic or manual state, and is never lifted by the
//!   balance check's automatic resume, nor replaced by an automatic or manual pause: those
//!   change the pause `beneath` it (what it covers), which lifting the halt leaves in force.
//! - Only an admin's resume lifts it, with notes (the reason), recorded in the resume's
//!   alert (the pause's audit trail, as for every change).
//! - Notifications never resumes: a halt is one-way from its side.
//! - A halt is applied once per alert: the alert ids that halted are remembered, so a halt
//!   request retried after an admin lifted it (its answer was lost) does not halt again.
//!
//! Money-safety: no cause ever fails a payout or moves a quota; payouts wait in PENDING
//! with their reservation, and one lifted pause transfers each of them once (the transfer's
//! claim and idempotency key are the payout's, as without a pause).

use chrono::{DateTime, Utc};

/// Who paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseCause {
    /// The balance check.
    Automatic,
    /// An admin.
    Manual,
    /// A level-3 escalation (notifications): lifted only by an admin.
    Escalation,
}

impl PauseCause {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseCause::Automatic => "automatic",
            PauseCause::Manual => "manual",
            PauseCause::Escalation => "escalation",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            PauseCause::Automatic,
            PauseCause::Manual,
            PauseCause::Escalation,
        ]
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
    /// The alerts whose escalation halts were applied (oldest first, the last
    /// [`REMEMBERED_ESCALATIONS`]): a halt is applied once per alert.
    pub escalations: Vec<String>,
    /// Under a halt: the pause the halt covers (the balance's or an admin's, held when the
    /// halt came or asked for while it held), which lifting the halt leaves in force.
    pub beneath: Option<PauseCause>,
    pub version: i64,
}

/// How many escalation alerts the pause remembers.
pub const REMEMBERED_ESCALATIONS: usize = 200;

/// The reason notifications gives for a halt.
pub fn escalation_reason(alert_id: &str) -> String {
    format!("escalation: {alert_id}")
}

/// The alert id of an escalation halt's reason.
pub fn escalation_alert(reason: &str) -> Option<&str> {
    reason
        .strip_prefix("escalation: ")
        .map(str::trim)
        .filter(|id| !id.is_empty())
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
        let mut escalations = self.escalations.clone();
        let (cause, overridden) = match (change.cause, change.paused) {
            (PauseCause::Escalation, true) => {
                let alert = escalation_alert(&change.reason)?;
                if self.escalations.iter().any(|halted| halted == alert) {
                    return None;
                }
                escalations.push(alert.to_owned());
                if escalations.len() > REMEMBERED_ESCALATIONS {
                    escalations.remove(0);
                }
                if self.cause == Some(PauseCause::Escalation) {
                    // Already halted: remembered, and the first alert's reason stays.
                    return Some(TransferPause {
                        escalations,
                        alerted_version: if self.alert_owed() {
                            self.alerted_version
                        } else {
                            self.version + 1
                        },
                        version: self.version + 1,
                        ..self.clone()
                    });
                }
                return Some(TransferPause {
                    cause: Some(PauseCause::Escalation),
                    beneath: self.cause,
                    reason: change.reason.trim().to_owned(),
                    changed_by: change.actor.clone(),
                    changed_at: Some(now),
                    escalations,
                    version: self.version + 1,
                    ..self.clone()
                });
            }
            // Notifications never lifts a halt.
            (PauseCause::Escalation, false) => return None,
            (PauseCause::Automatic, true) => {
                if self.cause == Some(PauseCause::Escalation)
                    && self.beneath.is_none()
                    && !self.overridden
                {
                    // Under a halt the balance's pause is kept beneath it.
                    return Some(self.beneath_changed(Some(PauseCause::Automatic), false));
                }
                if self.paused() || self.overridden {
                    return None;
                }
                (Some(PauseCause::Automatic), false)
            }
            (PauseCause::Automatic, false) => match self.cause {
                Some(PauseCause::Automatic) => (None, false),
                Some(PauseCause::Escalation) if self.beneath == Some(PauseCause::Automatic) => {
                    return Some(self.beneath_changed(None, false));
                }
                _ if self.overridden => (self.cause, false),
                _ => return None,
            },
            (PauseCause::Manual, true) => {
                if self.cause == Some(PauseCause::Escalation) {
                    // An admin's pause under a halt outlasts the halt.
                    if self.beneath == Some(PauseCause::Manual) {
                        return None;
                    }
                    return Some(self.beneath_changed(Some(PauseCause::Manual), self.overridden));
                }
                if self.cause == Some(PauseCause::Manual) {
                    return None;
                }
                (Some(PauseCause::Manual), self.overridden)
            }
            (PauseCause::Manual, false) => match self.cause {
                None => return None,
                // Lifting a halt takes notes: without them nothing changes (the caller is
                // told the halt holds).
                Some(PauseCause::Escalation) if change.reason.trim().is_empty() => return None,
                // Lifting a halt leaves what it covered: the balance's pause or an admin's
                // (lifted by a resume of its own), or transfers running.
                Some(PauseCause::Escalation) => (self.beneath, self.overridden),
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
                escalations,
                alerted_version: if self.alert_owed() {
                    self.alerted_version
                } else {
                    version
                },
                version,
                ..self.clone()
            });
        }
        let reason = match change.reason.trim() {
            "" if change.paused => "paused by an admin".to_owned(),
            "" => "resumed by an admin".to_owned(),
            reason => reason.to_owned(),
        };
        Some(TransferPause {
            cause,
            overridden,
            reason,
            changed_by: change.actor.clone(),
            changed_at: Some(now),
            alerted_version: self.alerted_version,
            escalations,
            beneath: None,
            version: self.version + 1,
        })
    }

    /// The halt with the pause beneath it changed: the halt itself, who made it and why, is
    /// unchanged, and no alert is owed for it.
    fn beneath_changed(&self, beneath: Option<PauseCause>, overridden: bool) -> TransferPause {
        let version = self.version + 1;
        TransferPause {
            beneath,
            overridden,
            alerted_version: if self.alert_owed() {
                self.alerted_version
            } else {
                version
            },
            version,
            ..self.clone()
        }
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
            Some(PauseCause::Escalation) => (
                "payout_transfers_paused",
                "Payout Transfers Halted: Level-3 Escalation",
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
                PauseCause::Escalation => "notifications".to_owned(),
            },
        }
    }

    fn apply(pause: &TransferPause, paused: bool, cause: PauseCause) -> TransferPause {
        pause
            .changed(&change(paused, cause), Utc::now())
            .unwrap_or_else(|| pause.clone())
    }

    use PauseCause::{Automatic, Escalation, Manual};

    fn halt(alert: &str) -> PauseChange {
        PauseChange {
            paused: true,
            cause: Escalation,
            reason: escalation_reason(alert),
            actor: "notifications".to_owned(),
        }
    }

    fn halted(pause: &TransferPause, alert: &str) -> TransferPause {
        pause
            .changed(&halt(alert), Utc::now())
            .unwrap_or_else(|| pause.clone())
    }

    #[test]
    fn an_escalation_halts_over_every_state() {
        let running = TransferPause::default();
        let automatic = apply(&running, true, Automatic);
        let manual = apply(&running, true, Manual);
        let lifted_automatic = apply(&automatic, false, Manual);
        for (name, before) in [
            ("running", &running),
            ("automatic", &automatic),
            ("manual", &manual),
            ("overridden", &lifted_automatic),
        ] {
            let after = halted(before, "alert_a");
            assert_eq!(after.cause, Some(Escalation), "{name}");
            assert_eq!(after.reason, "escalation: alert_a", "{name}");
            assert_eq!(after.changed_by, "notifications", "{name}");
            assert!(after.alert_owed(), "{name}: the halt owes its alert");
        }
    }

    #[test]
    fn the_balance_never_lifts_an_escalation_halt() {
        let halt = halted(&TransferPause::default(), "alert_a").alerted();
        assert_eq!(halt.changed(&change(false, Automatic), Utc::now()), None);
        // A low balance under the halt is kept beneath it; a recovery clears only that.
        let low = halt.changed(&change(true, Automatic), Utc::now()).unwrap();
        assert_eq!(
            (low.cause, low.beneath),
            (Some(Escalation), Some(Automatic))
        );
        assert!(!low.alert_owed(), "nothing changed for people");
        let recovered = low.changed(&change(false, Automatic), Utc::now()).unwrap();
        assert_eq!(
            (recovered.cause, recovered.beneath),
            (Some(Escalation), None)
        );
        // Over an automatic pause: the recovery does not lift the halt either.
        let over = halted(
            &apply(&TransferPause::default(), true, Automatic),
            "alert_a",
        );
        assert_eq!(over.beneath, Some(Automatic));
        let recovered = over.changed(&change(false, Automatic), Utc::now()).unwrap();
        assert_eq!(
            (recovered.cause, recovered.beneath),
            (Some(Escalation), None)
        );
    }

    #[test]
    fn notifications_never_lifts_and_an_admins_pause_does_not_replace_a_halt() {
        let halt = halted(&TransferPause::default(), "alert_a");
        let mut unhalt = halt_change_lifting();
        assert_eq!(halt.changed(&unhalt, Utc::now()), None);
        unhalt.paused = true;
        unhalt.cause = Manual;
        let under = halt.changed(&unhalt, Utc::now()).unwrap();
        assert_eq!(
            (under.cause, under.beneath),
            (Some(Escalation), Some(Manual)),
            "still the halt, the admin's pause beneath it"
        );
        assert_eq!(under.changed(&unhalt, Utc::now()), None, "once");
    }

    #[test]
    fn lifting_a_halt_leaves_the_pause_it_covered() {
        let lift = PauseChange {
            paused: false,
            cause: Manual,
            reason: "reviewed with finance".to_owned(),
            actor: "admin:lead".to_owned(),
        };
        // Halted over the balance's pause (or with a low balance found under it): lifting the
        // halt leaves the balance's pause; a second resume is the admin's override.
        for before in [
            halted(&apply(&TransferPause::default(), true, Automatic), "a"),
            apply(&halted(&TransferPause::default(), "a"), true, Automatic),
        ] {
            let lifted = before.changed(&lift, Utc::now()).unwrap();
            assert_eq!((lifted.cause, lifted.beneath), (Some(Automatic), None));
            assert_eq!(lifted.changed_by, "admin:lead");
            assert!(lifted.alert_owed());
            let resumed = lifted.changed(&lift, Utc::now()).unwrap();
            assert!(!resumed.paused() && resumed.overridden);
        }
        // Over an admin's pause: the admin's pause stays.
        let manual = halted(&apply(&TransferPause::default(), true, Manual), "a");
        assert_eq!(
            manual.changed(&lift, Utc::now()).unwrap().cause,
            Some(Manual)
        );
        // Over nothing, or after the balance recovered under it: transfers run.
        let recovered = apply(
            &halted(&apply(&TransferPause::default(), true, Automatic), "a"),
            false,
            Automatic,
        );
        assert!(!recovered.changed(&lift, Utc::now()).unwrap().paused());
    }

    fn halt_change_lifting() -> PauseChange {
        PauseChange {
            paused: false,
            ..halt("alert_a")
        }
    }

    #[test]
    fn only_an_admin_lifts_a_halt_and_a_retried_halt_does_not_return() {
        let halt = halted(&TransferPause::default(), "alert_a").alerted();
        let lifted = halt
            .changed(
                &PauseChange {
                    paused: false,
                    cause: Manual,
                    reason: "disputes reviewed with finance".to_owned(),
                    actor: "admin:lead".to_owned(),
                },
                Utc::now(),
            )
            .unwrap();
        assert!(!lifted.paused());
        assert_eq!(lifted.reason, "disputes reviewed with finance");
        assert_eq!(lifted.changed_by, "admin:lead");
        assert!(lifted.alert_owed(), "the resume is recorded");
        assert_eq!(lifted.alert().kind, "payout_transfers_resumed");
        // The halt request retried (its answer was lost): not halted again.
        assert_eq!(lifted.changed(&halt_change("alert_a"), Utc::now()), None);
        // A new level-3 alert halts again.
        assert_eq!(halted(&lifted, "alert_b").cause, Some(Escalation));
    }

    fn halt_change(alert: &str) -> PauseChange {
        halt(alert)
    }

    #[test]
    fn lifting_a_halt_takes_notes() {
        let halt = halted(&TransferPause::default(), "alert_a");
        let blank = PauseChange {
            paused: false,
            cause: Manual,
            reason: " ".to_owned(),
            actor: "admin:lead".to_owned(),
        };
        assert_eq!(halt.changed(&blank, Utc::now()), None);
        // Other changes without a reason get the old default text.
        let paused = TransferPause::default()
            .changed(
                &PauseChange {
                    paused: true,
                    ..blank.clone()
                },
                Utc::now(),
            )
            .unwrap();
        assert_eq!(paused.reason, "paused by an admin");
        assert_eq!(
            paused.changed(&blank, Utc::now()).unwrap().reason,
            "resumed by an admin"
        );
    }

    #[test]
    fn a_second_alert_under_a_halt_is_remembered_and_keeps_the_first_reason() {
        let first = halted(&TransferPause::default(), "alert_a").alerted();
        let second = halted(&first, "alert_b");
        assert_eq!(second.reason, "escalation: alert_a");
        assert_eq!(second.escalations, ["alert_a", "alert_b"]);
        assert!(!second.alert_owed(), "nothing changed for people");
        assert_eq!(second.changed(&halt("alert_b"), Utc::now()), None);
    }

    #[test]
    fn a_halt_needs_an_alert_id_in_its_reason() {
        let mut bad = halt("x");
        bad.reason = "because".to_owned();
        assert_eq!(TransferPause::default().changed(&bad, Utc::now()), None);
        assert_eq!(escalation_alert("escalation: alert_1"), Some("alert_1"));
        assert_eq!(escalation_alert("escalation: "), None);
    }

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
