//! Round trips, tampering, time windows, strict parsing and redaction of Fernet tokens.
//!
//! Known-answer vectors and Python interop live in `tests/fernet_vectors.rs` and
//! `tests/fernet_python.rs`.

use aes::cipher::KeyIvInit;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use secrecy::ExposeSecret;

use super::*;

/// An arbitrary but fixed time, in unix seconds.
const T: u64 = 1_700_000_000;
const IV: [u8; 16] = [0x24; 16];
const URL_SAFE_ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn key_bytes() -> [u8; 32] {
    std::array::from_fn(|i| u8::try_from(i).expect("a 32-byte key has indices below 256"))
}

fn test_key() -> FernetKey {
    FernetKey::from_bytes(&key_bytes())
}

fn other_key() -> FernetKey {
    FernetKey::from_bytes(&[0x5a; 32])
}

/// Opens `token` and copies the plaintext out, for comparison.
fn open(key: &FernetKey, token: &str, ttl: Option<u64>, now: u64) -> Result<Vec<u8>, InvalidToken> {
    key.decrypt_at_time(token, ttl, now)
        .map(|plaintext| plaintext.expose_secret().to_vec())
}

fn decoded(token: &Token) -> Vec<u8> {
    URL_SAFE
        .decode(token.as_str())
        .expect("tokens we make are valid base64")
}

fn sealed_at(plaintext: &[u8], timestamp: u64) -> Token {
    test_key().encrypt_from_parts(plaintext, timestamp, &IV)
}

