//! Vouchers, the append-only ledger, settlement queue and seat quotas.
//! Every balance is a sum of ledger rows; nothing here updates a row.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use classgrid_placement::Owner;
use sqlx::{FromRow, Postgres, Transaction};
use uuid::Uuid;

use super::Store;
use crate::vouchers::{
    EligibleVoucher, MicroHours,
    quota::Busy,
    report::{GroupBy, UsageRow},
};

type Tx<'a> = Transaction<'a, Postgres>;

pub struct NewVoucher<'a> {
    pub id: Uuid,
    pub request_id: Option<&'a str>,
    pub school_site_id: Uuid,
    pub programme: &'a str,
    pub issued_by: &'a str,
    pub amount_uah: MicroHours,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub tiers: &'a [String],
    pub site_ids: &'a [Uuid],
}

/// A voucher with the sums of its ledger rows.
#[derive(Debug, Clone, FromRow)]
pub struct VoucherRow {
    pub id: Uuid,
    pub school_site_id: Uuid,
    pub school_site: String,
    pub programme: String,
    pub issued_by: String,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub tiers: Vec<String>,
    pub site_ids: Vec<Uuid>,
    pub created_at: DateTime<Utc>,
    pub issued_uah: i64,
    pub held_uah: i64,
    pub charged_uah: i64,
    pub expired_uah: i64,
    pub balance_uah: i64,
    pub expired: bool,
}

#[derive(Debug, Clone, FromRow)]
pub struct LedgerRow {
    pub id: i64,
    pub voucher_id: Uuid,
    pub school_site: String,
    pub kind: String,
    pub amount_uah: i64,
    pub lesson_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub hold_id: Option<i64>,
    pub node_class: Option<String>,
    pub metered_slice_seconds: Option<f64>,
    pub at: DateTime<Utc>,
    pub note: String,
}

/// One ledger row to append.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    pub voucher_id: Uuid,
    pub school_site_id: Uuid,
    pub kind: &'static str,
    pub amount_uah: MicroHours,
    pub owner: Option<Owner>,
    /// The lesson a peer region hosts, when the row pays for one
    /// (`owner` is then None; decision 105).
    pub borrowed_lesson_id: Option<Uuid>,
    pub hold_id: Option<i64>,
    pub node_class: Option<&'a str>,
    pub metered_slice_seconds: Option<f64>,
    pub note: &'a str,
}

