//! `dialout bench dial --memory`: the resident memory of a worker process holding
//! thousands of live calls.
//!
//! The worker runs as its own `dialout worker` process (this executable, configured
//! through `DIALOUT__…` variables), so its memory is its own and not the simulator's;
//! the simulated PBX runs in this process. Once the worker is idle and logged in to
//! the simulator, `calls` dial jobs are inserted at once, each to its own number that
//! the simulator answers at once and hangs up `call_ms` later. The worker's VmRSS and
//! VmHWM (`/proc/<pid>/status`) are sampled every 50 ms, the jobs counted in SQL
//! (`established`) every 250 ms; once all of them are established the samples of the
//! next `window` give the steady figure (their median). Then it waits for every final
//! status and samples once more: what the process keeps after the calls are gone.
//!
//! `kind = noop` runs the same with `noop` jobs sleeping `call_ms` (counted while
//! `trying`): what the queue's own machinery costs per job in flight.

use std::fmt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::dial::{answering_sim, number};
use super::queue::migrated_scratch_db;
use crate::config::Settings;
use crate::pbx_sim::PbxSim;
use crate::queue::{self, NewJob};

/// Which kind the worker holds in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HeldKind {
    Dial,
    Noop,
}

impl HeldKind {
    fn name(self) -> &'static str {
        match self {
            HeldKind::Dial => "dial",
            HeldKind::Noop => "noop",
        }
    }

    /// The status a job has while it is held: a dial is answered; a noop stays
    /// `trying`, its status from the lease, while it sleeps.
    fn held_status(self) -> &'static str {
        match self {
            HeldKind::Dial => "established",
            HeldKind::Noop => "trying",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct MemoryBench {
    pub kind: HeldKind,
    /// Jobs inserted, and `kinds.<kind>.concurrency`: all of them are held at once.
    pub calls: u64,
    /// How long a call stays up once answered (a noop sleeps this long). Long enough
    /// for every call to be up at once, and the window after.
    pub call_ms: u64,
    /// How long all calls are sampled once they are up.
    pub window: Duration,
    /// A command the worker runs under, split on whitespace (say `valgrind
    /// --tool=massif`); its memory is then the wrapper's view of it.
    pub wrapper: Option<String>,
}

#[derive(Debug, Clone)]
pub struct MemoryReport {
    pub bench: MemoryBench,
    /// VmRSS of the idle worker, logged in, before any job.
    pub idle_kib: Option<u64>,
    /// Insert -> all jobs held.
    pub all_up_s: Option<f64>,
    /// Median VmRSS over the window with all jobs held, and its range.
    pub steady_kib: Option<[u64; 3]>,
    /// Highest VmRSS sampled, and VmHWM at the end of the window.
    pub peak_kib: Option<u64>,
    pub hwm_kib: Option<u64>,
    /// Most jobs held at once (SQL count).
    pub most_held: i64,
    /// VmRSS once every job has its final status (the process idle again).
    pub after_kib: Option<u64>,
    pub statuses: Vec<(String, i64)>,
}

impl fmt::Display for MemoryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |k: Option<u64>| {
            k.map_or("unknown".to_owned(), |k| {
                format!("{:.1} MiB", k as f64 / 1024.0)
            })
        };
        let b = &self.bench;
        writeln!(
            f,
            "{} worker process holding {} {} jobs at once ({} ms each, simulated PBX in the bench process):",
            b.kind.name(),
            b.calls,
            b.kind.name(),
            b.call_ms
        )?;
        writeln!(f, "  idle, before any job: VmRSS {}", mib(self.idle_kib))?;
        match (self.all_up_s, self.steady_kib) {
            (Some(s), Some([median, low, high])) => {
                writeln!(
                    f,
                    "  all {} {} after {s:.2} s; over the next {:.1} s VmRSS median {} ({}-{})",
                    b.calls,
                    b.kind.held_status(),
                    b.window.as_secs_f64(),
                    mib(Some(median)),
                    mib(Some(low)),
                    mib(Some(high)),
                )?;
                if let Some(idle) = self.idle_kib {
                    writeln!(
                        f,
                        "  per held job: {:.0} bytes above idle",
                        median.saturating_sub(idle) as f64 * 1024.0 / b.calls.max(1) as f64
                    )?;
                }
            }
            _ => writeln!(
                f,
                "  never all {}: at most {} at once (give longer calls)",
                b.kind.held_status(),
                self.most_held
            )?,
        }
        writeln!(
            f,
            "  peak VmRSS sampled {}, VmHWM {}",
            mib(self.peak_kib),
            mib(self.hwm_kib)
        )?;
        write!(
            f,
            "  after every final status: VmRSS {}; {}",
            mib(self.after_kib),
            self.statuses
                .iter()
                .map(|(s, n)| format!("{n} {s}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// A field of /proc/<pid>/status in KiB (`VmRSS`, `VmHWM`); None off Linux or once
/// the process is gone.
pub(super) fn proc_status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The worker's settings, as the variables a deployment would set.
fn worker_env(b: &MemoryBench, db_url: &str, sim: &PbxSim) -> Vec<(String, String)> {
    let kind = b.kind.name().to_uppercase();
    [
        ("DATABASE__URL", db_url.to_owned()),
        // Thousands of answers come within a second or two, each an UPDATE: they wait
        // for a connection rather than give up, so that every call is `established`.
        ("DATABASE__MAX_CONNECTIONS", "20".into()),
        ("DATABASE__ACQUIRE_TIMEOUT_MS", "120000".into()),
        ("WORKER__KINDS", b.kind.name().into()),
        ("WORKER__MIGRATE_ON_START", "false".into()),
        (&format!("KINDS__{kind}__CONCURRENCY"), b.calls.to_string()),
        ("AMI__HOST", "127.0.0.1".into()),
        ("AMI__PORT", sim.local_addr().port().to_string()),
        ("AMI__USERNAME", "dialer".into()),
        ("AMI__SECRET", "dialer-secret".into()),
        ("AMI__PING_INTERVAL_MS", "0".into()),
        ("DIAL__CHANNEL", "Local/{number}@callee".into()),
        ("DIAL__CONTEXT", String::new()),
        ("DIAL__MAX_CALL_MS", (b.call_ms * 4).max(60_000).to_string()),
        // sqlx's slow-acquire warnings come by the thousand while the calls start.
        ("LOG__LEVEL", "warn,sqlx=error".into()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("DIALOUT__{k}"), v))
    .collect()
}

/// The worker process. Dropping it kills it, so an error on the way never leaves it
/// running.
struct WorkerProcess {
    /// What was started: the worker, or the wrapper that runs it.
    child: Child,
    /// The worker itself: `child`, or the wrapper's descendant running this executable.
    pid: u32,
}

impl WorkerProcess {
    fn spawn(b: &MemoryBench, env: Vec<(String, String)>) -> std::io::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut words: Vec<String> = b
            .wrapper
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        words.push(exe.to_string_lossy().into_owned());
        let child = Command::new(&words[0])
            .args(&words[1..])
            .arg("worker")
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG")
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        let pid = child.id();
        Ok(Self { child, pid })
    }

    /// Finds the worker under a wrapper that does not exec it (heaptrack runs it as
    /// its child): the descendant whose command line names this executable.
    fn find_worker(&mut self) {
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let exe = exe.to_string_lossy().into_owned();
        let mut pid = self.child.id();
        loop {
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            let next = children.split_whitespace().find(|c| {
                std::fs::read(format!("/proc/{c}/cmdline"))
                    .is_ok_and(|cmd| cmd.split(|&b| b == 0).any(|w| w == exe.as_bytes()))
            });
            match next.and_then(|c| c.parse().ok()) {
                Some(c) => pid = c,
                None => break,
            }
        }
        self.pid = pid;
    }

    fn pid(&self) -> String {
        self.pid.to_string()
    }

    /// SIGTERM, as a deployment stops it (a profiler under it writes its report),
    /// then a bounded wait.
    async fn stop(mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        // Only while what we started still runs: a pid that has exited may be reused.
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the bench in a fresh database (dropped afterwards).
pub async fn run(
    settings: &Settings,
    admin_url: &str,
    b: &MemoryBench,
) -> Result<MemoryReport, sqlx::Error> {
    let sim = answering_sim(b.calls, b.call_ms).await?;
    let (db, pool) = migrated_scratch_db(settings, admin_url).await?;
    let result = hold(&pool, &db.url, &sim, b).await;
    sim.shutdown().await;
    pool.close().await;
    db.drop_db().await?;
    result
}

async fn hold(
    pool: &PgPool,
    db_url: &str,
    sim: &PbxSim,
    b: &MemoryBench,
) -> Result<MemoryReport, sqlx::Error> {
    let mut worker =
        WorkerProcess::spawn(b, worker_env(b, db_url, sim)).map_err(sqlx::Error::Io)?;
    // Idle: its LISTEN connection is up (it leases on the wake-up), and a dial worker
    // has logged in to the simulator.
    let ready_by = Instant::now() + Duration::from_secs(60);
    loop {
        let listening: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN%')",
        )
        .fetch_one(pool)
        .await?;
        let logged_in = b.kind == HeldKind::Noop || sim.sessions() > 0;
        if listening && logged_in {
            break;
        }
        if Instant::now() > ready_by || matches!(worker.child.try_wait(), Ok(Some(_))) {
            return Err(sqlx::Error::Protocol(
                "the worker process did not come up within 60 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.find_worker();
    let pid = worker.pid();
    let rss = || proc_status_kib(&pid, "VmRSS");
    let idle_kib = rss();

    let jobs: Vec<NewJob> = (0..b.calls)
        .map(|i| match b.kind {
            HeldKind::Dial => NewJob::new("dial", serde_json::json!({ "number": number(i) })),
            HeldKind::Noop => NewJob::new("noop", serde_json::json!({ "sleep_ms": b.call_ms })),
        })
        .collect();
    let started = Instant::now();
    let ids = queue::enqueue_many(pool, &jobs).await?;
    drop(jobs);

    let count_held = format!(
        "SELECT count(*) FILTER (WHERE status = '{}'), count(*) FILTER (WHERE ended_at IS NULL) \
         FROM dialout_queue WHERE id = ANY($1)",
        b.kind.held_status()
    );
    let deadline = started + Duration::from_millis(b.call_ms) + Duration::from_secs(120);
    let mut peak_kib = None;
    let mut most_held = 0;
    let mut all_up: Option<Instant> = None;
    let mut window = Vec::new();
    let mut hwm_kib = None;
    let mut next_count = Instant::now();
    loop {
        let now_kib = rss();
        peak_kib = peak_kib.max(now_kib);
        if let Some(at) = all_up {
            if at.elapsed() <= b.window {
                window.extend(now_kib);
                hwm_kib = proc_status_kib(&pid, "VmHWM");
            }
        }
        if Instant::now() >= next_count {
            next_count = Instant::now() + Duration::from_millis(250);
            let (held, open): (i64, i64) = sqlx::query_as(&count_held)
                .bind(&ids)
                .fetch_one(pool)
                .await?;
            most_held = most_held.max(held);
            if all_up.is_none() && held as u64 == b.calls {
                all_up = Some(Instant::now());
            }
            if open == 0 || Instant::now() > deadline || now_kib.is_none() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Settled: the completer has written the last outcomes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_kib = rss();
    hwm_kib = hwm_kib.or_else(|| proc_status_kib(&pid, "VmHWM"));
    worker.stop().await;
    let statuses: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status::text, count(*) FROM dialout_queue WHERE id = ANY($1) GROUP BY 1 ORDER BY 1",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    window.sort_unstable();
    let steady_kib = (!window.is_empty()).then(|| {
        [
            window[window.len() / 2],
            window[0],
            window[window.len() - 1],
        ]
    });
    Ok(MemoryReport {
        bench: b.clone(),
        idle_kib,
        all_up_s: all_up.map(|at| (at - started).as_secs_f64()),
        steady_kib,
        peak_kib,
        hwm_kib,
        most_held,
        after_kib,
        statuses,
    })
}
