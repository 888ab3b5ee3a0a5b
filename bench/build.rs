//! Compiles the echo service of the load benchmark (`proto/echo.proto`)
//! with protox, as `vault-proto` does for the vault's API, and with the same
//! codec, so the floor differs from the vault only in the work it skips.

use std::error::Error;

fn main() -> Result<(), Box<dyn Error>> {
    let descriptors = protox::compile(["proto/echo.proto"], ["."])?;
    tonic_prost_build::configure()
        .codec_path("vault_proto::codec::VaultCodec")
        .compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
