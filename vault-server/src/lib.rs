//! The credential vault server.
//!
//! The vault holds the only copy of the master keys and offers callers three
//! things: encrypt-and-store a credential, decrypt it for a stated purpose,
//! and delete it. How the parts fit:
//!
//! - [`credential`]: the domain types, validated on construction;
//! - [`crypto`]: Fernet tokens, the keyring, and the per-record keys that
//!   bind each token to its owner and id;
//! - [`store`]: the narrow storage interface and its sled implementation,
//!   with group commit so every acknowledged write is durable;
//! - [`service`]: the gRPC service, one module per family of calls;
//! - [`config`] and [`server`]: settings and the process around it all.

pub mod config;
pub mod credential;
pub mod crypto;
pub mod server;
pub mod service;
pub mod store;
