//! A booking's voucher cost as REST shows it: in a dry run, what it would
//! hold; for a series or a timetable, the term's total.

use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::vouchers::{Held, hours};

/// What one voucher would give.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VoucherTake {
    pub voucher_id: Uuid,
    /// Exact, six decimals.
    #[schema(example = "0.533334")]
    pub accelerator_hours: String,
}

/// The worst-case cost held on the school's vouchers (metering charges at
/// most this much once the lesson has run).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({"accelerator_hours": "0.533334", "amount_uah": 533334,
    "vouchers": [{"voucher_id": "0190f0c2-7d1e-7c3a-9f0e-2b1d4c5e6f70", "accelerator_hours": "0.533334"}],
    "note": "worst case 0.533334 accelerator-hours: 2 accelerator seat(s) from 2030-09-01T00:00:00Z to 2030-09-01T00:40:01Z"}))]
pub struct VoucherCost {
    /// Exact, six decimals.
    pub accelerator_hours: String,
    /// The same in micro accelerator-hours.
    pub amount_uah: i64,
    /// Soonest-expiring voucher first.
    pub vouchers: Vec<VoucherTake>,
    /// How it was reckoned; empty for a total.
    pub note: String,
}

impl VoucherCost {
    pub fn of(h: &Held) -> Self {
        VoucherCost {
            accelerator_hours: hours(h.amount_uah),
            amount_uah: h.amount_uah,
            vouchers: h
                .takes
                .iter()
                .map(|(v, t)| VoucherTake {
                    voucher_id: *v,
                    accelerator_hours: hours(*t),
                })
                .collect(),
            note: h.note.clone(),
        }
    }
}
