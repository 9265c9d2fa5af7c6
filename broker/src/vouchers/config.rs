//! The broker's voucher settings: `[voucher_weights]` and `[vouchers]` in
//! its TOML file.

use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;

use super::WeightTable;

/// `[vouchers]`. Unknown keys are refused like everywhere else.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoucherFile {
    /// Seconds after a lesson or job ends before its hold is settled, so that
    /// the agents' last usage reports are in.
    pub settle_after_s: Option<u64>,
    /// A voucher at or below this share of its issued hours raises an alert.
    pub low_balance_percent: Option<u32>,
    /// A voucher expiring within this many days raises an alert.
    pub expiring_soon_days: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct VoucherConfig {
    pub weights: WeightTable,
    pub settle_after: Duration,
    pub low_balance_percent: u32,
    pub expiring_soon: chrono::Duration,
}

impl Default for VoucherConfig {
    fn default() -> Self {
        Self {
            weights: WeightTable::default(),
            // The agent stops a seat at its end with up to 60 s of grace and
            // reports at once; 90 s leaves room for both.
            settle_after: Duration::from_secs(90),
            low_balance_percent: 20,
            expiring_soon: chrono::Duration::days(14),
        }
    }
}

impl VoucherConfig {
    pub fn from_file(
        weights: Option<&BTreeMap<String, f64>>,
        file: Option<&VoucherFile>,
    ) -> anyhow::Result<Self> {
        let d = Self::default();
        let weights = match weights {
            Some(w) => WeightTable::with_overrides(w).map_err(anyhow::Error::msg)?,
            None => d.weights,
        };
        let f = file.cloned().unwrap_or_default();
        let settle = f.settle_after_s.unwrap_or(d.settle_after.as_secs());
        if settle > 86_400 {
            anyhow::bail!("config vouchers.settle_after_s: must be at most 86400, not {settle}");
        }
        let low = f.low_balance_percent.unwrap_or(d.low_balance_percent);
        if low > 100 {
            anyhow::bail!(
                "config vouchers.low_balance_percent: must be between 0 and 100, not {low}"
            );
        }
        let soon = f.expiring_soon_days.unwrap_or(14);
        if soon > 3650 {
            anyhow::bail!("config vouchers.expiring_soon_days: must be at most 3650, not {soon}");
        }
        Ok(Self {
            weights,
            settle_after: Duration::from_secs(settle),
            low_balance_percent: low,
            expiring_soon: chrono::Duration::days(i64::from(soon)),
        })
    }
}
