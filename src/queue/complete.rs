//! Fenced completion, batched.
//!
//! Every outcome is written only where the lease token still matches, so a worker that
//! lost its lease cannot overwrite the new owner's work. Outcomes without extra SQL are
//! gathered into one statement per batch (what is waiting when the writer comes round:
//! no timer, so a lone job is written at once); an outcome with a [`CompletionHook`]
//! gets its own transaction, where the hook's SQL commits with the status or not at all.
//! A database that is away is retried with backoff: outcomes wait in memory, never lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use super::{JobStatus, Lease, is_transient};
use crate::backoff::Backoff;

/// Extra SQL run in the transaction that records the final status (a dial writes its
/// CDR). It may run more than once if the database fails mid-way, so it must only
/// write through the connection it is given.
pub type CompletionHook = Arc<
    dyn for<'c> Fn(&'c mut PgConnection) -> BoxFuture<'c, Result<(), sqlx::Error>> + Send + Sync,
>;

/// How one attempt ended, as the row will say.
#[derive(Debug, Clone)]
pub enum Completion {
    /// A final status (`finished`, `finished_with_error`, `timedout`, `cancelled`).
    Final {
        status: JobStatus,
        result: Option<Value>,
        error: Option<String>,
    },
    /// Back to `queued` for another attempt, due `after` from now by the database
    /// clock; `None`: the standard wait for its attempt number (`dialout_retry_delay`).
    Retry {
        result: Option<Value>,
        error: Option<String>,
        after: Option<Duration>,
    },
    /// Back to `queued` at once, this attempt not counted (shutdown, or a kind whose
    /// work goes on outside). `recover`: the attempt was cut off mid-way, so the next
    /// one must find out what it did. `reason` goes to `last_error`.
    HandBack {
        recover: bool,
        reason: Option<String>,
    },
}

impl Completion {
    /// The status the row gets (unless an application cancelled the job meanwhile).
    pub fn status(&self) -> JobStatus {
        match self {
            Completion::Final { status, .. } => *status,
            Completion::Retry { .. } | Completion::HandBack { .. } => JobStatus::Queued,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteResult {
    Written,
    /// Written, but the row stays `cancelled`: an application cancelled the job while
    /// this attempt ran (its result and error are kept).
    KeptCancelled,
    /// The token no longer matched: another worker owns the job, or it was pruned.
    LeaseLost,
    /// The worker is stopping and the database stayed away past the deadline; the
    /// lease will expire and a live worker will rescue the job.
    Abandoned,
}

struct Request {
    lease: Lease,
    completion: Completion,
    hook: Option<CompletionHook>,
    reply: oneshot::Sender<WriteResult>,
}

/// A cloneable handle to the writer task. The task ends once every handle is dropped
/// and what was sent is written.
#[derive(Clone)]
pub struct Completer {
    tx: mpsc::Sender<Request>,
}

/// How the writer paces itself, and the jobs it sends back for a retry.
#[derive(Debug, Clone, Copy)]
pub struct CompleterSettings {
    /// Between tries while the database is away.
    pub reconnect: Backoff,
    /// Once the last handle is dropped (shutdown), give up after this long.
    pub drain_deadline: Duration,
    /// A [`Completion::Retry`] without its own wait: `dialout_retry_delay(attempt,
    /// retry_base, retry_max)`.
    pub retry_base: Duration,
    pub retry_max: Duration,
}

const MAX_BATCH: usize = 1000;

impl Completer {
    pub fn spawn(pool: PgPool, settings: CompleterSettings) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        let task = tokio::spawn(run(pool, rx, settings));
        (Self { tx }, task)
    }

    /// Hands `completion` for `lease` to the writer; the receiver says how it went.
    pub async fn submit(
        &self,
        lease: Lease,
        completion: Completion,
        hook: Option<CompletionHook>,
    ) -> oneshot::Receiver<WriteResult> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            lease,
            completion,
            hook,
            reply,
        };
        if let Err(refused) = self.tx.send(request).await {
            let _ = refused.0.reply.send(WriteResult::Abandoned);
        }
        answer
    }
}

