//! Where records live.
//!
//! [`CredentialStore`] is the whole interface the service needs from storage.
//! It is deliberately narrow (insert, read, list a page, compare-and-swap,
//! remove, erase an owner) so that a replicated engine can stand in for the
//! embedded default, [`SledStore`], without the service changing.
//!
//! Every method that changes data returns only once the change is durable,
//! and writes the audit event it is given in the same transaction as the
//! change: the event exists if and only if the change does. Reads of the
//! audit trail, its verification and pruning are here too, since the trail
//! lives beside the records.

mod group_commit;
pub mod record;
mod sled_store;

use std::collections::BTreeMap;
use std::future::Future;

pub use self::record::DecodeError;
pub use self::sled_store::{Restoring, SledStore, Snapshot, Tree, decode_audit_meta};
use crate::audit::{AuditEvent, ChainHead, ChainedEvent, Verification};
use crate::credential::{CredentialId, Record, UserId};
use crate::crypto::fernet::Token;

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
    /// The change and its audit event were committed, but could not be
    /// flushed to disk: whether they survive a crash is unknown.
    #[error("change committed but not flushed")]
    NotDurable(#[source] std::sync::Arc<sled::Error>),
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
    /// Stores a new record and its audit event. Returns `false`, writing
    /// nothing, if a record with that owner and id exists.
    fn insert(
        &self,
        record: &Record,
        audit: &AuditEvent,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

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

    /// Replaces `current` by `new` (same owner and id), with its audit
    /// event, if the stored record is still exactly `current`.
    fn replace(
        &self,
        current: &Record,
        new: &Record,
        audit: &AuditEvent,
    ) -> impl Future<Output = Result<Replaced, StoreError>> + Send;

    /// Deletes one record, with its audit event. Returns whether it existed;
    /// if not, nothing is written.
    fn remove(
        &self,
        owner: &UserId,
        id: &CredentialId,
        audit: &AuditEvent,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Deletes every record of one owner, atomically, with the audit event
    /// (written even when there was nothing to delete). Returns how many.
    fn erase(
        &self,
        owner: &UserId,
        audit: &AuditEvent,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// How many records each key version seals, without the versions that
    /// seal none.
    fn key_usage(&self) -> BTreeMap<u32, u64>;

    /// Up to `limit` records sealed under any key version but `version`, in
    /// key order, starting after the record key `after`. Returns them with
    /// the key to continue from, `None` once the whole store was scanned.
    fn sealed_by_other_keys(
        &self,
        version: u32,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Record>, Option<Vec<u8>>), StoreError>;

    /// Replaces each `(current, new)` pair whose current record is still
    /// stored unchanged, in one transaction with the audit event (none if
    /// nothing was replaced), then waits once until it is durable. Returns
    /// how many were replaced.
    fn replace_batch(
        &self,
        pairs: &[(Record, Record)],
        audit: &AuditEvent,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Appends the audit event of a call that changed nothing, and waits
    /// until it is durable: no call is answered before its event is on disk.
    /// Returns the event's number.
    fn append_audit(
        &self,
        audit: &AuditEvent,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Up to `limit` audit events after number `after`, in order.
    fn audit_events(&self, after: u64, limit: usize) -> Result<Vec<ChainedEvent>, StoreError>;

    /// Checks the whole audit chain from the oldest kept event.
    fn verify_audit(&self) -> Result<Verification, StoreError>;

    /// Removes the audit events older than `before_ms` (from the oldest on)
    /// and keeps the last removed event's digest as the new anchor. Returns
    /// how many were removed.
    fn prune_audit(&self, before_ms: u64) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The newest audit event's number and digest.
    fn audit_head(&self) -> ChainHead;

    /// The canary token stored for a key version.
    fn canary(&self, version: u32) -> Result<Option<Token>, StoreError>;

    /// Stores the canary token of a key version, durably.
    fn put_canary(
        &self,
        version: u32,
        token: &Token,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The whole store as it was at one moment, for a backup, taken while
    /// the vault keeps serving; see [`Snapshot`] for what it holds and
    /// guarantees.
    fn snapshot(&self) -> impl Future<Output = Result<Snapshot, StoreError>> + Send;
}
