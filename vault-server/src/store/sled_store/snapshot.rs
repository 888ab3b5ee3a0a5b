//! Whole-store copies for backups, and filling a fresh database from one.
//!
//! sled has no snapshots, so [`SledStore::take_snapshot`] makes one: it pauses
//! the writers that change records, copies every record, canary and the
//! audit anchor, notes the audit chain's head, and lets the writers go. The
//! audit events are not copied (the trail can be far larger than the
//! records); they are immutable once written, and the snapshot keeps pruning
//! from removing them until it is dropped, so they are read in place later.

use std::path::Path;

use sled::IVec;
use tokio::sync::OwnedMutexGuard;

use super::{
    ANCHOR, AUDIT, AUDIT_META, CANARIES, CREDENTIALS, SledStore, corrupt_audit, decode_anchor,
};
use crate::audit::{self, ChainHead};
use crate::credential::UnixMillis;
use crate::store::{CredentialStore as _, StoreError};

/// The parts of the store, by the name of their sled tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tree {
    /// Credential records, keyed by owner and id.
    Credentials,
    /// One canary token per key version.
    Canaries,
    /// Audit events, keyed by number.
    Audit,
    /// The audit chain's anchor after pruning.
    AuditMeta,
}

impl Tree {
    /// Every tree, in the order a backup holds them.
    pub const ALL: [Tree; 4] = [
        Tree::Credentials,
        Tree::Canaries,
        Tree::AuditMeta,
        Tree::Audit,
    ];

    /// The tree's name in sled and in backup files.
    pub fn as_str(self) -> &'static str {
        match self {
            Tree::Credentials => CREDENTIALS,
            Tree::Canaries => CANARIES,
            Tree::Audit => AUDIT,
            Tree::AuditMeta => AUDIT_META,
        }
    }

    /// The tree called `name`, if there is one.
    pub fn from_name(name: &[u8]) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|tree| tree.as_str().as_bytes() == name)
    }
}

/// The store as it was at one moment: a backup's contents.
///
/// What "at one moment" means: while the records were copied no record
/// could change, so [`Snapshot::credentials`] is exactly the set of records
/// committed by then, each whole, including every change acknowledged
/// before the snapshot began and none made after it. The audit events are
/// the chain from the anchor through [`Snapshot::head`], the head at that
/// moment, so every change the records reflect has its event in the chain
/// and no event of a later change is in it. Canaries are copied after the
/// records: a key version's canary is stored before anything is sealed
/// under it, so each version the records use has its canary here.
pub struct Snapshot {
    /// When the records were copied.
    pub taken_at: UnixMillis,
    /// Every credential record, raw, in key order.
    pub credentials: Vec<(IVec, IVec)>,
    /// Every canary, raw, in key order.
    pub canaries: Vec<(IVec, IVec)>,
    /// The audit anchor entry, raw, if old events were pruned.
    pub audit_meta: Vec<(IVec, IVec)>,
    /// The chain's start: the last pruned event, or nothing.
    pub anchor: ChainHead,
    /// The chain's last event when the records were copied.
    pub head: ChainHead,
    audit: sled::Tree,
    /// Keeps pruning away while the events are read.
    _pruning: OwnedMutexGuard<()>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("taken_at", &self.taken_at)
            .field("credentials", &self.credentials.len())
            .field("canaries", &self.canaries.len())
            .field("anchor", &self.anchor.seq)
            .field("head", &self.head.seq)
            .finish()
    }
}

impl Snapshot {
    /// How many audit events the snapshot holds if its chain is whole.
    pub fn audit_len(&self) -> u64 {
        self.head.seq.saturating_sub(self.anchor.seq)
    }

    /// The audit events after the anchor through the head, raw, in order.
    /// Can be read as often as needed while the snapshot lives.
    pub fn audit_events(&self) -> impl Iterator<Item = Result<(IVec, IVec), StoreError>> + '_ {
        let range = (self.head.seq > self.anchor.seq).then(|| {
            self.audit
                .range(audit::key(self.anchor.seq + 1)..=audit::key(self.head.seq))
        });
        range
            .into_iter()
            .flatten()
            .map(|entry| entry.map_err(StoreError::from))
    }
}

