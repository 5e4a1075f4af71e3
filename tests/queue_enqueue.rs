//! Enqueueing from Rust (`queue::enqueue`): the same row an application's INSERT makes.

mod support;

use std::time::Duration;

use dialout::queue::{self, NewJob};
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test]
async fn a_job_gets_the_table_defaults_unless_given_its_columns(pool: PgPool) {
    let plain = queue::enqueue(&pool, &NewJob::new("noop", json!({"echo": true})))
        .await
        .unwrap()
        .expect("an id");
    let row: (String, serde_json::Value, i32, i32, bool) = sqlx::query_as(
        "SELECT kind, payload, priority, max_attempts, run_at <= now() FROM dialout_queue WHERE id = $1",
    )
    .bind(plain)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(row, ("noop".into(), json!({"echo": true}), 0, 5, true));

    let job = NewJob {
        priority: Some(7),
        delay: Some(Duration::from_secs(3600)),
        ..NewJob::new("noop", json!({})).max_attempts(2)
    };
    let given = queue::enqueue(&pool, &job).await.unwrap().expect("an id");
    let row: (i32, i32, bool) = sqlx::query_as(
        "SELECT priority, max_attempts, run_at > now() + interval '59 minutes' FROM dialout_queue WHERE id = $1",
    )
    .bind(given)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(row, (7, 2, true));
}

#[sqlx::test]
async fn a_known_dedup_key_adds_nothing(pool: PgPool) {
    let job = NewJob::new("noop", json!({})).dedup_key("order-17");
    let first = queue::enqueue(&pool, &job).await.unwrap();
    assert!(first.is_some());
    assert_eq!(queue::enqueue(&pool, &job).await.unwrap(), None);

    let other = NewJob::new("noop", json!({})).dedup_key("order-18");
    let ids = queue::enqueue_many(&pool, &[job, other.clone(), other])
        .await
        .unwrap();
    assert_eq!(ids.len(), 1, "only order-18, once: {ids:?}");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM dialout_queue")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 2);
}

#[sqlx::test]
async fn the_database_refuses_bad_jobs_and_a_batch_adds_none(pool: PgPool) {
    let err = queue::enqueue(&pool, &NewJob::new("fax", json!({})))
        .await
        .expect_err("unknown kind");
    let msg = err.as_database_error().expect("a database error").message();
    assert!(msg.contains("fax"), "{msg}");

    let batch = [
        NewJob::new("noop", json!({})),
        NewJob::new("noop", json!({"fail": 1})),
    ];
    queue::enqueue_many(&pool, &batch)
        .await
        .expect_err("a bad payload");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM dialout_queue")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}
