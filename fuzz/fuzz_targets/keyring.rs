//! The keyring file parser: any text gives a keyring or a line error,
//! never a panic, and an error never quotes a key-sized word of it.

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
            // A key is a 44-character word; no word that long (or any word
            // of 16 characters and more) may come back in the message. Short
            // words may, by chance: the message has words of its own.
            let message = err.to_string();
            for word in text.split_whitespace().filter(|word| word.len() >= 16) {
                assert!(!message.contains(word), "error quotes its input");
            }
        }
    }
});
