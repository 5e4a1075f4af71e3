-- The dialout queue: the table applications write to with plain SQL.
--
-- Enqueue:  INSERT INTO dialout_queue (kind, payload) VALUES ('noop', '{}');
-- Cancel:   UPDATE dialout_queue SET status = 'cancelled' WHERE id = 42;
-- Everything else in a row is written by the workers.

-- The call statuses the whole product speaks.
--   queued               waiting for run_at; leased by a worker -> trying
--   trying               a worker holds the lease and runs it -> established or a final status,
--                        or back to queued (retry with backoff, shutdown hand-back, lost worker)
--   established          the work is under way at the far end (a dial: the callee answered)
--   finished             done; result holds what came of it
--   finished_with_error  gave up; last_error says why
--   timedout             a bounded wait ran out; last_error says which
--   cancelled            an application cancelled it
CREATE TYPE dialout_status AS ENUM (
    'queued', 'trying', 'established', 'finished', 'finished_with_error', 'timedout', 'cancelled'
);

-- The job kinds workers know. A row here is what makes `kind` valid at INSERT time.
CREATE TABLE dialout_kind (
    name        text PRIMARY KEY,
    description text NOT NULL
);

INSERT INTO dialout_kind (name, description) VALUES
    ('noop', 'Does nothing and finishes: smoke tests, benchmarks and the demo.');

