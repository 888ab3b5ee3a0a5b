//! Where records live.
//!
//! [`CredentialStore`] is the whole interface the service needs from storage.
//! It is deliberately narrow (insert, read, list a page, compare-and-swap,
//! remove, erase an owner) so that a replicated engine can stand in for the
//! embedded default, [`SledStore`], without the service changing.
//!
//! Every method that changes data returns only once the change is durable.

mod group_commit;
pub mod record;
mod sled_store;

use std::future::Future;

pub use self::record::DecodeError;
pub use self::sled_store::SledStore;
use crate::credential::{CredentialId, Record, UserId};

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The storage engine failed: I/O error, full or read-only disk.
    #[error("storage engine failed")]
    Engine(#[source] std::sync::Arc<sled::Error>),
    /// A stored value cannot be decoded.
    #[error("stored record is corrupt")]
    Corrupt(#[source] DecodeError),
}

impl From<sled::Error> for StoreError {
    fn from(err: sled::Error) -> Self {
        StoreError::Engine(std::sync::Arc::new(err))
    }
}

/// Outcome of [`CredentialStore::replace`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaced {
    /// The new record is stored.
    Done,
    /// The record changed since it was read; nothing was written.
    Conflict,
}

/// The storage the vault service runs on.
pub trait CredentialStore: Send + Sync + 'static {
    /// Stores a new record. Returns `false`, writing nothing, if a record
    /// with that owner and id exists.
    fn insert(&self, record: &Record) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Reads one record.
    fn get(&self, owner: &UserId, id: &CredentialId) -> Result<Option<Record>, StoreError>;

    /// Reads up to `limit` of one owner's records in id order, starting
    /// after `after` when given.
    fn list(
        &self,
        owner: &UserId,
        after: Option<&CredentialId>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError>;

    /// Replaces `current` by `new` (same owner and id) if the stored record
    /// is still exactly `current`.
    fn replace(
        &self,
        current: &Record,
        new: &Record,
    ) -> impl Future<Output = Result<Replaced, StoreError>> + Send;

    /// Deletes one record. Returns whether it existed.
    fn remove(
        &self,
        owner: &UserId,
        id: &CredentialId,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes every record of one owner, atomically. Returns how many.
    fn erase(&self, owner: &UserId) -> impl Future<Output = Result<usize, StoreError>> + Send;
}
