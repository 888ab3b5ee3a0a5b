//! `vaultctl` as a user meets it, without a server: key generation and the
//! errors that come before any connection.

use std::process::{Command, Output};

fn vaultctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vaultctl"))
        .args(args)
        .env_remove("VAULT_CA")
        .env_remove("VAULT_CERT")
        .env_remove("VAULT_KEY")
        .output()
        .expect("run vaultctl")
}

#[test]
fn gen_key_prints_a_key_in_fernets_format() {
    let output = vaultctl(&["gen-key"]);
    assert!(output.status.success());
    let key = String::from_utf8(output.stdout).expect("text");
    let key = key.trim_end();
    assert_eq!(key.len(), 44, "{key}");
    assert!(key.ends_with('='));
    assert!(
        key[..43]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    );

    let other = String::from_utf8(vaultctl(&["gen-key"]).stdout).expect("text");
    assert_ne!(key, other.trim_end(), "two keys are never the same");
}

#[cfg(unix)]
#[test]
fn gen_key_out_writes_an_owner_only_keyring_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("keyring");
    let path_text = path.to_str().expect("utf-8 path");
    let output = vaultctl(&["gen-key", "--keyring", "--out", path_text]);
    assert!(output.status.success(), "{output:?}");
    assert!(output.stdout.is_empty(), "the key went to the file only");

    let mode = std::fs::metadata(&path)
        .expect("keyring exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&path).expect("read keyring");
    assert!(text.lines().any(|line| line.starts_with("key 1 ")));
    assert!(text.lines().any(|line| line == "primary 1"));

    let again = vaultctl(&["gen-key", "--keyring", "--out", path_text]);
    assert!(
        !again.status.success(),
        "an existing keyring was overwritten"
    );
    assert_eq!(std::fs::read_to_string(&path).expect("read keyring"), text);
}

#[test]
fn calls_without_a_client_certificate_say_which_flags_to_give() {
    let output = vaultctl(&["list", "--user", "u1"]);
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("--ca, --cert and --key"), "{message}");
    assert!(message.contains("VAULT_CERT"), "{message}");
}
