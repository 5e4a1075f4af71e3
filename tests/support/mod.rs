//! Helpers the integration tests share: settings with short leases, an in-process
//! worker, bounded waits on the database.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use dialout::config::Settings;
use dialout::worker::{RunSummary, Worker};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Defaults with everything short, so tests wait milliseconds, not minutes.
pub fn settings() -> Settings {
    let mut s =
        Settings::load_with_env(None, Vec::<(String, String)>::new()).expect("defaults load");
    s.worker.lease_ms = 1000;
    s.worker.poll_interval_ms = 100;
    s.worker.rescue_interval_ms = 200;
    s.worker.shutdown_grace_ms = 2000;
    s.worker.retry_base_ms = 20;
    s.worker.retry_max_ms = 200;
    s.worker.reconnect_min_ms = 20;
    s.worker.reconnect_max_ms = 300;
    s.worker.kinds = vec!["noop".into()];
    s.worker.migrate_on_start = false;
    s.retention.keep_hours = 0;
    s
}

pub struct RunningWorker {
    pub stop: CancellationToken,
    pub handle: tokio::task::JoinHandle<RunSummary>,
}

impl RunningWorker {
    pub async fn shutdown(self) -> RunSummary {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("worker stops within 30 s")
            .expect("worker task did not panic")
    }
}

/// Logs go to the test's captured output; RUST_LOG picks what.
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub fn start_worker(pool: &PgPool, settings: Settings) -> RunningWorker {
    logs();
    let worker = Worker::new(settings, pool.clone(), dialout::jobs::registry());
    let stop = CancellationToken::new();
    let token = stop.clone();
    let handle = tokio::spawn(async move { worker.run(token).await.expect("worker runs") });
    RunningWorker { stop, handle }
}

/// Polls `check` until it returns `Some`, for at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until job `id` has ended; returns its status.
pub async fn ended(pool: &PgPool, id: i64, within: Duration) -> String {
    eventually(within, &format!("job {id} to end"), || async {
        sqlx::query_scalar::<_, String>(
            "SELECT status::text FROM dialout_queue WHERE id = $1 AND ended_at IS NOT NULL",
        )
        .bind(id)
        .fetch_optional(pool)
        .await
        .expect("query")
    })
    .await
}

pub async fn enqueue(pool: &PgPool, kind: &str, payload: serde_json::Value) -> i64 {
    sqlx::query_scalar("INSERT INTO dialout_queue (kind, payload) VALUES ($1, $2) RETURNING id")
        .bind(kind)
        .bind(payload)
        .fetch_one(pool)
        .await
        .expect("enqueue")
}
