//! dial jobs end to end: INSERT -> worker -> AMI Originate against the simulated PBX ->
//! final status and one CDR, in one transaction.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use dialout::config::Settings;
use dialout::pbx_sim::{PbxSim, SimConfig};
use serde_json::{Value, json};
use sqlx::PgPool;
use support::ami::{dial_settings, start_sim};
use support::{RunningWorker, ended, enqueue, eventually, insert_refused};

/// A simulator whose numbers play the named scenarios, `scale` times the captures' timing.
async fn sim(scale: f64, numbers: &[(&str, &str)], tweak: impl FnOnce(&mut SimConfig)) -> PbxSim {
    start_sim(sim_config(scale, numbers, tweak)).await
}

/// The configuration [`sim`] starts (for a simulator restarted on a known address).
fn sim_config(
    scale: f64,
    numbers: &[(&str, &str)],
    tweak: impl FnOnce(&mut SimConfig),
) -> SimConfig {
    let mut cfg = SimConfig {
        time_scale: scale,
        auth_failure_delay: Duration::from_millis(20),
        numbers: numbers
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect::<HashMap<_, _>>(),
        ..SimConfig::default()
    };
    tweak(&mut cfg);
    cfg
}

/// Dial settings for a test that restarts the simulator: the link comes back quickly.
fn restartable_settings(sim: &PbxSim) -> Settings {
    let mut settings = dial_settings(sim);
    settings.ami.reconnect_min_ms = 20;
    settings.ami.reconnect_max_ms = 200;
    settings
}

fn start(pool: &PgPool, settings: Settings) -> RunningWorker {
    support::start_worker(pool, settings)
}

#[derive(Debug, sqlx::FromRow)]
struct Cdr {
    disposition: String,
    billsec: i32,
    duration: i32,
    answer: Option<chrono::DateTime<chrono::Utc>>,
    hangup_cause: Option<i32>,
    hangup_cause_txt: Option<String>,
    originate_reason: Option<i32>,
    dst: String,
    clid: String,
    uniqueid: String,
    channel: String,
    attempt: i32,
    lastapp: String,
    lastdata: String,
}

async fn cdrs(pool: &PgPool, job: i64) -> Vec<Cdr> {
    sqlx::query_as(
        "SELECT disposition, billsec, duration, answer, hangup_cause, hangup_cause_txt, \
                originate_reason, dst, clid, uniqueid, channel, attempt, lastapp, lastdata \
         FROM dialout_cdr WHERE job_id = $1 ORDER BY id",
    )
    .bind(job)
    .fetch_all(pool)
    .await
    .expect("cdr rows")
}

async fn last_error(pool: &PgPool, job: i64) -> String {
    sqlx::query_scalar::<_, Option<String>>("SELECT last_error FROM dialout_queue WHERE id = $1")
        .bind(job)
        .fetch_one(pool)
        .await
        .expect("row")
        .unwrap_or_default()
}

async fn dial(pool: &PgPool, payload: Value) -> i64 {
    enqueue(pool, "dial", payload).await
}

const WAIT: Duration = Duration::from_secs(20);

