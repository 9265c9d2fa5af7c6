-- A lesson's explanation is written once and only ever read whole, but as
-- jsonb every booking paid to parse its ~28 KB (45 seats, each with its
-- node, slice, RTT, scores and reason) into a tree, and then to compress it
-- with pglz: at a bell of 223 classes, more time than writing the lessons'
-- other columns. Stored as json, it is only checked and kept as written;
-- lz4 compresses it several times faster than pglz, where the server has it.
ALTER TABLE lessons ALTER COLUMN explanation DROP DEFAULT;
ALTER TABLE lessons ALTER COLUMN explanation TYPE json USING explanation::json;
ALTER TABLE lessons ALTER COLUMN explanation SET DEFAULT '{}'::json;
DO $$
BEGIN
    ALTER TABLE lessons ALTER COLUMN explanation SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'this server has no lz4; lesson explanations stay compressed with pglz';
END;
$$;
