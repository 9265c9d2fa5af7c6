//! Huawei Ascend: parsers for `npu-smi info` (the table), `npu-smi info -m`,
//! `npu-smi info -t board` and `npu-smi info -t usages`, all written against
//! real recorded outputs (see `fixtures/SOURCES.md`).
//!
//! The vNPU template table is taken from the HAMi project's documented Ascend
//! device configuration (`docs/ascend910b-support.md`), which lists Huawei's
//! official templates with their AI Core counts and memory sizes.

use crate::table::{cells, finish, is_na, is_rule, num, percent, skip_row, truncation, used_total};
use crate::{Device, ParseError, ParseWarning, Parsed, SharingMode, Vendor};

const INFO: &str = "npu-smi info";
const MAP: &str = "npu-smi info -m";
const BOARD: &str = "npu-smi info -t board";
const USAGES: &str = "npu-smi info -t usages";

/// One documented vNPU template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VnpuTemplate {
    pub name: &'static str,
    pub ai_cores: u32,
    pub memory_mib: u64,
}

/// AI Cores of the whole chip, and its templates from smallest to largest.
pub(crate) struct ChipTemplates {
    pub chip: &'static str,
    pub ai_cores: u32,
    pub templates: &'static [VnpuTemplate],
}

const fn t(name: &'static str, ai_cores: u32, memory_mib: u64) -> VnpuTemplate {
    VnpuTemplate {
        name,
        ai_cores,
        memory_mib,
    }
}

// Longer chip names first: "910B2" must not match the "910" prefix rule.
static CHIPS: &[ChipTemplates] = &[
    ChipTemplates {
        chip: "910B2",
        ai_cores: 24,
        templates: &[
            t("vir03_1c_8g", 3, 8192),
            t("vir06_1c_16g", 6, 16384),
            t("vir12_3c_32g", 12, 32768),
        ],
    },
    ChipTemplates {
        chip: "910B3",
        ai_cores: 20,
        templates: &[t("vir05_1c_16g", 5, 16384), t("vir10_3c_32g", 10, 32768)],
    },
    ChipTemplates {
        chip: "910B4",
        ai_cores: 20,
        templates: &[t("vir05_1c_8g", 5, 8192), t("vir10_3c_16g", 10, 16384)],
    },
    ChipTemplates {
        chip: "910A",
        ai_cores: 30,
        templates: &[
            t("vir02", 2, 2184),
            t("vir04", 4, 4369),
            t("vir08", 8, 8738),
            t("vir16", 16, 17476),
        ],
    },
    ChipTemplates {
        chip: "310P",
        ai_cores: 8,
        templates: &[
            t("vir01", 1, 3072),
            t("vir02", 2, 6144),
            t("vir04", 4, 12288),
        ],
    },
];

pub(crate) fn chip_templates(model: &str) -> Option<&'static ChipTemplates> {
    let m = model
        .trim()
        .trim_start_matches("Ascend")
        .trim()
        .to_ascii_uppercase();
    CHIPS.iter().find(|c| m.starts_with(c.chip))
}

/// The smallest documented template that gives at least `memory_mib` and
/// `compute_percent` of the chip's AI Cores.
pub fn vnpu_template(model: &str, memory_mib: u64, compute_percent: u32) -> Option<VnpuTemplate> {
    let chip = chip_templates(model)?;
    chip.templates.iter().copied().find(|tpl| {
        tpl.memory_mib >= memory_mib
            && u64::from(tpl.ai_cores) * 100
                >= u64::from(compute_percent) * u64::from(chip.ai_cores)
    })
}

fn sharing_for(model: &str) -> Vec<SharingMode> {
    let mut s = vec![SharingMode::Exclusive, SharingMode::TimeSlice];
    if chip_templates(model).is_some() {
        s.push(SharingMode::Vnpu);
    }
    s
}

