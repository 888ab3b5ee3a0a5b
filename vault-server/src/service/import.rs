//! ImportCredentials: moving another application's Fernet-sealed passwords
//! into the vault without the plaintext ever leaving the server.
//!
//! The application's key is in the keyring as a `legacy` key. Each row's
//! token is opened with it here, sealed again under the vault's own scheme
//! (see [`crate::crypto::sealing`]), and the plaintext is wiped. A row is
//! imported whole or not at all; a user who already has a credential with
//! the same fields is skipped, so running the same import twice adds
//! nothing.

use secrecy::ExposeSecret as _;
use vault_proto::v1;

use super::VaultService;
use super::call::Call;
use super::error::ServiceError;
use crate::credential::{
    CredentialId, Fields, InvalidField, MAX_SECRET_LEN, OdooConnection, Record, UnixMillis, UserId,
};
use crate::crypto::fernet::{self, Plaintext};
use crate::crypto::keyring::Keyring;
use crate::crypto::sealing::RecordBinding;
use crate::store::CredentialStore;

/// Most rows one call may carry.
pub const MAX_IMPORT_ROWS: usize = 1000;

/// What became of one row.
enum Outcome {
    Imported,
    Skipped,
    Rejected(String),
}

impl<S: CredentialStore + Clone> VaultService<S> {
    /// Imports a batch of rows and reports on each.
    pub(super) async fn import(
        &self,
        call: &Call,
        request: v1::ImportCredentialsRequest,
    ) -> Result<v1::ImportCredentialsResponse, ServiceError> {
        if request.rows.len() > MAX_IMPORT_ROWS {
            return Err(InvalidField::new(
                "rows",
                format!("at most {MAX_IMPORT_ROWS} rows a call"),
            )
            .into());
        }
        if self.keys.current().legacy_keys().is_empty() {
            return Err(ServiceError::FailedPrecondition(
                "the keyring holds no legacy key: add `legacy NAME KEY` with the application's \
                 Fernet key to the keyring, and reload it"
                    .into(),
            ));
        }

        let _one_at_a_time = self.import.lock().await;
        let mut report = v1::ImportCredentialsResponse::default();
        for row in request.rows {
            let line = row.line;
            match self.import_row(call, row).await? {
                Outcome::Imported => report.imported += 1,
                Outcome::Skipped => report.skipped += 1,
                Outcome::Rejected(reason) => {
                    report.rejected.push(v1::ImportRejection { line, reason })
                }
            }
        }
        let summary = format!(
            "imported={} skipped={} rejected={}",
            report.imported,
            report.skipped,
            report.rejected.len()
        );
        tracing::info!(summary, "import batch done");
        call.detail(summary);
        Ok(report)
    }

    async fn import_row(&self, call: &Call, row: v1::ImportRow) -> Result<Outcome, ServiceError> {
        let (owner, fields) = match parse_row(&row) {
            Ok(parsed) => parsed,
            Err(field) => return Ok(Outcome::Rejected(field.to_string())),
        };
        let _permit = self.keys.keyring_permit().await;
        let keyring = self.keys.current();
        let secret = match open_legacy(&keyring, &row.token) {
            Ok(secret) => secret,
            Err(reason) => return Ok(Outcome::Rejected(reason)),
        };
        if self.has_credential(&owner, &fields)? {
            return Ok(Outcome::Skipped);
        }

        let id = CredentialId::generate();
        let now = UnixMillis::now();
        let binding = RecordBinding {
            owner: &owner,
            id: &id,
        };
        // Each imported row is a change of its own, with its own event.
        let mut event = call.success();
        event.operation = "import.row".into();
        event.user_id = owner.to_string();
        event.credential_id = id.to_string();
        event.detail = format!("line={}", row.line);
        let record = Record {
            secret: keyring.seal(binding, secret.expose_secret()),
            id,
            owner,
            fields,
            created_at: now,
            updated_at: now,
        };
        Ok(if self.store.insert(&record, &event).await? {
            Outcome::Imported
        } else {
            Outcome::Rejected("credential id collision; import the row again".into())
        })
    }

    /// Whether `owner` already has a credential with exactly these fields.
    fn has_credential(&self, owner: &UserId, fields: &Fields) -> Result<bool, ServiceError> {
        let mut after = None;
        loop {
            let page = self.store.list(owner, after.as_ref(), 1000)?;
            if page.iter().any(|record| &record.fields == fields) {
                return Ok(true);
            }
            match page.last() {
                Some(last) => after = Some(last.id),
                None => return Ok(false),
            }
        }
    }
}

fn parse_row(row: &v1::ImportRow) -> Result<(UserId, Fields), InvalidField> {
    let owner = UserId::parse("user_id", &row.user_id)?;
    let odoo = row
        .odoo
        .as_ref()
        .ok_or_else(|| InvalidField::new("odoo", "missing"))?;
    let fields = Fields::Odoo(OdooConnection::new(
        &odoo.url,
        &odoo.database,
        &odoo.username,
    )?);
    Ok((owner, fields))
}

/// Opens a row's token with the first legacy key that takes it.
fn open_legacy(keyring: &Keyring, token: &str) -> Result<Plaintext, String> {
    if token.is_empty() {
        return Err("token: missing".into());
    }
    if !fernet::is_well_formed(token) {
        return Err("token: malformed (not a Fernet token)".into());
    }
    let secret = keyring
        .legacy_keys()
        .iter()
        .find_map(|key| key.fernet().decrypt(token, None).ok())
        .ok_or("token: does not open under any legacy key (wrong key, or tampered with)")?;
    match secret.expose_secret().len() {
        0 => Err("token: holds an empty password".into()),
        len if len > MAX_SECRET_LEN => Err(format!(
            "token: holds a password over {MAX_SECRET_LEN} bytes"
        )),
        _ => Ok(secret),
    }
}
