//! Files and folders only their owner may read: the data folder, keys,
//! certificates.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;

/// Creates a folder (and its parents) that only its owner can enter.
pub fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// Writes a new file readable by its owner only.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);

    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

/// A path as it may be shown in an error. A "path" that spans lines or is
/// very long is most likely a file's contents given where its path belongs
/// (`VAULT_KEYRING="$(cat keyring)"`), and those contents may be a key:
/// it is described, never echoed.
pub fn shown(path: &Path) -> String {
    let text = path.to_string_lossy();
    if text.contains(['\n', '\r']) || text.len() > 1024 {
        "<a value that looks like a file's contents, not its path>".to_owned()
    } else {
        text.into_owned()
    }
}
