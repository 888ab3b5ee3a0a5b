//! The embedded default store, on sled.

mod snapshot;

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use sled::Transactional as _;
use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError,
    TransactionalTree,
};

pub use self::snapshot::{Restoring, Snapshot, Tree, decode_audit_meta};
use super::group_commit::GroupCommit;
use super::{CredentialStore, DecodeError, Replaced, StoreError, record};
use crate::audit::sink::Sink;
use crate::audit::{self, AuditEvent, ChainHead, ChainedEvent, Verification};
use crate::credential::{CredentialId, InvalidField, Record, UnixMillis, UserId};
use crate::crypto::fernet::Token;

/// Name of the sled tree holding credential records.
const CREDENTIALS: &str = "credentials";
/// Name of the sled tree holding one canary token per key version.
const CANARIES: &str = "canaries";
/// Name of the sled tree holding the audit events, keyed by number.
const AUDIT: &str = "audit";
/// Name of the sled tree holding the audit chain's anchor after pruning.
const AUDIT_META: &str = "audit_meta";
/// Key of the anchor in [`AUDIT_META`]: number and digest of the last
/// pruned event.
const ANCHOR: &[u8] = b"anchor";
/// Key in sled's default tree that the health probe rewrites.
const HEALTH_PROBE: &[u8] = b"health-probe";
/// Name of the sled tree holding how many records each key version seals:
/// the version (`u32`, big-endian) maps to the count (`u64`, big-endian).
const KEY_USAGE: &str = "key_usage";
/// Key in [`KEY_USAGE`] present once the counts cover every record. A
/// database without it (written before the counts were kept, or whose
/// records were written around the store) is counted once when opened.
///
/// The counts are only as good as the writers: every write must go through
/// a store that keeps them. A database that a vault from before the counts
/// wrote to after this one had opened it (a downgrade, then an upgrade
/// again) still carries the mark, with counts that miss those writes, and
/// the keyring check relies on them to refuse retiring a key that still
/// seals records. Remove the `key_usage` tree (sled's `drop_tree`) before
/// such an upgrade, and the next start counts again.
const USAGE_COMPLETE: &[u8] = b"complete";

/// Records in a sled database on local disk.
///
/// Reads go straight to sled. Every change is one sled transaction over the
/// records and the audit trail, so a change and its event are committed
/// together or not at all. Appending to the audit chain is serialised by a
/// lock on its head, held only for the transaction itself. Then the change
/// waits for a shared flush ([`GroupCommit`]) before it returns: concurrent
/// writers share fsyncs, and no answer rests on a state a crash would undo.
/// That includes a delete that finds nothing, which may be looking at
/// another delete whose flush is still running.
///
/// The number of records per key version is kept in its own tree, changed
/// in the same transaction as the records, so it is exact after any crash
/// and opening the store reads a few counts instead of every record. A copy
/// in memory answers [`CredentialStore::key_usage`].
#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
    credentials: sled::Tree,
    canaries: sled::Tree,
    audit: sled::Tree,
    audit_meta: sled::Tree,
    key_usage: sled::Tree,
    head: Arc<Mutex<ChainHead>>,
    sink: Arc<Sink>,
    /// Committed events not yet known to be on disk, in order; they go to
    /// the sink once a flush covers them, so the copy never holds an event
    /// a crash could still take back.
    unflushed: Arc<Mutex<Vec<ChainedEvent>>>,
    usage: Arc<Mutex<BTreeMap<u32, u64>>>,
    group_commit: GroupCommit,
    /// Held shared by every commit that changes records, and exclusively by
    /// a backup while it copies them ([`SledStore::take_snapshot`]).
    writes: Arc<tokio::sync::RwLock<()>>,
    /// Held by a prune for its whole run, and by a backup until it has read
    /// the audit events it includes: a prune never removes them under it.
    maintenance: Arc<tokio::sync::Mutex<()>>,
}

