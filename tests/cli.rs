//! The command line: demo, enqueue, jobs, job, and the private PostgreSQL used when
//! no DATABASE_URL is set.

mod support;

use std::process::{Command, Output};

use std::time::Duration;

use sqlx::PgPool;
use support::*;

fn dialout(url: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dialout"));
    cmd.args(args).env("NO_COLOR", "1").env_remove("RUST_LOG");
    match url {
        Some(u) => cmd.env("DATABASE_URL", u),
        None => cmd.env_remove("DATABASE_URL"),
    };
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run dialout")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[sqlx::test]
async fn demo_runs_sample_work_to_its_end_and_prints_the_table(pool: PgPool) {
    let url = db_url(&pool).await;
    let out = tokio::task::spawn_blocking(move || dialout(Some(&url), &["demo"], &[]))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(text.contains("finished "), "{text}");
    assert!(text.contains("a permanent failure, on purpose"), "{text}");
    let open: i64 = sqlx::query_scalar("SELECT count(*) FROM dialout_queue WHERE ended_at IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(open, 0, "the demo waits until its work has ended");
    let finished_kinds: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT kind FROM dialout_queue WHERE status = 'finished' ORDER BY kind",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        finished_kinds,
        ["dial", "legacy_message", "noop", "roster_import"]
    );
    // The dial samples called the demo's simulated PBX: one CDR each, printed.
    let (dials, cdrs): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM dialout_queue WHERE kind = 'dial'), \
                (SELECT count(*) FROM dialout_cdr)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        dials >= 3 && cdrs == dials,
        "{dials} dial jobs, {cdrs} CDRs"
    );
    assert!(
        text.contains("dialout_cdr:") && text.contains("BUSY"),
        "{text}"
    );
}

#[sqlx::test]
async fn enqueue_validates_dedups_and_jobs_shows_it(pool: PgPool) {
    let url = db_url(&pool).await;
    let u = url.clone();
    let (first, again, bad, listing) = tokio::task::spawn_blocking(move || {
        let first = dialout(
            Some(&u),
            &["enqueue", "noop", "{}", "--dedup-key", "k1"],
            &[],
        );
        let again = dialout(
            Some(&u),
            &["enqueue", "noop", "{}", "--dedup-key", "k1"],
            &[],
        );
        let bad = dialout(Some(&u), &["enqueue", "fax", "{}"], &[]);
        let listing = dialout(Some(&u), &["jobs"], &[]);
        (first, again, bad, listing)
    })
    .await
    .unwrap();
    assert!(first.status.success());
    let id: i64 = stdout(&first).trim().parse().expect("the new job's id");
    assert!(
        stdout(&again).contains("already exists"),
        "{}",
        stdout(&again)
    );
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("unknown job kind 'fax'"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(stdout(&listing).contains("queued"), "{}", stdout(&listing));
    let job =
        tokio::task::spawn_blocking(move || dialout(Some(&url), &["job", &id.to_string()], &[]))
            .await
            .unwrap();
    let row: serde_json::Value = serde_json::from_slice(&job.stdout).expect("job prints JSON");
    assert_eq!(row["id"], id);
    assert_eq!(row["status"], "queued");
    assert_eq!(row["dedup_key"], "k1");
}

#[test]
fn without_database_url_a_private_postgresql_is_started_announced_and_stoppable() {
    let temp = TempPg::new();
    let dir = temp.requested.to_str().unwrap();
    let env = [("DIALOUT__DATABASE__LOCAL_DIR", dir)];
    let out = dialout(None, &["enqueue", "noop"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // One line says what keeps running, and how to stop it.
    let line = stderr
        .lines()
        .find(|l| l.contains("no DATABASE_URL set"))
        .unwrap_or_else(|| panic!("no announcement: {stderr}"));
    assert!(line.contains("Unix socket only"), "{line}");
    assert!(
        line.contains(&format!("dialout pg stop --dir {dir}")),
        "{line}"
    );
    assert!(!line.contains(&temp.pg.url().unwrap()), "{line}");
    let out = dialout(None, &["jobs"], &env);
    assert!(stdout(&out).contains("noop"), "{}", stdout(&out));

    let env_line = dialout(None, &["pg", "env", "--dir", dir], &[]);
    assert_eq!(
        stdout(&env_line).trim(),
        dialout::local_pg::export_line(&temp.pg.url().unwrap())
    );
    assert!(temp.pg.is_running());
    let stop = dialout(None, &["pg", "stop", "--dir", dir], &[]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert!(!temp.pg.is_running(), "`dialout pg stop` stopped it");
}

#[sqlx::test]
async fn json_logs_never_show_the_database_password(pool: PgPool) {
    let url = db_url(&pool).await;
    let mut parsed = url::Url::parse(&url).unwrap();
    let (with_password, secret) = match parsed.password() {
        Some(pw) => (url.clone(), pw.to_owned()),
        None => {
            // Trust authentication ignores a password, so the worker runs with one.
            parsed.set_password(Some("hunter2")).unwrap();
            (parsed.to_string(), "hunter2".to_owned())
        }
    };
    let worker = WorkerProcess::spawn(
        &with_password,
        "logger",
        &[
            ("DIALOUT__LOG__FORMAT", "json"),
            ("DIALOUT__LOG__LEVEL", "debug"),
        ],
    );
    let (worker, started) = tokio::task::spawn_blocking(move || {
        let line = worker.wait_for_line("worker started", Duration::from_secs(30));
        (worker, line)
    })
    .await
    .unwrap();
    let id = enqueue(&pool, "noop", serde_json::json!({})).await;
    assert_eq!(ended(&pool, id, Duration::from_secs(20)).await, "finished");
    assert!(started.contains("worker started"));
    let lines = worker.logged();
    assert!(worker.terminate(Duration::from_secs(20)).success());
    assert!(
        lines.iter().any(|l| l.contains("postgres:***@")),
        "the database line is logged, redacted: {lines:?}"
    );
    for line in &lines {
        assert!(
            !line.contains(&secret),
            "a log line shows the password: {line}"
        );
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
}
