//! Helpers the integration tests share: settings with short leases, an in-process
//! worker, bounded waits on the database.
#![allow(dead_code)]

pub mod ami;
pub mod logs;
pub mod proxy;

use std::future::Future;
use std::time::Duration;

use dialout::config::Settings;
use dialout::queue::status::JobRow;
use dialout::queue::{self, NewJob};
use dialout::worker::{RunSummary, Worker};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// The short timings every test worker runs with, in-process ([`settings`]) or as a
/// process ([`WorkerProcess`]), so tests wait milliseconds, not minutes. Written once,
/// as the environment a `dialout worker` reads.
pub const SHORT_TIMINGS: &[(&str, &str)] = &[
    ("DIALOUT__WORKER__LEASE_MS", "1000"),
    ("DIALOUT__WORKER__POLL_INTERVAL_MS", "100"),
    ("DIALOUT__WORKER__RESCUE_INTERVAL_MS", "200"),
    ("DIALOUT__WORKER__SHUTDOWN_GRACE_MS", "2000"),
    ("DIALOUT__WORKER__RETRY_BASE_MS", "20"),
    ("DIALOUT__WORKER__RETRY_MAX_MS", "200"),
    ("DIALOUT__WORKER__RECONNECT_MIN_MS", "20"),
    ("DIALOUT__WORKER__RECONNECT_MAX_MS", "300"),
];

/// Defaults with [`SHORT_TIMINGS`], leasing `noop` only, migrations left to
/// `#[sqlx::test]`, nothing pruned.
pub fn settings() -> Settings {
    let env = SHORT_TIMINGS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()));
    let mut s = Settings::load_with_env(None, env).expect("defaults load");
    s.worker.kinds = vec!["noop".into()];
    s.worker.migrate_on_start = false;
    s.retention.keep_hours = 0;
    s
}

pub struct RunningWorker {
    pub stop: CancellationToken,
    pub handle: tokio::task::JoinHandle<RunSummary>,
}

impl RunningWorker {
    pub async fn shutdown(self) -> RunSummary {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("worker stops within 30 s")
            .expect("worker task did not panic")
    }
}

/// Logs go to the test's captured output; RUST_LOG picks what.
pub fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub fn start_worker(pool: &PgPool, settings: Settings) -> RunningWorker {
    run_worker(new_worker(pool, settings))
}

/// Like [`start_worker`], its health and metrics listener on a free loopback port;
/// that address.
pub fn start_worker_with_http(
    pool: &PgPool,
    mut settings: Settings,
) -> (RunningWorker, std::net::SocketAddr) {
    settings.http.listen = Some("127.0.0.1:0".parse().expect("address"));
    let mut worker = new_worker(pool, settings);
    let addr = worker
        .bind_http()
        .expect("binds a free port")
        .expect("http.listen is set");
    (run_worker(worker), addr)
}

fn new_worker(pool: &PgPool, settings: Settings) -> Worker {
    logs();
    let registry = dialout::jobs::registry(&settings).expect("registry");
    Worker::new(settings, pool.clone(), registry)
}

fn run_worker(worker: Worker) -> RunningWorker {
    let stop = CancellationToken::new();
    let token = stop.clone();
    let handle = tokio::spawn(async move { worker.run(token).await.expect("worker runs") });
    RunningWorker { stop, handle }
}

/// Polls `check` until it returns `Some`, for at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until job `id` has ended; returns its status.
pub async fn ended(pool: &PgPool, id: i64, within: Duration) -> String {
    eventually(within, &format!("job {id} to end"), || async {
        sqlx::query_scalar::<_, String>(
            "SELECT status::text FROM dialout_queue WHERE id = $1 AND ended_at IS NOT NULL",
        )
        .bind(id)
        .fetch_optional(pool)
        .await
        .expect("query")
    })
    .await
}

/// Waits until job `id` runs on worker `who`.
pub async fn running_on(pool: &PgPool, id: i64, who: &str) {
    eventually(
        Duration::from_secs(30),
        &format!("job {id} to run on {who}"),
        || async {
            let w: Option<String> = sqlx::query_scalar(
                "SELECT worker_id FROM dialout_queue WHERE id = $1 AND status = 'trying'",
            )
            .bind(id)
            .fetch_optional(pool)
            .await
            .ok()?
            .flatten();
            (w.as_deref() == Some(who)).then_some(())
        },
    )
    .await
}

