//! Slice controls per vendor and sharing mechanism.

use classgrid_devices::{
    ControlEnv, Device, Isolation, SharingMode, ascend, nvidia, slice_controls, supported_isolation,
};
use classgrid_devices::{cambricon, hygon, metax};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn t4() -> Device {
    nvidia::parse_query_xml(&fixture("nvidia-smi-q-x.t4.xml"))
        .unwrap()
        .remove(0)
}

fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
    env.iter()
        .find(|(key, _)| key == k)
        .map(|(_, v)| v.as_str())
}

const T4_UUID: &str = "GPU-d37e67a5-91dd-3774-a5cb-99096249601a";

#[test]
fn nvidia_plain_time_slicing_is_no_isolation() {
    let c = slice_controls(&t4(), 4096, 25, &ControlEnv::default());
    assert_eq!(c.mode, SharingMode::TimeSlice);
    assert_eq!(c.isolation, Isolation::None);
    assert_eq!(
        c.env,
        vec![("CUDA_VISIBLE_DEVICES".to_string(), T4_UUID.to_string())]
    );
}

#[test]
fn nvidia_mps_limits() {
    let env = ControlEnv {
        mps_configured: true,
        ..Default::default()
    };
    let c = slice_controls(&t4(), 4096, 25, &env);
    assert_eq!((c.mode, c.isolation), (SharingMode::Mps, Isolation::Soft));
    assert_eq!(get(&c.env, "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"), Some("25"));
    assert_eq!(
        get(&c.env, "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"),
        Some("0=4096M")
    );
}

#[test]
fn nvidia_hami_core_limits() {
    let env = ControlEnv {
        hami_core_lib: Some("/usr/local/vgpu/libvgpu.so".into()),
        ..Default::default()
    };
    let c = slice_controls(&t4(), 2048, 10, &env);
    assert_eq!(
        (c.mode, c.isolation),
        (SharingMode::HamiCore, Isolation::Soft)
    );
    assert_eq!(
        get(&c.env, "LD_PRELOAD"),
        Some("/usr/local/vgpu/libvgpu.so")
    );
    assert_eq!(get(&c.env, "CUDA_DEVICE_MEMORY_LIMIT_0"), Some("2048m"));
    assert_eq!(get(&c.env, "CUDA_DEVICE_SM_LIMIT"), Some("10"));
}

#[test]
fn pascal_without_mps_limits_falls_back_to_hami_or_none() {
    let p2000 = nvidia::parse_query_xml(&fixture("nvidia-smi-q-x.quadro-p2000.xml"))
        .unwrap()
        .remove(0);
    let env = ControlEnv {
        mps_configured: true,
        ..Default::default()
    };
    assert_eq!(
        slice_controls(&p2000, 1024, 50, &env).mode,
        SharingMode::TimeSlice
    );
}

#[test]
fn whole_gpu_and_whole_mig_instance_are_hard() {
    let c = slice_controls(&t4(), 15360, 100, &ControlEnv::default());
    assert_eq!(
        (c.mode, c.isolation),
        (SharingMode::Exclusive, Isolation::Hard)
    );

    let mut xml =
        nvidia::parse_query_xml(&fixture("nvidia-smi-q-x.a100-sxm4-80gb-mig.xml")).unwrap();
    let list = nvidia::parse_list(&fixture("nvidia-smi-L.h100-mig.txt")).unwrap();
    nvidia::merge_mig_listing(&mut xml, &list);
    let mig = &xml[2];
    let c = slice_controls(mig, mig.memory_total_mib, 100, &ControlEnv::default());
    assert_eq!((c.mode, c.isolation), (SharingMode::Mig, Isolation::Hard));
    assert_eq!(
        get(&c.env, "CUDA_VISIBLE_DEVICES"),
        Some("MIG-00000001-0000-0000-0000-000000000001")
    );
    assert_eq!(supported_isolation(mig), Isolation::Hard);
    assert_eq!(supported_isolation(&xml[0]), Isolation::Hard);

    // A MIG instance without a UUID exposes nothing rather than the parent GPU.
    let bare = nvidia::parse_query_xml(&fixture("nvidia-smi-q-x.a100-sxm4-80gb-mig.xml")).unwrap();
    let c = slice_controls(&bare[1], 19968, 100, &ControlEnv::default());
    assert_eq!(get(&c.env, "CUDA_VISIBLE_DEVICES"), Some(""));
}

#[test]
fn ascend_vnpu_template_when_available() {
    let d = ascend::parse_info(&fixture("npu-smi-info.310p3-duo-x4.txt")).unwrap();
    let chip = &d[3];
    let off = slice_controls(chip, 4000, 20, &ControlEnv::default());
    assert_eq!(
        (off.mode, off.isolation),
        (SharingMode::TimeSlice, Isolation::None)
    );
    assert_eq!(get(&off.env, "ASCEND_VISIBLE_DEVICES"), Some("3"));

    let env = ControlEnv {
        ascend_vnpu: true,
        ..Default::default()
    };
    let on = slice_controls(chip, 4000, 20, &env);
    assert_eq!(
        (on.mode, on.isolation),
        (SharingMode::Vnpu, Isolation::Hard)
    );
    // 4000 MiB needs vir02 (6144 MiB); 20 % of 8 AI Cores also needs 2 cores.
    assert_eq!(get(&on.env, "ASCEND_VNPU_SPECS"), Some("vir02"));
    assert_eq!(supported_isolation(chip), Isolation::Hard);

    // Nothing fits 30 GiB on a 310P: time-slicing, said honestly.
    let big = slice_controls(chip, 30000, 20, &env);
    assert_eq!(big.mode, SharingMode::TimeSlice);
}

#[test]
fn other_vendors_use_their_visible_devices_variable() {
    let mx = metax::parse_mx_smi(&fixture("mx-smi.c550-x8.mx-smi-2.2.4.txt")).unwrap();
    let c = slice_controls(
        &mx[5],
        8192,
        20,
        &ControlEnv {
            mps_configured: true,
            ..Default::default()
        },
    );
    assert_eq!(
        c.env,
        vec![("MACA_VISIBLE_DEVICES".to_string(), "5".to_string())]
    );
    assert_eq!(
        (c.mode, c.isolation),
        (SharingMode::TimeSlice, Isolation::None)
    );
    assert_eq!(supported_isolation(&mx[5]), Isolation::None);

    let mlu = cambricon::parse_cnmon(&fixture("cnmon.mlu370-x8.txt")).unwrap();
    let c = slice_controls(&mlu[1], 23374, 100, &ControlEnv::default());
    assert_eq!(get(&c.env, "MLU_VISIBLE_DEVICES"), Some("1"));
    assert_eq!(c.isolation, Isolation::Hard);

    let dcu = hygon::parse_rocm_smi_json(&fixture("rocm-smi-json.hygon-k1xx-ai.json")).unwrap();
    assert_eq!(
        get(
            &slice_controls(&dcu[0], 1024, 10, &ControlEnv::default()).env,
            "HIP_VISIBLE_DEVICES"
        ),
        Some("0")
    );
}

#[test]
fn device_round_trips_through_json() {
    let d = t4();
    let s = serde_json::to_string(&d).unwrap();
    assert!(s.contains("\"vendor\":\"nvidia\""), "{s}");
    let back: Device = serde_json::from_str(&s).unwrap();
    assert_eq!(back, d);
}
