//! Periodic jobs that one replica at a time runs (the webhook backfill, the reconciliation):
//! every replica runs the same loop; a run is claimed under a lease by versioned
//! compare-and-set on the job's document, and it carries a durable cursor from one run to
//! the next. A replica that dies mid-run leaves the job to another once its lease is over.
//!
//! A lease is for efficiency, not correctness: the jobs built on it are idempotent (a
//! backfilled event is deduplicated by its id, a reconciliation only reports and adopts what
//! Stripe shows), so a run that outlives its lease and overlaps another does no harm.
//!
//! Each service keeps its jobs in a collection of its own (`webhookJobs`, `payoutJobs`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use mongodb::bson::{self, doc};
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::error::{ErrorKind, ServiceError};
use crate::shutdown::Shutdown;
use crate::store::{from_bson_time, mongo_error, put_versioned, to_bson_time};

/// A job's stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    pub name: String,
    /// The replica holding (or that last held) the job.
    pub holder: String,
    /// Until when the holder's claim stands; `None` when no run is in progress.
    pub lease_until: Option<DateTime<Utc>>,
    /// When the last run finished.
    pub last_finished_at: Option<DateTime<Utc>>,
    /// Where the next run starts (the job decides what it means).
    pub cursor: Option<DateTime<Utc>>,
    pub version: i64,
}

impl JobState {
    /// The claim `holder` may make at `now`: none while another replica's lease stands or
    /// while the last run is more recent than `interval`.
    pub fn claim(
        existing: Option<&JobState>,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        interval: Duration,
        lease: Duration,
    ) -> Option<JobState> {
        if let Some(state) = existing {
            if state
                .lease_until
                .is_some_and(|until| until > now && state.holder != holder)
            {
                return None;
            }
            if state
                .last_finished_at
                .is_some_and(|finished| finished + interval > now)
            {
                return None;
            }
        }
        Some(JobState {
            name: name.to_owned(),
            holder: holder.to_owned(),
            lease_until: Some(now + lease),
            last_finished_at: existing.and_then(|state| state.last_finished_at),
            cursor: existing.and_then(|state| state.cursor),
            version: existing.map_or(0, |state| state.version) + 1,
        })
    }

    /// The run finished at `now`; the next one starts from `cursor`.
    pub fn finished(&self, now: DateTime<Utc>, cursor: Option<DateTime<Utc>>) -> JobState {
        JobState {
            lease_until: None,
            last_finished_at: Some(now),
            cursor: cursor.or(self.cursor),
            version: self.version + 1,
            ..self.clone()
        }
    }

    /// The run failed: the lease is given up so the next tick may try again, and neither the
    /// cursor nor the time of the last run moves.
    pub fn abandoned(&self) -> JobState {
        JobState {
            lease_until: None,
            version: self.version + 1,
            ..self.clone()
        }
    }
}

#[async_trait]
pub trait JobRepository: Send + Sync + 'static {
    async fn get(&self, name: &str) -> Result<Option<JobState>, ServiceError>;

    /// Stores `state` if the stored one is still at `expected_version` (0: none stored);
    /// Conflict otherwise.
    async fn put(&self, state: &JobState, expected_version: i64) -> Result<(), ServiceError>;
}

fn stale(state: &JobState) -> ServiceError {
    ServiceError::conflict(format!("job {} was claimed concurrently", state.name))
}

/// Embedded store.
#[derive(Debug, Default)]
pub struct MemoryJobs {
    jobs: Mutex<BTreeMap<String, JobState>>,
}

#[async_trait]
impl JobRepository for MemoryJobs {
    async fn get(&self, name: &str) -> Result<Option<JobState>, ServiceError> {
        let jobs = self
            .jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(jobs.get(name).cloned())
    }

    async fn put(&self, state: &JobState, expected_version: i64) -> Result<(), ServiceError> {
        let mut jobs = self
            .jobs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if jobs.get(&state.name).map_or(0, |stored| stored.version) != expected_version {
            return Err(stale(state));
        }
        jobs.insert(state.name.clone(), state.clone());
        Ok(())
    }
}

/// MongoDB store: one document per job in the owner's collection.
#[derive(Debug, Clone)]
pub struct MongoJobs {
    collection: mongodb::Collection<JobDocument>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobDocument {
    #[serde(rename = "_id")]
    id: String,
    holder: String,
    lease_until: Option<bson::DateTime>,
    last_finished_at: Option<bson::DateTime>,
    cursor: Option<bson::DateTime>,
    version: i64,
}

impl MongoJobs {
    pub fn open(database: &mongodb::Database, collection: &str) -> Self {
        Self {
            collection: database.collection(collection),
        }
    }
}

#[async_trait]
impl JobRepository for MongoJobs {
    async fn get(&self, name: &str) -> Result<Option<JobState>, ServiceError> {
        Ok(self
            .collection
            .find_one(doc! { "_id": name })
            .await
            .map_err(mongo_error)?
            .map(|d| JobState {
                name: d.id,
                holder: d.holder,
                lease_until: d.lease_until.map(from_bson_time),
                last_finished_at: d.last_finished_at.map(from_bson_time),
                cursor: d.cursor.map(from_bson_time),
                version: d.version,
            }))
    }