CREATE TABLE dialout_queue (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text NOT NULL,
    payload          jsonb NOT NULL DEFAULT '{}',
    status           dialout_status NOT NULL DEFAULT 'queued',
    -- Higher runs first; ties go by run_at, then id.
    priority         integer NOT NULL DEFAULT 0,
    -- Not before this time (scheduling and retry backoff).
    run_at           timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL DEFAULT 5,
    -- INSERT ... ON CONFLICT (dedup_key) DO NOTHING makes enqueueing idempotent.
    dedup_key        text UNIQUE,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- When the first attempt started, and when the job reached a final status.
    started_at       timestamptz,
    ended_at         timestamptz,
    -- The worker that holds the job (or last held it).
    worker_id        text,
    -- The lease: a fresh token per attempt, extended by heartbeats. Completion is
    -- fenced on the token, so a worker that lost its lease cannot write.
    lease_token      uuid,
    lease_expires_at timestamptz,
    last_error       text,
    result           jsonb,
    -- Attempts that ended because their worker vanished (lease expired).
    lost_leases      integer NOT NULL DEFAULT 0,
    -- Set when a lost attempt is handed to the next one: the job kind must find out
    -- what the lost attempt did before doing anything again (a dial reconciles).
    needs_recovery   boolean NOT NULL DEFAULT false,

    CONSTRAINT dialout_queue_max_attempts_range CHECK (max_attempts BETWEEN 1 AND 1000),
    CONSTRAINT dialout_queue_attempts_not_negative CHECK (attempts >= 0),
    CONSTRAINT dialout_queue_running_has_lease CHECK (
        status NOT IN ('trying', 'established')
        OR (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CONSTRAINT dialout_queue_queued_has_no_lease CHECK (
        status <> 'queued' OR lease_token IS NULL),
    CONSTRAINT dialout_queue_final_has_ended_at CHECK (
        (status IN ('finished', 'finished_with_error', 'timedout', 'cancelled')) = (ended_at IS NOT NULL))
);

COMMENT ON TABLE dialout_queue IS
    'dialout jobs. Applications INSERT (kind, payload [, run_at, priority, max_attempts, dedup_key]) and may UPDATE status to cancelled; workers write the rest.';

-- The lease query's index, shaped exactly like it. Partial, so finished rows never
-- weigh on leasing however many pile up.
CREATE INDEX dialout_queue_ready ON dialout_queue (kind, priority DESC, run_at, id)
    WHERE status = 'queued';

-- The rescuer's index: the rows under lease (as many as jobs in flight). Keyed on id,
-- not on lease_expires_at, so a heartbeat changes no indexed column.
CREATE INDEX dialout_queue_leased ON dialout_queue (id)
    WHERE lease_token IS NOT NULL;

-- Retention prunes by end time. BRIN: rows end roughly in the order they are written,
-- and a BRIN index costs next to nothing on the completion path.
CREATE INDEX dialout_queue_ended ON dialout_queue USING brin (ended_at);

-- A queue table churns: vacuum it early and without throttling so dead rows do not
-- pile up in the hot index.
ALTER TABLE dialout_queue SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);

-- Payload checks for one kind. Each kind's migration replaces this dispatcher to add
-- its own validator; the messages are what an application sees when its INSERT fails.
CREATE FUNCTION dialout_validate_payload(p_kind text, p_payload jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_kind = 'noop' THEN
        PERFORM dialout_validate_noop(p_payload);
    END IF;
END
$$;

CREATE FUNCTION dialout_validate_noop(p jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p ? 'sleep_ms' AND (jsonb_typeof(p->'sleep_ms') <> 'number'
                           OR (p->>'sleep_ms')::numeric NOT BETWEEN 0 AND 3600000) THEN
        RAISE EXCEPTION 'noop job: "sleep_ms" must be a number of milliseconds from 0 to 3600000, got %', p->'sleep_ms'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'fail' AND jsonb_typeof(p->'fail') <> 'string' THEN
        RAISE EXCEPTION 'noop job: "fail" must be a text (the error to fail with), got %', p->'fail'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'effect' AND jsonb_typeof(p->'effect') <> 'boolean' THEN
        RAISE EXCEPTION 'noop job: "effect" must be true or false, got %', p->'effect'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'retryable' AND jsonb_typeof(p->'retryable') <> 'boolean' THEN
        RAISE EXCEPTION 'noop job: "retryable" must be true or false, got %', p->'retryable'
            USING ERRCODE = 'check_violation';
    END IF;
END
$$;

-- Refuses bad input at INSERT time, so every client gets the same check.
CREATE FUNCTION dialout_check_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    known text;
BEGIN
    IF NEW.kind IS NULL OR NOT EXISTS (SELECT 1 FROM dialout_kind WHERE name = NEW.kind) THEN
        SELECT string_agg(name, ', ' ORDER BY name) INTO known FROM dialout_kind;
        RAISE EXCEPTION 'unknown job kind %; known kinds: %', coalesce(quote_literal(NEW.kind), 'NULL'), known
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.payload IS NULL OR jsonb_typeof(NEW.payload) <> 'object' THEN
        RAISE EXCEPTION '% job: payload must be a JSON object, got %', NEW.kind,
            coalesce(jsonb_typeof(NEW.payload), 'NULL')
            USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'queued' THEN
            RAISE EXCEPTION 'new jobs must be queued (leave status out), got %', NEW.status
                USING ERRCODE = 'check_violation';
        END IF;
        IF NEW.attempts <> 0 OR NEW.lease_token IS NOT NULL OR NEW.worker_id IS NOT NULL THEN
            RAISE EXCEPTION 'attempts, lease_token and worker_id are written by workers; leave them out'
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    PERFORM dialout_validate_payload(NEW.kind, NEW.payload);
    RETURN NEW;
END
$$;

CREATE TRIGGER dialout_queue_check
    BEFORE INSERT OR UPDATE OF kind, payload ON dialout_queue
    FOR EACH ROW EXECUTE FUNCTION dialout_check_insert();

-- Wakes idle workers: one NOTIFY per statement and kind, never one per row.
CREATE FUNCTION dialout_notify_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('dialout_queue', k.kind)
    FROM (SELECT DISTINCT kind FROM new_rows WHERE status = 'queued') AS k;
    RETURN NULL;
END
$$;

CREATE TRIGGER dialout_queue_notify
    AFTER INSERT ON dialout_queue
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION dialout_notify_insert();

-- Cancellation is one UPDATE. Queued jobs never start; the worker running one hears of
-- it through NOTIFY. A job that already ended cannot be cancelled.
CREATE FUNCTION dialout_on_cancel() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status NOT IN ('queued', 'trying', 'established') THEN
        RAISE EXCEPTION 'job % already ended as %; only queued, trying or established jobs can be cancelled',
            OLD.id, OLD.status
            USING ERRCODE = 'check_violation';
    END IF;
    NEW.ended_at := now();
    IF OLD.status = 'queued' THEN
        NEW.lease_token := NULL;
        NEW.lease_expires_at := NULL;
    ELSE
        PERFORM pg_notify('dialout_cancel', NEW.id::text);
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER dialout_queue_cancel
    BEFORE UPDATE OF status ON dialout_queue
    FOR EACH ROW
    WHEN (NEW.status = 'cancelled' AND OLD.status IS DISTINCT FROM 'cancelled')
    EXECUTE FUNCTION dialout_on_cancel();

-- The noop kind's side-effect log: a noop job with {"effect": true} writes one row
-- here before it completes, so tests can count effects, not just statuses.
CREATE TABLE dialout_noop_effect (
    job_id    bigint NOT NULL,
    attempt   integer NOT NULL,
    worker_id text NOT NULL,
    at        timestamptz NOT NULL DEFAULT now()
);
