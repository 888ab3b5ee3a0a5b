//! A thin typed client of the credential vault, and the `vaultctl` command.
//!
//! [`VaultClient`] wraps the generated tonic stub over one connection that
//! every call and every clone shares. It validates nothing the server
//! validates (the server is the authority), gives every call a deadline,
//! retries only calls that are safe to repeat and only when the vault was
//! unavailable, and hands decrypted secrets back in a [`Secret`] that wipes
//! itself and never prints its value.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vault_client::ClientError> {
//! use vault_client::{OdooConnection, Purpose, TlsFiles, VaultClient};
//!
//! let tls = TlsFiles {
//!     ca: "vault-dev/tls/ca.pem".into(),
//!     cert: "vault-dev/tls/sync.pem".into(),
//!     key: "vault-dev/tls/sync.key".into(),
//!     server_name: None,
//! };
//! let vault = VaultClient::connect("https://127.0.0.1:7400", Some(&tls)).await?;
//! let odoo = OdooConnection {
//!     url: "https://odoo.example.com".into(),
//!     database: "prod".into(),
//!     username: "sync@example.com".into(),
//! };
//! let stored = vault.store("user-42", odoo, b"odoo-password").await?;
//! let secret = vault.decrypt("user-42", &stored.id, Purpose::Sync).await?;
//! # drop(secret);
//! # Ok(()) }
//! ```

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretSlice;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use vault_proto::v1::{self, admin_client::AdminClient, vault_client::VaultClient as Stub};
pub use vault_proto::v1::{
    AuditEvent, BackupChunk, BackupSummary, Credential, ImportCredentialsResponse, ImportRow,
    KeyVersion, LegacyKey, ListAuditEventsRequest, ListKeysResponse, OdooConnection, Purpose,
    RotateKeysProgress, VerifyAuditResponse,
};

/// A decrypted secret: wiped when dropped, `Debug` prints a placeholder.
/// Read it with [`secrecy::ExposeSecret::expose_secret`].
pub type Secret = SecretSlice<u8>;

/// How long a call may take unless [`VaultClient::with_deadline`] says
/// otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// How many times an idempotent call is tried when the vault is unavailable.
pub const ATTEMPTS: u32 = 4;

/// Wait before the first retry; it doubles for each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// The files a client proves its identity with and checks the server by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) the server's certificate must chain to, PEM.
    pub ca: PathBuf,
    /// This client's certificate, PEM.
    pub cert: PathBuf,
    /// This client's private key, PEM.
    pub key: PathBuf,
    /// The name the server's certificate must carry; the address's host
    /// when `None`.
    pub server_name: Option<String>,
}

impl TlsFiles {
    fn to_config(&self) -> Result<ClientTlsConfig, ClientError> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| ClientError::TlsFile {
                path: path.clone(),
                source,
            })
        };
        let mut config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&self.ca)?))
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?));
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        Ok(config)
    }
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The address is not a valid URI.
    #[error("invalid vault address {addr:?}")]
    Address {
        /// The address as given.
        addr: String,
        /// What was wrong with it.
        #[source]
        source: tonic::transport::Error,
    },
    /// A TLS file could not be read.
    #[error("cannot read {}", path.display())]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// No connection could be made.
    #[error("cannot connect to the vault at {addr}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The vault answered with an error status.
    #[error("{} ({:?})", .0.message(), .0.code())]
    Status(tonic::Status),
    /// The vault answered without a field it always sets.
    #[error("malformed reply from the vault: {0} missing")]
    MalformedReply(&'static str),
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        ClientError::Status(status)
    }
}

impl ClientError {
    /// The gRPC status code, when the vault answered with one.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Status(status) => Some(status.code()),
            _ => None,
        }
    }
}

/// One connection to the vault, shared by every call made through it and
/// its clones.
#[derive(Debug, Clone)]
pub struct VaultClient {
    stub: Stub<Channel>,
    admin: AdminClient<Channel>,
    deadline: Duration,
}

