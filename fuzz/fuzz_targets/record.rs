//! The stored-record decoder: any bytes under any key give a record or an
//! error, never a panic; a decoded record encodes back to a value that
//! decodes to the same record.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_server::store::record;

fuzz_target!(|data: &[u8]| {
    // The first byte says where the key ends and the value begins.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let (key, value) = rest.split_at(usize::from(split).min(rest.len()));
    let _ = record::key_version(value);
    if let Ok(decoded) = record::decode(key, value) {
        let encoded = record::encode(&decoded);
        let again = record::decode(key, &encoded).expect("a re-encoded record decodes");
        assert_eq!(again, decoded);
    }
});
