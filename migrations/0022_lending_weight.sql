-- The lending weight a peer agreed to (decision 108): a lent seat's
-- settlement line is its metered use priced by the lender's voucher
-- weights times this. Kept on the hold when the offer is made and copied to
-- the lent lesson at the commit, so an admin who changes the weight later
-- changes neither a price already offered nor a lesson already lent.
ALTER TABLE peer_holds
    ADD COLUMN weight double precision NOT NULL DEFAULT 1
        CHECK (weight > 0 AND weight <= 1000);
ALTER TABLE lent_lessons
    ADD COLUMN weight double precision NOT NULL DEFAULT 1
        CHECK (weight > 0 AND weight <= 1000);
