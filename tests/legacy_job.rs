//! legacy_message as a queue job: INSERT -> worker -> reply (or reason) in the row,
//! against real TCP peers on loopback.

mod support;

use std::time::Duration;

use dialout::jobs::legacy::fault_peer::{FaultMode, FaultPeer, refused_addr};
use dialout::queue::{JobStatus, NewJob};
use serde_json::json;
use sqlx::PgPool;
use support::*;

const WAIT: Duration = Duration::from_secs(30);

fn legacy_settings() -> dialout::config::Settings {
    let mut s = settings();
    s.worker.kinds = vec!["legacy_message".into()];
    s.legacy.connect_timeout_ms = 1000;
    s.legacy.reply_timeout_ms = 1000;
    s
}

async fn row(pool: &PgPool, id: i64) -> (String, i32, Option<String>, serde_json::Value) {
    sqlx::query_as("SELECT status::text, attempts, last_error, coalesce(result, 'null') FROM dialout_queue WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[sqlx::test]
async fn a_message_gets_its_reply_and_every_socket_is_closed(pool: PgPool) {
    let peer = FaultPeer::start(FaultMode::EchoLine).await.unwrap();
    let addr = peer.addr();
    let worker = start_worker(&pool, legacy_settings());
    let text = enqueue(&pool, "legacy_message", json!({
        "host": addr.ip().to_string(), "port": addr.port(), "message": "PING 1\n", "delimiter": "\n"
    }))
    .await;
    // Bytes that are not UTF-8 survive the trip (base64 in, base64 out).
    let binary = enqueue(&pool, "legacy_message", json!({
        "host": addr.ip().to_string(), "port": addr.port(), "message_base64": "/wCAAQo=", "max_bytes": 4
    }))
    .await;
    assert_eq!(ended(&pool, text, WAIT).await, "finished");
    let (_, _, _, result) = row(&pool, text).await;
    assert_eq!(result["reply_text"], "PING 1");
    assert_eq!(result["reply_bytes"], 6);
    assert_eq!(ended(&pool, binary, WAIT).await, "finished");
    let (_, _, _, result) = row(&pool, binary).await;
    assert_eq!(result["reply_base64"], "/wCAAQ==");
    assert!(result["reply_text"].is_null(), "0xff is not UTF-8");
    let (counts, all_closed) = peer.wait_closed(2, WAIT).await;
    assert!(all_closed, "{counts:?}");
    worker.shutdown().await;
}

#[sqlx::test]
async fn refused_is_retried_then_ends_with_the_reason(pool: PgPool) {
    let addr = refused_addr().unwrap();
    let payload = json!({"host": addr.ip().to_string(), "port": addr.port(), "message": "x"});
    let job = NewJob::new("legacy_message", payload).max_attempts(2);
    let row = run_to_end(&pool, legacy_settings(), job).await;
    assert_eq!(row.status, JobStatus::FinishedWithError);
    assert_eq!(row.attempts, 2, "refused can heal: retried");
    assert_eq!(
        row.last_error.unwrap(),
        format!("connection refused by {addr}")
    );
    assert_eq!(row.result.unwrap()["error_kind"], "refused");
}

#[sqlx::test]
async fn a_silent_host_times_out_and_says_in_which_phase(pool: PgPool) {
    let peer = FaultPeer::start(FaultMode::Silent).await.unwrap();
    let addr = peer.addr();
    let payload = json!({"host": addr.ip().to_string(), "port": addr.port(), "message": "hello?\n", "delimiter": "\n", "reply_timeout_ms": 200});
    let job = NewJob::new("legacy_message", payload).max_attempts(1);
    let row = run_to_end(&pool, legacy_settings(), job).await;
    assert_eq!(row.status, JobStatus::Timedout);
    assert!(
        row.last_error
            .unwrap()
            .starts_with("timed out after 200 ms while reading the reply")
    );
    assert_eq!(row.result.unwrap()["timeout_phase"], "reading the reply");
    let (counts, all_closed) = peer.wait_closed(1, WAIT).await;
    assert!(all_closed, "the timed-out socket was closed: {counts:?}");
}

#[sqlx::test]
async fn many_jobs_over_misbehaving_hosts_all_end_right_and_leave_no_socket(pool: PgPool) {
    let echo = FaultPeer::start(FaultMode::EchoLine).await.unwrap();
    let reset = FaultPeer::start(FaultMode::ResetMidReply).await.unwrap();
    let flood = FaultPeer::start(FaultMode::Flood { bytes: 4096 })
        .await
        .unwrap();
    let early = FaultPeer::start(FaultMode::CloseBeforeRead).await.unwrap();
    let mut s = legacy_settings();
    s.legacy.max_reply_bytes = 1024;
    let worker = start_worker(&pool, s);
    let cases = [
        (&echo, json!({"delimiter": "\n"}), "finished"),
        (&reset, json!({"delimiter": "\n"}), "finished_with_error"),
        (&flood, json!({}), "finished_with_error"),
        (&early, json!({"delimiter": "\n"}), "finished_with_error"),
    ];
    let mut ids = Vec::new();
    for round in 0..50 {
        for (peer, framing, expected) in &cases {
            let mut payload = json!({"host": "127.0.0.1", "port": peer.addr().port(), "message": format!("m{round}\n")});
            for (k, v) in framing.as_object().unwrap() {
                payload[k] = v.clone();
            }
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO dialout_queue (kind, payload, max_attempts) VALUES ('legacy_message', $1, 1) RETURNING id",
            )
            .bind(payload)
            .fetch_one(&pool)
            .await
            .unwrap();
            ids.push((id, *expected));
        }
    }
    all_ended(&pool, Duration::from_secs(60)).await;
    for (id, expected) in ids {
        let (status, _, error, _) = row(&pool, id).await;
        assert_eq!(status, expected, "job {id}: {error:?}");
    }
    let flooded: String = sqlx::query_scalar(
        "SELECT last_error FROM dialout_queue WHERE payload->>'port' = $1 LIMIT 1",
    )
    .bind(flood.addr().port().to_string())
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(flooded.contains("over the cap of 1024 bytes"), "{flooded}");
    for peer in [&echo, &reset, &flood, &early] {
        let (counts, all_closed) = peer.wait_closed(50, WAIT).await;
        assert!(all_closed, "{counts:?}");
    }
    worker.shutdown().await;
}

#[sqlx::test]
async fn a_worker_leases_only_the_kinds_it_runs(pool: PgPool) {
    let worker = start_worker(&pool, settings()); // noop only
    let legacy = enqueue(
        &pool,
        "legacy_message",
        json!({"host": "127.0.0.1", "port": 9, "message": "x"}),
    )
    .await;
    let noop = enqueue(&pool, "noop", json!({})).await;
    assert_eq!(ended(&pool, noop, WAIT).await, "finished");
    let (status, attempts, _, _) = row(&pool, legacy).await;
    assert_eq!((status.as_str(), attempts), ("queued", 0));
    worker.shutdown().await;
}

#[sqlx::test]
async fn bad_legacy_payloads_are_refused_at_insert(pool: PgPool) {
    let cases = [
        (
            json!({"port": 7001, "message": "x"}),
            "legacy_message job: \"host\" must be a host name or IP address, got nothing",
        ),
        (
            json!({"host": "a b", "port": 7001, "message": "x"}),
            "legacy_message job: \"host\" must be a host name or IP address, got \"a b\"",
        ),
        (
            json!({"host": "h", "port": 70000, "message": "x"}),
            "legacy_message job: \"port\" must be an integer from 1 to 65535, got 70000",
        ),
        (
            json!({"host": "h", "port": "7001", "message": "x"}),
            "legacy_message job: \"port\" must be an integer from 1 to 65535, got \"7001\"",
        ),
        (
            json!({"host": "h", "port": 1}),
            "legacy_message job: the payload needs exactly one of \"message\" (text) or \"message_base64\" (bytes)",
        ),
        (
            json!({"host": "h", "port": 1, "message_base64": "%%%"}),
            "legacy_message job: \"message_base64\" must be standard base64 with padding",
        ),
        (
            json!({"host": "h", "port": 1, "message": "x", "delimiter": "\n", "max_bytes": 3}),
            "legacy_message job: give at most one way the reply ends, got delimiter, max_bytes",
        ),
        (
            json!({"host": "h", "port": 1, "message": "x", "length_prefix": 3}),
            "legacy_message job: \"length_prefix\" must be 1, 2 or 4 (bytes, big endian), got 3",
        ),
        (
            json!({"host": "h", "port": 1, "message": "x", "expect_reply": false, "delimiter": "\n"}),
            "legacy_message job: with \"expect_reply\": false there is no reply, so no framing and no \"reply_timeout_ms\"",
        ),
        (
            json!({"host": "h", "port": 1, "message": "x", "reply_timeout_ms": 0}),
            "legacy_message job: reply_timeout_ms must be an integer number of milliseconds from 1 to 600000",
        ),
        (
            json!({"host": "h", "port": 1, "message": "x", "colour": "blue"}),
            "legacy_message job: unknown payload field(s) colour",
        ),
        (
            json!({"host": "h", "port": 1, "message": null}),
            "legacy_message job: message must not be null (leave it out instead)",
        ),
    ];
    for (payload, expected) in cases {
        assert_eq!(
            insert_refused(&pool, "legacy_message", &payload).await,
            expected,
            "{payload}"
        );
    }
    // And a good one goes in.
    sqlx::query("INSERT INTO dialout_queue (kind, payload) VALUES ('legacy_message', $1)")
        .bind(json!({"host": "10.0.0.7", "port": 7001, "message": "PING\n", "delimiter": "\n", "reply_timeout_ms": 5000}))
        .execute(&pool)
        .await
        .unwrap();
}
