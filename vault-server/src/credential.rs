//! The vault's domain: who owns a credential, how it is named, what it holds.
//!
//! Every type here is validated on construction ("parse, don't validate"):
//! once a request has become a [`UserId`], a [`CredentialId`] or [`Fields`],
//! the rest of the server never checks it again. The checks live in the
//! `TryFrom`/`parse` functions, and each failure names the field and why.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::crypto::fernet::Token;

/// Longest accepted `user_id`, in bytes.
pub const MAX_USER_ID_LEN: usize = 128;
/// Longest accepted URL, in bytes.
pub const MAX_URL_LEN: usize = 2048;
/// Longest accepted short text field (database, username), in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Longest accepted secret, in bytes.
pub const MAX_SECRET_LEN: usize = 4096;

/// A request field that failed validation: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    /// The field's name as the API spells it, e.g. `fields.odoo.url`.
    pub field: &'static str,
    /// Why it was refused, in words a caller can act on.
    pub reason: String,
}

impl InvalidField {
    /// A refusal of `field` for `reason`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// The user a credential belongs to: 1 to 128 bytes of letters, digits and
/// `-_.:@`. The alphabet excludes NUL, which the store uses as a separator.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserId(String);

impl UserId {
    /// Validates `raw` as the field named `field`.
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, InvalidField> {
        if raw.is_empty() {
            return Err(InvalidField::new(field, "must not be empty"));
        }
        if raw.len() > MAX_USER_ID_LEN {
            return Err(InvalidField::new(
                field,
                format!("must be at most {MAX_USER_ID_LEN} bytes"),
            ));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.:@".contains(c);
        if !raw.chars().all(allowed) {
            return Err(InvalidField::new(
                field,
                "may contain only ASCII letters, digits and -_.:@",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.0)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A credential's identity: 128 random bits drawn by the server, written as
/// 32 lowercase hexadecimal characters. Unguessable, so knowing one id tells
/// nothing about any other.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CredentialId([u8; 16]);

impl CredentialId {
    /// Length of the id in bytes.
    pub const LEN: usize = 16;

    /// Draws a new id from the thread's cryptographically secure generator,
    /// which the operating system seeds.
    pub fn generate() -> Self {
        let mut bytes = [0; Self::LEN];
        rand::fill(&mut bytes);
        Self(bytes)
    }

    /// Validates `raw` (32 lowercase hex characters) as the field named `field`.
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, InvalidField> {
        if raw.is_empty() {
            return Err(InvalidField::new(field, "must not be empty"));
        }
        let malformed = || InvalidField::new(field, "must be 32 lowercase hexadecimal characters");
        if raw.len() != 2 * Self::LEN {
            return Err(malformed());
        }
        let mut bytes = [0; Self::LEN];
        for (byte, pair) in bytes.iter_mut().zip(raw.as_bytes().chunks_exact(2)) {
            let high = hex_value(pair[0]).ok_or_else(malformed)?;
            let low = hex_value(pair[1]).ok_or_else(malformed)?;
            *byte = high << 4 | low;
        }
        Ok(Self(bytes))
    }

    /// Rebuilds an id from its stored bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The id's raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for CredentialId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialId({self})")
    }
}

/// The non-secret description of a credential, one variant per kind of
/// system. Adding a kind means a variant here, in the API and in the record
/// encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fields {
    /// A connection to an Odoo instance.
    Odoo(OdooConnection),
}

impl Fields {
    /// The kind's name, as used in logs and messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Fields::Odoo(_) => "odoo",
        }
    }
}

/// Where and as whom to reach an Odoo instance. The password is the
/// credential's secret and is not part of this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OdooConnection {
    url: String,
    database: String,
    username: String,
}

impl OdooConnection {
    /// Validates the three fields: an http(s) URL with a host, and two
    /// non-empty names without control characters.
    pub fn new(url: &str, database: &str, username: &str) -> Result<Self, InvalidField> {
        Ok(Self {
            url: parse_url("fields.odoo.url", url)?,
            database: parse_name("fields.odoo.database", database)?,
            username: parse_name("fields.odoo.username", username)?,
        })
    }

    /// The instance's base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database name.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The login.
    pub fn username(&self) -> &str {
        &self.username
    }
}

fn parse_url(field: &'static str, raw: &str) -> Result<String, InvalidField> {
    if raw.is_empty() {
        return Err(InvalidField::new(field, "must not be empty"));
    }
    if raw.len() > MAX_URL_LEN {
        return Err(InvalidField::new(
            field,
            format!("must be at most {MAX_URL_LEN} bytes"),
        ));
    }
    // The URL is stored as the caller wrote it, so it must mean the same to
    // every parser that will read it later (Python's urllib in the sync
    // workers among them). Characters that URL parsers silently drop or
    // reinterpret (controls, whitespace, backslashes) are refused rather
    // than normalised, and the scheme must be spelled out with `//`.
    if raw
        .chars()
        .any(|c| c.is_whitespace() || is_invisible(c) || c == '\\')
    {
        return Err(InvalidField::new(
            field,
            "must not contain whitespace, control characters or backslashes",
        ));
    }
    let lower = raw.get(..8).unwrap_or(raw).to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return Err(InvalidField::new(
            field,
            "must start with http:// or https://",
        ));
    }
    let url = url::Url::parse(raw)
        .map_err(|err| InvalidField::new(field, format!("is not a valid URL ({err})")))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(InvalidField::new(field, "must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(InvalidField::new(
            field,
            "must not contain a user name or password (the password is the secret)",
        ));
    }
    Ok(raw.to_owned())
}