#[sqlx::test]
async fn an_answered_call_is_established_then_finished_with_one_answered_cdr(pool: PgPool) {
    // 1.5 s of talk at real speed, so billsec is a whole second or more.
    let sim = sim(1.0, &[("+5491155550101", "answer_1500")], |_| {}).await;
    let worker = start(&pool, dial_settings(&sim));
    let id = dial(&pool, json!({"number": "+5491155550101"})).await;
    eventually(WAIT, "the job to be established", || async {
        let s: String = sqlx::query_scalar("SELECT status::text FROM dialout_queue WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .ok()?;
        (s == "established" || s == "finished").then_some(())
    })
    .await;
    assert_eq!(ended(&pool, id, WAIT).await, "finished");
    worker.shutdown().await;
    sim.shutdown().await;
    let rows = cdrs(&pool, id).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let c = &rows[0];
    assert_eq!(c.disposition, "ANSWERED");
    assert!(c.answer.is_some());
    assert!((1..=2).contains(&c.billsec), "{c:?}");
    assert!(c.duration >= c.billsec);
    assert_eq!(c.dst, "+5491155550101");
    assert!(c.uniqueid.starts_with(&format!("dialout-{id}-")), "{c:?}");
    assert!(
        c.clid.contains(&c.uniqueid),
        "tagged through the CallerID name: {c:?}"
    );
    assert!(
        c.channel.starts_with("Local/+5491155550101@callee-"),
        "{c:?}"
    );
    assert_eq!(
        (c.lastapp.as_str(), c.lastdata.as_str()),
        ("Playback", "hello-world")
    );
    assert_eq!(c.originate_reason, Some(4));
    assert_eq!(c.attempt, 1);
}

#[sqlx::test]
async fn each_failure_ends_with_its_status_reason_and_cdr(pool: PgPool) {
    let sim = sim(
        0.05,
        &[
            ("100", "busy"),
            ("200", "congestion"),
            ("300", "noanswer"),
            ("400", "reject_500"),
            ("500", "nosuch"),
        ],
        |_| {},
    )
    .await;
    let worker = start(&pool, dial_settings(&sim));
    let busy = dial(&pool, json!({"number": "100"})).await;
    let congestion = dial(&pool, json!({"number": "200"})).await;
    let noanswer = dial(&pool, json!({"number": "300", "ring_timeout_ms": 2000})).await;
    let reject = dial(&pool, json!({"number": "400"})).await;
    let nonexistent = dial(&pool, json!({"number": "500"})).await;
    let refused = dial(
        &pool,
        json!({"number": "100", "context": "nosuch", "exten": "s"}),
    )
    .await;

    let cases = [
        (
            busy,
            "finished_with_error",
            "busy",
            "BUSY",
            Some(5),
            Some(17),
        ),
        (
            congestion,
            "finished_with_error",
            "congestion",
            "CONGESTION",
            Some(8),
            Some(34),
        ),
        (
            noanswer,
            "timedout",
            "no answer",
            "NO ANSWER",
            Some(3),
            Some(19),
        ),
        (
            reject,
            "finished_with_error",
            "rejected",
            "NO ANSWER",
            Some(0),
            Some(21),
        ),
        (
            nonexistent,
            "finished_with_error",
            "failed",
            "FAILED",
            Some(0),
            Some(0),
        ),
        (
            refused,
            "finished_with_error",
            "Extension does not exist",
            "FAILED",
            None,
            None,
        ),
    ];
    for (id, status, says, disposition, reason, cause) in cases {
        assert_eq!(ended(&pool, id, WAIT).await, status, "job {id} ({says})");
        let error = last_error(&pool, id).await;
        assert!(
            error.starts_with("dial job: ") && error.contains(says),
            "{error}"
        );
        let rows = cdrs(&pool, id).await;
        assert_eq!(rows.len(), 1, "{says}: {rows:?}");
        let c = &rows[0];
        assert_eq!(c.disposition, disposition, "{says}: {c:?}");
        assert_eq!(
            (c.originate_reason, c.hangup_cause),
            (reason, cause),
            "{says}: {c:?}"
        );
        assert_eq!((c.billsec, c.answer), (0, None), "{says}");
        if cause.is_some() {
            assert!(c.hangup_cause_txt.is_some(), "{says}: {c:?}");
        }
        // The cause text is Asterisk's, whatever number was dialled.
        let txt = match cause {
            Some(17) => Some("User busy"),
            Some(34) => Some("Circuit/channel congestion"),
            Some(19) => Some("User alerting, no answer"),
            Some(21) => Some("Call Rejected"),
            _ => None,
        };
        if let Some(txt) = txt {
            assert_eq!(c.hangup_cause_txt.as_deref(), Some(txt), "{says}");
        }
    }
    worker.shutdown().await;
    sim.shutdown().await;
}

#[sqlx::test]
async fn a_call_past_max_call_ms_is_hung_up_and_timed_out(pool: PgPool) {
    let sim = sim(1.0, &[("700", "long-answer_60000")], |_| {}).await;
    let worker = start(&pool, dial_settings(&sim));
    let id = dial(&pool, json!({"number": "700", "max_call_ms": 1000})).await;
    assert_eq!(ended(&pool, id, WAIT).await, "timedout");
    let error = last_error(&pool, id).await;
    assert!(error.contains("max_call_ms (1000 ms)"), "{error}");
    eventually(WAIT, "the simulator to see the call hung up", || async {
        (sim.live_calls() == 0).then_some(())
    })
    .await;
    worker.shutdown().await;
    sim.shutdown().await;
    let rows = cdrs(&pool, id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].disposition, "ANSWERED");
    assert!(rows[0].billsec <= 2, "{:?}", rows[0]);
}

#[sqlx::test]
async fn other_clients_calls_do_not_disturb_ours(pool: PgPool) {
    // Three look-alike calls of "another client" run each scenario beside ours.
    let sim = sim(0.05, &[("100", "busy"), ("101", "answer_1000")], |c| {
        c.faults.noise_calls = 3;
        c.faults.duplicate_events = true;
    })
    .await;
    let worker = start(&pool, dial_settings(&sim));
    let busy = dial(&pool, json!({"number": "100"})).await;
    let answer = dial(&pool, json!({"number": "101"})).await;
    assert_eq!(ended(&pool, busy, WAIT).await, "finished_with_error");
    assert_eq!(ended(&pool, answer, WAIT).await, "finished");
    worker.shutdown().await;
    sim.shutdown().await;
    assert_eq!(cdrs(&pool, busy).await[0].disposition, "BUSY");
    assert_eq!(cdrs(&pool, answer).await[0].disposition, "ANSWERED");
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM dialout_cdr")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(
        total, 2,
        "one CDR per originate, none for the others' calls"
    );
}

#[sqlx::test]
async fn the_hangup_before_the_originate_response_is_applied(pool: PgPool) {
    let sim = sim(0.05, &[("100", "busy"), ("300", "noanswer")], |c| {
        c.faults.hangup_before_originate_response = true;
    })
    .await;
    let worker = start(&pool, dial_settings(&sim));
    let busy = dial(&pool, json!({"number": "100"})).await;
    let noanswer = dial(&pool, json!({"number": "300", "ring_timeout_ms": 1000})).await;
    assert_eq!(ended(&pool, busy, WAIT).await, "finished_with_error");
    assert_eq!(ended(&pool, noanswer, WAIT).await, "timedout");
    worker.shutdown().await;
    sim.shutdown().await;
    let c = &cdrs(&pool, busy).await[0];
    assert_eq!((c.disposition.as_str(), c.hangup_cause), ("BUSY", Some(17)));
    let c = &cdrs(&pool, noanswer).await[0];
    assert_eq!(
        (c.disposition.as_str(), c.hangup_cause),
        ("NO ANSWER", Some(19))
    );
}

