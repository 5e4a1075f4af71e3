//! Maintenance any live worker runs: rescuing expired leases, pruning old rows.

use std::time::Duration;

use sqlx::PgPool;

use super::JobStatus;

/// A job taken back from a worker that stopped renewing its lease.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Rescued {
    pub id: i64,
    pub kind: String,
    pub status: JobStatus,
}

/// Takes back every job whose lease expired: back to `queued` with backoff and
/// `needs_recovery` set, or `finished_with_error` ("worker lost") once its attempts
/// are spent. Cancelled jobs just lose the dead lease. Safe to run from every worker
/// at once (`SKIP LOCKED`); each call handles at most 1000 rows.
pub async fn rescue_expired(
    pool: &PgPool,
    retry_base: Duration,
    retry_max: Duration,
) -> Result<Vec<Rescued>, sqlx::Error> {
    sqlx::query_as::<_, Rescued>(
        "WITH lost AS ( \
             SELECT id FROM dialout_queue \
             WHERE lease_token IS NOT NULL AND lease_expires_at < now() \
             ORDER BY id LIMIT 1000 \
             FOR UPDATE SKIP LOCKED) \
         UPDATE dialout_queue AS q SET \
             status = CASE WHEN q.status = 'cancelled' THEN q.status \
                           WHEN q.attempts >= q.max_attempts THEN 'finished_with_error' \
                           ELSE 'queued' END::dialout_status, \
             ended_at = CASE WHEN q.status = 'cancelled' THEN q.ended_at \
                             WHEN q.attempts >= q.max_attempts THEN now() END, \
             last_error = CASE WHEN q.status = 'cancelled' THEN q.last_error \
                               ELSE format('worker lost: %s stopped renewing its lease during attempt %s of %s', \
                                           coalesce(q.worker_id, '?'), q.attempts, q.max_attempts) END, \
             run_at = CASE WHEN q.status <> 'cancelled' AND q.attempts < q.max_attempts \
                           THEN now() + least($2::float8, $1::float8 * 2 ^ greatest(q.attempts - 1, 0) \
                                              * (0.5 + random())) * interval '1 millisecond' \
                           ELSE q.run_at END, \
             lost_leases = q.lost_leases + (q.status <> 'cancelled')::int, \
             needs_recovery = q.status <> 'cancelled' AND q.attempts < q.max_attempts, \
             lease_token = NULL, \
             lease_expires_at = NULL \
         FROM lost WHERE q.id = lost.id \
         RETURNING q.id, q.kind, q.status",
    )
    .bind(retry_base.as_millis() as f64)
    .bind(retry_max.as_millis() as f64)
    .fetch_all(pool)
    .await
}

/// Deletes rows that ended more than `keep` ago. Returns how many went.
pub async fn prune_finished(pool: &PgPool, keep: Duration) -> Result<u64, sqlx::Error> {
    prune_finished_in_chunks(pool, keep, 5000).await
}

/// [`prune_finished`], `chunk` rows per statement so none holds many locks.
///
/// Walks the primary key from the oldest row and stops after the first chunk holding a
/// row created since the cutoff: a row cannot end before it was created, so what lies
/// further on is (bar a row inserted by a transaction that ran longer than `keep`, which
/// goes on a later round) not due yet. The walk costs the old rows still there, never
/// the whole table, and needs no index on `ended_at`, which every completion would
/// have to update.
pub async fn prune_finished_in_chunks(
    pool: &PgPool,
    keep: Duration,
    chunk: u32,
) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    let mut after = 0_i64;
    loop {
        let (deleted, last, reached_new): (i64, Option<i64>, Option<bool>) = sqlx::query_as(
            "WITH cutoff AS (SELECT now() - $2 * interval '1 millisecond' AS at), \
             walk AS ( \
                 SELECT id, created_at, ended_at FROM dialout_queue \
                 WHERE id > $1 ORDER BY id LIMIT $3), \
             due AS ( \
                 SELECT q.id FROM dialout_queue AS q \
                 WHERE q.id IN (SELECT id FROM walk, cutoff WHERE walk.ended_at < cutoff.at) \
                 FOR UPDATE SKIP LOCKED), \
             gone AS ( \
                 DELETE FROM dialout_queue AS q USING due WHERE q.id = due.id RETURNING 1) \
             SELECT (SELECT count(*) FROM gone), \
                    (SELECT max(id) FROM walk), \
                    (SELECT bool_or(walk.created_at >= cutoff.at) FROM walk, cutoff)",
        )
        .bind(after)
        .bind(keep.as_millis() as f64)
        .bind(i64::from(chunk))
        .fetch_one(pool)
        .await?;
        total += deleted as u64;
        match last {
            Some(last) if reached_new != Some(true) => after = last,
            _ => return Ok(total),
        }
    }
}
