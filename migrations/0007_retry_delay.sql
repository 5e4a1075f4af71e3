-- A job's retry waits are timed by the database clock, like leases and rescue, so
-- replicas whose clocks disagree still agree on when a job is due. One definition,
-- used by the rescue of lost attempts and by a worker recording a retry.
--
-- The wait before attempt `attempt + 1`: base * 2^(attempt-1), capped at max_ms, the
-- upper half jittered so jobs that failed together do not all come back together.
CREATE FUNCTION dialout_retry_delay(attempt integer, base_ms float8, max_ms float8)
RETURNS interval
LANGUAGE sql VOLATILE AS $$
    SELECT least(max_ms, base_ms * 2 ^ least(greatest(attempt - 1, 0), 30))
           * (0.5 + random() / 2) * interval '1 millisecond'
$$;
