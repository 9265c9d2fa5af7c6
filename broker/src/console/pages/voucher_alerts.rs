//! Voucher alerts in the page's language and the region's time zone. The
//! service's alert carries an English sentence with a UTC time for the API;
//! the console writes its own from the alert's kind and the voucher's row.

use super::super::{
    html::esc,
    i18n::{Lang, t},
    tz::Zone,
};
use crate::{
    service::vouchers::BalanceView,
    vouchers::{MicroHours, UAH_PER_HOUR, alerts::Alert},
};

/// One alert as HTML: `school · programme: what`.
pub fn text(l: Lang, z: &Zone, view: &BalanceView, a: &Alert) -> String {
    let v = view
        .schools
        .iter()
        .flat_map(|b| &b.vouchers)
        .find(|v| v.id == a.voucher_id);
    let Some(v) = v else {
        // The voucher is outside this view: the API's sentence, as it is.
        return format!("{}: {}", esc(&a.school), esc(&a.message));
    };
    let what = match a.kind {
        "low_balance" => format!(
            "{} {} / {} {}",
            t(l, "voucher_low"),
            hours(v.balance_uah),
            hours(v.issued_uah),
            t(l, "accel_hours")
        ),
        "expiring_soon" => format!(
            "{} {} · {} {} {}",
            t(l, "voucher_expires"),
            z.fmt(v.valid_until),
            hours(v.balance_uah),
            t(l, "accel_hours"),
            t(l, "unused")
        ),
        _ => esc(&a.message),
    };
    format!("{} · {}: {}", esc(&a.school), esc(&v.programme), what)
}

/// Accelerator-hours for a page: 2 decimals, rounded from the exact integer
/// (the CLI and API keep all 6); a use too small to show says so instead of
/// reading as nothing.
pub(super) fn hours(uah: MicroHours) -> String {
    let sign = if uah < 0 { "-" } else { "" };
    let a = uah.unsigned_abs();
    let cents = (a + UAH_PER_HOUR as u64 / 200) / (UAH_PER_HOUR as u64 / 100);
    if cents == 0 && a > 0 {
        return format!("{sign}<0.01");
    }
    format!("{sign}{}.{:02}", cents / 100, cents % 100)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hours_have_two_decimals() {
        assert_eq!(super::hours(1_250_000), "1.25");
        assert_eq!(super::hours(1_234_567), "1.23");
        assert_eq!(super::hours(1_995_000), "2.00");
        assert_eq!(super::hours(-500_000), "-0.50");
        assert_eq!(super::hours(40), "<0.01");
        assert_eq!(super::hours(0), "0.00");
    }
}
