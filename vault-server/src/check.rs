//! `vault-server check-config FILE`: everything the server would check at
//! start, without starting, and every problem at once.

use std::path::Path;

use crate::access::Policy;
use crate::config::{Args, Settings, Transport};
use crate::crypto::keyring::Keyring;
use crate::keys::STDIN_KEYRING;

/// The outcome of checking a configuration.
#[derive(Debug, Default)]
pub struct Report {
    /// What checked out, for the operator to read.
    pub fine: Vec<String>,
    /// What must be fixed before the server can start.
    pub problems: Vec<String>,
}

impl Report {
    fn check<T, E: std::fmt::Display>(&mut self, what: String, result: Result<T, E>) {
        match result {
            Ok(_) => self.fine.push(what),
            Err(err) => self.problems.push(format!("{what}: {err}")),
        }
    }

    fn check_chain<T, E>(&mut self, what: String, result: Result<T, E>)
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        match result {
            Ok(_) => self.fine.push(what),
            Err(err) => self
                .problems
                .push(format!("{what}: {:#}", anyhow::Error::new(err))),
        }
    }
}

/// Checks the configuration in `file`, with the environment's overrides, as
/// the server would read it. Never creates or changes anything.
pub fn check_config(file: &Path) -> Report {
    let mut report = Report::default();
    let args = [
        "vault-server".as_ref(),
        "--config".as_ref(),
        file.as_os_str(),
    ];
    let settings = match Args::load_from(args).and_then(|args| Settings::from_args(&args)) {
        Ok(settings) => settings,
        Err(err) => {
            report.problems.push(err.to_string());
            return report;
        }
    };
    report.fine.push(format!("{} parses", file.display()));

    if settings.keyring == Path::new(STDIN_KEYRING) {
        report
            .fine
            .push("keyring: read from standard input at start (not checked here)".into());
    } else {
        let keyring = Keyring::load(&settings.keyring).map(|keyring| {
            let versions: Vec<String> = keyring
                .keys()
                .map(|key| key.version().to_string())
                .collect();
            format!(
                "primary {} of versions {}",
                keyring.primary().version(),
                versions.join(", ")
            )
        });
        match keyring {
            Ok(summary) => report
                .fine
                .push(format!("keyring {}: {summary}", settings.keyring.display())),
            Err(err) => report.problems.push(format!(
                "keyring {}: {:#}",
                settings.keyring.display(),
                anyhow::Error::new(err)
            )),
        }
    }
    report.check_chain(
        format!("policy {}", settings.policy.display()),
        Policy::load(&settings.policy),
    );
    match &settings.transport {
        Transport::Tls(files) => report.check(
            format!(
                "TLS: certificate {}, key {}, client CA {}",
                files.cert.display(),
                files.key.display(),
                files.client_ca.display()
            ),
            files.load(),
        ),
        Transport::Plaintext => report
            .fine
            .push(format!("plaintext on {} (loopback only)", settings.listen)),
    }
    report.check(
        format!("data folder {}", settings.data_dir.display()),
        writable_folder(&settings.data_dir),
    );
    if let crate::audit::sink::SinkTarget::File(path) = &settings.audit_sink {
        let folder = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty());
        let usable = if path.is_dir() {
            Err("is a folder, not a file".to_owned())
        } else {
            writable_folder(folder.unwrap_or(Path::new(".")))
        };
        report.check(format!("audit log {}", path.display()), usable);
    }
    let mut addresses = vec![("listen", settings.listen)];
    addresses.extend(settings.health_listen.map(|addr| ("health_listen", addr)));
    addresses.extend(settings.metrics_listen.map(|addr| ("metrics_listen", addr)));
    for (n, (name, addr)) in addresses.iter().enumerate() {
        for (other, other_addr) in &addresses[n + 1..] {
            let same_ip = addr.ip() == other_addr.ip()
                || addr.ip().is_unspecified()
                || other_addr.ip().is_unspecified();
            if same_ip && addr.port() == other_addr.port() && addr.port() != 0 {
                report.problems.push(format!(
                    "{name} ({addr}) and {other} ({other_addr}) share a port"
                ));
            }
        }
    }
    if settings.dev.is_some() {
        report
            .problems
            .push("dev = true: development mode is for local trials only".into());
    }
    report
}

/// An existing folder this process may write to, or one it could create.
fn writable_folder(path: &Path) -> Result<(), String> {
    if !path.exists() {
        let parent = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty());
        return match parent {
            Some(parent) if !parent.is_dir() => Err(format!(
                "does not exist, nor does its parent {}",
                parent.display()
            )),
            _ => Ok(()), // the server creates it
        };
    }
    if !path.is_dir() {
        return Err("is not a folder".into());
    }
    rustix::fs::access(path, rustix::fs::Access::WRITE_OK)
        .map_err(|err| format!("cannot be written: {err}"))
}
