//! The gRPC service: one module per family of calls.
//!
//! - [`write`]: store and update, the calls that seal a secret;
//! - [`read`]: get and list, which never touch a secret;
//! - [`decrypt`]: the one call that opens a secret, for a stated purpose;
//! - [`delete`]: delete one credential, erase a user;
//! - [`keys`]: the operators' key calls (list, reload, rotate);
//! - [`import`]: moving another application's Fernet data into the vault.
//!
//! Each call runs inside a `call` span that carries its operation, user,
//! credential and purpose, and ends with exactly one log line giving the
//! outcome and latency. Secrets are never recorded in a span or an event.

mod convert;
mod decrypt;
mod delete;
pub mod error;
mod import;
mod keys;
mod read;
mod write;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};
use tracing::{Instrument, Span, field};
use vault_proto::v1;

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use self::error::ServiceError;
use crate::access::{Caller, Operation, Policy};
use crate::credential::{CredentialId, UserId};
use crate::keys::KeyManager;
use crate::reload::Reloadable;
use crate::store::CredentialStore;

/// The vault's gRPC services (`Vault` for the data, `Admin` for operators)
/// over a store `S`.
#[derive(Debug)]
pub struct VaultService<S> {
    store: S,
    keys: Arc<KeyManager>,
    policy: Reloadable<Policy>,
    /// Held by the one rotation that may run at a time.
    rotation: Arc<tokio::sync::Mutex<()>>,
}

impl<S: CredentialStore + Clone> VaultService<S> {
    /// A service that keeps records in `store`, seals them with the keyring
    /// of `keys` and lets callers do what `policy` allows.
    pub fn new(store: S, keys: Arc<KeyManager>, policy: Reloadable<Policy>) -> Self {
        Self {
            store,
            keys,
            policy,
            rotation: Arc::default(),
        }
    }

    /// The tonic servers of both services, sharing this one.
    pub fn into_servers(
        self,
    ) -> (
        v1::vault_server::VaultServer<Self>,
        v1::admin_server::AdminServer<Self>,
    ) {
        let shared = Arc::new(self);
        (
            v1::vault_server::VaultServer::from_arc(Arc::clone(&shared)),
            v1::admin_server::AdminServer::from_arc(shared),
        )
    }

    /// Establishes who sent `request` and checks that the policy lets them
    /// do `operation` (for a decrypt, the purpose is checked once parsed).
    fn authorize<T>(
        &self,
        request: &Request<T>,
        operation: Operation,
    ) -> Result<Caller, ServiceError> {
        let caller = caller(request)?;
        Span::current().record("caller", field::display(&caller));
        self.policy.current().authorize(&caller, operation, None)?;
        Ok(caller)
    }
}

/// A span for one call of `operation`; the work records the other fields as
/// it learns them.
fn call_span(operation: &'static str) -> Span {
    tracing::info_span!(
        "call",
        op = operation,
        caller = field::Empty,
        user_id = field::Empty,
        credential_id = field::Empty,
        purpose = field::Empty,
    )
}

/// Runs one call's work inside `span` and logs its outcome and latency.
async fn observe<T>(
    span: Span,
    work: impl Future<Output = Result<T, ServiceError>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let result = work.instrument(span.clone()).await;
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let _entered = span.enter();

    match result {
        Ok(reply) => {
            tracing::info!(outcome = "Ok", latency_us, "call finished");
            Ok(Response::new(reply))
        }
        Err(err) => {
            let status = err.to_status();
            let outcome = format!("{:?}", status.code());
            if err.needs_operator() {
                tracing::error!(outcome, latency_us, error = %err, "call failed");
            } else {
                tracing::info!(outcome, latency_us, error = %err, "call refused");
            }
            Err(status)
        }
    }
}

#[tonic::async_trait]
impl<S: CredentialStore + Clone> v1::vault_server::Vault for VaultService<S> {
    async fn store_credential(
        &self,
        request: Request<v1::StoreCredentialRequest>,
    ) -> Result<Response<v1::StoreCredentialResponse>, Status> {
        observe(call_span("store"), async move {
            self.authorize(&request, Operation::Store)?;
            self.store(request.into_inner()).await
        })
        .await
    }

