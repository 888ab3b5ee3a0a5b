//! `vault-server restore`: a backup file into a new data folder.
//!
//! The file is read twice. The first pass checks everything and writes
//! nothing: the digest, every record decodes, every key version the records
//! use has its canary, and the audit chain verifies from its anchor to the
//! head the header names. The second pass fills a fresh sled database where
//! the server looks for it (`DATA_DIR/db`), hashing again; should the file
//! have changed in between, the new database is removed. No keyring is
//! needed: the records stay sealed, and the server's start-up check proves
//! that the keyring it is given is the one they were sealed with.

use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::{BackupError, BackupReader, Header};
use crate::audit::{self, ChainHead, hex};
use crate::store::{SledStore, StoreError, Tree, decode_audit_meta, record};

/// The folder of the data folder that holds the database; the server's
/// [`Settings::database_dir`](crate::config::Settings::database_dir).
const DATABASE_DIR: &str = "db";
/// How many names of a non-empty folder an error lists.
const NAMES_SHOWN: usize = 5;

/// Why a restore was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The data folder holds something already.
    #[error(
        "data folder {} is not empty (it holds {}); restore into a new or empty folder",
        dir.display(), holds.join(", ")
    )]
    NotEmpty {
        /// The folder.
        dir: PathBuf,
        /// Some of the names in it.
        holds: Vec<String>,
    },
    /// The data folder could not be read or made.
    #[error("cannot use data folder {}", dir.display())]
    DataDir {
        /// The folder.
        dir: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The backup file cannot be opened.
    #[error("cannot open {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The file is not an intact backup.
    #[error("refusing {}", path.display())]
    Refused {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: BackupError,
    },
    /// The file is intact but its contents would not make a working store.
    #[error("refusing {}: {reason}", path.display())]
    Inconsistent {
        /// The file.
        path: PathBuf,
        /// What does not hold.
        reason: String,
    },
    /// Writing the new database failed; it was removed.
    #[error("cannot write the database in {}", dir.display())]
    Write {
        /// The database folder.
        dir: PathBuf,
        /// Why.
        #[source]
        source: BackupError,
    },
}

/// What a restore wrote.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The new database folder.
    pub database: PathBuf,
    /// The backup's header.
    pub header: Header,
    /// The last pruned audit event before the backup's chain; 0 for none.
    pub pruned_through: u64,
    /// The backup file's length.
    pub bytes: u64,
}

impl fmt::Display for Restored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let taken = UNIX_EPOCH + Duration::from_millis(self.header.created_at_ms);
        writeln!(
            f,
            "restored the backup taken at {} into {} ({} bytes)",
            humantime::format_rfc3339_seconds(taken),
            self.database.display(),
            self.bytes
        )?;
        writeln!(f, "credentials   {}", self.header.count(Tree::Credentials))?;
        writeln!(f, "canaries      {}", self.header.count(Tree::Canaries))?;
        let head = &self.header.audit_head;
        write!(
            f,
            "audit events  {} (the chain verifies through #{} {})",
            self.header.count(Tree::Audit),
            head.seq,
            hex(&head.digest)
        )?;
        if self.pruned_through > 0 {
            write!(f, "; events 1 to {} were pruned", self.pruned_through)?;
        }
        Ok(())
    }
}

/// Restores the backup at `backup` into `data_dir`, which must be empty or
/// not exist yet.
pub fn restore(backup: &Path, data_dir: &Path) -> Result<Restored, RestoreError> {
    refuse_non_empty(data_dir)?;
    let (header, pruned_through, bytes) = check(backup)?;

    crate::files::create_private_dir(data_dir).map_err(|err| RestoreError::DataDir {
        dir: data_dir.to_path_buf(),
        source: io::Error::other(format!("{err:#}")),
    })?;
    let database = data_dir.join(DATABASE_DIR);
    fill(backup, &database).inspect_err(|_| {
        let _ = fs::remove_dir_all(&database);
    })?;
    Ok(Restored {
        database,
        header,
        pruned_through,
        bytes,
    })
}

