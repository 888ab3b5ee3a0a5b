//! A thin typed client of the credential vault, and the `vaultctl` command.
//!
//! [`VaultClient`] wraps the generated tonic stub: it validates nothing the
//! server validates (the server is the authority), gives every call a
//! deadline, and hands decrypted secrets back in a [`Secret`] that wipes
//! itself and never prints its value.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vault_client::ClientError> {
//! use vault_client::{OdooConnection, Purpose, VaultClient};
//!
//! let vault = VaultClient::connect("http://127.0.0.1:7400").await?;
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

use std::time::Duration;

use secrecy::SecretSlice;
use tonic::transport::{Channel, Endpoint};
use vault_proto::v1::{self, vault_client::VaultClient as Stub};
pub use vault_proto::v1::{Credential, OdooConnection, Purpose};

/// A decrypted secret: wiped when dropped, `Debug` prints a placeholder.
/// Read it with [`secrecy::ExposeSecret::expose_secret`].
pub type Secret = SecretSlice<u8>;

/// How long a call may take unless [`VaultClient::with_deadline`] says
/// otherwise.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

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
    deadline: Duration,
}

impl VaultClient {
    /// Connects to the vault at `addr` (`http://host:port`, or just
    /// `host:port`).
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri).map_err(|source| ClientError::Address {
            addr: addr.to_owned(),
            source,
        })?;
        let channel = endpoint
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|source| ClientError::Connect {
                addr: addr.to_owned(),
                source,
            })?;
        Ok(Self {
            stub: Stub::new(channel),
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
            .stub
            .clone()
            .get_credential(self.request(request))
            .await?;
        reply
            .into_inner()
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
            .stub
            .clone()
            .list_credentials(self.request(request))
            .await?;
        let reply = reply.into_inner();
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
        let reply = self
            .stub
            .clone()
            .decrypt_credential(self.request(request))
            .await?;
        let mut reply = reply.into_inner();
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
        let reply = self.stub.clone().erase_user(self.request(request)).await?;
        Ok(reply.into_inner().deleted)
    }
}

fn odoo_fields(odoo: OdooConnection) -> v1::CredentialFields {
    v1::CredentialFields {
        kind: Some(v1::credential_fields::Kind::Odoo(odoo)),
    }
}