fn counting_bytes(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

// --- round trips -------------------------------------------------------------------------

#[test]
fn round_trip_restores_plaintexts_of_every_block_alignment() {
    let key = test_key();
    for len in [0, 1, 15, 16, 17, 31, 32, 33, 1000] {
        let plaintext = counting_bytes(len);
        let token = key.encrypt(&plaintext);

        let opened = key.decrypt(token.as_str(), None).expect("own token opens");
        assert_eq!(opened.expose_secret(), plaintext.as_slice(), "length {len}");
        let opened = key
            .decrypt(token.as_str(), Some(60))
            .expect("fresh token opens");
        assert_eq!(
            opened.expose_secret(),
            plaintext.as_slice(),
            "length {len}, ttl 60"
        );
    }
}

#[test]
fn ciphertext_is_padded_to_the_next_whole_block() {
    for (len, ciphertext_len) in [(0, 16), (15, 16), (16, 32), (17, 32), (32, 48)] {
        let token = sealed_at(&counting_bytes(len), T);
        assert_eq!(
            decoded(&token).len(),
            HEADER_LEN + ciphertext_len + TAG_LEN,
            "length {len}"
        );
    }
}

#[test]
fn token_carries_version_timestamp_and_iv_in_the_clear() {
    let bytes = decoded(&sealed_at(b"hello", T));

    assert_eq!(bytes[0], 0x80);
    assert_eq!(bytes[1..9], T.to_be_bytes());
    assert_eq!(bytes[9..25], IV);
}

#[test]
fn encrypt_stamps_the_current_time_and_draws_a_fresh_iv() {
    let key = test_key();
    let before = unix_now();
    let first = decoded(&key.encrypt(b"same"));
    let second = decoded(&key.encrypt(b"same"));
    let after = unix_now();

    let timestamp = u64::from_be_bytes(first[1..9].try_into().expect("8 timestamp bytes"));
    assert!(
        (before..=after).contains(&timestamp),
        "{before} <= {timestamp} <= {after}"
    );
    assert_ne!(first[9..25], second[9..25], "two encryptions reused an IV");
    assert_ne!(first, second);
}

#[test]
fn signing_key_is_the_first_half_and_encryption_key_the_second() {
    let bytes = decoded(&sealed_at(b"which half is which", T));
    let (signed, tag) = bytes.split_at(bytes.len() - TAG_LEN);
    let key = key_bytes();

    let mut mac = Hmac::<Sha256>::new_from_slice(&key[..16]).expect("any HMAC key length");
    mac.update(signed);
    mac.verify_slice(tag)
        .expect("tag is HMAC-SHA256 under the first half");

    let plaintext = cbc::Decryptor::<Aes128>::new_from_slices(&key[16..], &signed[9..25])
        .expect("16-byte key and IV")
        .decrypt_padded_vec::<Pkcs7>(&signed[25..])
        .expect("ciphertext is AES-128-CBC under the second half");
    assert_eq!(plaintext, b"which half is which");
}

#[test]
fn token_text_passes_through_unchanged() {
    let token = Token::from_string("not checked yet".to_owned());
    assert_eq!(token.as_str(), "not checked yet");
    assert_eq!(token.clone().into_string(), "not checked yet");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_valid_token_survives_decoding_and_encoding(
        plaintext in proptest::collection::vec(any::<u8>(), 0..512),
        timestamp in any::<u64>(),
        iv in any::<[u8; 16]>(),
    ) {
        let key = test_key();
        let token = key.encrypt_from_parts(&plaintext, timestamp, &iv);
        let bytes = URL_SAFE.decode(token.as_str()).unwrap();
        let again = URL_SAFE.encode(&bytes);
        prop_assert_eq!(&again, token.as_str());
        prop_assert!(is_well_formed(&again));
        prop_assert_eq!(open(&key, &again, None, 0), Ok(plaintext));
    }

    #[test]
    fn any_plaintext_up_to_64_kib_round_trips(
        plaintext in proptest::collection::vec(any::<u8>(), 0..=64 * 1024),
    ) {
        let key = test_key();
        let token = key.encrypt(&plaintext);
        prop_assert_eq!(open(&key, token.as_str(), None, 0), Ok(plaintext));
    }
}

// --- tampering ---------------------------------------------------------------------------

#[test]
fn flipping_any_bit_of_a_token_is_rejected() {
    let key = test_key();
    let token = sealed_at(b"twenty bytes of text", T);
    let original = decoded(&token);
    assert!(
        open(&key, token.as_str(), None, T).is_ok(),
        "control: the untouched token opens"
    );

    let mut flips = 0;
    for index in 0..original.len() {
        for bit in 0..8 {
            let mut tampered = original.clone();
            tampered[index] ^= 1 << bit;
            let tampered = URL_SAFE.encode(&tampered);

            assert_eq!(
                open(&key, &tampered, None, T),
                Err(InvalidToken),
                "byte {index} bit {bit}"
            );
            flips += 1;
        }
    }
    assert_eq!(flips, original.len() * 8);
}

#[test]
fn wrong_key_is_rejected() {
    let token = sealed_at(b"for the test key only", T);
    let mut one_bit_off = key_bytes();
    one_bit_off[31] ^= 1;
    let mut other_signing_half = key_bytes();
    other_signing_half[..16].fill(0);

    let keys = [
        other_key(),
        FernetKey::from_bytes(&one_bit_off),
        FernetKey::from_bytes(&other_signing_half),
    ];
    for (index, key) in keys.iter().enumerate() {
        assert_eq!(
            open(key, token.as_str(), None, T),
            Err(InvalidToken),
            "key {index}"
        );
    }
}

#[test]
fn truncated_tokens_are_rejected() {
    let key = test_key();
    let token = sealed_at(b"a secret long enough for two blocks", T);
    let bytes = decoded(&token);

    for len in 0..bytes.len() {
        let truncated = URL_SAFE.encode(&bytes[..len]);
        assert_eq!(
            open(&key, &truncated, None, T),
            Err(InvalidToken),
            "{len} of {} bytes",
            bytes.len()
        );
    }
    for len in 0..token.as_str().len() {
        let truncated = &token.as_str()[..len];
        assert_eq!(
            open(&key, truncated, None, T),
            Err(InvalidToken),
            "{len} characters"
        );
    }
}

#[test]
fn extended_tokens_are_rejected() {
    let key = test_key();
    let bytes = decoded(&sealed_at(b"hello", T));

    for extra in [&[0_u8][..], &[0; 16], &[0; 32]] {
        let extended = URL_SAFE.encode([bytes.as_slice(), extra].concat());
        assert_eq!(
            open(&key, &extended, None, T),
            Err(InvalidToken),
            "{} extra bytes",
            extra.len()
        );
    }
}

/// Builds a token by hand under the test key: `version`, then `T`, then `IV`, then
/// `padded` encrypted as is (no padding added), then a valid tag over all of it.
fn forge(version: u8, padded: &[u8]) -> String {
    let key = key_bytes();
    let mut ciphertext = padded.to_vec();
    let mut encryptor =
        cbc::Encryptor::<Aes128>::new_from_slices(&key[16..], &IV).expect("16-byte key and IV");
    for block in ciphertext.chunks_exact_mut(BLOCK_LEN) {
        let block: &mut [u8; BLOCK_LEN] = block.try_into().expect("whole blocks");
        encryptor.encrypt_block(block.into());
    }

    let mut bytes = [&[version][..], &T.to_be_bytes(), &IV, &ciphertext].concat();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key[..16]).expect("any HMAC key length");
    mac.update(&bytes);
    bytes.extend_from_slice(&mac.finalize().into_bytes());
    URL_SAFE.encode(bytes)
}

