//! The gRPC service: one module per family of calls.
//!
//! - [`write`]: store and update, the calls that seal a secret;
//! - [`read`]: get and list, which never touch a secret;
//! - [`decrypt`]: the one call that opens a secret, for a stated purpose;
//! - [`delete`]: delete one credential, erase a user;
//! - [`keys`]: the operators' key calls (list, reload, rotate);
//! - [`import`]: moving another application's Fernet data into the vault;
//! - [`backup`]: the whole store at one moment, streamed as a backup file.
//!
//! Each call runs inside a `call` span that carries its operation, user,
//! credential and purpose, and ends with exactly one log line giving the
//! outcome and latency. Secrets are never recorded in a span or an event.

mod audit;
mod backup;
mod call;
mod convert;
mod decrypt;
mod delete;
pub mod error;
mod import;
mod keys;
mod read;
mod write;

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vault_proto::v1;

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use self::call::Call;
use self::error::ServiceError;
use crate::access::{Caller, Operation, Policy};
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
    /// Held by the one import batch that runs at a time: an import checks
    /// for an existing credential and then stores, and two batches doing
    /// that at once could both store the same row.
    import: tokio::sync::Mutex<()>,
    /// Free space the store's file system keeps for reads, their audit
    /// events and deletes; `None` checks nothing.
    reserve: Option<DiskReserve>,
}

/// The free space that writes must leave on the data folder's file system.
#[derive(Debug, Clone)]
struct DiskReserve {
    dir: std::path::PathBuf,
    min_free: u64,
}

impl DiskReserve {
    /// Refuses a new record or secret when the file system is below the
    /// reserve. Deletes and the audit events of reads may still use it, so
    /// that a full disk never stops reads or a user's erasure.
    fn check(&self) -> Result<(), ServiceError> {
        let stats = rustix::fs::statvfs(&self.dir).map_err(|err| {
            ServiceError::Store(crate::store::StoreError::from(sled::Error::Io(err.into())))
        })?;
        let free = stats.f_bavail.saturating_mul(stats.f_frsize);
        if free < self.min_free {
            return Err(ServiceError::DiskFull {
                free,
                reserve: self.min_free,
            });
        }
        Ok(())
    }
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
            import: tokio::sync::Mutex::default(),
            reserve: None,
        }
    }

    /// Refuses writes that would leave less than `min_free` bytes free on
    /// the file system of `dir` (the data folder).
    pub fn with_disk_reserve(mut self, dir: std::path::PathBuf, min_free: u64) -> Self {
        self.reserve = Some(DiskReserve { dir, min_free });
        self
    }

    /// Checks the disk reserve before a call that adds data.
    fn check_disk(&self) -> Result<(), ServiceError> {
        self.reserve.as_ref().map_or(Ok(()), DiskReserve::check)
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
        call: &Call,
        request: &Request<T>,
        operation: Operation,
    ) -> Result<Caller, ServiceError> {
        let caller = caller(request)?;
        call.caller(&caller);
        self.policy.current().authorize(&caller, operation, None)?;
        Ok(caller)
    }
}

#[tonic::async_trait]
impl<S: CredentialStore + Clone> v1::vault_server::Vault for VaultService<S> {
    async fn store_credential(
        &self,
        request: Request<v1::StoreCredentialRequest>,
    ) -> Result<Response<v1::StoreCredentialResponse>, Status> {
        let call = Call::start("store", &request);
        self.observe(&call, async {
            self.authorize(&call, &request, Operation::Store)?;
            self.check_disk()?;
            self.store(&call, request.into_inner()).await
        })
        .await
    }

    async fn update_credential(
        &self,
        request: Request<v1::UpdateCredentialRequest>,
    ) -> Result<Response<v1::UpdateCredentialResponse>, Status> {
        let call = Call::start("update", &request);
        self.observe(&call, async {
            self.authorize(&call, &request, Operation::Update)?;
            self.check_disk()?;
            self.update(&call, request.into_inner()).await
        })
        .await
    }

    async fn get_credential(
        &self,
        request: Request<v1::GetCredentialRequest>,
    ) -> Result<Response<v1::GetCredentialResponse>, Status> {
        let call = Call::start("get", &request);
        self.observe(&call, async {
            self.authorize(&call, &request, Operation::Get)?;
            self.get(&call, request.into_inner()).await
        })
        .await
    }

