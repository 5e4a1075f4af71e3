//! `noop`: finishes at once. For smoke tests, benchmarks and the demo.
//!
//! Payload (all optional): `sleep_ms` (work for this long, stopping early when asked),
//! `fail` (fail with this text), `retryable` (the failure may heal: retry with
//! backoff), `effect` (write a row to `dialout_noop_effect` first, so tests can count
//! how often the work really ran), `echo` (finish with a result saying which worker and
//! attempt ran it; without it the result stays empty, as a no-op's should, so the
//! benchmark measures the queue and not a jsonb per row).

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::json;

use crate::worker::{JobContext, JobHandler, Outcome};

pub struct Noop;

#[derive(Debug, Default, Deserialize)]
struct Payload {
    #[serde(default)]
    sleep_ms: u64,
    fail: Option<String>,
    #[serde(default)]
    retryable: bool,
    #[serde(default)]
    effect: bool,
    #[serde(default)]
    echo: bool,
}

impl JobHandler for Noop {
    fn run(&self, mut ctx: JobContext) -> BoxFuture<'static, Outcome> {
        Box::pin(async move {
            let payload: Payload = match serde_json::from_value(ctx.take_payload()) {
                Ok(p) => p,
                Err(e) => return Outcome::failed(format!("noop job: bad payload: {e}")),
            };
            if payload.effect {
                let written = sqlx::query(
                    "INSERT INTO dialout_noop_effect (job_id, attempt, worker_id) VALUES ($1, $2, $3)",
                )
                .bind(ctx.id())
                .bind(ctx.attempt())
                .bind(ctx.worker_id())
                .execute(ctx.pool())
                .await;
                if let Err(e) = written {
                    return Outcome::failed(format!("noop job: could not record its effect: {e}"))
                        .retryable();
                }
            }
            if payload.sleep_ms > 0 {
                tokio::select! {
                    _ = ctx.stopped() => return Outcome::stopped(),
                    _ = tokio::time::sleep(Duration::from_millis(payload.sleep_ms)) => {}
                }
            }
            match payload.fail {
                Some(error) if payload.retryable => Outcome::failed(error).retryable(),
                Some(error) => Outcome::failed(error),
                None if payload.echo => Outcome::finished(
                    json!({ "worker": ctx.worker_id(), "attempt": ctx.attempt() }),
                ),
                None => Outcome::finished_empty(),
            }
        })
    }
}
