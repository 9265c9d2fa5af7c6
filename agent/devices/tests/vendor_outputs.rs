//! The third batch of real outputs collected for issue 24: MetaX, Moore
//! Threads and Hygon layouts that the earlier fixtures did not cover (sources
//! in fixtures/SOURCES.md, section "Third batch"). Each test writes down what
//! the output itself says: device count, index, model, memory, health and
//! bus. Outputs that their source published only in part must come back with
//! a truncation warning and only the devices that are printed. They are also
//! in `collected_outputs.rs`'s list, which cuts and damages every collected
//! output.

mod common;
use common::{fixture, rows};

use classgrid_devices::{Parsed, hygon, metax, mthreads};

fn truncated(p: &Parsed) -> bool {
    p.warnings.iter().any(|w| w.message.contains("truncated"))
}

// ---- MetaX: `mx-smi` -------------------------------------------------------

#[test]
fn mx_smi_2_2_9_four_column_layout() {
    // mx-smi 2.2.9 moved to four columns: `Board Name | GPU Persist-M |
    // Bus-id | GPU-Util sGPU-M` over `Pwr:Usage/Cap | Temp Perf |
    // Memory-Usage | GPU-State`. Reading the three-column positions would
    // take `35C P0` as the memory cell and skip every card.
    let name = "mx-smi.c500-x8.mx-smi-2.2.9.txt";
    let p = metax::parse_mx_smi(&fixture(name)).unwrap();
    assert!(p.warnings.is_empty(), "{name}: {:?}", p.warnings);
    let buses = ["0e", "0f", "10", "12", "35", "36", "37", "38"];
    assert_eq!(p.len(), 8);
    for (i, d) in p.devices.iter().enumerate() {
        let bus = format!("0000:{}:00.0", buses[i]);
        assert_eq!(
            (
                d.index,
                d.model.as_str(),
                d.memory_used_mib,
                d.memory_total_mib,
                d.healthy,
                d.bus_id.as_deref()
            ),
            (i as u32, "MetaX C500", 826, 65536, true, Some(bus.as_str()))
        );
        // `0%          Disabled`: the utilisation, with the sGPU mode beside it.
        assert_eq!(d.utilization_percent, Some(0));
    }
}

#[test]
fn mx_smi_2_0_12_table_only_is_read_and_reported_partial() {
    // The source pasted the device table alone (no `mx-smi version` lines,
    // no process table): the one card is read, and the missing process
    // table is reported. 2.0.x has no GPU-State column: listed is healthy.
    let p = metax::parse_mx_smi(&fixture("mx-smi.mxc500-x1.mx-smi-2.0.12.partial.txt")).unwrap();
    assert_eq!(
        rows(&p),
        vec![(0, "MXC500", 914, 65536, true, Some("0000:1b:00.0"))]
    );
    assert_eq!(p.devices[0].utilization_percent, Some(0));
    assert!(truncated(&p), "{:?}", p.warnings);
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
}

#[test]
fn mx_smi_older_layouts_still_read_by_header() {
    // The header-driven reader gives the three-column layouts what the
    // positional one gave.
    let a = metax::parse_mx_smi(&fixture("mx-smi.c550-x8.mx-smi-2.2.4.txt")).unwrap();
    assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    assert_eq!(
        rows(&a)[7],
        (7, "MetaX C550", 858, 65536, true, Some("0000:d7:00.0"))
    );
    let b = metax::parse_mx_smi(&fixture("mx-smi.mxc550-x8.mx-smi-2.1.6.txt")).unwrap();
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    assert_eq!(b.len(), 8);
    assert!(b.iter().all(|d| d.healthy && d.memory_total_mib == 65536));
}

#[test]
fn mx_smi_2_2_9_with_an_unavailable_card_is_unhealthy() {
    // Not an output of its own: the 2.2.9 capture with one GPU-State cell
    // changed, to check that the four-column layout still reads the state.
    let text = fixture("mx-smi.c500-x8.mx-smi-2.2.9.txt").replacen(
        "| 826/65536 MiB       | Available            |",
        "| 826/65536 MiB       | Unavailable          |",
        1,
    );
    let p = metax::parse_mx_smi(&text).unwrap();
    assert_eq!(
        p.iter().map(|d| d.healthy).collect::<Vec<_>>(),
        [false, true, true, true, true, true, true, true]
    );
}

// ---- Moore Threads: `mthreads-gmi` ----------------------------------------

#[test]
fn mthreads_gmi_2_4_1_s5000_x8() {
    // mthreads-gmi 2.x widens the name column and adds `Perf` under it
    // (`Physical      P0`) and `On-die, EDC` under ECC Mode.
    let name = "mthreads-gmi.mtt-s5000-x8.mthreads-gmi-2.4.1.txt";
    let p = mthreads::parse_mthreads_gmi(&fixture(name)).unwrap();
    assert!(p.warnings.is_empty(), "{name}: {:?}", p.warnings);
    let buses = ["18", "3a", "4b", "5c", "9a", "ba", "ca", "da"];
    let expected: Vec<(u32, &str, u64, u64, bool, Option<String>)> = buses
        .iter()
        .enumerate()
        .map(|(i, b)| {
            (
                i as u32,
                "MTT S5000",
                0,
                81920,
                true,
                Some(format!("00000000:{b}:00.0")),
            )
        })
        .collect();
    let got: Vec<(u32, &str, u64, u64, bool, Option<String>)> = rows(&p)
        .into_iter()
        .map(|(i, m, u, t, h, b)| (i, m, u, t, h, b.map(str::to_string)))
        .collect();
    assert_eq!(got, expected);
    assert!(p.iter().all(|d| d.utilization_percent == Some(0)));
}

#[test]
fn mthreads_gmi_2_3_3_elided_by_source_reads_the_one_card_it_shows() {
    // The source printed the first card and then `...`: one card, and the
    // missing rest (no `Processes:`) is reported, not taken for the whole.
    let p = mthreads::parse_mthreads_gmi(&fixture(
        "mthreads-gmi.mtt-s5000.mthreads-gmi-2.3.3.elided.txt",
    ))
    .unwrap();
    assert_eq!(
        rows(&p),
        vec![(0, "MTT S5000", 0, 81920, true, Some("00000000:18:00.0"))]
    );
    assert!(truncated(&p), "{:?}", p.warnings);
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert_eq!(p.warnings[0].text.as_deref(), Some("..."));
}

// ---- Hygon: the DTK `rocm-smi` table ---------------------------------------

#[test]
fn rocm_smi_dtk_23_04_eight_dcus_with_fan_column() {
    // DTK 23.04's `rocm-smi`: `DCU Temp AvgPwr Fan Perf PwrCap VRAM% DCU%`,
    // no `Mode` column (so no health is printed), eight DCUs, the first with
    // 37% VRAM in use. No model and no VRAM size: 0 MiB, as documented.
    let name = "rocm-smi.hygon-dcu-x8.dtk-23.04.txt";
    let p = hygon::parse_rocm_smi(&fixture(name)).unwrap();
    assert!(p.warnings.is_empty(), "{name}: {:?}", p.warnings);
    assert_eq!(
        p.iter().map(|d| d.index).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
    assert!(p.iter().all(|d| d.model == "Hygon DCU"
        && d.memory_total_mib == 0
        && d.healthy
        && d.utilization_percent == Some(0)));
}
