//! The `dialout_queue` table and every statement the workers run on it.
//!
//! The table is the public API (see `migrations/`); this module is its only writer
//! on the worker side: leasing, heartbeats, fenced completion, rescue and retention.

mod complete;
mod enqueue;
mod lease;
mod limits;
mod maintenance;
mod notify;
pub mod status;

use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

pub use complete::{Completer, CompleterSettings, Completion, CompletionHook, WriteResult};
pub use enqueue::{NewJob, enqueue, enqueue_many};
pub use lease::{Heartbeat, lease_jobs, release_batch};
pub use limits::{KindLimits, LimitedLease, PACING_HORIZON, lease_limited_jobs};
pub use maintenance::{
    RescueCounts, RescueSettings, Rescuer, Retention, RetentionSettings, prune_finished,
    prune_finished_in_chunks,
};
pub use notify::{Listener, Wake};
pub use status::JobStatus;

/// Migrations embedded in the binary; applied by `dialout migrate` and at worker start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "the lease on job {0} was lost (another worker owns it now, or it was cancelled and ended)"
    )]
    LeaseLost(i64),
}

/// A job as a worker holds it: the row's inputs plus the lease that fences its writes.
#[derive(Debug, Clone)]
pub struct LeasedJob {
    pub id: i64,
    pub kind: String,
    pub payload: Value,
    /// This attempt's number, from 1.
    pub attempts: i32,
    pub max_attempts: i32,
    pub lease_token: Uuid,
    /// The previous attempt's worker vanished: find out what it did before acting.
    pub needs_recovery: bool,
    /// When it may start: its turn under `starts_per_second` ([`KindLimits`]), fixed
    /// when the lease reply arrived; `None` for kinds without pacing.
    pub not_before: Option<tokio::time::Instant>,
}

impl LeasedJob {
    pub fn lease(&self) -> Lease {
        Lease {
            id: self.id,
            token: self.lease_token,
        }
    }
}

/// The fence: a job id and the token of the attempt that may write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    pub id: i64,
    pub token: Uuid,
}

/// Opens the worker's pool. Connections are made lazily, so a database that is down
/// at start, or restarts later, costs retries, not the process.
pub fn pool(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, QueueError> {
    let options: sqlx::postgres::PgConnectOptions = url.parse()?;
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(acquire_timeout)
        .test_before_acquire(false)
        .connect_lazy_with(options.application_name("dialout")))
}

/// Applies the embedded migrations. sqlx holds an advisory lock while it does, so
/// replicas starting together take turns.
pub async fn migrate(pool: &PgPool) -> Result<(), QueueError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Whether this build's latest migration is applied (a database never migrated has
/// no `_sqlx_migrations` table: `false` too).
pub async fn migrations_applied(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let Some(latest) = MIGRATOR.iter().map(|m| m.version).max() else {
        return Ok(true);
    };
    let applied = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM _sqlx_migrations WHERE version = $1 AND success)",
    )
    .bind(latest)
    .fetch_one(pool)
    .await;
    match applied {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => Ok(false),
        other => other,
    }
}

/// Is this error worth retrying later (the database went away) rather than a bug?
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Protocol(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            // connection (08), resources (53), server shutting down or cancelled (57),
            // system (58), lock or serialization trouble, read-only after a failover.
            ["08", "53", "57", "58"]
                .iter()
                .any(|class| c.starts_with(class))
                || matches!(&*c, "40001" | "40P01" | "55P03" | "25006")
        }),
        _ => false,
    }
}