fn parse_name(field: &'static str, raw: &str) -> Result<String, InvalidField> {
    if raw.is_empty() {
        return Err(InvalidField::new(field, "must not be empty"));
    }
    if raw.len() > MAX_NAME_LEN {
        return Err(InvalidField::new(
            field,
            format!("must be at most {MAX_NAME_LEN} bytes"),
        ));
    }
    if raw.chars().any(is_invisible) {
        return Err(InvalidField::new(
            field,
            "must not contain control or invisible formatting characters",
        ));
    }
    if raw.trim() != raw {
        return Err(InvalidField::new(
            field,
            "must not start or end with whitespace",
        ));
    }
    Ok(raw.to_owned())
}

/// Characters that change how text is shown or parsed without being seen:
/// controls, and the zero-width and bidirectional formatting characters that
/// can make one name look like another.
fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// Why a caller wants a secret in the clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Purpose {
    /// Checking once that a newly entered connection works.
    ConnectionTest,
    /// Using the connection for a synchronisation run.
    Sync,
}

impl Purpose {
    /// The purpose's name, as used in logs and policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::ConnectionTest => "connection-test",
            Purpose::Sync => "sync",
        }
    }
}

/// A secret sealed for one record: the Fernet token and the version of the
/// master key its record key was derived from. Holds no plaintext.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// Version of the master key in the keyring.
    pub key_version: u32,
    /// The Fernet token under the record's derived key.
    pub token: Token,
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedSecret")
            .field("key_version", &self.key_version)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch: how records keep time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// The current time.
    pub fn now() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Self(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
    }
}

/// One stored credential, exactly as the store keeps it: never plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The credential's id.
    pub id: CredentialId,
    /// The owner.
    pub owner: UserId,
    /// The non-secret fields.
    pub fields: Fields,
    /// The encrypted secret.
    pub secret: SealedSecret,
    /// When it was stored.
    pub created_at: UnixMillis,
    /// When its fields or secret last changed.
    pub updated_at: UnixMillis,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_ids_round_trip_through_text() {
        let id = CredentialId::generate();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(CredentialId::parse("id", &text), Ok(id));
    }

    #[test]
    fn malformed_credential_ids_are_refused() {
        for bad in [
            "",
            "abc",
            "0123456789ABCDEF0123456789abcdef",
            "0123456789abcdef0123456789abcdeg",
            "0123456789abcdef0123456789abcdef0",
            "é123456789abcdef0123456789abcde",
        ] {
            let err = CredentialId::parse("credential_id", bad).unwrap_err();
            assert_eq!(err.field, "credential_id", "{bad}");
        }
    }

    #[test]
    fn user_ids_outside_the_alphabet_or_length_are_refused() {
        assert!(UserId::parse("user_id", "user-42@tenant.example:1_a").is_ok());
        for bad in [
            String::new(),
            "a b".into(),
            "a\0b".into(),
            "ü".into(),
            "x".repeat(129),
        ] {
            assert!(UserId::parse("user_id", &bad).is_err(), "{bad:?}");
        }
        assert!(UserId::parse("user_id", &"x".repeat(128)).is_ok());
    }

    #[test]
    fn odoo_urls_must_be_http_or_https_with_a_host() {
        assert!(OdooConnection::new("https://odoo.example.com", "db", "me").is_ok());
        assert!(OdooConnection::new("http://127.0.0.1:8069/", "db", "me").is_ok());
        for bad in [
            "ftp://x.example",
            "javascript:alert(1)",
            "not a url",
            "https://",
            "",
            "http:x.example",
            " https://a.example",
            "https://a.example\0",
            "\0https://a.example",
            "https://a.example\n@evil.example",
            "https://good.example\\@evil.example/",
            "https://admin:hunter2@a.example",
            "https://admin@a.example",
        ] {
            let err = OdooConnection::new(bad, "db", "me").unwrap_err();
            assert_eq!(err.field, "fields.odoo.url", "{bad}");
        }
    }

    #[test]
    fn odoo_names_must_be_present_short_and_printable() {
        let url = "https://odoo.example.com";
        assert_eq!(
            OdooConnection::new(url, "", "me").unwrap_err().field,
            "fields.odoo.database"
        );
        assert_eq!(
            OdooConnection::new(url, "db", &"u".repeat(256))
                .unwrap_err()
                .field,
            "fields.odoo.username"
        );
        for bad in ["db\n", "d\u{202E}b", "d\u{200B}b", " db", "db ", "   "] {
            assert_eq!(
                OdooConnection::new(url, bad, "me").unwrap_err().field,
                "fields.odoo.database",
                "{bad:?}"
            );
        }
        assert!(OdooConnection::new(url, "my db", "Jürgen Müller").is_ok());
    }
}
