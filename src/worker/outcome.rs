//! How an attempt ended, as a handler says it.

use std::fmt::Display;

use serde_json::Value;

use crate::queue::CompletionHook;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutcomeKind {
    Finished,
    Failed,
    TimedOut,
    Stopped,
    /// Stopped, and the work may still be going on outside: back for recovery.
    HandBack,
    /// The handler ignored a stop request and was dropped.
    Abandoned,
}

/// How an attempt ended. Failures are permanent unless made [`Outcome::retryable`].
pub struct Outcome {
    pub(crate) kind: OutcomeKind,
    pub(crate) result: Option<Value>,
    pub(crate) error: Option<String>,
    pub(crate) retryable: bool,
    /// With `retryable`: the wait the kind chose; `None`: the standard backoff.
    pub(crate) retry_after: Option<std::time::Duration>,
    pub(crate) hook: Option<CompletionHook>,
    /// Run once the outcome is recorded (with `hook`'s SQL committed).
    pub(crate) on_recorded: Option<Box<dyn FnOnce() + Send>>,
}

impl Outcome {
    fn new(kind: OutcomeKind, error: Option<String>) -> Self {
        Self {
            kind,
            result: None,
            error,
            retryable: false,
            retry_after: None,
            hook: None,
            on_recorded: None,
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

    /// The handler stopped because it was asked to ([`super::JobContext::stopped`]).
    pub fn stopped() -> Self {
        Self::new(OutcomeKind::Stopped, None)
    }

    /// The handler stopped, but what it started outside goes on (a call that is still
    /// up): the job goes back to `queued` at once, this attempt not counted, with
    /// `needs_recovery` set so the next attempt finds the work and takes it over.
    /// `reason` goes to `last_error`. On a cancelled job it records `cancelled`.
    pub fn hand_back_for_recovery(reason: impl Display) -> Self {
        Self::new(OutcomeKind::HandBack, Some(reason.to_string()))
    }

    pub(crate) fn abandoned() -> Self {
        Self::new(OutcomeKind::Abandoned, None)
    }

    /// The error may heal: queue the job again with backoff while attempts remain.
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    /// The error may heal, and the kind knows when to try again (a busy callee: in
    /// ten minutes): queue the job again after `wait` while attempts remain.
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retryable = true;
        self.retry_after = Some(wait);
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

    /// `f` runs once this outcome is recorded, with its SQL committed (a dial counts
    /// the CDRs it wrote); never if the outcome is discarded (the lease was lost).
    pub fn on_recorded(mut self, f: impl FnOnce() + Send + 'static) -> Self {
        self.on_recorded = Some(Box::new(f));
        self
    }
}
