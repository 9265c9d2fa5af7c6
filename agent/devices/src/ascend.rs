//! Huawei Ascend: parsers for `npu-smi info` (the table), `npu-smi info -m`,
//! `npu-smi info -t board` and `npu-smi info -t usages`, all written against
//! real recorded outputs (see `fixtures/SOURCES.md`).
//!
//! The vNPU template table is taken from the HAMi project's documented Ascend
//! device configuration (`docs/ascend910b-support.md`), which lists Huawei's
//! official templates with their AI Core counts and memory sizes.

use crate::table::{cells, is_na, no_devices, num, percent, used_total};
use crate::{Device, ParseError, SharingMode, Vendor};

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

/// Parses the `npu-smi info` table. One device per chip; `index` is the
/// `Device` column where the tool prints it (npu-smi 25.x, multi-chip cards),
/// otherwise the NPU ID, which is what `ASCEND_VISIBLE_DEVICES` takes on
/// single-chip cards. Memory is HBM when the chip has it, else DDR.
pub fn parse_info(text: &str) -> Result<Vec<Device>, ParseError> {
    let mut header_seen = false;
    let mut has_device_col = false;
    let mut pending: Option<(usize, u32, String, String)> = None;
    let mut devices = Vec::new();
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
            has_device_col = first.contains("Device");
            continue;
        }
        if !header_seen || c.len() < 3 {
            continue;
        }
        let second = c.get(1).copied().unwrap_or("");
        let third = c.get(2).copied().unwrap_or("");
        if is_bus_id(second) {
            let Some((_, npu_id, name, health)) = pending.take() else {
                return Err(ParseError::new(INFO, "chip line without its NPU line").at(line_no));
            };
            let mut ids = first.split_whitespace().map(num);
            let chip = ids.next().flatten();
            let logical = if has_device_col {
                ids.next().flatten()
            } else {
                None
            };
            if chip.is_none() || (has_device_col && logical.is_none()) {
                return Err(
                    ParseError::new(INFO, format!("bad chip/device ids: {first:?}"))
                        .at(line_no)
                        .field("Chip"),
                );
            }
            let compact = third.replace(" /", "/").replace("/ ", "/");
            let mut tokens = compact.split_whitespace();
            let aicore = tokens.next().and_then(percent);
            let pairs: Vec<(u64, u64)> = tokens.filter_map(used_total).collect();
            let Some(&(mut used, mut total)) = pairs.first() else {
                return Err(
                    ParseError::new(INFO, format!("no memory usage in {third:?}"))
                        .at(line_no)
                        .field("Memory-Usage(MB)"),
                );
            };
            // 910B prints DDR 0/0 then HBM; prefer HBM when it is there.
            if let Some(&(u, t)) = pairs.get(1).filter(|(_, t)| *t > 0) {
                (used, total) = (u, t);
            }
            let index = logical
                .or_else(|| {
                    if chip == Some(0) {
                        Some(u64::from(npu_id))
                    } else {
                        None
                    }
                })
                .unwrap_or(devices.len() as u64);
            let mut d = Device::new(
                Vendor::Ascend,
                model_name(&name),
                u32::try_from(index).unwrap_or(u32::MAX),
            );
            d.bus_id = Some(second.to_string());
            d.memory_total_mib = total;
            d.memory_used_mib = used;
            d.utilization_percent = aicore;
            d.healthy = matches!(health.to_ascii_uppercase().as_str(), "OK" | "WARNING");
            d.sharing = sharing_for(&name);
            devices.push(d);
        } else if let Some((npu, name)) = first.split_once(char::is_whitespace) {
            let Ok(npu_id) = npu.parse::<u32>() else {
                continue;
            };
            if let Some((l1, ..)) = pending {
                return Err(ParseError::new(INFO, "NPU line not followed by its chip line").at(l1));
            }
            pending = Some((line_no, npu_id, name.trim().to_string(), second.to_string()));
        }
    }
    if let Some((l1, ..)) = pending {
        return Err(ParseError::new(
            INFO,
            "NPU line not followed by its chip line (truncated output?)",
        )
        .at(l1));
    }
    if !header_seen {
        return Err(ParseError::new(
            INFO,
            "table header `NPU ... Name` not found",
        ));
    }
    if devices.is_empty() {
        return Err(no_devices(INFO, text));
    }
    Ok(devices)
}

/// Parses `npu-smi info -m` (NPU ID, Chip ID, Chip Logic ID, Chip Name). The
/// logic ID becomes `index`; rows without one (e.g. MCU chips) are skipped.
/// This mapping carries no memory, so `memory_total_mib` is 0.
pub fn parse_map(text: &str) -> Result<Vec<Device>, ParseError> {
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
    for (i, line) in lines {
        let mut parts = line.split_whitespace();
        let (Some(_npu), Some(_chip), Some(logic)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(ParseError::new(MAP, "row has fewer than 4 columns").at(i + 1));
        };
        let name: Vec<&str> = parts.collect();
        let Ok(logic) = logic.parse::<u32>() else {
            continue;
        };
        if name.is_empty() {
            return Err(ParseError::new(MAP, "chip name missing")
                .at(i + 1)
                .field("Chip Name"));
        }
        let name = name.join(" ");
        let mut d = Device::new(Vendor::Ascend, model_name(&name), logic);
        d.sharing = sharing_for(&name);
        devices.push(d);
    }
    if devices.is_empty() {
        return Err(no_devices(MAP, text));
    }
    Ok(devices)
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
pub fn parse_board(text: &str) -> Result<Vec<Device>, ParseError> {
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
    Ok(vec![d])
}

/// Parses `npu-smi info -i <id> -t usages`: one device per chip, memory from
/// HBM when present, else DDR; used memory from the usage rate. Each chip's
/// block ends with its `Chip ID` line. `index` is the NPU ID (chips of one
/// card share it); the model is unknown here ("Ascend NPU").
pub fn parse_usages(text: &str) -> Result<Vec<Device>, ParseError> {
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
    Ok(devices)
}
