//! Accelerator discovery and slice controls for the classgrid node agent.
//!
//! Discovery runs each vendor's management tool (NVIDIA through NVML first),
//! parses its output into one normalised [`Device`] model, and never fails as a
//! whole: a vendor whose tool misbehaves becomes a warning in [`Discovery`] while
//! the other vendors still report. The parsers are pure functions over text, so
//! they are tested against real recorded outputs in `fixtures/`.
//!
//! [`slice_controls`] turns "this much memory and this share of compute on that
//! device" into the environment a seat's process needs, and says honestly how
//! strong the isolation is.

use serde::{Deserialize, Serialize};
use std::fmt;

pub mod ascend;
pub mod cambricon;
pub mod hygon;
pub mod iluvatar;
pub mod metax;
pub mod mthreads;
pub mod nvidia;
mod nvml;
mod runner;
mod slice;
mod table;

pub use runner::{DiscoverOptions, ToolPaths, discover};
pub use slice::{ControlEnv, SliceControls, slice_controls, supported_isolation};

/// Accelerator vendors that classgrid knows how to discover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vendor {
    Nvidia,
    Ascend,
    Hygon,
    Metax,
    Mthreads,
    Cambricon,
    Iluvatar,
}

impl Vendor {
    pub const ALL: [Vendor; 7] = [
        Vendor::Nvidia,
        Vendor::Ascend,
        Vendor::Hygon,
        Vendor::Metax,
        Vendor::Mthreads,
        Vendor::Cambricon,
        Vendor::Iluvatar,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::Nvidia => "nvidia",
            Vendor::Ascend => "ascend",
            Vendor::Hygon => "hygon",
            Vendor::Metax => "metax",
            Vendor::Mthreads => "mthreads",
            Vendor::Cambricon => "cambricon",
            Vendor::Iluvatar => "iluvatar",
        }
    }
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Vendor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Vendor::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                format!(
                    "unknown vendor `{s}`: expected one of nvidia, ascend, hygon, metax, mthreads, cambricon, iluvatar"
                )
            })
    }
}

/// Ways one device can be shared between several slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SharingMode {
    /// The whole device goes to one slice; nothing is shared.
    Exclusive,
    /// Plain driver time-slicing: several processes on one device, no limits.
    TimeSlice,
    /// NVIDIA Multi-Process Service with per-client thread and memory limits.
    Mps,
    /// HAMi-core (`libvgpu.so`), an LD_PRELOAD hook that caps memory and SM use.
    HamiCore,
    /// NVIDIA Multi-Instance GPU: hardware partitions.
    Mig,
    /// Huawei Ascend vNPU: hardware partitions created from templates.
    Vnpu,
}

impl SharingMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SharingMode::Exclusive => "exclusive",
            SharingMode::TimeSlice => "time_slice",
            SharingMode::Mps => "mps",
            SharingMode::HamiCore => "hami_core",
            SharingMode::Mig => "mig",
            SharingMode::Vnpu => "vnpu",
        }
    }
}

/// How strongly one slice is kept from another on the same device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// Nothing stops one slice from taking all memory or compute.
    None,
    /// Limits enforced in software (MPS, HAMi-core); a fault may still spread.
    Soft,
    /// Hardware partitions (MIG, vNPU) or a device of one's own.
    Hard,
}

impl Isolation {
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::None => "none",
            Isolation::Soft => "soft",
            Isolation::Hard => "hard",
        }
    }
}

/// One accelerator, or one MIG instance of an NVIDIA GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub vendor: Vendor,
    pub model: String,
    pub uuid: Option<String>,
    pub bus_id: Option<String>,
    /// The index that the vendor's visible-devices variable takes. For a MIG
    /// instance it is the MIG device index within its parent GPU.
    pub index: u32,
    pub memory_total_mib: u64,
    pub memory_used_mib: u64,
    pub utilization_percent: Option<u32>,
    pub healthy: bool,
    pub sharing: Vec<SharingMode>,
    /// For a MIG instance: the index of its parent GPU.
    pub mig_parent: Option<u32>,
}

impl Device {
    /// A device with the fields every parser fills the same way.
    pub(crate) fn new(vendor: Vendor, model: impl Into<String>, index: u32) -> Device {
        Device {
            vendor,
            model: model.into(),
            uuid: None,
            bus_id: None,
            index,
            memory_total_mib: 0,
            memory_used_mib: 0,
            utilization_percent: None,
            healthy: true,
            sharing: vec![SharingMode::Exclusive, SharingMode::TimeSlice],
            mig_parent: None,
        }
    }
}

/// What [`discover`] found, and what went wrong on the way.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Discovery {
    pub devices: Vec<Device>,
    pub warnings: Vec<String>,
}

/// Why a tool's output could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The tool and format, e.g. `nvidia-smi --query-gpu`.
    pub format: &'static str,
    /// 1-based line number, when the problem is on one line.
    pub line: Option<usize>,
    /// The column or key that was wrong, when there is one.
    pub field: Option<String>,
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(format: &'static str, message: impl Into<String>) -> ParseError {
        ParseError {
            format,
            line: None,
            field: None,
            message: message.into(),
        }
    }

    pub(crate) fn at(mut self, line: usize) -> ParseError {
        self.line = Some(line);
        self
    }

    pub(crate) fn field(mut self, field: impl Into<String>) -> ParseError {
        self.field = Some(field.into());
        self
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.format)?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ", field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ParseError {}

/// A row that a parser skipped or read only in part, or a sign that the
/// output was cut off. The devices it returned are still right, but the list
/// may be short or a field may be missing, so discovery passes every warning
/// on to the person running the agent and to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseWarning {
    /// The tool and format, e.g. `npu-smi info`.
    pub format: &'static str,
    /// 1-based line number of the row the warning is about, when there is one.
    pub line: Option<usize>,
    /// That line as the tool printed it (trimmed, at most 100 characters).
    pub text: Option<String>,
    pub message: String,
}

impl ParseWarning {
    pub(crate) fn new(format: &'static str, message: impl Into<String>) -> ParseWarning {
        ParseWarning {
            format,
            line: None,
            text: None,
            message: message.into(),
        }
    }

    /// Names the line (1-based) and keeps its text, shortened.
    pub(crate) fn at(mut self, line: usize, text: &str) -> ParseWarning {
        self.line = Some(line);
        let t = text.trim();
        let mut shown: String = t.chars().take(100).collect();
        if shown.len() < t.len() {
            shown.push('…');
        }
        self.text = Some(shown);
        self
    }
}

impl fmt::Display for ParseWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.format)?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(text) = &self.text {
            write!(f, " (the line reads {text:?})")?;
        }
        Ok(())
    }
}

/// What a parser read: the devices, and what it could not read fully.
/// It dereferences to the device list, so `parsed.len()`, `parsed[0]` and
/// `parsed.iter()` read the devices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub devices: Vec<Device>,
    pub warnings: Vec<ParseWarning>,
}

impl Parsed {
    pub(crate) fn new(devices: Vec<Device>, warnings: Vec<ParseWarning>) -> Parsed {
        Parsed { devices, warnings }
    }
}

impl std::ops::Deref for Parsed {
    type Target = Vec<Device>;
    fn deref(&self) -> &Vec<Device> {
        &self.devices
    }
}

impl std::ops::DerefMut for Parsed {
    fn deref_mut(&mut self) -> &mut Vec<Device> {
        &mut self.devices
    }
}
