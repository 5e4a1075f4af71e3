//! The worker process: a producer per kind leases jobs, apalis runs them, one
//! completer writes outcomes, and maintenance loops renew leases, rescue the jobs of
//! dead workers and prune old rows.

mod backend;
mod job;
mod leases;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use apalis_core::worker::builder::WorkerBuilder;
use futures_util::FutureExt;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

pub use job::{JobContext, JobHandler, Outcome, Registry, StopReason};

use crate::config::Settings;
use crate::queue::{
    self, Completer, Heartbeat, LeasedJob, Listener, RetryPacing, Wake, Write, WriteResult,
};
use backend::LeasedJobs;
use job::{OutcomeKind, StopSignal};
use leases::{KindSlot, Leases};

/// How long a handler has to return after it was asked to stop (cancelled, lease
/// lost, shutdown grace over) before its future is dropped.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("no handler for job kind {0:?} (configured in worker.kinds)")]
    UnknownKind(String),
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
}

/// A configured worker, ready to run.
pub struct Worker {
    settings: Settings,
    pool: PgPool,
    registry: Registry,
    id: Arc<str>,
}

/// What a worker did, for logs and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunSummary {
    pub handed_back: usize,
}

struct Shared {
    settings: Settings,
    /// For handlers.
    pool: PgPool,
    /// For the queue's bookkeeping only.
    queue_pool: PgPool,
    id: Arc<str>,
    leases: Leases,
    completer: Completer,
    /// Set at shutdown: jobs still waiting in a channel go back unstarted.
    draining: AtomicBool,
}

