//! The rescuer: takes back the jobs of workers that stopped renewing their leases.

use std::time::Duration;

use sqlx::PgPool;

use crate::metrics::Counter;
use tokio_util::sync::CancellationToken;

use super::super::{Wake, is_transient};

/// How the rescuer runs.
#[derive(Debug, Clone)]
pub struct RescueSettings {
    /// How often to look for expired leases.
    pub interval: Duration,
    /// The lease length: after losing the database, wait this long before rescuing
    /// again (see [`Rescuer::run`]).
    pub lease: Duration,
    /// A rescued job's retry wait: `dialout_retry_delay(attempt, retry_base, retry_max)`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Kinds whose lost attempt gets one recovery attempt even when its attempts are
    /// spent (their work may still be going on outside: a dial's call).
    pub recover_when_spent: Vec<String>,
}

/// What one rescue round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RescueCounts {
    /// Back to `queued` with `needs_recovery` (attempts remained).
    pub requeued: u64,
    /// Back to `queued` for one recovery attempt past `max_attempts`.
    pub recovering: u64,
    /// Ended `finished_with_error` ("worker lost"): attempts spent.
    pub ended: u64,
    /// Cancelled while their worker was gone: only the dead lease was cleared.
    pub cancelled: u64,
    /// The kinds with jobs back in the queue, each once.
    pub kinds: Vec<String>,
}

impl RescueCounts {
    pub fn total(&self) -> u64 {
        self.requeued + self.recovering + self.ended + self.cancelled
    }
}

/// Rescues expired leases; safe to run from every worker at once (`SKIP LOCKED`).
#[derive(Debug, Clone)]
pub struct Rescuer {
    pool: PgPool,
    settings: RescueSettings,
    rescued: Counter,
}

impl Rescuer {
    pub fn new(pool: PgPool, settings: RescueSettings) -> Self {
        Self {
            pool,
            settings,
            rescued: Counter::default(),
        }
    }

    /// Adds every job rescued to `rescued` (`dialout_rescued_total`).
    pub fn counting(mut self, rescued: Counter) -> Self {
        self.rescued = rescued;
        self
    }

    /// Takes back every job whose lease expired (at most 1000 a call): back to
    /// `queued` with the standard retry wait and `needs_recovery` set, or
    /// `finished_with_error` ("worker lost") once its attempts are spent, unless its
    /// kind recovers lost attempts and this was its last regular one: then it gets
    /// exactly one recovery attempt (numbered `max_attempts + 1`). Cancelled jobs
    /// just lose the dead lease.
    pub async fn run_once(&self) -> Result<RescueCounts, sqlx::Error> {
        let s = &self.settings;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "WITH lost AS ( \
                 SELECT id FROM dialout_queue \
                 WHERE lease_token IS NOT NULL AND lease_expires_at < now() \
                 ORDER BY id LIMIT 1000 \
                 FOR UPDATE SKIP LOCKED), \
             judged AS ( \
                 SELECT q.id, CASE \
                     WHEN q.status = 'cancelled' THEN 'cancelled' \
                     WHEN q.attempts < q.max_attempts THEN 'requeued' \
                     WHEN q.attempts = q.max_attempts AND q.kind = ANY($3) THEN 'recovering' \
                     ELSE 'ended' END AS fate \
                 FROM dialout_queue AS q JOIN lost USING (id)) \
             UPDATE dialout_queue AS q SET \
                 status = CASE j.fate WHEN 'cancelled' THEN q.status \
                                      WHEN 'ended' THEN 'finished_with_error' \
                                      ELSE 'queued' END::dialout_status, \
                 ended_at = CASE j.fate WHEN 'cancelled' THEN q.ended_at \
                                        WHEN 'ended' THEN now() END, \
                 last_error = CASE WHEN j.fate = 'cancelled' THEN q.last_error \
                                   ELSE format('worker lost: %s stopped renewing its lease during attempt %s of %s%s', \
                                               coalesce(q.worker_id, '?'), q.attempts, q.max_attempts, \
                                               CASE WHEN j.fate = 'recovering' \
                                                    THEN '; one recovery attempt follows' ELSE '' END) END, \
                 run_at = CASE j.fate WHEN 'requeued' \
                                      THEN now() + dialout_retry_delay(q.attempts, $1, $2) \
                                      WHEN 'recovering' THEN now() \
                                      ELSE q.run_at END, \
                 lost_leases = q.lost_leases + (j.fate <> 'cancelled')::int, \
                 needs_recovery = j.fate IN ('requeued', 'recovering'), \
                 lease_token = NULL, \
                 lease_expires_at = NULL \
             FROM judged AS j WHERE q.id = j.id \
             RETURNING q.kind, j.fate",
        )
        .bind(s.retry_base.as_secs_f64() * 1000.0)
        .bind(s.retry_max.as_secs_f64() * 1000.0)
        .bind(&s.recover_when_spent)
        .fetch_all(&self.pool)
        .await?;
        self.rescued.inc_by(rows.len() as u64);
        let mut counts = RescueCounts::default();
        for (kind, fate) in rows {
            match fate.as_str() {
                "requeued" => counts.requeued += 1,
                "recovering" => counts.recovering += 1,
                "ended" => counts.ended += 1,
                _ => counts.cancelled += 1,
            }
            if matches!(fate.as_str(), "requeued" | "recovering") && !counts.kinds.contains(&kind) {
                counts.kinds.push(kind);
            }
        }
        Ok(counts)
    }

    /// Rescues every `interval` until `stop`, waking the kinds it requeued.
    ///
    /// After this worker lost the database, it waits one full lease before rescuing
    /// again: live workers cut off by the same outage need that long to renew, and
    /// rescuing first would start their jobs a second time.
    pub async fn run(self, wake: Wake, stop: CancellationToken) {
        let s = &self.settings;
        let mut tick = tokio::time::interval(s.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Healthy from the start: the jobs of workers that died before we came are due.
        let mut healthy_since = tokio::time::Instant::now().checked_sub(s.lease);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(since) = healthy_since else {
                if sqlx::query("SELECT 1").execute(&self.pool).await.is_ok() {
                    tracing::info!(wait = ?s.lease, "database back; rescuing again after one lease");
                    healthy_since = Some(tokio::time::Instant::now());
                }
                continue;
            };
            if since.elapsed() < s.lease {
                continue;
            }
            match self.run_once().await {
                Ok(counts) if counts.total() == 0 => {}
                Ok(counts) => {
                    tracing::warn!(
                        requeued = counts.requeued,
                        recovering = counts.recovering,
                        ended = counts.ended,
                        cancelled = counts.cancelled,
                        kinds = ?counts.kinds,
                        "rescued jobs from lost workers"
                    );
                    for kind in &counts.kinds {
                        wake.kind(kind);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "rescue failed");
                    if is_transient(&e) {
                        healthy_since = None;
                    }
                }
            }
        }
    }
}
