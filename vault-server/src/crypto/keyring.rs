//! The keyring: versioned master keys, one of them primary.
//!
//! The keyring file is the only place a master key lives. It is written by
//! an operator (or a secret store that mounts it) and read by the server; the
//! server never writes keys anywhere else, never logs them and never returns
//! them. Its format is one directive a line:
//!
//! ```text
//! # comment
//! key 1 cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=
//! key 2 <another key in Fernet's format>
//! primary 2
//! ```
//!
//! `key VERSION KEY` adds a master key: VERSION is a whole number from 1 to
//! 4294967295, KEY is 32 bytes in url-safe base64, exactly what Python's
//! `Fernet.generate_key()` or `vaultctl gen-key` prints. `primary VERSION`
//! names the key that seals new secrets; every key opens what it sealed.
//!
//! `legacy NAME KEY` adds a decrypt-only key of another application: a plain
//! Fernet key whose tokens `vaultctl import` moves into the vault. It never
//! seals anything, and can be removed once the import is done. NAME is 1 to
//! 64 letters, digits, `-`, `_` or `.`.
//!
//! The file is read into a buffer that is wiped after parsing, and parse
//! errors name the line, never its content.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::fernet::{self, FernetKey};

/// Why a keyring could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyringError {
    /// The file could not be read.
    #[error("cannot read keyring file {path}")]
    Read {
        /// The file.
        path: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a valid directive.
    #[error("keyring line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it (never its content).
        reason: &'static str,
    },
    /// Two keys share a version.
    #[error("keyring line {line}: key version {version} is defined twice")]
    DuplicateVersion {
        /// 1-based line number of the second definition.
        line: usize,
        /// The version.
        version: u32,
    },
    /// The file can be read by other users.
    #[error(
        "keyring file {path} can be read by group or others (mode {mode:o}); \
         restrict it with `chmod 600 {path}`"
    )]
    TooOpen {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The file holds no key.
    #[error("keyring holds no key")]
    Empty,
    /// No `primary` line.
    #[error("keyring names no primary key (add a line `primary VERSION`)")]
    NoPrimary,
    /// `primary` names a version that has no key.
    #[error("keyring names key version {0} as primary but holds no such key")]
    UnknownPrimary(u32),
}

/// One master key, held in the forms the vault uses it in. Every form wipes
/// itself on drop.
pub struct MasterKey {
    version: u32,
    /// HKDF state after the extract step, ready to derive record keys.
    record_keys: Hkdf<Sha256>,
    /// Short public name of the key, safe to show and log.
    fingerprint: [u8; 8],
}

/// Salt of the HKDF extract step: ties derived keys to this vault's scheme.
const RECORD_KEY_SALT: &[u8] = b"vault.v1 record keys";

impl MasterKey {
    /// Expands the 32 raw key bytes into the forms the vault uses.
    fn from_bytes(version: u32, bytes: &[u8; 32]) -> Self {
        Self {
            version,
            record_keys: Hkdf::<Sha256>::new(Some(RECORD_KEY_SALT), bytes),
            fingerprint: fingerprint(bytes),
        }
    }

