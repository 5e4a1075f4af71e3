//! Adding jobs from Rust: the same INSERT an application writes (see README.md), so the
//! database's checks refuse bad input here too.

use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;

/// One job to add. `None` takes the table's default (priority 0, 5 attempts, no
/// dedup_key, run now).
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub kind: String,
    /// A JSON object.
    pub payload: Value,
    pub priority: Option<i32>,
    pub max_attempts: Option<i32>,
    /// A second job with the same key is not added.
    pub dedup_key: Option<String>,
    /// Run no earlier than this long from now, by the database's clock.
    pub delay: Option<Duration>,
}

impl NewJob {
    pub fn new(kind: impl Into<String>, payload: Value) -> Self {
        Self {
            kind: kind.into(),
            payload,
            priority: None,
            max_attempts: None,
            dedup_key: None,
            delay: None,
        }
    }

    pub fn max_attempts(mut self, n: i32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    pub fn dedup_key(mut self, key: impl Into<String>) -> Self {
        self.dedup_key = Some(key.into());
        self
    }
}

/// Adds one job; its id, or `None` when a job with its `dedup_key` already exists.
///
/// # Errors
/// The database's refusal (unknown kind, a payload the kind's check rejects, …) or a
/// connection error.
pub async fn enqueue(pool: &PgPool, job: &NewJob) -> Result<Option<i64>, sqlx::Error> {
    Ok(enqueue_many(pool, std::slice::from_ref(job))
        .await?
        .into_iter()
        .next())
}

/// Adds jobs in one statement (one round trip, one wake-up per kind); the ids of those
/// added, ascending. Jobs whose `dedup_key` exists already are left out.
///
/// # Errors
/// As [`enqueue`]; a refusal adds none of them.
pub async fn enqueue_many(pool: &PgPool, jobs: &[NewJob]) -> Result<Vec<i64>, sqlx::Error> {
    let mut kinds = Vec::with_capacity(jobs.len());
    let mut payloads = Vec::with_capacity(jobs.len());
    let mut priorities = Vec::with_capacity(jobs.len());
    let mut max_attempts = Vec::with_capacity(jobs.len());
    let mut dedup_keys = Vec::with_capacity(jobs.len());
    let mut delays_ms = Vec::with_capacity(jobs.len());
    for j in jobs {
        kinds.push(j.kind.as_str());
        payloads.push(&j.payload);
        priorities.push(j.priority);
        max_attempts.push(j.max_attempts);
        dedup_keys.push(j.dedup_key.as_deref());
        delays_ms.push(j.delay.map(|d| d.as_secs_f64() * 1000.0));
    }
    let mut ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO dialout_queue (kind, payload, priority, max_attempts, dedup_key, run_at) \
         SELECT kind, payload, coalesce(priority, 0), coalesce(max_attempts, 5), dedup_key, \
                now() + coalesce(delay_ms, 0) * interval '1 millisecond' \
         FROM unnest($1::text[], $2::jsonb[], $3::int4[], $4::int4[], $5::text[], $6::float8[]) \
              AS j(kind, payload, priority, max_attempts, dedup_key, delay_ms) \
         ON CONFLICT (dedup_key) DO NOTHING RETURNING id",
    )
    .bind(&kinds)
    .bind(&payloads)
    .bind(&priorities)
    .bind(&max_attempts)
    .bind(&dedup_keys)
    .bind(&delays_ms)
    .fetch_all(pool)
    .await?;
    ids.sort_unstable();
    Ok(ids)
}
