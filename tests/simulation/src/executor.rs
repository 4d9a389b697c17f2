//! A cooperative executor in which the simulation, not tokio, decides what runs next.
//!
//! Every operation of the system under test (a request, a worker pass, a webhook delivery,
//! an admin's decision) is a *task*: a future polled by hand. Wherever the real code awaits
//! something that could be slow or fail in production (a store call, a call to another
//! service, a Stripe request), the simulation's stand-ins await a [`Gate::point`], which
//! parks the task. The scheduler then chooses, from its seeded generator, which parked task
//! to resume next, whether to start a new one, or whether to crash one: dropping a parked
//! task is a process dying at that await point, its in-flight state gone.
//!
//! Nothing here sleeps or reads a clock, and tasks are kept in id order, so the same seed
//! gives the same interleaving, byte for byte.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// A task's id: the order it was started in.
pub type TaskId = u64;

/// What a task produces: a line for the trace.
pub type TaskFuture = Pin<Box<dyn Future<Output = String> + Send>>;

#[derive(Default)]
struct GateState {
    /// The task being polled right now (None outside the executor: points pass at once).
    current: Option<TaskId>,
    /// Parked tasks and the point they wait at.
    parked: BTreeMap<TaskId, &'static str>,
    /// Tasks the scheduler released since they parked.
    released: BTreeSet<TaskId>,
}

/// Where tasks park. Shared by every stand-in of the world.
#[derive(Clone, Default)]
pub struct Gate {
    state: Arc<Mutex<GateState>>,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The task being polled right now (`None` outside the executor): whose call this is.
    pub fn current(&self) -> Option<TaskId> {
        self.lock().current
    }

    /// An await point: the task parks here until the scheduler resumes (or drops) it.
    pub fn point(&self, label: &'static str) -> Point {
        Point {
            gate: self.clone(),
            label,
            parked_as: None,
        }
    }
}

/// The future of an await point.
pub struct Point {
    gate: Gate,
    label: &'static str,
    parked_as: Option<TaskId>,
}

impl Future for Point {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        let gate = self.gate.clone();
        let mut state = gate.lock();
        match self.parked_as {
            None => {
                let Some(task) = state.current else {
                    return Poll::Ready(());
                };
                state.parked.insert(task, self.label);
                drop(state);
                self.parked_as = Some(task);
                Poll::Pending
            }
            Some(task) => {
                if state.released.remove(&task) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

struct Task {
    label: String,
    future: TaskFuture,
}

/// What polling a task led to.
pub enum Progress {
    /// The task finished with this trace line.
    Done(String),
    /// The task waits at this point.
    Parked(&'static str),
}

/// The executor: tasks in flight, in id order.
pub struct Executor {
    gate: Gate,
    tasks: BTreeMap<TaskId, Task>,
    next: TaskId,
}

impl Executor {
    pub fn new(gate: Gate) -> Self {
        Self {
            gate,
            tasks: BTreeMap::new(),
            next: 1,
        }
    }

    /// The tasks in flight (all parked between steps), in id order, with their labels.
    pub fn parked(&self) -> Vec<(TaskId, String, &'static str)> {
        let state = self.gate.lock();
        self.tasks
            .iter()
            .map(|(id, task)| {
                (
                    *id,
                    task.label.clone(),
                    state.parked.get(id).copied().unwrap_or("?"),
                )
            })
            .collect()
    }

    pub fn in_flight(&self) -> usize {
        self.tasks.len()
    }

    /// Starts a task and runs it to its first point (or to its end).
    pub fn start(&mut self, label: String, future: TaskFuture) -> (TaskId, Progress) {
        let id = self.next;
        self.next += 1;
        self.tasks.insert(id, Task { label, future });
        (id, self.drive(id))
    }

    /// Resumes a parked task up to its next point (or its end).
    pub fn resume(&mut self, id: TaskId) -> Progress {
        {
            let mut state = self.gate.lock();
            state.parked.remove(&id);
            state.released.insert(id);
        }
        self.drive(id)
    }

    /// Drops a parked task: the process running it died at that point.
    pub fn crash(&mut self, id: TaskId) -> Option<String> {
        let task = self.tasks.remove(&id)?;
        let mut state = self.gate.lock();
        state.parked.remove(&id);
        state.released.remove(&id);
        Some(task.label)
    }

    fn drive(&mut self, id: TaskId) -> Progress {
        let Some(task) = self.tasks.get_mut(&id) else {
            return Progress::Done("(no such task)".to_owned());
        };
        let mut cx = Context::from_waker(Waker::noop());
        // A task may return Pending without parking (tokio's yield_now, for one): it is
        // polled again, as a runtime would, until it parks at a point or ends.
        for _ in 0..10_000 {
            self.gate.lock().current = Some(id);
            let poll = task.future.as_mut().poll(&mut cx);
            self.gate.lock().current = None;
            match poll {
                Poll::Ready(line) => {
                    self.tasks.remove(&id);
                    return Progress::Done(line);
                }
                Poll::Pending => {
                    if let Some(label) = self.gate.lock().parked.get(&id) {
                        return Progress::Parked(label);
                    }
                }
            }
        }
        panic!(
            "task {id} ({}) is blocked outside a simulation point",
            task.label
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_park_at_points_resume_in_the_chosen_order_and_can_be_dropped() {
        let gate = Gate::default();
        let mut executor = Executor::new(gate.clone());
        let log = Arc::new(Mutex::new(Vec::new()));
        let task = |name: &'static str| {
            let (gate, log) = (gate.clone(), Arc::clone(&log));
            Box::pin(async move {
                log.lock().unwrap().push(format!("{name} 1"));
                gate.point("a").await;
                log.lock().unwrap().push(format!("{name} 2"));
                gate.point("b").await;
                format!("{name} done")
            }) as TaskFuture
        };
        let (first, progress) = executor.start("first".to_owned(), task("first"));
        assert!(matches!(progress, Progress::Parked("a")));
        let (second, _) = executor.start("second".to_owned(), task("second"));
        assert!(matches!(executor.resume(second), Progress::Parked("b")));
        assert!(
            matches!(executor.resume(second), Progress::Done(ref line) if line == "second done")
        );
        assert_eq!(executor.crash(first).as_deref(), Some("first"));
        assert_eq!(executor.in_flight(), 0);
        assert_eq!(
            log.lock().unwrap().clone(),
            vec!["first 1", "second 1", "second 2"],
            "the dropped task never ran past its point"
        );
        // Outside the executor, points pass at once.
        let mut cx = Context::from_waker(Waker::noop());
        let mut point = std::pin::pin!(gate.point("setup"));
        assert!(point.as_mut().poll(&mut cx).is_ready());
    }
}
