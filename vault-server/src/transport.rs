//! The network side: mutual TLS, or plaintext on loopback when asked.
//!
//! The server terminates TLS itself (rustls through tokio-rustls) rather
//! than through tonic's built-in TLS, for two reasons: the configuration can
//! be swapped on SIGHUP without touching established connections, and a
//! slow or hostile handshake runs in its own task with a deadline, never in
//! the accept loop.
//!
//! What the configuration enforces:
//! - TLS 1.2 and 1.3 only (rustls implements nothing older);
//! - a client certificate is required and must chain to the configured CA
//!   bundle, be within its validity period and allow client authentication;
//!   a connection without one fails the handshake and never reaches tonic;
//! - ALPN `h2`, since gRPC runs over HTTP/2.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::limits::{ConnectionSlots, LimitedStream};
use crate::reload::Reloadable;

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes finished but not yet taken by the server; beyond this, new
/// connections wait in the kernel's accept queue.
const ACCEPTED_BACKLOG: usize = 128;

/// The files a TLS server is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, PEM.
    pub cert: PathBuf,
    /// The server's private key, PEM.
    pub key: PathBuf,
    /// CA certificates that client certificates must chain to, PEM.
    pub client_ca: PathBuf,
}

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{what} {path}: {reason}")]
    File {
        /// Which file it is.
        what: &'static str,
        /// Its path.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the combination.
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

impl TlsFiles {
    /// Reads the files and builds a server configuration from them.
    pub fn load(&self) -> Result<rustls::ServerConfig, TlsError> {
        let chain = read_certificates("server certificate", &self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|err| file_error("server key", &self.key, err))?;
        let mut roots = RootCertStore::empty();
        for ca in read_certificates("client CA bundle", &self.client_ca)? {
            roots
                .add(ca)
                .map_err(|err| file_error("client CA bundle", &self.client_ca, err))?;
        }

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider.clone())
            .build()
            .map_err(|err| TlsError::Config(err.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|err| TlsError::Config(err.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|err| TlsError::Config(err.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

fn read_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|err| file_error(what, path, err))?;
    if certificates.is_empty() {
        return Err(file_error(what, path, "no certificate in the file"));
    }
    Ok(certificates)
}

fn file_error(what: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        what,
        path: crate::files::shown(path),
        reason: reason.to_string(),
    }
}

/// A TLS connection that holds one of the server's connection slots.
pub type TlsConnection = LimitedStream<TlsStream<TcpStream>>;

/// Accepts TCP connections while a connection slot is free and completes
/// their TLS handshakes, each in its own task, with the configuration
/// current at the time of the handshake. Yields the connections that made
/// it, for tonic to serve; each keeps its slot until it closes.
pub fn serve_tls(
    listener: TcpListener,
    config: Reloadable<rustls::ServerConfig>,
    slots: ConnectionSlots,
) -> ReceiverStream<io::Result<TlsConnection>> {
    let (accepted, incoming) = mpsc::channel(ACCEPTED_BACKLOG);
    tokio::spawn(async move {
        loop {
            let slot = slots.acquire().await;
            let (tcp, peer) = match accept(&listener).await {
                Some(connection) => connection,
                None => continue,
            };
            if accepted.is_closed() {
                return; // the server has shut down
            }
            let acceptor = TlsAcceptor::from(config.current());
            let accepted = accepted.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = accepted.send(Ok(LimitedStream::new(tls, slot))).await;
                    }
                    Ok(Err(err)) => tracing::info!(%peer, error = %err, "TLS handshake failed"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(incoming)
}

/// Accepts plaintext TCP connections while a connection slot is free.
pub fn serve_plaintext(
    listener: TcpListener,
    slots: ConnectionSlots,
) -> ReceiverStream<io::Result<LimitedStream<TcpStream>>> {
    let (accepted, incoming) = mpsc::channel(ACCEPTED_BACKLOG);
    tokio::spawn(async move {
        loop {
            let slot = slots.acquire().await;
            let Some((tcp, _)) = accept(&listener).await else {
                continue;
            };
            if accepted
                .send(Ok(LimitedStream::new(tcp, slot)))
                .await
                .is_err()
            {
                return; // the server has shut down
            }
        }
    });
    ReceiverStream::new(incoming)
}

/// Accepts one connection, with Nagle's algorithm off: gRPC replies leave as
/// several small writes (TLS records of HTTP/2 frames), and with Nagle on a
/// write waits for the client's delayed ACK of the previous one, which adds
/// about 40 ms to any reply larger than one segment. On failure (usually too
/// many open files) logs and backs off instead of spinning.
pub(crate) async fn accept(listener: &TcpListener) -> Option<(TcpStream, std::net::SocketAddr)> {
    match listener.accept().await {
        Ok(connection) => {
            if let Err(err) = connection.0.set_nodelay(true) {
                tracing::debug!(error = %err, "cannot set TCP_NODELAY");
            }
            Some(connection)
        }
        Err(err) => {
            tracing::warn!(error = %err, "accept failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}
