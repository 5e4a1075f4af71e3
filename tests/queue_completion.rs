//! A job kind's own SQL commits in the same transaction as the final status, or not at
//! all; the fence holds for it too. Retention prunes only old ended rows.

mod support;

use std::sync::Arc;
use std::time::Duration;

use dialout::backoff::Backoff;
use dialout::queue::{self, CompleterSettings, Completion, CompletionHook, Lease, WriteResult};
use dialout::worker::{JobContext, JobHandler, Outcome, Registry, Worker};
use futures_util::future::BoxFuture;
use serde_json::json;
use sqlx::PgPool;
use support::*;

/// Finishes with a row written to `side_effect` in the completion transaction; a payload
/// with `"bad": true` makes that SQL fail.
struct WithSql;

impl JobHandler for WithSql {
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Outcome> {
        Box::pin(async move {
            let id = ctx.id();
            let bad = ctx.payload()["bad"].as_bool().unwrap_or(false);
            let hook: CompletionHook = Arc::new(move |conn| {
                Box::pin(async move {
                    let sql = if bad {
                        "INSERT INTO side_effect (job_id, note) VALUES ($1, NULL)"
                    } else {
                        "INSERT INTO side_effect (job_id, note) VALUES ($1, 'cdr')"
                    };
                    sqlx::query(sql).bind(id).execute(&mut *conn).await?;
                    Ok(())
                })
            });
            Outcome::finished(json!({"ok": true})).with_sql(hook)
        })
    }
}

/// A completer with short retry waits.
fn test_completer(pool: &PgPool) -> (queue::Completer, tokio::task::JoinHandle<()>) {
    queue::Completer::spawn(
        pool.clone(),
        CompleterSettings {
            reconnect: Backoff::from_millis(10, 100),
            drain_deadline: Duration::from_secs(1),
            retry_base: Duration::from_millis(10),
            retry_max: Duration::from_millis(100),
        },
    )
}

