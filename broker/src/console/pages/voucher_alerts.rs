//! Voucher alerts in the page's language and the region's time zone. The
//! service's alert carries an English sentence with a UTC time for the API;
//! the console writes its own from the alert's kind and the voucher's row.

use super::super::{
    html::esc,
    i18n::{Lang, t},
    tz::Zone,
};
use crate::{service::vouchers::BalanceView, vouchers::alerts::Alert};

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
            super::vouchers::hours(v.balance_uah),
            super::vouchers::hours(v.issued_uah),
            t(l, "accel_hours")
        ),
        "expiring_soon" => format!(
            "{} {} · {} {} {}",
            t(l, "voucher_expires"),
            z.fmt(v.valid_until),
            super::vouchers::hours(v.balance_uah),
            t(l, "accel_hours"),
            t(l, "unused")
        ),
        _ => esc(&a.message),
    };
    format!("{} · {}: {}", esc(&a.school), esc(&v.programme), what)
}
