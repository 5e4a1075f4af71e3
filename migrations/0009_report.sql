-- Reporting in SQL: what a call-centre analyst asks of the CDRs and the queue, as views
-- and functions named dialout_report_*, with plain column names that carry their unit
-- (asr_percent, acd_seconds, billed_minutes) and time buckets as timestamptz.
--
-- A window is half-open, [since, until): a call that starts exactly at `since` counts,
-- one that starts exactly at `until` belongs to the next window. A call belongs to the
-- window, hour or day in which it started (dialout_cdr.calldate); a job to the one in
-- which it ended (dialout_queue.ended_at).
--
-- Views or functions: a view that groups the CDRs by hour and is then filtered on the
-- hour aggregates every CDR first (10,000,000 of them: seconds), because the filter on
-- date_trunc('hour', calldate) cannot use the calldate index. The hourly and daily views
-- list their buckets first (generate_series) and aggregate each bucket on its own through
-- the calldate index, so `WHERE hour >= now() - interval '1 day'` drops the other
-- buckets before any CDR is read. A total over a window (summary, by account, by cause,
-- the queue's throughput, the jobs retried most) has no bucket to filter on: those are
-- functions that take the window, by default the last 24 hours.
--
-- Indexes: none added. The CDR reports read their window through dialout_cdr_calldate
-- (0008), which every CDR insert already pays for; the backlog reads the queue's partial
-- indexes; throughput and retried read the whole queue table, which retention keeps to
-- a week by default (an index on ended_at would cost every job's completion). The
-- README's "Reporting in SQL" has the measurements behind this.

-- The one place the call figures are defined: the calls that started in [since, until)
-- per account code ('' for none): how many, by disposition, ASR (answered / calls),
-- ACD (mean billsec of the answered calls; NULL when none was) and the answered calls'
-- billed time. Most calls first.
CREATE FUNCTION dialout_report_by_account(
    since timestamptz DEFAULT now() - interval '1 day',
    until timestamptz DEFAULT now())
RETURNS TABLE (
    account_code   text,
    calls          bigint,
    answered       bigint,
    busy           bigint,
    no_answer      bigint,
    congestion     bigint,
    failed         bigint,
    asr_percent    numeric,
    acd_seconds    numeric,
    billed_seconds bigint,
    billed_minutes numeric)
LANGUAGE sql STABLE AS $$
    SELECT c.accountcode,
           count(*),
           count(*) FILTER (WHERE c.disposition = 'ANSWERED'),
           count(*) FILTER (WHERE c.disposition = 'BUSY'),
           count(*) FILTER (WHERE c.disposition = 'NO ANSWER'),
           count(*) FILTER (WHERE c.disposition = 'CONGESTION'),
           count(*) FILTER (WHERE c.disposition = 'FAILED'),
           round(100.0 * count(*) FILTER (WHERE c.disposition = 'ANSWERED') / count(*), 1),
           round(avg(c.billsec) FILTER (WHERE c.disposition = 'ANSWERED'), 1),
           coalesce(sum(c.billsec) FILTER (WHERE c.disposition = 'ANSWERED'), 0),
           round(coalesce(sum(c.billsec) FILTER (WHERE c.disposition = 'ANSWERED'), 0) / 60.0, 1)
    FROM dialout_cdr AS c
    WHERE c.calldate >= since AND c.calldate < until
    GROUP BY c.accountcode
    ORDER BY count(*) DESC, c.accountcode
$$;

-- The same figures over the whole window: always one row (zeros for an empty window;
-- ASR and ACD NULL). Not inlined into its callers (the SET clause sees to that), so a
-- view that calls it per hour is planned as one call per hour: inlined, the planner,
-- which cannot know how few calls an hour holds, priced the hourly view at 10,000,000
-- CDRs high enough to compile it (JIT): 1.4 s of a 1.75 s run.
CREATE FUNCTION dialout_report_summary(
    since timestamptz DEFAULT now() - interval '1 day',
    until timestamptz DEFAULT now())
RETURNS TABLE (
    window_start   timestamptz,
    window_end     timestamptz,
    calls          bigint,
    answered       bigint,
    busy           bigint,
    no_answer      bigint,
    congestion     bigint,
    failed         bigint,
    asr_percent    numeric,
    acd_seconds    numeric,
    billed_seconds bigint,
    billed_minutes numeric)
LANGUAGE sql STABLE ROWS 1 SET jit = off AS $$
    SELECT since, until,
           coalesce(sum(a.calls), 0)::bigint,
           coalesce(sum(a.answered), 0)::bigint,
           coalesce(sum(a.busy), 0)::bigint,
           coalesce(sum(a.no_answer), 0)::bigint,
           coalesce(sum(a.congestion), 0)::bigint,
           coalesce(sum(a.failed), 0)::bigint,
           round(100.0 * sum(a.answered) / nullif(sum(a.calls), 0), 1),
           round(sum(a.billed_seconds) / nullif(sum(a.answered), 0), 1),
           coalesce(sum(a.billed_seconds), 0)::bigint,
           round(coalesce(sum(a.billed_seconds), 0) / 60.0, 1)
    FROM dialout_report_by_account(since, until) AS a
$$;

-- Calls per hour: one row per hour from the first CDR's to now (hours without calls
-- too, with zeros), the hour as a timestamptz (its start, in the session's TimeZone).
-- Filter on `hour`: the other hours are dropped before their calls are read.
CREATE VIEW dialout_report_hourly AS
SELECT h.hour, s.calls, s.answered, s.busy, s.no_answer, s.congestion, s.failed,
       s.asr_percent, s.acd_seconds, s.billed_seconds, s.billed_minutes
FROM generate_series(date_trunc('hour', (SELECT min(calldate) FROM dialout_cdr)),
                     greatest(now(), (SELECT max(calldate) FROM dialout_cdr)),
                     interval '1 hour') AS h(hour)
CROSS JOIN LATERAL dialout_report_summary(h.hour, h.hour + interval '1 hour') AS s;

-- Calls per day, the same way; a day starts at midnight in the session's TimeZone
-- (SET TimeZone = 'America/Argentina/Buenos_Aires' for that city's days).
CREATE VIEW dialout_report_daily AS
SELECT d.day, s.calls, s.answered, s.busy, s.no_answer, s.congestion, s.failed,
       s.asr_percent, s.acd_seconds, s.billed_seconds, s.billed_minutes
FROM generate_series(date_trunc('day', (SELECT min(calldate) FROM dialout_cdr)),
                     greatest(now(), (SELECT max(calldate) FROM dialout_cdr)),
                     interval '1 day') AS d(day)
CROSS JOIN LATERAL dialout_report_summary(d.day, d.day + interval '1 day') AS s;

-- Calls by hangup cause (Q.850; NULL when Asterisk refused the originate), most
-- frequent first, with each cause's share of the window's calls.
CREATE FUNCTION dialout_report_by_cause(
    since timestamptz DEFAULT now() - interval '1 day',
    until timestamptz DEFAULT now())
RETURNS TABLE (
    hangup_cause      integer,
    hangup_cause_text text,
    calls             bigint,
    percent_of_calls  numeric)
LANGUAGE sql STABLE AS $$
    SELECT c.hangup_cause, c.hangup_cause_txt, count(*),
           round(100.0 * count(*) / sum(count(*)) OVER (), 1)
    FROM dialout_cdr AS c
    WHERE c.calldate >= since AND c.calldate < until
    GROUP BY c.hangup_cause, c.hangup_cause_txt
    ORDER BY count(*) DESC, c.hangup_cause
$$;

-- The queue right now, per kind (every known kind, zeros included): jobs waiting and
-- due, waiting for a later run_at (scheduled or a retry's backoff), running, and how
-- long the oldest due job has waited. Reads only the queued and leased rows, through
-- the lease's and the rescuer's partial indexes, however many finished rows pile up.
CREATE VIEW dialout_report_backlog AS
SELECT k.name AS kind,
       coalesce(q.queued_ready, 0) AS queued_ready,
       coalesce(q.queued_scheduled, 0) AS queued_scheduled,
       coalesce(r.trying, 0) AS trying,
       coalesce(r.established, 0) AS established,
       q.oldest_ready_wait_seconds
FROM dialout_kind AS k
LEFT JOIN (
    SELECT j.kind,
           count(*) FILTER (WHERE j.run_at <= now()) AS queued_ready,
           count(*) FILTER (WHERE j.run_at > now()) AS queued_scheduled,
           round(extract(epoch FROM now() - min(j.run_at) FILTER (WHERE j.run_at <= now())), 1)
               AS oldest_ready_wait_seconds
    FROM dialout_queue AS j
    WHERE j.status = 'queued'
    GROUP BY j.kind) AS q ON q.kind = k.name
LEFT JOIN (
    SELECT j.kind,
           count(*) FILTER (WHERE j.status = 'trying') AS trying,
           count(*) FILTER (WHERE j.status = 'established') AS established
    FROM dialout_queue AS j
    WHERE j.lease_token IS NOT NULL AND j.status IN ('trying', 'established')
    GROUP BY j.kind) AS r ON r.kind = k.name
ORDER BY k.name;

-- Jobs that reached a final status in [since, until), per kind (every known kind):
-- how many, by status, per hour of the window, the mean wait from enqueue to the first
-- start (a run_at in the future counts as wait) and from the first start to the end,
-- and how many needed more than one attempt. Reads the whole queue table (no index
-- on ended_at: it would cost every completion; retention keeps the table to a week).
CREATE FUNCTION dialout_report_throughput(
    since timestamptz DEFAULT now() - interval '1 day',
    until timestamptz DEFAULT now())
RETURNS TABLE (
    kind                text,
    jobs_ended          bigint,
    finished            bigint,
    finished_with_error bigint,
    timedout            bigint,
    cancelled           bigint,
    jobs_per_hour       numeric,
    mean_wait_seconds   numeric,
    mean_run_seconds    numeric,
    retried_jobs        bigint)
LANGUAGE sql STABLE AS $$
    SELECT k.name,
           count(j.id),
           count(j.id) FILTER (WHERE j.status = 'finished'),
           count(j.id) FILTER (WHERE j.status = 'finished_with_error'),
           count(j.id) FILTER (WHERE j.status = 'timedout'),
           count(j.id) FILTER (WHERE j.status = 'cancelled'),
           round(count(j.id) / nullif(extract(epoch FROM until - since) / 3600, 0), 1),
           round(extract(epoch FROM avg(j.started_at - j.created_at)), 1),
           round(extract(epoch FROM avg(j.ended_at - j.started_at)), 1),
           count(j.id) FILTER (WHERE j.attempts > 1)
    FROM dialout_kind AS k
    LEFT JOIN dialout_queue AS j
           ON j.kind = k.name AND j.ended_at >= since AND j.ended_at < until
    GROUP BY k.name
    ORDER BY count(j.id) DESC, k.name
$$;

-- The jobs that ended in [since, until) after the most attempts (more than one), at
-- most max_jobs of them, with their dial calls (CDRs) and the last error.
CREATE FUNCTION dialout_report_retried(
    since timestamptz DEFAULT now() - interval '1 day',
    until timestamptz DEFAULT now(),
    max_jobs integer DEFAULT 20)
RETURNS TABLE (
    job_id       bigint,
    kind         text,
    status       dialout_status,
    attempts     integer,
    max_attempts integer,
    lost_leases  integer,
    calls        bigint,
    created_at   timestamptz,
    ended_at     timestamptz,
    last_error   text)
LANGUAGE sql STABLE AS $$
    SELECT j.id, j.kind, j.status, j.attempts, j.max_attempts, j.lost_leases,
           (SELECT count(*) FROM dialout_cdr AS c WHERE c.job_id = j.id),
           j.created_at, j.ended_at, j.last_error
    FROM dialout_queue AS j
    WHERE j.ended_at >= since AND j.ended_at < until AND j.attempts > 1
    ORDER BY j.attempts DESC, j.lost_leases DESC, j.ended_at DESC, j.id
    LIMIT max_jobs
$$;

COMMENT ON FUNCTION dialout_report_by_account(timestamptz, timestamptz) IS
    'Calls that started in [since, until) per account code: calls, answered, busy, no_answer, congestion, failed, asr_percent, acd_seconds, billed_seconds, billed_minutes.';
COMMENT ON FUNCTION dialout_report_summary(timestamptz, timestamptz) IS
    'Calls that started in [since, until): one row with calls, outcomes, asr_percent, acd_seconds, billed_seconds, billed_minutes.';
COMMENT ON VIEW dialout_report_hourly IS
    'Calls per hour (hour = its start): the summary''s figures; filter on hour.';
COMMENT ON VIEW dialout_report_daily IS
    'Calls per day (day = midnight in the session TimeZone): the summary''s figures; filter on day.';
COMMENT ON FUNCTION dialout_report_by_cause(timestamptz, timestamptz) IS
    'Calls that started in [since, until) per Q.850 hangup cause, with its share of the calls.';
COMMENT ON VIEW dialout_report_backlog IS
    'The queue now, per kind: queued_ready, queued_scheduled, trying, established, oldest_ready_wait_seconds.';
COMMENT ON FUNCTION dialout_report_throughput(timestamptz, timestamptz) IS
    'Jobs that ended in [since, until) per kind: by status, jobs_per_hour, mean wait and run seconds, retried_jobs.';
COMMENT ON FUNCTION dialout_report_retried(timestamptz, timestamptz, integer) IS
    'The jobs that ended in [since, until) after the most attempts, at most max_jobs.';