/// A noop job's status, attempts and how often its effect ran.
pub async fn status_attempts_effects(pool: &PgPool, id: i64) -> (String, i32, i64) {
    sqlx::query_as(
        "SELECT status::text, attempts, (SELECT count(*) FROM dialout_noop_effect WHERE job_id = $1) \
         FROM dialout_queue WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .expect("job row")
}

/// Inserts a job that the database must refuse; returns its message.
pub async fn insert_refused(pool: &PgPool, kind: &str, payload: &serde_json::Value) -> String {
    let err = sqlx::query("INSERT INTO dialout_queue (kind, payload) VALUES ($1, $2)")
        .bind(kind)
        .bind(payload)
        .execute(pool)
        .await
        .expect_err("the INSERT is refused");
    err.as_database_error()
        .expect("a database error")
        .message()
        .to_owned()
}

/// Enqueues through the library (`dialout::queue::enqueue`); the new job's id.
pub async fn enqueue(pool: &PgPool, kind: &str, payload: serde_json::Value) -> i64 {
    enqueue_job(pool, NewJob::new(kind, payload)).await
}

/// Like [`enqueue`], with the job's other columns.
pub async fn enqueue_job(pool: &PgPool, job: NewJob) -> i64 {
    queue::enqueue(pool, &job)
        .await
        .expect("enqueue")
        .expect("no job with this dedup_key yet")
}

/// A spec in one call: a worker with `settings` (plus `job`'s kind, if missing) runs
/// `job`, enqueued through the library, to its end; the job's final row. The worker is
/// stopped before this returns.
pub async fn run_to_end(pool: &PgPool, mut settings: Settings, job: NewJob) -> JobRow {
    if !settings.worker.kinds.contains(&job.kind) {
        settings.worker.kinds.push(job.kind.clone());
    }
    let worker = start_worker(pool, settings);
    let id = enqueue_job(pool, job).await;
    ended(pool, id, Duration::from_secs(30)).await;
    worker.shutdown().await;
    queue::status::job(pool, id)
        .await
        .expect("query")
        .expect("the job's row")
}

/// The URL of the test's own database (the one `#[sqlx::test]` made).
pub async fn db_url(pool: &PgPool) -> String {
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(pool)
        .await
        .expect("current_database");
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set by scripts/test");
    dialout::bench::queue::with_database(&base, &name)
}

/// A `dialout worker` process with [`SHORT_TIMINGS`]; stderr is collected line by line.
pub struct WorkerProcess {
    pub child: std::process::Child,
    pub id: String,
    lines: std::sync::mpsc::Receiver<String>,
    /// Every line read so far.
    history: std::sync::Mutex<Vec<String>>,
}

impl WorkerProcess {
    pub fn spawn(url: &str, id: &str, env: &[(&str, &str)]) -> Self {
        use std::io::BufRead;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_dialout"));
        cmd.arg("worker")
            .env("DATABASE_URL", url)
            .env("DIALOUT__WORKER__ID", id)
            .env("DIALOUT__WORKER__KINDS", "noop")
            .envs(SHORT_TIMINGS.iter().copied())
            .env("DIALOUT__LOG__LEVEL", "info")
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn dialout worker");
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            id: id.to_owned(),
            lines,
            history: Default::default(),
        }
    }

    pub fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Waits for a stderr line containing `needle`, at most `within`.
    pub fn wait_for_line(&self, needle: &str, within: Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.history.lock().unwrap().push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "worker {} never logged {needle:?} within {within:?}",
                    self.id
                ),
            }
        }
    }

    /// Every stderr line logged so far.
    pub fn logged(&self) -> Vec<String> {
        let mut history = self.history.lock().unwrap();
        history.extend(self.lines.try_iter());
        history.clone()
    }

    /// SIGTERM, then the exit status (bounded).
    pub fn terminate(mut self, within: Duration) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "worker {} did not exit within {within:?} of SIGTERM",
                    self.id
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until no job is left unended.
pub async fn all_ended(pool: &PgPool, within: Duration) {
    eventually(within, "every job to end", || async {
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM dialout_queue WHERE ended_at IS NULL")
                .fetch_one(pool)
                .await
                .ok()?;
        (open == 0).then_some(())
    })
    .await
}

/// A private PostgreSQL (`dialout::local_pg`) in a temporary folder, stopped and removed
/// on drop (as root the cluster lives in /tmp, outside that folder).
pub struct TempPg {
    pub pg: dialout::local_pg::LocalPg,
    /// The folder asked for (what `--dir` and `database.local_dir` take).
    pub requested: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl TempPg {
    /// Not started yet.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let requested = dir.path().join("pg");
        let pg = dialout::local_pg::LocalPg::new(&requested).expect("PostgreSQL installed");
        Self {
            pg,
            requested,
            _dir: dir,
        }
    }
}

impl Drop for TempPg {
    fn drop(&mut self) {
        let _ = self.pg.remove();
    }
}

pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

/// A migrated private cluster of the test's own (it will be stopped and restarted),
/// removed when the guard drops.
pub async fn private_cluster() -> (
    Removed,
    std::sync::Arc<dialout::local_pg::LocalPg>,
    sqlx::PgPool,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let pg = std::sync::Arc::new(
        dialout::local_pg::LocalPg::new(&dir.path().join("pg")).expect("PostgreSQL installed"),
    );
    {
        let pg = pg.clone();
        blocking(move || pg.start())
            .await
            .expect("private cluster starts");
    }
    let pool = queue::pool(&pg.url().expect("url"), 4, Duration::from_secs(5)).unwrap();
    queue::migrate(&pool).await.unwrap();
    (
        Removed {
            pg: pg.clone(),
            _dir: dir,
        },
        pg,
        pool,
    )
}

/// Removes the cluster (as root it lives outside the temporary folder).
pub struct Removed {
    pg: std::sync::Arc<dialout::local_pg::LocalPg>,
    _dir: tempfile::TempDir,
}

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = self.pg.remove();
    }
}

/// Leases the one queued job of `kind` as a worker that then vanishes; returns once
/// that lease is over.
pub async fn lease_and_vanish(pool: &PgPool, kind: &str) {
    let leased = queue::lease_jobs(
        pool,
        kind,
        10,
        "vanished",
        Duration::from_millis(1),
        uuid::Uuid::new_v4(),
    )
    .await
    .expect("lease");
    assert_eq!(leased.len(), 1);
    eventually(Duration::from_secs(5), "the lease to expire", || async {
        let expired: bool = sqlx::query_scalar(
            "SELECT bool_and(lease_expires_at < now()) FROM dialout_queue WHERE worker_id = 'vanished'",
        )
        .fetch_one(pool)
        .await
        .ok()?;
        expired.then_some(())
    })
    .await;
}

/// A loopback address nothing listens on (bound, then let go).
pub fn unused_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}
