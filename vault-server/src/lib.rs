//! The credential vault server.

pub mod crypto;
