//! NVIDIA: parsers for `nvidia-smi --query-gpu=... --format=csv`,
//! `nvidia-smi -q -x`, `nvidia-smi -L` and the default `nvidia-smi` table.
//!
//! All three are written against real recorded outputs (see
//! `fixtures/SOURCES.md`). Discovery prefers NVML (see `nvml.rs`); these
//! parsers are the fallback and the source of MIG instances, which the
//! `nvml-wrapper` API does not enumerate.

use crate::table::{cells, finish, is_na, mib, num, percent, skip_row, truncation, used_total};
use crate::{Device, ParseError, ParseWarning, Parsed, SharingMode, Vendor};

/// The fields the runner asks `--query-gpu` for. The CSV keeps header and
/// units (`--format=csv`), the form of every recorded fixture, so the parser
/// finds columns by header name and needs no fixed order.
pub const QUERY_FIELDS: &str = "index,uuid,name,pci.bus_id,memory.total,memory.used,utilization.gpu,mig.mode.current,compute_cap,gpu_recovery_action";

const CSV: &str = "nvidia-smi --query-gpu (csv)";
const XML: &str = "nvidia-smi -q -x";
const LIST: &str = "nvidia-smi -L";
const TABLE: &str = "nvidia-smi";

/// Sharing modes of a full GPU. MPS thread limits need Volta (compute
/// capability 7.0) or newer; when the capability is unknown MPS is offered and
/// the MPS daemon itself will refuse limits it cannot keep.
pub(crate) fn gpu_sharing(mig_enabled: bool, compute_major: Option<u32>) -> Vec<SharingMode> {
    if mig_enabled {
        // With MIG on, CUDA cannot use the parent GPU directly: only its instances.
        return vec![SharingMode::Mig];
    }
    let mut modes = vec![SharingMode::Exclusive, SharingMode::TimeSlice];
    if compute_major.is_none_or(|m| m >= 7) {
        modes.push(SharingMode::Mps);
    }
    modes.push(SharingMode::HamiCore);
    modes
}

/// A MIG instance can be given whole, or shared inside itself.
pub(crate) fn mig_instance_sharing() -> Vec<SharingMode> {
    vec![SharingMode::Mig, SharingMode::TimeSlice, SharingMode::Mps]
}

fn healthy_recovery(action: Option<&str>) -> bool {
    action.is_none_or(|a| is_na(a) || a.eq_ignore_ascii_case("none"))
}

fn compute_major(cap: &str) -> Option<u32> {
    cap.trim().split('.').next()?.parse().ok()
}

/// Parses `nvidia-smi --query-gpu=<fields> --format=csv` (header and units).
/// Only physical GPUs appear here, never MIG instances.
pub fn parse_query_csv(text: &str) -> Result<Parsed, ParseError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else {
        return Err(ParseError::new(CSV, "empty output"));
    };
    let columns: Vec<String> = header
        .split(',')
        .map(|c| {
            let c = c.trim();
            // `memory.total [MiB]` -> `memory.total`
            c.split_once(" [").map_or(c, |(n, _)| n).to_string()
        })
        .collect();
    let col = |name: &str| columns.iter().position(|c| c == name);
    let (Some(name_col), Some(total_col)) = (col("name"), col("memory.total")) else {
        return Err(ParseError::new(
            CSV,
            "header lacks `name` or `memory.total`: not a --query-gpu CSV with header",
        )
        .at(1));
    };
    let (index_col, uuid_col, bus_col, used_col, util_col, mig_col, cap_col, rec_col) = (
        col("index"),
        col("uuid"),
        col("pci.bus_id"),
        col("memory.used"),
        col("utilization.gpu"),
        col("mig.mode.current"),
        col("compute_cap"),
        col("gpu_recovery_action"),
    );

    let mut devices = Vec::new();
    let mut warnings = Vec::new();
    let mut first_error = None;
    for (row_no, (i, line)) in lines.enumerate() {
        let line_no = i + 1;
        let row = || -> Result<Device, ParseError> {
            let values: Vec<&str> = line.split(',').map(str::trim).collect();
            if values.len() != columns.len() {
                return Err(ParseError::new(
                    CSV,
                    format!(
                        "row has {} values but the header has {} columns (truncated output?)",
                        values.len(),
                        columns.len()
                    ),
                )
                .at(line_no));
            }
            let get = |c: Option<usize>| c.and_then(|c| values.get(c).copied());
            let model = values.get(name_col).copied().unwrap_or("");
            if is_na(model) {
                return Err(ParseError::new(CSV, "GPU name is empty")
                    .at(line_no)
                    .field("name"));
            }
            let total_raw = values.get(total_col).copied().unwrap_or("");
            let total = mib(total_raw).ok_or_else(|| {
                ParseError::new(CSV, format!("not a memory size: {total_raw:?}"))
                    .at(line_no)
                    .field("memory.total")
            })?;
            let index = match get(index_col) {
                Some(v) => num(v).and_then(|n| u32::try_from(n).ok()).ok_or_else(|| {
                    ParseError::new(CSV, format!("not an index: {v:?}"))
                        .at(line_no)
                        .field("index")
                })?,
                None => u32::try_from(row_no).unwrap_or(u32::MAX),
            };
            let mig = get(mig_col).is_some_and(|v| v.eq_ignore_ascii_case("enabled"));
            let mut d = Device::new(Vendor::Nvidia, model, index);
            d.uuid = get(uuid_col).filter(|v| !is_na(v)).map(str::to_string);
            d.bus_id = get(bus_col).filter(|v| !is_na(v)).map(str::to_string);
            d.memory_total_mib = total;
            d.memory_used_mib = get(used_col).and_then(mib).unwrap_or(0);
            d.utilization_percent = get(util_col).and_then(percent);
            d.healthy = healthy_recovery(get(rec_col));
            d.sharing = gpu_sharing(mig, get(cap_col).and_then(compute_major));
            Ok(d)
        };
        match row() {
            Ok(d) => devices.push(d),
            Err(e) => skip_row(e, text, &mut warnings, &mut first_error),
        }
    }
    if devices.is_empty() && first_error.is_none() {
        return Err(ParseError::new(
            CSV,
            "header but no GPU rows (truncated output?)",
        ));
    }
    finish(CSV, text, devices, warnings, first_error)
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Option<roxmltree::Node<'a, 'i>> {
    node.children().find(|c| c.has_tag_name(name))
}

