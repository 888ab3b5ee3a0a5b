//! Interoperability of our Fernet tokens with Python's `cryptography` package.
//!
//! Each test runs `python3` (or the interpreter named by `VAULT_TEST_PYTHON`) on a small
//! script and talks JSON over stdin and stdout, bytes as hex. Python and the `cryptography`
//! package are required: without them the tests fail, they do not skip. Install the package
//! with `python3 -m pip install cryptography`.

// Helpers of a test may unwrap: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};
use std::{env, fmt};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use hmac::{Hmac, KeyInit as _, Mac as _};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use vault_server::crypto::fernet::{self, FernetKey};

/// The exit status the script uses when `cryptography` cannot be imported.
const MISSING_CRYPTOGRAPHY: i32 = 3;

/// Python's half of the conversation: `encrypt` has Python make a key and tokens, `decrypt`
/// has it judge a list of cases.
const SCRIPT: &str = r#"
import json, sys
try:
    import cryptography
    from cryptography.fernet import Fernet, InvalidToken
except ImportError as error:
    sys.stderr.write(f"cannot import cryptography: {error}\n")
    sys.exit(3)

def judge(case):
    try:
        fernet = Fernet(case["key"])
        if case["ttl"] is None:
            plaintext = fernet.decrypt(case["token"])
        else:
            plaintext = fernet.decrypt_at_time(case["token"], case["ttl"], case["now"])
        return {"plaintext": plaintext.hex()}
    except InvalidToken:
        return {"error": "InvalidToken"}
    except Exception as error:
        return {"error": f"{type(error).__name__}: {error}"}

request = json.load(sys.stdin)
if request["op"] == "encrypt":
    key = Fernet.generate_key()
    fernet = Fernet(key)
    tokens = [fernet.encrypt(bytes.fromhex(p)).decode() for p in request["plaintexts"]]
    reply = {"key": key.decode(), "tokens": tokens}
else:
    reply = {"verdicts": [judge(case) for case in request["cases"]]}
reply["cryptography"] = cryptography.__version__
json.dump(reply, sys.stdout)
"#;

#[derive(Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request<'a> {
    Encrypt { plaintexts: Vec<String> },
    Decrypt { cases: Vec<&'a Case> },
}

/// A token to judge: with `ttl` of `None`, the time is not checked and `now` is unused.
#[derive(Serialize)]
struct Case {
    #[serde(skip)]
    desc: &'static str,
    key: String,
    token: String,
    ttl: Option<u64>,
    now: u64,
}

#[derive(Deserialize)]
struct Encrypted {
    key: String,
    tokens: Vec<String>,
}

#[derive(Deserialize)]
struct Judged {
    verdicts: Vec<Verdict>,
    cryptography: String,
}

/// The outcome of opening a token, in a form both sides can report.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Verdict {
    /// Opened; the plaintext in hex.
    Plaintext(String),
    /// Refused; `InvalidToken`, or for Python any other exception it raised.
    Error(String),
}

impl Verdict {
    fn invalid() -> Self {
        Self::Error("InvalidToken".to_owned())
    }

    fn opened(plaintext: &[u8]) -> Self {
        Self::Plaintext(hex(plaintext))
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plaintext(hex) => write!(f, "opens to {hex:?}"),
            Self::Error(error) => write!(f, "fails with {error}"),
        }
    }
}

fn run_python<T: DeserializeOwned>(request: &Request<'_>) -> T {
    let python = env::var("VAULT_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let mut child = Command::new(&python)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run {python:?}: {error}. These tests need Python 3 with the \
                 `cryptography` package: `python3 -m pip install cryptography`, or set \
                 VAULT_TEST_PYTHON to an interpreter that has it"
            )
        });

    let input = serde_json::to_vec(request).expect("requests serialize to JSON");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(&input)
        .expect("python reads its request");
    let output = child.wait_with_output().expect("python runs to completion");
    let stderr = String::from_utf8_lossy(&output.stderr);

    if output.status.code() == Some(MISSING_CRYPTOGRAPHY) {
        panic!(
            "{python} lacks the `cryptography` package ({}); install it with \
             `python3 -m pip install cryptography`",
            stderr.trim()
        );
    }
    assert!(
        output.status.success(),
        "{python} failed ({}): {stderr}",
        output.status
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!("{python} replied with unexpected output ({error}): {stderr}")
    })
}

