//! The health and metrics listener (`[http] listen`) of real workers: over real TCP,
//! against real PostgreSQL (stopped and started under it) and the simulated PBX.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use dialout::http::{GetError, Reply};
use dialout::pbx_sim::SimConfig;
use prometheus_parse::{LineInfo, Scrape, Value};
use serde_json::json;
use sqlx::PgPool;
use support::ami::{dial_settings, start_sim};
use support::{
    all_ended, blocking, ended, enqueue, eventually, lease_and_vanish, private_cluster, unused_addr,
};
use tokio::io::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(20);

async fn get(addr: SocketAddr, path: &str) -> Result<Reply, GetError> {
    dialout::http::get(&format!("http://{addr}{path}"), Duration::from_secs(5)).await
}

async fn status(addr: SocketAddr, path: &str) -> (u16, String) {
    let reply = get(addr, path).await.expect("an HTTP reply");
    (reply.status, reply.body)
}

/// `/metrics`, parsed; every line that is not a comment must be a sample (the parser
/// skips what it does not understand, so that is checked first).
async fn scrape(addr: SocketAddr) -> Scrape {
    let (code, body) = status(addr, "/metrics").await;
    assert_eq!(code, 200, "{body}");
    for line in body
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        assert!(
            matches!(LineInfo::parse(line), LineInfo::Sample { .. }),
            "not a sample line: {line:?}"
        );
    }
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text")
}

/// The one sample of `metric` with `labels`: its value, checked to be of the type the
/// exposition declared for it (`None`: untyped, a histogram's `_count` line).
fn sample(s: &Scrape, metric: &str, labels: &[(&str, &str)], kind: Option<&str>) -> f64 {
    let found: Vec<_> = s
        .samples
        .iter()
        .filter(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "{metric}{labels:?}: {found:?}");
    match (&found[0].value, kind) {
        (Value::Counter(v), Some("counter"))
        | (Value::Gauge(v), Some("gauge"))
        | (Value::Untyped(v), None) => *v,
        (other, _) => panic!("{metric}{labels:?} is {other:?}, not {kind:?}"),
    }
}

fn counter(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    sample(s, metric, labels, Some("counter"))
}

fn gauge(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    sample(s, metric, labels, Some("gauge"))
}

/// Scrapes until `check` holds, at most [`WAIT`]; the last scrape.
async fn scrape_until(addr: SocketAddr, what: &str, check: impl Fn(&Scrape) -> bool) -> Scrape {
    eventually(WAIT, what, || async {
        let s = scrape(addr).await;
        check(&s).then_some(s)
    })
    .await
}

async fn ready_when(addr: SocketAddr, want: u16, what: &str) -> String {
    eventually(WAIT, what, || async {
        let (code, body) = status(addr, "/readyz").await;
        (code == want).then_some(body)
    })
    .await
}