impl VaultClient {
    /// Connects to the vault at `addr` (`https://host:port`, or just
    /// `host:port`) with mutual TLS from `tls`, or in plaintext when `tls`
    /// is `None` (for a server started with `--insecure-plaintext`).
    pub async fn connect(addr: &str, tls: Option<&TlsFiles>) -> Result<Self, ClientError> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        let uri = match addr.split_once("://") {
            Some((_, rest)) => format!("{scheme}://{rest}"),
            None => format!("{scheme}://{addr}"),
        };
        let mut endpoint = Endpoint::from_shared(uri).map_err(|source| ClientError::Address {
            addr: addr.to_owned(),
            source,
        })?;
        if let Some(tls) = tls {
            endpoint =
                endpoint
                    .tls_config(tls.to_config()?)
                    .map_err(|source| ClientError::Address {
                        addr: addr.to_owned(),
                        source,
                    })?;
        }
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        Ok(Self {
            stub: Stub::new(channel.clone()),
            admin: AdminClient::new(channel),
            deadline: DEFAULT_DEADLINE,
        })
    }

    /// The same connection with another per-call deadline.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.deadline);
        request
    }

    /// Runs an idempotent call, retrying with exponential backoff while the
    /// vault answers UNAVAILABLE. Calls that change state in a way that is
    /// not safe to repeat (store, update, delete) never come through here.
    async fn idempotent<T, F, Fut>(&self, mut call: F) -> Result<T, tonic::Status>
    where
        F: FnMut(Stub<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match call(self.stub.clone()).await {
                Err(status) if status.code() == tonic::Code::Unavailable && attempt < ATTEMPTS => {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                result => return result.map(tonic::Response::into_inner),
            }
        }
    }

    /// Encrypts and stores a new Odoo connection for `user_id`.
    pub async fn store(
        &self,
        user_id: &str,
        odoo: OdooConnection,
        secret: &[u8],
    ) -> Result<Credential, ClientError> {
        let request = v1::StoreCredentialRequest {
            user_id: user_id.to_owned(),
            fields: Some(odoo_fields(odoo)),
            secret: secret.to_vec(),
        };
        let reply = self
            .stub
            .clone()
            .store_credential(self.request(request))
            .await?;
        reply
            .into_inner()
            .credential
            .ok_or(ClientError::MalformedReply("credential"))
    }

    /// Replaces the connection fields and/or the secret of one credential.
    pub async fn update(
        &self,
        user_id: &str,
        credential_id: &str,
        odoo: Option<OdooConnection>,
        secret: Option<&[u8]>,
    ) -> Result<Credential, ClientError> {
        let request = v1::UpdateCredentialRequest {
            user_id: user_id.to_owned(),
            credential_id: credential_id.to_owned(),
            fields: odoo.map(odoo_fields),
            secret: secret.map(<[u8]>::to_vec),
        };
        let reply = self
            .stub
            .clone()
            .update_credential(self.request(request))
            .await?;
        reply
            .into_inner()
            .credential
            .ok_or(ClientError::MalformedReply("credential"))
    }

    /// Reads one credential, without its secret.
    pub async fn get(&self, user_id: &str, credential_id: &str) -> Result<Credential, ClientError> {
        let request = v1::GetCredentialRequest {
            user_id: user_id.to_owned(),
            credential_id: credential_id.to_owned(),
        };
        let reply = self
            .idempotent(|mut stub| {
                let request = self.request(request.clone());
                async move { stub.get_credential(request).await }
            })
            .await?;
        reply
            .credential
            .ok_or(ClientError::MalformedReply("credential"))
    }

    /// Reads one page of a user's credentials. Returns the page and the
    /// token of the next one, if any.
    pub async fn list_page(
        &self,
        user_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<Credential>, Option<String>), ClientError> {
        let request = v1::ListCredentialsRequest {
            user_id: user_id.to_owned(),
            page_size,
            page_token: page_token.to_owned(),
        };
        let reply = self
            .idempotent(|mut stub| {
                let request = self.request(request.clone());
                async move { stub.list_credentials(request).await }
            })
            .await?;
        let next = Some(reply.next_page_token).filter(|token| !token.is_empty());
        Ok((reply.credentials, next))
    }

    /// Reads every credential of a user, page by page.
    pub async fn list(&self, user_id: &str) -> Result<Vec<Credential>, ClientError> {
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let (page, next) = self.list_page(user_id, 0, &token).await?;
            all.extend(page);
            match next {
                Some(next) => token = next,
                None => return Ok(all),
            }
        }
    }

    /// Decrypts one credential's secret for `purpose`.
    pub async fn decrypt(
        &self,
        user_id: &str,
        credential_id: &str,
        purpose: Purpose,
    ) -> Result<Secret, ClientError> {
        let request = v1::DecryptCredentialRequest {
            user_id: user_id.to_owned(),
            credential_id: credential_id.to_owned(),
            purpose: purpose.into(),
        };
        let mut reply = self
            .idempotent(|mut stub| {
                let request = self.request(request.clone());
                async move { stub.decrypt_credential(request).await }
            })
            .await?;
        // Move the bytes out so that the only copy left is the wiping one.
        let secret = std::mem::take(&mut reply.secret).into_boxed_slice();
        Ok(Secret::from(secret))
    }

    /// Deletes one credential for good.
    pub async fn delete(&self, user_id: &str, credential_id: &str) -> Result<(), ClientError> {
        let request = v1::DeleteCredentialRequest {
            user_id: user_id.to_owned(),
            credential_id: credential_id.to_owned(),
        };
        self.stub
            .clone()
            .delete_credential(self.request(request))
            .await?;
        Ok(())
    }

    /// Deletes every credential of a user. Returns how many there were.
    pub async fn erase(&self, user_id: &str) -> Result<u32, ClientError> {
        let request = v1::EraseUserRequest {
            user_id: user_id.to_owned(),
        };
        let reply = self
            .idempotent(|mut stub| {
                let request = self.request(request.clone());
                async move { stub.erase_user(request).await }
            })
            .await?;
        Ok(reply.deleted)
    }
}

