//! Iluvatar CoreX: parser for the default `ixsmi` table (IX-ML 4.1.0), written
//! against a real recorded output (see `fixtures/SOURCES.md`).

use crate::table::{index_and_name, percent, row_pairs, used_total};
use crate::{Device, ParseError, Vendor};

const IX: &str = "ixsmi";

/// Parses `ixsmi`. The tool prints no health column; devices are reported
/// healthy when listed.
pub fn parse_ixsmi(text: &str) -> Result<Vec<Device>, ParseError> {
    let rows = row_pairs(IX, text, "Bus-Id", "Processes:", 3)?;
    let mut devices = Vec::new();
    for r in rows {
        let (index, name) = index_and_name(IX, r.first[0], r.line_no)?;
        let mem = r.second[1];
        let (used, total) = used_total(mem).ok_or_else(|| {
            ParseError::new(IX, format!("not a memory usage: {mem:?}"))
                .at(r.line_no + 1)
                .field("Memory-Usage")
        })?;
        let mut d = Device::new(Vendor::Iluvatar, name, index);
        d.bus_id = Some(r.first[1].to_string()).filter(|b| !b.is_empty());
        d.memory_total_mib = total;
        d.memory_used_mib = used;
        d.utilization_percent = r.second[2].split_whitespace().next().and_then(percent);
        devices.push(d);
    }
    Ok(devices)
}
