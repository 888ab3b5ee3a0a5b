//! Wire types of the credential vault API, package `vault.v1`.
//!
//! The messages and the tonic client and server stubs are generated at build
//! time by `build.rs` from `vault/v1/vault.proto`, which documents every field.
//! The `.proto` is compiled with protox, so building needs no system `protoc`.
//! The stubs use [`codec::VaultCodec`], which reports undecodable messages as
//! INVALID_ARGUMENT.
//!
//! prost derives `Debug` for every message. The three messages that carry a
//! secret opt out of that in `build.rs`, and their `Debug` below prints a
//! placeholder instead, so a stray `{:?}` can never put a secret in a log.

use std::fmt;

pub mod codec;

/// Version 1 of the API.
pub mod v1 {
    #![allow(missing_docs, unused_qualifications)]
    tonic::include_proto!("vault.v1");
}

/// The encoded `FileDescriptorSet` of the API, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("vault_descriptor");

/// Stands in for a secret in `Debug` output: says whether one is there and
/// how long it is, never what it is.
struct Redacted(Option<usize>);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(len) => write!(f, "<redacted {len} bytes>"),
            None => f.write_str("None"),
        }
    }
}

impl fmt::Debug for v1::StoreCredentialRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreCredentialRequest")
            .field("user_id", &self.user_id)
            .field("fields", &self.fields)
            .field("secret", &Redacted(Some(self.secret.len())))
            .finish()
    }
}

impl fmt::Debug for v1::UpdateCredentialRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateCredentialRequest")
            .field("user_id", &self.user_id)
            .field("credential_id", &self.credential_id)
            .field("fields", &self.fields)
            .field("secret", &Redacted(self.secret.as_ref().map(Vec::len)))
            .finish()
    }
}

impl fmt::Debug for v1::DecryptCredentialResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecryptCredentialResponse")
            .field("credential_id", &self.credential_id)
            .field("secret", &Redacted(Some(self.secret.len())))
            .finish()
    }
}

impl fmt::Debug for v1::ImportRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportRow")
            .field("line", &self.line)
            .field("user_id", &self.user_id)
            .field("odoo", &self.odoo)
            .field("token", &Redacted(Some(self.token.len())))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::v1;

    #[test]
    fn debug_of_secret_bearing_messages_hides_the_secret() {
        let marker = b"hunter2-marker".to_vec();
        let store = v1::StoreCredentialRequest {
            user_id: "u1".into(),
            fields: None,
            secret: marker.clone(),
        };
        let update = v1::UpdateCredentialRequest {
            secret: Some(marker.clone()),
            ..Default::default()
        };
        let decrypted = v1::DecryptCredentialResponse {
            credential_id: "c1".into(),
            secret: marker,
        };
        let imported = v1::ImportRow {
            token: "hunter2-marker".into(),
            ..Default::default()
        };

        for printed in [
            format!("{store:?}"),
            format!("{update:?}"),
            format!("{decrypted:?}"),
            format!("{imported:?}"),
        ] {
            assert!(!printed.contains("hunter2"), "secret leaked: {printed}");
            assert!(printed.contains("<redacted 14 bytes>"), "{printed}");
        }
    }
}
