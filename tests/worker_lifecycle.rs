//! Kinds that own resources: set-up only where the kind runs, no leases while a kind
//! is not ready, shutdown steps, hand-back for recovery, and the one recovery attempt
//! a kind may ask for when a lost attempt was the last.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use dialout::config::{KindSection, Settings};
use dialout::queue::{RescueSettings, Rescuer};
use dialout::worker::{
    JobContext, JobHandler, KindError, Outcome, Readiness, ReadinessSender, Registry, Worker,
};
use futures_util::future::BoxFuture;
use serde_json::json;
use sqlx::PgPool;
use support::{RunningWorker, ended, enqueue, lease_and_vanish};
use tokio_util::sync::CancellationToken;

/// A test kind that records its lifecycle and reports each attempt in its result.
#[derive(Clone, Default)]
struct Probe {
    started: Arc<AtomicBool>,
    shut_down: Arc<AtomicBool>,
    runs: Arc<AtomicUsize>,
    readiness: Option<Readiness>,
    /// First attempt hands the job back for recovery.
    hand_back_first: bool,
    recovers: bool,
}

impl JobHandler for Probe {
    fn run(&self, ctx: JobContext) -> BoxFuture<'static, Outcome> {
        let started = self.started.load(Ordering::SeqCst);
        let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
        let hand_back = self.hand_back_first && run == 1;
        Box::pin(async move {
            if hand_back {
                return Outcome::hand_back_for_recovery("the call is still up");
            }
            Outcome::finished(json!({
                "started_before": started,
                "attempt": ctx.attempt(),
                "attempt_id": ctx.attempt_id().to_string(),
                "needs_recovery": ctx.needs_recovery(),
                "cancel_token_live": !ctx.cancellation().is_cancelled(),
            }))
        })
    }

    fn start(&self) -> BoxFuture<'_, Result<(), KindError>> {
        Box::pin(async {
            self.started.store(true, Ordering::SeqCst);
            Ok(())
        })
    }

    fn readiness(&self) -> Readiness {
        self.readiness.clone().unwrap_or_else(Readiness::always)
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {
            self.shut_down.store(true, Ordering::SeqCst);
        })
    }

    fn recovers_lost_attempts(&self) -> bool {
        self.recovers
    }
}

async fn add_kind(pool: &PgPool, name: &str) {
    sqlx::query("INSERT INTO dialout_kind (name, description) VALUES ($1, 'a test kind')")
        .bind(name)
        .execute(pool)
        .await
        .expect("kind row");
}

fn settings_for(kinds: &[&str]) -> Settings {
    let mut s = support::settings();
    s.worker.kinds = kinds.iter().map(|k| k.to_string()).collect();
    for k in kinds {
        s.kinds
            .entry(k.to_string())
            .or_insert(KindSection { concurrency: 4 });
    }
    s
}

fn run(pool: &PgPool, settings: Settings, registry: Registry) -> RunningWorker {
    support::logs();
    let worker = Worker::new(settings, pool.clone(), registry);
    let stop = CancellationToken::new();
    let token = stop.clone();
    let handle = tokio::spawn(async move { worker.run(token).await.expect("worker runs") });
    RunningWorker { stop, handle }
}

