//! Backup files: a whole store at one moment, versioned and self-checking.
//!
//! A backup holds the store's entries exactly as sled keeps them: credential
//! records (the non-secret fields and the Fernet token, which is
//! ciphertext), the key canaries (tokens too), the audit events and the
//! audit anchor. It never holds a key: whoever restores a backup needs the
//! keyring from the secret store, and the server's start-up check refuses
//! any other. What "at one moment" guarantees is stated on
//! [`Snapshot`](crate::store::Snapshot).
//!
//! The layout, all integers big-endian:
//!
//! ```text
//! magic "VAULTBAK" (8) | format version u32 (1) | created_at ms u64
//! | entries per section u64 x 4 (credentials, canaries, audit_meta, audit)
//! | audit head seq u64 | audit head digest (32)
//! | entries, section by section, each:
//! |     tree name length u8 | tree name | key length u32 | key
//! |     | value length u32 | value
//! | SHA-256 over every byte before it (32)
//! ```
//!
//! The trailing digest catches a truncated or damaged file, and a reader
//! refuses anything that does not parse exactly (wrong section order, more
//! or fewer entries than the header says, bytes after the digest). The
//! digest is a checksum, not a signature: someone able to rewrite the file
//! can compute a new one. The tokens inside stay bound to their records by
//! their own MACs, and the audit chain's head is printed on restore to be
//! compared with the shipped copy of the trail.

mod restore;

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

pub use self::restore::{RestoreError, Restored, restore};
use crate::audit::{ChainHead, Digest};
use crate::store::{Snapshot, StoreError, Tree};

/// First bytes of every backup file.
pub const MAGIC: &[u8; 8] = b"VAULTBAK";
/// The format this version writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Length of the fixed header.
const HEADER_LEN: usize = 8 + 4 + 8 + 4 * 8 + 8 + 32;
/// Largest key a reader accepts; stored keys are at most 145 bytes.
const MAX_KEY: u32 = 4 * 1024;
/// Largest value a reader accepts; stored values are a few KiB at most.
const MAX_VALUE: u32 = 1024 * 1024;

/// What a backup holds, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// When the snapshot was taken, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Entries per tree, in [`Tree::ALL`] order.
    pub counts: [u64; 4],
    /// The last audit event in the backup.
    pub audit_head: ChainHead,
}

impl Header {
    /// The header of a backup of `snapshot`.
    pub fn of(snapshot: &Snapshot) -> Self {
        let mut counts = [0; 4];
        for (index, tree) in Tree::ALL.into_iter().enumerate() {
            counts[index] = match tree {
                Tree::Credentials => snapshot.credentials.len() as u64,
                Tree::Canaries => snapshot.canaries.len() as u64,
                Tree::AuditMeta => snapshot.audit_meta.len() as u64,
                Tree::Audit => snapshot.audit_len(),
            };
        }
        Self {
            created_at_ms: snapshot.taken_at.0,
            counts,
            audit_head: snapshot.head,
        }
    }

    /// How many entries of `tree` the backup holds.
    pub fn count(&self, tree: Tree) -> u64 {
        Tree::ALL
            .iter()
            .position(|t| *t == tree)
            .map_or(0, |index| self.counts[index])
    }

    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0; HEADER_LEN];
        let mut at = 0;
        let mut put = |field: &[u8]| {
            bytes[at..at + field.len()].copy_from_slice(field);
            at += field.len();
        };
        put(MAGIC);
        put(&FORMAT_VERSION.to_be_bytes());
        put(&self.created_at_ms.to_be_bytes());
        for count in self.counts {
            put(&count.to_be_bytes());
        }
        put(&self.audit_head.seq.to_be_bytes());
        put(&self.audit_head.digest);
        bytes
    }

    fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Self, BackupError> {
        if &bytes[..8] != MAGIC {
            return Err(BackupError::NotABackup);
        }
        let u32_at = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let version = u32_at(8);
        if version != FORMAT_VERSION {
            return Err(BackupError::UnsupportedVersion(version));
        }
        let mut counts = [0; 4];
        for (index, count) in counts.iter_mut().enumerate() {
            *count = u64_at(20 + 8 * index);
        }
        let digest: Digest = bytes[60..92].try_into().expect("32 bytes");
        Ok(Self {
            created_at_ms: u64_at(12),
            counts,
            audit_head: ChainHead {
                seq: u64_at(52),
                digest,
            },
        })
    }
}

