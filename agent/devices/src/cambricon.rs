//! Cambricon: parser for the default `cnmon` table (CNMON v5.10.x, both the
//! `SR-IOV` and the newer `Mode` layouts), written against real recorded
//! outputs (see `fixtures/SOURCES.md`).

use crate::table::{percent, row_pairs, used_total};
use crate::{Device, ParseError, Vendor};

const CN: &str = "cnmon";

/// Parses `cnmon`. A card's first cell reads `Card VF Name Firmware`; a VF of
/// `/` is the physical card. The tool prints no health column.
pub fn parse_cnmon(text: &str) -> Result<Vec<Device>, ParseError> {
    let rows = row_pairs(CN, text, "Bus-Id", "Processes:", 3)?;
    let mut devices = Vec::new();
    for r in rows {
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
        let mem = r.second[1];
        let (used, total) = used_total(mem).ok_or_else(|| {
            ParseError::new(CN, format!("not a memory usage: {mem:?}"))
                .at(line + 1)
                .field("Memory-Usage")
        })?;
        let mut d = Device::new(Vendor::Cambricon, *name, index);
        d.bus_id = Some(r.first[1].to_string()).filter(|b| !b.is_empty());
        d.memory_total_mib = total;
        d.memory_used_mib = used;
        d.utilization_percent = r.first[2].split_whitespace().next().and_then(percent);
        devices.push(d);
    }
    Ok(devices)
}
