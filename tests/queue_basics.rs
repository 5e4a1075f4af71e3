//! INSERT -> worker -> final status, visible in SQL; retries, scheduling, dedup,
//! cancellation.

mod support;

use std::time::Duration;

use dialout::queue::{JobStatus, NewJob};
use serde_json::json;
use sqlx::PgPool;
use support::*;

const WAIT: Duration = Duration::from_secs(20);

#[sqlx::test]
async fn an_inserted_job_runs_and_finishes(pool: PgPool) {
    let worker = start_worker(&pool, settings());
    let id = enqueue(&pool, "noop", json!({"echo": true})).await;
    let quiet = enqueue(&pool, "noop", json!({})).await;
    assert_eq!(ended(&pool, id, WAIT).await, "finished");
    assert_eq!(ended(&pool, quiet, WAIT).await, "finished");
    let quiet_result: Option<serde_json::Value> =
        sqlx::query_scalar("SELECT result FROM dialout_queue WHERE id = $1")
            .bind(quiet)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        quiet_result, None,
        "a no-op without echo leaves result empty"
    );
    let (attempts, worker_id, started, result): (i32, Option<String>, bool, serde_json::Value) = sqlx::query_as(
        "SELECT attempts, worker_id, started_at IS NOT NULL, result FROM dialout_queue WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(attempts, 1);
    assert!(worker_id.is_some());
    assert!(started);
    assert_eq!(result["attempt"], 1);
    worker.shutdown().await;
}

#[sqlx::test]
async fn a_permanent_failure_ends_with_its_reason(pool: PgPool) {
    let job = NewJob::new("noop", json!({"fail": "the far end said no"}));
    let row = run_to_end(&pool, settings(), job).await;
    assert_eq!(row.status, JobStatus::FinishedWithError);
    assert_eq!(row.attempts, 1, "a permanent error is not retried");
    assert_eq!(row.last_error.as_deref(), Some("the far end said no"));
}

#[sqlx::test]
async fn a_retryable_failure_is_retried_until_max_attempts(pool: PgPool) {
    let job = NewJob::new("noop", json!({"fail": "flaky", "retryable": true})).max_attempts(3);
    let row = run_to_end(&pool, settings(), job).await;
    assert_eq!(row.status, JobStatus::FinishedWithError);
    assert_eq!(row.attempts, 3);
    assert_eq!(row.last_error.as_deref(), Some("flaky"));
}

