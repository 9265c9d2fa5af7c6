-- Federation (issue 21, decisions 093–095): peerings between regions, the
-- holds a lender keeps for a peer's lesson, the lessons a home region
-- borrowed, what a lender lent, and the append-only settlement ledger.

-- One row per peer region. An offer is a row in state `offered` whose
-- secret is kept only as its SHA-256; the handshake clears it.
CREATE TABLE peerings (
    id                   uuid PRIMARY KEY,
    -- The peer region's name, and this region's name as the peer knows it.
    name                 text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    local_name           text NOT NULL CHECK (local_name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    -- The peer broker's gRPC URL ('' while offered and not yet accepted).
    url                  text NOT NULL DEFAULT '' CHECK (url = '' OR url ~ '^https://[^/?#]+$'),
    -- The peer region's CA, pinned: the only root its server certificate
    -- is checked against.
    ca_pem               text NOT NULL DEFAULT '',
    offer_secret_sha256  bytea,
    offer_expires_at     timestamptz,
    -- This region's site that lent seats are booked at.
    site_id              uuid NOT NULL REFERENCES sites(id),
    -- Serial of the client certificate this region issued to the peer, and
    -- the one the peer issued to this region (its key is in the data folder).
    peer_cert_serial     text UNIQUE,
    own_cert_pem         text NOT NULL DEFAULT '',
    state                text NOT NULL CHECK (state IN ('offered', 'connected', 'disconnected', 'removed')),
    disconnected_since   timestamptz,
    rtt_ms               double precision CHECK (rtt_ms IS NULL OR rtt_ms >= 0),
    rtt_source           text CHECK (rtt_source IN ('measured', 'configured')),
    -- {max_slices, tiers, vendors, hours, weight}: what this region lends
    -- the peer (federation::policy checks it on every offer).
    lending              jsonb NOT NULL DEFAULT '{}',
    message              text NOT NULL DEFAULT '',
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
-- One live peering per peer region name; a removed one may be made again.
CREATE UNIQUE INDEX peerings_live_name ON peerings (name) WHERE state <> 'removed';

-- Lender side: what this region holds or hosts for a peer's lesson. The key
-- is the home lesson id, so every call of the peer is idempotent by it. The
-- row is written before the hosted lesson is booked, so a crash in between
-- leaves a hold that expires, never a lesson nobody releases.
CREATE TABLE peer_holds (
    peering_id      uuid NOT NULL REFERENCES peerings(id),
    home_lesson_id  uuid NOT NULL,
    -- The hosted lesson in this region (not a foreign key: it is booked
    -- after this row, and may never be).
    lesson_id       uuid NOT NULL UNIQUE,
    seats           integer NOT NULL CHECK (seats > 0),
    window_start    timestamptz NOT NULL,
    window_end      timestamptz NOT NULL CHECK (window_end > window_start),
    state           text NOT NULL CHECK (state IN ('holding', 'held', 'committed', 'released', 'expired')),
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    committed_at    timestamptz,
    PRIMARY KEY (peering_id, home_lesson_id)
);
CREATE INDEX peer_holds_expiring ON peer_holds (expires_at) WHERE state IN ('holding', 'held');

-- Home side: lessons of this region's schools that a peer hosts. The last
-- answer of the peer is kept, so the lesson reads while the peer is away.
CREATE TABLE borrowed_lessons (
    lesson_id        uuid PRIMARY KEY,
    request_id       text UNIQUE,
    peering_id       uuid NOT NULL REFERENCES peerings(id),
    school_site_id   uuid NOT NULL REFERENCES sites(id),
    seats            integer NOT NULL CHECK (seats > 0),
    start_at         timestamptz NOT NULL,
    end_at           timestamptz NOT NULL,
    -- The RTT of the school site to this region plus the inter-region RTT,
    -- added to the lender's site → node RTT of each seat.
    rtt_offset_ms    double precision NOT NULL DEFAULT 0,
    -- The booking as the school made it (title, spec, workload, …), which
    -- the lender is not told in full.
    booking          jsonb NOT NULL,
    state            text NOT NULL CHECK (state IN ('held', 'committed', 'released')),
    last_seen        jsonb,
    last_seen_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- Lender side: what this region lent, per peer and per lesson.
CREATE TABLE lent_lessons (
    peering_id      uuid NOT NULL REFERENCES peerings(id),
    home_lesson_id  uuid NOT NULL,
    lesson_id       uuid NOT NULL,
    seats           integer NOT NULL CHECK (seats > 0),
    committed_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (peering_id, home_lesson_id)
);

-- Both sides: one line per lesson and direction, in micro accelerator-hours.
-- Append-only: a correction is a new line, never an edit.
CREATE TABLE settlement_entries (
    id              bigserial PRIMARY KEY,
    peering_id      uuid NOT NULL REFERENCES peerings(id),
    direction       text NOT NULL CHECK (direction IN ('lent', 'borrowed')),
    home_lesson_id  uuid NOT NULL,
    seats           integer NOT NULL CHECK (seats >= 0),
    amount_uah      bigint NOT NULL CHECK (amount_uah >= 0),
    -- The metered slice-seconds behind the amount (CPU-only seats cost no
    -- accelerator-hours but still ran).
    slice_seconds   double precision NOT NULL DEFAULT 0 CHECK (slice_seconds >= 0),
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (peering_id, direction, home_lesson_id)
);

CREATE FUNCTION settlement_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'settlement_entries is append-only' USING ERRCODE = 'check_violation';
END $$;
CREATE TRIGGER settlement_entries_append_only BEFORE UPDATE OR DELETE ON settlement_entries
    FOR EACH ROW EXECUTE FUNCTION settlement_entries_append_only();

-- Where a lesson's data must stay (the placement core's residency filter):
-- '' anywhere, or the school, the district, the education network. Kept so
-- a seat re-planned at the bell follows the same rule.
ALTER TABLE lessons ADD COLUMN residency text NOT NULL DEFAULT ''
    CHECK (residency IN ('', 'school', 'district', 'education_network'));
