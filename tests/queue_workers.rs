//! Worker processes sharing one queue: exactly-once under normal operation, rescue
//! after kill -9, fencing of a stale worker, graceful shutdown.

mod support;

use std::time::Duration;

use sqlx::PgPool;
use support::*;

/// Waits until `n` worker processes are listening on this database.
async fn listening(pool: &PgPool, n: i64) {
    eventually(Duration::from_secs(30), "workers to listen", || async {
        let got: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .fetch_one(pool)
        .await
        .ok()?;
        (got >= n).then_some(())
    })
    .await
}

#[sqlx::test]
async fn four_worker_processes_drain_20000_jobs_exactly_once(pool: PgPool) {
    let url = db_url(&pool).await;
    let workers: Vec<WorkerProcess> = (1..=4)
        // Leases long enough that a CPU-starved CI machine running the whole suite
        // in parallel does not lose them, and fewer jobs at once than the pool can
        // serve in time (each writes its effect row): this test is about sharing,
        // not rescue or retries.
        .map(|i| {
            WorkerProcess::spawn(
                &url,
                &format!("w{i}"),
                &[
                    ("DIALOUT__WORKER__LEASE_MS", "5000"),
                    ("DIALOUT__KINDS__NOOP__CONCURRENCY", "200"),
                ],
            )
        })
        .collect();
    listening(&pool, 4).await;
    sqlx::query(
        "INSERT INTO dialout_queue (kind, payload) \
         SELECT 'noop', '{\"effect\": true}' FROM generate_series(1, 20000)",
    )
    .execute(&pool)
    .await
    .unwrap();
    all_ended(&pool, Duration::from_secs(180)).await;

    let (finished, once, first_try, workers_used): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'finished'), \
                count(*) FILTER (WHERE (SELECT count(*) FROM dialout_noop_effect e WHERE e.job_id = q.id) = 1), \
                count(*) FILTER (WHERE attempts = 1), \
                count(DISTINCT worker_id) \
         FROM dialout_queue q",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let effects: i64 = sqlx::query_scalar("SELECT count(*) FROM dialout_noop_effect")
        .fetch_one(&pool)
        .await
        .unwrap();
    let spread: Vec<(i32, i32, Option<String>, i64)> = sqlx::query_as(
        "SELECT attempts, lost_leases, left(last_error, 60), count(*) FROM dialout_queue GROUP BY 1, 2, 3",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    eprintln!("attempts, lost leases, last error, jobs: {spread:?}");
    assert_eq!(finished, 20000);
    assert_eq!(effects, 20000, "every job's effect happened exactly once");
    assert_eq!(once, 20000);
    assert_eq!(first_try, 20000);
    assert!(
        workers_used >= 2,
        "the work was shared (by {workers_used} workers)"
    );
    for w in workers {
        assert!(w.terminate(Duration::from_secs(20)).success());
    }
}

#[sqlx::test]
async fn jobs_of_a_killed_worker_are_rescued_and_max_attempts_1_is_not_rerun(pool: PgPool) {
    let url = db_url(&pool).await;
    sqlx::query(
        "INSERT INTO dialout_queue (kind, payload, max_attempts) \
         SELECT 'noop', '{\"effect\": true, \"sleep_ms\": 3000}', 3 FROM generate_series(1, 5)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let single: i64 = sqlx::query_scalar(
        "INSERT INTO dialout_queue (kind, payload, max_attempts) \
         VALUES ('noop', '{\"effect\": true, \"sleep_ms\": 3000}', 1) RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let doomed = WorkerProcess::spawn(&url, "doomed", &[]);
    eventually(
        Duration::from_secs(30),
        "the doomed worker to start all 6 jobs",
        || async {
            let n: i64 =
                sqlx::query_scalar("SELECT count(DISTINCT job_id) FROM dialout_noop_effect")
                    .fetch_one(&pool)
                    .await
                    .ok()?;
            (n == 6).then_some(())
        },
    )
    .await;
    doomed.signal("KILL");

    let rescuer = WorkerProcess::spawn(&url, "rescuer", &[]);
    all_ended(&pool, Duration::from_secs(60)).await;

    let (status, error, effects, lost): (String, String, i64, i32) = sqlx::query_as(
        "SELECT status::text, last_error, (SELECT count(*) FROM dialout_noop_effect WHERE job_id = $1), lost_leases \
         FROM dialout_queue WHERE id = $1",
    )
    .bind(single)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(status, "finished_with_error");
    assert_eq!(
        error,
        "worker lost: doomed stopped renewing its lease during attempt 1 of 1"
    );
    assert_eq!(effects, 1, "a job with max_attempts = 1 is not run again");
    assert_eq!(lost, 1);

    let rows: Vec<(String, Option<String>, i32, i32)> = sqlx::query_as(
        "SELECT status::text, worker_id, attempts, lost_leases FROM dialout_queue WHERE id <> $1",
    )
    .bind(single)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 5);
    for (status, worker, attempts, lost) in rows {
        assert_eq!(status, "finished");
        assert_eq!(worker.as_deref(), Some("rescuer"));
        assert_eq!((attempts, lost), (2, 1));
    }
    assert!(rescuer.terminate(Duration::from_secs(20)).success());
}