impl SledStore {
    /// Takes a [`Snapshot`] while the vault keeps serving.
    ///
    /// Writers that change records wait (asynchronously, holding no thread)
    /// while the records are copied; the copy holds sled's shared buffers
    /// rather than duplicating the bytes, and takes time in proportion to
    /// the number of records, not to the length of the audit trail. Reads
    /// and their audit events never wait. A prune that is running finishes
    /// first, and the next waits until the snapshot is dropped.
    pub(super) async fn take_snapshot(&self) -> Result<Snapshot, StoreError> {
        let pruning = std::sync::Arc::clone(&self.maintenance).lock_owned().await;
        let paused = std::sync::Arc::clone(&self.writes).write_owned().await;
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let taken_at = UnixMillis::now();
            let credentials = copy(&store.credentials)?;
            let canaries = copy(&store.canaries)?;
            let audit_meta = copy(&store.audit_meta)?;
            // Still paused: no event of a change can come after this head.
            let head = store.audit_head();
            drop(paused);

            let anchor = match audit_meta.iter().find(|(key, _)| key.as_ref() == ANCHOR) {
                Some((_, value)) => decode_anchor(value)?,
                None => ChainHead::default(),
            };
            Ok(Snapshot {
                taken_at,
                credentials,
                canaries,
                audit_meta,
                anchor,
                head,
                audit: store.audit.clone(),
                _pruning: pruning,
            })
        })
        .await
        .map_err(|_| StoreError::from(sled::Error::ReportableBug("snapshot task failed".into())))?
    }

    /// Creates a database in `dir`, which must not hold one, to fill from a
    /// backup.
    pub fn restore_into(dir: &Path) -> Result<Restoring, StoreError> {
        if dir.exists() {
            return Err(StoreError::from(sled::Error::Unsupported(format!(
                "{} exists already; a restore fills a new database only",
                dir.display()
            ))));
        }
        let db = sled::Config::new().path(dir).open()?;
        let trees = [
            db.open_tree(CREDENTIALS)?,
            db.open_tree(CANARIES)?,
            db.open_tree(AUDIT)?,
            db.open_tree(AUDIT_META)?,
        ];
        Ok(Restoring { db, trees })
    }
}

/// Reads an `audit_meta` entry, as a backup holds it: the chain's anchor.
pub fn decode_audit_meta(key: &[u8], value: &[u8]) -> Result<ChainHead, StoreError> {
    if key != ANCHOR {
        return Err(corrupt_audit(audit::UnreadableEvent {
            seq: 0,
            reason: "unknown audit_meta entry",
        }));
    }
    decode_anchor(value)
}

/// Every entry of a tree, sharing sled's buffers.
fn copy(tree: &sled::Tree) -> Result<Vec<(IVec, IVec)>, StoreError> {
    tree.iter()
        .collect::<Result<_, _>>()
        .map_err(StoreError::from)
}

/// A new database being filled from a backup; see
/// [`SledStore::restore_into`].
#[derive(Debug)]
pub struct Restoring {
    db: sled::Db,
    trees: [sled::Tree; 4],
}

impl Restoring {
    /// Stores one entry as it was backed up.
    pub fn insert(&self, tree: Tree, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let index = match tree {
            Tree::Credentials => 0,
            Tree::Canaries => 1,
            Tree::Audit => 2,
            Tree::AuditMeta => 3,
        };
        self.trees[index].insert(key, value)?;
        Ok(())
    }

    /// Writes everything to disk and closes the database.
    pub fn finish(self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::record;
    use super::*;
    use crate::audit::AuditEvent;

    fn event() -> AuditEvent {
        AuditEvent {
            caller: "test".into(),
            operation: "test".into(),
            outcome: "Ok".into(),
            ..AuditEvent::now()
        }
    }

    #[tokio::test]
    async fn a_snapshot_is_the_store_at_one_moment_and_later_writes_stay_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let kept = record("u");
        store.insert(&kept, &event()).await.unwrap();

        let snapshot = store.snapshot().await.unwrap();
        let later = record("u");
        store.insert(&later, &event()).await.unwrap();
        store.remove(&kept.owner, &kept.id, &event()).await.unwrap();

        assert_eq!(snapshot.credentials.len(), 1);
        assert_eq!(snapshot.head.seq, 1);
        assert_eq!(snapshot.audit_len(), 1);
        assert_eq!(snapshot.audit_events().count(), 1, "later events excluded");
        let events = snapshot
            .audit_events()
            .map(|entry| entry.map(|(key, value)| (key.to_vec(), value.to_vec())));
        let verified = audit::verify(snapshot.anchor, events).unwrap();
        assert_eq!((verified.head, verified.broken), (snapshot.head, None));
    }

    #[tokio::test]
    async fn writers_wait_for_the_copy_and_readers_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let paused = std::sync::Arc::clone(&store.writes).write_owned().await;

        let writer = {
            let store = store.clone();
            tokio::spawn(async move { store.insert(&record("w"), &event()).await })
        };
        // A read's audit event is appended while writes are paused.
        store.append_audit(&event()).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!writer.is_finished(), "a write went through a pause");

        drop(paused);
        assert!(writer.await.unwrap().unwrap());
    }

    #[test]
    fn tree_names_are_the_stored_ones() {
        for tree in Tree::ALL {
            assert_eq!(Tree::from_name(tree.as_str().as_bytes()), Some(tree));
        }
        assert_eq!(Tree::from_name(b"__sled__default"), None);
    }
}