async fn row(pool: &PgPool, id: i64) -> (String, i32, bool, Option<serde_json::Value>) {
    sqlx::query_as(
        "SELECT status::text, attempts, needs_recovery, result FROM dialout_queue WHERE id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .expect("job row")
}

#[sqlx::test]
async fn a_kind_that_is_not_ready_is_not_leased_while_the_others_run(pool: PgPool) {
    add_kind(&pool, "gated").await;
    let (ready, readiness) = Readiness::channel(false);
    let probe = Probe {
        readiness: Some(readiness),
        ..Probe::default()
    };
    let registry = Registry::new()
        .with("gated", probe.clone())
        .with("noop", dialout::jobs::noop::Noop);
    let settings = settings_for(&["gated", "noop"]);
    let poll = settings.worker.poll_interval();
    let worker = run(&pool, settings, registry);

    let gated = enqueue(&pool, "gated", json!({})).await;
    let other = enqueue(&pool, "noop", json!({})).await;
    assert_eq!(
        ended(&pool, other, Duration::from_secs(10)).await,
        "finished"
    );
    // A negative cannot be awaited: watch for five poll intervals, in which a producer
    // that ignored readiness would have leased it.
    tokio::time::sleep(poll * 5).await;
    let (status, attempts, _, _) = row(&pool, gated).await;
    assert_eq!((status.as_str(), attempts), ("queued", 0));
    assert_eq!(probe.runs.load(Ordering::SeqCst), 0);

    ready.set(true);
    assert_eq!(
        ended(&pool, gated, Duration::from_secs(10)).await,
        "finished"
    );
    let (_, attempts, _, result) = row(&pool, gated).await;
    assert_eq!(attempts, 1);
    assert_eq!(result.expect("result")["started_before"], json!(true));

    // Down again: new work of that kind waits, the rest goes on.
    ready.set(false);
    let second = enqueue(&pool, "gated", json!({})).await;
    let third = enqueue(&pool, "noop", json!({})).await;
    assert_eq!(
        ended(&pool, third, Duration::from_secs(10)).await,
        "finished"
    );
    tokio::time::sleep(poll * 5).await;
    assert_eq!(row(&pool, second).await.0, "queued");
    ready.set(true);
    assert_eq!(
        ended(&pool, second, Duration::from_secs(10)).await,
        "finished"
    );
    worker.shutdown().await;
}

#[sqlx::test]
async fn only_the_kinds_a_replica_runs_are_started_and_each_is_shut_down(pool: PgPool) {
    add_kind(&pool, "used").await;
    let used = Probe::default();
    let unused = Probe::default();
    let registry = Registry::new()
        .with("used", used.clone())
        .with("unused", unused.clone());
    let worker = run(&pool, settings_for(&["used"]), registry);
    let id = enqueue(&pool, "used", json!({})).await;
    assert_eq!(ended(&pool, id, Duration::from_secs(10)).await, "finished");
    assert!(used.started.load(Ordering::SeqCst));
    assert!(
        !used.shut_down.load(Ordering::SeqCst),
        "not before shutdown"
    );
    worker.shutdown().await;
    assert!(
        used.shut_down.load(Ordering::SeqCst),
        "its shutdown step ran"
    );
    assert!(
        !unused.started.load(Ordering::SeqCst),
        "a kind this replica leaves out never starts"
    );
    assert!(!unused.shut_down.load(Ordering::SeqCst));
}

#[sqlx::test]
async fn a_kind_that_cannot_start_stops_the_worker_with_the_reason(pool: PgPool) {
    struct Broken;
    impl JobHandler for Broken {
        fn run(&self, _: JobContext) -> BoxFuture<'static, Outcome> {
            Box::pin(async { Outcome::finished_empty() })
        }
        fn start(&self) -> BoxFuture<'_, Result<(), KindError>> {
            Box::pin(async { Err(KindError("no credentials".into())) })
        }
    }
    let worker = Worker::new(
        settings_for(&["broken"]),
        pool.clone(),
        Registry::new().with("broken", Broken),
    );
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        worker.run(CancellationToken::new()),
    )
    .await
    .expect("returns at once")
    .expect_err("refuses to run");
    let text = err.to_string();
    assert!(
        text.contains("broken") && text.contains("no credentials"),
        "{text}"
    );
}

#[sqlx::test]
async fn a_hand_back_for_recovery_keeps_the_attempt_and_flags_the_next(pool: PgPool) {
    add_kind(&pool, "outside").await;
    let probe = Probe {
        hand_back_first: true,
        ..Probe::default()
    };
    let worker = run(
        &pool,
        settings_for(&["outside"]),
        Registry::new().with("outside", probe.clone()),
    );
    let id = sqlx::query_scalar(
        "INSERT INTO dialout_queue (kind, max_attempts) VALUES ('outside', 1) RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .expect("enqueue");
    assert_eq!(ended(&pool, id, Duration::from_secs(10)).await, "finished");
    worker.shutdown().await;
    assert_eq!(probe.runs.load(Ordering::SeqCst), 2);
    let (_, attempts, needs_recovery, result) = row(&pool, id).await;
    let result = result.expect("result");
    // The handed-back attempt was not counted: max_attempts 1 still allowed the next.
    assert_eq!(attempts, 1);
    assert_eq!(result["attempt"], json!(1));
    assert_eq!(result["needs_recovery"], json!(true));
    assert!(!needs_recovery, "cleared once the job ended");
    let last_error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM dialout_queue WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("row");
    assert_eq!(last_error.as_deref(), Some("the call is still up"));
}

#[sqlx::test]
async fn attempts_have_identities_that_are_never_reused(pool: PgPool) {
    add_kind(&pool, "outside").await;
    let probe = Probe {
        hand_back_first: true,
        ..Probe::default()
    };
    // Two runs of attempt number 1 (the first handed back): their ids still differ.
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    struct Recording(Probe, Arc<std::sync::Mutex<Vec<String>>>);
    impl JobHandler for Recording {
        fn run(&self, ctx: JobContext) -> BoxFuture<'static, Outcome> {
            self.1.lock().unwrap().push(ctx.attempt_id().to_string());
            self.0.run(ctx)
        }
    }
    let worker = run(
        &pool,
        settings_for(&["outside"]),
        Registry::new().with("outside", Recording(probe, seen.clone())),
    );
    let id = enqueue(&pool, "outside", json!({})).await;
    assert_eq!(ended(&pool, id, Duration::from_secs(10)).await, "finished");
    worker.shutdown().await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_ne!(seen[0], seen[1]);
    for s in &seen {
        assert!(s.starts_with(&format!("{id}-")), "{s}");
        assert!(
            s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{s}"
        );
    }
}

