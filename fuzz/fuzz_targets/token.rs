//! The Fernet token decoder: no input may panic it, and only a token this
//! key sealed may open.

#![no_main]

use libfuzzer_sys::fuzz_target;
use secrecy::ExposeSecret as _;
use vault_server::crypto::fernet::{self, FernetKey};

fuzz_target!(|data: &[u8]| {
    let key = FernetKey::from_bytes(&[7; 32]);
    let text = String::from_utf8_lossy(data);
    let _ = fernet::is_well_formed(&text);
    // Without the key, a random input opening would mean a forged MAC.
    assert!(
        key.decrypt_at_time(&text, Some(60), 1_000).is_err(),
        "an unsealed input opened"
    );

    // Whatever the input, sealing it as a secret opens to the same bytes.
    let token = key.encrypt(data);
    assert!(fernet::is_well_formed(token.as_str()));
    let opened = key
        .decrypt(token.as_str(), None)
        .expect("a fresh token opens");
    assert_eq!(opened.expose_secret(), data);
});
