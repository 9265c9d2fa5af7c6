-- The capacity check ran once per reservation row, four queries each: a
-- storm of 10,000 seats spent most of its booking time in it. A class is one
-- multi-row INSERT, so the check now runs once per statement, over the rows it
-- wrote (a transition table), once per node and window touched. What it
-- guarantees is the same: no node's CPU or memory and no device's memory,
-- compute or slice count is over-committed at any instant of any window.
--
-- It runs AFTER the statement, so the new rows are already visible to it.
-- Every touched node is locked first, in id order (two bookings on the same
-- nodes cannot deadlock); a concurrent statement on those nodes waits here
-- until this transaction ends, and its queries, each on a fresh snapshot
-- under READ COMMITTED, then see the rows this one committed.

DROP TRIGGER IF EXISTS reservations_enforce_capacity ON reservations;
DROP FUNCTION IF EXISTS reservations_enforce_capacity();

CREATE FUNCTION reservations_check_capacity() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    ids   uuid[];
    w     record;
    cap   record;
    peak  record;
BEGIN
    -- A transition table has no statistics, so joins against it get plans
    -- for hundreds of rows (hash joins over every reservation). The loops
    -- below run once per distinct node and window (a class of 45 seats is
    -- a handful), each with index lookups.
    SELECT array_agg(DISTINCT node_id ORDER BY node_id) INTO ids FROM new_rows;
    PERFORM 1 FROM nodes WHERE id = ANY(ids) ORDER BY id FOR NO KEY UPDATE;

    FOR w IN SELECT DISTINCT node_id, during FROM new_rows LOOP
        SELECT cpu_millis, memory_mib INTO cap FROM nodes WHERE id = w.node_id;
        -- Load only rises where a reservation starts, so the peak over the
        -- window is at its start or at a later start inside it.
        SELECT pts.t, s.cpu, s.mem INTO peak
          FROM (SELECT DISTINCT lower(r.during) AS t FROM reservations r
                 WHERE r.node_id = w.node_id AND r.during && w.during
                   AND lower(r.during) >= lower(w.during)) pts,
               LATERAL (SELECT COALESCE(sum(r.cpu_millis), 0) AS cpu, COALESCE(sum(r.memory_mib), 0) AS mem
                          FROM reservations r
                         WHERE r.node_id = w.node_id AND r.during @> pts.t) s
         WHERE s.cpu > cap.cpu_millis OR s.mem > cap.memory_mib
         LIMIT 1;
        IF FOUND THEN
            IF peak.cpu > cap.cpu_millis THEN
                RAISE EXCEPTION 'node % cpu over-committed at %: % > % millis', w.node_id, peak.t, peak.cpu, cap.cpu_millis
                    USING ERRCODE = 'CG001';
            END IF;
            RAISE EXCEPTION 'node % memory over-committed at %: % > % MiB', w.node_id, peak.t, peak.mem, cap.memory_mib
                USING ERRCODE = 'CG001';
        END IF;
    END LOOP;

    FOR w IN SELECT DISTINCT node_id, device_idx, during FROM new_rows WHERE device_idx IS NOT NULL LOOP
        SELECT memory_mib, max_slices INTO cap FROM devices WHERE node_id = w.node_id AND idx = w.device_idx;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'device %/% does not exist', w.node_id, w.device_idx USING ERRCODE = 'CG001';
        END IF;
        SELECT pts.t, s.mem, s.pct, s.n INTO peak
          FROM (SELECT DISTINCT lower(r.during) AS t FROM reservations r
                 WHERE r.node_id = w.node_id AND r.device_idx = w.device_idx
                   AND r.during && w.during AND lower(r.during) >= lower(w.during)) pts,
               LATERAL (SELECT COALESCE(sum(r.gpu_memory_mib), 0) AS mem, COALESCE(sum(r.gpu_compute_pct), 0) AS pct,
                               count(*) AS n
                          FROM reservations r
                         WHERE r.node_id = w.node_id AND r.device_idx = w.device_idx AND r.during @> pts.t) s
         WHERE s.mem > cap.memory_mib OR s.pct > 100 OR s.n > cap.max_slices
         LIMIT 1;
        IF FOUND THEN
            IF peak.mem > cap.memory_mib THEN
                RAISE EXCEPTION 'device %/% memory over-committed at %: % > % MiB', w.node_id, w.device_idx, peak.t, peak.mem, cap.memory_mib
                    USING ERRCODE = 'CG001';
            ELSIF peak.pct > 100 THEN
                RAISE EXCEPTION 'device %/% compute over-committed at %: % > 100 %%', w.node_id, w.device_idx, peak.t, peak.pct
                    USING ERRCODE = 'CG001';
            END IF;
            RAISE EXCEPTION 'device %/% slice count over-committed at %: % > %', w.node_id, w.device_idx, peak.t, peak.n, cap.max_slices
                USING ERRCODE = 'CG001';
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;

-- One trigger per event: a trigger with transition tables fires for one.
CREATE TRIGGER reservations_check_capacity_insert
    AFTER INSERT ON reservations
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reservations_check_capacity();
CREATE TRIGGER reservations_check_capacity_update
    AFTER UPDATE ON reservations
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reservations_check_capacity();
