-- Seats a teacher stopped during their lesson (issue 22, decision 103). The
-- school's edge keeps such a seat's link and shows "stopped by your
-- teacher" until the lesson's end plus grace, not "this lesson has ended".
-- A reset of the seat removes the row; the seat's removal removes it too.
CREATE TABLE seat_stops (
    seat_id     uuid PRIMARY KEY REFERENCES seats(id) ON DELETE CASCADE,
    stopped_at  timestamptz NOT NULL DEFAULT now(),
    stopped_by  text NOT NULL
);
