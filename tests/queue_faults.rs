//! The network failing at the worst moment.

mod support;

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use support::proxy::CutProxy;
use support::*;

/// The lease statement commits, then the connection drops before its reply arrives:
/// the worker gives the jobs back instead of leaving them leased to nobody (which
/// would burn the only attempt of a `max_attempts = 1` job as "worker lost").
#[sqlx::test]
async fn a_lease_whose_reply_was_lost_is_given_back_not_burned(pool: PgPool) {
    let options = pool.connect_options();
    let proxy = CutProxy::start(format!("{}:{}", options.get_host(), options.get_port())).await;
    let via_proxy = PgPoolOptions::new().max_connections(5).connect_lazy_with(
        options
            .as_ref()
            .clone()
            .host("127.0.0.1")
            .port(proxy.port()),
    );
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