/// Operators' calls: keys, rotation, imports, the audit trail, backups. They
/// need a certificate of a
/// role that allows them (`ops` in the shipped policy), and none of them
/// returns a key or a secret.
impl VaultClient {
    /// Every key version with its record count, and the legacy keys.
    pub async fn list_keys(&self) -> Result<ListKeysResponse, ClientError> {
        let request = v1::ListKeysRequest {};
        Ok(self
            .admin
            .clone()
            .list_keys(self.request(request))
            .await?
            .into_inner())
    }

    /// Makes the server re-read and check its keyring file.
    pub async fn reload_keyring(&self) -> Result<ListKeysResponse, ClientError> {
        let request = v1::ReloadKeyringRequest {};
        Ok(self
            .admin
            .clone()
            .reload_keyring(self.request(request))
            .await?
            .into_inner())
    }

    /// Starts a key rotation and returns its progress. The stream has no
    /// deadline: a rotation of a large store takes as long as it takes.
    pub async fn rotate(
        &self,
        batch_size: u32,
    ) -> Result<tonic::Streaming<RotateKeysProgress>, ClientError> {
        let request = tonic::Request::new(v1::RotateKeysRequest { batch_size });
        Ok(self.admin.clone().rotate_keys(request).await?.into_inner())
    }

    /// One page of the audit trail matching `filter`; pass the returned
    /// number as `after_seq` for the next page (0 when there is none).
    pub async fn list_audit(
        &self,
        filter: ListAuditEventsRequest,
    ) -> Result<(Vec<AuditEvent>, u64), ClientError> {
        let reply = self
            .admin
            .clone()
            .list_audit_events(self.request(filter))
            .await?
            .into_inner();
        Ok((reply.events, reply.next_after_seq))
    }

    /// Checks the whole audit chain on the server.
    pub async fn verify_audit(&self) -> Result<VerifyAuditResponse, ClientError> {
        let request = v1::VerifyAuditRequest {};
        Ok(self
            .admin
            .clone()
            .verify_audit(self.request(request))
            .await?
            .into_inner())
    }

    /// Starts a backup and returns its chunks: the first carries the
    /// [`BackupSummary`], and their `data`, in order, is the backup file. The
    /// stream has no deadline: a large store takes as long as it takes.
    pub async fn backup(&self) -> Result<tonic::Streaming<BackupChunk>, ClientError> {
        let request = tonic::Request::new(v1::BackupRequest {});
        Ok(self.admin.clone().backup(request).await?.into_inner())
    }

    /// Imports rows sealed with a legacy key of the keyring.
    pub async fn import(
        &self,
        rows: Vec<ImportRow>,
    ) -> Result<ImportCredentialsResponse, ClientError> {
        let request = v1::ImportCredentialsRequest { rows };
        Ok(self
            .admin
            .clone()
            .import_credentials(self.request(request))
            .await?
            .into_inner())
    }
}

fn odoo_fields(odoo: OdooConnection) -> v1::CredentialFields {
    v1::CredentialFields {
        kind: Some(v1::credential_fields::Kind::Odoo(odoo)),
    }
}