    async fn put(&self, state: &JobState, expected_version: i64) -> Result<(), ServiceError> {
        let document = JobDocument {
            id: state.name.clone(),
            holder: state.holder.clone(),
            lease_until: state.lease_until.map(to_bson_time),
            last_finished_at: state.last_finished_at.map(to_bson_time),
            cursor: state.cursor.map(to_bson_time),
            version: state.version,
        };
        if put_versioned(&self.collection, &state.name, document, expected_version).await? {
            Ok(())
        } else {
            Err(stale(state))
        }
    }
}

/// The repository of a service's jobs on its store.
pub fn open(store: &crate::Store, collection: &str) -> Arc<dyn JobRepository> {
    match store {
        crate::Store::Embedded => Arc::new(MemoryJobs::default()),
        crate::Store::Mongo(database) => Arc::new(MongoJobs::open(database, collection)),
    }
}

/// One run of a periodic job.
#[async_trait]
pub trait PeriodicJob: Send + Sync + 'static {
    /// Runs from `cursor` (the last run's, `None` the first time); the cursor the next run
    /// starts from. An error leaves the cursor where it was.
    async fn run_once(
        &self,
        cursor: Option<DateTime<Utc>>,
    ) -> Result<Option<DateTime<Utc>>, ServiceError>;
}

/// What one tick came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// This replica ran the job.
    Ran,
    /// Not due yet, or another replica holds it.
    Skipped,
    /// The run failed; the cursor did not move.
    Failed,
}

/// Runs a [`PeriodicJob`] every `interval` on one replica at a time.
pub struct Periodic {
    pub name: String,
    pub job: Arc<dyn PeriodicJob>,
    pub jobs: Arc<dyn JobRepository>,
    pub clock: Arc<dyn Clock>,
    /// This replica's name in the job's document.
    pub holder: String,
    pub interval: Duration,
    pub lease: Duration,
    /// How often an idle replica looks whether the job is due.
    pub poll: std::time::Duration,
    /// When this replica started: until [`STARTUP_GRACE`] has passed, a service the job
    /// needs that does not answer yet is expected (a fresh deployment starts every pod at
    /// once), logged at info rather than as a warning.
    pub started: std::time::Instant,
}

/// How long after its start a replica expects the services its jobs call to come up.
pub const STARTUP_GRACE: std::time::Duration = std::time::Duration::from_secs(120);

