//! `dialout bench report`: the reporting views and functions (migrations/0009_report.sql)
//! timed for a one-day window over generated data, in a scratch database.
//!
//! It generates `rows` CDRs spread evenly over the `days` up to now, in calldate order
//! as the completer writes them (one INSERT ... SELECT generate_series), with a call
//! centre's mix: 55 % answered (billsec exponential, mean 55 s), 25 % no answer (cause 19,
//! or 21 rejected), 10 % busy, 3 % congestion, 7 % failed (causes 1, 38, or none when
//! refused); 20 account codes, skewed, one call in ten without. Then the week of jobs
//! that retention keeps by default (rows * 7 / days finished jobs, four kinds) and a
//! backlog (due, scheduled, running). After VACUUM ANALYZE it runs each query `runs`
//! times (the median and the range printed), then once under EXPLAIN (ANALYZE, BUFFERS)
//! for where the time goes; then the whole history once; then what an index costs a
//! CDR insert, and how long building one over every CDR blocks inserts. Target (issue
//! 13): each under 1 s for a one-day window at 10,000,000 CDRs.

use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

use super::queue::migrated_scratch_db;
use crate::config::Settings;

/// What to run.
#[derive(Debug, Clone)]
pub struct ReportBench {
    pub rows: u64,
    pub days: u32,
    pub runs: usize,
}

/// The one-day window of each report, as an analyst would write it.
const QUERIES: &[(&str, &str)] = &[
    (
        "hourly view, last 24 hours",
        "SELECT * FROM dialout_report_hourly WHERE hour >= now() - interval '1 day'",
    ),
    (
        "daily view, yesterday",
        "SELECT * FROM dialout_report_daily WHERE day = date_trunc('day', now()) - interval '1 day'",
    ),
    (
        "summary, last 24 hours",
        "SELECT * FROM dialout_report_summary(now() - interval '1 day', now())",
    ),
    (
        "by account, last 24 hours",
        "SELECT * FROM dialout_report_by_account(now() - interval '1 day', now())",
    ),
    (
        "by cause, last 24 hours",
        "SELECT * FROM dialout_report_by_cause(now() - interval '1 day', now())",
    ),
    ("backlog view", "SELECT * FROM dialout_report_backlog"),
    (
        "throughput, last 24 hours",
        "SELECT * FROM dialout_report_throughput(now() - interval '1 day', now())",
    ),
    (
        "retried, last 24 hours",
        "SELECT * FROM dialout_report_retried(now() - interval '1 day', now(), 20)",
    ),
];

/// Every CDR at once: what a query without a window costs.
const WHOLE_HISTORY: &[(&str, &str)] = &[
    (
        "daily view, whole history",
        "SELECT * FROM dialout_report_daily",
    ),
    (
        "by account, whole history",
        "SELECT * FROM dialout_report_by_account('-infinity', 'infinity')",
    ),
];

/// Generates the data, times the queries, prints as it goes.
pub async fn run(
    settings: &Settings,
    admin_url: &str,
    bench: &ReportBench,
) -> Result<(), sqlx::Error> {
    let (db, migrated) = migrated_scratch_db(settings, admin_url).await?;
    migrated.close().await;
    // Its own pool: sqlx would log every generating statement as slow.
    let options: PgConnectOptions = db.url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.disable_statement_logging())
        .await?;
    let outcome = measure(&pool, bench).await;
    pool.close().await;
    db.drop_db().await?;
    outcome
}

