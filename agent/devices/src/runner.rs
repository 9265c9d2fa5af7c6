//! Running the vendor tools: discovery never fails as a whole. Each vendor
//! runs in its own thread with its own time limit; a vendor whose tool is
//! missing says nothing, one whose tool fails, hangs or prints something
//! unreadable adds a warning, and the devices of the others still come back.
//!
//! A tool that is missing while the vendor's device nodes exist in `/dev`
//! (`nvidia0`, `davinci0`, `cambricon_dev0`, `iluvatar0`, `mxcd`) gets a
//! warning: the node has accelerators that cannot be reported. Hygon (whose
//! `/dev/kfd` is shared with AMD) and Moore Threads are not checked this way.

use crate::{
    Device, Discovery, ParseError, Parsed, SharingMode, Vendor, ascend, cambricon, hygon, iluvatar,
};
use crate::{metax, mthreads, nvidia, nvml};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where each vendor tool is. A bare name is looked up in `PATH` and then in
/// [`DiscoverOptions::search_dirs`]; a path with a `/` is used as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolPaths {
    pub nvidia_smi: PathBuf,
    pub npu_smi: PathBuf,
    pub hy_smi: PathBuf,
    pub rocm_smi: PathBuf,
    pub mx_smi: PathBuf,
    pub mthreads_gmi: PathBuf,
    pub cnmon: PathBuf,
    pub ixsmi: PathBuf,
}

