//! Compiles the contracts in `proto/` with protox (pure Rust: no system `protoc` needed).

use std::path::PathBuf;

const PROTO_FILES: &[&str] = &[
    "payouts/common/v1/common.proto",
    "payouts/webhooks/v1/webhooks.proto",
    "payouts/payouts/v1/payouts.proto",
    "payouts/limits/v1/limits.proto",
    "payouts/approvals/v1/approvals.proto",
    "payouts/disputes/v1/disputes.proto",
    "payouts/balance/v1/balance.proto",
    "payouts/notifications/v1/notifications.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={file}");
    }

    let file_descriptors = protox::compile(PROTO_FILES, [&manifest_dir])?;
    // The descriptor set also feeds gRPC server reflection.
    let descriptor_path = out_dir.join("payouts_descriptor.bin");
    std::fs::write(
        &descriptor_path,
        prost::Message::encode_to_vec(&file_descriptors),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(&descriptor_path)
        .skip_protoc_run()
        .compile_fds(file_descriptors)?;
    Ok(())
}