#[sqlx::test]
async fn a_stale_worker_cannot_complete_a_job_it_lost(pool: PgPool) {
    let url = db_url(&pool).await;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO dialout_queue (kind, payload) VALUES ('noop', '{\"sleep_ms\": 1500, \"echo\": true}') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let stale = WorkerProcess::spawn(&url, "stale", &[]);
    running_on(&pool, id, "stale").await;
    stale.signal("STOP"); // paused: no heartbeats, the lease runs out

    let thief = WorkerProcess::spawn(&url, "thief", &[]);
    running_on(&pool, id, "thief").await;
    stale.signal("CONT");
    // The stale attempt ends one way or the other, and says its write was fenced out.
    stale.wait_for_line("lease lost", Duration::from_secs(20));
    all_ended(&pool, Duration::from_secs(30)).await;
    let (status, worker, result, attempts): (String, String, serde_json::Value, i32) =
        sqlx::query_as(
            "SELECT status::text, worker_id, result, attempts FROM dialout_queue WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "finished");
    assert_eq!(worker, "thief");
    assert_eq!(
        result["worker"], "thief",
        "the stale worker's outcome must not land"
    );
    assert_eq!(attempts, 2);
    assert!(thief.terminate(Duration::from_secs(20)).success());
    assert!(stale.terminate(Duration::from_secs(20)).success());
}

#[sqlx::test]
async fn sigterm_lets_short_jobs_finish_and_hands_back_long_ones(pool: PgPool) {
    let url = db_url(&pool).await;
    let short: i64 = sqlx::query_scalar(
        "INSERT INTO dialout_queue (kind, payload) VALUES ('noop', '{\"sleep_ms\": 500, \"effect\": true}') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let long: i64 = sqlx::query_scalar(
        "INSERT INTO dialout_queue (kind, payload) VALUES ('noop', '{\"sleep_ms\": 600000, \"effect\": true}') RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let worker = WorkerProcess::spawn(
        &url,
        "graceful",
        &[("DIALOUT__WORKER__SHUTDOWN_GRACE_MS", "1500")],
    );
    eventually(Duration::from_secs(30), "both jobs to start", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(DISTINCT job_id) FROM dialout_noop_effect")
            .fetch_one(&pool)
            .await
            .ok()?;
        (n == 2).then_some(())
    })
    .await;
    let status = worker.terminate(Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}");

    let (s, attempts): (String, i32) =
        sqlx::query_as("SELECT status::text, attempts FROM dialout_queue WHERE id = $1")
            .bind(short)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((s.as_str(), attempts), ("finished", 1));
    let (s, attempts, lease, ended): (
        String,
        i32,
        Option<uuid::Uuid>,
        Option<chrono::DateTime<chrono::Utc>>,
    ) = sqlx::query_as(
        "SELECT status::text, attempts, lease_token, ended_at FROM dialout_queue WHERE id = $1",
    )
    .bind(long)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(s, "queued", "handed back");
    assert_eq!(attempts, 0, "the interrupted attempt is not counted");
    assert!(lease.is_none() && ended.is_none());
}