fn text_at<'a>(node: roxmltree::Node<'a, '_>, path: &[&str]) -> Option<&'a str> {
    let mut n = node;
    for p in path {
        n = child(n, p)?;
    }
    n.text().map(str::trim)
}

/// Parses `nvidia-smi -q -x`. MIG instances become devices of their own with
/// `mig_parent` set; the XML gives them no UUID (take it from `-L`, see
/// [`merge_mig_listing`]). GPUs are indexed in document order, which is
/// nvidia-smi's index order.
pub fn parse_query_xml(text: &str) -> Result<Parsed, ParseError> {
    if text.trim().is_empty() {
        return Err(ParseError::new(XML, "empty output"));
    }
    let opts = roxmltree::ParsingOptions {
        // nvidia-smi declares an external DTD; roxmltree never fetches it.
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, opts).map_err(|e| {
        let pos = e.pos();
        ParseError::new(XML, format!("not well-formed XML: {e}")).at(pos.row as usize)
    })?;
    let root = doc.root_element();
    if !root.has_tag_name("nvidia_smi_log") {
        return Err(ParseError::new(
            XML,
            format!(
                "root element is <{}>, expected <nvidia_smi_log>",
                root.tag_name().name()
            ),
        ));
    }
    let mut devices = Vec::new();
    let mut warnings = Vec::new();
    let mut first_error = None;
    for (pos, gpu) in root
        .children()
        .filter(|c| c.has_tag_name("gpu"))
        .enumerate()
    {
        let line = doc.text_pos_at(gpu.range().start).row as usize;
        let index = u32::try_from(pos).unwrap_or(u32::MAX);
        let Some(model) = text_at(gpu, &["product_name"]).filter(|s| !is_na(s)) else {
            let e = ParseError::new(XML, "GPU has no product name")
                .at(line)
                .field("product_name");
            skip_row(e, text, &mut warnings, &mut first_error);
            continue;
        };
        let total_raw = text_at(gpu, &["fb_memory_usage", "total"]).unwrap_or("");
        let Some(total) = mib(total_raw) else {
            let e = ParseError::new(XML, format!("not a memory size: {total_raw:?}"))
                .at(line)
                .field("fb_memory_usage/total");
            skip_row(e, text, &mut warnings, &mut first_error);
            continue;
        };
        let mig = text_at(gpu, &["mig_mode", "current_mig"])
            .is_some_and(|v| v.eq_ignore_ascii_case("enabled"));
        let arch = text_at(gpu, &["product_architecture"]).unwrap_or("");
        let pending_retirement = text_at(gpu, &["retired_pages", "pending_retirement"])
            .is_some_and(|v| v.eq_ignore_ascii_case("yes"));

        let mut d = Device::new(Vendor::Nvidia, model, index);
        d.uuid = text_at(gpu, &["uuid"])
            .filter(|s| !is_na(s))
            .map(str::to_string);
        d.bus_id = text_at(gpu, &["pci", "pci_bus_id"])
            .or_else(|| gpu.attribute("id"))
            .filter(|s| !is_na(s))
            .map(str::to_string);
        d.memory_total_mib = total;
        d.memory_used_mib = text_at(gpu, &["fb_memory_usage", "used"])
            .and_then(mib)
            .unwrap_or(0);
        d.utilization_percent = text_at(gpu, &["utilization", "gpu_util"]).and_then(percent);
        d.healthy = healthy_recovery(text_at(gpu, &["gpu_recovery_action"])) && !pending_retirement;
        d.sharing = gpu_sharing(mig, arch_compute_major(arch));
        devices.push(d.clone());

        if let Some(migs) = child(gpu, "mig_devices") {
            for m in migs.children().filter(|c| c.has_tag_name("mig_device")) {
                let mline = doc.text_pos_at(m.range().start).row as usize;
                let mi = text_at(m, &["index"])
                    .and_then(num)
                    .and_then(|n| u32::try_from(n).ok());
                let Some(mi) = mi else {
                    let e = ParseError::new(XML, "MIG device without a numeric index")
                        .at(mline)
                        .field("mig_device/index");
                    skip_row(e, text, &mut warnings, &mut first_error);
                    continue;
                };
                let gi = text_at(m, &["gpu_instance_id"]).unwrap_or("?");
                let ci = text_at(m, &["compute_instance_id"]).unwrap_or("?");
                let mut md =
                    Device::new(Vendor::Nvidia, format!("{model} MIG GI {gi} CI {ci}"), mi);
                md.memory_total_mib = text_at(m, &["fb_memory_usage", "total"])
                    .and_then(mib)
                    .unwrap_or(0);
                md.memory_used_mib = text_at(m, &["fb_memory_usage", "used"])
                    .and_then(mib)
                    .unwrap_or(0);
                md.bus_id = d.bus_id.clone();
                md.healthy = d.healthy;
                md.sharing = mig_instance_sharing();
                md.mig_parent = Some(index);
                devices.push(md);
            }
        }
    }
    if devices.is_empty() && first_error.is_none() {
        return Err(ParseError::new(XML, "no <gpu> element"));
    }
    finish(XML, text, devices, warnings, first_error)
}

