//! What a job kind implements, and what it is given.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::{Arc, OnceLock};

use futures_util::future::BoxFuture;
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::queue::{CompletionHook, JobStatus, Lease, LeasedJob, QueueError};

/// A job kind's code. `run` gets the job and returns its outcome; it should watch
/// [`JobContext::stopped`] and return [`Outcome::stopped`] when asked to stop.
/// A handler that ignores the request is dropped after a grace period.
pub trait JobHandler: Send + Sync + 'static {
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Outcome>;
}

/// The kinds a worker can run, by name.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn JobHandler>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, kind: &str, handler: impl JobHandler) -> Self {
        self.handlers.insert(kind.to_owned(), Arc::new(handler));
        self
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn JobHandler>> {
        self.handlers.get(kind)
    }

    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }
}

/// Why a running job is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// An application set its status to `cancelled`.
    Cancelled,
    /// Another worker owns it now: nothing this attempt writes will land.
    LeaseLost,
    /// The worker is shutting down: the job goes back to the queue.
    Shutdown,
}

/// A stop request: the first reason wins.
#[derive(Clone, Default)]
pub(crate) struct StopSignal {
    token: CancellationToken,
    reason: Arc<OnceLock<StopReason>>,
}

impl StopSignal {
    pub(crate) fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }
    pub(crate) fn reason(&self) -> Option<StopReason> {
        self.reason.get().copied()
    }
    pub(crate) async fn stopped(&self) -> StopReason {
        self.token.cancelled().await;
        self.reason().unwrap_or(StopReason::Shutdown)
    }
}

/// Everything a handler may know or do about its job.
pub struct JobContext {
    pub(crate) job: LeasedJob,
    pub(crate) pool: PgPool,
    pub(crate) queue_pool: PgPool,
    pub(crate) worker_id: Arc<str>,
    pub(crate) stop: StopSignal,
}

impl JobContext {
    pub fn id(&self) -> i64 {
        self.job.id
    }
    pub fn kind(&self) -> &str {
        &self.job.kind
    }
    pub fn payload(&self) -> &Value {
        &self.job.payload
    }
    /// This attempt's number, from 1.
    pub fn attempt(&self) -> i32 {
        self.job.attempts
    }
    pub fn max_attempts(&self) -> i32 {
        self.job.max_attempts
    }
    /// The previous attempt's worker vanished mid-way: a kind with effects outside
    /// the database should find out what it did before acting again.
    pub fn needs_recovery(&self) -> bool {
        self.job.needs_recovery
    }
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
    pub fn lease(&self) -> Lease {
        self.job.lease()
    }

    /// Marks the job `established` (a dial: the callee answered), fenced on the lease.
    pub async fn set_established(&self) -> Result<(), QueueError> {
        self.lease()
            .set_status(&self.queue_pool, JobStatus::Established)
            .await
    }

    /// Resolves when the job is asked to stop.
    pub async fn stopped(&self) -> StopReason {
        self.stop.stopped().await
    }

    pub fn stop_requested(&self) -> Option<StopReason> {
        self.stop.reason()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutcomeKind {
    Finished,
    Failed,
    TimedOut,
    Stopped,
    /// The handler ignored a stop request and was dropped.
    Abandoned,
}

/// How an attempt ended. Failures are permanent unless made [`Outcome::retryable`].
pub struct Outcome {
    pub(crate) kind: OutcomeKind,
    pub(crate) result: Option<Value>,
    pub(crate) error: Option<String>,
    pub(crate) retryable: bool,
    pub(crate) hook: Option<CompletionHook>,
}

impl Outcome {
    fn new(kind: OutcomeKind, error: Option<String>) -> Self {
        Self {
            kind,
            result: None,
            error,
            retryable: false,
            hook: None,
        }
    }

    /// Done: status `finished`, nothing to put in `result`.
    pub fn finished_empty() -> Self {
        Self::new(OutcomeKind::Finished, None)
    }

    /// Done: status `finished`, `result` stored.
    pub fn finished(result: Value) -> Self {
        Self::new(OutcomeKind::Finished, None).with_result(result)
    }

    /// Failed: status `finished_with_error` with the reason in `last_error`.
    pub fn failed(error: impl Display) -> Self {
        Self::new(OutcomeKind::Failed, Some(error.to_string()))
    }

    /// A bounded wait ran out: status `timedout`, the reason says which.
    pub fn timed_out(error: impl Display) -> Self {
        Self::new(OutcomeKind::TimedOut, Some(error.to_string()))
    }

    /// The handler stopped because it was asked to ([`JobContext::stopped`]).
    pub fn stopped() -> Self {
        Self::new(OutcomeKind::Stopped, None)
    }

    pub(crate) fn abandoned() -> Self {
        Self::new(OutcomeKind::Abandoned, None)
    }

    /// The error may heal: queue the job again with backoff while attempts remain.
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    pub fn with_result(mut self, result: Value) -> Self {
        self.result = Some(result);
        self
    }

    /// SQL to commit in the same transaction as the final status.
    pub fn with_sql(mut self, hook: CompletionHook) -> Self {
        self.hook = Some(hook);
        self
    }
}
