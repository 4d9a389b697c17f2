//! What a transfer pause, and above all a level-3 escalation halt, must mean, watched where
//! it matters: at the pause store (who lifts a halt), at the payout store (a pause is not a
//! failure, not a try) and at Stripe (no money moves for an attempt that saw a pause).
//!
//! The pause is checked where money moves: a transfer attempt reads it first, and an attempt
//! that read it before a halt was applied may still send its request (the request is on its
//! way; Stripe may execute it after the halt). That is the one race the pause allows, and the
//! sound rule is about the attempt, not the clock: **no transfer is made at Stripe by an
//! attempt whose own reading of the pause (its start) fell while a halt (or any pause) was
//! applied**. Each task's last reading is recorded from the store's state at the instant of
//! the read, not from what the code made of it, so a code path that ignores a cause, or
//! sends without reading, is caught.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use payouts_payouts::pause::{PauseCause, TransferPause};
use payouts_payouts::payout::{Payout, PayoutStatus};

use crate::executor::TaskId;

#[derive(Default)]
struct State {
    /// The pause as each task last read it (its cause, the document's version).
    reads: BTreeMap<TaskId, (Option<PauseCause>, i64)>,
    violations: Vec<String>,
    /// The pause's cause in the store now.
    now: Option<PauseCause>,
    /// Tasks that carry an admin's resume without notes.
    without_notes: std::collections::BTreeSet<TaskId>,
    /// What happened, for the report and the fault-coverage test.
    counts: BTreeMap<&'static str, u64>,
}

/// Shared by the stores, the simulated Stripe and the invariant checks.
#[derive(Clone, Default)]
pub struct PauseWatch {
    state: Arc<Mutex<State>>,
}

fn cause(cause: Option<PauseCause>) -> &'static str {
    cause.map_or("running", PauseCause::as_str)
}

impl PauseWatch {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn count(&self, what: &'static str) {
        *self.lock().counts.entry(what).or_default() += 1;
    }

    fn violation(&self, problem: String) {
        self.lock().violations.push(problem);
    }

    /// `task` read the pause as it stood in the store.
    pub fn read(&self, task: Option<TaskId>, pause: &TransferPause) {
        if let Some(task) = task {
            self.lock().reads.insert(task, (pause.cause, pause.version));
        }
    }

    /// `task` carries an admin's resume without notes (it must not lift a halt).
    pub fn resume_without_notes(&self, task: Option<TaskId>) {
        if let Some(task) = task {
            self.lock().without_notes.insert(task);
        }
    }

    /// `task` changed the pause document from `before` to `after` in the store. A halt is
    /// lifted only by an admin, with notes, and is never replaced by another cause than the
    /// pause it covered (which lifting it leaves in force).
    pub fn changed(&self, task: Option<TaskId>, before: &TransferPause, after: &TransferPause) {
        self.lock().now = after.cause;
        let halted = |p: &TransferPause| p.cause == Some(PauseCause::Escalation);
        if !halted(before) && halted(after) {
            self.count("escalation halt applied");
        }
        if halted(before) && !halted(after) {
            self.count("escalation halt lifted");
            if after.cause != before.beneath {
                self.violation(format!(
                    "the escalation halt ({}) was replaced by a {} pause by {} (version {}), \
                     not by the {} pause it covered",
                    before.reason,
                    cause(after.cause),
                    after.changed_by,
                    after.version,
                    cause(before.beneath)
                ));
            } else if !after.changed_by.starts_with("admin:")
                || after.reason.trim().is_empty()
                || task.is_some_and(|task| self.lock().without_notes.contains(&task))
            {
                self.violation(format!(
                    "the escalation halt ({}) was lifted by {:?}, recorded reason {:?} \
                     (version {}), by a request {}: only an admin's resume with notes lifts a \
                     halt",
                    before.reason,
                    after.changed_by,
                    after.reason,
                    after.version,
                    if task.is_some_and(|task| self.lock().without_notes.contains(&task)) {
                        "without notes"
                    } else {
                        "with notes"
                    }
                ));
            }
        }
        if halted(before) && halted(after) && after.escalations.len() > before.escalations.len() {
            self.count("escalation halt repeated under a halt");
        }
    }

    /// `task` wrote `after` over `before`. A payout that waits because of a pause is not
    /// failed, tried or claimed by an attempt that read the pause on.
    pub fn payout_written(&self, task: Option<TaskId>, before: &Payout, after: &Payout) {
        if before.status != PayoutStatus::Pending {
            return;
        }
        let Some(task) = task else { return };
        let Some((Some(paused), version)) = self.lock().reads.get(&task).copied() else {
            return;
        };
        let what = if after.status == PayoutStatus::Failed {
            "failed"
        } else if after.attempt > before.attempt {
            "tried again"
        } else if after.claims > before.claims {
            "claimed for a transfer"
        } else {
            return;
        };
        self.violation(format!(
            "payout {} was {what} ({} -> {}, attempt {} -> {}) by task {task}, whose attempt \
             read the transfer pause as {} (version {version}): a pause keeps payouts pending",
            after.id,
            before.status.as_str(),
            after.status.as_str(),
            before.attempt,
            after.attempt,
            paused.as_str(),
        ));
    }

