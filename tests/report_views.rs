//! Reporting in SQL (migrations/0009_report.sql) and `dialout report`: every view and
//! function against a hand-built set of CDRs and jobs whose figures are worked out by
//! hand below, the window's edges, an empty window, and the command's output.

mod support;

use std::process::{Command, Output};

use chrono::{DateTime, Utc};
use dialout::cli::report::Report;
use serde_json::{Value, json};
use sqlx::PgPool;
use support::db_url;

/// The hour the known set is built around: [T0, T0 + 1 hour) is the window `W`.
const T0: &str = "2026-03-02 10:00:00+00";
const T1: &str = "2026-03-02 11:00:00+00";

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z")
        .expect("a test timestamp")
        .with_timezone(&Utc)
}

/// One CDR as the completer writes it: rings 5 s, then `billsec` when answered.
async fn call(
    pool: &PgPool,
    calldate: &str,
    disposition: &str,
    billsec: i32,
    account: &str,
    cause: Option<(i32, &str)>,
    job_id: i64,
) {
    let answered = disposition == "ANSWERED";
    sqlx::query(
        "INSERT INTO dialout_cdr (calldate, answer, \"end\", dst, duration, billsec, disposition, \
             accountcode, uniqueid, job_id, attempt, hangup_cause, hangup_cause_txt, worker_id) \
         VALUES ($1::timestamptz, \
                 CASE WHEN $2 THEN $1::timestamptz + interval '5 seconds' END, \
                 $1::timestamptz + (5 + $3) * interval '1 second', \
                 '+5491155550100', 5 + $3, $3, $4, $5, gen_random_uuid()::text, $6, 1, $7, $8, \
                 'replica-1')",
    )
    .bind(calldate)
    .bind(answered)
    .bind(billsec)
    .bind(disposition)
    .bind(account)
    .bind(job_id)
    .bind(cause.map(|c| c.0))
    .bind(cause.map(|c| c.1))
    .execute(pool)
    .await
    .expect("insert a CDR");
}

const CLEARING: Option<(i32, &str)> = Some((16, "Normal Clearing"));
const BUSY: Option<(i32, &str)> = Some((17, "User busy"));
const NO_ANSWER: Option<(i32, &str)> = Some((19, "User alerting, no answer"));
const REJECTED: Option<(i32, &str)> = Some((21, "Call Rejected"));
const CONGESTION: Option<(i32, &str)> = Some((34, "Circuit/channel congestion"));
const UNALLOCATED: Option<(i32, &str)> = Some((1, "Unallocated (unassigned) number"));

/// The known calls around hour W = [10:00, 11:00) on 2026-03-02 UTC: start,
/// disposition, billsec, account code, hangup cause. W holds c1 .. c8.
#[allow(clippy::type_complexity)]
const KNOWN_CALLS: [(&str, &str, i32, &str, Option<(i32, &str)>); 12] = [
    ("2026-03-02 09:59:59.999999+00", "BUSY", 0, "a", BUSY), // c11
    (T0, "ANSWERED", 60, "a", CLEARING),                     // c1
    ("2026-03-02 10:10:00+00", "ANSWERED", 30, "a", CLEARING), // c2
    ("2026-03-02 10:20:00+00", "ANSWERED", 91, "b", CLEARING), // c3
    (C4, "BUSY", 0, "b", BUSY),                              // c4
    ("2026-03-02 10:40:00+00", "NO ANSWER", 0, "", NO_ANSWER), // c5
    (C6, "NO ANSWER", 0, "a", REJECTED),                     // c6
    ("2026-03-02 10:50:00+00", "CONGESTION", 0, "b", CONGESTION), // c7
    ("2026-03-02 10:59:59.999999+00", "FAILED", 0, "", None), // c8
    (T1, "ANSWERED", 45, "a", CLEARING),                     // c9
    ("2026-03-02 11:30:00+00", "FAILED", 0, "b", UNALLOCATED), // c10
    ("2026-03-03 00:00:00+00", "ANSWERED", 120, "c", CLEARING), // c12
];
/// c4 and c6 are the calls of the job `known_calls` is given.
const C4: &str = "2026-03-02 10:30:00+00";
const C6: &str = "2026-03-02 10:45:00+00";

