//! ListKeys, ReloadKeyring and RotateKeys: the operators' key calls. None
//! of them returns a key or a secret.

use std::sync::Arc;

use secrecy::ExposeSecret as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use vault_proto::v1;

use super::VaultService;
use super::call::Call;
use super::error::ServiceError;
use crate::audit::AuditEvent;
use crate::credential::{InvalidField, Record};
use crate::crypto::keyring::Keyring;
use crate::crypto::sealing::RecordBinding;
use crate::keys::{KeyCheckError, KeyManager};
use crate::store::CredentialStore;

/// Records per rotation batch when the request leaves it at 0.
pub const DEFAULT_ROTATION_BATCH: u32 = 1000;
/// Largest rotation batch a caller may ask for.
pub const MAX_ROTATION_BATCH: u32 = 10_000;

/// The progress messages of one rotation.
pub type ProgressStream = ReceiverStream<Result<v1::RotateKeysProgress, Status>>;

impl<S: CredentialStore + Clone> VaultService<S> {
    /// Every key version with its record count, and the legacy keys.
    pub(super) async fn list_keys(&self) -> Result<v1::ListKeysResponse, ServiceError> {
        let keyring = self.keys.current();
        let usage = self.store.key_usage();
        let primary = keyring.primary().version();
        Ok(v1::ListKeysResponse {
            keys: keyring
                .keys()
                .map(|key| v1::KeyVersion {
                    version: key.version(),
                    fingerprint: key.fingerprint(),
                    primary: key.version() == primary,
                    records: usage.get(&key.version()).copied().unwrap_or(0),
                })
                .collect(),
            legacy_keys: keyring
                .legacy_keys()
                .iter()
                .map(|key| v1::LegacyKey {
                    name: key.name().to_owned(),
                    fingerprint: key.fingerprint(),
                })
                .collect(),
        })
    }

    /// Re-reads the keyring file; see [`KeyManager::reload`].
    pub(super) async fn reload_keyring(&self) -> Result<v1::ListKeysResponse, ServiceError> {
        self.keys
            .reload(&self.store)
            .await
            .map_err(|err| match err {
                KeyCheckError::Store(err) => ServiceError::Store(err),
                refused => ServiceError::FailedPrecondition(format!(
                    "{refused}; the previous keyring stays in force"
                )),
            })?;
        tracing::info!("keyring reloaded");
        self.list_keys().await
    }

    /// Starts re-sealing every record outside the primary key, unless a
    /// rotation is already running, and returns its progress.
    pub(super) async fn rotate(
        &self,
        call: &Call,
        request: v1::RotateKeysRequest,
    ) -> Result<ProgressStream, ServiceError> {
        let batch = match request.batch_size {
            0 => DEFAULT_ROTATION_BATCH,
            size if size <= MAX_ROTATION_BATCH => size,
            _ => {
                return Err(InvalidField::new(
                    "batch_size",
                    format!("must be at most {MAX_ROTATION_BATCH}"),
                )
                .into());
            }
        };
        let running = Arc::clone(&self.rotation).try_lock_owned().map_err(|_| {
            ServiceError::FailedPrecondition(
                "a key rotation is already running; wait for it to finish, then run it again if \
                 records are left"
                    .into(),
            )
        })?;

        let (progress, stream) = mpsc::channel(16);
        let mut batch_event = call.success();
        batch_event.operation = "keys.rotate.batch".into();
        let rotation = Rotation {
            audit: batch_event,
            store: self.store.clone(),
            keys: Arc::clone(&self.keys),
            batch: batch as usize,
            progress,
        };
        tokio::spawn(async move {
            let _running = running;
            if let Err(err) = rotation.run().await {
                tracing::error!(error = %err, "key rotation stopped");
                let _ = rotation.progress.send(Err(err.to_status())).await;
            }
        });
        Ok(ReceiverStream::new(stream))
    }
}

