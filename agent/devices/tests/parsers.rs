//! Every parser against its real recorded fixtures (see fixtures/SOURCES.md).

#![allow(clippy::type_complexity)] // the case tables read best as plain tuples

use classgrid_devices::{Device, SharingMode, Vendor};
use classgrid_devices::{ascend, cambricon, hygon, iluvatar, metax, mthreads, nvidia};

fn fixture(name: &str) -> String {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn physical(devices: &[Device]) -> Vec<&Device> {
    devices.iter().filter(|d| d.mig_parent.is_none()).collect()
}

const MASKED_GPU: &str = "GPU-00000000-0000-0000-0000-000000000000";

#[test]
fn nvidia_query_csv_all_fixtures() {
    let cases: &[(&str, &str, u64, u64, Option<u32>, &str, bool)] = &[
        (
            "nvidia-smi-query.h100-mig.csv",
            "NVIDIA H100 80GB HBM3",
            81559,
            59,
            None,
            "00000000:00:09.0",
            true,
        ),
        (
            "nvidia-smi-query.h200-mig.csv",
            "NVIDIA H200",
            143771,
            55,
            None,
            "00000000:83:00.0",
            true,
        ),
        (
            "nvidia-smi-query.l40s.csv",
            "NVIDIA L40S",
            46068,
            0,
            Some(100),
            "00000000:01:00.0",
            false,
        ),
        (
            "nvidia-smi-query.rtx2080super-windows.csv",
            "NVIDIA GeForce RTX 2080 SUPER",
            8192,
            702,
            Some(0),
            "00000000:0C:00.0",
            false,
        ),
        (
            "nvidia-smi-query.rtx4080super.csv",
            "NVIDIA GeForce RTX 4080 SUPER",
            16376,
            596,
            Some(0),
            "00000000:01:00.0",
            false,
        ),
    ];
    for &(file, model, total, used, util, bus, mig) in cases {
        let d = nvidia::parse_query_csv(&fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(d.len(), 1, "{file}");
        let g = &d[0];
        assert_eq!(g.vendor, Vendor::Nvidia);
        assert_eq!(g.model, model, "{file}");
        assert_eq!(g.index, 0);
        assert_eq!(g.memory_total_mib, total, "{file}");
        assert_eq!(g.memory_used_mib, used, "{file}");
        assert_eq!(g.utilization_percent, util, "{file}");
        assert_eq!(g.uuid.as_deref(), Some(MASKED_GPU));
        assert_eq!(g.bus_id.as_deref(), Some(bus));
        assert_eq!(g.sharing.contains(&SharingMode::Mig), mig, "{file}");
        assert!(g.healthy);
    }
}

#[test]
fn nvidia_xml_a100_mig_instances_are_devices() {
    let d = nvidia::parse_query_xml(&fixture("nvidia-smi-q-x.a100-sxm4-80gb-mig.xml")).unwrap();
    // The source trimmed the file to its first <gpu>: 1 GPU with 4 MIG devices.
    assert_eq!(d.len(), 5);
    let gpu = &d[0];
    assert_eq!(gpu.model, "NVIDIA A100-SXM4-80GB");
    assert_eq!(
        gpu.uuid.as_deref(),
        Some("GPU-513536b6-7d19-9063-b049-1e69664bb298")
    );
    assert_eq!(gpu.bus_id.as_deref(), Some("00000000:01:00.0"));
    assert_eq!((gpu.memory_total_mib, gpu.memory_used_mib), (81920, 50));
    assert_eq!(gpu.utilization_percent, None);
    assert_eq!(gpu.sharing, vec![SharingMode::Mig]);
    for (i, m) in d[1..].iter().enumerate() {
        assert_eq!(m.mig_parent, Some(0));
        assert_eq!(m.index as usize, i);
        assert_eq!((m.memory_total_mib, m.memory_used_mib), (19968, 12));
        assert_eq!(m.uuid, None);
        assert!(m.sharing.contains(&SharingMode::Mig));
    }
    assert_eq!(d[1].model, "NVIDIA A100-SXM4-80GB MIG GI 3 CI 0");
}

#[test]
fn nvidia_xml_single_gpus() {
    let cases: &[(&str, &str, &str, u64, u64, Option<u32>, bool)] = &[
        (
            "nvidia-smi-q-x.t4.xml",
            "Tesla T4",
            "GPU-d37e67a5-91dd-3774-a5cb-99096249601a",
            15360,
            1032,
            Some(0),
            true,
        ),
        (
            "nvidia-smi-q-x.quadro-p2000.xml",
            "Quadro P2000",
            "GPU-396caaed-39ca-3199-2e68-717cdb786ec6",
            5120,
            1,
            Some(0),
            false,
        ),
        (
            "nvidia-smi-q-x.rtx3080.xml",
            "NVIDIA GeForce RTX 3080",
            "GPU-19d6d965-2acc-f646-00f8-4c76979aabb4",
            10240,
            9184,
            Some(65),
            true,
        ),
        (
            "nvidia-smi-q-x.rtx4000-sff-ada.xml",
            "NVIDIA RTX 4000 SFF Ada Generation",
            "GPU-37037c3f-65c8-ec4d-24a9-420204ad8026",
            20475,
            3534,
            Some(0),
            true,
        ),
    ];
    for &(file, model, uuid, total, used, util, mps) in cases {
        let d = nvidia::parse_query_xml(&fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(d.len(), 1, "{file}");
        assert_eq!(d[0].model, model);
        assert_eq!(d[0].uuid.as_deref(), Some(uuid));
        assert_eq!(
            (d[0].memory_total_mib, d[0].memory_used_mib),
            (total, used),
            "{file}"
        );
        assert_eq!(d[0].utilization_percent, util, "{file}");
        // Pascal (P2000) has no MPS client limits.
        assert_eq!(d[0].sharing.contains(&SharingMode::Mps), mps, "{file}");
        assert!(d[0].healthy);
    }
}

#[test]
fn nvidia_list_with_and_without_mig() {
    let d = nvidia::parse_list(&fixture("nvidia-smi-L.h100-mig.txt")).unwrap();
    assert_eq!(physical(&d).len(), 1);
    assert_eq!(d.len(), 5);
    assert_eq!(d[0].model, "NVIDIA H100 80GB HBM3");
    assert_eq!(d[0].uuid.as_deref(), Some(MASKED_GPU));
    assert_eq!(d[1].model, "NVIDIA H100 80GB HBM3 MIG 3g.40gb");
    assert_eq!(
        d[1].uuid.as_deref(),
        Some("MIG-00000000-0000-0000-0000-000000000000")
    );
    assert_eq!(d[1].memory_total_mib, 40 * 1024);
    assert_eq!(d[4].index, 3);
    assert_eq!(
        d[4].uuid.as_deref(),
        Some("MIG-00000003-0000-0000-0000-000000000003")
    );

    let h200 = nvidia::parse_list(&fixture("nvidia-smi-L.h200-mig.txt")).unwrap();
    assert_eq!(h200.len(), 6);
    assert_eq!(h200[1].model, "NVIDIA H200 MIG 1c.3g.71gb");
    assert_eq!(h200[1].memory_total_mib, 71 * 1024);

    for (file, model) in [
        ("nvidia-smi-L.l40s.txt", "NVIDIA L40S"),
        (
            "nvidia-smi-L.rtx2080super-windows.txt",
            "NVIDIA GeForce RTX 2080 SUPER",
        ),
        (
            "nvidia-smi-L.rtx4080super.txt",
            "NVIDIA GeForce RTX 4080 SUPER",
        ),
    ] {
        let d = nvidia::parse_list(&fixture(file)).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].model, model);
        assert_eq!(d[0].mig_parent, None);
    }
}

#[test]
fn nvidia_merge_gives_xml_migs_their_uuids() {
    // Same physical layout in both: one GPU with four MIG devices 0..3.
    let mut xml =
        nvidia::parse_query_xml(&fixture("nvidia-smi-q-x.a100-sxm4-80gb-mig.xml")).unwrap();
    let list = nvidia::parse_list(&fixture("nvidia-smi-L.h100-mig.txt")).unwrap();
    nvidia::merge_mig_listing(&mut xml, &list);
    assert_eq!(
        xml[1].uuid.as_deref(),
        Some("MIG-00000000-0000-0000-0000-000000000000")
    );
    assert_eq!(xml[1].memory_total_mib, 19968, "exact XML memory is kept");
    assert_eq!(
        xml[0].uuid.as_deref(),
        Some("GPU-513536b6-7d19-9063-b049-1e69664bb298")
    );
}

#[test]
fn ascend_info_310p3_duo() {
    let d = ascend::parse_info(&fixture("npu-smi-info.310p3-duo-x4.txt")).unwrap();
    assert_eq!(d.len(), 8);
    assert!(
        d.iter()
            .all(|x| x.model == "Ascend 310P3" && x.vendor == Vendor::Ascend && x.healthy)
    );
    assert_eq!(
        d.iter().map(|x| x.index).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
    assert_eq!(
        (d[0].memory_used_mib, d[0].memory_total_mib),
        (35552, 44278)
    );
    assert_eq!(
        (d[1].memory_used_mib, d[1].memory_total_mib),
        (35270, 43693)
    );
    assert_eq!(d[2].bus_id.as_deref(), Some("0000:03:00.0"));
    assert_eq!(d[0].utilization_percent, Some(0));
    assert!(d[0].sharing.contains(&SharingMode::Vnpu));
}

#[test]
fn ascend_info_910b2c_uses_hbm() {
    let d = ascend::parse_info(&fixture("npu-smi-info.910b2c-x2.txt")).unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].model, "Ascend 910B2C");
    assert_eq!((d[0].index, d[1].index), (0, 1));
    assert_eq!((d[0].memory_used_mib, d[0].memory_total_mib), (3317, 65536));
    assert_eq!(d[1].bus_id.as_deref(), Some("0000:29:00.0"));
}

