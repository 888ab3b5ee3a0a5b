//! Backup and restore: a backup taken while writers keep storing restores,
//! into a new data folder, every credential acknowledged before it began,
//! with an audit chain that verifies and matches the records exactly; the
//! restored store opens only with the keyring it was sealed under; and the
//! file holds no password and no key.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use secrecy::ExposeSecret as _;
use tonic::Code;
use vault_client::{Purpose, VaultClient};
use vault_e2e::{TestVault, contains, find_password, odoo, server_binary, unique_password};

/// The credentials a test stored: (user, id) → password.
type Stored = BTreeMap<(String, String), String>;

const USERS: [&str; 4] = ["user0", "user1", "user2", "user3"];
const WRITERS: usize = 4;

async fn store_many(vault: &VaultClient, count: usize) -> Stored {
    let mut stored = Stored::new();
    for n in 0..count {
        let user = USERS[n % USERS.len()].to_owned();
        let password = unique_password("before");
        let credential = vault
            .store(&user, odoo(n), password.as_bytes())
            .await
            .unwrap();
        stored.insert((user, credential.id), password);
    }
    stored
}

/// Stores as `user` until `stop` is set; returns what was acknowledged.
async fn write_until(vault: VaultClient, user: String, stop: Arc<AtomicBool>) -> Stored {
    let mut stored = Stored::new();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let password = unique_password("during");
        let credential = vault
            .store(&user, odoo(n), password.as_bytes())
            .await
            .unwrap();
        stored.insert((user.clone(), credential.id), password);
        n += 1;
    }
    stored
}

fn run_server(args: &[&str], data_dir: &Path) -> Output {
    Command::new(server_binary())
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("VAULT_KEYRING")
        .output()
        .unwrap()
}

/// Copies the development TLS files and policy of `from` into the data
/// folder `to`, so that `--dev` there serves the same callers.
fn copy_dev_files(from: &TestVault, to: &Path) {
    let layout = from.dev_layout();
    std::fs::create_dir(to.join("tls")).unwrap();
    for entry in std::fs::read_dir(layout.tls_dir()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join("tls").join(entry.file_name())).unwrap();
    }
    std::fs::copy(layout.policy(), to.join("policy.toml")).unwrap();
}

/// How many credentials the writers have stored so far.
async fn writers_stored(vault: &VaultClient) -> usize {
    let mut stored = 0;
    for w in 0..WRITERS {
        stored += vault.list(&format!("writer{w}")).await.unwrap().len();
    }
    stored
}

