//! The one place where failures become gRPC statuses.
//!
//! Callers get a code and a message that says what to fix, and nothing more:
//! a credential that belongs to someone else is "not found", exactly like one
//! that does not exist, and internal failures carry a generic message while
//! their details go to the server log.

use tonic::{Code, Status};

use crate::access::policy::Denied;
use crate::credential::{CredentialId, InvalidField};
use crate::store::StoreError;

/// Message of every NOT_FOUND: the same whether the id is unknown or
/// belongs to another user.
pub const NOT_FOUND: &str = "credential not found";

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The caller's identity could not be established.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The policy does not allow this caller this call.
    #[error(transparent)]
    Denied(#[from] Denied),
    /// A request field was refused.
    #[error("invalid argument: {0}")]
    InvalidArgument(#[from] InvalidField),
    /// No credential with that id for that user.
    #[error("credential not found")]
    NotFound,
    /// The stored token of a credential failed its integrity check.
    #[error("credential {0}: stored secret failed its integrity check")]
    Integrity(CredentialId),
    /// The key version that sealed a credential is not in the keyring.
    #[error("credential {id}: key version {version} is not in the keyring")]
    MissingKey {
        /// The credential.
        id: CredentialId,
        /// The version it names.
        version: u32,
    },
    /// Every fresh credential id drawn was already taken.
    #[error("could not draw an unused credential id")]
    IdCollisions,
    /// An admin call cannot run now.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Concurrent updates kept winning over this one.
    #[error("credential kept changing during the update")]
    Contended,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ServiceError {
    /// The status a caller sees.
    pub fn to_status(&self) -> Status {
        match self {
            ServiceError::Unauthenticated(reason) => Status::unauthenticated(reason.clone()),
            ServiceError::Denied(denied) => Status::permission_denied(denied.to_string()),
            ServiceError::InvalidArgument(field) => Status::invalid_argument(field.to_string()),
            ServiceError::NotFound => Status::not_found(NOT_FOUND),
            ServiceError::Integrity(id) => Status::data_loss(format!(
                "credential {id}: the stored secret failed its integrity check and cannot be \
                 decrypted; store it again"
            )),
            ServiceError::Contended => Status::aborted(
                "the credential changed concurrently while updating it; retry the update",
            ),
            ServiceError::Store(StoreError::Engine(_)) => {
                Status::unavailable("storage is unavailable; retry later")
            }
            ServiceError::Store(StoreError::NotDurable(_)) => Status::unavailable(
                "storage could not confirm the change is on disk; it may or may not have \
                 happened: check before retrying",
            ),
            ServiceError::Store(StoreError::Corrupt(_)) => {
                Status::data_loss("a stored credential is corrupt; an operator must restore it")
            }
            ServiceError::FailedPrecondition(reason) => Status::failed_precondition(reason.clone()),
            ServiceError::MissingKey { .. } | ServiceError::IdCollisions => {
                Status::internal("internal error; see the server log")
            }
        }
    }

    /// Whether a failure answered with `code` needs an operator's look.
    pub fn needs_operator(code: Code) -> bool {
        matches!(code, Code::Internal | Code::DataLoss | Code::Unavailable)
    }
}