impl Default for ToolPaths {
    fn default() -> Self {
        ToolPaths {
            nvidia_smi: "nvidia-smi".into(),
            npu_smi: "npu-smi".into(),
            hy_smi: "hy-smi".into(),
            rocm_smi: "rocm-smi".into(),
            mx_smi: "mx-smi".into(),
            mthreads_gmi: "mthreads-gmi".into(),
            cnmon: "cnmon".into(),
            ixsmi: "ixsmi".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverOptions {
    /// Time limit for each tool run; the tool's process group is killed after it.
    pub timeout: Duration,
    pub tools: ToolPaths,
    /// Which vendors to look for.
    pub vendors: Vec<Vendor>,
    /// Try NVML before `nvidia-smi`.
    pub use_nvml: bool,
    /// libnvidia-ml to load; `None` tries `libnvidia-ml.so.1` and `libnvidia-ml.so`.
    pub nvml_lib: Option<PathBuf>,
    /// Vendor install folders searched after `PATH`.
    pub search_dirs: Vec<PathBuf>,
    /// Where device nodes live (tests point it elsewhere).
    pub dev_dir: PathBuf,
}

impl Default for DiscoverOptions {
    fn default() -> Self {
        DiscoverOptions {
            timeout: Duration::from_secs(5),
            tools: ToolPaths::default(),
            vendors: Vendor::ALL.to_vec(),
            use_nvml: true,
            nvml_lib: None,
            search_dirs: [
                "/usr/local/bin",
                "/opt/rocm/bin",
                "/opt/hyhal/bin",
                "/usr/local/corex/bin",
            ]
            .into_iter()
            .map(PathBuf::from)
            .collect(),
            dev_dir: PathBuf::from("/dev"),
        }
    }
}

/// Discovers the accelerators of every vendor in `opts.vendors`, in parallel.
pub fn discover(opts: &DiscoverOptions) -> Discovery {
    let results: Vec<(Vec<Device>, Vec<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = opts
            .vendors
            .iter()
            .map(|&v| s.spawn(move || discover_vendor(v, opts)))
            .collect();
        handles
            .into_iter()
            .zip(&opts.vendors)
            .map(|(h, v)| {
                h.join().unwrap_or_else(|_| {
                    (Vec::new(), vec![format!("{v}: discovery thread panicked")])
                })
            })
            .collect()
    });
    let mut out = Discovery::default();
    for (devices, warnings) in results {
        out.devices.extend(devices);
        out.warnings.extend(warnings);
    }
    out
}

type Found = (Vec<Device>, Vec<String>);
type Parser = fn(&str) -> Result<Parsed, ParseError>;

fn discover_vendor(vendor: Vendor, opts: &DiscoverOptions) -> Found {
    let t = &opts.tools;
    match vendor {
        Vendor::Nvidia => discover_nvidia(opts),
        Vendor::Ascend => simple(vendor, opts, &t.npu_smi, &["info"], ascend::parse_info),
        Vendor::Hygon => discover_hygon(opts),
        Vendor::Metax => simple(vendor, opts, &t.mx_smi, &[], metax::parse_mx_smi),
        Vendor::Mthreads => simple(
            vendor,
            opts,
            &t.mthreads_gmi,
            &[],
            mthreads::parse_mthreads_gmi,
        ),
        Vendor::Cambricon => simple(vendor, opts, &t.cnmon, &[], cambricon::parse_cnmon),
        Vendor::Iluvatar => simple(vendor, opts, &t.ixsmi, &[], iluvatar::parse_ixsmi),
    }
}

fn simple(
    vendor: Vendor,
    opts: &DiscoverOptions,
    tool: &Path,
    args: &[&str],
    parse: Parser,
) -> Found {
    let Some(path) = resolve(tool, &opts.search_dirs) else {
        return (
            Vec::new(),
            missing_tool_warning(vendor, tool, &opts.dev_dir),
        );
    };
    match run_parse(&path, args, opts.timeout, parse) {
        Ok(found) => found,
        Err(w) => (Vec::new(), vec![w]),
    }
}

fn discover_nvidia(opts: &DiscoverOptions) -> Found {
    let mut warnings = Vec::new();
    let smi = resolve(&opts.tools.nvidia_smi, &opts.search_dirs);
    let mut devices = None;
    if opts.use_nvml {
        match nvml::discover(opts.nvml_lib.as_deref()) {
            nvml::NvmlOutcome::Devices(d) => devices = Some(d),
            nvml::NvmlOutcome::NotInstalled => {}
            nvml::NvmlOutcome::Failed(m) => {
                warnings.push(format!("nvidia: {m}; trying nvidia-smi"))
            }
        }
    }
    if devices.is_none()
        && let Some(p) = &smi
    {
        let query = format!("--query-gpu={}", nvidia::QUERY_FIELDS);
        match run_parse(
            p,
            &[&query, "--format=csv"],
            opts.timeout,
            nvidia::parse_query_csv,
        ) {
            Ok((d, w)) => {
                devices = Some(d);
                warnings.extend(w);
            }
            Err(w) => warnings.push(w),
        }
    }
    let Some(mut devices) = devices else {
        if smi.is_none() && warnings.is_empty() {
            warnings.extend(missing_tool_warning(
                Vendor::Nvidia,
                &opts.tools.nvidia_smi,
                &opts.dev_dir,
            ));
        }
        return (Vec::new(), warnings);
    };
    let has_mig = devices
        .iter()
        .any(|d| d.sharing.contains(&SharingMode::Mig));
    if has_mig {
        match &smi {
            Some(p) => {
                let migs = mig_instances(p, opts.timeout, &devices, &mut warnings);
                devices.extend(migs);
            }
            None => warnings.push(
                "nvidia: MIG is enabled but nvidia-smi was not found, so MIG instances cannot be read".into(),
            ),
        }
    }
    // A GPU in MIG mode runs nothing itself: with no instance read, it is
    // left out (and named) rather than offered as a slot nobody can use.
    for (index, w) in nvidia::mig_without_instances(&devices) {
        warnings.push(format!("nvidia: {}", w.message));
        devices.retain(|d| !(d.mig_parent.is_none() && d.index == index));
    }
    (devices, warnings)
}

/// The MIG instances of a source, each moved to its parent's real index: the
/// XML numbers GPUs by position, so parents are matched by PCI bus id.
fn instances_of(all: Vec<Device>, gpus: &[Device]) -> Vec<Device> {
    let parents: Vec<(u32, Option<String>)> = all
        .iter()
        .filter(|d| d.mig_parent.is_none())
        .map(|d| (d.index, d.bus_id.clone()))
        .collect();
    all.into_iter()
        .filter(|d| d.mig_parent.is_some())
        .map(|mut d| {
            let bus = parents
                .iter()
                .find(|(i, _)| Some(*i) == d.mig_parent)
                .and_then(|(_, b)| b.clone());
            if let Some(g) = gpus
                .iter()
                .find(|g| g.bus_id.is_some() && same_bus(g.bus_id.as_deref(), bus.as_deref()))
            {
                d.mig_parent = Some(g.index);
            }
            d
        })
        .collect()
}

/// Bus ids compare without case (`00000000:9D:00.0` against `…:9d:00.0`).
fn same_bus(a: Option<&str>, b: Option<&str>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a.eq_ignore_ascii_case(b))
}

/// MIG instances, from what `nvidia-smi` really prints: exact memory from
/// `-q -x`, else from the default table's `MIG devices:` section; UUIDs and
/// profile names from `-L`, which alone gives memory only as the profile
/// name rounds it.
fn mig_instances(
    smi: &Path,
    timeout: Duration,
    gpus: &[Device],
    warnings: &mut Vec<String>,
) -> Vec<Device> {
    let mut migs = Vec::new();
    match run_parse(smi, &["-q", "-x"], timeout, nvidia::parse_query_xml) {
        Ok((all, w)) => {
            warnings.extend(w);
            migs = instances_of(all, gpus);
        }
        Err(w) => warnings.push(w),
    }
    if migs.is_empty() {
        match run_parse(smi, &[], timeout, nvidia::parse_table) {
            Ok((all, w)) => {
                warnings.extend(w);
                migs = instances_of(all, gpus);
            }
            Err(w) => warnings.push(w),
        }
    }
    match run_parse(smi, &["-L"], timeout, nvidia::parse_list) {
        Ok((l, w)) if migs.is_empty() => {
            warnings.extend(w);
            migs = l.into_iter().filter(|d| d.mig_parent.is_some()).collect();
            if !migs.is_empty() {
                warnings.push(
                    "nvidia: MIG instance memory estimated from profile names (neither nvidia-smi -q -x nor the nvidia-smi table gave it)".into(),
                );
            }
        }
        Ok((l, w)) => {
            warnings.extend(w);
            nvidia::merge_mig_listing(&mut migs, &l);
        }
        Err(w) => warnings.push(w),
    }
    migs
}

fn discover_hygon(opts: &DiscoverOptions) -> Found {
    let t = &opts.tools;
    let mut warnings = Vec::new();
    if let Some(p) = resolve(&t.rocm_smi, &opts.search_dirs) {
        match run_parse(
            &p,
            hygon::ROCM_SMI_JSON_ARGS,
            opts.timeout,
            hygon::parse_rocm_smi_json,
        ) {
            Ok((d, w)) => {
                warnings.extend(w);
                return (d, warnings);
            }
            // An AMD machine's rocm-smi: not ours, and not a problem.
            Err(w) if w.contains("Card Vendor") => {}
            Err(w) => warnings.push(w),
        }
    }
    let Some(p) = resolve(&t.hy_smi, &opts.search_dirs) else {
        return (Vec::new(), warnings);
    };
    match run_parse(&p, &[], opts.timeout, hygon::parse_hy_smi) {
        Ok((d, w)) => {
            warnings.extend(w);
            warnings.push(format!(
                "hygon: hy-smi prints no VRAM size, so {} DCU(s) report 0 MiB; install rocm-smi from the DTK for memory sizes",
                d.len()
            ));
            (d, warnings)
        }
        Err(w) => {
            warnings.push(w);
            (Vec::new(), warnings)
        }
    }
}

fn tool_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Runs a tool and parses its output: the devices and a warning for each
/// row that was skipped or read in part (naming the tool's path), or one
/// warning saying why nothing could be read.
fn run_parse(
    path: &Path,
    args: &[&str],
    timeout: Duration,
    parse: Parser,
) -> Result<Found, String> {
    let name = tool_name(path);
    let mut cmdline = name.clone();
    for a in args {
        cmdline.push(' ');
        cmdline.push_str(if a.len() > 40 { "--query-gpu=…" } else { a });
    }
    let text = run_tool(path, args, timeout)
        .map_err(|e| format!("{cmdline} ({}): {e}", path.display()))?;
    let parsed = parse(&text)
        .map_err(|e| format!("{cmdline} ({}): output not understood: {e}", path.display()))?;
    let warnings = parsed
        .warnings
        .iter()
        .map(|w| format!("{w} [from {}]", path.display()))
        .collect();
    Ok((parsed.devices, warnings))
}

/// The most output read from one tool; more is a sign of something wrong.
const OUTPUT_LIMIT: u64 = 16 << 20;

fn reader<R: Read + Send + 'static>(r: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(r) = r {
            let _ = r.take(OUTPUT_LIMIT).read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}

