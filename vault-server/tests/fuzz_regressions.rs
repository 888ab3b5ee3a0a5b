//! Inputs the fuzz targets in `fuzz/` once flagged, kept so that what they
//! showed stays true. Each file's name starts with its target.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;

use vault_server::crypto::keyring::Keyring;

#[test]
fn keyring_inputs_give_line_errors_that_quote_no_key_sized_word() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    let mut checked = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("keyring-") {
            continue;
        }
        let text = String::from_utf8(fs::read(&path).unwrap()).unwrap();
        // This input holds text shaped like the parser's own messages; the
        // first fuzzing oracle took that for an echo of the input.
        let message = Keyring::parse(&text).unwrap_err().to_string();
        assert!(message.starts_with("keyring line "), "{name}: {message}");
        for word in text.split_whitespace().filter(|word| word.len() >= 16) {
            assert!(!message.contains(word), "{name}: {message}");
        }
        checked += 1;
    }
    assert!(checked >= 1);
}
