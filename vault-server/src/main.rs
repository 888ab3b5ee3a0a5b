//! `vault-server`: parse settings, start logging, serve until a signal.

use std::alloc::System;
use std::io::IsTerminal as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use tracing_subscriber::EnvFilter;
use vault_server::config::{Args, LogFormat, Settings};
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
    let args = Args::parse();
    if args.lock_memory {
        hygiene::lock_memory().map_err(anyhow::Error::msg)?;
    }
    init_tracing(args.log_format);
    let settings = Settings::from_args(&args)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(vault_server::server::run(settings, shutdown_signal()))
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

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down");
}
