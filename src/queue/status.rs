//! Statuses, and reading jobs back for `dialout jobs` / `dialout job ID`.

use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;

/// The `dialout_status` enum. Each state names what moves a job out of it in
/// `migrations/0001_queue.sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sqlx::Type, serde::Serialize)]
#[sqlx(type_name = "dialout_status", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Trying,
    Established,
    Finished,
    FinishedWithError,
    Timedout,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Trying => "trying",
            Self::Established => "established",
            Self::Finished => "finished",
            Self::FinishedWithError => "finished_with_error",
            Self::Timedout => "timedout",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Finished | Self::FinishedWithError | Self::Timedout | Self::Cancelled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row as `dialout job ID` shows it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct JobRow {
    pub id: i64,
    pub kind: String,
    pub status: JobStatus,
    pub priority: i32,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub worker_id: Option<String>,
    pub dedup_key: Option<String>,
    pub last_error: Option<String>,
    pub lost_leases: i32,
    pub payload: Value,
    pub result: Option<Value>,
}

const COLUMNS: &str = "id, kind, status, priority, attempts, max_attempts, run_at, created_at, \
     started_at, ended_at, worker_id, dedup_key, last_error, lost_leases, payload, result";

pub async fn job(pool: &PgPool, id: i64) -> Result<Option<JobRow>, sqlx::Error> {
    sqlx::query_as::<_, JobRow>(&format!(
        "SELECT {COLUMNS} FROM dialout_queue WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The newest `limit` jobs, optionally of one status.
pub async fn recent(
    pool: &PgPool,
    status: Option<JobStatus>,
    limit: i64,
) -> Result<Vec<JobRow>, sqlx::Error> {
    sqlx::query_as::<_, JobRow>(&format!(
        "SELECT {COLUMNS} FROM dialout_queue WHERE ($1::dialout_status IS NULL OR status = $1) \
         ORDER BY id DESC LIMIT $2"
    ))
    .bind(status)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Counts per kind and status: the at-a-glance view.
pub async fn summary(pool: &PgPool) -> Result<Vec<(String, JobStatus, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT kind, status, count(*) FROM dialout_queue GROUP BY kind, status ORDER BY kind, status",
    )
    .fetch_all(pool)
    .await
}

/// The ready backlog of one kind: jobs `queued` whose `run_at` has come.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Backlog {
    pub kind: String,
    pub ready: i64,
    /// How long the oldest of them has been due, in seconds.
    pub oldest_ready_secs: f64,
}

/// The ready backlog of each of `kinds` that has one (a kind with none is left out).
/// One pass over the ready rows of those kinds in the lease index
/// (`dialout_queue_ready`, partial on `queued`): it grows with the backlog, not with
/// the table, so callers cache it for a few seconds rather than run it per request.
pub async fn ready_backlog(pool: &PgPool, kinds: &[String]) -> Result<Vec<Backlog>, sqlx::Error> {
    sqlx::query_as(
        "SELECT kind, count(*) AS ready, \
                extract(epoch FROM now() - min(run_at))::float8 AS oldest_ready_secs \
         FROM dialout_queue \
         WHERE status = 'queued' AND kind = ANY($1) AND run_at <= now() \
         GROUP BY kind",
    )
    .bind(kinds)
    .fetch_all(pool)
    .await
}
