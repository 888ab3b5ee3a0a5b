//! Turning wire messages into domain types and back.

use std::time::Duration;

use prost_types::Timestamp;
use vault_proto::v1;
use zeroize::Zeroizing;

use crate::credential::{
    CredentialId, Fields, InvalidField, MAX_SECRET_LEN, OdooConnection, Purpose, Record,
    UnixMillis, UserId,
};

/// Parses the `user_id` of a request.
pub fn user_id(raw: &str) -> Result<UserId, InvalidField> {
    UserId::parse("user_id", raw)
}

/// Parses the `credential_id` of a request.
pub fn credential_id(raw: &str) -> Result<CredentialId, InvalidField> {
    CredentialId::parse("credential_id", raw)
}

/// Parses the `fields` of a request; `None` when absent.
pub fn fields(raw: Option<v1::CredentialFields>) -> Result<Option<Fields>, InvalidField> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    match raw.kind {
        Some(v1::credential_fields::Kind::Odoo(odoo)) => Ok(Some(Fields::Odoo(
            OdooConnection::new(&odoo.url, &odoo.database, &odoo.username)?,
        ))),
        None => Err(InvalidField::new(
            "fields",
            "must set one kind of credential (odoo)",
        )),
    }
}

/// Takes the secret out of a request into a buffer that is wiped on drop,
/// leaving the request's copy empty.
pub fn secret(raw: &mut Vec<u8>) -> Result<Zeroizing<Vec<u8>>, InvalidField> {
    let secret = Zeroizing::new(std::mem::take(raw));
    if secret.is_empty() {
        return Err(InvalidField::new("secret", "must not be empty"));
    }
    if secret.len() > MAX_SECRET_LEN {
        return Err(InvalidField::new(
            "secret",
            format!("must be at most {MAX_SECRET_LEN} bytes"),
        ));
    }
    Ok(secret)
}

/// Parses the `purpose` of a decrypt request.
pub fn purpose(raw: i32) -> Result<Purpose, InvalidField> {
    match v1::Purpose::try_from(raw) {
        Ok(v1::Purpose::ConnectionTest) => Ok(Purpose::ConnectionTest),
        Ok(v1::Purpose::Sync) => Ok(Purpose::Sync),
        Ok(v1::Purpose::Unspecified) => Err(InvalidField::new(
            "purpose",
            "must be set (PURPOSE_CONNECTION_TEST or PURPOSE_SYNC)",
        )),
        Err(_) => Err(InvalidField::new(
            "purpose",
            format!("unknown purpose {raw} (expected PURPOSE_CONNECTION_TEST or PURPOSE_SYNC)"),
        )),
    }
}

/// A record as callers see it: everything but the secret.
pub fn credential(record: &Record) -> v1::Credential {
    let fields = match &record.fields {
        Fields::Odoo(odoo) => v1::credential_fields::Kind::Odoo(v1::OdooConnection {
            url: odoo.url().to_owned(),
            database: odoo.database().to_owned(),
            username: odoo.username().to_owned(),
        }),
    };
    v1::Credential {
        id: record.id.to_string(),
        user_id: record.owner.as_str().to_owned(),
        fields: Some(v1::CredentialFields { kind: Some(fields) }),
        created_at: Some(timestamp(record.created_at)),
        updated_at: Some(timestamp(record.updated_at)),
    }
}

/// A time kept in milliseconds as a protobuf timestamp.
pub fn timestamp(at: UnixMillis) -> Timestamp {
    let since_epoch = Duration::from_millis(at.0);
    Timestamp {
        seconds: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0),
    }
}