#[test]
fn ascend_map_board_usages() {
    let m = ascend::parse_map(&fixture("npu-smi-info-m.910a-x8.txt")).unwrap();
    assert_eq!(m.len(), 8);
    assert!(m.iter().all(|x| x.model == "Ascend 910A"));
    assert_eq!(m[7].index, 7);

    let b = ascend::parse_board(&fixture("npu-smi-info-t-board.910a.txt")).unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].bus_id.as_deref(), Some("0000:61:00.0"));
    let c = ascend::parse_board(&fixture("npu-smi-info-t-board-c0.910a.txt")).unwrap();
    assert_eq!(c[0].model, "Ascend 910A");

    let u = ascend::parse_usages(&fixture("npu-smi-info-t-usages.910a.txt")).unwrap();
    assert_eq!(u.len(), 1);
    assert_eq!(u[0].memory_total_mib, 31129);
    let u = ascend::parse_usages(&fixture("npu-smi-info-t-usages.910-32g.txt")).unwrap();
    assert_eq!(u[0].memory_total_mib, 32768);
    let u = ascend::parse_usages(&fixture("npu-smi-info-t-usages.310p-duo.txt")).unwrap();
    assert_eq!(u.len(), 2);
    assert_eq!(u[0].index, 1);
    assert_eq!((u[0].memory_total_mib, u[0].memory_used_mib), (44280, 1328));
    assert_eq!(u[1].memory_total_mib, 43693);
}

