//! What a handler is given: its job, its attempt's identity, the pool, a stop signal.

use std::fmt;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::queue::{Lease, LeasedJob, QueueError};

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

/// One attempt's identity, never reused: the job and the token of the lease the
/// attempt runs under. Attempt numbers repeat after a shutdown hand-back (the attempt
/// was not counted); lease tokens do not. Displays as `<job>-<token>`, safe for an
/// outside system's identifiers (letters, digits and `-` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttemptId {
    pub job_id: i64,
    pub lease_token: Uuid,
}

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.job_id, self.lease_token.simple())
    }
}

/// Everything a handler may know or do about its job.
pub struct JobContext {
    pub(crate) job: LeasedJob,
    pub(crate) pool: PgPool,
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
    /// The payload, moved out (`null` is left): a kind that parses it and then runs
    /// for long, like a call, does not keep the JSON as well (a one-key object costs
    /// over 600 bytes).
    pub fn take_payload(&mut self) -> Value {
        self.job.payload.take()
    }
    /// This attempt's number, from 1 (`max_attempts + 1` for a recovery attempt past
    /// the last; repeated after a shutdown hand-back: see [`JobContext::attempt_id`]).
    pub fn attempt(&self) -> i32 {
        self.job.attempts
    }
    pub fn max_attempts(&self) -> i32 {
        self.job.max_attempts
    }
    /// This attempt's identity, never reused.
    pub fn attempt_id(&self) -> AttemptId {
        AttemptId {
            job_id: self.job.id,
            lease_token: self.job.lease_token,
        }
    }
    /// The previous attempt's worker vanished mid-way, or handed the job back for
    /// recovery: a kind with effects outside the database should find out what it
    /// did before acting again.
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

    /// Marks the job `established` (a dial: the callee answered at `answered_at`,
    /// kept in `call_answered_at`), fenced on the lease.
    /// Through the handlers' pool: the queue's own connections are kept for leasing,
    /// heartbeats and completion, which a burst of answers must not starve.
    pub async fn set_established(
        &self,
        answered_at: Option<DateTime<Utc>>,
    ) -> Result<(), QueueError> {
        self.lease().set_established(&self.pool, answered_at).await
    }

    /// Resolves when the job is asked to stop.
    pub async fn stopped(&self) -> StopReason {
        self.stop.stopped().await
    }

    pub fn stop_requested(&self) -> Option<StopReason> {
        self.stop.reason()
    }

    /// Fires when the job is asked to stop (the same signal as
    /// [`JobContext::stopped`]), for code that takes a token: no kind builds its own.
    pub fn cancellation(&self) -> CancellationToken {
        self.stop.token.clone()
    }
}
