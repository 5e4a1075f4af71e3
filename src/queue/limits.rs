//! Limits that hold across every replica: how many jobs of a kind may be under lease
//! at once, and how many may start per second. A dial's are the trunk's capacity
//! (`dial.max_live_calls`) and its calls per second (`dial.calls_per_second`).
//!
//! Both are decided in PostgreSQL, in the lease's own transaction: the leaser locks
//! the kind's row of `dialout_lease_pacing`, so leasers of one kind take turns, counts
//! the kind's jobs under lease (every replica's, committed before the lock was granted),
//! leases at most what is left, and gives each job a start time one 1/rate after the
//! last one handed out. A job that finds no room is not leased: it stays `queued` and
//! no attempt is counted.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::LeasedJob;
use super::lease::{Ready, lease_jobs, lease_ready};

/// A kind's limits across replicas; zero means none.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KindLimits {
    /// Most jobs of the kind under lease at once, across all replicas.
    pub max_running: u32,
    /// Most jobs of the kind started per second, across all replicas.
    pub starts_per_second: f64,
}

impl KindLimits {
    pub fn is_none(&self) -> bool {
        self.max_running == 0 && self.starts_per_second <= 0.0
    }
}

/// How far ahead a paced lease hands out start times. A leased job waits at most this
/// long for its turn (in `trying`), so leasing runs a few times a second at most; a
/// shorter horizon would keep waiting jobs `queued` a little longer at the cost of more
/// lease calls.
pub const PACING_HORIZON: Duration = Duration::from_millis(250);

/// What a limited lease call got.
#[derive(Debug, Default)]
pub struct LimitedLease {
    /// Each with its start time in `not_before`.
    pub jobs: Vec<LeasedJob>,
    /// When pacing held jobs back: how long until the next start time is handed out.
    pub next_start_in: Option<Duration>,
}

/// Leases up to `limit` ready jobs of `kind`, within `limits` (see the module).
///
/// A job waiting for its recovery attempt (handed back at shutdown, or rescued from a
/// vanished worker) may still have its call up: it counts as running, and it is leased
/// first and outside the limits, since its attempt looks for that call before placing
/// any other. Otherwise a rolling restart would let new calls take the room of calls
/// still up.
pub async fn lease_limited_jobs(
    pool: &PgPool,
    kind: &str,
    limit: u32,
    worker_id: &str,
    lease: Duration,
    batch: Uuid,
    limits: KindLimits,
) -> Result<LimitedLease, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // A leaser that stalls while holding the row must not stop every replica's leasing
    // for long: past this the call fails and the producer retries with backoff.
    sqlx::query("SET LOCAL lock_timeout = '2s'")
        .execute(&mut *tx)
        .await?;
    // Takes the row's lock whether it existed or not; the count below runs after it.
    sqlx::query(
        "INSERT INTO dialout_lease_pacing (kind) VALUES ($1) \
         ON CONFLICT (kind) DO UPDATE SET kind = EXCLUDED.kind",
    )
    .bind(kind)
    .execute(&mut *tx)
    .await?;
    let (running, base, now): (i64, DateTime<Utc>, DateTime<Utc>) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM dialout_queue WHERE lease_token IS NOT NULL AND kind = $1) \
              + (SELECT count(*) FROM dialout_queue \
                 WHERE status = 'queued' AND needs_recovery AND kind = $1), \
                greatest(p.next_start, c.now), c.now \
         FROM dialout_lease_pacing AS p, (SELECT clock_timestamp() AS now) AS c \
         WHERE p.kind = $1",
    )
    .bind(kind)
    .fetch_one(&mut *tx)
    .await?;
    let mut jobs = lease_ready(
        &mut *tx,
        Ready::Recovering,
        kind,
        limit,
        worker_id,
        lease,
        batch,
    )
    .await?;
    let recovering = jobs.len();
    let left = limit - recovering as u32;
    let (allowed, paced) = allowed(limits, left, running, base, now);
    let fresh = if allowed > 0 {
        lease_jobs(&mut *tx, kind, allowed, worker_id, lease, batch).await?
    } else {
        Vec::new()
    };
    let rate = limits.starts_per_second;
    let mut out = LimitedLease::default();
    if rate > 0.0 {
        let next_start = base + spacing(fresh.len(), rate);
        if !fresh.is_empty() {
            sqlx::query("UPDATE dialout_lease_pacing SET next_start = $2 WHERE kind = $1")
                .bind(kind)
                .bind(next_start)
                .execute(&mut *tx)
                .await?;
        }
        // Only when pacing held ready jobs back: an empty queue waits for its wake-up.
        if paced && fresh.len() as u32 == allowed {
            let horizon = TimeDelta::from_std(PACING_HORIZON).unwrap_or_default();
            let wait = (next_start - horizon - now).to_std().unwrap_or_default();
            out.next_start_in = Some(wait.max(Duration::from_millis(1)));
        }
    }
    tx.commit().await?;
    // Each turn is a time, fixed now: however late the job is then run, consecutive
    // starts keep their spacing.
    let received = tokio::time::Instant::now();
    for (i, mut job) in fresh.into_iter().enumerate() {
        if rate > 0.0 {
            let turn = (base + spacing(i, rate) - now).to_std().unwrap_or_default();
            job.not_before = Some(received + turn);
        }
        jobs.push(job);
    }
    out.jobs = jobs;
    Ok(out)
}

