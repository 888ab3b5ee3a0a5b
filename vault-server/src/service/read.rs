//! GetCredential and ListCredentials: reads that never touch a secret.

use vault_proto::v1;

use super::call::Call;
use super::error::ServiceError;
use super::{VaultService, convert};
use crate::credential::InvalidField;
use crate::store::CredentialStore;

/// Page size when the request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// Largest page a caller may ask for.
pub const MAX_PAGE_SIZE: u32 = 1000;

impl<S: CredentialStore + Clone> VaultService<S> {
    /// Reads one credential of one user.
    pub(super) async fn get(
        &self,
        call: &Call,
        request: v1::GetCredentialRequest,
    ) -> Result<v1::GetCredentialResponse, ServiceError> {
        let owner = convert::user_id(&request.user_id)?;
        let id = convert::credential_id(&request.credential_id)?;
        call.user(&owner);
        call.credential(&id);

        let record = self.store.get(&owner, &id)?.ok_or(ServiceError::NotFound)?;
        Ok(v1::GetCredentialResponse {
            credential: Some(convert::credential(&record)),
        })
    }

    /// Reads one page of a user's credentials.
    pub(super) async fn list(
        &self,
        call: &Call,
        request: v1::ListCredentialsRequest,
    ) -> Result<v1::ListCredentialsResponse, ServiceError> {
        let owner = convert::user_id(&request.user_id)?;
        call.user(&owner);
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if size <= MAX_PAGE_SIZE => size,
            _ => {
                return Err(InvalidField::new(
                    "page_size",
                    format!("must be at most {MAX_PAGE_SIZE}"),
                )
                .into());
            }
        };
        let after = match request.page_token.as_str() {
            "" => None,
            token => Some(convert::credential_id(token).map_err(|_| {
                InvalidField::new(
                    "page_token",
                    "must be empty or the next_page_token of an earlier page",
                )
            })?),
        };

        // Read one more than asked to learn whether another page follows.
        let page_size = page_size as usize;
        let mut records = self.store.list(&owner, after.as_ref(), page_size + 1)?;
        let next_page_token = if records.len() > page_size {
            records.truncate(page_size);
            records
                .last()
                .map(|last| last.id.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(v1::ListCredentialsResponse {
            credentials: records.iter().map(convert::credential).collect(),
            next_page_token,
        })
    }
}
