//! `discover` against fake vendor tools: shell scripts in a temp folder.

#![cfg(unix)]

use classgrid_devices::{DiscoverOptions, ToolPaths, Vendor, discover};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p =
            std::env::temp_dir().join(format!("classgrid-devices-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fixture_path(name: &str) -> String {
    format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// Options where every tool is missing, NVML is off and /dev is empty.
fn isolated(dir: &Path) -> DiscoverOptions {
    let missing = dir.join("missing");
    let dev = dir.join("dev");
    std::fs::create_dir_all(&dev).unwrap();
    DiscoverOptions {
        timeout: Duration::from_millis(800),
        tools: ToolPaths {
            nvidia_smi: missing.join("nvidia-smi"),
            npu_smi: missing.join("npu-smi"),
            hy_smi: missing.join("hy-smi"),
            rocm_smi: missing.join("rocm-smi"),
            mx_smi: missing.join("mx-smi"),
            mthreads_gmi: missing.join("mthreads-gmi"),
            cnmon: missing.join("cnmon"),
            ixsmi: missing.join("ixsmi"),
        },
        use_nvml: false,
        search_dirs: Vec::new(),
        dev_dir: dev,
        ..DiscoverOptions::default()
    }
}

#[test]
fn missing_tools_are_silent() {
    let dir = TempDir::new("missing");
    let mut opts = isolated(&dir.0);
    // A library path that does not exist: NVML "not installed", also silent.
    opts.use_nvml = true;
    opts.nvml_lib = Some(dir.0.join("libnvidia-ml.so.1"));
    let d = discover(&opts);
    assert!(d.devices.is_empty());
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
}

#[test]
fn hanging_tool_times_out_and_others_still_report() {
    let dir = TempDir::new("hang");
    let mut opts = isolated(&dir.0);
    opts.tools.mx_smi = script(&dir.0, "mx-smi", "sleep 30");
    opts.tools.cnmon = script(
        &dir.0,
        "cnmon",
        &format!("cat '{}'", fixture_path("cnmon.mlu370-x8.txt")),
    );
    let start = Instant::now();
    let d = discover(&opts);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(d.devices.len(), 2);
    assert!(d.devices.iter().all(|x| x.vendor == Vendor::Cambricon));
    assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
    assert!(
        d.warnings[0].contains("mx-smi") && d.warnings[0].contains("timed out"),
        "{}",
        d.warnings[0]
    );
}

#[test]
fn failing_and_unparsable_tools_warn() {
    let dir = TempDir::new("fail");
    let mut opts = isolated(&dir.0);
    opts.tools.ixsmi = script(
        &dir.0,
        "ixsmi",
        "echo 'ixsmi: driver not loaded' >&2; exit 3",
    );
    opts.tools.mthreads_gmi = script(&dir.0, "mthreads-gmi", "echo 'hello world'");
    opts.tools.npu_smi = script(
        &dir.0,
        "npu-smi",
        &format!("cat '{}'", fixture_path("npu-smi-info.910b2c-x2.txt")),
    );
    let d = discover(&opts);
    assert_eq!(d.devices.len(), 2);
    assert_eq!(d.warnings.len(), 2, "{:?}", d.warnings);
    let ix = d.warnings.iter().find(|w| w.starts_with("ixsmi")).unwrap();
    assert!(
        ix.contains("driver not loaded") && ix.contains("exit status: 3"),
        "{ix}"
    );
    let mt = d
        .warnings
        .iter()
        .find(|w| w.starts_with("mthreads-gmi"))
        .unwrap();
    assert!(mt.contains("not understood"), "{mt}");
}

#[test]
fn missing_tool_with_device_nodes_warns() {
    let dir = TempDir::new("nodes");
    let opts = isolated(&dir.0);
    std::fs::write(opts.dev_dir.join("nvidia0"), "").unwrap();
    std::fs::write(opts.dev_dir.join("nvidiactl"), "").unwrap();
    std::fs::write(opts.dev_dir.join("davinci3"), "").unwrap();
    let d = discover(&opts);
    assert!(d.devices.is_empty());
    assert_eq!(d.warnings.len(), 2, "{:?}", d.warnings);
    assert!(
        d.warnings
            .iter()
            .any(|w| w.starts_with("nvidia:") && w.contains("nvidia0"))
    );
    assert!(
        d.warnings
            .iter()
            .any(|w| w.starts_with("ascend:") && w.contains("davinci3"))
    );
}

#[test]
fn nvidia_smi_fallback_with_mig_instances() {
    let dir = TempDir::new("mig");
    let mut opts = isolated(&dir.0);
    let body = format!(
        "case \"$1\" in\n  --query-gpu=*) cat '{}' ;;\n  -L) cat '{}' ;;\n  -q) exit 9 ;;\nesac",
        fixture_path("nvidia-smi-query.h100-mig.csv"),
        fixture_path("nvidia-smi-L.h100-mig.txt"),
    );
    opts.tools.nvidia_smi = script(&dir.0, "nvidia-smi", &body);
    opts.vendors = vec![Vendor::Nvidia];
    let d = discover(&opts);
    assert_eq!(d.devices.len(), 5, "{:?}", d.warnings);
    assert_eq!(d.devices[0].memory_total_mib, 81559);
    let migs: Vec<_> = d
        .devices
        .iter()
        .filter(|x| x.mig_parent == Some(0))
        .collect();
    assert_eq!(migs.len(), 4);
    assert_eq!(
        migs[0].uuid.as_deref(),
        Some("MIG-00000000-0000-0000-0000-000000000000")
    );
    // -q -x failed: its warning, and the estimate from profile names.
    assert!(
        d.warnings.iter().any(|w| w.contains("nvidia-smi -q -x")),
        "{:?}",
        d.warnings
    );
    assert!(
        d.warnings.iter().any(|w| w.contains("estimated")),
        "{:?}",
        d.warnings
    );
}

/// The H200 of issue 24: MIG on, five instances (two compute instances share
/// GPU instance 2). `-q -x` fails here; the default table gives the exact
/// memory of every instance and `-L` their UUIDs. The parent is not a slot.
#[test]
fn nvidia_mig_instances_from_the_default_table() {
    let dir = TempDir::new("mig-table");
    let mut opts = isolated(&dir.0);
    let body = format!(
        "case \"$1\" in\n  --query-gpu=*) cat '{}' ;;\n  -L) cat '{}' ;;\n  -q) exit 9 ;;\n  '') cat '{}' ;;\nesac",
        fixture_path("nvidia-smi-query.h200-mig.csv"),
        fixture_path("nvidia-smi-L.h200-mig.txt"),
        fixture_path("nvidia-smi.h200-mig.txt"),
    );
    opts.tools.nvidia_smi = script(&dir.0, "nvidia-smi", &body);
    opts.vendors = vec![Vendor::Nvidia];
    let d = discover(&opts);
    assert_eq!(d.devices.len(), 6, "{:?}", d.warnings);
    let migs: Vec<_> = d
        .devices
        .iter()
        .filter(|x| x.mig_parent == Some(0))
        .collect();
    assert_eq!(migs.len(), 5);
    assert_eq!(migs[0].model, "NVIDIA H200 MIG 1c.3g.71gb");
    assert_eq!(migs[0].memory_total_mib, 71424, "exact, not 71 GiB");
    assert_eq!(
        migs[4].uuid.as_deref(),
        Some("MIG-00000004-0000-0000-0000-000000000004")
    );
    // Only the -q -x failure is reported; nothing was estimated.
    assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
    assert!(d.warnings[0].contains("-q -x"), "{:?}", d.warnings);
}

/// MIG on, and no tool output names an instance: a warning says so, and the
/// parent GPU is not offered as a device nobody could use.
#[test]
fn nvidia_mig_without_readable_instances_offers_nothing() {
    let dir = TempDir::new("mig-none");
    let mut opts = isolated(&dir.0);
    let body = format!(
        "case \"$1\" in\n  --query-gpu=*) cat '{}' ;;\n  *) echo 'Insufficient Permissions' >&2; exit 4 ;;\nesac",
        fixture_path("nvidia-smi-query.h200-mig.csv"),
    );
    opts.tools.nvidia_smi = script(&dir.0, "nvidia-smi", &body);
    opts.vendors = vec![Vendor::Nvidia];
    let d = discover(&opts);
    assert!(d.devices.is_empty(), "{:?}", d.devices);
    assert!(
        d.warnings
            .iter()
            .any(|w| w
                .contains("GPU 0 (NVIDIA H200) has MIG enabled but no MIG instance could be read")),
        "{:?}",
        d.warnings
    );
}

/// A truncated table reaches the discovery warnings, naming the tool's path.
#[test]
fn truncated_ascend_table_is_a_warning_with_the_devices_read() {
    let dir = TempDir::new("ascend-cut");
    let mut opts = isolated(&dir.0);
    opts.tools.npu_smi = script(
        &dir.0,
        "npu-smi",
        &format!(
            "head -n 30 '{}'",
            fixture_path("npu-smi-info.a3-910c-x16.npu-smi-25.2.0.txt")
        ),
    );
    opts.vendors = vec![Vendor::Ascend];
    let d = discover(&opts);
    assert_eq!(d.devices.len(), 8);
    assert_eq!(d.warnings.len(), 1, "{:?}", d.warnings);
    let w = &d.warnings[0];
    assert!(
        w.contains("truncated") && w.contains("line 30") && w.contains("npu-smi"),
        "{w}"
    );
}

#[test]
fn hygon_prefers_rocm_smi_json() {
    let dir = TempDir::new("hygon");
    let mut opts = isolated(&dir.0);
    opts.tools.rocm_smi = script(
        &dir.0,
        "rocm-smi",
        &format!("cat '{}'", fixture_path("rocm-smi-json.hygon-k1xx-ai.json")),
    );
    opts.tools.hy_smi = script(
        &dir.0,
        "hy-smi",
        &format!("cat '{}'", fixture_path("hy-smi.k100ai-x4.txt")),
    );
    opts.vendors = vec![Vendor::Hygon];
    let d = discover(&opts);
    assert_eq!(d.devices.len(), 1);
    assert_eq!(d.devices[0].memory_total_mib, 65520);
    assert!(d.warnings.is_empty(), "{:?}", d.warnings);
}
