//! Keys have a lifecycle: new primaries, online rotation that survives
//! crashes, retirement only once unused, and a refusal of any keyring that
//! cannot open what is stored.

// Helpers of a test may unwrap: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::ExposeSecret as _;
use tonic::Code;
use vault_client::{ClientError, Purpose, VaultClient};
use vault_e2e::{TestVault, contains, odoo};

/// The credentials a test stored: (user, id) → password.
type Stored = BTreeMap<(String, String), String>;

async fn store_many(vault: &VaultClient, count: usize, tag: &str) -> Stored {
    let mut stored = Stored::new();
    for n in 0..count {
        let user = format!("user{}", n % 4);
        let password = format!("{tag}-password-{n}");
        let credential = vault
            .store(&user, odoo(n), password.as_bytes())
            .await
            .unwrap();
        stored.insert((user, credential.id), password);
    }
    stored
}

/// Every stored credential decrypts to its password, and there is nothing
/// more: no record lost, none duplicated.
async fn assert_all_decrypt(server: &TestVault, stored: &Stored) {
    let sync = server.sync_client().await;
    for ((user, id), password) in stored {
        let secret = sync.decrypt(user, id, Purpose::Sync).await.unwrap();
        assert_eq!(secret.expose_secret(), password.as_bytes(), "{user}/{id}");
    }
    let mut listed = 0;
    for user in ["user0", "user1", "user2", "user3"] {
        listed += sync.list(user).await.unwrap().len();
    }
    assert_eq!(listed, stored.len(), "records lost or duplicated");
}

async fn records_by_version(ops: &VaultClient) -> BTreeMap<u32, u64> {
    ops.list_keys()
        .await
        .unwrap()
        .keys
        .into_iter()
        .map(|key| (key.version, key.records))
        .collect()
}