async fn known_calls(pool: &PgPool, dial_job: i64) {
    for (start, disposition, billsec, account, cause) in KNOWN_CALLS {
        let job_id = if start == C4 || start == C6 {
            dial_job
        } else {
            0
        };
        call(pool, start, disposition, billsec, account, cause, job_id).await;
    }
}

/// The figures every call report shares, numerics as text so they compare exactly.
#[derive(Debug, PartialEq, sqlx::FromRow)]
struct Figures {
    calls: i64,
    answered: i64,
    busy: i64,
    no_answer: i64,
    congestion: i64,
    failed: i64,
    asr: Option<String>,
    acd: Option<String>,
    billed_seconds: i64,
    billed_minutes: String,
}

#[derive(Debug, PartialEq, sqlx::FromRow)]
struct HourRow {
    hour: DateTime<Utc>,
    #[sqlx(flatten)]
    figures: Figures,
}

#[derive(Debug, PartialEq, sqlx::FromRow)]
struct AccountRow {
    account_code: String,
    #[sqlx(flatten)]
    figures: Figures,
}

const FIGURES: &str = "calls, answered, busy, no_answer, congestion, failed, \
     asr_percent::text AS asr, acd_seconds::text AS acd, billed_seconds, \
     billed_minutes::text AS billed_minutes";

fn figures(
    [calls, answered, busy, no_answer, congestion, failed]: [i64; 6],
    asr: Option<&str>,
    acd: Option<&str>,
    billed_seconds: i64,
    billed_minutes: &str,
) -> Figures {
    Figures {
        calls,
        answered,
        busy,
        no_answer,
        congestion,
        failed,
        asr: asr.map(str::to_owned),
        acd: acd.map(str::to_owned),
        billed_seconds,
        billed_minutes: billed_minutes.to_owned(),
    }
}

/// day, calls, answered, asr_percent, acd_seconds, billed_minutes.
type DayRow = (
    DateTime<Utc>,
    i64,
    i64,
    Option<String>,
    Option<String>,
    String,
);
/// kind, jobs_ended, the four statuses, jobs_per_hour, mean wait and run, retried_jobs.
type ThroughputRow = (
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    String,
    Option<String>,
    Option<String>,
    i64,
);
/// job_id, kind, status, attempts, max_attempts, lost_leases, calls, last_error.
type RetriedRow = (i64, String, String, i32, i32, i32, i64, Option<String>);