/// Writers in flight at once: one can be in the database while the next batch
/// gathers, and the second core of the database gets work.
const WRITERS: usize = 2;

async fn run(pool: PgPool, mut rx: mpsc::Receiver<Request>, settings: CompleterSettings) {
    let slots = Arc::new(Semaphore::new(WRITERS));
    let closing = Arc::new(AtomicBool::new(false));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            closing.store(true, Ordering::SeqCst);
            break;
        }
        let pool = pool.clone();
        let closing = closing.clone();
        tokio::spawn(async move {
            let (hooked, plain): (Vec<Request>, Vec<Request>) =
                batch.into_iter().partition(|r| r.hook.is_some());
            if !plain.is_empty() {
                write_plain(&pool, plain, &closing, settings).await;
            }
            if !hooked.is_empty() {
                write_hooked_batch(&pool, hooked, &closing, settings).await;
            }
            drop(permit);
        });
    }
    // Every sender is gone: wait for the writes still under way.
    let _ = slots.acquire_many(WRITERS as u32).await;
}

/// Retries `op` while the database is away. `Err` carries a permanent error.
async fn with_retry<T, F, Fut>(
    closing: &AtomicBool,
    settings: CompleterSettings,
    mut op: F,
) -> Result<Option<T>, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let mut pacer = settings.reconnect.pacer();
    let mut closed_since: Option<tokio::time::Instant> = None;
    loop {
        match op().await {
            Ok(v) => return Ok(Some(v)),
            Err(e) if is_transient(&e) => {
                if closing.load(Ordering::SeqCst) {
                    let since = *closed_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= settings.drain_deadline {
                        tracing::error!(error = %e, "database still away at shutdown; leaving outcomes to lease expiry");
                        return Ok(None);
                    }
                }
                let delay = pacer.failed();
                tracing::warn!(error = %e, retry_in = ?delay, "recording outcomes failed; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn write_plain(
    pool: &PgPool,
    requests: Vec<Request>,
    closing: &AtomicBool,
    settings: CompleterSettings,
) {
    let rows = Rows::new(requests.as_slice(), &settings);
    match with_retry(closing, settings, || rows.write(pool)).await {
        Ok(Some(written)) => reply_all(requests, &written),
        Ok(None) => abandon(requests),
        Err(e) if requests.len() > 1 => {
            // One bad row (say, a result jsonb refuses) must not sink the others.
            tracing::warn!(error = %e, "batch write refused; writing rows one by one");
            for request in requests {
                Box::pin(write_plain(pool, vec![request], closing, settings)).await;
            }
        }
        Err(e) => {
            let request = requests.into_iter().next();
            if let Some(request) = request {
                record_unwritable(pool, request, &e, closing, settings).await;
            }
        }
    }
}

async fn write_hooked_batch(
    pool: &PgPool,
    requests: Vec<Request>,
    closing: &AtomicBool,
    settings: CompleterSettings,
) {
    if requests.len() == 1 {
        for r in requests {
            write_hooked(pool, r, closing, settings).await;
        }
        return;
    }
    let rows = Rows::new(requests.as_slice(), &settings);
    let hooks: Vec<(i64, CompletionHook)> = requests
        .iter()
        .filter_map(|r| r.hook.clone().map(|h| (r.lease.id, h)))
        .collect();
    let attempt = || async {
        let mut tx = pool.begin().await?;
        let written = rows.write(&mut *tx).await?;
        for (id, hook) in &hooks {
            if written.contains(*id) {
                hook(&mut tx).await?;
            }
        }
        tx.commit().await?;
        Ok(written)
    };
    match with_retry(closing, settings, attempt).await {
        Ok(Some(written)) => reply_all(requests, &written),
        Ok(None) => abandon(requests),
        Err(_) => {
            for r in requests {
                write_hooked(pool, r, closing, settings).await;
            }
        }
    }
}

async fn write_hooked(
    pool: &PgPool,
    request: Request,
    closing: &AtomicBool,
    settings: CompleterSettings,
) {
    let rows = Rows::new(std::slice::from_ref(&request), &settings);
    let Some(hook) = request.hook.clone() else {
        return;
    };
    let attempt = || async {
        let mut tx = pool.begin().await?;
        let written = rows.write(&mut *tx).await?;
        if written.ids.is_empty() {
            tx.rollback().await?;
            return Ok(written);
        }
        hook(&mut tx).await?;
        tx.commit().await?;
        Ok(written)
    };
    match with_retry(closing, settings, attempt).await {
        Ok(Some(written)) => reply_all(vec![request], &written),
        Ok(None) => abandon(vec![request]),
        Err(e) => record_unwritable(pool, request, &e, closing, settings).await,
    }
}

/// The outcome itself cannot be stored (a bug, or data the database refuses): end the
/// job as `finished_with_error` saying so, rather than leave it to run again.
async fn record_unwritable(
    pool: &PgPool,
    request: Request,
    cause: &sqlx::Error,
    closing: &AtomicBool,
    settings: CompleterSettings,
) {
    tracing::error!(job = request.lease.id, error = %cause, "outcome refused by the database");
    let fallback = Request {
        lease: request.lease,
        completion: Completion::Final {
            status: JobStatus::FinishedWithError,
            result: None,
            error: Some(format!("the job's outcome could not be recorded: {cause}")),
        },
        hook: None,
        reply: request.reply,
    };
    let rows = Rows::new(std::slice::from_ref(&fallback), &settings);
    match with_retry(closing, settings, || rows.write(pool)).await {
        Ok(Some(written)) => reply_all(vec![fallback], &written),
        _ => abandon(vec![fallback]),
    }
}

fn reply_all(requests: Vec<Request>, written: &Written) {
    for r in requests {
        let result = if !written.contains(r.lease.id) {
            WriteResult::LeaseLost
        } else if written.kept_cancelled.contains(&r.lease.id) {
            WriteResult::KeptCancelled
        } else {
            WriteResult::Written
        };
        let _ = r.reply.send(result);
    }
}

/// The rows one write updated, sorted.
struct Written {
    ids: Vec<i64>,
    /// Of those, the ones that stayed `cancelled` (almost always none).
    kept_cancelled: Vec<i64>,
}

impl Written {
    fn contains(&self, id: i64) -> bool {
        self.ids.binary_search(&id).is_ok()
    }
}

fn abandon(requests: Vec<Request>) {
    for r in requests {
        let _ = r.reply.send(WriteResult::Abandoned);
    }
}

/// A batch in columns, ready to bind as arrays.
struct Rows {
    ids: Vec<i64>,
    tokens: Vec<Uuid>,
    statuses: Vec<JobStatus>,
    results: Vec<Option<String>>,
    errors: Vec<Option<String>>,
    retry: Vec<bool>,
    retry_ms: Vec<Option<f64>>,
    hand_back: Vec<bool>,
    recover: Vec<bool>,
    retry_base_ms: f64,
    retry_max_ms: f64,
}

impl Rows {
    fn new(requests: &[Request], settings: &CompleterSettings) -> Self {
        let n = requests.len();
        let mut rows = Rows {
            ids: Vec::with_capacity(n),
            tokens: Vec::with_capacity(n),
            statuses: Vec::with_capacity(n),
            results: Vec::with_capacity(n),
            errors: Vec::with_capacity(n),
            retry: Vec::with_capacity(n),
            retry_ms: Vec::with_capacity(n),
            hand_back: Vec::with_capacity(n),
            recover: Vec::with_capacity(n),
            retry_base_ms: settings.retry_base.as_secs_f64() * 1000.0,
            retry_max_ms: settings.retry_max.as_secs_f64() * 1000.0,
        };
        // Sorted by id: the order the UPDATE locks the rows in (see `write`).
        let mut sorted: Vec<&Request> = requests.iter().collect();
        sorted.sort_unstable_by_key(|r| r.lease.id);
        for r in sorted {
            rows.ids.push(r.lease.id);
            rows.tokens.push(r.lease.token);
            let (status, result, error, retry, hand_back) = match &r.completion {
                Completion::Final {
                    status,
                    result,
                    error,
                } => (*status, result, error, None, None),
                Completion::Retry {
                    result,
                    error,
                    after,
                } => (JobStatus::Queued, result, error, Some(*after), None),
                Completion::HandBack { recover, reason } => {
                    (JobStatus::Queued, &None, reason, None, Some(*recover))
                }
            };
            rows.statuses.push(status);
            rows.results.push(result.as_ref().map(Value::to_string));
            rows.errors.push(error.clone());
            rows.retry.push(retry.is_some());
            rows.retry_ms
                .push(retry.flatten().map(|after| after.as_secs_f64() * 1000.0));
            rows.hand_back.push(hand_back.is_some());
            rows.recover.push(hand_back.unwrap_or(false));
        }
        rows
    }

    /// One fenced UPDATE for the whole batch; returns the ids it wrote (as one array:
    /// a row each would cost more to decode than the write costs to send), and those
    /// of them an application had cancelled meanwhile.
    ///
    /// The batch comes sorted by id (see `new`), so rows are locked in id order
    /// whatever the plan: two writers never wait on each other in a cycle, and the
    /// heartbeat and the rescuer skip locked rows rather than wait (a deadlock costs a
    /// second of `deadlock_timeout`: long enough to lose leases).
    /// A job an application cancelled while it ran stays `cancelled` (its result and
    /// error are still kept). Handed-back jobs wake the other workers at once.
    /// `dedup_key = q.dedup_key` spares the dedup_key index a costly pass (see
    /// `lease_jobs`).
    async fn write<'e, E>(&self, executor: E) -> Result<Written, sqlx::Error>
    where
        E: sqlx::PgExecutor<'e>,
    {
        let (mut ids, kept_cancelled): (Vec<i64>, Vec<i64>) = sqlx::query_as(
            "WITH c AS ( \
                 SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::dialout_status[], $4::text[], \
                                      $5::text[], $6::bool[], $7::float8[], $8::bool[], $9::bool[]) \
                      AS c(id, token, status, result, error, retry, retry_ms, hand_back, recover)), \
             done AS ( \
                 UPDATE dialout_queue AS q SET \
                     status = CASE WHEN q.status = 'cancelled' THEN q.status ELSE c.status END, \
                     result = coalesce(c.result::jsonb, q.result), \
                     last_error = coalesce(c.error, q.last_error), \
                     run_at = CASE WHEN c.retry THEN now() + coalesce( \
                                  c.retry_ms * interval '1 millisecond', \
                                  dialout_retry_delay(q.attempts, $10, $11)) \
                              ELSE q.run_at END, \
                     ended_at = CASE WHEN q.status = 'cancelled' OR c.status = 'queued' THEN q.ended_at \
                                     ELSE now() END, \
                     attempts = q.attempts - c.hand_back::int, \
                     needs_recovery = c.hand_back AND (q.needs_recovery OR c.recover), \
                     lease_token = NULL, \
                     lease_expires_at = NULL, \
                     dedup_key = q.dedup_key \
                 FROM c \
                 WHERE q.id = ANY($1) AND q.id = c.id AND q.lease_token = c.token \
                 RETURNING q.id, q.kind, q.status, c.hand_back, \
                           q.status = 'cancelled' AND c.status <> 'cancelled' AS kept_cancelled), \
             woken AS ( \
                 SELECT dialout_wake(array_agg(kind)) FROM done \
                 WHERE hand_back AND status = 'queued') \
            SELECT coalesce(array_agg(id), '{}'), \
                   coalesce(array_agg(id) FILTER (WHERE kept_cancelled), '{}') \
            FROM done, (SELECT count(*) FROM woken) AS w",
        )
        .bind(&self.ids)
        .bind(&self.tokens)
        .bind(&self.statuses)
        .bind(&self.results)
        .bind(&self.errors)
        .bind(&self.retry)
        .bind(&self.retry_ms)
        .bind(&self.hand_back)
        .bind(&self.recover)
        .bind(self.retry_base_ms)
        .bind(self.retry_max_ms)
        .fetch_one(executor)
        .await?;
        ids.sort_unstable();
        Ok(Written {
            ids,
            kept_cancelled,
        })
    }
}
