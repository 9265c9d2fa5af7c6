-- The capacity check looped once per distinct (node, window) and (device,
-- window) of the statement, each time reading every reservation of the node
-- through its index. A class of 45 seats is a dozen such loops, but a term
-- booked in one statement (10,800 lessons, 486,000 rows) was 260,000 loops
-- over some 250 rows each: 100 of the 130 s its commit took.
--
-- It is now one sweep per statement. Every reservation on the touched nodes
-- that overlaps the statement's span becomes two events (+ at its start, -
-- at its end); a row of this statement (found in the transition table by
-- id) also counts, in the same events, how many new windows cover an
-- instant. A running sum per node (per device) ordered by
-- time gives the load at every event; the load can only rise at a start,
-- and every instant of a new window has an event at or before it inside the
-- window (its own start), so checking the events that some new window
-- covers checks every instant of every new window, as before, and nothing
-- outside them (an over-commit elsewhere, left by a node that shrank, is
-- not this statement's to refuse). Same guarantees, same locks in the same
-- order, same errors.
--
-- The foreign key from reservations to nodes goes: its check was one
-- lookup and row lock per row (1.4 of those seconds), and the trigger
-- already locks every node the statement touches, so it now refuses a row
-- for a node that does not exist (CG001, like any capacity refusal). No
-- code deletes nodes; a reservation's node is kept by the trigger alone.

ALTER TABLE reservations DROP CONSTRAINT IF EXISTS reservations_node_id_fkey;

CREATE OR REPLACE FUNCTION reservations_check_capacity() RETURNS trigger
LANGUAGE plpgsql
-- A term's sweep sorts a few million events: in memory, not on disk.
SET work_mem = '64MB'
AS $$
DECLARE
    ids     uuid[];
    span    tstzrange;
    bad     record;
    locked  bigint;
    missing uuid;
BEGIN
    SELECT array_agg(DISTINCT node_id ORDER BY node_id),
           tstzrange(min(COALESCE(lower(during), '-infinity')), max(COALESCE(upper(during), 'infinity')))
      INTO ids, span FROM new_rows;
    IF ids IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM nodes WHERE id = ANY(ids) ORDER BY id FOR NO KEY UPDATE;
    GET DIAGNOSTICS locked = ROW_COUNT;
    IF locked < cardinality(ids) THEN
        SELECT u INTO missing FROM unnest(ids) u WHERE NOT EXISTS (SELECT 1 FROM nodes WHERE id = u) LIMIT 1;
        RAISE EXCEPTION 'node % does not exist', missing USING ERRCODE = 'CG001';
    END IF;

    SELECT e.node_id, e.t, e.cpu, e.mem, n.cpu_millis AS cap_cpu, n.memory_mib AS cap_mem INTO bad
      FROM (SELECT ev.node_id, ev.t,
                   sum(ev.dc) OVER w AS cpu, sum(ev.dm) OVER w AS mem, sum(ev.dn) OVER w AS inside
              FROM (SELECT r.node_id, v.t, v.dc, v.dm, v.dn
                      FROM reservations r LEFT JOIN new_rows nr ON nr.id = r.id,
                           LATERAL (VALUES (COALESCE(lower(r.during), '-infinity'), r.cpu_millis, r.memory_mib,
                                            (nr.id IS NOT NULL)::int),
                                           (COALESCE(upper(r.during), 'infinity'), -r.cpu_millis, -r.memory_mib,
                                            -(nr.id IS NOT NULL)::int)) v(t, dc, dm, dn)
                     WHERE r.node_id = ANY(ids) AND r.during && span) ev
            WINDOW w AS (PARTITION BY ev.node_id ORDER BY ev.t RANGE UNBOUNDED PRECEDING)) e
      JOIN nodes n ON n.id = e.node_id
     WHERE e.inside > 0 AND (e.cpu > n.cpu_millis OR e.mem > n.memory_mib)
     LIMIT 1;
    IF FOUND THEN
        IF bad.cpu > bad.cap_cpu THEN
            RAISE EXCEPTION 'node % cpu over-committed at %: % > % millis', bad.node_id, bad.t, bad.cpu, bad.cap_cpu
                USING ERRCODE = 'CG001';
        END IF;
        RAISE EXCEPTION 'node % memory over-committed at %: % > % MiB', bad.node_id, bad.t, bad.mem, bad.cap_mem
            USING ERRCODE = 'CG001';
    END IF;

    SELECT e.node_id, e.device_idx, e.t, e.mem, e.pct, e.n, d.memory_mib AS cap_mem, d.max_slices AS cap_n INTO bad
      FROM (SELECT ev.node_id, ev.device_idx, ev.t,
                   sum(ev.dm) OVER w AS mem, sum(ev.dp) OVER w AS pct, sum(ev.dk) OVER w AS n,
                   sum(ev.dn) OVER w AS inside
              FROM (SELECT r.node_id, r.device_idx, v.t, v.dm, v.dp, v.dk, v.dn
                      FROM reservations r LEFT JOIN new_rows nr ON nr.id = r.id,
                           LATERAL (VALUES (COALESCE(lower(r.during), '-infinity'), r.gpu_memory_mib, r.gpu_compute_pct, 1,
                                            (nr.id IS NOT NULL)::int),
                                           (COALESCE(upper(r.during), 'infinity'), -r.gpu_memory_mib, -r.gpu_compute_pct, -1,
                                            -(nr.id IS NOT NULL)::int)) v(t, dm, dp, dk, dn)
                     WHERE r.node_id = ANY(ids) AND r.device_idx IS NOT NULL AND r.during && span) ev
            WINDOW w AS (PARTITION BY ev.node_id, ev.device_idx ORDER BY ev.t RANGE UNBOUNDED PRECEDING)) e
      -- A new row on a device the node does not have is covered by its
      -- own window, so it is found here too.
      LEFT JOIN devices d ON d.node_id = e.node_id AND d.idx = e.device_idx
     WHERE e.inside > 0 AND (d.node_id IS NULL OR e.mem > d.memory_mib OR e.pct > 100 OR e.n > d.max_slices)
     LIMIT 1;
    IF FOUND THEN
        IF bad.cap_mem IS NULL THEN
            RAISE EXCEPTION 'device %/% does not exist', bad.node_id, bad.device_idx USING ERRCODE = 'CG001';
        ELSIF bad.mem > bad.cap_mem THEN
            RAISE EXCEPTION 'device %/% memory over-committed at %: % > % MiB', bad.node_id, bad.device_idx, bad.t, bad.mem, bad.cap_mem
                USING ERRCODE = 'CG001';
        ELSIF bad.pct > 100 THEN
            RAISE EXCEPTION 'device %/% compute over-committed at %: % > 100 %%', bad.node_id, bad.device_idx, bad.t, bad.pct
                USING ERRCODE = 'CG001';
        END IF;
        RAISE EXCEPTION 'device %/% slice count over-committed at %: % > %', bad.node_id, bad.device_idx, bad.t, bad.n, bad.cap_n
            USING ERRCODE = 'CG001';
    END IF;
    RETURN NULL;
END;
$$;
