//! MetaX: parser for the default `mx-smi` table, written against real
//! recorded outputs (see `fixtures/SOURCES.md`) of three layouts:
//! - mx-smi 2.0.x and 2.1.x: three columns, the second header row reads
//!   `Temp  Power` (or `Temp  Pwr:Usage/Cap`) and the third column has no
//!   `GPU-State`;
//! - mx-smi 2.2.4: the same three columns with `Pwr:Usage/Cap` and a
//!   `GPU-State` column;
//! - mx-smi 2.2.9: four columns, `Board Name | GPU Persist-M | Bus-id |
//!   GPU-Util sGPU-M` over `Pwr:Usage/Cap | Temp Perf | Memory-Usage |
//!   GPU-State`.
//!
//! Because the columns moved between versions, every field is found by the
//! label above it in the header, never by its position.

use crate::table::{
    RowPair, cells, finish, index_and_name, memory_cell, percent, row_pairs, skip_row, truncation,
};
use crate::{Device, ParseError, ParseWarning, Parsed, Vendor};

const MX: &str = "mx-smi";

/// Parses `mx-smi`. Where the layout has a `GPU-State` column, `healthy` is
/// true when it reads `Available`; where it has none (mx-smi 2.0 and 2.1), the
/// tool says nothing about health and a listed device is healthy.
pub fn parse_mx_smi(text: &str) -> Result<Parsed, ParseError> {
    let mut warnings = Vec::new();
    let rows = row_pairs(MX, text, "Bus-id", "Process", 3, &mut warnings)?;
    let layout = Layout::read(text)?;
    let mut devices = Vec::new();
    let mut first_error = None;
    for r in rows {
        match device(&r, &layout, text, &mut warnings) {
            Ok(d) => devices.push(d),
            Err(e) => skip_row(e, text, &mut warnings, &mut first_error),
        }
    }
    warnings.extend(truncation(MX, text, "Process", true, devices.len()));
    finish(MX, text, devices, warnings, first_error)
}

/// Which cell of a device's two lines holds which field.
struct Layout {
    /// `GPU NAME` (2.0–2.2.4) or `Board Name` (2.2.9): number and model.
    name: usize,
    /// `GPU Persist-M` (2.2.9 only): the GPU's own number. The board
    /// number before the name is taken only when this column is absent; in
    /// the recorded 2.2.9 output the two agree, so nothing tells which one a
    /// board with several GPUs would repeat, and the GPU number is the one
    /// that names a GPU.
    gpu: Option<usize>,
    bus: usize,
    util: usize,
    /// On the device's second line.
    memory: usize,
    /// On the device's second line; absent before mx-smi 2.2.
    state: Option<usize>,
}

impl Layout {
    /// Reads the two header lines: the first line with `Bus-id` and the line
    /// under it.
    fn read(text: &str) -> Result<Layout, ParseError> {
        let mut lines = text.lines().enumerate();
        let (line_no, top) = lines
            .by_ref()
            .find(|(_, l)| l.contains("Bus-id"))
            .and_then(|(i, l)| Some((i + 1, cells(l)?)))
            .ok_or_else(|| ParseError::new(MX, "table header containing \"Bus-id\" not found"))?;
        let bottom = lines.next().and_then(|(_, l)| cells(l)).unwrap_or_default();
        let missing = |label: &str, line: usize| {
            ParseError::new(MX, format!("the table header has no `{label}` column"))
                .at(line)
                .field(label.to_string())
        };
        let find = |row: &[&str], pred: &dyn Fn(&str) -> bool| row.iter().position(|c| pred(c));
        let name = find(&top, &|c| c.to_ascii_lowercase().contains("name"))
            .ok_or_else(|| missing("NAME", line_no))?;
        let util = find(&top, &|c| c.starts_with("GPU-Util"))
            .ok_or_else(|| missing("GPU-Util", line_no))?;
        let gpu = top.iter().enumerate().position(|(i, c)| {
            i != name && i != util && c.split_whitespace().next() == Some("GPU")
        });
        Ok(Layout {
            name,
            gpu,
            bus: find(&top, &|c| c.contains("Bus-id")).ok_or_else(|| missing("Bus-id", line_no))?,
            util,
            memory: find(&bottom, &|c| c.contains("Memory-Usage"))
                .ok_or_else(|| missing("Memory-Usage", line_no + 1))?,
            state: find(&bottom, &|c| c.contains("GPU-State")),
        })
    }
}

/// The cell under `label`, or the error that names it (a damaged row may be
/// short even though `row_pairs` saw enough cells on its first line).
fn cell<'a>(row: &[&'a str], i: usize, line: usize, label: &str) -> Result<&'a str, ParseError> {
    row.get(i).copied().ok_or_else(|| {
        ParseError::new(MX, format!("device row has no `{label}` cell"))
            .at(line)
            .field(label.to_string())
    })
}

fn device(
    r: &RowPair<'_>,
    layout: &Layout,
    text: &str,
    warnings: &mut Vec<ParseWarning>,
) -> Result<Device, ParseError> {
    let (number, name) = index_and_name(
        MX,
        cell(&r.first, layout.name, r.line_no, "NAME")?,
        r.line_no,
    )?;
    let index = match layout.gpu {
        None => number,
        Some(i) => cell(&r.first, i, r.line_no, "GPU")?
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                ParseError::new(MX, "GPU number is not a number")
                    .at(r.line_no)
                    .field("GPU")
            })?,
    };
    let memory = cell(&r.second, layout.memory, r.line_no + 1, "Memory-Usage")?;
    let (used, total) = memory_cell(MX, memory, r.line_no + 1)?;
    let mut d = Device::new(Vendor::Metax, name, index);
    d.bus_id = Some(cell(&r.first, layout.bus, r.line_no, "Bus-id")?.to_string())
        .filter(|b| !b.is_empty());
    // `0%` alone, or `0%          Disabled` with the sGPU mode beside it.
    d.utilization_percent = r
        .first
        .get(layout.util)
        .and_then(|c| c.split_whitespace().next())
        .and_then(percent);
    d.memory_total_mib = total;
    d.memory_used_mib = used;
    if let Some(i) = layout.state {
        let state = r.second.get(i).copied().unwrap_or("");
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
