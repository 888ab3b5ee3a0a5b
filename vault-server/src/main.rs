//! `vault-server`: parse settings, start logging, serve until a signal.

use std::alloc::System;
use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;
use vault_server::config::{Args, Command, LogFormat, Settings};
use vault_server::hygiene;
use zeroizing_alloc::ZeroAlloc;

/// Every heap block is wiped when freed, so the copies of secrets that the
/// TLS, HTTP/2 and protobuf layers make do not linger in freed memory.
#[global_allocator]
static ALLOCATOR: ZeroAlloc<System> = ZeroAlloc(System);

fn main() -> ExitCode {
    match start() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The whole chain of causes, and never a backtrace: this is
            // for the operator who has to fix a file or a flag.
            eprintln!("vault-server: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Hardens the process before anything secret is read, then serves.
fn start() -> anyhow::Result<()> {
    hygiene::forbid_core_dumps().context("cannot turn off core dumps")?;
    // Returns only if the keyring is not in the environment.
    hygiene::take_keyring_from_environment().map_err(anyhow::Error::msg)?;
    let args = Args::load()?;
    if let Some(Command::CheckConfig { file }) = &args.command {
        return check_config(file);
    }
    if let Some(Command::Restore { backup, data_dir }) = &args.command {
        return restore(backup, data_dir);
    }
    if args.lock_memory {
        hygiene::lock_memory().map_err(anyhow::Error::msg)?;
    }
    init_tracing(args.log_format);
    let settings = Settings::from_args(&args)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(async { vault_server::server::run(settings, shutdown_signal()?).await })
}

/// Prints what checked out and every problem; fails if there is one.
fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let report = vault_server::check::check_config(file);
    for fine in &report.fine {
        println!("ok       {fine}");
    }
    for problem in &report.problems {
        println!("PROBLEM  {problem}");
    }
    match report.problems.len() {
        0 => Ok(()),
        1 => anyhow::bail!("{} has 1 problem", file.display()),
        n => anyhow::bail!("{} has {n} problems", file.display()),
    }
}

/// Restores a backup and prints what it wrote.
fn restore(backup: &std::path::Path, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let restored = vault_server::backup::restore(backup, data_dir)?;
    println!("{restored}");
    println!(
        "start the server with --data-dir {} and the keyring the backup was made under",
        data_dir.display()
    );
    Ok(())
}

/// Logs go to standard error, filtered by `RUST_LOG` (default `info`).
fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Listens for SIGINT and SIGTERM from now on (a signal that arrives while
/// the server is still starting is not lost) and returns a future that
/// completes on the first of them.
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};

    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down");
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    })
}
