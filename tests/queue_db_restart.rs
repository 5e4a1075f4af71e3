//! PostgreSQL restarted under a running worker: nothing lost, work resumes.
//! This test runs its own private cluster, since it restarts it.

mod support;

use std::time::Duration;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_a_running_worker_loses_nothing() {
    let (_dir, pg, pool) = private_cluster().await;
    let url = pg.url().expect("url");
    let worker = WorkerProcess::spawn(&url, "survivor", &[("DIALOUT__WORKER__LEASE_MS", "5000")]);

    sqlx::query(
        "INSERT INTO dialout_queue (kind, payload) \
         SELECT 'noop', '{\"effect\": true, \"sleep_ms\": 300}' FROM generate_series(1, 3000)",
    )
    .execute(&pool)
    .await
    .unwrap();
    eventually(Duration::from_secs(60), "work to be under way", || async {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM dialout_queue WHERE status = 'finished'")
                .fetch_one(&pool)
                .await
                .ok()?;
        (done > 0).then_some(())
    })
    .await;
    {
        let pg = pg.clone();
        blocking(move || pg.restart()).await.expect("restart");
    }
    all_ended(&pool, Duration::from_secs(120)).await;
    let (finished, with_effect): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'finished'), \
                count(*) FILTER (WHERE EXISTS (SELECT 1 FROM dialout_noop_effect e WHERE e.job_id = q.id)) \
         FROM dialout_queue q",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(finished, 3000, "every job finished");
    assert_eq!(with_effect, 3000, "every job's work was done");

    // Restarted while idle: a new row is still picked up (LISTEN reconnects; polling
    // stands behind it).
    {
        let pg = pg.clone();
        blocking(move || pg.restart()).await.expect("restart");
    }
    let id = eventually(
        Duration::from_secs(30),
        "an insert after the restart",
        || async {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO dialout_queue (kind) VALUES ('noop') RETURNING id",
            )
            .fetch_one(&pool)
            .await
            .ok()
        },
    )
    .await;
    assert_eq!(ended(&pool, id, Duration::from_secs(30)).await, "finished");

    let status = worker.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "the worker kept running and exits 0: {status:?}"
    );
    pool.close().await;
    blocking(move || pg.stop()).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_away_longer_than_a_lease_stops_jobs_and_they_run_again_later() {
    let (_dir, pg, pool) = private_cluster().await;
    let url = pg.url().expect("url");
    let worker = WorkerProcess::spawn(&url, "cut-off", &[]); // lease 1 s
    sqlx::query(
        "INSERT INTO dialout_queue (kind, payload) \
         SELECT 'noop', '{\"effect\": true, \"sleep_ms\": 8000}' FROM generate_series(1, 5)",
    )
    .execute(&pool)
    .await
    .unwrap();
    eventually(Duration::from_secs(30), "all 5 jobs to start", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM dialout_noop_effect")
            .fetch_one(&pool)
            .await
            .ok()?;
        (n == 5).then_some(())
    })
    .await;
    {
        let pg = pg.clone();
        blocking(move || pg.stop()).await.expect("stop");
    }
    // The worker cannot renew its leases: it stops the jobs itself rather than let a
    // rescuer start them a second time while they still run.
    let line = tokio::task::spawn_blocking(move || {
        let line = worker.wait_for_line("stopping their jobs", Duration::from_secs(30));
        (worker, line)
    })
    .await
    .unwrap();
    let (worker, _) = line;
    {
        let pg = pg.clone();
        blocking(move || pg.start()).await.expect("start again");
    }
    all_ended(&pool, Duration::from_secs(60)).await;
    let rows: Vec<(String, i32, i32, i64)> = sqlx::query_as(
        "SELECT status::text, attempts, lost_leases, \
                (SELECT count(*) FROM dialout_noop_effect e WHERE e.job_id = q.id) \
         FROM dialout_queue q ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for (status, attempts, lost, effects) in rows {
        assert_eq!(status, "finished");
        // Stopped once, rescued once, its work done again once. (A handler whose first
        // query hits a connection the restart killed fails retryably: one more attempt.)
        assert_eq!((lost, effects), (1, 2), "lost leases and effects");
        assert!(attempts >= 2, "attempts {attempts}");
    }
    assert!(worker.terminate(Duration::from_secs(30)).success());
    pool.close().await;
    blocking(move || pg.stop()).await.expect("stop");
}
