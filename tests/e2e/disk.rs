//! A full or read-only disk: writes are refused with UNAVAILABLE and a clear
//! message, reads go on while the free-space reserve lasts, a read-only
//! data folder is refused at start, and nothing already stored is damaged.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

use secrecy::ExposeSecret as _;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use vault_client::{ClientError, Purpose, VaultClient};
use vault_e2e::{TestVault, odoo};

fn unavailable(result: Result<impl std::fmt::Debug, ClientError>, says: &str) {
    let err = result.unwrap_err();
    assert_eq!(err.code(), Some(Code::Unavailable), "{err:?}");
    assert!(err.to_string().contains(says), "{err}");
}

/// Stores numbered credentials with 4 KiB secrets until the vault refuses
/// one; returns the ids of those it acknowledged and the refusal.
async fn fill(
    client: &VaultClient,
    user: &str,
    limit: usize,
) -> (Vec<(String, Vec<u8>)>, ClientError) {
    let mut stored = Vec::new();
    for n in 0..limit {
        let secret = format!("{n:06}-").repeat(585).into_bytes();
        match client.store(user, odoo(n), &secret).await {
            Ok(credential) => stored.push((credential.id, secret)),
            Err(err) => return (stored, err),
        }
    }
    panic!("{limit} stores and the disk is still not full");
}

async fn all_decrypt(vault: &TestVault, user: &str, stored: &[(String, Vec<u8>)]) {
    let sync = vault.sync_client().await;
    for (id, secret) in stored {
        let opened = sync.decrypt(user, id, Purpose::Sync).await.unwrap();
        assert_eq!(opened.expose_secret(), secret.as_slice(), "credential {id}");
    }
}

#[tokio::test]
async fn below_the_reserve_writes_are_refused_and_reads_go_on() {
    let mut vault = TestVault::start();
    let client = vault.client().await;
    let mut stored = Vec::new();
    for n in 0..5 {
        let secret = format!("secret-{n}").into_bytes();
        stored.push((
            client.store("user-1", odoo(n), &secret).await.unwrap().id,
            secret,
        ));
    }
    drop(client);

    // A reserve larger than any disk: every new secret is refused.
    vault.restart_with(&["--min-free-mib", "1000000000000"], &[]);
    let client = vault.client().await;
    let says = "disk is nearly full";
    unavailable(client.store("user-1", odoo(9), b"new").await, says);
    unavailable(
        client
            .update("user-1", &stored[0].0, None, Some(b"changed"))
            .await,
        says,
    );

    // Reads, decrypts and deletes go on.
    assert_eq!(client.list("user-1").await.unwrap().len(), 5);
    client.get("user-1", &stored[1].0).await.unwrap();
    all_decrypt(&vault, "user-1", &stored).await;
    client.delete("user-1", &stored[4].0).await.unwrap();
    stored.pop();
    drop(client);

    vault.restart_with(&[], &[]);
    assert_eq!(vault.client().await.list("user-1").await.unwrap().len(), 4);
    all_decrypt(&vault, "user-1", &stored).await;
    let verify = vault.vaultctl("ops", &["audit", "verify"]);
    assert!(verify.status.success(), "{verify:?}");
}

/// A small tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (like "16m") at `path`, or `None` when this
    /// process may not mount (not root, or in a restricted container).
    fn mount(path: PathBuf, size: &str) -> Option<Self> {
        std::fs::create_dir_all(&path).unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .ok()?;
        status.success().then_some(Self { path })
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success(), "remount {options}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[tokio::test]
async fn a_disk_that_fills_up_or_turns_read_only_damages_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(dir.path().join("data"), "16m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let mut vault = TestVault::start_in(dir, &["--min-free-mib", "4"], &[]);
    let client = vault.client().await;

    // Filling up: the reserve stops new secrets first, and reads go on.
    let (mut stored, refused) = fill(&client, "user-1", 20_000).await;
    eprintln!("the reserve refused store {} : {refused}", stored.len());
    assert_eq!(refused.code(), Some(Code::Unavailable), "{refused:?}");
    assert!(refused.to_string().contains("nearly full"), "{refused}");
    // Reads go on, on the reserve (each writes its audit event there): a
    // sample of them, so that the reserve is not what this test measures.
    all_decrypt(&vault, "user-1", &stored[..50]).await;
    let (gone, _) = stored.pop().unwrap();
    client.delete("user-1", &gone).await.unwrap();
    drop(client);

    // Without a reserve the disk really fills; the store fails closed.
    vault.restart_with(&["--min-free-mib", "0"], &[]);
    let client = vault.client().await;
    let (more, refused) = fill(&client, "user-2", 20_000).await;
    eprintln!("the full disk refused store {} : {refused}", more.len());
    assert_eq!(refused.code(), Some(Code::Unavailable), "{refused:?}");
    drop(client);

    // The health service notices within its probe interval.
    let mut health = HealthClient::new(vault.channel_as("api").await);
    let mut status = ServingStatus::Serving;
    for _ in 0..30 {
        let reply = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
        status = reply.into_inner().status();
        if status == ServingStatus::NotServing {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(status, ServingStatus::NotServing);

    // Space is freed; after a restart everything acknowledged is there.
    disk.remount("size=128m");
    vault.restart_with(&[], &[]);
    all_decrypt(&vault, "user-1", &stored).await;
    all_decrypt(&vault, "user-2", &more).await;
    let client = vault.client().await;
    assert!(matches!(
        client.get("user-1", &gone).await.unwrap_err().code(),
        Some(Code::NotFound)
    ));
    let verify = vault.vaultctl("ops", &["audit", "verify"]);
    assert!(verify.status.success(), "{verify:?}");

    // A data folder that cannot be written: sled opens its files for
    // writing, so the server refuses to start and says why.
    drop(client);
    vault.stop();
    disk.remount("ro");
    let refused = vault.start_refused();
    assert!(refused.contains("Read-only file system"), "{refused}");
    disk.remount("rw");
    vault.restart_with(&[], &[]);
    all_decrypt(&vault, "user-1", &stored).await;
    all_decrypt(&vault, "user-2", &more).await;
}
