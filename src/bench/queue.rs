//! `dialout bench queue`: drain throughput and enqueue->start latency, each in a fresh
//! database, with the default settings (the defaults are what users run).

use std::fmt;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::queue;
use crate::worker::Worker;

#[derive(Debug, Clone)]
pub struct DrainReport {
    pub jobs: u64,
    pub seconds: f64,
    /// CPU seconds used during the drain by this process and by every PostgreSQL
    /// process on the machine (Linux /proc; None elsewhere). On a shared machine the
    /// wall clock also counts other processes' turns on the cores; CPU time does not.
    pub cpu: Option<CpuSeconds>,
}

#[derive(Debug, Clone, Copy)]
pub struct CpuSeconds {
    pub worker: f64,
    pub database: f64,
}

#[derive(Debug, Clone)]
pub struct LatencyReport {
    pub samples: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

impl fmt::Display for DrainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "drain {} noop jobs, one worker process: {:.2} s, {:.0} jobs/s",
            self.jobs,
            self.seconds,
            self.jobs as f64 / self.seconds
        )?;
        if let Some(cpu) = self.cpu {
            let per_job = |s: f64| s * 1e6 / self.jobs as f64;
            write!(
                f,
                " (CPU per job: worker {:.1} us, PostgreSQL {:.1} us)",
                per_job(cpu.worker),
                per_job(cpu.database)
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for LatencyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "enqueue->start latency, {} single jobs 20 ms apart: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
            self.samples, self.p50_ms, self.p95_ms, self.p99_ms
        )
    }
}

/// A database of its own for one run, dropped afterwards.
pub struct ScratchDb {
    admin: PgPool,
    pub name: String,
    pub url: String,
}

impl ScratchDb {
    pub async fn create(admin_url: &str, prefix: &str) -> Result<Self, sqlx::Error> {
        let admin = queue::pool(admin_url, 2, Duration::from_secs(10))
            .map_err(|e| sqlx::Error::Configuration(e.to_string().into()))?;
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await?;
        let url = with_database(admin_url, &name);
        Ok(Self { admin, name, url })
    }

    pub async fn drop_db(self) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&self.admin)
        .await?;
        Ok(())
    }
}

/// `url` pointing at database `name` instead.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

async fn start_worker(
    settings: &Settings,
    pool: &PgPool,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let mut settings = settings.clone();
    settings.worker.kinds = vec!["noop".into()];
    let registry = crate::jobs::registry(&settings).unwrap_or_default();
    let worker = Worker::new(settings, pool.clone(), registry);
    let stop = CancellationToken::new();
    let token = stop.clone();
    let handle = tokio::spawn(async move {
        if let Err(e) = worker.run(token).await {
            tracing::error!(error = %e, "bench worker failed");
        }
    });
    (stop, handle)
}

/// A fresh database with the migrations applied, and a pool on it.
pub(crate) async fn migrated_scratch_db(
    settings: &Settings,
    admin_url: &str,
) -> Result<(ScratchDb, PgPool), sqlx::Error> {
    let config = |e: queue::QueueError| sqlx::Error::Configuration(e.to_string().into());
    let db = ScratchDb::create(admin_url, "dialout_bench").await?;
    let pool = queue::pool(
        &db.url,
        settings.database.max_connections,
        Duration::from_secs(10),
    )
    .map_err(config)?;
    queue::migrate(&pool).await.map_err(config)?;
    Ok((db, pool))
}

