//! Bad input of any kind gives a `ParseError`, never a panic.

use classgrid_devices::{ParseError, Parsed};
use classgrid_devices::{ascend, cambricon, hygon, iluvatar, metax, mthreads, nvidia};
use proptest::prelude::*;

type Parser = fn(&str) -> Result<Parsed, ParseError>;

const PARSERS: &[(&str, Parser, &str)] = &[
    ("csv", nvidia::parse_query_csv, "nvidia-smi-query.l40s.csv"),
    ("xml", nvidia::parse_query_xml, "nvidia-smi-q-x.t4.xml"),
    ("list", nvidia::parse_list, "nvidia-smi-L.h100-mig.txt"),
    ("table", nvidia::parse_table, "nvidia-smi.h200-mig.txt"),
    (
        "npu info a3",
        ascend::parse_info,
        "npu-smi-info.a3-910c-x16.npu-smi-25.2.0.txt",
    ),
    (
        "mx-smi 2.1",
        metax::parse_mx_smi,
        "mx-smi.mxc550-x8.mx-smi-2.1.6.txt",
    ),
    (
        "npu info",
        ascend::parse_info,
        "npu-smi-info.310p3-duo-x4.txt",
    ),
    ("npu -m", ascend::parse_map, "npu-smi-info-m.910a-x8.txt"),
    (
        "npu board",
        ascend::parse_board,
        "npu-smi-info-t-board-c0.910a.txt",
    ),
    (
        "npu usages",
        ascend::parse_usages,
        "npu-smi-info-t-usages.310p-duo.txt",
    ),
    ("hy-smi", hygon::parse_hy_smi, "hy-smi.k100ai-x4.txt"),
    (
        "rocm-smi",
        hygon::parse_rocm_smi,
        "rocm-smi.hygon-dcu-x4.txt",
    ),
    (
        "rocm json",
        hygon::parse_rocm_smi_json,
        "rocm-smi-json.hygon-k1xx-ai.json",
    ),
    (
        "mx-smi",
        metax::parse_mx_smi,
        "mx-smi.c550-x8.mx-smi-2.2.4.txt",
    ),
    (
        "mthreads",
        mthreads::parse_mthreads_gmi,
        "mthreads-gmi.mtt-s80.txt",
    ),
    ("cnmon", cambricon::parse_cnmon, "cnmon.mlu370-x8.txt"),
    (
        "ixsmi",
        iluvatar::parse_ixsmi,
        "ixsmi.bi-v150-x16.ixml-4.1.0.txt",
    ),
];

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn first_lines(text: &str, n: usize) -> String {
    text.lines().take(n).collect::<Vec<_>>().join("\n")
}

#[test]
fn empty_and_blank_input_are_errors() {
    for (name, parse, _) in PARSERS {
        for input in ["", "\n\n", "   \t  "] {
            let e = parse(input).expect_err(name);
            assert!(!e.message.is_empty(), "{name}: {e}");
        }
    }
}

#[test]
fn garbage_is_an_error() {
    let garbage = [
        "command not found",
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
        "\u{0}\u{1}\u{2}\u{fffd}\u{fffd}ELF",
        "| 1 | 2 | 3 |\n| 4 | 5 | 6 |",
        "{\"card0\": 5}",
        "<?xml version=\"1.0\"?><other/>",
        "日本語のテキスト | ∑ | 🙂",
    ];
    for (name, parse, _) in PARSERS {
        for g in garbage {
            assert!(parse(g).is_err(), "{name} accepted {g:?}");
        }
    }
}

#[test]
fn errors_name_the_format_and_line() {
    let e = nvidia::parse_query_csv("name, memory.total [MiB]\nTesla T4, lots").unwrap_err();
    assert_eq!(e.line, Some(2));
    assert_eq!(e.field.as_deref(), Some("memory.total"));
    let shown = e.to_string();
    assert!(
        shown.contains("nvidia-smi") && shown.contains("line 2"),
        "{shown}"
    );
}

