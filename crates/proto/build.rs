//! Generates the gRPC code from `proto/` into OUT_DIR with the vendored protoc,
//! plus the encoded descriptor set that server reflection serves (the
//! vendored google.rpc error details included, so clients can decode them).

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "themodel/common/v1/common.proto",
    "themodel/common/v1/event_stream.proto",
    "themodel/common/v1/outbox.proto",
    "themodel/common/v1/audit.proto",
    "themodel/marketing/v1/marketing.proto",
    "themodel/marketing/v1/events.proto",
    "themodel/insidesales/v1/inside_sales.proto",
    "themodel/insidesales/v1/events.proto",
    "themodel/fieldsales/v1/field_sales.proto",
    "themodel/fieldsales/v1/events.proto",
    "themodel/customersuccess/v1/customer_success.proto",
    "themodel/customersuccess/v1/events.proto",
    "themodel/kpi/v1/kpi.proto",
    "themodel/kpi/v1/events.proto",
    "themodel/kpi/v1/preview.proto",
    "google/rpc/error_details.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // `prost::Name` on every message: events travel as `google.protobuf.Any`,
    // and hand-overs and replays are stored with their type URL.
    config.enable_type_names();
    config.type_name_domain(["."], "type.googleapis.com");
    let include = protoc_bin_vendored::include_path()?;

    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }

    tonic_prost_build::configure().file_descriptor_set_path(out.join("themodel_descriptor.bin")).compile_with_config(
        config,
        &files,
        &[root, include],
    )?;
    Ok(())
}
