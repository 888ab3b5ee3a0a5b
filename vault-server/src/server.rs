//! Building the server from [`Settings`] and running it until shutdown.

use std::fs;
use std::io::{self, Write as _};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::config::{KeyringSource, Settings};
use crate::crypto::keyring::Keyring;
use crate::service::VaultService;
use crate::store::SledStore;

/// How long calls in flight may take to finish once shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Opens the store, loads the keyring, serves until `shutdown` completes,
/// then flushes the store.
///
/// Lifecycle lines meant for people and scripts (where the data is, the
/// address actually bound) go to standard output; logs go to standard error.
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create data folder {}", settings.data_dir.display()))?;
    let keyring = Arc::new(load_keyring(&settings.keyring)?);
    let store = SledStore::open(&settings.database_dir()).with_context(|| {
        format!(
            "cannot open database in {}",
            settings.database_dir().display()
        )
    })?;
    tracing::info!(
        keys = keyring.keys().count(),
        primary = keyring.primary().version(),
        "keyring loaded"
    );

    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let bound = listener.local_addr()?;
    announce(&format!("data in {}", settings.data_dir.display()))?;
    announce(&format!("listening on {bound}"))?;
    tracing::info!(addr = %bound, "serving");

    // Graceful shutdown stops accepting, then lets calls in flight finish,
    // but a client that never closes its connection must not hold the
    // process forever: after the grace period it is cut off.
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = stopping.send(());
    };
    let service = VaultService::new(store.clone(), keyring);
    let serve = tonic::transport::Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown);
    let grace_expired = async {
        if stopped.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = serve => served.context("server failed")?,
        () = grace_expired => tracing::warn!(
            grace = ?SHUTDOWN_GRACE,
            "connections still open after the grace period; closing them"
        ),
    }

    store.flush().context("final flush failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Loads the keyring, first creating a development one if that is asked for
/// and none exists yet.
fn load_keyring(source: &KeyringSource) -> anyhow::Result<Keyring> {
    if let KeyringSource::Development(path) = source
        && !path.exists()
    {
        create_dev_keyring(path)?;
        announce(&format!(
            "dev mode: created a new keyring at {} (for development only)",
            path.display()
        ))?;
    }
    Keyring::load(source.path()).context("cannot load keyring")
}

/// Writes a fresh one-key keyring readable by its owner only.
fn create_dev_keyring(path: &Path) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);

    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create keyring {}", path.display()))?;
    file.write_all(Keyring::generate_text().as_bytes())?;
    file.sync_all()?;
    Ok(())
}

fn announce(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "vault-server: {line}")?;
    out.flush()
}
