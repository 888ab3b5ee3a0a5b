//! Backup: the whole store at one moment, streamed as a backup file.
//!
//! The call takes a [`Snapshot`] (writers of records wait for the moment
//! the records take to copy; reads go on), checks that the audit chain it
//! includes verifies on its own, and only then answers: its audit event
//! carries the counts, and a broken chain is refused before a byte leaves.
//! The file is then written on a blocking thread straight into the reply
//! stream, a chunk at a time, with the pace set by the caller's reading.
//! Pruning of the audit trail waits until the stream ends.

use std::io::{self, Write};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use vault_proto::v1;

use super::VaultService;
use super::call::Call;
use super::convert;
use super::error::ServiceError;
use crate::audit::{self, Verification, hex};
use crate::backup::{self, Header};
use crate::store::{CredentialStore, Snapshot, StoreError, Tree};

/// The chunks of one backup.
pub type BackupStream = ReceiverStream<Result<v1::BackupChunk, Status>>;

/// Bytes per message, well under gRPC's default 4 MiB limit.
const CHUNK_BYTES: usize = 64 * 1024;

impl<S: CredentialStore + Clone> VaultService<S> {
    /// Takes and checks a snapshot, then streams it.
    pub(super) async fn backup(&self, call: &Call) -> Result<BackupStream, ServiceError> {
        let snapshot = self.store.snapshot().await?;
        let (snapshot, verified) = tokio::task::spawn_blocking(move || {
            let verified = verify(&snapshot);
            (snapshot, verified)
        })
        .await
        .map_err(|_| ServiceError::FailedPrecondition("backup worker failed".into()))?;
        if let Some((seq, reason)) = verified?.broken {
            return Err(ServiceError::FailedPrecondition(format!(
                "the audit chain is broken at event {seq} ({reason}); nothing was backed up. \
                 Run `vaultctl audit verify` and restore the trail first"
            )));
        }

        let header = Header::of(&snapshot);
        call.detail(format!(
            "credentials={} canaries={} audit_events={} audit_head={}",
            header.count(Tree::Credentials),
            header.count(Tree::Canaries),
            header.count(Tree::Audit),
            header.audit_head.seq
        ));
        let summary = v1::BackupSummary {
            taken_at: Some(convert::timestamp(snapshot.taken_at)),
            credentials: header.count(Tree::Credentials),
            canaries: header.count(Tree::Canaries),
            audit_events: header.count(Tree::Audit),
            audit_head_seq: header.audit_head.seq,
            audit_head_digest: hex(&header.audit_head.digest),
        };
        let (chunks, stream) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || stream_backup(&snapshot, summary, chunks));
        Ok(ReceiverStream::new(stream))
    }
}

/// Checks the snapshot's audit events from its anchor to its head.
fn verify(snapshot: &Snapshot) -> Result<Verification, StoreError> {
    let events = snapshot
        .audit_events()
        .map(|entry| entry.map(|(key, value)| (key.to_vec(), value.to_vec())));
    let mut verified = audit::verify(snapshot.anchor, events)?;
    if verified.broken.is_none() && verified.head != snapshot.head {
        verified.broken = Some((
            verified.head.seq + 1,
            format!("the trail ends before event {}", snapshot.head.seq),
        ));
    }
    Ok(verified)
}

/// Writes the backup into `chunks`; runs on a blocking thread, and stops
/// when the caller goes away.
fn stream_backup(
    snapshot: &Snapshot,
    summary: v1::BackupSummary,
    chunks: mpsc::Sender<Result<v1::BackupChunk, Status>>,
) {
    let mut sink = ChunkSink {
        chunks: &chunks,
        buffer: Vec::with_capacity(CHUNK_BYTES),
        summary: Some(summary),
    };
    match backup::write_snapshot(snapshot, &mut sink) {
        Ok(bytes) => tracing::info!(bytes, "backup streamed"),
        Err(backup::BackupError::Io(err)) if err.kind() == io::ErrorKind::BrokenPipe => {
            tracing::warn!("backup abandoned: the caller went away");
        }
        Err(err) => {
            tracing::error!(error = %err, "backup failed while streaming");
            let status = Status::internal("the backup failed while streaming; see the server log");
            let _ = chunks.blocking_send(Err(status));
        }
    }
}

/// Cuts the file into messages; the first one also carries the summary.
struct ChunkSink<'a> {
    chunks: &'a mpsc::Sender<Result<v1::BackupChunk, Status>>,
    buffer: Vec<u8>,
    summary: Option<v1::BackupSummary>,
}

impl ChunkSink<'_> {
    fn send(&mut self) -> io::Result<()> {
        let chunk = v1::BackupChunk {
            data: std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK_BYTES)),
            summary: self.summary.take(),
        };
        self.chunks
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the caller went away"))
    }
}

impl Write for ChunkSink<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = CHUNK_BYTES - self.buffer.len();
        let taken = bytes.len().min(room);
        self.buffer.extend_from_slice(&bytes[..taken]);
        if self.buffer.len() == CHUNK_BYTES {
            self.send()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() && self.summary.is_none() {
            return Ok(());
        }
        self.send()
    }
}
