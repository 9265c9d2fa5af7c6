-- A lesson hosted by a peer region is paid for by its school's vouchers at
-- home (issue 21, decision 105). Its ledger rows name the borrowed lesson,
-- which has no row in `lessons`, so they carry it in a column of their own.
-- Not a foreign key: the hold is written with the `held` borrowed row, and
-- when no peer commits that row is forgotten while the hold and its release
-- stay in the ledger, which is history.
ALTER TABLE voucher_ledger ADD COLUMN borrowed_lesson_id uuid;

-- One owner at most: a lesson, a job or a borrowed lesson.
ALTER TABLE voucher_ledger DROP CONSTRAINT voucher_ledger_check1;
ALTER TABLE voucher_ledger ADD CONSTRAINT voucher_ledger_one_owner
    CHECK (num_nonnulls(lesson_id, job_id, borrowed_lesson_id) <= 1);
-- Holds, charges and releases name what they pay for.
ALTER TABLE voucher_ledger DROP CONSTRAINT voucher_ledger_check2;
ALTER TABLE voucher_ledger ADD CONSTRAINT voucher_ledger_owned
    CHECK (kind NOT IN ('hold', 'charge', 'release')
           OR lesson_id IS NOT NULL OR job_id IS NOT NULL OR borrowed_lesson_id IS NOT NULL);

CREATE INDEX voucher_ledger_borrowed ON voucher_ledger (borrowed_lesson_id)
    WHERE borrowed_lesson_id IS NOT NULL;