/// A cut-off output is never accepted silently: it is an error, or the
/// devices that were read come with a warning naming the cut.
#[test]
fn truncated_outputs_are_errors_or_warnings() {
    let cases: &[(&str, Parser, String)] = &[
        ("csv", nvidia::parse_query_csv, {
            let f = fixture("nvidia-smi-query.l40s.csv");
            f.chars().take(f.len() - 300).collect()
        }),
        (
            "xml",
            nvidia::parse_query_xml,
            fixture("nvidia-smi-q-x.t4.xml")
                .chars()
                .take(5000)
                .collect(),
        ),
        (
            "json",
            hygon::parse_rocm_smi_json,
            fixture("rocm-smi-json.hygon-k1xx-ai.json")
                .chars()
                .take(200)
                .collect(),
        ),
        (
            "list",
            nvidia::parse_list,
            format!(
                "{}\n  MIG 3g.40gb     Dev",
                first_lines(&fixture("nvidia-smi-L.h100-mig.txt"), 1)
            ),
        ),
        (
            "npu info",
            ascend::parse_info,
            first_lines(&fixture("npu-smi-info.910b2c-x2.txt"), 7),
        ),
        (
            "npu -m",
            ascend::parse_map,
            format!(
                "{}\n\t3   ",
                first_lines(&fixture("npu-smi-info-m.910a-x8.txt"), 3)
            ),
        ),
        (
            "npu usages",
            ascend::parse_usages,
            first_lines(&fixture("npu-smi-info-t-usages.910a.txt"), 8),
        ),
        (
            "npu board",
            ascend::parse_board,
            String::from("\tChip Type    : Ascend"),
        ),
        (
            "hy-smi",
            hygon::parse_hy_smi,
            format!(
                "{}\n4       49.0C    118.0W",
                first_lines(&fixture("hy-smi.k100ai-x4.txt"), 5)
            ),
        ),
        (
            "mx-smi",
            metax::parse_mx_smi,
            first_lines(&fixture("mx-smi.c550-x8.mx-smi-2.2.4.txt"), 13),
        ),
        (
            "mthreads",
            mthreads::parse_mthreads_gmi,
            format!(
                "{}\n0    MTT S80        |00000000:01:00.0",
                first_lines(&fixture("mthreads-gmi.mtt-s80.txt"), 8)
            ),
        ),
        (
            "cnmon",
            cambricon::parse_cnmon,
            first_lines(&fixture("cnmon.mlu370-x8.txt"), 7),
        ),
        (
            "ixsmi",
            iluvatar::parse_ixsmi,
            first_lines(&fixture("ixsmi.bi-v150-x16.ixml-4.1.0.txt"), 8),
        ),
    ];
    for (name, parse, text) in cases {
        match parse(text) {
            Err(_) => {}
            Ok(p) => assert!(
                !p.warnings.is_empty(),
                "{name} accepted truncated output silently: {p:?}"
            ),
        }
    }
}

#[test]
fn every_prefix_of_every_fixture_is_handled() {
    for (_, parse, file) in PARSERS {
        let text = fixture(file);
        let cuts: Vec<usize> = text.char_indices().map(|(i, _)| i).step_by(7).collect();
        for cut in cuts {
            let _ = parse(&text[..cut]);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_strings_never_panic(s in "\\PC*") {
        for (_, parse, _) in PARSERS {
            let _ = parse(&s);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let s = String::from_utf8_lossy(&b);
        for (_, parse, _) in PARSERS {
            let _ = parse(&s);
        }
    }

    #[test]
    fn mutated_fixtures_never_panic(which in 0..PARSERS.len(), at in any::<prop::sample::Index>(), junk in "[|/:0-9A-Za-z %()\\[\\]\n\t.-]{0,12}", drop in 0usize..20) {
        let (_, parse, file) = PARSERS[which];
        let text = fixture(file);
        let chars: Vec<char> = text.chars().collect();
        let pos = at.index(chars.len().max(1)).min(chars.len());
        let end = (pos + drop).min(chars.len());
        let mutated: String = chars[..pos].iter().chain(junk.chars().collect::<Vec<_>>().iter()).chain(chars[end..].iter()).collect();
        let _ = parse(&mutated);
    }
}
