-- Lookups on the start path that scanned whole tables: a seat's latest
-- assignment (every seat read and every agent status report), a job's
-- assignments, and a seat's reservations when it is re-planned. Under a
-- 10,000-seat storm these scans made starting the class quadratic.
CREATE INDEX IF NOT EXISTS assignments_seat ON assignments (seat_id, created_at DESC) WHERE seat_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS assignments_job ON assignments (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS reservations_seat ON reservations (seat_id) WHERE seat_id IS NOT NULL;
