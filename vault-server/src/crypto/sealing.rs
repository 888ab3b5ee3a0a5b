//! Sealing a secret to the one record it belongs to.
//!
//! A Fernet token carries no associated data, so on its own a token copied
//! from one record into another (or from one user's record into another
//! user's) would still decrypt. The vault prevents that by never using a
//! master key directly: each record gets its own Fernet key,
//!
//! ```text
//! record key = HKDF-SHA256(salt = "vault.v1 record keys", ikm = master key,
//!                          info = "vault.v1 record" 0x00 user_id 0x00 credential_id)
//! ```
//!
//! The user id cannot contain NUL and the credential id is always 16 bytes,
//! so distinct (user, credential) pairs always give distinct `info`. A token
//! moved to any other record is checked under a different key and fails its
//! HMAC, exactly as a tampered token does. The stored token itself is a plain
//! Fernet token under the record key.

use std::fmt;

use super::fernet::{FernetKey, Plaintext};
use super::keyring::{Keyring, MasterKey};
use crate::credential::{CredentialId, SealedSecret, UserId};

/// Why a sealed secret could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The keyring holds no key of the version that sealed it.
    #[error("key version {0} is not in the keyring")]
    UnknownKeyVersion(u32),
    /// The token failed its integrity check: tampered with, moved from
    /// another record, or sealed under a different key of that version.
    #[error("stored secret failed its integrity check")]
    Integrity,
}

/// The record a secret is sealed to.
#[derive(Clone, Copy)]
pub struct RecordBinding<'a> {
    /// The owner.
    pub owner: &'a UserId,
    /// The credential.
    pub id: &'a CredentialId,
}

impl RecordBinding<'_> {
    /// The HKDF `info` naming this record.
    fn info(&self) -> Vec<u8> {
        let owner = self.owner.as_str().as_bytes();
        let mut info = Vec::with_capacity(16 + owner.len() + 1 + CredentialId::LEN);
        info.extend_from_slice(b"vault.v1 record\0");
        info.extend_from_slice(owner);
        info.push(0);
        info.extend_from_slice(self.id.as_bytes());
        info
    }

    fn fernet_key(&self, master: &MasterKey) -> FernetKey {
        master.derive_fernet_key(&self.info())
    }
}

impl fmt::Debug for RecordBinding<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordBinding({}, {})", self.owner, self.id)
    }
}

impl Keyring {
    /// Encrypts `secret` for one record under the primary key.
    pub fn seal(&self, record: RecordBinding<'_>, secret: &[u8]) -> SealedSecret {
        let master = self.primary();
        SealedSecret {
            key_version: master.version(),
            token: record.fernet_key(master).encrypt(secret),
        }
    }

    /// Decrypts a secret sealed for `record`. Stored tokens never expire, so
    /// no time limit applies.
    pub fn open(
        &self,
        record: RecordBinding<'_>,
        sealed: &SealedSecret,
    ) -> Result<Plaintext, OpenError> {
        let master = self
            .key(sealed.key_version)
            .ok_or(OpenError::UnknownKeyVersion(sealed.key_version))?;
        record
            .fernet_key(master)
            .decrypt(sealed.token.as_str(), None)
            .map_err(|_| OpenError::Integrity)
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn keyring() -> Keyring {
        Keyring::parse(
            "key 1 cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=\n\
             key 2 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\nprimary 2",
        )
        .unwrap()
    }

    fn user(name: &str) -> UserId {
        UserId::parse("user_id", name).unwrap()
    }

    #[test]
    fn a_sealed_secret_opens_for_its_own_record() {
        let ring = keyring();
        let (owner, id) = (user("alice"), CredentialId::generate());
        let record = RecordBinding {
            owner: &owner,
            id: &id,
        };

        let sealed = ring.seal(record, b"odoo-password");
        assert_eq!(sealed.key_version, 2);
        assert_eq!(
            ring.open(record, &sealed).unwrap().expose_secret(),
            b"odoo-password"
        );
    }

    #[test]
    fn a_token_moved_to_another_record_or_user_fails_the_integrity_check() {
        let ring = keyring();
        let (alice, bob) = (user("alice"), user("bob"));
        let (id, other_id) = (CredentialId::generate(), CredentialId::generate());
        let sealed = ring.seal(
            RecordBinding {
                owner: &alice,
                id: &id,
            },
            b"secret",
        );

        for (owner, id) in [(&bob, &id), (&alice, &other_id), (&bob, &other_id)] {
            let moved = ring.open(RecordBinding { owner, id }, &sealed);
            assert_eq!(moved.unwrap_err(), OpenError::Integrity);
        }
    }

    #[test]
    fn user_ids_that_share_a_prefix_get_different_keys() {
        let ring = keyring();
        let id = CredentialId::generate();
        let (short, long) = (user("ab"), user("abc"));
        let sealed = ring.seal(
            RecordBinding {
                owner: &short,
                id: &id,
            },
            b"secret",
        );
        let opened = ring.open(
            RecordBinding {
                owner: &long,
                id: &id,
            },
            &sealed,
        );
        assert_eq!(opened.unwrap_err(), OpenError::Integrity);
    }

    #[test]
    fn an_older_key_version_still_opens_and_a_missing_one_is_named() {
        let ring = keyring();
        let (owner, id) = (user("alice"), CredentialId::generate());
        let record = RecordBinding {
            owner: &owner,
            id: &id,
        };
        let old_ring =
            Keyring::parse("key 1 cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=\nprimary 1")
                .unwrap();

        let sealed = old_ring.seal(record, b"secret");
        assert_eq!(
            ring.open(record, &sealed).unwrap().expose_secret(),
            b"secret"
        );

        let unknown = SealedSecret {
            key_version: 9,
            ..sealed
        };
        assert_eq!(
            ring.open(record, &unknown).unwrap_err(),
            OpenError::UnknownKeyVersion(9)
        );
    }
}