fn model_name(chip: &str) -> String {
    let chip = chip.trim();
    if chip.to_ascii_lowercase().starts_with("ascend") {
        chip.to_string()
    } else {
        format!("Ascend {chip}")
    }
}

fn is_bus_id(s: &str) -> bool {
    s.contains(':') && s.contains('.')
}

/// Which column of the chip line carries the index that
/// `ASCEND_VISIBLE_DEVICES` takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ChipIndex {
    /// `Chip` alone (910A/910B, one chip per NPU): the NPU ID.
    NpuId,
    /// `Chip  Device` (310P Duo, npu-smi 25.x): the device (logical) ID.
    Device,
    /// `Chip  Phy-ID` (Atlas A3 / 910C, two chips per NPU): the physical ID,
    /// which is the `/dev/davinciN` number.
    PhyId,
}

/// An NPU line waiting for its chip line: line number, text, NPU ID, name,
/// health.
type NpuLine<'a> = (usize, &'a str, u32, String, String);

/// Parses the `npu-smi info` table. One device per chip. `index` is the
/// chip's `Phy-ID` (A3 layout), its `Device` ID (310P Duo layout), or the NPU
/// ID where the chip line carries neither (one chip per NPU). Memory is HBM
/// when the chip has it, else DDR.
///
/// A row that cannot be read is skipped with a warning naming it, and an
/// output that stops before the process table's closing border is reported
/// as truncated.
pub fn parse_info(text: &str) -> Result<Parsed, ParseError> {
    let mut header_seen = false;
    let mut id_col = ChipIndex::NpuId;
    let mut pending: Option<NpuLine<'_>> = None;
    let mut devices = Vec::new();
    let mut warnings = Vec::new();
    let mut first_error = None;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.contains("Process id") || line.contains("Process name") {
            break;
        }
        let Some(c) = cells(line) else { continue };
        let first = c.first().copied().unwrap_or("");
        if first.starts_with("NPU") && first.contains("Name") {
            header_seen = true;
            continue;
        }
        if first.starts_with("Chip") {
            id_col = if first.contains("Phy-ID") {
                ChipIndex::PhyId
            } else if first.contains("Device") {
                ChipIndex::Device
            } else {
                ChipIndex::NpuId
            };
            continue;
        }
        if !header_seen || line.contains("npu-smi") {
            continue;
        }
        let second = c.get(1).copied().unwrap_or("");
        if c.len() >= 3 && is_bus_id(second) {
            let Some(npu) = pending.take() else {
                warnings.push(
                    ParseWarning::new(INFO, "skipped a chip line that follows no NPU line")
                        .at(line_no, line),
                );
                continue;
            };
            match chip(&npu, &c, line_no, id_col, devices.len()) {
                Ok((d, guess)) => {
                    if let Some(w) = guess {
                        warnings.push(w.at(line_no, line));
                    }
                    devices.push(d);
                }
                Err(e) => skip_row(e, text, &mut warnings, &mut first_error),
            }
            continue;
        }
        let npu_line = first
            .split_once(char::is_whitespace)
            .and_then(|(n, name)| Some((n.parse::<u32>().ok()?, name.trim())));
        match npu_line {
            Some((npu_id, name)) if c.len() >= 3 => {
                if let Some((l, text, ..)) = pending.take() {
                    warnings.push(
                        ParseWarning::new(
                            INFO,
                            "skipped an NPU line that is not followed by its chip line",
                        )
                        .at(l, text),
                    );
                }
                pending = Some((line_no, line, npu_id, name.to_string(), second.to_string()));
            }
            _ => warnings.push(
                ParseWarning::new(
                    INFO,
                    "skipped a line of the device table it did not understand",
                )
                .at(line_no, line),
            ),
        }
    }
    if !header_seen {
        return Err(ParseError::new(
            INFO,
            "table header `NPU ... Name` not found",
        ));
    }
    if let Some((l, line, ..)) = pending {
        let e = ParseError::new(
            INFO,
            "NPU line not followed by its chip line (truncated output?)",
        )
        .at(l);
        if devices.is_empty() {
            return Err(first_error.unwrap_or(e));
        }
        warnings.push(
            ParseWarning::new(
                INFO,
                "skipped an NPU line that is not followed by its chip line",
            )
            .at(l, line),
        );
    }
    // npu-smi before 23.x prints no process table (recorded: 1.9.3 with driver
    // 21.0.rc1): there the device table's own closing border is the end.
    let process_table = prints_process_table(text);
    let marker = if process_table {
        "Process id"
    } else {
        "npu-smi"
    };
    let cut = truncation(INFO, text, marker, true, devices.len());
    let cut = cut.or_else(|| (!process_table).then(|| ends_on_chip_rule(text, devices.len()))?);
    warnings.extend(cut);
    finish(INFO, text, devices, warnings, first_error)
}