async fn rotate_to_the_end(ops: &VaultClient, batch_size: u32) -> vault_client::RotateKeysProgress {
    let mut progress = ops.rotate(batch_size).await.unwrap();
    let mut last = None;
    while let Some(report) = progress.message().await.unwrap() {
        last = Some(report);
    }
    let last = last.unwrap();
    assert!(last.finished, "{last:?}");
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_writes_leaves_nothing_under_the_old_key() {
    let server = TestVault::start();
    let (api, ops) = (server.client().await, server.client_as("ops").await);
    let mut stored = store_many(&api, 300, "before").await;
    assert_eq!(records_by_version(&ops).await, BTreeMap::from([(1, 300)]));

    server.add_primary_key(2);
    let keys = ops.reload_keyring().await.unwrap();
    assert!(keys.keys.iter().any(|key| key.version == 2 && key.primary));

    // Writes keep coming while the rotation runs.
    let writer = {
        let api = api.clone();
        tokio::spawn(async move { store_many(&api, 100, "during").await })
    };
    let report = rotate_to_the_end(&ops, 25).await;
    stored.extend(writer.await.unwrap());

    assert_eq!(report.target_version, 2);
    assert_eq!(report.failed, 0);
    assert_eq!(
        records_by_version(&ops).await,
        BTreeMap::from([(1, 0), (2, 400)])
    );
    assert_all_decrypt(&server, &stored).await;

    // The old key is unused now, so it can be retired.
    let text = std::fs::read_to_string(server.keyring_path()).unwrap();
    let retired: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with("key 1 "))
        .collect();
    std::fs::write(server.keyring_path(), retired.join("\n") + "\n").unwrap();
    let keys = ops.reload_keyring().await.unwrap();
    assert_eq!(keys.keys.len(), 1);
    assert_all_decrypt(&server, &stored).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_server_during_rotation_loses_nothing() {
    let mut server = TestVault::start();
    let stored = store_many(&server.client().await, 400, "kill").await;
    let mut killed_half_way = 0;

    for round in 0..20u32 {
        let version = round + 2;
        server.add_primary_key(version);
        server.restart();

        // Start a rotation in small batches and kill the server at a random
        // moment while it runs (or, now and then, before it starts).
        let ops = server.client_as("ops").await;
        let mut progress = ops.rotate(10).await.unwrap();
        let delay = Duration::from_millis(rand::random_range(0..120));
        let _ = tokio::time::timeout(delay, async {
            while let Ok(Some(_)) = progress.message().await {}
        })
        .await;
        server.kill();

        // After the crash the rotation is simply run again to the end.
        server.restart();
        let ops = server.client_as("ops").await;
        let moved = records_by_version(&ops).await[&version];
        if 0 < moved && moved < 400 {
            killed_half_way += 1;
        }
        let report = rotate_to_the_end(&ops, 50).await;
        assert_eq!(report.failed, 0);
        let usage = records_by_version(&ops).await;
        assert_eq!(usage[&version], 400, "round {round}: {usage:?}");
        assert!(
            usage.iter().all(|(v, n)| *v == version || *n == 0),
            "{usage:?}"
        );
        assert_all_decrypt(&server, &stored).await;
    }
    // The test is only worth its name if some kills hit a rotation midway.
    assert!(
        killed_half_way >= 3,
        "only {killed_half_way} kills landed mid-rotation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyring_that_cannot_open_the_store_is_refused_at_start_and_on_reload() {
    let mut server = TestVault::start();
    let stored = store_many(&server.client().await, 5, "refuse").await;
    let original = std::fs::read_to_string(server.keyring_path()).unwrap();

    // Reload without the key that seals every record: refused, old keyring kept.
    let other_key = vault_server::crypto::fernet::generate_key_base64();
    let other_key = other_key.expose_secret();
    std::fs::write(
        server.keyring_path(),
        format!("key 2 {other_key}\nprimary 2\n"),
    )
    .unwrap();
    let ops = server.client_as("ops").await;
    match ops.reload_keyring().await {
        Err(ClientError::Status(status)) => {
            assert_eq!(status.code(), Code::FailedPrecondition);
            let message = status.message();
            assert!(
                message.contains("key version 1 seals 5 record(s)"),
                "{message}"
            );
            assert!(message.contains("previous keyring stays"), "{message}");
        }
        other => panic!("expected FAILED_PRECONDITION, got {other:?}"),
    }
    assert_all_decrypt(&server, &stored).await;
    server.hang_up();
    let mut refused_in_log = false;
    for _ in 0..50 {
        if contains(&server.log(), b"keyring reload refused") {
            refused_in_log = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused_in_log,
        "SIGHUP with a bad keyring is refused in the log"
    );
    assert_all_decrypt(&server, &stored).await;

    // At start: a missing key, and a different key under the same version.
    drop(ops);
    server.stop();
    let refused = server.start_refused();
    assert!(
        refused.contains("key version 1 seals 5 record(s)"),
        "{refused}"
    );
    std::fs::write(
        server.keyring_path(),
        format!("key 1 {other_key}\nprimary 1\n"),
    )
    .unwrap();
    let refused = server.start_refused();
    assert!(
        refused.contains("key version 1") && refused.contains("not the key"),
        "{refused}"
    );

    std::fs::write(server.keyring_path(), original).unwrap();
    server.restart();
    assert_all_decrypt(&server, &stored).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rotations_at_once_are_refused_and_only_ops_may_rotate() {
    let server = TestVault::start();
    let api = server.client().await;
    store_many(&api, 300, "twice").await;
    server.add_primary_key(2);
    let ops = server.client_as("ops").await;
    ops.reload_keyring().await.unwrap();

    let mut first = ops.rotate(1).await.unwrap();
    first.message().await.unwrap();
    match ops.rotate(1).await {
        Err(ClientError::Status(status)) => {
            assert_eq!(status.code(), Code::FailedPrecondition);
            assert!(
                status.message().contains("already running"),
                "{}",
                status.message()
            );
        }
        Ok(_) => panic!("a second rotation started"),
        Err(other) => panic!("unexpected {other}"),
    }
    while let Some(report) = first.message().await.unwrap() {
        if report.finished {
            assert_eq!(report.done, 300);
        }
    }

    for call in [
        api.rotate(0).await.map(drop),
        api.list_keys().await.map(drop),
        server.sync_client().await.reload_keyring().await.map(drop),
    ] {
        assert_eq!(call.unwrap_err().code(), Some(Code::PermissionDenied));
    }
}

#[tokio::test]
async fn vaultctl_shows_keys_and_rotates_with_a_summary() {
    let server = TestVault::start();
    store_many(&server.client().await, 20, "cli").await;
    server.add_primary_key(2);

    let reload = server.vaultctl("ops", &["reload-keys"]);
    assert!(reload.status.success(), "{reload:?}");
    let rotate = server.vaultctl("ops", &["rotate", "--batch-size", "5"]);
    assert!(rotate.status.success(), "{rotate:?}");
    let summary = String::from_utf8_lossy(&rotate.stdout);
    assert!(
        summary.contains("rotated 20 record(s) to key version 2"),
        "{summary}"
    );

    let keys = server.vaultctl("ops", &["keys"]);
    let table = String::from_utf8_lossy(&keys.stdout);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{table}");
    assert_eq!(
        (rows[0][0], rows[0].last().copied()),
        ("1", Some("0")),
        "{table}"
    );
    assert_eq!(
        (rows[1][0], rows[1][2], rows[1][3]),
        ("2", "yes", "20"),
        "{table}"
    );
    // A fingerprint is shown, never the key.
    let keyring = std::fs::read_to_string(server.keyring_path()).unwrap();
    for line in keyring.lines().filter(|line| line.starts_with("key ")) {
        let key = line.split_whitespace().nth(2).unwrap();
        assert!(!table.contains(key), "a key reached vaultctl's output");
    }
}
