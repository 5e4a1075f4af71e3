//! The heartbeat: renews every lease this worker holds, and learns of cancellations
//! and losses.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Shared, StopReason};
use crate::config::WorkerSection;
use crate::queue::Heartbeat;

#[derive(Debug, Clone, Copy)]
pub(super) struct HeartbeatSettings {
    pub(super) lease: Duration,
    /// Between beats.
    pub(super) every: Duration,
    /// Between tries while the database is away.
    pub(super) retry: Duration,
}

impl From<&WorkerSection> for HeartbeatSettings {
    fn from(w: &WorkerSection) -> Self {
        let every = w.heartbeat();
        Self {
            lease: w.lease(),
            every,
            retry: Duration::from_millis(w.reconnect_min_ms).min(every),
        }
    }
}

/// What one beat did.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct BeatCounts {
    pub(super) cancelled: usize,
    pub(super) lost: usize,
}

/// One beat: renews every lease held and stops the jobs that were cancelled or lost.
pub(super) async fn run_once(
    shared: &Shared,
    settings: &HeartbeatSettings,
) -> Result<BeatCounts, sqlx::Error> {
    let held = shared.leases.snapshot();
    let beat = Heartbeat::beat(&shared.queue_pool, &held, settings.lease).await?;
    for &id in &beat.cancelled {
        shared.leases.stop_job(id, StopReason::Cancelled);
    }
    // A lease whose outcome the completer wrote while this beat ran is gone from the
    // table, not lost: only the ones still running count.
    let lost: Vec<_> = beat
        .lost
        .into_iter()
        .filter(|&lease| shared.leases.is_unsubmitted(lease))
        .collect();
    for &lease in &lost {
        shared.leases.stop_lease(lease, StopReason::LeaseLost);
    }
    Ok(BeatCounts {
        cancelled: beat.cancelled.len(),
        lost: lost.len(),
    })
}

/// Beats until `stop`.
///
/// While the database is away it retries quickly; once the leases may have run out
/// (three quarters of the lease without a successful beat) it stops every running job:
/// another worker may rescue them as soon as the database is back, and two attempts
/// must never run at once.
pub(super) async fn run(shared: Arc<Shared>, settings: HeartbeatSettings, stop: CancellationToken) {
    let mut last_ok = tokio::time::Instant::now();
    let mut wait = settings.every;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match run_once(&shared, &settings).await {
            Ok(counts) => {
                last_ok = tokio::time::Instant::now();
                wait = settings.every;
                if counts.lost > 0 {
                    tracing::warn!(
                        lost = counts.lost,
                        cancelled = counts.cancelled,
                        "leases lost to another worker; their jobs stopped"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed");
                wait = settings.retry;
                if last_ok.elapsed() > settings.lease.mul_f64(0.75) {
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
