-- noop: `echo` asks for a result naming the worker and attempt (tests use it to see
-- whose write landed); without it a no-op writes no result, as a no-op should.
CREATE OR REPLACE FUNCTION dialout_validate_noop(p jsonb) RETURNS void
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
    IF p ? 'echo' AND jsonb_typeof(p->'echo') <> 'boolean' THEN
        RAISE EXCEPTION 'noop job: "echo" must be true or false, got %', p->'echo'
            USING ERRCODE = 'check_violation';
    END IF;
END
$$;
