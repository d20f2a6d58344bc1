//! Compiles `asrl/v1/*.proto` with protox (pure Rust, no system `protoc`), generates the tonic
//! client and server code, and writes the encoded descriptor set that gRPC reflection serves.

use std::path::PathBuf;

const PROTOS: [&str; 3] = ["asrl/v1/learner.proto", "asrl/v1/worker.proto", "asrl/v1/reward.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTOS).map_err(|e| format!("protox: {e:?}"))?;
    let fds = compiler.file_descriptor_set();

    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("asrl_v1_descriptor.bin"), compiler.encode_file_descriptor_set())?;

    tonic_prost_build::configure()
        // Chunk payloads as `bytes::Bytes`: the server slices one shared buffer, no per-chunk copy.
        .bytes(".asrl.v1.AdapterChunk.data")
        .compile_fds(fds)?;
    Ok(())
}
