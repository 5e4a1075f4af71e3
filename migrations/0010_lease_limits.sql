-- Limits that hold across every replica (dial.max_live_calls, dial.calls_per_second).
--
-- A replica leasing a kind that has such limits first locks that kind's row here, so
-- the leasers of one kind take turns: each counts the kind's jobs under lease (the
-- calls up, for dial) after the previous one committed, and hands out start times from
-- `next_start` on, one every 1/rate seconds. Kinds without limits never touch it.
-- Workers own this table; applications only read it.
CREATE TABLE dialout_lease_pacing (
    kind       text PRIMARY KEY,
    -- The earliest time the next leased job of this kind may start.
    next_start timestamptz NOT NULL DEFAULT '-infinity'
);

COMMENT ON TABLE dialout_lease_pacing IS
    'Workers only: the turn-taking lock and start pacing of kinds limited across replicas (dial.max_live_calls, dial.calls_per_second).';

-- Jobs waiting for a recovery attempt count as running for a limited kind (their call
-- may still be up) and are leased first: this index finds them among the ready rows
-- without reading the others. Rows enter it only while they wait for recovery.
CREATE INDEX dialout_queue_recovering ON dialout_queue (kind)
    WHERE status = 'queued' AND needs_recovery;
