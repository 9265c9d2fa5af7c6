//! Moore Threads: parser for the default `mthreads-gmi` table (1.12 and 1.14),
//! written against real recorded outputs (see `fixtures/SOURCES.md`). Unlike
//! the other tools its device rows have no outer `|` border:
//! `0    MTT S80        |00000000:01:00.0    |98%   1339MiB(16384MiB)`.

use crate::table::{finish, mib, percent, skip_row, truncation};
use crate::{Device, ParseError, Parsed, Vendor};

const MT: &str = "mthreads-gmi";

/// Parses `mthreads-gmi`. The tool prints no health column. A device row that
/// cannot be read is skipped with a warning naming it.
pub fn parse_mthreads_gmi(text: &str) -> Result<Parsed, ParseError> {
    let mut header_seen = false;
    let mut devices = Vec::new();
    let mut warnings = Vec::new();
    let mut first_error = None;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim_start().starts_with("Processes:") {
            break;
        }
        let parts: Vec<&str> = line.split('|').map(str::trim).collect();
        if !header_seen {
            header_seen = parts
                .first()
                .is_some_and(|p| p.starts_with("ID") && p.contains("Name"));
            continue;
        }
        let Some((idx, name)) = parts
            .first()
            .and_then(|p| p.split_once(char::is_whitespace))
        else {
            continue;
        };
        let Ok(index) = idx.parse::<u32>() else {
            continue;
        };
        if parts.len() < 3 {
            let e = ParseError::new(
                MT,
                "device row has fewer than 3 `|`-separated parts (truncated output?)",
            )
            .at(line_no);
            skip_row(e, text, &mut warnings, &mut first_error);
            continue;
        }
        // `98%   1339MiB(16384MiB)`: utilisation, then used(total).
        let mut tail = parts[2].split_whitespace();
        let util = tail.next().and_then(percent);
        let mem = tail.next().unwrap_or("");
        let parsed = mem
            .strip_suffix(')')
            .and_then(|m| m.split_once('('))
            .and_then(|(u, t)| Some((mib(u)?, mib(t)?)));
        let Some((used, total)) = parsed else {
            let e = ParseError::new(MT, format!("not `used(total)` memory: {mem:?}"))
                .at(line_no)
                .field("Mem");
            skip_row(e, text, &mut warnings, &mut first_error);
            continue;
        };
        let mut d = Device::new(Vendor::Mthreads, name.trim(), index);
        d.bus_id = Some(parts[1].to_string()).filter(|b| !b.is_empty());
        d.utilization_percent = util;
        d.memory_total_mib = total;
        d.memory_used_mib = used;
        devices.push(d);
    }
    if !header_seen {
        return Err(ParseError::new(MT, "header `ID   Name ...` not found"));
    }
    warnings.extend(truncation(MT, text, "Processes:", true, devices.len()));
    finish(MT, text, devices, warnings, first_error)
}
