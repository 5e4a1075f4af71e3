-- dial: originate a call through Asterisk, follow it to its end, keep its CDR.
INSERT INTO dialout_kind (name, description) VALUES
    ('dial', 'Calls "number" through Asterisk (AMI Originate), plays "message" when answered, follows the call to its end and writes one row to dialout_cdr per originate.');

-- Payload checks: the number and every string that reaches the AMI wire are checked
-- here, so a hostile value never leaves the INSERT.
CREATE FUNCTION dialout_validate_dial(p jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    bad text;
BEGIN
    SELECT string_agg(quote_ident(k), ', ') INTO bad
    FROM jsonb_object_keys(p) AS k
    WHERE k NOT IN ('number', 'message', 'caller_id_name', 'caller_id_number', 'ring_timeout_ms',
                    'max_call_ms', 'variables', 'context', 'exten', 'priority', 'account_code',
                    'redial_if_lost', 'retry');
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'dial job: unknown payload field(s) %', bad
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT string_agg(quote_ident(key), ', ') INTO bad FROM jsonb_each(p) WHERE jsonb_typeof(value) = 'null';
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'dial job: % must not be null (leave it out instead)', bad
            USING ERRCODE = 'check_violation';
    END IF;
    IF jsonb_typeof(p->'number') IS DISTINCT FROM 'string' OR p->>'number' !~ '^\+?[0-9*#]{1,31}$'
       OR length(p->>'number') > 32 THEN
        RAISE EXCEPTION 'dial job: "number" must be 1 to 32 characters: digits, * and #, with an optional leading +; got %', coalesce((p->'number')::text, 'nothing')
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'message' AND (jsonb_typeof(p->'message') <> 'string'
                          OR p->>'message' !~ '^[A-Za-z0-9_/-]{1,128}$' OR p->>'message' LIKE '%..%'
                          OR p->>'message' LIKE '/%') THEN
        RAISE EXCEPTION 'dial job: "message" must be an Asterisk sound name (letters, digits, _ - /, no leading /), got %', p->'message'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'caller_id_name' AND (jsonb_typeof(p->'caller_id_name') <> 'string'
                                 OR p->>'caller_id_name' !~ '^[^"<>[:cntrl:]]{1,64}$') THEN
        RAISE EXCEPTION 'dial job: "caller_id_name" must be 1 to 64 characters without quotes, < > or control characters, got %', p->'caller_id_name'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'caller_id_number' AND (jsonb_typeof(p->'caller_id_number') <> 'string'
                                   OR p->>'caller_id_number' !~ '^\+?[0-9*#]{1,31}$') THEN
        RAISE EXCEPTION 'dial job: "caller_id_number" must be digits, * and # with an optional leading +, got %', p->'caller_id_number'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'ring_timeout_ms' AND NOT coalesce(dialout_json_int_between(p->'ring_timeout_ms', 1000, 300000), false) THEN
        RAISE EXCEPTION 'dial job: "ring_timeout_ms" must be an integer from 1000 to 300000, got %', p->'ring_timeout_ms'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'max_call_ms' AND NOT coalesce(dialout_json_int_between(p->'max_call_ms', 1000, 86400000), false) THEN
        RAISE EXCEPTION 'dial job: "max_call_ms" must be an integer from 1000 to 86400000, got %', p->'max_call_ms'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'variables' THEN
        IF jsonb_typeof(p->'variables') <> 'object' THEN
            RAISE EXCEPTION 'dial job: "variables" must be an object of name: text, got %', jsonb_typeof(p->'variables')
                USING ERRCODE = 'check_violation';
        END IF;
        IF (SELECT count(*) FROM jsonb_object_keys(p->'variables')) > 20 THEN
            RAISE EXCEPTION 'dial job: at most 20 "variables"'
                USING ERRCODE = 'check_violation';
        END IF;
        SELECT string_agg(quote_literal(key), ', ') INTO bad FROM jsonb_each(p->'variables')
        WHERE key !~ '^[A-Za-z_][A-Za-z0-9_]{0,63}$' OR jsonb_typeof(value) <> 'string'
           OR value #>> '{}' ~ '[[:cntrl:]]' OR length(value #>> '{}') > 1024;
        IF bad IS NOT NULL THEN
            RAISE EXCEPTION 'dial job: "variables" % must be named [A-Za-z_][A-Za-z0-9_]* and hold text without control characters (at most 1024)', bad
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    IF (p ? 'context') <> (p ? 'exten') THEN
        RAISE EXCEPTION 'dial job: "context" and "exten" go together'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'context' AND (jsonb_typeof(p->'context') <> 'string' OR p->>'context' !~ '^[A-Za-z0-9_-]{1,79}$') THEN
        RAISE EXCEPTION 'dial job: "context" must be a dialplan context name (letters, digits, _ -), got %', p->'context'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'exten' AND (jsonb_typeof(p->'exten') <> 'string' OR p->>'exten' !~ '^[A-Za-z0-9_*#+-]{1,79}$') THEN
        RAISE EXCEPTION 'dial job: "exten" must be a dialplan extension (letters, digits, _ * # + -), got %', p->'exten'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'priority' AND NOT coalesce(dialout_json_int_between(p->'priority', 1, 1000), false) THEN
        RAISE EXCEPTION 'dial job: "priority" must be an integer from 1 to 1000, got %', p->'priority'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'redial_if_lost' AND jsonb_typeof(p->'redial_if_lost') <> 'boolean' THEN
        RAISE EXCEPTION 'dial job: "redial_if_lost" must be true or false, got %', p->'redial_if_lost'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'retry' THEN
        IF jsonb_typeof(p->'retry') <> 'object' THEN
            RAISE EXCEPTION 'dial job: "retry" must be an object of busy_ms, no_answer_ms, congestion_ms, rejected_ms, failed_ms, got %', jsonb_typeof(p->'retry')
                USING ERRCODE = 'check_violation';
        END IF;
        SELECT string_agg(quote_literal(key), ', ') INTO bad FROM jsonb_each(p->'retry')
        WHERE key NOT IN ('busy_ms', 'no_answer_ms', 'congestion_ms', 'rejected_ms', 'failed_ms')
           OR NOT coalesce(dialout_json_int_between(value, 0, 86400000), false);
        IF bad IS NOT NULL THEN
            RAISE EXCEPTION 'dial job: "retry" % must be busy_ms, no_answer_ms, congestion_ms, rejected_ms or failed_ms, each an integer from 0 to 86400000', bad
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    IF p ? 'account_code' AND (jsonb_typeof(p->'account_code') <> 'string' OR p->>'account_code' !~ '^[A-Za-z0-9_.-]{1,80}$') THEN
        RAISE EXCEPTION 'dial job: "account_code" must be 1 to 80 letters, digits, _ . -, got %', p->'account_code'
            USING ERRCODE = 'check_violation';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION dialout_validate_payload(p_kind text, p_payload jsonb) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    CASE p_kind
        WHEN 'noop' THEN PERFORM dialout_validate_noop(p_payload);
        WHEN 'roster_import' THEN PERFORM dialout_validate_roster_import(p_payload);
        WHEN 'legacy_message' THEN PERFORM dialout_validate_legacy_message(p_payload);
        WHEN 'dial' THEN PERFORM dialout_validate_dial(p_payload);
        ELSE NULL;
    END CASE;
END
$$;

-- The call a dial job's attempt placed, written (fenced by the lease) before its
-- Originate goes out, so whoever picks the job up after a crash knows what to look for.
ALTER TABLE dialout_queue
    ADD COLUMN call_uniqueid text,
    ADD COLUMN call_started_at timestamptz,
    ADD COLUMN call_answered_at timestamptz;
-- Applications may not write the new columns at INSERT either.
CREATE OR REPLACE FUNCTION dialout_check_insert() RETURNS trigger
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
        -- A job that claimed a recovery, or a call, at INSERT could make a worker adopt
        -- (and hang up) a call that is not its own.
        IF NEW.needs_recovery OR NEW.call_uniqueid IS NOT NULL OR NEW.call_started_at IS NOT NULL
           OR NEW.call_answered_at IS NOT NULL THEN
            RAISE EXCEPTION 'needs_recovery and the call_* columns are written by workers; leave them out'
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    PERFORM dialout_validate_payload(NEW.kind, NEW.payload);
    RETURN NEW;
END
$$;

COMMENT ON COLUMN dialout_queue.call_uniqueid IS
    'dial: the tag (ChannelId, Uniqueid) of the call the latest attempt placed; see dialout_cdr.uniqueid';

-- One row per originate sent (a failed one too), written in the same transaction as
-- the job's final status. The first columns are Asterisk's own CDR columns, with the
-- meanings an Asterisk user knows; the rest tie the call to its job. Billing records:
-- retention never deletes them (no foreign key to dialout_queue, on purpose).
CREATE TABLE dialout_cdr (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- When the originate went out, was answered, ended (UTC timestamps).
    calldate         timestamptz NOT NULL,
    answer           timestamptz,
    "end"            timestamptz NOT NULL,
    -- CallerID as sent ("name" <number>), its number, and the number dialled.
    clid             text NOT NULL DEFAULT '',
    src              text NOT NULL DEFAULT '',
    dst              text NOT NULL,
    -- Where the answered call went: the dialplan context, or '' when it played the message.
    dcontext         text NOT NULL DEFAULT '',
    -- The originated channel (;1 of a Local channel) and the far leg, when known.
    channel          text NOT NULL DEFAULT '',
    dstchannel       text NOT NULL DEFAULT '',
    lastapp          text NOT NULL DEFAULT '',
    lastdata         text NOT NULL DEFAULT '',
    -- Whole seconds, truncated as Asterisk does: start to end, answer to end.
    duration         integer NOT NULL CHECK (duration >= 0),
    billsec          integer NOT NULL CHECK (billsec >= 0),
    disposition      text NOT NULL
        CHECK (disposition IN ('ANSWERED', 'NO ANSWER', 'BUSY', 'CONGESTION', 'FAILED')),
    amaflags         text NOT NULL DEFAULT 'DOCUMENTATION',
    accountcode      text NOT NULL DEFAULT '',
    -- The originated channel's Uniqueid (our ChannelId) and Linkedid.
    uniqueid         text NOT NULL,
    linkedid         text NOT NULL DEFAULT '',
    userfield        text NOT NULL DEFAULT '',
    job_id           bigint NOT NULL,
    attempt          integer NOT NULL,
    -- Q.850 cause of the far leg when it reported one, else of the originated leg.
    hangup_cause     integer,
    hangup_cause_txt text,
    -- OriginateResponse Reason: 4 answered, 5 busy, 8 congestion, 3 no answer, 0 other.
    originate_reason integer,
    worker_id        text NOT NULL,
    CONSTRAINT dialout_cdr_billsec_within_duration CHECK (billsec <= duration),
    CONSTRAINT dialout_cdr_answered_has_answer CHECK ((disposition = 'ANSWERED') = (answer IS NOT NULL))
);

COMMENT ON TABLE dialout_cdr IS
    'One row per dial attempt that sent an Originate, written with the job''s final status. Asterisk CDR columns plus job_id, attempt, hangup_cause, hangup_cause_txt, originate_reason, worker_id.';

CREATE INDEX dialout_cdr_calldate ON dialout_cdr (calldate);
CREATE INDEX dialout_cdr_job ON dialout_cdr (job_id, attempt);
-- One CDR per attempt's call: a completion retried after a lost reply writes it once.
CREATE UNIQUE INDEX dialout_cdr_one_per_call ON dialout_cdr (uniqueid);
