//! Leasing: one statement takes a batch, heartbeats extend it, status moves are fenced.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::{JobStatus, Lease, LeasedJob, QueueError};

/// Leases up to `limit` ready jobs of `kind` for `worker_id`, each with a fresh token.
/// `SKIP LOCKED` lets any number of replicas run this at once without waiting on
/// each other or taking the same row. `= ANY(ARRAY(...))` keeps the plan on the
/// primary key: a join here lets the planner hash the whole table, which grows with it.
pub async fn lease_jobs(
    pool: &PgPool,
    kind: &str,
    limit: u32,
    worker_id: &str,
    lease: Duration,
) -> Result<Vec<LeasedJob>, sqlx::Error> {
    sqlx::query_as::<_, LeasedJob>(
        "UPDATE dialout_queue AS q SET \
             status = 'trying', \
             attempts = q.attempts + 1, \
             lease_token = gen_random_uuid(), \
             lease_expires_at = now() + $4 * interval '1 millisecond', \
             worker_id = $3, \
             started_at = coalesce(q.started_at, now()) \
         WHERE q.id = ANY(ARRAY( \
             SELECT id FROM dialout_queue \
             WHERE status = 'queued' AND kind = $1 AND run_at <= now() \
             ORDER BY priority DESC, run_at, id \
             LIMIT $2 \
             FOR UPDATE SKIP LOCKED)) \
         RETURNING q.id, q.kind, q.payload, q.attempts, q.max_attempts, q.lease_token, q.needs_recovery",
    )
    .bind(kind)
    .bind(i64::from(limit))
    .bind(worker_id)
    .bind(lease.as_millis() as f64)
    .fetch_all(pool)
    .await
}

impl super::Lease {
    /// Moves a running job to another running status (a dial: `established`),
    /// only while this lease still holds it.
    pub async fn set_status(&self, pool: &PgPool, status: JobStatus) -> Result<(), QueueError> {
        debug_assert!(matches!(status, JobStatus::Trying | JobStatus::Established));
        let done = sqlx::query(
            "UPDATE dialout_queue SET status = $3 \
             WHERE id = $1 AND lease_token = $2 AND status IN ('trying', 'established')",
        )
        .bind(self.id)
        .bind(self.token)
        .bind(status)
        .execute(pool)
        .await?;
        if done.rows_affected() == 1 {
            Ok(())
        } else {
            Err(QueueError::LeaseLost(self.id))
        }
    }
}

/// What one heartbeat learned about the leases it renewed.
#[derive(Debug, Default)]
pub struct Heartbeat {
    /// Renewed, and an application cancelled the job meanwhile.
    pub cancelled: Vec<i64>,
    /// Not renewed: the lease is gone (rescued by another worker, or ended).
    pub lost: Vec<i64>,
}

impl Heartbeat {
    /// Extends every lease in `leases` in one statement, locking rows in id order
    /// like the completer.
    pub async fn beat(
        pool: &PgPool,
        leases: &[Lease],
        lease: Duration,
    ) -> Result<Self, sqlx::Error> {
        if leases.is_empty() {
            return Ok(Self::default());
        }
        let ids: Vec<i64> = leases.iter().map(|l| l.id).collect();
        let tokens: Vec<Uuid> = leases.iter().map(|l| l.token).collect();
        let renewed: Vec<(i64, bool)> = sqlx::query_as(
            "WITH locked AS ( \
                 SELECT id FROM dialout_queue WHERE id = ANY($1) ORDER BY id FOR UPDATE) \
             UPDATE dialout_queue AS q SET lease_expires_at = now() + $3 * interval '1 millisecond' \
             FROM unnest($1::bigint[], $2::uuid[]) AS l(id, token) \
             WHERE q.id = ANY(ARRAY(SELECT id FROM locked)) \
               AND q.id = l.id AND q.lease_token = l.token \
             RETURNING q.id, q.status = 'cancelled'",
        )
        .bind(&ids)
        .bind(&tokens)
        .bind(lease.as_millis() as f64)
        .fetch_all(pool)
        .await?;
        let mut beat = Self::default();
        let mut alive = std::collections::HashSet::with_capacity(renewed.len());
        for (id, cancelled) in renewed {
            alive.insert(id);
            if cancelled {
                beat.cancelled.push(id);
            }
        }
        beat.lost = ids.into_iter().filter(|id| !alive.contains(id)).collect();
        Ok(beat)
    }
}
