//! Fernet tokens, assembled from RustCrypto primitives.
//!
//! Fernet is specified at <https://github.com/fernet/spec/blob/master/Spec.md>. Tokens made
//! here open with Python `cryptography`'s `Fernet` and the other way round; the known-answer
//! vectors of the spec and a Python interop suite (`tests/fernet_*.rs`) hold us to that.
//!
//! # Token layout
//!
//! A token is the url-safe, padded base64 of
//!
//! ```text
//! 0x80 | timestamp (u64, big endian) | IV (16) | ciphertext (16·n, n ≥ 1) | HMAC tag (32)
//! ```
//!
//! and a key is 32 bytes: the first 16 key HMAC-SHA256, the last 16 key AES-128.
//!
//! # Encrypt-then-MAC
//!
//! Sealing pads the plaintext with PKCS#7, encrypts it with AES-128-CBC under a fresh random
//! IV, and only then computes the HMAC. The tag covers every byte before it: version,
//! timestamp, IV and ciphertext, so none of them can be changed without detection.
//!
//! Opening runs the other way. The tag is checked, in constant time, before a single block
//! is decrypted: CBC and the padding check only ever see bytes that this key sealed.
//!
//! # One opaque error
//!
//! Every failure to open, whether bad base64, a wrong version, a short token, a bad tag, an
//! expired or future timestamp or bad padding, is the same [`InvalidToken`]. A caller who
//! could tell a padding failure from a MAC failure would hold a padding oracle, the classic
//! way to decrypt CBC one byte at a time. Checking the MAC first already closes that door;
//! the single error keeps it closed for code layered on top, which cannot leak what it
//! never learns.
//!
//! # Stricter than Python
//!
//! We decode tokens and keys with a strict url-safe decoder: padding is required, only the
//! url-safe alphabet is allowed, nothing may precede or follow the encoding, and unused
//! trailing bits must be zero. Python's `base64.urlsafe_b64decode` is lenient. Measured with
//! `cryptography` 48.0.0 on Python 3.11, it also accepts `+` and `/`, skips whitespace and
//! other foreign characters anywhere, ignores text after the padding and accepts non-zero
//! trailing bits; like us, it rejects missing padding. (Given a `str` with non-ASCII
//! characters it raises `ValueError` rather than `InvalidToken`.) Both sides emit canonical
//! text, so genuine tokens and keys cross either way; only mangled ones are refused here
//! and accepted there.
//!
//! Python also checks the time window before the MAC; we check the MAC first. Both raise
//! the one error, so the verdict is the same, and ours never judges unauthenticated input.
//!
//! # What this module does not do
//!
//! - No key rotation: a [`FernetKey`] is one key, there is no `MultiFernet`.
//! - No size limit: callers bound the token and plaintext size they accept.
//! - No hiding of metadata: the timestamp is readable without the key, and the token length
//!   reveals the plaintext length to within one 16-byte block.

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use aes::Aes128;
use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, InnerIvInit, KeyInit};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use hmac::{Hmac, Mac};
use rand::TryRng as _;
use rand::rngs::SysRng;
use secrecy::{SecretSlice, SecretString};
use sha2::Sha256;
use zeroize::Zeroizing;

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

/// The only token version the spec defines.
const VERSION: u8 = 0x80;
/// AES block size, which is also the IV size.
const BLOCK_LEN: usize = 16;
/// Version byte, timestamp and IV: the part of a token before the ciphertext.
const HEADER_LEN: usize = 1 + 8 + BLOCK_LEN;
/// HMAC-SHA256 output size.
const TAG_LEN: usize = 32;
/// A raw key: 16 bytes of HMAC key, then 16 bytes of AES key.
const KEY_LEN: usize = 32;
/// The padded base64 of [`KEY_LEN`] bytes.
const ENCODED_KEY_LEN: usize = 44;
/// How far in the future a token's timestamp may lie when a ttl is enforced, as in Python.
const MAX_CLOCK_SKEW: u64 = 60;

