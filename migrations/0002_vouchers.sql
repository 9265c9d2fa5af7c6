-- Compute vouchers: accelerator-hours a district grants to a school, an
-- append-only ledger of everything that happens to them, and per-school
-- seat quotas. Amounts are integers in micro accelerator-hours (µAh), so that
-- balances and report totals are exact sums (docs/decisions/021).

CREATE TABLE vouchers (
    id              uuid PRIMARY KEY,
    request_id      text UNIQUE CHECK (length(request_id) BETWEEN 1 AND 128),
    school_site_id  uuid NOT NULL REFERENCES sites(id),
    programme       text NOT NULL CHECK (length(programme) BETWEEN 1 AND 200),
    issued_by       text NOT NULL DEFAULT '' CHECK (length(issued_by) <= 128),
    amount_uah      bigint NOT NULL CHECK (amount_uah > 0),
    valid_from      timestamptz NOT NULL,
    valid_until     timestamptz NOT NULL,
    -- Empty means any tier / any site.
    tiers           text[] NOT NULL DEFAULT '{}' CHECK (tiers <@ ARRAY['edge', 'cloud']::text[]),
    site_ids        uuid[] NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_until > valid_from)
);
CREATE INDEX vouchers_school ON vouchers (school_site_id, valid_until);

CREATE TABLE voucher_ledger (
    id                     bigserial PRIMARY KEY,
    voucher_id             uuid NOT NULL REFERENCES vouchers(id),
    school_site_id         uuid NOT NULL REFERENCES sites(id),
    kind                   text NOT NULL CHECK (kind IN ('issue', 'hold', 'charge', 'release', 'expiry')),
    amount_uah             bigint NOT NULL,
    lesson_id              uuid REFERENCES lessons(id),
    job_id                 uuid REFERENCES jobs(id),
    -- The hold a charge, release or late expiry settles.
    hold_id                bigint REFERENCES voucher_ledger(id),
    -- The tier of the nodes a charge paid for (reports by node class).
    node_class             text CHECK (node_class IN ('edge', 'cloud')),
    metered_slice_seconds  double precision CHECK (metered_slice_seconds >= 0),
    at                     timestamptz NOT NULL DEFAULT now(),
    note                   text NOT NULL DEFAULT '',
    CHECK ((kind IN ('issue', 'release') AND amount_uah >= 0)
        OR (kind IN ('hold', 'charge', 'expiry') AND amount_uah <= 0)),
    CHECK (lesson_id IS NULL OR job_id IS NULL),
    CHECK (kind NOT IN ('hold', 'charge', 'release') OR lesson_id IS NOT NULL OR job_id IS NOT NULL),
    CHECK (kind NOT IN ('charge', 'release') OR hold_id IS NOT NULL),
    CHECK (kind <> 'charge' OR (node_class IS NOT NULL AND metered_slice_seconds IS NOT NULL))
);
CREATE INDEX voucher_ledger_voucher ON voucher_ledger (voucher_id);
CREATE INDEX voucher_ledger_school_at ON voucher_ledger (school_site_id, at);
CREATE INDEX voucher_ledger_lesson ON voucher_ledger (lesson_id) WHERE lesson_id IS NOT NULL;
CREATE INDEX voucher_ledger_job ON voucher_ledger (job_id) WHERE job_id IS NOT NULL;
-- A voucher is issued once, expires once; a hold is settled once. A second
-- settlement of the same hold (a retried clock step) fails here, not silently.
CREATE UNIQUE INDEX voucher_ledger_one_issue ON voucher_ledger (voucher_id) WHERE kind = 'issue';
CREATE UNIQUE INDEX voucher_ledger_one_expiry ON voucher_ledger (voucher_id) WHERE kind = 'expiry' AND hold_id IS NULL;
CREATE UNIQUE INDEX voucher_ledger_one_release ON voucher_ledger (hold_id) WHERE kind = 'release';
CREATE UNIQUE INDEX voucher_ledger_one_late_expiry ON voucher_ledger (hold_id) WHERE kind = 'expiry';

-- Holds whose owner has finished, waiting for the agents' last usage reports
-- before they are settled. A work queue, not part of the ledger.
CREATE TABLE voucher_settlements (
    hold_id  bigint PRIMARY KEY REFERENCES voucher_ledger(id),
    due_at   timestamptz NOT NULL
);

CREATE TABLE school_quotas (
    school_site_id        uuid PRIMARY KEY REFERENCES sites(id),
    max_concurrent_seats  integer NOT NULL CHECK (max_concurrent_seats BETWEEN 1 AND 100000),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- The ledger and the vouchers it refers to are history: nobody, not even a
-- hand-written statement, may rewrite or remove it.
CREATE FUNCTION vouchers_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'CG002';
END;
$$;

CREATE TRIGGER voucher_ledger_append_only
    BEFORE UPDATE OR DELETE ON voucher_ledger
    FOR EACH ROW EXECUTE FUNCTION vouchers_append_only();
CREATE TRIGGER voucher_ledger_no_truncate
    BEFORE TRUNCATE ON voucher_ledger
    FOR EACH STATEMENT EXECUTE FUNCTION vouchers_append_only();
CREATE TRIGGER vouchers_append_only
    BEFORE UPDATE OR DELETE ON vouchers
    FOR EACH ROW EXECUTE FUNCTION vouchers_append_only();
CREATE TRIGGER vouchers_no_truncate
    BEFORE TRUNCATE ON vouchers
    FOR EACH STATEMENT EXECUTE FUNCTION vouchers_append_only();

-- Refuses any row that would take a voucher below zero. The voucher row is
-- locked first, so concurrent writers serialise and each sees the rows the
-- previous one committed: the database, not only the broker, prevents
-- overspending.
CREATE FUNCTION voucher_ledger_never_negative() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    balance bigint;
BEGIN
    PERFORM 1 FROM vouchers WHERE id = NEW.voucher_id FOR UPDATE;
    IF NEW.amount_uah >= 0 THEN
        RETURN NEW;
    END IF;
    SELECT COALESCE(sum(amount_uah), 0) INTO balance FROM voucher_ledger WHERE voucher_id = NEW.voucher_id;
    IF balance + NEW.amount_uah < 0 THEN
        RAISE EXCEPTION 'voucher % overspent: balance % µAh, % % µAh', NEW.voucher_id, balance, NEW.kind, -NEW.amount_uah
            USING ERRCODE = 'CG003';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER voucher_ledger_never_negative
    BEFORE INSERT ON voucher_ledger
    FOR EACH ROW EXECUTE FUNCTION voucher_ledger_never_negative();
