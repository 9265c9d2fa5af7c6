-- Console sessions and the utilisation history the console plots.
--
-- A session id is a 256-bit random secret held only by the browser (an
-- HttpOnly cookie); the table keeps its SHA-256, so a copy of the database
-- cannot be replayed as a login. Each session carries its own CSRF token.

CREATE TABLE console_sessions (
    id_sha256   bytea PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf        text NOT NULL CHECK (length(csrf) = 64),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    source      text NOT NULL DEFAULT '' CHECK (length(source) <= 200),
    CHECK (expires_at > created_at)
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

-- One sample per device per minute of what the agents report, so node detail
-- can plot utilisation over time from real data. Old rows are pruned.
CREATE TABLE device_samples (
    node_id              uuid NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    idx                  integer NOT NULL CHECK (idx >= 0),
    at                   timestamptz NOT NULL DEFAULT now(),
    utilization_percent  integer NOT NULL CHECK (utilization_percent BETWEEN 0 AND 100),
    memory_used_mib      bigint NOT NULL CHECK (memory_used_mib >= 0),
    PRIMARY KEY (node_id, idx, at)
);
CREATE INDEX device_samples_at ON device_samples (at);