/// Why a backup could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// Reading or writing the bytes failed.
    #[error("backup I/O failed")]
    Io(#[from] io::Error),
    /// The store could not be read.
    #[error("cannot read the store")]
    Store(#[from] StoreError),
    /// The file does not start like a backup.
    #[error("not a vault backup")]
    NotABackup,
    /// A format this version does not know.
    #[error("backup format version {0} is not supported (this version reads {FORMAT_VERSION})")]
    UnsupportedVersion(u32),
    /// The file ends early.
    #[error("the backup is truncated")]
    Truncated,
    /// The bytes parse, but not as a backup written by the vault.
    #[error("the backup is damaged: {0}")]
    Malformed(String),
    /// The trailing digest does not match the contents.
    #[error("the backup's checksum does not match its contents: it was damaged or altered")]
    DigestMismatch,
}

/// One stored entry of a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Which part of the store.
    pub tree: Tree,
    /// The raw key.
    pub key: Vec<u8>,
    /// The raw value, as stored: ciphertext records, tokens, audit events.
    pub value: Vec<u8>,
}

/// Writes a backup, hashing as it goes.
#[derive(Debug)]
pub struct BackupWriter<W: Write> {
    out: W,
    hasher: Sha256,
    bytes: u64,
    /// Entries still expected per section, and the section being written.
    remaining: [u64; 4],
    section: usize,
}

impl<W: Write> BackupWriter<W> {
    /// Writes the header; then each entry must come, section by section,
    /// exactly as many as `header` counts.
    pub fn start(out: W, header: &Header) -> io::Result<Self> {
        let mut writer = Self {
            out,
            hasher: Sha256::new(),
            bytes: 0,
            remaining: header.counts,
            section: 0,
        };
        writer.write(&header.encode())?;
        Ok(writer)
    }

    /// Writes one entry of `tree`.
    pub fn entry(&mut self, tree: Tree, key: &[u8], value: &[u8]) -> io::Result<()> {
        while self.section < 4 && self.remaining[self.section] == 0 {
            self.section += 1;
        }
        if Tree::ALL.get(self.section) != Some(&tree) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a {} entry is not expected here", tree.as_str()),
            ));
        }
        self.remaining[self.section] -= 1;

        let name = tree.as_str().as_bytes();
        self.write(&[name.len() as u8])?;
        self.write(name)?;
        for field in [key, value] {
            let len = u32::try_from(field.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "entry too long"))?;
            self.write(&len.to_be_bytes())?;
            self.write(field)?;
        }
        Ok(())
    }

    /// Writes the digest once every entry was written. Returns the output
    /// and the length of the whole file.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        if self.remaining.iter().any(|left| *left > 0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "fewer entries than the header counts",
            ));
        }
        let digest: Digest = self.hasher.finalize().into();
        self.out.write_all(&digest)?;
        self.out.flush()?;
        Ok((self.out, self.bytes + 32))
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.out.write_all(bytes)?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }
}

/// Writes `snapshot` as a backup to `out`. Returns the length of the file.
pub fn write_snapshot(snapshot: &Snapshot, out: impl Write) -> Result<u64, BackupError> {
    let header = Header::of(snapshot);
    let mut writer = BackupWriter::start(out, &header)?;
    for (tree, entries) in [
        (Tree::Credentials, &snapshot.credentials),
        (Tree::Canaries, &snapshot.canaries),
        (Tree::AuditMeta, &snapshot.audit_meta),
    ] {
        for (key, value) in entries {
            writer.entry(tree, key, value)?;
        }
    }
    for event in snapshot.audit_events() {
        let (key, value) = event?;
        writer.entry(Tree::Audit, &key, &value)?;
    }
    let (_, bytes) = writer.finish()?;
    Ok(bytes)
}

