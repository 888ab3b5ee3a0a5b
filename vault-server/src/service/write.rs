//! StoreCredential and UpdateCredential: the calls that seal a secret.

use vault_proto::v1;

use super::call::Call;
use super::error::ServiceError;
use super::{VaultService, convert};
use crate::credential::{CredentialId, Fields, InvalidField, Record, UnixMillis};
use crate::crypto::sealing::RecordBinding;
use crate::store::{CredentialStore, Replaced};

/// How often an update re-reads and retries after losing a race with another
/// writer before it gives up with ABORTED.
const UPDATE_ATTEMPTS: usize = 8;

/// How many fresh ids a store draws before it gives up; with 128-bit random
/// ids even a second attempt means the generator is broken.
const ID_ATTEMPTS: usize = 3;

impl<S: CredentialStore + Clone> VaultService<S> {
    /// Seals the secret to a new random id and stores the record.
    pub(super) async fn store(
        &self,
        call: &Call,
        mut request: v1::StoreCredentialRequest,
    ) -> Result<v1::StoreCredentialResponse, ServiceError> {
        let owner = convert::user_id(&request.user_id)?;
        call.user(&owner);
        let fields = convert::fields(request.fields.take())?
            .ok_or_else(|| InvalidField::new("fields", "required"))?;
        let secret = convert::secret(&mut request.secret)?;

        // 128 random bits do not collide in practice; the store refuses to
        // overwrite anyway, and a fresh id is drawn if it ever does.
        let _permit = self.keys.keyring_permit().await;
        let keyring = self.keys.current();
        for _ in 0..ID_ATTEMPTS {
            let id = CredentialId::generate();
            let now = UnixMillis::now();
            let binding = RecordBinding {
                owner: &owner,
                id: &id,
            };
            let record = Record {
                secret: keyring.seal(binding, &secret),
                id,
                owner: owner.clone(),
                fields: fields.clone(),
                created_at: now,
                updated_at: now,
            };
            call.credential(&id);
            let inserted = self.store.insert(&record, &call.success()).await;
            if call.wrote(inserted, |inserted| *inserted)? {
                return Ok(v1::StoreCredentialResponse {
                    credential: Some(convert::credential(&record)),
                });
            }
        }
        Err(ServiceError::IdCollisions)
    }

    /// Replaces the fields and/or the secret of one credential.
    pub(super) async fn update(
        &self,
        call: &Call,
        mut request: v1::UpdateCredentialRequest,
    ) -> Result<v1::UpdateCredentialResponse, ServiceError> {
        let owner = convert::user_id(&request.user_id)?;
        let id = convert::credential_id(&request.credential_id)?;
        call.user(&owner);
        call.credential(&id);
        let fields = convert::fields(request.fields.take())?;
        let secret = request.secret.as_mut().map(convert::secret).transpose()?;
        if fields.is_none() && secret.is_none() {
            return Err(InvalidField::new("fields, secret", "give at least one to change").into());
        }
        // Seal once, up front: the token depends only on the record's
        // identity, not on what a racing writer may have stored meanwhile.
        // The plaintext buffer is wiped as soon as it is sealed.
        let _permit = self.keys.keyring_permit().await;
        let binding = RecordBinding {
            owner: &owner,
            id: &id,
        };
        let sealed = secret.map(|secret| self.keys.current().seal(binding, &secret));

        for _ in 0..UPDATE_ATTEMPTS {
            let current = self.store.get(&owner, &id)?.ok_or(ServiceError::NotFound)?;
            let mut updated = current.clone();
            if let Some(fields) = &fields {
                if fields.kind() != current.fields.kind() {
                    return Err(InvalidField::new(
                        "fields",
                        format!(
                            "a {} credential cannot become {}",
                            current.fields.kind(),
                            fields.kind()
                        ),
                    )
                    .into());
                }
                if sealed.is_none() && moves_the_secret(&current.fields, fields) {
                    return Err(InvalidField::new(
                        "secret",
                        "required when the URL changes: a stored password is never sent to an \
                         address it was not given for; send it again with the new URL",
                    )
                    .into());
                }
                updated.fields = fields.clone();
            }
            if let Some(sealed) = &sealed {
                updated.secret = sealed.clone();
            }
            updated.updated_at = UnixMillis::now().max(current.updated_at);

            let replaced = self
                .store
                .replace(&current, &updated, &call.success())
                .await;
            if call.wrote(replaced, |replaced| *replaced == Replaced::Done)? == Replaced::Done {
                return Ok(v1::UpdateCredentialResponse {
                    credential: Some(convert::credential(&updated)),
                });
            }
        }
        Err(ServiceError::Contended)
    }
}

/// Whether `new` fields would send the stored secret somewhere else than
/// `old` ones: a new URL. Someone allowed to update a credential could
/// otherwise point it at their own server and have the next sync deliver
/// the password there.
fn moves_the_secret(old: &Fields, new: &Fields) -> bool {
    match (old, new) {
        (Fields::Odoo(old), Fields::Odoo(new)) => old.url() != new.url(),
    }
}