#[sqlx::test]
async fn run_at_in_the_future_waits(pool: PgPool) {
    let worker = start_worker(&pool, settings());
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO dialout_queue (kind, run_at) VALUES ('noop', now() + interval '1500 milliseconds') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(ended(&pool, id, WAIT).await, "finished");
    let early: bool =
        sqlx::query_scalar("SELECT started_at < run_at FROM dialout_queue WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!early, "a scheduled job started before its run_at");
    worker.shutdown().await;
}

#[sqlx::test]
async fn higher_priority_runs_first(pool: PgPool) {
    sqlx::query(
        "INSERT INTO dialout_queue (kind, priority) SELECT 'noop', 0 FROM generate_series(1, 5)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let urgent: i64 = sqlx::query_scalar(
        "INSERT INTO dialout_queue (kind, priority) VALUES ('noop', 10) RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let mut s = settings();
    s.kinds.get_mut("noop").unwrap().concurrency = 1;
    let worker = start_worker(&pool, s);
    eventually(WAIT, "all jobs to end", || async {
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM dialout_queue WHERE ended_at IS NULL")
                .fetch_one(&pool)
                .await
                .unwrap();
        (open == 0).then_some(())
    })
    .await;
    let first: i64 =
        sqlx::query_scalar("SELECT id FROM dialout_queue ORDER BY started_at, id LIMIT 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(first, urgent);
    worker.shutdown().await;
}

#[sqlx::test]
async fn lease_streams_never_run_more_than_the_kinds_concurrency(pool: PgPool) {
    // Four lease calls may be under way at once for one kind; together they must never
    // start more jobs than the kind may run (room is reserved before each call). Each
    // job records its start, then works 100 ms: jobs that started within 80 ms of one
    // another were running at the same time.
    sqlx::query(
        "INSERT INTO dialout_queue (kind, payload) \
         SELECT 'noop', '{\"sleep_ms\": 100, \"effect\": true}' FROM generate_series(1, 24)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let mut s = settings();
    s.worker.lease_streams = 4;
    s.worker.lease_batch = 2;
    s.kinds.get_mut("noop").unwrap().concurrency = 3;
    let worker = start_worker(&pool, s);
    all_ended(&pool, WAIT).await;
    let (effects, most_at_once): (i64, i64) = sqlx::query_as(
        "SELECT count(*), max((SELECT count(*) FROM dialout_noop_effect AS f \
                               WHERE f.at >= e.at AND f.at < e.at + interval '80 ms')) \
         FROM dialout_noop_effect AS e",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(effects, 24, "every job ran once");
    assert!(most_at_once >= 2, "jobs ran side by side");
    assert!(
        most_at_once <= 3,
        "{most_at_once} jobs ran at once with concurrency 3"
    );
    worker.shutdown().await;
}

#[sqlx::test]
async fn shutdown_while_leasing_leaves_no_job_running(pool: PgPool) {
    // Stop while lease calls are in flight: jobs a call brought back after apalis stopped
    // taking them must go back to the queue with the rest, not wait for their lease to
    // expire (which would count an attempt and mark them for recovery).
    sqlx::query("INSERT INTO dialout_queue (kind) SELECT 'noop' FROM generate_series(1, 20000)")
        .execute(&pool)
        .await
        .unwrap();
    let mut s = settings();
    s.worker.lease_streams = 4;
    s.worker.lease_batch = 50;
    s.kinds.get_mut("noop").unwrap().concurrency = 200;
    let worker = start_worker(&pool, s);
    eventually(WAIT, "some jobs to finish", || async {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM dialout_queue WHERE status = 'finished'")
                .fetch_one(&pool)
                .await
                .unwrap();
        (done >= 500).then_some(())
    })
    .await;
    worker.shutdown().await;
    let (running, recovering): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'trying'), \
                count(*) FILTER (WHERE needs_recovery) \
         FROM dialout_queue",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (running, recovering),
        (0, 0),
        "jobs left running after shutdown"
    );
}

#[sqlx::test]
async fn dedup_key_makes_enqueueing_idempotent(pool: PgPool) {
    for _ in 0..3 {
        sqlx::query(
            "INSERT INTO dialout_queue (kind, dedup_key) VALUES ('noop', 'order-17') \
             ON CONFLICT (dedup_key) DO NOTHING",
        )
        .execute(&pool)
        .await
        .unwrap();
    }
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dialout_queue WHERE dedup_key = 'order-17'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(n, 1);
}

#[sqlx::test]
async fn enqueueing_inside_the_applications_transaction_just_works(pool: PgPool) {
    let worker = start_worker(&pool, settings());
    let mut tx = pool.begin().await.unwrap();
    let id: i64 =
        sqlx::query_scalar("INSERT INTO dialout_queue (kind) VALUES ('noop') RETURNING id")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    // Rolled back: never runs.
    tx.rollback().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let kept: i64 =
        sqlx::query_scalar("INSERT INTO dialout_queue (kind) VALUES ('noop') RETURNING id")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ended(&pool, kept, WAIT).await, "finished");
    let gone: i64 = sqlx::query_scalar("SELECT count(*) FROM dialout_queue WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(gone, 0);
    worker.shutdown().await;
}

#[sqlx::test]
async fn a_cancelled_queued_job_never_starts(pool: PgPool) {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO dialout_queue (kind, payload, run_at) VALUES ('noop', '{\"effect\": true}', now() + interval '300 milliseconds') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE dialout_queue SET status = 'cancelled' WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let worker = start_worker(&pool, settings());
    // A later job that finishes proves the worker looked at the queue after run_at.
    let later: i64 = sqlx::query_scalar(
        "INSERT INTO dialout_queue (kind, run_at) VALUES ('noop', now() + interval '600 milliseconds') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(ended(&pool, later, WAIT).await, "finished");
    let (status, attempts, effects) = status_attempts_effects(&pool, id).await;
    assert_eq!((status.as_str(), attempts, effects), ("cancelled", 0, 0));
    worker.shutdown().await;
}

#[sqlx::test]
async fn a_running_job_is_told_of_its_cancellation(pool: PgPool) {
    let worker = start_worker(&pool, settings());
    let id = enqueue(&pool, "noop", json!({"sleep_ms": 60000})).await;
    eventually(WAIT, "the job to start", || async {
        let s: String = sqlx::query_scalar("SELECT status::text FROM dialout_queue WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
        (s == "trying").then_some(())
    })
    .await;
    sqlx::query("UPDATE dialout_queue SET status = 'cancelled' WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    // The handler stops (it would otherwise sleep a minute) and the lease is released.
    eventually(WAIT, "the cancelled job's lease to be released", || async {
        let released: bool =
            sqlx::query_scalar("SELECT lease_token IS NULL FROM dialout_queue WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap();
        released.then_some(())
    })
    .await;
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status::text, last_error FROM dialout_queue WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(status, "cancelled");
    assert_eq!(
        error.as_deref(),
        Some("cancelled by the application while it ran")
    );
    worker.shutdown().await;
}

#[sqlx::test]
async fn an_ended_job_cannot_be_cancelled(pool: PgPool) {
    let worker = start_worker(&pool, settings());
    let id = enqueue(&pool, "noop", json!({})).await;
    assert_eq!(ended(&pool, id, WAIT).await, "finished");
    let err = sqlx::query("UPDATE dialout_queue SET status = 'cancelled' WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap_err();
    let msg = err.as_database_error().unwrap().message().to_owned();
    assert_eq!(
        msg,
        format!(
            "job {id} already ended as finished; only queued, trying or established jobs can be cancelled"
        )
    );
    worker.shutdown().await;
}