/// A hold not yet settled.
#[derive(Debug, Clone, FromRow)]
pub struct HoldRow {
    pub id: i64,
    pub voucher_id: Uuid,
    pub school_site_id: Uuid,
    /// Negative, as written.
    pub amount_uah: i64,
    pub lesson_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub borrowed_lesson_id: Option<Uuid>,
    pub valid_until: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

impl HoldRow {
    pub fn owner(&self) -> Option<Owner> {
        match (self.lesson_id, self.job_id) {
            (Some(l), _) => Some(Owner::Lesson(l)),
            (None, Some(j)) => Some(Owner::Job(j)),
            _ => None,
        }
    }
}

/// What one assignment metered, with where it ran.
#[derive(Debug, Clone, FromRow)]
pub struct MeteredRow {
    pub slice_seconds: f64,
    pub tier: String,
    pub models: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct LedgerFilter {
    pub school_site_id: Option<Uuid>,
    pub voucher_id: Option<Uuid>,
    pub lesson_id: Option<Uuid>,
    pub job_id: Option<Uuid>,
    pub kinds: Vec<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub after_id: i64,
    pub limit: i64,
}

fn owner_ids(o: Option<Owner>) -> (Option<Uuid>, Option<Uuid>) {
    match o {
        Some(Owner::Lesson(id)) => (Some(id), None),
        Some(Owner::Job(id)) => (None, Some(id)),
        None => (None, None),
    }
}

const VOUCHER_SELECT: &str =
    "SELECT v.id, v.school_site_id, s.name AS school_site, v.programme, v.issued_by,
    v.valid_from, v.valid_until, v.tiers, v.site_ids, v.created_at,
    COALESCE(sum(l.amount_uah) FILTER (WHERE l.kind = 'issue'), 0)::bigint AS issued_uah,
    (COALESCE(-sum(l.amount_uah) FILTER (WHERE l.kind = 'hold'), 0)
        - COALESCE(sum(l.amount_uah) FILTER (WHERE l.kind = 'release'), 0))::bigint AS held_uah,
    COALESCE(-sum(l.amount_uah) FILTER (WHERE l.kind = 'charge'), 0)::bigint AS charged_uah,
    COALESCE(-sum(l.amount_uah) FILTER (WHERE l.kind = 'expiry'), 0)::bigint AS expired_uah,
    COALESCE(sum(l.amount_uah), 0)::bigint AS balance_uah,
    COALESCE(bool_or(l.kind = 'expiry' AND l.hold_id IS NULL), false) AS expired
    FROM vouchers v JOIN sites s ON s.id = v.school_site_id
    LEFT JOIN voucher_ledger l ON l.voucher_id = v.id";

const LEDGER_COLS: &str = "l.id, l.voucher_id, s.name AS school_site, l.kind, l.amount_uah,
    COALESCE(l.lesson_id, l.borrowed_lesson_id) AS lesson_id, l.job_id,
    l.hold_id, l.node_class, l.metered_slice_seconds, l.at, l.note";

const HOLD_COLS: &str = "l.id, l.voucher_id, l.school_site_id, l.amount_uah, l.lesson_id, l.job_id,
    l.borrowed_lesson_id, v.valid_until, l.at";

impl Store {
    pub async fn postpone_settlement(
        &self,
        hold_ids: &[i64],
        due_at: DateTime<Utc>,
    ) -> sqlx::Result<()> {
        postpone_settlement(&self.pool, hold_ids, due_at).await
    }

    pub async fn owner_assignment_nodes(
        &self,
        owner: Owner,
        from: DateTime<Utc>,
    ) -> sqlx::Result<Vec<(Uuid, DateTime<Utc>, bool)>> {
        owner_assignment_nodes(&self.pool, owner, from).await
    }

