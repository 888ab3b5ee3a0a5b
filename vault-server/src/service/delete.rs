//! DeleteCredential and EraseUser: hard deletes, durable when acknowledged.

use vault_proto::v1;

use super::call::Call;
use super::error::ServiceError;
use super::{VaultService, convert};
use crate::store::CredentialStore;

impl<S: CredentialStore + Clone> VaultService<S> {
    /// Deletes one credential of one user.
    pub(super) async fn delete(
        &self,
        call: &Call,
        request: v1::DeleteCredentialRequest,
    ) -> Result<v1::DeleteCredentialResponse, ServiceError> {
        let owner = convert::user_id(&request.user_id)?;
        let id = convert::credential_id(&request.credential_id)?;
        call.user(&owner);
        call.credential(&id);

        let removed = self.store.remove(&owner, &id, &call.success()).await;
        if !call.wrote(removed, |removed| *removed)? {
            return Err(ServiceError::NotFound);
        }
        Ok(v1::DeleteCredentialResponse {})
    }

    /// Deletes every credential of one user.
    pub(super) async fn erase(
        &self,
        call: &Call,
        request: v1::EraseUserRequest,
    ) -> Result<v1::EraseUserResponse, ServiceError> {
        let owner = convert::user_id(&request.user_id)?;
        call.user(&owner);

        let deleted = call.wrote(self.store.erase(&owner, &call.success()).await, |_| true)?;
        Ok(v1::EraseUserResponse {
            deleted: u32::try_from(deleted).unwrap_or(u32::MAX),
        })
    }
}
