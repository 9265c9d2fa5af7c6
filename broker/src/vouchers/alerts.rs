//! Low-balance and expiring-soon alerts, for the console and the API.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::{MicroHours, hours};

#[derive(Debug, Clone, PartialEq)]
pub struct VoucherState {
    pub id: Uuid,
    pub school: String,
    pub programme: String,
    pub issued: MicroHours,
    pub balance: MicroHours,
    pub valid_until: DateTime<Utc>,
    pub expired: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// `low_balance` or `expiring_soon`.
    pub kind: &'static str,
    pub voucher_id: Uuid,
    pub school: String,
    pub message: String,
}

/// Alerts for live vouchers: balance at or below `low_percent` of what was
/// issued, or expiring within `soon` with balance left.
pub fn alerts(
    vouchers: &[VoucherState],
    now: DateTime<Utc>,
    low_percent: u32,
    soon: Duration,
) -> Vec<Alert> {
    let mut out = Vec::new();
    for v in vouchers
        .iter()
        .filter(|v| !v.expired && v.valid_until > now)
    {
        if v.balance * 100 <= v.issued * i64::from(low_percent) {
            out.push(Alert {
                kind: "low_balance",
                voucher_id: v.id,
                school: v.school.clone(),
                message: format!(
                    "voucher `{}` of school {} has {} of {} accelerator-hours left",
                    v.programme,
                    v.school,
                    hours(v.balance),
                    hours(v.issued)
                ),
            });
        }
        if v.balance > 0 && v.valid_until - now <= soon {
            out.push(Alert {
                kind: "expiring_soon",
                voucher_id: v.id,
                school: v.school.clone(),
                message: format!(
                    "voucher `{}` of school {} expires at {} with {} accelerator-hours unused",
                    v.programme,
                    v.school,
                    v.valid_until
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    hours(v.balance)
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_and_expiring_vouchers_raise_alerts_and_expired_ones_do_not() {
        let now = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let v = |balance, days, expired| VoucherState {
            id: Uuid::nil(),
            school: "s".into(),
            programme: "p".into(),
            issued: 1000,
            balance,
            valid_until: now + Duration::days(days),
            expired,
        };
        let kinds = |vs: &[VoucherState]| {
            alerts(vs, now, 20, Duration::days(14))
                .into_iter()
                .map(|a| a.kind)
                .collect::<Vec<_>>()
        };
        assert_eq!(kinds(&[v(500, 60, false)]), Vec::<&str>::new());
        assert_eq!(kinds(&[v(200, 60, false)]), vec!["low_balance"]);
        assert_eq!(kinds(&[v(500, 3, false)]), vec!["expiring_soon"]);
        assert_eq!(kinds(&[v(0, 3, false)]), vec!["low_balance"]);
        assert_eq!(kinds(&[v(100, 3, true)]), Vec::<&str>::new());
    }
}
