//! The school's vouchers for a lesson a peer region hosts (decision 105).
//! The lender prices its offer; home holds that worst case on the school's
//! vouchers in the transaction that writes the borrowed lesson, before it
//! commits. When the lender's settlement line arrives, home records it and
//! charges it against the hold in one transaction, never beyond the hold.
//! A borrowed lesson no lender committed gives its hold back.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use classgrid_placement::Owner;
use uuid::Uuid;

use super::settlement::write_settlement;
use crate::{
    domain::ServiceError,
    state::Broker,
    store::{
        borrowed::{self as borrowed_store, BorrowedRow},
        settlement::{self as settlement_store, Settled},
        vouchers::{self as store, HoldRow, NewEntry},
    },
    vouchers::{MicroHours, Need, allocate, allocate::by_seat_tiers, hours},
};

/// What a lender asks the school's vouchers to hold for an offer.
#[derive(Debug, Clone, PartialEq)]
pub struct OfferPrice {
    pub worst_case_uah: MicroHours,
    /// One tier per offered seat ("edge" or "cloud").
    pub seat_tiers: Vec<String>,
}

impl OfferPrice {
    /// The price from a peer's answer, refused with the field and the rule
    /// when a hostile or broken peer sends one that cannot be held.
    pub fn from_answer(
        worst_case_uah: i64,
        seat_tiers: &[String],
        seats: usize,
    ) -> Result<Self, String> {
        if worst_case_uah < 0 {
            return Err(format!(
                "answered worst_case_uah {worst_case_uah}: must be at least 0"
            ));
        }
        if seat_tiers.len() != seats {
            return Err(format!(
                "answered {} seat_tiers for {seats} seats: must be one per seat",
                seat_tiers.len()
            ));
        }
        if let Some(t) = seat_tiers
            .iter()
            .find(|t| !matches!(t.as_str(), "edge" | "cloud"))
        {
            return Err(format!(
                "answered seat tier {:?}: must be edge or cloud",
                t.chars().take(32).collect::<String>()
            ));
        }
        Ok(Self {
            worst_case_uah,
            seat_tiers: seat_tiers.to_vec(),
        })
    }
}

impl Broker {
    /// In the transaction that writes the borrowed lesson `held`: checks the
    /// school's seat quota (its hosted lessons count like its own) and holds
    /// the lender's worst case on vouchers valid from the start to the end
    /// plus grace, unrestricted by site (a peer's nodes are at none of this
    /// region's sites) and admitting every seat's tier. The inner `Err` is
    /// the refusal sentence.
    pub(crate) async fn hold_for_borrowed(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        b: &BorrowedRow,
        region: &str,
        price: &OfferPrice,
    ) -> Result<Result<(), String>, ServiceError> {
        let school = self
            .fleet
            .site_by_id(b.school_site_id)
            .map(|s| s.name)
            .unwrap_or_else(|| b.school_site_id.to_string());
        let lock = self.lock_school_vouchers(tx, b.school_site_id).await?;
        let owner = Owner::Lesson(b.lesson_id);
        let window = (b.start_at, b.end_at);
        let requested = i64::from(b.seats);
        if let Some(s) = lock
            .quota_refusal(tx, owner, b.school_site_id, window, requested, &school)
            .await?
        {
            return Ok(Err(s));
        }
        if price.worst_case_uah == 0 {
            return Ok(Ok(()));
        }
        let grace = chrono::Duration::from_std(self.cfg.grace).unwrap_or_default();
        let need = Need {
            amount: price.worst_case_uah,
            start: b.start_at,
            end: b.end_at + grace,
            nodes: price
                .seat_tiers
                .iter()
                .map(|t| (t.clone(), Uuid::nil()))
                .collect(),
        };
        let takes = match allocate(lock.vouchers(), &need) {
            Ok(t) => t,
            Err(short) => return Ok(Err(short.sentence(&school))),
        };
        let note = format!(
            "worst case {} accelerator-hours: {} seat(s) hosted by region {region} from {} to {}",
            hours(price.worst_case_uah),
            b.seats,
            rfc3339(need.start),
            rfc3339(need.end)
        );
        let entries: Vec<NewEntry> = takes
            .iter()
            .map(|&(voucher_id, take)| NewEntry {
                voucher_id,
                school_site_id: b.school_site_id,
                kind: "hold",
                amount_uah: -take,
                owner: None,
                borrowed_lesson_id: Some(b.lesson_id),
                hold_id: None,
                node_class: None,
                metered_slice_seconds: None,
                note: &note,
            })
            .collect();
        store::append_many(tx, &entries).await?;
        Ok(Ok(()))
    }

