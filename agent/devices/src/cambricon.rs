//! Cambricon: parser for the default `cnmon` table (CNMON v5.10.x, both the
//! `SR-IOV` and the newer `Mode` layouts, and the v4.20 layout with `Inited
//! Driver` where v5 has `Bus-Id`), written against real recorded
//! outputs (see `fixtures/SOURCES.md`).

use crate::table::{finish, memory_cell, percent, row_pairs, skip_row, truncation};
use crate::{Device, ParseError, Parsed, Vendor};

const CN: &str = "cnmon";

/// Parses `cnmon`. A card's first cell reads `Card VF Name Firmware`; a VF of
/// `/` is the physical card. The tool prints no health column.
pub fn parse_cnmon(text: &str) -> Result<Parsed, ParseError> {
    let mut warnings = Vec::new();
    // v5 heads the second column `Bus-Id`; v4.20 heads it `Inited Driver`.
    let rows = row_pairs(CN, text, "Firmware", "Processes:", 3, &mut warnings)?;
    let mut devices = Vec::new();
    let mut first_error = None;
    for r in rows {
        let row = || -> Result<Device, ParseError> {
            let line = r.line_no;
            let tokens: Vec<&str> = r.first[0].split_whitespace().collect();
            let (Some(card), Some(name)) = (tokens.first(), tokens.get(2)) else {
                return Err(ParseError::new(CN, "card cell lacks `Card VF Name`")
                    .at(line)
                    .field("Name"));
            };
            let index: u32 = card.parse().map_err(|_| {
                ParseError::new(CN, "card number is not a number")
                    .at(line)
                    .field("Card")
            })?;
            let (used, total) = memory_cell(CN, r.second[1], line + 1)?;
            let mut d = Device::new(Vendor::Cambricon, *name, index);
            // CNMON v4.20 has no Bus-Id column: its cell there is `On  v4.20.11`.
            d.bus_id = Some(r.first[1].to_string())
                .filter(|b| b.contains(':') && b.contains('.') && !b.contains(' '));
            d.memory_total_mib = total;
            d.memory_used_mib = used;
            d.utilization_percent = r.first[2].split_whitespace().next().and_then(percent);
            Ok(d)
        };
        match row() {
            Ok(d) => devices.push(d),
            Err(e) => skip_row(e, text, &mut warnings, &mut first_error),
        }
    }
    warnings.extend(truncation(CN, text, "Processes:", true, devices.len()));
    finish(CN, text, devices, warnings, first_error)
}
