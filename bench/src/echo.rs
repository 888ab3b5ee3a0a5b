//! The gRPC floor: an echo service with the request and reply shapes of
//! `DecryptCredential`, served by tonic over the very TLS stack the vault
//! uses ([`vault_server::transport`], the `--dev` certificates), that does
//! no work. The vault's decrypt can at best match it.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use vault_server::limits::{self, ConnectionSlots};
use vault_server::reload::Reloadable;
use vault_server::transport::{self, TlsFiles};

/// The generated messages and stubs of `proto/echo.proto`.
pub mod v1 {
    #![allow(missing_docs, unused_qualifications)]
    tonic::include_proto!("bench.echo.v1");
}

/// Bytes of "secret" in every reply, as in the decrypt benchmark.
pub const SECRET_LEN: usize = 32;

/// The echo service.
#[derive(Debug, Default)]
pub struct Echo;

#[tonic::async_trait]
impl v1::echo_server::Echo for Echo {
    async fn echo(
        &self,
        request: Request<v1::EchoRequest>,
    ) -> Result<Response<v1::EchoReply>, Status> {
        let request = request.into_inner();
        Ok(Response::new(v1::EchoReply {
            credential_id: request.credential_id,
            secret: vec![0x5a; SECRET_LEN],
        }))
    }
}

/// Serves the echo service with mutual TLS from `files` on `listen` until
/// the process ends, after printing `listening on ADDR` to standard output.
pub async fn serve(files: &TlsFiles, listen: SocketAddr) -> anyhow::Result<()> {
    let config = Reloadable::new(files.load()?);
    let listener = TcpListener::bind(listen).await?;
    println!("listening on {}", listener.local_addr()?);
    tonic::transport::Server::builder()
        .add_service(v1::echo_server::EchoServer::new(Echo))
        .serve_with_incoming(transport::serve_tls(
            listener,
            config,
            ConnectionSlots::new(limits::DEFAULT_MAX_CONNECTIONS),
        ))
        .await?;
    Ok(())
}