#[test]
fn hygon_tables_and_json() {
    let h = hygon::parse_hy_smi(&fixture("hy-smi.k100ai-x4.txt")).unwrap();
    assert_eq!(h.len(), 4);
    assert!(
        h.iter()
            .all(|d| d.vendor == Vendor::Hygon && d.healthy && d.utilization_percent == Some(0))
    );
    assert_eq!(h[3].index, 3);
    let r = hygon::parse_rocm_smi(&fixture("rocm-smi.hygon-dcu-x4.txt")).unwrap();
    assert_eq!(r.len(), 4);
    let j = hygon::parse_rocm_smi_json(&fixture("rocm-smi-json.hygon-k1xx-ai.json")).unwrap();
    assert_eq!(j.len(), 1);
    assert_eq!(j[0].model, "DCU xxxx");
    assert_eq!(j[0].uuid.as_deref(), Some("7100fa8866904061"));
    assert_eq!((j[0].memory_total_mib, j[0].memory_used_mib), (65520, 2));
}

#[test]
fn hygon_json_rejects_other_vendors() {
    let amd = r#"{"card0": {"Card Vendor": "Advanced Micro Devices, Inc. [AMD/ATI]", "VRAM Total Memory (B)": "1024"}}"#;
    let e = hygon::parse_rocm_smi_json(amd).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("Card Vendor"));
}

