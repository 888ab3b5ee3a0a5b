//! Configuration file, environment and command line, turned into validated
//! [`Settings`].
//!
//! Every setting can come from a flag, an environment variable or the TOML
//! file named by `--config`, in that order of precedence, and falls back to
//! its default. [`Args::load`] merges the three; [`Settings::from_args`]
//! checks the result once and resolves the defaults of `--dev`, so the rest
//! of the server only ever sees settings that make sense.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::audit::sink::SinkTarget;
use crate::dev::DevLayout;
use crate::limits;
use crate::transport::TlsFiles;

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
    /// TOML configuration file (see deploy/vault.toml). Flags and environment
    /// variables override what it says; relative paths in it are relative to
    /// its folder.
    #[arg(long, env = "VAULT_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// What to do instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Development mode: on first start, creates in the data folder a keyring,
    /// a local CA with server and per-role client certificates, and a policy;
    /// then serves mutual TLS like production. Never use it for real
    /// credentials.
    #[arg(long)]
    pub dev: bool,

    /// Address to serve gRPC on.
    #[arg(long, env = "VAULT_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Folder holding the database. Required unless --dev (which uses
    /// ./vault-dev).
    #[arg(long, env = "VAULT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Keyring file with the master keys, or `-` to read it once from
    /// standard input. Required unless --dev. Alternatively put the keyring's
    /// text in VAULT_KEYRING_CONTENTS: the server takes it out of its
    /// environment at start. A keyring from standard input or the
    /// environment cannot be reloaded; restart instead.
    #[arg(long, env = "VAULT_KEYRING")]
    pub keyring: Option<PathBuf>,

    /// Access policy file (TOML). Required unless --dev.
    #[arg(long, env = "VAULT_POLICY")]
    pub policy: Option<PathBuf>,

    /// Server certificate chain (PEM). Required unless --dev or
    /// --insecure-plaintext.
    #[arg(long, env = "VAULT_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// Server private key (PEM).
    #[arg(long, env = "VAULT_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// CA certificates that client certificates must chain to (PEM).
    #[arg(long, env = "VAULT_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,

    /// Serve plaintext gRPC instead of mutual TLS. Only loopback addresses are
    /// accepted, and every caller gets the identity `insecure-plaintext`,
    /// which has no permission unless the policy names it.
    #[arg(long)]
    pub insecure_plaintext: bool,

    /// Also write every audit event as a JSON line to this file, or to
    /// standard output with `-`, for a log shipper.
    #[arg(long, env = "VAULT_AUDIT_LOG")]
    pub audit_log: Option<PathBuf>,

    /// Prune audit events older than this many days (checked at start and
    /// hourly); 0 keeps them all.
    #[arg(long, env = "VAULT_AUDIT_RETENTION_DAYS", default_value_t = 0)]
    pub audit_retention_days: u32,

    /// Lock all of the server's memory so keys and secrets are never swapped
    /// out. Needs CAP_IPC_LOCK or an unlimited RLIMIT_MEMLOCK.
    #[arg(long, env = "VAULT_LOCK_MEMORY")]
    pub lock_memory: bool,

    /// Most connections served at once, TLS handshakes included; more wait
    /// in the kernel's accept queue until one closes.
    #[arg(long, env = "VAULT_MAX_CONNECTIONS", default_value_t = limits::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Longest a call may take, reading its request included; a caller's
    /// shorter deadline wins. Key rotation and backup are exempt.
    #[arg(long, env = "VAULT_MAX_CALL_DURATION", default_value = "30s",
          value_parser = humantime::parse_duration)]
    pub max_call_duration: std::time::Duration,

    /// Free space (MiB) the data folder's file system must keep: below it,
    /// writes are refused with UNAVAILABLE while reads go on.
    #[arg(long, env = "VAULT_MIN_FREE_MIB", default_value_t = limits::DEFAULT_MIN_FREE_MIB)]
    pub min_free_mib: u64,

    /// Also serve the standard gRPC health service (`grpc.health.v1`, and
    /// nothing else) in plaintext on this address, for probes that cannot
    /// present a client certificate. The main port serves it too.
    #[arg(long, env = "VAULT_HEALTH_LISTEN")]
    pub health_listen: Option<SocketAddr>,

    /// Serve Prometheus metrics over HTTP at /metrics on this address.
    #[arg(long, env = "VAULT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Log line format on standard error.
    #[arg(long, env = "VAULT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The server's subcommands; without one it serves.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Check a configuration file and every file it names (keyring, policy,
    /// certificates, data folder) without starting; names every problem and
    /// exits 1 if there is any.
    CheckConfig {
        /// The configuration file.
        file: PathBuf,
    },
    /// Restore a backup made by `vaultctl backup` into a new database in
    /// DATA_DIR (which must be empty or not exist), after checking the
    /// whole file. Needs no keyring: start the server on DATA_DIR with the
    /// keyring the backup's records were sealed with; its start-up check
    /// refuses any other.
    Restore {
        /// The backup file.
        backup: PathBuf,
        /// The new data folder.
        #[arg(long)]
        data_dir: PathBuf,
    },
}

