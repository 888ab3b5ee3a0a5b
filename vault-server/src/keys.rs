//! The keyring in service: loaded, checked against the store, swapped on
//! reload, and never changed under a write that is sealing with it.
//!
//! A keyring is accepted, at start or on reload, only if it can open every
//! record in the store:
//!
//! - every key version that seals a record is in it, and
//! - every key in it is the key its version had before. Each version leaves
//!   a canary in the store the first time it is loaded: a token sealed with
//!   a key derived from it. A key of the same version that cannot open its
//!   canary is a different key, and is refused.
//!
//! Otherwise the start is refused, or the reload is and the previous keyring
//! stays, with a message naming the versions and how many records each
//! holds. The same check makes retiring a key safe: a keyring without a
//! version is accepted only once no record uses that version.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::ExposeSecret as _;
use tokio::sync::{RwLock, RwLockReadGuard};

use crate::crypto::fernet::Token;
use crate::crypto::keyring::{Keyring, KeyringError, MasterKey};
use crate::reload::Reloadable;
use crate::store::{CredentialStore, StoreError};

/// What a canary token holds.
const CANARY_PLAINTEXT: &[u8] = b"vault.v1 canary";
/// HKDF `info` of the key canaries are sealed with; no record key can have
/// it, since record `info` starts with "vault.v1 record".
const CANARY_INFO: &[u8] = b"vault.v1 canary";

/// Why a keyring was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyCheckError {
    /// The file could not be loaded.
    #[error(transparent)]
    Load(#[from] KeyringError),
    /// It cannot open everything in the store.
    #[error("keyring refused: {0}")]
    Mismatch(String),
    /// The store could not be read or written.
    #[error("keyring check failed")]
    Store(#[from] StoreError),
    /// The keyring came on standard input or in the environment, once.
    #[error(
        "the keyring was read from standard input (or VAULT_KEYRING_CONTENTS) at start and \
         cannot be read again; restart the server with the new keyring"
    )]
    NotReloadable,
}

/// The keyring path that means standard input.
pub const STDIN_KEYRING: &str = "-";

/// Loads the keyring at `path`, or from standard input when `path` is `-`.
pub fn load_keyring(path: &Path) -> Result<Keyring, KeyringError> {
    if path != Path::new(STDIN_KEYRING) {
        return Keyring::load(path);
    }
    let text = crate::hygiene::read_keyring_from_stdin().map_err(|source| KeyringError::Read {
        path: "standard input".into(),
        source,
    })?;
    Keyring::parse(&text)
}

/// The keyring the server runs with.
#[derive(Debug)]
pub struct KeyManager {
    path: PathBuf,
    current: Reloadable<Keyring>,
    /// Held shared by every call that seals or opens with the current
    /// keyring, and exclusively while a new keyring is checked and swapped
    /// in: no record is sealed under a key the check did not count, and no
    /// key is retired between reading a record and opening it.
    in_use: RwLock<()>,
}

impl KeyManager {
    /// Checks `keyring`, loaded from `path`, against `store`, and keeps it
    /// and the path to reload from.
    pub async fn new<S: CredentialStore>(
        path: PathBuf,
        keyring: Keyring,
        store: &S,
    ) -> Result<Self, KeyCheckError> {
        check(&keyring, store).await?;
        Ok(Self {
            path,
            current: Reloadable::new(keyring),
            in_use: RwLock::new(()),
        })
    }

    /// The keyring now in force.
    pub fn current(&self) -> Arc<Keyring> {
        self.current.current()
    }

    /// Permission to use the current keyring: hold it from reading or
    /// sealing a record until it is opened or stored. A reload waits for
    /// every permit to be dropped.
    pub async fn keyring_permit(&self) -> RwLockReadGuard<'_, ()> {
        self.in_use.read().await
    }

    /// Re-reads the keyring file and swaps it in if it checks out.
    pub async fn reload<S: CredentialStore>(&self, store: &S) -> Result<(), KeyCheckError> {
        if self.path == Path::new(STDIN_KEYRING) {
            return Err(KeyCheckError::NotReloadable);
        }
        let keyring = Keyring::load(&self.path)?;
        let _exclusive = self.in_use.write().await;
        check(&keyring, store).await?;
        self.current.replace(keyring);
        Ok(())
    }
}

/// Accepts `keyring` for `store` (see the module docs), leaving a canary for
/// each of its versions that has none yet.
async fn check<S: CredentialStore>(keyring: &Keyring, store: &S) -> Result<(), KeyCheckError> {
    let usage = store.key_usage();
    let mut problems = String::new();

    for (version, records) in &usage {
        if keyring.key(*version).is_none() {
            let _ = write!(
                problems,
                "; key version {version} seals {records} record(s) but is not in the keyring"
            );
        }
    }
    let mut missing_canaries = Vec::new();
    for key in keyring.keys() {
        match store.canary(key.version())? {
            Some(canary) if opens_canary(key, &canary) => {}
            Some(_) => {
                let records = usage.get(&key.version()).copied().unwrap_or(0);
                let _ = write!(
                    problems,
                    "; key version {} (fingerprint {}) is not the key this store knows under \
                     that version, which seals {records} record(s)",
                    key.version(),
                    key.fingerprint()
                );
            }
            None => missing_canaries.push(key),
        }
    }
    if let Some(problems) = problems.strip_prefix("; ") {
        return Err(KeyCheckError::Mismatch(problems.to_owned()));
    }

    for key in missing_canaries {
        let canary = key.derive_fernet_key(CANARY_INFO).encrypt(CANARY_PLAINTEXT);
        store.put_canary(key.version(), &canary).await?;
    }
    Ok(())
}

fn opens_canary(key: &MasterKey, canary: &Token) -> bool {
    key.derive_fernet_key(CANARY_INFO)
        .decrypt(canary.as_str(), None)
        .is_ok_and(|opened| opened.expose_secret() == CANARY_PLAINTEXT)
}