impl Worker {
    pub fn new(settings: Settings, pool: PgPool, registry: Registry) -> Self {
        let id: Arc<str> = if settings.worker.id.is_empty() {
            default_worker_id().into()
        } else {
            settings.worker.id.as_str().into()
        };
        Self {
            settings,
            pool,
            registry,
            id,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs until `shutdown` fires, then drains: stop leasing, let running jobs
    /// finish within `worker.shutdown_grace_ms`, hand back the rest.
    pub async fn run(self, shutdown: CancellationToken) -> Result<RunSummary, WorkerError> {
        let kinds = self.settings.worker.kinds.clone();
        for kind in &kinds {
            if self.registry.get(kind).is_none() {
                return Err(WorkerError::UnknownKind(kind.clone()));
            }
        }
        if self.settings.worker.migrate_on_start {
            migrate_with_retry(&self.pool, &self.settings, &shutdown).await?;
        }
        let w = &self.settings.worker;
        // The queue's own bookkeeping gets its own connections, so handlers busy with
        // the database can never starve the heartbeat into losing leases: the lease
        // streams of every kind, LISTEN, two completion writers, heartbeat, rescue,
        // retention.
        let queue_pool = PgPoolOptions::new()
            .max_connections(kinds.len() as u32 * w.lease_streams + 6)
            .acquire_timeout(Duration::from_millis(
                self.settings.database.acquire_timeout_ms,
            ))
            .connect_lazy_with(self.pool.connect_options().as_ref().clone());
        let (completer, completer_task) = Completer::spawn(
            queue_pool.clone(),
            RetryPacing {
                min: Duration::from_millis(w.reconnect_min_ms),
                max: Duration::from_millis(w.reconnect_max_ms),
                drain_deadline: w.shutdown_grace(),
            },
        );
        let shared = Arc::new(Shared {
            settings: self.settings.clone(),
            pool: self.pool.clone(),
            queue_pool,
            id: self.id.clone(),
            leases: Leases::default(),
            completer,
            draining: AtomicBool::new(false),
        });
        let wake = Wake::new(kinds.iter().map(String::as_str));
        let stop_leasing = CancellationToken::new();
        let maintenance = CancellationToken::new();
        tracing::info!(worker = %self.id, kinds = ?kinds, "worker started");

        let mut background = JoinSet::new();
        background.spawn(listen(shared.clone(), wake.clone(), maintenance.clone()));
        background.spawn(heartbeat(shared.clone(), maintenance.clone()));
        background.spawn(rescue(shared.clone(), wake.clone(), maintenance.clone()));
        background.spawn(retention(shared.clone(), maintenance.clone()));

        let mut runners = JoinSet::new();
        for kind in &kinds {
            let Some(handler) = self.registry.get(kind).cloned() else {
                continue;
            };
            let capacity = self.settings.concurrency(kind);
            let slot = Arc::new(KindSlot::new(capacity));
            let (tx, rx) = mpsc::channel(capacity);
            let signal = wake.signal(kind).unwrap_or_default();
            for _ in 0..self.settings.worker.lease_streams {
                runners.spawn(produce(
                    shared.clone(),
                    kind.clone(),
                    slot.clone(),
                    tx.clone(),
                    signal.clone(),
                    stop_leasing.clone(),
                ));
            }
            let service = JobService {
                shared: shared.clone(),
                handler,
                slot,
            };
            let apalis_worker = WorkerBuilder::new(format!("{}/{kind}", self.id))
                .backend(LeasedJobs::new(rx))
                .build(service);
            let stopped = stop_leasing.clone();
            let stop_signal = async move {
                stopped.cancelled().await;
                Ok::<(), apalis_core::error::WorkerError>(())
            };
            runners.spawn(async move {
                if let Err(e) = apalis_worker.run_until(stop_signal).await {
                    tracing::error!(error = %e, "apalis worker stopped with an error");
                }
            });
        }

        shutdown.cancelled().await;
        tracing::info!(worker = %self.id, "shutting down: no new leases; waiting for running jobs");
        stop_leasing.cancel();
        shared.draining.store(true, Ordering::SeqCst);
        let grace = self.settings.worker.shutdown_grace();
        let finished_in_grace = tokio::time::timeout(grace, drain(&mut runners))
            .await
            .is_ok();
        if !finished_in_grace {
            let running = shared.leases.stop_all(StopReason::Shutdown);
            tracing::warn!(
                running,
                "shutdown grace over: stopping running jobs and handing them back"
            );
            let _ = tokio::time::timeout(STOP_GRACE * 2, drain(&mut runners)).await;
            runners.abort_all();
        }
        // Whatever is still leased and has no outcome with the completer never reached
        // a handler (back to the queue as it was), or its handler was dropped (back, and
        // the next attempt must find out what it did). Not awaited one by
        // one, so a database that stays away cannot hold the exit past the deadline.
        let leftover = shared.leases.take_unsubmitted();
        let handed_back = shared.leases.handed_back();
        for &(lease, started) in &leftover {
            let _reply = shared
                .completer
                .submit(lease, Write::HandBack { recover: started }, None)
                .await;
        }
        maintenance.cancel();
        while background.join_next().await.is_some() {}
        drop(shared);
        let _ = completer_task.await;
        tracing::info!(worker = %self.id, handed_back = handed_back + leftover.len(), "worker stopped");
        Ok(RunSummary {
            handed_back: handed_back + leftover.len(),
        })
    }
}

/// The service apalis drives: runs one leased job to its recorded outcome.
#[derive(Clone)]
struct JobService {
    shared: Arc<Shared>,
    handler: Arc<dyn JobHandler>,
    slot: Arc<KindSlot>,
}

impl tower_service::Service<apalis_core::task::Task<LeasedJob>> for JobService {
    type Response = ();
    type Error = std::convert::Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<(), std::convert::Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: apalis_core::task::Task<LeasedJob>) -> Self::Future {
        let run = execute(
            self.shared.clone(),
            self.handler.clone(),
            self.slot.clone(),
            task.args,
        );
        Box::pin(async move {
            run.await;
            Ok(())
        })
    }
}

async fn drain(set: &mut JoinSet<()>) {
    while set.join_next().await.is_some() {}
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "worker".to_owned());
    format!("{host}-{}", std::process::id())
}

async fn migrate_with_retry(
    pool: &PgPool,
    settings: &Settings,
    shutdown: &CancellationToken,
) -> Result<(), WorkerError> {
    let mut delay = Duration::from_millis(settings.worker.reconnect_min_ms);
    loop {
        match queue::migrate(pool).await {
            Ok(()) => return Ok(()),
            Err(queue::QueueError::Migrate(sqlx::migrate::MigrateError::Execute(e)))
            | Err(queue::QueueError::Database(e))
                if queue::is_transient(&e) =>
            {
                tracing::warn!(error = %e, retry_in = ?delay, "database not reachable; waiting to migrate");
            }
            Err(e) => return Err(e.into()),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_millis(settings.worker.reconnect_max_ms));
    }
}

