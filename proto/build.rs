use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "classgrid/v1/common.proto",
        "classgrid/v1/agent.proto",
        "classgrid/v1/lesson.proto",
        "classgrid/v1/job.proto",
        "classgrid/v1/fleet.proto",
        "classgrid/v1/edge.proto",
        "classgrid/v1/voucher.proto",
        "classgrid/v1/admin.proto",
        "classgrid/v1/federation.proto",
        "classgrid/v1/series.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    // protox parses the protos in Rust, so no protoc has to be installed.
    let fds = protox::compile(files, ["."])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // Reflection needs the encoded descriptor set.
    std::fs::write(
        out.join("classgrid_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // `AgentService.Connect` would clash with the generated `connect`
        // constructor; clients build a Channel and call `new` instead.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
