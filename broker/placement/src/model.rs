//! Plain values the placement core works on. The broker's adapters build these
//! from the live fleet view and the store; nothing here does I/O.

use uuid::Uuid;

pub type SiteId = Uuid;
pub type NodeId = Uuid;

/// Milliseconds since the Unix epoch. Plain integers keep the core cheap to
/// copy and compare in the hot loop.
pub type Millis = i64;

/// A half-open interval `[start, end)` in Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    pub start: Millis,
    pub end: Millis,
}

impl Window {
    pub fn new(start: Millis, end: Millis) -> Self {
        Self { start, end }
    }
    pub fn overlaps(&self, other: &Window) -> bool {
        self.start < other.end && other.start < self.end
    }
    pub fn len_ms(&self) -> i64 {
        self.end - self.start
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SiteKind {
    School,
    DistrictPop,
    Cloud,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    Edge,
    Cloud,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Liveness {
    Connected,
    Disconnected,
    Lost,
}

/// How strongly a slice is isolated from its neighbours on the same device.
/// Ordered: `None < Soft < Hard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isolation {
    None,
    Soft,
    Hard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RttSource {
    Measured,
    Estimated,
    Configured,
}

/// An RTT value with its source and, for an estimate, its error bound.
///
/// Filters and scores use `ms` alone: an estimate's centre is the best
/// single guess there is, and widening or narrowing it by the bound would
/// make placement depend on how settled the coordinates happen to be. The
/// bound is carried for people and platforms reading the decision.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Rtt {
    pub ms: f64,
    pub source: RttSource,
    /// ± ms around `ms` for an `Estimated` value; `None` for measured and
    /// configured values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_ms: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Site {
    pub id: SiteId,
    pub name: String,
    pub kind: SiteKind,
    pub district: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub index: u32,
    /// Lower-case vendor key: nvidia, ascend, hygon, metax, mthreads, cambricon, iluvatar.
    pub vendor: String,
    pub model: String,
    pub memory_mib: u64,
    pub healthy: bool,
    /// How many slices may share this device at once.
    pub max_slices: u32,
    pub isolation: Isolation,
}

/// A school keeps its own node for its own classes during these hours.
#[derive(Debug, Clone)]
pub struct LendingPolicy {
    pub owner_site: SiteId,
    /// Minutes east of UTC of the owner's wall clock.
    pub utc_offset_minutes: i32,
    /// Bit 0 = Monday … bit 6 = Sunday.
    pub weekdays: u8,
    /// Minute of day, `[start, end)`.
    pub start_minute: u32,
    pub end_minute: u32,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub id: NodeId,
    pub name: String,
    pub site_id: SiteId,
    pub tier: Tier,
    pub liveness: Liveness,
    pub healthy: bool,
    pub cordoned: bool,
    /// False while the node waits for a district admin's approval; placement
    /// never uses it until then.
    pub approved: bool,
    pub runtimes: Vec<String>,
    pub cpu_millis: u32,
    pub memory_mib: u64,
    pub devices: Vec<Device>,
    /// sha256 digests of content cached on the node or its site's edge.
    pub cached: Vec<String>,
    /// Measured bandwidth from the content origin to the node, bytes per second.
    pub staging_bytes_per_sec: Option<f64>,
    pub lending: Option<LendingPolicy>,
}

/// The fleet as placement sees it at one instant.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    pub sites: Vec<Site>,
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Owner {
    Lesson(Uuid),
    Job(Uuid),
}

/// Capacity held on one node (and optionally one device of it) for a window.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub owner: Owner,
    pub node_id: NodeId,
    pub device_index: Option<u32>,
    pub window: Window,
    pub cpu_millis: u32,
    pub memory_mib: u64,
    pub gpu_memory_mib: u64,
    pub gpu_compute_percent: u32,
    /// Batch jobs may be preempted by lessons; lesson seats never are.
    pub preemptible: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GpuSpec {
    /// Empty means any vendor.
    pub vendors: Vec<String>,
    /// Case-insensitive substring of the device model.
    pub model: Option<String>,
    pub memory_mib: u64,
    pub compute_percent: u32,
    /// Devices per seat; above 1 each device is given whole-as-asked.
    pub count: u32,
    pub min_isolation: Isolation,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SeatSpec {
    pub cpu_millis: u32,
    pub memory_mib: u64,
    pub gpu: Option<GpuSpec>,
    pub runtime: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DatasetRef {
    pub sha256: String,
    pub size_bytes: u64,
}

/// What one booking (a lesson, or a job as a one-seat request) asks for.
#[derive(Debug, Clone)]
pub struct Request {
    pub school_site: SiteId,
    /// The reservation window: `[start − staging lead, end + grace]`.
    pub window: Window,
    pub seats: u32,
    /// Admit with at least this many seats; equal to `seats` for all-or-nothing.
    pub min_seats: u32,
    pub seat: SeatSpec,
    pub max_rtt_ms: f64,
    pub datasets: Vec<DatasetRef>,
    /// Time available for staging before the start, ms.
    pub staging_lead_ms: i64,
    /// Lessons may preempt preemptible reservations; jobs may not.
    pub may_preempt: bool,
    /// Where the booking's data must stay (DESIGN.md §1).
    pub residency: Residency,
}

/// Where a school's or a lesson's data must stay: the school itself, its
/// district, or the education private network (no node at a cloud site).
/// Minors' data and classroom video are the usual reasons.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Residency {
    #[default]
    Anywhere,
    School,
    District,
    EducationNetwork,
}

impl Residency {
    /// "", "school", "district" or "education_network".
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "" | "anywhere" => Some(Self::Anywhere),
            "school" => Some(Self::School),
            "district" => Some(Self::District),
            "education_network" => Some(Self::EducationNetwork),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anywhere => "",
            Self::School => "school",
            Self::District => "district",
            Self::EducationNetwork => "education_network",
        }
    }

    /// Whether data may go to a node at `node_site`, for a school at
    /// `school`. A node whose site is unknown satisfies no rule.
    pub fn allows(self, school: &Site, node_site: Option<&Site>) -> bool {
        match (self, node_site) {
            (Self::Anywhere, _) => true,
            (_, None) => false,
            (Self::School, Some(s)) => s.id == school.id,
            (Self::District, Some(s)) => {
                s.id == school.id || (!school.district.is_empty() && s.district == school.district)
            }
            (Self::EducationNetwork, Some(s)) => s.kind != SiteKind::Cloud,
        }
    }
}