/// Architectures older than Volta, where MPS offers no per-client limits.
fn arch_compute_major(arch: &str) -> Option<u32> {
    match arch.trim().to_ascii_lowercase().as_str() {
        "kepler" => Some(3),
        "maxwell" => Some(5),
        "pascal" => Some(6),
        "" | "n/a" => None,
        _ => Some(7),
    }
}

/// Memory of a MIG profile such as `3g.40gb` or `1c.3g.71gb`, in MiB. The
/// profile name rounds to whole GB, so this is only a fallback for when the
/// exact size (NVML or `-q -x`) is not available.
pub(crate) fn mig_profile_mib(profile: &str) -> Option<u64> {
    let last = profile.rsplit('.').next()?;
    let gb: u64 = last.strip_suffix("gb")?.parse().ok()?;
    gb.checked_mul(1024)
}

/// Parses `nvidia-smi -L`. GPUs carry no memory size here (0); MIG instances
/// carry their profile name in `model` and an approximate size from it.
pub fn parse_list(text: &str) -> Result<Parsed, ParseError> {
    let mut devices: Vec<Device> = Vec::new();
    let mut warnings = Vec::new();
    let mut first_error = None;
    let mut parent: Option<u32> = None;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let (head, uuid) = match line.rsplit_once("(UUID:") {
            Some((h, u)) => (h.trim(), Some(u.trim().trim_end_matches(')').trim())),
            None => (line, None),
        };
        let mut row = || -> Result<(), ParseError> {
            if let Some(rest) = head.strip_prefix("GPU ") {
                let (idx, name) = rest
                    .split_once(':')
                    .ok_or_else(|| ParseError::new(LIST, "GPU line without `:`").at(line_no))?;
                let idx: u32 = idx.trim().parse().map_err(|_| {
                    ParseError::new(LIST, format!("not a GPU index: {:?}", idx.trim()))
                        .at(line_no)
                        .field("index")
                })?;
                let mut d = Device::new(Vendor::Nvidia, name.trim(), idx);
                d.uuid = uuid.filter(|u| !u.is_empty()).map(str::to_string);
                d.sharing = gpu_sharing(false, None);
                devices.push(d);
                parent = Some(idx);
            } else if let Some(rest) = head.strip_prefix("MIG ") {
                let Some(p) = parent else {
                    return Err(ParseError::new(LIST, "MIG line before any GPU line").at(line_no));
                };
                let (profile, dev) = rest.split_once("Device").ok_or_else(|| {
                    ParseError::new(LIST, "MIG line without `Device N:`").at(line_no)
                })?;
                let idx: u32 = dev
                    .trim()
                    .trim_end_matches(':')
                    .trim()
                    .parse()
                    .map_err(|_| {
                        ParseError::new(LIST, "MIG device index is not a number")
                            .at(line_no)
                            .field("index")
                    })?;
                let profile = profile.trim();
                let parent_model = devices
                    .iter()
                    .rev()
                    .find(|d| d.mig_parent.is_none())
                    .map(|d| d.model.clone())
                    .unwrap_or_default();
                let mut d =
                    Device::new(Vendor::Nvidia, format!("{parent_model} MIG {profile}"), idx);
                d.uuid = uuid.filter(|u| !u.is_empty()).map(str::to_string);
                d.memory_total_mib = mig_profile_mib(profile).unwrap_or(0);
                d.sharing = mig_instance_sharing();
                d.mig_parent = Some(p);
                if let Some(g) = devices.iter_mut().rev().find(|d| d.mig_parent.is_none()) {
                    g.sharing = gpu_sharing(true, None);
                }
                devices.push(d);
            } else {
                return Err(
                    ParseError::new(LIST, "line is neither `GPU n: ...` nor `MIG ...`").at(line_no),
                );
            }
            Ok(())
        };
        if let Err(e) = row() {
            skip_row(e, text, &mut warnings, &mut first_error);
        }
    }
    if devices.is_empty() && first_error.is_none() {
        return Err(ParseError::new(LIST, "empty output"));
    }
    finish(LIST, text, devices, warnings, first_error)
}

