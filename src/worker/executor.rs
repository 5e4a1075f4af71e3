//! The executor: runs one leased job to its recorded outcome, inside apalis.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tracing::Instrument;

use super::leases::KindSlot;
use super::{JobContext, JobHandler, Outcome, Shared, StopReason, StopSignal, retry};
use crate::metrics::KindMetrics;
use crate::queue::{Completion, JobStatus, LeasedJob, WriteResult};

/// How long a handler has to return after it was asked to stop (cancelled, lease
/// lost, shutdown grace over) before its future is dropped.
pub(super) const STOP_GRACE: Duration = Duration::from_secs(5);

/// The service apalis drives for one kind.
#[derive(Clone)]
pub(super) struct JobService {
    pub(super) shared: Arc<Shared>,
    pub(super) handler: Arc<dyn JobHandler>,
    pub(super) slot: Arc<KindSlot>,
    pub(super) metrics: KindMetrics,
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
        // `map`, not `async move { run.await; Ok(()) }`: an async block would keep the
        // moved-in future twice over (its capture and its awaited copy), about 1 KB more
        // for every job in flight.
        Box::pin(
            execute(
                self.shared.clone(),
                self.handler.clone(),
                self.slot.clone(),
                self.metrics.clone(),
                task.args,
            )
            .map(Ok),
        )
    }
}

/// Runs one leased job and records its outcome. Never panics, never returns early
/// without writing or handing back.
///
/// A plain function returning one async block, not an `async fn` wrapping it: this
/// future lives as long as its job, for every job in flight, and an `async fn` would
/// keep its arguments a second time beside the block's own copies.
fn execute(
    shared: Arc<Shared>,
    handler: Arc<dyn JobHandler>,
    slot: Arc<KindSlot>,
    metrics: KindMetrics,
    job: LeasedJob,
) -> impl Future<Output = ()> + Send + 'static {
    let lease = job.lease();
    let (attempt, max_attempts) = (job.attempts, job.max_attempts);
    let span = tracing::info_span!("job", id = job.id, kind = %job.kind, attempt = job.attempts);
    async move {
        let Some(stop) = shared.leases.signal(lease) else {
            slot.release(1);
            return;
        };
        // A job of a paced kind waits for its turn first (cut short by a stop).
        wait_for_turn(job.not_before, &stop).await;
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
                worker_id: shared.id.clone(),
                stop: stop.clone(),
            };
            shared.leases.started(lease);
            let began = Instant::now();
            // The context moves into the handler's future here, not into ours.
            let outcome = run_handler(handler.run(ctx), &stop).await;
            metrics.ran(began.elapsed());
            tracing::debug!(outcome = ?outcome.kind, "attempt ended");
            outcome
        };
        // The handler is done: its slot may take the next job while this outcome is
        // written, so leasing and completing overlap.
        slot.release(1);
        let result = match retry::completion(&outcome, stop.reason(), attempt, max_attempts) {
            Some(completion) => {
                if matches!(completion, Completion::HandBack { .. }) {
                    shared.leases.count_handed_back();
                }
                let status = completion.status();
                // Boxed: its channel send is large and needed only for this moment,
                // not kept in every running job's future.
                let reply =
                    Box::pin(shared.completer.submit(lease, completion, outcome.hook)).await;
                // With the completer now: a shutdown must not hand it back as well.
                shared.leases.submitted(lease);
                let result = reply.await.unwrap_or(WriteResult::Abandoned);
                let recorded = match result {
                    WriteResult::Written => Some(status),
                    WriteResult::KeptCancelled => Some(JobStatus::Cancelled),
                    WriteResult::LeaseLost | WriteResult::Abandoned => None,
                };
                if let Some(status) = recorded {
                    metrics.recorded(status);
                    if let Some(f) = outcome.on_recorded {
                        f();
                    }
                }
                result
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
}

/// Waits for a paced job's start time, or until it is stopped.
async fn wait_for_turn(not_before: Option<tokio::time::Instant>, stop: &StopSignal) {
    if let Some(at) = not_before {
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = stop.stopped() => {}
        }
    }
}

/// Runs the handler's future, catching panics and enforcing the stop grace.
async fn run_handler(run: BoxFuture<'static, Outcome>, stop: &StopSignal) -> Outcome {
    let run = std::panic::AssertUnwindSafe(run).catch_unwind();
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