#[test]
fn metax_mx_smi() {
    let d = metax::parse_mx_smi(&fixture("mx-smi.c550-x8.mx-smi-2.2.4.txt")).unwrap();
    assert_eq!(d.len(), 8);
    assert!(d.iter().all(|x| x.model == "MetaX C550"
        && x.memory_total_mib == 65536
        && x.memory_used_mib == 858));
    assert_eq!(d[5].bus_id.as_deref(), Some("0000:ae:00.0"));
    assert!(d[0].healthy);
}

#[test]
fn mthreads_gmi() {
    let d = mthreads::parse_mthreads_gmi(&fixture("mthreads-gmi.mtt-s80.txt")).unwrap();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].model, "MTT S80");
    assert_eq!((d[0].memory_used_mib, d[0].memory_total_mib), (1339, 16384));
    assert_eq!(d[0].utilization_percent, Some(98));
    assert_eq!(d[0].bus_id.as_deref(), Some("00000000:01:00.0"));
    // The partial S4000 capture (an IOMMU fault: used > total) still parses.
    let p = mthreads::parse_mthreads_gmi(&fixture("mthreads-gmi.mtt-s4000.partial.txt")).unwrap();
    assert_eq!(p[0].model, "MTT S4000");
    assert_eq!(
        (p[0].memory_used_mib, p[0].memory_total_mib),
        (44302, 32768)
    );
}

#[test]
fn cambricon_cnmon() {
    let d = cambricon::parse_cnmon(&fixture("cnmon.mlu370-x8.txt")).unwrap();
    assert_eq!(d.len(), 2);
    assert!(
        d.iter()
            .all(|x| x.model == "MLU370-X8" && x.memory_total_mib == 23374)
    );
    assert_eq!(d[1].bus_id.as_deref(), Some("0000:3D:00.0"));
    // The source redacted memory sizes (`xxxxx MiB`): a clear error, not a guess.
    let e = cambricon::parse_cnmon(&fixture("cnmon.mlu-redacted-x8.txt")).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("Memory-Usage"));
    assert_eq!(e.line, Some(9));
}

#[test]
fn iluvatar_ixsmi() {
    let d = iluvatar::parse_ixsmi(&fixture("ixsmi.bi-v150-x16.ixml-4.1.0.txt")).unwrap();
    assert_eq!(d.len(), 16);
    assert!(d.iter().all(|x| x.model == "Iluvatar BI-V150"
        && x.memory_total_mib == 32768
        && x.memory_used_mib == 116));
    assert_eq!(d[15].index, 15);
    assert_eq!(d[15].bus_id.as_deref(), Some("00000000:67:00.0"));
}

// ---- Issue 24: layouts that discovery got wrong, each on a real output ----

/// The warnings of a parse, as text, for assertion messages.
fn shown(p: &classgrid_devices::Parsed) -> Vec<String> {
    p.warnings.iter().map(ToString::to_string).collect()
}