/// Reads a backup, hashing as it goes. Nothing it returns is trustworthy
/// until [`BackupReader::finish`] has checked the digest.
#[derive(Debug)]
pub struct BackupReader<R: Read> {
    input: R,
    hasher: Sha256,
    header: Header,
    bytes: u64,
    remaining: [u64; 4],
    section: usize,
}

impl<R: Read> BackupReader<R> {
    /// Reads the header.
    pub fn open(mut input: R) -> Result<Self, BackupError> {
        let mut bytes = [0; HEADER_LEN];
        read_exact(&mut input, &mut bytes)?;
        let header = Header::decode(&bytes)?;
        let mut hasher = Sha256::new();
        hasher.update(bytes);
        Ok(Self {
            input,
            hasher,
            header,
            bytes: HEADER_LEN as u64,
            remaining: header.counts,
            section: 0,
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The next entry, or `None` once the header's count is reached.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, BackupError> {
        while self.section < 4 && self.remaining[self.section] == 0 {
            self.section += 1;
        }
        let Some(&expected) = Tree::ALL.get(self.section) else {
            return Ok(None);
        };
        self.remaining[self.section] -= 1;

        let mut len = [0; 1];
        self.read(&mut len)?;
        let mut name = vec![0; usize::from(len[0])];
        self.read(&mut name)?;
        let tree = Tree::from_name(&name).ok_or_else(|| {
            BackupError::Malformed(format!("unknown tree {:?}", String::from_utf8_lossy(&name)))
        })?;
        if tree != expected {
            return Err(BackupError::Malformed(format!(
                "a {} entry where the header announced {}",
                tree.as_str(),
                expected.as_str()
            )));
        }
        let key = self.read_field(MAX_KEY)?;
        let value = self.read_field(MAX_VALUE)?;
        Ok(Some(Entry { tree, key, value }))
    }

    /// Checks that every entry was read, that the digest matches, and that
    /// nothing follows it. Returns the length of the file.
    pub fn finish(mut self) -> Result<u64, BackupError> {
        if self.next_entry()?.is_some() {
            return Err(BackupError::Malformed(
                "entries were left unread".to_owned(),
            ));
        }
        let mut stored = [0; 32];
        read_exact(&mut self.input, &mut stored)?;
        // A checksum, not a secret: a plain comparison is fine.
        let computed: Digest = self.hasher.finalize().into();
        if stored != computed {
            return Err(BackupError::DigestMismatch);
        }
        let mut extra = [0; 1];
        if self.input.read(&mut extra)? != 0 {
            return Err(BackupError::Malformed(
                "bytes follow the checksum".to_owned(),
            ));
        }
        Ok(self.bytes + 32)
    }

    fn read_field(&mut self, max: u32) -> Result<Vec<u8>, BackupError> {
        let mut len = [0; 4];
        self.read(&mut len)?;
        let len = u32::from_be_bytes(len);
        if len > max {
            return Err(BackupError::Malformed(format!(
                "an entry of {len} bytes (at most {max})"
            )));
        }
        let mut field = vec![0; len as usize];
        self.read(&mut field)?;
        Ok(field)
    }

    fn read(&mut self, buffer: &mut [u8]) -> Result<(), BackupError> {
        read_exact(&mut self.input, buffer)?;
        self.hasher.update(&*buffer);
        self.bytes += buffer.len() as u64;
        Ok(())
    }
}

fn read_exact(input: &mut impl Read, buffer: &mut [u8]) -> Result<(), BackupError> {
    input.read_exact(buffer).map_err(|err| match err.kind() {
        io::ErrorKind::UnexpectedEof => BackupError::Truncated,
        _ => BackupError::Io(err),
    })
}

#[cfg(test)]
mod tests;
