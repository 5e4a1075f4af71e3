//! What each `dialout` command does; `src/main.rs` only parses the arguments and calls
//! these. One file per group of commands.

pub mod bench;
pub mod demo;
pub mod jobs;
pub mod report;
pub mod roster;

use crate::app::{self, AppError};
use crate::config::Settings;
use crate::queue;
use crate::worker::Worker;

/// `dialout migrate`.
pub async fn migrate(settings: &mut Settings) -> Result<(), AppError> {
    let pool = app::pool(settings).await?;
    queue::migrate(&pool).await?;
    println!("migrations applied");
    Ok(())
}

/// `dialout worker`: runs until SIGTERM/SIGINT.
pub async fn worker(settings: &mut Settings) -> Result<(), AppError> {
    let pool = app::pool(settings).await?;
    let shutdown = app::shutdown_on_signals();
    Worker::new(settings.clone(), pool, crate::jobs::registry(settings)?)
        .run(shutdown)
        .await?;
    Ok(())
}

/// `dialout pbx-sim`: the simulated PBX until SIGTERM/SIGINT.
pub async fn pbx_sim(
    listen: std::net::SocketAddr,
    scenario: Option<&std::path::Path>,
) -> Result<(), AppError> {
    let stop = app::shutdown_on_signals();
    eprintln!("dialout: simulated PBX listening on {listen}");
    crate::pbx_sim::run(listen, scenario, async move { stop.cancelled().await })
        .await
        .map_err(|e| AppError::Usage(format!("pbx-sim: {e}")))
}

/// A database refusal (say, an INSERT-time validation) as the plain message.
fn database_message(e: sqlx::Error) -> AppError {
    match e.as_database_error() {
        Some(db) => AppError::Usage(db.message().to_owned()),
        None => AppError::Database(e),
    }
}