#[sqlx::test]
async fn hostile_numbers_and_fields_are_refused_at_insert(pool: PgPool) {
    for number in [
        "123\r\nAction: Hangup",
        "12\n34",
        "abc",
        "12/34",
        "12@ctx",
        "1 2",
        "",
        "+",
        "123456789012345678901234567890123",
    ] {
        let msg = insert_refused(&pool, "dial", &json!({ "number": number })).await;
        assert!(msg.starts_with("dial job: \"number\""), "{number:?}: {msg}");
    }
    for (payload, field) in [
        (json!({}), "\"number\""),
        (
            json!({"number": "1", "message": "../../etc/passwd"}),
            "\"message\"",
        ),
        (
            json!({"number": "1", "caller_id_name": "x\r\nAction: Originate"}),
            "\"caller_id_name\"",
        ),
        (
            json!({"number": "1", "variables": {"A": "b\r\nc"}}),
            "\"variables\"",
        ),
        (
            json!({"number": "1", "variables": {"1A": "b"}}),
            "\"variables\"",
        ),
        (
            json!({"number": "1", "ring_timeout_ms": 10}),
            "\"ring_timeout_ms\"",
        ),
        (json!({"number": "1", "context": "x"}), "\"context\""),
        (json!({"number": "1", "fax": true}), "unknown payload field"),
    ] {
        let msg = insert_refused(&pool, "dial", &payload).await;
        assert!(
            msg.starts_with("dial job: ") && msg.contains(field),
            "{payload}: {msg}"
        );
    }
    // A job claiming a call at INSERT could make a worker adopt (and hang up) another's.
    for sql in [
        "INSERT INTO dialout_queue (kind, payload, needs_recovery) VALUES ('dial', '{\"number\": \"1\"}', true)",
        "INSERT INTO dialout_queue (kind, payload, call_uniqueid) VALUES ('dial', '{\"number\": \"1\"}', 'dialout-1-x')",
    ] {
        let err = sqlx::query(sql).execute(&pool).await.expect_err("refused");
        assert!(err.to_string().contains("written by workers"), "{err}");
    }
}

