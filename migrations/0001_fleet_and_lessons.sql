-- The region's sites, nodes, devices, lessons, seats, jobs, assignments and
-- reservations. Capacity is enforced by the database itself (see the trigger
-- at the end), not only by the placement code.

CREATE TABLE sites (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
    kind        text NOT NULL CHECK (kind IN ('school', 'district_pop', 'cloud')),
    district    text NOT NULL DEFAULT '' CHECK (length(district) <= 128),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE edges (
    id          uuid PRIMARY KEY,
    site_id     uuid NOT NULL REFERENCES sites(id),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    version     text NOT NULL DEFAULT '',
    last_seen   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (site_id, name)
);

CREATE TABLE nodes (
    id             uuid PRIMARY KEY,
    site_id        uuid NOT NULL REFERENCES sites(id),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 128),
    tier           text NOT NULL CHECK (tier IN ('edge', 'cloud')),
    state          text NOT NULL CHECK (state IN ('connected', 'disconnected', 'lost')),
    cordoned       boolean NOT NULL DEFAULT false,
    cpu_millis     integer NOT NULL CHECK (cpu_millis >= 0),
    memory_mib     bigint NOT NULL CHECK (memory_mib >= 0),
    runtimes       text[] NOT NULL DEFAULT '{}',
    warnings       text[] NOT NULL DEFAULT '{}',
    agent_version  text NOT NULL DEFAULT '',
    last_seen      timestamptz NOT NULL DEFAULT now(),
    registered_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (site_id, name)
);

CREATE TABLE devices (
    node_id              uuid NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    idx                  integer NOT NULL CHECK (idx >= 0),
    vendor               text NOT NULL,
    model                text NOT NULL,
    uuid                 text NOT NULL DEFAULT '',
    memory_mib           bigint NOT NULL CHECK (memory_mib >= 0),
    memory_used_mib      bigint NOT NULL DEFAULT 0,
    utilization_percent  integer NOT NULL DEFAULT 0,
    healthy              boolean NOT NULL,
    max_slices           integer NOT NULL CHECK (max_slices >= 1),
    isolation            text NOT NULL CHECK (isolation IN ('none', 'soft', 'hard')),
    PRIMARY KEY (node_id, idx)
);

CREATE TABLE lessons (
    id              uuid PRIMARY KEY,
    request_id      text UNIQUE,
    school_site_id  uuid NOT NULL REFERENCES sites(id),
    title           text NOT NULL DEFAULT '',
    start_at        timestamptz NOT NULL,
    duration_s      integer NOT NULL CHECK (duration_s > 0),
    state           text NOT NULL CHECK (state IN ('booked', 'staging', 'ready', 'live', 'ended', 'cancelled')),
    seat_count      integer NOT NULL CHECK (seat_count > 0),
    min_seats       integer NOT NULL CHECK (min_seats > 0 AND min_seats <= seat_count),
    seat_spec       jsonb NOT NULL,
    workload        jsonb NOT NULL,
    datasets        jsonb NOT NULL DEFAULT '[]',
    max_rtt_ms      integer NOT NULL CHECK (max_rtt_ms > 0),
    window_start    timestamptz NOT NULL,
    window_end      timestamptz NOT NULL,
    explanation     jsonb NOT NULL DEFAULT '{}',
    message         text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (window_start <= start_at AND window_end > start_at)
);
CREATE INDEX lessons_active ON lessons (state, start_at) WHERE state NOT IN ('ended', 'cancelled');
CREATE INDEX lessons_school_start ON lessons (school_site_id, start_at);

CREATE TABLE seats (
    id              uuid PRIMARY KEY,
    lesson_id       uuid NOT NULL REFERENCES lessons(id) ON DELETE CASCADE,
    number          integer NOT NULL CHECK (number >= 0),
    state           text NOT NULL CHECK (state IN ('planned', 'staged', 'starting', 'running', 'released', 'failed', 'replaced')),
    node_id         uuid REFERENCES nodes(id),
    device_indexes  integer[] NOT NULL DEFAULT '{}',
    gpu_memory_mib  bigint NOT NULL DEFAULT 0,
    gpu_compute_pct integer NOT NULL DEFAULT 0,
    rtt_ms          double precision,
    rtt_source      text,
    endpoint        text NOT NULL DEFAULT '',
    message         text NOT NULL DEFAULT '',
    UNIQUE (lesson_id, number)
);

