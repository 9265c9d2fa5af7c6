//! The fourth batch of real outputs collected for issue 24 (sources in
//! fixtures/SOURCES.md, section "Fourth batch"). Each test writes down what
//! the output itself says: device count, index, model, memory, health and
//! bus, and that nothing was skipped or partly read (no warning), or, for
//! an output its source published only in part (`.partial`), the one
//! truncation warning at the line where it stops. All of them are also in
//! `collected_outputs.rs`'s list, which cuts and damages every collected
//! output.

mod common;
use common::{fixture, rows};

use classgrid_devices::{ParseError, Parsed, ascend, iluvatar, nvidia};

/// The fixture, parsed, with nothing skipped or partly read.
fn clean(name: &str, parse: fn(&str) -> Result<Parsed, ParseError>) -> Parsed {
    let p = parse(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(p.warnings.is_empty(), "{name}: {:?}", p.warnings);
    p
}

#[test]
fn npu_smi_22_0_3_single_910a_memory_pair_without_hbm_column() {
    // npu-smi 22.0.3 on one 910A (NPU 4, chip 0, device 0): the header has
    // `Memory-Usage(MB)` and no `HBM-Usage(MB)` column, so the one pair
    // printed, `861  / 21534`, is the chip's memory as the tool reports it.
    // The name cell (`910A     |`) is one column short, as printed. The
    // output ends with the device table's border (no process table before
    // npu-smi 23), which is whole for this version.
    let p = clean(
        "npu-smi-info.910a-x1.npu-smi-22.0.3.txt",
        ascend::parse_info,
    );
    // The device ID (0), not the NPU ID (4), is the index that
    // ASCEND_VISIBLE_DEVICES takes.
    assert_eq!(
        rows(&p),
        vec![(0, "Ascend 910A", 861, 21534, true, Some("0000:81:00.0"))]
    );
    assert_eq!(p.devices[0].utilization_percent, Some(0));
}

#[test]
fn npu_smi_22_0_3_cut_before_the_closing_border_is_truncated() {
    // Not an output of its own: the same capture without its last line.
    let text = fixture("npu-smi-info.910a-x1.npu-smi-22.0.3.txt");
    let lines: Vec<&str> = text.lines().collect();
    let cut = lines[..lines.len() - 1].join("\n");
    let p = ascend::parse_info(&cut).unwrap();
    let truncated = p
        .warnings
        .iter()
        .filter(|w| w.message.contains("truncated"));
    assert_eq!(
        (p.devices.len(), truncated.count()),
        (1, 1),
        "{:?}",
        p.warnings
    );
}

#[test]
fn ixsmi_4_3_0_two_bi_v150_one_without_power_reading() {
    // IX-ML 4.3.0, no `Timestamp` line, two BI-V150 dies (64 MiB used of
    // 32768 MiB each); GPU 0 prints `N/A / N/A` power, GPU 1 `104W / 350W`.
    let p = clean("ixsmi.bi-v150-x2.ixml-4.3.0.txt", iluvatar::parse_ixsmi);
    assert_eq!(
        rows(&p),
        vec![
            (
                0,
                "Iluvatar BI-V150",
                64,
                32768,
                true,
                Some("00000000:10:00.0")
            ),
            (
                1,
                "Iluvatar BI-V150",
                64,
                32768,
                true,
                Some("00000000:13:00.0")
            ),
        ]
    );
    assert!(p.iter().all(|d| d.utilization_percent == Some(0)));
}

#[test]
fn npu_smi_24_1_rc1_910b3_x8_device_table_only_is_read_and_reported_partial() {
    // npu-smi 24.1.rc1.b030 on eight 910B3 (64 GB HBM, about 3.3 GB in use
    // each). The source pasted the device table without the process table
    // that npu-smi 23 and later print after it: all eight chips are read
    // from the HBM pair (not the `0    / 0` DDR pair), and the missing
    // process table is reported as a truncation at the last line.
    let name = "npu-smi-info.910b3-x8.npu-smi-24.1.rc1.partial.txt";
    let p = ascend::parse_info(&fixture(name)).unwrap();
    let buses = ["C1", "C2", "81", "82", "01", "02", "41", "42"];
    let used = [3318, 3314, 3314, 3314, 3314, 3314, 3314, 3315];
    let expected: Vec<_> = (0..8)
        .map(|i| {
            let bus = format!("0000:{}:00.0", buses[i]);
            (i as u32, used[i], 65536, true, bus)
        })
        .collect();
    let got: Vec<_> = p
        .iter()
        .map(|d| {
            assert_eq!(d.model, "Ascend 910B3");
            let bus = d.bus_id.clone().unwrap_or_default();
            (
                d.index,
                d.memory_used_mib,
                d.memory_total_mib,
                d.healthy,
                bus,
            )
        })
        .collect();
    assert_eq!(got, expected);
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(p.warnings[0].message.contains("truncated"));
    assert_eq!(p.warnings[0].line, Some(30));
}

#[test]
fn nvidia_xml_rtx_3080_windows_driver_536_dtd_v12() {
    // Driver 536.40 on Windows (`<current_dm>WDDM</current_dm>`, minor
    // number and serial `N/A`), DTD v12, one RTX 3080 with 1128 of 10240 MiB
    // in use (the 16384 MiB BAR1 block below it is not the memory).
    let p = clean(
        "nvidia-smi-q-x.rtx3080-windows-536.xml",
        nvidia::parse_query_xml,
    );
    assert_eq!(
        rows(&p),
        vec![(
            0,
            "NVIDIA GeForce RTX 3080",
            1128,
            10240,
            true,
            Some("00000000:04:00.0")
        )]
    );
    assert_eq!(
        p.devices[0].uuid.as_deref(),
        Some("GPU-19d6d965-2acc-f646-00f8-4c76979aabb4")
    );
    assert_eq!(p.devices[0].utilization_percent, Some(0));
}

/// A device table published without the process table that npu-smi 23 and
/// later print after it: every device shown is read, and the cut is
/// reported once, at the table's last border.
fn read_as_partial(name: &str, last_line: usize) -> Parsed {
    let p = ascend::parse_info(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let cut: Vec<_> = p
        .warnings
        .iter()
        .map(|w| (w.line, w.message.contains("truncated")))
        .collect();
    assert_eq!(
        cut,
        vec![(Some(last_line), true)],
        "{name}: {:?}",
        p.warnings
    );
    p
}

#[test]
fn npu_smi_25_5_1_two_310p3_host_view() {
    // npu-smi 25.5.1 on a host with two Atlas 310P3 cards (NPU IDs 4 and 5,
    // device IDs 0 and 1), `Chip  Device` header and a `Memory-Usage(MB)`
    // pair only (the 310P has no HBM): 1848 and 1849 of 21525 MB.
    let p = read_as_partial("npu-smi-info.310p3-x2.npu-smi-25.5.1.partial.txt", 12);
    assert_eq!(
        rows(&p),
        vec![
            (0, "Ascend 310P3", 1848, 21525, true, Some("0000:81:00.0")),
            (1, "Ascend 310P3", 1849, 21525, true, Some("0000:85:00.0")),
        ]
    );
}

#[test]
fn npu_smi_25_5_1_inside_a_hami_vnpu_slice_shows_the_slice() {
    // The same host's first card as seen from a Pod with an 8192 MB HAMi
    // soft-sliced vNPU: `libvnpu.so` rewrites the query, so npu-smi prints
    // NPU ID 32768 and `0    / 8192`. The slice (not the card) is what the
    // agent must offer from inside such a container.
    let p = read_as_partial(
        "npu-smi-info.310p3-hami-vnpu-8g.npu-smi-25.5.1.partial.txt",
        9,
    );
    assert_eq!(
        rows(&p),
        vec![(0, "Ascend 310P3", 0, 8192, true, Some("0000:81:00.0"))]
    );
}

#[test]
fn npu_smi_board_and_usages_25_5_1_on_a_910b() {
    // `npu-smi info -t board -i 0` (no `-c`) of npu-smi 25.5.1 on an A2
    // 910B card (PCI device 0xD802): this version adds `Product Name`,
    // `Model`, `Manufacturer` and `Serial Number` before the fields that
    // 23.0.5 printed. No `Chip Name` without `-c`, so the model stays the
    // generic one; board info carries no memory.
    let board = clean(
        "npu-smi-info-t-board.910b.npu-smi-25.5.1.txt",
        ascend::parse_board,
    );
    // `npu-smi info -t usages -i 0` on the same kind of card: DDR 0 MB, HBM
    // 65536 MB at 5 %, so 3276 MiB used (5 % of 65536, rounded down), and
    // NPU utilisation 0 %.
    let usages = clean(
        "npu-smi-info-t-usages.910b-64g.npu-smi-25.5.1.txt",
        ascend::parse_usages,
    );
    assert_eq!(
        (rows(&board), rows(&usages)),
        (
            vec![(0, "Ascend NPU", 0, 0, true, Some("0000:C1:00.0"))],
            vec![(0, "Ascend NPU", 3276, 65536, true, None)]
        )
    );
    assert_eq!(usages.devices[0].utilization_percent, Some(0));
}
