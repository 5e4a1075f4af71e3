//! `dialout enqueue`, `dialout jobs`, `dialout job`.

use serde_json::Value;

use crate::app::{self, AppError};
use crate::config::Settings;
use crate::queue::{self, JobStatus, NewJob, status};

/// `dialout enqueue`: adds the job (after migrating, so a fresh database works) and
/// prints its id.
pub async fn enqueue(settings: &mut Settings, job: NewJob) -> Result<(), AppError> {
    let pool = app::pool(settings).await?;
    queue::migrate(&pool).await?;
    match queue::enqueue(&pool, &job)
        .await
        .map_err(super::database_message)?
    {
        Some(id) => println!("{id}"),
        None => println!(
            "a job with dedup_key {:?} already exists; nothing enqueued",
            job.dedup_key
        ),
    }
    Ok(())
}

/// The payload argument of `dialout enqueue`.
pub fn parse_payload(text: &str) -> Result<Value, AppError> {
    serde_json::from_str(text).map_err(|e| AppError::Usage(format!("the payload is not JSON: {e}")))
}

/// `dialout jobs`: counts per kind and status, then the newest jobs.
pub async fn list(
    settings: &mut Settings,
    status: Option<&str>,
    limit: i64,
) -> Result<(), AppError> {
    let pool = app::pool(settings).await?;
    let status = status.map(parse_status).transpose()?;
    for (kind, st, n) in status::summary(&pool).await? {
        println!("{kind:<16} {st:<20} {n}");
    }
    println!();
    print_jobs(&status::recent(&pool, status, limit).await?);
    Ok(())
}

/// `dialout job ID`: one job as JSON.
pub async fn show(settings: &mut Settings, id: i64) -> Result<(), AppError> {
    let pool = app::pool(settings).await?;
    match status::job(&pool, id).await? {
        Some(job) => println!(
            "{}",
            serde_json::to_string_pretty(&job).unwrap_or_else(|e| e.to_string())
        ),
        None => return Err(AppError::Usage(format!("no job {id}"))),
    }
    Ok(())
}

fn parse_status(s: &str) -> Result<JobStatus, AppError> {
    [
        JobStatus::Queued,
        JobStatus::Trying,
        JobStatus::Established,
        JobStatus::Finished,
        JobStatus::FinishedWithError,
        JobStatus::Timedout,
        JobStatus::Cancelled,
    ]
    .into_iter()
    .find(|st| st.as_str() == s)
    .ok_or_else(|| AppError::Usage(format!("unknown status {s:?}")))
}

/// The table `dialout jobs` and the demo print.
pub fn print_jobs(rows: &[status::JobRow]) {
    println!(
        "{:>8}  {:<15} {:<20} {:>8}  {:<20} last_error / result",
        "id", "kind", "status", "attempts", "worker"
    );
    for j in rows {
        let detail = j
            .last_error
            .clone()
            .or_else(|| j.result.as_ref().map(Value::to_string))
            .unwrap_or_default();
        let detail: String = detail.chars().take(70).collect();
        println!(
            "{:>8}  {:<15} {:<20} {:>3} of {:<2}  {:<20} {}",
            j.id,
            j.kind,
            j.status.as_str(),
            j.attempts,
            j.max_attempts,
            j.worker_id.as_deref().unwrap_or("-"),
            detail
        );
    }
}
