//! The producer: leases jobs of one kind while it has room and the kind is ready, and
//! hands them to apalis.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Shared;
use super::kind::Readiness;
use super::leases::KindSlot;
use crate::backoff::Backoff;
use crate::config::WorkerSection;
use crate::metrics::KindMetrics;
use crate::queue::{self, KindLimits, LeasedJob, LimitedLease};

/// How a producer leases.
#[derive(Debug, Clone)]
pub(super) struct ProducerSettings {
    pub(super) lease: Duration,
    /// Most jobs one lease call takes.
    pub(super) batch: u32,
    /// Lease calls of one kind that may be under way at once.
    pub(super) streams: u32,
    pub(super) poll_interval: Duration,
    pub(super) reconnect: Backoff,
}

impl From<&WorkerSection> for ProducerSettings {
    fn from(w: &WorkerSection) -> Self {
        Self {
            lease: w.lease(),
            batch: w.lease_batch,
            streams: w.lease_streams,
            poll_interval: w.poll_interval(),
            reconnect: Backoff::from_millis(w.reconnect_min_ms, w.reconnect_max_ms),
        }
    }
}

/// One lease stream of one kind. A kind has `streams` of these, so one lease call can
/// run in the database while the next is sent: room is reserved before each call,
/// never overcommitted.
pub(super) struct Producer {
    pub(super) shared: Arc<Shared>,
    pub(super) settings: ProducerSettings,
    pub(super) kind: String,
    pub(super) slot: Arc<KindSlot>,
    pub(super) readiness: Readiness,
    /// The kind's limits across replicas ([`queue::lease_limited_jobs`]).
    pub(super) limits: KindLimits,
    pub(super) tx: mpsc::Sender<LeasedJob>,
    pub(super) wake: Arc<Notify>,
    pub(super) metrics: KindMetrics,
}

impl Producer {
    pub(super) async fn run(mut self, stop: CancellationToken) {
        let mut pacer = self.settings.reconnect.pacer();
        // Lease calls that failed: if one committed and only its reply was lost, its
        // jobs are leased to nobody. Given back before the next lease (a failed call
        // gave its room back, so the next iteration never waits for room first).
        let mut unreceived: Vec<Uuid> = Vec::new();
        while !stop.is_cancelled() {
            if !self.readiness.is_ready() && !self.wait_until_ready(&stop).await {
                break;
            }
            let want = self.slot.reserve(self.settings.batch as usize);
            if want == 0 {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = self.slot.freed() => continue,
                }
            }
            let leased = self.lease(want as u32, &mut unreceived).await;
            let got = leased.as_ref().map_or(0, |l| l.jobs.len());
            if got < want {
                self.slot.release(want - got);
            }
            match leased {
                Ok(LimitedLease {
                    jobs,
                    next_start_in,
                }) => {
                    self.metrics.leased(got as u64);
                    if pacer.failures() > 0 {
                        tracing::info!(
                            kind = self.kind,
                            "database reachable again; leasing resumed"
                        );
                        pacer.succeeded();
                    }
                    // Every job is held before any is sent: if apalis is gone (shutdown),
                    // the ones never sent are handed back with the rest, not left to expire.
                    for job in &jobs {
                        self.shared.leases.insert(job);
                    }
                    for job in jobs {
                        if self.tx.send(job).await.is_err() {
                            return;
                        }
                    }
                    if got == want {
                        if self.settings.streams > 1 {
                            self.wake.notify_one(); // more may be ready: bring a sibling in
                        }
                        continue;
                    }
                    // Paced: ask again when the next start time comes within reach.
                    let idle = next_start_in.map_or(self.settings.poll_interval, |t| {
                        t.min(self.settings.poll_interval)
                    });
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(idle) => {}
                    }
                }
                Err(e) => {
                    if pacer.failures() == 0 {
                        tracing::warn!(kind = self.kind, error = %e, "leasing failed; retrying with backoff");
                    }
                    let delay = pacer.failed();
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Waits for the kind to be ready again; `false` when stopped first (or the kind
    /// can never be ready again, then it waits for the stop).
    async fn wait_until_ready(&mut self, stop: &CancellationToken) -> bool {
        tracing::warn!(kind = self.kind, "kind not ready: leasing it paused");
        let ready = tokio::select! {
            _ = stop.cancelled() => false,
            ready = self.readiness.ready() => ready,
        };
        if !ready {
            stop.cancelled().await;
            return false;
        }
        tracing::info!(kind = self.kind, "kind ready again: leasing resumed");
        true
    }

    /// Leases up to `want` jobs under a fresh batch token, after giving back the
    /// batches of earlier calls that failed (see [`queue::release_batch`]). A call that
    /// fails leaves its token in `unreceived` for the next one.
    async fn lease(
        &self,
        want: u32,
        unreceived: &mut Vec<Uuid>,
    ) -> Result<LimitedLease, sqlx::Error> {
        let pool = &self.shared.queue_pool;
        while let Some(&batch) = unreceived.last() {
            let released = queue::release_batch(pool, batch).await?;
            if released > 0 {
                tracing::info!(
                    kind = self.kind,
                    released,
                    "gave back jobs leased by a call whose reply was lost"
                );
            }
            unreceived.pop();
        }
        let batch = Uuid::new_v4();
        let (kind, worker, lease) = (&self.kind, &self.shared.id, self.settings.lease);
        let leased = if self.limits.is_none() {
            queue::lease_jobs(pool, kind, want, worker, lease, batch)
                .await
                .map(|jobs| LimitedLease {
                    jobs,
                    next_start_in: None,
                })
        } else {
            queue::lease_limited_jobs(pool, kind, want, worker, lease, batch, self.limits).await
        };
        if leased.is_err() {
            unreceived.push(batch);
        }
        leased
    }
}
