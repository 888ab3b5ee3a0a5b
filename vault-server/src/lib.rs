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
//! - [`backup`]: backup files of the whole store, and restoring one;
//! - [`access`]: caller identities from client certificates, and the policy
//!   that says which caller may do what;
//! - [`service`]: the gRPC service, one module per family of calls;
//! - [`transport`]: mutual TLS with reloadable certificates;
//! - [`config`], [`dev`], [`reload`] and [`server`]: settings, the `--dev`
//!   setup, and the process around it all;
//! - [`hygiene`]: no core dumps, no key in the environment, optionally no
//!   swapping.

pub mod access;
pub mod audit;
pub mod backup;
pub mod check;
pub mod config;
pub mod credential;
pub mod crypto;
pub mod dev;
pub mod files;
pub mod hygiene;
pub mod keys;
pub mod limits;
pub mod reload;
pub mod server;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod transport;
