//! Retention: deletes rows that ended long ago, so the table holds what is live and
//! recent. CDRs live in their own table and are never pruned with the jobs.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// How retention runs.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// Rows that ended longer ago than this go.
    pub keep: Duration,
    /// How often to prune.
    pub interval: Duration,
}

/// Prunes old rows; safe to run from every worker at once (`SKIP LOCKED`).
#[derive(Debug, Clone)]
pub struct Retention {
    pool: PgPool,
    settings: RetentionSettings,
}

impl Retention {
    pub fn new(pool: PgPool, settings: RetentionSettings) -> Self {
        Self { pool, settings }
    }

    /// One pruning round; returns how many rows went.
    pub async fn run_once(&self) -> Result<u64, sqlx::Error> {
        prune_finished(&self.pool, self.settings.keep).await
    }

    /// Prunes every `interval` until `stop`; logs a round only when it deleted rows.
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.settings.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.run_once().await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "pruned old finished jobs"),
                Err(e) => tracing::warn!(error = %e, "retention failed"),
            }
        }
    }
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
