//! The keyring file parser: any text gives a keyring or a line error,
//! never a panic, and an error never quotes the line.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vault_server::crypto::keyring::Keyring;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Keyring::parse(text) {
        Ok(keyring) => {
            // A parsed keyring always names a primary it holds.
            let primary = keyring.primary().version();
            assert!(keyring.key(primary).is_some());
        }
        Err(err) => {
            let message = err.to_string();
            for line in text.lines().filter(|line| line.trim().len() >= 16) {
                assert!(!message.contains(line.trim()), "error quotes its input");
            }
        }
    }
});
