//! The embedded default store, on sled.

use std::path::Path;

use super::group_commit::GroupCommit;
use super::{CredentialStore, Replaced, StoreError, record};
use crate::credential::{CredentialId, Record, UserId};

/// Name of the sled tree holding credential records.
const CREDENTIALS: &str = "credentials";

/// Records in a sled database on local disk.
///
/// Reads go straight to sled. Writes are applied, then wait for a shared
/// flush ([`GroupCommit`]) before they return, so concurrent writers share
/// fsyncs and every acknowledged write is on disk.
#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
    credentials: sled::Tree,
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
        let group_commit =
            GroupCommit::start(db.clone()).map_err(|err| StoreError::from(sled::Error::Io(err)))?;
        Ok(Self {
            db,
            credentials,
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
        if swapped.is_err() {
            return Ok(false);
        }
        self.durable().await?;
        Ok(true)
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
            // Keys after `after` within the owner's prefix: start just past
            // its key (appending a byte gives the next possible key).
            Some(after) => {
                let mut start = record::key(owner, after);
                start.push(0);
                self.credentials.range(start..)
            }
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
        let key = record::key(&current.owner, &current.id);
        let swapped = self.credentials.compare_and_swap(
            key,
            Some(record::encode(current)),
            Some(record::encode(new)),
        )?;
        if swapped.is_err() {
            return Ok(Replaced::Conflict);
        }
        self.durable().await?;
        Ok(Replaced::Done)
    }

    async fn remove(&self, owner: &UserId, id: &CredentialId) -> Result<bool, StoreError> {
        if self.credentials.remove(record::key(owner, id))?.is_none() {
            return Ok(false);
        }
        self.durable().await?;
        Ok(true)
    }

    async fn erase(&self, owner: &UserId) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for key in self
            .credentials
            .scan_prefix(record::owner_prefix(owner))
            .keys()
        {
            batch.remove(key?);
            count += 1;
        }
        if count == 0 {
            return Ok(0);
        }
        self.credentials.apply_batch(batch)?;
        self.durable().await?;
        Ok(count)
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
}
