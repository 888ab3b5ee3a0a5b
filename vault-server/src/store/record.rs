//! How a [`Record`] is laid out in storage.
//!
//! A stored value is one format byte, then (in format 1) the version of the
//! master key that sealed the secret as a big-endian `u32`, then a protobuf
//! body. The format byte lets a later version change the layout and still
//! read, or migrate, what earlier versions wrote. The key version sits at a
//! fixed offset so that counting records per key, or finding the records a
//! rotation must re-seal, reads five bytes of each value and decodes nothing.
//! The body is this module's own message, not the API's: the wire API and
//! the disk layout evolve separately.
//!
//! Keys are `user_id || 0x00 || credential id (16 bytes)`. A user id never
//! contains NUL, so `user_id || 0x00` is a prefix that selects exactly one
//! user's records, in credential id order.
//!
//! Decoding re-validates every field, so a value edited on disk is refused
//! rather than served.

use prost::Message;

use crate::credential::{
    CredentialId, Fields, InvalidField, OdooConnection, Record, SealedSecret, UnixMillis, UserId,
};
use crate::crypto::fernet::Token;

/// The only body format so far.
const FORMAT_V1: u8 = 1;

/// A stored value that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The value is empty or starts with an unknown format byte.
    #[error("unknown record format {0:?}")]
    UnknownFormat(Option<u8>),
    /// The body is not valid protobuf.
    #[error("malformed record body")]
    Malformed,
    /// A field holds a value the vault would never have written.
    #[error("invalid stored field {0}")]
    Invalid(InvalidField),
    /// The value names another record than the key it is stored under.
    #[error("record stored under another record's key")]
    Misplaced,
}

/// The key of one record.
pub fn key(owner: &UserId, id: &CredentialId) -> Vec<u8> {
    let mut key = owner_prefix(owner);
    key.extend_from_slice(id.as_bytes());
    key
}

/// The prefix shared by every key of one owner.
pub fn owner_prefix(owner: &UserId) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(owner.as_str().len() + 1 + CredentialId::LEN);
    prefix.extend_from_slice(owner.as_str().as_bytes());
    prefix.push(0);
    prefix
}

/// Encodes a record as a stored value.
pub fn encode(record: &Record) -> Vec<u8> {
    let body = RecordV1::from(record);
    let mut value = Vec::with_capacity(HEADER_LEN + body.encoded_len());
    value.push(FORMAT_V1);
    value.extend_from_slice(&record.secret.key_version.to_be_bytes());
    body.encode(&mut value)
        .expect("a Vec grows to fit any protobuf body");
    value
}

/// Length of the fixed header: format byte and key version.
const HEADER_LEN: usize = 5;

/// The key version of a stored value, read from its header alone.
pub fn key_version(value: &[u8]) -> Result<u32, DecodeError> {
    match value.split_first() {
        Some((&FORMAT_V1, rest)) => rest
            .first_chunk::<4>()
            .map(|version| u32::from_be_bytes(*version))
            .ok_or(DecodeError::Malformed),
        other => Err(DecodeError::UnknownFormat(other.map(|(format, _)| *format))),
    }
}

/// Decodes a stored value, checking that it belongs under `key`.
pub fn decode(key: &[u8], value: &[u8]) -> Result<Record, DecodeError> {
    let key_version = key_version(value)?;
    let body = RecordV1::decode(&value[HEADER_LEN..]).map_err(|_| DecodeError::Malformed)?;
    let record = body.into_record(key_version)?;
    if self::key(&record.owner, &record.id) != key {
        return Err(DecodeError::Misplaced);
    }
    Ok(record)
}