/// A sealed Fernet token, in its url-safe base64 text form.
///
/// Tokens are not secret, but `Debug` still prints only their length. `==` is an ordinary,
/// variable-time comparison meant for bookkeeping and tests; a token is authenticated by
/// [`FernetKey::decrypt`], never by comparing it with another.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps text that claims to be a token. Nothing is checked until it is decrypted.
    pub fn from_string(text: String) -> Self {
        Self(text)
    }

    /// The token text, ready to store or send.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Unwraps the token text.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<{} chars>)", self.0.len())
    }
}

/// A Fernet key held expanded: keyed HMAC state and AES round keys.
///
/// Both halves are expanded once and reused: each operation clones the keyed HMAC state and
/// borrows the AES round keys. Both wipe themselves on drop, through the `zeroize` features
/// of `hmac`, `sha2` and `aes` (asserted at compile time below). `Debug` never prints key
/// material.
pub struct FernetKey {
    signing: Hmac<Sha256>,
    encryption: Aes128,
}

// Turning off a `zeroize` feature would silently leave expanded keys in freed memory; make
// it a build error instead. `Hmac` carries no marker of its own, but its state is two
// SHA-256 cores, which wipe themselves exactly when `sha2/zeroize` is on.
const _: () = {
    const fn wipes_on_drop<T: zeroize::ZeroizeOnDrop>() {}
    wipes_on_drop::<Aes128>();
    wipes_on_drop::<Sha256>();
};

impl FernetKey {
    /// Draws a fresh key from the operating system's random number generator.
    ///
    /// # Panics
    ///
    /// If the operating system cannot supply random bytes.
    pub fn generate() -> Self {
        Self::from_bytes(&random_key_bytes())
    }

