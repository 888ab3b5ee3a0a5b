//! Our Fernet against Python's `cryptography`, on one core each, in one run.
//!
//! ```sh
//! cargo run --release -p vault-bench --bin crypto-compare
//! ```
//!
//! Alternates rounds of our operations (timed here, on this thread) with
//! rounds of `bench/python_fernet.py` (a child process, also one thread),
//! so that both see the same machine load, and prints the median rate of
//! each and our speed as a multiple of Python's. The operations:
//!
//! - `fernet_encrypt`/`fernet_decrypt`: 32-byte secret, one key held
//!   expanded (ours) or one reused `Fernet` object (Python);
//! - `record_seal`/`record_open`: the vault's full per-credential path, HKDF
//!   of the master key for the record and then Fernet, written the same way
//!   with each library.

use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use vault_server::credential::{CredentialId, UserId};
use vault_server::crypto::fernet::FernetKey;
use vault_server::crypto::keyring::Keyring;
use vault_server::crypto::sealing::RecordBinding;

const SECRET: &[u8; 32] = b"odoo-password-of-32-bytes-long!!";
const KEYRING: &str = "key 1 cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=\nprimary 1\n";
const OPERATIONS: [&str; 4] = [
    "fernet_encrypt",
    "fernet_decrypt",
    "record_seal",
    "record_open",
];

#[derive(Debug, Parser)]
struct Args {
    /// Rounds of each side; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per operation per round.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Python interpreter with `cryptography` installed.
    #[arg(long, env = "VAULT_TEST_PYTHON", default_value = "python3")]
    python: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python_fernet.py");
    let mut ours: Vec<[f64; 4]> = Vec::new();
    let mut theirs: Vec<[f64; 4]> = Vec::new();
    let mut versions = String::new();

    for _ in 0..args.rounds {
        ours.push(rust_round(Duration::from_secs_f64(args.seconds)));
        let (rates, version) = python_round(&args.python, &script, args.seconds)?;
        theirs.push(rates);
        versions = version;
    }

    println!("load: {}", vault_bench::load_average());
    println!("python: {versions}");
    println!();
    println!(
        "| operation (32-byte secret, 1 core) | ours (ops/s) | Python (ops/s) | ours / Python |"
    );
    println!("| --- | ---: | ---: | ---: |");
    for (index, name) in OPERATIONS.iter().enumerate() {
        let ours = median(ours.iter().map(|round| round[index]));
        let theirs = median(theirs.iter().map(|round| round[index]));
        println!(
            "| {name} | {ours:.0} | {theirs:.0} | {:.1}x |",
            ours / theirs
        );
    }
    Ok(())
}

/// One timed pass over the four operations, on this thread.
fn rust_round(each: Duration) -> [f64; 4] {
    let key = FernetKey::generate();
    let token = key.encrypt(SECRET);
    let keyring = Keyring::parse(KEYRING).expect("a valid keyring");
    let owner = UserId::parse("user_id", "user-42").expect("a valid user id");
    let id = CredentialId::generate();
    let binding = RecordBinding {
        owner: &owner,
        id: &id,
    };
    let sealed = keyring.seal(binding, SECRET);

    [
        rate(each, || drop(black_box(key.encrypt(black_box(SECRET))))),
        rate(each, || {
            drop(black_box(key.decrypt(black_box(token.as_str()), None)));
        }),
        rate(each, || {
            drop(black_box(keyring.seal(black_box(binding), SECRET)));
        }),
        rate(each, || {
            drop(black_box(keyring.open(black_box(binding), &sealed)));
        }),
    ]
}

/// Calls `operation` in batches for `each`; calls per second.
fn rate(each: Duration, mut operation: impl FnMut()) -> f64 {
    let started = Instant::now();
    let mut calls = 0u64;
    loop {
        for _ in 0..256 {
            operation();
        }
        calls += 256;
        let elapsed = started.elapsed();
        if elapsed >= each {
            return calls as f64 / elapsed.as_secs_f64();
        }
    }
}

/// One run of the Python script: its four rates and its versions.
fn python_round(
    python: &str,
    script: &PathBuf,
    seconds: f64,
) -> anyhow::Result<([f64; 4], String)> {
    let output = Command::new(python)
        .arg(script)
        .arg(seconds.to_string())
        .output()
        .with_context(|| format!("run {python} {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{python} failed (is `cryptography` installed?): {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("read the Python report")?;
    let mut rates = [0.0; 4];
    for (rate, name) in rates.iter_mut().zip(OPERATIONS) {
        *rate = report[name]
            .as_f64()
            .with_context(|| format!("the Python report lacks {name}"))?;
    }
    let version = format!(
        "cryptography {} on Python {}",
        report["version"].as_str().unwrap_or("?"),
        report["python"].as_str().unwrap_or("?")
    );
    Ok((rates, version))
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
