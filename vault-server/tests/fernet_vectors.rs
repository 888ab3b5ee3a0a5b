//! The Fernet spec's acceptance vectors, run against `vault_server::crypto::fernet`.
//!
//! The vectors are read in place from `shared/testdata/fernet/` next to the workspace (see its
//! `README.md` for what each field means). Set `VAULT_TESTDATA_DIR` to a `testdata` directory
//! to read `$VAULT_TESTDATA_DIR/fernet/` instead. Missing files fail the tests; they are never
//! skipped.

// Helpers of a test may unwrap: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::{env, fs};

use secrecy::ExposeSecret;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use vault_server::crypto::fernet::FernetKey;

/// One entry of `generate.json`: encryption with a fixed IV and time must match `token`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateVector {
    token: String,
    now: String,
    iv: [u8; 16],
    src: String,
    secret: String,
}

/// One entry of `verify.json`: `token` must open to `src`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyVector {
    token: String,
    now: String,
    ttl_sec: u64,
    src: String,
    secret: String,
}

/// One entry of `invalid.json`: `token` must be rejected.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvalidVector {
    desc: String,
    token: String,
    now: String,
    ttl_sec: u64,
    secret: String,
}

fn fernet_testdata_dir() -> PathBuf {
    match env::var_os("VAULT_TESTDATA_DIR") {
        Some(testdata) => PathBuf::from(testdata).join("fernet"),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/testdata/fernet"
        )),
    }
}

fn load<T: DeserializeOwned>(file: &str) -> Vec<T> {
    let path = fernet_testdata_dir().join(file);
    let text = fs::read_to_string(&path).unwrap_or_else(|error| {
        panic!(
            "cannot read Fernet vectors at {}: {error} \
             (set VAULT_TESTDATA_DIR to the directory holding fernet/{file})",
            path.display()
        )
    });
    serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("{} is not the expected JSON: {error}", path.display()))
}

/// Unix seconds of an RFC 3339 time, honouring its offset.
fn unix_seconds(rfc3339: &str) -> u64 {
    let time = OffsetDateTime::parse(rfc3339, &Rfc3339)
        .unwrap_or_else(|error| panic!("{rfc3339:?} is not RFC 3339: {error}"));
    u64::try_from(time.unix_timestamp()).unwrap_or_else(|_| panic!("{rfc3339:?} lies before 1970"))
}

fn key(secret: &str) -> FernetKey {
    FernetKey::from_base64(secret)
        .unwrap_or_else(|error| panic!("vector key {secret:?} rejected: {error}"))
}

#[test]
fn times_are_converted_with_their_offsets() {
    // 01:20 at UTC-7 is 08:20 UTC; dropping the offset would give 25200 seconds less.
    assert_eq!(unix_seconds("1985-10-26T01:20:00-07:00"), 499_162_800);
    assert_eq!(unix_seconds("1985-10-26T08:20:00Z"), 499_162_800);
    assert_eq!(unix_seconds("1985-10-26T01:21:31-07:00"), 499_162_891);
}

#[test]
fn generate_vectors_are_reproduced_byte_for_byte() {
    let vectors: Vec<GenerateVector> = load("generate.json");
    assert_eq!(vectors.len(), 1, "generate.json holds one vector");

    for vector in &vectors {
        let token = key(&vector.secret).encrypt_from_parts(
            vector.src.as_bytes(),
            unix_seconds(&vector.now),
            &vector.iv,
        );
        assert_eq!(token.as_str(), vector.token);
    }
}

#[test]
fn verify_vectors_open_to_their_plaintext() {
    let vectors: Vec<VerifyVector> = load("verify.json");
    assert_eq!(vectors.len(), 1, "verify.json holds one vector");

    for vector in &vectors {
        let key = key(&vector.secret);
        let now = unix_seconds(&vector.now);

        let plaintext = key
            .decrypt_at_time(&vector.token, Some(vector.ttl_sec), now)
            .expect("verify vector opens within its ttl");
        assert_eq!(plaintext.expose_secret(), vector.src.as_bytes());

        let plaintext = key
            .decrypt_at_time(&vector.token, None, now)
            .expect("verify vector opens without a ttl");
        assert_eq!(plaintext.expose_secret(), vector.src.as_bytes());
    }
}

#[test]
fn invalid_vectors_are_all_rejected() {
    let vectors: Vec<InvalidVector> = load("invalid.json");
    assert_eq!(vectors.len(), 8, "invalid.json holds eight vectors");

    for vector in &vectors {
        let opened = key(&vector.secret).decrypt_at_time(
            &vector.token,
            Some(vector.ttl_sec),
            unix_seconds(&vector.now),
        );
        assert!(opened.is_err(), "accepted the {:?} vector", vector.desc);
    }
}