#[test]
fn ascend_a3_two_chips_per_npu_index_by_phy_id() {
    let d = ascend::parse_info(&fixture("npu-smi-info.a3-910c-x16.npu-smi-25.2.0.txt")).unwrap();
    assert!(d.warnings.is_empty(), "{:?}", shown(&d));
    assert_eq!(d.len(), 16);
    // 8 NPUs x 2 chips: each chip's index is its Phy-ID, 0..15, never repeated.
    assert_eq!(
        d.iter().map(|x| x.index).collect::<Vec<_>>(),
        (0..16).collect::<Vec<_>>()
    );
    assert!(d.iter().all(|x| x.model == "Ascend910"
        && x.vendor == Vendor::Ascend
        && x.healthy
        && x.memory_total_mib == 65536));
    // HBM, not the DDR `0 / 0` column; `61609/ 65536` has no space before the slash.
    assert_eq!(
        (d[0].memory_used_mib, d[0].utilization_percent),
        (61609, Some(7))
    );
    assert_eq!(d[1].memory_used_mib, 61625);
    assert_eq!(d[15].memory_used_mib, 61631);
    assert_eq!(d[1].bus_id.as_deref(), Some("0000:9F:00.0"));
    assert_eq!(d[10].bus_id.as_deref(), Some("0000:89:00.0"));
    assert_eq!(d[8].utilization_percent, Some(8));
    // No documented vNPU template for the 910C class: time-slicing only.
    assert!(!d[0].sharing.contains(&SharingMode::Vnpu));
}

/// Every cut of a real table exactly at a row boundary (after a border line)
/// inside the device table gives the devices above it and a warning that
/// names the output as truncated.
fn cuts_at_borders_are_reported(
    file: &str,
    parse: fn(&str) -> Result<classgrid_devices::Parsed, classgrid_devices::ParseError>,
    table_end: &str,
) {
    let text = fixture(file);
    let lines: Vec<&str> = text.lines().collect();
    let end = lines.iter().position(|l| l.contains(table_end)).unwrap();
    let full = parse(&text).unwrap().len();
    let mut cuts = 0;
    for cut in 1..end {
        let l = lines[cut - 1].trim();
        if !(l.starts_with('+') || l.starts_with("|=")) {
            continue;
        }
        let prefix = lines[..cut].join("\n") + "\n";
        let Ok(p) = parse(&prefix) else { continue };
        cuts += 1;
        assert!(p.len() <= full, "{file} cut at {cut}");
        assert!(
            p.warnings.iter().any(|w| w.message.contains("truncated")
                && w.line == Some(cut)
                && w.text
                    .as_deref()
                    .is_some_and(|t| l.starts_with(t.trim_end_matches('…')))),
            "{file} cut after line {cut}: {:?}",
            shown(&p)
        );
    }
    assert!(cuts >= 2, "{file}: only {cuts} cuts parsed");
}

#[test]
fn cut_off_tables_are_reported_as_truncated() {
    cuts_at_borders_are_reported(
        "npu-smi-info.a3-910c-x16.npu-smi-25.2.0.txt",
        ascend::parse_info,
        "Process id",
    );
    cuts_at_borders_are_reported(
        "npu-smi-info.910b2c-x2.txt",
        ascend::parse_info,
        "Process id",
    );
    cuts_at_borders_are_reported(
        "npu-smi-info.310p3-duo-x4.txt",
        ascend::parse_info,
        "Process id",
    );
    cuts_at_borders_are_reported(
        "ixsmi.bi-v150-x16.ixml-4.1.0.txt",
        iluvatar::parse_ixsmi,
        "Processes:",
    );
    cuts_at_borders_are_reported(
        "mx-smi.mxc550-x8.mx-smi-2.1.6.txt",
        metax::parse_mx_smi,
        "Process:",
    );
    cuts_at_borders_are_reported("cnmon.mlu370-x8.txt", cambricon::parse_cnmon, "Processes:");
    cuts_at_borders_are_reported("nvidia-smi.h200-mig.txt", nvidia::parse_table, "Processes:");
    // The A3 table cut after NPU 3 (its 8th chip): 8 chips, and the warning.
    let a3 = fixture("npu-smi-info.a3-910c-x16.npu-smi-25.2.0.txt");
    let cut: String = a3.lines().take(30).map(|l| format!("{l}\n")).collect();
    let p = ascend::parse_info(&cut).unwrap();
    assert_eq!(p.len(), 8);
    assert_eq!(p.warnings.len(), 1, "{:?}", shown(&p));
    assert!(
        p.warnings[0].to_string().contains("line 30"),
        "{:?}",
        shown(&p)
    );
}

