//! The `dialout` command line: parses the arguments and calls [`dialout::cli`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use dialout::app::AppError;
use dialout::config::Settings;
use dialout::queue::NewJob;
use dialout::{cli, telemetry};

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
    /// Exit 0 if a worker's health endpoint answers HTTP 200, else 1 (for Docker's
    /// HEALTHCHECK: the runtime image has no curl).
    Healthcheck {
        /// Default: http://<http.listen>/healthz (a wildcard address as loopback).
        #[arg(long)]
        url: Option<String>,
        /// Give up after this long.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
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
    /// Calls that started in a window (default: the last 24 hours) and the queue's
    /// backlog, from the dialout_report_* functions and views.
    Report {
        /// Start of the window: a duration back from now (90m, 24h, 7d) or a timestamp
        /// PostgreSQL reads (2026-12-06, '2026-12-06 08:00-03', today; UTC without an offset).
        #[arg(long, default_value = cli::report::DEFAULT_SINCE)]
        since: String,
        /// End of the window (excluded), read like --since.
        #[arg(long, default_value = "now")]
        until: String,
    },
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
    /// Dial jobs through one worker against the simulated PBX (in this process):
    /// originates/s, insert->originate latency, peak live calls, memory.
    Dial {
        #[arg(long, default_value_t = 10_000)]
        jobs: u64,
        /// kinds.dial.concurrency: live calls the worker may hold.
        #[arg(long, default_value_t = 10_000)]
        concurrency: usize,
        /// How long each simulated call stays up once answered.
        #[arg(long, default_value_t = 1000)]
        call_ms: u64,
        /// Single jobs, 20 ms apart, for the insert->originate latency.
        #[arg(long, default_value_t = 200)]
        latency_samples: usize,
        /// Instead: the memory of a `dialout worker` process holding all `--jobs`
        /// calls at once (give calls of 30 s or more: `--call-ms 30000`).
        #[arg(long)]
        memory: bool,
        /// With --memory: the kind held (noop: jobs sleeping --call-ms, the queue's
        /// own cost per job in flight).
        #[arg(long, value_enum, default_value = "dial", requires = "memory")]
        held_kind: dialout::bench::dial_memory::HeldKind,
        /// With --memory: how long VmRSS is sampled once every call is up.
        #[arg(long, default_value_t = 3000, requires = "memory")]
        window_ms: u64,
        /// With --memory: a command the worker runs under, e.g. "valgrind --tool=massif".
        #[arg(long, requires = "memory")]
        worker_wrapper: Option<String>,
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
    /// Time the reporting views and functions for a one-day window over generated CDRs
    /// and queue rows, in a scratch database; what an index costs a CDR insert.
    Report {
        /// CDRs to generate, spread over --days up to now.
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 90)]
        days: u32,
        /// Timed runs of each query (the median is printed).
        #[arg(long, default_value_t = 5)]
        runs: usize,
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
        Command::Migrate => cli::migrate(settings).await,
        Command::Worker => cli::worker(settings).await,
        Command::Healthcheck { url, timeout_ms } => {
            cli::healthcheck(settings, url, Duration::from_millis(timeout_ms)).await
        }
        Command::Enqueue {
            kind,
            payload,
            priority,
            max_attempts,
            dedup_key,
            delay_ms,
        } => {
            let job = NewJob {
                kind,
                payload: cli::jobs::parse_payload(&payload)?,
                priority,
                max_attempts,
                dedup_key,
                delay: delay_ms.map(Duration::from_millis),
            };
            cli::jobs::enqueue(settings, job).await
        }
        Command::Jobs { status, limit } => {
            cli::jobs::list(settings, status.as_deref(), limit).await
        }
        Command::Job { id } => cli::jobs::show(settings, id).await,
        Command::Report { since, until } => cli::report::run(settings, &since, &until).await,
        Command::Demo => cli::demo::run(settings).await,
        Command::Bench { what } => match what {
            BenchCommand::Queue {
                jobs,
                latency_samples,
                large,
            } => cli::bench::queue(settings, jobs, latency_samples, large).await,
            BenchCommand::Dial {
                jobs,
                call_ms,
                memory: true,
                held_kind,
                window_ms,
                worker_wrapper,
                ..
            } => {
                let bench = dialout::bench::dial_memory::MemoryBench {
                    kind: held_kind,
                    calls: jobs,
                    call_ms,
                    window: Duration::from_millis(window_ms),
                    wrapper: worker_wrapper,
                };
                cli::bench::dial_memory(settings, bench).await
            }
            BenchCommand::Dial {
                jobs,
                concurrency,
                call_ms,
                latency_samples,
                ..
            } => {
                let bench = dialout::bench::dial::DialBench {
                    jobs,
                    concurrency,
                    call_ms,
                    latency_samples,
                };
                cli::bench::dial(settings, bench).await
            }
            BenchCommand::Legacy {
                messages,
                concurrency,
            } => {
                cli::bench::legacy(messages, concurrency).await;
                Ok(())
            }
            BenchCommand::Roster { rows } => cli::bench::roster(rows).await,
            BenchCommand::Report { rows, days, runs } => {
                let bench = dialout::bench::report::ReportBench { rows, days, runs };
                cli::bench::report(settings, bench).await
            }
        },
        Command::Roster { what } => match what {
            RosterCommand::Convert {
                roster,
                email_domain,
                format,
            } => cli::roster::convert(settings, roster, email_domain, format).await,
            RosterCommand::Fetch { job_id } => cli::roster::fetch(settings, job_id).await,
        },
        Command::Pg { dir, what } => {
            let dir = dir.unwrap_or_else(|| settings.database.local_dir.clone());
            Ok(dialout::local_pg::command(what, dir).await?)
        }
        Command::PbxSim { listen, scenario } => cli::pbx_sim(listen, scenario.as_deref()).await,
    }
}
