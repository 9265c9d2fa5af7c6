-- The edge gateway's view of the region: where each node's probe responder
-- listens, the RTTs that site edges and peer agents measure, and what each
-- site's edge has cached and is staging for booked lessons.

CREATE TABLE node_probes (
    node_id     uuid PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
    addr        text NOT NULL CHECK (length(addr) BETWEEN 1 AND 300),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Site → node, from the site edge's probes; the latest report wins.
CREATE TABLE rtt_measurements (
    site_id       uuid NOT NULL REFERENCES sites(id) ON DELETE CASCADE,
    node_id       uuid NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    median_ms     double precision NOT NULL CHECK (median_ms >= 0 AND median_ms < 60000),
    variance_ms2  double precision NOT NULL CHECK (variance_ms2 >= 0),
    samples       integer NOT NULL CHECK (samples > 0),
    measured_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (site_id, node_id)
);

-- Node → node, from agents probing a few peers; feeds network coordinates.
CREATE TABLE node_peer_rtt (
    node_id      uuid NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    peer_id      uuid NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    median_ms    double precision NOT NULL CHECK (median_ms >= 0 AND median_ms < 60000),
    measured_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node_id, peer_id),
    CHECK (node_id <> peer_id)
);

-- One row per edge: where agents fetch content, and the measured origin
-- throughput that sets staging leads.
CREATE TABLE edge_status (
    edge_id        uuid PRIMARY KEY REFERENCES edges(id) ON DELETE CASCADE,
    content_url    text NOT NULL DEFAULT '' CHECK (length(content_url) <= 300),
    bytes_per_sec  double precision NOT NULL DEFAULT 0 CHECK (bytes_per_sec >= 0),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Content an edge holds, verified by digest.
CREATE TABLE edge_cache (
    edge_id     uuid NOT NULL REFERENCES edges(id) ON DELETE CASCADE,
    sha256      text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size_bytes  bigint NOT NULL CHECK (size_bytes >= 0),
    PRIMARY KEY (edge_id, sha256)
);

-- Staging progress an edge reports for content it was ordered to fetch.
CREATE TABLE edge_staging (
    edge_id     uuid NOT NULL REFERENCES edges(id) ON DELETE CASCADE,
    sha256      text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    bytes_done  bigint NOT NULL CHECK (bytes_done >= 0),
    size_bytes  bigint NOT NULL CHECK (size_bytes >= 0),
    state       text NOT NULL CHECK (state IN ('queued', 'downloading', 'cached', 'failed')),
    message     text NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (edge_id, sha256)
);
