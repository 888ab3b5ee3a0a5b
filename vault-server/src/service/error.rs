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
    /// The data folder's file system is below its free-space reserve.
    #[error("disk below its reserve: {free} bytes free, reserve {reserve}")]
    DiskFull {
        /// Bytes free.
        free: u64,
        /// Bytes the reserve keeps.
        reserve: u64,
    },
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
            ServiceError::DiskFull { free, reserve } => Status::unavailable(format!(
                "the vault's disk is nearly full ({} MiB free, below the reserve of {} MiB): new \
                 and changed credentials are refused until an operator frees space; reads and \
                 deletes still work",
                free / (1024 * 1024),
                reserve / (1024 * 1024)
            )),
            ServiceError::Store(StoreError::Engine(err)) => {
                Status::unavailable(engine_message(err))
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

/// What a caller is told when the storage engine fails: the kind of failure
/// an operator has to fix, never a path or the engine's own words.
fn engine_message(err: &sled::Error) -> &'static str {
    let kind = match err {
        sled::Error::Io(io) => Some(io.kind()),
        _ => None,
    };
    match kind {
        Some(std::io::ErrorKind::StorageFull) => {
            "the vault's disk is full: the store cannot write until an operator frees space and \
             restarts the vault; nothing stored was lost"
        }
        Some(std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied) => {
            "the vault's data folder cannot be written (read-only or permission denied): an \
             operator must fix it and restart the vault; nothing stored was lost"
        }
        _ => "storage is unavailable; retry later",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(kind: std::io::ErrorKind) -> Status {
        let err = sled::Error::Io(std::io::Error::from(kind));
        ServiceError::Store(StoreError::from(err)).to_status()
    }

    #[test]
    fn a_full_or_read_only_disk_says_so_as_unavailable() {
        let full = engine(std::io::ErrorKind::StorageFull);
        assert_eq!(full.code(), Code::Unavailable);
        assert!(full.message().contains("disk is full"), "{full:?}");
        let read_only = engine(std::io::ErrorKind::ReadOnlyFilesystem);
        assert_eq!(read_only.code(), Code::Unavailable);
        assert!(
            read_only.message().contains("cannot be written"),
            "{read_only:?}"
        );
        let other = engine(std::io::ErrorKind::Other);
        assert_eq!(other.message(), "storage is unavailable; retry later");
    }
}
