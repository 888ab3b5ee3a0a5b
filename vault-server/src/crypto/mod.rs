//! Cryptography of the vault.
//!
//! - [`fernet`]: the Fernet token format, built from AES-128-CBC and
//!   HMAC-SHA256, compatible with the spec and with Python's `cryptography`.
//! - [`keyring`]: the versioned master keys and the file they come from.
//! - [`sealing`]: per-record keys derived from a master key, which bind each
//!   stored token to its owner and credential id.

pub mod fernet;
pub mod keyring;
pub mod sealing;