impl SledStore {
    /// Opens (or creates) the database in `dir`, with no copy of the audit
    /// trail elsewhere.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with_sink(dir, Sink::off())
    }

    /// Opens (or creates) the database in `dir`, copying every audit event
    /// to `sink` once committed.
    pub fn open_with_sink(dir: &Path, sink: Sink) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(64 * 1024 * 1024)
            .open()?;
        let credentials = db.open_tree(CREDENTIALS)?;
        let canaries = db.open_tree(CANARIES)?;
        let audit = db.open_tree(AUDIT)?;
        let audit_meta = db.open_tree(AUDIT_META)?;
        let key_usage = db.open_tree(KEY_USAGE)?;

        let usage = match read_usage(&key_usage)? {
            Some(usage) => usage,
            None => count_usage(&credentials, &key_usage)?,
        };
        let head = match audit.last()? {
            Some((key, value)) => {
                ChainHead::after(&audit::decode(&key, &value).map_err(corrupt_audit)?)
            }
            None => anchor(&audit_meta)?,
        };

        let group_commit =
            GroupCommit::start(db.clone()).map_err(|err| StoreError::from(sled::Error::Io(err)))?;
        Ok(Self {
            db,
            credentials,
            canaries,
            audit,
            audit_meta,
            key_usage,
            head: Arc::new(Mutex::new(head)),
            sink: Arc::new(sink),
            unflushed: Arc::default(),
            usage: Arc::new(Mutex::new(usage)),
            group_commit,
            writes: Arc::default(),
            maintenance: Arc::default(),
        })
    }

    /// Waits until every write made so far is on disk, then passes the
    /// audit events that are now durable on to the sink. Used after a
    /// commit, so a failure means the commit's fate is unknown.
    async fn durable(&self) -> Result<(), StoreError> {
        let covered = self.audit_head().seq;
        self.group_commit
            .durable()
            .await
            .map_err(StoreError::NotDurable)?;

        // Written under the lock, so that two flushes finishing at once
        // still hand events to the sink in chain order.
        let mut unflushed = self
            .unflushed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let split = unflushed.partition_point(|event| event.seq <= covered);
        for event in unflushed.drain(..split) {
            self.sink.write(&event);
        }
        Ok(())
    }

    /// Notes a committed event for the sink; called with the head locked, so
    /// events arrive in order.
    fn committed(&self, chained: ChainedEvent) {
        self.unflushed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(chained);
    }

    /// Flushes everything to disk now. For shutdown.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Whether the database still takes writes: writes and flushes a probe
    /// value outside the records. After an I/O error sled refuses every
    /// write until it is reopened, and this reports that.
    pub fn probe_writable(&self) -> Result<(), StoreError> {
        self.db
            .insert(HEALTH_PROBE, &UnixMillis::now().0.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// The number of the last audit event: the length of the chain,
    /// pruned events included.
    pub fn audit_length(&self) -> u64 {
        self.head.lock().unwrap_or_else(PoisonError::into_inner).seq
    }

    /// Commits `change` to the records and their per-version counts and, if
    /// it changed something (returned `Some`), `event` to the audit trail, in
    /// one transaction. `change` must write nothing when it returns `None`.
    /// Waits while a backup copies the records.
    async fn commit<T>(
        &self,
        event: &AuditEvent,
        change: impl Fn(
            &TransactionalTree,
            &UsageCounts<'_>,
        ) -> ConflictableTransactionResult<Option<T>, ()>,
    ) -> Result<Option<T>, StoreError> {
        let _writing = self.writes.read().await;
        let mut head = self.head.lock().unwrap_or_else(PoisonError::into_inner);
        let (chained, value) = head.append(event);
        let key = audit::key(chained.seq);
        let changed = (&self.credentials, &self.audit, &self.key_usage)
            .transaction(|(credentials, audit, key_usage)| {
                let changed = change(credentials, &UsageCounts(key_usage))?;
                if changed.is_some() {
                    audit.insert(&key, value.as_slice())?;
                }
                Ok(changed)
            })
            .map_err(transaction_failed)?;
        if changed.is_some() {
            *head = ChainHead::after(&chained);
            self.committed(chained);
        }
        Ok(changed)
    }

    /// Moves one record from key version `from` (if any) to `to` (if any) in
    /// the usage counts.
    fn count_move(&self, from: Option<u32>, to: Option<u32>) {
        let mut usage = self.usage.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(from) = from
            && let Some(count) = usage.get_mut(&from)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                usage.remove(&from);
            }
        }
        if let Some(to) = to {
            *usage.entry(to).or_default() += 1;
        }
    }
}