async fn measure(pool: &PgPool, bench: &ReportBench) -> Result<(), sqlx::Error> {
    let (version, buffers, jit): (String, String, String) = sqlx::query_as(
        "SELECT current_setting('server_version'), current_setting('shared_buffers'), \
                current_setting('jit')",
    )
    .fetch_one(pool)
    .await?;
    println!("PostgreSQL {version}, shared_buffers {buffers}, jit {jit}");

    let started = Instant::now();
    sqlx::query(&cdr_insert("dialout_cdr"))
        .bind(bench.rows as i64)
        .bind(f64::from(bench.days))
        .execute(pool)
        .await?;
    let cdr_s = started.elapsed().as_secs_f64();
    let jobs = bench.rows * 7 / u64::from(bench.days.max(1));
    let started = Instant::now();
    generate_queue(pool, jobs).await?;
    let queue_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    sqlx::query("VACUUM ANALYZE dialout_cdr, dialout_queue")
        .execute(pool)
        .await?;
    let (cdr_size, queue_size): (String, String) = sqlx::query_as(
        "SELECT pg_size_pretty(pg_total_relation_size('dialout_cdr')), \
                pg_size_pretty(pg_total_relation_size('dialout_queue'))",
    )
    .fetch_one(pool)
    .await?;
    println!(
        "generated {} CDRs over {} days in {cdr_s:.0} s ({:.0} rows/s, {cdr_size} with indexes), \
         {jobs} finished jobs and a backlog in {queue_s:.0} s ({queue_size}); VACUUM ANALYZE {:.0} s",
        bench.rows,
        bench.days,
        bench.rows as f64 / cdr_s,
        started.elapsed().as_secs_f64()
    );
    println!();

    for (name, sql) in QUERIES {
        let mut times = Vec::with_capacity(bench.runs);
        let mut rows = 0;
        for _ in 0..bench.runs.max(1) {
            let started = Instant::now();
            rows = sqlx::query(sql).fetch_all(pool).await?.len();
            times.push(started.elapsed());
        }
        times.sort();
        println!(
            "{name}: median {} ({}-{}, {} runs), {rows} rows",
            ms(times[times.len() / 2]),
            ms(times[0]),
            ms(times[times.len() - 1]),
            times.len()
        );
        println!("    {sql}");
        for line in explain(pool, sql).await? {
            println!("    {line}");
        }
    }
    println!();
    for (name, sql) in WHOLE_HISTORY {
        let started = Instant::now();
        let rows = sqlx::query(sql).fetch_all(pool).await?.len();
        println!("{name}: {} (one run), {rows} rows", ms(started.elapsed()));
    }
    println!();
    // A difference of about a microsecond in fifteen: more runs than the queries get.
    index_costs(pool, bench.runs.max(3) * 2 + 1).await?;
    index_build(pool, bench.rows).await
}