#[sqlx::test]
async fn the_counters_move_with_the_work_done(pool: PgPool) {
    // A job whose worker vanished: this worker's rescuer takes it back.
    let vanished = enqueue(&pool, "noop", json!({})).await;
    lease_and_vanish(&pool, "noop").await;

    let (worker, addr) = support::start_worker_with_http(&pool, support::settings());
    assert_eq!(status(addr, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(ready_when(addr, 200, "ready").await, "ready\n");
    let kind = [("kind", "noop")];
    let s = scrape_until(addr, "the rescue", |s| {
        counter(s, "dialout_rescued_total", &[]) == 1.0
    })
    .await;
    assert_eq!(ended(&pool, vanished, WAIT).await, "finished");
    // Series exist at zero before anything happened to them.
    assert_eq!(gauge(&s, "dialout_legacy_sockets_open", &[]), 0.0);
    assert_eq!(
        counter(
            &s,
            "dialout_jobs_finished_total",
            &[kind[0], ("status", "timedout")]
        ),
        0.0
    );

    const N: i64 = 40;
    sqlx::query(
        "INSERT INTO dialout_queue (kind, payload) \
         SELECT 'noop', CASE WHEN i <= 2 THEN '{\"fail\": \"on purpose\"}'::jsonb ELSE '{}' END \
         FROM generate_series(1, $1) AS i",
    )
    .bind(N)
    .execute(&pool)
    .await
    .expect("insert");
    all_ended(&pool, WAIT).await;
    // The rescued job ran once here; the N jobs once each (two failed, for good).
    let done = (N + 1) as f64;
    let s = scrape_until(addr, "the outcomes to be counted", |s| {
        counter(
            s,
            "dialout_jobs_finished_total",
            &[kind[0], ("status", "finished")],
        ) + counter(
            s,
            "dialout_jobs_finished_total",
            &[kind[0], ("status", "finished_with_error")],
        ) == done
    })
    .await;
    assert_eq!(counter(&s, "dialout_jobs_leased_total", &kind), done);
    assert_eq!(
        counter(
            &s,
            "dialout_jobs_finished_total",
            &[kind[0], ("status", "finished_with_error")]
        ),
        2.0
    );
    for status in ["timedout", "cancelled", "queued"] {
        assert_eq!(
            counter(
                &s,
                "dialout_jobs_finished_total",
                &[kind[0], ("status", status)]
            ),
            0.0,
            "{status}"
        );
    }
    assert_eq!(
        sample(&s, "dialout_job_duration_seconds_count", &kind, None),
        done
    );
    let histogram = s
        .samples
        .iter()
        .find(|x| {
            x.metric == "dialout_job_duration_seconds" && x.labels.get("kind") == Some("noop")
        })
        .expect("the duration histogram");
    let Value::Histogram(buckets) = &histogram.value else {
        panic!("not a histogram: {histogram:?}");
    };
    assert_eq!(buckets.last().map(|b| b.count), Some(done), "{buckets:?}");
    assert_eq!(counter(&s, "dialout_rescued_total", &[]), 1.0);

    worker.shutdown().await;
    // The listener stopped with the worker.
    assert!(
        matches!(get(addr, "/healthz").await, Err(GetError::Connect(..))),
        "still listening after the worker stopped"
    );
}

#[sqlx::test]
async fn the_queue_gauges_show_ready_jobs_nobody_leases(pool: PgPool) {
    // A dial replica whose PBX is not there: its jobs wait, ready, and it is not ready.
    let settings = support::ami::settings_without_pbx();
    for number in ["100", "101", "102"] {
        enqueue(&pool, "dial", json!({"number": number})).await;
    }
    // Not due yet: not counted.
    sqlx::query("INSERT INTO dialout_queue (kind, payload, run_at) VALUES ('dial', '{\"number\": \"103\"}', now() + interval '1 hour')")
        .execute(&pool)
        .await
        .expect("insert");
    let (worker, addr) = support::start_worker_with_http(&pool, settings);
    let body = ready_when(addr, 503, "not ready").await;
    assert!(body.contains("kind dial: not ready"), "{body}");
    assert!(!body.contains("database"), "{body}");
    let s = scrape(addr).await;
    assert_eq!(gauge(&s, "dialout_queue_depth", &[("kind", "dial")]), 3.0);
    assert_eq!(gauge(&s, "dialout_queue_depth", &[("kind", "noop")]), 0.0);
    let age = gauge(
        &s,
        "dialout_queue_oldest_ready_age_seconds",
        &[("kind", "dial")],
    );
    assert!((0.0..60.0).contains(&age), "{age}");
    assert_eq!(gauge(&s, "dialout_ami_link_up", &[]), 0.0);
    worker.shutdown().await;
}

#[sqlx::test(migrations = false)]
async fn readyz_waits_for_the_migrations(pool: PgPool) {
    let (worker, addr) = support::start_worker_with_http(&pool, support::settings());
    let body = ready_when(addr, 503, "not ready").await;
    assert!(body.contains("migrations:"), "{body}");
    assert_eq!(status(addr, "/healthz").await.0, 200);
    dialout::queue::migrate(&pool).await.expect("migrate");
    ready_when(addr, 200, "ready once migrated").await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_postgres_going_away_and_coming_back() {
    let (_removed, pg, pool) = private_cluster().await;
    let (worker, addr) = support::start_worker_with_http(&pool, support::settings());
    ready_when(addr, 200, "ready").await;
    let readyz = format!("http://{addr}/readyz");
    assert!(
        healthcheck(&readyz).await.0,
        "healthcheck on a ready worker"
    );

    {
        let pg = pg.clone();
        blocking(move || pg.stop()).await.expect("stop");
    }
    let body = ready_when(addr, 503, "not ready without the database").await;
    assert!(body.contains("database:"), "{body}");
    // Up, though not ready.
    assert_eq!(status(addr, "/healthz").await.0, 200);
    let (healthy, stderr) = healthcheck(&readyz).await;
    assert!(!healthy && stderr.contains("HTTP 503"), "{stderr}");
    assert!(healthcheck(&format!("http://{addr}/healthz")).await.0);

    {
        let pg = pg.clone();
        blocking(move || pg.start()).await.expect("start again");
    }
    ready_when(addr, 200, "ready again").await;

    worker.shutdown().await;
    let (healthy, stderr) = healthcheck(&readyz).await;
    assert!(!healthy && stderr.contains("cannot connect"), "{stderr}");
    pool.close().await;
    blocking(move || pg.stop()).await.expect("stop");
}

/// `dialout healthcheck --url URL`: whether it exited 0, and its stderr.
async fn healthcheck(url: &str) -> (bool, String) {
    // Its own timeout bounds it (5 s).
    let url = url.to_owned();
    let out = blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_dialout"))
            .args(["healthcheck", "--url", &url, "--timeout-ms", "5000"])
            .env_remove("DATABASE_URL")
            .output()
    })
    .await
    .expect("healthcheck runs");
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "exit {:?}",
        out.status
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn healthcheck_defaults_to_the_configured_listener() {
    // Nothing listens there: it must try that address, and fail with 1.
    let addr = unused_addr();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dialout"))
        .arg("healthcheck")
        .env("DIALOUT__HTTP__LISTEN", addr.to_string())
        .output()
        .expect("healthcheck runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("http://{addr}/healthz")),
        "{stderr}"
    );
}

#[sqlx::test]
async fn the_dial_kind_reports_its_link_and_its_calls(pool: PgPool) {
    let sim = start_sim(SimConfig {
        time_scale: 1.0,
        auth_failure_delay: Duration::from_millis(20),
        numbers: [("101".to_owned(), "answer_1000".to_owned())].into(),
        ..SimConfig::default()
    })
    .await;
    let (worker, addr) = support::start_worker_with_http(&pool, dial_settings(&sim));
    ready_when(addr, 200, "ready once the AMI link is up").await;
    assert_eq!(gauge(&scrape(addr).await, "dialout_ami_link_up", &[]), 1.0);

    let id = enqueue(&pool, "dial", json!({"number": "101"})).await;
    scrape_until(addr, "the call to be followed", |s| {
        gauge(s, "dialout_dial_live_calls", &[]) == 1.0
    })
    .await;
    assert_eq!(ended(&pool, id, WAIT).await, "finished");
    let s = scrape_until(addr, "the CDR to be counted", |s| {
        counter(
            s,
            "dialout_dial_calls_total",
            &[("disposition", "ANSWERED")],
        ) == 1.0
    })
    .await;
    assert_eq!(gauge(&s, "dialout_dial_live_calls", &[]), 0.0);
    for other in ["BUSY", "NO ANSWER", "CONGESTION", "FAILED"] {
        assert_eq!(
            counter(&s, "dialout_dial_calls_total", &[("disposition", other)]),
            0.0
        );
    }
    assert_eq!(
        counter(
            &s,
            "dialout_jobs_finished_total",
            &[("kind", "dial"), ("status", "finished")]
        ),
        1.0
    );

    sim.drop_connections();
    scrape_until(addr, "the reconnect", |s| {
        counter(s, "dialout_ami_reconnects_total", &[]) == 1.0
            && gauge(s, "dialout_ami_link_up", &[]) == 1.0
    })
    .await;
    sim.shutdown().await;
    let body = ready_when(addr, 503, "not ready without the PBX").await;
    assert!(body.contains("kind dial: not ready"), "{body}");
    assert_eq!(gauge(&scrape(addr).await, "dialout_ami_link_up", &[]), 0.0);
    worker.shutdown().await;
}

#[sqlx::test]
async fn legacy_sockets_are_counted_while_open(pool: PgPool) {
    let peer = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = peer.local_addr().expect("addr").port();
    let mut settings = support::settings();
    settings.worker.kinds = vec!["legacy_message".into()];
    let (worker, addr) = support::start_worker_with_http(&pool, settings);
    let id = enqueue(
        &pool,
        "legacy_message",
        json!({"host": "127.0.0.1", "port": port, "message": "PING\n", "delimiter": "\n"}),
    )
    .await;
    let (mut conn, _) = tokio::time::timeout(WAIT, peer.accept())
        .await
        .expect("the job connects")
        .expect("accept");
    scrape_until(addr, "the socket to be counted", |s| {
        gauge(s, "dialout_legacy_sockets_open", &[]) == 1.0
    })
    .await;
    conn.write_all(b"PONG\n").await.expect("reply");
    assert_eq!(ended(&pool, id, WAIT).await, "finished");
    let s = scrape_until(addr, "the socket to be closed", |s| {
        gauge(s, "dialout_legacy_sockets_open", &[]) == 0.0
    })
    .await;
    assert_eq!(
        counter(
            &s,
            "dialout_jobs_finished_total",
            &[("kind", "legacy_message"), ("status", "finished")]
        ),
        1.0
    );
    worker.shutdown().await;
}

#[sqlx::test]
async fn only_the_three_endpoints_answer_and_only_to_get(pool: PgPool) {
    let (worker, addr) = support::start_worker_with_http(&pool, support::settings());
    assert_eq!(status(addr, "/").await.0, 404);
    assert_eq!(status(addr, "/metrics/x").await.0, 404);
    // A POST, by hand: the client only GETs.
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("write");
    let mut reply = String::new();
    tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_string(&mut conn, &mut reply),
    )
    .await
    .expect("a reply")
    .expect("read");
    assert!(reply.starts_with("HTTP/1.1 405"), "{reply}");
    worker.shutdown().await;
}

#[sqlx::test]
async fn no_listener_unless_configured(pool: PgPool) {
    let settings = support::settings();
    assert_eq!(settings.http.listen, None);
    let registry = dialout::jobs::registry(&settings).expect("registry");
    let mut worker = dialout::worker::Worker::new(settings, pool, registry);
    assert_eq!(worker.bind_http().expect("no error"), None);
}