/// Every credential of the users a test writes as, by (user, id).
async fn all_credentials(vault: &VaultClient) -> Vec<(String, String)> {
    let mut all = Vec::new();
    let writers = (0..WRITERS).map(|w| format!("writer{w}"));
    for user in USERS.iter().map(|u| u.to_string()).chain(writers) {
        for credential in vault.list(&user).await.unwrap() {
            all.push((user.clone(), credential.id));
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_write_load_restores_everything_acknowledged_before_it() {
    let server = TestVault::start();
    let api = server.client().await;
    let before = store_many(&api, 200).await;

    // Writers keep storing while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (api, stop) = (api.clone(), Arc::clone(&stop));
            tokio::spawn(write_until(api, format!("writer{w}"), stop))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let acknowledged_before = writers_stored(&api).await;

    let folder = tempfile::tempdir().unwrap();
    let file = folder.path().join("vault.vbak");
    let file_text = file.to_str().unwrap();
    let backup =
        tokio::task::block_in_place(|| server.vaultctl("ops", &["backup", file_text, "--json"]));
    assert!(backup.status.success(), "{backup:?}");
    let written_during = writers_stored(&api).await - acknowledged_before;
    stop.store(true, Ordering::Relaxed);
    let mut during = Stored::new();
    for writer in writers {
        during.extend(writer.await.unwrap());
    }
    assert!(written_during > 0, "no write overlapped the backup");

    let summary: serde_json::Value = serde_json::from_slice(&backup.stdout).unwrap();
    assert_eq!(summary["file"], file_text);
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(summary["bytes"], bytes.len() as u64);
    assert!(summary["credentials"].as_u64().unwrap() >= before.len() as u64);
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the backup is readable by its owner only"
        );
    }

    // Ciphertext only: no password, no key.
    let passwords: Vec<String> = before.values().chain(during.values()).cloned().collect();
    assert_eq!(find_password(&bytes, &passwords), None);
    let keyring = std::fs::read_to_string(server.keyring_path()).unwrap();
    for key in keyring
        .lines()
        .filter_map(|line| line.strip_prefix("key 1 "))
    {
        assert!(!contains(&bytes, key.trim().as_bytes()), "the key's text");
        let raw = base64::engine::general_purpose::URL_SAFE
            .decode(key.trim())
            .unwrap();
        for part in [&raw[..], &raw[..16], &raw[16..]] {
            assert!(!contains(&bytes, part), "the key's bytes");
        }
    }

    // The backup is audited, with its counts.
    let events = server.vaultctl("ops", &["audit", "list", "--operation", "backup", "--json"]);
    let event: serde_json::Value = serde_json::from_slice(&events.stdout).unwrap();
    assert_eq!(event["outcome"], "Ok");
    let detail = event["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("credentials={}", summary["credentials"])),
        "{detail}"
    );

    // Restore into a new folder, then serve it with the same keyring.
    let restored = tempfile::tempdir().unwrap();
    let data = restored.path().join("data");
    let output = run_server(&["restore", file_text], &data);
    assert!(output.status.success(), "{output:?}");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(printed.contains("the chain verifies"), "{printed}");
    copy_dev_files(&server, &data);
    std::fs::copy(server.keyring_path(), data.join("keyring")).unwrap();
    let copy = TestVault::start_in(restored, &[], &[]);

    // Everything acknowledged before the backup began is there, whole.
    let sync = copy.sync_client().await;
    for ((user, id), password) in &before {
        let secret = sync.decrypt(user, id, Purpose::Sync).await.unwrap();
        assert_eq!(secret.expose_secret(), password.as_bytes(), "{user}/{id}");
    }
    // What was written during it is there whole, or not at all.
    let mut included = 0;
    for ((user, id), password) in &during {
        match sync.decrypt(user, id, Purpose::Sync).await {
            Ok(secret) => {
                assert_eq!(secret.expose_secret(), password.as_bytes());
                included += 1;
            }
            Err(err) => assert_eq!(err.code(), Some(Code::NotFound), "{err}"),
        }
    }
    let records = all_credentials(&copy.client().await).await;
    assert_eq!(
        records.len(),
        before.len() + included,
        "nothing else came back"
    );
    assert_eq!(
        records.len() as u64,
        summary["credentials"].as_u64().unwrap()
    );

    // One moment: the trail holds exactly the stores the records reflect.
    let verify = copy.vaultctl("ops", &["audit", "verify"]);
    assert!(verify.status.success(), "{verify:?}");
    let stores = copy.vaultctl(
        "ops",
        &[
            "audit",
            "list",
            "--operation",
            "store",
            "--limit",
            "100000",
            "--json",
        ],
    );
    let stored_events = String::from_utf8_lossy(&stores.stdout)
        .lines()
        .filter(|line| line.contains("\"outcome\":\"Ok\""))
        .count();
    assert_eq!(
        stored_events,
        records.len(),
        "the trail and the records disagree"
    );
    eprintln!(
        "backup under load: {} stored before it; writers stored {}, {written_during} of them \
         while it ran, and {included} are in it",
        before.len(),
        during.len()
    );
}

#[tokio::test]
async fn a_restored_store_refuses_another_keyring_and_a_second_restore_over_it() {
    let server = TestVault::start();
    let api = server.client().await;
    store_many(&api, 10).await;
    let folder = tempfile::tempdir().unwrap();
    let file = folder.path().join("vault.vbak");
    let file_text = file.to_str().unwrap();
    let backup = server.vaultctl("ops", &["backup", file_text]);
    assert!(backup.status.success(), "{backup:?}");
    let again = server.vaultctl("ops", &["backup", file_text]);
    assert!(
        !again.status.success(),
        "an existing backup was overwritten"
    );
    assert!(
        server
            .vaultctl("ops", &["backup", file_text, "--force"])
            .status
            .success()
    );
    let refused = server.vaultctl("api", &["backup", file_text, "--force"]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("PermissionDenied"),
        "{refused:?}"
    );

    let restored = tempfile::tempdir().unwrap();
    let data = restored.path().join("data");
    assert!(run_server(&["restore", file_text], &data).status.success());
    let over = run_server(&["restore", file_text], &data);
    assert!(!over.status.success());
    let message = String::from_utf8_lossy(&over.stderr);
    assert!(
        message.contains("not empty") && message.contains("db"),
        "{message}"
    );

    // Another key under version 1: the start-up check refuses it.
    copy_dev_files(&server, &data);
    let other = vault_server::crypto::keyring::Keyring::generate_text();
    vault_server::files::write_private(&data.join("keyring"), other.as_bytes()).unwrap();
    let mut start = Command::new(server_binary())
        .args(["--dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env_remove("VAULT_KEYRING")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut waited = Duration::ZERO;
    while start.try_wait().unwrap().is_none() {
        if waited > Duration::from_secs(30) {
            start.kill().unwrap();
            panic!("the server started with another keyring");
        }
        std::thread::sleep(Duration::from_millis(50));
        waited += Duration::from_millis(50);
    }
    let start = start.wait_with_output().unwrap();
    assert!(!start.status.success(), "started with another keyring");
    let message = String::from_utf8_lossy(&start.stderr);
    assert!(
        message.contains("not the key this store knows"),
        "{message}"
    );
}