impl Args {
    /// Parses the command line and environment, then fills what neither
    /// set from the configuration file, if one is named.
    pub fn load() -> Result<Self, SettingsError> {
        Self::load_from(std::env::args_os())
    }

    /// [`Args::load`] over the given arguments (the first is the program).
    pub fn load_from<I, T>(args: I) -> Result<Self, SettingsError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command().get_matches_from(args);
        let mut parsed = Self::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
        if let Some(path) = parsed.config.clone() {
            FileConfig::load(&path)?.fill(&mut parsed, &matches);
        }
        Ok(parsed)
    }
}

/// The configuration file: every server setting, by its flag's name in
/// snake case. Unknown keys are refused, so a typo is not silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    dev: Option<bool>,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    keyring: Option<PathBuf>,
    policy: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
    insecure_plaintext: Option<bool>,
    audit_log: Option<PathBuf>,
    audit_retention_days: Option<u32>,
    lock_memory: Option<bool>,
    max_connections: Option<u32>,
    max_call_duration: Option<String>,
    min_free_mib: Option<u64>,
    health_listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    log_format: Option<LogFormat>,
}

impl FileConfig {
    /// Reads and parses `path`, resolving relative paths against its folder.
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|err| SettingsError::ConfigFile {
            path: path.display().to_string(),
            reason: err.to_string(),
        })?;
        // The message and the line, never the offending text: a value put
        // under the wrong key could be a key.
        let mut config: Self = toml::from_str(&text).map_err(|err| {
            let line = err
                .span()
                .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
            SettingsError::ConfigFile {
                path: path.display().to_string(),
                reason: match line {
                    Some(line) => format!("line {line}: {}", err.message()),
                    None => err.message().to_owned(),
                },
            }
        })?;
        if let Some(duration) = &config.max_call_duration {
            humantime::parse_duration(duration).map_err(|err| SettingsError::ConfigFile {
                path: path.display().to_string(),
                reason: format!("max_call_duration {duration:?}: {err}"),
            })?;
        }
        let base = path.parent().unwrap_or(Path::new("."));
        for file in [
            &mut config.data_dir,
            &mut config.keyring,
            &mut config.policy,
            &mut config.tls_cert,
            &mut config.tls_key,
            &mut config.client_ca,
            &mut config.audit_log,
        ]
        .into_iter()
        .flatten()
        {
            let stdin_or_stdout = file.as_os_str() == "-";
            if file.is_relative() && !stdin_or_stdout {
                *file = base.join(&*file);
            }
        }
        Ok(config)
    }

    /// Sets in `args` every value this file has and neither a flag nor an
    /// environment variable set.
    fn fill(self, args: &mut Args, matches: &ArgMatches) {
        let unset = |id: &str| {
            !matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        macro_rules! fill {
            ($($field:ident),* $(,)?) => {$(
                if let Some(value) = self.$field {
                    if unset(stringify!($field)) {
                        args.$field = value;
                    }
                }
            )*};
        }
        macro_rules! fill_option {
            ($($field:ident),* $(,)?) => {$(
                if self.$field.is_some() && unset(stringify!($field)) {
                    args.$field = self.$field;
                }
            )*};
        }
        fill!(
            dev,
            listen,
            insecure_plaintext,
            audit_retention_days,
            lock_memory,
            max_connections,
            min_free_mib,
            log_format,
        );
        fill_option!(
            data_dir,
            keyring,
            policy,
            tls_cert,
            tls_key,
            client_ca,
            audit_log,
            health_listen,
            metrics_listen,
        );
        if let Some(duration) = self.max_call_duration
            && unset("max_call_duration")
            && let Ok(duration) = humantime::parse_duration(&duration)
        {
            args.max_call_duration = duration;
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// How the server talks to its callers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Mutual TLS from these files.
    Tls(TlsFiles),
    /// Plaintext on loopback.
    Plaintext,
}

/// Settings that were checked and are ready to use.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to serve on.
    pub listen: SocketAddr,
    /// The data folder.
    pub data_dir: PathBuf,
    /// The keyring file.
    pub keyring: PathBuf,
    /// The policy file.
    pub policy: PathBuf,
    /// TLS or plaintext.
    pub transport: Transport,
    /// Development files to create on start when missing.
    pub dev: Option<DevLayout>,
    /// Where the JSON-lines copy of the audit trail goes.
    pub audit_sink: SinkTarget,
    /// How long audit events are kept; `None` keeps them all.
    pub audit_retention: Option<std::time::Duration>,
    /// Most connections at once.
    pub max_connections: u32,
    /// Longest a call may take.
    pub max_call_duration: std::time::Duration,
    /// Free bytes the data folder's file system must keep for writes to be
    /// accepted.
    pub min_free_bytes: u64,
    /// Where the plaintext health service listens, if anywhere.
    pub health_listen: Option<SocketAddr>,
    /// Where the Prometheus metrics listen, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
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
    /// A required setting is missing.
    #[error("no {what} given: pass --{flag} or set {env} (or run with --dev for a local trial)")]
    Missing {
        /// What is missing.
        what: &'static str,
        /// Its flag.
        flag: &'static str,
        /// Its environment variable.
        env: &'static str,
    },
    /// The configuration file cannot be read or parsed.
    #[error("configuration file {path}: {reason}")]
    ConfigFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Plaintext on an address that is not loopback.
    #[error(
        "refusing --insecure-plaintext on {0}: plaintext is served on loopback addresses only \
         (127.0.0.1 or ::1)"
    )]
    PlaintextNotLoopback(SocketAddr),
}

