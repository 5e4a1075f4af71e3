//! `dialout roster convert` and `dialout roster fetch`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use serde_json::Value;

use crate::app::{self, AppError};
use crate::config::Settings;
use crate::jobs;

/// Converts `roster` to Moodle's upload-users CSV on stdout; the report (and, on a
/// terminal, progress) on stderr. `format` is auto, seed, csv or tsv.
pub async fn convert(
    settings: &Settings,
    roster: PathBuf,
    email_domain: Option<String>,
    format: String,
) -> Result<(), AppError> {
    let mut options = jobs::roster_options(settings)?;
    if let Some(d) = email_domain {
        options.email_domain =
            Some(jobs::roster::EmailDomain::parse(&d).map_err(|e| AppError::Usage(e.to_string()))?);
    }
    options.format = serde_json::from_value(Value::String(format.clone())).map_err(|_| {
        AppError::Usage(format!("unknown format {format:?}: auto, seed, csv or tsv"))
    })?;
    let show_progress = std::io::stderr().is_terminal();
    let report = tokio::task::spawn_blocking(move || {
        let stdout = std::io::stdout().lock();
        jobs::roster::convert_file(
            &roster,
            std::io::BufWriter::new(stdout),
            &options,
            show_progress,
        )
    })
    .await
    .map_err(|e| AppError::Usage(e.to_string()))?
    .map_err(|e| AppError::Usage(e.to_string()))?;
    eprintln!("{report}");
    Ok(())
}

/// Writes a finished roster_import job's CSV to stdout.
pub async fn fetch(settings: &mut Settings, job_id: i64) -> Result<(), AppError> {
    let pool = app::pool(settings).await?;
    let row: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT status::text, result->>'csv' FROM dialout_queue WHERE id = $1 AND kind = 'roster_import'",
    )
    .bind(job_id)
    .fetch_optional(&pool)
    .await?;
    match row {
        Some((_, Some(csv))) => {
            let mut out = std::io::stdout().lock();
            out.write_all(csv.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| AppError::Usage(format!("writing the CSV: {e}")))
        }
        Some((status, None)) => Err(AppError::Usage(format!(
            "roster_import job {job_id} has no CSV (status {status})"
        ))),
        None => Err(AppError::Usage(format!("no roster_import job {job_id}"))),
    }
}
