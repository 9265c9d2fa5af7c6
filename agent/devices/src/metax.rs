//! MetaX: parser for the default `mx-smi` table (mx-smi 2.2.4 layout with
//! `GPU-State`), written against a real recorded output (see
//! `fixtures/SOURCES.md`).

use crate::table::{index_and_name, percent, row_pairs, used_total};
use crate::{Device, ParseError, Vendor};

const MX: &str = "mx-smi";

/// Parses `mx-smi`. `healthy` is true when `GPU-State` reads `Available`.
pub fn parse_mx_smi(text: &str) -> Result<Vec<Device>, ParseError> {
    let rows = row_pairs(MX, text, "Bus-id", "Process", 3)?;
    let mut devices = Vec::new();
    for r in rows {
        let (index, name) = index_and_name(MX, r.first[0], r.line_no)?;
        let mem = r.second[1];
        let (used, total) = used_total(mem).ok_or_else(|| {
            ParseError::new(MX, format!("not a memory usage: {mem:?}"))
                .at(r.line_no + 1)
                .field("Memory-Usage")
        })?;
        let mut d = Device::new(Vendor::Metax, name, index);
        d.bus_id = Some(r.first[1].to_string()).filter(|b| !b.is_empty());
        d.utilization_percent = percent(r.first[2]);
        d.memory_total_mib = total;
        d.memory_used_mib = used;
        d.healthy = r.second[2].eq_ignore_ascii_case("available");
        devices.push(d);
    }
    Ok(devices)
}
