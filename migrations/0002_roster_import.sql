-- roster_import: a roster of people into Moodle's "upload users" CSV.
INSERT INTO dialout_kind (name, description) VALUES
    ('roster_import', 'Turns a roster (inline "roster" text or a "path") into Moodle''s upload-users CSV, stored in result.csv with a report in result.report.');

CREATE FUNCTION dialout_validate_roster_import(p jsonb) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    unknown text;
BEGIN
    SELECT string_agg(quote_ident(k), ', ') INTO unknown
    FROM jsonb_object_keys(p) AS k
    WHERE k NOT IN ('roster', 'path', 'format', 'email_domain', 'existing_usernames');
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'roster_import job: unknown payload field(s) %; known: roster, path, format, email_domain, existing_usernames', unknown
            USING ERRCODE = 'check_violation';
    END IF;
    IF (p ? 'roster') = (p ? 'path') THEN
        RAISE EXCEPTION 'roster_import job: the payload needs exactly one of "roster" (the roster as text) or "path" (a file the worker can read)'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'roster' AND jsonb_typeof(p->'roster') <> 'string' THEN
        RAISE EXCEPTION 'roster_import job: "roster" must be text, got %', jsonb_typeof(p->'roster')
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'path' AND (jsonb_typeof(p->'path') <> 'string' OR p->>'path' = '') THEN
        RAISE EXCEPTION 'roster_import job: "path" must be a non-empty text, got %', p->'path'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'format' AND (jsonb_typeof(p->'format') <> 'string'
                         OR p->>'format' NOT IN ('auto', 'seed', 'csv', 'tsv')) THEN
        RAISE EXCEPTION 'roster_import job: "format" must be one of auto, seed, csv, tsv, got %', p->'format'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'email_domain' AND (jsonb_typeof(p->'email_domain') <> 'string'
                               OR p->>'email_domain' !~ '^@?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$') THEN
        RAISE EXCEPTION 'roster_import job: "email_domain" must be a domain name such as school.example, got %', p->'email_domain'
            USING ERRCODE = 'check_violation';
    END IF;
    IF p ? 'existing_usernames' AND (jsonb_typeof(p->'existing_usernames') <> 'array'
            OR EXISTS (SELECT 1 FROM jsonb_array_elements(p->'existing_usernames') AS e
                       WHERE jsonb_typeof(e) <> 'string')) THEN
        RAISE EXCEPTION 'roster_import job: "existing_usernames" must be an array of texts'
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
        ELSE NULL;
    END CASE;
END
$$;
