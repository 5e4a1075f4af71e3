//! `dialout report`: a window's calls and the queue's backlog in the terminal, read from
//! the reporting functions and views (migrations/0009_report.sql), so the terminal and
//! an analyst's SQL always agree.

use std::fmt;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::app::{self, AppError};
use crate::config::Settings;

/// How many hangup causes the report lists.
const TOP_CAUSES: i64 = 5;

/// The window when `--since` is not given: the last 24 hours.
pub const DEFAULT_SINCE: &str = "24h";

/// `dialout report`: calls that started in [since, until), then the backlog.
pub async fn run(settings: &mut Settings, since: &str, until: &str) -> Result<(), AppError> {
    let pool = app::pool(settings).await?;
    // One transaction, so `now()` is one instant for both ends.
    let mut tx = pool.begin().await?;
    let since = moment(&mut tx, "--since", since).await?;
    let until = moment(&mut tx, "--until", until).await?;
    tx.commit().await?;
    let report = Report::fetch(&pool, since, until).await.map_err(|e| {
        // 42883: undefined_function, a database the workers have not migrated yet.
        match e.as_database_error().and_then(|db| db.code()).as_deref() {
            Some("42883") => AppError::Usage(format!(
                "{e}; the reporting functions come with migration 0009: run `dialout migrate`"
            )),
            _ => AppError::Database(e),
        }
    })?;
    print!("{report}");
    Ok(())
}

/// A time from the command line: a duration back from now (`90s`, `30m`, `24h`, `7d`,
/// `2w`), or anything PostgreSQL reads as a timestamptz (`2026-12-06`,
/// `2026-12-06 08:00-03`, `today`, `now`; without an offset, UTC), read by the database
/// so that "now" is the database's clock, as in the reports.
async fn moment(
    conn: &mut PgConnection,
    flag: &str,
    text: &str,
) -> Result<DateTime<Utc>, AppError> {
    let read = match seconds_ago(text) {
        Some(secs) => {
            sqlx::query_scalar("SELECT now() - $1 * interval '1 second'")
                .bind(secs)
                .fetch_one(&mut *conn)
                .await
        }
        None => {
            sqlx::query_scalar("SELECT $1::text::timestamptz")
                .bind(text)
                .fetch_one(&mut *conn)
                .await
        }
    };
    read.map_err(|e| match e.as_database_error() {
        Some(db) => AppError::Usage(format!("{flag} {text:?}: {}", db.message())),
        None => AppError::Database(e),
    })
}

/// `24h` -> 86400; None when `text` is not a whole number with one of s, m, h, d, w.
fn seconds_ago(text: &str) -> Option<i64> {
    let unit = match text.chars().last()? {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return None,
    };
    let digits = &text[..text.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i64>().ok()?.checked_mul(unit)
}

/// `dialout_report_summary`'s row (numerics read as float8: the figures are rounded
/// to one decimal by the function already).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Summary {
    pub calls: i64,
    pub answered: i64,
    pub busy: i64,
    pub no_answer: i64,
    pub congestion: i64,
    pub failed: i64,
    pub asr_percent: Option<f64>,
    pub acd_seconds: Option<f64>,
    pub billed_minutes: f64,
}

/// A `dialout_report_by_cause` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Cause {
    pub hangup_cause: Option<i32>,
    pub hangup_cause_text: Option<String>,
    pub calls: i64,
    pub percent_of_calls: f64,
}

/// A `dialout_report_backlog` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Backlog {
    pub kind: String,
    pub queued_ready: i64,
    pub queued_scheduled: i64,
    pub trying: i64,
    pub established: i64,
    pub oldest_ready_wait_seconds: Option<f64>,
}

/// What `dialout report` prints; `Display` renders it.
#[derive(Debug, Clone)]
pub struct Report {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub summary: Summary,
    pub causes: Vec<Cause>,
    pub backlog: Vec<Backlog>,
}

