//! `dialout demo`: sample work for each kind, a worker, and the table once everything
//! has ended.

use std::time::Duration;

use serde_json::{Value, json};

use crate::app::{self, AppError};
use crate::config::Settings;
use crate::jobs;
use crate::jobs::legacy::fault_peer::{FaultMode, FaultPeer};
use crate::queue::{self, NewJob, status};
use crate::worker::Worker;

/// Enqueues the samples, runs a worker for every kind this build has until they end
/// (at most a minute), prints them.
pub async fn run(settings: &mut Settings) -> Result<(), AppError> {
    let pool = app::pool(settings)?;
    queue::migrate(&pool).await?;
    let batch = uuid::Uuid::new_v4().simple().to_string();
    // A stand-in legacy host: answers one line and closes.
    let legacy_host = FaultPeer::start(FaultMode::EchoLine)
        .await
        .map_err(|e| AppError::Usage(format!("cannot start the demo's TCP peer: {e}")))?;
    let mut ids = Vec::new();
    for (kind, payload) in samples(legacy_host.addr().port()) {
        let job = NewJob::new(kind, payload)
            .max_attempts(2)
            .dedup_key(format!("demo-{batch}-{}", ids.len()));
        let id = queue::enqueue(&pool, &job)
            .await?
            .ok_or_else(|| AppError::Usage(format!("{job:?} was enqueued before")))?;
        ids.push(id);
    }
    println!("enqueued jobs {ids:?}; running a worker until they end");
    let registry = jobs::registry(settings)?;
    let mut worker_settings = settings.clone();
    worker_settings.worker.retry_base_ms = 200;
    worker_settings.worker.retry_max_ms = 1000;
    worker_settings.worker.kinds = registry.kinds().map(str::to_owned).collect();
    worker_settings.worker.kinds.sort();
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = Worker::new(worker_settings, pool.clone(), registry);
    let handle = tokio::spawn(worker.run(stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM dialout_queue WHERE id = ANY($1) AND ended_at IS NULL",
        )
        .bind(&ids)
        .fetch_one(&pool)
        .await?;
        if open == 0 || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let _ = handle.await;
    let mut rows = Vec::new();
    for id in &ids {
        if let Some(row) = status::job(&pool, *id).await? {
            rows.push(row);
        }
    }
    super::jobs::print_jobs(&rows);
    Ok(())
}

/// Work for each kind: successes, a permanent and a retried failure, a legacy round
/// trip to the peer on `legacy_port`, a small roster.
fn samples(legacy_port: u16) -> Vec<(&'static str, Value)> {
    vec![
        ("noop", json!({"echo": true})),
        ("noop", json!({"sleep_ms": 300})),
        ("noop", json!({"fail": "a permanent failure, on purpose"})),
        (
            "noop",
            json!({"fail": "a failure that heals never", "retryable": true}),
        ),
        (
            "legacy_message",
            json!({"host": "127.0.0.1", "port": legacy_port, "message": "HELLO LEGACY\n", "delimiter": "\n"}),
        ),
        (
            "roster_import",
            json!({
                "roster": "1 Pedro Pedroso pedro@example.com Cobranzas\n2 Juan Perez juan@example.com Cobranzas\n3 Juan Gonzalez juang@example.com Cobranzas\n4 Un boludo No tiene Por ahi\n",
                "email_domain": "example.com"
            }),
        ),
    ]
}
