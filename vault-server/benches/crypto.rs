//! Criterion benchmarks of the vault's cryptography, one core, no I/O.
//!
//! ```sh
//! cargo bench -p vault-server --bench crypto
//! ```
//!
//! - `fernet`: encrypt and decrypt of a 32-byte secret with a [`FernetKey`]
//!   held expanded (keyed HMAC state and AES round keys built once);
//! - `record`: the full per-credential path of [`Keyring::seal`] and
//!   [`Keyring::open`], which derive the record's own key with HKDF from the
//!   master key, owner and credential id on every call, then run Fernet;
//! - `keyring`: opening under a keyring of three master keys, for records
//!   sealed by the oldest and by the primary.
//!
//! `crypto-compare` (in `vault-bench`) times the same operations beside
//! Python's `cryptography` in one run; see `BENCHMARKS.md`.

#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vault_server::credential::{CredentialId, UserId};
use vault_server::crypto::fernet::FernetKey;
use vault_server::crypto::keyring::Keyring;
use vault_server::crypto::sealing::RecordBinding;

const SECRET: &[u8; 32] = b"odoo-password-of-32-bytes-long!!";
const KEY: &str = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
const THREE_KEYS: &str = "key 1 cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=\n\
    key 2 AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n\
    key 3 _-7dzLuqmYh3ZlVEMyIRAP_u3cy7qpmId2ZVRDMiEQA=\nprimary 3\n";

fn fernet(c: &mut Criterion) {
    let key = FernetKey::from_base64(KEY).expect("a valid key");
    let token = key.encrypt(SECRET);

    let mut group = c.benchmark_group("fernet");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encrypt_32B", |b| b.iter(|| key.encrypt(black_box(SECRET))));
    group.bench_function("decrypt_32B", |b| {
        b.iter(|| key.decrypt(black_box(token.as_str()), None))
    });
    group.finish();
}

fn record(c: &mut Criterion) {
    let keyring = Keyring::parse(THREE_KEYS).expect("a valid keyring");
    let owner = UserId::parse("user_id", "user-42").expect("a valid user id");
    let id = CredentialId::generate();
    let binding = RecordBinding {
        owner: &owner,
        id: &id,
    };
    let sealed = keyring.seal(binding, SECRET);

    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(1));
    group.bench_function("seal_32B", |b| {
        b.iter(|| keyring.seal(black_box(binding), black_box(SECRET)))
    });
    group.bench_function("open_32B", |b| {
        b.iter(|| keyring.open(black_box(binding), black_box(&sealed)))
    });
    group.finish();
}

fn keyring(c: &mut Criterion) {
    let keyring = Keyring::parse(THREE_KEYS).expect("a valid keyring");
    let oldest =
        Keyring::parse(&THREE_KEYS.replace("primary 3", "primary 1")).expect("a valid keyring");
    let owner = UserId::parse("user_id", "user-42").expect("a valid user id");
    let id = CredentialId::generate();
    let binding = RecordBinding {
        owner: &owner,
        id: &id,
    };
    let under_oldest = oldest.seal(binding, SECRET);
    let under_primary = keyring.seal(binding, SECRET);

    let mut group = c.benchmark_group("keyring_3_versions");
    group.throughput(Throughput::Elements(1));
    group.bench_function("open_sealed_by_v1", |b| {
        b.iter(|| keyring.open(black_box(binding), black_box(&under_oldest)))
    });
    group.bench_function("open_sealed_by_primary", |b| {
        b.iter(|| keyring.open(black_box(binding), black_box(&under_primary)))
    });
    group.finish();
}

criterion_group!(benches, fernet, record, keyring);
criterion_main!(benches);
