//! MetaX: parser for the default `mx-smi` table, written against real
//! recorded outputs (see `fixtures/SOURCES.md`) of two layouts:
//! - mx-smi 2.1.x: the second header row reads `Temp  Power` (or
//!   `Temp  Pwr:Usage/Cap`) and the third column has no `GPU-State`;
//! - mx-smi 2.2.x: `Temp  Pwr:Usage/Cap` and a `GPU-State` column.

use crate::table::{finish, index_and_name, memory_cell, percent, row_pairs, skip_row, truncation};
use crate::{Device, ParseError, ParseWarning, Parsed, Vendor};

const MX: &str = "mx-smi";

/// Parses `mx-smi`. Where the layout has a `GPU-State` column, `healthy` is
/// true when it reads `Available`; where it has none (mx-smi 2.1.x), the tool
/// says nothing about health and a listed device is healthy.
pub fn parse_mx_smi(text: &str) -> Result<Parsed, ParseError> {
    let mut warnings = Vec::new();
    let rows = row_pairs(MX, text, "Bus-id", "Process", 3, &mut warnings)?;
    // The state column is announced in the header, above the first row.
    let has_state = text
        .lines()
        .take_while(|l| !l.contains("Process"))
        .any(|l| l.contains("GPU-State"));
    let mut devices = Vec::new();
    let mut first_error = None;
    for r in rows {
        match device(&r, has_state, text, &mut warnings) {
            Ok(d) => devices.push(d),
            Err(e) => skip_row(e, text, &mut warnings, &mut first_error),
        }
    }
    warnings.extend(truncation(MX, text, "Process", true, devices.len()));
    finish(MX, text, devices, warnings, first_error)
}

fn device(
    r: &crate::table::RowPair<'_>,
    has_state: bool,
    text: &str,
    warnings: &mut Vec<ParseWarning>,
) -> Result<Device, ParseError> {
    let (index, name) = index_and_name(MX, r.first[0], r.line_no)?;
    let (used, total) = memory_cell(MX, r.second[1], r.line_no + 1)?;
    let mut d = Device::new(Vendor::Metax, name, index);
    d.bus_id = Some(r.first[1].to_string()).filter(|b| !b.is_empty());
    d.utilization_percent = percent(r.first[2]);
    d.memory_total_mib = total;
    d.memory_used_mib = used;
    if has_state {
        let state = r.second[2];
        d.healthy = state.eq_ignore_ascii_case("available");
        if state.is_empty() {
            // The layout has the column but this row left it blank: say so
            // rather than let "unknown" silently mean "broken".
            let line = text.lines().nth(r.line_no).unwrap_or("");
            warnings.push(
                ParseWarning::new(
                    MX,
                    format!("GPU {index}: the GPU-State cell is empty, so the card is reported unhealthy"),
                )
                .at(r.line_no + 1, line),
            );
        }
    }
    Ok(d)
}