    /// Expands 32 raw key bytes: the first 16 key the HMAC, the last 16 key AES.
    ///
    /// The caller owns `bytes` and should wipe them once the key is built.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        let (signing_key, encryption_key) = bytes.split_at(KEY_LEN / 2);
        let signing = Hmac::new_from_slice(signing_key).expect("HMAC takes keys of any length");
        let encryption =
            Aes128::new_from_slice(encryption_key).expect("the second half of a key is 16 bytes");
        Self {
            signing,
            encryption,
        }
    }

    /// Reads a key in the text form Python's `Fernet.generate_key()` prints: 32 bytes as
    /// url-safe base64 with padding, 44 characters.
    ///
    /// This is stricter than Python, which also accepts `+`, `/`, embedded whitespace,
    /// trailing text and non-canonical final bits (see the module docs). Keys made by Python
    /// or by [`generate_key_base64`] always pass.
    ///
    /// # Errors
    ///
    /// [`KeyFormatError`] if `encoded` is not exactly that form.
    pub fn from_base64(encoded: &str) -> Result<Self, KeyFormatError> {
        let bytes = decode_key(encoded)?;
        Ok(Self::from_bytes(&bytes))
    }

    /// Seals `plaintext` into a token stamped with the current time, under a fresh random IV
    /// from the operating system.
    ///
    /// Encrypts first (AES-128-CBC, PKCS#7), then MACs version, timestamp, IV and ciphertext.
    ///
    /// # Panics
    ///
    /// If the operating system cannot supply random bytes.
    pub fn encrypt(&self, plaintext: &[u8]) -> Token {
        let mut iv = [0; BLOCK_LEN];
        fill_from_os(&mut iv);
        self.encrypt_from_parts(plaintext, unix_now(), &iv)
    }

    /// Seals `plaintext` with a caller-chosen timestamp and IV.
    ///
    /// Not part of the API: it exists so the spec's known-answer vector can be reproduced
    /// byte for byte. Reusing an IV under one key shows which plaintexts start with the same
    /// blocks, so everything else goes through [`FernetKey::encrypt`].
    #[doc(hidden)]
    pub fn encrypt_from_parts(&self, plaintext: &[u8], timestamp: u64, iv: &[u8; 16]) -> Token {
        let padded_len = (plaintext.len() / BLOCK_LEN + 1) * BLOCK_LEN;
        let mut sealed = Vec::with_capacity(HEADER_LEN + padded_len + TAG_LEN);
        sealed.push(VERSION);
        sealed.extend_from_slice(&timestamp.to_be_bytes());
        sealed.extend_from_slice(iv);

        // The capacity above is exact, so the buffer never moves and the plaintext copied
        // into it is overwritten in place by ciphertext, leaving no stray copy behind.
        sealed.extend_from_slice(plaintext);
        sealed.resize(HEADER_LEN + padded_len, 0);
        cbc::Encryptor::<&Aes128>::inner_iv_init(&self.encryption, iv.into())
            .encrypt_padded::<Pkcs7>(&mut sealed[HEADER_LEN..], plaintext.len())
            .expect("the buffer holds the plaintext plus a full block for padding");

        let tag = self.signing.clone().chain_update(&sealed).finalize();
        sealed.extend_from_slice(&tag.into_bytes());
        Token(URL_SAFE.encode(&sealed))
    }

    /// Opens `token`, judging its age against the system clock.
    ///
    /// With `ttl` of `Some(seconds)`, the token must be at most that old and at most 60
    /// seconds in the future; with `None` its timestamp is not looked at. A clock set
    /// before 1970 counts as 1970.
    ///
    /// # Errors
    ///
    /// [`InvalidToken`] for every failure; see [`FernetKey::decrypt_at_time`].
    pub fn decrypt(&self, token: &str, ttl: Option<u64>) -> Result<Plaintext, InvalidToken> {
        self.decrypt_at_time(token, ttl, unix_now())
    }

    /// Opens `token` as if the time were `now` (unix seconds).
    ///
    /// The checks run in this order: strict base64, version and length, the HMAC in
    /// constant time, then the time window if `ttl` is given (rejecting
    /// `timestamp + ttl < now` and `now + 60 < timestamp`, Python's rules, computed without
    /// overflow), and only then decryption and the PKCS#7 padding check.
    ///
    /// # Errors
    ///
    /// [`InvalidToken`], the same value whichever check failed.
    pub fn decrypt_at_time(
        &self,
        token: &str,
        ttl: Option<u64>,
        now: u64,
    ) -> Result<Plaintext, InvalidToken> {
        let decoded = URL_SAFE.decode(token).map_err(|_| InvalidToken)?;
        let sealed = Sealed::parse(&decoded)?;

        let mut mac = self.signing.clone();
        mac.update(sealed.signed);
        mac.verify_slice(sealed.tag).map_err(|_| InvalidToken)?;

        check_age(sealed.timestamp, ttl, now)?;
        self.open(sealed.iv, sealed.ciphertext)
    }

    /// Decrypts and unpads ciphertext whose tag has already been verified.
    ///
    /// The PKCS#7 check returns early and is not constant-time. That is sound only because
    /// no unauthenticated ciphertext ever gets here: keep it behind the MAC check.
    fn open(&self, iv: &[u8; BLOCK_LEN], ciphertext: &[u8]) -> Result<Plaintext, InvalidToken> {
        let mut work = Zeroizing::new(vec![0; ciphertext.len()]);
        let plaintext = cbc::Decryptor::<&Aes128>::inner_iv_init(&self.encryption, iv.into())
            .decrypt_padded_b2b::<Pkcs7>(ciphertext, &mut work)
            .map_err(|_| InvalidToken)?;

        // A fresh allocation of exactly the plaintext's size: shrinking `work` in place could
        // move it and leave an unwiped copy behind.
        Ok(Plaintext::new(Box::from(plaintext)))
    }
}

impl fmt::Debug for FernetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FernetKey { .. }")
    }
}