/// Enqueues `jobs` noop jobs, then times one worker draining them.
pub async fn drain(
    settings: &Settings,
    admin_url: &str,
    jobs: u64,
) -> Result<DrainReport, sqlx::Error> {
    let (db, pool) = migrated_scratch_db(settings, admin_url).await?;
    let noop = queue::NewJob::new("noop", serde_json::json!({}));
    queue::enqueue_many(&pool, &vec![noop; jobs as usize]).await?;
    sqlx::query("VACUUM ANALYZE dialout_queue")
        .execute(&pool)
        .await?;
    let mut watcher = DrainWatcher::new(&pool).await?;
    let postmaster = postmaster_pid(&pool).await;
    let cpu_before = cpu_now(postmaster);
    let started = Instant::now();
    let (stop, handle) = start_worker(settings, &pool).await;
    loop {
        if watcher.drained().await? {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(watcher);
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_before
        .zip(cpu_now(postmaster))
        .map(|(a, b)| CpuSeconds {
            worker: b.worker - a.worker,
            database: b.database - a.database,
        });
    stop.cancel();
    let _ = handle.await;
    let finished: i64 =
        sqlx::query_scalar("SELECT count(*) FROM dialout_queue WHERE status = 'finished'")
            .fetch_one(&pool)
            .await?;
    pool.close().await;
    db.drop_db().await?;
    if finished as u64 != jobs {
        tracing::error!(finished, jobs, "not every job finished");
    }
    Ok(DrainReport { jobs, seconds, cpu })
}

/// The postmaster of the server `pool` talks to, when it runs on this machine (the
/// parent of this connection's backend): the CPU figures then count that server only,
/// not every PostgreSQL of a shared machine. None for a server elsewhere.
pub(crate) async fn postmaster_pid(pool: &PgPool) -> Option<u32> {
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await
        .ok()?;
    let (name, ppid, _) = proc_stat(&std::path::Path::new("/proc").join(backend.to_string()))?;
    (name == "postgres").then_some(ppid)
}

/// Command name, parent pid and utime, stime, cutime, cstime in seconds, from
/// /proc/PID/stat (fields 2, 4 and 14-17; times in clock ticks, 100 a second on Linux).
/// The command name may hold spaces: split after its closing parenthesis.
fn proc_stat(dir: &std::path::Path) -> Option<(String, u32, [f64; 4])> {
    let text = std::fs::read_to_string(dir.join("stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    let ppid = fields.get(1)?.parse().ok()?;
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .map(|t| t / 100.0)
    };
    Some((name, ppid, [tick(11)?, tick(12)?, tick(13)?, tick(14)?]))
}

/// CPU used so far by this process and by PostgreSQL (live processes, plus the exited
/// backends the postmaster has reaped), from Linux's /proc: the server of `postmaster`
/// and its children when known, else every process named postgres.
pub(crate) fn cpu_now(postmaster: Option<u32>) -> Option<CpuSeconds> {
    let (_, _, own) = proc_stat(std::path::Path::new("/proc/self"))?;
    let mut database = 0.0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid: Option<u32> = entry.file_name().to_str().and_then(|n| n.parse().ok());
        let Some(pid) = pid else { continue };
        let Some((name, ppid, [utime, stime, cutime, cstime])) = proc_stat(&entry.path()) else {
            continue;
        };
        let ours = match postmaster {
            Some(pm) => pid == pm || ppid == pm,
            None => true,
        };
        if name == "postgres" && ours {
            // Backends are the postmaster's children: their exited share shows up in
            // its cutime/cstime; a backend's own children are none.
            database += utime + stime + cutime + cstime;
        }
    }
    Some(CpuSeconds {
        worker: own[0] + own[1],
        database,
    })
}

/// Single jobs 20 ms apart against an idle worker: created_at -> started_at, both
/// read off the database clock.
pub async fn latency(
    settings: &Settings,
    admin_url: &str,
    samples: usize,
) -> Result<LatencyReport, sqlx::Error> {
    let (db, pool) = migrated_scratch_db(settings, admin_url).await?;
    let (stop, handle) = start_worker(settings, &pool).await;
    // Let the worker settle (LISTEN connected) before measuring.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..samples {
        queue::enqueue(&pool, &queue::NewJob::new("noop", serde_json::json!({}))).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM dialout_queue WHERE started_at IS NULL)",
        )
        .fetch_one(&pool)
        .await?;
        if !left || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut waits: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM started_at - created_at)::float8 * 1000 FROM dialout_queue \
         WHERE started_at IS NOT NULL",
    )
    .fetch_all(&pool)
    .await?;
    stop.cancel();
    let _ = handle.await;
    pool.close().await;
    db.drop_db().await?;
    waits.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if waits.is_empty() {
            return f64::NAN;
        }
        let i = ((waits.len() as f64 - 1.0) * p).round() as usize;
        waits[i.min(waits.len() - 1)]
    };
    Ok(LatencyReport {
        samples: waits.len(),
        p50_ms: pct(0.50),
        p95_ms: pct(0.95),
        p99_ms: pct(0.99),
    })
}

/// Asks whether the queue is drained (nothing queued, nothing under lease), on a
/// connection of its own. It must not weigh on what it measures: through the two
/// partial indexes its check costs microseconds, where a sequential scan of the table
/// (the planner's pick on stale statistics) grows with the finished rows and ate a good
/// share of the database's CPU at 100 polls a second.
pub(crate) struct DrainWatcher(sqlx::pool::PoolConnection<sqlx::Postgres>);

impl DrainWatcher {
    pub(crate) async fn new(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let mut conn = pool.acquire().await?;
        sqlx::query("SET enable_seqscan = off")
            .execute(&mut *conn)
            .await?;
        Ok(Self(conn))
    }

    pub(crate) async fn drained(&mut self) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT NOT EXISTS (SELECT 1 FROM dialout_queue WHERE status = 'queued') \
                AND NOT EXISTS (SELECT 1 FROM dialout_queue WHERE lease_token IS NOT NULL)",
        )
        .fetch_one(&mut *self.0)
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::{cpu_now, with_database};

    #[test]
    fn cpu_of_one_server_counts_only_its_processes() {
        // This test process is no postmaster: nothing named postgres is its child.
        let cpu = cpu_now(Some(std::process::id())).expect("Linux /proc");
        assert_eq!(cpu.database, 0.0);
        assert!(cpu.worker >= 0.0);
    }

    #[test]
    fn swaps_the_database_name() {
        assert_eq!(
            with_database("postgres://u@h:5/postgres", "x"),
            "postgres://u@h:5/x"
        );
        assert_eq!(with_database("postgres://u@h:5", "x"), "postgres://u@h:5/x");
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
