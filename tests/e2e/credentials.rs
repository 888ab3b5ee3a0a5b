//! The vault's main job end to end: store, decrypt, isolate users, delete,
//! survive a crash, and keep plaintext off the disk and out of the log.

// Helpers of a test may unwrap: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

use secrecy::ExposeSecret as _;
use tonic::Code;
use vault_client::{ClientError, Purpose, VaultClient};
use vault_e2e::{TestVault, contains, files_below, odoo, unique_password};

/// One credential the test stored and the password it stored with it.
struct Stored {
    user: &'static str,
    id: String,
    password: String,
}

const USERS: [&str; 2] = ["alice", "bob"];
const PER_USER: usize = 50;

async fn store_all(vault: &VaultClient) -> Vec<Stored> {
    let mut stored = Vec::new();
    for user in USERS {
        for n in 0..PER_USER {
            let password = unique_password(&format!("{user}{n}"));
            let credential = vault
                .store(user, odoo(n), password.as_bytes())
                .await
                .expect("store");
            assert_eq!(credential.user_id, user);
            assert_eq!(credential.id.len(), 32);
            stored.push(Stored {
                user,
                id: credential.id,
                password,
            });
        }
    }
    stored
}

fn not_found(result: Result<impl std::fmt::Debug, ClientError>) -> String {
    match result {
        Err(ClientError::Status(status)) if status.code() == Code::NotFound => {
            status.message().to_owned()
        }
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_stored_isolated_deleted_and_survive_a_crash() {
    let mut server = TestVault::start();
    let vault = server.client().await;
    let sync = server.sync_client().await;
    let stored = store_all(&vault).await;
    assert_eq!(stored.len(), 100);

    for credential in &stored {
        for (client, purpose) in [(&vault, Purpose::ConnectionTest), (&sync, Purpose::Sync)] {
            let secret = client
                .decrypt(credential.user, &credential.id, purpose)
                .await
                .expect("decrypt");
            assert_eq!(secret.expose_secret(), credential.password.as_bytes());
        }
    }

    // Neither user can read, decrypt, change or delete the other's
    // credentials, and "not yours" reads exactly like "does not exist".
    let missing = "0123456789abcdef0123456789abcdef";
    let missing_message = not_found(vault.get("alice", missing).await);
    for credential in &stored {
        let other = if credential.user == "alice" {
            "bob"
        } else {
            "alice"
        };
        let id = credential.id.as_str();
        assert_eq!(not_found(vault.get(other, id).await), missing_message);
        assert_eq!(
            not_found(sync.decrypt(other, id, Purpose::Sync).await),
            missing_message
        );
        assert_eq!(
            not_found(vault.decrypt(other, id, Purpose::ConnectionTest).await),
            missing_message
        );
        assert_eq!(
            not_found(vault.update(other, id, Some(odoo(999)), None).await),
            missing_message
        );
        assert_eq!(not_found(vault.delete(other, id).await), missing_message);
    }
    for user in USERS {
        let listed = vault.list(user).await.expect("list");
        assert_eq!(listed.len(), PER_USER);
        assert!(listed.iter().all(|credential| credential.user_id == user));
    }

    // Delete every third credential, then crash the server: no shutdown, no
    // final flush. Acknowledged deletes must stay gone and acknowledged
    // stores must still be there.
    let (deleted, kept): (Vec<_>, Vec<_>) =
        stored.iter().enumerate().partition(|(n, _)| n % 3 == 0);
    for (_, credential) in &deleted {
        vault
            .delete(credential.user, &credential.id)
            .await
            .expect("delete");
    }
    server.kill();
    server.restart();
    let vault = server.client().await;
    let sync = server.sync_client().await;

    for (_, credential) in &kept {
        let secret = sync
            .decrypt(credential.user, &credential.id, Purpose::Sync)
            .await
            .expect("an acknowledged store survives a crash");
        assert_eq!(secret.expose_secret(), credential.password.as_bytes());
    }
    for (_, credential) in &deleted {
        assert_eq!(
            not_found(vault.get(credential.user, &credential.id).await),
            missing_message
        );
        assert_eq!(
            not_found(
                sync.decrypt(credential.user, &credential.id, Purpose::Sync)
                    .await
            ),
            missing_message
        );
    }
    let listed: usize = {
        let mut total = 0;
        for user in USERS {
            total += vault.list(user).await.expect("list").len();
        }
        total
    };
    assert_eq!(listed, kept.len());

    // Only ciphertext at rest, and nothing secret in the log, even at debug
    // level. Stop cleanly first so that sled has written all it will write.
    drop((vault, sync));
    server.stop();
    let files = files_below(&server.data_dir());
    assert!(!files.is_empty());
    let log = server.log();
    assert!(
        contains(&log, b"call finished"),
        "the log has the call lines"
    );
    for credential in &stored {
        let password = credential.password.as_bytes();
        for file in &files {
            let bytes = std::fs::read(file).expect("read a data file");
            assert!(
                !contains(&bytes, password),
                "plaintext in {}",
                file.display()
            );
        }
        assert!(!contains(&log, password), "plaintext in the server log");
    }
}

#[tokio::test]
async fn update_replaces_fields_and_secret_and_erase_removes_only_that_user() {
    let server = TestVault::start();
    let vault = server.client().await;

    let original = vault
        .store("carol", odoo(1), b"old-password")
        .await
        .unwrap();
    // A new database and username at the same URL keep the password.
    let renamed = vault_client::OdooConnection {
        url: odoo(1).url,
        ..odoo(2)
    };
    let moved = vault
        .update("carol", &original.id, Some(renamed.clone()), None)
        .await
        .unwrap();
    assert_eq!(moved.id, original.id);
    assert_eq!(moved.created_at, original.created_at);
    let secret = vault
        .decrypt("carol", &original.id, Purpose::ConnectionTest)
        .await
        .unwrap();
    assert_eq!(secret.expose_secret(), b"old-password");

    // A new URL without the password is refused: it would send the stored
    // password to an address it was never given for.
    let refused = vault
        .update("carol", &original.id, Some(odoo(2)), None)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(Code::InvalidArgument));
    assert!(
        refused
            .to_string()
            .contains("secret: required when the URL changes"),
        "{refused}"
    );
    let unchanged = vault_proto::v1::CredentialFields {
        kind: Some(vault_proto::v1::credential_fields::Kind::Odoo(renamed)),
    };
    assert_eq!(
        vault.get("carol", &original.id).await.unwrap().fields,
        Some(unchanged)
    );

    vault
        .update("carol", &original.id, Some(odoo(2)), Some(b"new-password"))
        .await
        .unwrap();
    let secret = vault
        .decrypt("carol", &original.id, Purpose::ConnectionTest)
        .await
        .unwrap();
    assert_eq!(secret.expose_secret(), b"new-password");
    assert_eq!(
        vault.get("carol", &original.id).await.unwrap().fields,
        vault_e2e_fields(2)
    );

    for n in 0..3 {
        vault.store("carol", odoo(n), b"pw").await.unwrap();
    }
    let survivor = vault.store("dave", odoo(9), b"pw").await.unwrap();
    assert_eq!(vault.erase("carol").await.unwrap(), 4);
    assert!(vault.list("carol").await.unwrap().is_empty());
    assert_eq!(vault.erase("carol").await.unwrap(), 0);
    assert_eq!(
        vault.get("dave", &survivor.id).await.unwrap().id,
        survivor.id
    );
}

#[tokio::test]
async fn lists_come_in_pages_that_cover_every_credential_once() {
    let server = TestVault::start();
    let vault = server.client().await;
    let mut ids = Vec::new();
    for n in 0..7 {
        ids.push(vault.store("erin", odoo(n), b"pw").await.unwrap().id);
    }
    ids.sort();

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let (page, next) = vault.list_page("erin", 3, &token).await.unwrap();
        pages += 1;
        assert!(page.len() <= 3);
        seen.extend(page.into_iter().map(|credential| credential.id));
        match next {
            Some(next) => token = next,
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids);
}

fn vault_e2e_fields(n: usize) -> Option<vault_proto::v1::CredentialFields> {
    Some(vault_proto::v1::CredentialFields {
        kind: Some(vault_proto::v1::credential_fields::Kind::Odoo(odoo(n))),
    })
}
