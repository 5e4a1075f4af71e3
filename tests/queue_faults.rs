//! The network failing at the worst moment.

mod support;

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use support::proxy::{CutProxy, Upstream};
use support::*;

/// The lease statement commits, then the connection drops before its reply arrives:
/// the worker gives the jobs back instead of leaving them leased to nobody (which
/// would burn the only attempt of a `max_attempts = 1` job as "worker lost").
#[sqlx::test]
async fn a_lease_whose_reply_was_lost_is_given_back_not_burned(pool: PgPool) {
    let proxy = CutProxy::start(Upstream::of(&pool.connect_options())).await;
    let via_proxy = PgPoolOptions::new()
        .max_connections(5)
        .connect_lazy_with(proxy.options_for(&db_url(&pool).await));
    // The lease's reply is the only one that carries the payload.
    proxy.cut_reply_containing(b"lose-this-lease-reply");
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO dialout_queue (kind, payload, max_attempts) VALUES ('noop', $1, 1) RETURNING id",
    )
    .bind(json!({"tag": "lose-this-lease-reply"}))
    .fetch_one(&pool)
    .await
    .unwrap();

    let worker = start_worker(&via_proxy, settings());
    assert_eq!(ended(&pool, id, Duration::from_secs(20)).await, "finished");
    assert_eq!(proxy.cuts(), 1, "the lease reply was cut once");
    let (attempts, lost_leases, last_error): (i32, i32, Option<String>) =
        sqlx::query_as("SELECT attempts, lost_leases, last_error FROM dialout_queue WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(attempts, 1, "the lost lease was not counted as an attempt");
    assert_eq!(lost_leases, 0, "nobody had to rescue it");
    assert_eq!(last_error, None);
    worker.shutdown().await;
}

/// SIGTERM while a finished job's outcome is still being written (another session
/// holds its row, so the write waits): the outcome belongs to the completer, and the
/// shutdown must not hand the job back as well (which would run it again).
#[sqlx::test]
async fn a_shutdown_does_not_hand_back_a_job_whose_outcome_is_being_written(pool: PgPool) {
    let mut s = settings();
    s.worker.shutdown_grace_ms = 200;
    s.worker.lease_ms = 60_000; // nothing expires while the row is held
    s.worker.id = "w".into();
    let worker = start_worker(&pool, s);
    let id = enqueue(&pool, "noop", json!({"sleep_ms": 300, "effect": true})).await;
    running_on(&pool, id, "w").await;
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM dialout_queue WHERE id = $1 FOR UPDATE")
        .bind(id)
        .execute(&mut *holder)
        .await
        .unwrap();
    // The handler finishes and the completer's write waits for the row.
    backends(
        &pool,
        "the outcome's write to wait for the row",
        "wait_event_type = 'Lock'",
        |n| n >= 1,
    )
    .await;

    let shutdown = tokio::spawn(worker.shutdown());
    // The worker has decided what to hand back once its LISTEN connection closes.
    backends(
        &pool,
        "the worker to end its LISTEN connection",
        "query ILIKE 'LISTEN%'",
        |n| n == 0,
    )
    .await;
    holder.rollback().await.unwrap();
    let summary = shutdown.await.unwrap();

    assert_eq!(summary.handed_back, 0, "nothing was handed back");
    let (status, attempts, effects) = status_attempts_effects(&pool, id).await;
    assert_eq!(status, "finished");
    assert_eq!((attempts, effects), (1, 1), "ran once");
}

/// Waits until the number of this database's other sessions matching `filter` passes
/// `check`.
async fn backends(pool: &PgPool, what: &str, filter: &str, check: impl Fn(i64) -> bool) {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND {filter}"
    );
    eventually(Duration::from_secs(30), what, || async {
        let n: i64 = sqlx::query_scalar(&sql).fetch_one(pool).await.unwrap();
        check(n).then_some(())
    })
    .await;
}
