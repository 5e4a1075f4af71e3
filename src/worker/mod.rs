//! The worker process: a producer per kind leases jobs, apalis runs them through the
//! executor, one completer writes outcomes, and background services renew leases
//! (heartbeat), listen for wake-ups, rescue the jobs of dead workers and prune old
//! rows. Each lives in its own module; this one wires them and runs the lifecycle:
//! start the kinds, run, drain, hand back, shut the kinds down.

mod backend;
mod context;
mod executor;
mod heartbeat;
mod kind;
mod leases;
mod outcome;
mod producer;
mod retry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use apalis_core::worker::builder::WorkerBuilder;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use context::{AttemptId, JobContext, StopReason};
pub use kind::{JobHandler, KindError, Readiness, ReadinessSender, Registry};
pub use outcome::Outcome;

use crate::backoff::Backoff;
use crate::config::Settings;
use crate::http;
use crate::queue::{
    self, Completer, CompleterSettings, Completion, Listener, RescueSettings, Rescuer, Retention,
    RetentionSettings, Wake,
};
use backend::LeasedJobs;
use context::StopSignal;
use executor::{JobService, STOP_GRACE};
use heartbeat::HeartbeatSettings;
use leases::{KindSlot, Leases};
use producer::{Producer, ProducerSettings};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("no handler for job kind {0:?} (configured in worker.kinds)")]
    UnknownKind(String),
    #[error("job kind {kind:?} could not start: {error}")]
    KindStart { kind: String, error: KindError },
    #[error(transparent)]
    Queue(#[from] queue::QueueError),
    #[error("cannot listen on http.listen {addr}: {error}")]
    Http {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// A configured worker, ready to run.
pub struct Worker {
    settings: Settings,
    pool: PgPool,
    registry: Registry,
    id: Arc<str>,
    /// The health and metrics listener, once bound ([`Worker::bind_http`]).
    http: Option<std::net::TcpListener>,
}

/// What a worker did, for logs and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct RunSummary {
    pub handed_back: usize,
}

/// What the services of one worker share.
struct Shared {
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
            http: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Binds `http.listen`, if set, and returns the address bound (port 0 picks a free
    /// one); [`Worker::run`] serves on it. Without this call, `run` binds it itself.
    pub fn bind_http(&mut self) -> Result<Option<SocketAddr>, WorkerError> {
        let Some(addr) = self.settings.http.listen else {
            return Ok(None);
        };
        if self.http.is_none() {
            let bound = std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                .map_err(|error| WorkerError::Http { addr, error })?;
            self.http = Some(bound);
        }
        self.http
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()
            .map_err(|error| WorkerError::Http { addr, error })
    }

    /// Runs until `shutdown` fires, then drains: stop leasing, let running jobs
    /// finish within `worker.shutdown_grace_ms`, hand back the rest, then shut the
    /// kinds down within what is left of the grace.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<RunSummary, WorkerError> {
        let kinds = self.settings.worker.kinds.clone();
        let mut handlers = Vec::with_capacity(kinds.len());
        for kind in &kinds {
            let handler = self
                .registry
                .get(kind)
                .ok_or_else(|| WorkerError::UnknownKind(kind.clone()))?;
            handlers.push((kind.clone(), handler.clone()));
        }
        // Up first, so an orchestrator hears from a worker that still waits for its
        // database; stopped last, or on any early return (the guard).
        let http_stop = CancellationToken::new();
        let _http_guard = http_stop.clone().drop_guard();
        let http_task = self.serve_http(&handlers, &shutdown, &http_stop)?;
        let w = &self.settings.worker;
        if w.migrate_on_start {
            migrate_with_retry(&self.pool, &self.settings, &shutdown).await?;
        }
        // Only the kinds this replica runs are started: one that leaves `dial` out
        // never opens an AMI connection.
        for (kind, handler) in &handlers {
            handler
                .start()
                .await
                .map_err(|error| WorkerError::KindStart {
                    kind: kind.clone(),
                    error,
                })?;
        }
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
        let metrics = self.registry.metrics().clone();
        let reconnect = Backoff::from_millis(w.reconnect_min_ms, w.reconnect_max_ms);
        let (completer, completer_task) = Completer::spawn(
            queue_pool.clone(),
            CompleterSettings {
                reconnect,
                drain_deadline: w.shutdown_grace(),
                retry_base: Duration::from_millis(w.retry_base_ms),
                retry_max: Duration::from_millis(w.retry_max_ms),
            },
        );
        let shared = Arc::new(Shared {
            pool: self.pool.clone(),
            queue_pool: queue_pool.clone(),
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
        let on_cancel = {
            let shared = shared.clone();
            move |id| shared.leases.stop_job(id, StopReason::Cancelled)
        };
        background.spawn(Listener::run(
            queue_pool.clone(),
            wake.clone(),
            on_cancel,
            reconnect,
            maintenance.clone(),
        ));
        background.spawn(heartbeat::run(
            shared.clone(),
            HeartbeatSettings::from(w),
            maintenance.clone(),
        ));
        let rescuer = Rescuer::new(
            queue_pool.clone(),
            RescueSettings {
                interval: w.rescue_interval(),
                lease: w.lease(),
                retry_base: Duration::from_millis(w.retry_base_ms),
                retry_max: Duration::from_millis(w.retry_max_ms),
                recover_when_spent: self.registry.recovering_kinds(),
            },
        )
        .counting(metrics.rescued().clone());
        background.spawn(rescuer.run(wake.clone(), maintenance.clone()));
        let r = &self.settings.retention;
        if r.keep_hours > 0 {
            let retention = Retention::new(
                queue_pool.clone(),
                RetentionSettings {
                    keep: Duration::from_secs(r.keep_hours * 3600),
                    interval: Duration::from_millis(r.interval_ms.max(1000)),
                },
            );
            background.spawn(retention.run(maintenance.clone()));
        }

        let mut runners = JoinSet::new();
        let producing = ProducerSettings::from(w);
        for (kind, handler) in &handlers {
            let capacity = self.settings.concurrency(kind);
            let slot = Arc::new(KindSlot::new(capacity));
            let (tx, rx) = mpsc::channel(capacity);
            let signal = wake.signal(kind).unwrap_or_default();
            let kind_metrics = metrics.kind(kind);
            for _ in 0..w.lease_streams {
                let producer = Producer {
                    shared: shared.clone(),
                    settings: producing.clone(),
                    kind: kind.clone(),
                    slot: slot.clone(),
                    readiness: handler.readiness(),
                    limits: handler.limits(),
                    tx: tx.clone(),
                    wake: signal.clone(),
                    metrics: kind_metrics.clone(),
                };
                runners.spawn(producer.run(stop_leasing.clone()));
            }
            let service = JobService {
                shared: shared.clone(),
                handler: handler.clone(),
                slot,
                metrics: kind_metrics,
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
        let grace = w.shutdown_grace();
        let deadline = tokio::time::Instant::now() + grace;
        stop_leasing.cancel();
        shared.draining.store(true, Ordering::SeqCst);
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
                .submit(
                    lease,
                    Completion::HandBack {
                        recover: started,
                        reason: None,
                    },
                    None,
                )
                .await;
        }
        shut_down_kinds(&handlers, deadline).await;
        maintenance.cancel();
        while background.join_next().await.is_some() {}
        drop(shared);
        let _ = completer_task.await;
        http_stop.cancel();
        if let Some(task) = http_task {
            let _ = task.await;
        }
        tracing::info!(worker = %self.id, handed_back = handed_back + leftover.len(), "worker stopped");
        Ok(RunSummary {
            handed_back: handed_back + leftover.len(),
        })
    }

    /// Starts the health and metrics listener if `http.listen` is set; `None` if not.
    fn serve_http(
        &mut self,
        handlers: &[(String, Arc<dyn JobHandler>)],
        shutdown: &CancellationToken,
        stop: &CancellationToken,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, WorkerError> {
        let Some(addr) = self.bind_http()? else {
            return Ok(None);
        };
        let Some(listener) = self.http.take() else {
            return Ok(None);
        };
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|error| WorkerError::Http { addr, error })?;
        let probe = http::Probe::new(
            &self.pool,
            handlers
                .iter()
                .map(|(kind, handler)| (kind.clone(), handler.readiness()))
                .collect(),
            self.registry.metrics().clone(),
            shutdown.clone(),
        );
        tracing::info!(%addr, "serving /healthz, /readyz and /metrics on http://{addr}/");
        Ok(Some(tokio::spawn(http::serve(
            listener,
            Arc::new(probe),
            stop.clone(),
        ))))
    }
}

/// Runs every kind's shutdown step together, bounded by what is left of the grace
/// (at least a second, so a grace spent on jobs still lets a kind log off).
async fn shut_down_kinds(
    handlers: &[(String, Arc<dyn JobHandler>)],
    deadline: tokio::time::Instant,
) {
    let left = deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .max(Duration::from_secs(1));
    let steps = futures_util::future::join_all(handlers.iter().map(|(kind, handler)| async move {
        if tokio::time::timeout(left, handler.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(kind, "the kind's shutdown step did not finish in time");
        }
    }));
    steps.await;
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
    let w = &settings.worker;
    let mut pacer = Backoff::from_millis(w.reconnect_min_ms, w.reconnect_max_ms).pacer();
    loop {
        match queue::migrate(pool).await {
            Ok(()) => return Ok(()),
            Err(queue::QueueError::Migrate(sqlx::migrate::MigrateError::Execute(e)))
            | Err(queue::QueueError::Database(e))
                if queue::is_transient(&e) =>
            {
                let delay = pacer.failed();
                tracing::warn!(error = %e, retry_in = ?delay, "database not reachable; waiting to migrate");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}