#[sqlx::test]
async fn a_dial_replica_without_its_pbx_leases_no_dial_jobs(pool: PgPool) {
    // Nothing listens on its AMI port: the link never comes up, the kind is never ready.
    let settings = support::ami::settings_without_pbx();
    let poll = settings.worker.poll_interval();
    let worker = start(&pool, settings);
    let id = dial(&pool, json!({"number": "100"})).await;
    let other = enqueue(&pool, "noop", json!({})).await;
    assert_eq!(ended(&pool, other, WAIT).await, "finished");
    // A negative cannot be awaited: five poll intervals in which a producer that
    // ignored readiness would have leased it.
    tokio::time::sleep(poll * 5).await;
    let (status, attempts): (String, i32) =
        sqlx::query_as("SELECT status::text, attempts FROM dialout_queue WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("row");
    assert_eq!((status.as_str(), attempts), ("queued", 0));
    worker.shutdown().await;
}

async fn status_of(pool: &PgPool, id: i64) -> String {
    sqlx::query_scalar("SELECT status::text FROM dialout_queue WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("row")
}

/// Waits until job `id`'s call is answered (status `established`).
async fn answered(pool: &PgPool, id: i64) {
    eventually(WAIT, "the call to be answered", || async {
        (status_of(pool, id).await == "established").then_some(())
    })
    .await;
}

async fn cancel(pool: &PgPool, id: i64) {
    sqlx::query("UPDATE dialout_queue SET status = 'cancelled' WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .expect("cancel");
}

#[sqlx::test]
async fn cancel_hangs_up_a_ringing_call_and_an_answered_one(pool: PgPool) {
    let sim = sim(
        1.0,
        &[("600", "noanswer"), ("700", "long-answer_60000")],
        |_| {},
    )
    .await;
    let worker = start(&pool, dial_settings(&sim));
    let ringing = dial(&pool, json!({"number": "600", "ring_timeout_ms": 60000})).await;
    let answered = dial(&pool, json!({"number": "700"})).await;
    eventually(WAIT, "one call answered, the other ringing", || async {
        (status_of(&pool, answered).await == "established" && sim.live_calls() == 2).then_some(())
    })
    .await;
    assert_eq!(status_of(&pool, ringing).await, "trying");
    cancel(&pool, ringing).await;
    cancel(&pool, answered).await;
    eventually(WAIT, "both calls hung up", || async {
        (sim.live_calls() == 0).then_some(())
    })
    .await;
    for id in [ringing, answered] {
        // Status stays what the application set; the CDR is written with it.
        eventually(WAIT, "the CDR", || async {
            (cdrs(&pool, id).await.len() == 1).then_some(())
        })
        .await;
        assert_eq!(status_of(&pool, id).await, "cancelled");
    }
    worker.shutdown().await;
    sim.shutdown().await;
    assert_eq!(cdrs(&pool, ringing).await[0].disposition, "NO ANSWER");
    let c = &cdrs(&pool, answered).await[0];
    assert_eq!(c.disposition, "ANSWERED");
    assert!(c.answer.is_some());
}

#[sqlx::test]
async fn a_cancelled_queued_dial_never_rings(pool: PgPool) {
    let sim = sim(0.05, &[], |_| {}).await;
    let id = dial(&pool, json!({"number": "100"})).await;
    cancel(&pool, id).await;
    let worker = start(&pool, dial_settings(&sim));
    let other = dial(&pool, json!({"number": "105"})).await; // busy by its last digit
    assert_eq!(ended(&pool, other, WAIT).await, "finished_with_error");
    worker.shutdown().await;
    sim.shutdown().await;
    assert_eq!(status_of(&pool, id).await, "cancelled");
    assert!(cdrs(&pool, id).await.is_empty(), "never dialled");
}

/// Starts a dial, waits for the answer, stops the worker past its grace: the job is
/// handed back for recovery with its call still up.
async fn hand_back_mid_call(pool: &PgPool, sim: &PbxSim, payload: Value) -> i64 {
    let worker = start(pool, dial_settings(sim));
    let id = dial(pool, payload).await;
    answered(pool, id).await;
    let summary = worker.shutdown().await;
    assert_eq!(summary.handed_back, 1);
    let (status, attempts, needs_recovery, tag): (String, i32, bool, Option<String>) =
        sqlx::query_as(
            "SELECT status::text, attempts, needs_recovery, call_uniqueid FROM dialout_queue WHERE id = $1",
        )
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("row");
    assert_eq!(
        (status.as_str(), attempts, needs_recovery),
        ("queued", 0, true)
    );
    assert!(
        tag.is_some_and(|t| t.starts_with(&format!("dialout-{id}-"))),
        "the call's tag is in the row"
    );
    assert_eq!(sim.live_calls(), 1, "the call was not dropped");
    assert!(
        cdrs(pool, id).await.is_empty(),
        "no CDR while the call goes on"
    );
    id
}

#[sqlx::test]
async fn a_call_handed_back_at_shutdown_is_adopted_by_the_next_worker(pool: PgPool) {
    // 5 s of talk at real speed: it outlives the first worker's 2 s grace.
    let sim = sim(1.0, &[("700", "long-answer_5000")], |_| {}).await;
    let id = hand_back_mid_call(&pool, &sim, json!({"number": "700"})).await;
    let worker = start(&pool, dial_settings(&sim));
    assert_eq!(ended(&pool, id, WAIT).await, "finished");
    worker.shutdown().await;
    assert_eq!(sim.live_calls(), 0);
    assert_eq!(sim.originates(), 1, "adopted, never dialled again");
    sim.shutdown().await;
    let rows = cdrs(&pool, id).await;
    assert_eq!(rows.len(), 1, "one call, one CDR: {rows:?}");
    let c = &rows[0];
    // Its own Hangup was seen (the cause is the capture's for a Playback landing).
    assert_eq!(c.disposition, "ANSWERED");
    assert!(c.hangup_cause.is_some(), "{c:?}");
    // Answered before the hand-back: the answer time came from the row.
    assert!(c.billsec >= 4, "{c:?}");
    assert!(c.uniqueid.starts_with(&format!("dialout-{id}-")));
}

#[sqlx::test]
async fn a_call_that_ended_while_no_worker_watched_is_not_dialled_again(pool: PgPool) {
    let sim = sim(1.0, &[("700", "long-answer_3000")], |_| {}).await;
    let id = hand_back_mid_call(&pool, &sim, json!({"number": "700"})).await;
    eventually(WAIT, "the call to end with nobody watching", || async {
        (sim.live_calls() == 0).then_some(())
    })
    .await;
    let worker = start(&pool, dial_settings(&sim));
    assert_eq!(ended(&pool, id, WAIT).await, "finished_with_error");
    worker.shutdown().await;
    assert_eq!(sim.originates(), 1, "not dialled again");
    sim.shutdown().await;
    let error = last_error(&pool, id).await;
    assert!(
        error.contains("ended while no worker watched it"),
        "{error}"
    );
    let rows = cdrs(&pool, id).await;
    assert_eq!(rows.len(), 1, "a CDR of what is known: {rows:?}");
    assert_eq!(rows[0].disposition, "ANSWERED");
}

#[sqlx::test]
async fn redial_if_lost_dials_again_and_each_call_keeps_its_cdr(pool: PgPool) {
    let sim = sim(1.0, &[("700", "long-answer_3000")], |_| {}).await;
    let id = hand_back_mid_call(
        &pool,
        &sim,
        json!({"number": "700", "redial_if_lost": true}),
    )
    .await;
    eventually(WAIT, "the call to end with nobody watching", || async {
        (sim.live_calls() == 0).then_some(())
    })
    .await;
    let worker = start(&pool, dial_settings(&sim));
    assert_eq!(ended(&pool, id, Duration::from_secs(30)).await, "finished");
    worker.shutdown().await;
    assert_eq!(sim.originates(), 2, "dialled again, once");
    sim.shutdown().await;
    let rows = cdrs(&pool, id).await;
    assert_eq!(rows.len(), 2, "the lost call and the new one: {rows:?}");
    assert_ne!(rows[0].uniqueid, rows[1].uniqueid);
    assert!(rows.iter().all(|c| c.disposition == "ANSWERED"));
}

#[sqlx::test]
async fn another_clients_look_alike_calls_are_ignored(pool: PgPool) {
    let sim = sim(1.0, &[("101", "answer_1500")], |_| {}).await;
    let worker = start(&pool, dial_settings(&sim));
    let id = dial(&pool, json!({"number": "101"})).await;
    answered(&pool, id).await;
    // Another AMI client places busy calls tagged like ours: same prefix, same job id.
    let other = dialout::ami::AmiClient::connect(support::ami::client_config(&sim))
        .await
        .expect("second client");
    for n in 0..3 {
        let mut o = dialout::ami::Originate::to_exten("Local/busy@callee", "originated", "s", 1);
        o.caller_id = Some(format!("\"dialout-{id}-{n:032x}\" <{id}>"));
        o.channel_id = Some(format!("dialout-{id}-{n:032x}"));
        o.variables = vec![("DIALOUT_TAG".into(), format!("dialout-{id}-{n:032x}"))];
        other.originate(&o).await.expect("queued");
    }
    assert_eq!(ended(&pool, id, WAIT).await, "finished");
    other.shutdown().await;
    worker.shutdown().await;
    sim.shutdown().await;
    let rows = cdrs(&pool, id).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].disposition, "ANSWERED");
    assert!(rows[0].hangup_cause.is_some(), "{:?}", rows[0]);
    assert_ne!(rows[0].hangup_cause, Some(17), "not the look-alikes' busy");
    assert!(rows[0].billsec >= 1, "not ended early: {:?}", rows[0]);
}

async fn result_of(pool: &PgPool, id: i64) -> Value {
    sqlx::query_scalar::<_, Option<Value>>("SELECT result FROM dialout_queue WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("row")
        .unwrap_or(Value::Null)
}

#[sqlx::test]
async fn a_call_that_outlives_a_link_drop_is_followed_to_its_end(pool: PgPool) {
    let sim = sim(1.0, &[("101", "answer_2500")], |_| {}).await;
    let worker = start(&pool, dial_settings(&sim));
    let id = dial(&pool, json!({"number": "101"})).await;
    answered(&pool, id).await;
    sim.drop_connections();
    assert_eq!(ended(&pool, id, WAIT).await, "finished");
    worker.shutdown().await;
    sim.shutdown().await;
    let result = result_of(&pool, id).await;
    assert_eq!(
        result["ended_unobserved"],
        json!(false),
        "its Hangup was seen: {result}"
    );
    let c = &cdrs(&pool, id).await[0];
    // Its own Hangup was seen (the cause is the capture's for a Playback landing).
    assert_eq!(c.disposition, "ANSWERED");
    assert!(c.hangup_cause.is_some(), "{c:?}");
    assert!(c.billsec >= 2, "{c:?}");
}

#[sqlx::test]
async fn a_call_that_ends_while_the_link_is_down_ends_on_reconnect_not_at_max_call(pool: PgPool) {
    let sim = sim(1.0, &[("101", "answer_1000")], |_| {}).await;
    let mut settings = dial_settings(&sim);
    // The link stays down 1.5-3 s: longer than what is left of the call.
    settings.ami.reconnect_min_ms = 3000;
    settings.ami.reconnect_max_ms = 3000;
    let worker = start(&pool, settings);
    let id = dial(&pool, json!({"number": "101"})).await;
    answered(&pool, id).await;
    sim.drop_connections();
    eventually(WAIT, "the call to end at the PBX", || async {
        (sim.live_calls() == 0).then_some(())
    })
    .await;
    // max_call_ms is an hour: only the reconcile after the reconnect can end it now.
    assert_eq!(ended(&pool, id, WAIT).await, "finished");
    worker.shutdown().await;
    sim.shutdown().await;
    assert_eq!(result_of(&pool, id).await["ended_unobserved"], json!(true));
    let rows = cdrs(&pool, id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].disposition, "ANSWERED");
}

/// A `dialout worker` process that dials through `sim`, to be killed with -9.
fn dial_worker_process(url: &str, sim: &PbxSim, id: &str) -> support::WorkerProcess {
    let port = sim.local_addr().port().to_string();
    support::WorkerProcess::spawn(
        url,
        id,
        &[
            ("DIALOUT__WORKER__KINDS", "dial"),
            ("DIALOUT__AMI__PORT", &port),
            ("DIALOUT__AMI__USERNAME", "dialer"),
            ("DIALOUT__AMI__SECRET", "dialer-secret"),
            ("DIALOUT__AMI__PING_INTERVAL_MS", "0"),
            ("DIALOUT__DIAL__CHANNEL", "Local/{number}@callee"),
        ],
    )
}

#[sqlx::test]
async fn a_worker_killed_mid_call_leaves_one_call_that_the_next_attempt_adopts(pool: PgPool) {
    let sim = sim(1.0, &[("700", "long-answer_6000")], |_| {}).await;
    let url = support::db_url(&pool).await;
    // max_attempts 1: the recovery attempt comes even though the attempts are spent.
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO dialout_queue (kind, payload, max_attempts) \
         VALUES ('dial', '{\"number\": \"700\"}', 1) RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .expect("enqueue");
    let mut victim = dial_worker_process(&url, &sim, "victim");
    answered(&pool, id).await;
    victim.signal("KILL");
    let _ = victim.child.wait();
    assert_eq!(sim.live_calls(), 1, "the call outlives its worker");

    let worker = start(&pool, dial_settings(&sim));
    assert_eq!(ended(&pool, id, WAIT).await, "finished");
    worker.shutdown().await;
    assert_eq!(sim.live_calls(), 0);
    assert_eq!(sim.originates(), 1, "exactly one Originate for the job");
    sim.shutdown().await;
    let (attempts, lost): (i32, i32) =
        sqlx::query_as("SELECT attempts, lost_leases FROM dialout_queue WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("row");
    assert_eq!(
        (attempts, lost),
        (2, 1),
        "one lost attempt, one recovery attempt"
    );
    let rows = cdrs(&pool, id).await;
    assert_eq!(rows.len(), 1, "one call, one CDR: {rows:?}");
    assert_eq!(rows[0].disposition, "ANSWERED");
    assert_eq!(rows[0].attempt, 2);
    assert!(rows[0].billsec >= 4, "{:?}", rows[0]);
}

#[sqlx::test]
async fn an_originate_response_before_its_reply_and_any_event_order_give_the_same_result(
    pool: PgPool,
) {
    // Stock Asterisk (no Cdr event for unanswered calls), replies after the call's
    // first events, and the Hangup/OriginateResponse order shaken by a seed.
    for seed in [1_u64, 2, 3] {
        let sim = sim(
            0.05,
            &[
                ("100", "busy"),
                ("200", "congestion"),
                ("300", "noanswer"),
                ("400", "reject_500"),
            ],
            |c| {
                c.faults.response_after_events = true;
                c.faults.vary_order = Some(seed);
                c.cdr_unanswered = false;
            },
        )
        .await;
        let worker = start(&pool, dial_settings(&sim));
        let jobs = [
            (
                dial(&pool, json!({"number": "100"})).await,
                "BUSY",
                Some(17),
            ),
            (
                dial(&pool, json!({"number": "200"})).await,
                "CONGESTION",
                Some(34),
            ),
            (
                dial(&pool, json!({"number": "300", "ring_timeout_ms": 1000})).await,
                "NO ANSWER",
                Some(19),
            ),
            (
                dial(&pool, json!({"number": "400"})).await,
                "NO ANSWER",
                Some(21),
            ),
        ];
        for (id, disposition, cause) in jobs {
            ended(&pool, id, WAIT).await;
            let rows = cdrs(&pool, id).await;
            assert_eq!(rows.len(), 1, "seed {seed}: {rows:?}");
            assert_eq!(
                (rows[0].disposition.as_str(), rows[0].hangup_cause),
                (disposition, cause),
                "seed {seed}"
            );
        }
        worker.shutdown().await;
        assert_eq!(sim.originates(), 4, "seed {seed}: one Originate per job");
        sim.shutdown().await;
    }
}

#[sqlx::test]
async fn a_call_answered_while_the_link_was_down_is_answered_on_reconnect(pool: PgPool) {
    // Rings 1 s, then 4 s of talk; the link is down 1.5-3 s from the first ring.
    let sim = sim(1.0, &[("900", "slow-answer_1000_4000")], |_| {}).await;
    let mut settings = dial_settings(&sim);
    settings.ami.reconnect_min_ms = 3000;
    settings.ami.reconnect_max_ms = 3000;
    let worker = start(&pool, settings);
    let id = dial(&pool, json!({"number": "900"})).await;
    eventually(WAIT, "the call to ring", || async {
        (sim.live_calls() == 1).then_some(())
    })
    .await;
    sim.drop_connections();
    assert_eq!(ended(&pool, id, WAIT).await, "finished");
    worker.shutdown().await;
    sim.shutdown().await;
    let c = &cdrs(&pool, id).await[0];
    assert_eq!(c.disposition, "ANSWERED", "{c:?}");
    assert_eq!(result_of(&pool, id).await["ended_unobserved"], json!(false));
}

#[sqlx::test]
async fn retries_by_outcome_dial_again_after_their_wait_and_keep_each_calls_cdr(pool: PgPool) {
    let sim = sim(0.05, &[("100", "busy"), ("101", "answer_500")], |_| {}).await;
    let mut settings = dial_settings(&sim);
    settings.dial.retry.busy_ms = 60_000; // overridden by the payload below
    let worker = start(&pool, settings);
    let busy: i64 = sqlx::query_scalar(
        "INSERT INTO dialout_queue (kind, payload, max_attempts) \
         VALUES ('dial', '{\"number\": \"100\", \"retry\": {\"busy_ms\": 400}}', 3) RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .expect("enqueue");
    // No retry for busy on this one: it ends at once.
    let once: i64 = sqlx::query_scalar(
        "INSERT INTO dialout_queue (kind, payload, max_attempts) \
         VALUES ('dial', '{\"number\": \"100\", \"retry\": {\"busy_ms\": 0}}', 3) RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .expect("enqueue");
    assert_eq!(ended(&pool, busy, WAIT).await, "finished_with_error");
    assert_eq!(ended(&pool, once, WAIT).await, "finished_with_error");
    worker.shutdown().await;
    assert_eq!(
        sim.originates(),
        4,
        "three calls for one job, one for the other"
    );
    sim.shutdown().await;
    let rows: Vec<(i32, chrono::DateTime<chrono::Utc>, String)> = sqlx::query_as(
        "SELECT attempt, calldate, disposition FROM dialout_cdr WHERE job_id = $1 ORDER BY attempt",
    )
    .bind(busy)
    .fetch_all(&pool)
    .await
    .expect("cdrs");
    assert_eq!(
        rows.iter().map(|r| (r.0, r.2.as_str())).collect::<Vec<_>>(),
        [(1, "BUSY"), (2, "BUSY"), (3, "BUSY")]
    );
    for pair in rows.windows(2) {
        let gap = pair[1].1 - pair[0].1;
        assert!(gap >= chrono::Duration::milliseconds(400), "waited {gap}");
    }
    assert_eq!(cdrs(&pool, once).await.len(), 1);
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM dialout_queue WHERE id = $1")
        .bind(busy)
        .fetch_one(&pool)
        .await
        .expect("row");
    assert_eq!(attempts, 3);
    let msg = insert_refused(
        &pool,
        "dial",
        &json!({"number": "1", "retry": {"fax_ms": 1}}),
    )
    .await;
    assert!(msg.contains("\"retry\""), "{msg}");
    let msg = insert_refused(
        &pool,
        "dial",
        &json!({"number": "1", "retry": {"busy_ms": -5}}),
    )
    .await;
    assert!(msg.contains("\"retry\""), "{msg}");
}

#[sqlx::test]
async fn two_replicas_never_have_more_calls_up_than_max_live_calls(pool: PgPool) {
    // Each answered call lasts 1.5 s.
    let numbers: Vec<(String, &str)> = (0..10).map(|n| (format!("70{n}"), "answer_1500")).collect();
    let plan: Vec<(&str, &str)> = numbers.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    let sim = sim(1.0, &plan, |_| {}).await;
    let mut settings = dial_settings(&sim);
    settings.dial.max_live_calls = 3;
    settings.kinds.get_mut("dial").expect("dial").concurrency = 10;
    let first = start(&pool, settings.clone());
    let second = start(&pool, settings);
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(dial(&pool, json!({"number": format!("70{n}")})).await);
    }
    // While three are up the rest wait queued, their attempts not counted.
    let waiting: (i64, i64) = eventually(WAIT, "three calls up", || async {
        let (up, queued, spent): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'established'), \
                    count(*) FILTER (WHERE status = 'queued'), \
                    count(*) FILTER (WHERE status = 'queued' AND attempts > 0) \
             FROM dialout_queue",
        )
        .fetch_one(&pool)
        .await
        .ok()?;
        (up == 3).then_some((queued, spent))
    })
    .await;
    assert_eq!(waiting, (7, 0), "seven wait queued with no attempt spent");
    for id in &ids {
        assert_eq!(ended(&pool, *id, WAIT).await, "finished");
    }
    first.shutdown().await;
    second.shutdown().await;
    assert_eq!(
        sim.peak_live_calls(),
        3,
        "the simulator never saw a 4th call"
    );
    assert_eq!(sim.originates(), 10);
    sim.shutdown().await;
    let spread: Vec<(String, i64)> = sqlx::query_as(
        "SELECT worker_id, count(*) FROM dialout_cdr GROUP BY worker_id ORDER BY worker_id",
    )
    .fetch_all(&pool)
    .await
    .expect("cdrs");
    assert_eq!(spread.iter().map(|r| r.1).sum::<i64>(), 10, "{spread:?}");
    let attempts: i64 =
        sqlx::query_scalar("SELECT sum(attempts)::bigint FROM dialout_queue WHERE kind = 'dial'")
            .fetch_one(&pool)
            .await
            .expect("sum");
    assert_eq!(attempts, 10, "no attempt burned waiting for room");
}

#[sqlx::test]
async fn calls_per_second_holds_across_replicas(pool: PgPool) {
    let sim = sim(0.1, &[], |_| {}).await;
    let mut settings = dial_settings(&sim);
    settings.dial.calls_per_second = 5.0;
    let first = start(&pool, settings.clone());
    let second = start(&pool, settings);
    let mut ids = Vec::new();
    for n in 0..16 {
        // Numbers ending in 5 are busy: each call ends at once.
        ids.push(dial(&pool, json!({"number": format!("10{n}5")})).await);
    }
    for id in &ids {
        assert_eq!(ended(&pool, *id, WAIT).await, "finished_with_error");
    }
    first.shutdown().await;
    second.shutdown().await;
    let times = sim.originate_times();
    sim.shutdown().await;
    assert_eq!(times.len(), 16);
    // Five a second: any six consecutive Originates span a second or more. Starts are
    // spaced by the database clock; 100 ms allows for each start's own scheduling.
    for w in times.windows(6) {
        let span = w[5] - w[0];
        assert!(
            span >= Duration::from_millis(900),
            "six Originates within {span:?}: {times:?}"
        );
    }
}

#[sqlx::test]
async fn an_originate_whose_reply_never_came_is_followed_not_sent_again(pool: PgPool) {
    let sim = sim(1.0, &[("701", "answer_1500"), ("705", "busy")], |c| {
        c.faults.lose_originate_reply = true;
    })
    .await;
    let mut settings = dial_settings(&sim);
    settings.ami.action_timeout_ms = 500;
    let worker = start(&pool, settings);
    let answered_id = dial(&pool, json!({"number": "701"})).await;
    let busy_id = dial(&pool, json!({"number": "705"})).await;
    assert_eq!(ended(&pool, answered_id, WAIT).await, "finished");
    assert_eq!(ended(&pool, busy_id, WAIT).await, "finished_with_error");
    worker.shutdown().await;
    assert_eq!(sim.originates(), 2, "one Originate per job, none re-sent");
    sim.shutdown().await;
    let answered = cdrs(&pool, answered_id).await;
    assert_eq!(answered.len(), 1);
    assert_eq!(answered[0].disposition, "ANSWERED");
    let busy = cdrs(&pool, busy_id).await;
    assert_eq!(busy.len(), 1);
    assert_eq!(busy[0].disposition, "BUSY");
}

/// Restarts the simulator on the same port while a call is up, killed (`graceful`
/// false: a bare close, the call vanishes without events) or stopped cleanly (its
/// Hangup and Cdr first). Returns the job's status and the Originates each simulator saw.
async fn restart_mid_call(pool: &PgPool, graceful: bool) -> (i64, String, u64, u64) {
    let numbers = [("700", "long-answer_60000")];
    let old = sim(1.0, &numbers, |_| {}).await;
    let addr = old.local_addr();
    let worker = start(pool, restartable_settings(&old));
    let id = dial(pool, json!({"number": "700"})).await;
    answered(pool, id).await;
    let before = old.originates();
    if graceful {
        old.shutdown_gracefully().await;
    } else {
        old.shutdown().await;
    }
    let new = PbxSim::start(addr, sim_config(1.0, &numbers, |_| {}))
        .await
        .expect("restart on the same port");
    let status = ended(pool, id, WAIT).await;
    worker.shutdown().await;
    let after = new.originates();
    new.shutdown().await;
    (id, status, before, after)
}

#[sqlx::test]
async fn a_pbx_killed_and_restarted_mid_call_ends_the_job_once_without_dialling_again(
    pool: PgPool,
) {
    let (id, status, before, after) = restart_mid_call(&pool, false).await;
    assert_eq!((before, after), (1, 0), "never dialled again");
    assert_eq!(status, "finished", "{}", last_error(&pool, id).await);
    assert_eq!(result_of(&pool, id).await["ended_unobserved"], json!(true));
    let rows = cdrs(&pool, id).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].disposition, "ANSWERED");
}

