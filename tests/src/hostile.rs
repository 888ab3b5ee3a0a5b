//! A small hostile HTTP/2 client: raw frames over mutual TLS, for tests that
//! send what a well-behaved client library never would (reset floods,
//! endless header blocks, requests that never finish).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::TestVault;

/// HTTP/2 frame types used here.
pub mod frame {
    /// DATA
    pub const DATA: u8 = 0;
    /// HEADERS
    pub const HEADERS: u8 = 1;
    /// RST_STREAM
    pub const RST_STREAM: u8 = 3;
    /// SETTINGS
    pub const SETTINGS: u8 = 4;
    /// GOAWAY
    pub const GOAWAY: u8 = 7;
    /// CONTINUATION
    pub const CONTINUATION: u8 = 9;
    /// END_STREAM flag
    pub const END_STREAM: u8 = 0x1;
    /// END_HEADERS flag
    pub const END_HEADERS: u8 = 0x4;
}

/// What a server did with a hostile connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// It sent GOAWAY with this error code.
    GoAway(u32),
    /// It closed the connection without a GOAWAY.
    Eof,
    /// It did neither within the time allowed.
    StillOpen,
}

/// A TLS connection of a development role, before any HTTP/2.
pub async fn tls_connect(vault: &TestVault, role: &str) -> io::Result<TlsStream<TcpStream>> {
    let files = vault.tls_files(role);
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&files.ca).map_err(io::Error::other)? {
        roots
            .add(ca.map_err(io::Error::other)?)
            .map_err(io::Error::other)?;
    }
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(io::Error::other)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io::Error::other)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(io::Error::other)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(io::Error::other)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(vault.addr()).await?;
    let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// A raw HTTP/2 connection.
#[derive(Debug)]
pub struct RawH2 {
    tls: TlsStream<TcpStream>,
}

impl RawH2 {
    /// Connects as `role` and sends the connection preface and an empty
    /// SETTINGS frame.
    pub async fn connect(vault: &TestVault, role: &str) -> io::Result<Self> {
        let mut raw = Self {
            tls: tls_connect(vault, role).await?,
        };
        raw.tls
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await?;
        raw.send(frame::SETTINGS, 0, 0, &[]).await?;
        Ok(raw)
    }

    /// Sends one frame.
    pub async fn send(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> io::Result<()> {
        let len = u32::try_from(payload.len()).expect("a frame payload fits in 24 bits");
        let mut header = [0u8; 9];
        header[..3].copy_from_slice(&len.to_be_bytes()[1..]);
        header[3] = kind;
        header[4] = flags;
        header[5..].copy_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        self.tls.write_all(&header).await?;
        self.tls.write_all(payload).await
    }

    /// Opens stream `stream` with a gRPC request for `path`; the body, if
    /// any, is up to the caller.
    pub async fn open_stream(
        &mut self,
        stream: u32,
        path: &str,
        end_stream: bool,
    ) -> io::Result<()> {
        let flags = frame::END_HEADERS | if end_stream { frame::END_STREAM } else { 0 };
        self.send(frame::HEADERS, flags, stream, &request_headers(path, &[]))
            .await
    }

    /// Flushes what was sent.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.tls.flush().await
    }

    /// The next frame from the server (type, flags, stream, payload), or
    /// `None` if none comes within `within` or the connection ends.
    pub async fn next_frame(&mut self, within: Duration) -> Option<(u8, u8, u32, Vec<u8>)> {
        let read = async {
            let mut header = [0u8; 9];
            self.tls.read_exact(&mut header).await.ok()?;
            let len = usize::try_from(u32::from_be_bytes([0, header[0], header[1], header[2]]))
                .expect("24 bits fit");
            let mut payload = vec![0; len];
            self.tls.read_exact(&mut payload).await.ok()?;
            let stream =
                u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            Some((header[3], header[4], stream, payload))
        };
        tokio::time::timeout(within, read).await.ok().flatten()
    }

    /// Reads frames until the server sends GOAWAY or closes the connection,
    /// for at most `within`.
    pub async fn wait_closed(&mut self, within: Duration) -> Closed {
        let read = async {
            loop {
                let mut header = [0u8; 9];
                if self.tls.read_exact(&mut header).await.is_err() {
                    return Closed::Eof;
                }
                let len = usize::try_from(u32::from_be_bytes([0, header[0], header[1], header[2]]))
                    .expect("24 bits fit");
                let mut payload = vec![0; len];
                if self.tls.read_exact(&mut payload).await.is_err() {
                    return Closed::Eof;
                }
                if header[3] == frame::GOAWAY && payload.len() >= 8 {
                    let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                    return Closed::GoAway(code);
                }
            }
        };
        tokio::time::timeout(within, read)
            .await
            .unwrap_or(Closed::StillOpen)
    }
}

/// The header block of a gRPC request for `path`, plus `extra` headers, as
/// HPACK literals without indexing (no Huffman, no dynamic table).
pub fn request_headers(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    let standard = [
        (":method", "POST"),
        (":scheme", "https"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    for (name, value) in standard.iter().chain(extra) {
        block.push(0x00);
        hpack_string(&mut block, name.as_bytes());
        hpack_string(&mut block, value.as_bytes());
    }
    block
}

fn hpack_string(out: &mut Vec<u8>, bytes: &[u8]) {
    // A 7-bit prefix integer with the Huffman bit clear.
    let mut len = bytes.len();
    if len < 127 {
        out.push(u8::try_from(len).expect("below 127"));
    } else {
        out.push(127);
        len -= 127;
        while len >= 128 {
            out.push(u8::try_from(len % 128).expect("below 128") | 0x80);
            len /= 128;
        }
        out.push(u8::try_from(len).expect("below 128"));
    }
    out.extend_from_slice(bytes);
}
