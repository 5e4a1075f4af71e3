-- Cheaper row updates. Each job's lease and completion write a new version of its row,
-- and every index of the table gets an entry for it. Measured with callgrind on the
-- lease and completion statements (10,000 jobs, one client): 181,800 -> 163,900
-- PostgreSQL instructions per job.

-- A new version's primary-key entry lands beside the old one. On a full leaf page
-- PostgreSQL first tries a bottom-up deletion pass, which visits the heap; leaving half
-- of each leaf free makes room for the versions a job adds. (It applies to pages split
-- from now on; `REINDEX INDEX CONCURRENTLY dialout_queue_pkey` applies it to the rest.)
ALTER INDEX dialout_queue_pkey SET (fillfactor = 50);

-- Retention walked a BRIN index on ended_at, which every update had to maintain; it now
-- walks the primary key (see prune_finished_in_chunks in src/queue/maintenance.rs).
DROP INDEX dialout_queue_ended;