fn python_judges<'a>(cases: impl IntoIterator<Item = &'a Case>) -> Judged {
    let cases: Vec<&Case> = cases.into_iter().collect();
    let count = cases.len();
    let judged: Judged = run_python(&Request::Decrypt { cases });
    assert_eq!(judged.verdicts.len(), count, "python judged every case");
    judged
}

fn vault_judges(case: &Case) -> Verdict {
    let key = FernetKey::from_base64(&case.key).expect("test keys are canonical");
    match key.decrypt_at_time(&case.token, case.ttl, case.now) {
        Ok(plaintext) => Verdict::opened(plaintext.expose_secret()),
        Err(_) => Verdict::invalid(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the test machine's clock is after 1970")
        .as_secs()
}

/// Plaintexts that exercise padding and encoding: empty, text, every byte value, block
/// boundaries and a long one.
fn assorted_plaintexts() -> Vec<Vec<u8>> {
    let every_byte: Vec<u8> = (0..=u8::MAX).collect();
    let long: Vec<u8> = (0..1000_u32).map(|i| (i * 7 % 256) as u8).collect();
    vec![
        Vec::new(),
        b"hello".to_vec(),
        "pässwörd ✓".as_bytes().to_vec(),
        vec![0; 15],
        vec![0xff; 16],
        vec![0x10; 17],
        every_byte,
        long,
    ]
}

#[test]
fn tokens_from_python_open_to_the_exact_plaintext() {
    let plaintexts = assorted_plaintexts();
    let request = Request::Encrypt {
        plaintexts: plaintexts.iter().map(|p| hex(p)).collect(),
    };
    let encrypted: Encrypted = run_python(&request);
    assert_eq!(encrypted.tokens.len(), plaintexts.len());

    let key = FernetKey::from_base64(&encrypted.key).expect("python's key format is accepted");
    for (token, plaintext) in encrypted.tokens.iter().zip(&plaintexts) {
        let opened = key.decrypt(token, None).expect("python's token opens");
        assert_eq!(opened.expose_secret(), plaintext.as_slice());
        let opened = key
            .decrypt(token, Some(60))
            .expect("python stamped the current time");
        assert_eq!(opened.expose_secret(), plaintext.as_slice());
    }
}

#[test]
fn tokens_from_the_vault_open_in_python_to_the_exact_plaintext() {
    let key_text = fernet::generate_key_base64();
    let key = FernetKey::from_base64(key_text.expose_secret()).expect("our key text reads back");
    let now = unix_now();

    let mut cases = Vec::new();
    for plaintext in assorted_plaintexts() {
        let token = key.encrypt(&plaintext).into_string();
        for ttl in [None, Some(60)] {
            cases.push((
                Verdict::opened(&plaintext),
                Case {
                    desc: "fresh token",
                    key: key_text.expose_secret().to_owned(),
                    token: token.clone(),
                    ttl,
                    now,
                },
            ));
        }
    }

    assert_both_judge(&cases);
}

/// A fixed key for building cases; its halves are needed to forge well-signed tokens.
struct CaseKey {
    bytes: [u8; 32],
}

impl CaseKey {
    const TIME: u64 = 1_600_000_000;

    fn new(fill: u8) -> Self {
        Self { bytes: [fill; 32] }
    }

    fn text(&self) -> String {
        URL_SAFE.encode(self.bytes)
    }

    fn fernet(&self) -> FernetKey {
        FernetKey::from_bytes(&self.bytes)
    }

    /// The decoded token for "hello" (one block) sealed at `timestamp`.
    fn hello_at(&self, timestamp: u64) -> Vec<u8> {
        let token = self
            .fernet()
            .encrypt_from_parts(b"hello", timestamp, &[7; 16]);
        URL_SAFE
            .decode(token.as_str())
            .expect("our tokens are base64")
    }

    /// Replaces the tag of a decoded token with a valid one over its other bytes.
    fn resign(&self, mut bytes: Vec<u8>) -> String {
        bytes.truncate(bytes.len().saturating_sub(32));
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.bytes[..16]).expect("any key length");
        mac.update(&bytes);
        bytes.extend_from_slice(&mac.finalize().into_bytes());
        URL_SAFE.encode(bytes)
    }

    fn case(&self, desc: &'static str, token: String, ttl: Option<u64>, now: u64) -> Case {
        Case {
            desc,
            key: self.text(),
            token,
            ttl,
            now,
        }
    }
}

fn flipped(mut bytes: Vec<u8>, index: usize) -> String {
    bytes[index] ^= 0x01;
    URL_SAFE.encode(bytes)
}

/// Asserts that Python and the vault both reach the expected verdict on every case.
fn assert_both_judge(cases: &[(Verdict, Case)]) {
    let judged = python_judges(cases.iter().map(|(_, case)| case));

    for ((expected, case), python) in cases.iter().zip(&judged.verdicts) {
        let vault = vault_judges(case);
        assert!(
            python == expected && &vault == expected,
            "{}: expected it {expected}; python (cryptography {}) {python}, the vault {vault}",
            case.desc,
            judged.cryptography
        );
    }
}

#[test]
fn python_and_the_vault_reject_the_same_damaged_tokens() {
    let key = CaseKey::new(0x11);
    let t = CaseKey::TIME;
    let hello = key.hello_at(t);
    let len = hello.len();
    let ciphertext_start = 25;

    let mut version_81 = hello.clone();
    version_81[0] = 0x81;
    let mut no_ciphertext = hello[..ciphertext_start].to_vec();
    no_ciphertext.extend_from_slice(&[0; 32]);
    let mut partial_block = hello[..len - 33].to_vec();
    partial_block.extend_from_slice(&[0; 32]);
    // "hello" pads with eleven 0x0b bytes; flipping the IV's last byte turns the final
    // padding byte into 0xf4, which no PKCS#7 padding can end with.
    let mut bad_padding = hello.clone();
    bad_padding[ciphertext_start - 1] ^= 0xff;

    let cases = [
        key.case("flipped version byte", flipped(hello.clone(), 0), None, t),
        key.case("version 0x81, re-signed", key.resign(version_81), None, t),
        key.case("flipped timestamp byte", flipped(hello.clone(), 8), None, t),
        key.case("flipped IV byte", flipped(hello.clone(), 9), None, t),
        key.case(
            "flipped ciphertext byte",
            flipped(hello.clone(), 30),
            None,
            t,
        ),
        key.case("flipped tag byte", flipped(hello.clone(), len - 1), None, t),
        key.case(
            "last byte cut off",
            URL_SAFE.encode(&hello[..len - 1]),
            None,
            t,
        ),
        key.case("tag cut off", URL_SAFE.encode(&hello[..len - 32]), None, t),
        key.case(
            "no ciphertext, re-signed",
            key.resign(no_ciphertext),
            None,
            t,
        ),
        key.case(
            "15-byte ciphertext, re-signed",
            key.resign(partial_block),
            None,
            t,
        ),
        key.case("bad padding, re-signed", key.resign(bad_padding), None, t),
        CaseKey::new(0x22).case("wrong key", URL_SAFE.encode(&hello), None, t),
        key.case(
            "missing padding",
            URL_SAFE.encode(&hello).replace('=', ""),
            None,
            t,
        ),
        key.case("empty text", String::new(), None, t),
        key.case(
            "expired by one second",
            URL_SAFE.encode(&hello),
            Some(60),
            t + 61,
        ),
        key.case(
            "61 seconds in the future",
            URL_SAFE.encode(&hello),
            Some(60),
            t - 61,
        ),
    ];
    let cases: Vec<_> = cases
        .into_iter()
        .map(|case| (Verdict::invalid(), case))
        .collect();
    assert_both_judge(&cases);
}

#[test]
fn python_and_the_vault_draw_the_time_window_on_the_same_seconds() {
    let key = CaseKey::new(0x33);
    let t = CaseKey::TIME;
    let hello = URL_SAFE.encode(key.hello_at(t));
    let newest = URL_SAFE.encode(key.hello_at(u64::MAX));
    let oldest = URL_SAFE.encode(key.hello_at(0));
    let opened = Verdict::opened(b"hello");
    let invalid = Verdict::invalid();

    let cases = [
        (
            &opened,
            key.case("exactly ttl old", hello.clone(), Some(60), t + 60),
        ),
        (
            &invalid,
            key.case("ttl plus one second old", hello.clone(), Some(60), t + 61),
        ),
        (
            &opened,
            key.case("ttl 0 in its own second", hello.clone(), Some(0), t),
        ),
        (
            &opened,
            key.case("exactly 60 s ahead", hello.clone(), Some(60), t - 60),
        ),
        (
            &invalid,
            key.case("61 s ahead", hello.clone(), Some(60), t - 61),
        ),
        (
            &opened,
            key.case("no ttl, timestamp u64::MAX", newest.clone(), None, 0),
        ),
        (
            &opened,
            key.case(
                "u64::MAX everywhere",
                newest.clone(),
                Some(u64::MAX),
                u64::MAX,
            ),
        ),
        (
            &invalid,
            key.case("u64::MAX stamp, now 0", newest, Some(60), 0),
        ),
        (
            &opened,
            key.case(
                "stamp 0, ttl u64::MAX",
                oldest.clone(),
                Some(u64::MAX),
                u64::MAX,
            ),
        ),
        (
            &invalid,
            key.case(
                "stamp 0, ttl one short",
                oldest,
                Some(u64::MAX - 1),
                u64::MAX,
            ),
        ),
    ];
    let cases: Vec<_> = cases
        .into_iter()
        .map(|(v, case)| (v.clone(), case))
        .collect();
    assert_both_judge(&cases);
}

/// Pins the one documented difference: Python's base64 decoding is lenient, ours is not.
/// If this starts failing on the Python side, update "Stricter than Python" in `fernet.rs`.
#[test]
fn python_accepts_mangled_base64_that_the_vault_refuses() {
    let key = CaseKey::new(0x44);
    let t = CaseKey::TIME;
    let token = (0..=u8::MAX)
        .map(|n| {
            key.fernet()
                .encrypt_from_parts(b"hello", t, &[n; 16])
                .into_string()
        })
        .find(|token| token.contains(['-', '_']))
        .expect("some IV yields a token with '-' or '_'");
    let (head, tail) = token.split_at(20);
    let data = token.trim_end_matches('=');
    let (data_head, last) = data.split_at(data.len() - 1);
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let index = alphabet.find(last).expect("url-safe character") | 1;
    assert!(token.ends_with("=="), "control: two padding characters");

    let cases = [
        key.case(
            "standard alphabet",
            token.replace('-', "+").replace('_', "/"),
            None,
            t,
        ),
        key.case("space inside", format!("{head} {tail}"), None, t),
        key.case("trailing newline", format!("{token}\n"), None, t),
        key.case("text after padding", format!("{token}AAAA"), None, t),
        key.case("extra padding", format!("{token}="), None, t),
        key.case(
            "non-zero trailing bits",
            format!("{data_head}{}==", &alphabet[index..=index]),
            None,
            t,
        ),
    ];
    let judged = python_judges(&cases);

    for (case, python) in cases.iter().zip(&judged.verdicts) {
        assert_eq!(
            vault_judges(case),
            Verdict::invalid(),
            "the vault refuses {}",
            case.desc
        );
        assert_eq!(
            python,
            &Verdict::opened(b"hello"),
            "python (cryptography {}) no longer accepts {}: the module docs are out of date",
            judged.cryptography,
            case.desc
        );
    }
}
