//! Compiles `vault/v1/vault.proto` with protox (pure Rust, no system `protoc`)
//! and generates the prost messages and tonic stubs into `OUT_DIR`.

use std::{env, error::Error, fs, path::PathBuf};

use prost::Message as _;

/// Messages that carry a secret or a token: their derived `Debug` is
/// replaced by a redacting one written by hand in `src/lib.rs`.
const SECRET_BEARING: [&str; 4] = [
    ".vault.v1.StoreCredentialRequest",
    ".vault.v1.UpdateCredentialRequest",
    ".vault.v1.DecryptCredentialResponse",
    ".vault.v1.ImportRow",
];

fn main() -> Result<(), Box<dyn Error>> {
    let descriptors = protox::compile(["vault/v1/vault.proto"], ["."])?;

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("cargo sets OUT_DIR")?);
    fs::write(
        out_dir.join("vault_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .codec_path("crate::codec::VaultCodec")
        .skip_debug(SECRET_BEARING)
        .compile_fds(descriptors)?;

    println!("cargo:rerun-if-changed=vault");
    Ok(())
}
