//! Iluvatar CoreX: parser for the default `ixsmi` table (IX-ML 4.x), written
//! against real recorded outputs (see `fixtures/SOURCES.md`).

use crate::table::{finish, index_and_name, memory_cell, percent, row_pairs, skip_row, truncation};
use crate::{Device, ParseError, Parsed, Vendor};

const IX: &str = "ixsmi";

/// Parses `ixsmi`. The tool prints no health column; devices are reported
/// healthy when listed. An output that stops before the process table's
/// closing border is reported as truncated.
pub fn parse_ixsmi(text: &str) -> Result<Parsed, ParseError> {
    let mut warnings = Vec::new();
    let rows = row_pairs(IX, text, "Bus-Id", "Processes:", 3, &mut warnings)?;
    let mut devices = Vec::new();
    let mut first_error = None;
    for r in rows {
        let row = || -> Result<Device, ParseError> {
            let (index, name) = index_and_name(IX, r.first[0], r.line_no)?;
            let (used, total) = memory_cell(IX, r.second[1], r.line_no + 1)?;
            let mut d = Device::new(Vendor::Iluvatar, name, index);
            d.bus_id = Some(r.first[1].to_string()).filter(|b| !b.is_empty());
            d.memory_total_mib = total;
            d.memory_used_mib = used;
            d.utilization_percent = r.second[2].split_whitespace().next().and_then(percent);
            Ok(d)
        };
        match row() {
            Ok(d) => devices.push(d),
            Err(e) => skip_row(e, text, &mut warnings, &mut first_error),
        }
    }
    warnings.extend(truncation(IX, text, "Processes:", true, devices.len()));
    finish(IX, text, devices, warnings, first_error)
}
