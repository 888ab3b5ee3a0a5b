//! The configuration file: `check-config` names every problem without
//! starting anything, and flags and environment variables override the file.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use tonic::Code;
use vault_e2e::{TestVault, odoo, server_binary};

fn check_config(file: &std::path::Path) -> (bool, String) {
    let output = Command::new(server_binary())
        .arg("check-config")
        .arg(file)
        .env_remove("VAULT_KEYRING")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[tokio::test]
async fn check_config_passes_a_good_file_and_names_every_problem_of_a_bad_one() {
    let mut vault = TestVault::start();
    vault.stop();
    let layout = vault.dev_layout();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("vault.toml");
    fs::write(
        &good,
        format!(
            "listen = \"127.0.0.1:7400\"\ndata_dir = {:?}\nkeyring = {:?}\npolicy = {:?}\n\
             tls_cert = {:?}\ntls_key = {:?}\nclient_ca = {:?}\nmax_call_duration = \"20s\"\n",
            vault.data_dir(),
            layout.keyring(),
            layout.policy(),
            layout.tls_file("server", "pem"),
            layout.tls_file("server", "key"),
            layout.tls_file("ca", "pem"),
        ),
    )
    .unwrap();
    let (ok, text) = check_config(&good);
    assert!(ok, "{text}");
    assert!(
        text.contains("ok       keyring") && !text.contains("PROBLEM"),
        "{text}"
    );

    // Three things wrong at once: all three are named.
    fs::set_permissions(layout.keyring(), fs::Permissions::from_mode(0o644)).unwrap();
    let bad = dir.path().join("bad.toml");
    let text = fs::read_to_string(&good)
        .unwrap()
        .replace(&format!("{:?}", layout.policy()), "\"missing-policy.toml\"")
        .replace("listen = \"127.0.0.1:7400\"", "listen = \"0.0.0.0:7400\"")
        + "metrics_listen = \"127.0.0.1:7400\"\n";
    fs::write(&bad, text).unwrap();
    let (ok, text) = check_config(&bad);
    assert!(!ok, "{text}");
    assert!(text.contains("has 3 problems"), "{text}");
    assert!(
        text.contains("PROBLEM  keyring") && text.contains("group or others"),
        "{text}"
    );
    assert!(
        text.contains("PROBLEM  policy") && text.contains("missing-policy.toml"),
        "{text}"
    );
    assert!(
        text.contains("listen (0.0.0.0:7400) and metrics_listen (127.0.0.1:7400) share a port"),
        "{text}"
    );

    // A key the server does not know is refused, not ignored.
    fs::write(&bad, "listne = \"127.0.0.1:7400\"\n").unwrap();
    let (ok, text) = check_config(&bad);
    assert!(!ok && text.contains("unknown field `listne`"), "{text}");
}

#[tokio::test]
async fn flags_and_environment_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vault.toml");
    // The file refuses every new secret (an impossible free-space reserve)
    // and names a port the flag overrides.
    fs::write(
        &config,
        "listen = \"127.0.0.1:1\"\nmin_free_mib = 1000000000000\nmax_connections = 7\n",
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();

    let mut vault = TestVault::start_with(&["--config", &config]);
    let refused = vault
        .client()
        .await
        .store("u", odoo(1), b"s")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(Code::Unavailable), "{refused}");

    // The environment beats the file...
    vault.restart_with(&["--config", &config], &[("VAULT_MIN_FREE_MIB", "0")]);
    vault
        .client()
        .await
        .store("u", odoo(1), b"s")
        .await
        .unwrap();

    // ... and a flag beats the environment.
    vault.restart_with(
        &["--config", &config, "--min-free-mib", "1000000000000"],
        &[("VAULT_MIN_FREE_MIB", "0")],
    );
    let refused = vault
        .client()
        .await
        .store("u", odoo(2), b"s")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(Code::Unavailable), "{refused}");
}