/// `sql`'s rows, $1 and $2 bound to a window's ends (text, read as timestamptz).
async fn in_window<T>(pool: &PgPool, sql: &str, since: &str, until: &str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    sqlx::query_as(sql)
        .bind(since)
        .bind(until)
        .fetch_all(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn summary(pool: &PgPool, since: &str, until: &str) -> Figures {
    let sql =
        format!("SELECT {FIGURES} FROM dialout_report_summary($1::timestamptz, $2::timestamptz)");
    let mut rows = in_window(pool, &sql, since, until).await;
    assert_eq!(rows.len(), 1, "the summary is one row");
    rows.remove(0)
}

/// W: c1..c8. Answered c1, c2, c3: ASR 3/8 = 37.5 %, ACD (60 + 30 + 91) / 3 = 60.33 s,
/// billed 181 s = 3.02 min.
#[sqlx::test]
async fn the_summary_counts_a_window_and_its_edges(pool: PgPool) {
    known_calls(&pool, 0).await;
    let w = summary(&pool, T0, T1).await;
    assert_eq!(
        w,
        figures([8, 3, 1, 2, 1, 1], Some("37.5"), Some("60.3"), 181, "3.0")
    );

    // The window names itself.
    let ends: Vec<(DateTime<Utc>, DateTime<Utc>)> = in_window(
        &pool,
        "SELECT window_start, window_end \
         FROM dialout_report_summary($1::timestamptz, $2::timestamptz)",
        T0,
        T1,
    )
    .await;
    assert_eq!(ends, [(at(T0), at(T1))]);

    // A call at exactly `until` (c9, 11:00:00) opens the next window, with c10:
    // ASR 1/2, ACD 45 s, 0.75 min rounded half up.
    assert_eq!(
        summary(&pool, T1, "2026-03-02 12:00:00+00").await,
        figures([2, 1, 0, 0, 0, 1], Some("50.0"), Some("45.0"), 45, "0.8")
    );
    // The hour before holds c11 only, a microsecond before T0.
    assert_eq!(
        summary(&pool, "2026-03-02 09:00:00+00", T0).await,
        figures([1, 0, 1, 0, 0, 0], Some("0.0"), None, 0, "0.0")
    );
    // A window of one microsecond at T0 holds c1 alone.
    assert_eq!(
        summary(&pool, T0, "2026-03-02 10:00:00.000001+00").await,
        figures([1, 1, 0, 0, 0, 0], Some("100.0"), Some("60.0"), 60, "1.0")
    );
    // The defaults are the last 24 hours: none of these calls.
    let recent: i64 = sqlx::query_scalar("SELECT calls FROM dialout_report_summary()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(recent, 0);
}

#[sqlx::test]
async fn an_empty_window_gives_zeros_and_no_rows(pool: PgPool) {
    known_calls(&pool, 0).await;
    let (since, until) = ("2026-03-02 15:00:00+00", "2026-03-02 16:00:00+00");
    assert_eq!(
        summary(&pool, since, until).await,
        figures([0; 6], None, None, 0, "0.0"),
        "one row, zeros, no ASR or ACD to speak of"
    );
    for function in ["dialout_report_by_account", "dialout_report_by_cause"] {
        let sql = format!("SELECT count(*) FROM {function}($1::timestamptz, $2::timestamptz)");
        let rows: Vec<(i64,)> = in_window(&pool, &sql, since, until).await;
        assert_eq!(rows, [(0,)], "{function}");
    }
    // An empty table: no hours, no days.
    sqlx::query("TRUNCATE dialout_cdr")
        .execute(&pool)
        .await
        .unwrap();
    let buckets: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM dialout_report_hourly) + (SELECT count(*) FROM dialout_report_daily)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(buckets, 0);
}

/// W by account: a = c1, c2, c6 (answered 60 + 30 s); b = c3, c4, c7 (answered 91 s);
/// '' = c5, c8. By cause: 16 three times, 17, 19, 21, 34 and none once each, of 8.
#[sqlx::test]
async fn by_account_and_by_cause_split_the_window(pool: PgPool) {
    known_calls(&pool, 0).await;
    let sql = format!(
        "SELECT account_code, {FIGURES} \
         FROM dialout_report_by_account($1::timestamptz, $2::timestamptz)"
    );
    let rows: Vec<AccountRow> = in_window(&pool, &sql, T0, T1).await;
    let account = |code: &str, figures| AccountRow {
        account_code: code.to_owned(),
        figures,
    };
    assert_eq!(
        rows,
        [
            account(
                "a",
                figures([3, 2, 0, 1, 0, 0], Some("66.7"), Some("45.0"), 90, "1.5")
            ),
            account(
                "b",
                figures([3, 1, 1, 0, 1, 0], Some("33.3"), Some("91.0"), 91, "1.5")
            ),
            account("", figures([2, 0, 0, 1, 0, 1], Some("0.0"), None, 0, "0.0")),
        ]
    );

    let causes: Vec<(Option<i32>, Option<String>, i64, String)> = in_window(
        &pool,
        "SELECT hangup_cause, hangup_cause_text, calls, percent_of_calls::text \
         FROM dialout_report_by_cause($1::timestamptz, $2::timestamptz)",
        T0,
        T1,
    )
    .await;
    let cause = |code: Option<i32>, text: Option<&str>, calls: i64, percent: &str| {
        (code, text.map(str::to_owned), calls, percent.to_owned())
    };
    assert_eq!(
        causes,
        [
            cause(Some(16), Some("Normal Clearing"), 3, "37.5"),
            cause(Some(17), Some("User busy"), 1, "12.5"),
            cause(Some(19), Some("User alerting, no answer"), 1, "12.5"),
            cause(Some(21), Some("Call Rejected"), 1, "12.5"),
            cause(Some(34), Some("Circuit/channel congestion"), 1, "12.5"),
            cause(None, None, 1, "12.5"),
        ]
    );
}

/// EXPLAIN (ANALYZE, FORMAT JSON) of `sql`, the plan's nodes flattened.
async fn plan_nodes(conn: &mut sqlx::PgConnection, sql: &str) -> Vec<Value> {
    let plan: Value = sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {sql}"))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let mut nodes = Vec::new();
    let mut stack = vec![plan[0]["Plan"].clone()];
    while let Some(mut node) = stack.pop() {
        if let Some(Value::Array(children)) = node.get_mut("Plans").map(Value::take) {
            stack.extend(children);
        }
        nodes.push(node);
    }
    nodes
}

/// Hours 09 (c11), 10 (W), 11 (c9, c10) and 12 (none); days in UTC and in Buenos Aires.
#[sqlx::test]
async fn hourly_and_daily_views_bucket_calls_by_their_start(pool: PgPool) {
    known_calls(&pool, 0).await;
    let sql = format!(
        "SELECT hour, {FIGURES} FROM dialout_report_hourly \
         WHERE hour >= $1::timestamptz AND hour < $2::timestamptz ORDER BY hour"
    );
    let hours: Vec<HourRow> = in_window(
        &pool,
        &sql,
        "2026-03-02 09:00:00+00",
        "2026-03-02 13:00:00+00",
    )
    .await;
    let hour = |start: &str, figures| HourRow {
        hour: at(start),
        figures,
    };
    assert_eq!(
        hours,
        [
            hour(
                "2026-03-02 09:00:00+00",
                figures([1, 0, 1, 0, 0, 0], Some("0.0"), None, 0, "0.0")
            ),
            hour(
                T0,
                figures([8, 3, 1, 2, 1, 1], Some("37.5"), Some("60.3"), 181, "3.0")
            ),
            hour(
                T1,
                figures([2, 1, 0, 0, 0, 1], Some("50.0"), Some("45.0"), 45, "0.8")
            ),
            hour(
                "2026-03-02 12:00:00+00",
                figures([0; 6], None, None, 0, "0.0")
            ),
        ]
    );

    // The filter on the hour is applied to the list of hours, before any hour's calls
    // are read: the per-hour summary runs 4 times, not once per hour since c11.
    let mut conn = pool.acquire().await.unwrap();
    let nodes = plan_nodes(
        &mut conn,
        "SELECT * FROM dialout_report_hourly \
         WHERE hour >= '2026-03-02 09:00+00' AND hour < '2026-03-02 13:00+00'",
    )
    .await;
    let function = |name: &str| {
        nodes
            .iter()
            .find(|n| n["Function Name"] == name)
            .unwrap_or_else(|| panic!("no scan of {name} in {nodes:?}"))
    };
    assert_eq!(function("generate_series")["Actual Rows"], 4);
    assert!(
        function("generate_series")["Filter"]
            .as_str()
            .is_some_and(|f| f.contains("hour >=")),
        "{nodes:?}"
    );
    assert_eq!(function("dialout_report_summary")["Actual Loops"], 4);

    // UTC days: 2026-03-02 holds c1..c11 (answered c1, c2, c3, c9: 226 s), 03-03 holds c12.
    let days: Vec<DayRow> = sqlx::query_as(
        "SELECT day, calls, answered, asr_percent::text, acd_seconds::text, \
                    billed_minutes::text \
             FROM dialout_report_daily WHERE day >= '2026-03-02' ORDER BY day",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let day = |d: &str, calls, answered, asr: &str, acd: &str, minutes: &str| {
        (
            at(d),
            calls,
            answered,
            Some(asr.to_owned()),
            Some(acd.to_owned()),
            minutes.to_owned(),
        )
    };
    assert_eq!(
        days[..2],
        [
            day("2026-03-02 00:00:00+00", 11, 4, "36.4", "56.5", "3.8"),
            day("2026-03-03 00:00:00+00", 1, 1, "100.0", "120.0", "2.0"),
        ]
    );
    assert!(
        days[2..].iter().all(|d| d.1 == 0),
        "later days (to now) have no calls"
    );

    // Buenos Aires days (UTC-3) start at 03:00 UTC: c12 at 00:00 UTC is 21:00 there on
    // the 2nd, so that day holds all twelve (answered 346 s over 5).
    sqlx::query("SET TimeZone = 'America/Argentina/Buenos_Aires'")
        .execute(&mut *conn)
        .await
        .unwrap();
    let local: DayRow = sqlx::query_as(
        "SELECT day, calls, answered, asr_percent::text, acd_seconds::text, \
                    billed_minutes::text \
             FROM dialout_report_daily WHERE day = '2026-03-02'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(
        local,
        day("2026-03-02 03:00:00+00", 12, 5, "41.7", "69.2", "5.8")
    );
}

/// The window's predicate is an index condition on dialout_cdr_calldate (with
/// sequential scans off, as the planner chooses them for a table this small).
#[sqlx::test]
async fn window_functions_read_the_window_through_the_calldate_index(pool: PgPool) {
    known_calls(&pool, 0).await;
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    for function in ["dialout_report_by_account", "dialout_report_by_cause"] {
        let nodes = plan_nodes(
            &mut conn,
            &format!("SELECT * FROM {function}('{T0}', '{T1}')"),
        )
        .await;
        // An index scan or a bitmap index scan: either way the index holds the condition.
        let scan = nodes
            .iter()
            .find(|n| n["Index Name"] == "dialout_cdr_calldate")
            .unwrap_or_else(|| panic!("{function}: the calldate index is unused: {nodes:?}"));
        assert!(
            scan["Index Cond"]
                .as_str()
                .is_some_and(|c| c.contains("calldate >=") && c.contains("calldate <")),
            "{function}: {scan}"
        );
        assert_eq!(scan["Actual Rows"], 8, "{function}");
    }
}

/// A job inserted as the application does, then moved to where the test needs it.
async fn job(pool: &PgPool, kind: &str, payload: Value, set: &str) -> i64 {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO dialout_queue (kind, payload) VALUES ($1, $2) RETURNING id",
    )
    .bind(kind)
    .bind(payload)
    .fetch_one(pool)
    .await
    .expect("enqueue");
    sqlx::query(&format!("UPDATE dialout_queue SET {set} WHERE id = $1"))
        .bind(id)
        .execute(pool)
        .await
        .expect("move the job");
    id
}

fn dial() -> Value {
    json!({"number": "+5491155550106"})
}

/// An ended job: times given as offsets from T0.
fn ended(status: &str, attempts: i32, created: &str, started: Option<&str>, end: &str) -> String {
    let t = |offset: &str| format!("'{T0}'::timestamptz + interval '{offset}'");
    format!(
        "status = '{status}', attempts = {attempts}, created_at = {}, started_at = {}, \
         ended_at = {}",
        t(created),
        started.map_or("NULL".to_owned(), t),
        t(end)
    )
}

/// Jobs ended in W: j1 noop finished (wait 2 s, run 8 s, at exactly T0), j2 noop
/// finished_with_error after 3 attempts (wait 4 s, run 296 s), j3 dial timedout after
/// 2 (wait 6 s, run 594 s), j4 dial cancelled before it started. Outside: j5 (ended at
/// exactly T1, 4 attempts) and j6 (a second before T0).
#[sqlx::test]
async fn throughput_and_retried_count_the_jobs_that_ended_in_the_window(pool: PgPool) {
    let noop = json!({});
    job(
        &pool,
        "noop",
        noop.clone(),
        &ended("finished", 1, "-10 s", Some("-8 s"), "0 s"),
    )
    .await;
    let j2 = job(
        &pool,
        "noop",
        noop.clone(),
        &(ended("finished_with_error", 3, "0 s", Some("4 s"), "300 s")
            + ", lost_leases = 1, last_error = 'flaky'"),
    )
    .await;
    let j3 = job(
        &pool,
        "dial",
        dial(),
        &(ended("timedout", 2, "600 s", Some("606 s"), "1200 s")
            + ", last_error = 'dial job: no answer within 30000 ms'"),
    )
    .await;
    // Cancelling sets ended_at to now(); then it is moved into W.
    let j4 = job(&pool, "dial", dial(), "status = 'cancelled'").await;
    sqlx::query(&format!(
        "UPDATE dialout_queue SET created_at = '{T0}'::timestamptz + interval '1200 s', \
         ended_at = '{T0}'::timestamptz + interval '1800 s' WHERE id = $1"
    ))
    .bind(j4)
    .execute(&pool)
    .await
    .unwrap();
    job(
        &pool,
        "dial",
        dial(),
        &ended("finished", 4, "2400 s", Some("2401 s"), "3600 s"),
    )
    .await;
    let legacy = json!({"host": "10.0.0.7", "port": 7001, "message": "PING"});
    job(
        &pool,
        "legacy_message",
        legacy,
        &ended("finished_with_error", 2, "-60 s", Some("-59 s"), "-1 s"),
    )
    .await;
    // j3's two calls.
    known_calls(&pool, j3).await;

    let rows: Vec<ThroughputRow> = in_window(
        &pool,
        "SELECT kind, jobs_ended, finished, finished_with_error, timedout, cancelled, \
                jobs_per_hour::text, mean_wait_seconds::text, mean_run_seconds::text, \
                retried_jobs \
         FROM dialout_report_throughput($1::timestamptz, $2::timestamptz)",
        T0,
        T1,
    )
    .await;
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(
        rows,
        [
            (
                "dial".into(),
                2,
                0,
                0,
                1,
                1,
                "2.0".into(),
                some("6.0"),
                some("594.0"),
                1
            ),
            (
                "noop".into(),
                2,
                1,
                1,
                0,
                0,
                "2.0".into(),
                some("3.0"),
                some("152.0"),
                1
            ),
            (
                "legacy_message".into(),
                0,
                0,
                0,
                0,
                0,
                "0.0".into(),
                None,
                None,
                0
            ),
            (
                "roster_import".into(),
                0,
                0,
                0,
                0,
                0,
                "0.0".into(),
                None,
                None,
                0
            ),
        ]
    );

    let retried: Vec<RetriedRow> = in_window(
        &pool,
        "SELECT job_id, kind, status::text, attempts, max_attempts, lost_leases, calls, last_error \
         FROM dialout_report_retried($1::timestamptz, $2::timestamptz)",
        T0,
        T1,
    )
    .await;
    assert_eq!(
        retried,
        [
            (
                j2,
                "noop".into(),
                "finished_with_error".into(),
                3,
                5,
                1,
                0,
                some("flaky")
            ),
            (
                j3,
                "dial".into(),
                "timedout".into(),
                2,
                5,
                0,
                2,
                some("dial job: no answer within 30000 ms")
            ),
        ]
    );
    let top: Vec<(i64,)> = in_window(
        &pool,
        "SELECT job_id FROM dialout_report_retried($1::timestamptz, $2::timestamptz, 1)",
        T0,
        T1,
    )
    .await;
    assert_eq!(top, [(j2,)]);
}

const RUNNING: &str = "status = 'trying', attempts = 1, started_at = now(), \
     lease_token = gen_random_uuid(), lease_expires_at = now() + interval '30 seconds'";

#[sqlx::test]
async fn the_backlog_counts_the_queue_now_per_kind(pool: PgPool) {
    job(
        &pool,
        "dial",
        dial(),
        "run_at = now() - interval '100 seconds'",
    )
    .await;
    job(
        &pool,
        "dial",
        dial(),
        "run_at = now() - interval '10 seconds'",
    )
    .await;
    job(&pool, "dial", dial(), "run_at = now() + interval '1 hour'").await;
    job(&pool, "dial", dial(), RUNNING).await;
    job(
        &pool,
        "dial",
        dial(),
        &RUNNING.replace("'trying'", "'established'"),
    )
    .await;
    job(&pool, "dial", dial(), "status = 'cancelled'").await;
    job(&pool, "noop", json!({}), "run_at = now()").await;
    job(
        &pool,
        "noop",
        json!({}),
        &ended("finished", 1, "0 s", Some("1 s"), "2 s"),
    )
    .await;

    let rows: Vec<(String, i64, i64, i64, i64, Option<f64>)> = sqlx::query_as(
        "SELECT kind, queued_ready, queued_scheduled, trying, established, \
                oldest_ready_wait_seconds::float8 \
         FROM dialout_report_backlog ORDER BY kind",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let counts: Vec<_> = rows
        .iter()
        .map(|r| (r.0.as_str(), r.1, r.2, r.3, r.4, r.5.is_some()))
        .collect();
    assert_eq!(
        counts,
        [
            ("dial", 2, 1, 1, 1, true),
            ("legacy_message", 0, 0, 0, 0, false),
            ("noop", 1, 0, 0, 0, true),
            ("roster_import", 0, 0, 0, 0, false),
        ]
    );
    // The oldest due dial job was due 100 s before the INSERT, a moment ago.
    let oldest = rows[0].5.unwrap_or_default();
    assert!((100.0..160.0).contains(&oldest), "{oldest}");
}

fn dialout(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dialout"))
        .args(args)
        .env("DATABASE_URL", url)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("run dialout")
}

async fn run_dialout(url: String, args: &'static [&'static str]) -> Output {
    tokio::task::spawn_blocking(move || dialout(&url, args))
        .await
        .expect("the command ran")
}

/// W's figures as the terminal shows them: the top five causes (the sixth, none, is
/// left out) and a backlog with nothing due.
#[sqlx::test]
async fn the_report_command_prints_a_known_window(pool: PgPool) {
    known_calls(&pool, 0).await;
    job(&pool, "dial", dial(), "run_at = now() + interval '1 hour'").await;
    job(&pool, "noop", json!({}), RUNNING).await;
    let out = run_dialout(
        db_url(&pool).await,
        &[
            "report",
            "--since",
            "2026-03-02 10:00:00+00",
            "--until",
            "2026-03-02 07:00:00-04",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = "\
calls that started from 2026-03-02 10:00:00 UTC to 2026-03-02 11:00:00 UTC

calls                     8
answered                  3
busy                      1
no answer                 2
congestion                1
failed                    1
ASR                    37.5 %
ACD                    60.3 s
billed minutes          3.0

hangup cause                                calls       %
16    Normal Clearing                           3    37.5
17    User busy                                 1    12.5
19    User alerting, no answer                  1    12.5
21    Call Rejected                             1    12.5
34    Circuit/channel congestion                1    12.5

kind                ready  scheduled   trying  established   oldest ready
dial                    0          1        0            0              -
legacy_message          0          0        0            0              -
noop                    0          0        1            0              -
roster_import           0          0        0            0              -
";
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

#[sqlx::test]
async fn the_report_command_reads_durations_and_refuses_what_is_no_time(pool: PgPool) {
    let url = db_url(&pool).await;
    let out = run_dialout(url.clone(), &["report", "--since", "2h"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let header = text.lines().next().unwrap_or_default();
    let times: Vec<DateTime<Utc>> = header
        .trim_start_matches("calls that started from ")
        .split(" to ")
        .map(|t| at(&t.replace(" UTC", "+00")))
        .collect();
    assert_eq!(times.len(), 2, "{header}");
    assert_eq!((times[1] - times[0]).num_seconds(), 7200, "{header}");
    assert!(text.contains("\ncalls                     0\n"), "{text}");
    assert!(text.contains("\nASR                       -\n"), "{text}");
    assert!(text.contains("\nACD                       -\n"), "{text}");

    let out = run_dialout(url, &["report", "--since", "yesterdayish"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--since \"yesterdayish\": invalid input syntax"),
        "{err}"
    );
}

/// The one figure that depends on the clock, rendered from what was fetched.
#[sqlx::test]
async fn the_report_shows_how_long_the_oldest_due_job_waited(pool: PgPool) {
    job(
        &pool,
        "dial",
        dial(),
        "run_at = now() - interval '100 seconds'",
    )
    .await;
    let mut report = Report::fetch(&pool, at(T0), at(T1)).await.unwrap();
    let dial_row = report
        .backlog
        .iter_mut()
        .find(|b| b.kind == "dial")
        .expect("a dial row");
    let waited = dial_row.oldest_ready_wait_seconds.unwrap_or_default();
    assert!((100.0..160.0).contains(&waited), "{waited}");
    dial_row.oldest_ready_wait_seconds = Some(104.0);
    let text = report.to_string();
    assert!(
        text.contains(
            "\ndial                    1          0        0            0        104.0 s\n"
        ),
        "{text}"
    );
}
