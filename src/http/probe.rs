//! What `/readyz` checks and what `/metrics` refreshes before it answers.

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::queue;
use crate::worker::Readiness;

/// The longest a check waits for the database: an orchestrator's probe has its own
/// timeout, and a hung check must read as not ready, not as no answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The queue gauges are at most this old: a scrape every second costs the database
/// one backlog query per this period, not one per scrape.
const BACKLOG_MAX_AGE: Duration = Duration::from_secs(5);

/// The state behind the endpoints of one worker.
pub(crate) struct Probe {
    /// A pool of its own (two connections), so probes never wait behind the work and
    /// a flood of requests costs the database at most two connections.
    pool: PgPool,
    /// The kinds this replica runs, with their readiness.
    kinds: Vec<(String, Readiness)>,
    metrics: Metrics,
    /// Fired when the worker starts draining: not ready from then on.
    shutdown: CancellationToken,
    /// When the backlog was last asked for (success or not).
    backlog_asked: Mutex<Option<Instant>>,
}

impl Probe {
    pub(crate) fn new(
        worker_pool: &PgPool,
        kinds: Vec<(String, Readiness)>,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Self {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(CHECK_TIMEOUT)
            .connect_lazy_with(worker_pool.connect_options().as_ref().clone());
        Self {
            pool,
            kinds,
            metrics,
            shutdown,
            backlog_asked: Mutex::new(None),
        }
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// `Ok` when ready; else one line per check that failed.
    pub(crate) async fn readiness(&self) -> Result<(), Vec<String>> {
        let mut failed = Vec::new();
        if self.shutdown.is_cancelled() {
            failed.push("worker: shutting down".to_owned());
        }
        match tokio::time::timeout(CHECK_TIMEOUT, queue::migrations_applied(&self.pool)).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => failed.push(
                "migrations: this build's latest migration is not applied (run dialout migrate)"
                    .to_owned(),
            ),
            Ok(Err(e)) => failed.push(format!("database: {e}")),
            Err(_) => failed.push(format!(
                "database: no answer within {} ms",
                CHECK_TIMEOUT.as_millis()
            )),
        }
        for (kind, readiness) in &self.kinds {
            if !readiness.is_ready() {
                failed.push(format!(
                    "kind {kind}: not ready, not leased (its link is down)"
                ));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed)
        }
    }

    /// Refreshes the queue gauges if they are older than [`BACKLOG_MAX_AGE`]. Scrapes
    /// that come together share one query; a failed query is not retried before the
    /// period is over (the gauges keep their last values).
    pub(crate) async fn refresh_backlog(&self) {
        let mut asked = self.backlog_asked.lock().await;
        if asked.is_some_and(|at| at.elapsed() < BACKLOG_MAX_AGE) {
            return;
        }
        *asked = Some(Instant::now());
        let kinds: Vec<String> = self.kinds.iter().map(|(k, _)| k.clone()).collect();
        let rows = tokio::time::timeout(
            CHECK_TIMEOUT,
            queue::status::ready_backlog(&self.pool, &kinds),
        )
        .await;
        match rows {
            Ok(Ok(rows)) => {
                for kind in &kinds {
                    let (ready, oldest) = rows
                        .iter()
                        .find(|b| &b.kind == kind)
                        .map_or((0, 0.0), |b| (b.ready, b.oldest_ready_secs.max(0.0)));
                    self.metrics.set_backlog(kind, ready, oldest);
                }
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "queue backlog for /metrics failed"),
            Err(_) => tracing::debug!("queue backlog for /metrics timed out"),
        }
    }
}