/// For npu-smi before 23.x, which prints no process table: the device table
/// always closes with a `+===` rule, while chips of one card are parted by
/// `+---` rules (recorded: 20.2.0 and 21.0.4 on Atlas 300 cards). An output
/// that ends on a `+---` rule was cut between two chips. (Where every part is
/// a `+===` rule, as between the NPUs of 910A servers, a cut exactly on one
/// cannot be told from the end.)
fn ends_on_chip_rule(text: &str, devices: usize) -> Option<ParseWarning> {
    let lines: Vec<&str> = text.lines().collect();
    let (i, last) = lines
        .iter()
        .enumerate()
        .rev()
        .find(|(_, l)| !l.trim().is_empty())?;
    let t = last.trim();
    (is_rule(t) && !t.contains('=')).then(|| {
        ParseWarning::new(
            INFO,
            format!(
                "the output is truncated: it stops on a rule between two chips instead of the table's closing `+===` border, so only the {devices} device(s) above this line were read and more may be missing"
            ),
        )
        .at(i + 1, last)
    })
}

/// Whether this npu-smi prints a process table after the devices: every
/// recorded output of driver version 23 or newer does, the older ones do not.
/// An unreadable version is taken as new (the stricter check).
fn prints_process_table(text: &str) -> bool {
    let version = text
        .lines()
        .find(|l| l.contains("npu-smi"))
        .and_then(|l| l.split_once("Version:"))
        .and_then(|(_, v)| v.split_whitespace().next())
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    version.is_none_or(|major| major >= 23)
}

/// One chip from its NPU line and chip line. The warning, if any, says that
/// the index had to be guessed.
fn chip(
    npu: &NpuLine<'_>,
    c: &[&str],
    line_no: usize,
    id_col: ChipIndex,
    position: usize,
) -> Result<(Device, Option<ParseWarning>), ParseError> {
    let (_, _, npu_id, name, health) = npu;
    let (first, bus, usage) = (c[0], c[1], c[2]);
    let mut ids = first.split_whitespace().map(num);
    let chip = ids.next().flatten();
    let second_id = ids.next().flatten();
    let needs_second = id_col != ChipIndex::NpuId;
    if chip.is_none() || (needs_second && second_id.is_none()) {
        return Err(
            ParseError::new(INFO, format!("bad chip/device ids: {first:?}"))
                .at(line_no)
                .field("Chip"),
        );
    }
    // `303  / 15171` (npu-smi 1.9.3 pads the used figure): close every gap
    // around the slash, not just one space.
    let mut compact = usage.to_string();
    while compact.contains(" /") || compact.contains("/ ") {
        compact = compact.replace(" /", "/").replace("/ ", "/");
    }
    let mut tokens = compact.split_whitespace();
    let aicore = tokens.next().and_then(percent);
    let pairs: Vec<(u64, u64)> = tokens.filter_map(used_total).collect();
    let Some(&(mut used, mut total)) = pairs.first() else {
        return Err(
            ParseError::new(INFO, format!("no memory usage in {usage:?}"))
                .at(line_no)
                .field("Memory-Usage(MB)"),
        );
    };
    // 910B and A3 print DDR 0/0 then HBM; prefer HBM when it is there.
    if let Some(&(u, t)) = pairs.get(1).filter(|(_, t)| *t > 0) {
        (used, total) = (u, t);
    }
    let mut guess = None;
    let index = match (id_col, chip) {
        (ChipIndex::PhyId | ChipIndex::Device, _) => second_id.unwrap_or_default(),
        (ChipIndex::NpuId, Some(0)) => u64::from(*npu_id),
        // A second chip with neither a Device nor a Phy-ID column: no layout
        // recorded so far prints this, so the index is only a guess.
        (ChipIndex::NpuId, _) => {
            guess = Some(ParseWarning::new(
                INFO,
                format!(
                    "NPU {npu_id} has more than one chip but the table has no `Device` or `Phy-ID` column, so this chip's index ({position}) is a guess; check it with `npu-smi info -m`"
                ),
            ));
            position as u64
        }
    };
    let mut d = Device::new(
        Vendor::Ascend,
        model_name(name),
        u32::try_from(index).unwrap_or(u32::MAX),
    );
    d.bus_id = Some(bus.to_string());
    d.memory_total_mib = total;
    d.memory_used_mib = used;
    d.utilization_percent = aicore;
    d.healthy = matches!(health.to_ascii_uppercase().as_str(), "OK" | "WARNING");
    d.sharing = sharing_for(name);
    Ok((d, guess))
}