    async fn update_credential(
        &self,
        request: Request<v1::UpdateCredentialRequest>,
    ) -> Result<Response<v1::UpdateCredentialResponse>, Status> {
        observe(call_span("update"), async move {
            self.authorize(&request, Operation::Update)?;
            self.update(request.into_inner()).await
        })
        .await
    }

    async fn get_credential(
        &self,
        request: Request<v1::GetCredentialRequest>,
    ) -> Result<Response<v1::GetCredentialResponse>, Status> {
        observe(call_span("get"), async move {
            self.authorize(&request, Operation::Get)?;
            self.get(request.into_inner()).await
        })
        .await
    }

    async fn list_credentials(
        &self,
        request: Request<v1::ListCredentialsRequest>,
    ) -> Result<Response<v1::ListCredentialsResponse>, Status> {
        observe(call_span("list"), async move {
            self.authorize(&request, Operation::List)?;
            self.list(request.into_inner()).await
        })
        .await
    }

    async fn decrypt_credential(
        &self,
        request: Request<v1::DecryptCredentialRequest>,
    ) -> Result<Response<v1::DecryptCredentialResponse>, Status> {
        observe(call_span("decrypt"), async move {
            let caller = self.authorize(&request, Operation::Decrypt)?;
            self.decrypt(&caller, request.into_inner()).await
        })
        .await
    }

    async fn delete_credential(
        &self,
        request: Request<v1::DeleteCredentialRequest>,
    ) -> Result<Response<v1::DeleteCredentialResponse>, Status> {
        observe(call_span("delete"), async move {
            self.authorize(&request, Operation::Delete)?;
            self.delete(request.into_inner()).await
        })
        .await
    }

    async fn erase_user(
        &self,
        request: Request<v1::EraseUserRequest>,
    ) -> Result<Response<v1::EraseUserResponse>, Status> {
        observe(call_span("erase"), async move {
            self.authorize(&request, Operation::Erase)?;
            self.erase(request.into_inner()).await
        })
        .await
    }
}

/// The identity of whoever sent `request`: from the client certificate on a
/// TLS connection, or the fixed plaintext identity on the plaintext listener.
fn caller<T>(request: &Request<T>) -> Result<Caller, ServiceError> {
    let tls = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>();
    let Some(tls) = tls else {
        return Ok(Caller::plaintext());
    };
    let certificates = tls.peer_certs().unwrap_or_default();
    let leaf = certificates
        .first()
        .ok_or_else(|| ServiceError::Unauthenticated("no client certificate".into()))?;
    Caller::from_certificate(leaf).map_err(|err| ServiceError::Unauthenticated(err.to_string()))
}

/// Records the owner a call is about on the current span.
fn record_user(owner: &UserId) {
    Span::current().record("user_id", field::display(owner));
}

/// Records the credential a call is about on the current span.
fn record_credential(id: &CredentialId) {
    Span::current().record("credential_id", field::display(id));
}

#[tonic::async_trait]
impl<S: CredentialStore + Clone> v1::admin_server::Admin for VaultService<S> {
    type RotateKeysStream = keys::ProgressStream;

    async fn list_keys(
        &self,
        request: Request<v1::ListKeysRequest>,
    ) -> Result<Response<v1::ListKeysResponse>, Status> {
        observe(call_span("keys.list"), async move {
            self.authorize(&request, Operation::Keys)?;
            self.list_keys().await
        })
        .await
    }

    async fn reload_keyring(
        &self,
        request: Request<v1::ReloadKeyringRequest>,
    ) -> Result<Response<v1::ListKeysResponse>, Status> {
        observe(call_span("keys.reload"), async move {
            self.authorize(&request, Operation::Keys)?;
            self.reload_keyring().await
        })
        .await
    }

    async fn rotate_keys(
        &self,
        request: Request<v1::RotateKeysRequest>,
    ) -> Result<Response<Self::RotateKeysStream>, Status> {
        observe(call_span("keys.rotate"), async move {
            self.authorize(&request, Operation::Rotate)?;
            self.rotate(request.into_inner()).await
        })
        .await
    }

    async fn import_credentials(
        &self,
        request: Request<v1::ImportCredentialsRequest>,
    ) -> Result<Response<v1::ImportCredentialsResponse>, Status> {
        observe(call_span("import"), async move {
            self.authorize(&request, Operation::Import)?;
            self.import(request.into_inner()).await
        })
        .await
    }
}
