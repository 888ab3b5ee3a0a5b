//! DecryptCredential: the only call that returns a secret.

use secrecy::ExposeSecret;
use vault_proto::v1;

use super::call::Call;
use super::error::ServiceError;
use super::{VaultService, convert};
use crate::access::{Caller, Operation};
use crate::crypto::sealing::{OpenError, RecordBinding};
use crate::store::CredentialStore;

impl<S: CredentialStore + Clone> VaultService<S> {
    /// Opens one credential's secret for the stated purpose.
    pub(super) async fn decrypt(
        &self,
        call: &Call,
        caller: &Caller,
        request: v1::DecryptCredentialRequest,
    ) -> Result<v1::DecryptCredentialResponse, ServiceError> {
        let owner = convert::user_id(&request.user_id)?;
        let id = convert::credential_id(&request.credential_id)?;
        call.user(&owner);
        call.credential(&id);
        let purpose = convert::purpose(request.purpose)?;
        call.purpose(purpose);
        self.policy
            .current()
            .authorize(caller, Operation::Decrypt, Some(purpose))?;

        // Read and open under the same keyring: a reload cannot retire the
        // key of a record between the two.
        let _permit = self.keys.keyring_permit().await;
        let record = self.store.get(&owner, &id)?.ok_or(ServiceError::NotFound)?;
        let binding = RecordBinding {
            owner: &owner,
            id: &id,
        };
        let secret =
            self.keys
                .current()
                .open(binding, &record.secret)
                .map_err(|err| match err {
                    OpenError::Integrity => ServiceError::Integrity(id),
                    OpenError::UnknownKeyVersion(version) => {
                        ServiceError::MissingKey { id, version }
                    }
                })?;

        // This copy, and the encoded frames tonic makes of it, are wiped
        // when freed by the server's zeroizing allocator (see `hygiene`).
        Ok(v1::DecryptCredentialResponse {
            credential_id: id.to_string(),
            secret: secret.expose_secret().to_vec(),
        })
    }
}
