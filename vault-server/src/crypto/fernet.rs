//! Fernet tokens, assembled from RustCrypto primitives.
//!
//! SKELETON: the helper replaces every body below; the public signatures are the contract.

use aes::Aes128;
use hmac::Hmac;
use secrecy::SecretSlice;
use sha2::Sha256;

/// A decrypted secret. Zeroized on drop; `Debug` prints a placeholder.
pub type Plaintext = SecretSlice<u8>;

/// Every way a token can fail to open. Deliberately carries no detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid token")]
pub struct InvalidToken;

/// A key that is not 32 bytes of url-safe base64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a fernet key must be 32 bytes in url-safe base64 with padding (44 characters)")]
pub struct KeyFormatError;

/// A sealed Fernet token, in its url-safe base64 text form.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

/// A Fernet key held expanded: keyed HMAC state and AES round keys.
pub struct FernetKey {
    signing: Hmac<Sha256>,
    encryption: Aes128,
}

impl FernetKey {
    /// Draws a fresh key from the operating system.
    pub fn generate() -> Self { todo!() }
}
