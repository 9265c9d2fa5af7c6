-- Seat links (issue 22, decisions 088 and 089). Tokens are never stored:
-- they are derived from the seat id under the region's link key, and the
-- edges get only their sha256.

-- The https address at which a school site's edge serves seat links
-- (https://host[:port], no path), as the site's edge reports it.
CREATE TABLE seat_link_bases (
    site_id     uuid PRIMARY KEY REFERENCES sites(id) ON DELETE CASCADE,
    base_url    text NOT NULL CHECK (base_url ~ '^https://[^/?#]+$'),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Classes whose links a teacher paused: the edge shows "paused" instead of
-- the seat until the pause is lifted (the seats keep running).
CREATE TABLE seat_link_pauses (
    lesson_id   uuid PRIMARY KEY REFERENCES lessons(id) ON DELETE CASCADE,
    paused_at   timestamptz NOT NULL DEFAULT now(),
    paused_by   text NOT NULL
);
