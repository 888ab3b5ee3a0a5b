//! The embedded default store, on sled.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use super::group_commit::GroupCommit;
use super::{CredentialStore, DecodeError, Replaced, StoreError, record};
use crate::credential::{CredentialId, InvalidField, Record, UserId};
use crate::crypto::fernet::Token;

/// Name of the sled tree holding credential records.
const CREDENTIALS: &str = "credentials";
/// Name of the sled tree holding one canary token per key version.
const CANARIES: &str = "canaries";

/// Records in a sled database on local disk.
///
/// Reads go straight to sled. Every write, including one that turns out to
/// change nothing (deleting what is already gone), waits for a shared flush
/// ([`GroupCommit`]) before it returns: concurrent writers share fsyncs, and
/// no answer can rest on a state that a crash would undo.
///
/// The number of records per key version is counted once when the store
/// opens, from the fixed header of each value, and kept up to date in memory
/// by every write.
#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
    credentials: sled::Tree,
    canaries: sled::Tree,
    usage: Arc<Mutex<BTreeMap<u32, u64>>>,
    group_commit: GroupCommit,
}

impl SledStore {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(64 * 1024 * 1024)
            .open()?;
        let credentials = db.open_tree(CREDENTIALS)?;
        let canaries = db.open_tree(CANARIES)?;

        let mut usage = BTreeMap::new();
        for value in credentials.iter().values() {
            let version = record::key_version(&value?).map_err(StoreError::Corrupt)?;
            *usage.entry(version).or_default() += 1;
        }

        let group_commit =
            GroupCommit::start(db.clone()).map_err(|err| StoreError::from(sled::Error::Io(err)))?;
        Ok(Self {
            db,
            credentials,
            canaries,
            usage: Arc::new(Mutex::new(usage)),
            group_commit,
        })
    }

    /// Waits until every write made so far is on disk.
    async fn durable(&self) -> Result<(), StoreError> {
        self.group_commit
            .durable()
            .await
            .map_err(StoreError::Engine)
    }

    /// Flushes everything to disk now. For shutdown.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
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

    /// Swaps `current` for `new` if `current` is what is stored, keeping the
    /// usage counts. Not yet durable.
    fn swap(&self, current: &Record, new: &Record) -> Result<bool, StoreError> {
        let key = record::key(&current.owner, &current.id);
        let swapped = self.credentials.compare_and_swap(
            key,
            Some(record::encode(current)),
            Some(record::encode(new)),
        )?;
        if swapped.is_ok() {
            self.count_move(
                Some(current.secret.key_version),
                Some(new.secret.key_version),
            );
        }
        Ok(swapped.is_ok())
    }
}

fn decode(key: &[u8], value: &[u8]) -> Result<Record, StoreError> {
    record::decode(key, value).map_err(StoreError::Corrupt)
}

