-- A bell that survives crashes (decision 076).
--
-- Live lessons with a seat still `staged` are picked up by every clock step
-- until the seat is bound; this keeps that look-up to the few such seats.
CREATE INDEX IF NOT EXISTS seats_staged ON seats (lesson_id) WHERE state = 'staged';

-- No seat ever has two live assignments, whatever the writer: binding is a
-- claim in the code, and the database holds it too. Older duplicates (none
-- are expected) are released first so that the index can be built.
UPDATE assignments a SET state = 'released', updated_at = now()
 WHERE a.seat_id IS NOT NULL AND a.state IN ('pending', 'starting', 'running')
   AND EXISTS (SELECT 1 FROM assignments b
                WHERE b.seat_id = a.seat_id AND b.state IN ('pending', 'starting', 'running')
                  AND (b.created_at, b.id) > (a.created_at, a.id));
CREATE UNIQUE INDEX IF NOT EXISTS assignments_one_live_per_seat
    ON assignments (seat_id) WHERE seat_id IS NOT NULL AND state IN ('pending', 'starting', 'running');

-- Settlement charges what the agents metered, so it waits for each
-- assignment's final report (stopped, exited, failed): when it came, or NULL
-- while the agent has not yet said its last word. A later progress report
-- (a seat restarted in place) clears it again. Work that ended before this
-- column existed counts as reported.
ALTER TABLE assignments ADD COLUMN IF NOT EXISTS final_report_at timestamptz;
UPDATE assignments SET final_report_at = updated_at
 WHERE final_report_at IS NULL AND state NOT IN ('pending', 'starting', 'running');
CREATE INDEX IF NOT EXISTS assignments_unreported ON assignments (node_id)
    WHERE final_report_at IS NULL AND state = 'released';
