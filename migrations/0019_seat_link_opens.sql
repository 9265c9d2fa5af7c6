-- When each seat's link first opened its seat, as the school's edge saw it
-- (issue 22): the teacher's view of who is in. One row per seat, written
-- once; gone with the seat.
CREATE TABLE seat_link_opens (
    seat_id    uuid PRIMARY KEY REFERENCES seats(id) ON DELETE CASCADE,
    opened_at  timestamptz NOT NULL
);