/// Inside a transaction: replaces `current` by `new` if it is stored
/// unchanged, and moves it between key versions in the counts. Returns
/// whether it did.
fn swap(
    credentials: &TransactionalTree,
    counts: &UsageCounts<'_>,
    current: &Record,
    new: &Record,
) -> ConflictableTransactionResult<bool, ()> {
    let key = record::key(&current.owner, &current.id);
    let stored = credentials.get(&key)?;
    if stored.as_deref() != Some(record::encode(current).as_slice()) {
        return Ok(false);
    }
    credentials.insert(key, record::encode(new))?;
    counts.moved(
        Some(current.secret.key_version),
        Some(new.secret.key_version),
    )?;
    Ok(true)
}

/// The per-version record counts, inside a transaction.
struct UsageCounts<'a>(&'a TransactionalTree);

impl UsageCounts<'_> {
    /// Moves one record from key version `from` (none for a new record) to
    /// `to` (none for a removed one).
    fn moved(&self, from: Option<u32>, to: Option<u32>) -> ConflictableTransactionResult<(), ()> {
        if from == to {
            return Ok(());
        }
        if let Some(from) = from {
            self.add(from, -1)?;
        }
        if let Some(to) = to {
            self.add(to, 1)?;
        }
        Ok(())
    }

    fn add(&self, version: u32, delta: i64) -> ConflictableTransactionResult<(), ()> {
        let key = version.to_be_bytes();
        let count = match self.0.get(key)? {
            Some(value) => decode_count(&value).ok_or(ConflictableTransactionError::Abort(()))?,
            None => 0,
        };
        match count.saturating_add_signed(delta) {
            0 => self.0.remove(&key)?,
            count => self.0.insert(&key, &count.to_be_bytes())?,
        };
        Ok(())
    }
}

fn decode_count(value: &[u8]) -> Option<u64> {
    value.try_into().ok().map(u64::from_be_bytes)
}

/// The stored counts, or `None` if they do not cover every record.
fn read_usage(key_usage: &sled::Tree) -> Result<Option<BTreeMap<u32, u64>>, StoreError> {
    if key_usage.get(USAGE_COMPLETE)?.is_none() {
        return Ok(None);
    }
    let corrupt = || {
        StoreError::Corrupt(DecodeError::Invalid(InvalidField::new(
            "key_usage",
            "not a version and a count",
        )))
    };
    let mut usage = BTreeMap::new();
    for entry in key_usage.iter() {
        let (key, value) = entry?;
        if key == USAGE_COMPLETE {
            continue;
        }
        let version = <[u8; 4]>::try_from(key.as_ref()).map_err(|_| corrupt())?;
        let count = decode_count(&value).ok_or_else(corrupt)?;
        usage.insert(u32::from_be_bytes(version), count);
    }
    Ok(Some(usage))
}

/// Counts the records of each key version from their headers and stores
/// the counts, replacing whatever was there, in one atomic batch. Runs
/// before the store serves anything, so no write can slip in between.
fn count_usage(
    credentials: &sled::Tree,
    key_usage: &sled::Tree,
) -> Result<BTreeMap<u32, u64>, StoreError> {
    let mut usage: BTreeMap<u32, u64> = BTreeMap::new();
    for value in credentials.iter().values() {
        let version = record::key_version(&value?).map_err(StoreError::Corrupt)?;
        *usage.entry(version).or_default() += 1;
    }
    let mut batch = sled::Batch::default();
    for key in key_usage.iter().keys() {
        batch.remove(key?);
    }
    for (version, count) in &usage {
        batch.insert(&version.to_be_bytes(), &count.to_be_bytes());
    }
    batch.insert(USAGE_COMPLETE, &[1]);
    key_usage.apply_batch(batch)?;
    tracing::info!(
        versions = usage.len(),
        "counted the records of each key version"
    );
    Ok(usage)
}

/// Our transactions never abort on purpose, so a failure is sled's.
fn transaction_failed(err: TransactionError<()>) -> StoreError {
    match err {
        TransactionError::Storage(err) => StoreError::from(err),
        TransactionError::Abort(()) => {
            StoreError::from(sled::Error::ReportableBug("transaction aborted".into()))
        }
    }
}

fn decode(key: &[u8], value: &[u8]) -> Result<Record, StoreError> {
    record::decode(key, value).map_err(StoreError::Corrupt)
}

