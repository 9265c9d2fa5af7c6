-- The capacity trigger locked the node row FOR UPDATE, which conflicts with
-- the FOR KEY SHARE lock a booking takes when it inserts seats that reference
-- the same node; two concurrent bookings could then deadlock. FOR NO KEY
-- UPDATE still serialises reservations on a node (it conflicts with itself)
-- but not with foreign-key checks.

CREATE OR REPLACE FUNCTION reservations_enforce_capacity() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    node_cpu     integer;
    node_mem     bigint;
    dev_mem      bigint;
    dev_slices   integer;
    peak         record;
BEGIN
    SELECT cpu_millis, memory_mib INTO node_cpu, node_mem
      FROM nodes WHERE id = NEW.node_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'node % does not exist', NEW.node_id USING ERRCODE = 'CG001';
    END IF;

    -- The peak over a window is reached where some reservation starts.
    SELECT COALESCE(max(s.cpu), 0) AS cpu, COALESCE(max(s.mem), 0) AS mem INTO peak
      FROM (SELECT lower(NEW.during) AS t
            UNION
            SELECT lower(r.during) FROM reservations r
             WHERE r.node_id = NEW.node_id AND r.during && NEW.during
               AND lower(r.during) > lower(NEW.during)) pts,
           LATERAL (SELECT sum(r.cpu_millis) AS cpu, sum(r.memory_mib) AS mem
                      FROM reservations r
                     WHERE r.node_id = NEW.node_id AND r.during @> pts.t AND r.id <> NEW.id) s;
    IF peak.cpu + NEW.cpu_millis > node_cpu THEN
        RAISE EXCEPTION 'node % cpu over-committed: % + % > % millis', NEW.node_id, peak.cpu, NEW.cpu_millis, node_cpu
            USING ERRCODE = 'CG001';
    END IF;
    IF peak.mem + NEW.memory_mib > node_mem THEN
        RAISE EXCEPTION 'node % memory over-committed: % + % > % MiB', NEW.node_id, peak.mem, NEW.memory_mib, node_mem
            USING ERRCODE = 'CG001';
    END IF;

    IF NEW.device_idx IS NOT NULL THEN
        SELECT memory_mib, max_slices INTO dev_mem, dev_slices
          FROM devices WHERE node_id = NEW.node_id AND idx = NEW.device_idx;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'device %/% does not exist', NEW.node_id, NEW.device_idx USING ERRCODE = 'CG001';
        END IF;
        SELECT COALESCE(max(s.mem), 0) AS mem, COALESCE(max(s.pct), 0) AS pct, COALESCE(max(s.n), 0) AS n INTO peak
          FROM (SELECT lower(NEW.during) AS t
                UNION
                SELECT lower(r.during) FROM reservations r
                 WHERE r.node_id = NEW.node_id AND r.device_idx = NEW.device_idx
                   AND r.during && NEW.during AND lower(r.during) > lower(NEW.during)) pts,
               LATERAL (SELECT sum(r.gpu_memory_mib) AS mem, sum(r.gpu_compute_pct) AS pct, count(*) AS n
                          FROM reservations r
                         WHERE r.node_id = NEW.node_id AND r.device_idx = NEW.device_idx
                           AND r.during @> pts.t AND r.id <> NEW.id) s;
        IF peak.mem + NEW.gpu_memory_mib > dev_mem THEN
            RAISE EXCEPTION 'device %/% memory over-committed: % + % > % MiB', NEW.node_id, NEW.device_idx, peak.mem, NEW.gpu_memory_mib, dev_mem
                USING ERRCODE = 'CG001';
        END IF;
        IF peak.pct + NEW.gpu_compute_pct > 100 THEN
            RAISE EXCEPTION 'device %/% compute over-committed: % + % > 100 %%', NEW.node_id, NEW.device_idx, peak.pct, NEW.gpu_compute_pct
                USING ERRCODE = 'CG001';
        END IF;
        IF peak.n + 1 > dev_slices THEN
            RAISE EXCEPTION 'device %/% slice count over-committed: % + 1 > %', NEW.node_id, NEW.device_idx, peak.n, dev_slices
                USING ERRCODE = 'CG001';
        END IF;
    END IF;
    RETURN NEW;
END;
$$;