/// How many jobs the limits let this call lease, and whether pacing was what held
/// the number down (below both `limit` and the room under `max_running`).
fn allowed(
    limits: KindLimits,
    limit: u32,
    running: i64,
    base: DateTime<Utc>,
    now: DateTime<Utc>,
) -> (u32, bool) {
    let mut allowed = i64::from(limit);
    if limits.max_running > 0 {
        allowed = allowed.min(i64::from(limits.max_running) - running);
    }
    let rate = limits.starts_per_second;
    let mut paced = false;
    if rate > 0.0 {
        let horizon_end = now + TimeDelta::from_std(PACING_HORIZON).unwrap_or_default();
        let starts = if base > horizon_end {
            0
        } else {
            let ahead = (horizon_end - base).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
            (ahead * rate).floor() as i64 + 1
        };
        paced = starts < allowed;
        allowed = allowed.min(starts);
    }
    (allowed.clamp(0, i64::from(limit)) as u32, paced)
}

/// The time `n` starts take at `rate` per second.
fn spacing(n: usize, rate: f64) -> TimeDelta {
    TimeDelta::microseconds((n as f64 / rate * 1e6).round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap_or_default()
    }

    #[test]
    fn running_limit_leaves_what_is_free() {
        let l = KindLimits {
            max_running: 3,
            starts_per_second: 0.0,
        };
        assert_eq!(allowed(l, 100, 0, at(0), at(0)).0, 3);
        assert_eq!(allowed(l, 100, 2, at(0), at(0)).0, 1);
        assert_eq!(allowed(l, 100, 3, at(0), at(0)).0, 0);
        // More under lease than the limit (it was lowered): nothing, never negative.
        assert_eq!(allowed(l, 100, 7, at(0), at(0)).0, 0);
        assert_eq!(allowed(l, 2, 0, at(0), at(0)).0, 2);
    }

    #[test]
    fn pacing_hands_out_the_starts_within_the_horizon() {
        let l = KindLimits {
            max_running: 0,
            starts_per_second: 10.0,
        };
        // Free now: starts at 0, 100 and 200 ms fall within 250 ms.
        assert_eq!(allowed(l, 100, 0, at(0), at(0)).0, 3);
        // The next start is 200 ms away: 200 only.
        assert_eq!(allowed(l, 100, 0, at(200), at(0)).0, 1);
        // Beyond the horizon: none.
        assert_eq!(allowed(l, 100, 0, at(300), at(0)).0, 0);
        // Pacing held jobs back only when it gave fewer than asked for: the producer
        // comes back at the next start time then, and waits for a wake-up otherwise.
        assert_eq!(allowed(l, 100, 0, at(0), at(0)), (3, true));
        assert_eq!(allowed(l, 2, 0, at(0), at(0)), (2, false));
        // One per second: one start per call, never two in the horizon.
        let slow = KindLimits {
            max_running: 0,
            starts_per_second: 1.0,
        };
        assert_eq!(allowed(slow, 100, 0, at(0), at(0)).0, 1);
    }

    #[test]
    fn both_limits_take_the_smaller() {
        let l = KindLimits {
            max_running: 5,
            starts_per_second: 100.0,
        };
        assert_eq!(allowed(l, 100, 4, at(0), at(0)), (1, false));
        assert_eq!(allowed(l, 100, 0, at(0), at(0)).0, 5);
    }
}
