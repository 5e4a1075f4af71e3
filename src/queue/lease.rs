//! Leasing: one statement takes a batch, heartbeats extend it, status moves are fenced.

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::types::Json;
use uuid::Uuid;

use super::{Lease, LeasedJob, QueueError};

/// Leases up to `limit` ready jobs of `kind` for `worker_id`.
///
/// Every job of one call gets `batch` as its lease token: a fresh uuid per call, so each
/// attempt still has a token of its own, and a call whose reply never arrived (the
/// connection dropped after COMMIT) can be undone with [`release_batch`] instead of
/// waiting for the leases to expire and burning an attempt.
/// `SKIP LOCKED` lets any number of replicas run this at once without waiting on
/// each other or taking the same row. The rows are updated by `ctid`, where the
/// subquery found and locked them: no second lookup per row in the primary key (a
/// locked row cannot move), and no join, which lets the planner hash the whole table.
/// A row another leaser updated meanwhile is locked in its new version, which the
/// UPDATE's snapshot does not see: it is left alone, for the next call.
pub async fn lease_jobs<'e>(
    db: impl sqlx::PgExecutor<'e>,
    kind: &str,
    limit: u32,
    worker_id: &str,
    lease: Duration,
    batch: Uuid,
) -> Result<Vec<LeasedJob>, sqlx::Error> {
    lease_ready(db, Ready::Any, kind, limit, worker_id, lease, batch).await
}

/// Which ready rows a lease call takes.
#[derive(Debug, Clone, Copy)]
pub(super) enum Ready {
    /// Any, by priority, then run_at, then id.
    Any,
    /// Only those waiting for a recovery attempt (`needs_recovery`): a limited kind
    /// leases them outside its limits, since their work (a call) is still going on.
    Recovering,
}

/// The lease statement for each [`Ready`], built once (`$1` kind, `$2` limit, `$3`
/// worker, `$4` lease in ms, `$5` batch token).
fn lease_statement(which: Ready) -> &'static str {
    static ANY: LazyLock<String> =
        LazyLock::new(|| lease_sql("status = 'queued' AND kind = $1 AND run_at <= now()"));
    static RECOVERING: LazyLock<String> = LazyLock::new(|| {
        lease_sql("status = 'queued' AND needs_recovery AND kind = $1 AND run_at <= now()")
    });
    match which {
        Ready::Any => &ANY,
        Ready::Recovering => &RECOVERING,
    }
}

pub(super) async fn lease_ready<'e>(
    db: impl sqlx::PgExecutor<'e>,
    which: Ready,
    kind: &str,
    limit: u32,
    worker_id: &str,
    lease: Duration,
    batch: Uuid,
) -> Result<Vec<LeasedJob>, sqlx::Error> {
    let (ids, payloads, attempts, max_attempts, needs_recovery): LeasedColumns =
        sqlx::query_as(lease_statement(which))
            .bind(kind)
            .bind(i64::from(limit))
            .bind(worker_id)
            .bind(lease.as_millis() as f64)
            .bind(batch)
            .fetch_one(db)
            .await?;
    let jobs = ids
        .into_iter()
        .zip(payloads)
        .zip(attempts.into_iter().zip(max_attempts))
        .zip(needs_recovery)
        .map(
            |(((id, Json(payload)), (attempts, max_attempts)), needs_recovery)| LeasedJob {
                id,
                kind: kind.to_owned(),
                payload,
                attempts,
                max_attempts,
                lease_token: batch,
                needs_recovery,
                not_before: None,
            },
        )
        .collect();
    Ok(jobs)
}

/// One row of arrays rather than a row per job: decoding a row costs the worker more
/// than the columns in it. The kind and token are the call's own.
/// `dedup_key = q.dedup_key` changes nothing, but a column named in SET tells
/// PostgreSQL the row's new version is not a mere copy for that index, so it skips the
/// bottom-up deletion pass it would try on a full leaf of the dedup_key index: with most
/// keys NULL, every entry there looks like a version of every other, and each pass
/// visited the heap for hundreds of them (callgrind, lease and completion: 163,900 ->
/// 151,300 database instructions per job). See `complete.rs` too.
fn lease_sql(ready: &str) -> String {
    format!(
        "WITH leased AS ( \
                 UPDATE dialout_queue AS q SET \
                     status = 'trying', \
                     attempts = q.attempts + 1, \
                     lease_token = $5, \
                     lease_expires_at = now() + $4 * interval '1 millisecond', \
                     worker_id = $3, \
                     started_at = coalesce(q.started_at, now()), \
                     dedup_key = q.dedup_key \
                 WHERE q.ctid = ANY(ARRAY( \
                     SELECT ctid FROM dialout_queue \
                     WHERE {ready} \
                     ORDER BY priority DESC, run_at, id \
                     LIMIT $2 \
                     FOR UPDATE SKIP LOCKED)) \
                 RETURNING q.id, q.payload, q.attempts, q.max_attempts, q.needs_recovery) \
             SELECT coalesce(array_agg(id), '{{}}'), coalesce(array_agg(payload), '{{}}'), \
                    coalesce(array_agg(attempts), '{{}}'), coalesce(array_agg(max_attempts), '{{}}'), \
                    coalesce(array_agg(needs_recovery), '{{}}') \
             FROM leased"
    )
}

