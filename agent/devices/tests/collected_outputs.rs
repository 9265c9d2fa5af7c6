//! The second batch of real outputs collected for issue 24 (sources in
//! fixtures/SOURCES.md, section "Second batch"). Each test writes down what
//! the output itself says: device count, index, model, memory, health and
//! bus, and that nothing was skipped. The last tests cut and damage every one
//! of these outputs and check that the parsers answer with an error or a
//! warning, never a panic and never a silently shorter list.

mod common;
use common::{fixture, rows};

use classgrid_devices::{ParseError, Parsed, ascend, hygon, iluvatar, metax, mthreads, nvidia};
use proptest::prelude::*;

type Parser = fn(&str) -> Result<Parsed, ParseError>;

fn parse_clean(name: &str, parse: Parser) -> Parsed {
    let p = parse(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(p.warnings.is_empty(), "{name}: {:?}", p.warnings);
    p
}

// ---- Huawei Ascend: `npu-smi info` ----------------------------------------

#[test]
fn npu_smi_20_2_0_atlas_300_310_x4() {
    // Atlas 300 (model 3000), npu-smi 20.2.0: four Ascend 310 chips on one
    // card (NPU 215), `Chip  Device` header, DDR only (no HBM column).
    let p = parse_clean("npu-smi-info.310-x4.npu-smi-20.2.0.txt", ascend::parse_info);
    assert_eq!(
        rows(&p),
        vec![
            (0, "Ascend 310", 2703, 8192, true, Some("0000:DA:00.0")),
            (1, "Ascend 310", 2703, 8192, true, Some("0000:DC:00.0")),
            (2, "Ascend 310", 2703, 8192, true, Some("0000:DD:00.0")),
            (3, "Ascend 310", 2703, 8192, true, Some("0000:DB:00.0")),
        ]
    );
}

#[test]
fn npu_smi_21_0_4_atlas_300_310_device_ids_are_the_index() {
    // npu-smi 21.0.4 on NPU 6: chips 0-3 carry device IDs 3-6, and the device
    // ID (not the chip number) is what ASCEND_VISIBLE_DEVICES takes.
    let p = parse_clean("npu-smi-info.310-x4.npu-smi-21.0.4.txt", ascend::parse_info);
    assert_eq!(
        rows(&p),
        vec![
            (3, "Ascend 310", 2703, 8192, true, Some("0000:89:00.0")),
            (4, "Ascend 310", 2867, 8192, true, Some("0000:8A:00.0")),
            (5, "Ascend 310", 2867, 8192, true, Some("0000:8B:00.0")),
            (6, "Ascend 310", 2867, 8192, true, Some("0000:8C:00.0")),
        ]
    );
    assert!(p.devices.iter().all(|d| d.utilization_percent == Some(0)));
}

#[test]
fn npu_smi_22_0_3_1_910a_x8() {
    // Atlas 800 training server (model 9010): the HBM pair `0 / 32768` is the
    // chip's memory, not the `1867 / 15077` DDR pair beside it.
    let p = parse_clean(
        "npu-smi-info.910a-x8.npu-smi-22.0.3.1.txt",
        ascend::parse_info,
    );
    let buses = ["61", "DB", "B2", "3E", "60", "DA", "B1", "3D"];
    assert_eq!(p.devices.len(), 8);
    for (i, d) in p.devices.iter().enumerate() {
        assert_eq!(
            (
                d.index,
                d.model.as_str(),
                d.memory_used_mib,
                d.memory_total_mib
            ),
            (i as u32, "Ascend 910A", 0, 32768)
        );
        assert!(d.healthy);
        assert_eq!(
            d.bus_id.as_deref(),
            Some(format!("0000:{}:00.0", buses[i]).as_str())
        );
    }
}

#[test]
fn npu_smi_24_1_rc2_names_redacted_and_warning_health() {
    // The source printed the chip name as `xxx`; the parser keeps what is
    // printed. NPUs 3 and 7 say `Warning`: npu-smi's minor-alarm state, in
    // which the chip still runs work, so they stay schedulable. The process
    // table after the devices (4 processes per NPU) is read past, not as rows.
    let p = parse_clean(
        "npu-smi-info.910-redacted-x8.npu-smi-24.1.rc2.txt",
        ascend::parse_info,
    );
    assert_eq!(
        rows(&p),
        vec![
            (0, "Ascend xxx", 0, 32768, true, Some("0000:C1:00.0")),
            (1, "Ascend xxx", 0, 32768, true, Some("0000:81:00.0")),
            (2, "Ascend xxx", 0, 32768, true, Some("0000:41:00.0")),
            (3, "Ascend xxx", 0, 32768, true, Some("0000:01:00.0")),
            (4, "Ascend xxx", 0, 32768, true, Some("0000:C2:00.0")),
            (5, "Ascend xxx", 0, 32768, true, Some("0000:82:00.0")),
            (6, "Ascend xxx", 0, 32768, true, Some("0000:42:00.0")),
            (7, "Ascend xxx", 0, 32768, true, Some("0000:02:00.0")),
        ]
    );
}

#[test]
fn npu_smi_23_0_2_without_process_table_is_reported_truncated() {
    // vllm-ascend's quick start shows one NPU of npu-smi 23.0.2 and stops at
    // the device table's border. Every whole 23.x output recorded here goes
    // on with a process table, and the doc may have cut it, so the one chip
    // is read and the missing table is reported, naming the last line.
    let name = "npu-smi-info.910-redacted-x1.npu-smi-23.0.2.txt";
    let p = ascend::parse_info(&fixture(name)).unwrap();
    assert_eq!(
        rows(&p),
        vec![(0, "Ascend xxx", 0, 32768, true, Some("0000:C1:00.0"))]
    );
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert_eq!(p.warnings[0].line, Some(9));
    assert!(p.warnings[0].message.contains("truncated"));
}

#[test]
fn npu_smi_23_0_rc3_x8_under_load_with_processes() {
    // Eight 910-class chips (name redacted as `xxx` by the source, which
    // left those cells one column short), each with one python process and
    // `30710/ 32768` HBM in use: no space before the slash.
    let p = parse_clean(
        "npu-smi-info.910-redacted-x8.npu-smi-23.0.rc3.txt",
        ascend::parse_info,
    );
    let expect = [
        ("C1", 30710),
        ("81", 30710),
        ("41", 30710),
        ("01", 30709),
        ("C2", 30709),
        ("82", 30709),
        ("42", 30710),
        ("02", 30710),
    ];
    assert_eq!(p.devices.len(), 8);
    for (i, (d, (bus, used))) in p.devices.iter().zip(expect).enumerate() {
        assert_eq!(
            (
                d.index,
                d.model.as_str(),
                d.memory_used_mib,
                d.memory_total_mib
            ),
            (i as u32, "Ascend xxx", used, 32768)
        );
        assert!(d.healthy);
        assert_eq!(
            d.bus_id.as_deref(),
            Some(format!("0000:{bus}:00.0").as_str())
        );
    }
}

#[test]
fn npu_smi_before_23_cut_between_two_chips_is_truncated() {
    // Cut after chip 0's `+---` rule: before the fix this read as a whole
    // one-chip card, because any rule counted as the closing border.
    let text = fixture("npu-smi-info.310-x4.npu-smi-20.2.0.txt");
    let cut: Vec<&str> = text.lines().take(9).collect();
    let p = ascend::parse_info(&cut.join("\n")).unwrap();
    assert_eq!(p.devices.len(), 1);
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert_eq!(p.warnings[0].line, Some(9));
    assert!(p.warnings[0].to_string().contains("truncated"));
}

// ---- Huawei Ascend: `npu-smi info -m` -------------------------------------

#[test]
fn npu_smi_map_22_0_3_1_910a_x8() {
    let p = parse_clean(
        "npu-smi-info-m.910a-x8.npu-smi-22.0.3.1.txt",
        ascend::parse_map,
    );
    assert_eq!(
        p.devices
            .iter()
            .map(|d| (d.index, d.model.as_str()))
            .collect::<Vec<_>>(),
        (0..8).map(|i| (i, "Ascend 910A")).collect::<Vec<_>>()
    );
}

#[test]
fn npu_smi_map_21_0_4_310_skips_the_mcu_row() {
    // NPU 6 lists four `MiniD` (Ascend 310) chips and an `Mcu` with logic ID
    // `-`: the MCU is the board's management controller, not a device, so it
    // is left out without a warning.
    let p = parse_clean(
        "npu-smi-info-m.310-x4-mcu.npu-smi-21.0.4.txt",
        ascend::parse_map,
    );
    assert_eq!(
        p.devices
            .iter()
            .map(|d| (d.index, d.model.as_str()))
            .collect::<Vec<_>>(),
        (0..4).map(|i| (i, "Ascend MiniD")).collect::<Vec<_>>()
    );
}

// ---- NVIDIA: `nvidia-smi -q -x` of more generations -----------------------

#[test]
fn nvidia_xml_a10g_dtd_v11() {
    let p = parse_clean("nvidia-smi-q-x.a10g.xml", nvidia::parse_query_xml);
    assert_eq!(
        rows(&p),
        vec![(0, "NVIDIA A10G", 22, 23028, true, Some("00000000:00:1E.0"))]
    );
    assert_eq!(
        p.devices[0].uuid.as_deref(),
        Some("GPU-9a9a6c50-2a47-2f51-a902-b82c3b127e94")
    );
}

#[test]
fn nvidia_xml_quadro_p400_driver_418() {
    // Driver 418.43 (2019): no DTD version in the root, no MIG elements.
    let p = parse_clean("nvidia-smi-q-x.quadro-p400.xml", nvidia::parse_query_xml);
    assert_eq!(
        rows(&p),
        vec![(0, "Quadro P400", 0, 1998, true, Some("00000000:43:00.0"))]
    );
    assert!(p.devices[0].mig_parent.is_none());
}

#[test]
fn nvidia_xml_gtx_1660_ti_named_graphics_device() {
    // Driver 418.43 did not know this board yet and printed the generic
    // `Graphics Device`; discovery reports the name as printed.
    let p = parse_clean("nvidia-smi-q-x.gtx1660ti.xml", nvidia::parse_query_xml);
    assert_eq!(
        rows(&p),
        vec![(
            0,
            "Graphics Device",
            0,
            5912,
            true,
            Some("00000000:43:00.0")
        )]
    );
}

#[test]
fn nvidia_xml_rtx_3090_driver_525() {
    let p = parse_clean("nvidia-smi-q-x.rtx3090.xml", nvidia::parse_query_xml);
    assert_eq!(
        rows(&p),
        vec![(
            0,
            "NVIDIA GeForce RTX 3090",
            1,
            24576,
            true,
            Some("00000000:00:10.0")
        )]
    );
}

#[test]
fn nvidia_xml_rtx_3060_driver_570() {
    let p = parse_clean("nvidia-smi-q-x.rtx3060.xml", nvidia::parse_query_xml);
    assert_eq!(
        rows(&p),
        vec![(
            0,
            "NVIDIA GeForce RTX 3060",
            116,
            12288,
            true,
            Some("00000000:2D:00.0")
        )]
    );
    assert_eq!(p.devices[0].utilization_percent, Some(0));
}

// ---- NVIDIA: MIG on driver 610 ------------------------------------------

#[test]
fn nvidia_table_610_h200_one_mig_instance() {
    // Driver 610.43.02 prints `KMD Version` / `CUDA UMD Version` in the
    // header. MIG is on with one 3g instance (GI 2, CI 0): the parent GPU and
    // the instance, whose memory is the instance's 71424 MiB, not the GPU's.
    let p = parse_clean(
        "nvidia-smi.h200-mig-1x3g.610.43.02.txt",
        nvidia::parse_table,
    );
    assert_eq!(
        rows(&p),
        vec![
            (0, "NVIDIA H200", 44, 143771, true, Some("00000000:83:00.0")),
            (
                0,
                "NVIDIA H200 MIG GI 2 CI 0",
                44,
                71424,
                true,
                Some("00000000:83:00.0")
            ),
        ]
    );
    assert_eq!(
        p.devices.iter().map(|d| d.mig_parent).collect::<Vec<_>>(),
        vec![None, Some(0)]
    );
}

#[test]
fn nvidia_list_610_h200_one_mig_instance() {
    // `-L` names the profile; its size (71 GB = 72704 MiB) is all it says
    // about memory. The MIG UUID is the one CUDA_VISIBLE_DEVICES takes.
    let p = parse_clean(
        "nvidia-smi-L.h200-mig-1x3g.610.43.02.txt",
        nvidia::parse_list,
    );
    assert_eq!(p.devices.len(), 2);
    let mig = &p.devices[1];
    assert_eq!(
        (
            mig.index,
            mig.mig_parent,
            mig.model.as_str(),
            mig.memory_total_mib
        ),
        (0, Some(0), "NVIDIA H200 MIG 3g.71gb", 72704)
    );
    assert_eq!(
        mig.uuid.as_deref(),
        Some("MIG-f165f0ad-bde2-5b72-acdf-73bbf48eeb2c")
    );
}

// ---- Iluvatar: `ixsmi` of IX-ML 4.0.0 --------------------------------------

#[test]
fn ixsmi_4_0_0_bi_v150s_without_power_reading() {
    // `N/A / N/A` power and `CUDA Version: N/A` (inside a container).
    let p = parse_clean("ixsmi.bi-v150s-x1.ixml-4.0.0.txt", iluvatar::parse_ixsmi);
    assert_eq!(
        rows(&p),
        vec![(
            0,
            "Iluvatar BI-V150S",
            114,
            32768,
            true,
            Some("00000000:8A:00.0")
        )]
    );
}

#[test]
fn ixsmi_4_0_0_driver_4_2_0_bi_v100_with_timestamp() {
    // This one starts with a `Timestamp` line before the table.
    let p = parse_clean(
        "ixsmi.bi-v100-x1.ixml-4.0.0-driver-4.2.0.txt",
        iluvatar::parse_ixsmi,
    );
    assert_eq!(
        rows(&p),
        vec![(
            0,
            "Iluvatar BI-V100",
            9,
            32768,
            true,
            Some("00000000:00:06.0")
        )]
    );
}

// ---- Every collected output, cut or damaged --------------------------------

const COLLECTED: &[(&str, Parser)] = &[
    ("npu-smi-info.310-x4.npu-smi-20.2.0.txt", ascend::parse_info),
    ("npu-smi-info.310-x4.npu-smi-21.0.4.txt", ascend::parse_info),
    (
        "npu-smi-info.910a-x8.npu-smi-22.0.3.1.txt",
        ascend::parse_info,
    ),
    (
        "npu-smi-info.910-redacted-x8.npu-smi-24.1.rc2.txt",
        ascend::parse_info,
    ),
    (
        "npu-smi-info.910-redacted-x1.npu-smi-23.0.2.txt",
        ascend::parse_info,
    ),
    (
        "npu-smi-info.910-redacted-x8.npu-smi-23.0.rc3.txt",
        ascend::parse_info,
    ),
    (
        "npu-smi-info-m.910a-x8.npu-smi-22.0.3.1.txt",
        ascend::parse_map,
    ),
    (
        "npu-smi-info-m.310-x4-mcu.npu-smi-21.0.4.txt",
        ascend::parse_map,
    ),
    ("nvidia-smi-q-x.a10g.xml", nvidia::parse_query_xml),
    ("nvidia-smi-q-x.quadro-p400.xml", nvidia::parse_query_xml),
    ("nvidia-smi-q-x.gtx1660ti.xml", nvidia::parse_query_xml),
    ("nvidia-smi-q-x.rtx3090.xml", nvidia::parse_query_xml),
    ("nvidia-smi-q-x.rtx3060.xml", nvidia::parse_query_xml),
    (
        "nvidia-smi.h200-mig-1x3g.610.43.02.txt",
        nvidia::parse_table,
    ),
    (
        "nvidia-smi-L.h200-mig-1x3g.610.43.02.txt",
        nvidia::parse_list,
    ),
    ("ixsmi.bi-v150s-x1.ixml-4.0.0.txt", iluvatar::parse_ixsmi),
    (
        "ixsmi.bi-v100-x1.ixml-4.0.0-driver-4.2.0.txt",
        iluvatar::parse_ixsmi,
    ),
    // The third batch (tests in vendor_outputs.rs).
    ("mx-smi.c500-x8.mx-smi-2.2.9.txt", metax::parse_mx_smi),
    (
        "mx-smi.mxc500-x1.mx-smi-2.0.12.partial.txt",
        metax::parse_mx_smi,
    ),
    (
        "mthreads-gmi.mtt-s5000-x8.mthreads-gmi-2.4.1.txt",
        mthreads::parse_mthreads_gmi,
    ),
    (
        "mthreads-gmi.mtt-s5000.mthreads-gmi-2.3.3.elided.txt",
        mthreads::parse_mthreads_gmi,
    ),
    ("rocm-smi.hygon-dcu-x8.dtk-23.04.txt", hygon::parse_rocm_smi),
    // The fourth batch (tests in fourth_batch.rs).
    (
        "npu-smi-info.910a-x1.npu-smi-22.0.3.txt",
        ascend::parse_info,
    ),
    ("ixsmi.bi-v150-x2.ixml-4.3.0.txt", iluvatar::parse_ixsmi),
    (
        "npu-smi-info.910b3-x8.npu-smi-24.1.rc1.partial.txt",
        ascend::parse_info,
    ),
    (
        "nvidia-smi-q-x.rtx3080-windows-536.xml",
        nvidia::parse_query_xml,
    ),
    (
        "npu-smi-info.310p3-x2.npu-smi-25.5.1.partial.txt",
        ascend::parse_info,
    ),
    (
        "npu-smi-info.310p3-hami-vnpu-8g.npu-smi-25.5.1.partial.txt",
        ascend::parse_info,
    ),
    (
        "npu-smi-info-t-board.910b.npu-smi-25.5.1.txt",
        ascend::parse_board,
    ),
    (
        "npu-smi-info-t-usages.910b-64g.npu-smi-25.5.1.txt",
        ascend::parse_usages,
    ),
];

#[test]
fn every_prefix_is_an_error_a_warning_or_the_whole_list() {
    // Cut at every line boundary: the parser either fails, warns, or (when
    // only a trailing part that holds no device was cut) still finds every
    // device. A shorter device list with no warning is the silent failure
    // that issue 24 is about.
    for (name, parse) in COLLECTED {
        let text = fixture(name);
        let whole = parse(&text).unwrap().devices.len();
        let lines: Vec<&str> = text.lines().collect();
        // `npu-smi info -m` and `nvidia-smi -L` are plain lists with no
        // closing line, so a cut at a row boundary cannot be told from a
        // shorter list. Discovery counts GPUs and MIG instances from outputs
        // that close (CSV rows, XML, tables) and falls back on `-L` alone
        // only when those gave no instance, with a warning.
        let checkable = !name.starts_with("npu-smi-info-m.") && !name.starts_with("nvidia-smi-L.");
        // A cut exactly after a line that reads like the output's last line
        // (the same closing rule) looks like a whole output; nothing in the
        // text can tell the two apart, so those cuts only must not panic.
        let last = lines.iter().rev().find(|l| !l.trim().is_empty()).copied();
        for n in 0..lines.len() {
            let looks_whole = n > 0 && Some(lines[n - 1]) == last;
            if !checkable || looks_whole {
                let _ = parse(&lines[..n].join("\n"));
                continue;
            }
            let cut = lines[..n].join("\n");
            if let Ok(p) = parse(&cut) {
                assert!(
                    !p.warnings.is_empty() || p.devices.len() == whole,
                    "{name} cut to {n} lines: {} of {whole} devices and no warning",
                    p.devices.len()
                );
            }
        }
        // And inside lines (about 400 cuts per output): no panic.
        let step = (text.len() / 400).max(1);
        for (i, _) in text.char_indices().step_by(step) {
            let _ = parse(&text[..i]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn damaged_outputs_never_panic(
        which in 0..COLLECTED.len(),
        at in any::<prop::sample::Index>(),
        junk in "[|/:0-9A-Za-z %()<>\\[\\]\n\t.-]{0,12}",
        drop in 0usize..20,
    ) {
        let (file, parse) = COLLECTED[which];
        let text = fixture(file);
        let bounds: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        let start = bounds[at.index(bounds.len())];
        let end = bounds
            .iter()
            .copied()
            .find(|&b| b >= start + drop)
            .unwrap_or(text.len());
        let damaged = format!("{}{junk}{}", &text[..start], &text[end..]);
        let _ = parse(&damaged);
    }
}