    /// Stripe made `transfer` for a request that `task` sent under `key`.
    pub fn transfer_made(&self, task: Option<TaskId>, transfer: &str, key: &str) {
        self.count("transfer made");
        let read = task.and_then(|task| self.lock().reads.get(&task).copied());
        match read {
            Some((None, _)) => {
                // The race the pause allows: the attempt started before the halt, its
                // request arrived after it.
                if self.lock().now == Some(PauseCause::Escalation) {
                    self.count("transfer made under a halt by an attempt started before it");
                }
            }
            Some((Some(paused), version)) => self.violation(format!(
                "Stripe made {transfer} under {key} for an attempt (task {}) that started while \
                 transfers were paused ({}, pause version {version})",
                task.unwrap_or_default(),
                paused.as_str()
            )),
            None => self.violation(format!(
                "Stripe made {transfer} under {key} for a task ({task:?}) that never read the \
                 transfer pause"
            )),
        }
    }

    /// Every rule broken so far (empty: none).
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.lock().counts.clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use chrono::{Duration, Utc};
    use payouts_payouts::pause::{PauseChange, escalation_reason};
    use payouts_runtime::Money;

    fn halted() -> TransferPause {
        TransferPause::default()
            .changed(
                &PauseChange {
                    paused: true,
                    cause: PauseCause::Escalation,
                    reason: escalation_reason("alert_1"),
                    actor: "notifications".to_owned(),
                },
                Utc::now(),
            )
            .unwrap()
    }

    fn lifted(by: &str, reason: &str) -> TransferPause {
        TransferPause {
            cause: None,
            changed_by: by.to_owned(),
            reason: reason.to_owned(),
            ..halted()
        }
    }

    #[test]
    fn a_transfer_for_an_attempt_that_read_a_pause_or_none_is_a_violation() {
        let watch = PauseWatch::default();
        watch.read(Some(1), &TransferPause::default());
        watch.changed(Some(9), &TransferPause::default(), &halted());
        // Started before the halt, arrived after it: the race the pause allows.
        watch.transfer_made(Some(1), "tr_1", "key_1");
        assert!(watch.violations().is_empty());
        assert_eq!(
            watch.counts()["transfer made under a halt by an attempt started before it"],
            1
        );
        watch.read(Some(2), &halted());
        watch.transfer_made(Some(2), "tr_2", "key_2");
        watch.transfer_made(Some(3), "tr_3", "key_3");
        let violations = watch.violations();
        assert_eq!(violations.len(), 2, "{violations:?}");
        assert!(violations[0].contains("tr_2") && violations[0].contains("escalation"));
        assert!(violations[1].contains("never read"));
    }

    #[test]
    fn a_halt_is_lifted_only_by_an_admin_with_notes_and_never_replaced() {
        let watch = PauseWatch::default();
        watch.changed(Some(1), &halted(), &lifted("admin:lead", "checked"));
        assert!(watch.violations().is_empty());
        watch.changed(Some(2), &halted(), &lifted("balance", "recovered"));
        watch.resume_without_notes(Some(3));
        watch.changed(
            Some(3),
            &halted(),
            &lifted("admin:lead", "resumed by an admin"),
        );
        let manual = TransferPause {
            cause: Some(PauseCause::Manual),
            ..lifted("admin:lead", "mine")
        };
        watch.changed(Some(4), &halted(), &manual);
        let violations = watch.violations();
        assert_eq!(violations.len(), 3, "{violations:?}");
        assert!(violations[1].contains("without notes"));
        assert!(violations[2].contains("replaced"));
    }

    #[test]
    fn a_pending_payout_failed_tried_or_claimed_under_a_pause_is_a_violation() {
        let now = Utc::now();
        let mut pending = Payout::requested(
            "payout_1".to_owned(),
            "user_1",
            Money::usd(1_000),
            "key",
            "acct_1",
            now,
            Duration::minutes(1),
        );
        pending.status = PayoutStatus::Pending;
        let watch = PauseWatch::default();
        watch.read(Some(1), &TransferPause::default());
        let claimed = Payout {
            claims: pending.claims + 1,
            ..pending.clone()
        };
        watch.payout_written(Some(1), &pending, &claimed);
        assert!(watch.violations().is_empty(), "a running pause: fine");
        watch.read(Some(2), &halted());
        let failed = Payout {
            status: PayoutStatus::Failed,
            ..pending.clone()
        };
        watch.payout_written(Some(2), &pending, &failed);
        watch.payout_written(Some(2), &pending, &claimed);
        let violations = watch.violations();
        assert_eq!(violations.len(), 2, "{violations:?}");
        assert!(violations[0].contains("was failed"));
        assert!(violations[1].contains("claimed"));
    }
}
