-- Node approval (docs/decisions/064). A join token may ask that the nodes
-- joining with it wait for a district admin's approval before placement
-- uses them. Tokens issued before this migration did not ask, and nodes
-- that joined before it were approved by the token they used (decision 061),
-- so both columns default to the old behaviour.

ALTER TABLE join_tokens
    ADD COLUMN require_approval boolean NOT NULL DEFAULT false;

ALTER TABLE nodes
    ADD COLUMN approved boolean NOT NULL DEFAULT true;
