//! `dialout demo`: sample work for each kind, a worker, and the table once everything
//! has ended.

use std::time::Duration;

use serde_json::{Value, json};

use crate::app::{self, AppError};
use crate::config::{SecretString, Settings};
use crate::jobs;
use crate::jobs::legacy::fault_peer::{FaultMode, FaultPeer};
use crate::pbx_sim::{PbxSim, SimConfig};
use crate::queue::{self, NewJob, status};
use crate::worker::Worker;
use std::net::SocketAddr;

/// Enqueues the samples, runs a worker for every kind this build has until they end
/// (at most a minute), prints them.
pub async fn run(settings: &mut Settings) -> Result<(), AppError> {
    let pool = app::pool(settings).await?;
    queue::migrate(&pool).await?;
    let batch = uuid::Uuid::new_v4().simple().to_string();
    // A stand-in legacy host: answers one line and closes.
    let legacy_host = FaultPeer::start(FaultMode::EchoLine)
        .await
        .map_err(|e| AppError::Usage(format!("cannot start the demo's TCP peer: {e}")))?;
    // A stand-in Asterisk: the simulated PBX, on loopback, for the dial samples.
    let pbx = PbxSim::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SimConfig {
            time_scale: 0.5,
            ..SimConfig::default()
        },
    )
    .await
    .map_err(|e| AppError::Usage(format!("cannot start the demo's simulated PBX: {e}")))?;
    let mut ids = Vec::new();
    for (kind, payload) in samples(legacy_host.addr().port()) {
        let job = NewJob::new(kind, payload)
            .max_attempts(2)
            .dedup_key(format!("demo-{batch}-{}", ids.len()));
        let id = queue::enqueue(&pool, &job)
            .await?
            .ok_or_else(|| AppError::Usage(format!("{job:?} was enqueued before")))?;
        ids.push(id);
    }
    println!("enqueued jobs {ids:?}; running a worker until they end");
    let mut worker_settings = settings.clone();
    worker_settings.ami.host = "127.0.0.1".into();
    worker_settings.ami.port = pbx.local_addr().port();
    worker_settings.ami.username = "dialer".into();
    worker_settings.ami.secret = SecretString::from("dialer-secret");
    worker_settings.dial.channel = "Local/{number}@callee".into();
    worker_settings.dial.context = String::new();
    let registry = jobs::registry(&worker_settings)?;
    worker_settings.worker.retry_base_ms = 200;
    worker_settings.worker.retry_max_ms = 1000;
    worker_settings.worker.kinds = registry.kinds().map(str::to_owned).collect();
    worker_settings.worker.kinds.sort();
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = Worker::new(worker_settings, pool.clone(), registry);
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
    super::jobs::print_jobs(&rows);
    pbx.shutdown().await;
    print_cdrs(&pool, &ids).await?;
    Ok(())
}

/// A dial sample's CDR, the columns the demo prints.
#[derive(sqlx::FromRow)]
struct CdrLine {
    job_id: i64,
    dst: String,
    disposition: String,
    duration: i32,
    billsec: i32,
    hangup_cause: Option<i32>,
    hangup_cause_txt: Option<String>,
    originate_reason: Option<i32>,
}

/// The dial samples' CDRs, as an analyst would query them.
async fn print_cdrs(pool: &sqlx::PgPool, ids: &[i64]) -> Result<(), AppError> {
    let rows: Vec<CdrLine> = sqlx::query_as(
        "SELECT job_id, dst, disposition, duration, billsec, hangup_cause, hangup_cause_txt, \
                originate_reason \
         FROM dialout_cdr WHERE job_id = ANY($1) ORDER BY job_id",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    println!();
    println!("dialout_cdr:");
    println!(
        "{:>6}  {:<16} {:<11} {:>8} {:>7}  {:<26} reason",
        "job", "dst", "disposition", "duration", "billsec", "hangup cause"
    );
    for r in rows {
        let cause = match (r.hangup_cause, r.hangup_cause_txt) {
            (Some(c), Some(t)) => format!("{c} {t}"),
            (Some(c), None) => c.to_string(),
            _ => String::new(),
        };
        let reason = r.originate_reason.map_or(String::new(), |r| r.to_string());
        println!(
            "{:>6}  {:<16} {:<11} {:>8} {:>7}  {cause:<26} {reason}",
            r.job_id, r.dst, r.disposition, r.duration, r.billsec
        );
    }
    Ok(())
}

/// Work for each kind: successes, a permanent and a retried failure, a legacy round
/// trip to the peer on `legacy_port`, a small roster.
fn samples(legacy_port: u16) -> Vec<(&'static str, Value)> {
    vec![
        ("noop", json!({"echo": true})),
        ("noop", json!({"sleep_ms": 300})),
        ("noop", json!({"fail": "a permanent failure, on purpose"})),
        (
            "noop",
            json!({"fail": "a failure that heals never", "retryable": true}),
        ),
        // The simulated PBX plays a number by its last digit: 0-4 answer, 5 busy,
        // 6 no answer, 7 congestion, 8 reject, 9 slow answer.
        ("dial", json!({"number": "+5491155550100"})),
        ("dial", json!({"number": "+5491155550105"})),
        (
            "dial",
            json!({"number": "+5491155550106", "ring_timeout_ms": 3000}),
        ),
        ("dial", json!({"number": "+5491155550107"})),
        ("dial", json!({"number": "+5491155550108"})),
        (
            "legacy_message",
            json!({"host": "127.0.0.1", "port": legacy_port, "message": "HELLO LEGACY\n", "delimiter": "\n"}),
        ),
        (
            "roster_import",
            json!({
                "roster": "1 Pedro Pedroso pedro@example.com Cobranzas\n2 Juan Perez juan@example.com Cobranzas\n3 Juan Gonzalez juang@example.com Cobranzas\n4 Un boludo No tiene Por ahi\n",
                "email_domain": "example.com"
            }),
        ),
    ]
}