fn corrupt_audit(err: audit::UnreadableEvent) -> StoreError {
    StoreError::Corrupt(DecodeError::Invalid(InvalidField::new(
        "audit",
        err.to_string(),
    )))
}

/// The head the chain starts from: the last pruned event, or nothing.
fn anchor(audit_meta: &sled::Tree) -> Result<ChainHead, StoreError> {
    match audit_meta.get(ANCHOR)? {
        Some(value) => decode_anchor(&value),
        None => Ok(ChainHead::default()),
    }
}

/// Reads a stored anchor: the last pruned event's number and digest.
fn decode_anchor(value: &[u8]) -> Result<ChainHead, StoreError> {
    let bad = || {
        corrupt_audit(audit::UnreadableEvent {
            seq: 0,
            reason: "bad anchor",
        })
    };
    let seq = value.get(..8).ok_or_else(bad)?;
    let digest = value.get(8..40).ok_or_else(bad)?;
    Ok(ChainHead {
        seq: u64::from_be_bytes(seq.try_into().map_err(|_| bad())?),
        digest: digest.try_into().map_err(|_| bad())?,
    })
}

impl CredentialStore for SledStore {
    async fn insert(&self, new: &Record, audit: &AuditEvent) -> Result<bool, StoreError> {
        let key = record::key(&new.owner, &new.id);
        let value = record::encode(new);
        let inserted = self
            .commit(audit, |credentials, counts| {
                if credentials.get(&key)?.is_some() {
                    return Ok(None);
                }
                credentials.insert(key.as_slice(), value.as_slice())?;
                counts.moved(None, Some(new.secret.key_version))?;
                Ok(Some(()))
            })
            .await?;
        if inserted.is_some() {
            self.count_move(None, Some(new.secret.key_version));
        }
        self.durable().await?;
        Ok(inserted.is_some())
    }

    fn get(&self, owner: &UserId, id: &CredentialId) -> Result<Option<Record>, StoreError> {
        let key = record::key(owner, id);
        match self.credentials.get(&key)? {
            Some(value) => decode(&key, &value).map(Some),
            None => Ok(None),
        }
    }

    fn list(
        &self,
        owner: &UserId,
        after: Option<&CredentialId>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let prefix = record::owner_prefix(owner);
        let entries = match after {
            Some(after) => self
                .credentials
                .range((Excluded(record::key(owner, after)), Unbounded)),
            None => self.credentials.range(prefix.clone()..),
        };

        let mut records = Vec::new();
        for entry in entries.take(limit) {
            let (key, value) = entry?;
            if !key.starts_with(&prefix) {
                break;
            }
            records.push(decode(&key, &value)?);
        }
        Ok(records)
    }

    async fn replace(
        &self,
        current: &Record,
        new: &Record,
        audit: &AuditEvent,
    ) -> Result<Replaced, StoreError> {
        debug_assert_eq!((&current.owner, current.id), (&new.owner, new.id));
        let swapped = self
            .commit(audit, |credentials, counts| {
                Ok(swap(credentials, counts, current, new)?.then_some(()))
            })
            .await?;
        if swapped.is_some() {
            self.count_move(
                Some(current.secret.key_version),
                Some(new.secret.key_version),
            );
        }
        self.durable().await?;
        Ok(if swapped.is_some() {
            Replaced::Done
        } else {
            Replaced::Conflict
        })
    }

    async fn remove(
        &self,
        owner: &UserId,
        id: &CredentialId,
        audit: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let key = record::key(owner, id);
        let removed = self
            .commit(audit, |credentials, counts| {
                let Some(old) = credentials.remove(key.as_slice())? else {
                    return Ok(None);
                };
                counts.moved(record::key_version(&old).ok(), None)?;
                Ok(Some(old.to_vec()))
            })
            .await?;
        if let Some(removed) = &removed {
            self.count_move(record::key_version(removed).ok(), None);
        }
        self.durable().await?;
        Ok(removed.is_some())
    }