/// Parses `npu-smi info -m` (NPU ID, Chip ID, Chip Logic ID, Chip Name). The
/// logic ID becomes `index`; rows without one (e.g. MCU chips) are skipped.
/// This mapping carries no memory, so `memory_total_mib` is 0.
pub fn parse_map(text: &str) -> Result<Parsed, ParseError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(ParseError::new(MAP, "empty output"));
    };
    if !header.contains("Chip Logic ID") {
        return Err(ParseError::new(
            MAP,
            "header `NPU ID  Chip ID  Chip Logic ID  Chip Name` not found",
        )
        .at(1));
    }
    let mut devices = Vec::new();
    let mut warnings = Vec::new();
    let mut first_error = None;
    for (i, line) in lines {
        let mut parts = line.split_whitespace();
        let (Some(_npu), Some(_chip), Some(logic)) = (parts.next(), parts.next(), parts.next())
        else {
            let e = ParseError::new(MAP, "row has fewer than 4 columns").at(i + 1);
            skip_row(e, text, &mut warnings, &mut first_error);
            continue;
        };
        let name: Vec<&str> = parts.collect();
        // A chip without a logic ID (an MCU on 910A boards, `Chip Logic ID`
        // blank) is not an accelerator: skipped by design, not by failure.
        let Ok(logic) = logic.parse::<u32>() else {
            continue;
        };
        if name.is_empty() {
            let e = ParseError::new(MAP, "chip name missing")
                .at(i + 1)
                .field("Chip Name");
            skip_row(e, text, &mut warnings, &mut first_error);
            continue;
        }
        let name = name.join(" ");
        let mut d = Device::new(Vendor::Ascend, model_name(&name), logic);
        d.sharing = sharing_for(&name);
        devices.push(d);
    }
    finish(MAP, text, devices, warnings, first_error)
}

/// `Key : Value` lines; real npu-smi indents each with a tab.
fn key_values(text: &str) -> Vec<(usize, &str, &str)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let (k, v) = l.split_once(':')?;
            Some((i + 1, k.trim(), v.trim()))
        })
        .collect()
}