/// The leased rows, a column each (see [`lease_jobs`]).
type LeasedColumns = (Vec<i64>, Vec<Json<Value>>, Vec<i32>, Vec<i32>, Vec<bool>);

/// Gives back the jobs a [`lease_jobs`] call leased under `batch` when its caller never
/// received them: `queued` again at once, the attempt not counted, other workers woken.
/// Matches nothing if the call failed before COMMIT, or once the leases were rescued:
/// safe to run whenever a lease call failed. Returns how many came back.
pub async fn release_batch(pool: &PgPool, batch: Uuid) -> Result<u64, sqlx::Error> {
    let released: i64 = sqlx::query_scalar(
        "WITH released AS ( \
             UPDATE dialout_queue AS q SET \
                 status = CASE WHEN q.status = 'cancelled' THEN q.status ELSE 'queued' END, \
                 attempts = q.attempts - 1, \
                 started_at = CASE WHEN q.attempts = 1 THEN NULL ELSE q.started_at END, \
                 lease_token = NULL, \
                 lease_expires_at = NULL \
             WHERE q.lease_token = $1 AND q.status IN ('trying', 'cancelled') \
             RETURNING q.kind, q.status), \
         woken AS ( \
             SELECT dialout_wake(array_agg(kind)) FROM released WHERE status = 'queued') \
         SELECT count(*) FROM released, (SELECT count(*) FROM woken) AS w",
    )
    .bind(batch)
    .fetch_one(pool)
    .await?;
    Ok(released as u64)
}

impl super::Lease {
    /// Moves a running job to `established` (a dial: answered at `answered_at`,
    /// kept in `call_answered_at` for a worker that adopts the call later), only
    /// while this lease still holds it. One statement for both: thousands of answers
    /// can come within a second, each waiting for a connection. (`dedup_key =
    /// dedup_key`: see [`lease_jobs`].)
    pub async fn set_established(
        &self,
        pool: &PgPool,
        answered_at: Option<DateTime<Utc>>,
    ) -> Result<(), QueueError> {
        let done = sqlx::query(
            "UPDATE dialout_queue SET status = 'established', \
                 call_answered_at = $3, dedup_key = dedup_key \
             WHERE id = $1 AND lease_token = $2 AND status IN ('trying', 'established')",
        )
        .bind(self.id)
        .bind(self.token)
        .bind(answered_at)
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
    /// Gone: the row no longer carries this token (rescued by another worker, ended).
    pub lost: Vec<Lease>,
}

impl Heartbeat {
    /// Extends every lease in `leases` in one statement (`dedup_key = q.dedup_key`: see
    /// [`lease_jobs`]). Rows locked by someone else
    /// (the completer writing them) are skipped rather than waited for, and count as
    /// lost only if a plain read shows the token is no longer theirs.
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
                 SELECT id FROM dialout_queue WHERE id = ANY($1) FOR UPDATE SKIP LOCKED) \
             UPDATE dialout_queue AS q SET lease_expires_at = now() + $3 * interval '1 millisecond', \
                 dedup_key = q.dedup_key \
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
        let mut alive = std::collections::HashSet::with_capacity(leases.len());
        for (id, cancelled) in renewed {
            alive.insert(id);
            if cancelled {
                beat.cancelled.push(id);
            }
        }
        let missing: Vec<Lease> = leases
            .iter()
            .filter(|l| !alive.contains(&l.id))
            .copied()
            .collect();
        if missing.is_empty() {
            return Ok(beat);
        }
        let ids: Vec<i64> = missing.iter().map(|l| l.id).collect();
        let tokens: Vec<Uuid> = missing.iter().map(|l| l.token).collect();
        let still_ours: Vec<i64> = sqlx::query_scalar(
            "SELECT q.id FROM dialout_queue AS q \
             JOIN unnest($1::bigint[], $2::uuid[]) AS l(id, token) \
               ON q.id = l.id AND q.lease_token = l.token",
        )
        .bind(&ids)
        .bind(&tokens)
        .fetch_all(pool)
        .await?;
        beat.lost = missing
            .into_iter()
            .filter(|l| !still_ours.contains(&l.id))
            .collect();
        Ok(beat)
    }
}