    async fn erase(&self, owner: &UserId, audit: &AuditEvent) -> Result<usize, StoreError> {
        let keys: Vec<sled::IVec> = self
            .credentials
            .scan_prefix(record::owner_prefix(owner))
            .keys()
            .collect::<Result<_, _>>()?;
        let mut event = audit.clone();
        event.detail = format!("deleted={}", keys.len());
        let versions = self
            .commit(&event, |credentials, counts| {
                let mut versions = Vec::with_capacity(keys.len());
                for key in &keys {
                    if let Some(old) = credentials.remove(key)? {
                        let version = record::key_version(&old).ok();
                        counts.moved(version, None)?;
                        versions.push(version);
                    }
                }
                Ok(Some(versions))
            })
            .await?
            .unwrap_or_default();
        for version in &versions {
            self.count_move(*version, None);
        }
        self.durable().await?;
        Ok(versions.len())
    }

    fn key_usage(&self) -> BTreeMap<u32, u64> {
        self.usage
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn sealed_by_other_keys(
        &self,
        version: u32,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Record>, Option<Vec<u8>>), StoreError> {
        let entries = match after {
            Some(after) => self
                .credentials
                .range::<&[u8], _>((Excluded(after), Unbounded)),
            None => self.credentials.iter(),
        };
        let mut records = Vec::new();
        for entry in entries {
            let (key, value) = entry?;
            let sealed_by = record::key_version(&value).map_err(StoreError::Corrupt)?;
            if sealed_by != version {
                records.push(decode(&key, &value)?);
                if records.len() == limit {
                    return Ok((records, Some(key.to_vec())));
                }
            }
        }
        Ok((records, None))
    }

    async fn replace_batch(
        &self,
        pairs: &[(Record, Record)],
        audit: &AuditEvent,
    ) -> Result<usize, StoreError> {
        let swapped = self
            .commit(audit, |credentials, counts| {
                let mut swapped = Vec::with_capacity(pairs.len());
                for (current, new) in pairs {
                    swapped.push(swap(credentials, counts, current, new)?);
                }
                Ok(swapped.contains(&true).then_some(swapped))
            })
            .await?
            .unwrap_or_default();
        let mut replaced = 0;
        for ((current, new), _) in pairs.iter().zip(&swapped).filter(|(_, swapped)| **swapped) {
            self.count_move(
                Some(current.secret.key_version),
                Some(new.secret.key_version),
            );
            replaced += 1;
        }
        self.durable().await?;
        Ok(replaced)
    }

    fn canary(&self, version: u32) -> Result<Option<Token>, StoreError> {
        let Some(value) = self.canaries.get(version.to_be_bytes())? else {
            return Ok(None);
        };
        let text = String::from_utf8(value.to_vec()).map_err(|_| {
            StoreError::Corrupt(DecodeError::Invalid(InvalidField::new(
                "canary", "not text",
            )))
        })?;
        Ok(Some(Token::from_string(text)))
    }

    async fn put_canary(&self, version: u32, token: &Token) -> Result<(), StoreError> {
        self.canaries
            .insert(version.to_be_bytes(), token.as_str().as_bytes())?;
        self.durable().await
    }

    async fn append_audit(&self, event: &AuditEvent) -> Result<u64, StoreError> {
        let seq = {
            let mut head = self.head.lock().unwrap_or_else(PoisonError::into_inner);
            let (chained, value) = head.append(event);
            self.audit.insert(audit::key(chained.seq), value)?;
            *head = ChainHead::after(&chained);
            let seq = chained.seq;
            self.committed(chained);
            seq
        };
        self.durable().await?;
        Ok(seq)
    }

    fn audit_events(&self, after: u64, limit: usize) -> Result<Vec<ChainedEvent>, StoreError> {
        self.audit
            .range(audit::key(after.saturating_add(1))..)
            .take(limit)
            .map(|entry| {
                let (key, value) = entry?;
                audit::decode(&key, &value).map_err(corrupt_audit)
            })
            .collect()
    }

    fn verify_audit(&self) -> Result<Verification, StoreError> {
        let anchor = anchor(&self.audit_meta)?;
        let events = self
            .audit
            .iter()
            .map(|entry| entry.map(|(key, value)| (key.to_vec(), value.to_vec())));
        audit::verify(anchor, events).map_err(StoreError::from)
    }

    async fn prune_audit(&self, before_ms: u64) -> Result<u64, StoreError> {
        let _pruning = self.maintenance.lock().await;
        let mut pruned = 0;
        loop {
            let mut batch = Vec::new();
            for entry in self.audit.iter().take(1000) {
                let (key, value) = entry?;
                let event = audit::decode(&key, &value).map_err(corrupt_audit)?;
                if event.event.time_ms >= before_ms {
                    break;
                }
                batch.push(event);
            }
            let Some(last) = batch.last() else {
                break;
            };
            let mut anchor = last.seq.to_be_bytes().to_vec();
            anchor.extend_from_slice(&last.digest);
            (&self.audit, &self.audit_meta)
                .transaction(|(audit, meta)| {
                    for event in &batch {
                        audit.remove(&audit::key(event.seq))?;
                    }
                    meta.insert(ANCHOR, anchor.as_slice())?;
                    Ok::<_, ConflictableTransactionError<()>>(())
                })
                .map_err(transaction_failed)?;
            pruned += batch.len() as u64;
        }
        if pruned > 0 {
            // The prune itself goes into the chain, naming the anchor it left:
            // without this event, a missing start of the trail fails
            // verification (see `audit::verify`).
            let anchor = anchor(&self.audit_meta)?;
            let event = AuditEvent {
                caller: "vault-server".into(),
                operation: "audit.prune".into(),
                outcome: "Ok".into(),
                detail: audit::prune_detail(&anchor),
                ..AuditEvent::now()
            };
            self.append_audit(&event).await?;
        }
        Ok(pruned)
    }

    fn audit_head(&self) -> ChainHead {
        *self.head.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.take_snapshot().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::{Fields, OdooConnection, SealedSecret, UnixMillis};
    use crate::crypto::fernet::Token;

    /// Opens the store in `dir` again after the test dropped its last
    /// handle. sled's own background threads let go of the folder's lock a
    /// moment after the handles are gone, so a busy machine gets a few tries.
    fn reopen(dir: &Path) -> SledStore {
        for _ in 0..50 {
            match SledStore::open(dir) {
                Ok(store) => return store,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
        SledStore::open(dir).unwrap()
    }

    fn event() -> AuditEvent {
        AuditEvent {
            caller: "test".into(),
            operation: "test".into(),
            outcome: "Ok".into(),
            ..AuditEvent::now()
        }
    }

    /// A record of `owner` with a placeholder token; the snapshot tests
    /// use it too.
    pub(super) fn record(owner: &str) -> Record {
        Record {
            id: CredentialId::generate(),
            owner: UserId::parse("user_id", owner).unwrap(),
            fields: Fields::Odoo(OdooConnection::new("https://o.example", "db", "me").unwrap()),
            secret: SealedSecret {
                key_version: 1,
                token: Token::from_string("token".into()),
            },
            created_at: UnixMillis(1),
            updated_at: UnixMillis(1),
        }
    }

    #[tokio::test]
    async fn records_are_scoped_to_their_owner() {
        let dir = tempfile::tempdir().unwrap();
        let store = reopen(dir.path());
        let (mine, theirs) = (record("ab"), record("abc"));
        assert!(store.insert(&mine, &event()).await.unwrap());
        assert!(store.insert(&theirs, &event()).await.unwrap());

        assert_eq!(
            store.get(&mine.owner, &mine.id).unwrap(),
            Some(mine.clone())
        );
        assert_eq!(store.get(&mine.owner, &theirs.id).unwrap(), None);
        assert_eq!(
            store.list(&mine.owner, None, 10).unwrap(),
            vec![mine.clone()]
        );
        assert!(
            !store
                .remove(&mine.owner, &theirs.id, &event())
                .await
                .unwrap()
        );
        assert_eq!(store.erase(&mine.owner, &event()).await.unwrap(), 1);
        assert_eq!(store.get(&theirs.owner, &theirs.id).unwrap(), Some(theirs));
    }

    #[tokio::test]
    async fn inserting_an_existing_id_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = reopen(dir.path());
        let first = record("u");
        let mut second = first.clone();
        second.updated_at = UnixMillis(2);
        assert!(store.insert(&first, &event()).await.unwrap());
        assert!(!store.insert(&second, &event()).await.unwrap());
        assert_eq!(store.get(&first.owner, &first.id).unwrap(), Some(first));
    }

    #[tokio::test]
    async fn pages_cover_every_record_once_in_id_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = reopen(dir.path());
        let mut ids = Vec::new();
        for _ in 0..25 {
            let r = record("pager");
            ids.push(r.id);
            store.insert(&r, &event()).await.unwrap();
        }
        ids.sort();
        let owner = UserId::parse("u", "pager").unwrap();

        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store.list(&owner, after.as_ref(), 10).unwrap();
            if page.is_empty() {
                break;
            }
            after = page.last().map(|r| r.id);
            seen.extend(page.into_iter().map(|r| r.id));
        }
        assert_eq!(seen, ids);
    }

    #[tokio::test]
    async fn replace_refuses_a_stale_current_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = reopen(dir.path());
        let original = record("u");
        store.insert(&original, &event()).await.unwrap();
        let mut first = original.clone();
        first.updated_at = UnixMillis(5);
        let mut second = original.clone();
        second.updated_at = UnixMillis(6);

        assert_eq!(
            store.replace(&original, &first, &event()).await.unwrap(),
            Replaced::Done
        );
        assert_eq!(
            store.replace(&original, &second, &event()).await.unwrap(),
            Replaced::Conflict
        );
        assert_eq!(
            store.get(&original.owner, &original.id).unwrap(),
            Some(first)
        );
    }