#[sqlx::test]
async fn a_pbx_stopped_cleanly_mid_call_ends_the_job_with_the_calls_own_end(pool: PgPool) {
    let (id, status, before, after) = restart_mid_call(&pool, true).await;
    assert_eq!((before, after), (1, 0), "never dialled again");
    assert_eq!(status, "finished", "{}", last_error(&pool, id).await);
    let result = result_of(&pool, id).await;
    assert_eq!(result["hangup_cause"], json!(0), "{result}");
    let rows = cdrs(&pool, id).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].disposition, "ANSWERED");
}

#[sqlx::test]
async fn a_pbx_restarted_with_a_boot_delay_gets_no_originate_before_fully_booted(pool: PgPool) {
    let old = sim(0.1, &[], |_| {}).await;
    let addr = old.local_addr();
    let worker = start(&pool, restartable_settings(&old));
    let first = dial(&pool, json!({"number": "100"})).await;
    assert_eq!(ended(&pool, first, WAIT).await, "finished");
    old.shutdown().await;
    // Queued while Asterisk is down; it comes back booting for 1.5 s, during which an
    // Originate would be refused ("Extension does not exist.").
    let second = dial(&pool, json!({"number": "101"})).await;
    let new = PbxSim::start(
        addr,
        sim_config(0.1, &[], |c| c.boot_delay = Duration::from_millis(1500)),
    )
    .await
    .expect("restart on the same port");
    assert_eq!(
        ended(&pool, second, WAIT).await,
        "finished",
        "{}",
        last_error(&pool, second).await
    );
    worker.shutdown().await;
    assert!(new.is_booted());
    assert_eq!(
        new.originates_while_booting(),
        0,
        "no Originate before FullyBooted"
    );
    assert_eq!(new.originates(), 1);
    new.shutdown().await;
}