async fn side_table(pool: &PgPool) {
    sqlx::query("CREATE TABLE side_effect (job_id bigint NOT NULL, note text NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
}

#[sqlx::test]
async fn a_kinds_sql_commits_with_the_final_status_or_not_at_all(pool: PgPool) {
    side_table(&pool).await;
    let worker = Worker::new(
        settings(),
        pool.clone(),
        Registry::new().with("noop", WithSql),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(worker.run(stop.clone()));
    let good = enqueue(&pool, "noop", json!({})).await;
    let bad = enqueue(&pool, "noop", json!({"bad": true})).await;
    assert_eq!(
        ended(&pool, good, Duration::from_secs(20)).await,
        "finished"
    );
    assert_eq!(
        ended(&pool, bad, Duration::from_secs(20)).await,
        "finished_with_error"
    );
    let notes: Vec<(i64, String)> =
        sqlx::query_as("SELECT job_id, note FROM side_effect ORDER BY job_id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        notes,
        [(good, "cdr".to_owned())],
        "the failed SQL left nothing behind"
    );
    let error: String = sqlx::query_scalar("SELECT last_error FROM dialout_queue WHERE id = $1")
        .bind(bad)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        error.starts_with("the job's outcome could not be recorded:"),
        "{error}"
    );
    assert!(error.contains("null value in column \"note\""), "{error}");
    stop.cancel();
    handle.await.unwrap().unwrap();
}

#[sqlx::test]
async fn a_lease_call_returns_each_job_whole_and_nothing_when_nothing_is_ready(pool: PgPool) {
    let lease = |token| queue::lease_jobs(&pool, "noop", 10, "w", Duration::from_secs(60), token);
    assert!(lease(uuid::Uuid::new_v4()).await.unwrap().is_empty());
    let first = enqueue(&pool, "noop", json!({"echo": true})).await;
    let second = enqueue(&pool, "noop", json!({"sleep_ms": 5})).await;
    let token = uuid::Uuid::new_v4();
    let mut jobs = lease(token).await.unwrap();
    jobs.sort_by_key(|j| j.id);
    let seen: Vec<_> = jobs
        .iter()
        .map(|j| {
            (
                j.id,
                j.kind.as_str(),
                j.payload.clone(),
                j.attempts,
                j.lease_token,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (first, "noop", json!({"echo": true}), 1, token),
            (second, "noop", json!({"sleep_ms": 5}), 1, token),
        ]
    );
    assert!(lease(uuid::Uuid::new_v4()).await.unwrap().is_empty());
}

#[sqlx::test]
async fn a_stale_lease_commits_neither_status_nor_sql(pool: PgPool) {
    side_table(&pool).await;
    let id = enqueue(&pool, "noop", json!({})).await;
    let leased = queue::lease_jobs(
        &pool,
        "noop",
        10,
        "old",
        Duration::from_secs(60),
        uuid::Uuid::new_v4(),
    )
    .await
    .unwrap();
    let stale = leased[0].lease();
    // The lease is taken over (as after a rescue): a new token.
    sqlx::query("UPDATE dialout_queue SET lease_token = gen_random_uuid() WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let (completer, task) = test_completer(&pool);
    let hook: CompletionHook = Arc::new(move |conn| {
        Box::pin(async move {
            sqlx::query("INSERT INTO side_effect VALUES ($1, 'stale')")
                .bind(id)
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
    });
    let finished = Completion::Final {
        status: queue::JobStatus::Finished,
        result: Some(json!({"by": "stale"})),
        error: None,
    };
    let written = completer
        .submit(stale, finished.clone(), Some(hook))
        .await
        .await
        .unwrap();
    assert_eq!(written, WriteResult::LeaseLost);
    let plain = completer.submit(stale, finished, None).await.await.unwrap();
    assert_eq!(plain, WriteResult::LeaseLost);
    let fake = Lease {
        id,
        token: uuid::Uuid::new_v4(),
    };
    let again = completer
        .submit(
            fake,
            Completion::HandBack {
                recover: false,
                reason: None,
            },
            None,
        )
        .await
        .await
        .unwrap();
    assert_eq!(again, WriteResult::LeaseLost);
    drop(completer);
    task.await.unwrap();
    let (status, effects): (String, i64) = sqlx::query_as(
        "SELECT status::text, (SELECT count(*) FROM side_effect) FROM dialout_queue WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), effects), ("trying", 0));
}

#[sqlx::test]
async fn retention_prunes_only_rows_that_ended_long_ago(pool: PgPool) {
    sqlx::query("INSERT INTO dialout_queue (kind) SELECT 'noop' FROM generate_series(1, 3)")
        .execute(&pool)
        .await
        .unwrap();
    // 1: ended long ago; 2: ended just now; 3: still queued (created long ago).
    sqlx::raw_sql(
        "UPDATE dialout_queue SET status = 'cancelled' WHERE id IN (1, 2); \
         UPDATE dialout_queue SET ended_at = now() - interval '3 hours' WHERE id = 1; \
         UPDATE dialout_queue SET created_at = now() - interval '3 hours' WHERE id = 3;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let deleted = queue::prune_finished(&pool, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let left: Vec<i64> = sqlx::query_scalar("SELECT id FROM dialout_queue ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, [2, 3]);
}

#[sqlx::test]
async fn retention_walks_every_old_row_chunk_by_chunk(pool: PgPool) {
    sqlx::query("INSERT INTO dialout_queue (kind) SELECT 'noop' FROM generate_series(1, 12)")
        .execute(&pool)
        .await
        .unwrap();
    // 1-10 created three hours ago; all but 4 (still queued) ended two hours ago.
    // 11 and 12 are new: 11 queued, 12 ended just now.
    sqlx::raw_sql(
        "UPDATE dialout_queue SET status = 'cancelled' WHERE id <> 4 AND id <> 11; \
         UPDATE dialout_queue SET created_at = now() - interval '3 hours' WHERE id <= 10; \
         UPDATE dialout_queue SET ended_at = now() - interval '2 hours' WHERE id <= 10 AND id <> 4;",
    )
    .execute(&pool)
    .await
    .unwrap();
    let deleted = queue::prune_finished_in_chunks(&pool, Duration::from_secs(3600), 3)
        .await
        .unwrap();
    assert_eq!(deleted, 9);
    let left: Vec<i64> = sqlx::query_scalar("SELECT id FROM dialout_queue ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, [4, 11, 12]);
}

struct Panics;

impl JobHandler for Panics {
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Outcome> {
        Box::pin(async move {
            if ctx.payload()["boom"].as_bool().unwrap_or(false) {
                panic!("boom at job {}", ctx.id());
            }
            Outcome::finished(json!({}))
        })
    }
}

#[sqlx::test]
async fn a_panicking_handler_fails_its_job_and_the_worker_goes_on(pool: PgPool) {
    let worker = Worker::new(
        settings(),
        pool.clone(),
        Registry::new().with("noop", Panics),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let handle = tokio::spawn(worker.run(stop.clone()));
    let bad = enqueue(&pool, "noop", json!({"boom": true})).await;
    let good = enqueue(&pool, "noop", json!({})).await;
    assert_eq!(
        ended(&pool, bad, Duration::from_secs(20)).await,
        "finished_with_error"
    );
    assert_eq!(
        ended(&pool, good, Duration::from_secs(20)).await,
        "finished"
    );
    let error: String = sqlx::query_scalar("SELECT last_error FROM dialout_queue WHERE id = $1")
        .bind(bad)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        error,
        format!("internal error: the job handler panicked: boom at job {bad}")
    );
    stop.cancel();
    handle.await.unwrap().unwrap();
}

#[sqlx::test]
async fn outcomes_with_sql_written_together_keep_each_job_whole(pool: PgPool) {
    side_table(&pool).await;
    sqlx::query("INSERT INTO dialout_queue (kind) SELECT 'noop' FROM generate_series(1, 40)")
        .execute(&pool)
        .await
        .unwrap();
    let leased = queue::lease_jobs(
        &pool,
        "noop",
        40,
        "w",
        Duration::from_secs(60),
        uuid::Uuid::new_v4(),
    )
    .await
    .unwrap();
    assert_eq!(leased.len(), 40);
    let bad_id = leased[17].id;
    let (completer, task) = test_completer(&pool);
    // Submitted at once, so the writer takes many in one batch; one hook fails.
    let replies = futures_util::future::join_all(leased.iter().map(|job| {
        let id = job.id;
        let note: Option<&'static str> = (id != bad_id).then_some("cdr");
        let hook: CompletionHook = Arc::new(move |conn| {
            Box::pin(async move {
                sqlx::query("INSERT INTO side_effect VALUES ($1, $2)")
                    .bind(id)
                    .bind(note)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
        });
        let done = Completion::Final {
            status: queue::JobStatus::Finished,
            result: None,
            error: None,
        };
        completer.submit(job.lease(), done, Some(hook))
    }))
    .await;
    for reply in replies {
        assert_eq!(reply.await.unwrap(), WriteResult::Written);
    }
    drop(completer);
    task.await.unwrap();
    let rows: Vec<(i64, String, bool)> = sqlx::query_as(
        "SELECT q.id, q.status::text, EXISTS (SELECT 1 FROM side_effect s WHERE s.job_id = q.id) \
         FROM dialout_queue q ORDER BY q.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for (id, status, effect) in rows {
        if id == bad_id {
            assert_eq!((status.as_str(), effect), ("finished_with_error", false));
        } else {
            assert_eq!((status.as_str(), effect), ("finished", true), "job {id}");
        }
    }
}

#[sqlx::test]
async fn an_outcome_written_over_a_cancel_says_the_row_stayed_cancelled(pool: PgPool) {
    sqlx::query("INSERT INTO dialout_queue (kind) SELECT 'noop' FROM generate_series(1, 3)")
        .execute(&pool)
        .await
        .unwrap();
    let leased = queue::lease_jobs(
        &pool,
        "noop",
        3,
        "w",
        Duration::from_secs(60),
        uuid::Uuid::new_v4(),
    )
    .await
    .unwrap();
    assert_eq!(leased.len(), 3);
    // The application cancels the first two while they run; their attempts end as if
    // they had not heard (finished, a retry); the third ends normally.
    sqlx::query("UPDATE dialout_queue SET status = 'cancelled' WHERE id = ANY($1)")
        .bind([leased[0].id, leased[1].id])
        .execute(&pool)
        .await
        .unwrap();
    let (completer, task) = test_completer(&pool);
    let finished = Completion::Final {
        status: queue::JobStatus::Finished,
        result: None,
        error: None,
    };
    let retry = Completion::Retry {
        result: None,
        error: Some("again".into()),
        after: None,
    };
    let replies = futures_util::future::join_all([
        completer.submit(leased[0].lease(), finished.clone(), None),
        completer.submit(leased[1].lease(), retry, None),
        completer.submit(leased[2].lease(), finished, None),
    ])
    .await;
    let mut results = Vec::new();
    for reply in replies {
        results.push(reply.await.unwrap());
    }
    assert_eq!(
        results,
        [
            WriteResult::KeptCancelled,
            WriteResult::KeptCancelled,
            WriteResult::Written
        ]
    );
    drop(completer);
    task.await.unwrap();
    let statuses: Vec<String> =
        sqlx::query_scalar("SELECT status::text FROM dialout_queue ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(statuses, ["cancelled", "cancelled", "finished"]);
}
