//! Hygon DCU: parsers for `hy-smi` (DTK 24.x), the Hygon build of `rocm-smi`
//! (text table) and `rocm-smi ... --json`, all written against real recorded
//! outputs (see `fixtures/SOURCES.md`).
//!
//! The two text tables print no model and no VRAM size (only `VRAM%`), so their
//! devices have `memory_total_mib == 0`; discovery prefers the JSON form and
//! warns when it had to fall back.

use crate::table::{finish, is_na, mib, percent, skip_row, truncation};
use crate::{Device, ParseError, ParseWarning, Parsed, Vendor};

const HY: &str = "hy-smi";
const ROCM: &str = "rocm-smi";
const ROCM_JSON: &str = "rocm-smi --json";

/// The `rocm-smi` arguments of the recorded JSON fixture.
pub const ROCM_SMI_JSON_ARGS: &[&str] = &[
    "--showid",
    "--showmeminfo",
    "vram",
    "--showpower",
    "--showserial",
    "--showuse",
    "--showtemp",
    "--showproductname",
    "--showuniqueid",
    "--json",
];

/// Shared reader for the whitespace tables of `hy-smi` and `rocm-smi`: a
/// header line starting with `DCU` (or `GPU`), then one row per device.
fn parse_text_table(format: &'static str, text: &str) -> Result<Parsed, ParseError> {
    let mut header: Option<Vec<&str>> = None;
    let mut devices = Vec::new();
    let mut warnings = Vec::new();
    let mut first_error = None;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with('=') {
            continue;
        }
        let tokens: Vec<&str> = t.split_whitespace().collect();
        if header.is_none() {
            // hy-smi of DTK 25.04 and later heads the table `HCU` (and `HCU%`).
            if matches!(tokens.first(), Some(&"DCU") | Some(&"HCU") | Some(&"GPU")) {
                header = Some(tokens);
            }
            continue;
        }
        let Some(h) = &header else { continue };
        let Some(Ok(index)) = tokens.first().map(|s| s.parse::<u32>()) else {
            // Only the header, rules and the end-of-log line are not devices.
            if !t.contains("End of SMI Log") && !t.contains("System Management Interface") {
                warnings.push(
                    ParseWarning::new(format, "skipped a line that is not a device row")
                        .at(line_no, line),
                );
            }
            continue;
        };
        if tokens.len() != h.len() {
            let e = ParseError::new(
                format,
                format!(
                    "row has {} columns, header has {} (truncated output?)",
                    tokens.len(),
                    h.len()
                ),
            )
            .at(line_no);
            skip_row(e, text, &mut warnings, &mut first_error);
            continue;
        }
        let col = |name: &str| {
            h.iter()
                .position(|c| *c == name)
                .and_then(|p| tokens.get(p).copied())
        };
        let mut d = Device::new(Vendor::Hygon, "Hygon DCU", index);
        d.utilization_percent = col("DCU%")
            .or_else(|| col("HCU%"))
            .or_else(|| col("GPU%"))
            .and_then(percent);
        if let Some(mode) = col("Mode") {
            d.healthy = mode.eq_ignore_ascii_case("normal");
        }
        devices.push(d);
    }
    if header.is_none() {
        return Err(ParseError::new(
            format,
            "header line starting with `DCU` not found",
        ));
    }
    warnings.extend(truncation(
        format,
        text,
        "End of SMI Log",
        false,
        devices.len(),
    ));
    finish(format, text, devices, warnings, first_error)
}

/// Parses plain `hy-smi`. No model or VRAM size: see the module comment.
pub fn parse_hy_smi(text: &str) -> Result<Parsed, ParseError> {
    parse_text_table(HY, text)
}

/// Parses the plain `rocm-smi` table of Hygon's DTK.
pub fn parse_rocm_smi(text: &str) -> Result<Parsed, ParseError> {
    parse_text_table(ROCM, text)
}

/// Parses `rocm-smi ... --json`. Only cards whose vendor is Hygon (Haiguang)
/// are returned, so an AMD machine yields an error, not AMD GPUs mislabelled.
/// Hygon names the VRAM keys in MiB; AMD's byte-valued keys are read as well.
pub fn parse_rocm_smi_json(text: &str) -> Result<Parsed, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::new(ROCM_JSON, "empty output"));
    }
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ParseError::new(ROCM_JSON, format!("not JSON: {e}")).at(e.line()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ParseError::new(ROCM_JSON, "top level is not an object"))?;
    let mut devices = Vec::new();
    let mut warnings = Vec::new();
    let mut first_error = None;
    let mut other_vendor = None;
    // JSON has no rows to point at: a card that cannot be read is named by its key.
    let mut skip = |e: ParseError| {
        warnings.push(ParseWarning::new(
            ROCM_JSON,
            format!(
                "skipped `{}`: {}",
                e.field.as_deref().unwrap_or("?"),
                e.message
            ),
        ));
        first_error.get_or_insert(e);
    };
    for (key, card) in obj {
        let Some(index) = key.strip_prefix("card").and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Some(card) = card.as_object() else {
            skip(ParseError::new(ROCM_JSON, "card entry is not an object").field(key.clone()));
            continue;
        };
        let s = |k: &str| {
            card.get(k)
                .and_then(|v| v.as_str())
                .map(str::trim)
                .filter(|v| !is_na(v))
        };
        let vendor = s("Card Vendor").or_else(|| s("Card vendor")).unwrap_or("");
        let lv = vendor.to_ascii_lowercase();
        if !(lv.contains("haiguang") || lv.contains("hygon")) {
            other_vendor = Some(vendor.to_string());
            continue;
        }
        let total = s("vram Total Memory (MiB)").and_then(mib).or_else(|| {
            s("VRAM Total Memory (B)").and_then(|b| b.parse::<u64>().ok().map(|b| b >> 20))
        });
        let Some(total) = total else {
            skip(
                ParseError::new(ROCM_JSON, "no VRAM total")
                    .field(format!("{key}/vram Total Memory (MiB)")),
            );
            continue;
        };
        let used = s("vram Total Used Memory (MiB)")
            .and_then(mib)
            .or_else(|| {
                s("VRAM Total Used Memory (B)").and_then(|b| b.parse::<u64>().ok().map(|b| b >> 20))
            })
            .unwrap_or(0);
        let model = s("Card Series")
            .or_else(|| s("Card Model"))
            .unwrap_or("Hygon DCU");
        let mut d = Device::new(Vendor::Hygon, model, index);
        d.uuid = s("Unique ID").map(str::to_string);
        d.memory_total_mib = total;
        d.memory_used_mib = used;
        d.utilization_percent = s("DCU use (%)")
            .or_else(|| s("GPU use (%)"))
            .and_then(percent);
        devices.push(d);
    }
    devices.sort_by_key(|d| d.index);
    if devices.is_empty() {
        if let Some(e) = first_error {
            return Err(e);
        }
        return Err(match other_vendor {
            Some(v) => ParseError::new(
                ROCM_JSON,
                format!("no Hygon card (vendor {v:?}): not a Hygon DCU"),
            )
            .field("Card Vendor"),
            None => ParseError::new(ROCM_JSON, "no `cardN` entries"),
        });
    }
    Ok(Parsed::new(devices, warnings))
}
