//! The `dialout` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::Value;

use dialout::app::{self, AppError};
use dialout::config::Settings;
use dialout::queue::{self, JobStatus, status};
use dialout::worker::Worker;
use dialout::{bench, jobs, telemetry};

#[derive(Parser)]
#[command(
    name = "dialout",
    version,
    about = "A PostgreSQL-backed job-queue worker"
)]
struct Cli {
    /// A TOML file layered over the defaults (then DIALOUT__* variables over it).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the database migrations (the worker also does at start).
    Migrate,
    /// Run a worker until SIGTERM/SIGINT.
    Worker,
    /// Enqueue one job (the same as an INSERT into dialout_queue).
    Enqueue {
        kind: String,
        /// The payload, a JSON object.
        #[arg(default_value = "{}")]
        payload: String,
        #[arg(long)]
        priority: Option<i32>,
        #[arg(long)]
        max_attempts: Option<i32>,
        #[arg(long)]
        dedup_key: Option<String>,
        /// Run no earlier than this many milliseconds from now.
        #[arg(long)]
        delay_ms: Option<u64>,
    },
    /// Jobs at a glance: counts per kind and status, then the newest jobs.
    Jobs {
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// One job, whole.
    Job { id: i64 },
    /// Enqueue sample work, run a worker until it is done, print the table.
    Demo,
    /// Run the simulated PBX (an Asterisk that speaks the AMI wire protocol) until
    /// SIGTERM/SIGINT; for trying dialout against, tests and benchmarks.
    PbxSim {
        #[arg(long, default_value = "127.0.0.1:5038")]
        listen: std::net::SocketAddr,
        /// A scenario file (time scale, faults); see src/pbx_sim/mod.rs.
        #[arg(long)]
        scenario: Option<PathBuf>,
    },
    /// Moodle rosters, offline or from a finished roster_import job.
    Roster {
        #[command(subcommand)]
        what: RosterCommand,
    },
    /// The private PostgreSQL used when no database URL is set (socket-only, password).
    Pg {
        /// Its folder (default: database.local_dir).
        #[arg(long, global = true)]
        dir: Option<PathBuf>,
        #[command(subcommand)]
        what: dialout::local_pg::PgCommand,
    },
    /// Benchmarks (figures printed, never asserted).
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Subcommand)]
enum RosterCommand {
    /// Convert a roster file to Moodle's upload-users CSV on stdout (the report goes
    /// to stderr, with a progress line for large files).
    Convert {
        roster: PathBuf,
        /// Domain for generated addresses (default: roster.email_domain).
        #[arg(long)]
        email_domain: Option<String>,
        /// auto, seed, csv or tsv.
        #[arg(long, default_value = "auto")]
        format: String,
    },
    /// Write a finished roster_import job's CSV to stdout.
    Fetch { job_id: i64 },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Drain noop jobs with one worker; enqueue->start latency.
    Queue {
        #[arg(long, default_value_t = 20_000)]
        jobs: u64,
        #[arg(long, default_value_t = 200)]
        latency_samples: usize,
        /// Also drain this many (0: skip), to see how the queue holds up as rows pile up.
        #[arg(long, default_value_t = 100_000)]
        large: u64,
    },
    /// Messages through the legacy TCP client to a local echo peer, a connection each.
    Legacy {
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
        /// Sends in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// Convert a generated roster of this many rows with the offline path.
    Roster {
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dialout: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dialout: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, &mut settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dialout: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, settings: &mut Settings) -> Result<(), AppError> {
    match command {
        Command::Migrate => {
            let pool = app::pool(settings).await?;
            queue::migrate(&pool).await?;
            println!("migrations applied");
        }
        Command::Worker => {
            let pool = app::pool(settings).await?;
            let shutdown = app::shutdown_on_signals();
            Worker::new(settings.clone(), pool, jobs::registry(settings)?)
                .run(shutdown)
                .await?;
        }
        Command::Enqueue {
            kind,
            payload,
            priority,
            max_attempts,
            dedup_key,
            delay_ms,
        } => {
            let payload: Value = serde_json::from_str(&payload)
                .map_err(|e| AppError::Usage(format!("the payload is not JSON: {e}")))?;
            let pool = app::pool(settings).await?;
            queue::migrate(&pool).await?;
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO dialout_queue (kind, payload, priority, max_attempts, dedup_key, run_at) \
                 VALUES ($1, $2, coalesce($3, 0), coalesce($4, 5), $5, \
                         now() + coalesce($6, 0) * interval '1 millisecond') \
                 ON CONFLICT (dedup_key) DO NOTHING RETURNING id",
            )
            .bind(&kind)
            .bind(&payload)
            .bind(priority)
            .bind(max_attempts)
            .bind(&dedup_key)
            .bind(delay_ms.map(|d| d as f64))
            .fetch_optional(&pool)
            .await
            .map_err(database_message)?;
            match id {
                Some(id) => println!("{id}"),
                None => {
                    println!("a job with dedup_key {dedup_key:?} already exists; nothing enqueued")
                }
            }
        }
        Command::Jobs { status, limit } => {
            let pool = app::pool(settings).await?;
            let status = status.as_deref().map(parse_status).transpose()?;
            for (kind, st, n) in status::summary(&pool).await? {
                println!("{kind:<16} {st:<20} {n}");
            }
            println!();
            print_jobs(&status::recent(&pool, status, limit).await?);
        }
        Command::Job { id } => {
            let pool = app::pool(settings).await?;
            match status::job(&pool, id).await? {
                Some(job) => println!(
                    "{}",
                    serde_json::to_string_pretty(&job).unwrap_or_else(|e| e.to_string())
                ),
                None => return Err(AppError::Usage(format!("no job {id}"))),
            }
        }
        Command::Demo => demo(settings).await?,
        Command::Bench { what } => match what {
            BenchCommand::Queue {
                jobs,
                latency_samples,
                large,
            } => {
                let admin = app::database_url(settings).await?;
                println!("{}", bench::queue::drain(settings, &admin, jobs).await?);
                println!(
                    "{}",
                    bench::queue::latency(settings, &admin, latency_samples).await?
                );
                if large > 0 {
                    println!("{}", bench::queue::drain(settings, &admin, large).await?);
                }
            }
            BenchCommand::Legacy {
                messages,
                concurrency,
            } => {
                for fail_ratio in [0.0, 0.1] {
                    println!(
                        "{}",
                        jobs::legacy::bench::run(messages, fail_ratio, concurrency).await
                    );
                }
            }
            BenchCommand::Roster { rows } => {
                let report = tokio::task::spawn_blocking(move || {
                    jobs::roster::bench::run(rows).map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| AppError::Usage(e.to_string()))?
                .map_err(AppError::Usage)?;
                println!("{report}");
            }
        },
        Command::Roster { what } => roster(what, settings).await?,
        Command::Pg { dir, what } => {
            let dir = dir.unwrap_or_else(|| settings.database.local_dir.clone());
            dialout::local_pg::command(what, dir).await?
        }
        Command::PbxSim { listen, scenario } => {
            let stop = app::shutdown_on_signals();
            eprintln!("dialout: simulated PBX listening on {listen}");
            dialout::pbx_sim::run(listen, scenario.as_deref(), async move {
                stop.cancelled().await
            })
            .await
            .map_err(|e| AppError::Usage(format!("pbx-sim: {e}")))?;
        }
    }
    Ok(())
}

async fn roster(what: RosterCommand, settings: &mut Settings) -> Result<(), AppError> {
    use std::io::{IsTerminal, Write};
    match what {
        RosterCommand::Convert {
            roster,
            email_domain,
            format,
        } => {
            let mut options = jobs::roster_options(settings)?;
            if let Some(d) = email_domain {
                options.email_domain = Some(
                    jobs::roster::EmailDomain::parse(&d)
                        .map_err(|e| AppError::Usage(e.to_string()))?,
                );
            }
            options.format =
                serde_json::from_value(Value::String(format.clone())).map_err(|_| {
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
        }
        RosterCommand::Fetch { job_id } => {
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
                        .map_err(|e| AppError::Usage(format!("writing the CSV: {e}")))?;
                }
                Some((status, None)) => {
                    return Err(AppError::Usage(format!(
                        "roster_import job {job_id} has no CSV (status {status})"
                    )));
                }
                None => return Err(AppError::Usage(format!("no roster_import job {job_id}"))),
            }
        }
    }
    Ok(())
}

/// A database refusal (say, an INSERT-time validation) as the plain message.
fn database_message(e: sqlx::Error) -> AppError {
    match e.as_database_error() {
        Some(db) => AppError::Usage(db.message().to_owned()),
        None => AppError::Database(e),
    }
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

fn print_jobs(rows: &[status::JobRow]) {
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

/// Sample work for each kind, a worker, and the table once everything has ended.
async fn demo(settings: &mut Settings) -> Result<(), AppError> {
    let pool = app::pool(settings).await?;
    queue::migrate(&pool).await?;
    let batch = uuid::Uuid::new_v4().simple().to_string();
    // A stand-in legacy host: answers one line and closes.
    let legacy_host =
        jobs::legacy::fault_peer::FaultPeer::start(jobs::legacy::fault_peer::FaultMode::EchoLine)
            .await
            .map_err(|e| AppError::Usage(format!("cannot start the demo's TCP peer: {e}")))?;
    let legacy_port = legacy_host.addr().port();
    let samples: Vec<(&str, Value)> = vec![
        ("noop", serde_json::json!({"echo": true})),
        ("noop", serde_json::json!({"sleep_ms": 300})),
        (
            "noop",
            serde_json::json!({"fail": "a permanent failure, on purpose"}),
        ),
        (
            "noop",
            serde_json::json!({"fail": "a failure that heals never", "retryable": true}),
        ),
        (
            "legacy_message",
            serde_json::json!({"host": "127.0.0.1", "port": legacy_port, "message": "HELLO LEGACY\n", "delimiter": "\n"}),
        ),
        (
            "roster_import",
            serde_json::json!({
                "roster": "1 Pedro Pedroso pedro@example.com Cobranzas\n2 Juan Perez juan@example.com Cobranzas\n3 Juan Gonzalez juang@example.com Cobranzas\n4 Un boludo No tiene Por ahi\n",
                "email_domain": "example.com"
            }),
        ),
    ];
    let mut ids = Vec::new();
    for (kind, payload) in samples {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO dialout_queue (kind, payload, max_attempts, dedup_key) \
             VALUES ($1, $2, 2, $3) RETURNING id",
        )
        .bind(kind)
        .bind(payload)
        .bind(format!("demo-{batch}-{}", ids.len()))
        .fetch_one(&pool)
        .await?;
        ids.push(id);
    }
    println!("enqueued jobs {ids:?}; running a worker until they end");
    let mut worker_settings = settings.clone();
    worker_settings.worker.retry_base_ms = 200;
    worker_settings.worker.retry_max_ms = 1000;
    worker_settings.worker.kinds = vec![
        "noop".into(),
        "legacy_message".into(),
        "roster_import".into(),
    ];
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = Worker::new(worker_settings, pool.clone(), jobs::registry(settings)?);
    let handle = tokio::spawn(worker.run(stop.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM dialout_queue WHERE id = ANY($1) AND ended_at IS NULL",
        )
        .bind(&ids)
        .fetch_one(&pool)
        .await?;
        if open == 0 || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let _ = handle.await;
    let mut rows = Vec::new();
    for id in &ids {
        if let Some(row) = status::job(&pool, *id).await? {
            rows.push(row);
        }
    }
    print_jobs(&rows);
    Ok(())
}