#[test]
fn complete_outputs_carry_no_truncation_warning() {
    for (file, parse) in [
        (
            "npu-smi-info.910b2c-x2.txt",
            ascend::parse_info as fn(&str) -> _,
        ),
        ("npu-smi-info.310p3-duo-x4.txt", ascend::parse_info),
        ("ixsmi.bi-v150-x16.ixml-4.1.0.txt", iluvatar::parse_ixsmi),
        ("mx-smi.c550-x8.mx-smi-2.2.4.txt", metax::parse_mx_smi),
        ("cnmon.mlu370-x8.txt", cambricon::parse_cnmon),
        ("mthreads-gmi.mtt-s80.txt", mthreads::parse_mthreads_gmi),
        ("hy-smi.k100ai-x4.txt", hygon::parse_hy_smi),
        ("rocm-smi.hygon-dcu-x4.txt", hygon::parse_rocm_smi),
    ] {
        let p: classgrid_devices::Parsed = parse(&fixture(file)).unwrap();
        assert!(p.warnings.is_empty(), "{file}: {:?}", shown(&p));
    }
    // The S4000 capture is partial in its source: the parser says so.
    let p = mthreads::parse_mthreads_gmi(&fixture("mthreads-gmi.mtt-s4000.partial.txt")).unwrap();
    assert!(
        p.warnings.iter().any(|w| w.message.contains("truncated")),
        "{:?}",
        shown(&p)
    );
}