impl Settings {
    /// Checks the parsed command line and fills in `--dev` defaults.
    pub fn from_args(args: &Args) -> Result<Self, SettingsError> {
        if args.insecure_plaintext && !args.listen.ip().is_loopback() {
            return Err(SettingsError::PlaintextNotLoopback(args.listen));
        }

        let dev = args.dev.then(|| {
            let data_dir = args
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DEV_DATA_DIR));
            DevLayout::new(&data_dir)
        });
        let from_dev = |path: fn(&DevLayout) -> PathBuf| dev.as_ref().map(path);
        let missing = |what, flag, env| SettingsError::Missing { what, flag, env };

        let data_dir = args
            .data_dir
            .clone()
            .or_else(|| dev.is_some().then(|| PathBuf::from(DEFAULT_DEV_DATA_DIR)))
            .ok_or(missing("data folder", "data-dir", "VAULT_DATA_DIR"))?;
        let keyring = args
            .keyring
            .clone()
            .or_else(|| from_dev(DevLayout::keyring))
            .ok_or(SettingsError::NoKeyring)?;
        let policy = args
            .policy
            .clone()
            .or_else(|| from_dev(DevLayout::policy))
            .ok_or(missing("policy", "policy", "VAULT_POLICY"))?;

        let transport = if args.insecure_plaintext {
            Transport::Plaintext
        } else {
            let tls_file = |given: &Option<PathBuf>, name, ext| {
                given
                    .clone()
                    .or_else(|| dev.as_ref().map(|layout| layout.tls_file(name, ext)))
            };
            Transport::Tls(TlsFiles {
                cert: tls_file(&args.tls_cert, "server", "pem").ok_or(missing(
                    "server certificate",
                    "tls-cert",
                    "VAULT_TLS_CERT",
                ))?,
                key: tls_file(&args.tls_key, "server", "key").ok_or(missing(
                    "server key",
                    "tls-key",
                    "VAULT_TLS_KEY",
                ))?,
                client_ca: tls_file(&args.client_ca, "ca", "pem").ok_or(missing(
                    "client CA bundle",
                    "client-ca",
                    "VAULT_CLIENT_CA",
                ))?,
            })
        };

        let audit_sink = match &args.audit_log {
            None => SinkTarget::Off,
            Some(path) if path.as_os_str() == "-" => SinkTarget::Stdout,
            Some(path) => SinkTarget::File(path.clone()),
        };
        let audit_retention = (args.audit_retention_days > 0).then(|| {
            std::time::Duration::from_secs(u64::from(args.audit_retention_days) * 24 * 60 * 60)
        });

        Ok(Self {
            listen: args.listen,
            data_dir,
            keyring,
            policy,
            transport,
            dev,
            audit_sink,
            audit_retention,
            max_connections: args.max_connections,
            max_call_duration: args.max_call_duration,
            min_free_bytes: args.min_free_mib.saturating_mul(1024 * 1024),
            health_listen: args.health_listen,
            metrics_listen: args.metrics_listen,
        })
    }

    /// The folder sled keeps its files in.
    pub fn database_dir(&self) -> PathBuf {
        self.data_dir.join("db")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn args(extra: &[&str]) -> Args {
        Args::parse_from(std::iter::once("vault-server").chain(extra.iter().copied()))
    }

    const PRODUCTION: [&str; 12] = [
        "--keyring",
        "k",
        "--data-dir",
        "d",
        "--policy",
        "p",
        "--tls-cert",
        "c",
        "--tls-key",
        "ck",
        "--client-ca",
        "ca",
    ];

    #[test]
    fn production_mode_needs_every_file() {
        assert!(Settings::from_args(&args(&PRODUCTION)).is_ok());
        for skip in (0..PRODUCTION.len()).step_by(2) {
            let mut partial = PRODUCTION.to_vec();
            partial.drain(skip..skip + 2);
            let err = Settings::from_args(&args(&partial)).unwrap_err();
            let flag = PRODUCTION[skip].trim_start_matches("--");
            assert!(err.to_string().contains(flag), "{flag}: {err}");
        }
    }

    #[test]
    fn dev_mode_keeps_everything_in_the_data_dir_and_serves_tls() {
        let settings = Settings::from_args(&args(&["--dev", "--data-dir", "here"])).unwrap();
        assert_eq!(settings.keyring, Path::new("here/keyring"));
        assert_eq!(settings.policy, Path::new("here/policy.toml"));
        let Transport::Tls(files) = settings.transport else {
            panic!("dev mode serves TLS");
        };
        assert_eq!(files.client_ca, Path::new("here/tls/ca.pem"));
    }

    #[test]
    fn plaintext_is_refused_off_loopback() {
        for listen in ["0.0.0.0:7400", "[::]:7400", "192.0.2.1:7400"] {
            let err = Settings::from_args(&args(&[
                "--dev",
                "--insecure-plaintext",
                "--listen",
                listen,
            ]))
            .unwrap_err();
            assert!(
                matches!(err, SettingsError::PlaintextNotLoopback(_)),
                "{listen}"
            );
        }
        let settings = Settings::from_args(&args(&[
            "--dev",
            "--insecure-plaintext",
            "--listen",
            "[::1]:0",
        ]))
        .unwrap();
        assert_eq!(settings.transport, Transport::Plaintext);
        // With TLS any address is fine.
        assert!(Settings::from_args(&args(&["--dev", "--listen", "0.0.0.0:7400"])).is_ok());
    }
}