impl CredentialStore for SledStore {
    async fn insert(&self, new: &Record) -> Result<bool, StoreError> {
        let key = record::key(&new.owner, &new.id);
        let swapped =
            self.credentials
                .compare_and_swap(key, None::<&[u8]>, Some(record::encode(new)))?;
        if swapped.is_ok() {
            self.count_move(None, Some(new.secret.key_version));
        }
        self.durable().await?;
        Ok(swapped.is_ok())
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

    async fn replace(&self, current: &Record, new: &Record) -> Result<Replaced, StoreError> {
        debug_assert_eq!((&current.owner, current.id), (&new.owner, new.id));
        let swapped = self.swap(current, new)?;
        self.durable().await?;
        Ok(if swapped {
            Replaced::Done
        } else {
            Replaced::Conflict
        })
    }

    async fn remove(&self, owner: &UserId, id: &CredentialId) -> Result<bool, StoreError> {
        let removed = self.credentials.remove(record::key(owner, id))?;
        if let Some(removed) = &removed {
            self.count_move(record::key_version(removed).ok(), None);
        }
        // Durable even when there was nothing to remove: the record may have
        // been removed by a call whose flush is still running, and "gone"
        // must not be answered before it is gone for good.
        self.durable().await?;
        Ok(removed.is_some())
    }

    async fn erase(&self, owner: &UserId) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut versions = Vec::new();
        for entry in self.credentials.scan_prefix(record::owner_prefix(owner)) {
            let (key, value) = entry?;
            batch.remove(key);
            versions.push(record::key_version(&value).ok());
        }
        if !versions.is_empty() {
            self.credentials.apply_batch(batch)?;
            for version in &versions {
                self.count_move(*version, None);
            }
        }
        // As in `remove`: an erase that finds nothing may be looking at the
        // result of another erase that is not yet on disk.
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

    async fn replace_batch(&self, pairs: &[(Record, Record)]) -> Result<usize, StoreError> {
        let mut replaced = 0;
        for (current, new) in pairs {
            if self.swap(current, new)? {
                replaced += 1;
            }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::{Fields, OdooConnection, SealedSecret, UnixMillis};
    use crate::crypto::fernet::Token;

    fn record(owner: &str) -> Record {
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
        let store = SledStore::open(dir.path()).unwrap();
        let (mine, theirs) = (record("ab"), record("abc"));
        assert!(store.insert(&mine).await.unwrap());
        assert!(store.insert(&theirs).await.unwrap());

        assert_eq!(
            store.get(&mine.owner, &mine.id).unwrap(),
            Some(mine.clone())
        );
        assert_eq!(store.get(&mine.owner, &theirs.id).unwrap(), None);
        assert_eq!(
            store.list(&mine.owner, None, 10).unwrap(),
            vec![mine.clone()]
        );
        assert!(!store.remove(&mine.owner, &theirs.id).await.unwrap());
        assert_eq!(store.erase(&mine.owner).await.unwrap(), 1);
        assert_eq!(store.get(&theirs.owner, &theirs.id).unwrap(), Some(theirs));
    }

    #[tokio::test]
    async fn inserting_an_existing_id_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let first = record("u");
        let mut second = first.clone();
        second.updated_at = UnixMillis(2);
        assert!(store.insert(&first).await.unwrap());
        assert!(!store.insert(&second).await.unwrap());
        assert_eq!(store.get(&first.owner, &first.id).unwrap(), Some(first));
    }

    #[tokio::test]
    async fn pages_cover_every_record_once_in_id_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut ids = Vec::new();
        for _ in 0..25 {
            let r = record("pager");
            ids.push(r.id);
            store.insert(&r).await.unwrap();
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
        let store = SledStore::open(dir.path()).unwrap();
        let original = record("u");
        store.insert(&original).await.unwrap();
        let mut first = original.clone();
        first.updated_at = UnixMillis(5);
        let mut second = original.clone();
        second.updated_at = UnixMillis(6);

        assert_eq!(
            store.replace(&original, &first).await.unwrap(),
            Replaced::Done
        );
        assert_eq!(
            store.replace(&original, &second).await.unwrap(),
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
            let store = SledStore::open(dir.path()).unwrap();
            store.insert(&kept).await.unwrap();
            store.insert(&gone).await.unwrap();
            assert!(store.remove(&gone.owner, &gone.id).await.unwrap());
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.get(&kept.owner, &kept.id).unwrap(), Some(kept));
        assert_eq!(store.get(&gone.owner, &gone.id).unwrap(), None);
    }

    fn under(version: u32, owner: &str) -> Record {
        let mut r = record(owner);
        r.secret.key_version = version;
        r
    }

    #[tokio::test]
    async fn key_usage_follows_every_write_and_is_recounted_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let expected = {
            let store = SledStore::open(dir.path()).unwrap();
            let (a, b, c) = (under(1, "u"), under(1, "u"), under(2, "v"));
            for r in [&a, &b, &c] {
                store.insert(r).await.unwrap();
            }
            assert_eq!(store.key_usage(), BTreeMap::from([(1, 2), (2, 1)]));

            let moved = under(2, "u");
            let moved = Record { id: a.id, ..moved };
            store.replace(&a, &moved).await.unwrap();
            assert_eq!(store.key_usage(), BTreeMap::from([(1, 1), (2, 2)]));
            store.remove(&c.owner, &c.id).await.unwrap();
            store.erase(&b.owner).await.unwrap();
            store.insert(&under(3, "w")).await.unwrap();
            store.key_usage()
        };
        assert_eq!(expected, BTreeMap::from([(3, 1)]));
        assert_eq!(SledStore::open(dir.path()).unwrap().key_usage(), expected);
    }

    #[tokio::test]
    async fn rotation_scans_find_every_record_under_other_keys_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut old = Vec::new();
        for n in 0..10 {
            let r = under(if n % 2 == 0 { 1 } else { 2 }, &format!("u{n}"));
            store.insert(&r).await.unwrap();
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
    async fn canaries_are_kept_per_key_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
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
