-- Tokens, agent certificates, console users and the audit log. Secrets are
-- stored only as hashes: API and join tokens (256-bit random) as SHA-256,
-- passwords as argon2id.

CREATE TABLE api_tokens (
    id             uuid PRIMARY KEY,
    name           text NOT NULL DEFAULT '' CHECK (length(name) <= 128),
    role           text NOT NULL CHECK (role IN ('platform', 'school_admin', 'district_admin')),
    -- The sites this token may see; empty only for district admins (the whole region).
    sites          uuid[] NOT NULL DEFAULT '{}',
    secret_sha256  bytea NOT NULL,
    created_by     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz,
    revoked_at     timestamptz,
    CHECK (role = 'district_admin' OR cardinality(sites) > 0)
);

CREATE TABLE join_tokens (
    id             uuid PRIMARY KEY,
    site_id        uuid NOT NULL REFERENCES sites(id),
    kind           text NOT NULL CHECK (kind IN ('agent', 'edge')),
    secret_sha256  bytea NOT NULL,
    uses_left      integer NOT NULL CHECK (uses_left >= 0),
    created_by     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz
);

-- Client certificates issued to agents and edges at join time.
CREATE TABLE node_certs (
    serial         text PRIMARY KEY,
    kind           text NOT NULL CHECK (kind IN ('agent', 'edge')),
    site_id        uuid NOT NULL REFERENCES sites(id),
    name           text NOT NULL,
    not_after      timestamptz NOT NULL,
    issued_at      timestamptz NOT NULL DEFAULT now(),
    join_token_id  uuid REFERENCES join_tokens(id),
    revoked_at     timestamptz
);
CREATE INDEX node_certs_identity ON node_certs (site_id, name);

CREATE TABLE users (
    id             uuid PRIMARY KEY,
    username       text NOT NULL UNIQUE CHECK (length(username) BETWEEN 1 AND 64),
    password_hash  text NOT NULL,
    role           text NOT NULL CHECK (role IN ('school_admin', 'district_admin')),
    sites          uuid[] NOT NULL DEFAULT '{}',
    disabled       boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (role = 'district_admin' OR cardinality(sites) > 0)
);

CREATE TABLE audit_log (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    actor    text NOT NULL,
    role     text NOT NULL,
    action   text NOT NULL,
    target   text NOT NULL DEFAULT '',
    source   text NOT NULL DEFAULT '',
    result   text NOT NULL,
    detail   text NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_at ON audit_log (at);

-- Append-only: history cannot be rewritten through SQL either.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'CG002';
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
