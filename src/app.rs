//! Process-level wiring shared by the commands: where the database is, the pool,
//! signals.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::{ExposeSecret, SecretString, Settings, redact_url};
use crate::local_pg::{LocalPg, LocalPgError};
use crate::queue::{self, QueueError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    LocalPg(#[from] LocalPgError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Worker(#[from] crate::worker::WorkerError),
    #[error("{0}")]
    Usage(String),
}

/// The database URL: configured, or a private PostgreSQL started on this machine (off
/// the runtime: starting one runs initdb and pg_ctl, which may take a minute).
pub async fn database_url(settings: &mut Settings) -> Result<String, AppError> {
    if !settings.database.url.expose_secret().is_empty() {
        return Ok(settings.database.url.expose_secret().to_owned());
    }
    let dir = settings.database.local_dir.clone();
    let url = tokio::task::spawn_blocking(move || -> Result<String, LocalPgError> {
        let local = LocalPg::new(&dir)?;
        local.start()?;
        eprintln!("dialout: no DATABASE_URL set; {}", local.announcement());
        local.url()
    })
    .await
    .map_err(|e| AppError::Usage(format!("starting the private PostgreSQL: {e}")))??;
    settings.database.url = SecretString::from(url.clone());
    Ok(url)
}

/// The pool the commands use, after the database URL is settled.
pub async fn pool(settings: &mut Settings) -> Result<PgPool, AppError> {
    let url = database_url(settings).await?;
    tracing::debug!(database = %redact_url(&url), "database");
    Ok(queue::pool(
        &url,
        settings.database.max_connections,
        Duration::from_millis(settings.database.acquire_timeout_ms),
    )?)
}

/// Fires on SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let fire = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        }
        fire.cancel();
    });
    token
}