#[test]
fn metax_mx_smi_2_1_without_state_column_is_healthy() {
    let d = metax::parse_mx_smi(&fixture("mx-smi.mxc550-x8.mx-smi-2.1.6.txt")).unwrap();
    assert!(d.warnings.is_empty(), "{:?}", shown(&d));
    assert_eq!(d.len(), 8);
    // No GPU-State column in this layout: a listed card is a healthy card.
    assert!(d.iter().all(|x| x.healthy
        && x.model == "MXC550"
        && x.memory_total_mib == 65536
        && x.memory_used_mib == 810
        && x.utilization_percent == Some(0)));
    assert_eq!(
        d.iter().map(|x| x.index).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
    assert_eq!(d[0].bus_id.as_deref(), Some("0000:2a:00.0"));
    assert_eq!(d[7].bus_id.as_deref(), Some("0000:da:00.0"));
    // The 2.2 layout has the column, and `Available` is healthy.
    let n = metax::parse_mx_smi(&fixture("mx-smi.c550-x8.mx-smi-2.2.4.txt")).unwrap();
    assert!(n.iter().all(|x| x.healthy));
}

#[test]
fn nvidia_table_h200_mig_instances_sharing_gpu_instances() {
    let d = nvidia::parse_table(&fixture("nvidia-smi.h200-mig.txt")).unwrap();
    assert!(d.warnings.is_empty(), "{:?}", shown(&d));
    assert_eq!(d.len(), 6);
    let gpu = &d[0];
    assert_eq!(gpu.model, "NVIDIA H200");
    assert_eq!(gpu.bus_id.as_deref(), Some("00000000:83:00.0"));
    assert_eq!((gpu.memory_used_mib, gpu.memory_total_mib), (55, 143771));
    assert_eq!(gpu.sharing, vec![SharingMode::Mig]);
    // GPU GI CI MIG: 0 2 0 0 / 0 2 1 1 (two compute instances of GI 2) /
    // 0 3 0 2 / 0 9 0 3 / 0 10 0 4.
    let want: &[(u32, &str, u64, u64)] = &[
        (0, "NVIDIA H200 MIG GI 2 CI 0", 22, 71424),
        (1, "NVIDIA H200 MIG GI 2 CI 1", 22, 71424),
        (2, "NVIDIA H200 MIG GI 3 CI 0", 17, 33280),
        (3, "NVIDIA H200 MIG GI 9 CI 0", 9, 16384),
        (4, "NVIDIA H200 MIG GI 10 CI 0", 9, 16384),
    ];
    for (m, &(index, model, used, total)) in d[1..].iter().zip(want) {
        assert_eq!(m.mig_parent, Some(0));
        assert_eq!((m.index, m.model.as_str()), (index, model));
        assert_eq!((m.memory_used_mib, m.memory_total_mib), (used, total));
        assert!(m.healthy && m.sharing.contains(&SharingMode::Mig));
    }
    // With -L: UUIDs and profile names, exact memory kept.
    let mut merged = d.clone();
    let list = nvidia::parse_list(&fixture("nvidia-smi-L.h200-mig.txt")).unwrap();
    nvidia::merge_mig_listing(&mut merged, &list);
    assert_eq!(merged[1].model, "NVIDIA H200 MIG 1c.3g.71gb");
    assert_eq!(merged[2].model, "NVIDIA H200 MIG 2c.3g.71gb");
    assert_eq!(
        merged[5].uuid.as_deref(),
        Some("MIG-00000004-0000-0000-0000-000000000004")
    );
    assert_eq!(merged[1].memory_total_mib, 71424);
}

#[test]
fn nvidia_table_h100_mig() {
    let d = nvidia::parse_table(&fixture("nvidia-smi.h100-mig.txt")).unwrap();
    assert!(d.warnings.is_empty(), "{:?}", shown(&d));
    assert_eq!(d.len(), 5);
    assert_eq!(d[0].model, "NVIDIA H100 80GB HBM3");
    assert_eq!(d[0].sharing, vec![SharingMode::Mig]);
    let mem: Vec<u64> = d[1..].iter().map(|m| m.memory_total_mib).collect();
    assert_eq!(mem, vec![40448, 20096, 9984, 9984]);
    assert_eq!(d[4].model, "NVIDIA H100 80GB HBM3 MIG GI 10 CI 0");
}

#[test]
fn nvidia_table_without_mig() {
    let cases: &[(&str, &str, &str, u64, u64, Option<u32>)] = &[
        (
            "nvidia-smi.h100.txt",
            "NVIDIA H100 80GB HBM3",
            "00000000:00:09.0",
            0,
            81559,
            Some(0),
        ),
        (
            "nvidia-smi.h200.txt",
            "NVIDIA H200",
            "00000000:83:00.0",
            0,
            143771,
            Some(0),
        ),
        (
            "nvidia-smi.l40s.txt",
            "NVIDIA L40S",
            "00000000:01:00.0",
            0,
            46068,
            Some(100),
        ),
        // The table shortens long names (`RTX 4080 ...`) on Linux too.
        (
            "nvidia-smi.rtx4080super.txt",
            "NVIDIA GeForce RTX 4080 ...",
            "00000000:01:00.0",
            596,
            16376,
            Some(0),
        ),
        (
            "nvidia-smi.rtx2080super-595.txt",
            "NVIDIA GeForce RTX 2080 ...",
            "00000000:0C:00.0",
            214,
            8192,
            Some(0),
        ),
        (
            "nvidia-smi.rtx2080super-610.txt",
            "NVIDIA GeForce RTX 2080 ...",
            "00000000:0C:00.0",
            211,
            8192,
            Some(0),
        ),
        // Windows prints `WDDM` where Linux has Persistence-M.
        (
            "nvidia-smi.rtx2080super-windows.txt",
            "NVIDIA GeForce RTX 2080 ...",
            "00000000:0C:00.0",
            702,
            8192,
            Some(0),
        ),
        (
            "nvidia-smi.rtx2080super-windows-610.txt",
            "NVIDIA GeForce RTX 2080 ...",
            "00000000:0C:00.0",
            797,
            8192,
            Some(0),
        ),
    ];
    for &(file, model, bus, used, total, util) in cases {
        let d = nvidia::parse_table(&fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(d.warnings.is_empty(), "{file}: {:?}", shown(&d));
        assert_eq!(d.len(), 1, "{file}");
        assert_eq!(d[0].model, model, "{file}");
        assert_eq!(d[0].bus_id.as_deref(), Some(bus), "{file}");
        assert_eq!(
            (d[0].memory_used_mib, d[0].memory_total_mib),
            (used, total),
            "{file}"
        );
        assert_eq!(d[0].utilization_percent, util, "{file}");
        assert!(!d[0].sharing.contains(&SharingMode::Mig), "{file}");
        assert!(d[0].healthy);
    }
}

#[test]
fn nvidia_more_driver_versions_csv_and_list() {
    let cases: &[(&str, &str, u64, u64, &str)] = &[
        (
            "nvidia-smi-query.h100.csv",
            "NVIDIA H100 80GB HBM3",
            81559,
            0,
            "00000000:00:09.0",
        ),
        (
            "nvidia-smi-query.h200.csv",
            "NVIDIA H200",
            143771,
            0,
            "00000000:83:00.0",
        ),
        (
            "nvidia-smi-query.rtx2080super-595.csv",
            "NVIDIA GeForce RTX 2080 SUPER",
            8192,
            214,
            "00000000:0C:00.0",
        ),
        (
            "nvidia-smi-query.rtx2080super-610.csv",
            "NVIDIA GeForce RTX 2080 SUPER",
            8192,
            211,
            "00000000:0C:00.0",
        ),
        (
            "nvidia-smi-query.rtx2080super-windows-610.csv",
            "NVIDIA GeForce RTX 2080 SUPER",
            8192,
            797,
            "00000000:0C:00.0",
        ),
    ];
    for &(file, model, total, used, bus) in cases {
        let d = nvidia::parse_query_csv(&fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(d.warnings.is_empty(), "{file}: {:?}", shown(&d));
        assert_eq!(d.len(), 1, "{file}");
        assert_eq!(d[0].model, model, "{file}");
        assert_eq!(
            (d[0].memory_total_mib, d[0].memory_used_mib),
            (total, used),
            "{file}"
        );
        assert_eq!(d[0].bus_id.as_deref(), Some(bus), "{file}");
        assert_eq!(d[0].uuid.as_deref(), Some(MASKED_GPU), "{file}");
        assert!(!d[0].sharing.contains(&SharingMode::Mig), "{file}");
        assert!(d[0].healthy, "{file}");
    }
    for (file, model) in [
        ("nvidia-smi-L.h100.txt", "NVIDIA H100 80GB HBM3"),
        ("nvidia-smi-L.h200.txt", "NVIDIA H200"),
    ] {
        let d = nvidia::parse_list(&fixture(file)).unwrap();
        assert!(d.warnings.is_empty(), "{file}");
        assert_eq!(d.len(), 1, "{file}");
        assert_eq!(d[0].model, model, "{file}");
        assert_eq!(d[0].uuid.as_deref(), Some(MASKED_GPU), "{file}");
    }
}

#[test]
fn skipped_rows_are_named_in_warnings() {
    // The redacted cnmon capture: every card's memory is `xxxxx MiB`, so every
    // row is skipped, each with a warning, and the output as a whole fails.
    let e = cambricon::parse_cnmon(&fixture("cnmon.mlu-redacted-x8.txt")).unwrap_err();
    assert_eq!(e.line, Some(9));
    // A real ixsmi table with one card's second line cut off in the middle:
    // the other 15 cards are read, and the warning names the broken row.
    let text = fixture("ixsmi.bi-v150-x16.ixml-4.1.0.txt");
    let broken: String = text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 11)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    let p = iluvatar::parse_ixsmi(&broken).unwrap();
    assert_eq!(p.len(), 15);
    assert_eq!(p.warnings.len(), 1, "{:?}", shown(&p));
    let w = &p.warnings[0];
    assert_eq!(w.line, Some(11));
    assert!(w.message.contains("skipped"), "{w}");
    assert!(
        w.text
            .as_deref()
            .is_some_and(|t| t.contains("Iluvatar BI-V150")),
        "{w}"
    );
}
