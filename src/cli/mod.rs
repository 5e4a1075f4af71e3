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
    let mut worker = Worker::new(settings.clone(), pool, crate::jobs::registry(settings)?);
    // Bound before anything else starts: a taken port ends the command at once.
    worker.bind_http()?;
    worker.run(shutdown).await?;
    Ok(())
}

/// `dialout healthcheck`: GETs `url` (default: `http.listen` + `/healthz`); `Ok` only
/// on HTTP 200, so the process exits 0 when healthy and 1 otherwise (Docker's
/// HEALTHCHECK reserves 2).
pub async fn healthcheck(
    settings: &Settings,
    url: Option<String>,
    within: std::time::Duration,
) -> Result<(), AppError> {
    let url = match url {
        Some(url) => url,
        None => {
            let Some(mut addr) = settings.http.listen else {
                return Err(AppError::Usage(
                    "healthcheck: http.listen is not set (DIALOUT__HTTP__LISTEN); give --url"
                        .into(),
                ));
            };
            // A wildcard listener is reached on loopback.
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr {
                    std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            format!("http://{addr}/healthz")
        }
    };
    let reply = crate::http::get(&url, within)
        .await
        .map_err(|e| AppError::Usage(format!("healthcheck {url}: {e}")))?;
    let first_line = reply.body.lines().next().unwrap_or_default();
    if reply.status != 200 {
        return Err(AppError::Usage(format!(
            "healthcheck {url}: HTTP {}: {}",
            reply.status,
            reply.body.trim_end().replace('\n', "; ")
        )));
    }
    println!("{url}: HTTP 200 {first_line}");
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