impl Report {
    pub async fn fetch(
        pool: &PgPool,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Self, sqlx::Error> {
        let summary = sqlx::query_as(
            "SELECT calls, answered, busy, no_answer, congestion, failed, \
                    asr_percent::float8 AS asr_percent, acd_seconds::float8 AS acd_seconds, \
                    billed_minutes::float8 AS billed_minutes \
             FROM dialout_report_summary($1, $2)",
        )
        .bind(since)
        .bind(until)
        .fetch_one(pool)
        .await?;
        let causes = sqlx::query_as(
            "SELECT hangup_cause, hangup_cause_text, calls, \
                    percent_of_calls::float8 AS percent_of_calls \
             FROM dialout_report_by_cause($1, $2) \
             ORDER BY calls DESC, hangup_cause LIMIT $3",
        )
        .bind(since)
        .bind(until)
        .bind(TOP_CAUSES)
        .fetch_all(pool)
        .await?;
        let backlog = sqlx::query_as(
            "SELECT kind, queued_ready, queued_scheduled, trying, established, \
                    oldest_ready_wait_seconds::float8 AS oldest_ready_wait_seconds \
             FROM dialout_report_backlog ORDER BY kind",
        )
        .fetch_all(pool)
        .await?;
        Ok(Self {
            since,
            until,
            summary,
            causes,
            backlog,
        })
    }
}

/// `55.0 %`, or `-` when there is nothing to divide by.
fn figure(value: Option<f64>, unit: &str) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} {unit}"))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = |t: &DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        writeln!(
            f,
            "calls that started from {} to {}",
            time(&self.since),
            time(&self.until)
        )?;
        writeln!(f)?;
        let s = &self.summary;
        for (name, n) in [
            ("calls", s.calls),
            ("answered", s.answered),
            ("busy", s.busy),
            ("no answer", s.no_answer),
            ("congestion", s.congestion),
            ("failed", s.failed),
        ] {
            writeln!(f, "{name:<16} {n:>10}")?;
        }
        // The figures' last digits (or the dash) line up with the counts'.
        for (name, value, unit) in [("ASR", s.asr_percent, " %"), ("ACD", s.acd_seconds, " s")] {
            match value {
                Some(v) => writeln!(f, "{name:<16} {v:>10.1}{unit}")?,
                None => writeln!(f, "{name:<16} {:>10}", "-")?,
            }
        }
        writeln!(f, "{:<16} {:>10.1}", "billed minutes", s.billed_minutes)?;
        writeln!(f)?;
        writeln!(f, "{:<38} {:>10} {:>7}", "hangup cause", "calls", "%")?;
        for c in &self.causes {
            let code = c
                .hangup_cause
                .map_or_else(|| "-".to_owned(), |n| n.to_string());
            let text = c.hangup_cause_text.as_deref().unwrap_or("(none)");
            let text: String = text.chars().take(32).collect();
            writeln!(
                f,
                "{code:<5} {text:<32} {:>10} {:>7.1}",
                c.calls, c.percent_of_calls
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<16} {:>8} {:>10} {:>8} {:>12} {:>14}",
            "kind", "ready", "scheduled", "trying", "established", "oldest ready"
        )?;
        for b in &self.backlog {
            writeln!(
                f,
                "{:<16} {:>8} {:>10} {:>8} {:>12} {:>14}",
                b.kind,
                b.queued_ready,
                b.queued_scheduled,
                b.trying,
                b.established,
                figure(b.oldest_ready_wait_seconds, "s")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::seconds_ago;

    #[test]
    fn reads_durations_back_from_now() {
        assert_eq!(seconds_ago("24h"), Some(86_400));
        assert_eq!(seconds_ago("90s"), Some(90));
        assert_eq!(seconds_ago("30m"), Some(1_800));
        assert_eq!(seconds_ago("7d"), Some(604_800));
        assert_eq!(seconds_ago("2w"), Some(1_209_600));
        // Everything else goes to PostgreSQL as a timestamp.
        assert_eq!(seconds_ago("h"), None);
        assert_eq!(seconds_ago("-1h"), None);
        assert_eq!(seconds_ago("1.5h"), None);
        assert_eq!(seconds_ago("today"), None);
        assert_eq!(seconds_ago("now"), None);
        assert_eq!(seconds_ago("2026-12-06"), None);
        assert_eq!(seconds_ago("99999999999999999w"), None);
        assert_eq!(seconds_ago(""), None);
    }
}
