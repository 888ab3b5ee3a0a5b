//! Process hygiene of the real server: no core dumps, no keyring in its
//! environment, memory locking on request, and no lingering copies of
//! decrypted secrets in its memory.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::time::Duration;

use secrecy::ExposeSecret as _;
use vault_client::Purpose;
use vault_e2e::{TestVault, contains, odoo, proc_status_kib};

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|line| line.starts_with("Uid:") && line.split_whitespace().nth(2) == Some("0"))
}

#[tokio::test]
async fn core_dumps_are_off() {
    let vault = TestVault::start();
    let limits = fs::read_to_string(format!("/proc/{}/limits", vault.pid())).unwrap();
    let core = limits
        .lines()
        .find(|line| line.starts_with("Max core file size"))
        .unwrap();
    let values: Vec<&str> = core.split_whitespace().skip(4).take(2).collect();
    assert_eq!(values, ["0", "0"], "{core}");
    // Not dumpable cannot be read from outside by root; the server checks
    // it on itself and says so.
    let log = String::from_utf8_lossy(&vault.log()).into_owned();
    assert!(log.contains("core_dumps_off=true"), "{log}");
}

#[tokio::test]
async fn a_keyring_in_the_environment_is_taken_out_of_it() {
    let mut vault = TestVault::start();
    let client = vault.client().await;
    let stored = client
        .store("user-1", odoo(1), b"env-keyring-secret")
        .await
        .unwrap();
    drop(client);
    vault.stop();

    // The file now holds another key: only the text in the environment
    // can open what is stored.
    let keyring = fs::read_to_string(vault.keyring_path()).unwrap();
    fs::write(
        vault.keyring_path(),
        vault_server::crypto::keyring::Keyring::generate_text().as_bytes(),
    )
    .unwrap();
    vault.restart_with(&[], &[("VAULT_KEYRING_CONTENTS", &keyring)]);

    let environ = fs::read(format!("/proc/{}/environ", vault.pid())).unwrap();
    let key_line = keyring
        .lines()
        .find(|line| line.starts_with("key "))
        .unwrap();
    let key = key_line.split_whitespace().nth(2).unwrap();
    assert!(
        !contains(&environ, key.as_bytes()),
        "the key is in /proc/PID/environ"
    );
    assert!(!contains(&environ, b"VAULT_KEYRING_CONTENTS"));
    assert!(contains(&environ, b"VAULT_KEYRING=-"));

    let secret = vault
        .sync_client()
        .await
        .decrypt("user-1", &stored.id, Purpose::Sync)
        .await
        .unwrap();
    assert_eq!(secret.expose_secret(), b"env-keyring-secret");

    // It was read once; a reload cannot read it again and says why.
    let output = vault.vaultctl("ops", &["reload-keys"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("restart the server"), "{stderr}");

    // Given twice is refused.
    vault.stop();
    let refused = std::process::Command::new(vault_e2e::server_binary())
        .args(["--dev", "--keyring"])
        .arg(vault.keyring_path())
        .args(["--data-dir"])
        .arg(vault.data_dir())
        .env("VAULT_KEYRING_CONTENTS", &keyring)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("given twice"));
}

#[tokio::test]
async fn lock_memory_locks_the_pages_or_says_what_it_needs() {
    if !is_root() {
        // Unprivileged, with the usual small RLIMIT_MEMLOCK: a clear refusal.
        let dir = tempfile::tempdir().unwrap();
        let output = std::process::Command::new(vault_e2e::server_binary())
            .args([
                "--dev",
                "--lock-memory",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() || stderr.contains("LimitMEMLOCK"),
            "{stderr}"
        );
        return;
    }
    let vault = TestVault::start_with(&["--lock-memory"]);
    let locked = proc_status_kib(vault.pid(), "VmLck");
    let resident = vault.resident_kib();
    eprintln!("--lock-memory: {locked} KiB locked of {resident} KiB resident");
    assert!(
        locked >= resident / 2,
        "{locked} KiB locked, {resident} KiB resident"
    );
    vault.client().await.list("nobody").await.unwrap();
}

/// Counts the copies of `needle` in every readable mapping of process `pid`.
fn copies_in_memory(pid: u32, needle: &[u8]) -> usize {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut copies = 0;
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let range = fields.next().unwrap();
        let perms = fields.next().unwrap();
        let name = line.split_whitespace().nth(5).unwrap_or("");
        if !perms.starts_with('r') || name.starts_with("[v") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let mut region = vec![0; usize::try_from(end - start).unwrap()];
        if mem.seek(SeekFrom::Start(start)).is_err() || mem.read_exact(&mut region).is_err() {
            continue; // a guard page or a mapping that went away
        }
        copies += region
            .windows(needle.len())
            .filter(|window| *window == needle)
            .count();
    }
    copies
}

#[tokio::test]
async fn decrypted_secrets_do_not_linger_in_server_memory() {
    if !is_root() {
        eprintln!("skipped: reading the memory of a non-dumpable process needs root");
        return;
    }
    let vault = TestVault::start();
    let marker = format!("MARKER-{}", vault_e2e::unique_password("memory"));
    let api = vault.client().await;
    let stored = api
        .store("user-1", odoo(1), marker.as_bytes())
        .await
        .unwrap();

    // Many decrypts over several connections, for both purposes.
    let mut tasks = Vec::new();
    for n in 0..4 {
        let client = if n % 2 == 0 {
            vault.sync_client().await
        } else {
            vault.client().await
        };
        let purpose = if n % 2 == 0 {
            Purpose::Sync
        } else {
            Purpose::ConnectionTest
        };
        let id = stored.id.clone();
        let marker = marker.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..250 {
                let secret = client.decrypt("user-1", &id, purpose).await.unwrap();
                assert_eq!(secret.expose_secret(), marker.as_bytes());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let while_connected = copies_in_memory(vault.pid(), marker.as_bytes());
    drop(api);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = copies_in_memory(vault.pid(), marker.as_bytes());
    eprintln!(
        "marker copies in server memory after 1000 decrypts: {while_connected} with the \
         connections open, {after} after they closed"
    );
    assert_eq!(after, 0, "copies of a decrypted secret outlive its calls");
}

#[tokio::test]
async fn a_keyring_from_systemd_credentials_may_be_group_readable_there_only() {
    use std::os::unix::fs::PermissionsExt as _;

    let mut vault = TestVault::start();
    vault.stop();
    // What LoadCredential= may hand over: a 0440 copy in the service's
    // credentials folder.
    let credentials = tempfile::tempdir().unwrap();
    let copy = credentials.path().join("keyring");
    fs::copy(vault.keyring_path(), &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o440)).unwrap();
    let copy = copy.to_str().unwrap().to_owned();
    let folder = credentials.path().to_str().unwrap().to_owned();

    vault.restart_with(&["--keyring", &copy], &[("CREDENTIALS_DIRECTORY", &folder)]);
    vault.client().await.list("nobody").await.unwrap();

    // The same file anywhere else is refused as readable by its group.
    vault.stop();
    let refused = std::process::Command::new(vault_e2e::server_binary())
        .args([
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--keyring",
            &copy,
            "--data-dir",
        ])
        .arg(vault.data_dir())
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("group or others"), "{stderr}");
}