fn refuse_non_empty(dir: &Path) -> Result<(), RestoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(RestoreError::DataDir {
                dir: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut names: Vec<String> = entries
        .map(|entry| entry.map(|entry| entry.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(|source| RestoreError::DataDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    let more = names.len().saturating_sub(NAMES_SHOWN);
    names.truncate(NAMES_SHOWN);
    if more > 0 {
        names.push(format!("and {more} more"));
    }
    Err(RestoreError::NotEmpty {
        dir: dir.to_path_buf(),
        holds: names,
    })
}

fn open(path: &Path) -> Result<BackupReader<BufReader<File>>, RestoreError> {
    let file = File::open(path).map_err(|source| RestoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    BackupReader::open(BufReader::new(file)).map_err(|source| RestoreError::Refused {
        path: path.to_path_buf(),
        source,
    })
}

/// The first pass: checks the whole file, writes nothing. Returns the
/// header, where the chain was pruned through, and the file's length.
fn check(path: &Path) -> Result<(Header, u64, u64), RestoreError> {
    let refused = |source| RestoreError::Refused {
        path: path.to_path_buf(),
        source,
    };
    let inconsistent = |reason: String| RestoreError::Inconsistent {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = open(path)?;
    let header = *reader.header();

    let mut sealed_by = BTreeSet::new();
    let mut canaries = BTreeSet::new();
    let mut anchor = ChainHead::default();
    let before_audit: u64 = Tree::ALL
        .iter()
        .filter(|tree| **tree != Tree::Audit)
        .map(|tree| header.count(*tree))
        .sum();
    for _ in 0..before_audit {
        let entry = reader
            .next_entry()
            .map_err(refused)?
            .ok_or(BackupError::Truncated)
            .map_err(refused)?;
        let bad = |what: &str, err: &dyn fmt::Display| {
            BackupError::Malformed(format!("{what} entry: {err}"))
        };
        match entry.tree {
            Tree::Credentials => {
                let stored = record::decode(&entry.key, &entry.value)
                    .map_err(|err| refused(bad("credential", &err)))?;
                sealed_by.insert(stored.secret.key_version);
            }
            Tree::Canaries => {
                let version = <[u8; 4]>::try_from(entry.key.as_slice())
                    .map_err(|_| refused(bad("canary", &"its key is not a key version")))?;
                canaries.insert(u32::from_be_bytes(version));
            }
            Tree::AuditMeta => {
                anchor = decode_audit_meta(&entry.key, &entry.value)
                    .map_err(|err| refused(bad("audit_meta", &err)))?;
            }
            Tree::Audit => {
                return Err(refused(BackupError::Malformed(
                    "an audit entry before its section".to_owned(),
                )));
            }
        }
    }

    let events = std::iter::from_fn(|| reader.next_entry().transpose())
        .map(|entry| entry.map(|entry| (entry.key, entry.value)));
    let verified = audit::verify(anchor, events).map_err(refused)?;
    // A damaged file explains a broken chain: drain it so the digest speaks
    // first.
    while reader.next_entry().map_err(refused)?.is_some() {}
    let bytes = reader.finish().map_err(refused)?;

    if let Some((seq, reason)) = verified.broken {
        return Err(inconsistent(format!(
            "its audit chain is broken at event {seq}: {reason}"
        )));
    }
    if verified.head != header.audit_head {
        return Err(inconsistent(format!(
            "its audit chain ends at event {}, not at event {} as its header says",
            verified.head.seq, header.audit_head.seq
        )));
    }
    if let Some(version) = sealed_by.difference(&canaries).next() {
        return Err(inconsistent(format!(
            "key version {version} seals records but has no canary, so no keyring could be \
             checked against it"
        )));
    }
    Ok((header, anchor.seq, bytes))
}

/// The second pass: writes every entry into a new database at `database`.
fn fill(path: &Path, database: &Path) -> Result<(), RestoreError> {
    let failed = |source: BackupError| RestoreError::Write {
        dir: database.to_path_buf(),
        source,
    };
    let stored = |err: StoreError| failed(BackupError::Store(err));
    let mut reader = open(path)?;
    let target = SledStore::restore_into(database).map_err(stored)?;
    while let Some(entry) = reader.next_entry().map_err(failed)? {
        target
            .insert(entry.tree, &entry.key, &entry.value)
            .map_err(stored)?;
    }
    reader.finish().map_err(failed)?;
    target.finish().map_err(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_goes_where_the_server_opens_it() {
        let args = <crate::config::Args as clap::Parser>::parse_from([
            "vault-server",
            "--dev",
            "--data-dir",
            "d",
        ]);
        let settings = crate::config::Settings::from_args(&args).unwrap();
        assert_eq!(settings.database_dir(), Path::new("d").join(DATABASE_DIR));
    }
}