    async fn list_credentials(
        &self,
        request: Request<v1::ListCredentialsRequest>,
    ) -> Result<Response<v1::ListCredentialsResponse>, Status> {
        let call = Call::start("list", &request);
        self.observe(&call, async {
            self.authorize(&call, &request, Operation::List)?;
            self.list(&call, request.into_inner()).await
        })
        .await
    }

    async fn decrypt_credential(
        &self,
        request: Request<v1::DecryptCredentialRequest>,
    ) -> Result<Response<v1::DecryptCredentialResponse>, Status> {
        let call = Call::start("decrypt", &request);
        self.observe(&call, async {
            let caller = self.authorize(&call, &request, Operation::Decrypt)?;
            self.decrypt(&call, &caller, request.into_inner()).await
        })
        .await
    }

    async fn delete_credential(
        &self,
        request: Request<v1::DeleteCredentialRequest>,
    ) -> Result<Response<v1::DeleteCredentialResponse>, Status> {
        let call = Call::start("delete", &request);
        self.observe(&call, async {
            self.authorize(&call, &request, Operation::Delete)?;
            self.delete(&call, request.into_inner()).await
        })
        .await
    }

    async fn erase_user(
        &self,
        request: Request<v1::EraseUserRequest>,
    ) -> Result<Response<v1::EraseUserResponse>, Status> {
        let call = Call::start("erase", &request);
        self.observe(&call, async {
            self.authorize(&call, &request, Operation::Erase)?;
            self.erase(&call, request.into_inner()).await
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

#[tonic::async_trait]
impl<S: CredentialStore + Clone> v1::admin_server::Admin for VaultService<S> {
    type RotateKeysStream = keys::ProgressStream;
    type BackupStream = backup::BackupStream;

    async fn list_keys(
        &self,
        request: Request<v1::ListKeysRequest>,
    ) -> Result<Response<v1::ListKeysResponse>, Status> {
        let call = Call::start("keys.list", &request);
        self.observe(&call, async {
            self.authorize(&call, &request, Operation::Keys)?;
            self.list_keys().await
        })
        .await
    }

    async fn reload_keyring(
        &self,
        request: Request<v1::ReloadKeyringRequest>,
    ) -> Result<Response<v1::ListKeysResponse>, Status> {
        let call = Call::start("keys.reload", &request);
        self.observe(&call, async {
            self.authorize(&call, &request, Operation::Keys)?;
            self.reload_keyring().await
        })
        .await
    }

    async fn rotate_keys(
        &self,
        request: Request<v1::RotateKeysRequest>,
    ) -> Result<Response<Self::RotateKeysStream>, Status> {
        let call = Call::start("keys.rotate", &request);
        self.observe(&call, async {
            self.authorize(&call, &request, Operation::Rotate)?;
            self.check_disk()?;
            self.rotate(&call, request.into_inner()).await
        })
        .await
    }

    async fn import_credentials(
        &self,
        request: Request<v1::ImportCredentialsRequest>,
    ) -> Result<Response<v1::ImportCredentialsResponse>, Status> {
        let call = Call::start("import", &request);
        self.observe(&call, async {
            self.authorize(&call, &request, Operation::Import)?;
            self.check_disk()?;
            self.import(&call, request.into_inner()).await
        })
        .await
    }

    async fn list_audit_events(
        &self,
        request: Request<v1::ListAuditEventsRequest>,
    ) -> Result<Response<v1::ListAuditEventsResponse>, Status> {
        let call = Call::start("audit.list", &request);
        self.observe(&call, async {
            self.authorize(&call, &request, Operation::Audit)?;
            self.list_audit(request.into_inner()).await
        })
        .await
    }

    async fn verify_audit(
        &self,
        request: Request<v1::VerifyAuditRequest>,
    ) -> Result<Response<v1::VerifyAuditResponse>, Status> {
        let call = Call::start("audit.verify", &request);
        self.observe(&call, async {
            self.authorize(&call, &request, Operation::Audit)?;
            self.verify_audit_chain().await
        })
        .await
    }

    async fn backup(
        &self,
        request: Request<v1::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let call = Call::start("backup", &request);
        self.observe(&call, async {
            self.authorize(&call, &request, Operation::Backup)?;
            self.backup(&call).await
        })
        .await
    }
}
