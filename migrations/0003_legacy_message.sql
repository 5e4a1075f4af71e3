-- legacy_message: one TCP request/reply to a legacy host.
INSERT INTO dialout_kind (name, description) VALUES
    ('legacy_message', 'Sends "message" (or "message_base64") over TCP to "host":"port" and keeps the reply in result.reply_base64 / result.reply_text.');

-- true when v is a JSON integer (no fraction, exponent or sign) in [lo, hi].
CREATE FUNCTION dialout_json_int_between(v jsonb, lo bigint, hi bigint) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_typeof(v) = 'number'
       AND v::text ~ '^[0-9]{1,12}$'
       AND v::text::bigint BETWEEN lo AND hi
$$;

CREATE FUNCTION dialout_validate_legacy_message(p jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    bad text;
    framings text;
    base64 constant text := '^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$';
BEGIN
    SELECT string_agg(quote_ident(k), ', ') INTO bad
    FROM jsonb_object_keys(p) AS k
    WHERE k NOT IN ('host', 'port', 'message', 'message_base64', 'until_close', 'delimiter',
                    'delimiter_base64', 'length_prefix', 'max_bytes', 'expect_reply',
                    'connect_timeout_ms', 'write_timeout_ms', 'reply_timeout_ms');
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'legacy_message job: unknown payload field(s) %', bad
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT string_agg(quote_ident(key), ', ') INTO bad FROM jsonb_each(p) WHERE jsonb_typeof(value) = 'null';
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'legacy_message job: % must not be null (leave it out instead)', bad
            USING ERRCODE = 'check_violation';
    END IF;
    IF jsonb_typeof(p->'host') IS DISTINCT FROM 'string' OR p->>'host' !~ '^[A-Za-z0-9._:-]{1,253}$' THEN
        RAISE EXCEPTION 'legacy_message job: "host" must be a host name or IP address, got %', coalesce((p->'host')::text, 'nothing')
            USING ERRCODE = 'check_violation';
    END IF;
    IF NOT coalesce(dialout_json_int_between(p->'port', 1, 65535), false) THEN
        RAISE EXCEPTION 'legacy_message job: "port" must be an integer from 1 to 65535, got %', coalesce((p->'port')::text, 'nothing')
            USING ERRCODE = 'check_violation';
    END IF;
    IF (p ? 'message') = (p ? 'message_base64') THEN
        RAISE EXCEPTION 'legacy_message job: the payload needs exactly one of "message" (text) or "message_base64" (bytes)'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'message' AND jsonb_typeof(p->'message') <> 'string' THEN
        RAISE EXCEPTION 'legacy_message job: "message" must be text, got %', jsonb_typeof(p->'message')
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'message_base64' AND (jsonb_typeof(p->'message_base64') <> 'string' OR p->>'message_base64' !~ base64) THEN
        RAISE EXCEPTION 'legacy_message job: "message_base64" must be standard base64 with padding'
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT string_agg(k, ', ') INTO framings FROM jsonb_object_keys(p) AS k
    WHERE k IN ('until_close', 'delimiter', 'delimiter_base64', 'length_prefix', 'max_bytes');
    IF framings LIKE '%,%' THEN
        RAISE EXCEPTION 'legacy_message job: give at most one way the reply ends, got %', framings
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'until_close' AND p->'until_close' <> 'true' THEN
        RAISE EXCEPTION 'legacy_message job: "until_close" can only be true'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'delimiter' AND (jsonb_typeof(p->'delimiter') <> 'string'
                            OR octet_length(p->>'delimiter') NOT BETWEEN 1 AND 64) THEN
        RAISE EXCEPTION 'legacy_message job: "delimiter" must be text of 1 to 64 bytes'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'delimiter_base64' AND (jsonb_typeof(p->'delimiter_base64') <> 'string'
                                   OR p->>'delimiter_base64' !~ base64 OR p->>'delimiter_base64' = '') THEN
        RAISE EXCEPTION 'legacy_message job: "delimiter_base64" must be standard base64 of 1 to 64 bytes'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'length_prefix' AND NOT (p->'length_prefix' IN ('1', '2', '4')) THEN
        RAISE EXCEPTION 'legacy_message job: "length_prefix" must be 1, 2 or 4 (bytes, big endian), got %', p->'length_prefix'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'max_bytes' AND NOT dialout_json_int_between(p->'max_bytes', 1, 16777216) THEN
        RAISE EXCEPTION 'legacy_message job: "max_bytes" must be an integer from 1 to 16777216, got %', p->'max_bytes'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'expect_reply' AND jsonb_typeof(p->'expect_reply') <> 'boolean' THEN
        RAISE EXCEPTION 'legacy_message job: "expect_reply" must be true or false'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p->'expect_reply' = 'false' AND (framings IS NOT NULL OR p ? 'reply_timeout_ms') THEN
        RAISE EXCEPTION 'legacy_message job: with "expect_reply": false there is no reply, so no framing and no "reply_timeout_ms"'
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT string_agg(k, ', ') INTO bad FROM jsonb_object_keys(p) AS k
    WHERE k LIKE '%\_timeout\_ms' AND NOT dialout_json_int_between(p->k, 1, 600000);
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION 'legacy_message job: % must be an integer number of milliseconds from 1 to 600000', bad
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
        ELSE NULL;
    END CASE;
END
$$;
