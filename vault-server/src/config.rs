//! Command line and environment, turned into validated [`Settings`].
//!
//! [`Args`] is what clap parses; [`Settings::from_args`] checks it once and
//! resolves the defaults of `--dev`, so the rest of the server only ever
//! sees settings that make sense.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Where a server listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7400";
/// The data folder of `--dev` unless `--data-dir` is given.
pub const DEFAULT_DEV_DATA_DIR: &str = "vault-dev";

/// The vault server's command line. Every option can also be set through the
/// environment variable named in its help.
#[derive(Debug, Parser)]
#[command(
    name = "vault-server",
    version,
    about = "Credential vault: stores secrets encrypted, \
    decrypts them for authorised callers"
)]
pub struct Args {
    /// Development mode: creates the data folder and a fresh keyring inside it
    /// on first start. Never use it for real credentials.
    #[arg(long)]
    pub dev: bool,

    /// Address to serve gRPC on. Only loopback addresses are accepted until
    /// transport security is configured.
    #[arg(long, env = "VAULT_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Folder holding the database. Required unless --dev (which uses
    /// ./vault-dev).
    #[arg(long, env = "VAULT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Keyring file with the master keys. Required unless --dev (which uses
    /// DATA_DIR/keyring, creating it if missing).
    #[arg(long, env = "VAULT_KEYRING")]
    pub keyring: Option<PathBuf>,

    /// Log line format on standard error.
    #[arg(long, env = "VAULT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Settings that were checked and are ready to use.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Loopback address to serve on.
    pub listen: SocketAddr,
    /// The data folder.
    pub data_dir: PathBuf,
    /// Where the keyring is read from.
    pub keyring: KeyringSource,
}

/// Where the keyring comes from.
#[derive(Debug, Clone)]
pub enum KeyringSource {
    /// A file an operator or secret store provides; it must exist.
    File(PathBuf),
    /// A development keyring, created at this path if missing.
    Development(PathBuf),
}

impl KeyringSource {
    /// The keyring file's path.
    pub fn path(&self) -> &std::path::Path {
        match self {
            KeyringSource::File(path) | KeyringSource::Development(path) => path,
        }
    }
}

/// Settings that cannot work, with what to do instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// No keyring outside development mode.
    #[error(
        "no keyring given: pass --keyring FILE or set VAULT_KEYRING.\n\
         To make one: `vaultctl gen-key --keyring > FILE && chmod 600 FILE`, and keep FILE in \
         your secret store, never in the database or in git.\n\
         For a local trial, run `vault-server --dev` instead."
    )]
    NoKeyring,
    /// No data folder outside development mode.
    #[error("no data folder given: pass --data-dir DIR or set VAULT_DATA_DIR")]
    NoDataDir,
    /// A listen address that is not loopback.
    #[error(
        "refusing to listen on {0}: without transport security the vault serves loopback \
         addresses only (127.0.0.1 or ::1)"
    )]
    NotLoopback(SocketAddr),
}

impl Settings {
    /// Checks the parsed command line and fills in `--dev` defaults.
    pub fn from_args(args: &Args) -> Result<Self, SettingsError> {
        if !args.listen.ip().is_loopback() {
            return Err(SettingsError::NotLoopback(args.listen));
        }

        let (data_dir, keyring) = if args.dev {
            let data_dir = args
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DEV_DATA_DIR));
            let keyring = match &args.keyring {
                Some(path) => KeyringSource::File(path.clone()),
                None => KeyringSource::Development(data_dir.join("keyring")),
            };
            (data_dir, keyring)
        } else {
            let keyring = args.keyring.clone().ok_or(SettingsError::NoKeyring)?;
            let data_dir = args.data_dir.clone().ok_or(SettingsError::NoDataDir)?;
            (data_dir, KeyringSource::File(keyring))
        };

        Ok(Self {
            listen: args.listen,
            data_dir,
            keyring,
        })
    }

    /// The folder sled keeps its files in.
    pub fn database_dir(&self) -> PathBuf {
        self.data_dir.join("db")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        Args::parse_from(std::iter::once("vault-server").chain(extra.iter().copied()))
    }

    #[test]
    fn production_mode_needs_a_keyring_and_a_data_dir() {
        assert!(matches!(
            Settings::from_args(&args(&["--data-dir", "d"])),
            Err(SettingsError::NoKeyring)
        ));
        assert!(matches!(
            Settings::from_args(&args(&["--keyring", "k"])),
            Err(SettingsError::NoDataDir)
        ));
        let settings = Settings::from_args(&args(&["--keyring", "k", "--data-dir", "d"])).unwrap();
        assert!(matches!(settings.keyring, KeyringSource::File(_)));
    }

    #[test]
    fn dev_mode_keeps_its_keyring_in_the_data_dir() {
        let settings = Settings::from_args(&args(&["--dev", "--data-dir", "here"])).unwrap();
        assert_eq!(
            settings.keyring.path(),
            std::path::Path::new("here/keyring")
        );
        assert!(matches!(settings.keyring, KeyringSource::Development(_)));
    }

    #[test]
    fn non_loopback_addresses_are_refused() {
        for listen in ["0.0.0.0:7400", "[::]:7400", "192.0.2.1:7400"] {
            let err = Settings::from_args(&args(&["--dev", "--listen", listen])).unwrap_err();
            assert!(matches!(err, SettingsError::NotLoopback(_)), "{listen}");
        }
        assert!(Settings::from_args(&args(&["--dev", "--listen", "[::1]:0"])).is_ok());
    }
}
