//! Which vouchers pay for a booking (soonest-expiring first, only those valid
//! for the whole window whose restriction matches every chosen node), and
//! how a metered charge is split over the holds it settles.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{MicroHours, hours};

/// A voucher of the school, with its balance (the sum of its ledger rows).
#[derive(Debug, Clone, PartialEq)]
pub struct EligibleVoucher {
    pub id: Uuid,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    /// Empty: any tier.
    pub tiers: Vec<String>,
    /// Empty: any site.
    pub site_ids: Vec<Uuid>,
    pub balance: MicroHours,
}

/// What a booking must hold: an amount, for a window, on some nodes.
#[derive(Debug, Clone)]
pub struct Need {
    pub amount: MicroHours,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// (tier, site) of every node a seat was placed on.
    pub nodes: Vec<(String, Uuid)>,
}

/// Why a booking cannot be held, with the numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    pub needed: MicroHours,
    /// On vouchers valid for the window and the chosen nodes.
    pub available: MicroHours,
    pub eligible_vouchers: usize,
    /// On the school's other vouchers: wrong window, tier or site.
    pub elsewhere: MicroHours,
}

impl Shortfall {
    pub fn sentence(&self, school: &str) -> String {
        let mut s = format!(
            "voucher balance: {} accelerator-hours needed, {} available on {} eligible voucher(s) of school {school}",
            hours(self.needed),
            hours(self.available),
            self.eligible_vouchers
        );
        if self.elsewhere > 0 {
            s.push_str(&format!(
                " ({} more on vouchers not valid for this window or not for these nodes' tier or site)",
                hours(self.elsewhere)
            ));
        }
        s.push_str("; ask the district for a voucher, or book fewer seats, a smaller slice or a shorter lesson");
        s
    }
}

/// True when `v` may pay for `need`: valid for the whole window, and its
/// tier and site restrictions admit every chosen node.
pub fn covers(v: &EligibleVoucher, need: &Need) -> bool {
    v.valid_from <= need.start
        && v.valid_until >= need.end
        && need.nodes.iter().all(|(tier, site)| {
            (v.tiers.is_empty() || v.tiers.iter().any(|t| t == tier))
                && (v.site_ids.is_empty() || v.site_ids.contains(site))
        })
}

/// Holds per voucher, soonest-expiring first, for the whole `need.amount`,
/// or the shortfall.
pub fn allocate(
    vouchers: &[EligibleVoucher],
    need: &Need,
) -> Result<Vec<(Uuid, MicroHours)>, Shortfall> {
    let mut eligible: Vec<&EligibleVoucher> = vouchers
        .iter()
        .filter(|v| v.balance > 0 && covers(v, need))
        .collect();
    eligible.sort_by(|a, b| a.valid_until.cmp(&b.valid_until).then(a.id.cmp(&b.id)));
    let available: MicroHours = eligible.iter().map(|v| v.balance).sum();
    if available < need.amount {
        let total: MicroHours = vouchers.iter().map(|v| v.balance.max(0)).sum();
        return Err(Shortfall {
            needed: need.amount,
            available,
            eligible_vouchers: eligible.len(),
            elsewhere: total - available,
        });
    }
    let mut left = need.amount;
    let mut holds = Vec::new();
    for v in eligible {
        if left == 0 {
            break;
        }
        let take = left.min(v.balance);
        holds.push((v.id, take));
        left -= take;
    }
    Ok(holds)
}

/// Takes holds decided by `allocate` off the balances they were decided
/// from, so that the next booking decided from the same read (the next
/// occurrence of a series, in the same transaction) sees what is left.
pub fn spend(vouchers: &mut [EligibleVoucher], takes: &[(Uuid, MicroHours)]) {
    for (id, take) in takes {
        if let Some(v) = vouchers.iter_mut().find(|v| v.id == *id) {
            v.balance -= take;
        }
    }
}

/// An open hold being settled; `amount` is positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenHold {
    pub hold_id: i64,
    pub amount: MicroHours,
}

/// One charge row: which hold it settles, the node class it paid for, how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargePart {
    pub hold_id: i64,
    pub node_class: String,
    pub amount: MicroHours,
}