/// Leases jobs of one kind while there is room, and feeds them to apalis. A kind has
/// `worker.lease_streams` of these, so one lease call can run in the database while
/// the next is sent: room is reserved before each call, never overcommitted.
async fn produce(
    shared: Arc<Shared>,
    kind: String,
    slot: Arc<KindSlot>,
    tx: mpsc::Sender<LeasedJob>,
    wake: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
) {
    let w = &shared.settings.worker;
    let mut delay = Duration::from_millis(w.reconnect_min_ms);
    let mut failing = false;
    // Lease calls that failed: if one committed and only its reply was lost, its jobs
    // are leased to nobody. Given back before the next lease (a failed call gave its
    // room back, so the next iteration never waits for room first).
    let mut unreceived: Vec<Uuid> = Vec::new();
    while !stop.is_cancelled() {
        let want = slot.reserve(w.lease_batch as usize);
        if want == 0 {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = slot.freed() => continue,
            }
        }
        let leased = lease_batch(&shared, &kind, want as u32, &mut unreceived).await;
        let got = leased.as_ref().map_or(0, Vec::len);
        if got < want {
            slot.release(want - got);
        }
        match leased {
            Ok(jobs) => {
                if failing {
                    tracing::info!(kind, "database reachable again; leasing resumed");
                    failing = false;
                }
                delay = Duration::from_millis(w.reconnect_min_ms);
                // Every job is held before any is sent: if apalis is gone (shutdown),
                // the ones never sent are handed back with the rest, not left to expire.
                for job in &jobs {
                    shared.leases.insert(job);
                }
                for job in jobs {
                    if tx.send(job).await.is_err() {
                        return;
                    }
                }
                if got == want {
                    if w.lease_streams > 1 {
                        wake.notify_one(); // more may be ready: bring a sibling in
                    }
                    continue;
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(w.poll_interval()) => {}
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(kind, error = %e, "leasing failed; retrying with backoff");
                    failing = true;
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_millis(w.reconnect_max_ms));
            }
        }
    }
}

/// Leases up to `want` jobs of `kind` under a fresh batch token, after giving back the
/// batches of earlier calls that failed (see [`queue::release_batch`]). A call that
/// fails leaves its token in `unreceived` for the next one.
async fn lease_batch(
    shared: &Shared,
    kind: &str,
    want: u32,
    unreceived: &mut Vec<Uuid>,
) -> Result<Vec<LeasedJob>, sqlx::Error> {
    while let Some(&batch) = unreceived.last() {
        let released = queue::release_batch(&shared.queue_pool, batch).await?;
        if released > 0 {
            tracing::info!(
                kind,
                released,
                "gave back jobs leased by a call whose reply was lost"
            );
        }
        unreceived.pop();
    }
    let w = &shared.settings.worker;
    let batch = Uuid::new_v4();
    let leased =
        queue::lease_jobs(&shared.queue_pool, kind, want, &shared.id, w.lease(), batch).await;
    if leased.is_err() {
        unreceived.push(batch);
    }
    leased
}

