-- An agent's progress report (pending -> running) updates its assignment
-- and its seat. PostgreSQL 15 keeps such an update on the page (HOT, no new
-- index entries) only when no column that any index names changes value,
-- and a partial index's predicate names its columns too. `state` was in the
-- predicates of seats_staged (migration 0013) and of assignments_node_active,
-- assignments_one_live_per_seat and assignments_unreported, so every report
-- wrote a new entry into every index of both tables: 38 buffer hits a
-- seat in a 100,000-seat storm, the most of any statement (decision 122).
--
-- The predicates now name stored generated columns that say what the
-- indexes ask: `staged`, `live` and `unreported`. They change only when a
-- row enters or leaves that condition, which a progress report never does,
-- so its updates stay on the page. Queries that want these indexes name
-- the same columns; the database computes them, so no writer can get them
-- wrong.
ALTER TABLE seats
    ADD COLUMN staged boolean GENERATED ALWAYS AS (state = 'staged') STORED;
DROP INDEX IF EXISTS seats_staged;
CREATE INDEX seats_staged ON seats (lesson_id) WHERE staged;

ALTER TABLE assignments
    ADD COLUMN live boolean GENERATED ALWAYS AS (state IN ('pending', 'starting', 'running')) STORED,
    ADD COLUMN unreported boolean GENERATED ALWAYS AS (state = 'released' AND final_report_at IS NULL) STORED;
-- Live is what assignments_node_active's `state NOT IN ('released',
-- 'exited', 'failed', 'stopped')` meant: the state check allows no other.
DROP INDEX IF EXISTS assignments_node_active;
CREATE INDEX assignments_node_active ON assignments (node_id) WHERE live;
DROP INDEX IF EXISTS assignments_one_live_per_seat;
CREATE UNIQUE INDEX assignments_one_live_per_seat ON assignments (seat_id) WHERE seat_id IS NOT NULL AND live;
DROP INDEX IF EXISTS assignments_unreported;
CREATE INDEX assignments_unreported ON assignments (node_id) WHERE unreported;

-- An on-page update needs room on its page for the row's new version.
-- Seats and assignments are written at booking and updated once when they
-- run, so half of each page is left free: with 30 % (seats, migration
-- 0011) only about half of a 100,000-seat storm's reports found room, as
-- a bell's rows are written and reported within seconds, before the old
-- versions can be pruned. Pages written from now on keep the room.
ALTER TABLE seats SET (fillfactor = 50);
ALTER TABLE assignments SET (fillfactor = 50);