impl Periodic {
    /// Runs `job` every `interval` on one replica at a time, as a worker of `service` (its
    /// health turns NOT_SERVING should the loop die), its state in the service's `collection`.
    /// An idle replica looks at most every `poll_cap`.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        context: &crate::ServiceContext,
        service: crate::ServiceName,
        name: &'static str,
        job: Arc<dyn PeriodicJob>,
        collection: &str,
        interval: std::time::Duration,
        lease: Duration,
        poll_cap: std::time::Duration,
    ) {
        let periodic = Arc::new(Periodic {
            name: name.to_owned(),
            job,
            jobs: open(&context.store, collection),
            clock: Arc::clone(&context.clock),
            holder: context.ids.next("replica"),
            interval: Duration::from_std(interval).unwrap_or(Duration::days(1)),
            lease,
            poll: interval.min(poll_cap),
            started: std::time::Instant::now(),
        });
        context.spawn_worker(
            service.grpc_name(),
            name,
            periodic.run(context.shutdown.clone()),
        );
    }

    /// Claims the job if it is due and free, runs it, and records the result.
    pub async fn tick(&self) -> Result<Tick, ServiceError> {
        let existing = self.jobs.get(&self.name).await?;
        let Some(claimed) = JobState::claim(
            existing.as_ref(),
            &self.name,
            &self.holder,
            self.clock.now(),
            self.interval,
            self.lease,
        ) else {
            return Ok(Tick::Skipped);
        };
        match self
            .jobs
            .put(&claimed, existing.map_or(0, |state| state.version))
            .await
        {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::Conflict => return Ok(Tick::Skipped),
            Err(error) => return Err(error),
        }
        let (next, tick) = match self.job.run_once(claimed.cursor).await {
            Ok(cursor) => (claimed.finished(self.clock.now(), cursor), Tick::Ran),
            Err(error) => {
                if error.kind() == ErrorKind::Unavailable && self.started.elapsed() < STARTUP_GRACE
                {
                    tracing::info!(job = %self.name, %error, "periodic job waits for a service that is still starting; it runs again at the next tick");
                } else {
                    tracing::warn!(job = %self.name, %error, "periodic job failed; it runs again at the next tick");
                }
                (claimed.abandoned(), Tick::Failed)
            }
        };
        metrics::counter!("payouts_jobs_runs_total", "job" => self.name.clone(), "result" => match tick {
            Tick::Ran => "ran",
            Tick::Failed => "failed",
            Tick::Skipped => "skipped",
        })
        .increment(1);
        // A conflict here means the lease ran out and another replica took the job over:
        // its record stands.
        match self.jobs.put(&next, claimed.version).await {
            Ok(()) => Ok(tick),
            Err(error) if error.kind() == ErrorKind::Conflict => Ok(tick),
            Err(error) => Err(error),
        }
    }

    /// Ticks every `poll` until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let stop = shutdown.requested();
        tokio::pin!(stop);
        loop {
            if let Err(error) = self.tick().await {
                tracing::warn!(job = %self.name, %error, "periodic job not claimed");
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(self.poll) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default() + Duration::minutes(minutes)
    }

    #[test]
    fn one_replica_holds_a_job_until_it_finishes_or_its_lease_ends() {
        let (interval, lease) = (Duration::minutes(10), Duration::minutes(5));
        let first = JobState::claim(None, "job", "a", at(0), interval, lease).unwrap();
        assert_eq!(first.version, 1);
        assert_eq!(
            JobState::claim(Some(&first), "job", "b", at(1), interval, lease),
            None
        );
        // The holder dies: once its lease is over another replica takes the job, cursor and all.
        let taken = JobState::claim(Some(&first), "job", "b", at(6), interval, lease).unwrap();
        assert_eq!((taken.holder.as_str(), taken.version), ("b", 2));
        // Finished: not due again before the interval, whoever asks.
        let done = taken.finished(at(7), Some(at(3)));
        assert_eq!(done.cursor, Some(at(3)));
        assert_eq!(done.lease_until, None);
        for replica in ["a", "b"] {
            assert_eq!(
                JobState::claim(Some(&done), "job", replica, at(16), interval, lease),
                None
            );
        }
        let next = JobState::claim(Some(&done), "job", "a", at(17), interval, lease).unwrap();
        assert_eq!(next.cursor, Some(at(3)));
        // A failed run keeps the cursor and the last finish, and frees the job at once.
        let failed = next.abandoned();
        assert_eq!(
            (failed.cursor, failed.last_finished_at, failed.lease_until),
            (Some(at(3)), Some(at(7)), None)
        );
        // Without a new cursor, the old one stays.
        assert_eq!(next.finished(at(18), None).cursor, Some(at(3)));
    }

    struct Counting {
        runs: Mutex<Vec<Option<DateTime<Utc>>>>,
        fail: bool,
    }

    #[async_trait]
    impl PeriodicJob for Counting {
        async fn run_once(
            &self,
            cursor: Option<DateTime<Utc>>,
        ) -> Result<Option<DateTime<Utc>>, ServiceError> {
            self.runs.lock().unwrap().push(cursor);
            if self.fail {
                return Err(ServiceError::unavailable(
                    "stripe down",
                    anyhow::anyhow!("down"),
                ));
            }
            Ok(Some(at(100)))
        }
    }

    #[tokio::test]
    async fn two_replicas_run_a_due_job_once_and_a_failure_keeps_the_cursor() {
        let jobs: Arc<dyn JobRepository> = Arc::new(MemoryJobs::default());
        let clock = Arc::new(crate::clock::ManualClock::new(at(0)));
        let job = Arc::new(Counting {
            runs: Mutex::new(Vec::new()),
            fail: false,
        });
        let replica = |holder: &str, job: Arc<dyn PeriodicJob>| Periodic {
            name: "job".to_owned(),
            job,
            jobs: Arc::clone(&jobs),
            clock: Arc::clone(&clock) as Arc<dyn Clock>,
            holder: holder.to_owned(),
            interval: Duration::minutes(10),
            lease: Duration::minutes(5),
            poll: std::time::Duration::from_millis(1),
            started: std::time::Instant::now(),
        };
        let (a, b) = (replica("a", job.clone()), replica("b", job.clone()));
        assert_eq!(a.tick().await.unwrap(), Tick::Ran);
        assert_eq!(b.tick().await.unwrap(), Tick::Skipped);
        assert_eq!(job.runs.lock().unwrap().clone(), vec![None]);
        clock.advance(Duration::minutes(11));
        let failing = Arc::new(Counting {
            runs: Mutex::new(Vec::new()),
            fail: true,
        });
        assert_eq!(
            replica("b", failing.clone()).tick().await.unwrap(),
            Tick::Failed
        );
        assert_eq!(failing.runs.lock().unwrap().clone(), vec![Some(at(100))]);
        // Still due, and still from the same cursor.
        assert_eq!(a.tick().await.unwrap(), Tick::Ran);
        assert_eq!(job.runs.lock().unwrap().clone(), vec![None, Some(at(100))]);
    }
}