/// Runs one leased job and records its outcome. Never panics, never returns early
/// without writing or handing back.
async fn execute(
    shared: Arc<Shared>,
    handler: Arc<dyn JobHandler>,
    slot: Arc<KindSlot>,
    job: LeasedJob,
) {
    let lease = job.lease();
    let attempts = (job.attempts, job.max_attempts);
    let span = tracing::info_span!("job", id = job.id, kind = %job.kind, attempt = job.attempts);
    async move {
        let Some(stop) = shared.leases.signal(lease) else {
            slot.release(1);
            return;
        };
        if shared.draining.load(Ordering::SeqCst) {
            stop.stop(StopReason::Shutdown);
        }
        // Stopped while it waited (shutdown, cancelled, lease lost): never start it.
        let outcome = if stop.reason().is_some() {
            Outcome::stopped()
        } else {
            let ctx = JobContext {
                job,
                pool: shared.pool.clone(),
                queue_pool: shared.queue_pool.clone(),
                worker_id: shared.id.clone(),
                stop: stop.clone(),
            };
            shared.leases.started(lease);
            let outcome = run_handler(handler, ctx, &stop).await;
            tracing::debug!(outcome = ?outcome.kind, "attempt ended");
            outcome
        };
        // The handler is done: its slot may take the next job while this outcome is
        // written, so leasing and completing overlap.
        slot.release(1);
        let write = to_write(&shared, &outcome, stop.reason(), attempts);
        let result = match write {
            Some(write) => {
                if matches!(write, Write::HandBack { .. }) {
                    shared.leases.count_handed_back();
                }
                let reply = shared.completer.submit(lease, write, outcome.hook).await;
                // With the completer now: a shutdown must not hand it back as well.
                shared.leases.submitted(lease);
                reply.await.unwrap_or(WriteResult::Abandoned)
            }
            None => WriteResult::LeaseLost,
        };
        if result == WriteResult::LeaseLost {
            tracing::warn!(
                "lease lost: this attempt's outcome was discarded (another worker owns the job)"
            );
        }
        shared.leases.remove(lease);
    }
    .instrument(span)
    .await
}

/// Runs the handler, catching panics and enforcing the stop grace.
async fn run_handler(handler: Arc<dyn JobHandler>, ctx: JobContext, stop: &StopSignal) -> Outcome {
    let run = std::panic::AssertUnwindSafe(handler.run(ctx)).catch_unwind();
    tokio::pin!(run);
    let caught = tokio::select! {
        r = &mut run => r,
        _ = async { stop.stopped().await; tokio::time::sleep(STOP_GRACE).await } => {
            tracing::warn!("handler ignored the stop request; dropped");
            return Outcome::abandoned();
        }
    };
    caught.unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        tracing::error!(panic = %msg, "handler panicked");
        Outcome::failed(format!("internal error: the job handler panicked: {msg}"))
    })
}

/// Turns an outcome into the row write, applying the retry policy.
fn to_write(
    shared: &Shared,
    outcome: &Outcome,
    stop: Option<StopReason>,
    attempts: (i32, i32),
) -> Option<Write> {
    use crate::queue::JobStatus;
    let (attempt, max_attempts) = attempts;
    let w = &shared.settings.worker;
    let record = |status, error: Option<String>| Write::Record {
        status,
        result: outcome.result.clone(),
        error,
        run_at: None,
    };
    match outcome.kind {
        OutcomeKind::Stopped | OutcomeKind::Abandoned => match stop {
            // A dropped handler may have left outside effects half done: the next
            // attempt must find out what happened, as after a lost worker.
            Some(StopReason::Shutdown) => Some(Write::HandBack {
                recover: outcome.kind == OutcomeKind::Abandoned,
            }),
            Some(StopReason::LeaseLost) => None,
            Some(StopReason::Cancelled) => Some(record(
                JobStatus::Cancelled,
                Some("cancelled by the application while it ran".to_owned()),
            )),
            None => Some(record(
                JobStatus::FinishedWithError,
                Some("internal error: the handler stopped without being asked to".to_owned()),
            )),
        },
        OutcomeKind::Finished => Some(record(JobStatus::Finished, None)),
        OutcomeKind::Failed | OutcomeKind::TimedOut => {
            let error = outcome.error.clone();
            if outcome.retryable && attempt < max_attempts && stop != Some(StopReason::Cancelled) {
                let wait = queue::backoff(
                    attempt,
                    Duration::from_millis(w.retry_base_ms),
                    Duration::from_millis(w.retry_max_ms),
                );
                let run_at = chrono::Utc::now()
                    + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::zero());
                return Some(Write::Record {
                    status: JobStatus::Queued,
                    result: outcome.result.clone(),
                    error: error.map(|e| format!("attempt {attempt} of {max_attempts}: {e}")),
                    run_at: Some(run_at),
                });
            }
            let status = if outcome.kind == OutcomeKind::TimedOut {
                JobStatus::Timedout
            } else {
                JobStatus::FinishedWithError
            };
            Some(record(status, error))
        }
    }
}