    /// The key's version in the keyring.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// A public 16-hex-digit name for the key: an HMAC of a fixed label under
    /// the key, so it identifies the key without revealing anything about it.
    pub fn fingerprint(&self) -> String {
        self.fingerprint
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Derives the Fernet key of one record from this master key.
    ///
    /// HKDF-SHA256 expands the master key with `info` that names the record
    /// (see [`crate::crypto::sealing`]); the derived 32 bytes are a Fernet key
    /// whose halves sign and encrypt as usual.
    pub(crate) fn derive_fernet_key(&self, info: &[u8]) -> FernetKey {
        let mut okm = Zeroizing::new([0u8; 32]);
        self.record_keys
            .expand(info, okm.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        FernetKey::from_bytes(&okm)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("version", &self.version)
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// Every master key the vault knows, which one seals new secrets, and the
/// decrypt-only keys of applications whose data is being imported.
#[derive(Debug)]
pub struct Keyring {
    keys: BTreeMap<u32, MasterKey>,
    primary: u32,
    legacy: Vec<LegacyKey>,
}

/// Another application's Fernet key, used only to open the tokens it made
/// while importing them.
pub struct LegacyKey {
    name: String,
    key: FernetKey,
    fingerprint: [u8; 8],
}

impl LegacyKey {
    /// The name the keyring gives it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A public name for the key (see [`MasterKey::fingerprint`]).
    pub fn fingerprint(&self) -> String {
        hex(&self.fingerprint)
    }

    /// The key itself, for opening imported tokens.
    pub(crate) fn fernet(&self) -> &FernetKey {
        &self.key
    }
}

impl fmt::Debug for LegacyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LegacyKey")
            .field("name", &self.name)
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// Whether `path` lies in the folder systemd hands a service its
/// credentials in (`$CREDENTIALS_DIRECTORY`).
fn in_systemd_credentials(path: &Path) -> bool {
    // Both resolved, so that `..` or a symbolic link cannot lead from that
    // folder to a file elsewhere; the root is never such a folder.
    let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
        return false;
    };
    match (std::fs::canonicalize(&dir), std::fs::canonicalize(path)) {
        (Ok(dir), Ok(path)) => dir.parent().is_some() && path.parent() == Some(dir.as_path()),
        _ => false,
    }
}

impl Keyring {
    /// Reads and parses the keyring file at `path`, refusing a file that
    /// users other than its owner can read.
    pub fn load(path: &Path) -> Result<Self, KeyringError> {
        let read_error = |source| KeyringError::Read {
            path: crate::files::shown(path),
            source,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path)
                .map_err(read_error)?
                .permissions()
                .mode();
            // systemd's LoadCredential= copies may show as 0440 (root-owned,
            // with an access list for the service's user) on a private,
            // read-only mount: group bits there are systemd's, not a leak.
            let forbidden = if in_systemd_credentials(path) {
                0o007
            } else {
                0o077
            };
            if mode & forbidden != 0 {
                return Err(KeyringError::TooOpen {
                    path: crate::files::shown(path),
                    mode: mode & 0o777,
                });
            }
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        Self::parse(&Zeroizing::new(text))
    }

    /// Parses keyring text (see the module docs for the format).
    pub fn parse(text: &str) -> Result<Self, KeyringError> {
        let mut keys = BTreeMap::new();
        let mut legacy = Vec::new();
        let mut primary = None;

        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let err = |reason| KeyringError::Line { line, reason };
            let mut words = raw.split_ascii_whitespace();
            match words.next() {
                None => continue,
                Some(word) if word.starts_with('#') => continue,
                Some("key") => {
                    let version = parse_version(words.next()).map_err(err)?;
                    let encoded = words.next().ok_or(err("`key` needs a version and a key"))?;
                    let bytes = fernet::decode_key(encoded).map_err(|_| err(KEY_FORMAT))?;
                    if words.next().is_some() {
                        return Err(err("unexpected text after the key"));
                    }
                    if keys.contains_key(&version) {
                        return Err(KeyringError::DuplicateVersion { line, version });
                    }
                    keys.insert(version, MasterKey::from_bytes(version, &bytes));
                }
                Some("legacy") => {
                    let name = words.next().ok_or(err("`legacy` needs a name and a key"))?;
                    if name.is_empty()
                        || name.len() > 64
                        || !name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    {
                        return Err(err("a legacy key's name is 1 to 64 of A-Z a-z 0-9 - _ ."));
                    }
                    let encoded = words.next().ok_or(err("`legacy` needs a name and a key"))?;
                    let bytes = fernet::decode_key(encoded).map_err(|_| err(KEY_FORMAT))?;
                    if words.next().is_some() {
                        return Err(err("unexpected text after the key"));
                    }
                    if legacy.iter().any(|key: &LegacyKey| key.name == name) {
                        return Err(err("a second legacy key with this name"));
                    }
                    legacy.push(LegacyKey {
                        name: name.to_owned(),
                        fingerprint: fingerprint(&bytes),
                        key: FernetKey::from_bytes(&bytes),
                    });
                }
                Some("primary") => {
                    let version = parse_version(words.next()).map_err(err)?;
                    if words.next().is_some() {
                        return Err(err("unexpected text after the version"));
                    }
                    if primary.replace(version).is_some() {
                        return Err(err("a second `primary` line"));
                    }
                }
                Some(_) => {
                    return Err(err(
                        "unknown directive (expected `key`, `primary` or `legacy`)",
                    ));
                }
            }
        }

        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        let primary = primary.ok_or(KeyringError::NoPrimary)?;
        if !keys.contains_key(&primary) {
            return Err(KeyringError::UnknownPrimary(primary));
        }
        Ok(Self {
            keys,
            primary,
            legacy,
        })
    }

    /// A keyring holding one new random key, version 1, as file text.
    pub fn generate_text() -> Zeroizing<String> {
        let key = fernet::generate_key_base64();
        Zeroizing::new(format!(
            "# Vault keyring. Keep this file secret: it opens every stored credential.\n\
             key 1 {}\nprimary 1\n",
            secrecy::ExposeSecret::expose_secret(&key)
        ))
    }

    /// The key that seals new secrets.
    pub fn primary(&self) -> &MasterKey {
        &self.keys[&self.primary]
    }

    /// The key of `version`, if the keyring holds it.
    pub fn key(&self, version: u32) -> Option<&MasterKey> {
        self.keys.get(&version)
    }

    /// Every key, by ascending version.
    pub fn keys(&self) -> impl Iterator<Item = &MasterKey> {
        self.keys.values()
    }

    /// The decrypt-only keys of other applications, in file order.
    pub fn legacy_keys(&self) -> &[LegacyKey] {
        &self.legacy
    }
}

/// An HMAC of a fixed label under the key, cut to 8 bytes: it names a key
/// without revealing anything about it.
fn fingerprint(bytes: &[u8; 32]) -> [u8; 8] {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(bytes).expect("HMAC accepts keys of any length");
    mac.update(b"vault.v1 key fingerprint");
    let digest = mac.finalize().into_bytes();
    let mut fingerprint = [0; 8];
    fingerprint.copy_from_slice(&digest[..8]);
    fingerprint
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const KEY_FORMAT: &str = "the key is not 32 bytes of url-safe base64 (44 characters)";

fn parse_version(word: Option<&str>) -> Result<u32, &'static str> {
    let word = word.ok_or("missing key version")?;
    match word.parse::<u32>() {
        Ok(version) if version > 0 => Ok(version),
        _ => Err("the key version must be a whole number from 1 to 4294967295"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY_A: &str = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
    const KEY_B: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn parses_versions_and_primary_ignoring_comments_and_blank_lines() {
        let text = format!("# keys\n\nkey 1 {KEY_A}\n  key 7 {KEY_B}  \nprimary 7\n");
        let ring = Keyring::parse(&text).unwrap();
        assert_eq!(ring.primary().version(), 7);
        assert_eq!(
            ring.keys().map(MasterKey::version).collect::<Vec<_>>(),
            [1, 7]
        );
        assert!(ring.key(1).is_some());
        assert!(ring.key(2).is_none());
    }

    #[test]
    fn fingerprints_differ_between_keys_and_never_show_the_key() {
        let ring = Keyring::parse(&format!("key 1 {KEY_A}\nkey 2 {KEY_B}\nprimary 1")).unwrap();
        let (a, b) = (ring.key(1).unwrap(), ring.key(2).unwrap());
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 16);
        let printed = format!("{ring:?}");
        assert!(!printed.contains(&KEY_A[..20]) && !printed.contains(&KEY_B[..20]));
    }

    #[test]
    fn refuses_malformed_keyrings_naming_the_line_but_not_the_key() {
        let cases = [
            (format!("key 1 {KEY_A}\nkey 1 {KEY_B}\nprimary 1"), "line 2"),
            (format!("key 0 {KEY_A}\nprimary 0"), "line 1"),
            (format!("key x {KEY_A}\nprimary 1"), "line 1"),
            (format!("key 1 {}\nprimary 1", &KEY_A[..43]), "line 1"),
            ("key 1 c2hvcnQ=\nprimary 1".to_owned(), "line 1"),
            (format!("key 1 {KEY_A} extra\nprimary 1"), "line 1"),
            (format!("key 1 {KEY_A}\nprimary 1\nprimary 1"), "line 3"),
            (format!("secret 1 {KEY_A}"), "line 1"),
            (format!("key 1 {KEY_A}"), "no primary"),
            (format!("key 1 {KEY_A}\nprimary 2"), "version 2"),
            ("# nothing\n".to_owned(), "no key"),
        ];
        for (text, expected) in cases {
            let message = Keyring::parse(&text).unwrap_err().to_string();
            assert!(message.contains(expected), "{text:?} gave {message:?}");
            assert!(!message.contains(&KEY_A[..20]), "{message}");
        }
    }

    #[test]
    fn legacy_keys_are_named_decrypt_only_keys() {
        let text = format!("key 1 {KEY_A}\nprimary 1\nlegacy old-app {KEY_B}\n");
        let ring = Keyring::parse(&text).unwrap();
        let legacy = ring.legacy_keys();
        assert_eq!(legacy.len(), 1);
        assert_eq!(legacy[0].name(), "old-app");
        assert_eq!(ring.keys().count(), 1, "a legacy key is not a master key");

        let token = FernetKey::from_base64(KEY_B).unwrap().encrypt(b"imported");
        let opened = legacy[0].fernet().decrypt(token.as_str(), None).unwrap();
        assert_eq!(secrecy::ExposeSecret::expose_secret(&opened), b"imported");

        for bad in [
            format!("key 1 {KEY_A}\nprimary 1\nlegacy {KEY_B}"),
            format!("key 1 {KEY_A}\nprimary 1\nlegacy a/b {KEY_B}"),
            format!("key 1 {KEY_A}\nprimary 1\nlegacy a {KEY_B}\nlegacy a {KEY_A}"),
        ] {
            assert!(Keyring::parse(&bad).is_err(), "{bad}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_keyring_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        std::fs::write(&path, format!("key 1 {KEY_A}\nprimary 1\n")).unwrap();
        for (mode, allowed) in [(0o600, true), (0o400, true), (0o640, false), (0o604, false)] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let loaded = Keyring::load(&path);
            assert_eq!(loaded.is_ok(), allowed, "mode {mode:o}: {loaded:?}");
        }
    }

    #[test]
    fn generated_keyring_text_parses() {
        let text = Keyring::generate_text();
        let ring = Keyring::parse(&text).unwrap();
        assert_eq!(ring.primary().version(), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn no_text_makes_the_parser_panic(text in any::<String>()) {
            let _ = Keyring::parse(&text);
        }

        #[test]
        fn directive_shaped_lines_give_a_keyring_or_a_line_error(
            lines in proptest::collection::vec(
                "(key|primary|legacy|#)? ?[0-9A-Za-z_=-]{0,50}( [0-9A-Za-z_=-]{0,50})?",
                0..8,
            ),
        ) {
            let text = lines.join("\n");
            match Keyring::parse(&text) {
                Ok(keyring) => prop_assert!(keyring.key(keyring.primary().version()).is_some()),
                Err(err) => prop_assert!(!err.to_string().is_empty()),
            }
        }
    }
}