    #[tokio::test]
    async fn acknowledged_writes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let kept = record("u");
        let gone = record("u");
        {
            let store = reopen(dir.path());
            store.insert(&kept, &event()).await.unwrap();
            store.insert(&gone, &event()).await.unwrap();
            assert!(store.remove(&gone.owner, &gone.id, &event()).await.unwrap());
        }
        let store = reopen(dir.path());
        assert_eq!(store.get(&kept.owner, &kept.id).unwrap(), Some(kept));
        assert_eq!(store.get(&gone.owner, &gone.id).unwrap(), None);
    }

    fn under(version: u32, owner: &str) -> Record {
        let mut r = record(owner);
        r.secret.key_version = version;
        r
    }

    #[tokio::test]
    async fn key_usage_follows_every_write_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let expected = {
            let store = reopen(dir.path());
            let (a, b, c) = (under(1, "u"), under(1, "u"), under(2, "v"));
            for r in [&a, &b, &c] {
                store.insert(r, &event()).await.unwrap();
            }
            assert_eq!(store.key_usage(), BTreeMap::from([(1, 2), (2, 1)]));

            let moved = under(2, "u");
            let moved = Record { id: a.id, ..moved };
            store.replace(&a, &moved, &event()).await.unwrap();
            assert_eq!(store.key_usage(), BTreeMap::from([(1, 1), (2, 2)]));
            store.remove(&c.owner, &c.id, &event()).await.unwrap();
            store.erase(&b.owner, &event()).await.unwrap();
            store.insert(&under(3, "w"), &event()).await.unwrap();
            store.key_usage()
        };
        assert_eq!(expected, BTreeMap::from([(3, 1)]));
        assert_eq!(reopen(dir.path()).key_usage(), expected);
    }

    /// Opens the bare sled database in `dir` once the store let go of it.
    fn open_raw(dir: &Path) -> sled::Db {
        for _ in 0..50 {
            match sled::open(dir) {
                Ok(db) => return db,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
        sled::open(dir).unwrap()
    }

    #[tokio::test]
    async fn key_usage_is_read_from_its_tree_not_recounted() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = reopen(dir.path());
            store.insert(&under(1, "u"), &event()).await.unwrap();
        }
        {
            // A count no record backs: only a store that reads the tree sees it.
            let db = open_raw(dir.path());
            let counts = db.open_tree(KEY_USAGE).unwrap();
            counts
                .insert(7u32.to_be_bytes(), &5u64.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        assert_eq!(
            reopen(dir.path()).key_usage(),
            BTreeMap::from([(1, 1), (7, 5)])
        );
    }

    #[tokio::test]
    async fn key_usage_is_counted_again_when_its_tree_is_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = reopen(dir.path());
            for r in [under(1, "u"), under(1, "v"), under(2, "w")] {
                store.insert(&r, &event()).await.unwrap();
            }
        }
        {
            // As after records written around the store: a stale count, no
            // completeness mark.
            let db = open_raw(dir.path());
            let counts = db.open_tree(KEY_USAGE).unwrap();
            counts.remove(USAGE_COMPLETE).unwrap();
            counts
                .insert(1u32.to_be_bytes(), &9u64.to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        let expected = BTreeMap::from([(1, 2), (2, 1)]);
        assert_eq!(reopen(dir.path()).key_usage(), expected);
        assert_eq!(reopen(dir.path()).key_usage(), expected, "and kept");
    }

    #[tokio::test]
    async fn rotation_scans_find_every_record_under_other_keys_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = reopen(dir.path());
        let mut old = Vec::new();
        for n in 0..10 {
            let r = under(if n % 2 == 0 { 1 } else { 2 }, &format!("u{n}"));
            store.insert(&r, &event()).await.unwrap();
            if r.secret.key_version == 1 {
                old.push(r.id);
            }
        }
        let mut found = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = store.sealed_by_other_keys(2, after.as_deref(), 2).unwrap();
            found.extend(page.iter().map(|r| r.id));
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        old.sort();
        found.sort();
        assert_eq!(found, old);
    }

    #[tokio::test]
    async fn every_change_has_exactly_one_event_and_refused_changes_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = reopen(dir.path());
        let (a, b) = (record("u"), record("u"));
        assert!(store.insert(&a, &event()).await.unwrap());
        assert!(!store.insert(&a, &event()).await.unwrap(), "an existing id");
        assert!(store.insert(&b, &event()).await.unwrap());
        let mut changed = a.clone();
        changed.updated_at = UnixMillis(9);
        assert_eq!(
            store.replace(&a, &changed, &event()).await.unwrap(),
            Replaced::Done
        );
        assert_eq!(
            store.replace(&a, &changed, &event()).await.unwrap(),
            Replaced::Conflict
        );
        assert!(store.remove(&b.owner, &b.id, &event()).await.unwrap());
        assert!(
            !store.remove(&b.owner, &b.id, &event()).await.unwrap(),
            "already gone"
        );
        store.erase(&a.owner, &event()).await.unwrap();
        store.append_audit(&event()).await.unwrap();

        // insert a, insert b, replace, remove b, erase, and the appended one.
        assert_eq!(store.audit_head().seq, 6);
        let report = store.verify_audit().unwrap();
        assert_eq!((report.checked, report.broken), (6, None));
        let erased = &store.audit_events(4, 1).unwrap()[0];
        assert_eq!(erased.event.detail, "deleted=1");
    }

    #[tokio::test]
    async fn the_chain_continues_across_reopening_and_after_pruning() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = reopen(dir.path());
            for n in 0..5 {
                store
                    .append_audit(&AuditEvent {
                        time_ms: n,
                        ..event()
                    })
                    .await
                    .unwrap();
            }
        }
        let store = reopen(dir.path());
        assert_eq!(store.audit_head().seq, 5);
        store
            .append_audit(&AuditEvent {
                time_ms: 10,
                ..event()
            })
            .await
            .unwrap();

        assert_eq!(store.prune_audit(3).await.unwrap(), 3);
        let kept: Vec<u64> = store
            .audit_events(0, 10)
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect();
        // 4 to 6 kept, and 7 records the prune itself.
        assert_eq!(kept, [4, 5, 6, 7]);
        let pruning = &store.audit_events(6, 1).unwrap()[0];
        assert_eq!(pruning.event.operation, "audit.prune");
        assert!(pruning.event.detail.starts_with("through=3 anchor="));
        let report = store.verify_audit().unwrap();
        assert_eq!(
            (report.checked, report.broken, report.pruned_through),
            (4, None, 3)
        );
        drop(store);

        let store = reopen(dir.path());
        store.append_audit(&event()).await.unwrap();
        assert_eq!(store.verify_audit().unwrap().broken, None);
        assert_eq!(store.audit_head().seq, 8);
    }

    #[tokio::test]
    async fn canaries_are_kept_per_key_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = reopen(dir.path());
        assert_eq!(store.canary(1).unwrap(), None);
        store
            .put_canary(1, &Token::from_string("canary-one".into()))
            .await
            .unwrap();
        assert_eq!(
            store.canary(1).unwrap(),
            Some(Token::from_string("canary-one".into()))
        );
        assert_eq!(store.canary(2).unwrap(), None);
    }
}
