//! Bad input is refused at INSERT time with a message that says what is wrong.

mod support;

use sqlx::PgPool;

async fn refusal(pool: &PgPool, sql: &str) -> String {
    let err = sqlx::query(sql).execute(pool).await.expect_err(sql);
    let db = err.as_database_error().expect("a database error");
    assert_eq!(
        db.code().as_deref(),
        Some("23514"),
        "check_violation for {sql}"
    );
    db.message().to_owned()
}

#[sqlx::test]
async fn unknown_kinds_are_refused_with_the_known_ones_listed(pool: PgPool) {
    let msg = refusal(&pool, "INSERT INTO dialout_queue (kind) VALUES ('fax')").await;
    assert!(
        msg.starts_with("unknown job kind 'fax'; known kinds: "),
        "{msg}"
    );
    assert!(msg.contains("noop"), "{msg}");
}

#[sqlx::test]
async fn payloads_must_be_objects(pool: PgPool) {
    let msg = refusal(
        &pool,
        "INSERT INTO dialout_queue (kind, payload) VALUES ('noop', '[1, 2]')",
    )
    .await;
    assert_eq!(msg, "noop job: payload must be a JSON object, got array");
    let msg = refusal(
        &pool,
        "INSERT INTO dialout_queue (kind, payload) VALUES ('noop', '\"x\"')",
    )
    .await;
    assert_eq!(msg, "noop job: payload must be a JSON object, got string");
    let err = sqlx::query("INSERT INTO dialout_queue (kind, payload) VALUES ('noop', NULL)")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("payload"), "{err}");
}

#[sqlx::test]
async fn workers_columns_cannot_be_set_by_applications(pool: PgPool) {
    let msg = refusal(
        &pool,
        "INSERT INTO dialout_queue (kind, status) VALUES ('noop', 'finished')",
    )
    .await;
    assert_eq!(
        msg,
        "new jobs must be queued (leave status out), got finished"
    );
    let msg = refusal(
        &pool,
        "INSERT INTO dialout_queue (kind, attempts) VALUES ('noop', 3)",
    )
    .await;
    assert_eq!(
        msg,
        "attempts, lease_token and worker_id are written by workers; leave them out"
    );
}

#[sqlx::test]
async fn max_attempts_is_bounded(pool: PgPool) {
    let err = sqlx::query("INSERT INTO dialout_queue (kind, max_attempts) VALUES ('noop', 0)")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("dialout_queue_max_attempts_range"),
        "{err}"
    );
}

#[sqlx::test]
async fn noop_payload_fields_are_checked(pool: PgPool) {
    let cases = [
        (
            r#"{"sleep_ms": "soon"}"#,
            r#"noop job: "sleep_ms" must be a number of milliseconds from 0 to 3600000, got "soon""#,
        ),
        (
            r#"{"sleep_ms": -1}"#,
            r#"noop job: "sleep_ms" must be a number of milliseconds from 0 to 3600000, got -1"#,
        ),
        (
            r#"{"fail": 3}"#,
            r#"noop job: "fail" must be a text (the error to fail with), got 3"#,
        ),
        (
            r#"{"effect": "yes"}"#,
            r#"noop job: "effect" must be true or false, got "yes""#,
        ),
        (
            r#"{"retryable": 1}"#,
            r#"noop job: "retryable" must be true or false, got 1"#,
        ),
        (
            r#"{"echo": "please"}"#,
            r#"noop job: "echo" must be true or false, got "please""#,
        ),
    ];
    for (payload, expected) in cases {
        let sql = format!("INSERT INTO dialout_queue (kind, payload) VALUES ('noop', '{payload}')");
        assert_eq!(refusal(&pool, &sql).await, expected);
    }
}

#[sqlx::test]
async fn a_refused_row_in_a_bulk_insert_refuses_the_statement_and_nothing_lands(pool: PgPool) {
    let msg = refusal(
        &pool,
        "INSERT INTO dialout_queue (kind, payload) VALUES ('noop', '{}'), ('noop', '{\"fail\": 1}')",
    )
    .await;
    assert!(msg.contains("\"fail\""), "{msg}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM dialout_queue")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
}