/// Runs a tool and returns its standard output, or why it failed. On timeout
/// the whole process group is killed, so a wrapper script's children go too.
pub(crate) fn run_tool(path: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    let mut cmd = Command::new(path);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().map_err(|e| format!("could not start: {e}"))?;
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                kill_group(&mut child);
                let _ = child.wait();
                return Err(format!(
                    "timed out after {} ms and was killed",
                    timeout.as_millis()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("could not wait for it: {e}")),
        }
    };
    // A daemonised grandchild may keep the pipes open: do not wait for it forever.
    let grace = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(200));
    let stdout = out.recv_timeout(grace).unwrap_or_default();
    let stderr = err
        .recv_timeout(Duration::from_millis(200))
        .unwrap_or_default();
    if !status.success() {
        let msg = String::from_utf8_lossy(if stderr.is_empty() { &stdout } else { &stderr });
        let first = msg
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("no message");
        let first: String = first.chars().take(200).collect();
        return Err(format!("exited with {status}: {first}"));
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    {
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) with a negative pid signals the process group that
            // `process_group(0)` made for this child; it touches no memory.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
    let _ = child.kill();
}

/// Resolves a tool: a path with a separator as it is, a bare name through
/// `PATH` and then `search_dirs`.
fn resolve(tool: &Path, search_dirs: &[PathBuf]) -> Option<PathBuf> {
    if tool.components().count() > 1 || tool.is_absolute() {
        return is_executable(tool).then(|| tool.to_path_buf());
    }
    let path_dirs = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
    path_dirs
        .unwrap_or_default()
        .iter()
        .chain(search_dirs)
        .map(|d| d.join(tool))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        p.is_file()
    }
}

