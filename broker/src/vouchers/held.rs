//! What a booking holds on the school's vouchers: its worst-case cost and
//! the vouchers it draws on. A real booking writes it to the ledger; a dry
//! run answers with it and writes nothing.

use serde::Serialize;
use uuid::Uuid;

use super::MicroHours;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Held {
    /// µAh held in all (0 for a booking that costs nothing, e.g. CPU seats).
    pub amount_uah: MicroHours,
    /// (voucher, µAh) per voucher drawn on, soonest-expiring first.
    pub takes: Vec<(Uuid, MicroHours)>,
    /// How the amount was reckoned, as the ledger's note says it.
    pub note: String,
}

impl Held {
    /// The holds of several bookings added up per voucher, in the order the
    /// vouchers were first drawn on: a term's cost.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a Held>) -> Held {
        let mut total = Held::default();
        for h in all {
            total.amount_uah += h.amount_uah;
            for (id, take) in &h.takes {
                match total.takes.iter_mut().find(|(v, _)| v == id) {
                    Some((_, t)) => *t += take,
                    None => total.takes.push((*id, *take)),
                }
            }
        }
        total
    }
}

impl Held {
    /// The cost as one line, e.g. `0.533334 accelerator-hours on voucher
    /// 0190…: 0.533334`, or that it costs nothing.
    pub fn sentence(&self) -> String {
        if self.amount_uah == 0 {
            return "no voucher cost (no accelerator seats)".into();
        }
        let per: Vec<String> = self
            .takes
            .iter()
            .map(|(v, t)| format!("{v}: {}", super::hours(*t)))
            .collect();
        format!(
            "{} accelerator-hours (worst case) on voucher {}",
            super::hours(self.amount_uah),
            per.join(", voucher ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terms_cost_adds_up_per_voucher_in_first_use_order() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let h = |takes: Vec<(Uuid, i64)>| Held {
            amount_uah: takes.iter().map(|t| t.1).sum(),
            takes,
            note: String::new(),
        };
        let total = Held::sum(&[
            h(vec![(a, 100)]),
            h(vec![(a, 50), (b, 50)]),
            h(vec![(b, 7)]),
        ]);
        assert_eq!(total.amount_uah, 207);
        assert_eq!(total.takes, vec![(a, 150), (b, 57)]);
        assert_eq!(
            total.sentence(),
            format!(
                "0.000207 accelerator-hours (worst case) on voucher {a}: 0.000150, voucher {b}: 0.000057"
            )
        );
        assert!(Held::default().sentence().starts_with("no voucher cost"));
    }
}