/// Renews every lease this worker holds, and learns of cancellations and losses.
///
/// While the database is away it retries quickly; once the leases may have run out
/// (three quarters of `lease_ms` without a successful beat) it stops every running job:
/// another worker may rescue them as soon as the database is back, and two attempts
/// must never run at once.
async fn heartbeat(shared: Arc<Shared>, stop: CancellationToken) {
    let w = &shared.settings.worker;
    let every = w.heartbeat();
    let retry = Duration::from_millis(w.reconnect_min_ms).min(every);
    let mut last_ok = tokio::time::Instant::now();
    let mut wait = every;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let held = shared.leases.snapshot();
        match Heartbeat::beat(&shared.queue_pool, &held, w.lease()).await {
            Ok(beat) => {
                last_ok = tokio::time::Instant::now();
                wait = every;
                for id in beat.cancelled {
                    shared.leases.stop_job(id, StopReason::Cancelled);
                }
                for lease in beat.lost {
                    shared.leases.stop_lease(lease, StopReason::LeaseLost);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, held = held.len(), "heartbeat failed");
                wait = retry;
                if last_ok.elapsed() > w.lease().mul_f64(0.75) {
                    let stopped = shared.leases.stop_all(StopReason::LeaseLost);
                    if stopped > 0 {
                        tracing::error!(
                            stopped,
                            "leases could not be renewed in time; stopping their jobs"
                        );
                    }
                }
            }
        }
    }
}

async fn listen(shared: Arc<Shared>, wake: Wake, stop: CancellationToken) {
    let w = &shared.settings.worker;
    let on_cancel = {
        let shared = shared.clone();
        move |id| shared.leases.stop_job(id, StopReason::Cancelled)
    };
    Listener::run(
        shared.queue_pool.clone(),
        wake,
        on_cancel,
        (
            Duration::from_millis(w.reconnect_min_ms),
            Duration::from_millis(w.reconnect_max_ms),
        ),
        stop,
    )
    .await;
}

/// Takes back the jobs of workers that stopped renewing their leases.
///
/// After this worker lost the database, it waits one full lease before rescuing again:
/// live workers cut off by the same outage need that long to renew, and rescuing first
/// would start their jobs a second time.
async fn rescue(shared: Arc<Shared>, wake: Wake, stop: CancellationToken) {
    let w = &shared.settings.worker;
    let mut tick = tokio::time::interval(w.rescue_interval());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Healthy from the start: the jobs of workers that died before we came are due.
    let mut healthy_since = tokio::time::Instant::now().checked_sub(w.lease());
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(since) = healthy_since else {
            if sqlx::query("SELECT 1")
                .execute(&shared.queue_pool)
                .await
                .is_ok()
            {
                tracing::info!(wait = ?w.lease(), "database back; rescuing again after one lease");
                healthy_since = Some(tokio::time::Instant::now());
            }
            continue;
        };
        if since.elapsed() < w.lease() {
            continue;
        }
        let base = Duration::from_millis(w.retry_base_ms);
        let max = Duration::from_millis(w.retry_max_ms);
        match queue::rescue_expired(&shared.queue_pool, base, max).await {
            Ok(rescued) => {
                for r in &rescued {
                    tracing::warn!(job = r.id, kind = %r.kind, status = %r.status, "rescued a job from a lost worker");
                    wake.kind(&r.kind);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "rescue failed");
                if queue::is_transient(&e) {
                    healthy_since = None;
                }
            }
        }
    }
}

async fn retention(shared: Arc<Shared>, stop: CancellationToken) {
    let r = &shared.settings.retention;
    if r.keep_hours == 0 {
        return;
    }
    let keep = Duration::from_secs(r.keep_hours * 3600);
    let mut tick = tokio::time::interval(Duration::from_millis(r.interval_ms.max(1000)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match queue::prune_finished(&shared.queue_pool, keep).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned old finished jobs"),
            Err(e) => tracing::warn!(error = %e, "retention failed"),
        }
    }
}