#[test]
fn forged_tokens_open_only_with_strict_pkcs7_padding() {
    let key = test_key();
    let mut short_padding = [b'a'; 16];
    short_padding[14..].copy_from_slice(&[0x02, 0x02]);
    assert_eq!(
        open(&key, &forge(VERSION, &short_padding), None, T),
        Ok(vec![b'a'; 14])
    );
    assert_eq!(
        open(&key, &forge(VERSION, &[0x10; 16]), None, T),
        Ok(Vec::new())
    );

    let mut inconsistent = short_padding;
    inconsistent[14] = 0x03;
    let mut zero = short_padding;
    zero[15] = 0x00;
    let mut too_long = short_padding;
    too_long[15] = 0x11;
    let mut unpadded_last_block = [0x10; 32];
    unpadded_last_block[31] = b'a';
    for padded in [&inconsistent[..], &zero, &too_long, &unpadded_last_block] {
        assert_eq!(
            open(&key, &forge(VERSION, padded), None, T),
            Err(InvalidToken),
            "{padded:x?}"
        );
    }
}

#[test]
fn forged_tokens_with_a_wrong_version_or_partial_blocks_are_rejected() {
    let key = test_key();
    assert!(
        open(&key, &forge(VERSION, &[0x10; 16]), None, T).is_ok(),
        "control"
    );

    for version in [0x00, 0x7f, 0x81, 0xff] {
        let token = forge(version, &[0x10; 16]);
        assert_eq!(
            open(&key, &token, None, T),
            Err(InvalidToken),
            "version {version:#04x}"
        );
    }
    for ciphertext_len in [0, 1, 15, 17, 31] {
        // `forge` encrypts whole blocks only, so cut a two-block ciphertext down afterwards
        // and sign what is left.
        let full = URL_SAFE
            .decode(forge(VERSION, &[0x10; 32]))
            .expect("base64");
        let signed = &full[..HEADER_LEN + ciphertext_len];
        let mut mac = Hmac::<Sha256>::new_from_slice(&key_bytes()[..16]).expect("any length");
        mac.update(signed);
        let token = URL_SAFE.encode([signed, &mac.finalize().into_bytes()].concat());
        assert_eq!(
            open(&key, &token, None, T),
            Err(InvalidToken),
            "{ciphertext_len} bytes"
        );
    }
}

// --- the time window ---------------------------------------------------------------------

#[test]
fn ttl_accepts_a_token_exactly_ttl_seconds_old_and_not_one_more() {
    let key = test_key();
    let token = sealed_at(b"x", T);

    assert_eq!(
        open(&key, token.as_str(), Some(60), T + 60),
        Ok(b"x".to_vec())
    );
    assert_eq!(
        open(&key, token.as_str(), Some(60), T + 61),
        Err(InvalidToken)
    );
    assert_eq!(open(&key, token.as_str(), Some(0), T), Ok(b"x".to_vec()));
    assert_eq!(
        open(&key, token.as_str(), Some(0), T + 1),
        Err(InvalidToken)
    );
}

#[test]
fn ttl_tolerates_sixty_seconds_of_clock_skew_and_not_sixty_one() {
    let key = test_key();
    let token = sealed_at(b"x", T);

    assert_eq!(
        open(&key, token.as_str(), Some(60), T - 60),
        Ok(b"x".to_vec())
    );
    assert_eq!(
        open(&key, token.as_str(), Some(60), T - 61),
        Err(InvalidToken)
    );
}

#[test]
fn no_ttl_ignores_the_timestamp_entirely() {
    let key = test_key();

    let far_future = sealed_at(b"x", u64::MAX);
    assert_eq!(open(&key, far_future.as_str(), None, 0), Ok(b"x".to_vec()));
    let ancient = sealed_at(b"x", 0);
    assert_eq!(
        open(&key, ancient.as_str(), None, u64::MAX),
        Ok(b"x".to_vec())
    );
}