fn rescuer(pool: &PgPool, recover: &[&str]) -> Rescuer {
    Rescuer::new(
        pool.clone(),
        RescueSettings {
            interval: Duration::from_millis(100),
            lease: Duration::from_millis(300),
            retry_base: Duration::from_millis(10),
            retry_max: Duration::from_millis(20),
            recover_when_spent: recover.iter().map(|k| k.to_string()).collect(),
        },
    )
}

#[sqlx::test]
async fn a_lost_last_attempt_gets_one_recovery_attempt_when_its_kind_asks(pool: PgPool) {
    add_kind(&pool, "outside").await;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO dialout_queue (kind, max_attempts) VALUES ('outside', 1) RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .expect("enqueue");
    let plain: i64 = sqlx::query_scalar(
        "INSERT INTO dialout_queue (kind, max_attempts) VALUES ('noop', 1) RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .expect("enqueue");

    lease_and_vanish(&pool, "outside").await;
    lease_and_vanish(&pool, "noop").await;
    let counts = rescuer(&pool, &["outside"])
        .run_once()
        .await
        .expect("rescue");
    assert_eq!(
        (counts.recovering, counts.ended, counts.requeued),
        (1, 1, 0)
    );
    assert_eq!(counts.kinds, vec!["outside".to_owned()]);
    let (status, attempts, needs_recovery, _) = row(&pool, id).await;
    assert_eq!(
        (status.as_str(), attempts, needs_recovery),
        ("queued", 1, true)
    );
    let (status, _, _, _) = row(&pool, plain).await;
    assert_eq!(
        status, "finished_with_error",
        "a kind that does not ask ends 'worker lost'"
    );

    // The recovery attempt runs as attempt max_attempts + 1 and knows what it is.
    let probe = Probe {
        recovers: true,
        ..Probe::default()
    };
    let worker = run(
        &pool,
        settings_for(&["outside"]),
        Registry::new().with("outside", probe),
    );
    assert_eq!(ended(&pool, id, Duration::from_secs(10)).await, "finished");
    worker.shutdown().await;
    let result = row(&pool, id).await.3.expect("result");
    assert_eq!(result["attempt"], json!(2));
    assert_eq!(result["needs_recovery"], json!(true));
}

#[sqlx::test]
async fn a_lost_recovery_attempt_is_not_recovered_again(pool: PgPool) {
    add_kind(&pool, "outside").await;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO dialout_queue (kind, max_attempts) VALUES ('outside', 1) RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .expect("enqueue");
    let rescue = rescuer(&pool, &["outside"]);
    lease_and_vanish(&pool, "outside").await;
    assert_eq!(rescue.run_once().await.expect("rescue").recovering, 1);
    // The recovery attempt's worker vanishes too.
    lease_and_vanish(&pool, "outside").await;
    let counts = rescue.run_once().await.expect("rescue");
    assert_eq!((counts.recovering, counts.ended), (0, 1));
    let (status, attempts, needs_recovery, _) = row(&pool, id).await;
    assert_eq!(
        (status.as_str(), attempts, needs_recovery),
        ("finished_with_error", 2, false)
    );
    let last_error: String =
        sqlx::query_scalar("SELECT last_error FROM dialout_queue WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("row");
    assert!(
        last_error.starts_with("worker lost: vanished"),
        "{last_error}"
    );
    // Nothing left to rescue: the round reports nothing.
    assert_eq!(rescue.run_once().await.expect("rescue").total(), 0);
}

/// `ReadinessSender` is what a kind keeps; the worker only watches.
#[test]
fn readiness_follows_its_sender() {
    let (tx, rx): (ReadinessSender, Readiness) = Readiness::channel(false);
    assert!(!rx.is_ready());
    tx.set(true);
    assert!(rx.is_ready());
    assert!(Readiness::always().is_ready());
}
