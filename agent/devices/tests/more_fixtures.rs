//! Outputs collected for issue 24 (sources in fixtures/SOURCES.md): each test
//! writes down what the real output says.

mod common;
use common::{fixture, rows};

use classgrid_devices::{ParseError, Parsed, ascend, cambricon, hygon, iluvatar};

fn no_warnings(name: &str, p: &Parsed) {
    assert!(p.warnings.is_empty(), "{name}: {:?}", p.warnings);
}

#[test]
fn cnmon_4_20_without_bus_id_column() {
    // CNMON v4.20.11: the second column is `Inited Driver`, not `Bus-Id`.
    let name = "cnmon.mlu370-x4-x3.cnmon-4.20.11.txt";
    let p = cambricon::parse_cnmon(&fixture(name)).unwrap();
    no_warnings(name, &p);
    assert_eq!(
        rows(&p),
        vec![
            (0, "MLU370-X4", 0, 23308, true, None),
            (1, "MLU370-X4", 0, 23308, true, None),
            (2, "MLU370-X4", 0, 23308, true, None),
        ]
    );
    assert!(p.devices.iter().all(|d| d.utilization_percent == Some(0)));
}

#[test]
fn cnmon_5_10_10_two_cards() {
    let name = "cnmon.mlu370-x4-x2.cnmon-5.10.10.txt";
    let p = cambricon::parse_cnmon(&fixture(name)).unwrap();
    no_warnings(name, &p);
    assert_eq!(
        rows(&p),
        vec![
            (0, "MLU370-X4", 0, 23308, true, Some("0000:1B:00.0")),
            (1, "MLU370-X4", 0, 23308, true, Some("0000:36:00.0")),
        ]
    );
}

#[test]
fn npu_smi_1_9_3_910a_padded_memory_and_no_process_table() {
    // npu-smi 1.9.3 (driver 21.0.rc1): `303  / 15171` has two spaces, and
    // the output ends with the device table's border (no process table).
    let name = "npu-smi-info.910a-x4.npu-smi-1.9.3.txt";
    let p = ascend::parse_info(&fixture(name)).unwrap();
    no_warnings(name, &p);
    // HBM is `0 / 32768` on every chip; the parser takes the HBM pair.
    assert_eq!(
        rows(&p),
        vec![
            (4, "Ascend 910A", 0, 32768, true, Some("0000:C2:00.0")),
            (5, "Ascend 910A", 0, 32768, true, Some("0000:82:00.0")),
            (6, "Ascend 910A", 0, 32768, true, Some("0000:42:00.0")),
            (7, "Ascend 910A", 0, 32768, true, Some("0000:02:00.0")),
        ]
    );
}

#[test]
fn npu_smi_before_23_cut_inside_the_table_is_truncated() {
    let text = fixture("npu-smi-info.910a-x4.npu-smi-1.9.3.txt");
    // Cut after NPU 5's chip line: the table does not end with its border.
    let cut: Vec<&str> = text.lines().take(11).collect();
    let p = ascend::parse_info(&cut.join("\n")).unwrap();
    assert_eq!(p.devices.len(), 2);
    assert!(
        p.warnings
            .iter()
            .any(|w| w.to_string().contains("truncated")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn npu_smi_23_0_rc3_910b2c() {
    let name = "npu-smi-info.910b2c-x2.npu-smi-23.0.rc3.txt";
    let p = ascend::parse_info(&fixture(name)).unwrap();
    no_warnings(name, &p);
    assert_eq!(
        rows(&p),
        vec![
            (0, "Ascend 910B2C", 4302, 65536, true, Some("0000:5A:00.0")),
            (1, "Ascend 910B2C", 4302, 65536, true, Some("0000:29:00.0")),
        ]
    );
    // Its process table is required: cut before it, the output is truncated.
    let text = fixture(name);
    let cut: Vec<&str> = text.lines().take(12).collect();
    let p = ascend::parse_info(&cut.join("\n")).unwrap();
    assert!(
        p.warnings
            .iter()
            .any(|w| w.to_string().contains("truncated"))
    );
}

#[test]
fn rocm_smi_dtk_23_10_k100_x8() {
    // DTK 23.10.1 `rocm-smi` printing the hy-smi layout (DCU ... Mode).
    let name = "rocm-smi.k100-x8.dtk-23.10.1.txt";
    let p = hygon::parse_rocm_smi(&fixture(name)).unwrap();
    no_warnings(name, &p);
    assert_eq!(
        p.devices.iter().map(|d| d.index).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
    assert!(p.devices.iter().all(|d| d.healthy
        && d.memory_total_mib == 0
        && d.utilization_percent == Some(0)
        && d.model == "Hygon DCU"));
}

#[test]
fn ixsmi_4_3_0_bi_v150_x16() {
    let name = "ixsmi.bi-v150-x16.ixml-4.3.0.txt";
    let p = iluvatar::parse_ixsmi(&fixture(name)).unwrap();
    no_warnings(name, &p);
    assert_eq!(p.devices.len(), 16);
    let buses = [
        "13", "16", "1C", "1F", "27", "2A", "34", "37", "3D", "40", "48", "4B", "54", "57", "64",
        "67",
    ];
    for (i, d) in p.devices.iter().enumerate() {
        assert_eq!(d.index, i as u32);
        assert_eq!(d.model, "Iluvatar BI-V150");
        assert_eq!((d.memory_used_mib, d.memory_total_mib), (64, 32768));
        assert!(d.healthy);
        assert_eq!(
            d.bus_id.as_deref(),
            Some(format!("00000000:{}:00.0", buses[i]).as_str())
        );
    }
}

#[test]
fn every_new_fixture_parses_without_error() {
    let all: &[(&str, fn(&str) -> Result<Parsed, ParseError>)] = &[
        (
            "cnmon.mlu370-x4-x3.cnmon-4.20.11.txt",
            cambricon::parse_cnmon,
        ),
        (
            "cnmon.mlu370-x4-x2.cnmon-5.10.10.txt",
            cambricon::parse_cnmon,
        ),
        ("npu-smi-info.910a-x4.npu-smi-1.9.3.txt", ascend::parse_info),
        (
            "npu-smi-info.910b2c-x2.npu-smi-23.0.rc3.txt",
            ascend::parse_info,
        ),
        ("rocm-smi.k100-x8.dtk-23.10.1.txt", hygon::parse_rocm_smi),
        ("ixsmi.bi-v150-x16.ixml-4.3.0.txt", iluvatar::parse_ixsmi),
    ];
    for (name, parse) in all {
        let p = parse(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!p.devices.is_empty(), "{name}");
    }
}