    /// Forgets a borrowed lesson still `held` that no lender committed, and
    /// gives its voucher hold back, in one transaction. A lesson committed
    /// meanwhile is kept, hold and all.
    pub(crate) async fn forget_held_borrowed(
        &self,
        lesson_id: Uuid,
        why: &str,
    ) -> Result<(), ServiceError> {
        let mut tx = self.store.begin().await?;
        if !borrowed_store::delete_held(&mut tx, lesson_id).await? {
            return Ok(());
        }
        let holds = store::borrowed_open_holds(&mut tx, lesson_id).await?;
        let open: Vec<&HoldRow> = holds.iter().collect();
        lock(&mut tx, &open).await?;
        let note = format!("released: {why}");
        write_settlement(&mut tx, &open, &BTreeMap::new(), Some(&note)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records the lender's settlement line of a borrowed lesson and charges
    /// it to the school's vouchers in one transaction: each open hold is
    /// released and the line's amount charged in its place, split over the
    /// seats' node tiers, never beyond what was held. Runs once: a line
    /// already recorded finds no open hold.
    pub(crate) async fn charge_borrowed(
        &self,
        b: &BorrowedRow,
        line: Settled,
        seat_tiers: &[String],
    ) -> Result<(), ServiceError> {
        let mut tx = self.store.begin().await?;
        settlement_store::record(&mut *tx, b.peering_id, "borrowed", b.lesson_id, line).await?;
        let holds = store::borrowed_open_holds(&mut tx, b.lesson_id).await?;
        let open: Vec<&HoldRow> = holds.iter().collect();
        lock(&mut tx, &open).await?;
        let mut by_class: BTreeMap<String, (MicroHours, f64)> = BTreeMap::new();
        let amount = line.amount_uah.max(0);
        for (tier, uah) in by_seat_tiers(amount, seat_tiers) {
            let secs = if amount > 0 {
                line.slice_seconds.max(0.0) * uah as f64 / amount as f64
            } else {
                0.0
            };
            by_class.insert(tier, (uah, secs));
        }
        write_settlement(&mut tx, &open, &by_class, None).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Locks the vouchers the holds draw on, as every ledger writer does
/// before it appends.
async fn lock(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    holds: &[&HoldRow],
) -> sqlx::Result<()> {
    let ids: Vec<Uuid> = holds.iter().map(|h| h.voucher_id).collect();
    store::lock_vouchers(tx, &ids).await
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiers(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_peer_price_is_refused_naming_the_field_and_the_rule() {
        let ok = OfferPrice::from_answer(5, &tiers(&["edge", "cloud"]), 2).unwrap();
        assert_eq!(ok.worst_case_uah, 5);
        let neg = OfferPrice::from_answer(-1, &tiers(&["edge"]), 1).unwrap_err();
        assert!(
            neg.contains("worst_case_uah -1: must be at least 0"),
            "{neg}"
        );
        let short = OfferPrice::from_answer(1, &tiers(&["edge"]), 2).unwrap_err();
        assert!(short.contains("1 seat_tiers for 2 seats"), "{short}");
        let odd = OfferPrice::from_answer(1, &tiers(&["moon"]), 1).unwrap_err();
        assert!(odd.contains("\"moon\": must be edge or cloud"), "{odd}");
    }
}