CREATE TABLE jobs (
    id              uuid PRIMARY KEY,
    request_id      text UNIQUE,
    school_site_id  uuid NOT NULL REFERENCES sites(id),
    name            text NOT NULL DEFAULT '',
    state           text NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    spec            jsonb NOT NULL,
    workload        jsonb NOT NULL,
    priority        integer NOT NULL DEFAULT 0,
    preemptible     boolean NOT NULL DEFAULT true,
    grace_s         integer NOT NULL DEFAULT 60 CHECK (grace_s >= 0),
    max_runtime_s   integer NOT NULL CHECK (max_runtime_s > 0),
    -- Set when a lesson needs this job's capacity: stop it then, with its grace.
    preempt_at      timestamptz,
    node_id         uuid REFERENCES nodes(id),
    device_indexes  integer[] NOT NULL DEFAULT '{}',
    gpu_memory_mib  bigint NOT NULL DEFAULT 0,
    gpu_compute_pct integer NOT NULL DEFAULT 0,
    endpoint        text NOT NULL DEFAULT '',
    exit_code       integer,
    output_tail     text NOT NULL DEFAULT '',
    message         text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz
);
CREATE INDEX jobs_queued ON jobs (priority DESC, created_at) WHERE state = 'queued';

-- One unit of work sent to an agent. `generation` grows each time the broker
-- re-sends or re-plans it; agents reconcile by (id, generation).
CREATE TABLE assignments (
    id             uuid PRIMARY KEY,
    generation     bigint NOT NULL DEFAULT 1,
    kind           text NOT NULL CHECK (kind IN ('seat', 'job')),
    seat_id        uuid REFERENCES seats(id) ON DELETE CASCADE,
    job_id         uuid REFERENCES jobs(id) ON DELETE CASCADE,
    node_id        uuid NOT NULL REFERENCES nodes(id),
    state          text NOT NULL CHECK (state IN ('pending', 'starting', 'running', 'exited', 'failed', 'stopped', 'released')),
    payload        jsonb NOT NULL,
    endpoint       text NOT NULL DEFAULT '',
    exit_code      integer,
    output_tail    text NOT NULL DEFAULT '',
    slice_seconds  double precision NOT NULL DEFAULT 0,
    ends_at        timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'seat') = (seat_id IS NOT NULL) AND (kind = 'job') = (job_id IS NOT NULL))
);
CREATE INDEX assignments_node_active ON assignments (node_id) WHERE state NOT IN ('released', 'exited', 'failed', 'stopped');

-- Capacity held for a window on a node, and optionally on one device of it.
CREATE TABLE reservations (
    id               bigserial PRIMARY KEY,
    owner_kind       text NOT NULL CHECK (owner_kind IN ('lesson', 'job')),
    owner_id         uuid NOT NULL,
    -- The seat a lesson reservation belongs to, so one seat can be re-planned.
    seat_id          uuid,
    node_id          uuid NOT NULL REFERENCES nodes(id),
    device_idx       integer,
    during           tstzrange NOT NULL CHECK (NOT isempty(during)),
    cpu_millis       integer NOT NULL DEFAULT 0 CHECK (cpu_millis >= 0),
    memory_mib       bigint NOT NULL DEFAULT 0 CHECK (memory_mib >= 0),
    gpu_memory_mib   bigint NOT NULL DEFAULT 0 CHECK (gpu_memory_mib >= 0),
    gpu_compute_pct  integer NOT NULL DEFAULT 0 CHECK (gpu_compute_pct BETWEEN 0 AND 100),
    preemptible      boolean NOT NULL DEFAULT false
);
CREATE INDEX reservations_owner ON reservations (owner_kind, owner_id);
CREATE INDEX reservations_node ON reservations (node_id);

-- Refuses any reservation that would over-commit a node's CPU or memory, or a
-- device's memory, compute or slice count, at any instant of its window. The
-- node row is locked first, so concurrent bookings on one node serialise here
-- and each sees the rows the previous one committed.
CREATE FUNCTION reservations_enforce_capacity() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    node_cpu     integer;
    node_mem     bigint;
    dev_mem      bigint;
    dev_slices   integer;
    peak         record;
BEGIN
    SELECT cpu_millis, memory_mib INTO node_cpu, node_mem
      FROM nodes WHERE id = NEW.node_id FOR UPDATE;
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

CREATE TRIGGER reservations_enforce_capacity
    BEFORE INSERT OR UPDATE ON reservations
    FOR EACH ROW EXECUTE FUNCTION reservations_enforce_capacity();
