//! The retry policy: what an attempt's outcome writes to its row.

use super::StopReason;
use super::outcome::{Outcome, OutcomeKind};
use crate::queue::{Completion, JobStatus};

/// Turns an outcome into the row's completion. `None`: nothing to write (the lease is
/// lost, so another worker owns the job). A retry waits the standard backoff for its
/// attempt number, timed by the database (see `CompleterSettings`).
pub(super) fn completion(
    outcome: &Outcome,
    stop: Option<StopReason>,
    attempt: i32,
    max_attempts: i32,
) -> Option<Completion> {
    let done = |status, error: Option<String>| Completion::Final {
        status,
        result: outcome.result.clone(),
        error,
    };
    let cancelled = || {
        done(
            JobStatus::Cancelled,
            Some("cancelled by the application while it ran".to_owned()),
        )
    };
    match outcome.kind {
        OutcomeKind::Stopped | OutcomeKind::Abandoned => match stop {
            // A dropped handler may have left outside effects half done: the next
            // attempt must find out what happened, as after a lost worker.
            Some(StopReason::Shutdown) => Some(Completion::HandBack {
                recover: outcome.kind == OutcomeKind::Abandoned,
                reason: None,
            }),
            Some(StopReason::LeaseLost) => None,
            Some(StopReason::Cancelled) => Some(cancelled()),
            None => Some(done(
                JobStatus::FinishedWithError,
                Some("internal error: the handler stopped without being asked to".to_owned()),
            )),
        },
        OutcomeKind::HandBack => match stop {
            Some(StopReason::LeaseLost) => None,
            Some(StopReason::Cancelled) => Some(cancelled()),
            _ => Some(Completion::HandBack {
                recover: true,
                reason: outcome.error.clone(),
            }),
        },
        OutcomeKind::Finished => Some(done(JobStatus::Finished, None)),
        OutcomeKind::Failed | OutcomeKind::TimedOut => {
            let error = outcome.error.clone();
            if outcome.retryable && attempt < max_attempts && stop != Some(StopReason::Cancelled) {
                return Some(Completion::Retry {
                    result: outcome.result.clone(),
                    error: error.map(|e| format!("attempt {attempt} of {max_attempts}: {e}")),
                    after: outcome.retry_after,
                });
            }
            let status = if outcome.kind == OutcomeKind::TimedOut {
                JobStatus::Timedout
            } else {
                JobStatus::FinishedWithError
            };
            Some(done(status, error))
        }
    }
}
