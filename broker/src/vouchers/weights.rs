//! The per-model weight table that turns device time on heterogeneous
//! accelerators into comparable accelerator-hours. A T4 is 1.0; other models
//! are weighted by their relative throughput (docs/decisions/020).

use std::collections::BTreeMap;

/// The key that applies to models no other key matches.
pub const DEFAULT_KEY: &str = "*";

/// Approximate dense FP16 tensor throughput relative to an NVIDIA T4
/// (65 TFLOPS), from vendors' public datasheets, rounded to 0.5. Districts
/// with their own price list override any of them in `[voucher_weights]`.
pub const DEFAULTS: &[(&str, f64)] = &[
    (DEFAULT_KEY, 1.0),
    ("T4", 1.0),
    ("P2000", 0.5),
    ("RTX 3080", 1.5),
    ("RTX 4000", 1.5),
    ("RTX 4080", 3.0),
    ("RTX 2080", 1.0),
    ("L40S", 5.5),
    ("A100", 5.0),
    ("H100", 15.0),
    ("H200", 15.0),
    ("910B", 5.0),
    ("910A", 4.0),
    ("910", 4.0),
    ("310P", 1.0),
    ("K100", 3.0),
    ("C550", 4.5),
    ("MTT S4000", 1.5),
    ("MTT S80", 0.5),
    ("MLU370", 1.5),
    ("BI-V150", 3.0),
];

const MAX_WEIGHT: f64 = 1000.0;

#[derive(Debug, Clone, PartialEq)]
pub struct WeightTable {
    /// Upper-cased model substring → weight; longest match wins.
    entries: Vec<(String, f64)>,
    default: f64,
}

impl Default for WeightTable {
    fn default() -> Self {
        Self::from_pairs(DEFAULTS.iter().map(|(k, v)| (k.to_string(), *v)))
    }
}

impl WeightTable {
    fn from_pairs(pairs: impl IntoIterator<Item = (String, f64)>) -> Self {
        let mut default = 1.0;
        let mut entries = Vec::new();
        for (k, v) in pairs {
            if k == DEFAULT_KEY {
                default = v;
            } else {
                entries.push((k.to_uppercase(), v));
            }
        }
        // Longest first, so "910B" is tried before "910".
        entries.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        Self { entries, default }
    }

    /// The defaults with the configured keys laid over them. Each key and
    /// value is checked; the error names the key and the rule.
    pub fn with_overrides(overrides: &BTreeMap<String, f64>) -> Result<Self, String> {
        let mut merged: BTreeMap<String, f64> = DEFAULTS
            .iter()
            .map(|(k, v)| (k.to_uppercase(), *v))
            .collect();
        for (k, v) in overrides {
            let key = k.trim();
            if key.is_empty() || key.len() > 128 {
                return Err(format!(
                    "config voucher_weights: key `{k}` must be 1 to 128 characters (a model substring, or \"*\")"
                ));
            }
            if !(v.is_finite() && (0.0..=MAX_WEIGHT).contains(v)) {
                return Err(format!(
                    "config voucher_weights.\"{key}\": must be a number between 0 and {MAX_WEIGHT}, not {v}"
                ));
            }
            merged.insert(key.to_uppercase(), *v);
        }
        Ok(Self::from_pairs(merged))
    }

    /// The weight of a device model: the longest key contained in the model
    /// name (case-insensitive), else the `*` weight.
    pub fn weight(&self, model: &str) -> f64 {
        let m = model.to_uppercase();
        self.entries
            .iter()
            .find(|(k, _)| m.contains(k.as_str()))
            .map(|(_, w)| *w)
            .unwrap_or(self.default)
    }

    /// Mean weight over a seat's devices (all on one node, so normally one
    /// model); the `*` weight when the list is empty.
    pub fn mean_weight<S: AsRef<str>>(&self, models: &[S]) -> f64 {
        if models.is_empty() {
            return self.default;
        }
        models.iter().map(|m| self.weight(m.as_ref())).sum::<f64>() / models.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t4_is_the_unit_and_longest_key_wins() {
        let t = WeightTable::default();
        assert_eq!(t.weight("Tesla T4"), 1.0);
        assert_eq!(t.weight("Ascend 910B2C"), 5.0);
        assert_eq!(t.weight("Ascend 910A"), 4.0);
        assert_eq!(t.weight("NVIDIA H100 80GB HBM3"), 15.0);
        assert_eq!(t.weight("some future chip"), 1.0);
    }

    #[test]
    fn overrides_replace_defaults_and_bad_values_are_named() {
        let mut o = BTreeMap::new();
        o.insert("t4".to_string(), 2.0);
        o.insert("*".to_string(), 0.5);
        let t = WeightTable::with_overrides(&o).unwrap();
        assert_eq!(t.weight("Tesla T4"), 2.0);
        assert_eq!(t.weight("unknown"), 0.5);
        o.insert("910B".to_string(), -1.0);
        let e = WeightTable::with_overrides(&o).unwrap_err();
        assert!(
            e.contains("voucher_weights.\"910B\"") && e.contains("between 0"),
            "{e}"
        );
        let mut o = BTreeMap::new();
        o.insert(" ".to_string(), 1.0);
        assert!(WeightTable::with_overrides(&o).is_err());
    }
}
