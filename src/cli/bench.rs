//! `dialout bench …`: figures printed, never asserted.

use crate::app::{self, AppError};
use crate::config::Settings;
use crate::jobs;

/// Drains `count` noop jobs, then `large` more (0: skip), and measures enqueue->start
/// latency over `latency_samples` single jobs, each in a scratch database.
pub async fn queue(
    settings: &mut Settings,
    count: u64,
    latency_samples: usize,
    large: u64,
) -> Result<(), AppError> {
    let admin = app::database_url(settings).await?;
    println!(
        "{}",
        crate::bench::queue::drain(settings, &admin, count).await?
    );
    println!(
        "{}",
        crate::bench::queue::latency(settings, &admin, latency_samples).await?
    );
    if large > 0 {
        println!(
            "{}",
            crate::bench::queue::drain(settings, &admin, large).await?
        );
    }
    Ok(())
}

/// Dial jobs through one worker against the in-process simulated PBX.
pub async fn dial(
    settings: &mut Settings,
    bench: crate::bench::dial::DialBench,
) -> Result<(), AppError> {
    let admin = app::database_url(settings).await?;
    println!(
        "{}",
        crate::bench::dial::run(settings, &admin, &bench).await?
    );
    Ok(())
}

/// The reporting views and functions over generated CDRs, in a scratch database.
pub async fn report(
    settings: &mut Settings,
    bench: crate::bench::report::ReportBench,
) -> Result<(), AppError> {
    let admin = app::database_url(settings).await?;
    crate::bench::report::run(settings, &admin, &bench).await?;
    Ok(())
}

/// The memory of a worker process holding many calls at once.
pub async fn dial_memory(
    settings: &mut Settings,
    bench: crate::bench::dial_memory::MemoryBench,
) -> Result<(), AppError> {
    let admin = app::database_url(settings).await?;
    println!(
        "{}",
        crate::bench::dial_memory::run(settings, &admin, &bench).await?
    );
    Ok(())
}

/// Messages through the legacy TCP client to a local echo peer, without and with
/// failures.
pub async fn legacy(messages: usize, concurrency: usize) {
    for fail_ratio in [0.0, 0.1] {
        println!(
            "{}",
            jobs::legacy::bench::run(messages, fail_ratio, concurrency).await
        );
    }
}

/// Converts a generated roster of `rows` rows with the offline path.
pub async fn roster(rows: u64) -> Result<(), AppError> {
    let report = tokio::task::spawn_blocking(move || {
        jobs::roster::bench::run(rows).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| AppError::Usage(e.to_string()))?
    .map_err(AppError::Usage)?;
    println!("{report}");
    Ok(())
}
