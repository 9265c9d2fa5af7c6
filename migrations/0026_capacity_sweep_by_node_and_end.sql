-- A set of series (a term) is now written a chunk of occurrences at a time,
-- in time order, while the next chunk is planned (decision 117). Each
-- chunk's capacity check must read only the reservations of the nodes and
-- the days it touches, not every row written by the chunks before it.
--
-- * The node index also carries each row's end, and the sweep asks only
--   for rows that end after its span begins (the `&&` still decides
--   overlap; the new condition only lets the index skip what has ended).
-- * The sweep never plans a sequential scan of reservations: inside a
--   term's transaction the table's statistics still describe it as it was
--   before (empty, on a new region), so the planner chose to read the whole
--   table for every chunk.
-- * A reservation's seat is found through its owner (a lesson has a few
--   dozen rows), so the seat index goes: one index entry less for each of
--   a term's 486,000 rows.
--
-- Everything else in the check is as in migration 0025.
DROP INDEX IF EXISTS reservations_node;
CREATE INDEX IF NOT EXISTS reservations_node_end
    ON reservations (node_id, (COALESCE(upper(during), 'infinity'::timestamptz)));
DROP INDEX IF EXISTS reservations_seat;

CREATE OR REPLACE FUNCTION reservations_check_capacity() RETURNS trigger
LANGUAGE plpgsql
SET work_mem = '64MB'
SET enable_seqscan = off
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

    WITH g AS MATERIALIZED (
        SELECT r.node_id, r.device_idx, r.during,
               sum(r.cpu_millis) AS c, sum(r.memory_mib) AS m,
               sum(r.gpu_memory_mib) AS gm, sum(r.gpu_compute_pct) AS gp, count(*) AS k,
               max((nr.id IS NOT NULL)::int) AS dn
          FROM reservations r LEFT JOIN new_rows nr ON nr.id = r.id
         WHERE r.node_id = ANY(ids)
           AND COALESCE(upper(r.during), 'infinity'::timestamptz) > lower(span)
           AND r.during && span
         GROUP BY r.node_id, r.device_idx, r.during
    ), ev AS (
        SELECT g.node_id, g.device_idx, v.t, v.dc, v.dm, v.dgm, v.dgp, v.dk, v.dn
          FROM g, LATERAL (VALUES (COALESCE(lower(g.during), '-infinity'), g.c, g.m, g.gm, g.gp, g.k, g.dn),
                                  (COALESCE(upper(g.during), 'infinity'), -g.c, -g.m, -g.gm, -g.gp, -g.k, -g.dn))
                         v(t, dc, dm, dgm, dgp, dk, dn)
    )
    SELECT e.node_id, e.device_idx, e.t, e.cpu, e.mem, e.gmem, e.pct, e.k,
           n.cpu_millis AS cap_cpu, n.memory_mib AS cap_mem,
           d.memory_mib AS cap_gmem, d.max_slices AS cap_k, d.node_id IS NOT NULL AS has_device,
           (e.inside_n > 0 AND (e.cpu > n.cpu_millis OR e.mem > n.memory_mib)) AS node_over
      INTO bad
      FROM (SELECT ev.node_id, ev.device_idx, ev.t,
                   sum(ev.dc) OVER wn AS cpu, sum(ev.dm) OVER wn AS mem, sum(ev.dn) OVER wn AS inside_n,
                   sum(ev.dgm) OVER wd AS gmem, sum(ev.dgp) OVER wd AS pct, sum(ev.dk) OVER wd AS k,
                   sum(ev.dn) OVER wd AS inside_d
              FROM ev
            WINDOW wn AS (PARTITION BY ev.node_id ORDER BY ev.t RANGE UNBOUNDED PRECEDING),
                   wd AS (PARTITION BY ev.node_id, ev.device_idx ORDER BY ev.t RANGE UNBOUNDED PRECEDING)) e
      JOIN nodes n ON n.id = e.node_id
      -- A new row on a device the node does not have is covered by its
      -- own window, so it is found here too.
      LEFT JOIN devices d ON d.node_id = e.node_id AND d.idx = e.device_idx
     WHERE (e.inside_n > 0 AND (e.cpu > n.cpu_millis OR e.mem > n.memory_mib))
        OR (e.device_idx IS NOT NULL AND e.inside_d > 0
            AND (d.node_id IS NULL OR e.gmem > d.memory_mib OR e.pct > 100 OR e.k > d.max_slices))
     ORDER BY 14 DESC
     LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF bad.node_over THEN
        IF bad.cpu > bad.cap_cpu THEN
            RAISE EXCEPTION 'node % cpu over-committed at %: % > % millis', bad.node_id, bad.t, bad.cpu, bad.cap_cpu
                USING ERRCODE = 'CG001';
        END IF;
        RAISE EXCEPTION 'node % memory over-committed at %: % > % MiB', bad.node_id, bad.t, bad.mem, bad.cap_mem
            USING ERRCODE = 'CG001';
    ELSIF NOT bad.has_device THEN
        RAISE EXCEPTION 'device %/% does not exist', bad.node_id, bad.device_idx USING ERRCODE = 'CG001';
    ELSIF bad.gmem > bad.cap_gmem THEN
        RAISE EXCEPTION 'device %/% memory over-committed at %: % > % MiB', bad.node_id, bad.device_idx, bad.t, bad.gmem, bad.cap_gmem
            USING ERRCODE = 'CG001';
    ELSIF bad.pct > 100 THEN
        RAISE EXCEPTION 'device %/% compute over-committed at %: % > 100 %%', bad.node_id, bad.device_idx, bad.t, bad.pct
            USING ERRCODE = 'CG001';
    END IF;
    RAISE EXCEPTION 'device %/% slice count over-committed at %: % > %', bad.node_id, bad.device_idx, bad.t, bad.k, bad.cap_k
        USING ERRCODE = 'CG001';
END;
$$;
