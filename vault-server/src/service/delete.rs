//! DeleteCredential and EraseUser: hard deletes, durable when acknowledged.

use vault_proto::v1;

use super::error::ServiceError;
use super::{VaultService, convert, record_credential, record_user};
use crate::store::CredentialStore;

impl<S: CredentialStore + Clone> VaultService<S> {
    /// Deletes one credential of one user.
    pub(super) async fn delete(
        &self,
        request: v1::DeleteCredentialRequest,
    ) -> Result<v1::DeleteCredentialResponse, ServiceError> {
        let owner = convert::user_id(&request.user_id)?;
        let id = convert::credential_id(&request.credential_id)?;
        record_user(&owner);
        record_credential(&id);

        if !self.store.remove(&owner, &id).await? {
            return Err(ServiceError::NotFound);
        }
        Ok(v1::DeleteCredentialResponse {})
    }

    /// Deletes every credential of one user.
    pub(super) async fn erase(
        &self,
        request: v1::EraseUserRequest,
    ) -> Result<v1::EraseUserResponse, ServiceError> {
        let owner = convert::user_id(&request.user_id)?;
        record_user(&owner);

        let deleted = self.store.erase(&owner).await?;
        Ok(v1::EraseUserResponse {
            deleted: u32::try_from(deleted).unwrap_or(u32::MAX),
        })
    }
}