    pub async fn voucher_by_request_id(&self, rid: &str) -> sqlx::Result<Option<Uuid>> {
        sqlx::query_scalar("SELECT id FROM vouchers WHERE request_id = $1")
            .bind(rid)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn list_vouchers(
        &self,
        school_site_id: Option<Uuid>,
        voucher_id: Option<Uuid>,
    ) -> sqlx::Result<Vec<VoucherRow>> {
        sqlx::query_as(sql!(
            "{VOUCHER_SELECT} WHERE ($1::uuid IS NULL OR v.school_site_id = $1)
               AND ($2::uuid IS NULL OR v.id = $2)
             GROUP BY v.id, s.name ORDER BY s.name, v.valid_until, v.id"
        ))
        .bind(school_site_id)
        .bind(voucher_id)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn ledger(&self, f: &LedgerFilter) -> sqlx::Result<Vec<LedgerRow>> {
        sqlx::query_as(sql!(
            "SELECT {LEDGER_COLS} FROM voucher_ledger l JOIN sites s ON s.id = l.school_site_id
             WHERE l.id > $1
               AND ($2::uuid IS NULL OR l.school_site_id = $2)
               AND ($3::uuid IS NULL OR l.voucher_id = $3)
               AND ($4::uuid IS NULL OR l.lesson_id = $4 OR l.borrowed_lesson_id = $4)
               AND ($5::uuid IS NULL OR l.job_id = $5)
               AND (cardinality($6::text[]) = 0 OR l.kind = ANY($6))
               AND ($7::timestamptz IS NULL OR l.at >= $7)
               AND ($8::timestamptz IS NULL OR l.at < $8)
             ORDER BY l.id LIMIT $9"
        ))
        .bind(f.after_id)
        .bind(f.school_site_id)
        .bind(f.voucher_id)
        .bind(f.lesson_id)
        .bind(f.job_id)
        .bind(&f.kinds)
        .bind(f.from)
        .bind(f.to)
        .bind(f.limit)
        .fetch_all(&self.pool)
        .await
    }

    /// Charged use grouped by `by`, from the charge rows of the ledger.
    pub async fn usage(
        &self,
        by: GroupBy,
        school_site_id: Option<Uuid>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> sqlx::Result<Vec<UsageRow>> {
        let (key, label) = match by {
            GroupBy::School => ("s.name", "''"),
            GroupBy::Voucher => ("v.id::text", "min(v.programme || ' (' || s.name || ')')"),
            GroupBy::Month => ("to_char(l.at AT TIME ZONE 'UTC', 'YYYY-MM')", "''"),
            GroupBy::NodeClass => ("l.node_class", "''"),
        };
        let rows: Vec<(String, String, i64, f64, i64, i64)> = sqlx::query_as(sql!(
            "SELECT {key} AS key, {label} AS label, (-sum(l.amount_uah))::bigint,
                    COALESCE(sum(l.metered_slice_seconds), 0)::float8,
                    count(DISTINCT COALESCE(l.lesson_id, l.borrowed_lesson_id)), count(DISTINCT l.job_id)
             FROM voucher_ledger l JOIN sites s ON s.id = l.school_site_id JOIN vouchers v ON v.id = l.voucher_id
             WHERE l.kind = 'charge'
               AND ($1::uuid IS NULL OR l.school_site_id = $1)
               AND ($2::timestamptz IS NULL OR l.at >= $2)
               AND ($3::timestamptz IS NULL OR l.at < $3)
             GROUP BY 1 ORDER BY 1"
        ))
        .bind(school_site_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(key, label, charged, secs, lessons, jobs)| UsageRow {
                key,
                label,
                charged_uah: charged,
                metered_slice_seconds: secs,
                lessons,
                jobs,
            })
            .collect())
    }

    pub async fn quota(&self, school_site_id: Uuid) -> sqlx::Result<Option<i32>> {
        sqlx::query_scalar(
            "SELECT max_concurrent_seats FROM school_quotas WHERE school_site_id = $1",
        )
        .bind(school_site_id)
        .fetch_optional(&self.pool)
        .await
    }

    /// Sets the quota; `None` removes it.
    pub async fn set_quota(&self, school_site_id: Uuid, max: Option<i32>) -> sqlx::Result<()> {
        match max {
            Some(n) => sqlx::query(
                "INSERT INTO school_quotas (school_site_id, max_concurrent_seats) VALUES ($1, $2)
                 ON CONFLICT (school_site_id) DO UPDATE SET max_concurrent_seats = $2, updated_at = now()",
            )
            .bind(school_site_id)
            .bind(n)
            .execute(&self.pool)
            .await?,
            None => sqlx::query("DELETE FROM school_quotas WHERE school_site_id = $1")
                .bind(school_site_id)
                .execute(&self.pool)
                .await?,
        };
        Ok(())
    }

    /// Vouchers past their date that have no expiry row yet.
    pub async fn vouchers_due_to_expire(&self, now: DateTime<Utc>) -> sqlx::Result<Vec<Uuid>> {
        sqlx::query_scalar(
            "SELECT v.id FROM vouchers v WHERE v.valid_until <= $1 AND NOT EXISTS
               (SELECT 1 FROM voucher_ledger l WHERE l.voucher_id = v.id AND l.kind = 'expiry' AND l.hold_id IS NULL)
             ORDER BY v.valid_until LIMIT 100",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await
    }

    /// Queued settlements that are due, as open holds.
    pub async fn settlements_due(&self, now: DateTime<Utc>) -> sqlx::Result<Vec<HoldRow>> {
        sqlx::query_as(sql!(
            "SELECT {HOLD_COLS} FROM voucher_settlements q
               JOIN voucher_ledger l ON l.id = q.hold_id JOIN vouchers v ON v.id = l.voucher_id
             WHERE q.due_at <= $1 ORDER BY q.due_at, l.id LIMIT 500"
        ))
        .bind(now)
        .fetch_all(&self.pool)
        .await
    }
}

pub async fn insert_voucher(tx: &mut Tx<'_>, v: &NewVoucher<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO vouchers (id, request_id, school_site_id, programme, issued_by, amount_uah,
            valid_from, valid_until, tiers, site_ids)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(v.id)
    .bind(v.request_id)
    .bind(v.school_site_id)
    .bind(v.programme)
    .bind(v.issued_by)
    .bind(v.amount_uah)
    .bind(v.valid_from)
    .bind(v.valid_until)
    .bind(v.tiers)
    .bind(v.site_ids)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn append(tx: &mut Tx<'_>, e: &NewEntry<'_>) -> sqlx::Result<i64> {
    let (lesson_id, job_id) = owner_ids(e.owner);
    sqlx::query_scalar(
        "INSERT INTO voucher_ledger (voucher_id, school_site_id, kind, amount_uah, lesson_id, job_id,
            hold_id, node_class, metered_slice_seconds, note, borrowed_lesson_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
    )
    .bind(e.voucher_id)
    .bind(e.school_site_id)
    .bind(e.kind)
    .bind(e.amount_uah)
    .bind(lesson_id)
    .bind(job_id)
    .bind(e.hold_id)
    .bind(e.node_class)
    .bind(e.metered_slice_seconds)
    .bind(e.note)
    .bind(e.borrowed_lesson_id)
    .fetch_one(&mut **tx)
    .await
}

/// Appends many entries in one statement (the holds of a batch of
/// bookings).
pub async fn append_many(tx: &mut Tx<'_>, es: &[NewEntry<'_>]) -> sqlx::Result<()> {
    if es.is_empty() {
        return Ok(());
    }
    let owners: Vec<_> = es.iter().map(|e| owner_ids(e.owner)).collect();
    sqlx::query(
        "INSERT INTO voucher_ledger (voucher_id, school_site_id, kind, amount_uah, lesson_id, job_id,
            hold_id, node_class, metered_slice_seconds, note, borrowed_lesson_id)
         SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::int8[], $5::uuid[], $6::uuid[],
            $7::int8[], $8::text[], $9::float8[], $10::text[], $11::uuid[])",
    )
    .bind(es.iter().map(|e| e.voucher_id).collect::<Vec<_>>())
    .bind(es.iter().map(|e| e.school_site_id).collect::<Vec<_>>())
    .bind(es.iter().map(|e| e.kind).collect::<Vec<_>>())
    .bind(es.iter().map(|e| e.amount_uah).collect::<Vec<_>>())
    .bind(owners.iter().map(|o| o.0).collect::<Vec<_>>())
    .bind(owners.iter().map(|o| o.1).collect::<Vec<_>>())
    .bind(es.iter().map(|e| e.hold_id).collect::<Vec<_>>())
    .bind(es.iter().map(|e| e.node_class).collect::<Vec<_>>())
    .bind(es.iter().map(|e| e.metered_slice_seconds).collect::<Vec<_>>())
    .bind(es.iter().map(|e| e.note).collect::<Vec<_>>())
    .bind(es.iter().map(|e| e.borrowed_lesson_id).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Locks the schools' quota rows (serialising their bookings), in school
/// order, and returns the quotas that are set.
pub async fn lock_quotas(tx: &mut Tx<'_>, schools: &[Uuid]) -> sqlx::Result<HashMap<Uuid, i32>> {
    let rows: Vec<(Uuid, i32)> = sqlx::query_as(
        "SELECT school_site_id, max_concurrent_seats FROM school_quotas
          WHERE school_site_id = ANY($1) ORDER BY school_site_id FOR UPDATE",
    )
    .bind(schools)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Seats of the school busy within `[start, end)`: its lessons' live seats,
/// its lessons hosted by peer regions and its running jobs, except the
/// booking being checked.
pub async fn busy_seats(
    tx: &mut Tx<'_>,
    school_site_id: Uuid,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    except: Owner,
) -> sqlx::Result<Vec<Busy>> {
    let (lesson, job) = owner_ids(Some(except));
    let rows: Vec<(DateTime<Utc>, DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT l.start_at, l.start_at + make_interval(secs => l.duration_s), count(se.id)
           FROM lessons l JOIN seats se ON se.lesson_id = l.id
          WHERE l.school_site_id = $1 AND l.state NOT IN ('ended', 'cancelled')
            AND se.state NOT IN ('released', 'failed', 'replaced')
            AND l.id IS DISTINCT FROM $4
            AND l.start_at < $3 AND l.start_at + make_interval(secs => l.duration_s) > $2
          GROUP BY l.id
         UNION ALL
         SELECT j.started_at, j.started_at + make_interval(secs => j.max_runtime_s), 1
           FROM jobs j
          WHERE j.school_site_id = $1 AND j.state = 'running' AND j.started_at IS NOT NULL
            AND j.id IS DISTINCT FROM $5
            AND j.started_at < $3 AND j.started_at + make_interval(secs => j.max_runtime_s) > $2
         UNION ALL
         SELECT b.start_at, b.end_at, b.seats
           FROM borrowed_lessons b
          WHERE b.school_site_id = $1 AND b.state IN ('held', 'committed')
            AND COALESCE(b.last_seen->>'state', '') NOT IN ('ended', 'cancelled')
            AND b.lesson_id IS DISTINCT FROM $4
            AND b.start_at < $3 AND b.end_at > $2",
    )
    .bind(school_site_id)
    .bind(start)
    .bind(end)
    .bind(lesson)
    .bind(job)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(start, end, seats)| Busy { start, end, seats })
        .collect())
}

/// Locks the schools' vouchers still valid at `now`, in voucher id order,
/// and returns them by school with their balances, read after the locks
/// (a balance read in the locking statement could predate a commit it
/// waited for).
pub async fn lock_live_vouchers(
    tx: &mut Tx<'_>,
    schools: &[Uuid],
    now: DateTime<Utc>,
) -> sqlx::Result<HashMap<Uuid, Vec<EligibleVoucher>>> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM vouchers WHERE school_site_id = ANY($1) AND valid_until > $2 ORDER BY id FOR UPDATE",
    )
    .bind(schools)
    .bind(now)
    .fetch_all(&mut **tx)
    .await?;
    let mut by_school: HashMap<Uuid, Vec<EligibleVoucher>> = HashMap::new();
    if ids.is_empty() {
        return Ok(by_school);
    }
    type Row = (
        Uuid,
        Uuid,
        DateTime<Utc>,
        DateTime<Utc>,
        Vec<String>,
        Vec<Uuid>,
        i64,
    );
    let rows: Vec<Row> =
        sqlx::query_as(
            "SELECT v.id, v.school_site_id, v.valid_from, v.valid_until, v.tiers, v.site_ids,
                    COALESCE((SELECT sum(l.amount_uah) FROM voucher_ledger l WHERE l.voucher_id = v.id), 0)::bigint
               FROM vouchers v WHERE v.id = ANY($1) ORDER BY v.id",
        )
        .bind(&ids)
        .fetch_all(&mut **tx)
        .await?;
    for (id, school, valid_from, valid_until, tiers, site_ids, balance) in rows {
        by_school.entry(school).or_default().push(EligibleVoucher {
            id,
            valid_from,
            valid_until,
            tiers,
            site_ids,
            balance,
        });
    }
    Ok(by_school)
}

/// Locks vouchers by id, in id order.
pub async fn lock_vouchers(tx: &mut Tx<'_>, ids: &[Uuid]) -> sqlx::Result<()> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids.dedup();
    sqlx::query("SELECT id FROM vouchers WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .bind(&ids)
        .fetch_all(&mut **tx)
        .await?;
    Ok(())
}

pub async fn balance_of(tx: &mut Tx<'_>, voucher_id: Uuid) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT COALESCE(sum(amount_uah), 0)::bigint FROM voucher_ledger WHERE voucher_id = $1",
    )
    .bind(voucher_id)
    .fetch_one(&mut **tx)
    .await
}

pub async fn has_expired(tx: &mut Tx<'_>, voucher_id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM voucher_ledger WHERE voucher_id = $1 AND kind = 'expiry' AND hold_id IS NULL)",
    )
    .bind(voucher_id)
    .fetch_one(&mut **tx)
    .await
}