/// Fills MIG instances found by `-q -x` (exact memory, no UUID) with the UUID
/// and profile name from `-L`, matching on parent index and MIG device index.
pub fn merge_mig_listing(devices: &mut [Device], listing: &[Device]) {
    for d in devices.iter_mut().filter(|d| d.mig_parent.is_some()) {
        if let Some(l) = listing
            .iter()
            .find(|l| l.mig_parent == d.mig_parent && l.index == d.index)
        {
            d.uuid = l.uuid.clone().or(d.uuid.take());
            d.model = l.model.clone();
        }
    }
}

/// What the `Persistence-M` (Linux) or `Driver-Model` (Windows) column shows
/// after the GPU name in the table's first row.
const NAME_SUFFIXES: &[&str] = &["On", "Off", "WDDM", "TCC", "MCDM", "N/A"];

/// Parses the default `nvidia-smi` table: one device per GPU row and one per
/// row of the `MIG devices:` section, whose instances carry their exact
/// memory and their GPU/compute instance IDs (several compute instances may
/// share one GPU instance). The table prints no UUIDs (take them from `-L`,
/// see [`merge_mig_listing`]); Windows shortens long names (`RTX 2080 ...`).
pub fn parse_table(text: &str) -> Result<Parsed, ParseError> {
    #[derive(PartialEq)]
    enum Section {
        Header,
        Gpus,
        Mig,
    }
    let mut section = Section::Header;
    let mut header_seen = false;
    let mut devices: Vec<Device> = Vec::new();
    let mut warnings = Vec::new();
    let mut first_error = None;
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let line_no = i + 1;
        i += 1;
        if line.contains("Processes:") {
            break;
        }
        if line.contains("MIG devices:") {
            section = Section::Mig;
            continue;
        }
        if section == Section::Header {
            header_seen |= line.contains("Bus-Id");
            if header_seen && line.trim_start().starts_with("|=") {
                section = Section::Gpus;
            }
            continue;
        }
        let Some(c) = cells(line) else { continue };
        let first = c.first().copied().unwrap_or("");
        let ids: Vec<Option<u32>> = first
            .split_whitespace()
            .map(|t| t.parse::<u32>().ok())
            .collect();
        if ids.first().copied().flatten().is_none() {
            // Continuation lines (second and third line of a GPU, the BAR1
            // line of an instance) and the MIG header start with no number.
            continue;
        }
        let result = if section == Section::Gpus {
            let second = lines.get(i).and_then(|l| cells(l));
            if second.is_some() {
                i += 1;
            }
            // Drivers since R450 print a third line holding `MIG M.`.
            let third = lines
                .get(i)
                .and_then(|l| cells(l))
                .filter(|t| t.first().is_some_and(|f| f.is_empty()));
            if third.is_some() {
                i += 1;
            }
            table_gpu(&c, second.as_deref(), third.as_deref(), line_no)
        } else {
            table_mig(&c, &ids, &devices, line_no)
        };
        match result {
            Ok(d) => devices.push(d),
            Err(e) => skip_row(e, text, &mut warnings, &mut first_error),
        }
    }
    if !header_seen {
        return Err(ParseError::new(
            TABLE,
            "table header with `Bus-Id` not found",
        ));
    }
    warnings.extend(truncation(TABLE, text, "Processes:", true, devices.len()));
    finish(TABLE, text, devices, warnings, first_error)
}

