//! Crash test: kill -9 the server at random moments under write load, 50
//! times, restarting each time. Every acknowledged store must be present and
//! decrypt to its value, every acknowledged delete must be gone, and the
//! store must open cleanly with its audit chain intact.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use rand::RngExt as _;
use secrecy::ExposeSecret as _;
use tonic::Code;
use vault_client::{Purpose, VaultClient};
use vault_e2e::{TestVault, odoo};

const ROUNDS: usize = 50;
const WRITERS: usize = 8;

/// What one writer saw acknowledged: stores still standing, and deletes.
#[derive(Default)]
struct Acknowledged {
    stored: BTreeMap<String, Vec<u8>>,
    deleted: Vec<String>,
}

/// Stores and deletes as `user` until the server goes away.
async fn write_until_killed(client: VaultClient, user: String, round: usize) -> Acknowledged {
    let mut seen = Acknowledged::default();
    for n in 0.. {
        if n % 3 == 2 {
            let Some(id) = seen.stored.keys().next().cloned() else {
                continue;
            };
            // Acknowledged or not, it may be gone now.
            seen.stored.remove(&id);
            match client.delete(&user, &id).await {
                Ok(()) => seen.deleted.push(id),
                Err(_) => break,
            }
        } else {
            let secret = format!("round-{round}-{user}-{n}-{}", rand::rng().random::<u64>());
            match client.store(&user, odoo(n), secret.as_bytes()).await {
                Ok(credential) => {
                    seen.stored.insert(credential.id, secret.into_bytes());
                }
                Err(_) => break,
            }
        }
    }
    seen
}

async fn check(vault: &TestVault, user: &str, seen: &Acknowledged) {
    let sync = vault.sync_client().await;
    for (id, secret) in &seen.stored {
        let opened = sync
            .decrypt(user, id, Purpose::Sync)
            .await
            .unwrap_or_else(|err| panic!("acknowledged store {id} of {user} lost: {err}"));
        assert_eq!(opened.expose_secret(), secret.as_slice(), "{user}/{id}");
    }
    let api = vault.client().await;
    for id in &seen.deleted {
        let err = api.get(user, id).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(Code::NotFound),
            "acknowledged delete {id} came back"
        );
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9_at_random_moments() {
    let mut vault = TestVault::start();
    let mut everything: Vec<(String, Acknowledged)> = Vec::new();
    let (mut stores, mut deletes) = (0, 0);

    for round in 0..ROUNDS {
        let mut writers = Vec::new();
        for writer in 0..WRITERS {
            let client = vault.client().await.with_deadline(Duration::from_secs(5));
            let user = format!("user-{round}-{writer}");
            writers.push((
                user.clone(),
                tokio::spawn(write_until_killed(client, user, round)),
            ));
        }
        let delay = rand::rng().random_range(20..400);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        vault.kill();

        let mut round_seen = Vec::new();
        for (user, writer) in writers {
            let seen = writer.await.unwrap();
            stores += seen.stored.len() + seen.deleted.len();
            deletes += seen.deleted.len();
            round_seen.push((user, seen));
        }
        vault.restart();
        for (user, seen) in &round_seen {
            check(&vault, user, seen).await;
        }
        everything.extend(round_seen);
    }

    // Later crashes damaged nothing acknowledged in earlier rounds.
    for (user, seen) in &everything {
        check(&vault, user, seen).await;
    }
    let verify = vault.vaultctl("ops", &["audit", "verify"]);
    assert!(verify.status.success(), "{verify:?}");
    eprintln!(
        "{ROUNDS} kills under load: {stores} acknowledged stores and {deletes} acknowledged \
         deletes, none lost or resurrected; the audit chain verifies"
    );
}
