//! Bounds on everything a caller controls, and where each is enforced.
//!
//! | what | limit | enforced by | a caller over it sees |
//! | --- | --- | --- | --- |
//! | request message, `Vault` calls | [`MAX_REQUEST_BYTES`] | tonic's decoder, before buffering | `RESOURCE_EXHAUSTED` |
//! | request message, `Admin` calls | [`MAX_ADMIN_REQUEST_BYTES`] | the same | `RESOURCE_EXHAUSTED` |
//! | fields, secret, page size, import rows | see [`crate::credential`] and the service | request validation | `INVALID_ARGUMENT` |
//! | call duration | `--max-call-duration` | [`CallLimitsLayer`] | `DEADLINE_EXCEEDED` |
//! | streams per connection | [`MAX_STREAMS_PER_CONNECTION`] | HTTP/2 settings | stream refused (`UNAVAILABLE`) |
//! | header block | [`MAX_HEADER_LIST_BYTES`] | HTTP/2 settings | connection closed (`GOAWAY`) |
//! | reset floods | [`MAX_PENDING_RESETS`] | HTTP/2 | connection closed (`GOAWAY`) |
//! | connections | `--max-connections` | [`LimitedStream`] | waits in the accept queue |
//! | TLS handshake | [`crate::transport::HANDSHAKE_TIMEOUT`] | the acceptor | connection closed |
//!
//! Memory per connection is bounded by the stream count times the message
//! limit, and the connection count bounds the rest.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::transport::server::Connected;

/// Largest request message of a `Vault` call: a secret of at most 4 KiB and
/// fields of a few KiB fit with room to spare.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Largest request message of an `Admin` call: an import batch of up to
/// 1000 rows of a few KiB each.
pub const MAX_ADMIN_REQUEST_BYTES: usize = 8 * 1024 * 1024;

/// Concurrent streams (calls) one connection may have open.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 64;

/// Largest header block of a request, all headers together.
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// Streams a client may open and reset before the server has even
/// started on them; more, and the connection is closed.
pub const MAX_PENDING_RESETS: usize = 32;

/// Default of `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 512;

/// Default of `--min-free-mib`.
pub const DEFAULT_MIN_FREE_MIB: u64 = 64;

/// How often an idle connection is pinged, and how long the answer may take.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// See [`KEEPALIVE_INTERVAL`].
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The streaming calls that may outlive `--max-call-duration`: a key
/// rotation and a backup take as long as the store is large.
const UNBOUNDED_CALLS: [&str; 2] = ["/vault.v1.Admin/RotateKeys", "/vault.v1.Admin/Backup"];

/// A tower layer over the gRPC routes that caps how long a call may take,
/// reading its request included, and answers an oversized request with
/// `RESOURCE_EXHAUSTED` (tonic says `OUT_OF_RANGE`, which reads as a bug in
/// the caller's arithmetic rather than a limit).
#[derive(Debug, Clone, Copy)]
pub struct CallLimitsLayer {
    max_duration: Duration,
}

impl CallLimitsLayer {
    /// Calls may take at most `max_duration`.
    pub fn new(max_duration: Duration) -> Self {
        Self { max_duration }
    }
}

impl<S> tower::Layer<S> for CallLimitsLayer {
    type Service = CallLimits<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallLimits {
            inner,
            max_duration: self.max_duration,
        }
    }
}

/// The service [`CallLimitsLayer`] makes.
#[derive(Debug, Clone)]
pub struct CallLimits<S> {
    inner: S,
    max_duration: Duration,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for CallLimits<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let message_limit = if path.starts_with("/vault.v1.Admin/") {
            MAX_ADMIN_REQUEST_BYTES
        } else {
            MAX_REQUEST_BYTES
        };
        let deadline = (!UNBOUNDED_CALLS.contains(&path)).then_some(self.max_duration);
        // Kept for the log line of a call cut off; cloning a URI shares its
        // bytes rather than copying them.
        let uri = request.uri().clone();
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = match deadline {
                Some(limit) => match tokio::time::timeout(limit, call).await {
                    Ok(response) => response?,
                    Err(_) => {
                        tracing::info!(
                            path = uri.path(),
                            ?limit,
                            "call cut off at the server's time limit"
                        );
                        return Ok(Status::deadline_exceeded(format!(
                            "the call took longer than the server's limit of {}",
                            humantime::format_duration(limit)
                        ))
                        .into_http());
                    }
                },
                None => call.await?,
            };
            Ok(rewrite_oversized(response, message_limit))
        })
    }
}

/// Turns tonic's `OUT_OF_RANGE` for a request over the message limit into
/// `RESOURCE_EXHAUSTED`, the code gRPC gives that case. No handler of ours
/// answers `OUT_OF_RANGE`, so the code alone identifies it.
fn rewrite_oversized<R: Default>(response: http::Response<R>, limit: usize) -> http::Response<R> {
    let out_of_range = i32::from(tonic::Code::OutOfRange).to_string();
    let oversized = response
        .headers()
        .get("grpc-status")
        .is_some_and(|status| status.as_bytes() == out_of_range.as_bytes());
    if !oversized {
        return response;
    }
    Status::resource_exhausted(format!(
        "the request message is larger than this call's limit of {limit} bytes"
    ))
    .into_http()
}

/// Hands out one permit per connection, `--max-connections` in all.
#[derive(Debug, Clone)]
pub struct ConnectionSlots(Arc<Semaphore>);

impl ConnectionSlots {
    /// `max` connections at once.
    pub fn new(max: u32) -> Self {
        Self(Arc::new(Semaphore::new(
            usize::try_from(max).unwrap_or(usize::MAX),
        )))
    }

    /// Waits for a free slot; the caller accepts a connection only then.
    pub async fn acquire(&self) -> OwnedSemaphorePermit {
        Arc::clone(&self.0)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }
}

/// A connection holding its slot until it is dropped.
#[derive(Debug)]
pub struct LimitedStream<IO> {
    io: IO,
    _slot: OwnedSemaphorePermit,
}

impl<IO> LimitedStream<IO> {
    /// `io`, holding `slot` for as long as it lives.
    pub fn new(io: IO, slot: OwnedSemaphorePermit) -> Self {
        Self { io, _slot: slot }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for LimitedStream<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for LimitedStream<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<IO: Connected> Connected for LimitedStream<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