/// Holds of `owner` that are neither settled nor queued for settlement.
pub async fn unsettled_holds(tx: &mut Tx<'_>, owner: Owner) -> sqlx::Result<Vec<HoldRow>> {
    let (lesson, job) = owner_ids(Some(owner));
    sqlx::query_as(sql!(
        "SELECT {HOLD_COLS} FROM voucher_ledger l JOIN vouchers v ON v.id = l.voucher_id
          WHERE l.kind = 'hold' AND (l.lesson_id = $1 OR l.job_id = $2)
            AND NOT EXISTS (SELECT 1 FROM voucher_ledger r WHERE r.hold_id = l.id AND r.kind = 'release')
            AND NOT EXISTS (SELECT 1 FROM voucher_settlements q WHERE q.hold_id = l.id)
          ORDER BY v.valid_until, v.id, l.id"
    ))
    .bind(lesson)
    .bind(job)
    .fetch_all(&mut **tx)
    .await
}

/// Holds of a borrowed lesson without a release row, soonest-expiring
/// voucher first.
pub async fn borrowed_open_holds(
    tx: &mut Tx<'_>,
    borrowed_lesson_id: Uuid,
) -> sqlx::Result<Vec<HoldRow>> {
    sqlx::query_as(sql!(
        "SELECT {HOLD_COLS} FROM voucher_ledger l JOIN vouchers v ON v.id = l.voucher_id
          WHERE l.kind = 'hold' AND l.borrowed_lesson_id = $1
            AND NOT EXISTS (SELECT 1 FROM voucher_ledger r WHERE r.hold_id = l.id AND r.kind = 'release')
          ORDER BY v.valid_until, v.id, l.id"
    ))
    .bind(borrowed_lesson_id)
    .fetch_all(&mut **tx)
    .await
}

