-- The error bound of an estimated seat RTT (docs/decisions/044). A seat
-- placed on a Vivaldi estimate keeps the estimate's ± bound in ms beside
-- rtt_ms; measured and configured RTTs have none, and seats placed before
-- this migration did not keep it, so the column is NULL for them.

ALTER TABLE seats
    ADD COLUMN rtt_error_ms double precision
        CHECK (rtt_error_ms IS NULL OR rtt_error_ms >= 0);
