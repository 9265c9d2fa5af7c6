//! Reads for the broker's gauges (`crate::telemetry::gauges`): sums the
//! database makes in one statement each, so a sample costs two small
//! queries however large the calendar and the ledger grow.

use uuid::Uuid;

use super::Store;

impl Store {
    /// Device slices reserved at this instant, per (node, device index):
    /// reservations whose window holds now, lessons' and jobs' alike.
    pub async fn slices_reserved_now(&self) -> sqlx::Result<Vec<(Uuid, i32, i64)>> {
        sqlx::query_as(
            "SELECT node_id, device_idx, count(*)::bigint FROM reservations
             WHERE device_idx IS NOT NULL AND during @> now()
             GROUP BY node_id, device_idx",
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Each school's balance in micro accelerator-hours over the vouchers
    /// valid now (a voucher past its window counts nothing even before the
    /// expiry entry is written); a school whose vouchers all lapsed shows 0.
    pub async fn voucher_balances_by_school(&self) -> sqlx::Result<Vec<(String, i64)>> {
        sqlx::query_as(
            "SELECT s.name, COALESCE(sum(l.amount_uah)
                 FILTER (WHERE v.valid_from <= now() AND v.valid_until > now()), 0)::bigint
             FROM vouchers v JOIN sites s ON s.id = v.school_site_id
             LEFT JOIN voucher_ledger l ON l.voucher_id = v.id
             GROUP BY s.name",
        )
        .fetch_all(&self.pool)
        .await
    }
}
