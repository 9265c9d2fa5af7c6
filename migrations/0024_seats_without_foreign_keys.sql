-- A seat's two foreign keys were checked once per row, each check a lookup
-- and a row lock: a term committed in one statement (486,000 seats) spent
-- about half of its seat insert on them. Neither is needed:
--
-- * seats.lesson_id: seats are only ever written in the statement batch
--   that writes their lesson, in the same transaction, and no code deletes
--   lessons (the ON DELETE CASCADE never ran).
-- * seats.node_id: a placed seat's reservations name the same node in the
--   same transaction, and the capacity trigger (migration 0023) locks that
--   node and refuses a node that does not exist. No code deletes nodes.
--
-- The keys that point at seats (assignments, seat links, seat stops) stay.
ALTER TABLE seats DROP CONSTRAINT IF EXISTS seats_lesson_id_fkey;
ALTER TABLE seats DROP CONSTRAINT IF EXISTS seats_node_id_fkey;