/// Of `hold_ids`, those without a release row: a settlement retried after a
/// crash skips what is already settled.
pub async fn still_open(tx: &mut Tx<'_>, hold_ids: &[i64]) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar(
        "SELECT h FROM unnest($1::bigint[]) h
          WHERE NOT EXISTS (SELECT 1 FROM voucher_ledger r WHERE r.hold_id = h AND r.kind = 'release')",
    )
    .bind(hold_ids)
    .fetch_all(&mut **tx)
    .await
}

pub async fn queue_settlement(
    tx: &mut Tx<'_>,
    hold_ids: &[i64],
    due_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO voucher_settlements (hold_id, due_at) SELECT unnest($1::bigint[]), $2
         ON CONFLICT (hold_id) DO NOTHING",
    )
    .bind(hold_ids)
    .bind(due_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn dequeue_settlement(tx: &mut Tx<'_>, hold_ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM voucher_settlements WHERE hold_id = ANY($1)")
        .bind(hold_ids)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Moves queued settlements to `due_at` (a later look).
pub async fn postpone_settlement(
    exec: impl sqlx::PgExecutor<'_>,
    hold_ids: &[i64],
    due_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE voucher_settlements SET due_at = $2 WHERE hold_id = ANY($1)")
        .bind(hold_ids)
        .bind(due_at)
        .execute(exec)
        .await?;
    Ok(())
}

/// Each assignment the owner ran since `from`: its node, its end time, and
/// whether its agent's final report (the last of its usage) has come.
pub async fn owner_assignment_nodes(
    exec: impl sqlx::PgExecutor<'_>,
    owner: Owner,
    from: DateTime<Utc>,
) -> sqlx::Result<Vec<(Uuid, DateTime<Utc>, bool)>> {
    let (lesson, job) = owner_ids(Some(owner));
    sqlx::query_as(
        "SELECT a.node_id, a.ends_at, a.final_report_at IS NOT NULL FROM assignments a
          WHERE (a.seat_id IN (SELECT id FROM seats WHERE lesson_id = $1) OR a.job_id = $2)
            AND a.created_at >= $3",
    )
    .bind(lesson)
    .bind(job)
    .bind(from)
    .fetch_all(exec)
    .await
}

/// The start of the owner's next hold group after `at`, if any: the metered
/// use of a hold group is what its owner ran between its hold and the next.
pub async fn next_hold_at(
    tx: &mut Tx<'_>,
    owner: Owner,
    at: DateTime<Utc>,
) -> sqlx::Result<Option<DateTime<Utc>>> {
    let (lesson, job) = owner_ids(Some(owner));
    sqlx::query_scalar(
        "SELECT min(at) FROM voucher_ledger WHERE kind = 'hold' AND (lesson_id = $1 OR job_id = $2) AND at > $3",
    )
    .bind(lesson)
    .bind(job)
    .bind(at)
    .fetch_one(&mut **tx)
    .await
}

/// What the owner's assignments created in `[from, to)` metered, with the
/// tier of their node and the models of their devices.
pub async fn metered(
    tx: &mut Tx<'_>,
    owner: Owner,
    from: DateTime<Utc>,
    to: Option<DateTime<Utc>>,
) -> sqlx::Result<Vec<MeteredRow>> {
    let (lesson, job) = owner_ids(Some(owner));
    sqlx::query_as(
        "SELECT a.slice_seconds, n.tier,
                ARRAY(SELECT d.model FROM jsonb_array_elements(a.payload->'gpus') g
                        JOIN devices d ON d.node_id = a.node_id AND d.idx = (g->>'device_index')::int) AS models
           FROM assignments a JOIN nodes n ON n.id = a.node_id
          WHERE (a.seat_id IN (SELECT id FROM seats WHERE lesson_id = $1) OR a.job_id = $2)
            AND a.created_at >= $3 AND ($4::timestamptz IS NULL OR a.created_at < $4)",
    )
    .bind(lesson)
    .bind(job)
    .bind(from)
    .bind(to)
    .fetch_all(&mut **tx)
    .await
}

/// True when the owner started any work since `from` (so there is usage to
/// wait for before settling).
pub async fn has_assignments_since(
    tx: &mut Tx<'_>,
    owner: Owner,
    from: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let (lesson, job) = owner_ids(Some(owner));
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM assignments a
          WHERE (a.seat_id IN (SELECT id FROM seats WHERE lesson_id = $1) OR a.job_id = $2)
            AND a.created_at >= $3)",
    )
    .bind(lesson)
    .bind(job)
    .bind(from)
    .fetch_one(&mut **tx)
    .await
}

/// True when the error is the ledger trigger refusing to go below zero.
pub fn is_overspend(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("CG003"))
}

/// The school a voucher belongs to.
pub async fn school_of(tx: &mut Transaction<'_, Postgres>, voucher: Uuid) -> sqlx::Result<Uuid> {
    sqlx::query_scalar("SELECT school_site_id FROM vouchers WHERE id = $1")
        .bind(voucher)
        .fetch_one(&mut **tx)
        .await
}
