//! Process hygiene: what the server does to itself before it reads a key.
//!
//! - No core dumps: a crash must not write the keys and the secrets in
//!   flight to disk. The core size limit is set to zero and the process is
//!   marked not dumpable, which also keeps other processes of the same user
//!   from attaching a debugger or reading `/proc/PID/mem`.
//! - A keyring handed over in the environment is taken out of it: the
//!   server starts itself again without the variable, passing the text on a
//!   pipe as its standard input, so neither `/proc/PID/environ` nor a child
//!   process ever shows it.
//! - With `--lock-memory`, every page of the process is locked in memory,
//!   so keys and secrets are never written to swap.
//!
//! Freed heap memory is wiped by the zeroizing global allocator that the
//! binary installs, so copies of secrets that libraries make along the way
//! (TLS records, HTTP/2 frames, protobuf buffers) do not outlive their use.

use std::ffi::OsString;
use std::io::{self, Read as _, Write as _};

use rustix::mm::{MlockAllFlags, mlockall};
use rustix::process::{DumpableBehavior, Resource, Rlimit, getrlimit, set_dumpable_behavior};
use zeroize::Zeroizing;

/// The environment variable that may carry the keyring's text instead of a
/// file. The server removes it from its environment at start.
pub const KEYRING_ENV: &str = "VAULT_KEYRING_CONTENTS";

/// The largest keyring accepted from the environment or standard input.
pub const MAX_KEYRING_LEN: usize = 32 * 1024;

/// Turns off core dumps and marks the process not dumpable.
pub fn forbid_core_dumps() -> io::Result<()> {
    let none = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    rustix::process::setrlimit(Resource::Core, none)?;
    set_dumpable_behavior(DumpableBehavior::NotDumpable)?;
    Ok(())
}

/// Whether core dumps are off for this process (the core size limit is zero
/// and the process is not dumpable).
pub fn core_dumps_forbidden() -> bool {
    let limit = getrlimit(Resource::Core);
    let dumpable = rustix::process::dumpable_behavior();
    limit.current == Some(0)
        && limit.maximum == Some(0)
        && matches!(dumpable, Ok(DumpableBehavior::NotDumpable))
}

/// Locks every present and future page of the process in memory.
///
/// Needs the `CAP_IPC_LOCK` capability or an unlimited `RLIMIT_MEMLOCK`
/// (systemd: `LimitMEMLOCK=infinity`); a smaller limit would make the
/// server fail later, at an allocation, so it is refused here instead.
pub fn lock_memory() -> Result<(), String> {
    let limit = getrlimit(Resource::Memlock);
    let privileged = rustix::process::geteuid().is_root();
    if limit.current.is_some() && !privileged {
        if limit.maximum.is_none() {
            // The hard limit allows it: raise the soft one.
            rustix::process::setrlimit(
                Resource::Memlock,
                Rlimit {
                    current: None,
                    maximum: None,
                },
            )
            .map_err(|err| format!("cannot raise RLIMIT_MEMLOCK: {err}"))?;
        } else {
            return Err(format!(
                "--lock-memory needs an unlimited RLIMIT_MEMLOCK or CAP_IPC_LOCK, and the limit \
                 is {} bytes (systemd: LimitMEMLOCK=infinity; shell: ulimit -l unlimited)",
                limit.current.unwrap_or_default()
            ));
        }
    }
    mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE)
        .map_err(|err| format!("cannot lock the process's memory: {err}"))
}

/// If the keyring came in [`KEYRING_ENV`], starts this program again
/// without that variable, with the keyring's text on standard input and
/// `VAULT_KEYRING=-`; returns only on failure. Without the variable, does
/// nothing and returns `Ok`.
#[cfg(unix)]
pub fn take_keyring_from_environment() -> Result<(), String> {
    use std::os::unix::process::CommandExt as _;

    let text = match std::env::var(KEYRING_ENV) {
        Ok(text) => Zeroizing::new(text),
        Err(std::env::VarError::NotPresent) => return Ok(()),
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(format!("{KEYRING_ENV} is not UTF-8 text"));
        }
    };
    if text.len() > MAX_KEYRING_LEN {
        return Err(format!(
            "{KEYRING_ENV} holds more than {MAX_KEYRING_LEN} bytes; use a keyring file"
        ));
    }
    if std::env::var_os("VAULT_KEYRING").is_some()
        || std::env::args_os().any(|arg| arg.to_string_lossy().starts_with("--keyring"))
    {
        return Err(format!(
            "the keyring is given twice: set {KEYRING_ENV} or --keyring/VAULT_KEYRING, not both"
        ));
    }
    let program = std::env::current_exe()
        .map_err(|err| format!("cannot find this program to restart it: {err}"))?;
    let (reader, mut writer) =
        io::pipe().map_err(|err| format!("cannot make a pipe for the keyring: {err}"))?;
    // The text fits in the pipe's buffer (64 KiB on Linux), so the write
    // completes before anyone reads.
    writer
        .write_all(text.as_bytes())
        .map_err(|err| format!("cannot pass the keyring on: {err}"))?;
    drop(writer);
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let err = std::process::Command::new(program)
        .args(args)
        .env_remove(KEYRING_ENV)
        .env("VAULT_KEYRING", "-")
        .stdin(reader)
        .exec();
    Err(format!("cannot restart without {KEYRING_ENV}: {err}"))
}

/// Reads a keyring's text from standard input (`--keyring -`), at most
/// [`MAX_KEYRING_LEN`] bytes, into a buffer that is wiped on drop.
pub fn read_keyring_from_stdin() -> io::Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::with_capacity(MAX_KEYRING_LEN + 1));
    let limit = u64::try_from(MAX_KEYRING_LEN + 1).unwrap_or(u64::MAX);
    io::stdin().lock().take(limit).read_to_string(&mut text)?;
    if text.len() > MAX_KEYRING_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the keyring on standard input is longer than {MAX_KEYRING_LEN} bytes"),
        ));
    }
    Ok(text)
}
