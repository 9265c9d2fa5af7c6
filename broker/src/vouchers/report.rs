//! Usage reports: one row per school, voucher, month or node class, and the
//! CSV export. Amounts stay integers (µAh) until they are printed, so the
//! export's totals equal the ledger's exactly.

use super::{MicroHours, hours};

/// How a usage report is grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    School,
    Voucher,
    Month,
    NodeClass,
}

impl GroupBy {
    pub const NAMES: &'static str = "school, voucher, month or node_class";

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "school" => Some(Self::School),
            "voucher" => Some(Self::Voucher),
            "month" => Some(Self::Month),
            "node_class" => Some(Self::NodeClass),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::School => "school",
            Self::Voucher => "voucher",
            Self::Month => "month",
            Self::NodeClass => "node_class",
        }
    }
}

/// Charged use in one group.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    /// School name, voucher id, `YYYY-MM` or node class.
    pub key: String,
    /// A readable companion: the voucher's programme and school, else empty.
    pub label: String,
    pub charged_uah: MicroHours,
    pub metered_slice_seconds: f64,
    pub lessons: i64,
    pub jobs: i64,
}

pub const CSV_HEADER: &str = "group,key,label,charged_accelerator_hours,charged_micro_hours,metered_slice_seconds,lessons,jobs";

fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The CSV export: a header and one line per row, no total line, so that a
/// spreadsheet's column sum is the total.
pub fn csv(by: GroupBy, rows: &[UsageRow]) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{:.3},{},{}\n",
            by.name(),
            field(&r.key),
            field(&r.label),
            hours(r.charged_uah),
            r.charged_uah,
            r.metered_slice_seconds,
            r.lessons,
            r.jobs
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_awkward_labels_and_keeps_exact_amounts() {
        let rows = [UsageRow {
            key: "2026-11".into(),
            label: "Programme \"AI, for all\"".into(),
            charged_uah: 1_234_567,
            metered_slice_seconds: 4444.4,
            lessons: 2,
            jobs: 1,
        }];
        let text = csv(GroupBy::Month, &rows);
        let line = text.lines().nth(1).unwrap();
        assert_eq!(
            line,
            "month,2026-11,\"Programme \"\"AI, for all\"\"\",1.234567,1234567,4444.400,2,1"
        );
    }

    #[test]
    fn group_names_parse_with_dash_or_underscore() {
        assert_eq!(GroupBy::parse("node-class"), Some(GroupBy::NodeClass));
        assert_eq!(GroupBy::parse("Month"), Some(GroupBy::Month));
        assert_eq!(GroupBy::parse("week"), None);
    }
}