/// The first device node in `dev_dir` that shows the vendor's driver is loaded.
fn device_node(vendor: Vendor, dev_dir: &Path) -> Option<String> {
    let (prefix, digits) = match vendor {
        Vendor::Nvidia => ("nvidia", true),
        Vendor::Ascend => ("davinci", true),
        Vendor::Cambricon => ("cambricon_dev", true),
        Vendor::Iluvatar => ("iluvatar", true),
        Vendor::Metax => ("mxcd", false),
        Vendor::Hygon | Vendor::Mthreads => return None,
    };
    let entries = std::fs::read_dir(dev_dir).ok()?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| match n.strip_prefix(prefix) {
            Some(rest) if digits => !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()),
            Some(rest) => rest.is_empty(),
            None => false,
        })
        .collect();
    names.sort();
    names.into_iter().next()
}

fn missing_tool_warning(vendor: Vendor, tool: &Path, dev_dir: &Path) -> Vec<String> {
    device_node(vendor, dev_dir)
        .map(|node| {
            format!(
                "{vendor}: device node {} exists but {} was not found, so these devices are not reported; install the vendor's tools or set its path in the agent config",
                dev_dir.join(node).display(),
                tool.display()
            )
        })
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_explicit_path_is_none() {
        assert_eq!(resolve(Path::new("/nonexistent/nvidia-smi"), &[]), None);
    }
}
