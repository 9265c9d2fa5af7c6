-- Series: a recurring lesson (issue 26, decision 097). Each occurrence that
-- is booked is an ordinary lesson, with its seats, reservations and voucher
-- hold; the series keeps the rule, the term and the template, and each
-- occurrence's place in the rule: its lesson, or why it was not booked.
CREATE TABLE series (
    id              uuid PRIMARY KEY,
    request_id      text UNIQUE,
    school_site_id  uuid NOT NULL REFERENCES sites(id),
    title           text NOT NULL DEFAULT '',
    rrule           text NOT NULL,
    -- The region's zone the rule was expanded in.
    time_zone       text NOT NULL,
    start_time      time NOT NULL,
    duration_s      integer NOT NULL CHECK (duration_s > 0),
    term_start      date NOT NULL,
    term_end        date NOT NULL CHECK (term_end >= term_start),
    exception_dates date[] NOT NULL DEFAULT '{}',
    -- seats, min_seats, seat, workload, datasets, max_rtt_ms
    template        jsonb NOT NULL,
    policy          text NOT NULL CHECK (policy IN ('all_or_nothing', 'book_what_fits')),
    -- Set when the series was ended early: no occurrence from then on.
    ended_at        timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX series_school ON series (school_site_id, term_start);

CREATE TABLE series_occurrences (
    series_id   uuid NOT NULL REFERENCES series(id) ON DELETE CASCADE,
    -- Where the rule put it (a moved occurrence's lesson starts elsewhere).
    rule_start  timestamptz NOT NULL,
    -- The occurrence's lesson; NULL when it was not booked.
    lesson_id   uuid UNIQUE REFERENCES lessons(id),
    -- Why it was not booked (the placement's or the vouchers' refusal).
    reason      text NOT NULL DEFAULT '',
    PRIMARY KEY (series_id, rule_start),
    CHECK (lesson_id IS NOT NULL OR reason <> '')
);
