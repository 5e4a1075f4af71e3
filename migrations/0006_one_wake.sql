-- One way to wake idle workers: a NOTIFY per distinct kind, never one per row. The
-- insert trigger, a completion that hands jobs back and a worker giving back a lease
-- batch whose reply was lost all call this.
CREATE FUNCTION dialout_wake(kinds text[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('dialout_queue', d.kind)
    FROM (SELECT DISTINCT unnest(kinds) AS kind) AS d
    WHERE d.kind IS NOT NULL;
END
$$;

CREATE OR REPLACE FUNCTION dialout_notify_insert() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM dialout_wake(ARRAY(SELECT kind FROM new_rows WHERE status = 'queued'));
    RETURN NULL;
END
$$;