/// One run of a key rotation.
///
/// It walks the store in key order, a batch at a time: each record sealed by
/// another key version than the primary is opened and sealed again under
/// the primary, and the batch is written with compare-and-swap and made
/// durable before the next starts. A record changed meanwhile by a caller is
/// left alone (the caller's write sealed it under the primary anyway). A
/// crash at any point leaves every record sealed under some key still in the
/// keyring, so nothing becomes unreadable, and running the rotation again
/// finishes the job.
///
/// It keeps going if the caller that started it goes away.
struct Rotation<S> {
    /// The event each batch is written with.
    audit: AuditEvent,
    store: S,
    keys: Arc<KeyManager>,
    batch: usize,
    progress: mpsc::Sender<Result<v1::RotateKeysProgress, Status>>,
}

impl<S: CredentialStore + Clone> Rotation<S> {
    async fn run(&self) -> Result<(), ServiceError> {
        let target = self.keys.current().primary().version();
        let total: u64 = self
            .store
            .key_usage()
            .iter()
            .filter(|(version, _)| **version != target)
            .map(|(_, records)| records)
            .sum();
        tracing::info!(target_version = target, total, "key rotation started");

        let mut report = v1::RotateKeysProgress {
            target_version: target,
            total,
            ..Default::default()
        };
        self.send(&report).await;
        let mut after: Option<Vec<u8>> = None;
        loop {
            // Shared with callers' writes, exclusive with a keyring reload:
            // the keyring cannot change under a batch.
            let _permit = self.keys.keyring_permit().await;
            let keyring = self.keys.current();
            let primary = keyring.primary().version();
            if primary != target {
                return Err(ServiceError::FailedPrecondition(format!(
                    "the primary key changed from version {target} to {primary} during the \
                     rotation ({} of {} re-sealed); run the rotation again",
                    report.done, report.total
                )));
            }
            let (records, next) =
                self.store
                    .sealed_by_other_keys(target, after.as_deref(), self.batch)?;

            let sealing = Arc::clone(&keyring);
            let (pairs, failed) = tokio::task::spawn_blocking(move || reseal(&sealing, records))
                .await
                .map_err(|_| ServiceError::FailedPrecondition("rotation worker failed".into()))?;
            let mut event = self.audit.clone();
            event.time_ms = crate::credential::UnixMillis::now().0;
            event.detail = format!("target_version={target} batch={}", pairs.len());
            report.done += self.store.replace_batch(&pairs, &event).await? as u64;
            report.failed += failed;
            crate::telemetry::rotation_progress(report.done, report.total);
            self.send(&report).await;

            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }

        report.finished = true;
        self.send(&report).await;
        tracing::info!(
            target_version = target,
            done = report.done,
            failed = report.failed,
            "key rotation finished"
        );
        Ok(())
    }

    async fn send(&self, report: &v1::RotateKeysProgress) {
        // The caller may have gone away; the rotation carries on regardless.
        let _ = self.progress.send(Ok(*report)).await;
    }
}

/// Opens each record and seals it again under the primary key. Records that
/// do not open are logged and counted, and stay as they are.
fn reseal(keyring: &Keyring, records: Vec<Record>) -> (Vec<(Record, Record)>, u64) {
    let mut pairs = Vec::with_capacity(records.len());
    let mut failed = 0;
    for current in records {
        let binding = RecordBinding {
            owner: &current.owner,
            id: &current.id,
        };
        match keyring.open(binding, &current.secret) {
            Ok(secret) => {
                let mut resealed = current.clone();
                resealed.secret = keyring.seal(binding, secret.expose_secret());
                pairs.push((current, resealed));
            }
            Err(err) => {
                failed += 1;
                tracing::error!(
                    credential_id = %current.id,
                    key_version = current.secret.key_version,
                    error = %err,
                    "rotation cannot open a record; left under its old key"
                );
            }
        }
    }
    (pairs, failed)
}