/// Parses `npu-smi info -i <id> [-c <chip>] -t board`. One device; the model
/// is the chip name when the chip form (`-c`) was used, else "Ascend NPU";
/// `index` is the NPU ID. Board info carries no memory (0).
pub fn parse_board(text: &str) -> Result<Parsed, ParseError> {
    let kv = key_values(text);
    let get = |k: &str| {
        kv.iter()
            .find(|(_, key, _)| *key == k)
            .map(|(l, _, v)| (*l, *v))
    };
    let Some((line, npu)) = get("NPU ID") else {
        return Err(if text.trim().is_empty() {
            ParseError::new(BOARD, "empty output")
        } else {
            ParseError::new(BOARD, "no `NPU ID` line").field("NPU ID")
        });
    };
    let npu: u32 = npu.parse().map_err(|_| {
        ParseError::new(BOARD, format!("NPU ID is not a number: {npu:?}"))
            .at(line)
            .field("NPU ID")
    })?;
    let model = get("Chip Name").map_or_else(|| "Ascend NPU".to_string(), |(_, n)| model_name(n));
    let mut d = Device::new(Vendor::Ascend, model.clone(), npu);
    d.bus_id = get("PCIe Bus Info")
        .map(|(_, v)| v.to_string())
        .filter(|v| !is_na(v));
    d.sharing = sharing_for(&model);
    Ok(Parsed::new(vec![d], Vec::new()))
}

/// Parses `npu-smi info -i <id> -t usages`: one device per chip, memory from
/// HBM when present, else DDR; used memory from the usage rate. Each chip's
/// block ends with its `Chip ID` line. `index` is the NPU ID (chips of one
/// card share it); the model is unknown here ("Ascend NPU").
pub fn parse_usages(text: &str) -> Result<Parsed, ParseError> {
    let kv = key_values(text);
    let Some(&(line, _, npu)) = kv.iter().find(|(_, k, _)| *k == "NPU ID") else {
        return Err(if text.trim().is_empty() {
            ParseError::new(USAGES, "empty output")
        } else {
            ParseError::new(USAGES, "no `NPU ID` line").field("NPU ID")
        });
    };
    let npu: u32 = npu.parse().map_err(|_| {
        ParseError::new(USAGES, format!("NPU ID is not a number: {npu:?}"))
            .at(line)
            .field("NPU ID")
    })?;
    let mut devices = Vec::new();
    let (mut ddr, mut ddr_rate, mut hbm, mut hbm_rate, mut aicore) = (None, None, None, None, None);
    for &(line, k, v) in &kv {
        let number = || -> Result<u64, ParseError> {
            num(v).ok_or_else(|| {
                ParseError::new(USAGES, format!("not a number: {v:?}"))
                    .at(line)
                    .field(k)
            })
        };
        match k {
            "DDR Capacity(MB)" => ddr = Some(number()?),
            "DDR Usage Rate(%)" => ddr_rate = Some(number()?),
            "HBM Capacity(MB)" => hbm = Some(number()?),
            "HBM Usage Rate(%)" => hbm_rate = Some(number()?),
            "Aicore Usage Rate(%)" => aicore = percent(v),
            "Chip ID" => {
                let (total, rate) = match (hbm, ddr) {
                    (Some(h), _) => (h, hbm_rate.unwrap_or(0)),
                    (None, Some(d)) => (d, ddr_rate.unwrap_or(0)),
                    (None, None) => {
                        return Err(ParseError::new(
                            USAGES,
                            "chip block has no DDR or HBM capacity",
                        )
                        .at(line)
                        .field("HBM Capacity(MB)"));
                    }
                };
                let mut d = Device::new(Vendor::Ascend, "Ascend NPU", npu);
                d.memory_total_mib = total;
                d.memory_used_mib = total.saturating_mul(rate.min(100)) / 100;
                d.utilization_percent = aicore;
                devices.push(d);
                (ddr, ddr_rate, hbm, hbm_rate, aicore) = (None, None, None, None, None);
            }
            _ => {}
        }
    }
    if devices.is_empty() {
        return Err(ParseError::new(
            USAGES,
            "no chip block ending in `Chip ID` (truncated output?)",
        ));
    }
    Ok(Parsed::new(devices, Vec::new()))
}
