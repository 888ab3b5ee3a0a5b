// Helpers of a test may unwrap: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use super::*;
use crate::audit::AuditEvent;
use crate::credential::{
    CredentialId, Fields, OdooConnection, Record, SealedSecret, UnixMillis, UserId,
};
use crate::crypto::fernet::Token;
use crate::store::{CredentialStore as _, SledStore};

fn record(owner: &str, n: usize) -> Record {
    Record {
        id: CredentialId::generate(),
        owner: UserId::parse("user_id", owner).unwrap(),
        fields: Fields::Odoo(
            OdooConnection::new(&format!("https://o{n}.example"), "db", "me").unwrap(),
        ),
        secret: SealedSecret {
            key_version: 1,
            token: Token::from_string(format!("gAAAAA-token-{n}")),
        },
        created_at: UnixMillis(1),
        updated_at: UnixMillis(2),
    }
}

fn event(operation: &str, time_ms: u64) -> AuditEvent {
    AuditEvent {
        time_ms,
        caller: "test".into(),
        operation: operation.into(),
        outcome: "Ok".into(),
        ..AuditEvent::default()
    }
}

/// Opens the store in `dir` once sled's background threads of an earlier
/// handle have let go of its lock.
fn reopen(dir: &Path) -> SledStore {
    for _ in 0..50 {
        match SledStore::open(dir) {
            Ok(store) => return store,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
    SledStore::open(dir).unwrap()
}

/// A store with a few records, a canary, and a pruned audit chain; and
/// its records.
async fn populated(dir: &Path) -> (SledStore, Vec<Record>) {
    let store = SledStore::open(dir).unwrap();
    store
        .put_canary(1, &Token::from_string("canary-token".into()))
        .await
        .unwrap();
    let mut records = Vec::new();
    for n in 0..5 {
        let r = record(&format!("user{}", n % 2), n);
        store.insert(&r, &event("store", n as u64)).await.unwrap();
        records.push(r);
    }
    let gone = records.pop().unwrap();
    store
        .remove(&gone.owner, &gone.id, &event("delete", 10))
        .await
        .unwrap();
    // Prune the first two events, so the backup carries an anchor.
    assert_eq!(store.prune_audit(2).await.unwrap(), 2);
    (store, records)
}

async fn backup_of(store: &SledStore) -> Vec<u8> {
    let snapshot = store.snapshot().await.unwrap();
    let mut bytes = Vec::new();
    let written = write_snapshot(&snapshot, &mut bytes).unwrap();
    assert_eq!(written, bytes.len() as u64);
    bytes
}

/// Writes `bytes` as a backup file next to a fresh data folder; returns
/// both paths.
fn on_disk(dir: &Path, bytes: &[u8]) -> (std::path::PathBuf, std::path::PathBuf) {
    let file = dir.join("backup.vbak");
    std::fs::write(&file, bytes).unwrap();
    (file, dir.join("data"))
}

#[tokio::test]
async fn a_backup_restores_to_the_same_records_canaries_and_verifying_chain() {
    let source = tempfile::tempdir().unwrap();
    let (store, records) = populated(source.path()).await;
    let bytes = backup_of(&store).await;
    let before = store.verify_audit().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (file, data) = on_disk(dir.path(), &bytes);
    let restored = restore(&file, &data).unwrap();
    assert_eq!(restored.header.count(Tree::Credentials), 4);
    assert_eq!(restored.header.audit_head, before.head);
    assert!(
        restored.to_string().contains("credentials   4"),
        "{restored}"
    );

    let copy = reopen(&data.join("db"));
    for r in &records {
        assert_eq!(copy.get(&r.owner, &r.id).unwrap().as_ref(), Some(r));
    }
    assert_eq!(copy.key_usage(), store.key_usage());
    assert_eq!(copy.canary(1).unwrap(), store.canary(1).unwrap());
    let after = copy.verify_audit().unwrap();
    assert_eq!(after, before, "the same chain, anchor included");
}

#[tokio::test]
async fn every_truncation_is_refused_and_writes_nothing() {
    let source = tempfile::tempdir().unwrap();
    let (store, _) = populated(source.path()).await;
    let bytes = backup_of(&store).await;

    let dir = tempfile::tempdir().unwrap();
    for len in 0..bytes.len() {
        let (file, data) = on_disk(dir.path(), &bytes[..len]);
        let err = restore(&file, &data).unwrap_err();
        assert!(
            matches!(err, RestoreError::Refused { .. }),
            "cut at {len}: {err:#}"
        );
        assert!(!data.exists(), "cut at {len}: something was written");
    }
}

#[tokio::test]
async fn every_flipped_byte_is_refused_and_writes_nothing() {
    let source = tempfile::tempdir().unwrap();
    let (store, _) = populated(source.path()).await;
    let bytes = backup_of(&store).await;

    let dir = tempfile::tempdir().unwrap();
    for index in 0..bytes.len() {
        let mut altered = bytes.clone();
        altered[index] ^= 0x20;
        let (file, data) = on_disk(dir.path(), &altered);
        let err = restore(&file, &data).unwrap_err();
        assert!(
            matches!(
                err,
                RestoreError::Refused { .. } | RestoreError::Inconsistent { .. }
            ),
            "byte {index}: {err:#}"
        );
        assert!(!data.exists(), "byte {index}: something was written");
    }
}

#[tokio::test]
async fn bytes_after_the_checksum_are_refused() {
    let source = tempfile::tempdir().unwrap();
    let (store, _) = populated(source.path()).await;
    let mut bytes = backup_of(&store).await;
    bytes.push(0);

    let dir = tempfile::tempdir().unwrap();
    let (file, data) = on_disk(dir.path(), &bytes);
    let err = restore(&file, &data).unwrap_err();
    assert!(
        matches!(
            &err,
            RestoreError::Refused { source: BackupError::Malformed(why), .. }
                if why.contains("follow the checksum")
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_non_empty_data_folder_is_refused_by_name() {
    let source = tempfile::tempdir().unwrap();
    let (store, _) = populated(source.path()).await;
    let bytes = backup_of(&store).await;

    let dir = tempfile::tempdir().unwrap();
    let (file, data) = on_disk(dir.path(), &bytes);
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("keyring"), "key").unwrap();
    let message = restore(&file, &data).unwrap_err().to_string();
    assert!(
        message.contains("not empty") && message.contains("keyring"),
        "{message}"
    );
    assert!(!data.join("db").exists());

    // An empty folder is fine.
    std::fs::remove_file(data.join("keyring")).unwrap();
    restore(&file, &data).unwrap();
}

#[test]
fn a_backup_without_a_canary_for_a_used_key_version_is_refused() {
    let r = record("u", 1);
    let header = Header {
        created_at_ms: 1,
        counts: [1, 0, 0, 0],
        audit_head: ChainHead::default(),
    };
    let mut writer = BackupWriter::start(Vec::new(), &header).unwrap();
    writer
        .entry(
            Tree::Credentials,
            &crate::store::record::key(&r.owner, &r.id),
            &crate::store::record::encode(&r),
        )
        .unwrap();
    let (bytes, _) = writer.finish().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (file, data) = on_disk(dir.path(), &bytes);
    let message = restore(&file, &data).unwrap_err().to_string();
    assert!(message.contains("no canary"), "{message}");
}

#[test]
fn the_writer_keeps_to_the_header() {
    let header = Header {
        created_at_ms: 1,
        counts: [1, 0, 0, 0],
        audit_head: ChainHead::default(),
    };
    let mut writer = BackupWriter::start(Vec::new(), &header).unwrap();
    assert!(
        writer.entry(Tree::Audit, b"k", b"v").is_err(),
        "wrong section"
    );
    assert!(
        BackupWriter::start(Vec::new(), &header)
            .unwrap()
            .finish()
            .is_err(),
        "an entry short"
    );
}

#[test]
fn a_file_of_another_kind_or_version_is_named_as_such() {
    let header = Header {
        created_at_ms: 1,
        counts: [0; 4],
        audit_head: ChainHead::default(),
    };
    let mut bytes = header.encode().to_vec();
    bytes[8..12].copy_from_slice(&2u32.to_be_bytes());
    assert!(matches!(
        BackupReader::open(bytes.as_slice()),
        Err(BackupError::UnsupportedVersion(2))
    ));
    assert!(matches!(
        BackupReader::open([7u8; HEADER_LEN].as_slice()),
        Err(BackupError::NotABackup)
    ));
}