/// How long a plain CREATE INDEX over every CDR takes: how long it would hold up CDR
/// inserts (and so every dial job's completion) if a migration built it.
async fn index_build(pool: &PgPool, rows: u64) -> Result<(), sqlx::Error> {
    let sizes: Vec<(String, String)> = sqlx::query_as(
        "SELECT indexrelid::regclass::text, pg_size_pretty(pg_relation_size(indexrelid)) \
         FROM pg_index WHERE indrelid = 'dialout_cdr'::regclass ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    let sizes: Vec<String> = sizes.iter().map(|(i, s)| format!("{i} {s}")).collect();
    println!("dialout_cdr's indexes: {}", sizes.join(", "));
    let started = Instant::now();
    sqlx::query("CREATE INDEX bench_cdr_account ON dialout_cdr (accountcode, calldate)")
        .execute(pool)
        .await?;
    let built = started.elapsed().as_secs_f64();
    sqlx::query("DROP INDEX bench_cdr_account")
        .execute(pool)
        .await?;
    println!(
        "CREATE INDEX ON dialout_cdr (accountcode, calldate) over {rows} CDRs: {built:.1} s, \
         all of it with CDR inserts blocked"
    );
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// EXPLAIN (ANALYZE, BUFFERS) boiled down: times, buffers, JIT, and each scan with the
/// rows it returned and how often it ran.
async fn explain(pool: &PgPool, sql: &str) -> Result<Vec<String>, sqlx::Error> {
    let plan: Value = sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}"))
        .fetch_one(pool)
        .await?;
    let top = &plan[0];
    let root = &top["Plan"];
    let mut lines = vec![format!(
        "EXPLAIN: execution {:.1} ms, planning {:.1} ms, buffers hit {} read {}{}",
        top["Execution Time"].as_f64().unwrap_or(f64::NAN),
        top["Planning Time"].as_f64().unwrap_or(f64::NAN),
        root["Shared Hit Blocks"],
        root["Shared Read Blocks"],
        match top["JIT"]["Timing"]["Total"].as_f64() {
            Some(jit) => format!(", JIT {jit:.1} ms"),
            None => String::new(),
        }
    )];
    scans(root, &mut lines);
    Ok(lines)
}

fn scans(node: &Value, out: &mut Vec<String>) {
    let kind = node["Node Type"].as_str().unwrap_or("?");
    if kind.contains("Scan") {
        let on = [
            ("Index Name", " using "),
            ("Relation Name", " on "),
            ("Function Name", " of "),
        ]
        .iter()
        .filter_map(|(key, word)| node[*key].as_str().map(|v| format!("{word}{v}")))
        .collect::<String>();
        let cond = ["Index Cond", "Filter"]
            .iter()
            .filter_map(|key| node[*key].as_str().map(|v| format!(" [{key}: {v}]")))
            .collect::<String>();
        out.push(format!(
            "  {kind}{on}: {} rows x {} loops{cond}",
            node["Actual Rows"], node["Actual Loops"]
        ));
    }
    if let Some(children) = node["Plans"].as_array() {
        for child in children {
            scans(child, out);
        }
    }
}

/// The CDR generator: $1 rows over the $2 days up to now, into `table`.
fn cdr_insert(table: &str) -> String {
    format!(
        "INSERT INTO {table} (calldate, answer, \"end\", clid, src, dst, dcontext, channel, \
             dstchannel, lastapp, lastdata, duration, billsec, disposition, accountcode, \
             uniqueid, linkedid, job_id, attempt, hangup_cause, hangup_cause_txt, \
             originate_reason, worker_id) \
         SELECT c.calldate, \
                CASE WHEN c.answered THEN c.calldate + c.ring * interval '1 second' END, \
                c.calldate + (c.ring + c.billsec) * interval '1 second', \
                '\"Clinic\" <+5491140000000>', '+5491140000000', c.dst, '', \
                'Local/' || c.dst || '@outbound-' || to_hex(c.i) || ';1', \
                CASE WHEN c.answered THEN 'PJSIP/trunk-' || to_hex(c.i) ELSE '' END, \
                CASE WHEN c.answered THEN 'Playback' ELSE 'AppDial2' END, \
                CASE WHEN c.answered THEN 'custom/reminder' ELSE '(Outgoing Line)' END, \
                c.ring + c.billsec, c.billsec, c.disposition, c.account, \
                'dialout-' || c.i || '-' || md5(c.i::text), 'dialout-' || c.i || '-' || md5(c.i::text), \
                c.i, 1, c.cause, c.cause_txt, c.reason, 'replica-' || (c.i % 3) \
         FROM ( \
             SELECT g.i, g.calldate, g.dst, g.account, d.disposition, \
                    d.disposition = 'ANSWERED' AS answered, \
                    CASE d.disposition \
                        WHEN 'ANSWERED' THEN 2 + floor(g.r3 * 20)::int \
                        WHEN 'NO ANSWER' THEN CASE WHEN g.r2 < 0.8 THEN 30 ELSE floor(g.r3 * 15)::int END \
                        WHEN 'BUSY' THEN floor(g.r3 * 4)::int \
                        ELSE 0 END AS ring, \
                    CASE WHEN d.disposition = 'ANSWERED' \
                         THEN least(3600, floor(-ln(1 - g.r4) * 55))::int ELSE 0 END AS billsec, \
                    CASE d.disposition \
                        WHEN 'ANSWERED' THEN 16 WHEN 'BUSY' THEN 17 WHEN 'CONGESTION' THEN 34 \
                        WHEN 'NO ANSWER' THEN CASE WHEN g.r2 < 0.8 THEN 19 ELSE 21 END \
                        ELSE CASE WHEN g.r2 < 0.5 THEN 1 WHEN g.r2 < 0.8 THEN 38 END END AS cause, \
                    CASE d.disposition \
                        WHEN 'ANSWERED' THEN 'Normal Clearing' WHEN 'BUSY' THEN 'User busy' \
                        WHEN 'CONGESTION' THEN 'Circuit/channel congestion' \
                        WHEN 'NO ANSWER' THEN CASE WHEN g.r2 < 0.8 THEN 'User alerting, no answer' \
                                                   ELSE 'Call Rejected' END \
                        ELSE CASE WHEN g.r2 < 0.5 THEN 'Unallocated (unassigned) number' \
                                  WHEN g.r2 < 0.8 THEN 'Network out of order' END END AS cause_txt, \
                    CASE d.disposition \
                        WHEN 'ANSWERED' THEN 4 WHEN 'BUSY' THEN 5 WHEN 'CONGESTION' THEN 8 \
                        WHEN 'NO ANSWER' THEN CASE WHEN g.r2 < 0.8 THEN 3 ELSE 0 END \
                        ELSE CASE WHEN g.r2 < 0.8 THEN 0 END END AS reason \
             FROM ( \
                 SELECT i, \
                        now() - $2 * interval '1 day' + (i - 1 + random()) * ($2 * interval '1 day' / $1) \
                            AS calldate, \
                        '+54911' || lpad(floor(random() * 100000000)::bigint::text, 8, '0') AS dst, \
                        CASE WHEN random() < 0.1 THEN '' \
                             ELSE 'acct-' || lpad(floor(20 * random() ^ 2)::int::text, 2, '0') END \
                            AS account, \
                        random() AS r1, random() AS r2, random() AS r3, random() AS r4 \
                 FROM generate_series(1, $1::bigint) AS i \
             ) AS g \
             CROSS JOIN LATERAL ( \
                 SELECT CASE WHEN g.r1 < 0.55 THEN 'ANSWERED' WHEN g.r1 < 0.80 THEN 'NO ANSWER' \
                             WHEN g.r1 < 0.90 THEN 'BUSY' WHEN g.r1 < 0.93 THEN 'CONGESTION' \
                             ELSE 'FAILED' END AS disposition) AS d \
         ) AS c \
         ORDER BY c.i"
    )
}

/// `jobs` jobs that ended over the last week (90 % dial), statuses and attempts mixed,
/// then a backlog: due, scheduled and running jobs. Written past the INSERT check
/// (finished rows cannot be inserted otherwise), in this scratch database only.
async fn generate_queue(pool: &PgPool, jobs: u64) -> Result<(), sqlx::Error> {
    let jobs = jobs.max(1) as i64;
    let mut tx = pool.begin().await?;
    sqlx::query("ALTER TABLE dialout_queue DISABLE TRIGGER dialout_queue_check")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO dialout_queue (kind, payload, status, attempts, max_attempts, created_at, \
             started_at, ended_at, run_at, worker_id, last_error, result, lost_leases) \
         SELECT g.kind, \
                CASE WHEN g.kind = 'dial' THEN jsonb_build_object('number', \
                    '+54911' || lpad((g.i % 100000000)::text, 8, '0'), 'account_code', 'acct-07') \
                     ELSE '{}'::jsonb END, \
                g.status, g.attempts, 5, \
                g.ended_at - (g.wait + g.run) * interval '1 second', \
                g.ended_at - g.run * interval '1 second', \
                g.ended_at, g.ended_at - g.run * interval '1 second', 'replica-' || (g.i % 3), \
                CASE g.status \
                    WHEN 'finished_with_error' THEN 'dial job: busy (Asterisk reason 5, cause 17 User busy)' \
                    WHEN 'timedout' THEN 'dial job: no answer within 30000 ms (Asterisk reason 3, cause 19 User alerting, no answer)' \
                END, \
                CASE WHEN g.status = 'finished' AND g.kind = 'dial' THEN jsonb_build_object( \
                    'uniqueid', 'dialout-' || g.i || '-' || md5(g.i::text), \
                    'channel', 'Local/+5491155550100@outbound-00000000;1', \
                    'disposition', 'ANSWERED', 'duration', 42, 'billsec', 31, \
                    'originate_reason', 4, 'hangup_cause', 16, 'hangup_cause_txt', 'Normal Clearing') \
                END, \
                CASE WHEN g.r3 < 0.01 THEN 1 ELSE 0 END \
         FROM ( \
             SELECT i, now() - interval '7 days' + (i - 1 + random()) * (interval '7 days' / $1) \
                        AS ended_at, \
                    CASE WHEN r1 < 0.90 THEN 'dial' WHEN r1 < 0.95 THEN 'legacy_message' \
                         WHEN r1 < 0.99 THEN 'noop' ELSE 'roster_import' END AS kind, \
                    (CASE WHEN r2 < 0.55 THEN 'finished' WHEN r2 < 0.80 THEN 'finished_with_error' \
                          WHEN r2 < 0.98 THEN 'timedout' ELSE 'cancelled' END)::dialout_status AS status, \
                    CASE WHEN r3 < 0.85 THEN 1 WHEN r3 < 0.95 THEN 2 WHEN r3 < 0.98 THEN 3 \
                         WHEN r3 < 0.99 THEN 4 ELSE 5 END AS attempts, \
                    floor(r4 * 5) AS wait, floor(r4 * 90) AS run, r3 \
             FROM (SELECT i, random() AS r1, random() AS r2, random() AS r3, random() AS r4 \
                   FROM generate_series(1, $1::bigint) AS i) AS x \
         ) AS g \
         ORDER BY g.i",
    )
    .bind(jobs)
    .execute(&mut *tx)
    .await?;
    // About 20,000 due, 5,000 scheduled and 500 running for a week of 780,000 jobs.
    sqlx::query(
        "INSERT INTO dialout_queue (kind, payload, status, attempts, run_at, created_at, \
             started_at, lease_token, lease_expires_at, worker_id) \
         SELECT 'dial', jsonb_build_object('number', '+5491155550100'), b.status, b.attempts, \
                b.run_at, now() - interval '10 minutes', b.started_at, b.token, \
                CASE WHEN b.token IS NOT NULL THEN now() + interval '30 seconds' END, \
                CASE WHEN b.token IS NOT NULL THEN 'replica-0' END \
         FROM ( \
             SELECT 'queued'::dialout_status AS status, 0 AS attempts, \
                    now() - random() * interval '10 minutes' AS run_at, \
                    NULL::timestamptz AS started_at, NULL::uuid AS token \
             FROM generate_series(1, $1 / 40) \
             UNION ALL \
             SELECT 'queued', i % 2, now() + random() * interval '2 hours', NULL, NULL \
             FROM generate_series(1, $1 / 160) AS i \
             UNION ALL \
             SELECT CASE WHEN i % 2 = 0 THEN 'trying' ELSE 'established' END::dialout_status, 1, \
                    now() - interval '1 minute', now() - interval '30 seconds', gen_random_uuid() \
             FROM generate_series(1, greatest($1 / 1600, 1)) AS i \
         ) AS b",
    )
    .bind(jobs)
    .execute(&mut *tx)
    .await?;
    sqlx::query("ALTER TABLE dialout_queue ENABLE TRIGGER dialout_queue_check")
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// What one index costs the CDR insert path: 100,000 generated CDRs inserted into an
/// empty copy of dialout_cdr with its indexes (0008's four), without the calldate index,
/// and with an (accountcode, calldate) index added; the variants alternate, `runs`
/// times each, and the medians are printed per row.
async fn index_costs(pool: &PgPool, runs: usize) -> Result<(), sqlx::Error> {
    const ROWS: i64 = 100_000;
    sqlx::query("CREATE TABLE bench_cdr_probe (LIKE dialout_cdr INCLUDING ALL)")
        .execute(pool)
        .await?;
    let calldate: String = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes \
         WHERE tablename = 'bench_cdr_probe' AND indexdef LIKE '%(calldate)'",
    )
    .fetch_one(pool)
    .await?;
    let variants: [(&str, Vec<String>, Vec<String>); 3] = [
        (
            "as shipped: primary key, calldate, (job_id, attempt), uniqueid",
            vec![],
            vec![],
        ),
        (
            "without the calldate index",
            vec![format!("DROP INDEX {calldate}")],
            vec![format!(
                "CREATE INDEX {calldate} ON bench_cdr_probe (calldate)"
            )],
        ),
        (
            "with an (accountcode, calldate) index added",
            vec![
                "CREATE INDEX bench_cdr_probe_account ON bench_cdr_probe (accountcode, calldate)"
                    .into(),
            ],
            vec!["DROP INDEX bench_cdr_probe_account".into()],
        ),
    ];
    let insert = cdr_insert("bench_cdr_probe");
    let mut micros: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for _ in 0..runs {
        for (i, (_, before, after)) in variants.iter().enumerate() {
            for sql in before {
                sqlx::query(sql).execute(pool).await?;
            }
            sqlx::query("TRUNCATE bench_cdr_probe")
                .execute(pool)
                .await?;
            let started = Instant::now();
            sqlx::query(&insert)
                .bind(ROWS)
                .bind(1.0_f64)
                .execute(pool)
                .await?;
            micros[i].push(started.elapsed().as_secs_f64() * 1e6 / ROWS as f64);
            for sql in after {
                sqlx::query(sql).execute(pool).await?;
            }
        }
    }
    println!(
        "CDR insert cost, {ROWS} rows per INSERT ... SELECT into an empty copy, medians of {runs} alternating runs:"
    );
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let base = median(&mut micros[0]);
    for (i, (name, _, _)) in variants.iter().enumerate() {
        let m = median(&mut micros[i]);
        println!(
            "    {name}: {m:.2} us per row ({:+.2} us against as shipped)",
            m - base
        );
    }
    sqlx::query("DROP TABLE bench_cdr_probe")
        .execute(pool)
        .await?;
    Ok(())
}