#[test]
fn timestamps_near_u64_max_neither_wrap_nor_panic() {
    let key = test_key();
    let newest = sealed_at(b"x", u64::MAX);
    let oldest = sealed_at(b"x", 0);

    // Each of these sums exceeds u64::MAX; they are judged as exact integers, as in Python.
    assert_eq!(
        open(&key, newest.as_str(), Some(u64::MAX), u64::MAX),
        Ok(b"x".to_vec())
    );
    assert_eq!(
        open(&key, newest.as_str(), Some(60), u64::MAX),
        Ok(b"x".to_vec())
    );
    assert_eq!(
        open(&key, newest.as_str(), Some(60), u64::MAX - 60),
        Ok(b"x".to_vec())
    );
    assert_eq!(
        open(&key, newest.as_str(), Some(60), u64::MAX - 61),
        Err(InvalidToken)
    );
    assert_eq!(open(&key, newest.as_str(), Some(60), 0), Err(InvalidToken));
    assert_eq!(
        open(&key, oldest.as_str(), Some(u64::MAX), u64::MAX),
        Ok(b"x".to_vec())
    );
    assert_eq!(
        open(&key, oldest.as_str(), Some(u64::MAX - 1), u64::MAX),
        Err(InvalidToken)
    );
}

// --- strict base64 -----------------------------------------------------------------------

/// A token whose text uses `-` or `_`, so that a standard-alphabet variant differs from it.
fn token_with_url_safe_characters() -> Token {
    let key = test_key();
    (0..=u8::MAX)
        .map(|n| key.encrypt_from_parts(b"hello", T, &[n; 16]))
        .find(|token| token.as_str().contains(['-', '_']))
        .expect("some IV yields a token with '-' or '_'")
}

#[test]
fn standard_alphabet_is_rejected() {
    let key = test_key();
    let token = token_with_url_safe_characters();
    let standard = token.as_str().replace('-', "+").replace('_', "/");

    assert_ne!(standard, token.as_str());
    assert_eq!(open(&key, token.as_str(), None, T), Ok(b"hello".to_vec()));
    assert_eq!(open(&key, &standard, None, T), Err(InvalidToken));
}

#[test]
fn missing_padding_whitespace_and_trailing_text_are_rejected() {
    let key = test_key();
    let token = sealed_at(b"hello", T);
    let text = token.as_str();
    assert!(
        text.ends_with("=="),
        "control: this length needs two padding characters"
    );
    assert_eq!(open(&key, text, None, T), Ok(b"hello".to_vec()));

    let (head, tail) = text.split_at(10);
    let mangled = [
        text.trim_end_matches('=').to_owned(),
        text[..text.len() - 1].to_owned(),
        format!(" {text}"),
        format!("{text}\n"),
        format!("{text}\r\n"),
        format!("{head} {tail}"),
        format!("{head}\t{tail}"),
        format!("{head}\n{tail}"),
        format!("{text}="),
        format!("{text}AAAA"),
        format!("{text}%%"),
        format!("{text}é"),
        format!("{head}é{}", &tail[2..]),
        String::new(),
    ];
    for candidate in &mangled {
        assert_eq!(
            open(&key, candidate, None, T),
            Err(InvalidToken),
            "{candidate:?}"
        );
    }
}

#[test]
fn non_canonical_trailing_bits_are_rejected() {
    let key = test_key();
    let token = sealed_at(b"hello", T);
    let data = token.as_str().trim_end_matches('=');
    let (head, last) = data.split_at(data.len() - 1);

    // Before "==", the last character carries 2 data bits and 4 unused bits that must be 0.
    let index = URL_SAFE_ALPHABET.find(last).expect("url-safe character");
    assert_eq!(index & 0b1111, 0, "control: canonical encoding");
    let noisy = &URL_SAFE_ALPHABET[index | 1..=index | 1];
    let mangled = format!("{head}{noisy}==");

    assert_eq!(open(&key, &mangled, None, T), Err(InvalidToken));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_is_rejected_without_panicking(text in any::<String>()) {
        prop_assert_eq!(open(&test_key(), &text, Some(60), T), Err(InvalidToken));
    }

    #[test]
    fn arbitrary_base64_alphabet_text_is_rejected_without_panicking(
        text in "[A-Za-z0-9_=+/-]{0,300}",
    ) {
        prop_assert_eq!(open(&test_key(), &text, Some(60), T), Err(InvalidToken));
    }

    #[test]
    fn arbitrary_bytes_behind_the_version_byte_are_rejected(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        ttl in any::<Option<u64>>(),
        now in any::<u64>(),
    ) {
        let token = URL_SAFE.encode([&[VERSION][..], &body].concat());
        prop_assert_eq!(open(&test_key(), &token, ttl, now), Err(InvalidToken));
    }
}