/// Body of format 1.
#[derive(Clone, PartialEq, Message)]
struct RecordV1 {
    #[prost(bytes = "vec", tag = "1")]
    id: Vec<u8>,
    #[prost(string, tag = "2")]
    owner: String,
    #[prost(oneof = "FieldsV1", tags = "3")]
    fields: Option<FieldsV1>,
    #[prost(string, tag = "5")]
    token: String,
    #[prost(uint64, tag = "6")]
    created_at_ms: u64,
    #[prost(uint64, tag = "7")]
    updated_at_ms: u64,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum FieldsV1 {
    #[prost(message, tag = "3")]
    Odoo(OdooV1),
}

#[derive(Clone, PartialEq, Message)]
struct OdooV1 {
    #[prost(string, tag = "1")]
    url: String,
    #[prost(string, tag = "2")]
    database: String,
    #[prost(string, tag = "3")]
    username: String,
}

impl From<&Record> for RecordV1 {
    fn from(record: &Record) -> Self {
        let fields = match &record.fields {
            Fields::Odoo(odoo) => FieldsV1::Odoo(OdooV1 {
                url: odoo.url().to_owned(),
                database: odoo.database().to_owned(),
                username: odoo.username().to_owned(),
            }),
        };
        Self {
            id: record.id.as_bytes().to_vec(),
            owner: record.owner.as_str().to_owned(),
            fields: Some(fields),
            token: record.secret.token.as_str().to_owned(),
            created_at_ms: record.created_at.0,
            updated_at_ms: record.updated_at.0,
        }
    }
}

impl RecordV1 {
    fn into_record(self, key_version: u32) -> Result<Record, DecodeError> {
        let body = self;
        let id = <[u8; 16]>::try_from(body.id.as_slice())
            .map_err(|_| DecodeError::Invalid(InvalidField::new("id", "must be 16 bytes")))?;
        let owner = UserId::parse("owner", &body.owner).map_err(DecodeError::Invalid)?;
        let fields = match body.fields {
            Some(FieldsV1::Odoo(odoo)) => Fields::Odoo(
                OdooConnection::new(&odoo.url, &odoo.database, &odoo.username)
                    .map_err(DecodeError::Invalid)?,
            ),
            None => return Err(DecodeError::Invalid(InvalidField::new("fields", "missing"))),
        };
        if body.token.is_empty() {
            return Err(DecodeError::Invalid(InvalidField::new("token", "missing")));
        }
        Ok(Record {
            id: CredentialId::from_bytes(id),
            owner,
            fields,
            secret: SealedSecret {
                key_version,
                token: Token::from_string(body.token),
            },
            created_at: UnixMillis(body.created_at_ms),
            updated_at: UnixMillis(body.updated_at_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn any_record() -> impl Strategy<Value = Record> {
        (
            "[A-Za-z0-9_.:@-]{1,128}",
            "https?://[a-z0-9]{1,20}(\\.[a-z0-9]{1,10}){0,3}(:[1-9][0-9]{0,3})?(/[a-z0-9._-]{0,12}){0,3}",
            "[A-Za-z0-9_.-]{1,64}",
            "[A-Za-z0-9 @._+éß漢-]{1,64}",
            any::<u32>(),
            "[A-Za-z0-9_=-]{1,300}",
            any::<(u64, u64)>(),
        )
            .prop_filter_map(
                "valid fields",
                |(owner, url, database, username, key_version, token, (created, updated))| {
                    Some(Record {
                        id: CredentialId::generate(),
                        owner: UserId::parse("user_id", &owner).ok()?,
                        fields: Fields::Odoo(OdooConnection::new(&url, &database, &username).ok()?),
                        secret: SealedSecret {
                            key_version,
                            token: Token::from_string(token),
                        },
                        created_at: UnixMillis(created),
                        updated_at: UnixMillis(updated),
                    })
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_record_round_trips_through_its_stored_form(record in any_record()) {
            let key = key(&record.owner, &record.id);
            let value = encode(&record);
            prop_assert_eq!(key_version(&value), Ok(record.secret.key_version));
            prop_assert_eq!(decode(&key, &value), Ok(record));
        }

        #[test]
        fn no_stored_bytes_make_the_decoder_panic(
            key in proptest::collection::vec(any::<u8>(), 0..64),
            value in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let _ = key_version(&value);
            let _ = decode(&key, &value);
        }

        #[test]
        fn a_record_with_one_byte_changed_never_decodes_as_another_owners(
            record in any_record(),
            index in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let key = key(&record.owner, &record.id);
            let mut value = encode(&record);
            let index = index.index(value.len());
            value[index] = byte;
            if let Ok(decoded) = decode(&key, &value) {
                prop_assert_eq!(decoded.owner, record.owner);
                prop_assert_eq!(decoded.id, record.id);
            }
        }
    }

    fn sample() -> Record {
        Record {
            id: CredentialId::generate(),
            owner: UserId::parse("user_id", "tenant-7").unwrap(),
            fields: Fields::Odoo(
                OdooConnection::new("https://odoo.example.com", "prod", "sync@example.com")
                    .unwrap(),
            ),
            secret: SealedSecret {
                key_version: 3,
                token: Token::from_string("gAAAAAB-not-a-real-token".into()),
            },
            created_at: UnixMillis(1_700_000_000_000),
            updated_at: UnixMillis(1_700_000_000_500),
        }
    }

    #[test]
    fn records_round_trip_through_their_stored_form() {
        let record = sample();
        let key = key(&record.owner, &record.id);
        assert_eq!(decode(&key, &encode(&record)), Ok(record));
    }

    #[test]
    fn a_value_under_another_key_is_refused() {
        let record = sample();
        let other = key(&record.owner, &CredentialId::generate());
        assert_eq!(
            decode(&other, &encode(&record)),
            Err(DecodeError::Misplaced)
        );
    }

    #[test]
    fn unknown_formats_and_garbage_are_refused() {
        let record = sample();
        let key = key(&record.owner, &record.id);
        let mut value = encode(&record);
        assert_eq!(decode(&key, &[]), Err(DecodeError::UnknownFormat(None)));
        value[0] = 2;
        assert_eq!(
            decode(&key, &value),
            Err(DecodeError::UnknownFormat(Some(2)))
        );
        assert!(decode(&key, &[FORMAT_V1, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn owner_prefixes_do_not_overlap() {
        let (ab, abc) = (
            UserId::parse("u", "ab").unwrap(),
            UserId::parse("u", "abc").unwrap(),
        );
        let id = CredentialId::generate();
        assert!(!key(&abc, &id).starts_with(&owner_prefix(&ab)));
    }
}