/// Makes a new random key in the text form Python's `Fernet.generate_key()` prints, for
/// `vaultctl gen-key`. [`FernetKey::from_base64`] reads it back.
///
/// # Panics
///
/// If the operating system cannot supply random bytes.
pub fn generate_key_base64() -> SecretString {
    let bytes = random_key_bytes();

    let mut text = Zeroizing::new([0; ENCODED_KEY_LEN]);
    let written = URL_SAFE
        .encode_slice(bytes.as_slice(), text.as_mut_slice())
        .expect("44 bytes hold the padded base64 of 32 bytes");
    let text = std::str::from_utf8(&text[..written]).expect("base64 output is ASCII");

    SecretString::new(Box::from(text))
}

/// Decodes a key in Fernet's text form into its 32 raw bytes, with the same strict rules as
/// [`FernetKey::from_base64`], for callers that derive other keys from the raw bytes.
pub fn decode_key(encoded: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyFormatError> {
    if encoded.len() != ENCODED_KEY_LEN {
        return Err(KeyFormatError);
    }

    // Decode into a wiped buffer of our own; the allocating decoder would drop a partly
    // decoded key unwiped on its error path.
    let mut bytes = Zeroizing::new([0; KEY_LEN]);
    let decoded_len = URL_SAFE
        .decode_slice(encoded, bytes.as_mut_slice())
        .map_err(|_| KeyFormatError)?;
    if decoded_len != KEY_LEN {
        return Err(KeyFormatError);
    }
    Ok(bytes)
}

/// Whether `token` has the shape of a Fernet token (base64, version, lengths), without any
/// key. It says nothing about authenticity; it lets an import tell a mangled row from one
/// sealed under another key.
pub fn is_well_formed(token: &str) -> bool {
    URL_SAFE
        .decode(token)
        .is_ok_and(|decoded| Sealed::parse(&decoded).is_ok())
}

/// The fields of a decoded token, borrowed from it; nothing here is authenticated yet.
struct Sealed<'a> {
    /// Everything the tag covers.
    signed: &'a [u8],
    tag: &'a [u8; TAG_LEN],
    timestamp: u64,
    iv: &'a [u8; BLOCK_LEN],
    ciphertext: &'a [u8],
}

impl<'a> Sealed<'a> {
    /// Splits a decoded token, rejecting a wrong version or an impossible length.
    fn parse(decoded: &'a [u8]) -> Result<Self, InvalidToken> {
        let (signed, tag) = decoded.split_last_chunk().ok_or(InvalidToken)?;
        let (&version, rest) = signed.split_first().ok_or(InvalidToken)?;
        let (timestamp, rest) = rest.split_first_chunk().ok_or(InvalidToken)?;
        let (iv, ciphertext) = rest.split_first_chunk().ok_or(InvalidToken)?;

        let whole_blocks = !ciphertext.is_empty() && ciphertext.len() % BLOCK_LEN == 0;
        if version != VERSION || !whole_blocks {
            return Err(InvalidToken);
        }

        Ok(Self {
            signed,
            tag,
            timestamp: u64::from_be_bytes(*timestamp),
            iv,
            ciphertext,
        })
    }
}

/// Python's time window. Sums are taken in `u128` so timestamps up to `u64::MAX` cannot wrap.
fn check_age(timestamp: u64, ttl: Option<u64>, now: u64) -> Result<(), InvalidToken> {
    let Some(ttl) = ttl else {
        return Ok(());
    };
    let (timestamp, ttl, now) = (u128::from(timestamp), u128::from(ttl), u128::from(now));

    let expired = timestamp + ttl < now;
    let from_the_future = now + u128::from(MAX_CLOCK_SKEW) < timestamp;
    if expired || from_the_future {
        return Err(InvalidToken);
    }
    Ok(())
}

fn random_key_bytes() -> Zeroizing<[u8; KEY_LEN]> {
    let mut bytes = Zeroizing::new([0; KEY_LEN]);
    fill_from_os(bytes.as_mut_slice());
    bytes
}

/// Fills `buf` straight from the operating system, with no user-space generator in between.
fn fill_from_os(buf: &mut [u8]) {
    SysRng
        .try_fill_bytes(buf)
        .expect("the operating system's random number generator is available");
}

/// Seconds since the unix epoch, or 0 if the clock reads earlier.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