fn table_gpu(
    first: &[&str],
    second: Option<&[&str]>,
    third: Option<&[&str]>,
    line_no: usize,
) -> Result<Device, ParseError> {
    let (Some(second), true) = (second.filter(|s| s.len() >= 3), first.len() >= 3) else {
        return Err(ParseError::new(
            TABLE,
            "GPU row is not followed by its memory line (truncated output?)",
        )
        .at(line_no));
    };
    let mut words: Vec<&str> = first[0].split_whitespace().collect();
    let index: u32 = words.first().and_then(|w| w.parse().ok()).unwrap_or(0);
    words.remove(0);
    if words.last().is_some_and(|w| NAME_SUFFIXES.contains(w)) {
        words.pop();
    }
    if words.is_empty() {
        return Err(ParseError::new(TABLE, "GPU name is empty")
            .at(line_no)
            .field("Name"));
    }
    let (used, total) = used_total(second[1]).ok_or_else(|| {
        ParseError::new(TABLE, format!("not a memory usage: {:?}", second[1]))
            .at(line_no + 1)
            .field("Memory-Usage")
    })?;
    let mig = third
        .and_then(|t| t.get(2))
        .is_some_and(|m| m.eq_ignore_ascii_case("enabled"));
    let mut d = Device::new(Vendor::Nvidia, words.join(" "), index);
    d.bus_id = first[1]
        .split_whitespace()
        .next()
        .filter(|b| !is_na(b))
        .map(str::to_string);
    d.memory_total_mib = total;
    d.memory_used_mib = used;
    d.utilization_percent = second[2].split_whitespace().next().and_then(percent);
    d.sharing = gpu_sharing(mig, None);
    Ok(d)
}

fn table_mig(
    c: &[&str],
    ids: &[Option<u32>],
    devices: &[Device],
    line_no: usize,
) -> Result<Device, ParseError> {
    let [Some(gpu), Some(gi), Some(ci), Some(mig)] = ids[..] else {
        return Err(
            ParseError::new(TABLE, "MIG row does not start with `GPU GI CI MIG` numbers")
                .at(line_no)
                .field("GPU GI CI MIG"),
        );
    };
    let Some(parent) = devices
        .iter()
        .find(|d| d.mig_parent.is_none() && d.index == gpu)
    else {
        return Err(ParseError::new(
            TABLE,
            format!("MIG row names GPU {gpu}, which is not in the table"),
        )
        .at(line_no)
        .field("GPU"));
    };
    let mem = c.get(1).copied().unwrap_or("");
    let (used, total) = used_total(mem).ok_or_else(|| {
        ParseError::new(TABLE, format!("not a memory usage: {mem:?}"))
            .at(line_no)
            .field("Memory-Usage")
    })?;
    let mut d = Device::new(
        Vendor::Nvidia,
        format!("{} MIG GI {gi} CI {ci}", parent.model),
        mig,
    );
    d.bus_id = parent.bus_id.clone();
    d.memory_total_mib = total;
    d.memory_used_mib = used;
    d.sharing = mig_instance_sharing();
    d.mig_parent = Some(gpu);
    Ok(d)
}

/// A warning for each GPU with MIG on and no instance among `devices`: such a
/// GPU cannot run anything (CUDA only sees its instances), and nothing said
/// which instances exist.
pub fn mig_without_instances(devices: &[Device]) -> Vec<(u32, ParseWarning)> {
    devices
        .iter()
        .filter(|g| g.mig_parent.is_none() && g.sharing.contains(&SharingMode::Mig))
        .filter(|g| !devices.iter().any(|m| m.mig_parent == Some(g.index)))
        .map(|g| {
            (
                g.index,
                ParseWarning::new(
                    "nvidia-smi",
                    format!(
                        "GPU {} ({}) has MIG enabled but no MIG instance could be read, so it is not offered: create instances (`nvidia-smi mig -cgi ... -C`) or turn MIG off",
                        g.index, g.model
                    ),
                ),
            )
        })
        .collect()
}
