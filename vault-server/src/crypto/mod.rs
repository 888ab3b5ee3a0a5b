//! Cryptography of the vault: Fernet tokens, the keyring, per-record keys.

pub mod fernet;