/// Splits metered costs per node class over holds, in hold order, never
/// beyond what was held: a booking is never charged more than it reserved.
pub fn split_charge(holds: &[OpenHold], by_class: &[(String, MicroHours)]) -> Vec<ChargePart> {
    let mut room: Vec<MicroHours> = holds.iter().map(|h| h.amount.max(0)).collect();
    let mut parts = Vec::new();
    for (class, cost) in by_class {
        let mut left = (*cost).max(0);
        for (i, h) in holds.iter().enumerate() {
            if left == 0 {
                break;
            }
            let take = left.min(room[i]);
            if take > 0 {
                parts.push(ChargePart {
                    hold_id: h.hold_id,
                    node_class: class.clone(),
                    amount: take,
                });
                room[i] -= take;
                left -= take;
            }
        }
    }
    parts
}

/// A charge of `amount` split over node classes by the seats on each
/// (`seat_tiers`, one per seat), exactly: the shares add up to `amount`, and
/// the µAh left by rounding down go to the classes with the largest
/// remainders, then by name. A lender reports one total for a borrowed
/// lesson, not one per tier.
pub fn by_seat_tiers(amount: MicroHours, seat_tiers: &[String]) -> Vec<(String, MicroHours)> {
    let mut seats: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for t in seat_tiers {
        *seats.entry(t.as_str()).or_default() += 1;
    }
    let total: i64 = seats.values().sum();
    let amount = amount.max(0);
    if total == 0 {
        return Vec::new();
    }
    let mut shares: Vec<(String, MicroHours, i128)> = seats
        .iter()
        .map(|(tier, n)| {
            let exact = i128::from(amount) * i128::from(*n);
            let share = (exact / i128::from(total)) as MicroHours;
            (tier.to_string(), share, exact % i128::from(total))
        })
        .collect();
    let mut left = amount - shares.iter().map(|s| s.1).sum::<MicroHours>();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|a, b| shares[*b].2.cmp(&shares[*a].2).then(a.cmp(b)));
    for i in order {
        if left == 0 {
            break;
        }
        shares[i].1 += 1;
        left -= 1;
    }
    shares.into_iter().map(|(t, a, _)| (t, a)).collect()
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    fn v(n: u128, days: i64, balance: MicroHours, tiers: &[&str]) -> EligibleVoucher {
        let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        EligibleVoucher {
            id: Uuid::from_u128(n),
            valid_from: now - Duration::days(1),
            valid_until: now + Duration::days(days),
            tiers: tiers.iter().map(|s| s.to_string()).collect(),
            site_ids: Vec::new(),
            balance,
        }
    }

    fn need(amount: MicroHours, tier: &str) -> Need {
        let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        Need {
            amount,
            start: now,
            end: now + Duration::hours(1),
            nodes: vec![(tier.to_string(), Uuid::from_u128(99))],
        }
    }

    #[test]
    fn a_borrowed_charge_splits_over_tiers_by_seats_exactly() {
        let tiers = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            by_seat_tiers(1_000, &tiers(&["edge", "cloud", "edge"])),
            vec![("cloud".to_string(), 333), ("edge".to_string(), 667)]
        );
        assert_eq!(
            by_seat_tiers(10, &tiers(&["edge", "edge"])),
            vec![("edge".to_string(), 10)]
        );
        // Three equal remainders: the first by name takes the odd µAh.
        let split = by_seat_tiers(2, &tiers(&["edge", "cloud", "x"]));
        assert_eq!(split.iter().map(|s| s.1).sum::<MicroHours>(), 2);
        assert_eq!(split[0], ("cloud".to_string(), 1));
        assert_eq!(
            by_seat_tiers(-5, &tiers(&["edge"])),
            vec![("edge".to_string(), 0)]
        );
        assert!(by_seat_tiers(7, &[]).is_empty());
    }

    #[test]
    fn soonest_expiring_voucher_pays_first() {
        let vs = [v(1, 30, 500, &[]), v(2, 5, 300, &[]), v(3, 10, 1000, &[])];
        let holds = allocate(&vs, &need(600, "edge")).unwrap();
        assert_eq!(
            holds,
            vec![(Uuid::from_u128(2), 300), (Uuid::from_u128(3), 300)]
        );
    }

    #[test]
    fn restricted_or_short_lived_vouchers_do_not_pay_and_shortfall_has_numbers() {
        let mut short = v(2, 0, 5_000_000, &[]);
        short.valid_until = short.valid_from + Duration::hours(1);
        let vs = [
            v(1, 30, 1_000_000, &["cloud"]),
            short,
            v(3, 30, 250_000, &["edge"]),
        ];
        let e = allocate(&vs, &need(2_000_000, "edge")).unwrap_err();
        assert_eq!(
            e,
            Shortfall {
                needed: 2_000_000,
                available: 250_000,
                eligible_vouchers: 1,
                elsewhere: 6_000_000
            }
        );
        let s = e.sentence("north-school");
        assert!(s.contains("2.000000 accelerator-hours needed"), "{s}");
        assert!(s.contains("0.250000 available"), "{s}");
    }

    /// A term of weekly lessons paid from a voucher that expires mid-term
    /// and one that lasts: occurrences before the expiry draw on the
    /// expiring one first, those after it only on the other, and once that
    /// is spent the rest are refused with the expired hours named as
    /// "elsewhere".
    #[test]
    fn a_term_crossing_a_vouchers_expiry_spends_each_in_turn() {
        let t0 = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let week = Duration::weeks(1);
        let expiring = EligibleVoucher {
            id: Uuid::from_u128(1),
            valid_from: t0 - Duration::days(1),
            valid_until: t0 + week * 3,
            tiers: Vec::new(),
            site_ids: Vec::new(),
            balance: 250,
        };
        let lasting = EligibleVoucher {
            id: Uuid::from_u128(2),
            valid_until: t0 + week * 52,
            balance: 300,
            ..expiring.clone()
        };
        let mut vs = vec![expiring, lasting];
        let results: Vec<_> = (0..6)
            .map(|w| {
                let start = t0 + week * w;
                let n = Need {
                    amount: 100,
                    start,
                    end: start + Duration::minutes(40),
                    nodes: Vec::new(),
                };
                let r = allocate(&vs, &n);
                if let Ok(takes) = &r {
                    spend(&mut vs, takes);
                }
                r
            })
            .collect();
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(results[0], Ok(vec![(a, 100)]));
        assert_eq!(results[1], Ok(vec![(a, 100)]));
        assert_eq!(results[2], Ok(vec![(a, 50), (b, 50)]));
        // Week 3 starts on the expiry day: the expiring voucher no longer
        // covers the lesson's end.
        assert_eq!(results[3], Ok(vec![(b, 100)]));
        assert_eq!(results[4], Ok(vec![(b, 100)]));
        let short = results[5].clone().unwrap_err();
        assert_eq!(short.available, 50);
        assert_eq!(short.elsewhere, 0, "the expiring voucher is spent");
        assert_eq!(vs[0].balance, 0);
        assert_eq!(vs[1].balance, 50);
    }

    #[test]
    fn charges_fill_holds_in_order_and_never_exceed_them() {
        let holds = [
            OpenHold {
                hold_id: 7,
                amount: 100,
            },
            OpenHold {
                hold_id: 8,
                amount: 50,
            },
        ];
        let parts = split_charge(&holds, &[("edge".into(), 120), ("cloud".into(), 1000)]);
        let total: MicroHours = parts.iter().map(|p| p.amount).sum();
        assert_eq!(total, 150);
        assert_eq!(
            parts[0],
            ChargePart {
                hold_id: 7,
                node_class: "edge".into(),
                amount: 100
            }
        );
        assert_eq!(
            parts[1],
            ChargePart {
                hold_id: 8,
                node_class: "edge".into(),
                amount: 20
            }
        );
        assert_eq!(
            parts[2],
            ChargePart {
                hold_id: 8,
                node_class: "cloud".into(),
                amount: 30
            }
        );
    }
}
