-- Several broker replicas on one PostgreSQL, one leader (decision 078).
--
-- The leader holds this one row's lease: it renews `expires_at` well before
-- it passes, and a standby may take the row only once it has passed, raising
-- the epoch. Times are the database's own, so replicas' clocks do not matter.
CREATE TABLE IF NOT EXISTS broker_lease (
    singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    holder       uuid,
    holder_name  text NOT NULL DEFAULT '',
    grpc_addr    text NOT NULL DEFAULT '',
    http_addr    text NOT NULL DEFAULT '',
    epoch        bigint NOT NULL DEFAULT 0,
    since        timestamptz,
    renewed_at   timestamptz,
    expires_at   timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO broker_lease DEFAULT VALUES ON CONFLICT DO NOTHING;

-- Every replica, leader or standby, says it is alive here: `classgrid status`
-- and the console list them.
CREATE TABLE IF NOT EXISTS broker_replicas (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    grpc_addr   text NOT NULL,
    http_addr   text NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    seen_at     timestamptz NOT NULL DEFAULT now()
);

-- Fencing. Every transaction that commits a plan or moves a lesson through
-- its lifecycle calls this first with the epoch its replica leads under. It
-- holds the lease's advisory lock in shared mode until the transaction ends,
-- and a standby takes the lease under the same lock in exclusive mode: so a
-- takeover waits for the old leader's transactions in flight, and every
-- later one of them sees the new epoch and is refused (SQLSTATE CG002). A
-- leader paused past its lease cannot commit when it wakes.
CREATE OR REPLACE FUNCTION classgrid_fence(leader_epoch bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(7166740466735476836);
    IF NOT EXISTS (SELECT 1 FROM broker_lease WHERE epoch = leader_epoch) THEN
        RAISE EXCEPTION 'fenced: epoch % no longer leads this region', leader_epoch
            USING ERRCODE = 'CG002';
    END IF;
END;
$$;