// --- keys --------------------------------------------------------------------------------

#[test]
fn generated_key_text_has_pythons_format_and_reads_back() {
    let text = generate_key_base64();
    let text = text.expose_secret();

    assert_eq!(text.len(), 44);
    assert!(text.ends_with('=') && !text.ends_with("=="), "{text}");
    assert!(
        text.trim_end_matches('=')
            .chars()
            .all(|c| URL_SAFE_ALPHABET.contains(c))
    );

    let key = FernetKey::from_base64(text).expect("our own key text reads back");
    let token = key.encrypt(b"round trip");
    assert_eq!(
        open(&key, token.as_str(), None, 0),
        Ok(b"round trip".to_vec())
    );
    assert_ne!(generate_key_base64().expose_secret(), text);
}

#[test]
fn key_text_and_key_bytes_make_the_same_key() {
    let from_text = FernetKey::from_base64(&URL_SAFE.encode(key_bytes())).expect("valid key text");
    let token = sealed_at(b"same key", T);
    assert_eq!(
        open(&from_text, token.as_str(), None, T),
        Ok(b"same key".to_vec())
    );
}

#[test]
fn generated_keys_differ() {
    let (first, second) = (FernetKey::generate(), FernetKey::generate());
    let token = first.encrypt(b"only for the first key");

    assert!(first.decrypt(token.as_str(), None).is_ok());
    assert_eq!(
        second.decrypt(token.as_str(), None).err(),
        Some(InvalidToken)
    );
}

#[test]
fn malformed_key_text_is_rejected() {
    let good = URL_SAFE.encode(key_bytes());
    let standard = STANDARD.encode([0xfb; 32]);
    assert!(standard.contains(['+', '/']), "control: {standard}");
    assert!(
        FernetKey::from_base64(&URL_SAFE.encode([0xfb; 32])).is_ok(),
        "control"
    );
    let (head, last) = good.trim_end_matches('=').split_at(43 - 1);
    let index = URL_SAFE_ALPHABET.find(last).expect("url-safe character");
    assert_eq!(index & 0b11, 0, "control: canonical encoding");
    let noisy_bits = format!("{head}{}=", &URL_SAFE_ALPHABET[index | 1..=index | 1]);

    let malformed = [
        String::new(),
        good.trim_end_matches('=').to_owned(),
        format!("{good}="),
        format!(" {good}"),
        format!("{good}\n"),
        format!("{}\n", good.trim_end_matches('=')),
        standard,
        noisy_bits,
        URL_SAFE.encode([0; 31]),
        URL_SAFE.encode([0; 33]),
        format!("{}é", &good[..42]),
    ];
    for text in &malformed {
        assert_eq!(
            FernetKey::from_base64(text).err(),
            Some(KeyFormatError),
            "{text:?}"
        );
    }
}

// --- redaction and types -----------------------------------------------------------------

#[test]
fn debug_output_reveals_no_key_token_or_plaintext() {
    let key = test_key();
    assert_eq!(format!("{key:?}"), "FernetKey { .. }");
    assert_eq!(format!("{:#?}", FernetKey::generate()), "FernetKey { .. }");

    let token = key.encrypt(b"hunter2");
    let shown = format!("{token:?}");
    assert_eq!(shown, format!("Token(<{} chars>)", token.as_str().len()));
    assert!(!shown.contains(token.as_str()));

    let plaintext = key.decrypt(token.as_str(), None).expect("own token opens");
    let shown = format!("{plaintext:?}");
    assert!(
        shown.contains("REDACTED") && !shown.contains("hunter2"),
        "{shown}"
    );
    assert!(
        !format!("{:?}", plaintext.expose_secret()).is_empty(),
        "control: the bytes exist"
    );
}

#[test]
fn errors_say_nothing_about_the_cause() {
    assert_eq!(InvalidToken.to_string(), "invalid token");
    assert!(KeyFormatError.to_string().contains("44 characters"));
}

#[test]
fn keys_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<FernetKey>();
}
