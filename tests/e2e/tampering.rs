//! A stored token that was changed on disk fails loudly, alone: the damaged
//! credential answers DATA_LOSS and every other one still decrypts.

// Helpers of a test may unwrap: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

use secrecy::ExposeSecret as _;
use tonic::Code;
use vault_client::{ClientError, Purpose};
use vault_e2e::{TestVault, odoo};
use vault_server::credential::Record;
use vault_server::crypto::fernet::Token;
use vault_server::store::record;

/// Opens the stopped server's database and rewrites the records for which
/// `edit` returns a replacement.
fn edit_records(server: &TestVault, mut edit: impl FnMut(&Record, &[Record]) -> Option<Record>) {
    let db = sled::open(server.data_dir().join("db")).expect("open the database");
    let tree = db
        .open_tree("credentials")
        .expect("open the credentials tree");
    let records: Vec<Record> = tree
        .iter()
        .map(|entry| {
            let (key, value) = entry.expect("read an entry");
            record::decode(&key, &value).expect("decode a record")
        })
        .collect();
    for current in &records {
        if let Some(edited) = edit(current, &records) {
            let key = record::key(&edited.owner, &edited.id);
            tree.insert(key, record::encode(&edited)).expect("write");
        }
    }
    db.flush().expect("flush");
}

fn data_loss(result: Result<impl std::fmt::Debug, ClientError>) -> String {
    match result {
        Err(ClientError::Status(status)) if status.code() == Code::DataLoss => {
            status.message().to_owned()
        }
        other => panic!("expected DATA_LOSS, got {other:?}"),
    }
}

/// Flips one character of a token to another base64 character, so the
/// token still decodes and only the integrity check can catch it.
fn flip_one_byte(token: &Token, at: usize) -> Token {
    let mut bytes = token.as_str().as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    Token::from_string(String::from_utf8(bytes).expect("base64 is ASCII"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_stored_token_fails_only_that_credential() {
    let mut server = TestVault::start();
    let vault = server.client().await;
    let mut stored = Vec::new();
    for n in 0..5 {
        let password = format!("password-{n}");
        let credential = vault
            .store("frank", odoo(n), password.as_bytes())
            .await
            .unwrap();
        stored.push((credential.id, password));
    }
    drop(vault);
    server.stop();

    let victim = stored[2].0.clone();
    let mut flipped = 0;
    edit_records(&server, |current, _| {
        (current.id.to_string() == victim).then(|| {
            flipped += 1;
            let mut edited = current.clone();
            edited.secret.token = flip_one_byte(&current.secret.token, 60);
            edited
        })
    });
    assert_eq!(flipped, 1);

    server.restart();
    let vault = server.client().await;
    let message = data_loss(
        vault
            .decrypt("frank", &victim, Purpose::ConnectionTest)
            .await,
    );
    assert!(message.contains("integrity"), "{message}");
    assert!(message.contains(&victim), "{message}");
    // The rest of the record is intact and readable.
    assert_eq!(vault.get("frank", &victim).await.unwrap().id, victim);

    for (id, password) in stored.iter().filter(|(id, _)| *id != victim) {
        let secret = vault
            .decrypt("frank", id, Purpose::ConnectionTest)
            .await
            .unwrap();
        assert_eq!(secret.expose_secret(), password.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_copied_into_another_users_record_does_not_decrypt_there() {
    let mut server = TestVault::start();
    let vault = server.client().await;
    let victim = vault
        .store("grace", odoo(1), b"grace-secret")
        .await
        .unwrap();
    let thief = vault
        .store("heidi", odoo(2), b"heidi-secret")
        .await
        .unwrap();
    drop(vault);
    server.stop();

    // An insider with write access to the database copies Grace's token
    // into Heidi's record, hoping to decrypt it as Heidi.
    edit_records(&server, |current, all| {
        let source = all.iter().find(|r| r.id.to_string() == victim.id)?;
        (current.id.to_string() == thief.id).then(|| {
            let mut edited = current.clone();
            edited.secret = source.secret.clone();
            edited
        })
    });

    server.restart();
    let vault = server.client().await;
    data_loss(
        vault
            .decrypt("heidi", &thief.id, Purpose::ConnectionTest)
            .await,
    );
    let secret = vault
        .decrypt("grace", &victim.id, Purpose::ConnectionTest)
        .await
        .unwrap();
    assert_eq!(secret.expose_secret(), b"grace-secret");
}
