//! Compiles the protos and embeds the migrations' change detection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A fresh machine has no `protoc`; use the vendored one unless the user points at their own.
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing else reads the environment meanwhile.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }

    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("interview_webhooks_descriptor.bin"))
        .compile_protos(
            &[
                "proto/interview_webhooks/v1/settings.proto",
                "proto/interview_webhooks/v1/events.proto",
                // Only for reflection: lets grpcurl decode our error details.
                "proto/google/rpc/error_details.proto",
            ],
            &["proto"],
        )?;

    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=migrations");
    Ok(())
}