#[sqlx::test]
async fn a_call_handed_back_mid_call_keeps_its_room_under_max_live_calls(pool: PgPool) {
    let sim = sim(
        1.0,
        &[("700", "long-answer_3000"), ("701", "answer_1500")],
        |_| {},
    )
    .await;
    // A rolling restart: the call goes on while its job waits for its recovery attempt.
    let old = hand_back_mid_call(&pool, &sim, json!({"number": "700"})).await;
    // A new job that would go first by priority.
    let fresh: i64 = sqlx::query_scalar(
        "INSERT INTO dialout_queue (kind, payload, priority) \
         VALUES ('dial', '{\"number\": \"701\"}', 10) RETURNING id",
    )
    .fetch_one(&pool)
    .await
    .expect("enqueue");
    let mut settings = dial_settings(&sim);
    settings.dial.max_live_calls = 1;
    let worker = start(&pool, settings);
    assert_eq!(ended(&pool, old, WAIT).await, "finished");
    assert_eq!(ended(&pool, fresh, WAIT).await, "finished");
    worker.shutdown().await;
    assert_eq!(
        sim.peak_live_calls(),
        1,
        "the new call waited for the adopted one to end"
    );
    assert_eq!(
        sim.originates(),
        2,
        "the handed-back call was adopted, not dialled again"
    );
    sim.shutdown().await;
}
