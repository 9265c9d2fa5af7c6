//! Seat specs, workloads and datasets: checked once here, trusted after.

use serde::{Deserialize, Serialize};

use super::error::Checks;

pub const VENDORS: &[&str] = &[
    "nvidia",
    "ascend",
    "hygon",
    "metax",
    "mthreads",
    "cambricon",
    "iluvatar",
];
/// `notebook` is JupyterLab per seat (agent runtime `notebook`, issue 22); it
/// needs no command or image.
pub const RUNTIMES: &[&str] = &["process", "container", "kubernetes", "slurm", NOTEBOOK];
/// Notebook seats warm before the bell and serve under their link.
pub const NOTEBOOK: &str = "notebook";

const MAX_CPU_MILLIS: i64 = 1024 * 1000;
const MAX_MEMORY_MIB: i64 = 16 * 1024 * 1024;
const MAX_DEVICE_MEMORY_MIB: i64 = 1024 * 1024;
const MAX_NAME: usize = 128;
const MAX_ARG: usize = 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuSpec {
    pub vendors: Vec<String>,
    pub model: Option<String>,
    pub memory_mib: u64,
    pub compute_percent: u32,
    pub count: u32,
    /// none, soft or hard
    pub min_isolation: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeatSpec {
    pub cpu_millis: u32,
    pub memory_mib: u64,
    pub gpu: Option<GpuSpec>,
    pub runtime: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    pub command: String,
    pub args: Vec<String>,
    pub env: std::collections::BTreeMap<String, String>,
    pub image: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    pub name: String,
    pub url: String,
    pub sha256: String,
    pub size_bytes: u64,
}

/// Raw numbers as a transport delivers them (signed, so that a negative value
/// is reported by name instead of failing to decode).
#[derive(Debug, Clone, Default)]
pub struct RawGpu {
    pub vendors: Vec<String>,
    pub model: String,
    pub memory_mib: i64,
    pub compute_percent: i64,
    pub count: i64,
    pub min_isolation: String,
}

#[derive(Debug, Clone, Default)]
pub struct RawSeat {
    pub cpu_millis: i64,
    pub memory_mib: i64,
    pub gpu: Option<RawGpu>,
    pub runtime: String,
}

#[derive(Debug, Clone, Default)]
pub struct RawDataset {
    pub name: String,
    pub url: String,
    pub sha256: String,
    pub size_bytes: i64,
}

fn in_range(c: &mut Checks, v: i64, lo: i64, hi: i64, field: &str) -> bool {
    if v < lo || v > hi {
        c.fail(field, format!("must be between {lo} and {hi}, not {v}"));
        false
    } else {
        true
    }
}

pub fn parse_seat(c: &mut Checks, prefix: &str, raw: &RawSeat) -> SeatSpec {
    in_range(
        c,
        raw.cpu_millis,
        0,
        MAX_CPU_MILLIS,
        &format!("{prefix}.cpu_millis"),
    );
    in_range(
        c,
        raw.memory_mib,
        0,
        MAX_MEMORY_MIB,
        &format!("{prefix}.memory_mib"),
    );
    let runtime = if raw.runtime.is_empty() {
        "process".to_string()
    } else {
        raw.runtime.clone()
    };
    if !RUNTIMES.contains(&runtime.as_str()) {
        c.fail(
            format!("{prefix}.runtime"),
            format!("must be one of {}", RUNTIMES.join(", ")),
        );
    }
    let gpu = raw.gpu.as_ref().map(|g| {
        let f = |n: &str| format!("{prefix}.gpu.{n}");
        if g.vendors.len() > VENDORS.len() {
            c.fail(f("vendors"), "lists more vendors than exist");
        }
        let mut vendors = Vec::new();
        for (i, v) in g.vendors.iter().enumerate() {
            let v = v.trim().to_ascii_lowercase();
            if v == "any" {
                continue;
            }
            if !VENDORS.contains(&v.as_str()) {
                c.fail(
                    format!("{prefix}.gpu.vendors[{i}]"),
                    format!("unknown vendor; known: {}", VENDORS.join(", ")),
                );
            } else if !vendors.contains(&v) {
                vendors.push(v);
            }
        }
        if g.model.len() > MAX_NAME || g.model.contains('\0') {
            c.fail(f("model"), format!("must be at most {MAX_NAME} characters"));
        }
        in_range(c, g.memory_mib, 0, MAX_DEVICE_MEMORY_MIB, &f("memory_mib"));
        in_range(c, g.compute_percent, 1, 100, &f("compute_percent"));
        let count = if g.count == 0 { 1 } else { g.count };
        in_range(c, count, 1, 16, &f("count"));
        let iso = if g.min_isolation.is_empty() {
            "none".to_string()
        } else {
            g.min_isolation.to_ascii_lowercase()
        };
        if !["none", "soft", "hard"].contains(&iso.as_str()) {
            c.fail(f("min_isolation"), "must be none, soft or hard");
        }
        GpuSpec {
            vendors,
            model: Some(g.model.trim().to_string()).filter(|m| !m.is_empty()),
            memory_mib: g.memory_mib.max(0) as u64,
            compute_percent: g.compute_percent.clamp(0, 100) as u32,
            count: count.clamp(1, 16) as u32,
            min_isolation: iso,
        }
    });
    SeatSpec {
        cpu_millis: raw.cpu_millis.clamp(0, MAX_CPU_MILLIS) as u32,
        memory_mib: raw.memory_mib.clamp(0, MAX_MEMORY_MIB) as u64,
        gpu,
        runtime,
    }
}

impl Workload {
    /// The program a process-runtime seat starts from its node's PATH, by
    /// name: what the node's agent reports it has installed or not. None for
    /// other runtimes (their image or cluster brings the command), and for a
    /// command given as a path or through a variable the agent expands.
    pub fn path_program(&self, runtime: &str) -> Option<&str> {
        let command = self.command.trim();
        let by_name = !command.is_empty()
            && !command.contains(['/', '$'])
            && !command.contains(char::is_whitespace);
        (runtime == "process" && by_name).then_some(command)
    }
}

pub fn check_workload(c: &mut Checks, prefix: &str, runtime: &str, w: &Workload) {
    if runtime == "process" && w.command.trim().is_empty() {
        c.fail(
            format!("{prefix}.command"),
            "is required for the process runtime",
        );
    }
    if runtime == "container" && w.image.trim().is_empty() {
        c.fail(
            format!("{prefix}.image"),
            "is required for the container runtime",
        );
    }
    let has_nul = w.command.contains('\0')
        || w.image.contains('\0')
        || w.args.iter().any(|a| a.contains('\0'))
        || w.env
            .iter()
            .any(|(k, v)| k.contains('\0') || v.contains('\0'));
    if has_nul {
        c.fail(prefix, "must not contain NUL characters");
    }
    if w.command.len() > MAX_ARG {
        c.fail(
            format!("{prefix}.command"),
            format!("must be at most {MAX_ARG} bytes"),
        );
    }
    if w.image.len() > 512 {
        c.fail(format!("{prefix}.image"), "must be at most 512 bytes");
    }
    if w.args.len() > 64 {
        c.fail(format!("{prefix}.args"), "must have at most 64 entries");
    }
    for (i, a) in w.args.iter().enumerate() {
        if a.len() > MAX_ARG {
            c.fail(
                format!("{prefix}.args[{i}]"),
                format!("must be at most {MAX_ARG} bytes"),
            );
        }
    }
    if w.env.len() > 64 {
        c.fail(format!("{prefix}.env"), "must have at most 64 entries");
    }
    for (k, v) in &w.env {
        let valid = !k.is_empty()
            && k.len() <= 128
            && !k.starts_with(|ch: char| ch.is_ascii_digit())
            && k.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if !valid {
            c.fail(
                format!("{prefix}.env[{k}]"),
                "name must be letters, digits and _, not starting with a digit",
            );
        }
        if v.len() > MAX_ARG {
            c.fail(
                format!("{prefix}.env[{k}]"),
                format!("value must be at most {MAX_ARG} bytes"),
            );
        }
    }
}

pub fn parse_datasets(c: &mut Checks, raw: &[RawDataset]) -> Vec<Dataset> {
    if raw.len() > 32 {
        c.fail("datasets", "must have at most 32 entries");
    }
    raw.iter()
        .enumerate()
        .map(|(i, d)| {
            let f = |n: &str| format!("datasets[{i}].{n}");
            if d.name.contains('\0') || d.url.contains('\0') || d.sha256.contains('\0') {
                c.fail(format!("datasets[{i}]"), "must not contain NUL characters");
            }
            if d.name.is_empty() || d.name.len() > MAX_NAME {
                c.fail(f("name"), format!("must be 1 to {MAX_NAME} characters"));
            }
            if !(d.url.starts_with("http://") || d.url.starts_with("https://"))
                || d.url.len() > 2048
            {
                c.fail(
                    f("url"),
                    "must be an http:// or https:// URL of at most 2048 bytes",
                );
            }
            let sha = d.sha256.to_ascii_lowercase();
            if !sha.is_empty() && !(sha.len() == 64 && sha.chars().all(|ch| ch.is_ascii_hexdigit()))
            {
                c.fail(f("sha256"), "must be 64 hexadecimal digits");
            }
            in_range(c, d.size_bytes, 0, 1 << 44, &f("size_bytes"));
            Dataset {
                name: d.name.clone(),
                url: d.url.clone(),
                sha256: sha,
                size_bytes: d.size_bytes.max(0) as u64,
            }
        })
        .collect()
}

pub fn check_text(c: &mut Checks, field: &str, v: &str, max: usize, required: bool) {
    if v.contains('\0') {
        // PostgreSQL text cannot hold NUL; refuse it here, by name.
        c.fail(field, "must not contain NUL characters");
    } else if required && v.trim().is_empty() {
        c.fail(field, "is required");
    } else if v.len() > max {
        c.fail(field, format!("must be at most {max} characters"));
    }
}

impl SeatSpec {
    /// The same spec as the placement core sees it.
    pub fn to_placement(&self) -> classgrid_placement::SeatSpec {
        use classgrid_placement::Isolation;
        classgrid_placement::SeatSpec {
            cpu_millis: self.cpu_millis,
            memory_mib: self.memory_mib,
            runtime: self.runtime.clone(),
            gpu: self.gpu.as_ref().map(|g| classgrid_placement::GpuSpec {
                vendors: g.vendors.clone(),
                model: g.model.clone(),
                memory_mib: g.memory_mib,
                compute_percent: g.compute_percent,
                count: g.count,
                min_isolation: match g.min_isolation.as_str() {
                    "hard" => Isolation::Hard,
                    "soft" => Isolation::Soft,
                    _ => Isolation::None,
                },
            }),
        }
    }
}
